"""The HTTP API: FastAPI over the recommendation service.

Start-up runs in a background thread so that ``/health`` answers at once: 503 while the data loads
and the models load or train, 200 once ready. A start-up failure is reported by ``/health`` (503,
status ``failed``) and handed to ``on_failure``, which the ``serve`` command uses to exit non-zero:
the service never serves half a model.
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from pydantic import TypeAdapter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from access import ApiKey, KeyScope, RateLimiter, allows, find_key, parse_api_keys
from batch import run_audit
from caches import LruCache
from decision_store import FINAL_OUTCOMES, FeedbackResult, FinalOutcome, OutcomeConflict, UnknownDecision
from feedback_learning import FeedbackEvidence
from interactions import DecisionLogUnavailable, Interactions, LogOff, feedback_evidence, open_interactions
from recommendation_service import Recommendation, RecommendationService, UnknownReference, UnknownCustomer
from schemas import (CUSTOMER_ID_PATTERN, CustomerViewResponse, DecisionsPage, ErrorResponse, FeedbackRequest,
                     FeedbackResponse, HealthResponse, ProductPublic, RecommendRequest, RecommendResponse)
from settings import Settings, get_settings
from workers import aggregated_metrics, ask_supervisor_to_reload, mark_gone, mark_ready, ready_workers, shared_dir

logger = logging.getLogger("api")
OPEN_PATHS = {"/health", "/metrics"}
MAX_DECISIONS_OFFSET = 1_000_000_000  # far past any history; a larger offset would overflow the database's integers


# --------------------------------------------------------------------------------------------------
# Start-up state
# --------------------------------------------------------------------------------------------------

@dataclass
class ServiceState:
    """The service once ready, or why it is not."""

    service: RecommendationService | None = None
    interactions: Interactions | LogOff | None = None  # the decision log and feedback; set before the service
    failure: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    feedback: FeedbackEvidence | None = None  # the customers' answers since training, refreshed while serving
    stopping: threading.Event = field(default_factory=threading.Event)
    # Known customers' answers, this model's: an answer depends only on the customer, the request's options, the
    # contact history and the models and rules loaded, so it is computed once; the request id is spliced into the
    # cached JSON. Cold-start answers are never cached.
    answers: LruCache[tuple, tuple[Any, bytes]] = field(default_factory=lambda: LruCache(0))
    reload_status: ReloadStatus = field(default_factory=lambda: ReloadStatus("none"))
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)
    # One at a time: storing an answer and counting it, or re-reading every answer. An answer is then counted
    # once, whether the re-read saw it (and replaced the evidence that counted it) or not (and keeps the count).
    _feedback_lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh_feedback(self, strength: float) -> None:
        """Swaps in evidence re-read from the log (one assignment: an answer in flight keeps what it started
        with); the evidence stays as it was when the database cannot be read."""
        with self._feedback_lock:
            evidence = feedback_evidence(self.interactions, self.service, strength)
            if evidence is not None:
                self.feedback = evidence

    def take_feedback(self, body: FeedbackRequest) -> FeedbackResult:
        """Stores what the customer did with an offer; a final outcome counts in this worker's evidence at
        once, without re-reading the log (other workers meet it at their next refresh)."""
        with self._feedback_lock:
            stored = self.interactions.feedback(body.request_id, body.customer_id, body.product_id, body.outcome)
            if stored.outcome in FINAL_OUTCOMES and self.feedback is not None:
                answer = FinalOutcome(stored.customer_id, stored.product_id, stored.outcome, stored.created_at)
                self.feedback = self.feedback.including([answer], self.service.segments)
        return stored


@dataclass(frozen=True)
class ReloadStatus:
    """The last reload: none yet, running, succeeded (with the model now serving) or failed (and why)."""

    state: Literal["none", "running", "succeeded", "failed"]
    started_at: str | None = None
    finished_at: str | None = None
    reason: str | None = None
    model_version: str | None = None
    data_fingerprint: str | None = None


class ReloadInProgress(Exception):
    """A reload is running: a second one would only race it."""


def begin_reload(state: ServiceState, settings: Settings, factory: Callable[[Settings], RecommendationService]
                 ) -> ReloadStatus:
    """Starts loading the artifacts, data and rules again in the background, as start-up does, and
    returns at once: the service answers on with the model it has until the new one is ready."""
    with state._reload_lock:
        if state.reload_status.state == "running":
            raise ReloadInProgress()
        state.reload_status = ReloadStatus("running", started_at=_now())
    logger.info("reload started")
    threading.Thread(target=reload_service, args=(state, settings, factory), daemon=True, name="reload").start()
    return state.reload_status


def reload_service(state: ServiceState, settings: Settings, factory: Callable[[Settings], RecommendationService]
                   ) -> None:
    """Builds the new service beside the old one, then swaps it in with one assignment: a request
    already running holds the old service and finishes on it; the next one gets the new. The answer
    cache starts empty for the new model (its keys also carry the service, so an answer the old model
    finishes after the swap is never served by the new). A failure leaves the old model serving."""
    started_at = state.reload_status.started_at
    try:
        service = factory(settings)
        service.text_models()  # the first cold start after the swap does not wait for them
        feedback = feedback_evidence(state.interactions, service, settings.feedback_prior_strength)
    except Exception as error:  # any failure: the old model keeps serving, and the status says why
        reason = f"{type(error).__name__}: {error}"
        state.reload_status = ReloadStatus("failed", started_at, _now(), reason)
        logger.error("reload failed; the previous model keeps serving", extra={"reason": reason})
        return
    state.interactions.prepare_contacts(service.rules.contact_policy)  # before the swap: its windows may be wider
    with state._feedback_lock:
        state.service, state.feedback = service, feedback
    state.answers.clear()
    state.reload_status = ReloadStatus("succeeded", started_at, _now(), model_version=service.model.version_,
                                       data_fingerprint=service.artifacts.fingerprint)
    logger.info("reload succeeded", extra={"model_version": service.model.version_})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def start_service(state: ServiceState, settings: Settings, factory: Callable[[Settings], RecommendationService],
                  on_failure: Callable[[str], None]) -> None:
    """Loads the service (see :func:`load_service`), then keeps its feedback fresh until the app stops."""
    if load_service(state, settings, factory, on_failure):
        keep_feedback_fresh(state, settings)


def load_service(state: ServiceState, settings: Settings, factory: Callable[[Settings], RecommendationService],
                 on_failure: Callable[[str], None]) -> bool:
    """Opens the decision log and loads (or trains) the models; False, with the reason reported, on failure."""
    try:
        state.interactions = open_interactions(settings)
        service = factory(settings)
        # the first answer already meets what customers said before this start
        state.feedback = feedback_evidence(state.interactions, service, settings.feedback_prior_strength)
        state.interactions.prepare_contacts(service.rules.contact_policy)
        state.service = service
    except Exception as error:  # any failure: report the reason, serve nothing
        state.failure = f"{type(error).__name__}: {error}"
        logger.error("start-up failed", extra={"reason": state.failure})
        on_failure(state.failure)
        return False
    try:
        state.service.text_models()  # cold-start requests need them; loading them does not delay readiness
    except Exception as error:
        logger.warning("text models unavailable: cold-start requests will fail", extra={"reason": str(error)})
    gc.collect()
    gc.freeze()  # the start-up state lives as long as the process: keep it out of every later collection
    return True


async def join_pool(state: ServiceState, settings: Settings, factory: Callable[[Settings], RecommendationService],
                    metrics: Metrics, pool: Path) -> list[threading.Thread]:
    """A worker of a pool (``WORKERS`` > 1) loads its model before it takes a connection: uvicorn's
    supervisor counts it as started only then (a worker it replaces after a crash too). A worker that
    cannot load stops, and the supervisor with it."""
    if not await asyncio.to_thread(load_service, state, settings, factory, lambda reason: None):
        raise RuntimeError(f"start-up failed: {state.failure}")
    mark_ready(pool)
    return [started(keep_feedback_fresh, state, settings), started(keep_sampling, state, metrics)]


def started(target: Callable[..., None], *args: Any) -> threading.Thread:
    """A background thread of the app, running until ``state.stopping`` is set."""
    thread = threading.Thread(target=target, args=args, daemon=True, name=target.__name__)
    thread.start()
    return thread


def keep_sampling(state: ServiceState, metrics: Metrics) -> None:
    """In a pool, each worker's figures reach the shared metrics every few seconds, whichever worker is scraped."""
    while not state.stopping.wait(POOL_SAMPLE_SECONDS):
        metrics.sample(state)


