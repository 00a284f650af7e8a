"""`cardstream demo`: everything on one machine, on the embedded broker.

Starts a Tansu broker and a worker in a temporary directory, applies the
topics, publishes the multi-channel scenario of `app.tools.scenario` (plus a few bad
records) with a progress bar, waits until the worker has taken everything in,
prints what it received, and then the cards it built: web, app, store and
call-centre activity of each customer merged into one card. Ctrl-C at any
point stops every child process and removes the temporary directory.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
import orjson
from tqdm import tqdm

from app.cli.cardview import render_card
from app.domain.events import parse_event
from app.pipeline.topics import load_topics
from app.tools.admin import apply_topics
from app.tools.broker import BrokerError, EmbeddedBroker
from app.tools.producer import ChannelProducer
from app.tools.runner import EMBEDDED_BROKER_SETTINGS, WorkerFailed, WorkerProcess
from app.tools.scenario import BAD_RECORDS, scenario, scenario_clock
from app.worker.settings import Settings


def run_demo(customers: int = 5, seed: int = 7, keep: bool = False) -> int:
    """Run the demo; return the process exit code."""
    workdir = Path(tempfile.mkdtemp(prefix="cardstream-demo-"))
    broker = EmbeddedBroker(log_file=workdir / "broker.log")
    worker: WorkerProcess | None = None
    producer: ChannelProducer | None = None
    try:
        step("starting the embedded broker")
        broker.start()
        topics = load_topics()
        report = apply_topics(broker.bootstrap, topics.all())
        step(f"broker at {broker.bootstrap}; topics created: {len(report.created)}")
        worker = WorkerProcess(
            broker.bootstrap,
            workdir / "data",
            DEMO_APP_ID,
            workdir / "worker.log",
            {**EMBEDDED_BROKER_SETTINGS, "log_level": "warn", **scenario_clock()},
        ).start()
        step(f"starting a worker (web {worker.url}); waiting for its partitions")
        worker.wait_ready()
        events = [parse_event(orjson.dumps(e)) for e in scenario(customers, seed)]
        producer = ChannelProducer(broker.bootstrap, topics)
        with tqdm(total=len(events) + len(BAD_RECORDS), desc="publishing", unit="ev") as bar:
            for event in events:
                producer.send(event)
                bar.update()
            for role, raw in BAD_RECORDS:
                producer.produce(getattr(topics, role).name, None, raw)
                bar.update()
            failures = producer.flush()
        if failures:
            raise click.ClickException(f"not delivered: {failures}")
        stats = wait_for_intake(worker, len(events) + len(BAD_RECORDS))
        print_intake(stats, customers, len(events))
        step("resolving identities and folding cards")
        worker.wait_until_quiet()
        customer_ids = sorted({e.customer_id for e in events if e.customer_id is not None})
        print_cards(worker, customer_ids)
        if not keep:
            step(
                "to open the staff page and try the commands on these cards, run "
                f"`{cardstream_command()} demo --keep` (this run stops its worker now)"
            )
            return 0
        step(f"staff page of {customer_ids[0]}: {staff_page_url(worker.url, customer_ids[0])}")
        step("broker and worker keep running until Ctrl-C; in another terminal, from here:")
        _, first = worker.get(f"/customers/{customer_ids[0]}")
        links = [(name, values[0]) for name, values in (first.get("links") or {}).items()]
        click.echo(keep_commands(broker.bootstrap, worker.web_port, customer_ids[0], links[:1]))
        while worker.alive():
            time.sleep(1)
        return 0
    except KeyboardInterrupt:
        step("interrupted")
        return 130
    except (BrokerError, WorkerFailed, click.ClickException) as exc:
        click.echo(f"demo failed: {exc}", err=True)
        return 1
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a 2nd Ctrl-C must not skip this
        step("stopping worker and broker")
        if producer is not None:
            producer.close()
        if worker is not None:
            worker.stop()
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, previous)


#: The app id of the demo's worker: commands name it to find the demo's state.
DEMO_APP_ID = "cardstream-demo"


def cardstream_command() -> str:
    """How to run this installation's `cardstream` from the current directory."""
    beside = Path(sys.executable).with_name("cardstream")
    if not beside.exists():
        return "cardstream"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


