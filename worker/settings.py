"""Settings, read once from the environment (prefix TIMEBOK_) into one typed object."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.storeenv import DEFAULT_DATA_DIR as DEFAULT_DATA_DIR  # where the demo keeps state
from worker.storeenv import DEFAULT_DATABASE_URL, PREFIX

SAMPLE_REGISTRY = Path(__file__).resolve().parent / "sample" / "registry.toml"


class Settings(BaseSettings):
    """Every knob timebok reads; see README 'Configuration'."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    broker_url: str = "redis://localhost:6379/0"
    epj_broker_url: str | None = Field(
        default=None, description="EPJ transport; defaults to broker_url (amqp:// works too)"
    )
    epj_transport: str = Field(
        default="kombu", pattern="^(kombu|nhn)$", description="kombu, or nhn (the national bus)"
    )
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL; PostgreSQL via postgresql+psycopg://...",
    )
    database_schema: str | None = Field(
        default=None, description="PostgreSQL schema to use (search_path); None = public"
    )
    own_her_id: str = "8093244"
    own_name: str = "Helsenorge.no"
    registry_file: Path = SAMPLE_REGISTRY
    sentry_dsn: str | None = None
    environment: str = "development"
    log_format: str = Field(default="text", pattern="^(text|json)$")
    log_level: str = "INFO"
    metrics_port: int | None = None

    # The patient pages (`/portal/` of `timebok api`).
    portal_api_url: str | None = Field(
        default=None, description="where the pages call the API; default: the API's own address"
    )
    portal_api_token: str | None = Field(
        default=None, description="the pages' bearer token; default: the first TIMEBOK_API_TOKENS"
    )
    portal_secret: str | None = Field(
        default=None, description="signs the login cookie; unset: a new key per process"
    )

    apprec_timeout: float = Field(default=300.0, gt=0, description="seconds to wait for AppRec")
    reply_timeout: float = Field(default=7 * 24 * 3600.0, gt=0, description="seconds to wait")
    max_resends: int = Field(default=3, ge=0, description="resends (same MsgId) before FAILED")
    task_max_retries: int = Field(default=10, ge=0)
    retry_backoff_max: float = Field(default=300.0, gt=0)
    max_message_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    max_xml_depth: int = Field(default=100, gt=0)
    visibility_timeout: int = Field(default=3600, gt=0)
    delivery_limit: int = Field(
        default=10, ge=1, description="RabbitMQ: deliveries of a task before it is dead-lettered"
    )
    relay_interval: float = Field(default=2.0, gt=0)
    outbox_lease: float = Field(
        default=30.0, gt=0, description="seconds a new outbox row is left to its writer"
    )
    outbox_mark_delay: float = Field(
        default=0.05,
        ge=0,
        description="seconds a published row's mark waits for others to go in one statement",
    )
    timeout_check_interval: float = Field(default=10.0, gt=0)

    # Synchronous lookups (HentLedigeTimer / HentPlanlagteTimer).
    sync_timeout: float = Field(
        default=15.0, gt=0, description="seconds a lookup waits for the clinic's answer"
    )
    lookup_cache_ttl: float = Field(
        default=30.0, ge=0, description="seconds a free-slots answer is served from the cache"
    )
    lookup_max_in_flight: int = Field(
        default=8, gt=0, description="lookups in flight per clinic before 'busy, try again'"
    )
    cache_url: str | None = Field(
        default=None,
        description="Redis for the lookup cache, in-flight counts and the hand-off of lookup "
        "answers between processes; defaults to a redis:// broker_url",
    )

    # The portal API (`timebok api`).
    api_host: str = Field(default="127.0.0.1", description="address `timebok api` listens on")
    api_port: int = Field(default=8080, gt=0, lt=65536, description="port `timebok api` listens on")
    api_tokens: SecretStr = Field(
        default=SecretStr(""), description="comma-separated bearer tokens the portals present"
    )
    api_max_body_bytes: int = Field(
        default=64 * 1024, gt=0, description="largest request body the API reads (else 413)"
    )

    # Receiving on the national bus (the `nhn` transport only).
    nhn_credit: int = Field(
        # 8: enough to keep two pool processes busy, little stranded by a killed worker
        default=8,
        gt=0,
        le=1000,
        description="unsettled messages each receiving link holds at most",
    )
    nhn_handlers: int = Field(
        # 4 threads of the main process: the least CPU per message on a busy 2-core machine;
        # 0 hands bus messages to the pool processes (every core, but more CPU per message)
        default=4,
        ge=0,
        le=64,
        description="bus message handler threads of the main process; 0: the pool processes",
    )

    # Keys and certificates of our own party (PEM files; the `nhn` transport only).
    signing_key: Path | None = Field(default=None, description="private key that signs (PEM)")
    signing_cert: Path | None = Field(default=None, description="its certificate, nonRepudiation")
    encryption_key: Path | None = Field(default=None, description="private key that decrypts")
    encryption_cert: Path | None = Field(default=None, description="its cert, keyEncipherment")
    previous_encryption_key: Path | None = Field(
        default=None, description="the key before a rollover, still accepted for decryption"
    )

    @model_validator(mode="after")
    def _default_epj_broker(self) -> Settings:
        if not self.epj_broker_url:
            self.epj_broker_url = self.broker_url
        return self

    @model_validator(mode="after")
    def _mark_within_the_lease(self) -> Settings:
        if self.outbox_mark_delay * 10 > self.outbox_lease:
            raise ValueError(
                "outbox_mark_delay must be at most a tenth of outbox_lease: a row whose mark "
                "comes after its lease would be published a second time"
            )
        return self

    @property
    def epj_url(self) -> str:
        """The EPJ transport URL (never None after validation)."""
        return self.epj_broker_url or self.broker_url

    @property
    def lookup_cache_url(self) -> str | None:
        """The Redis the lookup cache and in-flight counts live in (None: none, per process)."""
        if self.cache_url:
            return self.cache_url
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else None

    @property
    def api_token_list(self) -> tuple[str, ...]:
        """The configured bearer tokens (blanks dropped; none: every /v1 call is refused)."""
        raw = self.api_tokens.get_secret_value()
        return tuple(t.strip() for t in raw.split(",") if t.strip())

    @property
    def inbound_queue(self) -> str:
        """Where EPJ systems put messages for us."""
        return async_queue(self.own_her_id)


def async_queue(her_id: str) -> str:
    """The business-message queue of a communication party."""
    return f"{her_id}_async"


def sync_queue(her_id: str) -> str:
    """Where a party takes synchronous requests."""
    return f"{her_id}_sync"


def sync_reply_queue(her_id: str) -> str:
    """Where a party takes the answers to its synchronous requests."""
    return f"{her_id}_syncreply"


def error_queue(her_id: str) -> str:
    """The error queue of a communication party."""
    return f"{her_id}_error"


BUS_QUEUE_SUFFIXES = ("_async", "_sync", "_syncreply", "_error", "_dl")  # per party, the bus


def load() -> Settings:
    """Read the settings from the environment."""
    return Settings()
