"""`GET /metrics` and JSON logs of a real worker on a real broker (issue 5 item 7, issue 6).

The story merges two anonymous profiles into a customer, moves a loyalty card to
another customer, floods one CustomerId with emails until the guard quarantines
it, and sends a malformed record quoting a phone number; the
expected counts are worked out by hand from that story. The worker logs JSON,
and neither its log nor its metrics may hold the personal data sent.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable
from urllib.parse import quote

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.tools.producer import ChannelProducer
from app.tools.runner import WorkerProcess
from tests.conftest import Broker, Isolated
from tests.fixtures.factories import as_json, make_event, make_identify, make_receipt
from tests.integration.test_identity import eventually

pytestmark = pytest.mark.integration

EMAIL = "ann.secret@example.com"
BAD_PHONE = "+48 600 100 200 300 400 500"  # too long: the reason quotes it
BAD_EMAIL = "bad.record.person@example.com"
DEVICE = {"name": "device", "value": "d-91"}
CARD = {"name": "loyalty_card", "value": "8001"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(worker: WorkerProcess) -> tuple[str, Samples]:
    """The worker's /metrics content type and samples: (name, labels) -> value."""
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return content_type, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def lags(samples: Samples, topic: str) -> dict[str, float]:
    """partition -> lag of `topic`."""
    return {
        dict(labels)["partition"]: v
        for (name, labels), v in samples.items()
        if name == "cardstream_consumer_lag" and dict(labels)["topic"] == topic
    }


def facts_of(worker: WorkerProcess, profile_id: str) -> set[str]:
    status, body = worker.get(f"/profiles/{quote(profile_id, safe='')}/facts")
    return {f["event_id"] for f in body["facts"]} if status == 200 else set()


def owner_of(worker: WorkerProcess, name: str, link_value: str) -> str | None:
    status, body = worker.get(f"/links/{name}/{quote(link_value, safe='')}")
    return body["customer_id"] if status == 200 else None


