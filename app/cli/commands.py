"""The `cardstream` command line.

Every command reads its defaults from `CARDSTREAM_*` environment variables
(see `app.worker.settings.Settings`); flags override them. Errors a user can meet are
printed in one line saying what to do, with a non-zero exit code.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from app.pipeline.topics import Topics, TopicsFileError, load_topics
from app.worker.settings import Settings

if TYPE_CHECKING:
    from app.tools.admin import Cluster
    from app.tools.deadletters import DeadLetter


def _settings(**overrides: object) -> Settings:
    try:
        return Settings().with_overrides(**overrides)
    except ValueError as exc:
        raise click.ClickException(f"bad CARDSTREAM_* setting: {exc}") from exc


def _topics(settings: Settings) -> Topics:

    try:
        return load_topics(settings.topics_file)
    except TopicsFileError as exc:
        raise click.ClickException(str(exc)) from exc


def _reach(settings: Settings) -> Cluster:
    """The cluster's topics and id, asked once and quietly; one clear line when it does
    not answer (instead of librdkafka's line per failed connection attempt)."""
    from app.tools.admin import BrokerUnreachable, probe_cluster

    try:
        return probe_cluster(settings.bootstrap)
    except BrokerUnreachable as exc:
        raise click.ClickException(str(exc)) from exc


def _check_web_port(host: str, port: int) -> None:
    """One clear line, not a traceback from inside the worker, when the port is taken."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise click.ClickException(f"cannot serve on {host}:{port}: {exc}") from exc
            raise click.ClickException(
                f"port {port} on {host} is already in use (another worker?); pick another "
                "with --web-port or CARDSTREAM_WEB_PORT"
            ) from exc


def _for_the_broker(settings: Settings, cluster: Cluster) -> Settings:
    """On the embedded broker, its settings (short group timeouts, short fetch wait, no
    recovery offset check) for those not set explicitly; elsewhere `settings` as given."""
    from app.tools.runner import EMBEDDED_BROKER_SETTINGS

    if not cluster.embedded:
        return settings
    chosen = {
        k: v for k, v in EMBEDDED_BROKER_SETTINGS.items() if k not in settings.model_fields_set
    }
    if chosen:
        click.echo(
            "embedded broker: using its settings "
            + ", ".join(f"CARDSTREAM_{k.upper()}={str(v).lower()}" for k, v in chosen.items()),
            err=True,
        )
    return settings.with_overrides(**chosen)


bootstrap_option = click.option(
    "--bootstrap", "-b", default=None, help="Kafka bootstrap servers [env CARDSTREAM_BOOTSTRAP]"
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cardstream")
def main() -> None:
    """cardstream: one customer card per person from every channel, in real time."""
    from app.worker.logs import configure_cli_logging

    try:
        settings = Settings()
    except ValueError:
        return  # the command itself reports the bad setting
    configure_cli_logging(settings.log_format, settings.log_level)


def stop_on_ctrl_c() -> None:
    """Make Ctrl-C (SIGINT) stop this command, even when started by a parent that ignores
    SIGINT (a background job of a non-interactive shell): Python then leaves it ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


@main.command(short_help="Run the embedded broker (Tansu, in memory) until Ctrl-C")
@click.option("--port", "-p", default=9092, show_default=True, help="Port to listen on")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on")
def broker(port: int, host: str) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, in memory) until Ctrl-C."""
    from app.tools.broker import BrokerError, EmbeddedBroker

    embedded = EmbeddedBroker(port=port, host=host)
    try:
        embedded.start()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"embedded broker ready: bootstrap {embedded.bootstrap} (in memory; Ctrl-C stops)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    stop_on_ctrl_c()
    try:
        code = embedded.wait()
        raise click.ClickException(f"embedded broker exited with code {code}")
    except KeyboardInterrupt:
        click.echo("stopping broker")
    finally:
        embedded.stop()


@main.group(short_help="List the declared topics; create or check them")
def topics() -> None:
    """Declared topics: list them, create or check them on a cluster."""


@topics.command("list")
def topics_list() -> None:
    """Print the declared topics."""
    for spec in _topics(_settings()).all():
        click.echo(
            f"{spec.name:24} partitions={spec.partitions} cleanup={spec.cleanup_policy:8} "
            f"retention_ms={spec.retention_ms}  key: {spec.key}"
        )


@topics.command("apply", short_help="Create missing topics; report those that differ")
@bootstrap_option
def topics_apply(bootstrap: str | None) -> None:
    """Create missing topics and report those that differ from the declarations."""
    from app.tools.admin import BrokerUnreachable, apply_topics

    settings = _settings(bootstrap=bootstrap)
    try:
        report = apply_topics(settings.bootstrap, _topics(settings).all())
    except BrokerUnreachable as exc:
        raise click.ClickException(str(exc)) from exc
    for name in report.created:
        click.echo(f"created   {name}")
    for name in report.unchanged:
        click.echo(f"ok        {name}")
    for line in report.differing:
        click.echo(f"DIFFERS   {line}", err=True)
    if not report.ok:
        raise click.ClickException(
            f"{len(report.differing)} topic(s) differ from topics/: fix them by hand "
            "(partitions cannot shrink) or change the declarations"
        )


@main.group(short_help="Export or check the events' JSON Schemas")
def schemas() -> None:
    """JSON Schemas of the events, generated from the models."""


@schemas.command("export", short_help="Write one JSON Schema per event type")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write (default: the schemas/ folder of the source tree)",
)
def schemas_export(directory: Path | None) -> None:
    """Write one JSON Schema per event type (and event.json for any event)."""
    from app.tools.schemas_export import DEFAULT_SCHEMAS_DIR, export_schemas

    for path in export_schemas(directory or DEFAULT_SCHEMAS_DIR):
        click.echo(f"wrote {path}")


@schemas.command("check")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None)
def schemas_check(directory: Path | None) -> None:
    """Exit non-zero when schemas/ differs from the models."""
    from app.tools.schemas_export import DEFAULT_SCHEMAS_DIR, schema_drift

    drift = schema_drift(directory or DEFAULT_SCHEMAS_DIR)
    for line in drift:
        click.echo(line, err=True)
    if drift:
        raise click.ClickException("schemas are out of date: run `cardstream schemas export`")
    click.echo("schemas are in sync with the models")


@main.command(short_help="Publish events from a JSON-lines file or stdin")
@click.argument("source", type=click.File("rb"), default="-")
@bootstrap_option
def send(source: BinaryIO, bootstrap: str | None) -> None:
    """Publish events from a JSON-lines FILE (or - for stdin) to the input topics.

    Invalid lines are reported with their line number and reason; valid lines
    are still sent. Exits 1 if any line was rejected or not delivered.
    """
    from app.tools.producer import ChannelProducer

    settings = _settings(bootstrap=bootstrap)
    _reach(settings)
    producer = ChannelProducer(settings.bootstrap, _topics(settings), settings.default_phone_region)
    report = producer.send_lines(source)
    name = getattr(source, "name", "-")
    for number, reason in report.rejected:
        click.echo(f"{name}:{number}: {reason}", err=True)
    for failure in report.delivery_failures:
        click.echo(f"not delivered: {failure}", err=True)
    click.echo(f"sent {report.sent} event(s), rejected {len(report.rejected)} line(s)")
    if not report.ok:
        sys.exit(1)


@main.command(short_help="Run a worker: agents, state and web server")
@bootstrap_option
@click.option("--web-port", type=int, default=None, help="[env CARDSTREAM_WEB_PORT]")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help="[env CARDSTREAM_DATA_DIR]"
)
@click.option("--app-id", default=None, help="[env CARDSTREAM_APP_ID]")
def worker(
    bootstrap: str | None, web_port: int | None, data_dir: Path | None, app_id: str | None
) -> None:
    """Run a worker: every agent, its state, and the web server (lookup API, /health)."""
    from contextlib import suppress

    from app.tools.admin import BrokerUnreachable, probe_cluster
    from app.worker.faust_patches import Worker
    from app.worker.main import create_app

    settings = _settings(bootstrap=bootstrap, web_port=web_port, data_dir=data_dir, app_id=app_id)
    _check_web_port(settings.web_host, settings.web_port)
    with suppress(BrokerUnreachable):  # else the worker waits for the broker itself
        settings = _for_the_broker(settings, probe_cluster(settings.bootstrap))
    app = create_app(settings)
    Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()


@main.command(short_help="Print a customer's card (by CustomerId or --link)")
@click.argument("customer_id", required=False)
@click.option(
    "--link",
    "link",
    default=None,
    metavar="NAME=VALUE",
    help="Find the card by a link instead, e.g. --link email=ann@x.pl",
)
@click.option(
    "--worker",
    "worker_url",
    default=None,
    help="A worker's web address [default: http://127.0.0.1:PORT, PORT from "
    "CARDSTREAM_WEB_PORT, else 6066]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON")
def card(customer_id: str | None, link: str | None, worker_url: str | None, as_json: bool) -> None:
    """Print the card of CUSTOMER_ID (or of whoever owns --link) from a running worker."""
    from urllib.parse import quote

    import orjson

    from app.cli.cardview import render_card
    from app.tools.runner import http_json
    from app.worker.web.auth import ApiCredentials

    if (customer_id is None) == (link is None):
        raise click.UsageError("give either a CUSTOMER_ID or --link NAME=VALUE")
    if link is not None:
        name, sep, value = link.partition("=")
        if not sep or not name or not value:
            raise click.UsageError(f"--link wants NAME=VALUE, got {link!r}")
        path = f"/links/{quote(name, safe='')}/{quote(value, safe='')}/card"
        what = f"link {name}={value}"
    else:
        assert customer_id is not None
        path = f"/customers/{quote(customer_id, safe='')}"
        what = f"customer {customer_id}"
    settings = _settings()
    base = worker_url or f"http://127.0.0.1:{settings.web_port}"
    try:
        headers = ApiCredentials.from_settings(settings).headers()  # CARDSTREAM_API_TOKEN etc.
        status, body = http_json(base.rstrip("/") + path, timeout=10, headers=headers)
    except OSError as exc:
        raise click.ClickException(
            f"no worker answered at {base} ({exc}); start one with `cardstream worker` "
            "or point --worker at one"
        ) from exc
    if status == 404:
        raise click.ClickException(f"unknown {what}")
    if status == 401:
        raise click.ClickException(
            "the worker refused the credentials: CARDSTREAM_API_TOKEN (or "
            "CARDSTREAM_API_USER/CARDSTREAM_API_PASSWORD) is not the one it was started with"
            if headers
            else "the worker wants credentials: set CARDSTREAM_API_TOKEN (or "
            "CARDSTREAM_API_USER and CARDSTREAM_API_PASSWORD)"
        )
    if status != 200 or not isinstance(body, dict):
        raise click.ClickException(f"the worker answered {status}: {_problem_text(body)}")
    if as_json:
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_card(body, color=sys.stdout.isatty()), nl=False)


def _problem_text(body: object) -> str:
    """A worker's error answer (`{"error": ..., "detail": ...}`) as one readable line."""
    if isinstance(body, dict) and ("detail" in body or "error" in body):
        return str(body.get("detail") or body.get("error"))
    return str(body)


