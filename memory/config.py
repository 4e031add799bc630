"""Settings for every layer, read once from the environment (prefix ``PLIXO_``).

They live in ``memory`` because it is the bottom layer: everything above may import it, and the
defaults here are what makes the fresh-machine commands work with no keys and no network.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can set, with offline, embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="PLIXO_", env_file=None, extra="ignore")

    data_dir: Path = Field(
        default=Path("plixo-data"),
        description="Folder for the SQLite ledger, the chromadb recall and uploaded evidence.",
    )
    database_url: str | None = Field(
        default=None,
        description="Any SQLAlchemy URL; defaults to a SQLite file inside data_dir.",
    )
    model: str = Field(
        default="offline",
        description="offline | openai:<name> | litellm:<name> | openai-compatible:<name>",
    )
    model_base_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible server (vLLM, llama.cpp, Ollama).",
    )
    model_api_key: SecretStr | None = None
    model_timeout_s: float = 30.0
    model_retries: int = 2
    model_concurrency: int = 8
    judge_model: str | None = Field(
        default=None, description="Model for LLMJudge evals; unset skips it."
    )

    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where payers reach the mini-portal; pay links are built from it.",
    )
    secret_key: SecretStr = Field(
        default=SecretStr("plixo-dev-secret-change-me"),
        description="Signs sessions; set a long random value in production.",
    )

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "ar@plixo.example"

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_base_url: str | None = Field(
        default=None, description="Override of Slack's API URL (a local server in tests)."
    )

    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_publishable_key: str | None = Field(
        default=None,
        description="Publishable key (pk_...) for Stripe.js on the mini-portal's pay page.",
    )
    stripe_api_base: str | None = Field(
        default=None, description="Override of Stripe's API base (localstripe in tests)."
    )

    chroma_url: str | None = Field(
        default=None,
        description="A Chroma server (e.g. http://10.0.0.5:8000) for recall shared by machines; "
        "default: the local folder data_dir/chroma.",
    )

    # --- durable execution (DBOS): workers, queues, delivery retries ---------------------------
    dbos_system_database_url: str | None = Field(
        default=None,
        description="DBOS system database; default: the ledger when it is PostgreSQL, else a "
        "SQLite file in data_dir.",
    )
    worker_concurrency: int = Field(
        default=16, ge=1, description="Workflows one worker process runs at once, per queue."
    )
    autopilot_concurrency: int = Field(
        default=8,
        ge=1,
        description="Autopilot drafting workflows running at once, per organisation.",
    )
    model_requests_per_minute: int = Field(
        default=600,
        ge=1,
        description="Drafting workflows a real model may start per minute, per org.",
    )
    worker_poll_s: float = Field(default=0.2, gt=0, description="Queue polling interval.")
    worker_stale_s: float = Field(
        default=30.0, gt=0, description="A worker not seen for this long is presumed dead."
    )
    delivery_max_attempts: int = Field(
        default=5, ge=1, description="Hand-offs a message may have that end in a temporary error."
    )
    delivery_backoff_s: tuple[float, ...] = Field(
        default=(30.0, 120.0, 600.0, 1800.0),
        description="Waits between hand-offs after a temporary SMTP error.",
    )

    @property
    def resolved_database_url(self) -> str:
        """The ledger URL: explicit, or a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'plixo.db').resolve()}"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def evidence_dir(self) -> Path:
        return self.data_dir / "evidence"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
