"""What each part of one recommendation costs, in process, without the answer cache.

For known customers of the configured data set (default: the service's own), it times the full
answer with and without the individual bias check and the explanations, and prints medians and
99th percentiles in milliseconds (the known customers' model scores and risk profiles computed
first, as a server does at start-up):

- scoring + rules: every product scored, business rules applied (no counterfactuals, no explanation);
- + bias check: the counterfactual variants scored in the same batch, rules re-run where they can
  differ, the individual check;
- + explanation: per-feature contributions of the top-k products and their factors and sentences.

    python bench/bench_request_parts.py [--customers 1000]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import RESULTS, record  # noqa: E402


def timed(call, customers: list[str]) -> np.ndarray:
    seconds = []
    for customer in customers:
        started = time.perf_counter()
        call(customer)
        seconds.append(time.perf_counter() - started)
    return np.asarray(seconds) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS / "request_parts.json")
    args = parser.parse_args()
    from recommendation_service import RecommendationService
    from settings import get_settings

    service = RecommendationService.start(get_settings())
    customers = [str(c) for c in service.base.view.index[:args.customers]]
    no_bias_check = get_settings().model_copy(update={"protected_attributes": []})
    plain = RecommendationService(no_bias_check, service.data, service.rules, service.artifacts)
    plain.known_scores = plain.score_known_customers()  # as a server computes them at start-up
    for warm in (plain, service):
        timed(lambda c: warm.recommend(c, 5, True), customers[:50])
    parts = {
        "scoring_and_rules": timed(lambda c: plain.recommend(c, 5, False), customers),
        "with_bias_check": timed(lambda c: service.recommend(c, 5, False), customers),
        "with_bias_check_and_explanation": timed(lambda c: service.recommend(c, 5, True), customers),
    }
    result = {name: {"median_ms": round(float(np.median(v)), 3), "p99_ms": round(float(np.percentile(v, 99)), 3)}
              for name, v in parts.items()}
    result["added_by_bias_check_and_explanation_median_ms"] = round(
        result["with_bias_check_and_explanation"]["median_ms"] - result["scoring_and_rules"]["median_ms"], 3)
    result["customers"] = len(customers)
    record(args.out, f"{args.customers}_customers", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
