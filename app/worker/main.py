"""Builds the Faust app from a settings object: `create_app(settings) -> faust.App`."""

from __future__ import annotations

import gc
import logging
from typing import cast

import click
import faust
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from app.pipeline.topics import OUTPUT_ROLES, load_topics
from app.worker.agents import identity, intake, people, profiles
from app.worker.agents.stats import WorkerStats
from app.worker.channels import Channels, Tables
from app.worker.faust_patches import apply_faust_patches, check_faust_version
from app.worker.live import CardWatch
from app.worker.logs import logging_config
from app.worker.settings import Settings
from app.worker.web import people as people_web
from app.worker.web import routes, staff
from app.worker.web.auth import ApiCredentials, auth_middleware, is_loopback
from app.worker.web.refusals import log_refusals_without_content

log = logging.getLogger(__name__)


class StartRefused(click.ClickException):
    """A worker that must not start as configured: the command prints the one-line
    message and exits 1."""


def check_web_exposure(settings: Settings) -> None:
    """Refuse (StartRefused) a web server that would serve every card to the network: bound
    to a non-loopback address without credentials, unless `allow_open`; then log a warning."""
    if is_loopback(settings.web_host) or ApiCredentials.from_settings(settings).required:
        return
    host = f"CARDSTREAM_WEB_HOST={settings.web_host}"
    if not settings.allow_open:
        raise StartRefused(
            f"refusing to serve every card without credentials on {host} (not a loopback "
            "address): set CARDSTREAM_API_TOKEN (or CARDSTREAM_API_USER and "
            "CARDSTREAM_API_PASSWORD), bind to 127.0.0.1, or set CARDSTREAM_ALLOW_OPEN=true "
            "if only trusted machines can reach this address"
        )
    log.warning(
        "serving every card without credentials on %s (CARDSTREAM_ALLOW_OPEN=true): anyone "
        "who can reach this address can read them; set CARDSTREAM_API_TOKEN unless the "
        "network is private",
        host,
    )


def tune_gc(threshold: int) -> None:
    """Let Python's cyclic garbage collector run less often: a busy worker allocates many
    short-lived objects per event (decoded events, facts, cards), and the default
    threshold (700 allocations) collects the young generation many times per batch.
    `bench.baseline 20000`, two runs each: 1,089-1,145 events/s against 895-1,086 with
    Python's defaults. 0: Python's defaults."""
    if threshold <= 0:
        return
    gc.set_threshold(threshold, 50, 1000)


def create_app(settings: Settings) -> faust.App:
    """The worker's Faust app with every agent, table and web route registered; raises
    UnsupportedFaust for a faust-streaming other than the pinned one, and StartRefused
    when its web server would be open to the network (`check_web_exposure`)."""
    check_faust_version()
    check_web_exposure(settings)
    tune_gc(settings.gc_threshold)
    topics = load_topics(settings.topics_file)
    credentials = ApiCredentials.from_settings(settings)
    app = faust.App(
        settings.state_app_id(),
        broker=[f"kafka://{host}" for host in settings.bootstrap.split(",")],
        store="rocksdb://",
        datadir=str(settings.state_data_dir()),
        web_bind=settings.web_host,
        web_host=settings.advertised_web_host(),
        web_port=settings.web_port,
        topic_partitions=topics.partitions,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        recovery_consistency_check=settings.recovery_consistency_check,
        table_standby_replicas=settings.standby_replicas,
        producer_linger=settings.producer_linger_ms / 1000,
        broker_max_poll_records=settings.max_poll_records,
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        consumer_auto_offset_reset="earliest",
        # room to dead-letter an input record of the broker's 1 MB default plus headers
        producer_max_request_size=topics.dead_letter.max_message_bytes or 1_048_576,
        key_serializer="raw",
        web_application_options={"middlewares": [auth_middleware(credentials)]},
        # Faust's own routes (/table/..., /router/..., /graph/...) show raw state: never served
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        value_serializer="raw",
        autodiscover=False,
        # Faust's worker installs this in place of its own text handler (None: keep it)
        logging_config=logging_config(settings.log_format, settings.log_level),
    )
    apply_faust_patches(app, settings)  # app/worker/faust_patches.py: every one, and why
    channels = Channels.declare(
        app,
        topics,
        muted=frozenset() if settings.publish_outputs else OUTPUT_ROLES,
        envelopes=settings.op_envelopes,
    )
    tables = Tables.declare(app, topics)
    stats = WorkerStats()
    watch = CardWatch()  # card changes -> open staff pages
    people_settings = settings.people_settings(buckets=topics.partitions)
    fold_profile = profiles.register(
        app, channels, tables, settings, stats, watch, people_settings.buckets
    )
    shared = {topics.identify.partitions, topics.events.partitions} == {topics.partitions}
    intake.register(
        app,
        channels,
        settings,
        stats,
        fold_profile if settings.direct_fold else None,
        topics.partitions if shared else None,  # co-partitioned inputs only
    )
    identity.register(app, channels, tables, settings, stats)
    people.register(app, channels, tables, settings, stats, people_settings)
    routes.register(app, settings, tables, stats)
    people_web.register(app, settings, tables, channels, stats, people_settings)
    staff.register(app, tables, watch, credentials)
    log_refusals_without_content(cast(AiohttpWeb, app.web))  # no path or header in the log
    return app
