"""Who may use a worker's web server: the API token, basic-auth credentials, the staff cookie.

When `CARDSTREAM_API_TOKEN` and/or `CARDSTREAM_API_USER` + `CARDSTREAM_API_PASSWORD`
are set, every route except `/health`, `/` (a redirect to the staff page), the sign-in
page and the page's static files
refuses a request (401) that does not carry one of:

* `Authorization: Bearer TOKEN`;
* `Authorization: Basic base64(user:password)` (browsers send it after their prompt);
* the staff session cookie, set by the sign-in form or by opening a page once with
  `?token=TOKEN` (the worker then redirects to the same address without the token).
  The cookie is `v2.<issued>.<nonce>.<hmac>`: its issue time (Unix seconds), a random
  nonce and an HMAC of both keyed with the token, never the token itself. Every worker
  sharing the token accepts it for `CARDSTREAM_STAFF_SESSION_HOURS` (12) after it was
  issued, the browser drops it then (`Max-Age`), and changing the token signs everyone out.

Secrets are compared in constant time (`hmac.compare_digest`). The checks are plain
functions of the credentials and the request's headers; `auth_middleware` applies
them to every request of the aiohttp application Faust serves, and also marks
responses `Cache-Control: no-store` (cards hold personal data).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from app.worker.settings import Settings

#: Name of the staff session cookie.
SESSION_COOKIE = "cardstream_session"
#: Paths anyone may open: the health check, the sign-in page, the page's static files,
#: and `/`, which only sends a browser on to the staff page.
OPEN_PATHS = frozenset({"/", "/health", "/staff/login"})
OPEN_PREFIXES = ("/staff/static/",)
#: Where the sign-in form may send the browser back to.
STAFF_PREFIX = "/staff"

#: The session cookie's format version, and what its HMAC signs besides issue time and nonce.
_SESSION_VERSION = "v2"
_SESSION_CONTEXT = b"cardstream staff session v2"
#: How far ahead of this worker's clock a session's issue time may be (another worker's clock).
CLOCK_SKEW_SECONDS = 60.0
#: The default lifetime of a staff session, seconds (`CARDSTREAM_STAFF_SESSION_HOURS`).
DEFAULT_SESSION_SECONDS = 12 * 3600.0

#: The staff page and its sign-in may load and reach nothing but this worker, nor be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: Headers of every HTML page the worker serves (the card page, the sign-in page, its 401).
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """The credentials a worker accepts; none configured means the server is open."""

    token: str | None = None
    user: str | None = None
    password: str | None = None
    #: How long a staff session cookie is accepted after it was issued.
    session_seconds: float = DEFAULT_SESSION_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiCredentials:
        return cls(
            token=settings.api_token.get_secret_value() if settings.api_token else None,
            user=settings.api_user,
            password=settings.api_password.get_secret_value() if settings.api_password else None,
            session_seconds=settings.staff_session_hours * 3600,
        )

    @property
    def required(self) -> bool:
        """True when requests must carry credentials."""
        return self.token is not None or self.user is not None

    @property
    def basic(self) -> bool:
        return self.user is not None and self.password is not None

    def issue_session(self, now: float) -> str | None:
        """A new staff cookie value issued at `now` (Unix seconds): `v2.<issued>.<nonce>.<hmac>`
        with a random nonce, signed with the token; None without a token."""
        if self.token is None:
            return None
        issued, nonce = str(int(now)), secrets.token_urlsafe(16)
        return f"{_SESSION_VERSION}.{issued}.{nonce}.{self._session_mac(self.token, issued, nonce)}"

    @staticmethod
    def _session_mac(token: str, issued: str, nonce: str) -> str:
        message = b"|".join((_SESSION_CONTEXT, issued.encode(), nonce.encode()))
        return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()

    def session_valid(self, value: str | None, now: float) -> bool:
        """True when `value` is a staff cookie this token signed (constant-time check) that
        was issued less than `session_seconds` before `now`, and not in the future."""
        if self.token is None or not value:
            return False
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != _SESSION_VERSION:
            return False
        _, issued, nonce, mac = parts
        if not (issued.isascii() and issued.isdigit() and len(issued) <= 12 and nonce):
            return False
        expected = self._session_mac(self.token, issued, nonce)
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return False
        age = now - int(issued)
        return -CLOCK_SKEW_SECONDS <= age < self.session_seconds

    def token_matches(self, candidate: str | None) -> bool:
        """True when `candidate` is the token (constant time)."""
        if self.token is None or candidate is None:
            return False
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def authorization_matches(self, header: str | None) -> bool:
        """True when an `Authorization` header carries the token or the basic credentials."""
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return self.token_matches(value.strip())
        if scheme == "basic" and self.basic:
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, sep, password = decoded.partition(":")
            assert self.user is not None and self.password is not None
            same_user = hmac.compare_digest(user.encode(), self.user.encode())
            same_password = hmac.compare_digest(password.encode(), self.password.encode())
            return bool(sep) and same_user and same_password
        return False

    def allows(self, headers: Mapping[str, str], cookies: Mapping[str, str], now: float) -> bool:
        """True when the request may go on at `now`: open server, or valid credentials."""
        if not self.required:
            return True
        return self.authorization_matches(headers.get("Authorization")) or self.session_valid(
            cookies.get(SESSION_COOKIE), now
        )

    def headers(self) -> dict[str, str]:
        """Headers that authorise a request of this worker to another one (or a client's)."""
        return request_headers(self.token, self.user, self.password)


def request_headers(
    token: str | None, user: str | None = None, password: str | None = None
) -> dict[str, str]:
    """The `Authorization` header for a token (preferred) or basic credentials; {} for none."""
    if token:
        return {"Authorization": f"Bearer {token}"}
    if user is not None and password is not None:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}


