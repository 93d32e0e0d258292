"""The analyst console: what the model does and why, in the browser, served by the service itself.

Pages under ``/console`` render on the server (Jinja2) from the same objects the API answers with
(the model card, the audit, the public answer of ``/recommend``), so the console and the API can
never tell two stories. Nothing loads from outside the service: charts are inline SVG
(:mod:`charts`), the stylesheet and the one script are served from ``static/``, and a
Content-Security-Policy of ``'self'`` holds every page to that.

Access follows the API's rules (:func:`app.identify_caller`): with ``API_KEYS`` set, a page needs a
key, from the ``X-API-Key`` header or from the session cookie that the login form sets (HttpOnly,
SameSite=Strict, scoped to ``/console``: scripts cannot read it and other sites cannot send it);
re-running the audit needs an admin key. A missing or refused key, an unknown customer or a
service still starting is said on the page with its status code, never as a stack trace.

The console reads; it never records. Browsing a customer is not an offer, so nothing it shows goes
to the decision log, and the what-if form scores hypothetical profiles through the cold-start path.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from itertools import dropwhile
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from access import allows
from app import Caller, ServiceState, answer_body, identify_caller, ready_service
from batch import run_audit
from charts import Series, bar_chart
from decision_store import DecisionStore
from feedback_learning import FeedbackEvidence
from interactions import Interactions, outcome_report
from recommendation_service import RecommendationService, UnknownCustomer, UnknownReference
from schemas import CUSTOMER_ID_PATTERN, CustomerProfile, CustomerViewResponse, RecommendRequest

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent
KEY_COOKIE = "nbp_console_key"
TOP_K = RecommendRequest.model_fields["top_k"].default  # what /recommend answers by default: the same list
TIMELINE_DAYS = 14
PAGE_HEADERS = {
    # Only the service itself: a page that tried to load anything from elsewhere would fail loudly.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",  # the pages show customers' data: no copy stays in a browser's cache
    "Referrer-Policy": "no-referrer",
}
KEY_MESSAGES = {
    401: "This console needs an API key: enter one below (it is kept for this browser session only).",
    403: "That API key was refused: it is not one of the service's keys. Enter a valid key below.",
}

templates = Jinja2Templates(directory=ROOT / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)


def add_console(app: FastAPI) -> None:
    """Mounts the console's pages, its static files and the handler that turns a refusal into a page."""
    app.state.audit_runs = AuditRuns()
    app.mount("/console/static", StaticFiles(directory=ROOT / "static"), name="console-static")
    app.include_router(router)
    app.add_exception_handler(ConsoleProblem, problem_page)


# --------------------------------------------------------------------------------------------------
# Access and errors
# --------------------------------------------------------------------------------------------------

class ConsoleProblem(Exception):
    """Why a page cannot be shown, said to the analyst on a page with the same status the API would give."""

    def __init__(self, status: int, message: str, asks_for_key: bool = False, next: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.asks_for_key = asks_for_key
        self.next = next  # where a login on the page leads: by default, back to the page refused


async def problem_page(request: Request, problem: ConsoleProblem) -> Response:
    here = f"{request.url.path}?{request.url.query}" if request.url.query else request.url.path
    return page(request, "problem.html", None, status=problem.status, message=problem.message,
                asks_for_key=problem.asks_for_key, next=_local_path(problem.next or here))


async def console_caller(request: Request) -> Caller:
    """The caller of a page: the key from the header, or else from the session cookie."""
    return await checked_caller(request, request.headers.get("X-API-Key") or request.cookies.get(KEY_COOKIE))


async def checked_caller(request: Request, key: str | None) -> Caller:
    """The API's own check (key, then rate limit); a refusal becomes a page that asks for a key."""
    try:
        return await identify_caller(request, key)
    except HTTPException as error:
        raise ConsoleProblem(error.status_code, KEY_MESSAGES.get(error.status_code, str(error.detail)),
                             asks_for_key=error.status_code in KEY_MESSAGES) from None


ConsoleCaller = Annotated[Caller, Depends(console_caller)]


async def console_service(request: Request, caller: ConsoleCaller) -> RecommendationService:
    """The service once ready; before that, a page that says so (and that ``/health`` will say when)."""
    try:
        return await ready_service(request)
    except HTTPException as error:
        raise ConsoleProblem(503, f"Not ready: the {error.detail}. The console works once /health says ready.")


ConsoleService = Annotated[RecommendationService, Depends(console_service)]


def page(request: Request, template: str, caller: Caller | None, status: int = 200, **context: Any) -> Response:
    """A console page with the headers every page carries."""
    keys_configured = bool(request.app.state.access.keys)
    return templates.TemplateResponse(request, template, {"caller": caller, "keys_configured": keys_configured,
                                                          **context}, status_code=status, headers=PAGE_HEADERS)


def _local_path(candidate: str) -> str:
    """Where to go after the login: a console page of this service, never another site."""
    return candidate if candidate.startswith("/console") and not candidate.startswith("/console/login") else "/console"


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/console") -> Response:
    if not request.app.state.access.keys:
        return RedirectResponse(_local_path(next), status_code=303)
    return page(request, "problem.html", None, message="Enter an API key to use the console.", asks_for_key=True,
                next=_local_path(next))


@router.post("/login")
async def login(request: Request, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/console"
                ) -> Response:
    """Checks the key as any request would, then keeps it in a session cookie; a refused key sets nothing and
    asks again, still on the way to ``next``."""
    try:
        await checked_caller(request, key or None)
    except ConsoleProblem as problem:
        raise ConsoleProblem(problem.status, problem.message, problem.asks_for_key, next) from None
    response = RedirectResponse(_local_path(next), status_code=303)
    response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict", path="/console",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/console")
    return response