def test_metrics_count_the_story_and_logs_are_json_without_personal_data(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    topics = isolated.topics
    worker = start_worker(log_format="json", guard_link_limits='{"email": 2}')
    producer = ChannelProducer(broker.bootstrap, topics)

    def send(*events: dict) -> None:
        for event in events:
            producer.produce(*producer.prepare(as_json(event)))
        assert producer.flush() == []

    # anonymous history on a device and a loyalty card
    send(
        make_event(
            "product_view",
            customer_id=None,
            link=DEVICE,
            event_id="view-1",
            ts="2026-11-01T09:00:00+00:00",
            product_id="P-1",
            category="shoes",
        ),
        make_receipt(receipt_id="R-1", link=CARD, event_id="pos-1", ts="2026-11-01T12:00:00+00:00"),
    )
    eventually(lambda: assert_has(facts_of(worker, "~device:d-91"), "view-1"), timeout=60)
    eventually(lambda: assert_has(facts_of(worker, "~loyalty_card:8001"), "pos-1"), timeout=60)
    # C-1 claims both (2 merges) and a new email (1 link) ...
    send(
        make_identify(
            customer_id="C-1",
            links={"device": "d-91", "loyalty_card": "8001", "email": EMAIL},
            attributes={"first_name": "Zofiana"},
            event_id="signup",
            ts="2026-11-02T10:00:00+00:00",
        )
    )
    eventually(lambda: assert_is(owner_of(worker, "loyalty_card", "8001"), "C-1"), timeout=60)
    # ... then the card changes owner (1 reassign, recorded by C-2's guard as a takeover)
    send(
        make_identify(
            customer_id="C-2",
            links={"loyalty_card": "8001"},
            event_id="new-owner",
            ts="2026-11-03T10:00:00+00:00",
        )
    )
    # a cached integration response: the third email of C-9 is held, C-9 quarantined
    send(
        *(
            make_identify(
                customer_id="C-9",
                links={"email": f"flood-{n}@x.pl"},
                event_id=f"flood-{n}",
                ts=f"2026-11-02T10:0{n}:00+00:00",
            )
            for n in (1, 2, 3)
        )
    )
    # a malformed record whose reason quotes a phone, and whose bytes hold an email
    bad = make_identify(customer_id="C-3", links={"phone": BAD_PHONE, "email": BAD_EMAIL})
    producer.produce(topics.identify.name, b"C-3", as_json(bad))
    assert producer.flush() == []
    producer.close()

    def counted() -> Samples:
        _, samples = scrape(worker)
        changes = "cardstream_identity_changes_total"
        assert value(samples, changes, kind="merged") == 2
        assert value(samples, changes, kind="linked") == 1 + 2  # C-1's email, C-9's first two
        assert value(samples, changes, kind="reassigned") == 1
        assert value(samples, changes, kind="quarantined") == 1
        assert value(samples, "cardstream_takeovers_total") == 1
        assert value(samples, "cardstream_quarantined_claims_total") == 1
        dead = "cardstream_dead_letters_total"
        assert value(samples, dead, stage="intake", reason="invalid_link") == 1
        assert value(samples, dead, stage="intake", reason="not_json") == 0
        accepted = "cardstream_events_accepted_total"
        assert value(samples, accepted, type="identify") == 5
        assert value(samples, accepted, type="receipt") == 1
        assert value(samples, accepted, type="product_view") == 1
        events_in = "cardstream_events_in_total"
        assert value(samples, events_in, topic=topics.identify.name) == 6
        assert value(samples, events_in, topic=topics.events.name) == 2
        out = "cardstream_records_out_total"
        assert value(samples, out, topic=topics.dead_letter.name) == 1
        assert value(samples, out, topic=topics.identity_changes.name) == 7
        assert value(samples, out, topic=topics.quarantine.name) == 1
        return samples

    samples = eventually(counted, timeout=60)

    def caught_up() -> Samples:
        _, now = scrape(worker)
        for topic in (topics.identify.name, topics.events.name):
            assert lags(now, topic) == {str(p): 0 for p in range(topics.partitions)}, topic
        behind = {k: v for k, v in now.items() if k[0] == "cardstream_consumer_lag" and v}
        assert not behind  # internal topics too
        app_id = worker.env["CARDSTREAM_APP_ID"]
        internal = topics.internal_topic(app_id, "identity_ops")
        assert lags(now, internal) == {str(p): 0 for p in range(topics.partitions)}
        return now

    samples = eventually(caught_up, timeout=60)
    assert value(samples, "cardstream_process_resident_memory_bytes") > 10_000_000
    assert value(samples, "cardstream_rebalancing") == 0
    content_type, _ = scrape(worker)
    assert content_type.startswith("text/plain; version=")
    assert worker.get("/stats")[1]["dead_letters"] == {"intake.invalid_link": 1}

    # logs: one JSON object per line; the dead letter named by place, not by content
    worker.stop()
    text = worker.log_file.read_text()
    for secret in (EMAIL, BAD_EMAIL, BAD_PHONE, "600 100 200 300", "Zofiana", "@x.pl"):
        assert secret not in text, f"{secret!r} leaked into the worker's log"
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    assert any(line["logger"].startswith("faust") for line in lines)  # Faust's own lines too
    [rejected] = [line for line in lines if line["message"].startswith("dead-lettered")]
    assert rejected["level"] == "warning"
    assert rejected["topic"] == topics.identify.name
    assert rejected["fault"] == "invalid_link"
    assert isinstance(rejected["offset"], int)
    assert isinstance(rejected["partition"], int)


def assert_has(found: set[str], event_id: str) -> None:
    assert event_id in found


def assert_is(actual: object, expected: object) -> None:
    assert actual == expected


def raw_request(worker: WorkerProcess, request: bytes) -> bytes:
    """Send `request` as is; the first line of the worker's answer."""
    with socket.create_connection(("127.0.0.1", worker.web_port), timeout=5) as connection:
        connection.sendall(request)
        return connection.recv(200).split(b"\r\n", 1)[0]


def test_a_refused_request_logs_neither_its_path_nor_its_cookie(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """aiohttp refuses a request line or header over 8 KiB before any route or middleware;
    its error used to quote the line: the email in the path, the session in the cookie."""
    worker = start_worker(log_format="json", api_token="observability-token")
    session = "v2.1800000000.nonce-from-the-cookie.0123abcd"
    long_path = f"GET /links/email/{EMAIL}/card?pad={'x' * 9000} HTTP/1.1\r\nHost: w\r\n\r\n"
    long_cookie = (
        f"GET /links/email/{EMAIL}/card HTTP/1.1\r\nHost: w\r\n"
        f"Cookie: cardstream_session={session}{'y' * 9000}\r\n\r\n"
    )
    for request in (long_path, long_cookie):
        assert raw_request(worker, request.encode()) == b"HTTP/1.0 400 Bad Request"
    assert worker.get("/health")[0] == 200  # still serving
    worker.stop()
    text = worker.log_file.read_text()
    for secret in (EMAIL, "ann.secret", session, "nonce-from-the-cookie"):
        assert secret not in text, f"{secret!r} leaked into the worker's log"
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    refused = [line for line in lines if line["message"].startswith("refused a request")]
    assert [line.get("route") for line in refused] == ["/links/{name}/{value}/card", None]
    assert all(line["level"] == "warning" and "exception" not in line for line in refused)
    assert {line["limit_bytes"] for line in refused} == {8190}
