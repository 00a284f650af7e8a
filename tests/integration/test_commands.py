"""Long-running commands as a user runs them: the broker and the demo, then Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from app.admin import apply_topics
from app.broker import free_port
from app.topics import load_topics

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
        assert len(report.created) == 6
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
    assert "merged from   ~device:dev-0001, ~loyalty_card:7000001, ~phone:" in out
    assert "C-1002" in out and "receipts: 2 (call_center, store)" in out
    assert re.search(r"staff page of C-1001: http://127\.0\.0\.1:\d+/staff/\?profile=C-1001", out)
