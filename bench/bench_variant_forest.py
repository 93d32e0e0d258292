"""The bias check's counterfactuals through the compiled forest: re-walking only the trees a variant's changed
features reach (`CompiledForest.raw_of_variants`) against walking every tree (`CompiledForest.raw`).

On a saved bank (``--work``: a directory with ``data/`` and ``models/``, as ``bench_batch_scoring.py --work``
keeps one), in one process:
- the forest alone, over the designs of ``--customers`` customers and their counterfactual variants: the
  largest difference between the two paths' log-odds, the share of variant walks still needed, and ms per
  customer of each path;
- whole answers as batch scoring computes them (``score_chunk``, no explanations), ``--rounds`` rounds of
  distinct customers alternating the two paths, ms per customer and their medians.

    python bench/bench_variant_forest.py --work bench/output/batch-100000 [--customers 500] [--rounds 6]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def variant_designs(service, customer_ids: list[str]) -> list[np.ndarray]:
    """Each customer's design with their counterfactual variants' rows, as a request builds it."""
    return [service.design_with_variants(service.customers.known(service.customers.row_of(customer_id)))[1]
            for customer_id in customer_ids]


def per_customer_ms(function, items) -> float:
    started = time.perf_counter()
    for item in items:
        function(item)
    return round(1000 * (time.perf_counter() - started) / len(items), 3)


def forest_figures(service, customer_ids: list[str]) -> dict:
    forest = service.model.forest_
    designs = variant_designs(service, customer_ids)
    walks = [len(forest.variant_walks(design)[1]) for design in designs]
    variant_rows = sum(len(d) - 1 for d in designs)
    return {"customers": len(designs), "variant_rows_per_customer": round(variant_rows / len(designs), 2),
            "trees": int(len(forest.tree_product)),
            "variant_walks_needed_share": round(sum(walks) / max(variant_rows * len(forest.tree_product), 1), 4),
            "max_abs_log_odds_difference": float(max(np.abs(forest.raw(d) - forest.raw_of_variants(d)).max()
                                                     for d in designs)),
            "every_tree_ms": statistics.median(per_customer_ms(forest.raw, designs) for _ in range(3)),
            "changed_trees_ms": statistics.median(per_customer_ms(forest.raw_of_variants, designs) for _ in range(3))}


def answer_figures(service, customer_ids: list[str], rounds: int, per_round: int) -> dict:
    """Whole answers, the two paths alternating over distinct customers. The old path is the model's
    ``predict_proba`` over every row, as ``RecommendationService._probabilities`` called it before."""
    from batch_scoring import score_chunk

    paths = {"changed_trees": service._probabilities,
             "every_tree": lambda design: (service.model.predict_proba(design), None)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for round_number in range(rounds):
        name = list(paths)[round_number % 2]
        service._probabilities = paths[name]
        chunk = customer_ids[round_number * per_round:(round_number + 1) * per_round]
        started = time.perf_counter()
        score_chunk(service, chunk, 5)
        times[name].append(1000 * (time.perf_counter() - started) / len(chunk))
    service._probabilities = paths["changed_trees"]
    return {name: {"rounds_ms_per_customer": [round(t, 3) for t in values],
                   "median_ms_per_customer": round(statistics.median(values), 3)} for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--customers", type=int, default=500, help="customers per round (and for the forest alone)")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    from batch_scoring import score_chunk
    from recommendation_service import RecommendationService
    from settings import Settings

    service = RecommendationService.start(Settings(data_dir=args.work / "data", models_dir=args.work / "models",
                                                   api_keys=[]))
    ids = [str(c) for c in service.base.view.index]
    warm, rest = ids[:200], ids[200:]
    score_chunk(service, warm, 5)
    figures = {"forest": forest_figures(service, rest[:args.customers]),
               "answers": answer_figures(service, rest[args.customers:], args.rounds, args.customers)}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