@main.group(short_help="Release a quarantined CustomerId")
def identity() -> None:
    """Identity operations: release a quarantined CustomerId."""


@identity.command("release", short_help="Let a quarantined CUSTOMER_ID claim links again")
@click.argument("customer_id")
@bootstrap_option
@click.option("--app-id", default=None, help="The workers' app id [env CARDSTREAM_APP_ID]")
@click.option("--by", "requested_by", default=None, help="Who releases it (for the audit trail)")
def identity_release(
    customer_id: str, bootstrap: str | None, app_id: str | None, requested_by: str | None
) -> None:
    """Let a quarantined CUSTOMER_ID claim links again (a `released` change is emitted)."""
    import getpass
    from datetime import UTC, datetime

    from app.pipeline.ops import ReleaseGuard, encode_op
    from app.pipeline.topics import Role
    from app.tools.producer import ChannelProducer

    settings = _settings(bootstrap=bootstrap, app_id=app_id)
    topics = _topics(settings)
    _reach(settings)
    op = ReleaseGuard(requested_by or getpass.getuser(), datetime.now(UTC).isoformat())
    producer = ChannelProducer(settings.bootstrap, topics)
    topic = topics.internal_topic(settings.state_app_id(), Role.GUARD_OPS)
    producer.produce(topic, customer_id.encode(), encode_op(op))
    failures = producer.flush()
    if failures:
        raise click.ClickException(f"release not delivered: {failures[0]}")
    click.echo(f"release of {customer_id} sent to the workers of app {settings.state_app_id()}")


