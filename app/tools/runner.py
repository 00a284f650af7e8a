"""Running workers as child processes: for the demo, the tests and the benchmarks.

`WorkerProcess` starts `python -m app worker` with its settings in the
environment, waits until it has partitions assigned, answers its web routes,
and stops it (SIGTERM, or SIGKILL for crash tests). Children die with the
parent, so nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from app.tools.broker import die_with_parent, free_port, stop_process
from app.worker.settings import ENV_PREFIX
from app.worker.web.auth import request_headers

#: Worker settings for the embedded broker (docs/design.md §5). Tansu lets a member join a
#: group only after half the client's *session* timeout, so keep it short; its end
#: offsets stop short after a multi-record batch (`app/worker/end_offsets.py` corrects Faust's
#: recovery; the offset check stays off until it is proven on again); and it
#: answers a fetch only when Faust's fixed 1.5 s wait is up, so the wait is cut to 50 ms.
EMBEDDED_BROKER_SETTINGS: dict[str, object] = {
    "session_timeout": 6,
    "heartbeat_interval": 1,
    "rebalance_timeout": 4,
    "recovery_consistency_check": False,
    "fetch_max_wait_ms": 50,
}


class WorkerFailed(RuntimeError):
    """The worker exited or did not become ready; the message ends with its log tail."""


def worker_env(**settings: object) -> dict[str, str]:
    """The environment of a worker child: this one plus `CARDSTREAM_*` from `settings`."""
    env = dict(os.environ)
    for name, value in settings.items():
        if value is not None:
            env[ENV_PREFIX + name.upper()] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    return env


def http_json(
    url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """GET `url`; return (status, decoded JSON body or None). Raises OSError if unreachable."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return exc.code, body.decode(errors="replace")


class WorkerProcess:
    """One `cardstream worker` child process."""

    def __init__(
        self,
        bootstrap: str,
        data_dir: Path,
        app_id: str,
        log_file: Path,
        settings: Mapping[str, object] | None = None,
        web_port: int | None = None,
    ) -> None:
        self.web_port = web_port or free_port()
        self.log_file = log_file
        self.env = worker_env(
            bootstrap=bootstrap,
            data_dir=data_dir,
            app_id=app_id,
            web_port=self.web_port,
            **(settings or {}),
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> WorkerProcess:
        """Spawn the worker (returns at once; see `wait_ready`)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "app", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        return self

    @property
    def pid(self) -> int | None:
        """The child's process id, once started."""
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        """GET a route of this worker's web server (with its API credentials, if any)."""
        return http_json(self.url + path, timeout, self.auth_headers())

    def auth_headers(self) -> dict[str, str]:
        """The `Authorization` header this worker's API token or basic credentials call for."""
        token, user, password = (
            self.env.get(ENV_PREFIX + name) for name in ("API_TOKEN", "API_USER", "API_PASSWORD")
        )
        return request_headers(token, user, password)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until /health says ready (partitions assigned); raises WorkerFailed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise WorkerFailed(f"worker exited during start-up:\n{self.log_tail()}")
            try:
                status, body = self.get("/health", timeout=2)
                if status == 200 and body.get("ready"):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise WorkerFailed(f"worker not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def wait_until_quiet(self, quiet: float = 1.5, timeout: float = 60.0) -> float:
        """Wait until the agents have handled nothing new for `quiet` seconds.

        Returns the monotonic time of the last change seen; raises WorkerFailed
        after `timeout`.
        """
        deadline = time.monotonic() + timeout
        last: object = None
        changed_at = time.monotonic()
        while time.monotonic() < deadline:
            _, stats = self.get("/stats")
            handled = {k: v for k, v in stats["agents"].items() if not k.startswith("timer.")}
            if handled != last:
                last, changed_at = handled, time.monotonic()
            elif time.monotonic() - changed_at >= quiet:
                return changed_at
            time.sleep(0.1)
        raise WorkerFailed(f"the worker was still busy after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after `timeout`); idempotent."""
        if self._proc is not None:
            stop_process(self._proc, timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, for crash-safety tests."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
            self._proc = None
