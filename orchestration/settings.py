"""The one settings object: every path, URL and tunable comes from here.

Everything lives under ``FRESHRANK_HOME`` unless its own variable overrides it, so a test or a
second deployment only has to point ``FRESHRANK_HOME`` somewhere else.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ml.constants import (
    CANDIDATE_SOURCE_NAMES,
    DEFAULT_CANDIDATE_SOURCES,
    DEFAULT_CONTEXT_KEY,
    DEFAULT_COVISITATION_BACKWARD_WEIGHT,
    DEFAULT_COVISITATION_WINDOW_EVENTS,
    DEFAULT_COVISITATION_WINDOW_HOURS,
    DEFAULT_EVENT_WEIGHTS,
    DEFAULT_FUTURE_TOLERANCE_HOURS,
    DEFAULT_HISTORY_LENGTH,
    DEFAULT_TOP_K,
    DEFAULT_TRENDING_HALF_LIFE_DAYS,
    DEFAULT_TRENDING_LONG_WINDOW_DAYS,
    DEFAULT_TRENDING_SHORT_WINDOW_DAYS,
    RATING_MAX,
)
from ml.embeddings import PACKAGED_MODEL, EmbeddingConfig
from ml.text import DEFAULT_TEXT_TEMPLATE
from orchestration.privacy.pseudonyms import Pseudonymiser
from orchestration.serving.versions import DEFAULT_CHUNK_ROWS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
# What one POST /events may carry (FRESHRANK_API_MAX_EVENTS, FRESHRANK_API_MAX_BODY_BYTES).
API_MAX_EVENTS = 10_000
API_MAX_BODY_BYTES = 5 * 1024 * 1024


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as error:
        raise ValueError(f"{name}={value!r} is not a number") from error


def _env_event_weights() -> dict[str, float]:
    value = os.environ.get("FRESHRANK_EVENT_WEIGHTS")
    if not value:
        return dict(DEFAULT_EVENT_WEIGHTS)
    try:
        weights = json.loads(value)
        return {str(name): float(weight) for name, weight in weights.items()}
    except (ValueError, AttributeError, TypeError) as error:
        raise ValueError(
            "FRESHRANK_EVENT_WEIGHTS must be a JSON object of event type to weight, "
            f'e.g. {{"view": 1, "purchase": 5}}; got {value!r}'
        ) from error


def _env_sources() -> tuple[str, ...]:
    value = os.environ.get("FRESHRANK_CANDIDATE_SOURCES", "").strip()
    if not value:
        return DEFAULT_CANDIDATE_SOURCES
    sources = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(set(sources) - set(CANDIDATE_SOURCE_NAMES))
    if unknown or "popularity" not in sources:
        raise ValueError(
            f"FRESHRANK_CANDIDATE_SOURCES={value!r}: a comma-separated list of "
            f"{sorted(CANDIDATE_SOURCE_NAMES)} that includes popularity"
            + (f"; unknown: {unknown}" if unknown else "")
        )
    return sources


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("0", "false", "no", "")


def _usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def _env_positive(name: str, default: float) -> float:
    value = _env_float(name, default)
    if not value > 0:
        raise ValueError(f"{name}={value!r} must be a number above 0")
    return value


def _env_whole(name: str, default: int) -> int:
    """A whole number of at least 1 (``1_000_000`` reads as a million)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{name}={value!r} must be a whole number of at least 1, e.g. {default}")
    return number


def _env_retention_days() -> float | None:
    """FRESHRANK_RETENTION_DAYS: None (keep everything) when unset or empty."""
    if not os.environ.get("FRESHRANK_RETENTION_DAYS", "").strip():
        return None
    return _env_positive("FRESHRANK_RETENTION_DAYS", 0.0)