@main.group("dead-letter", short_help="List or replay rejected records")
def dead_letter() -> None:
    """Rejected records: list them with the reason, replay them to their input topic."""


def _dead_letter_filters(command: Callable[..., None]) -> Callable[..., None]:
    """The selection options `dead-letter list` and `replay` share."""
    for option in reversed(
        [
            bootstrap_option,
            click.option("--reason", default=None, help="Only letters whose reason contains TEXT"),
            click.option(
                "--topic",
                default=None,
                help="Only letters from this source topic (`identify` / `events` name the inputs)",
            ),
            click.option(
                "--id",
                "ids",
                multiple=True,
                metavar="PARTITION:OFFSET",
                help="Only this dead letter (as `list` prints it); repeatable",
            ),
            click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N"),
        ]
    ):
        command = option(command)
    return command


def _source_topic(value: str | None, topics: Topics, existing: frozenset[str]) -> str | None:
    """`--topic` as a topic name; a UsageError when no such topic exists on the broker."""
    from app.tools.deadletters import resolve_topic_filter

    name = resolve_topic_filter(value, topics)
    if name is not None and name not in existing:
        raise click.UsageError(
            f"--topic {value!r}: no such topic on the broker; give `identify`, `events` "
            f"or a topic name ({topics.identify.name}, {topics.events.name}, or an internal one)"
        )
    return name


