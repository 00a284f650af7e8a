"""The card page for staff, served by every worker: the page, its sign-in, its live stream.

* `GET /staff/` — the page (`app/worker/web/static/card.html`, `.css`, `.js`: plain files
  shipped in the package, no build step, nothing loaded from elsewhere). It searches
  with the lookup API (`/customers/…`, `/links/…`) and shows `/profiles/{id}/card`.
* `GET /staff/static/{file}` — the page's files.
* `GET|POST /staff/login` — the sign-in form when `CARDSTREAM_API_TOKEN` is set
  (`app.worker.web.auth`): a right token sets the session cookie and goes back to the page.
* `GET /profiles/{profile_id}/changes` — server-sent events: `hello` at once, then a
  `change` (`app.worker.live.CardChangeNotice` as JSON: ids and block names, no personal
  data) whenever the worker publishes that card. A worker that does not own the
  profile's partition relays the stream of the one that does. Streams end at a
  rebalance and at shutdown; the page reconnects and fetches the card again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib import resources
from typing import Any, cast
from urllib.parse import quote

import aiohttp
import faust
import orjson
from aiohttp import web
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from app.worker.channels import Tables
from app.worker.live import CardWatch, server_sent_event
from app.worker.web.auth import PAGE_HEADERS, ApiCredentials, login_page, safe_next, sign_in

log = logging.getLogger(__name__)

#: Seconds between keep-alive comments on an idle stream (proxies drop silent ones).
KEEPALIVE_SECONDS = 15.0
#: The page's files: name -> content type.
STATIC_FILES = {
    "card.html": "text/html",
    "card.css": "text/css",
    "card.js": "text/javascript",
    "login.html": "text/html",
}
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # nginx: pass events on at once
}


def static_file(name: str) -> bytes:
    """The bytes of one of the page's files; raises KeyError for any other name."""
    if name not in STATIC_FILES:
        raise KeyError(name)
    return resources.files("app.worker.web").joinpath("static", name).read_bytes()


def register(app: faust.App, tables: Tables, watch: CardWatch, credentials: ApiCredentials) -> None:
    """Register the staff page's routes on `app`'s web server."""
    files = {name: static_file(name) for name in STATIC_FILES}
    driver = cast(AiohttpWeb, app.web)

    async def end_streams(_: web.Application) -> None:
        watch.close_all()

    # aiohttp runs on_shutdown before it waits for open requests: end the streams there
    driver.web_app.on_shutdown.append(end_streams)

    async def end_streams_at_rebalance(*_: Any, **__: Any) -> None:
        watch.close_all()  # the profile may move to another worker: let pages reconnect

    app.on_partitions_revoked.connect(end_streams_at_rebalance)

    def serve(name: str) -> Response:
        response = web.Response(
            body=files[name], content_type=STATIC_FILES[name], headers=PAGE_HEADERS
        )
        if name.endswith(".html"):
            response.charset = "utf-8"
        response.headers["Cache-Control"] = "no-store"  # the page may show personal data
        return cast(Response, response)

    @app.page("/")
    async def root(web_view: View, request: Request) -> Response:
        """A browser opening the worker's address lands on the staff page."""
        return cast(Response, web.Response(status=302, headers={"Location": "/staff/"}))

    @app.page("/staff")
    async def staff_root(web_view: View, request: Request) -> Response:
        return cast(Response, web.Response(status=301, headers={"Location": "/staff/"}))

    @app.page("/staff/")
    async def staff_page(web_view: View, request: Request) -> Response:
        return serve("card.html")

    @app.page("/staff/static/{name}")
    async def staff_static(web_view: View, request: Request, name: str) -> Response:
        if name not in files or name.endswith(".html"):
            return web_view.json({"error": "not_found", "detail": "no such file"}, status=404)
        return serve(name)

    class StaffLogin(View):
        """The sign-in form (GET) and its answer (POST)."""

        async def get(self, request: Request) -> Response:
            if not credentials.required:
                return cast(Response, web.Response(status=303, headers={"Location": "/staff/"}))
            next_path = cast(web.Request, request).query.get("next", "/staff/")
            return self._page(next_path, failed=False, status=200)

        async def post(self, request: Request) -> Response:
            form = await cast(web.Request, request).post()
            token = form.get("token")
            next_path = safe_next(str(form.get("next", "")))
            if isinstance(token, str) and credentials.token_matches(token.strip()):
                response = web.Response(status=303, headers={"Location": next_path})
                sign_in(response, cast(web.Request, request), credentials, time.time())
                return cast(Response, response)
            return self._page(next_path, failed=True, status=401)

        def _page(self, next_path: str, failed: bool, status: int) -> Response:
            return cast(
                Response,
                web.Response(
                    status=status,
                    text=login_page(next_path, failed),
                    content_type="text/html",
                    headers=PAGE_HEADERS,
                ),
            )

    app.page("/staff/login")(StaffLogin)

    @app.page("/profiles/{profile_id}/changes")
    async def card_changes(web_view: View, request: Request, profile_id: str) -> Response:
        raw_request = cast(web.Request, request)
        try:
            owner = app.router.key_store(tables.profiles.name, profile_id)
        except KeyError:  # no assignment yet (starting, rebalancing): the page retries
            return web_view.json(
                {"error": "unavailable", "detail": "no worker owns this profile yet; retry"},
                status=503,
            )
        here = (app.conf.canonical_url.host, app.conf.canonical_url.port)
        stream = web.StreamResponse(headers=SSE_HEADERS)
        await stream.prepare(raw_request)
        try:
            await stream.write(b"retry: 1000\n\n")
            if (owner.host, owner.port) == here:
                await _serve_locally(watch, profile_id, stream)
            else:
                path = f"/profiles/{quote(profile_id, safe='')}/changes"
                await _relay(app, str(owner.with_path("")) + path, credentials, stream)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the page went away
        return cast(Response, stream)


async def _serve_locally(watch: CardWatch, profile_id: str, stream: web.StreamResponse) -> None:
    """Write `hello`, then every change of `profile_id`, until the watch ends."""
    queue = watch.watch(profile_id)
    try:
        await stream.write(server_sent_event("hello", orjson.dumps({"profile_id": profile_id})))
        while True:
            try:
                notice = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await stream.write(b": keep-alive\n\n")
                continue
            if notice is None:
                return
            await stream.write(server_sent_event("change", notice.to_json()))
    finally:
        watch.unwatch(profile_id, queue)


async def _relay(
    app: faust.App, url: str, credentials: ApiCredentials, stream: web.StreamResponse
) -> None:
    """Copy the owner's stream to ours until either side ends."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=KEEPALIVE_SECONDS * 3)
    async with app.http_client.get(url, headers=credentials.headers(), timeout=timeout) as owner:
        if owner.status != 200:
            log.warning("the owner's change stream answered %s; the page will retry", owner.status)
            return
        async for chunk in owner.content.iter_any():
            await stream.write(chunk)
