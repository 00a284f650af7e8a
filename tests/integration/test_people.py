"""Search by person and duplicate suggestions through real workers (issue 15).

A handful of Polish customers, two of them one woman registered twice with her name
and city written differently. What must happen is worked out by hand: the pair is
suggested (on the topic and on both customers' lists, with evidence), nobody else
is, a search by part of her name and the city without its Polish letters finds both
files, a staff decision is published and remembered across a restart, and a decided
pair is never suggested again.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from app.domain.people import PersonQuery, search_keys
from app.tools.runner import WorkerProcess
from tests.conftest import Broker, Isolated
from tests.fixtures.factories import make_identify
from tests.integration.kafka_read import read_topic
from tests.integration.test_identity import eventually, send

pytestmark = pytest.mark.integration

TOKEN = "people-token-for-tests"
ANNA, ANA, ANIA = "C-101", "C-102", "C-106"  # one woman, three files (Ania comes later)


def polish_people() -> list[dict]:
    """Anna Kowalska registered twice (`Ana Kowalsky`, `Lodz`), and three other people:
    a namesake in the same city, born another year, and two strangers."""
    people = [
        (ANNA, "anna.kowalska@x.pl", "Anna", "Kowalska", "Łódź", "1990-03-04", "90-001"),
        (ANA, "ana.k@poczta.pl", "Ana", "Kowalsky", "Lodz", "1990-03-04", None),
        ("C-103", "jan.nowak@x.pl", "Jan", "Nowak", "Kraków", "1985-07-12", "30-001"),
        ("C-104", "piotr.w@x.pl", "Piotr", "Wiśniewski", "Gdańsk", "1979-11-30", "80-001"),
        ("C-105", "anna.z@x.pl", "Anna", "Zielińska", "Łódź", "1992-05-05", "90-002"),
    ]
    events = []
    for n, (customer, email, first, last, city, born, postcode) in enumerate(people):
        attributes = {"first_name": first, "last_name": last, "city": city, "birth_date": born}
        if postcode:
            attributes["postcode"] = postcode
        events.append(
            make_identify(
                customer_id=customer,
                links={"email": email},
                attributes=attributes,
                event_id=f"signup-{customer}",
                ts=f"2026-11-0{n + 1}T10:00:00+00:00",
            )
        )
    return events


def duplicates_of(worker: WorkerProcess, profile_id: str) -> dict[str, dict[str, Any]]:
    """other profile id -> entry, of `profile_id`'s suggestions."""
    status, body = worker.get(f"/customers/{profile_id}/duplicates")
    assert status == 200, body
    assert body["profile_id"] == profile_id
    return {entry["other_profile_id"]: entry for entry in body["duplicates"]}


def suggested_pair(worker: WorkerProcess) -> dict[str, Any]:
    """Anna's entry for Ana, once both sides list each other."""
    mine, theirs = duplicates_of(worker, ANNA), duplicates_of(worker, ANA)
    assert ANA in mine and ANNA in theirs, (mine, theirs)
    return mine[ANA]


def search(worker: WorkerProcess, **fields: str) -> tuple[int, Any]:
    return worker.get("/search?" + urlencode(fields))