def _read_letters(settings: Settings, topics: Topics) -> list[DeadLetter]:
    """Every dead letter (ClickException when they cannot be read)."""
    from app.tools.deadletters import DeadLetterError, read_dead_letters

    try:
        return read_dead_letters(settings.bootstrap, topics)
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from exc


@dead_letter.command("list", short_help="Print rejected records: where from, when, why")
@_dead_letter_filters
@click.option("--json", "as_json", is_flag=True, help="JSON lines (value as text, or base64)")
def dead_letter_list(
    bootstrap: str | None,
    reason: str | None,
    topic: str | None,
    ids: tuple[str, ...],
    limit: int | None,
    as_json: bool,
) -> None:
    """Print what was rejected, where it came from, when and why (oldest first).

    Each letter is named PARTITION:OFFSET in the dead-letter topic; `replay --id`
    and the fixes file of `replay --fixed` use that name.
    """
    from app.tools.deadletters import format_letter, letter_json, select_letters

    settings = _settings(bootstrap=bootstrap)
    topics = _topics(settings)
    source_topic = _source_topic(topic, topics, _reach(settings).topics)
    letters = select_letters(
        _read_letters(settings, topics),
        reason=reason,
        source_topic=source_topic,
        ids=ids,
        limit=limit,
    )
    for letter in letters:
        click.echo(letter_json(letter).decode() if as_json else format_letter(letter))
    if not as_json:
        click.echo(f"{len(letters)} dead letter(s) in {topics.dead_letter.name}", err=True)