def begin_pool_reload() -> ReloadStatus:
    """In a pool the supervisor reloads: SIGHUP to it makes it send SIGHUP to every worker, and each
    reloads in place (:func:`reload_on_hangup`). This worker's status says so once its SIGHUP arrives."""
    ask_supervisor_to_reload()
    logger.info("reload of the workers requested")
    return ReloadStatus("running", started_at=_now())


def reload_on_hangup(app: FastAPI) -> None:
    """SIGHUP, as daemons take it: load the artifacts and rules again and swap them in (see POST /admin/reload)."""
    if app.state.service_state.service is None:
        logger.warning("SIGHUP ignored: the service is still starting")
        return
    try:
        app.state.reload_here()
    except ReloadInProgress:
        logger.warning("SIGHUP ignored: a reload is already running")


def keep_feedback_fresh(state: ServiceState, settings: Settings) -> None:
    """Re-reads the customers' answers every FEEDBACK_REFRESH_SECONDS until the app stops: answers given
    to other workers reach this one's scores within that time."""
    while not state.stopping.wait(settings.feedback_refresh_seconds):
        state.refresh_feedback(settings.feedback_prior_strength)


# --------------------------------------------------------------------------------------------------
# Monitoring
# --------------------------------------------------------------------------------------------------

DECISION_LOG_GAUGES = (("queue_depth", "Decisions waiting for the writer"),
                       ("dropped", "Decisions dropped (best effort: queue full or database failing)"),
                       ("refused", "Answers refused because the log could not take them (required)"),
                       ("failed_batches", "Batches the database refused (retried in required mode)"))


