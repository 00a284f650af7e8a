"""Builds the Faust app from a settings object: `create_app(settings) -> faust.App`."""

from __future__ import annotations

import faust

from app.agents import identity, intake, profiles
from app.channels import Channels, Tables
from app.settings import Settings
from app.topics import load_topics
from app.web import routes

PRODUCER_BUFFER_MESSAGES = 10_000


def create_app(settings: Settings) -> faust.App:
    """The worker's Faust app with every agent, table and web route registered."""
    topics = load_topics(settings.topics_file)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.bootstrap.split(",")],
        store="rocksdb://",
        datadir=str(settings.data_dir),
        web_bind=settings.web_host,
        web_host=settings.advertised_web_host(),
        web_port=settings.web_port,
        topic_partitions=topics.partitions,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        recovery_consistency_check=settings.recovery_consistency_check,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
    )
    # Table writes queue changelog records in Faust's producer buffer; at its default
    # 100 the agents pause after every few events while it drains one record at a time.
    app.producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
    channels = Channels.declare(app, topics)
    tables = Tables.declare(app, topics)
    stats = intake.IntakeStats()
    intake.register(app, channels, settings, stats)
    identity.register(app, channels, tables, settings, stats)
    profiles.register(app, channels, tables, settings, stats)
    routes.register(app, settings, tables, stats)
    return app
