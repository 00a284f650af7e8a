"""The staff card page in a real browser (headless Chromium) against a real worker and broker.

Playwright drives Debian's `chromium` (`/usr/bin/chromium`; `.ci/run` installs it).
These tests fail, never skip, when the browser is missing: the page is a feature.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.tools.broker import free_port
from app.tools.runner import WorkerProcess, worker_env
from tests.conftest import Broker, Isolated
from tests.fixtures.factories import make_event, make_identify, make_receipt
from tests.integration.test_identity import assert_equal, eventually, send
from tests.integration.test_people import duplicates_of, polish_people, suggested_pair

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
TOKEN = "staff-token-for-tests"
EMAIL = "Ann.Nowak@Example.com"  # as the website sends it; normalised to lower case
LOYALTY = {"name": "loyalty_card", "value": "7001"}
DEVICE = {"name": "device", "value": "d-42"}
BOOTS = {"product_id": "P-1", "name": "Leather boots", "category": "shoes", "price": 329.0}
SCARF = {"product_id": "P-2", "name": "Wool scarf", "category": "accessories", "price": 79.0}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian's package, driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'")
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; every request it makes is recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.requested = []
    tab.on("request", lambda request: tab.requested.append(request.url))
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


def four_channel_story() -> list[dict]:
    """Ann browses the app anonymously, buys in a store with her card, signs up on the
    website, and the call-centre links her phone and loyalty card to her account."""
    return [
        make_event(
            "product_view",
            customer_id=None,
            link=DEVICE,
            channel="app",
            event_id="app-1",
            ts="2026-11-01T09:00:00+00:00",
            **BOOTS,
        ),
        make_receipt(
            receipt_id="R-1",
            total=329.0,
            link=LOYALTY,
            event_id="pos-1",
            ts="2026-11-01T12:00:00+00:00",
            store={"id": "S-1", "name": "Galeria"},
            items=[{**BOOTS, "quantity": 1}],
        ),
        make_identify(
            customer_id="C-1",
            links={"email": EMAIL, "device": "d-42"},
            attributes={"first_name": "Ann", "last_name": "Nowak", "city": "Kraków"},
            event_id="web-1",
            ts="2026-11-02T10:00:00+00:00",
        ),
        make_event(
            "page_view",
            customer_id="C-1",
            event_id="web-2",
            ts="2026-11-02T10:01:00+00:00",
            url="/boots",
            title="Boots",
        ),
        make_identify(
            customer_id="C-1",
            links={"phone": "+48 600 100 200", "loyalty_card": "7001"},
            channel="call_center",
            event_id="cc-1",
            ts="2026-11-03T15:00:00+00:00",
        ),
        make_event(
            "call_center",
            customer_id="C-1",
            channel="call_center",
            event_id="cc-2",
            ts="2026-11-03T15:05:00+00:00",
            reason="delivery question",
        ),
    ]


def merged(worker: WorkerProcess) -> dict:
    """C-1's card once all four channels are in it."""
    status, card = worker.get("/customers/C-1")
    assert status == 200, card
    assert {entry["category"] for entry in card["activity"]} >= {
        "app",
        "website",
        "order",
        "call_center",
    }
    assert [r["id"] for r in card["receipts"]] == ["R-1"]
    return card


def merged_worker(
    broker: Broker, isolated: Isolated, start_worker: Callable[..., WorkerProcess]
) -> WorkerProcess:
    """A worker with the API token that has merged the four-channel story into C-1."""
    worker = start_worker(api_token=TOKEN)
    send(broker, isolated, four_channel_story())
    eventually(lambda: merged(worker))
    return worker


def sign_in(page: Any, worker: WorkerProcess, query: str = "") -> None:
    """Open the page with ?token= once: the worker sets the cookie and drops the token."""
    page.goto(f"{worker.url}/staff/?{query}{'&' if query else ''}token={TOKEN}")
    assert "token=" not in page.url


