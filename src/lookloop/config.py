"""Settings: one pydantic ``BaseSettings`` read from ``LOOKLOOP_*`` environment variables."""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _default_data_dir() -> Path:
    # The brief puts real data in ../shared/data, beside the repository checkout.
    return (_REPO_ROOT.parent / "shared" / "data").resolve()


class Settings(BaseSettings):
    """Everything an operator can set. Env prefix ``LOOKLOOP_`` (``LOOKLOOP_DATABASE_URL`` …)."""

    model_config = SettingsConfigDict(env_prefix="LOOKLOOP_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        validation_alias=AliasChoices("LOOKLOOP_DATA_DIR", "LOOKLOOP_DATA", "data_dir"),
        description="Folder with grocery/, clinc150/ … (env LOOKLOOP_DATA or LOOKLOOP_DATA_DIR)",
    )
    var_dir: Path = Field(default=Path("var"), description="Database, frames, model caches.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite under var_dir.")
    model_dir: Path | None = Field(default=None, description="Model and embedding caches; default var_dir/models.")

    host: str = "127.0.0.1"
    port: int = 8000

    # Input limits (bad input gets a 4xx, never a 500).
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_question_chars: int = 500
    max_audio_seconds: float = Field(default=60.0, description="Longest voice upload accepted.")
    max_audio_bytes: int = Field(default=16 * 1024 * 1024, ge=1, description="Largest voice upload accepted.")
    max_json_bytes: int = Field(
        default=64 * 1024, ge=1024,
        description="Largest request body of every route but the uploads (asks with a frame, voice asks).",
    )

    # Perception
    embedder: str = Field(default="lite0", description="lite0 or lite2")

    # Escalation
    alpha: float = Field(default=0.05, description="Promised error rate of auto-answers.")
    confidence_threshold: float = Field(default=0.5, description="Fixed threshold used until calibrated.")
    audit_rate: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="Share of identify asks drawn at random, whatever the decision, as audit asks: a person "
        "labels them and the labels recalibrate the serving policy (wearers who allow human review and frames).",
    )
    calibration_min_labels: int = Field(
        default=200, ge=1,
        description="Audit labels of the serving model needed before they replace the fixed threshold "
        "(where no held-out calibration set exists: start-up calibration off).",
    )
    delta: float = Field(
        default=0.1, gt=0.0, lt=1.0,
        description="Risk that a certified auto-answer error bound fails (the bound holds with 1 - delta).",
    )
    startup_calibration: bool = Field(
        default=True,
        description="Calibrate the start-up model at once (cross-fitting on the labelled photos, near-duplicate "
        "bursts kept whole): a per-group conformal policy and the outlier gate serve from the first start. "
        "Off: the fixed threshold serves until a trained version is promoted or audit labels calibrate it.",
    )
    outlier_rate: float = Field(
        default=0.05, gt=0.0, lt=1.0,
        description="False-escalation rate of the outlier gate: the share of asks about known items it may "
        "flag as unknown.",
    )
    promotion_max_unknown_auto_answer: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="Promotion gate: the largest share of asks about classes held out of training (leave classes "
        "out) a candidate may answer without a person, flagged as unknown or escalated.",
    )

    # Humans in the loop (accounts, review queue, live answers, feedback)
    allow_anonymous_asks: bool = Field(default=True, description="Asks without a token (device_id 'anonymous').")
    session_ttl_hours: float = Field(default=12.0, description="Reviewer/operator login session lifetime.")
    review_lock_timeout_s: float = Field(default=120.0, description="An abandoned review lock returns after this.")
    review_consensus: int = Field(default=1, ge=1, le=9, description="Answers needed per queue item.")
    review_gold_every: int = Field(default=10, ge=0, description="Mix a gold item in every N items (0: never).")
    trust_min_gold_answers: int = Field(
        default=5, ge=0, description="Gold items a reviewer must have answered before their labels teach the model "
        "on their own; until then a second agreeing reviewer is needed.",
    )
    trust_min_gold_accuracy: float = Field(
        default=0.9, ge=0.0, le=1.0, description="Gold accuracy a reviewer needs for their labels to teach the "
        "model on their own; below it a second agreeing reviewer is needed.",
    )
    live_answer_timeout_s: float = Field(default=30.0, description="Wearer told 'no helper answered' after this.")
    wait_update_s: float = Field(
        default=10.0, gt=0, description="While a helper is being found, the wearer's stream hears the queue "
        "position and the time waited this often.",
    )
    reask_window_s: float = Field(default=30.0, description="A re-ask within this counts as an implicit 'wrong'.")

    frame_key: str = Field(
        default="", description="base64 32-byte AES key for frames at rest; empty: generated into key_dir"
    )
    key_dir: Path | None = Field(
        default=None,
        description="Where the generated frame key is kept (a 0700 directory, never inside the frames directory "
        "nor beside the database file); default var_dir/keys. Put it on another volume, or keep it out of "
        "backups of var_dir, so a copy of the frames and database alone cannot open the sealed originals.",
    )

    # Privacy and hardening (privacy helper)
    original_retention_days: float = Field(
        default=7.0, ge=0, description="Consented unredacted frames (encrypted) are deleted after this."
    )
    redact_text: str = Field(
        default="background",
        pattern="^(background|sync)$",
        description="Redaction of faces and personal text: 'background' keeps the ask fast (the upload stays "
        "sealed, encrypted, until a worker redacted it; no person sees it before). 'sync' redacts before the answer.",
    )
    purge_interval_s: float = Field(
        default=3600.0, ge=0, description="Purge period (0: off): a job run by the server on SQLite, by "
        "`lookloop worker` on Postgres.",
    )

    # Background jobs (redaction, purges, training, exports)
    job_max_attempts: int = Field(default=3, ge=1, le=20, description="Attempts of a job before it fails.")
    job_retry_wait_s: float = Field(default=5.0, ge=0, description="Wait before a failed job's next attempt.")
    job_stalled_after_s: float = Field(
        default=30.0, ge=1, description="A job whose worker sent no heartbeat for this long (killed, machine "
        "lost) is put back and runs again (Postgres).",
    )
    job_concurrency: int = Field(default=1, ge=1, le=64, description="Jobs one `lookloop worker` runs at once.")
    job_retention_days: float = Field(
        default=14.0, ge=0, description="Rows of finished jobs (succeeded or failed) are removed by the periodic "
        "purge this many days after they finished (0: kept for ever).",
    )
    ask_threads: int = Field(
        default=6, ge=1, le=64,
        description="Asks the API workers on one machine answer at once, shared among them (each worker at least "
                    "2); the rest wait their turn on the event loop. A few keep the cores busy; dozens only fight "
                    "over the interpreter lock and hold up reviewers' answers, labels and live events.")
    api_workers_per_machine: int = Field(
        default=1, ge=1, le=64,
        description="API workers sharing this machine's cores (`lookloop serve --workers N` sets it for its "
                    "workers). Each takes its share of the cores for a forward pass and of the ask threads: more "
                    "threads than cores only queue for them and switch between each other.")
    recent_query_embeddings: int = Field(
        default=5000, ge=0, le=1_000_000,
        description="Embeddings of the latest asks one API worker keeps in memory (5 KB each), so a person's "
                    "answer to one of them is learnt without a second forward pass. Never written to disk.")
    rate_limit_device_per_min: float = Field(default=120.0, ge=0, description="Requests per device (0: off).")
    rate_limit_account_per_min: float = Field(default=600.0, ge=0, description="Per reviewer/operator (0: off).")
    rate_limit_anonymous_per_min: float = Field(default=120.0, ge=0, description="Per client address (0: off).")
    rate_limit_burst: int = Field(default=30, ge=1, description="Requests a quiet client may send at once.")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of the reverse proxies in front of the server, comma-separated. "
        "X-Forwarded-For is believed only from these (its right-most hop that is not one of them is the client); "
        "empty: the direct peer is the client and the header is ignored.",
    )
    login_failures_per_account: int = Field(
        default=5, ge=1, description="Failed sign-ins to one username before each further try must wait."
    )
    login_failures_per_address: int = Field(
        default=20, ge=1, description="Failed sign-ins from one client address before each further try must wait."
    )
    login_backoff_base_s: float = Field(
        default=1.0, gt=0, description="The first wait after too many failed sign-ins; it doubles with each failure."
    )
    login_backoff_max_s: float = Field(default=900.0, gt=0, description="The longest wait between sign-in tries.")

    # Backends (off by default)
    chat_base_url: str = ""
    chat_model: str = ""
    chat_api_key: str = ""
    vision_base_url: str = ""
    vision_model: str = ""
    llama_cpp_model_path: str = ""
    vision_api_key: str = Field(default="", description="Bearer key of the vision backend; empty: chat_api_key.")
    backend_timeout_s: float = 20.0

    # Observability
    metrics_token: str = Field(
        default="", description="A bearer token that may read /metrics (a Prometheus scraper); operators always "
        "may. Empty: operators only.")
    worker_id: str = Field(default="", description="This process's name in /metrics; empty: host:pid.")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        """A comma-separated list (or a JSON list), each entry an address or a network."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = json.loads(text)
            else:
                value = [part for part in (p.strip() for p in text.split(",")) if part]
        if isinstance(value, list | tuple):
            for entry in value:
                try:
                    ipaddress.ip_network(str(entry).strip(), strict=False)
                except ValueError as exc:
                    raise ValueError(f"trusted_proxies: {entry!r} is not an address or network") from exc
            return [str(entry).strip() for entry in value]
        return value

    @property
    def ask_threads_per_worker(self) -> int:
        """This API worker's share of ``ask_threads`` (at least 2, so one slow ask never holds up the rest)."""
        return max(2, self.ask_threads // self.api_workers_per_machine)

    @property
    def resolved_var_dir(self) -> Path:
        return self.var_dir.resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_var_dir / 'lookloop.db'}"

    @property
    def grocery_dir(self) -> Path:
        return self.data_dir / "grocery"

    @property
    def model_cache_dir(self) -> Path:
        return (self.model_dir or self.resolved_var_dir / "models").resolve()

    @property
    def frames_dir(self) -> Path:
        return self.resolved_var_dir / "frames"

    @property
    def exports_dir(self) -> Path:
        """Where exports asked over HTTP are written (shared with the job workers, like the frames)."""
        return self.resolved_var_dir / "exports"

    @property
    def resolved_key_dir(self) -> Path:
        return (self.key_dir or self.resolved_var_dir / "keys").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
