"""Routes of the staff search by person and of duplicate suggestions (issue 15).

* `GET /search?name=&city=&birth_date=&postcode=&limit=`: ranked candidates with the
  evidence of each field. At least two fields (else 400, `search_keys`' message). The
  blocks of the query's blocking keys are read where they live: those this worker holds
  from its table `person_blocks`, the others from the owners of their index buckets
  (`app.pipeline.steps.index_bucket`), one request per owner (`GET /people/blocks?key=…`).
  The people sharing most keys with the query (at most `search_candidates`) are
  scored, the best `limit` (default `search_results`) answered.
* `GET /people/blocks?key=…&key=…`: the blocks this worker holds of those keys (an
  internal route: what a search on another worker asks for).
* `GET /profiles/{id}/duplicates`, `GET /customers/{id}/duplicates`: the profile's
  suggestions, from the worker holding its `duplicates` entry.
* `POST /profiles/{id}/duplicates/{other}` with JSON `{"decision": "same_person" |
  "not_same"}`: a staff decision on one of the profile's suggestions, sent to both
  profiles' duplicates agents (`decision_outs`); 202 once the producer has it.

Every route is behind the same access check as the rest (`app.worker.web.auth`); the
decision needs `Content-Type: application/json`, which a cross-site form cannot send.
Nothing here logs: a query string holds names and birth dates, and the web server
writes no access log (Faust builds its runner with `access_log=None`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import quote, urlencode

import aiohttp
import faust
import orjson
from aiohttp import web
from faust.web import Request, Response, View
from yarl import URL

from app.domain.people import Match, PersonQuery, query_person, rank_candidates, search_keys
from app.domain.people.index import IndexBlock, candidates_of
from app.pipeline.people import PeopleSettings, decision_outs
from app.pipeline.steps import index_bucket
from app.worker.agents.outbox import send_outs
from app.worker.agents.stats import WorkerStats
from app.worker.channels import Channels, Tables, TypedTable
from app.worker.settings import Settings
from app.worker.web.routes import Owners, bad_request, not_found, query_int, unavailable

#: Most keys one `/people/blocks` request may ask for (a search looks up about 30).
MAX_BLOCK_KEYS = 200
#: Most candidates one search may answer.
MAX_SEARCH_RESULTS = 100
#: The query parameters of a search, as `PersonQuery` names them.
SEARCH_FIELDS = ("name", "city", "birth_date", "postcode")


class OwnerUnavailable(Exception):
    """A worker holding part of the index did not answer (or nobody holds it yet)."""


def match_json(match: Match) -> dict[str, Any]:
    """A match as the API shows it: probability, weight and each field's evidence."""
    return {
        "probability": round(match.probability, 4),
        "weight": round(match.weight, 2),
        "evidence": [
            {"field": e.field, "level": e.level, "weight": round(e.weight, 2), "swapped": e.swapped}
            for e in match.evidence
        ],
    }


async def decision_in(web_view: View, request: web.Request) -> str | Response:
    """The decision a POST carries (`{"decision": "..."}`, as JSON), or the refusal to answer."""
    if request.content_type != "application/json":
        detail = "send the decision as application/json"
        return web_view.json({"error": "unsupported_media_type", "detail": detail}, status=415)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return bad_request(web_view, "the body is not JSON")
    decision = body.get("decision") if isinstance(body, dict) else None
    if not isinstance(decision, str):
        return bad_request(web_view, 'send {"decision": "same_person" | "not_same"}')
    return decision


