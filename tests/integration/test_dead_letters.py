"""`cardstream dead-letter list | replay` against a real worker on a real broker.

Bad records go in raw, the worker dead-letters them, `list` shows why, a
fixed one is replayed and taken in, an unfixed one is replayed and lands in the
dead-letter topic again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from app.tools.producer import ChannelProducer
from app.tools.runner import WorkerProcess
from tests.conftest import Broker, Isolated
from tests.fixtures.factories import as_json, make_identify, make_receipt
from tests.integration.kafka_read import read_topic

pytestmark = pytest.mark.integration

BAD_RECEIPT = as_json(make_receipt(receipt_id="R-x", event_id="r-x", customer_id="C-1")).replace(
    b'"total":129.9', b'"total":"lots"'
)
NOT_JSON = b"{not json"
BAD_PHONE = as_json(make_identify(customer_id="C-2", links={"phone": "no phone"}))


def cardstream(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for(check: Callable[[], object], timeout: float = 30.0) -> object:
    """Poll `check` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, "condition not met in time"
            return result
        time.sleep(0.2)


def test_list_shows_why_and_replay_sends_fixed_and_unfixed_records(
    broker: Broker,
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    assert b'"lots"' in BAD_RECEIPT
    topics = isolated.topics
    env = {
        "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
    }
    worker = start_worker()
    producer = ChannelProducer(broker.bootstrap, topics)
    producer.produce(*producer.prepare(as_json(make_identify(customer_id="C-1"))))
    producer.produce(topics.events.name, b"C-1", BAD_RECEIPT)
    producer.produce(topics.events.name, b"k", NOT_JSON)
    producer.produce(topics.identify.name, b"C-2", BAD_PHONE)
    assert producer.flush() == []
    producer.close()
    dead = read_topic(broker.bootstrap, topics.dead_letter.name, topics.partitions, 3)
    assert len(dead) == 3

    # list: where from, why, and a preview of the value
    listed = cardstream("dead-letter", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 3  # one line per letter
    assert "receipt.total" in listed.stdout
    assert "event: Invalid JSON" in listed.stdout
    assert "phone 'no phone'" in listed.stdout
    assert listed.stdout.count(f"{topics.events.name}[") == 2
    assert listed.stdout.count(f"{topics.identify.name}[") == 1
    assert "value: {not json" in listed.stdout
    assert f"3 dead letter(s) in {topics.dead_letter.name}" in listed.stderr

    # --json, filtered
    as_json_lines = cardstream("dead-letter", "list", "--json", "--reason", "TOTAL", env=env)
    assert as_json_lines.returncode == 0, as_json_lines.stderr
    [receipt_letter] = [orjson.loads(line) for line in as_json_lines.stdout.splitlines()]
    assert receipt_letter["value"] == BAD_RECEIPT.decode()
    assert receipt_letter["key"] == "C-1"
    assert receipt_letter["source_topic"] == topics.events.name
    only_identify = cardstream("dead-letter", "list", "--json", "--topic", "identify", env=env)
    [phone_letter] = [orjson.loads(line) for line in only_identify.stdout.splitlines()]
    assert phone_letter["value"] == BAD_PHONE.decode()
    everything = cardstream("dead-letter", "list", "--json", env=env)
    by_value = {
        orjson.loads(line)["value"]: orjson.loads(line) for line in everything.stdout.splitlines()
    }
    not_json_id = by_value[NOT_JSON.decode()]["id"]

    # a fix that is still broken is reported and not sent
    still_broken = tmp_path / "still-broken.jsonl"
    still_broken.write_bytes(
        orjson.dumps({"dead_letter": not_json_id, "event": {"type": "tag", "event_id": "t-1"}})
        + b"\n"
    )
    refused = cardstream("dead-letter", "replay", "--fixed", str(still_broken), env=env)
    assert refused.returncode == 1
    assert f"not sent: {not_json_id}: fix still invalid:" in refused.stderr
    assert "sent 0 record(s), 1 not sent" in refused.stdout

    # a malformed fixes file is refused as a whole, with line numbers
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"type": "tag", "event_id": "t-2"}\n{nope\n')
    bad_file = cardstream("dead-letter", "replay", "--fixed", str(malformed), env=env)
    assert bad_file.returncode == 1
    assert f"{malformed}: line 2: not JSON" in bad_file.stderr

    # the fixed receipt (found by its event_id) is taken in
    fixed = tmp_path / "fixed.jsonl"
    fixed_receipt = make_receipt(receipt_id="R-x", event_id="r-x", customer_id="C-1", total=12.5)
    fixed.write_bytes(as_json(fixed_receipt) + b"\n")
    replayed = cardstream("dead-letter", "replay", "--fixed", str(fixed), env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert f"fixed event → {topics.events.name}" in replayed.stdout
    assert "sent 1 record(s), 0 not sent" in replayed.stdout

    def receipt_on_card() -> bool:
        status, card = worker.get("/customers/C-1")
        return status == 200 and [(r["id"], r["total"]) for r in card["receipts"]] == [
            ("R-x", 12.5)
        ]

    wait_for(receipt_on_card)
    assert worker.get("/stats")[1]["accepted"].get("receipt") == 1

    # a dry run sends nothing
    dry = cardstream("dead-letter", "replay", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would send 3 record(s)" in dry.stdout

    # an unfixed replay goes back to its input topic and is dead-lettered again
    again = cardstream("dead-letter", "replay", "--id", not_json_id, env=env)
    assert again.returncode == 0, again.stderr
    assert f"{not_json_id}: original record → {topics.events.name}" in again.stdout
    dead = read_topic(broker.bootstrap, topics.dead_letter.name, topics.partitions, 5, timeout=15)
    assert len(dead) == 4  # the dry run added nothing
    assert [m.value() for m in dead].count(NOT_JSON) == 2
    assert [m.key() for m in dead if m.value() == NOT_JSON] == [b"k", b"k"]
    assert worker.alive()
    status, health = worker.get("/health")
    assert status == 200 and health["ready"]
    assert worker.get("/stats")[1]["rejected"] == 4


def test_replay_refuses_letters_from_topics_that_are_no_inputs(
    broker: Broker, isolated: Isolated
) -> None:
    """A dead letter whose source topic is not an input topic is never sent anywhere."""
    topics = isolated.topics
    env = {
        "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
    }
    from confluent_kafka import Producer

    from app.tools.producer import producer_config

    raw = Producer(producer_config(broker.bootstrap))
    raw.produce(
        topics.dead_letter.name,
        key=b"x",
        value=b"{}",
        headers=[("cdp.reason", b"made up"), ("cdp.source-topic", topics.quarantine.name.encode())],
    )
    assert raw.flush(30) == 0
    read_topic(broker.bootstrap, topics.dead_letter.name, topics.partitions, 1)

    result = cardstream("dead-letter", "replay", env=env)
    assert result.returncode == 1
    assert f"source topic {topics.quarantine.name} is not an input topic" in result.stderr
    assert "sent 0 record(s), 1 not sent" in result.stdout
    listed = cardstream("dead-letter", "list", env=env)
    assert f"{topics.quarantine.name}[?]@?" in listed.stdout
    assert "made up" in listed.stdout


def test_an_internal_op_that_fails_is_dead_lettered_alone_and_its_batch_folds(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Agents fold several ops per message: a failing one costs only itself."""
    from app.domain.events import accept_record, event_to_json
    from app.pipeline.ops import AddFact, ReleaseFacts, encode_op, encode_ops
    from tests.fixtures.factories import make_event

    topics = isolated.topics
    worker = start_worker()
    profile_ops = topics.internal_topic(worker.env["CARDSTREAM_APP_ID"], "profile_ops")
    tag = accept_record(as_json(make_event("tag", customer_id="C-7", tag="vip")), "PL")
    good = AddFact(event_to_json(tag).decode(), via=None)
    broken = ReleaseFacts("device:d-1", "not a time", None, "C-8")
    producer = ChannelProducer(broker.bootstrap, topics)
    producer.produce(profile_ops, b"C-7", encode_ops([broken, good]))
    producer.produce(profile_ops, b"C-7", b"{not an op")
    producer.produce(profile_ops, None, encode_op(good))
    assert producer.flush() == []
    producer.close()

    dead = read_topic(broker.bootstrap, topics.dead_letter.name, topics.partitions, 3)
    reasons = {m.value(): dict(m.headers() or [])["cdp.reason"].decode() for m in dead}
    assert set(reasons) == {encode_op(broken), b"{not an op", encode_op(good)}
    assert reasons[encode_op(broken)].startswith("internal error in profiles: ValueError(")
    assert "not an internal op" in reasons[b"{not an op"]
    assert "without a key" in reasons[encode_op(good)]
    assert all(dict(m.headers() or [])["cdp.source-topic"] == profile_ops.encode() for m in dead)

    def tagged() -> bool:
        status, card = worker.get("/customers/C-7")
        return status == 200 and card["tags"] == ["vip"]

    wait_for(tagged)
    assert worker.alive()
    assert worker.get("/stats")[1]["agents"]["profiles.failed"] == 3


def test_state_that_does_not_decode_dead_letters_its_ops_and_the_worker_goes_on(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    """A profile whose stored state is corrupt: its ops are dead-lettered, other profiles fold."""
    from confluent_kafka.admin import AdminClient

    topics = isolated.topics
    first = start_worker()
    changelog = topics.changelog_topic(first.env["CARDSTREAM_APP_ID"], "profiles")
    listed = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics
    assert changelog in listed, sorted(listed)
    first.stop()
    producer = ChannelProducer(broker.bootstrap, topics)
    producer.produce(changelog, b"C-9", b"\xffnot a profile")  # the key's partition: murmur2
    assert producer.flush() == []
    worker = start_worker(data_dir_of=first)  # recovers the corrupt value from the changelog

    producer.produce(*producer.prepare(as_json(make_identify(customer_id="C-10"))))
    producer.produce(topics.events.name, b"C-9", as_json(make_receipt(customer_id="C-9")))
    producer.produce(topics.events.name, b"C-10", as_json(make_receipt(customer_id="C-10")))
    assert producer.flush() == []
    producer.close()

    dead = read_topic(broker.bootstrap, topics.dead_letter.name, topics.partitions, 1)
    [letter] = dead
    headers = dict(letter.headers() or [])
    assert headers["cdp.reason"].decode().startswith("internal error in profiles:")
    assert letter.key() == b"C-9"

    def folded() -> bool:
        status, card = worker.get("/customers/C-10")
        return status == 200 and len(card["receipts"]) == 1

    wait_for(folded)
    assert worker.alive()
    assert worker.get("/stats")[1]["agents"]["profiles.failed"] == 1