@dead_letter.command("replay")
@_dead_letter_filters
@click.option(
    "--fixed",
    "fixed_file",
    type=click.File("rb"),
    default=None,
    help="JSON lines of fixed events; replay only those (format: app/tools/deadletters.py)",
)
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send nothing")
def dead_letter_replay(
    bootstrap: str | None,
    reason: str | None,
    topic: str | None,
    ids: tuple[str, ...],
    limit: int | None,
    fixed_file: BinaryIO | None,
    dry_run: bool,
) -> None:
    """Re-send dead letters to their input topic, unchanged or fixed.

    Without --fixed every selected letter's original key and bytes go back to
    its source topic (only the identify and events topics; others are refused).
    With --fixed FILE only the letters FILE fixes are sent, each fix validated
    first (a fix still invalid is reported, not sent). FILE holds JSON lines:
    {"dead_letter": "P:O", "event": {fixed event}}, or a bare fixed event that
    has the letter's event_id. A record the worker rejects again lands in the
    dead-letter topic again. Safe to repeat: folds are idempotent by event_id,
    so a record replayed twice never changes a card twice. Exits 1 if anything
    was not sent.
    """
    from app.tools.deadletters import FixesFileError, parse_fixes, replay, select_letters

    settings = _settings(bootstrap=bootstrap)
    topics = _topics(settings)
    fixes = None
    fixes_name = getattr(fixed_file, "name", "-")
    if fixed_file is not None:
        try:
            fixes = parse_fixes(fixed_file)
        except FixesFileError as exc:
            for problem in exc.problems:
                click.echo(f"{fixes_name}: {problem}", err=True)
            raise click.ClickException(
                f"{fixes_name}: {len(exc.problems)} bad line(s); nothing sent"
            ) from exc
    source_topic = _source_topic(topic, topics, _reach(settings).topics)
    every = _read_letters(settings, topics)
    unmatched = fixes.unmatched(every) if fixes is not None else []
    for problem in unmatched:
        click.echo(f"{fixes_name}: {problem}", err=True)
    letters = select_letters(
        every,
        reason=reason,
        source_topic=source_topic,
        ids=ids,
    )
    if fixes is not None:
        letters = [letter for letter in letters if fixes.fix_for(letter) is not None]
    report = replay(
        settings.bootstrap,
        topics,
        letters[:limit],
        fixes,
        default_region=settings.default_phone_region,
        dry_run=dry_run,
        progress=click.echo,
    )
    for problem in report.problems:
        click.echo(f"not sent: {problem}", err=True)
    for failure in report.delivery_failures:
        click.echo(f"not delivered: {failure}", err=True)
    verb = "would send" if dry_run else "sent"
    click.echo(
        f"{verb} {len(report.sent)} record(s), {len(report.problems)} not sent"
        + (f", {len(unmatched)} fix(es) matched no dead letter" if unmatched else "")
    )
    if not report.ok or unmatched:
        sys.exit(1)


