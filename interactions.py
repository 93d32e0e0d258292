"""The loop with the customer: every answer logged, feedback heard, and the contact policy fed.

The API answers; this module remembers. It turns an answer into a :class:`DecisionRecord` for the
decision log (no post text, no profile values: the log is an audit trail, not a copy of the
customer), takes feedback on what was offered, and reads a customer's history of offers and
answers back as the :class:`~business_rules.ContactHistory` the contact policy rules on. The store
is the database (SQLite by default, PostgreSQL by URL); the log writes to it off the request path.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Collection, NamedTuple, Sequence

from sqlalchemy.engine import make_url

from business_rules import ContactHistory, ContactPolicy
from caches import CacheStats, LruCache
from decision_store import (AppliedRule, DecisionLog, DecisionRecord, DecisionStore, FeedbackResult, FinalOutcome,
                            LOG_COUNTERS, OfferRecord, OutcomeCounts, SuppressedRecord, UnknownDecision, WriterProcess,
                            migrate)
from feedback_learning import FeedbackEvidence
from recommendation_service import Recommendation, RecommendationService
from settings import Settings

logger = logging.getLogger(__name__)

FEEDBACK_FLUSH_SECONDS = 2.0  # feedback on an answer still in the log's queue waits this long for it
REQUIRED_COMMIT_SECONDS = 2.0  # DECISION_LOG=required: an answer waits this long for its record's commit
# A poll looks back this far past its previous one: a batch stored (and its logged_at taken) just before the
# previous poll may commit after it, and another machine's clock may run this far behind.
POLL_OVERLAP = timedelta(seconds=10)
# A kept history is read again after this long: the policy's windows slide (a decline ages out after 30 days).
HISTORY_KEPT_SECONDS = 60.0
# This process's own decisions made within this long are not news to its poll (it counted them as it made
# them); one stored later, after a database outage, is: the kept history is read again.
OWN_DECISIONS_KNOWN = timedelta(seconds=60)


@dataclass(frozen=True)
class KeptHistory:
    """A customer's contact history as last read, with this process's offers since; ``history`` None: read
    it again. ``generation`` counts the changes, so a read that raced one is not kept."""

    history: ContactHistory | None
    generation: int
    read_at: float  # time.monotonic()


class DecisionLogUnavailable(RuntimeError):
    """The log cannot serve the call: ``DECISION_LOG=required`` and the record cannot be taken (queue full or
    database failing), or ``DECISION_LOG=off`` and the call needs the log (feedback, the decision history)."""


def open_interactions(settings: Settings) -> Interactions | LogOff:
    """The decision log the settings ask for: the database's, or none at all (``DECISION_LOG=off``)."""
    return LogOff() if settings.decision_log == "off" else Interactions(settings)


