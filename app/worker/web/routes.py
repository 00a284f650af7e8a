"""HTTP routes served by every worker: health, stats and the identity lookups.

A lookup is answered by the worker that holds the key's table partition; any
other worker forwards the request there (Faust's router), so every worker's
port answers every lookup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from prometheus_client.exposition import choose_encoder
from yarl import URL

from app import __version__
from app.domain.card import filter_activity, receipts_page
from app.domain.facts import fact_header, scan_facts
from app.domain.identity import anonymous_profile_id
from app.domain.links import InvalidLink, link_key, normalize_link
from app.pipeline.steps import card_of
from app.worker.agents.factstore import TableFactStore
from app.worker.agents.stats import WorkerStats
from app.worker.channels import Tables, TypedTable
from app.worker.metrics import metrics_registry
from app.worker.settings import Settings
from app.worker.web.auth import ApiCredentials


def not_found(web: View, what: str) -> Response:
    return web.json({"error": "not_found", "detail": what}, status=404)


def bad_request(web: View, what: str) -> Response:
    return web.json({"error": "bad_request", "detail": what}, status=400)


def unavailable(web: View) -> Response:
    """The answer while no worker owns a key yet (starting, rebalancing): retry."""
    detail = "no worker holds this key yet (starting or rebalancing); retry"
    return web.json({"error": "unavailable", "detail": detail}, status=503)


def query_int(request: Request, name: str, default: int, high: int = 10_000) -> int | None:
    """A whole-number query parameter in 1..high (`default` when absent); None if not."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 1 <= value <= high else None


class Owners:
    """Which worker holds a table's key, and asking it: a lookup's answer comes from there."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.headers = ApiCredentials.from_settings(settings).headers()  # the owner may need them

    def owner(self, table_name: str, key: str) -> URL | None:
        """The web address of the worker holding `key` of the table; None when it is this one.
        Raises KeyError while nobody holds it (no assignment yet)."""
        url = self.app.router.key_store(table_name, key)
        here = self.app.conf.canonical_url
        return None if (url.host, url.port) == (here.host, here.port) else url

    async def elsewhere(
        self, table: TypedTable[Any], key: str, web: View, request: Request
    ) -> Response | None:
        """The owner's answer when another worker holds `key`; None when it is this one."""
        try:
            response: Response = await self.app.router.route_req(table.name, key, web.web, request)
            return response
        except SameNode:
            return None

    async def get_json(self, owner: URL, path_qs: str) -> tuple[int, Any]:
        """(status, JSON body) of `GET path_qs` on the worker at `owner`."""
        url = str(owner.with_path("")) + path_qs
        async with self.app.http_client.get(url, headers=self.headers) as response:
            return response.status, await response.json()


