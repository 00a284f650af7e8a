"""Settings of a cardstream process, read from `CARDSTREAM_*` environment variables.

Environment variables are read only in `Settings()` (never at import time); the
settings object is frozen and passed down explicitly.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.domain.card import CardSettings
from app.domain.identity import GuardLimits
from app.domain.links import DEFAULT_BLOCKED_VALUES
from app.domain.rfm import RfmThresholds

ENV_PREFIX = "CARDSTREAM_"


class Settings(BaseSettings):
    """Every knob of a worker, the CLI and the demo. Env var = `CARDSTREAM_` + upper-case name."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,...]")
    app_id: str = Field("cardstream", description="Faust app id: consumer group and state prefix")
    data_dir: Path = Field(Path("./data"), description="Where the worker keeps its RocksDB state")
    web_host: str = Field("127.0.0.1", description="Address the worker's web server binds to")
    web_port: int = Field(6066, description="Port of the worker's web server (lookup API, /health)")
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
    recovery_consistency_check: bool = Field(
        True, description="Faust's recovery offset check; turn off only on the embedded broker"
    )
    log_level: str = Field("info", description="crit, error, warn, info or debug")
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
    rfm_recency_days: tuple[float, float, float, float] = Field(
        (30, 90, 180, 365), description="RFM recency cut points, days since the last receipt"
    )
    rfm_frequency: tuple[float, float, float, float] = Field(
        (2, 3, 5, 10), description="RFM frequency cut points, receipts"
    )
    rfm_monetary: tuple[float, float, float, float] = Field(
        (100, 300, 1000, 3000), description="RFM monetary cut points, total spent"
    )
    clock_offset_seconds: float = Field(
        0.0, description="Added to the wall clock for timers (cart abandonment, interest expiry)"
    )

    def card_settings(self) -> CardSettings:
        """The card's settings (DESIGN.md §4) from these settings."""
        return CardSettings(
            interest_days=self.interest_days,
            cart_idle=timedelta(seconds=self.cart_idle_seconds),
            activity_limit=self.activity_limit,
            rfm=RfmThresholds(self.rfm_recency_days, self.rfm_frequency, self.rfm_monetary),
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

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with `changes` applied (the settings object itself is frozen)."""
        return self.model_copy(update={k: v for k, v in changes.items() if v is not None})
