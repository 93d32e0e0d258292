"""The analyst console and the offline API docs, driven in a real headless Chromium.

One server (``cli.py serve`` on the session's small bank, with a read key and an admin key) and one
browser serve the whole module. The browser is Debian's ``chromium`` (``.ci/run`` installs it);
Playwright only drives it and never downloads a browser of its own. Each test that shows a page
writes its screenshot to ``docs/screenshots/``, which the README shows.
"""
from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import httpx
import pytest

from console import cell_status, offers_by_day
from decision_store import DecisionStore, migrate
from tests.test_decision_store import decision
from tests.utils.service import served

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "screenshots"
READ_KEY, ADMIN_KEY = "console-test-read-key", "console-test-admin-key"
DESKTOP = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


# --------------------------------------------------------------------------------------------------
# The browser, the server and what a page must not do
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright, or a skip that says what is missing."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no Chromium on PATH: install Debian's chromium package (.ci/run does, with apt-get) to run "
                    "the console's browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright (requirements-dev.txt) drives the browser")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def console_url(chromium, api_settings, trained_service, tmp_path_factory) -> Iterator[str]:
    """The service in its own process, with a read and an admin key (the browser is found first: no
    server starts for tests that would skip)."""
    keys = f"{READ_KEY}:read,{ADMIN_KEY}:admin"
    with served(api_settings, tmp_path_factory.mktemp("console_state"), API_KEYS=keys) as (_, url):
        yield url


def watch(page: Any) -> list[str]:
    """Everything that would make a page broken for its reader: console errors, requests that failed, and
    answers of 400 and above."""
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console {message.text}") if message.type == "error"
            else None)
    page.on("requestfailed", lambda request: problems.append(f"failed {request.url}: {request.failure}"))
    page.on("response", lambda response: problems.append(f"HTTP {response.status} {response.url}")
            if response.status >= 400 else None)
    return problems


def signed_in(chromium: Any, url: str, key: str, viewport: dict[str, int] = DESKTOP) -> Any:
    """A page of a fresh browser context that signed in through the console's form."""
    page = chromium.new_context(viewport=viewport).new_page()
    page.goto(f"{url}/console")
    page.fill("#key", key)
    page.click("form.login button[type=submit]")
    page.wait_for_selector("h1:text('Overview')")
    return page


def shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def api(url: str, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{url}{path}", headers={"X-API-Key": ADMIN_KEY}, timeout=60, **kwargs)
    response.raise_for_status()
    return response.json()


def other_individual(trained_service, known_customer: str) -> str:
    """An individual other than ``known_customer``, whose offers the decisions page can show without
    changing ``known_customer``'s contact history."""
    view = trained_service.base.view
    return str(view[(view["customer_type"] == "individual") & (view.index != known_customer)].index[0])


# --------------------------------------------------------------------------------------------------
# What the pages compute (no browser needed)
# --------------------------------------------------------------------------------------------------

def test_the_timeline_counts_each_offer_on_the_day_it_was_made(tmp_path):
    url = f"sqlite:///{tmp_path / 'decisions.sqlite3'}"
    migrate(url)
    store = DecisionStore(url)
    noon = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
    store.record([decision(1, at=noon - timedelta(days=2)), decision(2, at=noon), decision(3, at=noon)])  # 2 offers each
    store.add_feedback("req-2", "C-1", "loan", "accepted")
    store.add_feedback("req-3", "C-1", "card", "declined")
    days = offers_by_day(store, date(2026, 11, 30), 3)
    store.close()
    assert [(day.day.isoformat(), day.offered, day.accepted, day.declined) for day in days] == [
        ("2026-11-28", 2, 0, 0), ("2026-11-29", 0, 0, 0), ("2026-11-30", 4, 1, 1)]


def test_the_heat_map_tells_a_gap_that_could_be_chance_from_too_little_data(trained_service):
    audit = trained_service.artifacts.audit
    statuses = [(cell_status(entry, audit), entry["recommendations"]["note"] or "") for entry in audit["entries"]]
    assert {status for status, _ in statuses} >= {"ok", "flagged", "inconclusive", "insufficient_data"}
    for status, note in statuses:
        if status == "inconclusive":
            assert "could be chance" in note
        elif status == "insufficient_data":
            assert "too small" in note or "too few" in note or "no customers" in note


# --------------------------------------------------------------------------------------------------
# The pages
# --------------------------------------------------------------------------------------------------

def test_every_page_loads_without_errors_is_labelled_and_fits_a_narrow_window(chromium, console_url,
                                                                               trained_service, known_customer):
    customer = other_individual(trained_service, known_customer)
    answer = api(console_url, "POST", "/recommend", json={"customer_id": customer})
    accepted = answer["recommendations"][0]["product_id"]
    api(console_url, "POST", "/feedback", json={"request_id": answer["request_id"], "customer_id": customer,
                                                "product_id": accepted, "outcome": "accepted"})
    page = signed_in(chromium, console_url, ADMIN_KEY)
    problems = watch(page)
    pages = {"overview": ("/console", "Overview"), "fairness": ("/console/fairness", "Fairness"),
             "customer": (f"/console/customers?customer_id={known_customer}", "Customer explorer"),
             "decisions": ("/console/decisions", "Decisions")}
    for name, (path, heading) in pages.items():
        page.goto(f"{console_url}{path}")
        assert page.inner_text("h1") == heading
        unlabelled = page.evaluate("""[...document.querySelectorAll('input:not([type=hidden]), textarea, select')]
                                      .filter(field => field.labels.length === 0).map(field => field.name)""")
        assert unlabelled == [], f"{name}: fields without a label: {unlabelled}"
        if name == "customer":
            page.locator("#recommendations").scroll_into_view_if_needed()
        shoot(page, name)
    assert problems == []
    # the last page loaded, the decisions page, shows the one offer accepted
    assert page.inner_text(f"#by-product tr[data-product='{accepted}'] td:nth-child(3)") == "100.0%"

    page.goto(f"{console_url}/console")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    assert page.inner_text("[data-fact=model_version]") == trained_service.model.version_

    narrow = signed_in(chromium, console_url, READ_KEY, NARROW)
    narrow.goto(f"{console_url}/console/customers?customer_id={known_customer}")
    assert narrow.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shoot(narrow, "customer-narrow")


def test_the_heat_map_has_one_cell_per_audited_pair_and_the_audit_reruns(chromium, console_url):
    audit = api(console_url, "GET", "/fairness")
    page = signed_in(chromium, console_url, ADMIN_KEY)
    problems = watch(page)
    page.goto(f"{console_url}/console/fairness")
    cells = page.locator("td.audit-cell")
    pairs = [(cells.nth(i).get_attribute("data-product"), cells.nth(i).get_attribute("data-attribute"))
             for i in range(cells.count())]
    assert sorted(pairs) == sorted((entry["product_id"], entry["attribute"]) for entry in audit["entries"])
    assert page.locator("td.audit-cell[data-status=flagged]").count() == audit["summary"]["flagged"]

    with page.expect_navigation(timeout=120_000):  # the script reloads the page once the audit is done
        page.click("#rerun-button")
        assert page.locator("#rerun-progress").is_visible()
    rerun = api(console_url, "GET", "/fairness")
    assert rerun["generated_at"] != audit["generated_at"] and rerun["generated_at"] in page.inner_text("main")
    assert page.locator("td.audit-cell").count() == len(audit["entries"])
    assert problems == []


def test_the_explorer_shows_the_products_and_factors_that_recommend_answers(chromium, console_url, known_customer):
    answer = api(console_url, "POST", "/recommend", json={"customer_id": known_customer})
    page = signed_in(chromium, console_url, READ_KEY)
    page.goto(f"{console_url}/console/customers?customer_id={known_customer}")
    shown = page.locator("article.recommendation")
    assert [shown.nth(i).get_attribute("data-product") for i in range(shown.count())] == \
           [item["product_id"] for item in answer["recommendations"]]
    for item in answer["recommendations"]:
        rows = page.locator(f"article[data-product='{item['product_id']}'] tr[data-factor]")
        assert [rows.nth(i).get_attribute("data-factor") for i in range(rows.count())] == \
               [factor["name"] for factor in item["explanation"]["factors"]]
    assert page.locator("ul.bias-changes li").all_inner_texts() == \
           [change["reason"] for check in answer["bias_check"]["attributes"] for change in check["top_k_changes"]]


def test_the_what_if_form_changes_the_answer_when_the_posts_change(chromium, console_url, known_customer):
    page = signed_in(chromium, console_url, READ_KEY)
    problems = watch(page)
    page.goto(f"{console_url}/console/customers?customer_id={known_customer}")
    age = page.input_value("#age")
    page.fill("#posts", "We just had our first baby and are buying a family home: looking for a mortgage\n"
                        "Starting a college fund for our daughter")
    page.click("#what-if button[type=submit]")
    page.wait_for_selector("#what-if-result")

    def ranked(side: str) -> list[tuple[str, str]]:
        items = page.locator(f"[data-side={side}] li")
        return [(items.nth(i).get_attribute("data-product"), items.nth(i).get_attribute("data-score"))
                for i in range(items.count())]

    assert ranked("before") and ranked("after")
    assert ranked("before") != ranked("after")
    assert page.input_value("#age") == age  # only the posts changed
    shoot(page, "what-if")
    assert problems == []


def test_a_bad_key_an_unknown_customer_and_a_read_key_are_told_on_the_page(chromium, console_url):
    page = chromium.new_context(viewport=DESKTOP).new_page()
    first = page.goto(f"{console_url}/console/fairness")
    assert first.status == 401 and page.locator("label[for=key]").inner_text() == "API key"
    page.fill("#key", "not-a-key")
    with page.expect_response(f"{console_url}/console/login") as refused:
        page.click("form.login button[type=submit]")
    assert refused.value.status == 403
    assert "refused" in page.inner_text("[role=alert]")
    assert page.context.cookies() == []
    shoot(page, "bad-key")

    page.fill("#key", READ_KEY)
    page.click("form.login button[type=submit]")
    page.wait_for_selector("h1:text('Fairness')")  # back where the reader was going
    assert page.locator("#rerun-button").is_disabled()
    unknown = page.goto(f"{console_url}/console/customers?customer_id=NOBODY-42")
    assert unknown.status == 404
    assert "No customer with id 'NOBODY-42'" in page.inner_text("[role=alert]")
    assert "Traceback" not in page.content()


# --------------------------------------------------------------------------------------------------
# The API docs with the network cut off
# --------------------------------------------------------------------------------------------------

def test_the_api_docs_render_every_operation_with_the_network_cut_off(chromium, console_url):
    spec = httpx.get(f"{console_url}/openapi.json", timeout=30).json()
    operations = sum(method in HTTP_METHODS for path in spec["paths"].values() for method in path)
    context = chromium.new_context(viewport=DESKTOP)
    left_the_machine: list[str] = []

    def local_only(route: Any) -> None:
        if urlparse(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            left_the_machine.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{console_url}/docs")
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() == operations
    assert problems == [] and left_the_machine == []
    shoot(page, "docs")

    page.goto(f"{console_url}/redoc")
    page.wait_for_selector("[data-section-id*='/operation/']")
    sections = page.eval_on_selector_all("[data-section-id*='/operation/']",
                                         "nodes => new Set(nodes.map(node => node.dataset.sectionId)).size")
    assert sections == operations
    # ReDoc's bundle asks for one thing from outside, its "API docs by Redocly" badge, and hides it when blocked
    assert all(urlparse(url).path.endswith("logo-mini.svg") for url in left_the_machine)