def test_search_by_email_opens_the_merged_card_and_a_receipt_shows_its_items(
    broker: Broker,
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    page: Any,
) -> None:
    worker = merged_worker(broker, isolated, start_worker)

    sign_in(page, worker)
    page.fill("#search-input", "  ann.nowak@EXAMPLE.com ")
    page.press("#search-input", "Enter")
    page.wait_for_selector("#customer-id:text-is('C-1')")
    assert page.inner_text("#who h1") == "Ann Nowak"
    for category in ("app", "website", "order", "call_center"):
        assert page.locator(f"#activity li[data-category='{category}']").count() >= 1, category
    assert "ann.nowak@example.com" in page.inner_text("#contacts")
    assert "?profile=C-1" in page.url and "example" not in page.url.lower()  # no PII in URLs

    page.click("[data-receipt='R-1'] button")
    page.wait_for_selector("#receipt-dialog[open]")
    assert page.inner_text("#receipt-title") == "Receipt R-1"
    items = page.inner_text("#receipt-items tbody")
    assert "Leather boots" in items and "329.00 PLN" in items
    page.keyboard.press("Escape")

    page.fill("#search-input", "nobody@nowhere.pl")
    page.press("#search-input", "Enter")
    page.wait_for_selector("#message.error")
    assert "No customer or link matches" in page.inner_text("#message")

    page.fill("#search-input", "7001")  # a loyalty card number finds the same card
    page.press("#search-input", "Enter")
    page.wait_for_selector("#customer-id:text-is('C-1')")

    external = [url for url in page.requested if not url.startswith(worker.url)]
    assert external == []  # everything ships with the worker
    log = worker.log_file.read_text(errors="replace").lower()
    assert "ann.nowak" not in log and "nobody@" not in log and "7001" not in log


def test_a_new_order_and_a_merge_show_up_without_a_reload(
    broker: Broker,
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    page: Any,
) -> None:
    worker = merged_worker(broker, isolated, start_worker)

    sign_in(page, worker, "profile=C-1")
    page.wait_for_selector("#live.on")
    page.wait_for_selector("[data-receipt='R-1']")
    page.evaluate("window.sameDocument = 'yes'")  # gone if the page reloads
    sent = time.monotonic()
    send(
        broker,
        isolated,
        [
            make_receipt(
                receipt_id="R-2",
                total=79.0,
                link=LOYALTY,
                event_id="pos-2",
                ts="2026-11-04T11:00:00+00:00",
                store={"id": "S-2", "name": "Arkadia"},
                items=[{**SCARF, "quantity": 1}],
            )
        ],
    )
    page.wait_for_selector("[data-receipt='R-2']", timeout=10_000)
    shown_after = time.monotonic() - sent
    print(f"new order on the open page {shown_after * 1000:.0f} ms after it was sent")
    assert page.evaluate("window.sameDocument") == "yes"
    assert "2" in page.inner_text("#receipts-count")

    # an anonymous visitor's page follows the profile when it is merged into a customer
    send(
        broker,
        isolated,
        [
            make_event(
                "product_view",
                customer_id=None,
                link={"name": "device", "value": "d-77"},
                channel="app",
                event_id="app-77",
                ts="2026-11-04T09:00:00+00:00",
                **SCARF,
            )
        ],
    )
    eventually(lambda: assert_equal(worker.get("/links/device/d-77")[0], 200))
    page.select_option("#search-kind", "device")
    page.fill("#search-input", "d-77")
    page.press("#search-input", "Enter")
    page.wait_for_selector("#customer-id:text-is('~device:d-77')")
    page.wait_for_selector("#live.on")
    send(
        broker,
        isolated,
        [
            make_identify(
                customer_id="C-2",
                links={"device": "d-77"},
                attributes={"first_name": "Ola"},
                event_id="web-77",
                ts="2026-11-04T10:00:00+00:00",
            )
        ],
    )
    page.wait_for_selector("#customer-id:text-is('C-2')", timeout=10_000)
    assert page.inner_text("#who h1") == "Ola"
    assert "?profile=C-2" in page.url
    assert page.evaluate("window.sameDocument") == "yes"