POOL_SAMPLE_SECONDS = 5.0


class Metrics:
    """Prometheus metrics of one app (own registry, so that several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests_total", "HTTP requests", ["endpoint", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "HTTP request latency", ["endpoint", "method"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5),
                                 registry=self.registry)
        self.served = Counter("recommendations_served_total", "Products recommended", ["product_id"],
                              registry=self.registry)
        self.bias_failures = Counter("bias_check_failures_total", "Responses whose individual bias check failed",
                                     ["attribute"], registry=self.registry)
        self.degraded = Counter("degraded_answers_total", "Answers from the popularity fallback",
                                registry=self.registry)
        self.cold_starts = Counter("cold_start_answers_total", "Answers for customers scored from a profile",
                                   registry=self.registry)

        # What the decision log and the caches hold is read from them: when scraped, and every few seconds
        # in a pool of workers (so that the scraped worker reports the others' figures too).
        self.decision_log = {name: Gauge(f"decision_log_{name}", meaning, registry=self.registry,
                                         multiprocess_mode="livesum") for name, meaning in DECISION_LOG_GAUGES}
        self.cache_entries = Gauge("cache_entries", "Entries held", ["cache"], registry=self.registry,
                                   multiprocess_mode="livesum")
        self.cache_capacity = Gauge("cache_capacity_entries", "Entries the cache may hold", ["cache"],
                                    registry=self.registry, multiprocess_mode="livesum")
        self.cache_lookups = {"hits": Counter("cache_hits", "Lookups the cache served", ["cache"],
                                              registry=self.registry),
                              "misses": Counter("cache_misses", "Lookups the cache could not serve", ["cache"],
                                                registry=self.registry)}
        self._counted: dict[tuple[str, str], int] = {}
        self._sampling = threading.Lock()

    def sample(self, state: ServiceState) -> None:
        """Copies the decision log's status and every cache's stats into the metrics. Hits and misses
        are counters: each sample adds what was counted since the last (a reload starts the caches
        anew, and their counts with them)."""
        log = state.interactions.status() if state.interactions is not None else {}
        caches = {"answers": state.answers.stats(), **(state.service.text_cache_stats() if state.service else {}),
                  **(state.interactions.contact_stats() if state.interactions is not None else {})}
        with self._sampling:
            for name, gauge in self.decision_log.items():
                gauge.set(float(log.get(name, 0)))
            for cache, stats in caches.items():
                self.cache_entries.labels(cache).set(stats.entries)
                self.cache_capacity.labels(cache).set(stats.capacity)
                for kind, counter in self.cache_lookups.items():
                    total, before = getattr(stats, kind), self._counted.get((cache, kind), 0)
                    counter.labels(cache).inc(total - before if total >= before else total)
                    self._counted[cache, kind] = total

    def record_recommendation(self, recommendation) -> None:
        for item in recommendation.recommendations:
            self.served.labels(item.product_id).inc()
        for check in recommendation.bias_check.attributes:
            if not check.passed:
                self.bias_failures.labels(check.attribute).inc()
        if recommendation.fallback.degraded:
            self.degraded.inc()
        if recommendation.cold_start:
            self.cold_starts.inc()


ANSWER = TypeAdapter(Recommendation)
NOT_PUBLIC = {"recommendations": {"__all__": {"rules": {"__all__": {"fields", "life_events"}}}}}
"""What the answer's dataclasses hold that the public schema (``RecommendResponse``) does not show."""


