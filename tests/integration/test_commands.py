"""Long-running commands as a user runs them: the broker and the demo, then Ctrl-C."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from app.pipeline.topics import load_topics
from app.tools.admin import apply_topics
from app.tools.broker import free_port

pytestmark = pytest.mark.integration


def ignore_sigint() -> None:
    """As a background job of a non-interactive shell starts a command: SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("parent_ignores_sigint", [False, True], ids=["foreground", "background"])
def test_broker_command_serves_and_stops_on_ctrl_c(parent_ignores_sigint: bool) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ignore_sigint if parent_ignores_sigint else None,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"bootstrap 127.0.0.1:{port}" in line
        report = apply_topics(f"127.0.0.1:{port}", load_topics().all())
        assert len(report.created) == len(load_topics().all()) == 7
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
    time.sleep(0.2)
    with pytest.raises(OSError):  # nothing listens any more
        import socket

        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_broker_command_refuses_a_busy_port() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app", "broker", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr


def test_demo_runs_to_the_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "demo", "--customers", "2"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The worker received 36 events of 2 customers" in result.stdout
    assert "and sent 3 bad record(s) to cdp.dead-letter" in result.stdout
    assert "receipt.ts: Input should be a valid datetime" in result.stdout
    # then the cards: web, app, store and call-centre activity merged into one
    out = result.stdout
    assert "One card from four channels: C-1001" in out
    assert "Receipts (2)" in out  # the store receipt (via the loyalty card) + the phone order
    # all four links on one card; whether each came "linked" or "merged from" an
    # anonymous profile depends on the order the worker read the channels' topics in
    identity = out.split("\nIdentity\n", 1)[-1].split("\n\n", 1)[0]
    for link in ("device        dev-0001", "email", "loyalty_card  7000001", "phone         +48"):
        assert f"\n  {link}" in f"\n{identity}", identity
    assert "C-1002" in out and "receipts: 2 (call_center, store)" in out
    assert "demo --keep` (this run stops its worker now)" in out
    assert "staff page of" not in out  # its worker is stopped: no dead address


def test_demo_keep_prints_commands_that_find_the_demo() -> None:
    """`demo --keep` serves until Ctrl-C and prints commands that work as pasted."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "demo", "--customers", "2", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        while not any(line.strip().startswith("export CARDSTREAM_BOOTSTRAP=") for line in seen):
            line = proc.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
        commands = [proc.stdout.readline().strip() for _ in range(4)]
        out = "".join(seen)
        assert re.search(
            r"staff page of C-1001: http://127\.0\.0\.1:\d+/staff/\?profile=C-1001", out
        )
        env = dict(os.environ)
        for assignment in shlex.split(seen[-1].strip())[1:]:
            name, _, value = assignment.partition("=")
            env[name] = value
        assert env["CARDSTREAM_APP_ID"] == "cardstream-demo"
        card, by_link, export, letters = (shlex.split(c.partition("#")[0]) for c in commands)
        shown = subprocess.run(card, env=env, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and "C-1001" in shown.stdout, shown.stderr
        found = subprocess.run(by_link, env=env, capture_output=True, text=True, timeout=60)
        assert found.returncode == 0 and "C-1001" in found.stdout, found.stderr
        assert export[-2:] == ["-o", "cards.jsonl"]
        exported = subprocess.run(  # to stdout here
            export[:-2], env=env, capture_output=True, text=True, timeout=120
        )
        assert exported.returncode == 0, exported.stderr
        assert '"profile_id":"C-1001"' in exported.stdout
        listed = subprocess.run(letters, env=env, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and "3 dead letter(s)" in listed.stderr, listed.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) in (0, 130)
    finally:
        proc.kill()
