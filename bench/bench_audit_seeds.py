"""Does the group audit find a bias it is shown, and only that one? Banks generated with a known
historical bias over several seeds, each trained and audited, the audit scored against the truth.

For each seed: a bank from synthetic_data.py with the bias given (default: women take up
investments 0.4 times as often as men), the model trained on it as ``cli.py train`` does, and the
group audit run as at start-up (timed). Printed per seed and over all seeds:

* the biased pairs (the bias's attribute x each product it targets): flagged with the whole 95%
  interval outside the fairness band, in the holdings (where the bias was put) and in the
  recommendations. The model does not read gender: what it learns from the holdings may carry the
  bias over, or reverse it, since a product a customer holds is not recommended to them again.
* the control pairs (the same attribute x every other product its groups can have): the share
  flagged, target at most 5%, over the pairs the audit could judge (not insufficient_data). They
  are a null only for an attribute the generator draws independently of everything else, as it
  does gender; location or age pairs carry real effects (income, life stage) and would not be.

    .venv/bin/python bench/bench_audit_seeds.py [--customers 10000] [--seeds 5] [--first-seed 1]
        [--bias gender=F:category=investments:factor=0.4] [--out bench/results/audit_seeds.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import RESULTS, record  # noqa: E402

DEFAULT_BIAS = "gender=F:category=investments:factor=0.4"
BLOCKS = ("holdings", "recommendations", "exposure")


def audit_one_bank(customers: int, seed: int, bias_specs: list[str], workdir: Path) -> dict[str, Any]:
    """Generate, train and audit one bank; the verdicts on its biased and control pairs."""
    from artifacts import data_fingerprint, load_data, load_rules, train_artifacts
    from batch import run_audit
    from recommendation_service import RecommendationService
    from settings import get_settings
    from synthetic_data import generate_bank_data, parse_bias

    biases = [parse_bias(spec) for spec in bias_specs]
    data_dir = workdir / f"bank_seed{seed}"
    settings = get_settings().model_copy(update={"data_dir": data_dir, "models_dir": workdir / f"models_seed{seed}",
                                                 "embedding_cache_dir": workdir / "embedding_cache"})
    generate_bank_data(data_dir, customers, seed, catalogue_file=settings.catalogue_file, biases=biases)
    started = time.perf_counter()
    data = load_data(settings)
    service = RecommendationService(settings, data, load_rules(settings, data),
                                    train_artifacts(data, settings, data_fingerprint(settings)))
    trained = time.perf_counter()
    audit = run_audit(service)
    audited = time.perf_counter()
    biased = biased_pairs(biases, service.products, settings.protected_attributes)
    attributes = {attribute for attribute, _ in biased}
    entries = [e for e in audit["entries"] if e["attribute"] in attributes]
    return {"seed": seed, "train_seconds": round(trained - started, 1), "audit_seconds": round(audited - trained, 2),
            "biased": [verdicts(e) for e in entries if (e["attribute"], e["product_id"]) in biased],
            "control": [verdicts(e) for e in entries
                        if (e["attribute"], e["product_id"]) not in biased and e["n_unprivileged"] > 0],
            "summary": {k: v for k, v in audit["summary"].items() if k != "flagged_pairs"}}


def biased_pairs(biases: list, products, protected_attributes) -> set[tuple[str, str]]:
    """(protected attribute, product) of every product a bias targets."""
    pairs = set()
    for bias in biases:
        if bias.category:
            targeted = products["category"] == bias.category
        else:
            targeted = products["product_id"] == bias.product_id
        attribute = audited_attribute(bias, protected_attributes)
        pairs |= {(attribute, product) for product in products.loc[targeted, "product_id"]}
    return pairs


def audited_attribute(bias, protected_attributes) -> str:
    """The audit's name for the attribute a bias is on; exits when the audit does not cover it."""
    for attribute in protected_attributes:
        if bias.attribute in (attribute.name, attribute.column):
            return attribute.name
    raise SystemExit(f"bias {bias.spec!r}: {bias.attribute} is not a protected attribute the audit covers")


def verdicts(entry: dict[str, Any]) -> dict[str, Any]:
    """One pair's status, ratio and interval in each block."""
    result: dict[str, Any] = {"product_id": entry["product_id"], "attribute": entry["attribute"]}
    for block in BLOCKS:
        figures = entry.get(block)
        if figures is None:
            result[block] = None
            continue
        ratio, interval = ("disparity", "disparity_interval") if block == "exposure" else (
            "disparate_impact", "disparate_impact_interval")
        result[block] = {"status": figures["status"], "ratio": _rounded(figures[ratio]),
                         "interval": [_rounded(figures[interval]["low"]), _rounded(figures[interval]["high"])]}
    return result


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def tally(pairs: list[dict[str, Any]], block: str) -> dict[str, Any]:
    """How many pairs were flagged in one block, over all of them and over those the audit could judge."""
    statuses = [pair[block]["status"] for pair in pairs if pair[block] is not None]
    judged = [status for status in statuses if status != "insufficient_data"]
    flagged = judged.count("flagged")
    return {"pairs": len(statuses), "judged": len(judged), "flagged": flagged,
            "inconclusive": judged.count("inconclusive"),
            "flagged_share_of_judged": round(flagged / len(judged), 4) if judged else None}


def overall(results: list[dict[str, Any]]) -> dict[str, Any]:
    biased = [pair for result in results for pair in result["biased"]]
    control = [pair for result in results for pair in result["control"]]
    return {"seeds": len(results), "biased": {block: tally(biased, block) for block in BLOCKS},
            "control": {block: tally(control, block) for block in BLOCKS},
            "audit_seconds_max": max(result["audit_seconds"] for result in results)}


def print_seed(result: dict[str, Any]) -> None:
    print(f"seed {result['seed']}: trained in {result['train_seconds']} s, audited in {result['audit_seconds']} s")
    for pair in result["biased"]:
        cells = "  ".join(f"{block} {_shown(pair[block])}" for block in BLOCKS)
        print(f"  biased  {pair['attribute']} x {pair['product_id']}: {cells}")
    for block in BLOCKS:
        counts = tally(result["control"], block)
        print(f"  control {block}: {counts['flagged']} flagged of {counts['judged']} judged "
              f"({counts['pairs']} pairs, {counts['inconclusive']} inconclusive)")


def _shown(block: dict[str, Any] | None) -> str:
    if block is None:
        return "n/a"
    low, high = block["interval"]
    return f"{block['status']} {block['ratio']} [{low}, {'inf' if high is None else high}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds, from --first-seed on")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--bias", action="append", default=None, help=f"repeatable (default: {DEFAULT_BIAS})")
    parser.add_argument("--out", type=Path, default=RESULTS / "audit_seeds.json")
    args = parser.parse_args()
    bias_specs = args.bias or [DEFAULT_BIAS]
    from settings import get_settings
    from synthetic_data import parse_bias

    for spec in bias_specs:  # refuse a bias the audit cannot see before training anything
        audited_attribute(parse_bias(spec), get_settings().protected_attributes)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            results.append(audit_one_bank(args.customers, seed, bias_specs, Path(workdir)))
            print_seed(results[-1])
    figures = {"customers": args.customers, "biases": bias_specs, **overall(results), "per_seed": results}
    record(args.out, f"{args.customers}_customers_{args.seeds}_seeds_from_{args.first_seed}", figures)
    print(json.dumps({key: figures[key] for key in ("biased", "control", "audit_seconds_max")}, indent=1))


if __name__ == "__main__":
    main()
