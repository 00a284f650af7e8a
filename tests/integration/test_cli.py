"""The command line against a real broker: `topics apply`, `send`, and what commands say
when the broker or the state they look for is not there."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import Broker, Isolated
from tests.fixtures.factories import as_json, make_identify, make_receipt
from tests.integration.kafka_read import read_topic

pytestmark = pytest.mark.integration


def cardstream(
    *args: str, env: dict[str, str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        input=stdin.decode() if stdin else None,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_topics_apply_is_idempotent_and_reports_differences(
    broker: Broker, isolated: Isolated
) -> None:
    env = {
        "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
    }
    again = cardstream("topics", "apply", env=env)  # the fixture applied them once already
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("ok ") == 7 and "created" not in again.stdout

    # a topic someone created by hand with the wrong partition count
    wrong = isolated.topics.quarantine.name + "-x"
    text = isolated.topics_file.read_text().replace(
        f'"{isolated.topics.quarantine.name}"', f'"{wrong}"'
    )
    isolated.topics_file.write_text(text)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(wrong, num_partitions=1, replication_factor=1)])[wrong].result()
    drift = cardstream("topics", "apply", env=env)
    assert drift.returncode == 1
    assert f"{wrong}: partitions 1, declared {isolated.topics.partitions}" in drift.stderr


def test_send_reports_bad_lines_and_still_sends_good_ones(
    broker: Broker, isolated: Isolated, tmp_path: Path
) -> None:
    lines = [
        as_json(make_identify(customer_id="C-9", links={"email": "Eve@X.pl"})),
        b'{"type": "receipt"}',
        b"",
        as_json(make_receipt(receipt_id="R-9", customer_id="C-9")),
        b"nope",
    ]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    env = {
        "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
    }
    result = cardstream("send", str(source), env=env)
    assert result.returncode == 1
    assert f"{source}:2: receipt.event_id: Field required" in result.stderr
    assert f"{source}:5: event: Invalid JSON" in result.stderr
    assert "sent 2 event(s), rejected 2 line(s)" in result.stdout

    topics = isolated.topics
    [identify] = read_topic(broker.bootstrap, topics.identify.name, topics.partitions, 1)
    assert identify.key() == b"C-9"
    assert b'"email":"eve@x.pl"' in identify.value()  # normalised before sending
    [receipt] = read_topic(broker.bootstrap, topics.events.name, topics.partitions, 1)
    assert b'"receipt_id":"R-9"' in receipt.value()


def test_send_from_stdin_and_unreachable_broker(isolated: Isolated) -> None:
    env = {
        "CARDSTREAM_BOOTSTRAP": "127.0.0.1:1",
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
    }
    result = cardstream("send", "-", env=env, stdin=as_json(make_identify()) + b"\n")
    assert result.returncode == 1
    assert "no Kafka broker answered at 127.0.0.1:1" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("export",),
        ("rebuild", "--state-version", "v9"),
        ("dead-letter", "list"),
        ("dead-letter", "replay", "--dry-run"),
        ("identity", "release", "C-1"),
        ("topics", "apply"),
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_no_broker_is_one_clear_line(args: tuple[str, ...], isolated: Isolated) -> None:
    """Without a broker each command says so in one line (librdkafka printed ~195)."""
    env = {
        "CARDSTREAM_BOOTSTRAP": "127.0.0.1:1",
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
    }
    result = cardstream(*args, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: no Kafka broker answered at 127.0.0.1:1 within")


def test_export_of_an_unknown_app_names_the_apps_that_have_state(
    broker: Broker, isolated: Isolated
) -> None:
    app = f"a{uuid.uuid4().hex[:8]}"
    topics = [f"{app}-shop-profiles-changelog", f"{app}-shop-v2-profiles-changelog"]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=1) for name in topics]
    ).values():
        future.result()
    env = {
        "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
        "CARDSTREAM_APP_ID": f"{app}-nosuch",
    }
    result = cardstream("export", env=env)
    assert result.returncode == 1
    assert "has no state" in result.stderr
    assert "app ids with state there: " in result.stderr
    named = result.stderr.partition("app ids with state there: ")[2].partition(" (name one")[0]
    assert {f"{app}-shop", f"{app}-shop-v2"} <= set(named.split(", "))  # other tests' apps too


def test_dead_letter_list_refuses_an_unknown_topic(broker: Broker, isolated: Isolated) -> None:
    env = {
        "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
    }
    result = cardstream("dead-letter", "list", "--topic", "nosuch", env=env)
    assert result.returncode == 2
    assert "--topic 'nosuch': no such topic on the broker" in result.stderr
    known = cardstream("dead-letter", "list", "--topic", "events", env=env)
    assert known.returncode == 0, known.stderr


def test_rebuild_on_the_embedded_broker_takes_its_settings_by_itself(
    broker: Broker, isolated: Isolated, tmp_path: Path
) -> None:
    """Without the CARDSTREAM_* embedded-broker settings, rebuild finds the embedded
    broker and uses them (before: ~30 s silent while the group join waited), and says
    what it waits for."""
    env = {
        "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
        "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
        "CARDSTREAM_APP_ID": f"a{uuid.uuid4().hex[:8]}",
        "CARDSTREAM_DATA_DIR": str(tmp_path / "data"),
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CARDSTREAM_")}
    result = subprocess.run(
        [sys.executable, "-m", "app", "rebuild", "--state-version", "v2"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "starting the rebuild worker: it joins its consumer group" in result.stdout
    if not broker.embedded:  # Apache Kafka: the settings as given
        assert "embedded broker" not in result.stderr
    else:
        assert "embedded broker: using its settings CARDSTREAM_SESSION_TIMEOUT=6" in result.stderr
        assert "CARDSTREAM_REBALANCE_TIMEOUT=4" in result.stderr
        assert "(up to the rebalance timeout, 4 s)" in result.stdout
    assert "caught up: state version 'v2'" in result.stdout


def test_worker_on_a_busy_port_says_so_in_one_line(broker: Broker, isolated: Isolated) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            "CARDSTREAM_BOOTSTRAP": broker.bootstrap,
            "CARDSTREAM_TOPICS_FILE": str(isolated.topics_file),
            "CARDSTREAM_WEB_PORT": str(port),
        }
        result = cardstream("worker", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: port {port} on 127.0.0.1 is already in use (another worker?); pick another "
        "with --web-port or CARDSTREAM_WEB_PORT"
    ]