def post_json(
    worker: WorkerProcess, path: str, body: bytes, content_type: str = "application/json"
) -> tuple[int, Any]:
    """POST `body` to a route of `worker` with its credentials; (status, JSON answer)."""
    headers = {**worker.auth_headers(), "Content-Type": content_type}
    request = urllib.request.Request(worker.url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def decide(worker: WorkerProcess, profile_id: str, other: str, decision: str) -> tuple[int, Any]:
    body = orjson.dumps({"decision": decision})
    return post_json(worker, f"/profiles/{profile_id}/duplicates/{other}", body)


def records(
    broker: Broker, isolated: Isolated, expected: int, timeout: float = 30
) -> list[dict[str, Any]]:
    """The values on `cdp.duplicate-suggestions`, once `expected` of them arrived (or all
    there are after `timeout` seconds)."""
    topic = isolated.topics.duplicate_suggestions
    found = read_topic(broker.bootstrap, topic.name, topic.partitions, expected, timeout)
    return [orjson.loads(message.value()) for message in found]


def no_more_records(broker: Broker, isolated: Isolated, count: int) -> list[dict[str, Any]]:
    """The topic's values, asserting that there are `count` of them and no more."""
    found = records(broker, isolated, count + 1, timeout=5)
    assert len(found) == count, found
    return found


def pair_records(found: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [
        r
        for r in found
        if r["kind"] == kind and {r["profile_id"], r["other_profile_id"]} == {ANNA, ANA}
    ]


def unauthorised(worker: WorkerProcess, path: str) -> int:
    try:
        with urllib.request.urlopen(worker.url + path, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_pair_is_suggested_found_decided_remembered_and_never_suggested_again(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(api_token=TOKEN)
    send(broker, isolated, polish_people())

    # suggested on both sides, with the evidence of each field; nobody else is
    entry = eventually(lambda: suggested_pair(worker))
    assert entry["decision"] is None and entry["probability"] >= 0.5
    levels = {e["field"]: e["level"] for e in entry["evidence"]}
    assert levels["birth_date"] == "exact" and levels["city"] == "exact"  # Łódź = Lodz
    assert levels["last_name"] in ("close", "similar") and levels["first_name"] != "different"
    worker.wait_until_quiet()
    for profile_id in ("C-103", "C-104", "C-105"):
        assert duplicates_of(worker, profile_id) == {}, profile_id
    assert set(duplicates_of(worker, ANNA)) == {ANA}
    [suggested] = pair_records(records(broker, isolated, 1), "suggested")
    assert (suggested["profile_id"], suggested["other_profile_id"]) == (ANNA, ANA)
    assert suggested["probability"] == entry["probability"]
    assert {e["field"] for e in suggested["evidence"]} >= {"first_name", "birth_date"}

    # search: part of her name and the city without its Polish letters find both files
    status, body = search(worker, name="kowalska", city="lodz")
    assert status == 200, body
    found = [c["profile_id"] for c in body["candidates"]]
    assert set(found[:2]) == {ANNA, ANA}, found
    assert "C-103" not in found and "C-104" not in found
    best = body["candidates"][0]
    assert best["person"]["city"] == "lodz" and best["person"]["birth_date"] == "19900304"
    assert {e["field"]: e["level"] for e in best["evidence"]}["city"] == "exact"
    assert 0 < best["probability"] <= 1 and isinstance(best["weight"], float)
    status, body = search(worker, name="Kowalska", birth_date="04.03.1990", limit="1")
    assert status == 200 and len(body["candidates"]) == 1, body
    assert body["candidates"][0]["profile_id"] in (ANNA, ANA)

    # at least two fields, behind the access check like every other route
    status, body = search(worker, name="kowalska")
    assert status == 400 and body["error"] == "bad_request", body
    assert "at least two" in body["detail"]
    assert search(worker, name="kowalska", birth_date="soon")[0] == 400
    assert search(worker, name="kowalska", city="lodz", limit="0")[0] == 400
    assert unauthorised(worker, "/search?name=kowalska&city=lodz") == 401
    assert unauthorised(worker, f"/customers/{ANNA}/duplicates") == 401

    # a decision needs JSON, a known decision, a suggested pair of two profiles
    path = f"/profiles/{ANNA}/duplicates/{ANA}"
    form = b"decision=same_person"
    assert post_json(worker, path, form, "application/x-www-form-urlencoded")[0] == 415
    assert decide(worker, ANNA, ANA, "maybe")[0] == 400
    assert decide(worker, ANNA, ANNA, "same_person")[0] == 400
    assert decide(worker, ANNA, "C-103", "not_same")[0] == 404
    assert post_json(worker, path, b"{not json")[0] == 400

    status, body = decide(worker, ANA, ANNA, "same_person")  # from either side
    assert (status, body) == (202, {"accepted": True})

    def decided() -> None:
        for one, other in ((ANNA, ANA), (ANA, ANNA)):
            entry = duplicates_of(worker, one)[other]
            assert entry["decision"] == "same_person", entry
            assert entry["decided_by"] == "staff" and entry["decided_at"], entry

    eventually(decided)
    [record] = pair_records(records(broker, isolated, 2), "decided")
    assert record["decision"] == "same_person" and record["decided_by"] == "staff"
    assert record["profile_id"] == ANNA  # the smaller id publishes

    # Ana corrects her name, which changes how the pair scores: not suggested again
    send(
        broker,
        isolated,
        [
            make_identify(
                customer_id=ANA,
                links={"email": "ana.k@poczta.pl"},
                attributes={"first_name": "Anna"},
                event_id="ana-update",
                ts="2026-11-08T10:00:00+00:00",
            )
        ],
    )

    def corrected() -> None:
        status, card = worker.get(f"/customers/{ANA}")
        assert status == 200 and card["attributes"]["first_name"] == "Anna", card

    eventually(corrected)
    worker.wait_until_quiet()
    assert duplicates_of(worker, ANNA)[ANA]["decision"] == "same_person"
    assert duplicates_of(worker, ANA)[ANNA]["decision"] == "same_person"
    found = no_more_records(broker, isolated, 2)  # the suggestion and the decision
    assert len(pair_records(found, "suggested")) == 1, found

    # a third file of hers is suggested with both (the index still works), the pair is not
    send(
        broker,
        isolated,
        [
            make_identify(
                customer_id=ANIA,
                links={"email": "ania@x.pl"},
                attributes={
                    "first_name": "Anna",
                    "last_name": "Kowalska",
                    "city": "Łódź",
                    "birth_date": "1990-03-04",
                },
                event_id="ania-signup",
                ts="2026-11-09T10:00:00+00:00",
            )
        ],
    )

    def third_suggested() -> None:
        assert set(duplicates_of(worker, ANIA)) == {ANNA, ANA}

    eventually(third_suggested)
    worker.wait_until_quiet()
    found = no_more_records(broker, isolated, 4)  # and Ania's two
    assert len(pair_records(found, "suggested")) == 1, found

    # the decision survives a restart on the same state
    worker.stop()
    again = start_worker(data_dir_of=worker, api_token=TOKEN)
    eventually(lambda: decided_on(again))
    status, body = search(again, name="anna kowalska", city="Łódź")
    assert status == 200 and {c["profile_id"] for c in body["candidates"][:3]} == {
        ANNA,
        ANA,
        ANIA,
    }

    # nothing personal in the logs: not the names, cities or dates searched and indexed
    for log in (worker.log_file, again.log_file):
        text = log.read_text(errors="replace").lower()
        for secret in ("kowalsk", "lodz", "łódź", "1990-03-04", "19900304", "04.03.1990"):
            assert secret not in text, (log, secret)


def decided_on(worker: WorkerProcess) -> None:
    entry = duplicates_of(worker, ANNA)[ANA]
    assert entry["decision"] == "same_person", entry


def test_any_worker_searches_the_whole_index_and_takes_decisions(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Two workers split the index: each answers a search from both halves, forwards a
    list to its owner, and takes a decision on a pair it holds neither side of."""
    workers = [start_worker(api_token=TOKEN), start_worker(api_token=TOKEN)]

    def both_hold_partitions() -> None:
        for worker in workers:
            status, health = worker.get("/health")
            assert status == 200 and health["ready"] and len(health["assigned"]) > 0, health

    eventually(both_hold_partitions)
    send(broker, isolated, polish_people())
    for worker in workers:
        eventually(lambda worker=worker: suggested_pair(worker))

    answers = []
    for worker in workers:
        status, body = search(worker, name="Ana Kowalsky", city="Łódź", birth_date="1990-03-04")
        assert status == 200, body
        answers.append(body)
        assert {c["profile_id"] for c in body["candidates"][:2]} == {ANNA, ANA}, body
    assert answers[0] == answers[1]  # the same index, whichever worker is asked

    # the keys of that search live on both workers (else it proves nothing)
    keys = search_keys(PersonQuery(name="Ana Kowalsky", city="Łódź", birth_date="1990-03-04"))
    for worker in workers:
        status, body = worker.get("/people/blocks?" + urlencode([("key", k) for k in keys]))
        assert status == 200 and body["blocks"], body
    # a birth date and a city look up one key, held by one worker: the other asks it
    [key] = search_keys(PersonQuery(city="Łódź", birth_date="1990-03-04"))
    holding = [bool(w.get(f"/people/blocks?key={key}")[1]["blocks"]) for w in workers]
    assert sorted(holding) == [False, True], holding
    for worker in workers:
        status, body = search(worker, city="Lodz", birth_date="1990-03-04")
        assert status == 200, body
        assert {c["profile_id"] for c in body["candidates"]} == {ANNA, ANA}, body

    for worker in workers:
        assert decide(worker, ANNA, ANA, "not_same")[0] == 202
    for worker in workers:
        eventually(lambda worker=worker: assert_decision(worker, "not_same"))


def assert_decision(worker: WorkerProcess, decision: str) -> None:
    for one, other in ((ANNA, ANA), (ANA, ANNA)):
        assert duplicates_of(worker, one)[other]["decision"] == decision