def test_staff_find_a_person_by_name_and_city_and_mark_her_duplicate_the_same_person(
    broker: Broker,
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    page: Any,
) -> None:
    worker = start_worker(api_token=TOKEN)
    send(broker, isolated, polish_people())
    eventually(lambda: suggested_pair(worker))

    sign_in(page, worker)
    assert page.is_hidden("#people")
    page.click("#people-toggle")
    page.fill("#person-name", "kowalska")
    page.click("#person-search button[type=submit]")
    page.wait_for_selector("#message.error")  # one field finds nobody: it is refused
    assert "at least two" in page.inner_text("#message")
    page.fill("#person-city", "lodz")  # written without its Polish letters
    page.click("#person-search button[type=submit]")
    page.wait_for_selector("#people-results li[data-candidate='C-102']")
    shown = page.locator("#people-results > li").evaluate_all(
        "items => items.map(li => li.dataset.candidate)"
    )
    assert set(shown[:2]) == {"C-101", "C-102"}, shown
    ana = page.locator("#people-results li[data-candidate='C-102']")
    assert "Ana Kowalsky" in ana.inner_text()  # capitalised for reading
    assert ana.locator(".evidence li[data-field='city'][data-level='exact']").count() == 1
    assert ana.locator(".evidence li[data-field='last_name']").count() == 1

    ana.locator("button.person-name").click()
    page.wait_for_selector("#customer-id:text-is('C-102')")
    assert "?profile=C-102" in page.url and "kowalsk" not in page.url.lower()
    anna = page.locator("#duplicates li[data-duplicate='C-101']")
    anna.wait_for()
    assert "birth date: exact" in anna.inner_text()
    assert "city: exact" in anna.inner_text()
    anna.locator("button[data-decision='same_person']").click()
    page.wait_for_selector("#duplicates li[data-duplicate='C-101'] .decision:not(.pending)")
    assert "Same person" in anna.inner_text() and "staff" in anna.inner_text()
    assert anna.locator("button[data-decision]").count() == 0
    assert duplicates_of(worker, "C-101")["C-102"]["decision"] == "same_person"

    anna.locator("button.link").click()  # her other file shows the decision too
    page.wait_for_selector("#customer-id:text-is('C-101')")
    ana_entry = page.locator("#duplicates li[data-duplicate='C-102']")
    ana_entry.wait_for()
    assert "Same person" in ana_entry.inner_text()
    page.reload()
    page.wait_for_selector("#duplicates li[data-duplicate='C-102'] .decision")
    assert page.locator("#duplicates button[data-decision]").count() == 0

    external = [url for url in page.requested if not url.startswith(worker.url)]
    assert external == []
    log = worker.log_file.read_text(errors="replace").lower()
    assert "kowalsk" not in log and "lodz" not in log


def get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_requests_without_the_token_are_refused_and_staff_sign_in_with_it(
    broker: Broker,
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    page: Any,
) -> None:
    worker = merged_worker(broker, isolated, start_worker)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for path in (
        "/customers/C-1",
        "/links/email/ann.nowak@example.com/card",
        "/stats",
        "/search?name=ann+nowak&city=krakow",
        "/customers/C-1/duplicates",
        "/people/blocks?key=d:19900401",
    ):
        assert get(worker.url + path) == 401, path
        assert get(worker.url + path, {"Authorization": "Bearer wrong"}) == 401, path
        assert get(worker.url + path, bearer) == 200, path
    assert get(worker.url + "/profiles/C-1/changes") == 401
    assert get(worker.url + "/health") == 200
    for path in ("/table/", "/router/", "/router/topics", "/graph/"):  # Faust's raw state
        assert get(worker.url + path, bearer) == 404, path

    response = page.goto(worker.url + "/")  # the worker's address: to the staff page
    assert page.url == worker.url + "/staff/" and response.status == 401
    response = page.goto(worker.url + "/staff/?profile=C-1")
    assert response.status == 401
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    page.fill("#token", "wrong")
    page.click("button[type=submit]")
    page.wait_for_selector(".error:text('not right')")
    page.fill("#token", TOKEN)
    signed_in = time.time()
    page.click("button[type=submit]")
    page.wait_for_selector("#customer-id:text-is('C-1')")
    assert page.url.endswith("/staff/?profile=C-1")
    [cookie] = page.context.cookies()
    assert cookie["value"].startswith("v2.") and TOKEN not in cookie["value"]
    assert cookie["expires"] == pytest.approx(signed_in + 12 * 3600, abs=60)  # 12 h by default
    page.wait_for_selector("#live.on")  # the live stream is allowed with the cookie too
    for path in ("/staff/", "/staff/static/card.js", "/staff/static/card.css"):
        answer = page.request.get(worker.url + path)
        assert answer.status == 200, path
        assert answer.headers["cache-control"] == "no-store", path  # as README promises


