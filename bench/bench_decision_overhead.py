"""What the decision log and the contact policy add to /recommend: logging on, off and required, side by
side in one run.

On the service's own data (default: the configured data set), one trained service serves three apps
in this process (no network): ``DECISION_LOG=off`` (nothing recorded, no contact policy),
``best_effort`` (the default) and ``required`` (an answer waits for its record's commit). Each
customer is asked of the three apps in turn, the order rotating, so that drift in the machine's speed
meets all three alike. Each database is a fresh SQLite file under a temporary state directory.

Two passes over distinct known customers: the first with every answer computed (as most real traffic
is: a bank's front-ends ask for many different customers), the second asking the same customers
again, so that each app's answer cache can serve (the contact history is read and the decision
logged either way). Prints medians and 99th percentiles in milliseconds, the added cost of each mode at
the median against ``off``, and the median of the per-customer differences (less sensitive to drift).

    python bench/bench_decision_overhead.py [--customers 1000]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import RESULTS, record  # noqa: E402

MODES = ("off", "best_effort", "required")


def percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000
    return {"median_ms": round(float(np.median(values)), 4), "p99_ms": round(float(np.percentile(values, 99)), 4)}


def timed_pass(clients: dict, customers: list[str], offset: int) -> dict[str, list[float]]:
    """Every customer asked of every app, the apps' order rotating per customer."""
    seconds: dict[str, list[float]] = {mode: [] for mode in clients}
    for number, customer in enumerate(customers):
        for turn in range(len(MODES)):
            mode = MODES[(number + offset + turn) % len(MODES)]
            started = time.perf_counter()
            response = clients[mode].post("/recommend", json={"customer_id": customer, "top_k": 5})
            seconds[mode].append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return seconds


def summary(seconds: dict[str, list[float]]) -> dict[str, object]:
    figures: dict[str, object] = {mode: percentiles(values) for mode, values in seconds.items()}
    off = float(np.median(seconds["off"])) * 1000
    figures["added_at_median_ms"] = {mode: round(float(np.median(seconds[mode])) * 1000 - off, 4)
                                     for mode in MODES if mode != "off"}
    # the same customer asked of two apps moments apart: drift in the machine's speed cancels out
    figures["median_paired_difference_ms"] = {
        mode: round(float(np.median(np.subtract(seconds[mode], seconds["off"]))) * 1000, 4)
        for mode in MODES if mode != "off"}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from app import create_app
    from recommendation_service import RecommendationService
    from settings import get_settings
    from tests.utils.service import wait_ready

    service = RecommendationService.start(get_settings().model_copy(update={"api_keys": []}))
    customers = [str(c) for c in service.base.view.index[:args.customers]]
    with tempfile.TemporaryDirectory() as state_root:
        clients = {}
        for mode in MODES:
            settings = service.settings.model_copy(update={"state_dir": Path(state_root) / mode, "api_keys": [],
                                                           "decision_log": mode, "answer_cache_size": 100_000})
            clients[mode] = TestClient(create_app(settings, factory=lambda _: service)).__enter__()
            wait_ready(clients[mode])
        timed_pass(clients, customers[:50], 0)  # warm-up: code paths and connections, on customers not timed
        computed = timed_pass(clients, customers[50:], 0)
        cached = timed_pass(clients, customers[50:], 1)
        status = {mode: clients[mode].app.state.service_state.interactions.status() for mode in MODES}
        for client in clients.values():
            client.__exit__(None, None, None)
    figures = {"customers": len(customers) - 50, "answers_computed": summary(computed),
               "answers_from_cache": summary(cached),
               "log_status": {mode: {k: status[mode][k] for k in ("written", "dropped", "failed_batches")}
                              for mode in MODES}}
    record(RESULTS / "decision_overhead.json", f"{len(customers) - 50}_customers_modes_side_by_side", figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
