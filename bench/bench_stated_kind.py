"""Is a product of the kind a customer states in their top 3? On hackathon-format data we did not tune on.

Builds a variant of the seed's hackathon files (``../shared/data/hackathon``) in which every
individual states one generic preference ("Investments", "Insurance", "Car Loans"...) and every
organization one financial need ("Supply Chain Financing", "Payment Processing"...), drawn at
random, as another team's data set does. A banker's reading of each phrase (below, written by hand,
not by the matcher under test) names the products of that kind. The service is started on the
variant and asked for every customer's top 3; the script prints, per customer type, the share of
customers with a stated need (of a kind they do not already hold entirely) whose top 3 holds a
product of that kind; the same among customers eligible for a product of that kind (a minimum
income or the risk profile may rule all of them out); and the share per stated phrase.

    .venv/bin/python bench/bench_stated_kind.py [--seed 3] [--hackathon ../shared/data/hackathon]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results_file import RESULTS, record  # noqa: E402

INDIVIDUAL_NEEDS = {
    "Investments": {"index_fund_portfolio", "stock_trading_account", "crypto_growth_fund", "wealth_management"},
    "Insurance": {"life_insurance", "health_insurance", "travel_insurance", "home_insurance"},
    "Retirement Planning": {"retirement_pension", "retirement_annuity"},
    "Credit Cards": {"cashback_credit_card", "travel_rewards_card", "balance_transfer_card"},
    "Savings": {"easy_access_savings", "fixed_term_deposit", "junior_savings", "education_savings_plan"},
    "Home Loans": {"first_home_mortgage", "remortgage"},
    "Mortgage": {"first_home_mortgage", "remortgage"},
    "Travel Insurance": {"travel_insurance"},
    "Health Insurance": {"health_insurance"},
    "Life Insurance": {"life_insurance"},
    "Personal Loans": {"personal_loan", "debt_consolidation_loan"},
    "Car Loans": {"car_loan"},
    "Wealth Management": {"wealth_management"},
}
ORGANIZATION_NEEDS = {
    "Supply Chain Financing": {"supply_chain_finance"},
    "Payment Processing": {"merchant_payments"},
    "Merchant Services": {"merchant_payments"},
    "Business Loans": {"business_loan", "green_business_loan"},
    "Commercial Real Estate Loans": {"business_loan"},
    "Working Capital": {"business_loan", "supply_chain_finance", "treasury_services"},
    "Equipment Financing": {"equipment_leasing"},
    "Trade Finance": {"supply_chain_finance", "treasury_services"},
    "Payroll Services": {"payroll_services"},
    "Cash Management": {"treasury_services", "business_current_account"},
    "Foreign Exchange": {"treasury_services"},
    "Insurance": {"commercial_insurance", "home_insurance"},
    "Investments": {"investment_banking", "wealth_management"},
}
TABLES = ("Expanded_Customer_Profile_Individual.xlsx", "Expanded_Customer_Profile_Organization.xlsx",
          "Expanded_Social_Media_Sentiment.xlsx", "Expanded_Transaction_History.xlsx")


def write_variant(hackathon: Path, out: Path, seed: int) -> dict[str, str]:
    """The hackathon files with one random stated need per customer; returns customer id -> need."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for table in TABLES[2:]:
        shutil.copy(hackathon / table, out / table)
    individuals = pd.read_excel(hackathon / TABLES[0])
    individuals["Preferences"] = rng.choice(list(INDIVIDUAL_NEEDS), len(individuals))
    individuals.to_excel(out / TABLES[0], index=False)
    organizations = pd.read_excel(hackathon / TABLES[1])
    organizations["Financial Needs"] = rng.choice(list(ORGANIZATION_NEEDS), len(organizations))
    organizations["Preferences"] = ""
    organizations.to_excel(out / TABLES[1], index=False)
    first = {  # the loader keeps the first row of a repeated customer id
        **individuals.drop_duplicates("Customer_Id").set_index("Customer_Id")["Preferences"].to_dict(),
        **organizations.drop_duplicates("Customer_Id").set_index("Customer_Id")["Financial Needs"].to_dict()}
    return first


def stated_kind_in_top_3(data_dir: Path, models_dir: Path, needs: dict[str, str]) -> dict[str, dict[str, float]]:
    from recommendation_service import RecommendationService
    from settings import Settings

    service = RecommendationService.start(Settings(data_dir=data_dir, models_dir=models_dir, api_keys=[]))
    held = service.data.holdings.groupby("customer_id")["product_id"].agg(set).to_dict()
    view = service.base.view
    found: dict[str, list[bool]] = {"individual": [], "organization": []}
    eligible_found: dict[str, list[bool]] = {"individual": [], "organization": []}
    by_need: dict[str, list[bool]] = {}
    for customer_id in view.index:
        customer_type = view.loc[customer_id, "customer_type"]
        kinds = (INDIVIDUAL_NEEDS if customer_type == "individual" else ORGANIZATION_NEEDS).get(needs.get(customer_id))
        if not kinds or kinds <= held.get(customer_id, set()):
            continue
        answer = service.recommend(str(customer_id), 3, include_explanation=False)
        hit = any(item.product_id in kinds for item in answer.recommendations)
        found[customer_type].append(hit)
        by_need.setdefault(f"{customer_type}: {needs[customer_id]}", []).append(hit)
        state = service.customers.known(service.customers.row_of(str(customer_id)))
        if kinds & service.rules.eligible(service.context(state)):
            eligible_found[customer_type].append(hit)
    return {**{kind: _share(hits) for kind, hits in found.items()},
            "eligible_for_the_kind": {kind: _share(hits) for kind, hits in eligible_found.items()},
            "by_need": {need: _share(hits) for need, hits in sorted(by_need.items())}}


def _share(hits: list[bool]) -> dict[str, float]:
    return {"customers": len(hits), "share_in_top_3": round(float(np.mean(hits)), 3) if hits else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--hackathon", type=Path, default=ROOT.parent / "shared" / "data" / "hackathon")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        needs = write_variant(args.hackathon, Path(workdir) / "data", args.seed)
        figures = stated_kind_in_top_3(Path(workdir) / "data", Path(workdir) / "models", needs)
    record(RESULTS / "stated_kind.json", f"hackathon_variant_seed{args.seed}", figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