def _env_niceness(name: str, default: int) -> int:
    """A niceness increment, 0 to 19 (os.nice's range above the default priority)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) > 19:
        raise ValueError(f"{name}={value!r} must be a whole number from 0 to 19, e.g. {default}")
    return int(value)


def _env_choice(name: str, choices: tuple[str, ...]) -> str:
    """The variable's value: one of ``choices``, the first when unset; anything else fails."""
    value = os.environ.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(choices)}")
    return value


def _home_locations(home: Path) -> dict[str, Any]:
    """Where a deployment under ``home`` keeps each of its stores, unless told otherwise."""
    mlflow_dir = home / "mlflow"
    return {
        "landing_dir": home / "landing",
        "warehouse_path": home / "warehouse.duckdb",
        "serving_url": f"sqlite:///{home / 'serving.db'}",
        "mlflow_tracking_uri": f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        "mlflow_artifact_location": (mlflow_dir / "artifacts").as_uri(),
        "dagster_home": home / "dagster",
        "spark_dir": home / "spark",
    }


@dataclass(frozen=True)
class Settings:
    """Paths, URLs and tunables of one freshrank deployment."""

    home: Path
    landing_dir: Path
    warehouse_path: Path
    serving_url: str
    mlflow_tracking_uri: str
    mlflow_artifact_location: str
    dagster_home: Path
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    future_tolerance_hours: float = DEFAULT_FUTURE_TOLERANCE_HOURS
    top_k: int = DEFAULT_TOP_K
    history_length: int = DEFAULT_HISTORY_LENGTH
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    text_template: str = DEFAULT_TEXT_TEMPLATE
    promotion_margin: float = 0.002
    # Retrieve and rank (ml/pipeline): the candidate sources and the rolling-origin backtests.
    candidate_sources: tuple[str, ...] = DEFAULT_CANDIDATE_SOURCES
    backtest_cuts: int = 3  # evaluated cut points
    backtest_training_cuts: int = 5  # earlier cuts that only train the ranker
    backtest_window_fraction: float = 0.06  # share of events in each cut's holdout window
    backtest_min_users: int = 10  # a cut with fewer users active after it is not evaluated
    backtest_max_users: int = 2_000  # a cut with more ranks a fixed sample of this many
    ablations: bool = False  # also backtest the ranker without the text source
    sequential_epochs: int = 3  # when "sequential" is among the candidate sources
    mmr_lambda: float | None = None  # None: no diversity re-ranking
    new_item_slots: int = 1  # places per list kept for items nobody has touched yet
    context_key: str = DEFAULT_CONTEXT_KEY  # the context field new users' trending follows
    # Scale-out (README: Scale-out): where the heavy steps and the dbt models run.
    compute: str = "local"  # local (in-process) or ray
    # Local: scoring at least this many users at once (a full publish) ranks shards in this
    # many worker processes (ml/pipeline/parallel.py); 1 keeps it in the run's process.
    rank_processes: int = 1
    rank_processes_min_users: int = 10_000
    ray_address: str | None = None  # None: start a local Ray on 127.0.0.1; else join this cluster
    ray_workers: int = 2  # embedding model workers and scoring shards on Ray
    ray_train_workers: int = 1  # DDP world size of the sequential model's training on Ray
    ray_num_cpus: int | None = None  # CPUs of a local Ray (None: every core)
    ray_object_store_mb: int = 512  # object store of a local Ray (Ray's default is 30% of memory)
    ray_storage: str = ""  # Ray Train's run storage; "" a temporary folder (a cluster: s3://...)
    dbt_target: str = "duckdb"  # duckdb, or spark (marts built by Spark from raw Parquet)
    # dbt runs in this process (its Python API) rather than as a dbt process of its own: about
    # two seconds less per build or refresh. The spark target always gets a process.
    dbt_in_process: bool = True
    spark_dir: Path = Path("spark")  # the spark target's raw Parquet, warehouse and metastore
    # Passed to dbt as vars of the same names (orchestration/warehouse/dbt.py: dbt_vars).
    # rating_max and trending_half_life_days have no variable of their own: ml/rules.py and the
    # serving's context trending read the constants, and must not disagree with the marts.
    rating_max: float = RATING_MAX
    trending_half_life_days: float = DEFAULT_TRENDING_HALF_LIFE_DAYS
    trending_short_window_days: float = DEFAULT_TRENDING_SHORT_WINDOW_DAYS
    trending_long_window_days: float = DEFAULT_TRENDING_LONG_WINDOW_DAYS
    covisitation_window_events: int = DEFAULT_COVISITATION_WINDOW_EVENTS
    covisitation_window_hours: int = DEFAULT_COVISITATION_WINDOW_HOURS
    covisitation_backward_weight: float = DEFAULT_COVISITATION_BACKWARD_WEIGHT
    # Request-time personalisation (orchestration/serving/personalise.py) and the API server.
    serving_candidates: int = 50  # best-scored candidates published per user (more than top_k)
    publish_chunk_rows: int = DEFAULT_CHUNK_ROWS  # rows per transaction of a full publish
    recent_events_per_user: int = 20  # newest unpublished events kept per user
    api_workers: int = 1  # uvicorn worker processes of `freshrank serve`
    api_access_log: bool = False  # uvicorn's line per request (about a tenth of a read's CPU)
    # How far below the API's CPU priority the batch commands run (os.nice; 0 keeps it equal).
    batch_nice: int = 10
    # Online experiments (orchestration/experiments): attribution and the verdict.
    experiment_attribution_hours: float = 24.0  # outcomes credited this long after an exposure
    experiment_alpha: float = 0.05  # significance level, shared by the comparisons
    experiment_min_users: int = 100  # exposed users each variant needs before a verdict
    # Privacy and access (orchestration/privacy, orchestration/serving/access.py).
    pseudonymise_key: str | None = field(default=None, repr=False)  # None: ids stored as given
    retention_days: float | None = None  # None: events are kept forever
    api_require_keys: str = "auto"  # auto: writes need a key once one exists; always
    api_keys_for_reads: bool = False  # reads need a key (any scope) too
    api_events_per_second: float = 5.0  # per-key rate of POST /events (token bucket refill)
    api_events_burst: int = 20  # per-key bucket size
    api_max_events: int = API_MAX_EVENTS  # events one POST /events may carry
    api_max_body_bytes: int = API_MAX_BODY_BYTES  # bytes one POST /events may carry

    @classmethod
    def from_env(cls) -> Settings:
        home = _env_path("FRESHRANK_HOME", Path.home() / ".freshrank")
        at_home = _home_locations(home)
        return cls(
            home=home,
            landing_dir=_env_path("FRESHRANK_LANDING_DIR", at_home["landing_dir"]),
            warehouse_path=_env_path("FRESHRANK_WAREHOUSE_PATH", at_home["warehouse_path"]),
            serving_url=os.environ.get("FRESHRANK_SERVING_URL", at_home["serving_url"]),
            mlflow_tracking_uri=os.environ.get(
                "MLFLOW_TRACKING_URI", at_home["mlflow_tracking_uri"]
            ),
            mlflow_artifact_location=os.environ.get(
                "FRESHRANK_MLFLOW_ARTIFACTS", at_home["mlflow_artifact_location"]
            ),
            dagster_home=_env_path("DAGSTER_HOME", at_home["dagster_home"]),
            event_weights=_env_event_weights(),
            future_tolerance_hours=_env_float(
                "FRESHRANK_FUTURE_TOLERANCE_HOURS", DEFAULT_FUTURE_TOLERANCE_HOURS
            ),
            top_k=int(_env_float("FRESHRANK_TOP_K", DEFAULT_TOP_K)),
            history_length=int(_env_float("FRESHRANK_HISTORY_LENGTH", DEFAULT_HISTORY_LENGTH)),
            embedding=EmbeddingConfig(
                model=os.environ.get("FRESHRANK_EMBEDDING_MODEL", PACKAGED_MODEL),
                max_length=int(_env_float("FRESHRANK_EMBEDDING_MAX_LENGTH", 128)),
                batch_size=int(_env_float("FRESHRANK_EMBEDDING_BATCH_SIZE", 64)),
                device=os.environ.get("FRESHRANK_EMBEDDING_DEVICE", "auto"),
                precision=os.environ.get("FRESHRANK_EMBEDDING_PRECISION", "auto"),
            ),
            text_template=os.environ.get("FRESHRANK_TEXT_TEMPLATE", DEFAULT_TEXT_TEMPLATE),
            promotion_margin=_env_float("FRESHRANK_PROMOTION_MARGIN", 0.002),
            candidate_sources=_env_sources(),
            backtest_cuts=int(_env_float("FRESHRANK_BACKTEST_CUTS", 3)),
            backtest_training_cuts=int(_env_float("FRESHRANK_BACKTEST_TRAINING_CUTS", 5)),
            backtest_window_fraction=_env_float("FRESHRANK_BACKTEST_WINDOW_FRACTION", 0.06),
            backtest_min_users=int(_env_float("FRESHRANK_BACKTEST_MIN_USERS", 10)),
            backtest_max_users=int(_env_float("FRESHRANK_BACKTEST_MAX_USERS", 2_000)),
            ablations=os.environ.get("FRESHRANK_ABLATIONS", "0").lower()
            not in ("0", "false", "no", ""),
            sequential_epochs=int(_env_float("FRESHRANK_SEQUENTIAL_EPOCHS", 3)),
            mmr_lambda=_env_float("FRESHRANK_MMR_LAMBDA", -1.0)
            if os.environ.get("FRESHRANK_MMR_LAMBDA")
            else None,
            context_key=os.environ.get("FRESHRANK_CONTEXT_KEY", "").strip() or DEFAULT_CONTEXT_KEY,
            compute=_env_choice("FRESHRANK_COMPUTE", ("local", "ray")),
            rank_processes=int(_env_positive("FRESHRANK_RANK_PROCESSES", _usable_cores())),
            rank_processes_min_users=int(
                _env_positive("FRESHRANK_RANK_PROCESSES_MIN_USERS", 10_000)
            ),
            ray_address=os.environ.get("FRESHRANK_RAY_ADDRESS", "").strip() or None,
            ray_workers=int(_env_float("FRESHRANK_RAY_WORKERS", 2)),
            ray_train_workers=int(_env_float("FRESHRANK_RAY_TRAIN_WORKERS", 1)),
            ray_num_cpus=int(_env_float("FRESHRANK_RAY_NUM_CPUS", 0)) or None,
            ray_object_store_mb=int(_env_float("FRESHRANK_RAY_OBJECT_STORE_MB", 512)),
            ray_storage=os.environ.get("FRESHRANK_RAY_STORAGE", "").strip(),
            dbt_target=_env_choice("FRESHRANK_DBT_TARGET", ("duckdb", "spark")),
            dbt_in_process=os.environ.get("FRESHRANK_DBT_IN_PROCESS", "1").strip() != "0",
            spark_dir=_env_path("FRESHRANK_SPARK_DIR", at_home["spark_dir"]),
            new_item_slots=int(_env_float("FRESHRANK_NEW_ITEM_SLOTS", 1)),
            trending_short_window_days=_env_float(
                "FRESHRANK_TRENDING_SHORT_WINDOW_DAYS", DEFAULT_TRENDING_SHORT_WINDOW_DAYS
            ),
            trending_long_window_days=_env_float(
                "FRESHRANK_TRENDING_LONG_WINDOW_DAYS", DEFAULT_TRENDING_LONG_WINDOW_DAYS
            ),
            covisitation_window_events=int(
                _env_float(
                    "FRESHRANK_COVISITATION_WINDOW_EVENTS", DEFAULT_COVISITATION_WINDOW_EVENTS
                )
            ),
            covisitation_window_hours=int(
                _env_float("FRESHRANK_COVISITATION_WINDOW_HOURS", DEFAULT_COVISITATION_WINDOW_HOURS)
            ),
            covisitation_backward_weight=_env_float(
                "FRESHRANK_COVISITATION_BACKWARD_WEIGHT", DEFAULT_COVISITATION_BACKWARD_WEIGHT
            ),
            serving_candidates=int(_env_positive("FRESHRANK_SERVING_CANDIDATES", 50)),
            publish_chunk_rows=int(
                _env_positive("FRESHRANK_PUBLISH_CHUNK_ROWS", DEFAULT_CHUNK_ROWS)
            ),
            recent_events_per_user=int(_env_positive("FRESHRANK_RECENT_EVENTS_PER_USER", 20)),
            api_workers=int(_env_positive("FRESHRANK_API_WORKERS", 1)),
            api_access_log=_env_flag("FRESHRANK_API_ACCESS_LOG"),
            batch_nice=_env_niceness("FRESHRANK_BATCH_NICE", 10),
            experiment_attribution_hours=_env_positive(
                "FRESHRANK_EXPERIMENT_ATTRIBUTION_HOURS", 24.0
            ),
            experiment_alpha=_env_float("FRESHRANK_EXPERIMENT_ALPHA", 0.05),
            experiment_min_users=int(_env_positive("FRESHRANK_EXPERIMENT_MIN_USERS", 100)),
            pseudonymise_key=os.environ.get("FRESHRANK_PSEUDONYMISE_KEY") or None,
            retention_days=_env_retention_days(),
            api_require_keys=_env_choice("FRESHRANK_API_REQUIRE_KEYS", ("auto", "always")),
            api_keys_for_reads=_env_flag("FRESHRANK_API_KEYS_FOR_READS"),
            api_events_per_second=_env_positive("FRESHRANK_API_EVENTS_PER_SECOND", 5.0),
            api_events_burst=int(_env_positive("FRESHRANK_API_EVENTS_BURST", 20)),
            api_max_events=_env_whole("FRESHRANK_API_MAX_EVENTS", API_MAX_EVENTS),
            api_max_body_bytes=_env_whole("FRESHRANK_API_MAX_BODY_BYTES", API_MAX_BODY_BYTES),
        )

    def at_home(self, home: Path) -> Settings:
        """These settings for a separate deployment under ``home``: every path and store of
        it (warehouse, serving store, MLflow, Dagster) there, whatever the environment says of
        this one's; the tunables unchanged."""
        home = Path(home).resolve()
        return replace(self, home=home, **_home_locations(home))

    @property
    def pseudonymiser(self) -> Pseudonymiser | None:
        """The keyed hash that replaces user ids, or None when pseudonymisation is off."""
        return Pseudonymiser.from_secret(self.pseudonymise_key)

    @property
    def compiled_rankers(self) -> Path:
        """Where rankers compiled for serving are cached (Ranker.compile), for every process."""
        return self.home / "cache" / "rankers"

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(self.event_weights)

    def landing_folder(self, kind: str) -> Path:
        """Where files of one kind (``events`` or ``items``) wait to be loaded."""
        return self.landing_dir / kind

    def archive_folder(self, kind: str) -> Path:
        """Where files of one kind are kept after they loaded."""
        return self.landing_dir / "archive" / kind

    def rejected_folder(self, kind: str) -> Path:
        """Where files of one kind that could not be read are kept, as delivered."""
        return self.landing_dir / "rejected" / kind

    def ensure_dirs(self) -> None:
        for folder in (
            self.home,
            self.landing_folder("events"),
            self.landing_folder("items"),
            self.warehouse_path.parent,
            self.dagster_home,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        if self.mlflow_tracking_uri.startswith("sqlite:///"):
            Path(self.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )


def get_settings() -> Settings:
    """Read the settings afresh from the environment: what a command does once, as it starts.
    Assets, checks, sensors and schedules get theirs from the `settings` resource instead
    (orchestration/resources.py)."""
    return Settings.from_env()
