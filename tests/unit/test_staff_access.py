"""Who may use the web server (`app.worker.web.auth`) and the live fan-out (`app.worker.live`).

The middleware runs in a small aiohttp application here (aiohttp's own test
server, no worker): every route but the open ones refuses a request without the
token, basic credentials or the staff cookie.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.pipeline.changes import ProfileChangeRecord
from app.pipeline.steps import Out
from app.worker.live import CardChangeNotice, CardWatch, server_sent_event
from app.worker.settings import Settings
from app.worker.web.auth import (
    SESSION_COOKIE,
    ApiCredentials,
    auth_middleware,
    is_loopback,
    request_headers,
    safe_next,
    without_token,
)

TOKEN = "t0ken-for-tests"
BOTH = ApiCredentials(token=TOKEN, user="staff", password="pa:ss")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer   {TOKEN} ", True),
        ("Bearer t0ken-for-test", False),
        (f"Bearer {TOKEN}x", False),
        ("Bearer ", False),
        (basic("staff", "pa:ss"), True),  # the password may hold a colon
        (basic("staff", "pa:s"), False),
        (basic("Staff", "pa:ss"), False),
        ("Basic !!!not-base64", False),
        (TOKEN, False),
        ("", False),
    ],
)
def test_authorization_header(header: str, allowed: bool) -> None:
    assert BOTH.allows({"Authorization": header}, {}, NOW) is allowed


def test_no_credentials_configured_means_open_and_basic_needs_both_settings() -> None:
    assert ApiCredentials().allows({}, {}, NOW) is True
    token_only = ApiCredentials(token=TOKEN)
    assert token_only.allows({"Authorization": basic("staff", "pa:ss")}, {}, NOW) is False
    assert token_only.allows({}, {}, NOW) is False


NOW = 1_800_000_000.0  # a Unix time
HOURS_12 = 12 * 3600


def test_a_session_is_signed_with_the_token_and_bound_to_its_issue_time() -> None:
    session = BOTH.issue_session(NOW)
    assert session is not None and TOKEN not in session
    assert session.startswith(f"v2.{int(NOW)}.")
    assert BOTH.issue_session(NOW) != session  # a fresh nonce each time: no shared value
    assert BOTH.allows({}, {SESSION_COOKIE: session}, NOW) is True
    assert BOTH.allows({}, {SESSION_COOKIE: TOKEN}, NOW) is False
    other = ApiCredentials(token=TOKEN + "2").issue_session(NOW)
    assert BOTH.allows({}, {SESSION_COOKIE: other or ""}, NOW) is False  # a new token signs out
    assert ApiCredentials(user="u", password="p").issue_session(NOW) is None  # no token


@pytest.mark.parametrize(
    ("age", "valid"),
    [
        (0, True),
        (HOURS_12 - 1, True),
        (HOURS_12, False),  # 12 hours by default
        (30 * 86400, False),
        (-30, True),  # another worker's clock a little ahead
        (-3600, False),  # issued in the future
    ],
)
def test_a_session_expires(age: float, valid: bool) -> None:
    session = BOTH.issue_session(NOW)
    assert BOTH.session_valid(session, NOW + age) is valid


def test_a_session_cannot_be_extended_forged_or_replayed_from_the_old_format() -> None:
    import hashlib
    import hmac

    session = BOTH.issue_session(NOW)
    assert session is not None
    version, issued, nonce, mac = session.split(".")
    later = NOW + HOURS_12 + 60
    assert BOTH.session_valid(f"{version}.{int(later)}.{nonce}.{mac}", later) is False
    assert BOTH.session_valid(f"{version}.{issued}.other-nonce.{mac}", NOW) is False
    flipped = mac[:-1] + ("1" if mac.endswith("0") else "0")
    assert BOTH.session_valid(f"{version}.{issued}.{nonce}.{flipped}", NOW) is False
    # the old cookie: one HMAC of the token, the same for everyone, valid forever
    old = hmac.new(TOKEN.encode(), b"cardstream staff session v1", hashlib.sha256).hexdigest()
    for bad in (old, "", "v2", "v2...", f"v2.{issued}.{nonce}", "v2.x.y.z", f"v2.{'9' * 5000}.n.m"):
        assert BOTH.session_valid(bad, NOW) is False, bad


def test_the_session_lifetime_is_a_setting() -> None:
    assert ApiCredentials.from_settings(Settings(api_token=TOKEN)).session_seconds == HOURS_12
    short = ApiCredentials.from_settings(Settings(api_token=TOKEN, staff_session_hours=0.5))
    session = short.issue_session(NOW)
    assert short.session_valid(session, NOW + 1799) and not short.session_valid(session, NOW + 1800)
    with pytest.raises(ValueError, match="staff_session_hours"):
        Settings(staff_session_hours=0)


def test_request_headers_prefer_the_token() -> None:
    assert request_headers(TOKEN, "u", "p") == {"Authorization": f"Bearer {TOKEN}"}
    assert request_headers(None, "u", "p") == {"Authorization": basic("u", "p")}
    assert request_headers(None) == {}
    assert BOTH.allows(BOTH.headers(), {}, NOW) is True


def test_settings_blank_is_unset_and_user_needs_a_password() -> None:
    settings = Settings(api_token="  ", api_user="", api_password="")
    assert ApiCredentials.from_settings(settings).required is False
    with pytest.raises(ValueError, match="both"):
        Settings(api_user="staff")
    secret = Settings(api_token=TOKEN)
    assert TOKEN not in repr(secret)  # never printed by accident


PASSWORD = "SuperSecretPw123"


def test_a_bad_setting_is_named_in_one_line_without_any_secret() -> None:
    with pytest.raises(ValueError) as lonely_password:
        Settings(api_password=PASSWORD, api_token=TOKEN)
    with pytest.raises(ValueError) as bad_port:
        Settings(api_password=PASSWORD, api_user="staff", api_token=TOKEN, web_port="many")
    for caught, named in (
        (lonely_password, "CARDSTREAM_API_USER"),
        (bad_port, "CARDSTREAM_WEB_PORT"),
    ):
        message = str(caught.value)
        assert named in message and "\n" not in message, message
        assert PASSWORD not in message and TOKEN not in message, message
        assert PASSWORD not in repr(caught.value) and TOKEN not in repr(caught.value)
    assert "valid integer" in str(bad_port.value)  # what is wrong, without the value


def test_the_cli_reports_a_bad_setting_without_the_password() -> None:
    from click.testing import CliRunner

    from app.cli.commands import main

    env = {"CARDSTREAM_API_PASSWORD": PASSWORD, "CARDSTREAM_API_USER": None}
    result = CliRunner().invoke(main, ["topics", "list"], env=env)
    assert result.exit_code == 1
    assert PASSWORD not in result.output
    [line] = result.output.strip().splitlines()
    assert "CARDSTREAM_API_USER" in line and "CARDSTREAM_API_PASSWORD" in line


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/staff/?profile=C-1", "/staff/?profile=C-1"),
        ("https://evil.example/staff/", "/staff/"),
        ("//evil.example/staff/", "/staff/"),
        ("/staff\\..\\x", "/staff/"),
        ("/customers/C-1", "/staff/"),
        (None, "/staff/"),
    ],
)
def test_safe_next_stays_on_the_staff_page(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_without_token_keeps_the_rest_of_the_query() -> None:
    assert without_token("/staff/", {"profile": "C-1", "token": "x"}) == "/staff/?profile=C-1"
    assert without_token("/staff/", {"token": "x"}) == "/staff/"


# --------------------------------------------------------------------------- middleware


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def with_client(
    credentials: ApiCredentials,
    check: Callable[[TestClient], Awaitable[None]],
    clock: Callable[[], float] | None = None,
) -> None:
    async def run() -> None:
        middleware = auth_middleware(credentials, clock) if clock else auth_middleware(credentials)
        app = web.Application(middlewares=[middleware])
        for path in ("/health", "/customers/C-1", "/staff/", "/staff/static/card.css"):
            app.router.add_get(path, ok)
        async with TestClient(TestServer(app)) as client:
            await check(client)

    asyncio.run(run())


def test_middleware_refuses_without_credentials_and_leaves_health_open() -> None:
    async def check(client: TestClient) -> None:
        assert (await client.get("/health")).status == 200
        assert (await client.get("/staff/static/card.css")).status == 200
        refused = await client.get("/customers/C-1")
        assert refused.status == 401
        assert "Bearer" in refused.headers["WWW-Authenticate"]
        assert "Basic" in refused.headers["WWW-Authenticate"]
        assert (await refused.json())["error"] == "unauthorized"
        page = await client.get("/staff/", headers={"Accept": "text/html"})
        assert page.status == 401 and 'name="token"' in await page.text()  # the sign-in form
        # the same protection as /staff/login: no framing, nothing loaded from elsewhere
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        allowed = await client.get("/customers/C-1", headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status == 200
        assert allowed.headers["Cache-Control"] == "no-store"
        assert (await client.get("/customers/C-1?token=" + TOKEN)).status == 401  # API: header

    with_client(BOTH, check)


def test_a_page_opened_with_the_token_gets_the_cookie_and_loses_the_token() -> None:
    now = [NOW]

    async def check(client: TestClient) -> None:
        wrong = await client.get("/staff/?profile=C-1&token=nope", allow_redirects=False)
        assert wrong.status == 401
        first = await client.get("/staff/?profile=C-1&token=" + TOKEN, allow_redirects=False)
        assert first.status == 303
        assert first.headers["Location"] == "/staff/?profile=C-1"
        cookie = first.cookies[SESSION_COOKIE]
        assert BOTH.session_valid(cookie.value, NOW) and cookie.value.startswith(f"v2.{int(NOW)}.")
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["max-age"] == str(HOURS_12)  # the browser drops it when it expires
        # the client keeps the cookie: the API answers it from now on ...
        assert (await client.get("/customers/C-1")).status == 200
        now[0] = NOW + HOURS_12 - 1
        assert (await client.get("/customers/C-1")).status == 200
        # ... for 12 hours (the client would still send it; the worker refuses it)
        now[0] = NOW + HOURS_12
        assert (await client.get("/customers/C-1")).status == 401

    with_client(BOTH, check, clock=lambda: now[0])


def test_an_open_server_answers_everyone() -> None:
    async def check(client: TestClient) -> None:
        assert (await client.get("/customers/C-1")).status == 200

    with_client(ApiCredentials(), check)


# --------------------------------------------------------------------------- live fan-out


def change(profile_id: str, version: int, forwarded_to: str | None = None) -> Out:
    record = ProfileChangeRecord(
        kind="card_changed",
        profile_id=profile_id,
        customer_id=None if profile_id.startswith("~") else profile_id,
        version=version,
        changed=["receipts"],
        forwarded_to=forwarded_to,
        at=datetime(2026, 11, 2, tzinfo=UTC),
        card={"email": "ann@example.com"},
    )
    return Out("profile_changes", profile_id, record)


def drain(queue: asyncio.Queue[Any]) -> list[Any]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_watchers_hear_their_profile_only_and_never_its_personal_data() -> None:
    async def run() -> None:
        watch = CardWatch()
        c1, c1_again, c2 = watch.watch("C-1"), watch.watch("C-1"), watch.watch("C-2")
        watch.published([change("C-1", 3), change("C-3", 1), Out("profile_ops", "C-1", b"x")])
        expected = CardChangeNotice("C-1", 3, "card_changed", ("receipts",))
        assert drain(c1) == [expected] and drain(c1_again) == [expected] and drain(c2) == []
        assert b"example.com" not in expected.to_json()
        watch.unwatch("C-1", c1)
        watch.unwatch("C-1", c1)  # idempotent
        assert watch.watchers == 2

    asyncio.run(run())


def test_a_slow_page_keeps_the_newest_notices_and_close_all_ends_every_stream() -> None:
    async def run() -> None:
        watch = CardWatch(queue_size=2)
        slow = watch.watch("~device:d-1")
        for version in range(1, 6):
            watch.published([change("~device:d-1", version)])
        watch.published([change("~device:d-1", 6, forwarded_to="C-9")])
        assert [n.version for n in drain(slow)] == [5, 6]  # never blocks the agent
        watch.published([change("~device:d-1", 7)])
        watch.close_all()
        assert drain(slow) == [None]

    asyncio.run(run())


def test_server_sent_event_format() -> None:
    assert server_sent_event("change", b'{"a":1}') == b'event: change\ndata: {"a":1}\n\n'


# --------------------------------------------------------------------------- exposure


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),  # every address
        ("10.1.2.3", False),
        ("worker-1.internal", False),  # a name could be anything
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_open_server_on_the_network_is_refused_unless_allowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from app.worker.main import StartRefused, check_web_exposure

    with pytest.raises(StartRefused) as refused:
        check_web_exposure(Settings(web_host="0.0.0.0"))
    message = refused.value.format_message()
    assert "\n" not in message
    for hint in ("CARDSTREAM_WEB_HOST=0.0.0.0", "CARDSTREAM_API_TOKEN", "CARDSTREAM_ALLOW_OPEN"):
        assert hint in message
    assert refused.value.exit_code != 0
    # fine: loopback, or credentials of either kind; no warning
    with caplog.at_level(logging.WARNING):
        check_web_exposure(Settings(web_host="127.0.0.1"))
        check_web_exposure(Settings(web_host="0.0.0.0", api_token=TOKEN))
        check_web_exposure(Settings(web_host="0.0.0.0", api_user="u", api_password="p"))
        check_web_exposure(Settings(web_host="127.0.0.1", allow_open=True))
    assert caplog.records == []
    # allowed, with a warning
    with caplog.at_level(logging.WARNING):
        check_web_exposure(Settings(web_host="0.0.0.0", allow_open=True))
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert "without credentials" in warning.getMessage()
