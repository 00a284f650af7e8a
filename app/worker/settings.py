"""Settings of a cardstream process, read from `CARDSTREAM_*` environment variables.

Environment variables are read only in `Settings()` (never at import time); the
settings object is frozen and passed down explicitly. A bad value raises
`InvalidSettings`: one line naming each bad variable and what is wrong with it,
never the value given (it may be a token or a password).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.domain.card import CardSettings
from app.domain.identity import GuardLimits
from app.domain.links import DEFAULT_BLOCKED_VALUES
from app.domain.people import DEFAULT_MODEL, MatchModel
from app.domain.rfm import RfmThresholds
from app.pipeline.people import PeopleSettings
from app.pipeline.topics import state_app_id
from app.worker.logs import level_of

ENV_PREFIX = "CARDSTREAM_"
#: A state version name: usable in topic, consumer group and directory names.
STATE_VERSION_PATTERN = r"([A-Za-z0-9][A-Za-z0-9._-]{0,39})?"


class InvalidSettings(ValueError):
    """Settings that cannot be used; the message names them, never their values."""


def describe_errors(error: ValidationError) -> str:
    """One line naming each bad setting (`CARDSTREAM_X (x): what is wrong`), without its
    value: pydantic's own message quotes the input, for a check of two settings all of it."""
    parts = []
    for detail in error.errors(include_url=False, include_input=False, include_context=False):
        message = detail["msg"].removeprefix("Value error, ")
        loc = detail["loc"]
        if loc:
            field = str(loc[0])
            where = "".join(f"[{part}]" for part in loc[1:])
            message = f"{ENV_PREFIX}{field.upper()}{where} ({field}): {message}"
        parts.append(message)
    return "; ".join(parts)