def register(
    app: faust.App,
    settings: Settings,
    tables: Tables,
    channels: Channels,
    stats: WorkerStats,
    people: PeopleSettings,
) -> None:
    """Register the search and duplicate routes on `app`'s web server (`people`: the people
    index's settings, with its buckets: a blocking key's block lives with its bucket)."""
    owners = Owners(app, settings)
    blocks_table = tables.person_blocks
    model = people.model

    def owner_of(table: TypedTable[Any], key: str) -> URL | None:
        """The worker holding `key` (None: this one); raises OwnerUnavailable if nobody."""
        try:
            return owners.owner(table.name, key)
        except KeyError:
            raise OwnerUnavailable from None

    async def ask(owner: URL, path_qs: str) -> dict[str, Any]:
        """The JSON object another worker answers; raises OwnerUnavailable if it does not."""
        try:
            status, body = await owners.get_json(owner, path_qs)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise OwnerUnavailable from None
        if status != 200 or not isinstance(body, dict):
            raise OwnerUnavailable
        return body

    async def blocks_of(keys: Sequence[str]) -> list[IndexBlock | None]:
        """The blocks of `keys`, read here or asked of the workers holding them."""
        by_owner: dict[URL, list[str]] = defaultdict(list)
        found: list[IndexBlock | None] = []
        for key in keys:
            owner = owner_of(blocks_table, index_bucket(key, people.buckets))
            if owner is None:
                found.append(blocks_table.get(key))
            else:
                by_owner[owner].append(key)
        answers = await asyncio.gather(*(remote_blocks(o, ks) for o, ks in by_owner.items()))
        for answer in answers:
            found.extend(answer)
        return found

    async def remote_blocks(owner: URL, keys: list[str]) -> list[IndexBlock | None]:
        body = await ask(owner, "/people/blocks?" + urlencode([("key", key) for key in keys]))
        raw = body.get("blocks", {})
        return [blocks_table.codec.decode(orjson.dumps(raw[key])) for key in keys if raw.get(key)]

    @app.page("/search")
    async def search(web_view: View, request: Request) -> Response:
        query = PersonQuery(**{f: request.query.get(f, "") or "" for f in SEARCH_FIELDS})
        limit = query_int(request, "limit", settings.search_results, high=MAX_SEARCH_RESULTS)
        if limit is None:
            return bad_request(
                web_view, f"limit must be a whole number from 1 to {MAX_SEARCH_RESULTS}"
            )
        try:
            person, keys = query_person(query), search_keys(query)
        except ValueError as exc:
            return bad_request(web_view, str(exc))
        try:
            blocks = await blocks_of(keys)
        except OwnerUnavailable:
            return unavailable(web_view)
        candidates = candidates_of(blocks, limit=settings.search_candidates)
        people = dict(candidates)
        ranked = rank_candidates(person, candidates, model, limit)
        return web_view.json(
            {
                "candidates": [
                    {
                        "profile_id": c.profile_id,
                        **match_json(c.match),
                        "person": people[c.profile_id].to_json(),
                    }
                    for c in ranked
                ]
            }
        )

    @app.page("/people/blocks")
    async def held_blocks(web_view: View, request: Request) -> Response:
        """The blocks this worker holds of the `key`s asked for (others are left out)."""
        keys = list(dict.fromkeys(cast(web.Request, request).query.getall("key", [])))
        if len(keys) > MAX_BLOCK_KEYS:
            return bad_request(web_view, f"at most {MAX_BLOCK_KEYS} keys at once")
        held: dict[str, Any] = {}
        for key in keys:
            raw = blocks_table.table.get(key)
            if raw is not None:
                held[key] = orjson.loads(raw)
        return web_view.json({"blocks": held})

    async def duplicates_answer(web_view: View, request: Request, profile_id: str) -> Response:
        table = tables.duplicates
        if (forwarded := await owners.elsewhere(table, profile_id, web_view, request)) is not None:
            return forwarded
        return web_view.json({"profile_id": profile_id, "duplicates": local_duplicates(profile_id)})

    @app.page("/profiles/{profile_id}/duplicates")
    async def profile_duplicates(web_view: View, request: Request, profile_id: str) -> Response:
        return await duplicates_answer(web_view, request, profile_id)

    @app.page("/customers/{customer_id}/duplicates")
    async def customer_duplicates(web_view: View, request: Request, customer_id: str) -> Response:
        return await duplicates_answer(web_view, request, customer_id)

    def local_duplicates(profile_id: str) -> list[dict[str, Any]]:
        duplicates = tables.duplicates.get(profile_id)
        return duplicates.to_api() if duplicates is not None else []

    async def suggested(profile_id: str) -> list[dict[str, Any]]:
        """The profile's suggestions as its owner answers them; raises OwnerUnavailable."""
        owner = owner_of(tables.duplicates, profile_id)
        if owner is None:
            return local_duplicates(profile_id)
        body = await ask(owner, f"/profiles/{quote(profile_id, safe='')}/duplicates")
        return list(body.get("duplicates", []))

    class Decision(View):
        """A staff member's decision on one suggestion (POST only)."""

        async def post(self, request: Request, profile_id: str, other_id: str) -> Response:
            decision = await decision_in(self, cast(web.Request, request))
            if not isinstance(decision, str):
                return decision  # refused
            try:
                outs = decision_outs(profile_id, other_id, decision, "staff", settings.now())
                entries = await suggested(profile_id)
            except ValueError as exc:
                return bad_request(self, str(exc))
            except OwnerUnavailable:
                return unavailable(self)
            if not any(entry.get("other_profile_id") == other_id for entry in entries):
                return not_found(self, f"{other_id} is not a suggested duplicate of {profile_id}")
            await send_outs(channels, outs, stats.agents)
            await app.producer.flush()  # accepted: on the broker, not only in a buffer
            stats.agents["staff.decisions"] += 1
            return self.json({"accepted": True}, status=202)

    app.page("/profiles/{profile_id}/duplicates/{other_id}")(Decision)
