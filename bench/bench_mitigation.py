"""What does fairness mitigation cost? A bank generated with a known historical bias, evaluated on a
time split with the rules file's ``fairness_mitigation`` listing the biased pairs: each pair's exposure
disparity without and with the calibrated boost, and the NDCG the boost costs.

The pairs are the bias's attribute x each product it targets (default: women take up investments
0.4 times as often as men, so gender x every investment product), or those given with ``--pair``.
Listing a pair only allows a boost: the calibration leaves a pair whose exposure disparity is already
inside the fairness band alone, so the biased pairs can be listed before anyone knows which the
model carried over. One training (``evaluate --no-ablations`` on a temporary copy of
config/business_rules.yaml plus the section); the figures are saved under ``--out``.

    .venv/bin/python bench/bench_mitigation.py [--customers 1500] [--seed 1] [--cutoff 2025-07-01]
        [--bias gender=F:category=investments:factor=0.4] [--pair index_fund_portfolio:gender]
        [--out bench/results/mitigation.json]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_audit_seeds import DEFAULT_BIAS, audited_attribute, biased_pairs  # noqa: E402
from bench.results_file import RESULTS, record  # noqa: E402

DEFAULT_RULES = ROOT / "config" / "business_rules.yaml"


def rules_with_mitigation(pairs: list[tuple[str, str]], path: Path) -> Path:
    """The shipped rules file plus a ``fairness_mitigation`` section listing ``pairs`` (attribute, product)."""
    document = yaml.safe_load(DEFAULT_RULES.read_text())
    document["fairness_mitigation"] = [{"product": product, "attribute": attribute} for attribute, product in pairs]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def pairs_to_mitigate(args: argparse.Namespace, products, protected_attributes) -> list[tuple[str, str]]:
    """(attribute, product) from ``--pair product:attribute``, else every pair the bias targets."""
    if args.pair:
        return [tuple(reversed(pair.split(":", 1))) for pair in args.pair]
    from synthetic_data import parse_bias

    biases = [parse_bias(spec) for spec in args.bias]
    for bias in biases:
        audited_attribute(bias, protected_attributes)  # exits when the audit does not cover the attribute
    return sorted(biased_pairs(biases, products, protected_attributes))


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Generate the bank, evaluate it with the pairs listed for mitigation; the figures to print and save."""
    import pandas as pd

    from evaluation import evaluate
    from settings import get_settings
    from synthetic_data import generate_bank_data, parse_bias

    data_dir = workdir / "bank"
    settings = get_settings().model_copy(update={"data_dir": data_dir, "models_dir": workdir / "models",
                                                 "embedding_cache_dir": workdir / "embedding_cache"})
    generate_bank_data(data_dir, args.customers, args.seed, catalogue_file=settings.catalogue_file,
                       biases=[parse_bias(spec) for spec in args.bias])
    products = pd.read_csv(settings.catalogue_file)
    pairs = pairs_to_mitigate(args, products, settings.protected_attributes)
    rules_file = rules_with_mitigation(pairs, workdir / "business_rules.yaml")
    result = evaluate(settings.model_copy(update={"rules_file": rules_file}), pd.Timestamp(args.cutoff),
                      ablations=False)
    mitigation = result["mitigation"]
    return {"customers": args.customers, "seed": args.seed, "bias": args.bias, "cutoff": args.cutoff,
            "customers_evaluated": result["customers_evaluated"], "seconds": result["seconds"],
            "model_without_mitigation": result["model"], "model_with_mitigation": mitigation["model_with_mitigation"],
            "ndcg_cost": mitigation["ndcg_cost"], "pairs": mitigation["pairs"]}


def print_figures(figures: dict[str, Any]) -> None:
    print(f"{figures['customers']} customers, seed {figures['seed']}, bias {', '.join(figures['bias'])}: "
          f"{figures['customers_evaluated']} customers evaluated, {figures['seconds']} s")
    for pair in figures["pairs"]:
        factor = "" if pair["factor"] is None else f", {pair['boosted_group']} group boosted x{pair['factor']}"
        print(f"  {pair['attribute']} x {pair['product_id']}: {pair['status']}{factor}; exposure disparity "
              f"{_exposure(pair['without'])} -> {_exposure(pair['with'])}")
    without, with_it = figures["model_without_mitigation"], figures["model_with_mitigation"]
    for metric, cost in figures["ndcg_cost"].items():
        print(f"  {metric}: {without[metric]:.4f} without, {with_it[metric]:.4f} with, cost {cost:+.4f}")


def _exposure(figures: dict[str, Any] | None) -> str:
    if figures is None or figures["exposure_disparity"] is None:
        return "n/a"
    interval = figures["exposure_interval"]
    high = "inf" if interval["high"] is None else f"{interval['high']:.2f}"
    return f"{figures['exposure_disparity']:.3f} [{interval['low']:.2f}, {high}] {figures['exposure_status']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cutoff", default="2025-07-01", help="the time split's cut-off, YYYY-MM-DD")
    parser.add_argument("--bias", action="append", default=None, help=f"repeatable (default: {DEFAULT_BIAS})")
    parser.add_argument("--pair", action="append", help="product:attribute to mitigate (repeatable; default: "
                                                        "every pair the bias targets)")
    parser.add_argument("--out", type=Path, default=RESULTS / "mitigation.json")
    args = parser.parse_args()
    args.bias = args.bias or [DEFAULT_BIAS]
    with tempfile.TemporaryDirectory() as workdir:
        figures = measure(args, Path(workdir))
    print_figures(figures)
    record(args.out, f"{args.customers}_seed{args.seed}", figures)


if __name__ == "__main__":
    main()
