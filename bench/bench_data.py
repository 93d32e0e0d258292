"""Benchmark of the data layer: load + clean + unified view of a bank-sized canonical data set.

Target (issue): 100,000 customers, ~1,000,000 transactions and ~300,000 posts load, clean and
give the customer view in at most 60 s on 2 cores with a peak memory under 4 GB.

The data set is written once under bench/output/ (by ``synthetic_data.generate_bank_data`` when
that module exists, else by the small numpy generator below, which salts the files with the dirt
the loader must clean). The measurement then runs in a fresh process, so that its peak RSS is the
loader's and not the generator's. Prints JSON.

    python bench/bench_data.py [--customers 100000] [--seed 7] [--out bench/output/data_100k]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import RESULTS, record  # noqa: E402

TRANSACTIONS_PER_CUSTOMER = 10
POSTS_PER_CUSTOMER = 3
DIRTY_SHARE = 0.01  # share of amounts written as '$1,234.50' and of dates written as M/D/YYYY
CATEGORIES = ["Groceries", "Dining", "Travel", "Fuel", "Utilities", "Rent", "Mortgage Payment", "Loan EMI",
              "Insurance Premium", "Electronics", "Fashion", "Health", "Education", "Entertainment",
              "Stock Investment", "Savings Transfer", "Credit Card Repayment", "BNPL Purchase", "Gifts",
              "Home Improvement", "Childcare", "Subscriptions", "Pharmacy", "Charity", "Taxes"]
PHRASES = ["Loving the new season", "Thinking about buying our first home", "Money is tight this month",
           "Just got promoted", "Planning our wedding", "Booked flights to Japan", "Our company is hiring",
           "Worried about rising prices", "Started investing in ETFs", "Great dinner with friends"]


def generate(out_dir: Path, n_customers: int, seed: int) -> None:
    """A canonical data set of the target size: the project's generator when present, else numpy."""
    try:
        from synthetic_data import generate_bank_data
    except ImportError:
        generate_with_numpy(out_dir, n_customers, seed)
    else:
        generate_bank_data(out_dir, n_customers, seed)


def generate_with_numpy(out_dir: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = np.char.add("C", np.arange(n).astype(str))
    is_org = rng.random(n) < 0.15
    pd.DataFrame({
        "customer_id": ids,
        "customer_type": np.where(is_org, "organization", "individual"),
        "age": np.where(is_org, "", rng.integers(18, 90, n).astype(str)),
        "gender": np.where(is_org, "", rng.choice(["M", "F", "female", "Male", "X"], n)),
        "location": rng.choice(["New York", "Chicago", "Austin", "Seattle", "Miami"], n),
        "income": rng.lognormal(11, 0.6, n).round(0),
        "education": rng.choice(["Graduate", "Master's", "PhD", "High School"], n),
        "occupation": rng.choice(["Engineer", "Teacher", "Nurse", "Designer", ""], n),
        "industry": np.where(is_org, rng.choice(["Retail", "Agriculture", "IT Services"], n), ""),
        "employees": np.where(is_org, rng.choice(["50-100", "200-500", "1000"], n), ""),
        "interests": rng.choice(["Travel, Dining", "Gaming, Tech", "Family, Home", "Fitness"], n),
        "preferences": rng.choice(["Home Loan, ETFs", "Discounts", "Travel Credit Cards", ""], n),
        "financial_needs": np.where(is_org, "Business Loans, Payment Processing", ""),
    }).to_csv(out_dir / "customers.csv", index=False)

    n_tx = n * TRANSACTIONS_PER_CUSTOMER
    days = rng.integers(0, 730, n_tx)
    dates = pd.Timestamp("2024-01-01") + pd.to_timedelta(days, unit="D")
    date_text = dates.strftime("%Y-%m-%d").to_numpy(dtype=object)
    us_style = rng.random(n_tx) < DIRTY_SHARE
    date_text[us_style] = dates[us_style].strftime("%m/%d/%Y")
    amounts = rng.lognormal(4, 1.2, n_tx).round(2)
    amount_text = amounts.astype(str).astype(object)
    dollars = rng.random(n_tx) < DIRTY_SHARE
    amount_text[dollars] = [f"${value:,.2f}" for value in amounts[dollars]]
    pd.DataFrame({
        "transaction_id": np.char.add("T", np.arange(n_tx).astype(str)),
        "customer_id": ids[rng.integers(0, n, n_tx)],
        "date": date_text,
        "amount": amount_text,
        "category": rng.choice(CATEGORIES, n_tx),
        "type": rng.choice(["debit", "credit"], n_tx, p=[0.9, 0.1]),
        "payment_mode": rng.choice(["Debit Card", "Credit Card", "Bank Transfer", "PayPal"], n_tx),
    }).to_csv(out_dir / "transactions.csv", index=False)

    n_posts = n * POSTS_PER_CUSTOMER
    texts = np.array([f"{a}! {b}." for a in PHRASES for b in PHRASES])
    stamps = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 730 * 24 * 60, n_posts), unit="min")
    pd.DataFrame({
        "post_id": np.char.add("P", np.arange(n_posts).astype(str)),
        "customer_id": ids[rng.integers(0, n, n_posts)],
        "platform": rng.choice(["Twitter", "Instagram", "LinkedIn", "Facebook"], n_posts),
        "content": rng.choice(texts, n_posts),
        "timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%S"),
    }).to_csv(out_dir / "social_posts.csv", index=False)

    products = pd.read_csv(ROOT / "config" / "products.csv")["product_id"].to_numpy()
    n_holdings = int(n * 1.5)
    pd.DataFrame({
        "customer_id": ids[rng.integers(0, n, n_holdings)],
        "product_id": rng.choice(products, n_holdings),
        "start_date": (pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 2000, n_holdings), unit="D"))
        .strftime("%Y-%m-%d"),
    }).to_csv(out_dir / "holdings.csv", index=False)


def measure(data_dir: Path) -> dict:
    """Times load and view in this (fresh) process and reports its peak resident memory."""
    from data_loader import customer_view, load_bank_data
    from text_models import get_text_encoder
    from settings import get_settings

    started = time.perf_counter()
    data = load_bank_data(data_dir, get_settings(), get_text_encoder(get_settings()))
    loaded = time.perf_counter()
    view = customer_view(data)
    finished = time.perf_counter()
    return {
        "customers": len(data.customers), "transactions": len(data.transactions),
        "social_posts": len(data.social_posts), "holdings": len(data.holdings),
        "view_shape": list(view.shape),
        "load_seconds": round(loaded - started, 2), "view_seconds": round(finished - loaded, 2),
        "total_seconds": round(finished - started, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "target": {"total_seconds": 60, "peak_rss_mb": 4096},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    out_dir = args.out or ROOT / "bench" / "output" / f"data_{args.customers}_{args.seed}"
    if not (out_dir / "customers.csv").is_file():
        started = time.perf_counter()
        generate(out_dir, args.customers, args.seed)
        print(f"generated {out_dir} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    result = subprocess.run([sys.executable, __file__, "--measure", str(out_dir)], check=True,
                            capture_output=True, text=True)
    figures = json.loads(result.stdout)
    record(RESULTS / "data.json", str(args.customers), figures)
    print(json.dumps({"data_dir": str(out_dir), **figures}, indent=2))


if __name__ == "__main__":
    main()