def answer_body(result: Recommendation) -> bytes:
    """The response JSON without its request id: the answer's dataclasses serialised by pydantic-core as
    they are, without building and validating ``RecommendResponse`` on the way (a quarter of the time,
    measured). The schema stays the contract: tests check the two give the same JSON for every kind
    of answer (known, cold start, degraded, suppressed offers, no explanation)."""
    return ANSWER.dump_json(result, exclude=NOT_PUBLIC)


def with_request_id(body: bytes, request_id: str) -> bytes:
    return b'{"request_id":"' + request_id.encode() + b'",' + body[1:]


class RequestContext:
    """Pure ASGI middleware: request id, body size limit, structured access log, metrics."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", request_id.encode())]
            await send(message)

        if _declared_length(scope) > self.max_body_bytes:
            await _too_large(request_id, self.max_body_bytes)(scope, receive, send_with_id)
        else:
            await self.app(scope, self._limited(receive, request_id), send_with_id)
        self._observe(scope, status["code"], time.perf_counter() - started, request_id)

    def _limited(self, receive: Receive, request_id: str) -> Receive:
        """Counts streamed body bytes too: a missing or false Content-Length does not get around the limit."""
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge()
            return message

        return limited_receive

    def _observe(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
        self.metrics.latency.labels(endpoint, scope["method"]).observe(seconds)
        if logger.isEnabledFor(logging.INFO) and endpoint not in OPEN_PATHS:
            logger.info("request", extra={"request_id": request_id, "method": scope["method"], "endpoint": endpoint,
                                          "status": status, "latency_ms": round(seconds * 1000, 2)})


class BodyTooLarge(Exception):
    """The request body streamed past the configured limit."""


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")[:64]
            if candidate.replace("-", "").isalnum():
                return candidate
    return uuid.uuid4().hex


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _too_large(request_id: str, limit: int) -> JSONResponse:
    return JSONResponse({"error": f"request body larger than {limit} bytes", "request_id": request_id},
                        status_code=413)


# --------------------------------------------------------------------------------------------------
# Dependencies
# --------------------------------------------------------------------------------------------------

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description=(
    "Required on every endpoint but /health and /metrics when API_KEYS is set; admin routes need an admin key."))


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's name and scope (``admin`` for everyone when no keys are set)."""

    name: str
    scope: KeyScope


async def identify_caller(request: Request, key: Annotated[str | None, Depends(api_key_header)]) -> Caller:
    """The caller's key, checked in constant time, then its rate limit (429 with Retry-After)."""
    access: Access = request.app.state.access
    if not access.keys:
        caller = Caller(f"address {request.client.host if request.client else 'unknown'}", "admin")
    elif key is None:
        raise HTTPException(401, "missing X-API-Key header")
    elif (found := find_key(access.keys, key)) is None:
        raise HTTPException(403, "invalid API key")
    else:
        caller = Caller(found.name, found.scope)
    wait = access.limiter.wait_seconds(caller.name)
    if wait:
        raise HTTPException(429, f"rate limit of {access.limiter.per_minute} requests per minute reached; "
                                 f"retry after {wait} s", headers={"Retry-After": str(wait)})
    return caller


