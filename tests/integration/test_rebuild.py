"""`cardstream rebuild` and `cardstream export` against a real broker and real workers.

A live worker (the original state version) folds a scenario with merges,
reassigned loyalty cards, orders, carts and bad records; its export is compared
byte for byte with the export of a version rebuilt from the input topics by the
`cardstream rebuild` command, run as a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from app.pipeline.people import Duplicates
from app.tools.export import read_table
from app.tools.offsets import end_offsets
from app.tools.producer import ChannelProducer
from app.tools.runner import EMBEDDED_BROKER_SETTINGS, WorkerProcess
from app.tools.scenario import BAD_RECORDS, scenario
from tests.conftest import Broker, Isolated, clock_offset_for
from tests.fixtures.factories import as_json, make_event, make_identify, make_receipt
from tests.integration.kafka_read import read_topic
from tests.integration.test_identity import assert_equal, eventually

pytestmark = pytest.mark.integration

CUSTOMERS = 24


def cardstream(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def reassignments() -> list[dict]:
    """Customers C-1101.. take over the loyalty cards of C-1001..; a later receipt on each."""
    events = []
    for n in range(1, 5):
        card = {"name": "loyalty_card", "value": f"7{n:06d}"}
        events.append(
            make_identify(
                customer_id=f"C-{1100 + n}",
                links={"loyalty_card": card["value"], "email": f"new{n}@example.com"},
                attributes={"first_name": f"New{n}"},
                event_id=f"takeover-{n}",
                ts="2026-11-20T10:00:00+00:00",
            )
        )
        events.append(
            make_receipt(
                receipt_id=f"R-T-{n}",
                total=10.0 * n,
                link=card,
                event_id=f"after-takeover-{n}",
                ts="2026-11-21T10:00:00+00:00",
            )
        )
    # a device nobody ever claims: an anonymous card with a cart
    device = {"name": "device", "value": "lonely-1"}
    events.append(
        make_event(
            "cart_add",
            customer_id=None,
            link=device,
            event_id="lonely-cart",
            ts="2026-11-21T11:00:00+00:00",
            product_id="P-100",
            price=329.0,
        )
    )
    return events


def one_person_twice() -> list[dict]:
    """Two files of one person, written differently (issue 15: a likely duplicate)."""
    anna = {
        "first_name": "Anna",
        "last_name": "Kowalska",
        "birth_date": "1990-03-04",
        "city": "Łódź",
        "postcode": "90-001",
    }
    ana = {**anna, "first_name": "Ana", "last_name": "Kowalsky", "city": "Lodz"}
    return [
        make_identify(
            customer_id=f"C-{1200 + n}",
            links={"email": f"anna{n}@example.com"},
            attributes=attributes,
            event_id=f"anna-{n}",
            ts="2026-11-05T10:00:00+00:00",
        )
        for n, attributes in ((1, anna), (2, ana))
    ]


def decide(worker: WorkerProcess, profile_id: str, other: str, decision: str) -> None:
    """Staff mark the pair, as the staff page does (POST /profiles/{id}/duplicates/{other})."""
    request = urllib.request.Request(
        f"{worker.url}/profiles/{profile_id}/duplicates/{other}",
        data=orjson.dumps({"decision": decision}),
        headers={"Content-Type": "application/json", **worker.auth_headers()},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def publish(broker: Broker, isolated: Isolated, events: list[dict]) -> None:
    producer = ChannelProducer(broker.bootstrap, isolated.topics)
    for event in events:
        producer.produce(*producer.prepare(as_json(event)))
    for role, raw in BAD_RECORDS:
        producer.produce(getattr(isolated.topics, role).name, b"bad", raw)
    assert producer.flush() == []


def output_ends(broker: Broker, isolated: Isolated) -> dict[tuple[str, int], int]:
    topics = isolated.topics
    names = [
        topics.profile_changes.name,
        topics.identity_changes.name,
        topics.dead_letter.name,
        topics.quarantine.name,
        topics.duplicate_suggestions.name,
    ]
    return end_offsets(broker.bootstrap, [(n, p) for n in names for p in range(topics.partitions)])


def test_rebuild_gives_byte_identical_cards_and_publishes_nothing(
    broker: Broker,
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    events = scenario(CUSTOMERS, seed=11) + reassignments() + one_person_twice()
    live = start_worker()
    publish(broker, isolated, events)
    eventually(lambda: assert_equal(live.get("/stats")[1]["accepted_total"], len(events)), 120)
    live.wait_until_quiet(quiet=3.0, timeout=180)
    assert live.get("/stats")[1]["rejected"] == len(BAD_RECORDS)
    # staff decide that the two files are not one person: a decision no input carries
    decide(live, "C-1201", "C-1202", "not_same")
    topics = isolated.topics

    def published_decision() -> None:
        records = read_topic(
            broker.bootstrap, topics.duplicate_suggestions.name, topics.partitions, 100, 2
        )
        kinds = [orjson.loads(m.value())["kind"] for m in records]
        assert "decided" in kinds, kinds

    eventually(published_decision, 60)

    env = {
        "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
        "CARDSTREAM_APP_ID": live.env["CARDSTREAM_APP_ID"],
        "CARDSTREAM_DATA_DIR": str(tmp_path / "rebuilds"),
        "CARDSTREAM_LOG_LEVEL": "info",
        # the live worker's clock: the same events folded at the same time, the same cards
        "CARDSTREAM_CLOCK_OFFSET_SECONDS": str(clock_offset_for()),
        **{
            f"CARDSTREAM_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in broker.worker_settings().items()
        },
    }
    env.pop("CARDSTREAM_STATE_VERSION", None)
    original = cardstream("export", "-o", str(tmp_path / "v1.jsonl"), env=env)
    assert original.returncode == 0, original.stderr
    live.stop()  # its cart timer would still publish abandoned carts
    before = output_ends(broker, isolated)

    rebuilt = cardstream("rebuild", "--state-version", "v2", env=env)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "caught up: state version 'v2'" in rebuilt.stdout
    assert "CARDSTREAM_STATE_VERSION=v2" in rebuilt.stdout
    total = len(events) + len(BAD_RECORDS)
    assert f"{total:,} input events" in rebuilt.stdout
    # stderr is no terminal here: plain progress lines, the last one complete
    progress = [line for line in rebuilt.stderr.splitlines() if line.startswith("rebuild v2")]
    assert progress and "\r" not in rebuilt.stderr
    assert f"100% {total:,}/{total:,} events" in progress[-1]
    # nothing went to the topics downstream systems read
    assert output_ends(broker, isolated) == before
    # the staff decision was carried over: the rebuilt lists remember it on both sides
    assert "carried 1 staff decision(s)" in rebuilt.stdout
    changelog = isolated.topics.changelog_topic(f"{env['CARDSTREAM_APP_ID']}-v2", "duplicates")
    lists = {
        k.decode(): Duplicates.from_json(v)
        for k, v in read_table(broker.bootstrap, changelog).items()
    }
    for one, other in (("C-1201", "C-1202"), ("C-1202", "C-1201")):
        entry = lists[one].get(other)
        assert entry is not None and entry.decision == "not_same", lists.get(one)

    again = cardstream("export", "--state-version", "v2", "-o", str(tmp_path / "v2.jsonl"), env=env)
    assert again.returncode == 0, again.stderr
    v1 = (tmp_path / "v1.jsonl").read_bytes()
    v2 = (tmp_path / "v2.jsonl").read_bytes()
    cards = [orjson.loads(line) for line in v1.splitlines()]
    # non-trivial: every customer, the takers of the cards, the unclaimed device
    ids = [card["profile_id"] for card in cards]
    assert ids == sorted(ids)
    assert {f"C-{1000 + n}" for n in range(1, CUSTOMERS + 1)} <= set(ids)
    assert {f"C-{1100 + n}" for n in range(1, 5)} <= set(ids)
    assert "~device:lonely-1" in ids
    first = cards[ids.index("C-1001")]
    assert len(first["receipts"]) == 2  # the store receipt made before the card was linked
    taker = cards[ids.index("C-1101")]
    assert [r["id"] for r in taker["receipts"]] == ["R-T-1"]
    assert taker["links"]["loyalty_card"] == ["7000001"]
    assert "loyalty_card" not in first["links"]
    assert v1 == v2


def test_export_and_rebuild_refuse_what_they_cannot_do(
    broker: Broker,
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    live = start_worker()
    publish(broker, isolated, scenario(2, seed=5))
    eventually(lambda: assert_equal(live.get("/stats")[1]["rejected"], len(BAD_RECORDS)), 60)
    env = {
        "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
        "CARDSTREAM_APP_ID": live.env["CARDSTREAM_APP_ID"],
        "CARDSTREAM_DATA_DIR": str(tmp_path / "rebuilds"),
        **{
            f"CARDSTREAM_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in EMBEDDED_BROKER_SETTINGS.items()
        },
    }
    unknown = cardstream("export", "--state-version", "nope", env=env)
    assert unknown.returncode == 1
    assert "state version 'nope'" in unknown.stderr and "has no state" in unknown.stderr
    assert unknown.stdout == ""

    bad_name = cardstream("rebuild", "--state-version", "a/b", env=env)
    assert bad_name.returncode == 2 and "--state-version 'a/b'" in bad_name.stderr

    no_partition = cardstream(
        "rebuild", "--state-version", "v3", "--from-offset", "events:99:0", env=env
    )
    assert no_partition.returncode == 1
    assert "has no partition 99" in no_partition.stderr

    not_input = cardstream("rebuild", "--state-version", "v3", "--from-offset", "x:0:0", env=env)
    assert not_input.returncode == 2 and "is not an input topic" in not_input.stderr

    # a version that exists already (here only its topic) is never rebuilt over
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    taken = f"{env['CARDSTREAM_APP_ID']}-v9-guard-ops"
    admin.create_topics([NewTopic(taken, num_partitions=1, replication_factor=1)])[taken].result()
    exists = cardstream("rebuild", "--state-version", "v9", env=env)
    assert exists.returncode == 1
    assert "state version 'v9' already has state (topics " + taken in exists.stderr

    if broker.embedded:  # Tansu answers offset 0 for any time: refused, not trusted
        # record times are when the records were written: all of them lie before now
        now = datetime.now(UTC).isoformat()
        by_time = cardstream("rebuild", "--state-version", "v4", "--from-time", now, env=env)
        assert by_time.returncode == 1
        assert "does not support them" in by_time.stderr

    # every input partition started at its end: the new version folds nothing
    topics = isolated.topics
    inputs = [
        (s.name, p) for s in (topics.identify, topics.events) for p in range(topics.partitions)
    ]
    ends = end_offsets(broker.bootstrap, inputs)
    specs = [f"{t}:{p}:{o}" for (t, p), o in ends.items()]
    empty = cardstream(
        "rebuild",
        "--state-version",
        "v5",
        *[a for s in specs for a in ("--from-offset", s)],
        env=env,
    )
    assert empty.returncode == 0, empty.stdout + empty.stderr
    assert "0 input events" in empty.stdout
    nothing = cardstream("export", "--state-version", "v5", env=env)
    assert nothing.returncode == 1 and "holds no cards" in nothing.stderr


@pytest.mark.parametrize("with_attributes", [False, True], ids=["links-only", "half-attributes"])
def test_export_has_every_card_of_thousands_sent_in_one_burst(
    with_attributes: bool,
    broker: Broker,
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """Issue 12.3: 200 customers known only by an email made export say "holds no cards".
    Thousands of cards, written by the worker in large batches: all known by their links
    only (no fact: the export's time cannot come from the facts), or half with attributes."""
    count = 3000
    events = [
        make_identify(
            customer_id=f"C-O{n}",
            links={"email": f"o{n}@example.com"},
            attributes={"first_name": f"O{n}"} if with_attributes and n % 2 else {},
            event_id=f"o-{n}",
        )
        for n in range(count)
    ]
    live = start_worker()
    producer = ChannelProducer(broker.bootstrap, isolated.topics)
    for event in events:
        producer.produce(*producer.prepare(as_json(event)))
    assert producer.flush() == []
    eventually(lambda: assert_equal(live.get(f"/customers/C-O{count - 1}")[0], 200), 120)
    eventually(lambda: assert_equal(live.get("/stats")[1]["accepted_total"], count), 120)
    live.wait_until_quiet(quiet=2.0, timeout=120)
    env = {
        "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
        "CARDSTREAM_APP_ID": live.env["CARDSTREAM_APP_ID"],
    }
    env.pop("CARDSTREAM_STATE_VERSION", None)
    done = cardstream("export", "-o", str(tmp_path / "cards.jsonl"), env=env)
    assert done.returncode == 0, done.stderr
    cards = [orjson.loads(line) for line in (tmp_path / "cards.jsonl").read_bytes().splitlines()]
    assert len(cards) == count
    by_id = {card["profile_id"]: card for card in cards}
    assert set(by_id) == {f"C-O{n}" for n in range(count)}
    for n in (0, 1, 1234, count - 1):
        card = by_id[f"C-O{n}"]
        assert card["links"] == {"email": [f"o{n}@example.com"]}
        assert card["contacts"]["email"]["value"] == f"o{n}@example.com"
        assert card["attributes"] == ({"first_name": f"O{n}"} if with_attributes and n % 2 else {})
