"""The data layer: messy values come out clean and typed, every repair is reported, the view is exact.

Fixtures: ``tests/fixtures/canonical_small`` (canonical format) and
``tests/fixtures/data_loader/hackathon`` (hackathon format as CSVs, from which the workbook layouts
are built at test time). Each messy cell in them is asserted on below, by its cleaned value and by
its line in the data-quality report.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from data_loader import (
    BankData,
    DataLoadError,
    canonical_field,
    customer_view,
    load_bank_data,
    parse_amounts,
    parse_dates,
    recognise_table,
)
from settings import get_settings
from tests.utils.data_files import (
    CANONICAL_SMALL,
    HACKATHON_FIXTURES,
    copy_csvs,
    write_single_workbook,
    write_workbooks,
)

T = pd.Timestamp


def issue_count(data: BankData, table: str, code: str, text: str = "") -> int:
    """Rows counted in the report for one table under issues of one kind (whose reason contains text)."""
    issues = data.quality.tables[table].issues
    return sum(issue.count for issue in issues if issue.code == code and text in issue.reason)


# ----------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, lower, upper, value", [
    ("150M - 200M", 150e6, 200e6, 175e6),
    ("150M-200M", 150e6, 200e6, 175e6),
    ("800-1500", 800, 1500, 1150),
    ("200 to 500", 200, 500, 350),
    ("$1,200", 1200, 1200, 1200),
    ("$1,200.50", 1200.5, 1200.5, 1200.5),
    ("1.5B", 1.5e9, 1.5e9, 1.5e9),
    ("250k", 250e3, 250e3, 250e3),
    ("-45.10", -45.1, -45.1, -45.1),
    ("3000", 3000, 3000, 3000),
    ("USD 99", 99, 99, 99),
])
def test_amounts_and_ranges_parse_to_bounds_and_midpoint(text, lower, upper, value):
    parsed = parse_amounts(pd.Series([text], dtype="str"))
    assert (parsed.lower[0], parsed.upper[0], parsed.value[0]) == pytest.approx((lower, upper, value))
    assert parsed.unparseable == {}


def test_unparseable_amounts_are_missing_and_counted_but_blanks_are_just_missing():
    parsed = parse_amounts(pd.Series(["abc", "1,2", "abc", "", "N/A", None, "7"], dtype=object))
    assert parsed.value.isna().tolist() == [True, True, True, True, True, True, False]
    assert parsed.unparseable == {"abc": 2, "1,2": 1}
    assert parsed.ranges == 0


def test_mixed_date_formats_in_one_column():
    column = pd.Series([
        "1/5/2025", "05/26/2024", "2/29/2025", "1/13/25 24:34", "1/16/25 9:27", "13/02/2025", "2025-03-04",
        "2025-03-04T10:15:00", "03/04/25", "45720", 45720, datetime(2025, 3, 4, 8, 30), "", None,
        "Mar 4, 2025", "2/29/2025", "1/6/2025 2:30 PM", "2025-02-30",
    ], dtype=object)
    parsed = parse_dates(column)
    assert parsed.values.tolist()[:12] == [
        T("2025-01-05"), T("2024-05-26"), pd.NaT, pd.NaT, T("2025-01-16 09:27"), T("2025-02-13"), T("2025-03-04"),
        T("2025-03-04 10:15"), T("2025-03-04"), T("2025-03-04"), T("2025-03-04"), T("2025-03-04 08:30")]
    assert parsed.values[12:14].isna().all()  # blanks are missing, not invalid
    assert parsed.values[14] == T("2025-03-04") and parsed.values[16] == T("2025-01-06 14:30")
    assert parsed.invalid == {"2/29/2025": 2, "1/13/25 24:34": 1, "2025-02-30": 1}
    assert parsed.day_first == 1
    assert str(parsed.values.dtype) == "datetime64[us]"


def test_dates_already_typed_become_naive():
    aware = pd.Series(pd.to_datetime(["2025-01-05T10:00:00+02:00"], utc=True))
    assert parse_dates(aware).values[0] == T("2025-01-05 08:00")


@pytest.mark.parametrize("label, table, field", [
    ("Customer_Id", "individuals", "customer_id"), ("Customer ID", "transactions", "customer_id"),
    ("customer id", "social_posts", "customer_id"), ("CustomerID", "organizations", "customer_id"),
    ("Amount (in Dollars)", "transactions", "amount"), ("Amount (In Dollars)", "transactions", "amount"),
    ("Amt (in dollars)", "transactions", "amount"), ("Income per year (in dollars)", "individuals", "income"),
    ("Income per year", "individuals", "income"), ("Revenue (in dollars)", "organizations", "revenue"),
    ("No of employees", "organizations", "employees"), ("No. of employees", "organizations", "employees"),
    ("Number of Employees", "organizations", "employees"), ("Purchase Date", "transactions", "date"),
    ("Transaction Type", "transactions", "type"), ("Post_Id", "social_posts", "post_id"),
    ("Financial Needs", "organizations", "financial_needs"), ("Payment Mode", "transactions", "payment_mode"),
    ("Customr ID", "individuals", "customer_id"), ("Timestamp", "social_posts", "timestamp"),
    ("Ammount", "transactions", "amount"), ("Annual Income (USD)", "individuals", "income"),
])
def test_header_spellings_meet_their_canonical_column(label, table, field):
    assert canonical_field(label, table) == field


@pytest.mark.parametrize("label, table", [
    ("Customer Name", "individuals"), ("Transaction Time", "transactions"), ("Customer Type", "organizations"),
    ("Sentiment", "social_posts"), ("Date of Birth", "individuals"),
])
def test_other_columns_are_not_taken_for_canonical_ones(label, table):
    assert canonical_field(label, table) is None


def test_tables_are_recognised_by_their_columns_not_their_names():
    assert recognise_table(["Customer_Id", "Age", "Gender", "Location", "Income per year"])[0] == "individuals"
    assert recognise_table(["Customer_Id", "Industry", "Revenue (in dollars)", "No of employees"])[0] == "organizations"
    assert recognise_table(["Customer_Id", "Product_Id", "Transaction Type", "Amount (in Dollars)",
                            "Purchase Date"]) == ("transactions", ["customer_id", "source_product_id", "type",
                                                                  "amount", "date"])
    assert recognise_table(["Customer_Id", "Post_Id", "Platform", "Content", "Timestamp"])[0] == "social_posts"
    assert recognise_table(["Customer profiles (export of 2025-03-31)", "", ""]) is None


# ----------------------------------------------------------------------------------------------
# Canonical format
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def canonical(text_encoder) -> BankData:
    return load_bank_data(CANONICAL_SMALL, get_settings(), text_encoder)


def test_canonical_customers_are_cleaned_and_typed(canonical):
    customers = canonical.customers.set_index("customer_id")
    assert list(customers.index) == [f"C{i:03d}" for i in range(1, 11)]  # ' C006 ' stripped, dup and blank id gone
    assert customers.loc["C001", "income"] == 85000 and customers.loc["C001", "age"] == 34
    assert customers.loc["C002", ["customer_type", "gender"]].tolist() == ["individual", "M"]
    assert customers.loc["C003", "gender"] == "F" and np.isnan(customers.loc["C003", "age"])
    assert customers.loc["C004", ["income", "employees"]].tolist() == [175e6, 1150]
    assert customers.loc["C007", ["customer_type", "gender"]].tolist() == ["individual", "Non-binary"]
    assert customers.loc["C008", ["customer_type", "income", "employees"]].tolist() == ["organization", 1.5e9, 5000]
    assert np.isnan(customers.loc["C009", "age"]) and np.isnan(customers.loc["C010", "income"])
    assert customers.loc["C001", "segment_code"] == "A1" and pd.isna(customers.loc["C005", "segment_code"])
    assert pd.isna(customers.loc["C003", "preferences"])  # empty cell -> missing, not ''
    assert all(isinstance(customer_id, str) for customer_id in customers.index)


def test_canonical_report_counts_every_repair(canonical):
    quality = canonical.quality.tables["customers"]
    assert (quality.rows_read, quality.rows_kept) == (14, 10)
    assert issue_count(canonical, "customers", "blank_row") == 1
    assert issue_count(canonical, "customers", "repeated_header") == 1
    assert issue_count(canonical, "customers", "missing_id") == 1
    assert issue_count(canonical, "customers", "duplicate_id") == 1
    assert issue_count(canonical, "customers", "range_midpoint") == 2  # income and employees of C004
    assert issue_count(canonical, "customers", "impossible_age") == 1
    assert issue_count(canonical, "customers", "customer_type_inferred") == 1
    assert issue_count(canonical, "customers", "gender_respelled") == 2
    assert quality.missing_rate["age"] == pytest.approx(0.4)
    assert canonical.source_format == "canonical"


def test_canonical_transactions_posts_and_holdings(canonical):
    tx = canonical.transactions.set_index("transaction_id")
    assert list(tx.index) == ["T01", "T02", "T03", "T04", "T05", "T06", "T08", "T09", "T10"]  # repeat and orphan gone
    assert tx.loc["T01", "amount"] == 1200.5 and tx.loc["T05", "amount"] == 1000 and tx.loc["T06", "amount"] == 25000
    assert pd.isna(tx.loc["T03", "date"]) and tx.loc["T04", "date"] == T("2025-02-13")
    assert tx.loc["T05", "date"] == T("2025-03-01 10:15") and np.isnan(tx.loc["T09", "amount"])
    assert issue_count(canonical, "transactions", "invalid_date", "'2025-02-29' in date") == 1
    assert issue_count(canonical, "transactions", "day_first_date") == 1
    assert issue_count(canonical, "transactions", "unparseable_number", "'abc'") == 1
    assert issue_count(canonical, "transactions", "duplicate_row") == 1
    assert issue_count(canonical, "transactions", "invalid_date") == 1  # the blank date of T08 is only missing

    posts = canonical.social_posts.set_index("post_id")
    assert list(posts.index) == ["P1", "P2", "P3", "P4", "P1#2", "P6"]
    assert pd.isna(posts.loc["P3", "timestamp"]) and posts.loc["P2", "timestamp"] == T("2025-03-01 18:45")
    assert posts.loc["P1", "sentiment"] > 0.3 and posts.loc["P3", "sentiment"] < -0.3
    assert np.isnan(posts.loc["P6", "sentiment"])
    assert issue_count(canonical, "social_posts", "invalid_date", "'1/13/25 24:34'") == 1

    holdings = canonical.holdings
    assert list(holdings.columns[:4]) == ["customer_id", "product_id", "start_date", "source"]
    assert set(zip(holdings["customer_id"], holdings["product_id"])) == {
        ("C001", "current_account"), ("C002", "cashback_credit_card"), ("C004", "business_loan"),
        ("C005", "retirement_pension"), ("C006", "easy_access_savings")}
    assert holdings.set_index("customer_id").loc["C001", "start_date"] == T("2019-01-01")  # the earliest
    assert (holdings["source"] == "holding").all()
    assert canonical.quality.orphans == {"transactions": 1, "social_posts": 1, "holdings": 1}
    assert issue_count(canonical, "holdings", "unknown_product") == 1
    assert len(canonical.products) == 36  # no products.csv in the directory: the catalogue


def test_parquet_reads_like_csv(canonical, tmp_path, text_encoder):
    for path in CANONICAL_SMALL.glob("*.csv"):
        pd.read_csv(path, dtype=str, keep_default_na=False).to_parquet(tmp_path / f"{path.stem}.parquet")
    from_parquet = load_bank_data(tmp_path, get_settings(), text_encoder)
    pd.testing.assert_frame_equal(from_parquet.customers, canonical.customers)
    pd.testing.assert_frame_equal(from_parquet.transactions, canonical.transactions)


def test_as_of_keeps_what_was_known_before_the_cutoff(canonical):
    past = canonical.as_of(T("2025-02-01"))
    assert sorted(past.transactions["transaction_id"]) == ["T01", "T09", "T10"]
    assert list(past.social_posts["post_id"]) == ["P1"]
    assert sorted(past.holdings["customer_id"]) == ["C001", "C002", "C004", "C005"]  # C005's undated holding stays
    assert past.customers is canonical.customers and past.quality is canonical.quality


def test_only_customers_given(tmp_path, text_encoder):
    (tmp_path / "customers.csv").write_bytes((CANONICAL_SMALL / "customers.csv").read_bytes())
    data = load_bank_data(tmp_path, get_settings(), text_encoder)
    assert len(data.customers) == 10 and data.transactions.empty and data.holdings.empty
    assert list(data.holdings.columns) == ["customer_id", "product_id", "start_date", "source"]
    assert str(data.transactions["date"].dtype) == "datetime64[us]"
    assert issue_count(data, "transactions", "absent_table") == 1
    view = customer_view(data)
    assert (view["tx_count"] == 0).all() and view["sentiment_mean"].isna().all()
    assert len(data.as_of(T("2025-01-01")).customers) == 10


def test_report_is_json_and_logs_hold_counts_not_words(caplog, text_encoder):
    with caplog.at_level(logging.DEBUG, logger="data_loader"):
        data = load_bank_data(CANONICAL_SMALL, get_settings(), text_encoder)
    json.dumps(data.quality.to_dict())
    logged = " ".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "orphan" in logged and "rows_kept" in logged
    for private in ("buying our first home", "Software Engineer", "C001", "2025-02-29"):
        assert private not in logged


def test_the_data_layer_loads_no_text_model_of_its_own():
    """Free-text needs are matched by meaning with the encoder the caller gives, never one the
    loader would load itself: without one, such data is refused, saying why."""
    with pytest.raises(ValueError, match="preferences and financial needs .* needs an encoder"):
        load_bank_data(CANONICAL_SMALL, get_settings())


# ----------------------------------------------------------------------------------------------
# Unified customer view
# ----------------------------------------------------------------------------------------------

def test_view_columns_and_aggregates(canonical):
    view = customer_view(canonical)
    spend_shares = ["spend_share__groceries", "spend_share__health", "spend_share__mortgage_payment",
                    "spend_share__supplier_payments", "spend_share__travel"]
    assert list(view.columns) == [
        "customer_type", "age", "gender", "location", "income", "education", "occupation", "industry", "employees",
        "interests", "preferences", "financial_needs", "segment_code", "consent_social", "age_band",
        "tx_count", "tx_total", "tx_mean_amount", "tx_monthly_mean", "tx_monthly_volatility", "tx_recency_days",
        "tx_tenure_days", "tx_trend", "debt_payment_share", *spend_shares,
        "post_count", "sentiment_mean", "sentiment_min", "sentiment_recent_trend", "post_recency_days",
        "profile_text"]
    assert view.index.name == "customer_id" and view.index.is_unique and len(view) == 10

    # as_of defaults to the day after the last event (T06, 2025-03-03)
    c001 = view.loc["C001"]
    monthly = np.array([1200.5, 45.99, 0.0])  # January, February, quiet March
    assert c001["tx_count"] == 2 and c001["tx_total"] == pytest.approx(1246.49)
    assert c001["tx_mean_amount"] == pytest.approx(623.245)
    assert c001["tx_monthly_mean"] == pytest.approx(monthly.mean())
    assert c001["tx_monthly_volatility"] == pytest.approx(monthly.std(ddof=1) / monthly.mean())
    assert (c001["tx_recency_days"], c001["tx_tenure_days"]) == (22, 58)
    assert c001["tx_trend"] == 1.0
    assert c001["debt_payment_share"] == pytest.approx(1200.5 / 1246.49)
    assert c001["spend_share__mortgage_payment"] == pytest.approx(1200.5 / 1246.49)
    assert c001["spend_share__groceries"] == pytest.approx(45.99 / 1246.49)
    assert c001["post_count"] == 2 and c001["sentiment_recent_trend"] == 0
    assert c001["post_recency_days"] == pytest.approx((T("2025-03-04") - T("2025-03-01 18:45")).total_seconds() / 86400)
    assert c001["age_band"] == "30-44"
    assert c001["profile_text"] == "Occupation: Software Engineer. Interests: Travel, Dining. Preferences: Home Loan, ETFs."

    quiet = view.loc["C007"]  # no events at all
    assert quiet["tx_count"] == 0 and quiet["tx_total"] == 0 and quiet["post_count"] == 0
    assert quiet[["tx_mean_amount", "tx_recency_days", "tx_trend", "debt_payment_share", "sentiment_mean",
                  "sentiment_recent_trend", "post_recency_days"]].isna().all()
    assert pd.isna(view.loc["C003", "age_band"])


def test_view_as_of_uses_only_earlier_events(canonical):
    view = customer_view(canonical, as_of=T("2025-02-01"))
    assert view.loc["C001", "tx_count"] == 1 and view.loc["C001", "post_count"] == 1
    assert view.loc["C001", "tx_recency_days"] == 27


def test_trend_compares_the_last_90_days_with_the_90_before():
    customers = pd.DataFrame({"customer_id": ["A"], "customer_type": ["individual"], "age": [40.0]})
    transactions = pd.DataFrame({"customer_id": ["A"] * 3, "date": pd.to_datetime(["2025-01-10", "2024-11-01", "2024-06-01"]),
                                 "amount": [300.0, 100.0, 999.0], "category": ["BNPL Purchase", "Food", "Food"],
                                 "type": [None, None, None]})
    posts = pd.DataFrame({"customer_id": ["A", "A"], "timestamp": pd.to_datetime(["2025-01-20", "2024-06-01"]),
                          "sentiment": [0.5, -0.5]})
    data = BankData(customers, transactions, posts, pd.DataFrame(), pd.DataFrame(columns=["start_date"]), None, "canonical",
                    tuple(get_settings().age_bands), pd.DataFrame())
    row = customer_view(data, as_of=T("2025-02-01")).loc["A"]
    assert row["tx_trend"] == pytest.approx((300 - 100) / (300 + 100))
    assert row["debt_payment_share"] == pytest.approx(300 / 1399)
    assert row["sentiment_recent_trend"] == pytest.approx(0.5 - 0.0)
    assert row["sentiment_min"] == -0.5


# ----------------------------------------------------------------------------------------------
# Hackathon format
# ----------------------------------------------------------------------------------------------

LAYOUTS = {
    "csv": lambda tmp: HACKATHON_FIXTURES,
    "four_workbooks": write_workbooks,
    "one_workbook_many_sheets": write_single_workbook,
}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def hackathon(request, tmp_path_factory, text_encoder) -> BankData:
    data_dir = LAYOUTS[request.param](tmp_path_factory.mktemp(request.param))
    return load_bank_data(data_dir, get_settings(), encoder=text_encoder)


def test_hackathon_profiles(hackathon):
    customers = hackathon.customers.set_index("customer_id")
    assert sorted(customers.index) == ["CUST001", "CUST002", "CUST003", "CUST004",
                                       "ORG001", "ORG002", "ORG003", "ORG004"]
    assert hackathon.source_format == "hackathon"
    assert customers.loc["CUST001", ["customer_type", "age", "gender", "income"]].tolist() == [
        "individual", 25, "F", 180000]
    assert customers.loc["CUST002", "location"] == "San Francisco"  # the first of the duplicates
    assert customers.loc["CUST003", "gender"] == "F"
    assert np.isnan(customers.loc["CUST004", "age"]) and customers.loc["CUST004", "income"] == 80000
    org = customers.loc["ORG001"]
    assert org["customer_type"] == "organization" and org["industry"] == "Fashion And Clothing"
    assert org[["revenue_min", "revenue_max", "income"]].tolist() == [150e6, 200e6, 175e6]
    assert org[["employees_min", "employees_max", "employees"]].tolist() == [800, 1500, 1150]
    assert customers.loc["ORG002", ["revenue_min", "revenue_max", "employees"]].tolist() == [150e6, 200e6, 1000]
    assert customers.loc["ORG003", ["income", "employees"]].tolist() == [1.5e9, 350]
    assert customers.loc["ORG004", "income"] == 1200 and np.isnan(customers.loc["ORG004", "employees"])
    assert customers.loc["ORG001", "financial_needs"] == "Supply Chain Financing, Inventory Loans"


def test_hackathon_profile_report(hackathon):
    individuals = hackathon.quality.tables["individuals"]
    assert (individuals.rows_read, individuals.rows_kept) == (7, 4)
    assert issue_count(hackathon, "individuals", "rows_above_header") == 1
    assert issue_count(hackathon, "individuals", "blank_row") == 1
    assert issue_count(hackathon, "individuals", "repeated_header") == 1
    assert issue_count(hackathon, "individuals", "duplicate_id") == 1
    assert issue_count(hackathon, "individuals", "range_midpoint") == 1
    assert issue_count(hackathon, "organizations", "duplicate_id") == 2
    assert issue_count(hackathon, "organizations", "unparseable_number", "'lots'") == 1
    assert hackathon.quality.tables["customers"].rows_kept == 8


def test_hackathon_transactions(hackathon):
    tx = hackathon.transactions.set_index("source_product_id")
    assert sorted(tx.index) == [str(i) for i in range(201, 210)] + ["213"]
    assert tx.loc["202", ["amount", "date"]].tolist() == [1200.5, T("2025-02-03")]
    assert pd.isna(tx.loc["203", "date"]) and pd.isna(tx.loc["209", "date"])  # 2/29/2025
    assert tx.loc["204", "date"] == T("2025-02-13")  # 13/02/2025: day first
    assert tx.loc["205", ["amount", "date"]].tolist() == [10000, T("2025-03-04")]
    assert tx.loc["206", "date"] == T("2025-03-04")  # 03/04/25
    assert tx.loc["207", ["amount", "date"]].tolist() == [25000, T("2025-03-04")]  # Excel serial 45720
    assert tx.loc["208", "date"] == T("2025-01-06 14:30") and tx.loc["209", "amount"] == 1.5e6
    assert np.isnan(tx.loc["213", "amount"]) and pd.isna(tx.loc["213", "date"])
    assert tx.loc["202", "type"] == "Mortgage Payment" and tx.loc["202", "category"] == "Home Loan Repayment"
    assert issue_count(hackathon, "transactions", "invalid_date", "'2/29/2025'") == 2
    assert issue_count(hackathon, "transactions", "invalid_date") == 2
    assert issue_count(hackathon, "transactions", "day_first_date") == 1
    assert issue_count(hackathon, "transactions", "blank_row") == 1
    assert issue_count(hackathon, "transactions", "repeated_header") == 1
    assert hackathon.quality.orphans["transactions"] == 3


def test_hackathon_posts(hackathon):
    posts = hackathon.social_posts.set_index("post_id")
    assert list(posts.index) == ["1231", "5651", "4477", "8810", "1231#2"]
    assert pd.isna(posts.loc["4477", "timestamp"])
    assert posts.loc["5651", "timestamp"] == T("2025-01-18 20:04")
    assert posts.loc["8810", "timestamp"] == T("2025-01-16 09:27") and posts.loc["1231#2", "timestamp"] == T("2024-10-29")
    assert posts.loc["1231", "sentiment"] > 0.3 and posts.loc["8810", "sentiment"] < -0.3
    assert issue_count(hackathon, "social_posts", "invalid_date", "'1/13/25 24:34'") == 1
    assert issue_count(hackathon, "social_posts", "duplicate_id") == 1
    assert hackathon.quality.orphans["social_posts"] == 1


def test_hackathon_product_evidence(hackathon):
    """Payments to a product are holdings; preferences and needs are interests, never holdings."""
    holdings, interests = hackathon.holdings, hackathon.interests
    held = set(zip(holdings["customer_id"], holdings["product_id"]))
    asked = set(zip(interests["customer_id"], interests["product_id"]))
    assert held == {("CUST002", "first_home_mortgage"), ("CUST002", "retirement_pension"),  # repayment, contribution
                    ("CUST003", "fixed_term_deposit"), ("CUST003", "health_insurance"),  # deposit, premium
                    ("CUST004", "debt_consolidation_loan")}  # a loan EMI
    assert set(holdings["source"]) == {"paid"} and holdings["start_date"].isna().all()  # held since an unknown date
    assert {("CUST002", "first_home_mortgage"), ("CUST002", "index_fund_portfolio"), ("CUST004", "health_insurance"),
            ("CUST004", "travel_rewards_card"), ("ORG001", "supply_chain_finance"), ("ORG001", "business_loan"),
            ("ORG002", "business_loan"), ("ORG002", "merchant_payments"), ("ORG003", "green_business_loan"),
            ("ORG004", "treasury_services")} <= asked
    by_pair = interests.set_index(["customer_id", "product_id"])
    assert by_pair.loc[("CUST004", "travel_rewards_card"), ["evidence", "field"]].tolist() == [
        "Travel credit Cards", "preferences"]  # the customer's own words, to quote
    assert not any(customer.startswith(("CUST9", "ORG9", "CUST7")) for customer, _ in held | asked)
    assert not holdings.duplicated(["customer_id", "product_id"]).any()
    assert not interests.duplicated(["customer_id", "product_id"]).any()
    businesses = interests[interests["customer_id"].str.startswith("ORG")].merge(hackathon.products, on="product_id")
    assert set(businesses["segment"]) <= {"organization", "both"}
    unmatched = {row["text"] for row in hackathon.quality.unmatched_evidence}
    assert {"New Arrivals"} <= unmatched
    assert hackathon.quality.tables["interests"].rows_kept == len(interests)
    json.dumps(hackathon.quality.to_dict())


def test_hackathon_view_attaches_events_to_profiles(hackathon):
    view = customer_view(hackathon)
    assert len(view) == 8 and view.loc["CUST002", "tx_count"] == 1  # the IRA payment has no valid date
    assert view.loc["CUST002", "debt_payment_share"] == 1.0
    assert view.loc["ORG001", "post_count"] == 0  # its only post has an invalid timestamp
    assert "Preferences: Home Loan, Retirement plans, ETFs." in view.loc["CUST002", "profile_text"]
    assert "Financial needs: Business Loans, Payment Processing." in view.loc["ORG002", "profile_text"]


def test_profile_without_age_column_still_loads(tmp_path, text_encoder):
    data = load_bank_data(copy_csvs(tmp_path, drop_columns={"individual_profiles": "Age"}), get_settings(), encoder=text_encoder)
    individuals = data.customers[data.customers["customer_type"] == "individual"]
    assert len(individuals) == 4 and individuals["age"].isna().all()
    assert issue_count(data, "individuals", "absent_column", "no age column") == 5  # rows with content


# ----------------------------------------------------------------------------------------------
# Files that cannot be read
# ----------------------------------------------------------------------------------------------

def test_missing_or_empty_directory(tmp_path):
    with pytest.raises(DataLoadError, match="not found"):
        load_bank_data(tmp_path / "nowhere", get_settings())
    (tmp_path / "notes.txt").write_text("nothing to see")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataLoadError, match="no recognisable tables.*other.csv"):
        load_bank_data(tmp_path, get_settings())


def test_corrupt_workbook_is_named(tmp_path):
    copy_csvs(tmp_path)
    (tmp_path / "profiles.xlsx").write_bytes(b"this is not a zip file")
    with pytest.raises(DataLoadError, match=r"profiles\.xlsx.*not a readable workbook"):
        load_bank_data(tmp_path, get_settings())


def test_missing_customer_id_column_names_file_and_sheet(tmp_path):
    pd.DataFrame([["Transaction Type", "Amount", "Purchase Date"], ["Dining", 5, "1/1/2025"]]).to_excel(
        tmp_path / "history.xlsx", sheet_name="Payments", header=False, index=False)
    with pytest.raises(DataLoadError, match=r"history\.xlsx \[Payments\].*customer_id"):
        load_bank_data(tmp_path, get_settings())


@pytest.mark.parametrize("table, content", [
    ("customers", "id,age\n1,30\n"),
    ("transactions", "transaction_id,amount\nT1,5\n"),
])
def test_canonical_table_without_its_id_column(tmp_path, table, content):
    for path in CANONICAL_SMALL.glob("*.csv"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / f"{table}.csv").write_text(content)
    with pytest.raises(DataLoadError, match=rf"{table}\.csv: required column customer_id"):
        load_bank_data(tmp_path, get_settings())


def test_corrupt_parquet_is_named(tmp_path):
    (tmp_path / "customers.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(DataLoadError, match=r"customers\.parquet: cannot be read"):
        load_bank_data(tmp_path, get_settings())


# ----------------------------------------------------------------------------------------------
# The real hackathon files
# ----------------------------------------------------------------------------------------------

def test_real_hackathon_files(hackathon_dir, text_encoder):
    data = load_bank_data(hackathon_dir, get_settings(), encoder=text_encoder)
    assert issue_count(data, "individuals", "duplicate_id") == 17
    assert issue_count(data, "organizations", "duplicate_id") == 118
    assert issue_count(data, "transactions", "invalid_date", "'2/29/2025' in Purchase Date") == 3
    assert issue_count(data, "social_posts", "invalid_date", "'1/13/25 24:34' in Timestamp") == 1
    assert data.quality.orphans == {"transactions": 504, "social_posts": 510, "holdings": 0}
    assert (len(data.customers), len(data.transactions), len(data.social_posts)) == (883, 36, 32)
    assert issue_count(data, "social_posts", "duplicate_id") == 29
    held = set(zip(data.holdings["customer_id"], data.holdings["product_id"]))
    asked = set(zip(data.interests["customer_id"], data.interests["product_id"]))
    home_loan = data.customers.loc[data.customers["preferences"].str.contains("Home Loan", na=False), "customer_id"]
    assert len(home_loan) and all((customer, "first_home_mortgage") in asked for customer in home_loan)
    assert ("CUST2025B", "first_home_mortgage") in held  # "Wells Fargo: Mortgage Payment"
    assert ("CUST2025E", "travel_rewards_card") in asked and ("CUST2025E", "travel_rewards_card") not in held
    matched = {row["text"]: row["product_id"] for row in data.quality.matched_evidence}
    assert matched["Certificates of Deposits"] == "fixed_term_deposit"
    assert matched["Business Loans"] == "business_loan" and matched["IRA Contribution"] == "retirement_pension"
    assert "New Arrivals" not in matched
    view = customer_view(data)
    assert len(view) == 883 and view["tx_count"].sum() == 33  # 3 of the 36 payments have no valid date
