"""The synthetic bank: canonical, deterministic, eligible, and with the causal story it promises
(life events drive take-ups; the injected bias, and only it, shows in the holdings)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from synthetic_data import (ALL_EVENTS, DEFAULT_BIASES, INDIVIDUAL_EVENTS, ORGANIZATION_EVENTS, POST_TEMPLATES,
                            HistoricalBias, generate_bank_data, parse_bias)

N_CUSTOMERS = 2_000
CANONICAL_COLUMNS = {
    "customers": ["customer_id", "customer_type", "age", "gender", "location", "income", "education", "occupation",
                  "industry", "employees", "interests", "preferences", "financial_needs"],
    "transactions": ["transaction_id", "customer_id", "date", "amount", "category", "type", "payment_mode"],
    "social_posts": ["post_id", "customer_id", "platform", "content", "timestamp"],
    "holdings": ["customer_id", "product_id", "start_date"],
}
PERIOD = ("2022-01-01", "2025-12-31")


def _read(directory: Path, table: str) -> pd.DataFrame:
    return pd.read_csv(directory / f"{table}.csv", dtype={"customer_id": str, "product_id": str})


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> dict[str, pd.DataFrame]:
    directory = tmp_path_factory.mktemp("synthetic_bank")
    generate_bank_data(directory, N_CUSTOMERS, seed=7)
    tables = {name: _read(directory, name)
              for name in ("customers", "transactions", "social_posts", "products", "holdings", "life_events")}
    tables["holdings"]["start_date"] = pd.to_datetime(tables["holdings"]["start_date"], format="%Y-%m-%d")
    return tables


def _holding_share(bank: dict[str, pd.DataFrame], product_ids: set[str], customers: pd.DataFrame) -> float:
    holders = set(bank["holdings"].loc[bank["holdings"]["product_id"].isin(product_ids), "customer_id"])
    return customers["customer_id"].isin(holders).mean()


def _share_ratio(bank: dict[str, pd.DataFrame], category: str, column: str, group: str, others: str) -> float:
    products = set(bank["products"].loc[bank["products"]["category"] == category, "product_id"])
    people = bank["customers"][bank["customers"]["customer_type"] == "individual"]
    return (_holding_share(bank, products, people[people[column] == group])
            / _holding_share(bank, products, people[people[column] == others]))


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_bank_data(tmp_path / name, 300, seed=seed)
    files = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert files == sorted(path.name for path in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "holdings.csv").read_bytes() != (tmp_path / "c" / "holdings.csv").read_bytes()


def test_tables_have_exactly_the_canonical_columns(bank):
    for table, columns in CANONICAL_COLUMNS.items():
        assert list(bank[table].columns) == columns, table
    catalogue = pd.read_csv(Path(__file__).resolve().parents[1] / "config" / "products.csv")
    assert list(bank["products"].columns) == list(catalogue.columns)
    assert bank["products"]["product_id"].tolist() == catalogue["product_id"].tolist()


def test_ids_are_unique_and_every_reference_resolves(bank):
    customers = set(bank["customers"]["customer_id"])
    assert len(customers) == N_CUSTOMERS
    assert bank["transactions"]["transaction_id"].is_unique
    assert bank["social_posts"]["post_id"].is_unique
    assert not bank["holdings"].duplicated(["customer_id", "product_id"]).any()
    for table in ("transactions", "social_posts", "holdings", "life_events"):
        assert set(bank[table]["customer_id"]) <= customers, table
    assert set(bank["holdings"]["product_id"]) <= set(bank["products"]["product_id"])


def test_dates_are_iso_and_activity_lies_in_the_period(bank):
    transaction_dates = pd.to_datetime(bank["transactions"]["date"], format="%Y-%m-%d")
    post_times = pd.to_datetime(bank["social_posts"]["timestamp"], format="%Y-%m-%dT%H:%M:%S")
    first, last = pd.Timestamp(PERIOD[0]), pd.Timestamp(PERIOD[1])
    assert transaction_dates.between(first, last).all()
    assert post_times.between(first, last + pd.Timedelta(days=1)).all()
    assert bank["holdings"]["start_date"].max() <= last


def test_customers_look_like_a_bank_book(bank):
    customers = bank["customers"]
    people = customers[customers["customer_type"] == "individual"]
    companies = customers[customers["customer_type"] == "organization"]
    assert 0.12 < len(companies) / len(customers) < 0.18
    assert people["age"].dropna().between(18, 85).all()
    assert set(people["gender"].dropna()) == {"M", "F", "X"}
    assert people["location"].nunique() == 8
    assert companies[["age", "gender", "education", "occupation"]].isna().all().all()
    assert companies["industry"].notna().mean() > 0.9 and people["industry"].isna().all()
    for column in ("age", "income", "education", "occupation", "interests", "preferences", "financial_needs"):
        assert 0.01 < people[column].isna().mean() < 0.07, column
    incomes = people.groupby("occupation")["income"].median()
    assert incomes["Physician"] > incomes["Teacher"] > incomes["Student"]


def test_volumes_are_near_the_targets(bank):
    assert 7 < len(bank["transactions"]) / N_CUSTOMERS < 15
    assert 2 < len(bank["social_posts"]) / N_CUSTOMERS < 4.5
    assert bank["social_posts"]["content"].nunique() > 1_000


def test_holdings_respect_catalogue_eligibility(bank):
    holdings = (bank["holdings"].merge(bank["products"], on="product_id")
                .merge(bank["customers"], on="customer_id"))
    segment_ok = (holdings["segment"] == "both") | (holdings["segment"] == holdings["customer_type"])
    assert segment_ok.all()
    assert not (holdings["age"] < holdings["min_age"]).any()
    assert not (holdings["income"] < holdings["min_income"]).any()


def test_take_ups_continue_to_the_end_of_the_period(bank):
    """A time split at 2025-07-01 needs many future take-ups, spread over many products."""
    future = bank["holdings"][bank["holdings"]["start_date"] >= "2025-07-01"]
    assert len(future) > 0.2 * N_CUSTOMERS
    assert future["product_id"].value_counts(normalize=True).iloc[0] < 0.25
    assert future["product_id"].nunique() > 25


def test_home_purchase_posts_lead_to_mortgages(bank):
    people = bank["customers"][bank["customers"]["customer_type"] == "individual"]
    events = bank["life_events"]
    posted = set(events.loc[(events["event"] == "home_purchase") & events["in_posts"], "customer_id"])
    holdings = bank["holdings"]
    in_period = holdings[(holdings["product_id"] == "first_home_mortgage") & (holdings["start_date"] >= PERIOD[0])]
    took_mortgage = people["customer_id"].isin(set(in_period["customer_id"]))
    with_posts = people["customer_id"].isin(posted)
    assert with_posts.sum() > 20
    assert took_mortgage[with_posts].mean() > 4 * took_mortgage[~with_posts].mean()


def test_event_posts_appear_near_the_event(bank):
    posts = bank["social_posts"].merge(bank["life_events"], on="customer_id")
    posts = posts[posts["event"] == "new_child"]
    gap = (pd.to_datetime(posts["timestamp"]) - pd.to_datetime(posts["date"])).dt.days
    baby_words = posts["content"].str.contains("baby|little one|nursery|expecting|parent|family", case=False)
    near = gap.between(-45, 22)
    assert baby_words[near].mean() > 3 * baby_words[~near].mean()


def test_injected_bias_shows_in_holdings_and_nowhere_else(bank):
    assert DEFAULT_BIASES == (HistoricalBias("gender", "F", 0.5, category="investments"),)
    assert 0.35 < _share_ratio(bank, "investments", "gender", "F", "M") < 0.7
    for category in ("insurance", "loans", "cards"):
        assert 0.85 < _share_ratio(bank, category, "gender", "F", "M") < 1.18, category


def test_without_biases_genders_hold_investments_alike(tmp_path):
    generate_bank_data(tmp_path, N_CUSTOMERS, seed=7, biases=())
    bank = {name: _read(tmp_path, name) for name in ("customers", "products", "holdings")}
    assert 0.8 < _share_ratio(bank, "investments", "gender", "F", "M") < 1.25


def test_a_bias_on_one_product_and_location(tmp_path):
    bias = parse_bias("location=Miami:product=car_loan:factor=0")
    generate_bank_data(tmp_path, N_CUSTOMERS, seed=7, biases=[bias])
    bank = {name: _read(tmp_path, name) for name in ("customers", "products", "holdings")}
    miami = bank["customers"][bank["customers"]["location"] == "Miami"]
    elsewhere = bank["customers"][bank["customers"]["location"] != "Miami"]
    assert _holding_share(bank, {"car_loan"}, miami) == 0
    assert _holding_share(bank, {"car_loan"}, elsewhere) > 0.05
    assert _holding_share(bank, {"personal_loan"}, miami) > 0.05


def test_parquet_output_has_the_same_tables(tmp_path):
    summary = generate_bank_data(tmp_path, 200, seed=1, file_format="parquet")
    holdings = pd.read_parquet(tmp_path / "holdings.parquet")
    assert list(holdings.columns) == CANONICAL_COLUMNS["holdings"]
    assert len(holdings) == summary.holdings
    assert list(pd.read_parquet(tmp_path / "social_posts.parquet").columns) == CANONICAL_COLUMNS["social_posts"]


def test_a_catalogue_of_our_own(tmp_path):
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("product_id,name,category,segment,risk_level,description,min_age,min_income\n"
                         "gold_card,Gold Card,cards,individual,2,A card.,21,50000\n"
                         "current_account,Account,accounts,both,1,An account.,,\n")
    generate_bank_data(tmp_path / "out", 500, seed=2, catalogue_file=catalogue, biases=())
    holdings = _read(tmp_path / "out", "holdings")
    assert set(holdings["product_id"]) == {"gold_card", "current_account"}
    with pytest.raises(ValueError, match="investments"):
        generate_bank_data(tmp_path / "out", 50, seed=2, catalogue_file=catalogue)


def test_summary_counts_the_rows_written(tmp_path):
    summary = generate_bank_data(tmp_path, 300, seed=5)
    assert summary.rows["transactions"] == len(_read(tmp_path, "transactions"))
    assert summary.customers == 300 and summary.products == 36 and summary.seconds >= 0
    assert summary.biases == ["gender=F:category=investments:factor=0.5"]


def test_event_vocabulary_and_paraphrases():
    assert INDIVIDUAL_EVENTS == ("home_purchase", "new_child", "marriage", "travel", "retirement", "business_start",
                                 "business_growth", "health", "study_debt", "new_job", "car_purchase",
                                 "financial_stress", "investing")
    assert ORGANIZATION_EVENTS == ("business_growth", "international_trade", "cash_flow_stress", "hiring",
                                   "equipment_purchase", "sustainability")
    for event in ALL_EVENTS:
        assert len(POST_TEMPLATES[event]) >= 8, event


def test_parse_bias_reads_the_cli_form():
    bias = parse_bias("gender=F:category=investments:factor=0.5")
    assert bias == HistoricalBias("gender", "F", 0.5, category="investments")
    assert parse_bias(bias.spec) == bias
    assert parse_bias("age=60+:product=crypto_growth_fund:factor=0.2").product_id == "crypto_growth_fund"


@pytest.mark.parametrize("spec, named", [
    ("gender=F:category=investments", "three"),
    ("gender:category=investments:factor=0.5", "'gender'"),
    ("height=F:category=investments:factor=0.5", "height"),
    ("gender=F:segment=investments:factor=0.5", "segment=investments"),
    ("gender=F:category=investments:weight=0.5", "weight=0.5"),
    ("gender=F:category=investments:factor=half", "'half'"),
    ("gender=F:category=investments:factor=-1", "-1"),
    ("age=old:category=investments:factor=0.5", "'old'"),
])
def test_parse_bias_names_the_bad_part(spec, named):
    with pytest.raises(ValueError, match=named):
        parse_bias(spec)


def test_generate_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="file_format"):
        generate_bank_data(tmp_path, 10, seed=1, file_format="xlsx")
    with pytest.raises(ValueError, match="n_customers"):
        generate_bank_data(tmp_path, 0, seed=1)
    with pytest.raises(ValueError, match="never 'Q'"):
        generate_bank_data(tmp_path, 10, seed=1, biases=[parse_bias("gender=Q:category=investments:factor=0.5")])
    with pytest.raises(ValueError, match="unicorns"):
        generate_bank_data(tmp_path, 10, seed=1, biases=[parse_bias("gender=F:category=unicorns:factor=0.5")])
