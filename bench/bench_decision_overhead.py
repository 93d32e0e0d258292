"""What the decision log and the contact policy add to one /recommend, side by side in one run.

On the service's own data (default: the configured data set), for distinct known customers in
turn, through the ASGI app in process (no network), it times:

- the full /recommend: contact history read from the database, the answer (from the answer cache
  where the same customer and options were asked before, as real traffic would meet it), the
  decision queued for the log;
- each log call alone, the cost the log adds to every answer: reading the contact history (three
  small queries, through the thread pool in the endpoint) and queuing the record;
- for scale, the service's answer computed afresh (no cache, no log).

Prints medians and 99th percentiles in milliseconds. The decision log writes into a fresh SQLite
file under a temporary state directory; ``--passes 2`` asks every customer twice, so the second
pass meets the answer cache.

    python bench/bench_decision_overhead.py [--customers 1000] [--passes 2]
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


def percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000
    return {"median_ms": round(float(np.median(values)), 4), "p99_ms": round(float(np.percentile(values, 99)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from app import create_app
    from recommendation_service import RecommendationService
    from settings import get_settings
    from tests.utils.service import wait_ready

    with tempfile.TemporaryDirectory() as state_dir:
        settings = get_settings().model_copy(update={"state_dir": Path(state_dir), "api_keys": []})
        service = RecommendationService.start(settings)
        customers = [str(c) for c in service.base.view.index[:args.customers]]
        with TestClient(create_app(settings, factory=lambda _: service)) as client:
            wait_ready(client)
            log = client.app.state.service_state.interactions
            policy = service.rules.contact_policy
            endpoint, answer_only, history, queued = [], [], [], []
            for _ in range(args.passes):
                for customer in customers:
                    started = time.perf_counter()
                    response = client.post("/recommend", json={"customer_id": customer, "top_k": 5})
                    endpoint.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
                    started = time.perf_counter()
                    contact = log.history(customer, policy)
                    history.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    result = service.recommend(customer, 5, True, contact)
                    answer_only.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    log.record("bench-" + response.headers["x-request-id"], result, False, "bench")
                    queued.append(time.perf_counter() - started)
            status = log.status()
    figures = {"customers": len(customers), "passes": args.passes,
               "recommend_endpoint_in_process": percentiles(endpoint),
               "service_answer_uncached": percentiles(answer_only),
               "contact_history_read": percentiles(history), "decision_queued": percentiles(queued),
               "log_calls_added_median_ms": round(float(np.median(history) + np.median(queued)) * 1000, 4),
               "log_status": {k: status[k] for k in ("written", "dropped", "failed_batches")}}
    record(RESULTS / "decision_overhead.json", f"{len(customers)}_customers", figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
