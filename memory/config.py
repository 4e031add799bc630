"""Settings for every layer, read once from the environment (prefix ``PLIXO_``).

They live in ``memory`` because it is the bottom layer: everything above may import it, and the
defaults here are what makes the fresh-machine commands work with no keys and no network.
"""

from __future__ import annotations

import os
import secrets
import stat
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
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
    draft_token_budget: int = 24_000  # input + output tokens one draft may use (UsageLimits)
    otel_endpoint: str | None = None  # OTLP/HTTP traces endpoint; unset: tracing off
    model_concurrency: int = 8
    judge_model: str | None = Field(
        default=None, description="Model for LLMJudge evals; unset skips it."
    )

    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where payers reach the mini-portal; pay links are built from it.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description=(
            "Signs sessions (at least 32 characters, never a well-known value). Unset: a random "
            "key is generated once and kept in data_dir/secret_key (owner-only permissions)."
        ),
    )
    api_token_ttl_days: int = Field(
        default=30, ge=1, le=365, description="How long a bearer token works (days)."
    )

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "ar@plixo.example"
    dns_nameserver: str | None = Field(
        default=None,
        description="host:port of the resolver for sending-domain checks (default: system).",
    )
    domain_recheck_cron: str | None = Field(
        default="0 7 * * * *",
        description=(
            "When workers re-check sending domains (a DBOS cron with seconds; a domain is "
            "checked when its last check is a day old). Empty: no scheduled re-check."
        ),
    )
    notification_sweep_cron: str | None = Field(
        default="0 */5 * * * *",
        description=(
            "When workers notify people of breached dispute SLAs and missed promises (a DBOS "
            "cron with seconds; each event is notified once). Empty: no scheduled sweep."
        ),
    )

    # Replies in from a real mailbox (``plixo mailbox sync``); unset host: no mailbox.
    imap_host: str | None = None
    imap_port: int = 993
    imap_ssl: bool = True
    imap_starttls: bool = False
    imap_username: str | None = None
    imap_password: SecretStr | None = None
    imap_folder: str = "INBOX"
    imap_reply_address: str | None = Field(
        default=None,
        description="Reply-To for outbound mail, with {token} for the thread (e.g. "
        "ar+{token}@example.com); default: PLIXO_SMTP_FROM with +{token} when a mailbox is set.",
    )
    imap_max_attachment_bytes: int = 10 * 1024 * 1024
    imap_org: str | None = Field(
        default=None,
        description="Slug of the organisation the mailbox's replies belong to; needed only when "
        "the ledger holds several (the default of `plixo mailbox sync --org`, and the worker's).",
    )
    mailbox_sync_cron: str | None = Field(
        default="0 */2 * * * *",
        description=(
            "When workers read the mailbox (a DBOS cron with seconds; each message is stored "
            "once per Message-ID). Empty, or no PLIXO_IMAP_HOST: no scheduled sync."
        ),
    )

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

    @field_validator("secret_key")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            problem = weak_secret_problem(value.get_secret_value())
            if problem:
                raise ValueError(f"PLIXO_SECRET_KEY {problem}")
        return value

    @property
    def secret_key_path(self) -> Path:
        """Where the generated signing key lives when ``PLIXO_SECRET_KEY`` is unset."""
        return self.data_dir / SECRET_KEY_FILE

    def signing_key(self) -> str:
        """The key that signs sessions: the configured one, or the data directory's own."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return load_or_create_secret(self.secret_key_path)

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
    ledger_pool_size: int = Field(
        default=5, ge=1, description="Ledger connections a CLI or worker process keeps open."
    )
    ledger_max_overflow: int = Field(
        default=10, ge=0, description="Ledger connections it may open beyond those, for a burst."
    )
    dbos_pool_size: int = Field(
        default=10,
        ge=2,
        description="DBOS system-database connections per process (DBOS's own default is 20). "
        "A worker on PostgreSQL holds at most ledger_pool_size + ledger_max_overflow + "
        "dbos_pool_size + 3 connections: keep the sum over all processes under max_connections.",
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
    cash_copilot_per_import: int = Field(
        default=20,
        ge=0,
        description="Bank lines per import the co-pilot reads for a split proposal (0: none).",
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
    def worker_connection_budget(self) -> int:
        """The most database connections one worker process opens: its ledger pool (with
        overflow), DBOS's system-database pool, DBOS's notification listener and the two of
        the DKIM key lookup (``tools.delivery.dkim``)."""
        return self.ledger_pool_size + self.ledger_max_overflow + self.dbos_pool_size + 3

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


SECRET_KEY_FILE = "secret_key"
MIN_SECRET_LENGTH = 32
# Values that appear in docs, tutorials and earlier plixo releases: anyone can sign with them.
WELL_KNOWN_SECRETS = frozenset(
    {
        "",
        "plixo-dev-secret-change-me",
        "secret",
        "secret-key",
        "secret_key",
        "changeme",
        "change-me",
        "change_me",
        "changeit",
        "password",
        "development",
        "dev",
        "test",
        "plixo",
        "your-secret-key",
        "your-secret-key-here",
        "supersecret",
        "insecure",
    }
)


def weak_secret_problem(value: str) -> str | None:
    """Why ``value`` must not sign sessions (None when it is fit to)."""
    if value.strip().lower() in WELL_KNOWN_SECRETS:
        return (
            "is a well-known development value that anyone can sign cookies with; set a long "
            "random value (python -c 'import secrets; print(secrets.token_urlsafe(48))') or "
            "unset it to let plixo generate one in the data directory."
        )
    if len(value) < MIN_SECRET_LENGTH:
        return (
            f"is {len(value)} characters long; use at least {MIN_SECRET_LENGTH} random "
            "characters (python -c 'import secrets; print(secrets.token_urlsafe(48))')."
        )
    return None


def load_or_create_secret(path: Path) -> str:
    """The signing key kept at ``path``, generated on first use with owner-only permissions.

    Creation is exclusive (``O_EXCL``), so two workers starting together agree on one key: the
    loser reads the winner's file. A key file that others can read is tightened to 0600 first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(48))
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
    value = path.read_text(encoding="utf-8").strip()
    problem = weak_secret_problem(value)
    if problem:
        raise ValueError(
            f"The signing key in {path} {problem} Delete the file to have a new one generated."
        )
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
