"""The notes encoder: packaged weights loaded offline, deterministic unit-length features that put
a paraphrase nearer than an unrelated sentence, and gold.note_features computed once per distinct
text (a second pass over the same notes encodes nothing)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest
import torch
from conftest import ROOT, small_config

from jobs import note_features as job
from ray_training.notes_encoder import (
    FEATURE_DIM,
    NotesProjection,
    TextFeaturizer,
    cached_model,
    model_name,
    model_path,
    new_texts,
    note_features,
)
from rdt_spark.lake import read_table, table_path, write_table

NOTES = [
    "RA f/u. Reports flare of hands and wrists since last visit. TJC 6, SJC 4. AM stiffness 90 "
    "minutes. Plan: continue MTX.",
    "Seen in RA clinic. Doing well. No morning stiffness. O/E no synovitis. DAS28 2.1. Review 3/12.",
    "New referral: symmetrical small-joint polyarthritis. Never smoker. Plan: start methotrexate.",
    "Rheumatology review. Ongoing joint pain. 8 tender, 3 swollen joints. Continue TNFi.",
]


@pytest.fixture(scope="module")
def featurizer() -> TextFeaturizer:
    return TextFeaturizer()


def test_packaged_model_loads_with_the_hub_offline():
    # A fresh interpreter, offline, with the hub's address pointing at a closed local port:
    # any attempt to fetch a file would fail.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(ROOT / ".no-hf-home")}
    code = ("import json; from ray_training.notes_encoder import TextFeaturizer as T; t = T(); "
            "v = t.encode(['Morning stiffness of both hands.']); "
            "print(json.dumps({'shape': list(v.shape), 'name': t.name, 'max': t.max_tokens}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"shape": [1, FEATURE_DIM], "name": model_name(), "max": 256}
    assert (model_path() / "model.safetensors").is_file()
    assert not (ROOT / ".no-hf-home").exists()  # nothing was cached, so nothing was fetched


def test_features_are_deterministic_and_unit_length(featurizer):
    first = featurizer.encode(NOTES)
    assert first.shape == (len(NOTES), FEATURE_DIM) and first.dtype == np.float32
    np.testing.assert_array_equal(first, featurizer.encode(NOTES))
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    # A text's features do not depend on the batch it came in (padding is masked out).
    alone = np.stack([featurizer.encode([text])[0] for text in NOTES])
    np.testing.assert_allclose(first, alone, atol=1e-5)
    reversed_order = featurizer.encode(NOTES[::-1])[::-1]
    np.testing.assert_allclose(first, reversed_order, atol=1e-5)


def test_a_paraphrase_is_nearer_than_an_unrelated_sentence(featurizer):
    anchor, paraphrase, unrelated = featurizer.encode([
        "The patient reports two hours of morning stiffness and swollen wrists.",
        "Swelling of both wrists, with stiffness for about two hours every morning.",
        "The car park will be closed for resurfacing over the weekend.",
    ])
    assert float(anchor @ paraphrase) > float(anchor @ unrelated) + 0.3


def test_projection_maps_features_to_the_fused_width():
    projection = NotesProjection(d_out=64)
    out = projection(torch.randn(5, FEATURE_DIM))
    assert out.shape == (5, 64)
    assert sum(p.numel() for p in projection.parameters()) == 2 * FEATURE_DIM + FEATURE_DIM * 64 + 64


def _notes_frame(spark, texts: list[str]):
    rows = [(1 + i % 3, datetime(2020, 1, 1 + i), 100 + i, 0, text,
             hashlib.sha256(text.encode()).hexdigest()) for i, text in enumerate(texts)]
    return spark.createDataFrame(rows, "subject_id long, time timestamp, note_id long, chunk int, "
                                       "text string, text_hash string")


def test_each_distinct_text_is_encoded_once_and_cached(spark, ray_local, tmp_path):
    lake = str(tmp_path / "lake")
    texts = [NOTES[0], NOTES[1], NOTES[0], NOTES[2], NOTES[1], NOTES[3], NOTES[0]]  # 4 distinct
    write_table(_notes_frame(spark, texts), lake, "gold.notes")
    notes, features = table_path(lake, "gold.notes"), table_path(lake, "gold.note_features")

    # The job: the first run fills the cache, a second call finds every text there.
    cfg = small_config(tmp_path / "lake", patients=10)
    first = job.run(cfg, job.Options(batch_size=2))
    assert (first["distinct_texts"], first["encoded"], first["replaced"]) == (4, 4, True)
    rows = [r.asDict() for r in read_table(spark, lake, "gold.note_features").collect()]
    assert sorted(r["text_hash"] for r in rows) == sorted({hashlib.sha256(t.encode()).hexdigest()
                                                          for t in texts})
    assert {r["model"] for r in rows} == {model_name()}
    assert all(len(r["features"]) == FEATURE_DIM for r in rows)
    assert note_features(notes, features, str(tmp_path / "staged"), 64, 1) == 0
    again = job.run(cfg, job.Options())
    assert (again["encoded"], again["replaced"], again["version"]) == (0, False, first["version"])

    # One new text: only it is encoded, and added to the table.
    write_table(_notes_frame(spark, texts + ["Pt reviewed today for RA. Feels well."]), lake,
                "gold.notes")
    added = job.run(cfg, job.Options())
    assert (added["encoded"], added["replaced"]) == (1, False)
    table = read_table(spark, lake, "gold.note_features")
    assert table.count() == 5 and table.select("text_hash").distinct().count() == 5

    # Features of another model are stale: every distinct text is encoded again (the job then
    # replaces the table rather than adding to it).
    write_table(table.limit(2).selectExpr("text_hash", "'another/model' AS model", "features"),
                lake, "gold.note_features")
    assert cached_model(features) == "another/model"
    assert new_texts(notes, features).count() == 5