class ContactIndex:
    """Which customers the decision log may hold a contact history for, kept in memory so that the
    contact policy reads the database only for them: most answers go to customers the bank has not
    offered anything lately, and for them the read found nothing.

    It is a superset, never a subset, of the customers with a history over the policy's windows:
    loaded from the log at start-up, told of this process's decisions and feedback before they are
    queued, and told of other processes' by a background poll every ``poll_seconds``. A customer whose
    history ages out of the windows stays in it (a read that finds nothing, as before). Whenever the
    index cannot be sure (not loaded yet, the last poll failed, more than ``capacity`` customers, or a
    policy with wider windows than it was loaded for), every customer counts as having a history.

    It also keeps the histories last read (up to ``histories`` customers, for ``HISTORY_KEPT_SECONDS``),
    so a customer asked again is not read again: this process's own decisions are added to a kept history
    as they are made (an offer without an answer yet), and a kept history is dropped when feedback is
    stored for the customer or the poll finds another process's decision or feedback for them. A history
    is kept only if nothing changed it while it was being read (a generation per customer)."""

    def __init__(self, store: DecisionStore, capacity: int, poll_seconds: float, histories: int, signature: str):
        """``signature``: the name this process's writer signs its decisions with; the poll leaves them out."""
        self._store = store
        self._signature = signature
        self._capacity = capacity
        self._poll_seconds = poll_seconds
        self._customers: set[str] = set()
        self._windows: tuple[int, int] | None = None  # the policy's windows (days) it was loaded for
        self._polled_since: datetime | None = None
        self._poll_failed = False
        self._saturated = capacity == 0
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._reads_spared = self._reads = 0  # approximate under threads: a lost increment only blurs /metrics
        self._kept: LruCache[str, KeptHistory] = LruCache(histories)
        self._changing = threading.Lock()  # a generation's check and the store it guards, as one step

    def load(self, policy: ContactPolicy) -> None:
        """Reads the customers with a history over ``policy``'s windows and starts polling (again, after a
        reload of the rules: the windows may have grown). A failed read leaves the index unsure."""
        windows = (policy.window_days, policy.suppress_after_decline_days)
        if windows == self._windows or self._saturated:
            return
        started = datetime.now(timezone.utc)
        try:
            customers = self._store.contacted_customers(started - timedelta(days=policy.window_days),
                                                        started - timedelta(days=policy.suppress_after_decline_days))
        except Exception as error:
            logger.warning("contact index not loaded; the contact policy reads the log for every answer",
                           extra={"error": type(error).__name__})
            return
        self._add(customers)
        self._kept.clear()  # read over the old windows
        self._polled_since = started - POLL_OVERLAP
        self._windows = windows
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll_until_stopped, name="contact-index-poll", daemon=True)
            self._poller.start()

    def may_have_history(self, customer_id: str, policy: ContactPolicy) -> bool:
        """False only when the log surely holds nothing the policy would rule on for this customer."""
        return not self._sure(policy) or customer_id in self._customers

    def kept(self, customer_id: str, policy: ContactPolicy) -> tuple[ContactHistory | None, int]:
        """The customer's history as last read and kept up to date (None: read it), and the generation to
        hand back to ``keep`` with what the read finds."""
        entry = self._kept.get(customer_id)
        if entry is None:
            return None, 0
        fresh = entry.history is not None and time.monotonic() - entry.read_at < HISTORY_KEPT_SECONDS
        usable = (fresh and self._sure(policy)
                  and (policy.window_days, policy.suppress_after_decline_days) == self._windows)
        return (entry.history if usable else None), entry.generation

    def keep(self, customer_id: str, history: ContactHistory, generation: int) -> None:
        """Keeps a history just read, unless something changed the customer's since the read began."""
        with self._changing:
            entry = self._kept.get(customer_id)
            if (entry.generation if entry else 0) == generation:
                self._kept.put(customer_id, KeptHistory(history, generation, time.monotonic()))

    def decided(self, customer_id: str, products: Sequence[str]) -> None:
        """This process is about to log an answer offering ``products``: the customer joins the index, and a
        kept history counts the new offers as unanswered, as the log will once the writer stores them (a
        customer the log surely held nothing for starts one: these offers are all it will hold)."""
        first_contact = self._loaded_and_sure() and customer_id not in self._customers
        self._add((customer_id,))
        with self._changing:
            entry = self._kept.get(customer_id)
            generation = (entry.generation if entry else 0) + 1
            history = ContactHistory() if first_contact and entry is None else entry.history if entry else None
            if history is not None:
                unanswered = dict(history.unanswered_offers)
                for product in products:
                    unanswered[product] = unanswered.get(product, 0) + 1
                history = ContactHistory(history.declined_recently, unanswered, history.accepted)
            read_at = entry.read_at if entry else time.monotonic()
            self._kept.put(customer_id, KeptHistory(history, generation, read_at))

    def changed(self, customer_id: str) -> None:
        """The log holds something new for the customer (feedback stored, another process's decision): the
        next answer reads their history again."""
        self._add((customer_id,))
        with self._changing:
            entry = self._kept.get(customer_id)
            self._kept.put(customer_id, KeptHistory(None, (entry.generation if entry else 0) + 1, 0.0))

    def count_lookup(self, read_needed: bool) -> None:
        """One answer's look-up, for /metrics: a hit spared the answer a database read."""
        if read_needed:
            self._reads += 1
        else:
            self._reads_spared += 1

    def stats(self) -> dict[str, CacheStats]:
        """The index (a hit: an answer spared a read) and the kept histories (a hit: a customer asked again)."""
        return {"contact_index": CacheStats(len(self._customers), self._capacity, self._reads_spared, self._reads),
                "contact_histories": self._kept.stats()}

    def status(self) -> dict[str, Any]:
        """For /metrics and /health: how many customers it holds and whether it can be trusted."""
        return {"customers": len(self._customers), "capacity": self._capacity, "saturated": self._saturated,
                "poll_failed": self._poll_failed, "loaded": self._windows is not None}

    def close(self) -> None:
        self._stop.set()

    def _sure(self, policy: ContactPolicy) -> bool:
        return (self._loaded_and_sure() and policy.window_days <= self._windows[0]
                and policy.suppress_after_decline_days <= self._windows[1])

    def _loaded_and_sure(self) -> bool:
        return not self._saturated and not self._poll_failed and self._windows is not None

    def _add(self, customers: Collection[str]) -> None:
        if self._saturated:
            return
        self._customers.update(customers)  # one C call: atomic for the request path's membership test
        if len(self._customers) > self._capacity:
            self._saturated = True
            self._customers = set()
            logger.warning("contact index full; the contact policy reads the log for every answer",
                           extra={"capacity": self._capacity})

    def _poll_until_stopped(self) -> None:
        while not self._stop.wait(self._poll_seconds) and not self._saturated:
            self._poll()

    def _poll(self) -> None:
        """Adds the customers of rows logged since the last poll, looking ``POLL_OVERLAP`` further back; a
        failed poll leaves the watermark where it was, so the next one that succeeds covers the gap. This
        process's decisions made in the last ``OWN_DECISIONS_KNOWN`` are not news (it told the index of them
        as it made them); one stored later than that (a batch retried through an outage) is."""
        started = datetime.now(timezone.utc)
        try:
            news = self._store.news_since(self._polled_since, self._signature, started - OWN_DECISIONS_KNOWN)
        except Exception as error:
            if not self._poll_failed:
                logger.warning("contact index poll failed; the contact policy reads the log for every answer",
                               extra={"error": type(error).__name__})
            self._poll_failed = True
            return
        for customer_id in news:
            self.changed(customer_id)
        self._polled_since = started - POLL_OVERLAP
        self._poll_failed = False


