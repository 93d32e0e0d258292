"""The decision log's storage and writer (issue 12), run against SQLite and against a real PostgreSQL
server started by the tests (pgserver): the same tests on both, no mock database.

Faults are real ones: the SQLite file's directory moved away, the PostgreSQL server stopped; and
the writer is held inside a write by an Event the test controls, so a full queue is a known state
rather than a race against the clock.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator, Sequence

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import ValidationError
from sqlalchemy import create_engine, inspect
from sqlalchemy.exc import OperationalError

import decision_store
from business_rules import ContactPolicy
from decision_store import (MIGRATIONS_DIR, AppliedRule, Base, ContactReads, DecisionLog, DecisionRecord, DecisionSink,
                            DecisionStore, OfferRecord, OutcomeConflict, OutcomeCounts, UnknownDecision, WriterProcess,
                            migrate)
from interactions import ContactIndex, Interactions
from settings import Settings
from tests.utils.databases import Backend

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
WAIT_S = 20  # longest any wait may take before the test fails; a healthy run takes a fraction of it
HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


@pytest.fixture
def store(backend: Backend) -> Iterator[DecisionStore]:
    migrate(backend.url)
    opened = DecisionStore(backend.url)
    yield opened
    opened.close()


@pytest.fixture(params=["thread", "process"])
def sink(request: pytest.FixtureRequest, backend: Backend, store: DecisionStore) -> Iterator[DecisionSink]:
    """Where the log writes: the store itself (in the writer thread) or the service's writer process."""
    if request.param == "thread":
        yield store
        return
    writer = WriterProcess(backend.url)
    yield writer
    writer.close()


def decision(number: int, customer: str = "C-1", at: datetime = NOW,
             products: Sequence[str] = ("loan", "card")) -> DecisionRecord:
    offers = tuple(OfferRecord(product, rank, round(0.5 / rank, 5), round(0.6 / rank, 5), "gbm",
                               (AppliedRule("stated_need", "boost", 1.5),) if rank == 1 else ())
                   for rank, product in enumerate(products, start=1))
    return DecisionRecord(request_id=f"req-{number}", customer_id=customer, created_at=at, cold_start=False,
                          cached=False, model_version="2.0.0", data_fingerprint="f" * 24, bias_check_passed=True,
                          fallback_used=False, degraded=False, fallback_reasons=(), offers=offers)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Waits for a state the writer thread reaches on its own; fails with ``what`` if it never does."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


class HeldStore:
    """A store whose writes wait until the test lets them through: while the writer holds a batch
    inside ``record``, the queue's depth is exactly what the test put there."""

    def __init__(self, store: DecisionStore):
        self.store = store
        self.writing = threading.Event()
        self.release = threading.Event()

    def record(self, decisions: Sequence[DecisionRecord]) -> int:
        self.writing.set()
        if not self.release.wait(WAIT_S):
            raise TimeoutError("the test never released the write")
        return self.store.record(decisions)


def stored_ids(store: DecisionStore, customer: str = "C-1") -> set[str]:
    return {history.decision.request_id for history in store.decisions_of(customer, limit=1000)}


# ----------------------------------------------------------------------------------------- schema


def test_migrating_twice_is_a_no_op(backend: Backend, store: DecisionStore) -> None:
    store.record([decision(1)])
    engine = create_engine(backend.url)
    with engine.connect() as connection:
        before = {table: inspect(connection).get_columns(table) for table in ("decisions", "offers", "feedback")}
    migrate(backend.url)
    with engine.connect() as connection:
        after = {table: inspect(connection).get_columns(table) for table in ("decisions", "offers", "feedback")}
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    assert repr(after) == repr(before)
    assert revision == HEAD
    assert stored_ids(store) == {"req-1"}