@lru_cache(maxsize=4)
def _match_model(path: Path) -> MatchModel:
    """The match model in file `path` (read once); raises InvalidSettings."""
    try:
        return MatchModel.from_json(orjson.loads(path.read_bytes()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidSettings(
            f"{ENV_PREFIX}PEOPLE_MODEL_FILE (people_model_file): not a match model"
            f" ({type(exc).__name__})"
        ) from None


class Settings(BaseSettings):
    """Every knob of a worker, the CLI and the demo. Env var = `CARDSTREAM_` + upper-case name."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", hide_input_in_errors=True
    )

    def __init__(self, **values: Any) -> None:
        """Read the environment (`values` override it); raises InvalidSettings."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise InvalidSettings(describe_errors(exc)) from None

    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,...]")
    app_id: str = Field("cardstream", description="Faust app id: consumer group and state prefix")
    data_dir: Path = Field(Path("./data"), description="Where the worker keeps its RocksDB state")
    state_version: str = Field(
        "",
        pattern=f"^{STATE_VERSION_PATTERN}$",
        description="Version of the worker's state (empty: the original one). A version V names "
        "its own consumer group and internal topics (`<app_id>-V`) and data directory "
        "(`<data_dir>/state-V`), so `cardstream rebuild` can build fresh state beside the live one",
    )
    publish_outputs: bool = Field(
        True,
        description="Send identity changes, card changes, quarantined claims and dead letters to "
        "their topics; `cardstream rebuild` turns it off so downstream readers get no repeats",
    )
    web_host: str = Field("127.0.0.1", description="Address the worker's web server binds to")
    web_port: int = Field(6066, description="Port of the worker's web server (lookup API, /health)")
    allow_open: bool = Field(
        False,
        description="Serve the web server on a non-loopback address without credentials (a "
        "warning is logged); without it such a worker refuses to start",
    )
    topics_file: Path | None = Field(
        None, description="Topic declarations; default: topics/topics.toml of the source tree"
    )
    default_phone_region: str = Field(
        "PL", description="Region for phone numbers written without a country code"
    )
    rebalance_timeout: float = Field(
        60.0, description="Consumer rebalance timeout, seconds (use ~4 on the embedded broker)"
    )
    session_timeout: float = Field(
        60.0, description="Consumer session timeout, seconds: how soon a dead worker is noticed"
    )
    heartbeat_interval: float = Field(3.0, description="Consumer heartbeat interval, seconds")
    fetch_max_wait_ms: int | None = Field(
        None,
        description="Longest a consumer fetch waits for data (Faust fixes 1500 ms; the embedded "
        "broker answers slowly at that setting, so the demo and tests use 50)",
    )
    standby_replicas: int = Field(
        0,
        ge=0,
        description="Standby copies of each table partition on other workers (faster "
        "failover; off by default: a promoted standby copy was seen missing records)",
    )
    producer_linger_ms: int = Field(
        5,
        ge=0,
        description="How long the worker's producer waits to fill a batch, ms (Faust's default "
        "0 sends a request per record: 2.2x slower end to end)",
    )
    librdkafka_sends: bool = Field(
        True,
        description="Send what agents' batches send, changelog records included, through "
        "librdkafka (confluent-kafka) instead of Faust's Python producer (faster)",
    )
    op_envelopes: bool = Field(
        True,
        description="Pack the internal ops a batch makes for one partition into one message "
        "(fewer records to read); off: one message per key, all an older worker reads (a "
        "rolling upgrade turns it on once every worker runs this version)",
    )
    gc_threshold: int = Field(
        50_000,
        ge=0,
        description="Allocations between two collections of Python's youngest garbage "
        "generation (Python's default: 700; 0 keeps Python's defaults)",
    )
    max_poll_records: int = Field(
        2000, ge=1, description="Most records one consumer poll returns (Faust: no limit)"
    )
    stream_buffer_maxsize: int = Field(
        16384, ge=1, description="Records a stream buffers ahead of its agent (Faust: 4096)"
    )
    batch_max: int = Field(
        1000,
        ge=1,
        description="Most records an agent folds at once: each key's state is read, written "
        "and its card published once per batch (1: one record at a time)",
    )
    direct_fold: bool = Field(
        True,
        description=(
            "Fold an event that carries a CustomerId in the intake agent when its input "
            "partition is its profile's (one internal hop fewer)"
        ),
    )
    batch_within_ms: float = Field(
        25.0,
        gt=0,
        description="Longest an agent waits to fill a batch, ms (adds up to this per hop to "
        "the latency)",
    )
    recovery_consistency_check: bool = Field(
        True, description="Faust's recovery offset check; turn off only on the embedded broker"
    )
    log_level: str = Field("info", description="crit, error, warn, info or debug")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines of the worker and the CLI: text, or json (one object per line: "
        "ts, level, logger, message and fields such as topic, partition, offset)",
    )
    web_advertised_host: str | None = Field(
        None,
        description="Host name other workers use to reach this one's web server "
        "(default: the bind address, or the machine's host name when bound to 0.0.0.0)",
    )
    blocked_values: frozenset[str] = Field(
        DEFAULT_BLOCKED_VALUES,
        description="Link values never linked (JSON list; compared trimmed, lower-cased)",
    )
    guard_link_limits: dict[str, int] = Field(
        {"email": 5, "phone": 5, "device": 20},
        description="Most distinct links of a name one CustomerId may claim within the window",
    )
    guard_default_limit: int = Field(10, description="The same, for link names not listed")
    guard_window_days: float = Field(30.0, description="The guard's window, days of event time")
    guard_max_takeovers: int = Field(
        5, description="Most other customers one CustomerId may take links from"
    )

    interest_days: int = Field(30, description="Views in the last X days count as interest")
    cart_idle_seconds: float = Field(
        3600.0, description="A cart untouched this long without an order is abandoned"
    )
    cart_check_interval: float = Field(
        5.0, description="How often, in seconds, a worker looks for carts to declare abandoned"
    )
    cart_grace_seconds: float = Field(
        10.0,
        description="Extra wait past a cart's deadline (and after a worker becomes ready) for "
        "late events that would still save the cart",
    )
    activity_limit: int = Field(200, description="Entries kept in a card's activity feed")
    receipts_on_card: int = Field(
        50, description="Latest receipts a card carries (the API pages the rest)"
    )
    rfm_recency_days: tuple[float, float, float, float] = Field(
        (30, 90, 180, 365), description="RFM recency cut points, days since the last receipt"
    )
    rfm_frequency: tuple[float, float, float, float] = Field(
        (2, 3, 5, 10), description="RFM frequency cut points, receipts"
    )
    rfm_monetary: tuple[float, float, float, float] = Field(
        (100, 300, 1000, 3000), description="RFM monetary cut points, total spent"
    )
    person_block_cap: int = Field(
        100,
        ge=2,
        le=150,  # 150 of the widest people with the longest ids: ~384 KiB (bench.people_bounds)
        description="People kept under one blocking key of the people index; a key shared "
        "by more is too common to tell anyone apart and is no longer looked up",
    )
    duplicate_threshold: float = Field(
        0.5, gt=0, le=1, description="Match probability from which a pair is suggested"
    )
    people_model_file: Path | None = Field(
        None,
        description="The match model (JSON of app.domain.people.MatchModel); "
        "none: the built-in one",
    )
    search_candidates: int = Field(
        200, ge=1, le=5000, description="Candidates a person search scores at most"
    )
    search_results: int = Field(10, ge=1, le=100, description="Results a person search answers")
    clock_offset_seconds: float = Field(
        0.0, description="Added to the wall clock for timers (cart abandonment, interest expiry)"
    )
    api_token: SecretStr | None = Field(
        None,
        description="When set, every route but /health (API, staff page, live stream) needs it: "
        "`Authorization: Bearer TOKEN`, or the staff page's sign-in; blank = unset",
    )
    api_user: str | None = Field(
        None, description="Basic-auth user accepted instead of the token (with api_password)"
    )
    api_password: SecretStr | None = Field(
        None, description="Basic-auth password of api_user (both or neither)"
    )
    staff_session_hours: float = Field(
        12.0,
        gt=0,
        description="How long a staff sign-in lasts: the session cookie is refused, and the "
        "browser drops it, this many hours after it was issued",
    )

    @field_validator("api_token", "api_user", "api_password", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level_of(value)  # raises ValueError naming the known levels
        return value

    @model_validator(mode="after")
    def _user_and_password_together(self) -> Settings:
        if (self.api_user is None) != (self.api_password is None):
            raise ValueError("set both CARDSTREAM_API_USER and CARDSTREAM_API_PASSWORD, or neither")
        return self

    def card_settings(self) -> CardSettings:
        """The card's settings (docs/design.md §4) from these settings."""
        return CardSettings(
            interest_days=self.interest_days,
            cart_idle=timedelta(seconds=self.cart_idle_seconds),
            activity_limit=self.activity_limit,
            receipts_on_card=self.receipts_on_card,
            rfm=RfmThresholds(self.rfm_recency_days, self.rfm_frequency, self.rfm_monetary),
        )

    def people_settings(self, buckets: int = 4) -> PeopleSettings:
        """The people index's settings (issue 15), in `buckets` index buckets (the internal
        topics' partition count); raises InvalidSettings for a model file that cannot be
        read."""
        model = DEFAULT_MODEL
        if self.people_model_file is not None:
            model = _match_model(self.people_model_file)
        return PeopleSettings(
            block_cap=self.person_block_cap,
            threshold=self.duplicate_threshold,
            model=model,
            buckets=buckets,
        )

    def now(self) -> datetime:
        """The worker's clock: wall clock plus `clock_offset_seconds` (tests move it)."""
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset_seconds)

    def guard_limits(self) -> GuardLimits:
        """The identity guard's limits from these settings."""
        return GuardLimits(
            per_name=dict(self.guard_link_limits),
            default_limit=self.guard_default_limit,
            window=timedelta(days=self.guard_window_days),
            max_takeovers=self.guard_max_takeovers,
        )

    def advertised_web_host(self) -> str:
        """The host name in this worker's URL that other workers forward lookups to."""
        if self.web_advertised_host:
            return self.web_advertised_host
        if self.web_host in ("0.0.0.0", "::", ""):
            return socket.gethostname()
        return self.web_host

    def state_app_id(self) -> str:
        """The Faust app id of this state version: consumer group and internal topic prefix."""
        return state_app_id(self.app_id, self.state_version)

    def state_data_dir(self) -> Path:
        """The RocksDB directory of this state version (never shared between versions)."""
        if not self.state_version:
            return self.data_dir
        return self.data_dir / f"state-{self.state_version}"

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with `changes` applied (the settings object itself is frozen)."""
        return self.model_copy(update={k: v for k, v in changes.items() if v is not None})
