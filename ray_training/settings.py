"""The settings of the Ray side: one typed section of the YAML config each (jobs/config.py).

They live here, not next to the code that reads them, because this module imports neither torch nor
Ray: every job reads the whole config at start, and a Spark job should not pay seconds to import
the model stack only to learn its own settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field


# `ray`: read by cluster.py
@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None starts a local Ray; "auto" or ray://host:port joins a cluster
    num_cpus: int | None = None  # local only; None lets Ray count the cores
    # `rdt run-all --submit` hands Ray stages to this dashboard (ray job submit --address), and
    # the config they run with says address: auto, which joins the cluster the job runs on.
    submit_address: str | None = None


# `embed`: read by embed.py
@dataclass(frozen=True)
class EmbedConfig:
    batch_size: int = 64  # timelines per Ray Data batch
    concurrency: int = 1  # encoder actors (each loads the model once)


# `model`: read by events_encoder.py
@dataclass(frozen=True)
class EventsConfig:
    vocab_size: int = 0  # from gold.vocab when training starts (config files leave it out)
    max_seq_len: int = 512
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1


# `gbm`: read by gbm.py
@dataclass(frozen=True)
class GBMConfig:
    num_workers: int = 1  # Ray Train workers
    cpus_per_worker: int = 1
    num_boost_round: int = 400
    early_stopping_rounds: int = 30  # on the validation split's log loss
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.8
    lambda_l2: float = 1.0


# `index`: read by index.py
@dataclass(frozen=True)
class IndexConfig:
    splits: list[str] = field(default_factory=lambda: ["train"])  # the reference population
    num_shards: int = 1
    brute_force_below: int = 20000  # exact search for small shards, a ScaNN tree above
    leaves_per_sqrt_n: float = 1.0
    leaves_to_search_fraction: float = 0.03  # tuned on 1M patient-times (benchmarks/ann.py)
    reorder: int = 200  # recall@10 at 1M: 0.946 with 100, 0.988 with 200 (benchmarks/ann.py)
    state_weight: float = 0.25  # share of the distance given to the clinical state (SearchSpace)
    whitening_shrinkage: float = 0.01  # added to each eigenvalue, as a share of their mean


# `report`: read by patient_course.py
@dataclass(frozen=True)
class ReportConfig:
    """The ``report`` section: which codes a report's course charts draw, by panel and label."""

    # panel -> label -> codes (at equal times the first listed code wins)
    panels: dict[str, dict[str, list[str]]] = field(default_factory=lambda: {
        "DAS28": {"DAS28": ["RDT/DAS28_ESR", "RDT/DAS28_CRP"]},
        "Components": {"tender joints (28)": ["RDT/TJC28"], "swollen joints (28)": ["RDT/SJC28"],
                       "patient global (mm)": ["RDT/PGA"]},
        "Inflammation": {"CRP (mg/L)": ["LOINC/1988-5"], "ESR (mm/h)": ["LOINC/4537-7"]},
        "Sharp score": {"mTSS": ["RDT/MTSS"]},
    })
    flare_codes: list[str] = field(default_factory=lambda: ["RDT/FLARE"])
    treatment_gap_days: int = 180  # a class unrecorded for longer than this was stopped


# `serve`: read by service.py
@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback by default: expose it deliberately
    port: int = 8000
    token_env: str = "RDT_SERVE_TOKEN"  # the environment variable holding the bearer token
    max_k: int = 200  # the most neighbours per question a request may ask for
    reload_seconds: float = 5.0  # how often CURRENT is checked for a new index version
    new_patients: bool = True  # new-patient queries (starts a local Spark session for them)


# `train`: read by train.py
@dataclass(frozen=True)
class TrainConfig:
    num_workers: int = 1  # Ray Train workers; on a 2-core machine leave a CPU for Ray Data
    cpus_per_worker: int = 1
    use_gpu: bool = False
    epochs: int = 8
    batch_size_per_worker: int = 32  # the global batch is this times num_workers
    learning_rate: float = 1e-3
    weight_decay: float = 0.01  # on matrices and embeddings only (configure_optimizers)
    seed: int = 0


# `notes`: read by notes_encoder.py (rdt note-features)
@dataclass(frozen=True)
class NotesConfig:
    batch_size: int = 64  # chunk texts per Ray Data batch
    concurrency: int = 1  # encoder actors, one CPU each (each loads the text model once)


# `fusion`: read by fusion.py and fusion_train.py
@dataclass(frozen=True)
class FusionConfig:
    d_model: int = 64  # each modality's encoder output and the fused patient embedding
    dropout: float = 0.1
    temperature: float = 0.1  # InfoNCE
    modality_dropout: float = 0.5  # chance that each present modality is hidden from a view
    notes_per_time: int = 3  # the notes of the last visits before a prediction time
    num_workers: int = 1  # Ray Train workers; on a 2-core machine leave a CPU for Ray Data
    cpus_per_worker: int = 1
    use_gpu: bool = False  # on a GPU, bf16 autocast
    epochs: int = 8
    batch_size_per_worker: int = 256  # patient-times: every other row of a batch is a negative
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 0


# `query`: read by twin.py
@dataclass(frozen=True)
class QueryConfig:
    k: int = 50
    min_cell_size: int = 10  # no count of fewer patients (zero aside) is shown: disclosure.py
    one_point_per_patient: bool = True
    # Treatment response: neighbours whose DAS28 when they started the class lies within this of
    # the query's latest DAS28 (0: no matching on disease activity).
    response_das28_window: float = 1.2
    exact: bool = False  # exact search of every shard instead of ScaNN's approximate pools
