"""Training benchmark: time and peak memory to fit everything, and scoring latency per customer.

For each size it generates a synthetic bank (outside the timing), then, in a fresh process, loads
it, fits the feature pipeline and the recommender (text encoding included, with an empty embedding
cache), builds the serving state, and scores single customers: all products, and all products for
the customer plus every counterfactual variant in one batch, as a request does.

    python bench/bench_training.py [--sizes 10000 100000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import RESULTS, record  # noqa: E402


def measure(data_dir: Path, models_dir: Path) -> dict:
    """Runs in the child process: every figure of one size."""
    import numpy as np

    from artifacts import data_fingerprint, load_data, load_rules, train_artifacts
    from recommendation_service import RecommendationService
    from settings import Settings

    settings = Settings(data_dir=data_dir, models_dir=models_dir)
    started = time.perf_counter()
    data = load_data(settings)
    loaded = time.perf_counter()
    rules = load_rules(settings, data)
    artifacts = train_artifacts(data, settings, data_fingerprint(settings))
    trained = time.perf_counter()
    service = RecommendationService(settings, data, rules, artifacts)
    model, base = service.model, service.base
    rows = np.random.default_rng(0).choice(len(base.view), size=min(500, len(base.view)), replace=False)
    one, batch, full = [], [], []
    for row in rows:
        state = service.customers.known(int(row))
        design = model.design.design(state.inputs(state.tabular[None, :]))
        tick = time.perf_counter()
        model.predict_proba(design)
        one.append(time.perf_counter() - tick)
        design = model.design.design(state.inputs(np.repeat(state.tabular[None, :], 7, axis=0)))
        tick = time.perf_counter()
        model.predict_proba(design)
        batch.append(time.perf_counter() - tick)
        customer_id = state.customer_id
        tick = time.perf_counter()
        service.recommend(customer_id, 5, True)
        full.append(time.perf_counter() - tick)
    return {
        "customers": int(len(base.view)), "transactions": int(len(data.transactions)),
        "posts": int(len(data.social_posts)), "load_seconds": round(loaded - started, 2),
        "train_seconds": round(trained - loaded, 2), "model_fit_seconds": model.training_seconds_,
        "products_modelled": int(model.forest_.has_model.sum()), "trees": int(len(model.forest_.tree_product)),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "score_all_products_ms_median": round(float(np.median(one)) * 1000, 3),
        "score_all_products_7_variants_ms_median": round(float(np.median(batch)) * 1000, 3),
        "full_recommendation_ms_median": round(float(np.median(full)) * 1000, 3),
        "full_recommendation_ms_p99": round(float(np.percentile(full, 99)) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, default=RESULTS / "training.json")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    from synthetic_data import generate_bank_data

    for size in args.sizes:
        with tempfile.TemporaryDirectory() as scratch:
            data_dir, models_dir = Path(scratch) / "data", Path(scratch) / "models"
            generate_bank_data(data_dir, size, seed=1)
            child = subprocess.run([sys.executable, __file__, "--child", str(data_dir), str(models_dir)],
                                   capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if child.returncode != 0:
                raise RuntimeError(child.stderr[-2000:])
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            record(args.out, str(size), figures)
            print(json.dumps({size: figures}), flush=True)


if __name__ == "__main__":
    main()
