"""Customer-to-product text match, phrase by phrase; life events linked to products by meaning."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_loader import profile_text, stated_interests
from data_use import TEXT_SOURCES
from feature_engineer import (customer_signals, event_relevance, product_texts, profile_match, profile_phrases,
                              spending_events, split_profile)
from explanations import event_factors
from text_models import LifeEventDetector, events_by_customer

CATALOGUE = pd.read_csv(Path(__file__).resolve().parents[1] / "config" / "products.csv")
AS_OF = pd.Timestamp("2025-06-01")
NO_POSTS = pd.DataFrame({"post_id": pd.Series(dtype=str), "customer_id": pd.Series(dtype=str),
                         "content": pd.Series(dtype=str), "timestamp": pd.Series(dtype="datetime64[ns]")})


@pytest.fixture(scope="module")
def detector(text_encoder) -> LifeEventDetector:
    return LifeEventDetector(text_encoder)


def view_of(profiles: dict[str, dict[str, str | None]]) -> pd.DataFrame:
    customers = pd.DataFrame.from_dict(profiles, orient="index")
    return pd.DataFrame({"profile_text": profile_text(customers)}, index=pd.Index(list(profiles), name="customer_id"))


def column_of(product_id: str) -> int:
    return int(np.flatnonzero(CATALOGUE["product_id"] == product_id)[0])


def test_profiles_split_into_the_phrases_customers_chose():
    texts = pd.Series(["Occupation: Teacher. Interests: golf, tennis. Financial needs: retirement saving; "
                       "paying down the mortgage.", None, "", "Interests: Dr. Who fandom, e.g. sci-fi"])
    rows, phrases = profile_phrases(texts)
    assert phrases.tolist() == ["Teacher", "golf", "tennis", "retirement saving", "paying down the mortgage",
                                "Dr. Who fandom", "e.g. sci-fi"]
    assert rows.tolist() == [0, 0, 0, 0, 0, 3, 3]
    assert split_profile(texts[0])[3] == "retirement saving"  # as the best text's source numbers them
    assert split_profile(texts[1]) == [] and split_profile(texts[2]) == []


def test_one_stated_need_is_found_among_unrelated_interests(text_encoder, detector):
    view = view_of({"c1": {"interests": "golf, tennis, wine, cruises, gardening, classic cars",
                           "financial_needs": "retirement saving"}})
    nothing = pd.DataFrame(columns=["customer_id", "product_id"])
    signals = customer_signals(view, NO_POSTS, nothing, nothing, CATALOGUE,
                               AS_OF, text_encoder, detector)
    pension = column_of("retirement_pension")
    both = TEXT_SOURCES.index("profile and posts")
    assert signals.best_text_match[0, both].argmax() == pension
    source = int(signals.best_text_source[0, both, pension])
    assert source < 0 and split_profile(view["profile_text"].iloc[0])[-1 - source] == "retirement saving"


def test_words_that_ask_for_low_risk_never_ask_for_or_speak_for_a_high_risk_product(text_encoder, detector):
    """The encoder puts "low-risk savings" closer to the crypto fund's alias "high risk investment"
    (0.68) than to any savings account: the shared word, not its direction. Neither the stated need
    nor the words an explanation quotes may tie a customer who asked for low risk to it, and asking
    for high risk does not ask for a savings account."""
    customers = pd.DataFrame({"customer_id": ["low", "high"], "customer_type": "individual",
                              "preferences": [None, None], "financial_needs": ["low-risk savings",
                                                                               "high risk investment"]})
    asked = stated_interests(customers, CATALOGUE, text_encoder).groupby("customer_id")["product_id"].apply(set)
    risk = CATALOGUE.set_index("product_id")["risk_level"]
    assert asked["low"] and max(risk[p] for p in asked["low"]) <= 2 and "easy_access_savings" in asked["low"]
    assert asked["high"] == {"crypto_growth_fund"}
    view = view_of({"low": {"financial_needs": "low-risk savings"}})
    nothing = pd.DataFrame(columns=["customer_id", "product_id"])
    posts = pd.DataFrame({"post_id": ["p1"], "customer_id": ["low"], "content": ["Looking for a low risk investment"],
                          "timestamp": [AS_OF - pd.Timedelta(days=3)]})
    signals = customer_signals(view, posts, nothing, nothing, CATALOGUE, AS_OF, text_encoder, detector)
    for source in ("profile", "posts"):
        best = signals.best_text_match[0, TEXT_SOURCES.index(source)]
        assert best[column_of("crypto_growth_fund")] == 0.0 and best[column_of("stock_trading_account")] == 0.0
        assert best.max() > 0.35, f"the {source}'s low-risk words should still speak for a low-risk product"


def test_life_events_are_linked_by_meaning_to_the_products_that_serve_them(text_encoder, detector):
    relevance = event_relevance(text_encoder, detector, CATALOGUE)
    assert relevance.shape == (len(detector.events), len(CATALOGUE)) and relevance.min() >= 0 and relevance.max() <= 1
    closest = {event: CATALOGUE["product_id"].iloc[int(row.argmax())] for event, row in zip(detector.events, relevance)}
    assert closest["home_purchase"] == "first_home_mortgage" and closest["car_purchase"] == "car_loan"
    assert closest["new_home"] == "home_insurance"  # a home just bought needs insuring; its mortgage is arranged
    assert closest["equipment_purchase"] == "equipment_leasing" and closest["health"] == "health_insurance"
    assert relevance[detector.events.index("car_purchase"), column_of("retirement_pension")] == 0.0


def test_new_kinds_of_spending_show_life_events_dated_by_their_first_payment(detector):
    transactions = pd.DataFrame({
        "transaction_id": ["t1", "t2", "t3", "t4", "t5"],
        "customer_id": ["c1", "c1", "c2", "c2", "ghost"],
        "date": pd.to_datetime(["2025-05-02", "2025-05-20", "2023-01-05", "2025-05-05", "2025-05-01"]),
        "category": ["wedding", "groceries", "health", "health", "wedding"],
        "type": ["Wedding Venue", "Purchase", "Hospital Bill", "Hospital Bill", "Wedding Venue"],
    })
    events = spending_events(transactions, pd.Index(["c1", "c2"]), detector)
    assert set(events["source"]) == {"spending"} and "ghost" not in set(events["customer_id"])
    wedding = events[(events["customer_id"] == "c1") & (events["event"] == "marriage")]
    assert wedding["post_id"].tolist() == ["t1"] and wedding["evidence"].tolist() == ["wedding: Wedding Venue"]
    assert not ((events["customer_id"] == "c1") & (events["post_id"] == "t2")).any()  # groceries show nothing
    hospital = events[events["customer_id"] == "c2"]
    assert hospital["post_id"].unique().tolist() == ["t3"]  # the first payment of the kind, years ago


def test_spending_without_a_transaction_id_refers_to_nothing_rather_than_to_nan(detector):
    """Files where a row lacks its transaction id (the hackathon transactions do) still show the event; its
    explanation quotes the spending and its date, and refers to no transaction, not to one called "nan"."""
    transactions = pd.DataFrame({"transaction_id": [None], "customer_id": ["c1"],
                                 "date": pd.to_datetime(["2025-05-02"]), "category": ["wedding"],
                                 "type": ["Wedding Venue"]})
    events = spending_events(transactions, pd.Index(["c1"]), detector)
    assert events["post_id"].tolist() == [""] and "marriage" in set(events["event"])
    detected = events_by_customer(events)["c1"][0]
    factor = event_factors({detected.event: 1.0}, [detected], [], frozenset())[0]
    assert factor.reference is None and factor.date == "2025-05-02"


def test_an_event_is_read_only_for_customers_whose_life_it_can_be_part_of(text_encoder, detector):
    """A nurse's "start my new role at the hospital" is as close to "we are hiring" as to a new job, and a
    household's bus fares ("transport: Purchase") to exports: no household hires staff or trades abroad,
    no company gets a new job. Each keeps only the events of its own kind, in the evidence and in what an
    explanation could quote; a customer of unknown type keeps every event."""
    view = pd.DataFrame({"profile_text": [None, None, None], "customer_type": ["individual", "organization", None]},
                        index=pd.Index(["nurse", "firm", "unknown"], name="customer_id"))
    said = "Starting my new role at the hospital on Monday"
    posts = pd.DataFrame({"post_id": ["p1", "p2", "p3"], "customer_id": ["nurse", "firm", "unknown"],
                          "content": [said, said, said], "timestamp": [AS_OF - pd.Timedelta(days=5)] * 3})
    transactions = pd.DataFrame({"transaction_id": ["t1"], "customer_id": ["nurse"], "date": [AS_OF - pd.Timedelta(days=9)],
                                 "category": ["transport"], "type": ["Purchase"]})
    nothing = pd.DataFrame(columns=["customer_id", "product_id"])
    signals = customer_signals(view, posts, nothing, nothing, CATALOGUE, AS_OF, text_encoder, detector, transactions)
    read = signals.event_posts.groupby("customer_id")["event"].apply(set)
    evidence = dict(zip(view.index, signals.events.max(axis=1)))
    hiring, new_job, trade = (detector.events.index(e) for e in ("hiring", "new_job", "international_trade"))
    assert "new_job" in read["nurse"] and not read["nurse"] & {"hiring", "international_trade"}
    assert evidence["nurse"][hiring] == 0 and evidence["nurse"][trade] == 0 and evidence["nurse"][new_job] > 0
    assert "new_job" not in read.get("firm", set()) and evidence["firm"][new_job] == 0
    assert {"new_job", "hiring"} <= read["unknown"], "with the type unknown nothing is ruled out"


def test_a_product_asked_for_in_several_words_is_quoted_with_the_closest(text_encoder):
    """A sports brand wrote "Athlete Sponsorship" before "Business Loans", and the explanation of its
    business loan quoted the first: its words for the loan are the ones that mean it."""
    customers = pd.DataFrame({"customer_id": ["brand"], "customer_type": "organization",
                              "preferences": ["Athlete Sponsorship, R&D"],
                              "financial_needs": ["Business Loans, Digital Payments"]})
    asked = stated_interests(customers, CATALOGUE, text_encoder).set_index("product_id")["evidence"]
    assert asked["business_loan"] == "Business Loans"
    assert asked["merchant_payments"] == "Digital Payments"


def test_each_customers_signals_are_those_they_would_have_alone_whatever_the_posts_around_them(text_encoder,
                                                                                                detector):
    """Signals are computed for a whole bank at once, texts summed and ranked in rounds across
    customers: a customer's text match, best match and its source must come out as if the customer
    were read alone, their posts interleaved with others' or not (equal to the float32 rounding of
    matrix products, which differs with their number of rows). Of two equally close texts, the
    source is the later one (here the same post made twice). Training matches the profiles once for
    all its snapshots: given, they give the same signals bit for bit, and only for their customers."""
    view = view_of({"saver": {"interests": "gardening", "financial_needs": "retirement saving; emergency fund"},
                    "driver": {"interests": "classic cars"}, "quiet": {"interests": None}})
    upgrading = "Thinking of upgrading my car!! Any loan suggestions?"
    posts = pd.DataFrame({
        "post_id": ["p1", "p2", "p3", "p4", "p5"],
        "customer_id": ["driver", "saver", "driver", "saver", "driver"],
        "content": [upgrading, "Saving hard for retirement", "Road trip this weekend", "Saving hard for retirement",
                    upgrading],
        "timestamp": AS_OF - pd.to_timedelta([200, 90, 30, 10, 5], unit="D"),
    })
    nothing = pd.DataFrame(columns=["customer_id", "product_id"])
    together = customer_signals(view, posts, nothing, nothing, CATALOGUE, AS_OF, text_encoder, detector)
    profiles = profile_match(view["profile_text"], CATALOGUE, text_encoder.encode(product_texts(CATALOGUE)),
                             text_encoder)  # as training passes it to each snapshot
    given = customer_signals(view, posts, nothing, nothing, CATALOGUE, AS_OF, text_encoder, detector, profiles=profiles)
    np.testing.assert_array_equal(given.text_match, together.text_match)
    np.testing.assert_array_equal(given.best_text_source, together.best_text_source)
    with pytest.raises(ValueError, match="other customers"):
        customer_signals(view.iloc[1:], posts, nothing, nothing, CATALOGUE, AS_OF, text_encoder, detector,
                         profiles=profiles)
    for row, customer in enumerate(view.index):
        own = posts[posts["customer_id"] == customer].reset_index(drop=True)
        alone = customer_signals(view.loc[[customer]], own, nothing, nothing, CATALOGUE, AS_OF, text_encoder, detector)
        np.testing.assert_allclose(together.text_match[row], alone.text_match[0], atol=1e-6)
        np.testing.assert_allclose(together.best_text_match[row], alone.best_text_match[0], atol=1e-6)
        np.testing.assert_allclose(together.events[row], alone.events[0], atol=1e-6)
        quoted_together = [posts["post_id"][s] if s >= 0 else s for s in together.best_text_source[row].ravel()]
        quoted_alone = [own["post_id"][s] if s >= 0 else s for s in alone.best_text_source[0].ravel()]
        assert quoted_together == quoted_alone
    posts_only = TEXT_SOURCES.index("posts")
    car, saver = column_of("car_loan"), view.index.get_loc("saver")
    assert posts["post_id"][together.best_text_source[view.index.get_loc("driver"), posts_only, car]] == "p5"
    quoted = together.best_text_source[saver, posts_only]
    assert set(posts["post_id"][quoted[quoted >= 0]]) == {"p4"}
    assert (together.text_match[view.index.get_loc("quiet")] == 0).all()
