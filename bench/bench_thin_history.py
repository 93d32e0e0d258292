"""Thin history versus rich: the model against the knowledge-only ranking, popularity and a
tabular gradient-boosting model, on generated banks of growing size.

For each size, a bank from the project's generator (or, with ``--generator foreign``, from the
independent stand-in bench/foreign_bank.py: someone else's catalogue, ids and wording, no rules of
its own), evaluated by the time split (SPEC section 6) without ablations; prints NDCG@5 of each
ranking side by side and writes them under bench/results/thin_history.json (foreign banks under
keys such as ``foreign_600_seed7``).

    .venv/bin/python bench/bench_thin_history.py [--sizes 300 1000 3000 10000] [--seed 7] [--generator own|foreign]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results_file import RESULTS, record  # noqa: E402

CUTOFF = "2025-07-01"
RANKINGS = ("model", "knowledge_only_baseline", "tabular_gbm_baseline", "popularity_baseline")


def evaluate_size(customers: int, seed: int, workdir: Path, generator: str = "own") -> dict:
    import pandas as pd

    from bench.foreign_bank import write_foreign_bank
    from evaluation import evaluate
    from settings import get_settings
    from synthetic_data import generate_bank_data

    settings = get_settings()
    data_dir = workdir / f"bank_{customers}"
    if generator == "foreign":
        write_foreign_bank(data_dir, customers, seed)
    else:
        generate_bank_data(data_dir, customers, seed, catalogue_file=settings.catalogue_file)
    started = time.perf_counter()
    result = evaluate(settings.model_copy(update={"data_dir": data_dir, "models_dir": workdir / "models"}),
                      pd.Timestamp(CUTOFF), (1, 3, 5), ablations=False)
    return {"generator": generator, "customers": customers, "seed": seed,
            "customers_evaluated": result["customers_evaluated"],
            "seconds": round(time.perf_counter() - started, 1),
            **{f"ndcg@5_{name}": result[name]["ndcg@5"] for name in RANKINGS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 3000, 10000])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--generator", choices=("own", "foreign"), default="own",
                        help="own: synthetic_data.py; foreign: the independent stand-in bench/foreign_bank.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        for customers in args.sizes:
            figures = evaluate_size(customers, args.seed, Path(workdir), args.generator)
            prefix = "" if args.generator == "own" else f"{args.generator}_"
            record(RESULTS / "thin_history.json", f"{prefix}{customers}_seed{args.seed}", figures)
            print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