def is_loopback(host: str) -> bool:
    """True when a server bound to `host` is reachable from this machine only: a loopback
    address or `localhost`. Any other name counts as reachable (it could be anything)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def is_open_path(path: str) -> bool:
    """True for the paths that need no credentials."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a staff page path of this server, else the page's root."""
    unsafe = ("//", "\\", "\n", "\r")
    if target and target.startswith(STAFF_PREFIX) and not any(c in target for c in unsafe):
        return target
    return STAFF_PREFIX + "/"


def without_token(path: str, query: Mapping[str, str]) -> str:
    """`path` with its query string minus the `token` parameter."""
    rest = [(k, v) for k, v in query.items() if k != "token"]
    return path + ("?" + urlencode(rest) if rest else "")


# --------------------------------------------------------------------------- aiohttp


def login_page(next_path: str, failed: bool) -> str:
    """The sign-in page (a form that POSTs the token to /staff/login), self-contained."""
    template = resources.files("app.worker.web").joinpath("static/login.html").read_text("utf-8")
    message = "That token is not right." if failed else ""
    return template.replace("{{next}}", html.escape(safe_next(next_path), quote=True)).replace(
        "{{message}}", message
    )


def session_cookie(response: web.StreamResponse, value: str, secure: bool, max_age: float) -> None:
    """Set the staff cookie: HttpOnly, SameSite=Strict, kept `max_age` seconds at most."""
    response.set_cookie(
        SESSION_COOKIE,
        value,
        path="/",
        max_age=int(max_age),
        httponly=True,
        samesite="Strict",
        secure=secure,
    )


def sign_in(
    response: web.StreamResponse, request: web.Request, credentials: ApiCredentials, now: float
) -> None:
    """Give `response` a new staff session cookie issued at `now` (the token is set)."""
    session = credentials.issue_session(now)
    assert session is not None, "a session needs a token"
    session_cookie(response, session, request_is_https(request), credentials.session_seconds)


def request_is_https(request: web.Request) -> bool:
    """True when the browser reached us over TLS (directly or through a reverse proxy)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def refuse(request: web.Request, credentials: ApiCredentials) -> web.Response:
    """The 401 of a request without valid credentials: the sign-in page for the staff page."""
    challenges = []
    if credentials.token is not None:
        challenges.append('Bearer realm="cardstream"')
    if credentials.basic:
        challenges.append('Basic realm="cardstream", charset="UTF-8"')
    headers = {"WWW-Authenticate": ", ".join(challenges)}
    wants_page = request.method == "GET" and request.path.startswith(STAFF_PREFIX)
    if wants_page and "text/html" in request.headers.get("Accept", ""):
        if credentials.token is not None:
            body = login_page(request.path_qs, failed=False)
        else:
            body = "<!doctype html><title>cardstream</title><p>Sign in with your user name."
        return web.Response(
            status=401, text=body, content_type="text/html", headers={**PAGE_HEADERS, **headers}
        )
    return web.json_response(
        {
            "error": "unauthorized",
            "detail": "this worker needs credentials: Authorization: Bearer TOKEN"
            + (" or basic auth" if credentials.basic else ""),
        },
        status=401,
        headers=headers,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def auth_middleware(credentials: ApiCredentials, clock: Callable[[], float] = time.time) -> Any:
    """An aiohttp middleware that applies `credentials` to every request (see the module);
    `clock` gives the time sessions are issued and checked at (Unix seconds)."""

    @web.middleware
    async def check_credentials(request: web.Request, handler: Handler) -> web.StreamResponse:
        now = clock()
        if (
            credentials.required
            and not is_open_path(request.path)
            and not credentials.allows(request.headers, request.cookies, now)
        ):
            token = request.query.get("token")
            page = request.method == "GET" and request.path.startswith(STAFF_PREFIX)
            if page and credentials.token_matches(token):
                # a page opened with ?token=: keep it in a cookie, drop it from the address
                target = without_token(request.path, request.query)
                redirect = web.Response(status=303, headers={"Location": target})
                sign_in(redirect, request, credentials, now)
                return redirect
            return refuse(request, credentials)
        response = await handler(request)
        if not response.prepared and not request.path.startswith(OPEN_PREFIXES):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return check_credentials