def test_pages_on_both_workers_stay_live_whichever_owns_the_customer(
    broker: Broker,
    isolated: Isolated,
    start_worker: Callable[..., WorkerProcess],
    browser: Any,
) -> None:
    """One of the two workers does not own C-1: it forwards the card and relays the stream."""
    workers = [start_worker(api_token=TOKEN), start_worker(api_token=TOKEN)]

    def both_hold_partitions() -> None:
        for worker in workers:
            status, health = worker.get("/health")
            assert status == 200 and health["ready"] and health["assigned"], health

    eventually(both_hold_partitions)
    send(broker, isolated, four_channel_story())
    for worker in workers:
        eventually(lambda worker=worker: merged(worker))
    contexts = [browser.new_context() for _ in workers]
    try:
        pages = [context.new_page() for context in contexts]
        for tab, worker in zip(pages, workers, strict=True):
            tab.set_default_timeout(15_000)
            sign_in(tab, worker, "profile=C-1")
            tab.wait_for_selector("[data-receipt='R-1']")
            tab.wait_for_selector("#live.on")
        send(
            broker,
            isolated,
            [make_receipt(receipt_id="R-3", total=10.0, link=LOYALTY, event_id="pos-3")],
        )
        for tab in pages:
            tab.wait_for_selector("[data-receipt='R-3']", timeout=15_000)
            # told by its worker's stream (relayed from the owner on one of them)
            assert tab.evaluate("window.cardstream.changes") >= 1
    finally:
        for context in contexts:
            context.close()


def test_a_worker_on_the_network_without_credentials_refuses_to_start(tmp_path: Any) -> None:
    """No broker needed: the worker stops before it connects (it would hang on this one)."""
    env = worker_env(
        web_host="0.0.0.0", web_port=free_port(), data_dir=tmp_path, bootstrap="127.0.0.1:1"
    )
    for name in ("API_TOKEN", "API_USER", "API_PASSWORD", "ALLOW_OPEN"):
        env.pop(f"CARDSTREAM_{name}", None)
    done = subprocess.run(
        [sys.executable, "-m", "app", "worker"],
        env=env,
        capture_output=True,
        timeout=60,
        cwd=os.getcwd(),
    )
    assert done.returncode != 0
    err = done.stderr.decode()
    assert "Traceback" not in err
    [line] = err.strip().splitlines()  # one line saying what to do
    assert "CARDSTREAM_API_TOKEN" in line and "CARDSTREAM_ALLOW_OPEN=true" in line


def test_an_open_worker_on_the_network_warns_and_serves_no_raw_state(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(web_host="0.0.0.0", web_advertised_host="127.0.0.1", allow_open=True)
    assert get(worker.url + "/customers/C-404") == 404  # open: no credentials asked
    for path in ("/table/", "/router/", "/router/topics", "/graph/"):
        assert get(worker.url + path) == 404, path
    log = worker.log_file.read_text(errors="replace")
    assert "without credentials" in log and "0.0.0.0" in log
