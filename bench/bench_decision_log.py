"""How many decisions a second the decision log writes into SQLite on this machine, and whether its
queue stays short (issue 12 asks for 1,000 a second sustained without a growing queue).

Two runs of ``--seconds`` each, each into a fresh SQLite file, with answers shaped like the
service's (five offers, rules on some, a fallback reason on some):

- capacity: the producer submits as fast as it can (``required`` mode; when the queue is full it
  waits a millisecond, so nothing is dropped): decisions written per second is what the writer
  sustains while the producer competes with it for the interpreter, as request handlers would.
- paced: the producer submits ``--rate`` decisions a second; the queue depth is read after every
  submit. A writer that keeps up holds the queue to about one batch window's worth and empties it
  as soon as the producer stops.

Also the cost on the request path: building one record and submitting it (median and p99, us).

    python bench/bench_decision_log.py [--seconds 10] [--rate 1000]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import RESULTS, record  # noqa: E402
from decision_store import AppliedRule, DecisionLog, DecisionRecord, DecisionStore, OfferRecord, migrate  # noqa: E402

PRODUCTS = ["first_home_mortgage", "travel_credit_card", "retirement_pension", "home_insurance", "savings_account"]
QUEUE_SIZE = 10_000  # the DECISION_QUEUE_SIZE default


def answer(number: int) -> DecisionRecord:
    """A decision like one the service logs: five offers, a boost on the first, now and then a fallback."""
    offers = tuple(OfferRecord(product, rank, 0.3 / rank, 0.35 / rank, "gbm" if rank % 2 else "knowledge_prior",
                               (AppliedRule("stated_need", "boost", 1.5),) if rank == 1 else ())
                   for rank, product in enumerate(PRODUCTS, start=1))
    reasons = ("retirement_pension: too few take-ups to learn from (9); scored by the knowledge prior",) \
        if number % 4 == 0 else ()
    return DecisionRecord(f"{number:032x}", f"CUST{number % 2000:06d}", datetime.now(timezone.utc), False,
                          number % 3 == 0, "2.0.0", "0123456789abcdef01234567", True, bool(reasons), False, reasons,
                          offers)


def fresh_log(directory: Path, name: str, mode: str) -> tuple[DecisionLog, DecisionStore]:
    url = f"sqlite:///{directory / name / 'decisions.sqlite3'}"
    migrate(url)
    store = DecisionStore(url)
    return DecisionLog(store, mode, QUEUE_SIZE), store


def capacity(directory: Path, seconds: float) -> dict:
    log, store = fresh_log(directory, "capacity", "required")
    number, waits, deepest = 0, 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if log.submit(answer(number)):
            number += 1
            deepest = max(deepest, log.queue_depth)
        else:
            waits += 1
            time.sleep(0.001)
    assert log.close(timeout=120), "the writer did not finish"
    elapsed = time.perf_counter() - started
    status = log.status()
    store.close()
    return {"decisions_written": status["written"], "seconds": round(elapsed, 2),
            "written_per_second": round(status["written"] / elapsed), "max_queue_depth": deepest,
            "producer_waits_on_full_queue": waits, "failed_batches": status["failed_batches"]}


def paced(directory: Path, seconds: float, rate: int) -> dict:
    log, store = fresh_log(directory, "paced", "best_effort")
    total = int(seconds * rate)
    depths = np.zeros(total, dtype=np.int64)
    build_us, submit_us = np.zeros(total), np.zeros(total)
    started = time.perf_counter()
    for number in range(total):
        delay = started + number / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        decision = answer(number)
        t1 = time.perf_counter()
        log.submit(decision)
        t2 = time.perf_counter()
        build_us[number], submit_us[number] = (t1 - t0) * 1e6, (t2 - t1) * 1e6
        depths[number] = log.queue_depth
    producing = time.perf_counter() - started
    depth_at_end = log.queue_depth
    drain_started = time.perf_counter()
    assert log.flush(timeout=120), "the writer did not catch up"
    drain = time.perf_counter() - drain_started
    status = log.status()
    log.close(timeout=10)
    store.close()
    return {"target_rate": rate, "achieved_submit_rate": round(total / producing),
            "decisions_written": status["written"], "dropped": status["dropped"], "max_queue_depth": int(depths.max()),
            "mean_queue_depth": round(float(depths.mean()), 1),
            "mean_queue_depth_first_second": round(float(depths[:rate].mean()), 1),
            "mean_queue_depth_last_second": round(float(depths[-rate:].mean()), 1),
            "queue_depth_when_producer_stopped": depth_at_end, "seconds_to_drain_after": round(drain, 3),
            "build_record_us": {"median": round(float(np.median(build_us)), 1),
                                "p99": round(float(np.percentile(build_us, 99)), 1)},
            "submit_us": {"median": round(float(np.median(submit_us)), 1),
                          "p99": round(float(np.percentile(submit_us, 99)), 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS / "decision_log.json")
    args = parser.parse_args()
    logging.getLogger("decision_log").setLevel(logging.ERROR)  # the capacity run fills the queue on purpose
    with tempfile.TemporaryDirectory() as directory:
        result = {"capacity": capacity(Path(directory), args.seconds),
                  "paced": paced(Path(directory), args.seconds, args.rate)}
    print(json.dumps(result, indent=2))
    record(args.out, "sqlite", result)


if __name__ == "__main__":
    main()