def register(app: faust.App, settings: Settings, tables: Tables, stats: WorkerStats) -> None:
    """Register the routes on `app`'s web server."""

    def assigned() -> list[str]:
        return sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment())

    owners = Owners(app, settings)
    elsewhere = owners.elsewhere

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        partitions = assigned()
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "app_id": settings.app_id,
            "state_version": settings.state_version,
            "publishing": settings.publish_outputs,
            "ready": bool(partitions) and not app.rebalancing,
            "assigned": partitions,
        }
        return web.json(body)

    @app.page("/stats")
    async def stats_page(web: View, request: Request) -> Response:
        return web.json(stats.as_dict())

    registry = metrics_registry(app, stats)

    @app.page("/metrics")
    async def metrics_page(web: View, request: Request) -> Response:
        """Prometheus exposition (OpenMetrics when the scraper asks for it)."""
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.bytes(encode(registry), headers={"Content-Type": content_type})

    def link_of(name: str, value: str) -> str:
        """The link key of a URL's name and value; raises InvalidLink."""
        return link_key(name, normalize_link(name, value, settings.default_phone_region))

    def invalid(web: View, exc: InvalidLink) -> Response:
        return web.json({"error": "invalid_link", "detail": str(exc)}, status=400)

    def owner_record(name: str, key: str) -> dict[str, Any] | None:
        """This worker's answer for a link it holds: its profile, or None when unknown."""
        state = tables.links.get(key)
        if state is None:
            return None
        owner = state.current_owner
        return {
            "link": {"name": name, "value": key.split(":", 1)[1]},
            "profile_id": owner or anonymous_profile_id(key),
            "customer_id": owner,
            "anonymous": owner is None,
        }

    def local_card(profile_id: str) -> dict[str, Any] | None:
        state = tables.profiles.get(profile_id)
        identity = tables.profile_identity.get(profile_id)
        if state is None and identity is None:
            return None
        return card_of(
            state,
            identity,
            profile_id,
            settings.card_settings(),
            settings.now(),
        )

    async def link_answer(
        web: View, request: Request, name: str, value: str
    ) -> Response | dict[str, Any]:
        """The link's owner record if this worker holds it, else the response to return."""
        try:
            key = link_of(name, value)
        except InvalidLink as exc:
            return invalid(web, exc)
        if (forwarded := await elsewhere(tables.links, key, web, request)) is not None:
            return forwarded
        record = owner_record(name, key)
        if record is None:
            return not_found(web, f"no profile has link {key}")
        return record

    @app.page("/links/{name}/{value}")
    async def link_owner(web: View, request: Request, name: str, value: str) -> Response:
        answer = await link_answer(web, request, name, value)
        return web.json(answer) if isinstance(answer, dict) else answer

    @app.page("/links/{name}/{value}/card")
    async def link_card(web: View, request: Request, name: str, value: str) -> Response:
        answer = await link_answer(web, request, name, value)
        if not isinstance(answer, dict):
            return answer
        # the card lives with the profile, maybe on another worker: ask for it there
        return card_response(web, request, await card_anywhere(answer["profile_id"]))

    async def card_anywhere(profile_id: str) -> dict[str, Any]:
        """The card of `profile_id` from whichever worker holds it (empty card if none)."""
        url = owners.owner(tables.profiles.name, profile_id)
        if url is not None:
            _, body = await owners.get_json(url, f"/profiles/{quote(profile_id, safe='')}/card")
            return cast(dict[str, Any], body)
        card = local_card(profile_id)
        return (
            card
            if card is not None
            else card_of(None, None, profile_id, settings.card_settings(), settings.now())
        )

    def card_response(web: View, request: Request, card: dict[str, Any]) -> Response:
        """The card, its activity narrowed to `?activity=order,mailing,...` when asked."""
        if wanted := request.query.get("activity"):
            categories = [c.strip() for c in wanted.split(",") if c.strip()]
            card = {**card, "activity": filter_activity(card.get("activity", []), categories)}
        return web.json(card)

    @app.page("/customers/{customer_id}")
    async def customer_card(web: View, request: Request, customer_id: str) -> Response:
        if (forwarded := await elsewhere(tables.profiles, customer_id, web, request)) is not None:
            return forwarded
        card = local_card(customer_id)
        if card is None:
            return not_found(web, f"no customer {customer_id}")
        return card_response(web, request, card)

    @app.page("/profiles/{profile_id}/card")
    async def profile_card(web: View, request: Request, profile_id: str) -> Response:
        """The card of any profile, anonymous ones too (empty when it holds nothing)."""
        if (forwarded := await elsewhere(tables.profiles, profile_id, web, request)) is not None:
            return forwarded
        return card_response(web, request, await card_anywhere(profile_id))

    @app.page("/customers/{customer_id}/links")
    async def customer_links(web: View, request: Request, customer_id: str) -> Response:
        table = tables.profile_identity
        if (forwarded := await elsewhere(table, customer_id, web, request)) is not None:
            return forwarded
        identity = table.get(customer_id)
        if identity is None:
            return not_found(web, f"customer {customer_id} has no links")
        return web.json(
            {
                "customer_id": customer_id,
                "links": identity.links_by_name(),
                "merged_from": list(identity.merged_from),
                "history": list(identity.history),
            }
        )

    facts_store = TableFactStore(tables.profile_facts)

    @app.page("/profiles/{profile_id}/facts")
    async def profile_facts(web: View, request: Request, profile_id: str) -> Response:
        """The events a profile holds (`?limit=`, default 1000), oldest first, with the link
        each came through; `more` says that there are more than the limit."""
        if (forwarded := await elsewhere(tables.profiles, profile_id, web, request)) is not None:
            return forwarded
        state = tables.profiles.get(profile_id)
        if state is None:
            return not_found(web, f"profile {profile_id} holds no events")
        limit = query_int(request, "limit", 1000)
        if limit is None:
            return bad_request(web, "limit must be a whole number from 1 to 10000")
        rows = []
        for value in scan_facts(facts_store, profile_id):
            via, ts, row = fact_header(value)
            rows.append((ts, row[4]["event_id"], row[4]["type"], via))
        rows.sort()
        facts = [
            {"event_id": event_id, "type": kind, "ts": ts, "via": via}
            for ts, event_id, kind, via in rows[:limit]
        ]
        return web.json(
            {
                "profile_id": profile_id,
                "version": state.version,
                "facts": facts,
                "more": len(rows) > limit,
            }
        )

    @app.page("/customers/{customer_id}/receipts")
    async def customer_receipts(web: View, request: Request, customer_id: str) -> Response:
        """A page of the customer's receipts, newest first: `?before=` (the `next` of the
        previous page, or an ISO time) and `?limit=` (default 50, at most 500)."""
        if (forwarded := await elsewhere(tables.profiles, customer_id, web, request)) is not None:
            return forwarded
        if customer_id not in tables.profiles:
            return not_found(web, f"no customer {customer_id}")
        limit = query_int(request, "limit", 50, high=500)
        if limit is None:
            return bad_request(web, "limit must be a whole number from 1 to 500")
        before = request.query.get("before") or None
        if before is not None and "|" not in before:
            try:
                before = datetime.fromisoformat(before).astimezone(UTC).isoformat()
            except ValueError:
                return bad_request(
                    web, "before must be the `next` of a page or an ISO 8601 time with an offset"
                )
        receipts, next_before = receipts_page(facts_store, customer_id, before, limit)
        return web.json({"customer_id": customer_id, "receipts": receipts, "next": next_before})