def _state(request: Request) -> ServiceState:
    return request.app.state.service_state


def _number(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _percent(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def _readable(value: Any) -> str:
    """A profile or factor value as a reader wants it: whole numbers without decimals, small ones with three."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3f}"


def _interval(interval: dict[str, Any] | None) -> str:
    """A 95% interval as the audit gives it, '[0.14, 1.42]'; an open upper bound reads 'inf'."""
    if not interval or interval.get("low") is None:
        return "no interval"
    high = "inf" if interval.get("high") is None else f"{interval['high']:.2f}"
    return f"[{interval['low']:.2f}, {high}]"


templates.env.filters["number"] = _number
templates.env.filters["interval"] = _interval
templates.env.filters["readable"] = _readable
templates.env.filters["percent"] = _percent


# --------------------------------------------------------------------------------------------------
# Overview: the model card, read
# --------------------------------------------------------------------------------------------------

@router.get("", response_class=HTMLResponse)
def overview(request: Request, caller: ConsoleCaller, service: ConsoleService) -> Response:
    card = service.model_card(_state(request).feedback)
    return page(request, "overview.html", caller, active="overview", card=card,
                products=scored_products(service, card), metrics_chart=offline_metrics_chart(card))


def scored_products(service: RecommendationService, card: dict[str, Any]) -> list[dict[str, Any]]:
    """Each catalogue product with how the model scores it: its report from the card, its name from the catalogue."""
    names = dict(zip(service.products["product_id"], service.products["name"]))
    return [{**report, "name": names[report["product_id"]]} for report in card["offline_metrics"]["per_product"]]


def offline_metrics_chart(card: dict[str, Any]) -> str:
    """Held-out AUC of the final score against the knowledge prior alone (the baseline it must beat), for
    the products that had held-out take-ups to measure on."""
    measured = [r for r in card["offline_metrics"]["per_product"] if r["auc"] is not None]
    return bar_chart("Held-out AUC per product: the final score against the knowledge prior alone",
                     [r["product_id"] for r in measured],
                     [Series("final score", [r["auc"] for r in measured], "tone-model"),
                      Series("knowledge prior (baseline)", [r["prior_auc"] for r in measured], "tone-baseline")],
                     reference=0.5, reference_label="chance")


# --------------------------------------------------------------------------------------------------
# Fairness: the latest audit as a heat map, and a re-run
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditCell:
    """One audited (product, attribute) pair as the heat map shows it."""

    status: Literal["ok", "flagged", "inconclusive", "insufficient_data"]
    entry: dict[str, Any]


@router.get("/fairness", response_class=HTMLResponse)
def fairness(request: Request, caller: ConsoleCaller, service: ConsoleService) -> Response:
    audit = service.artifacts.audit
    attributes = [attribute.name for attribute in service.settings.protected_attributes]
    return page(request, "fairness.html", caller, active="fairness", audit=audit, attributes=attributes,
                grid=audit_grid(audit), may_run=allows(caller.scope, "admin"),
                run=request.app.state.audit_runs.status)


def audit_grid(audit: dict[str, Any]) -> dict[str, dict[str, AuditCell]]:
    """Product -> attribute -> cell, products in the audit's (the catalogue's) order."""
    grid: dict[str, dict[str, AuditCell]] = {}
    for entry in audit["entries"]:
        grid.setdefault(entry["product_id"], {})[entry["attribute"]] = AuditCell(cell_status(entry, audit), entry)
    return grid


def cell_status(entry: dict[str, Any], audit: dict[str, Any]) -> str:
    """The entry's status, with "insufficient data" split in two: groups and recommendations large enough
    to judge the recommendations (the audit's minimums may have stopped only another block) but a gap whose
    interval reaches into the band is *inconclusive*; groups or recommendations too few to judge at all
    stay *insufficient data*."""
    if entry["status"] != "insufficient_data":
        return entry["status"]
    criteria = audit["criteria"]
    judged = (min(entry["n_privileged"], entry["n_unprivileged"]) >= criteria["min_group_size"]
              and entry["recommendations"]["n_positives"] >= criteria["min_positives"])
    return "inconclusive" if judged else "insufficient_data"


@dataclass(frozen=True)
class AuditRunStatus:
    """The last re-run of the audit from the console: none yet, running, succeeded or failed (and why)."""

    state: Literal["none", "running", "succeeded", "failed"]
    started_at: str | None = None
    finished_at: str | None = None
    reason: str | None = None


class AuditRuns:
    """Re-runs the audit in the background, one at a time: the audit scores every customer, which takes
    longer than a page should wait, so the page polls the status instead."""

    def __init__(self) -> None:
        self.status = AuditRunStatus("none")
        self._lock = threading.Lock()

    def start(self, service: RecommendationService) -> AuditRunStatus:
        """Starts a run, or returns the one already running."""
        with self._lock:
            if self.status.state != "running":
                self.status = AuditRunStatus("running", started_at=_now())
                threading.Thread(target=self._run, args=(service, self.status.started_at), daemon=True,
                                 name="console-audit").start()
            return self.status

    def _run(self, service: RecommendationService, started_at: str) -> None:
        try:
            run_audit(service)
        except Exception as error:  # any failure: the previous audit stays, and the page says why
            self.status = AuditRunStatus("failed", started_at, _now(), f"{type(error).__name__}: {error}")
            logger.error("audit re-run failed", extra={"reason": self.status.reason})
            return
        self.status = AuditRunStatus("succeeded", started_at, _now())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@router.post("/fairness/run")
def rerun_fairness(request: Request, caller: ConsoleCaller, service: ConsoleService) -> Response:
    """Starts a re-run (admin key): the script gets the status to poll, a form without script goes back to
    the page, which shows the run."""
    if not allows(caller.scope, "admin"):
        raise ConsoleProblem(403, f"Re-running the audit needs an admin key; {caller.name} can only read.")
    status = request.app.state.audit_runs.start(service)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(vars(status), status_code=202)
    return RedirectResponse("/console/fairness", status_code=303)


@router.get("/fairness/run")
def fairness_run_status(request: Request, caller: ConsoleCaller) -> dict[str, Any]:
    return vars(request.app.state.audit_runs.status)


# --------------------------------------------------------------------------------------------------
# Customer explorer and what-if
# --------------------------------------------------------------------------------------------------

PROFILE_FIELDS = [name for name in CustomerProfile.model_fields if name not in ("posts", "held_products")]
MAX_POSTS = next(rule.max_length for rule in CustomerProfile.model_fields["posts"].metadata
                 if hasattr(rule, "max_length"))


@router.get("/customers", response_class=HTMLResponse)
def explorer(request: Request, caller: ConsoleCaller, service: ConsoleService, customer_id: str = "") -> Response:
    """The search form; with an id, everything the service knows and answers about that customer."""
    context: dict[str, Any] = {"active": "customers", "customer_id": customer_id.strip()}
    if not context["customer_id"]:
        return page(request, "customer.html", caller, **context)
    try:
        customer = known_customer(request, service, context["customer_id"])
    except ConsoleProblem as problem:
        return page(request, "customer.html", caller, status=problem.status, message=problem.message, **context)
    return page(request, "customer.html", caller, **context, **customer, what_if=customer["profile"])


def known_customer(request: Request, service: RecommendationService, customer_id: str) -> dict[str, Any]:
    """The unified view, stated needs and the answer /recommend gives now, with their charts."""
    _require_customer_id(customer_id)
    try:
        view = CustomerViewResponse.model_validate(service.customer_view(customer_id)).model_dump()
    except UnknownCustomer:
        raise ConsoleProblem(404, f"No customer with id {customer_id!r} in the bank's data. Check the id, or "
                                  "score a new customer through POST /recommend with a profile.") from None
    state = service.customers.known(service.customers.row_of(customer_id))
    answer = current_answer(_state(request), service, customer_id)
    return {"view": view, "stated_needs": state.stated_needs, "answer": answer,
            "risk_chart": risk_chart(answer["risk_profile"]),
            "factor_charts": {item["product_id"]: factor_chart(item) for item in answer["recommendations"]},
            "profile": base_profile(service, view), "catalogue": service.product_ids}


def _require_customer_id(customer_id: str) -> None:
    if not re.fullmatch(CUSTOMER_ID_PATTERN, customer_id):
        raise ConsoleProblem(422, f"{customer_id[:64]!r} is not a customer id: letters, digits, '_', '-' and "
                                  "'.', 1 to 64 characters.")


def current_answer(state: ServiceState, service: RecommendationService, customer_id: str) -> dict[str, Any]:
    """The customer's answer as /recommend gives it now (the same contact history and feedback, the same
    public schema), without recording it: looking is not offering."""
    contact = state.interactions.history(customer_id, service.rules.contact_policy)
    result = service.recommend(customer_id, TOP_K, True, contact, state.feedback)
    return orjson.loads(answer_body(result))


def risk_chart(risk_profile: dict[str, Any]) -> str:
    components = risk_profile["components"]
    return bar_chart(f"Risk profile {risk_profile['level']} ({risk_profile['score']}): points each component "
                     "added to or took from the base of 50", [c["name"].replace("_", " ") for c in components],
                     [Series("points", [c["points"] for c in components], "tone-model")], "{:+.1f}".format)


def factor_chart(item: dict[str, Any]) -> str:
    """The factors that moved the product's score, by their push on the log-odds of take-up (context
    factors, weight 0, are listed beside the chart rather than drawn)."""
    factors = [f for f in item["explanation"]["factors"] if f["weight"]]
    return bar_chart(f"Contributions to {item['name']}'s score (log-odds)", [f["name"] for f in factors],
                     [Series("contribution", [f["weight"] for f in factors], "tone-model")], "{:+.3f}".format)


def base_profile(service: RecommendationService, view: dict[str, Any]) -> CustomerProfile:
    """The customer as a cold-start profile: their profile fields, holdings and latest posts, the starting
    point of the what-if form."""
    profile = view["profile"]
    posts = service.data.social_posts
    theirs = posts[posts["customer_id"] == view["customer_id"]].sort_values("timestamp", ascending=False)
    return CustomerProfile(**{name: profile.get(name) for name in PROFILE_FIELDS},
                           posts=theirs["content"].fillna("").astype(str).head(MAX_POSTS).tolist(),
                           held_products=view["held_products"])


@dataclass(frozen=True)
class ProductChange:
    """Where one product stands before and after the what-if change (None: not in that top list)."""

    product_id: str
    name: str
    rank_before: int | None
    rank_after: int | None
    score_before: float | None
    score_after: float | None


@router.post("/customers/{customer_id}/what-if", response_class=HTMLResponse)
def what_if(request: Request, caller: ConsoleCaller, service: ConsoleService, customer_id: str,
            age: Annotated[str, Form()] = "", income: Annotated[str, Form()] = "",
            posts: Annotated[str, Form()] = "", held_products: Annotated[list[str], Form()] = []) -> Response:
    """Scores the customer twice through the cold-start path, as they are and as changed, and shows both:
    only the changed inputs differ between the two answers."""
    context: dict[str, Any] = {"active": "customers", "customer_id": customer_id}
    try:
        customer = known_customer(request, service, customer_id)
        changed = changed_profile(customer["profile"], age, income, posts, held_products)
        feedback = _state(request).feedback
        before = cold_answer(service, customer_id, customer["profile"], feedback)
        after = cold_answer(service, customer_id, changed, feedback)
    except ConsoleProblem as problem:
        return page(request, "customer.html", caller, status=problem.status, message=problem.message, **context)
    return page(request, "customer.html", caller, **context, **customer, what_if=changed,
                comparison={"before": before, "after": after, "changes": product_changes(before, after)})


def cold_answer(service: RecommendationService, customer_id: str, profile: CustomerProfile,
                feedback: FeedbackEvidence | None) -> dict[str, Any]:
    """The public answer for ``profile`` scored as a new customer (no contact policy: nothing was offered)."""
    try:
        result = service.recommend_for_profile(customer_id, profile.fields(), profile.held_products, profile.posts,
                                               TOP_K, True, None, feedback)
    except UnknownReference as error:
        raise ConsoleProblem(422, f"The what-if profile is not valid: {error}.") from None
    return orjson.loads(answer_body(result))


def changed_profile(base: CustomerProfile, age: str, income: str, posts: str, held_products: list[str]
                    ) -> CustomerProfile:
    """The base profile with the form's values, validated as /recommend validates a profile (an empty age or
    income means unknown; one post a line)."""
    changes = {"age": age.strip() or None, "income": income.strip() or None,
               "posts": [line.strip() for line in posts.splitlines() if line.strip()],
               "held_products": held_products}
    try:
        return CustomerProfile.model_validate({**base.model_dump(), **changes})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ConsoleProblem(422, f"The what-if profile is not valid: {problems}.") from None


def product_changes(before: dict[str, Any], after: dict[str, Any]) -> list[ProductChange]:
    """Every product in either top list, in the order of the changed answer, then those it dropped."""
    ranked_before = {item["product_id"]: item for item in before["recommendations"]}
    ranked_after = {item["product_id"]: item for item in after["recommendations"]}
    order = list(ranked_after) + [product for product in ranked_before if product not in ranked_after]
    return [ProductChange(product, (ranked_after.get(product) or ranked_before[product])["name"],
                          _field(ranked_before, product, "rank"), _field(ranked_after, product, "rank"),
                          _field(ranked_before, product, "adjusted_score"),
                          _field(ranked_after, product, "adjusted_score")) for product in order]


def _field(ranked: dict[str, dict[str, Any]], product: str, name: str) -> Any:
    return ranked[product][name] if product in ranked else None


# --------------------------------------------------------------------------------------------------
# Decisions: offers and outcomes from the decision log
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DayOfOffers:
    """Offers made on one day (UTC) and how many of them were accepted or declined since."""

    day: date
    offered: int
    accepted: int
    declined: int


@router.get("/decisions", response_class=HTMLResponse)
def decisions(request: Request, caller: ConsoleCaller, service: ConsoleService) -> Response:
    log = _state(request).interactions
    if not isinstance(log, Interactions):
        return page(request, "decisions.html", caller, active="decisions", log_off=True)
    report = outcome_report(log.store, service)
    # from the first day with an offer: a fresh log does not draw two weeks of empty rows
    days = list(dropwhile(lambda day: not day.offered,
                          offers_by_day(log.store, datetime.now(timezone.utc).date(), TIMELINE_DAYS)))
    products = report["all_customers"]["products"]
    return page(request, "decisions.html", caller, active="decisions", log_off=False, report=report, days=days,
                timeline_days=TIMELINE_DAYS,
                timeline_chart=timeline_chart(days), acceptance_chart=acceptance_chart(products),
                product_ids=list(products))


def offers_by_day(store: DecisionStore, today: date, days: int) -> list[DayOfOffers]:
    """The last ``days`` days, oldest first, from the store's counts since each midnight: one day's offers
    are the offers since its midnight less those since the next. The latest day is counted first, so that
    an offer written between two counts adds to a day rather than making one negative."""
    starts = [datetime.combine(today - timedelta(days=back), time.min, timezone.utc) for back in range(days)]
    totals = [_totals(store, since) for since in starts]  # today first
    later = [(0, 0, 0)] + totals[:-1]
    return [DayOfOffers(start.date(), *(a - b for a, b in zip(since, after)))
            for start, since, after in reversed(list(zip(starts, totals, later)))]


def _totals(store: DecisionStore, since: datetime) -> tuple[int, int, int]:
    counts = store.outcome_counts(since).values()
    return (sum(c.offered for c in counts), sum(c.accepted for c in counts), sum(c.declined for c in counts))


def timeline_chart(days: list[DayOfOffers]) -> str:
    return bar_chart("Offers made each day (UTC) and how they ended",
                     [day.day.isoformat() for day in days],
                     [Series("offered", [day.offered for day in days], "tone-model"),
                      Series("accepted", [day.accepted for day in days], "tone-ok"),
                      Series("declined", [day.declined for day in days], "tone-flagged")], "{:.0f}".format)


def acceptance_chart(products: dict[str, dict[str, Any]]) -> str:
    return bar_chart("Acceptance and decline rates of the offers made, by product", list(products),
                     [Series("accepted", [p["acceptance_rate"] for p in products.values()], "tone-ok"),
                      Series("declined", [p["decline_rate"] for p in products.values()], "tone-flagged")],
                     _percent)