def keep_commands(
    bootstrap: str, web_port: int, customer_id: str, links: list[tuple[str, str]]
) -> str:
    """Ready-to-paste commands for the demo left running (`--keep`); `links`: (name,
    value) pairs of the customer's to show a look-up by link with."""
    run = cardstream_command()
    lines = [
        f"export CARDSTREAM_BOOTSTRAP={bootstrap} CARDSTREAM_APP_ID={DEMO_APP_ID} "
        f"CARDSTREAM_WEB_PORT={web_port}",
        f"{run} card {customer_id}    # a card, from the worker",
        *(f"{run} card --link {name}={shlex.quote(value)}    # by a link" for name, value in links),
        f"{run} export -o cards.jsonl    # every card, from the changelogs",
        f"{run} dead-letter list    # what was refused, and why",
    ]
    return "\n".join("    " + line for line in lines)


def staff_page_url(worker_url: str, customer_id: str) -> str:
    """The staff card page of `customer_id`, signing in with the API token when one is set."""
    token = Settings().api_token
    query = {"profile": customer_id} | ({"token": token.get_secret_value()} if token else {})
    return f"{worker_url}/staff/?{urlencode(query)}"


def step(message: str) -> None:
    click.echo(click.style("» ", fg="cyan") + message)


def wait_for_intake(worker: WorkerProcess, expected: int, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the worker's /stats until it has taken in `expected` records."""
    deadline = time.monotonic() + timeout
    with tqdm(total=expected, desc="worker took in", unit="ev") as bar:
        while True:
            _, stats = worker.get("/stats")
            done = stats["accepted_total"] + stats["rejected"]
            bar.update(done - bar.n)
            if done >= expected:
                return stats
            if time.monotonic() > deadline or not worker.alive():
                raise WorkerFailed(f"worker took in {done}/{expected}:\n{worker.log_tail()}")
            time.sleep(0.2)


def print_cards(worker: WorkerProcess, customer_ids: list[str]) -> None:
    """The first customer's whole card, then one line for each of the others."""
    for number, customer_id in enumerate(customer_ids):
        status, card = worker.get(f"/customers/{customer_id}")
        if status != 200:
            click.echo(f"  {customer_id}: no card ({status})")
            continue
        if number == 0:
            click.secho(f"One card from four channels: {customer_id}", bold=True)
            click.echo(render_card(card, color=click.get_text_stream("stdout").isatty()))
            click.secho("The other customers:", bold=True)
            continue
        summary = card.get("summary") or {}
        rfm = summary.get("rfm") or {}
        attributes = card.get("attributes") or {}
        channels = sorted({entry.get("channel") for entry in card.get("receipts") or []})
        click.echo(
            f"  {customer_id}  {attributes.get('first_name', '')} {attributes.get('last_name', '')}"
            f"  links: {', '.join(sorted(card.get('links') or {}))}"
            f"  receipts: {summary.get('receipts_count', 0)} ({', '.join(map(str, channels))})"
            f"  total {summary.get('receipts_total', 0):.2f}  segment: {rfm.get('segment', '-')}"
        )
    click.echo()


def print_intake(stats: dict[str, Any], customers: int, sent: int) -> None:
    click.echo()
    click.secho(f"The worker received {sent} events of {customers} customers:", bold=True)
    for kind, count in sorted(stats["accepted"].items(), key=lambda kv: -kv[1]):
        click.echo(f"  {kind:14} {count:5}")
    click.secho(f"and sent {stats['rejected']} bad record(s) to cdp.dead-letter:", bold=True)
    for rejection in stats["recent_rejections"]:
        click.echo(
            f"  {rejection['topic']}[{rejection['partition']}]@{rejection['offset']}: "
            f"{rejection['reason']}"
        )
    click.echo()
