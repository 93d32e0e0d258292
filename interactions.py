"""The loop with the customer: every answer logged, feedback heard, and the contact policy fed.

The API answers; this module remembers. It turns an answer into a :class:`DecisionRecord` for the
decision log (no post text, no profile values: the log is an audit trail, not a copy of the
customer), takes feedback on what was offered, and reads a customer's history of offers and
answers back as the :class:`~business_rules.ContactHistory` the contact policy rules on. The store
is the database (SQLite by default, PostgreSQL by URL); the log writes to it off the request path.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.engine import make_url

from business_rules import ContactHistory, ContactPolicy
from decision_store import (AppliedRule, DecisionLog, DecisionRecord, DecisionStore, FeedbackResult, FinalOutcome,
                            LOG_COUNTERS, OfferRecord, OutcomeCounts, SuppressedRecord, UnknownDecision, migrate)
from feedback_learning import FeedbackEvidence
from recommendation_service import Recommendation, RecommendationService
from settings import Settings

logger = logging.getLogger(__name__)

FEEDBACK_FLUSH_SECONDS = 2.0  # feedback on an answer still in the log's queue waits this long for it
REQUIRED_COMMIT_SECONDS = 2.0  # DECISION_LOG=required: an answer waits this long for its record's commit


class DecisionLogUnavailable(RuntimeError):
    """The log cannot serve the call: ``DECISION_LOG=required`` and the record cannot be taken (queue full or
    database failing), or ``DECISION_LOG=off`` and the call needs the log (feedback, the decision history)."""


def open_interactions(settings: Settings) -> Interactions | LogOff:
    """The decision log the settings ask for: the database's, or none at all (``DECISION_LOG=off``)."""
    return LogOff() if settings.decision_log == "off" else Interactions(settings)


class Interactions:
    """The decision store and its log for one process."""

    def __init__(self, settings: Settings):
        url = settings.resolved_database_url
        migrate(url)
        self.mode = settings.decision_log
        # A SQLite read in WAL mode never waits for the writer and costs less than a hop to the thread pool;
        # a PostgreSQL read crosses the network, so the API makes it off the event loop.
        self.reads_are_local = make_url(url).get_backend_name() == "sqlite"
        self.store = DecisionStore(url)
        self.log = DecisionLog(self.store, settings.decision_log, settings.decision_queue_size)

    def history(self, customer_id: str, policy: ContactPolicy, now: datetime | None = None) -> ContactHistory | None:
        """The customer's offers and answers over the policy's windows; None when the database cannot
        say (best effort: the answer goes out without the policy, and /health says why)."""
        now = now or datetime.now(timezone.utc)
        try:
            reads = self.store.contact_reads(customer_id, now - timedelta(days=policy.suppress_after_decline_days),
                                             now - timedelta(days=policy.window_days))
        except Exception as error:
            if self.mode == "required":
                raise DecisionLogUnavailable("the decision log's database cannot be read") from error
            logger.warning("contact history unavailable; answering without the contact policy",
                           extra={"error": type(error).__name__})
            return None
        return ContactHistory(reads.declined, reads.unanswered, reads.accepted)

    def record(self, request_id: str, answer: Recommendation, cached: bool, fingerprint: str) -> None:
        """Queue the answer for the log. In ``required`` mode the answer is acknowledged only once its
        record is committed (answers waiting together share one commit): a crash after the answer
        went out loses nothing; a record that cannot be taken or written in time refuses the answer."""
        taken = self.log.submit(decision_record(request_id, answer, cached, fingerprint))
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
            return self.store.add_feedback(request_id, customer_id, product_id, outcome)
        except UnknownDecision:
            if not self.log.flush(FEEDBACK_FLUSH_SECONDS):
                raise
            return self.store.add_feedback(request_id, customer_id, product_id, outcome)

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
        return self.log.status()

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is queued (graceful shutdown), then release the database."""
        self.log.close(timeout)
        self.store.close()


class LogOff:
    """``DECISION_LOG=off``: nothing is recorded and no contact policy applies, for a load test or a sandbox
    (never for answers that reach customers: those are decisions a bank must be able to show). Feedback and
    the decision history answer 503, saying the log is off; /health and /metrics say so too."""

    mode = "off"
    reads_are_local = True

    def history(self, customer_id: str, policy: ContactPolicy, now: datetime | None = None) -> None:
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


def decision_record(request_id: str, answer: Recommendation, cached: bool, fingerprint: str) -> DecisionRecord:
    """What the audit trail keeps of one answer: ids, model, scores, rules by name, bias and fallback."""
    offers = tuple(OfferRecord(item.product_id, item.rank, item.score, item.adjusted_score, item.scored_by,
                               tuple(AppliedRule(e.rule, e.effect, e.factor) for e in item.rules))
                   for item in answer.recommendations)
    return DecisionRecord(request_id=request_id, customer_id=answer.customer_id,
                          created_at=datetime.now(timezone.utc), cold_start=answer.cold_start, cached=cached,
                          model_version=answer.model_version, data_fingerprint=fingerprint,
                          bias_check_passed=answer.bias_check.passed, fallback_used=answer.fallback.used,
                          degraded=answer.fallback.degraded, fallback_reasons=answer.fallback.reasons, offers=offers,
                          suppressed=tuple(SuppressedRecord(s.product_id, s.policy) for s in answer.suppressed))


def _decision_view(decision: DecisionRecord, feedback: dict[str, tuple[FeedbackResult, ...]]) -> dict[str, Any]:
    view = {k: v for k, v in asdict(decision).items() if k != "offers"}
    view["offers"] = [{**asdict(offer), "outcomes": [{"outcome": f.outcome, "at": f.created_at.isoformat()}
                                                     for f in feedback.get(offer.product_id, ())]}
                      for offer in decision.offers]
    view["created_at"] = decision.created_at.isoformat()
    return view