def _check_state_version(version: str) -> None:
    import re

    from app.worker.settings import STATE_VERSION_PATTERN

    if not re.fullmatch(STATE_VERSION_PATTERN, version):
        raise click.UsageError(
            f"--state-version {version!r}: use 1-40 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


@main.command(short_help="Build fresh state under a new state version")
@click.option(
    "--state-version", "state_version", required=True, help="Name of the new state version"
)
@click.option("--from-beginning", is_flag=True, help="Read the inputs from the start (default)")
@click.option(
    "--from-offset",
    "from_offsets",
    multiple=True,
    metavar="TOPIC:PARTITION:OFFSET",
    help="Start this input partition here (TOPIC: identify, events or a name); repeatable; "
    "partitions not given start at the beginning",
)
@click.option(
    "--from-time",
    default=None,
    metavar="ISO",
    help="Start at the first record written at or after this time (record time, not event "
    "time; needs a broker with working offsets-for-times)",
)
@click.option(
    "--keep-running",
    is_flag=True,
    help="Once caught up, keep the worker following the input (until Ctrl-C)",
)
@bootstrap_option
@click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help="[env CARDSTREAM_DATA_DIR]"
)
@click.option("--app-id", default=None, help="[env CARDSTREAM_APP_ID]")
def rebuild(
    state_version: str,
    from_beginning: bool,
    from_offsets: tuple[str, ...],
    from_time: str | None,
    keep_running: bool,
    bootstrap: str | None,
    data_dir: Path | None,
    app_id: str | None,
) -> None:
    """Build fresh state from the input topics under a new state version, beside the live one.

    Runs a worker on the new version (its changes are not re-published), shows
    progress on stderr, and once it has caught up with the input says how to
    switch the workers to it. See app/tools/rebuild.py.
    """
    from datetime import datetime

    from app.tools.rebuild import RebuildError, StartAt, parse_offset_specs, run_rebuild

    _check_state_version(state_version)
    if sum([from_beginning, bool(from_offsets), from_time is not None]) > 1:
        raise click.UsageError("give one of --from-beginning, --from-offset, --from-time")
    settings = _settings(
        bootstrap=bootstrap, data_dir=data_dir, app_id=app_id, state_version=state_version
    )
    topics = _topics(settings)
    start = StartAt()
    try:
        if from_offsets:
            start = StartAt(offsets=parse_offset_specs(from_offsets, topics))
        if from_time is not None:
            when = datetime.fromisoformat(from_time)
            if when.tzinfo is None:
                raise ValueError(f"--from-time {from_time!r} needs an offset, e.g. +00:00")
            start = StartAt(time=when)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    settings = _for_the_broker(settings, _reach(settings))

    def wait_forever() -> None:
        try:
            signal.pause()
        except KeyboardInterrupt:
            click.echo("stopping the rebuild worker", err=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run_rebuild(
            settings,
            topics,
            start,
            progress=sys.stderr,
            say=click.echo,
            keep_running=keep_running,
            wait_forever=wait_forever,
        )
    except RebuildError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command("export", short_help="Write every card as sorted JSON lines")
@click.option(
    "--state-version",
    "state_version",
    default=None,
    help="State version to export [env CARDSTREAM_STATE_VERSION; default the original]",
)
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), default=None, help="File (default stdout)"
)
@click.option(
    "--at",
    "at_text",
    default=None,
    metavar="ISO|now",
    help="Compute the cards as of this time [default: the latest event time in the state]",
)
@click.option(
    "--all-fields", is_flag=True, help="Keep `version` and `identity` (they differ by run)"
)
@bootstrap_option
@click.option("--app-id", default=None, help="[env CARDSTREAM_APP_ID]")
def export_cards(
    state_version: str | None,
    output: Path | None,
    at_text: str | None,
    all_fields: bool,
    bootstrap: str | None,
    app_id: str | None,
) -> None:
    """Write every card of a state version as JSON lines sorted by profile id.

    Reads the version's table changelogs (no worker needed); the same state gives
    a byte-identical file. See app/tools/export.py for what is left out and why.
    """
    from datetime import datetime

    from app.tools.export import (
        StateNotFound,
        apps_with_state,
        default_export_time,
        export_lines,
        profiles_to_export,
        read_state,
    )
    from app.tools.offsets import OffsetsError

    if state_version is not None:
        _check_state_version(state_version)
    settings = _settings(bootstrap=bootstrap, app_id=app_id, state_version=state_version)
    topics = _topics(settings)
    app = settings.state_app_id()
    named = (
        f"state version {settings.state_version!r}"
        if settings.state_version
        else "the original state version"
    )
    existing = _reach(settings)
    try:
        states, identities = read_state(settings.bootstrap, app, topics)
    except StateNotFound as exc:
        others = apps_with_state(existing.topics, topics)
        where = (
            f"app ids with state there: {', '.join(others)} (name one with --app-id or "
            "CARDSTREAM_APP_ID; a state version is <app id>-<version>)"
            if others
            else "no app has state there yet: run its workers, or build a version with "
            "`cardstream rebuild --state-version V`"
        )
        raise click.ClickException(
            f"{named} (app id {app}) has no state at {settings.bootstrap}: no topic {exc}; " + where
        ) from exc
    except OffsetsError as exc:
        raise click.ClickException(str(exc)) from exc
    if at_text == "now":
        at = settings.now()
    elif at_text is not None:
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError:
            raise click.UsageError(
                f"--at wants an ISO 8601 time or 'now', got {at_text!r}"
            ) from None
        if at.tzinfo is None:
            raise click.UsageError(f"--at {at_text!r} needs an offset, e.g. +00:00")
    else:
        at = default_export_time(states)
    if not profiles_to_export(states, identities):
        raise click.ClickException(f"{named} (app id {app}) holds no cards")
    card_settings = settings.card_settings()
    lines = list(export_lines(states, identities, card_settings, at, all_fields=all_fields))
    if output is None:
        sys.stdout.buffer.write(b"".join(lines))
        sys.stdout.buffer.flush()
    else:
        partial = output.with_name(output.name + ".partial")
        partial.write_bytes(b"".join(lines))
        partial.replace(output)
    click.echo(
        f"exported {len(lines)} card(s) of {named} as of {at.isoformat()}"
        + (f" to {output}" if output else ""),
        err=True,
    )


@main.command(short_help="Run everything on an embedded broker and show cards")
@click.option("--customers", default=5, show_default=True, help="How many scenario customers")
@click.option("--seed", default=7, show_default=True, help="Faker seed")
@click.option("--keep", is_flag=True, help="Keep broker and worker running until Ctrl-C")
def demo(customers: int, seed: int, keep: bool) -> None:
    """Start a broker and a worker, publish a multi-channel scenario, show the result."""
    from app.cli.demo import run_demo

    stop_on_ctrl_c()
    sys.exit(run_demo(customers=customers, seed=seed, keep=keep))