async def require_admin(caller: Annotated[Caller, Depends(identify_caller)]) -> None:
    if not allows(caller.scope, "admin"):
        raise HTTPException(403, f"this route needs an admin key; {caller.name} can only read")


@dataclass(frozen=True)
class Access:
    keys: list[ApiKey]
    limiter: RateLimiter


async def ready_service(request: Request) -> RecommendationService:
    state: ServiceState = request.app.state.service_state
    if state.service is None:
        raise HTTPException(503, "service is starting" if state.failure is None else "service failed to start")
    return state.service


Service = Annotated[RecommendationService, Depends(ready_service)]


async def ready_interactions(request: Request, service: Service) -> Interactions | LogOff:
    """The decision log, once the service is ready (``service`` makes the route wait for that: the
    log is set up before the service)."""
    return request.app.state.service_state.interactions


Log = Annotated[Interactions | LogOff, Depends(ready_interactions)]


# --------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------

def create_app(settings: Settings | None = None,
               factory: Callable[[Settings], RecommendationService] = RecommendationService.start,
               on_failure: Callable[[str], None] = lambda reason: None) -> FastAPI:
    """The API; the service starts in the background when the app starts."""
    settings = settings or get_settings()
    state = ServiceState(answers=LruCache(settings.answer_cache_size))
    pool = shared_dir()  # set by the supervisor of WORKERS > 1 processes
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        background = ([started(start_service, state, settings, factory, on_failure)] if pool is None
                      else await join_pool(state, settings, factory, metrics, pool))
        yield
        state.stopping.set()
        # A thread still at work (loading the text models, reading the log) when the interpreter exits can
        # abort it: each gets the grace period to see ``stopping`` and end.
        for thread in background:
            await asyncio.to_thread(thread.join, settings.shutdown_grace_seconds)
        if pool is not None:
            mark_gone(pool)
        if state.interactions is not None:
            state.interactions.close()  # graceful shutdown flushes the decision log

    # FastAPIOffline: /docs and /redoc serve Swagger UI's and ReDoc's assets from the package, not a CDN
    app = FastAPIOffline(title="Next-best-product recommender", version="1.0.0", lifespan=lifespan,
                  description="Ranks the financial products to offer a customer next, explains each one, applies "
                              "the bank's rules and checks every answer for bias across gender, age and location.",
                  responses={503: {"model": ErrorResponse}})
    app.state.settings = settings
    app.state.access = Access(parse_api_keys(settings.api_keys), RateLimiter(settings.rate_limit_per_minute))
    app.state.service_state = state
    app.state.pool = pool
    app.state.metrics = metrics
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes, metrics=metrics)
    _add_error_handlers(app)
    # SIGHUP reloads this process in place; POST /admin/reload does too, or in a pool asks the supervisor to
    # send every worker SIGHUP
    app.state.reload_here = lambda: begin_reload(state, settings, factory)
    app.state.reload = app.state.reload_here if pool is None else begin_pool_reload
    _add_routes(app, metrics)
    from console import add_console  # the console builds on this module's dependencies: imported once they exist

    add_console(app)
    return app