def test_workers_starting_together_migrate_in_turn(backend: Backend) -> None:
    """Each worker process migrates at start-up; on a fresh database they would race to create the
    same tables (PostgreSQL refuses the loser) without the migration lock."""
    root = Path(decision_store.__file__).resolve().parent
    start_up = f"import decision_store; decision_store.migrate({backend.url!r})"
    workers = [subprocess.Popen([sys.executable, "-c", start_up], cwd=root, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    errors = [worker.communicate(timeout=WAIT_S * 3)[1][-300:] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], errors
    engine = create_engine(backend.url)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == HEAD
    engine.dispose()


def test_the_models_and_the_migrations_agree(backend: Backend, store: DecisionStore) -> None:
    engine = create_engine(backend.url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_nothing_stored_holds_post_text_or_profile_values(backend: Backend, store: DecisionStore) -> None:
    """Every column is named here: a new one has to be added on purpose, after asking whether it copies
    the customer."""
    engine = create_engine(backend.url)
    with engine.connect() as connection:
        columns = {table: {column["name"] for column in inspect(connection).get_columns(table)}
                   for table in ("decisions", "offers", "feedback")}
    engine.dispose()
    assert columns == {
        "decisions": {"request_id", "created_at", "customer_id", "cold_start", "cached", "model_version",
                      "data_fingerprint", "bias_check_passed", "fallback_used", "degraded", "fallback_reasons",
                      "suppressed",  # product ids and policy names
                      "logged_at", "logged_by"},  # when and by which process (a random name) it was stored
        "offers": {"request_id", "product_id", "rank", "score", "adjusted_score", "scored_by", "rules"},
        "feedback": {"feedback_id", "request_id", "product_id", "customer_id", "outcome", "created_at"},
    }
    personal = ("post", "text", "profile", "age", "gender", "income", "location", "occupation", "name",
                "interest", "preference", "need", "explanation", "evidence", "reason")
    named = {name for table in columns.values() for name in table}
    assert not {name for name in named for word in personal if word in name} - {"fallback_reasons"}


# -------------------------------------------------------------------------------------- decisions


def test_decisions_come_back_newest_first_one_page_at_a_time(store: DecisionStore) -> None:
    eastern = timezone(timedelta(hours=-5))
    five = [decision(n, at=(NOW + timedelta(minutes=n)).astimezone(eastern if n == 5 else timezone.utc))
            for n in (3, 1, 5, 2, 4)]
    assert store.record(five + [decision(9, customer="C-2")]) == 6

    pages = [store.decisions_of("C-1", limit=2, offset=offset) for offset in (0, 2, 4, 6)]

    assert [[h.decision.request_id for h in page] for page in pages] == [
        ["req-5", "req-4"], ["req-3", "req-2"], ["req-1"], []]
    newest = pages[0][0]
    assert newest.decision == decision(5, at=NOW + timedelta(minutes=5))  # the same instant, in UTC
    assert newest.decision.created_at.tzinfo == timezone.utc
    assert newest.decision.offers[0].rules == (AppliedRule("stated_need", "boost", 1.5),)
    assert newest.feedback == {"loan": (), "card": ()}


def test_a_decision_stored_already_is_not_stored_twice(store: DecisionStore) -> None:
    assert store.record([decision(1), decision(2)]) == 2
    assert store.record([decision(2), decision(3), decision(3)]) == 1
    assert stored_ids(store) == {"req-1", "req-2", "req-3"}


def test_a_record_the_database_would_refuse_is_refused_before_it_is_queued() -> None:
    with pytest.raises(ValueError, match="time zone"):
        decision(1, at=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="offers a product twice"):
        decision(1, products=("loan", "loan"))
    with pytest.raises(ValueError, match="customer_id"):
        decision(1, customer="C" * 65)


# --------------------------------------------------------------------------------------- feedback


def test_an_offer_ends_once(store: DecisionStore) -> None:
    store.record([decision(1)])
    store.add_feedback("req-1", "C-1", "loan", "shown", at=NOW + timedelta(seconds=1))
    declined = store.add_feedback("req-1", "C-1", "loan", "declined", at=NOW + timedelta(seconds=2))

    for second in ("accepted", "declined"):
        with pytest.raises(OutcomeConflict, match="already has the final outcome 'declined'") as conflict:
            store.add_feedback("req-1", "C-1", "loan", second)
        assert conflict.value.existing == declined
    store.add_feedback("req-1", "C-1", "loan", "clicked", at=NOW + timedelta(seconds=3))

    history = store.decisions_of("C-1")[0]
    assert [item.outcome for item in history.feedback["loan"]] == ["shown", "declined", "clicked"]
    assert history.feedback["card"] == ()


def test_the_database_itself_allows_one_final_outcome(store: DecisionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two final outcomes racing both pass the check before either is stored; the unique index decides."""
    store.record([decision(1)])
    store.add_feedback("req-1", "C-1", "card", "accepted")
    monkeypatch.setattr(decision_store, "_refuse_second_final_outcome", lambda *args: None)
    with pytest.raises(OutcomeConflict):
        store.add_feedback("req-1", "C-1", "card", "declined")


def test_feedback_on_what_was_not_offered_to_this_customer_is_unknown(store: DecisionStore) -> None:
    store.record([decision(1), decision(2, customer="C-2")])
    with pytest.raises(UnknownDecision, match="no decision 'req-404'"):
        store.add_feedback("req-404", "C-1", "loan", "accepted")
    with pytest.raises(UnknownDecision, match="no decision 'req-2' for customer 'C-1'"):
        store.add_feedback("req-2", "C-1", "loan", "accepted")
    with pytest.raises(UnknownDecision, match="did not offer 'mortgage'"):
        store.add_feedback("req-1", "C-1", "mortgage", "accepted")
    with pytest.raises(ValueError, match="outcome must be one of"):
        store.add_feedback("req-1", "C-1", "loan", "maybe")
    assert store.decisions_of("C-1")[0].feedback == {"loan": (), "card": ()}


def test_what_the_contact_policy_reads(store: DecisionStore) -> None:
    month_ago, week_ago = NOW - timedelta(days=30), NOW - timedelta(days=7)
    store.record([decision(1, at=month_ago), decision(2, at=week_ago), decision(3, at=NOW),
                  decision(4, at=NOW, products=("savings",)), decision(5, customer="C-2", at=NOW)])
    store.add_feedback("req-1", "C-1", "loan", "declined", at=month_ago)
    store.add_feedback("req-2", "C-1", "loan", "declined", at=week_ago)
    store.add_feedback("req-3", "C-1", "card", "shown", at=NOW)
    store.add_feedback("req-4", "C-1", "savings", "accepted", at=NOW)
    store.add_feedback("req-5", "C-2", "card", "accepted", at=NOW)

    # loan: req-3 unanswered (req-2 was declined); card: req-2 unanswered (req-3 was shown)
    assert store.contact_reads("C-1", month_ago, week_ago) == ContactReads(
        declined=frozenset({"loan"}), unanswered={"loan": 1, "card": 1}, accepted=frozenset({"savings"}))
    assert store.contact_reads("C-1", week_ago + timedelta(seconds=1), month_ago) == ContactReads(
        declined=frozenset(), unanswered={"loan": 1, "card": 2}, accepted=frozenset({"savings"}))
    assert store.contact_reads("C-3", month_ago, month_ago) == ContactReads(frozenset(), {}, frozenset())


def test_outcome_counts_per_product_for_everyone_or_one_group(store: DecisionStore) -> None:
    store.record([decision(1), decision(2), decision(3, customer="C-2"), decision(4, at=NOW - timedelta(days=90))])
    store.add_feedback("req-1", "C-1", "loan", "shown")
    store.add_feedback("req-1", "C-1", "loan", "shown")
    store.add_feedback("req-1", "C-1", "loan", "accepted")
    store.add_feedback("req-3", "C-2", "loan", "declined")

    assert store.outcome_counts(since=NOW - timedelta(days=1)) == {
        "card": OutcomeCounts(offered=3),
        "loan": OutcomeCounts(offered=3, shown=1, accepted=1, declined=1)}
    assert store.outcome_counts(customers=["C-2"]) == {
        "card": OutcomeCounts(offered=1), "loan": OutcomeCounts(offered=1, declined=1)}


def test_the_customers_a_contact_index_starts_from(store: DecisionStore) -> None:
    """Offered within the window, declined within the suppression, or accepted at any time: no one else."""
    now = datetime.now(timezone.utc)
    store.record([decision(1, "C-offered", at=now - timedelta(days=2)), decision(2, "C-long-ago", at=now - timedelta(days=60)),
                  decision(3, "C-declined", at=now - timedelta(days=60)),
                  decision(4, "C-accepted", at=now - timedelta(days=400))])
    store.add_feedback("req-3", "C-declined", "loan", "declined", at=now - timedelta(days=3))
    store.add_feedback("req-4", "C-accepted", "loan", "accepted", at=now - timedelta(days=399))
    store.add_feedback("req-2", "C-long-ago", "loan", "declined", at=now - timedelta(days=59))

    month_ago = now - timedelta(days=30)
    assert store.contacted_customers(month_ago, month_ago) == {"C-offered", "C-declined", "C-accepted"}
    assert store.contacted_customers(now - timedelta(days=90), month_ago) == {
        "C-offered", "C-long-ago", "C-declined", "C-accepted"}


def test_news_is_what_others_stored_since_a_time_and_own_decisions_stored_late(backend: Backend) -> None:
    """Logged since, not decided since: a batch retried after an outage carries an answer's time from long
    before it reached the log, and it is news even to the worker that made it."""
    migrate(backend.url)
    this_worker, other_worker = DecisionStore(backend.url, "this-worker"), DecisionStore(backend.url, "other-worker")
    try:
        before = datetime.now(timezone.utc)
        this_worker.record([decision(1, "C-own", at=before)])
        this_worker.record([decision(2, "C-own-retried", at=before - timedelta(days=5))])
        other_worker.record([decision(3, "C-others", at=before - timedelta(days=40))])
        this_worker.add_feedback("req-1", "C-own", "loan", "shown", at=datetime.now(timezone.utc))
        own_since = before - timedelta(minutes=1)
        assert this_worker.news_since(before, "this-worker", own_since) == {"C-own-retried", "C-others", "C-own"}, \
            "feedback is news, own recent decisions are not"
        assert other_worker.news_since(before, "other-worker", own_since) == {"C-own", "C-own-retried", "C-others"}
        later = datetime.now(timezone.utc) + timedelta(seconds=1)
        assert this_worker.news_since(later, "this-worker", own_since) == set()
        this_worker.record([decision(4, "C-quiet", at=datetime.now(timezone.utc))])
        assert "C-quiet" not in this_worker.news_since(before, "this-worker", own_since)
    finally:
        this_worker.close()
        other_worker.close()


def test_a_worker_learns_of_another_workers_customers_by_polling(backend: Backend, store: DecisionStore) -> None:
    policy = ContactPolicy()
    other_worker = DecisionStore(backend.url)
    index = ContactIndex(store, capacity=100, poll_seconds=0.05, histories=100, signature="this-worker")
    assert index.may_have_history("C-9", policy), "not loaded yet: it cannot be sure of anyone"
    index.load(policy)
    try:
        assert not index.may_have_history("C-9", policy)
        other_worker.record([decision(1, "C-9", at=datetime.now(timezone.utc))])
        wait_until(lambda: index.may_have_history("C-9", policy), "the poll found the other worker's decision")
        index.decided("C-10", ["loan"])  # this worker's own decision, before it is queued
        assert index.may_have_history("C-10", policy)
        assert not index.may_have_history("C-11", policy)
        assert index.may_have_history("C-11", ContactPolicy(window_days=60)), "wider windows than it was loaded for"
    finally:
        index.close()
        other_worker.close()


def test_a_contact_index_that_cannot_be_sure_sends_every_customer_to_the_log(backend: Backend,
                                                                              store: DecisionStore) -> None:
    policy = ContactPolicy()
    full = ContactIndex(store, capacity=2, poll_seconds=60, histories=100, signature="this-worker")
    full.load(policy)
    full.decided("C-1", ["loan"])
    full.changed("C-2")
    assert not full.may_have_history("C-3", policy)
    full.changed("C-3")
    assert full.may_have_history("C-4", policy) and full.status()["saturated"]
    full.close()

    polling = ContactIndex(store, capacity=100, poll_seconds=0.05, histories=100, signature="this-worker")
    polling.load(policy)
    backend.break_()
    try:
        wait_until(lambda: polling.may_have_history("C-5", policy), "a failed poll made the index unsure")
        assert polling.status()["poll_failed"]
    finally:
        backend.restore()
    wait_until(lambda: not polling.may_have_history("C-5", policy), "the next poll made it sure again")
    polling.close()


def an_answer(customer_id: str, products: Sequence[str]) -> SimpleNamespace:
    """What the decision log reads of an answer of the service (``Recommendation``)."""
    offers = [SimpleNamespace(product_id=product, rank=rank, score=0.5, adjusted_score=0.5, scored_by="gbm", rules=())
              for rank, product in enumerate(products, start=1)]
    return SimpleNamespace(customer_id=customer_id, cold_start=False, model_version="2.0.0", recommendations=offers,
                           bias_check=SimpleNamespace(passed=True), suppressed=(),
                           fallback=SimpleNamespace(used=False, degraded=False, reasons=()))


def test_a_customer_asked_again_is_not_read_again_until_their_history_changes(backend: Backend, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(database_url=backend.url, state_dir=tmp_path / "state", contact_poll_seconds=0.05)
    log, policy = Interactions(settings), ContactPolicy()
    log.prepare_contacts(policy)
    reads = []
    read = log.store.contact_reads
    monkeypatch.setattr(log.store, "contact_reads", lambda *args: reads.append(args) or read(*args))
    other_worker = DecisionStore(backend.url)
    try:
        assert log.history("C-1", policy) is None and not reads, "nothing logged: nothing read"
        log.record("req-1", an_answer("C-1", ["loan", "card"]), False, "f" * 24)
        assert log.log.flush(WAIT_S)
        assert log.history("C-1", policy).unanswered_offers == {"loan": 1, "card": 1} and not reads, \
            "a first contact's history is what this worker offered"
        log.contacts.changed("C-1")  # as after feedback: read again, then kept
        assert log.history("C-1", policy).unanswered_offers == {"loan": 1, "card": 1} and len(reads) == 1
        assert log.history("C-1", policy).unanswered_offers == {"loan": 1, "card": 1} and len(reads) == 1

        log.record("req-2", an_answer("C-1", ["loan"]), False, "f" * 24)  # counted at once, before it is stored
        assert log.history("C-1", policy).unanswered_offers == {"loan": 2, "card": 1} and len(reads) == 1
        assert log.log.flush(WAIT_S)
        time.sleep(0.3)  # several polls: this worker's own decisions are not news to it
        assert log.history("C-1", policy).unanswered_offers == {"loan": 2, "card": 1} and len(reads) == 1

        other_worker.record([decision(3, "C-1", at=datetime.now(timezone.utc), products=("card",))])
        wait_until(lambda: log.history("C-1", policy).unanswered_offers == {"loan": 2, "card": 2},
                   "the poll made this worker read the other worker's offer")
        assert len(reads) == 2

        log.feedback("req-1", "C-1", "loan", "declined")
        assert log.history("C-1", policy).declined_recently == {"loan"} and len(reads) == 3
    finally:
        other_worker.close()
        log.close()


# -------------------------------------------------------------------------------------------- log


def test_the_log_writes_everything_queued_when_closed(sink: DecisionSink, store: DecisionStore) -> None:
    """The batch window is longer than close's timeout: close must cut it short, not wait it out."""
    log = DecisionLog(sink, "best_effort", queue_size=100, batch_wait_s=WAIT_S * 2)
    assert all(log.submit(decision(n)) for n in range(20))
    assert log.close(timeout=WAIT_S)
    assert stored_ids(store) == {f"req-{n}" for n in range(20)}
    assert log.status()["written"] == 20
    assert not log.submit(decision(21))


class Unbuildable:
    """A pending decision whose record cannot be built (an id longer than the column)."""

    def decision_record(self) -> DecisionRecord:
        return decision(99, customer="C" * 65)


def test_a_record_that_cannot_be_built_is_dropped_alone(store: DecisionStore) -> None:
    """The writer builds the records of best_effort answers: one that fails is counted as dropped, and
    the rest of its batch is written."""
    log = DecisionLog(store, "best_effort", queue_size=100)
    assert log.submit(decision(1)) and log.submit(Unbuildable()) and log.submit(decision(2))
    assert log.close(timeout=WAIT_S)
    assert stored_ids(store) == {"req-1", "req-2"}
    status = log.status()
    assert (status["accepted"], status["written"], status["dropped"], status["healthy"]) == (3, 2, 1, True)


def test_best_effort_counts_what_a_full_queue_drops(store: DecisionStore) -> None:
    held = HeldStore(store)
    log = DecisionLog(held, "best_effort", queue_size=2)
    assert log.submit(decision(1))
    assert held.writing.wait(WAIT_S)                       # the writer holds req-1 inside record()
    assert log.submit(decision(2)) and log.submit(decision(3))  # the queue: 2 of 2
    assert not log.submit(decision(4))

    status = log.status()
    assert (status["accepted"], status["dropped"], status["queue_depth"], status["healthy"]) == (3, 1, 2, True)
    held.release.set()
    assert log.close(timeout=WAIT_S)
    assert stored_ids(store) == {"req-1", "req-2", "req-3"}


def test_required_refuses_when_the_queue_is_full(store: DecisionStore) -> None:
    held = HeldStore(store)
    log = DecisionLog(held, "required", queue_size=2)
    assert log.submit(decision(1))
    assert held.writing.wait(WAIT_S)
    assert log.submit(decision(2)) and log.submit(decision(3))
    assert not log.submit(decision(4))

    assert (log.status()["refused"], log.status()["dropped"]) == (1, 0)
    held.release.set()
    assert log.close(timeout=WAIT_S)
    assert stored_ids(store) == {"req-1", "req-2", "req-3"}


def test_required_keeps_a_failed_batch_until_the_database_is_back(backend: Backend, sink: DecisionSink,
                                                                   store: DecisionStore) -> None:
    log = DecisionLog(sink, "required", queue_size=100, retry_backoff_s=(0.05, 0.5))
    backend.break_()
    try:
        assert log.submit(decision(1))   # accepted: the log did not know yet
        wait_until(lambda: log.status()["failed_batches"] >= 2, "the write failed and was retried")
        assert not log.submit(decision(2))  # the last write failed: refuse, so the API answers 503
        status = log.status()
        assert (status["healthy"], status["retrying"], status["refused"]) == (False, 1, 1)
        assert status["last_error"].startswith("OperationalError")
    finally:
        backend.restore()
    assert log.flush(timeout=WAIT_S)
    assert stored_ids(store) == {"req-1"}
    assert log.status()["healthy"] and log.submit(decision(3))
    assert log.close(timeout=WAIT_S)
    assert stored_ids(store) == {"req-1", "req-3"}


def test_best_effort_drops_what_a_failing_database_cannot_take_and_says_so(backend: Backend, sink: DecisionSink,
                                                                          store: DecisionStore) -> None:
    log = DecisionLog(sink, "best_effort", queue_size=100)
    backend.break_()
    try:
        assert log.submit(decision(1, customer="C-secret"))
        wait_until(lambda: log.status()["failed_batches"] >= 1, "the write failed")
        status = log.status()
        assert (status["healthy"], status["dropped"], status["retrying"]) == (False, 1, 0)
        assert "C-secret" not in status["last_error"] and "INSERT" not in status["last_error"].upper()
    finally:
        backend.restore()
    assert log.submit(decision(2, customer="C-secret"))
    assert log.close(timeout=WAIT_S)
    assert stored_ids(store, "C-secret") == {"req-2"}
    assert log.status()["healthy"]


def test_a_writer_process_that_dies_is_started_again_and_nothing_accepted_is_lost(backend: Backend,
                                                                                   store: DecisionStore) -> None:
    writer = WriterProcess(backend.url)
    log = DecisionLog(writer, "required", queue_size=100, retry_backoff_s=(0.05, 0.5))
    try:
        assert log.submit(decision(1)) and log.flush(timeout=WAIT_S)
        first = writer.pid
        os.kill(first, signal.SIGKILL)
        assert log.submit(decision(2)) and log.flush(timeout=WAIT_S)
        assert writer.pid not in (None, first)
        status = log.status()
        assert status["healthy"] and status["written"] == 2
        assert status["failed_batches"] == 1
        assert status["last_error"].startswith("the decision log's writer process ended")
        assert log.close(timeout=WAIT_S)
    finally:
        writer.close()
    assert stored_ids(store) == {"req-1", "req-2"}


def test_the_writer_process_outlives_an_interrupt_and_ends_with_its_parents_socket(backend: Backend,
                                                                                  store: DecisionStore) -> None:
    """Ctrl-C reaches the whole process group: the writer must stay to write what the server flushes on
    its way out, and go once the server closes its end."""
    writer = WriterProcess(backend.url)
    assert writer.record([decision(1)]) == 1
    child = writer.pid
    os.kill(child, signal.SIGINT)
    assert writer.record([decision(2)]) == 1 and writer.pid == child
    writer.close()
    assert writer.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    assert stored_ids(store) == {"req-1", "req-2"}


def test_a_sqlite_file_deleted_while_open_fails_the_next_write(tmp_path: Path) -> None:
    """A pooled connection would go on writing to the deleted file's inode, where nobody can read it."""
    database = tmp_path / "decisions.sqlite3"
    migrate(f"sqlite:///{database}")
    store = DecisionStore(f"sqlite:///{database}")
    store.record([decision(1)])
    for path in tmp_path.glob("decisions.sqlite3*"):
        path.unlink()
    with pytest.raises(OperationalError, match="unable to open database file"):
        store.record([decision(2)])
    assert not database.exists()
    store.close()


# --------------------------------------------------------------------------------------- settings


def test_the_default_database_is_a_file_in_the_state_directory(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'state' / 'decisions.sqlite3'}"
    assert (settings.decision_log, settings.decision_queue_size) == ("best_effort", 10_000)
    assert Settings(database_url="postgresql://u:p@db/bank").resolved_database_url == \
        "postgresql+psycopg://u:p@db/bank"


@pytest.mark.parametrize("field, value, message", [
    ("database_url", "mysql://u:secret@db/bank", "DATABASE_URL must start with"),
    ("database_url", "u:secret@db/bank", "DATABASE_URL must be a URL"),
    ("database_url", "sqlite://", "DATABASE_URL=sqlite needs a file"),
    ("decision_log", "sometimes", "'best_effort', 'required' or 'off'"),
    ("decision_queue_size", 0, "greater than or equal to 1"),
])
def test_a_bad_decision_log_setting_refuses_to_start(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        Settings(**{field: value})
    assert [error["loc"] for error in refused.value.errors()] == [(field,)]
    assert "secret" not in str(refused.value.errors()[0]["msg"])