class Interactions:
    """The decision store and its log for one process."""

    def __init__(self, settings: Settings):
        url = settings.resolved_database_url
        migrate(url)
        self.mode = settings.decision_log
        # A SQLite read in WAL mode never waits for the writer and costs less than a hop to the thread pool;
        # a PostgreSQL read crosses the network, so the API makes it off the event loop.
        self.reads_are_local = make_url(url).get_backend_name() == "sqlite"
        signature = uuid.uuid4().hex  # this process's, on every decision its writer stores
        self.store = DecisionStore(url)
        self.writer = WriterProcess(url, signature)
        self.log = DecisionLog(self.writer, settings.decision_log, settings.decision_queue_size)
        self.contacts = ContactIndex(self.store, settings.contact_index_size, settings.contact_poll_seconds,
                                     settings.contact_history_cache_size, signature)

    def prepare_contacts(self, policy: ContactPolicy) -> None:
        """Loads the contact index for the rules' policy (at start-up and after a reload of the rules)."""
        self.contacts.load(policy)

    def needs_read(self, customer_id: str, policy: ContactPolicy) -> bool:
        """Whether ``history`` has to read the database for this customer (the API then reads off the event
        loop when the database is remote)."""
        return self.contacts.may_have_history(customer_id, policy)

    def history(self, customer_id: str, policy: ContactPolicy) -> ContactHistory | None:
        """The customer's offers and answers over the policy's windows; None when the log holds none, or when
        the database cannot say (best effort: the answer goes out without the policy, and /health says why)."""
        read_needed = self.contacts.may_have_history(customer_id, policy)
        self.contacts.count_lookup(read_needed)
        if not read_needed:
            return None
        kept, generation = self.contacts.kept(customer_id, policy)
        if kept is not None:
            return kept
        now = datetime.now(timezone.utc)
        try:
            reads = self.store.contact_reads(customer_id, now - timedelta(days=policy.suppress_after_decline_days),
                                             now - timedelta(days=policy.window_days))
        except Exception as error:
            if self.mode == "required":
                raise DecisionLogUnavailable("the decision log's database cannot be read") from error
            logger.warning("contact history unavailable; answering without the contact policy",
                           extra={"error": type(error).__name__})
            return None
        history = ContactHistory(reads.declined, reads.unanswered, reads.accepted)
        self.contacts.keep(customer_id, history, generation)
        return history

    def record(self, request_id: str, answer: Recommendation, cached: bool, fingerprint: str) -> None:
        """Queue the answer for the log. In ``required`` mode the answer is acknowledged only once its
        record is committed (answers waiting together share one commit): a crash after the answer
        went out loses nothing; a record that cannot be taken or written in time refuses the answer."""
        self.contacts.decided(answer.customer_id, [item.product_id for item in answer.recommendations])
        pending = AnsweredRequest(request_id, answer, cached, fingerprint, datetime.now(timezone.utc))
        # best_effort: the writer thread builds the record; required: built here, so that a record the
        # database would refuse fails this answer rather than a batch of acknowledged ones
        taken = self.log.submit(pending.decision_record() if self.mode == "required" else pending)
        if self.mode != "required":
            return
        if not taken:
            raise DecisionLogUnavailable("the decision log cannot take the record (queue full or database failing)")
        if not self.log.flush(REQUIRED_COMMIT_SECONDS):
            raise DecisionLogUnavailable(f"the record was not written within {REQUIRED_COMMIT_SECONDS} s")

    def feedback(self, request_id: str, customer_id: str, product_id: str, outcome: str) -> FeedbackResult:
        """Store the customer's answer to an offer. An answer still queued for the log is waited for
        (briefly), so feedback right after an answer is not refused as unknown."""
        try:
            return self._stored_feedback(request_id, customer_id, product_id, outcome)
        except UnknownDecision:
            if not self.log.flush(FEEDBACK_FLUSH_SECONDS):
                raise
            return self._stored_feedback(request_id, customer_id, product_id, outcome)

    def _stored_feedback(self, request_id: str, customer_id: str, product_id: str, outcome: str) -> FeedbackResult:
        stored = self.store.add_feedback(request_id, customer_id, product_id, outcome)
        self.contacts.changed(customer_id)  # after the commit: the next read sees it
        return stored

    def decisions(self, customer_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
        """The customer's decisions, newest first, each offer with the outcomes it received."""
        pages = self.store.decisions_of(customer_id, limit, offset)
        return [_decision_view(history.decision, history.feedback) for history in pages]

    def final_outcomes(self, since: datetime) -> list[FinalOutcome] | None:
        """Offers accepted or declined since ``since``; None when the database cannot say (the service
        keeps the evidence it has, and /health says why through the log's status)."""
        try:
            return self.store.final_outcomes(since)
        except Exception as error:
            logger.warning("customers' answers unavailable; keeping the feedback evidence as it was",
                           extra={"error": type(error).__name__})
            return None

    def status(self) -> dict[str, Any]:
        return {**self.log.status(), "contact_index": self.contacts.status()}

    def contact_stats(self) -> dict[str, CacheStats]:
        return self.contacts.stats()

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is queued (graceful shutdown), then release the database."""
        self.contacts.close()
        self.log.close(timeout)
        self.writer.close()
        self.store.close()


class LogOff:
    """``DECISION_LOG=off``: nothing is recorded and no contact policy applies, for a load test or a sandbox
    (never for answers that reach customers: those are decisions a bank must be able to show). Feedback and
    the decision history answer 503, saying the log is off; /health and /metrics say so too."""

    mode = "off"
    reads_are_local = True

    def prepare_contacts(self, policy: ContactPolicy) -> None:
        return None

    def needs_read(self, customer_id: str, policy: ContactPolicy) -> bool:
        return False

    def history(self, customer_id: str, policy: ContactPolicy) -> None:
        return None

    def record(self, request_id: str, answer: Recommendation, cached: bool, fingerprint: str) -> None:
        return None

    def feedback(self, request_id: str, customer_id: str, product_id: str, outcome: str) -> FeedbackResult:
        raise DecisionLogUnavailable(LOG_OFF)

    def decisions(self, customer_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
        raise DecisionLogUnavailable(LOG_OFF)

    def final_outcomes(self, since: datetime) -> list[FinalOutcome]:
        return []

    def status(self) -> dict[str, Any]:
        return {"mode": self.mode, "healthy": True, "queue_depth": 0, "queue_capacity": 0, "retrying": 0,
                **dict.fromkeys(LOG_COUNTERS, 0),
                "last_error": None, "last_error_at": None}

    def contact_stats(self) -> dict[str, CacheStats]:
        return {}

    def close(self, timeout: float = 5.0) -> None:
        return None


LOG_OFF = "DECISION_LOG=off: nothing is recorded, so there is no feedback to take and no history to show"


def feedback_evidence(log: Interactions | LogOff, service: RecommendationService, strength: float
                      ) -> FeedbackEvidence | None:
    """The evidence of the customers' answers since the model was trained (``strength``:
    FEEDBACK_PRIOR_STRENGTH); None when the database cannot be read."""
    trained_at = service.artifacts.trained_at
    outcomes = log.final_outcomes(datetime.fromisoformat(trained_at))
    if outcomes is None:
        return None
    return FeedbackEvidence.from_outcomes(service.product_ids, outcomes, service.segments, strength, trained_at)


def outcome_report(store: DecisionStore, service: RecommendationService, since: datetime | None = None
                   ) -> dict[str, Any]:
    """Acceptance, decline and suppression rates per product, for every customer and per protected
    group: how the bank's offers fare, and whether they fare alike across groups (acceptance rates that
    differ by group are a fairness signal the audit should show too). Acceptance and decline rates are
    shares of offers made; the suppression rate is the share of answers the contact policy held the
    product back from. Groups come from the bank's customer view; cold-start customers count in the
    totals only."""
    view = service.base.view
    report: dict[str, Any] = {"since": since.isoformat() if since else None,
                              "all_customers": _rates(store, since, None), "by_group": {}}
    for attribute in service.settings.protected_attributes:
        groups = view[attribute.column].dropna().astype(str)
        report["by_group"][attribute.name] = {
            group: _rates(store, since, members.index.tolist()) for group, members in groups.groupby(groups)}
    return report


def _rates(store: DecisionStore, since: datetime | None, customers: list[str] | None) -> dict[str, Any]:
    counts = store.outcome_counts(since, customers)
    answers, suppressed = store.suppression_counts(since, customers)
    rates = {}
    for product in sorted(set(counts) | set(suppressed)):
        offers = counts.get(product, OutcomeCounts(offered=0))
        rates[product] = {"offered": offers.offered, "acceptance_rate": _share(offers.accepted, offers.offered),
                          "decline_rate": _share(offers.declined, offers.offered),
                          "suppression_rate": _share(suppressed[product], answers)}
    return {"answers": answers, "products": rates}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


class AnsweredRequest(NamedTuple):
    """An answer as its request leaves it for the log (a ``PendingDecision``): the answer is immutable, so
    the writer thread can read it later and build the record there, off the request path."""

    request_id: str
    answer: Recommendation
    cached: bool
    fingerprint: str
    answered_at: datetime

    def decision_record(self) -> DecisionRecord:
        """What the audit trail keeps of one answer: ids, model, scores, rules by name, bias and fallback."""
        answer = self.answer
        offers = tuple(OfferRecord(item.product_id, item.rank, item.score, item.adjusted_score, item.scored_by,
                                   tuple(AppliedRule(e.rule, e.effect, e.factor) for e in item.rules))
                       for item in answer.recommendations)
        return DecisionRecord(request_id=self.request_id, customer_id=answer.customer_id,
                              created_at=self.answered_at, cold_start=answer.cold_start, cached=self.cached,
                              model_version=answer.model_version, data_fingerprint=self.fingerprint,
                              bias_check_passed=answer.bias_check.passed, fallback_used=answer.fallback.used,
                              degraded=answer.fallback.degraded, fallback_reasons=answer.fallback.reasons,
                              offers=offers,
                              suppressed=tuple(SuppressedRecord(s.product_id, s.policy) for s in answer.suppressed))


def _decision_view(decision: DecisionRecord, feedback: dict[str, tuple[FeedbackResult, ...]]) -> dict[str, Any]:
    view = {k: v for k, v in asdict(decision).items() if k != "offers"}
    view["offers"] = [{**asdict(offer), "outcomes": [{"outcome": f.outcome, "at": f.created_at.isoformat()}
                                                     for f in feedback.get(offer.product_id, ())]}
                      for offer in decision.offers]
    view["created_at"] = decision.created_at.isoformat()
    return view