def _add_routes(app: FastAPI, metrics: Metrics) -> None:
    """/health and /metrics stay open for probes and scrapers; every other route needs a key when keys are set."""
    key_errors = {status: {"model": ErrorResponse} for status in (401, 403, 429)}
    protected = APIRouter(dependencies=[Depends(identify_caller)], responses=key_errors)

    @protected.post("/recommend", response_model=RecommendResponse, tags=["recommendations"],
              responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
    async def recommend(body: RecommendRequest, request: Request, service: Service, log: Log) -> Any:
        """Ranked products for a known customer, or for a new one described by `profile`.

        Every answer carries scores, explanations, the business rules applied, the risk profile,
        the individual bias check and whether a fallback was used; products the contact policy held
        back are listed under `suppressed`. Every answer is recorded in the decision log.
        """
        known = service.knows(body.customer_id)
        if not known and body.profile is None:
            raise HTTPException(404, f"unknown customer {body.customer_id!r}; send a 'profile' to score a new customer")
        policy = service.rules.contact_policy
        contact = (log.history(body.customer_id, policy)
                   if log.reads_are_local or not log.needs_read(body.customer_id, policy)
                   else await run_in_threadpool(log.history, body.customer_id, policy))
        feedback = request.app.state.service_state.feedback
        cache = request.app.state.service_state.answers
        # id(service): an answer the old model finishes after a reload's swap is never served by the new one
        key = (id(service), body.customer_id, body.top_k, body.include_explanation, policy.answer_key(contact),
               feedback.version if feedback else None)
        cached = cache.get(key) if known else None
        if cached is not None:
            result, answer = cached
        elif known:
            result = service.recommend(body.customer_id, body.top_k, body.include_explanation, contact, feedback)
            answer = answer_body(result)
            cache.put(key, (result, answer))
        else:
            result = await run_in_threadpool(service.recommend_for_profile, body.customer_id, body.profile.fields(),
                                             body.profile.held_products, body.profile.posts, body.top_k,
                                             body.include_explanation, contact, feedback)
            answer = answer_body(result)
        recorded = (request.state.request_id, result, cached is not None, service.artifacts.fingerprint)
        if log.mode == "required":  # waits for the commit: off the event loop
            await run_in_threadpool(log.record, *recorded)
        else:
            log.record(*recorded)
        metrics.record_recommendation(result)
        return Response(with_request_id(answer, request.state.request_id), media_type="application/json")

    @protected.post("/feedback", response_model=FeedbackResponse, tags=["recommendations"],
                    responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse},
                               422: {"model": ErrorResponse}}, dependencies=[Depends(ready_interactions)])
    async def feedback(body: FeedbackRequest, request: Request) -> Any:
        """What the customer did with an offer: shown, clicked, accepted or declined (one final outcome).
        A final outcome moves this worker's scores at once (the feedback layer in /model)."""
        try:
            return await run_in_threadpool(request.app.state.service_state.take_feedback, body)
        except UnknownDecision as error:
            raise HTTPException(404, str(error)) from None
        except OutcomeConflict as error:
            raise HTTPException(409, str(error)) from None

    @protected.get("/customers/{customer_id}/decisions", response_model=DecisionsPage, tags=["analysts"])
    async def decisions(customer_id: Annotated[str, PathId], log: Log,
                        limit: Annotated[int, Query(ge=1, le=100)] = 20,
                        offset: Annotated[int, Query(ge=0, le=MAX_DECISIONS_OFFSET)] = 0) -> Any:
        """The customer's logged decisions and their outcomes, newest first, a page at a time."""
        page = await run_in_threadpool(log.decisions, customer_id, limit, offset)
        return DecisionsPage(customer_id=customer_id, limit=limit, offset=offset, decisions=page)

    @app.get("/health", response_model=HealthResponse, tags=["operations"],
             responses={503: {"model": HealthResponse}})
    async def health(request: Request, response: Response) -> Any:
        """Ready (200) once the models are loaded, in every worker when there are several; 503 while
        starting or after a failed start."""
        state: ServiceState = request.app.state.service_state
        pool, expected = request.app.state.pool, request.app.state.settings.workers
        workers = None if pool is None else {"ready": ready_workers(pool), "expected": expected}
        if state.service is not None and (workers is None or workers["ready"] >= expected):
            log = state.interactions.status()
            detail = None if log["healthy"] else (f"decision log ({log['mode']}) unhealthy: {log['last_error']}; "
                                                  f"{log['dropped']} records dropped")
            return HealthResponse(status="ready", ready=True, model_version=state.service.model.version_,
                                  detail=detail, decision_log=log, workers=workers)
        response.status_code = 503
        detail = state.failure or (f"{workers['ready']} of {expected} workers ready" if workers else None)
        return HealthResponse(status="failed" if state.failure else "starting", ready=False, detail=detail,
                              workers=workers)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics: requests and latency by endpoint and status, products served, bias failures,
        the decision log and the caches; with several workers, every worker's."""
        metrics.sample(request.app.state.service_state)
        pool = request.app.state.pool
        body = generate_latest(metrics.registry) if pool is None else aggregated_metrics(pool)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @protected.get("/customers/{customer_id}", response_model=CustomerViewResponse, tags=["analysts"],
             responses={404: {"model": ErrorResponse}})
    async def customer(customer_id: Annotated[str, PathId], service: Service) -> Any:
        """The unified customer view: profile and aggregates, products held, life events, risk profile."""
        try:
            return service.customer_view(customer_id)
        except UnknownCustomer:
            raise HTTPException(404, f"unknown customer {customer_id!r}") from None

    @protected.get("/products", response_model=list[ProductPublic], tags=["analysts"])
    async def products(service: Service) -> Any:
        """The product catalogue."""
        return service.products.astype(object).where(service.products.notna(), None).to_dict("records")

    @protected.get("/fairness", tags=["fairness"])
    async def fairness(service: Service) -> dict[str, Any]:
        """The latest AIF360 group audit (recommendations, holdings, held-out equal opportunity)."""
        return service.artifacts.audit

    @protected.post("/fairness/run", tags=["fairness"], dependencies=[Depends(require_admin)])
    async def rerun_fairness(request: Request, service: Service) -> dict[str, Any]:
        """Re-runs the group audit now and returns it. The audit calibrates the fairness mitigation's
        boosts again and puts them in force, so the answers cached under the old ones are dropped."""
        report = await run_in_threadpool(run_audit, service)
        request.app.state.service_state.answers.clear()
        return report

    @protected.get("/model", tags=["analysts"])
    async def model_card(request: Request, service: Service) -> dict[str, Any]:
        """Model card: version, training time, data fingerprint, data quality, offline metrics, fallbacks."""
        return service.model_card(request.app.state.service_state.feedback)

    admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=key_errors)

    @admin.post("/reload", status_code=202, responses={409: {"model": ErrorResponse}})
    async def reload(request: Request, service: Service) -> dict[str, Any]:
        """Loads the saved artifacts, the data and the rules again in the background (training if the
        data changed), then swaps them in: requests in flight finish on the old model, later ones get the
        new; a reload that fails keeps the old model serving. Follow it with `GET /admin/reload`."""
        try:
            return asdict(request.app.state.reload())
        except ReloadInProgress:
            raise HTTPException(409, "a reload is already running") from None

    @admin.get("/reload")
    async def reload_status(request: Request) -> dict[str, Any]:
        """The last reload: running, succeeded (with the model now serving) or failed, and why."""
        return asdict(request.app.state.service_state.reload_status)

    app.include_router(protected)
    app.include_router(admin)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [{"field": ".".join(str(part) for part in problem["loc"] if part != "body"),
                     "message": problem["msg"]} for problem in error.errors()]
        fields = ", ".join(p["field"] or "body" for p in problems)
        return JSONResponse({"error": f"invalid request: {fields}", "detail": problems,
                             "request_id": _id_of(request)}, status_code=422)

    @app.exception_handler(UnknownReference)
    async def unknown_reference(request: Request, error: UnknownReference) -> JSONResponse:
        return JSONResponse({"error": f"{error.field}: {error.message}", "request_id": _id_of(request)},
                            status_code=404)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": error.detail, "request_id": _id_of(request)}, status_code=error.status_code,
                            headers=error.headers)

    @app.exception_handler(DecisionLogUnavailable)
    async def decision_log_unavailable(request: Request, error: DecisionLogUnavailable) -> JSONResponse:
        return JSONResponse({"error": f"decision log unavailable: {error}", "request_id": _id_of(request)},
                            status_code=503)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
        limit = request.app.state.settings.max_body_bytes
        return JSONResponse({"error": f"request body larger than {limit} bytes", "request_id": _id_of(request)},
                            status_code=413)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.error("unhandled error", extra={"request_id": _id_of(request), "error": type(error).__name__})
        return JSONResponse({"error": "internal error", "request_id": _id_of(request)}, status_code=500)


def _id_of(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


PathId = __import__("fastapi").Path(pattern=CUSTOMER_ID_PATTERN, description="Customer id")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line with the record's structured fields; never request bodies or posts."""

    RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in self.RESERVED})
        if record.exc_info:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
