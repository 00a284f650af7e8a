"""Log lines: the JSON format (`app.worker.logs`), and no personal data in what the agents log.

The dead-letter logging path is fed records that quote an email and a phone in
their reason; those values must reach the dead-letter record (not tested here)
and never the log, in text or in JSON.
"""

from __future__ import annotations

import io
import logging
import logging.config
import sys
from collections.abc import Iterator

import orjson
import pytest

from app.domain.events import InvalidEvent, accept_record
from app.worker.agents.outbox import log_failure, log_rejection
from app.worker.logs import (
    JsonFormatter,
    configure_cli_logging,
    level_of,
    log_fields,
    logging_config,
)

EMAIL = "zofia.secret@example.com"
PHONE = "+48 600 100 200 300 400 500"  # too long: the reason quotes it


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("app.test", logging.WARNING, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger back as it was after a test reconfigures it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """(text, json) streams receiving every log line of `app.worker.agents.outbox`."""
    text, json_lines = io.StringIO(), io.StringIO()
    as_text = logging.StreamHandler(text)
    as_text.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    as_json = logging.StreamHandler(json_lines)
    as_json.setFormatter(JsonFormatter())
    logger = logging.getLogger("app.worker.agents.outbox")
    logger.addHandler(as_text)
    logger.addHandler(as_json)
    yield text, json_lines
    logger.removeHandler(as_text)
    logger.removeHandler(as_json)


def test_json_line_has_the_fields_and_the_extras() -> None:
    line = JsonFormatter().format(
        record("dead-lettered %s@%s", "cdp.identify", 7, topic="cdp.identify", offset=7)
    )
    assert "\n" not in line
    fields = orjson.loads(line)
    assert fields["level"] == "warning"
    assert fields["logger"] == "app.test"
    assert fields["message"] == "dead-lettered cdp.identify@7"
    assert fields["topic"] == "cdp.identify"
    assert fields["offset"] == 7
    assert fields["ts"].endswith("+00:00")
    assert set(fields) == {"ts", "level", "logger", "message", "topic", "offset"}


def test_json_line_carries_the_traceback_and_stringifies_odd_values() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = record("failed", where=object())
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line  # a multi-line traceback stays one JSON line
    fields = orjson.loads(line)
    assert fields["exception"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: boom" in fields["exception"]
    assert fields["where"].startswith("<object object")


def test_log_fields_leave_out_the_record_internals() -> None:
    fields = log_fields(record("plain"))
    assert set(fields) == {"ts", "level", "logger", "message"}


@pytest.mark.parametrize(
    ("name", "level"),
    [("crit", 50), ("error", 40), ("warn", 30), ("WARNING", 30), ("info", 20), (" debug ", 10)],
)
def test_level_names(name: str, level: int) -> None:
    assert level_of(name) == level


def test_unknown_level_says_which_are_known() -> None:
    with pytest.raises(ValueError, match=r"unknown log level 'loud'.*debug"):
        level_of("loud")


def test_text_format_keeps_fausts_own_logging() -> None:
    assert logging_config("text", "info") is None


def test_json_logging_config_makes_every_logger_write_json(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = logging_config("json", "warn")
    assert config is not None
    logging.config.dictConfig(config)
    logging.getLogger("faust.worker").info("hidden below the level")
    logging.getLogger("faust.worker").warning("[^Worker]: %s", "ready", extra={"partition": 3})
    [line] = capsys.readouterr().err.splitlines()
    assert orjson.loads(line) | {"ts": None} == {
        "ts": None,
        "level": "warning",
        "logger": "faust.worker",
        "message": "[^Worker]: ready",
        "partition": 3,
    }


def test_cli_logging_in_json(root_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_cli_logging("json", "info")
    logging.getLogger("app.cli").info("not shown: the CLI logs only what went wrong")
    logging.getLogger("app.cli").error("broker not reachable")
    [line] = capsys.readouterr().err.splitlines()
    assert orjson.loads(line)["message"] == "broker not reachable"


def malformed_record_error() -> InvalidEvent:
    """The error the intake gets for a record holding an email and a bad phone."""
    raw = orjson.dumps(
        {
            "type": "identify",
            "event_id": "web-1",
            "ts": "2026-11-02T10:00:00+00:00",
            "channel": "website",
            "customer_id": "C-1",
            "links": {"email": EMAIL, "phone": PHONE},
        }
    )
    with pytest.raises(InvalidEvent) as caught:
        accept_record(raw, "PL")
    return caught.value


def test_a_rejected_record_is_logged_by_place_and_kind_never_by_its_reason(
    captured: tuple[io.StringIO, io.StringIO],
) -> None:
    error = malformed_record_error()
    assert PHONE in error.reason  # the dead letter keeps the full reason: the log must not
    log_rejection("cdp.identify", 2, 41, error)
    text, json_lines = (stream.getvalue() for stream in captured)
    for output in (text, json_lines):
        assert PHONE not in output
        assert "600 100 200" not in output
        assert EMAIL not in output
    assert "cdp.identify[2]@41: invalid_link" in text
    fields = orjson.loads(json_lines)
    assert (fields["topic"], fields["partition"], fields["offset"]) == ("cdp.identify", 2, 41)
    assert fields["fault"] == "invalid_link"


def test_an_agent_failure_is_logged_without_the_errors_message(
    captured: tuple[io.StringIO, io.StringIO],
) -> None:
    try:
        {}[f"email:{EMAIL}"]  # a bug whose error quotes the record's link
    except KeyError as exc:
        log_failure("identity", "identity-ops", 0, 9, exc)
    text, json_lines = (stream.getvalue() for stream in captured)
    for output in (text, json_lines):
        assert EMAIL not in output
    assert "identity could not handle identity-ops[0]@9: KeyError" in text
    assert "test_logs.py" in text  # the frames are there to find the bug
    fields = orjson.loads(json_lines)
    assert (fields["stage"], fields["error"], fields["offset"]) == ("identity", "KeyError", 9)


@pytest.mark.parametrize(("field", "bad"), [("log_level", "loud"), ("log_format", "xml")])
def test_settings_refuse_an_unknown_log_level_or_format(field: str, bad: str) -> None:
    from app.worker.settings import Settings

    with pytest.raises(ValueError, match=f"CARDSTREAM_{field.upper()}"):
        Settings(**{field: bad})


# --------------------------------------------------------------------------- refused requests

SESSION = "v2.1800000000.secret-nonce.0123abcd"
ROUTES = ["/health", "/links/{name}/{value}", "/links/{name}/{value}/card", "/staff/static/{name}"]
LONG_PATH = f"/links/email/{EMAIL}/card?pad=" + "x" * 9000
REFUSED = {
    "long path": f"GET {LONG_PATH} HTTP/1.1\r\nHost: w\r\n\r\n".encode(),
    "long cookie": (
        f"GET /links/email/{EMAIL}/card HTTP/1.1\r\nHost: w\r\n"
        f"Cookie: cardstream_session={SESSION}{'y' * 9000}\r\n\r\n"
    ).encode(),
    "bad content length": (
        f"GET /links/email/{EMAIL}/card HTTP/1.1\r\nHost: w\r\nContent-Length: {EMAIL}\r\n\r\n"
    ).encode(),
    "bad method": f"G@T /links/email/{EMAIL}/card HTTP/1.1\r\nHost: w\r\n\r\n".encode(),
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"/links/email/{EMAIL}/card", "/links/{name}/{value}/card"),
        ("/links/email/x", "/links/{name}/{value}"),
        ("/links/email//card", None),
        ("/health", "/health"),
        ("/nowhere", None),
    ],
)
def test_route_template(path: str, expected: str | None) -> None:
    from app.worker.web.refusals import route_template

    assert route_template(path, ROUTES) == expected


def test_a_refusal_is_described_by_kind_limit_method_and_route_only() -> None:
    from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

    from app.worker.web.refusals import describe_refusal

    quoted = LONG_PATH.encode()[:100] + b"..."  # as aiohttp's parser quotes it
    assert describe_refusal(LineTooLong(quoted, 8190), ROUTES) == {
        "refused": "a request line or header field too long",
        "status": 400,
        "limit_bytes": 8190,
        "route": "/links/{name}/{value}/card",
    }
    with_method = describe_refusal(LineTooLong(b"GET " + quoted, 8190), ROUTES)
    assert (with_method["method"], with_method["route"]) == ("GET", "/links/{name}/{value}/card")
    cookie = describe_refusal(LineTooLong(f"cardstream_session={SESSION}".encode(), 8190), ROUTES)
    assert "route" not in cookie and "method" not in cookie
    cut_path = describe_refusal(LineTooLong(f"/links/email/{'a' * 120}".encode()[:100]), ROUTES)
    assert "route" not in cut_path  # the path may go on: no guess
    other = describe_refusal(BadHttpMessage(f"Invalid character in Content-Length: {EMAIL}"), [])
    assert other == {"refused": "a malformed request", "status": 400}


def serve_and_send(logger: object, requests: list[bytes]) -> list[bytes]:
    """Send each raw request to an aiohttp server with `logger`; its answers' first lines."""
    import asyncio

    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def run() -> list[bytes]:
        app = web.Application()
        for route in ROUTES:
            app.router.add_get(route, ok)
        answers = []
        server = TestServer(app)
        await server.start_server(logger=logger)
        try:
            for raw in requests:
                reader, writer = await asyncio.open_connection(server.host, server.port)
                writer.write(raw)
                await writer.drain()
                answers.append((await reader.read(200)).split(b"\r\n", 1)[0])
                writer.close()
            await asyncio.sleep(0.05)
        finally:
            await server.close()
        return answers

    return asyncio.run(run())


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_a_refused_request_is_logged_without_its_path_or_headers(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    from aiohttp.log import server_logger

    from app.worker.web.refusals import RefusedRequestLog

    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        # aiohttp's own logger: the control, showing what leaked
        assert serve_and_send(server_logger, [REFUSED[kind]]) == [b"HTTP/1.0 400 Bad Request"]
        leaked = caplog.text
        caplog.clear()
        safe = RefusedRequestLog(server_logger, lambda: ROUTES)
        assert serve_and_send(safe, [REFUSED[kind]]) == [b"HTTP/1.0 400 Bad Request"]
    assert EMAIL in leaked or SESSION in leaked
    [line] = caplog.records
    assert line.levelno <= logging.WARNING and line.exc_info is None
    for secret in (EMAIL, "zofia", SESSION, "secret-nonce", "127.0.0.1"):
        assert secret not in caplog.text, caplog.text
    assert line.getMessage().startswith("refused a request with ")
    if kind == "long path":
        assert line.getMessage() == (
            "refused a request with a request line or header field too long "
            "(over 8190 bytes) to /links/{name}/{value}/card: 400"
        )
