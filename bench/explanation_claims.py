"""Counts the "you already hold the ..." clauses of top-5 explanations that are false.

Reads explanations as a customer would, from the summary sentence, and checks each product named
after "you already hold the" against the products the customer holds. Run it on the default data
(a generated bank of the settings' default size and seed) or on any data directory:

    python bench/explanation_claims.py [--data-dir DIR] [--customers 60]

Prints the figure for the first N customers and for all of them.

Trains into a temporary models directory, so it never touches the service's own artifacts.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recommendation_service import RecommendationService  # noqa: E402
from settings import Settings  # noqa: E402
from synthetic_data import generate_bank_data  # noqa: E402

HELD_CLAUSE = "you already hold the "


def held_clauses(service: RecommendationService, customer_id: str, top_k: int = 5) -> tuple[int, int]:
    """(clauses, false clauses) of "you already hold the X" in one customer's top-k explanations."""
    held = set(service.customer_view(customer_id)["held_products"])
    names = dict(zip(service.products["name"], service.products["product_id"]))
    clauses = false = 0
    for item in service.recommend(customer_id, top_k).recommendations:
        summary = item.explanation.summary if item.explanation else ""
        for name, product_id in names.items():
            count = summary.count(HELD_CLAUSE + name)
            clauses += count
            false += count if product_id not in held else 0
    return clauses, false


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="a data directory (default: generate the default bank)")
    parser.add_argument("--customers", type=int, default=60, help="also report the first N customers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        defaults = Settings()
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = Path(scratch) / "data"
            generate_bank_data(data_dir, defaults.default_customers, defaults.default_seed,
                               catalogue_file=defaults.catalogue_file)
        service = RecommendationService.start(Settings(data_dir=data_dir, models_dir=Path(scratch) / "models",
                                                       api_keys=[]))
        totals = [held_clauses(service, str(customer)) for customer in service.base.view.index]
        for count in sorted({min(args.customers, len(totals)), len(totals)}):
            clauses, false = (sum(column) for column in zip(*totals[:count]))
            print(f"{data_dir}: first {count} customers: {clauses} 'you already hold the' clauses, {false} false")


if __name__ == "__main__":
    main()
