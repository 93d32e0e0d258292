"""Events read with their tense: a plan, a purchase just made, or a payment on a product held.

"We're thinking of buying our first home" calls for a mortgage; "we just bought our first home"
for home insurance; a mortgage repayment is evidence of a mortgage held, never of a plan to buy.
"""
from __future__ import annotations

import pandas as pd
import pytest

from feature_engineer import spending_events
from synthetic_data import ALL_EVENTS
from text_models import ACQUISITION_EVENTS, LIFE_EVENTS, TENSE_PAIRS, LifeEventDetector, text_aspect


@pytest.fixture(scope="module")
def detector(text_encoder) -> LifeEventDetector:
    return LifeEventDetector(text_encoder)


def shown_events(detector: LifeEventDetector, text: str) -> set[str]:
    scores = detector.detected_scores([text])[0]
    return {event for event, score in zip(detector.events, scores) if score > 0}


@pytest.mark.parametrize("plan, done", [
    ("We're thinking of buying our first home", "We just bought our first home!"),
    ("Planning to buy a house next year, saving every penny", "Closing day is done. Homeowners at last"),
    ("Considering a mortgage for my first home", "First night in the new house. So many boxes."),
    ("house hunting all weekend, want to find a place before summer",
     "Loving the sunshine today! Also we finally got the keys to our new place :)"),
])
def test_a_home_planned_and_a_home_just_bought_are_different_events(detector, plan, done):
    assert shown_events(detector, plan) & {"home_purchase", "new_home"} == {"home_purchase"}
    assert shown_events(detector, done) & {"home_purchase", "new_home"} == {"new_home"}


@pytest.mark.parametrize("description", [
    "Home Loan Repayment: Mortgage Payment", "Wells Fargo: Mortgage Payment", "housing: Mortgage Payment",
    "Car Loan: Loan EMI", "equipment: Lease Payment",
])
def test_a_payment_on_a_product_held_is_no_plan_to_get_one(detector, description):
    assert text_aspect(description) == "holding"
    assert not shown_events(detector, description) & ACQUISITION_EVENTS


def test_a_customer_paying_a_mortgage_is_not_read_as_buying_a_home(detector):
    transactions = pd.DataFrame({
        "transaction_id": ["t1", "t2", "t3"],
        "customer_id": ["c1", "c1", "c2"],
        "date": pd.to_datetime(["2025-04-01", "2025-05-01", "2025-05-03"]),
        "category": ["Home Loan Repayment", "Home Loan Repayment", "Medicare Advantage"],
        "type": ["Mortgage Payment", "Mortgage Payment", "Health Insurance Premium"],
    })
    events = spending_events(transactions, pd.Index(["c1", "c2"]), detector)
    assert events.empty, events[["customer_id", "event", "evidence"]].to_dict("records")


@pytest.mark.parametrize("text, aspect", [
    ("We're thinking of buying our first home", "plan"),
    ("We just bought our first home!", "done"),
    ("We just bought our home, the first mortgage payment is due", "done"),  # tense outranks a payment
    ("Vanguard: IRA Contribution", "holding"),
    ("Medicare Advantage: Health Insurance Premium", "holding"),
    ("Had a great dinner with friends", None),
])
def test_cue_words_say_how_a_text_speaks_of_its_event(text, aspect):
    assert text_aspect(text) == aspect


def test_every_tense_pair_and_acquisition_is_an_event_the_detector_knows():
    assert {event for pair in TENSE_PAIRS for event in pair} <= set(LIFE_EVENTS)
    assert ACQUISITION_EVENTS <= set(LIFE_EVENTS)


def test_the_generators_life_events_are_the_detectors():
    """The generator's ground truth must be readable by the detector, or the synthetic bank's
    causal story could not be found. The detector may read finer than the generator's truth:
    its ``new_home`` is the after-the-purchase half of the generator's ``home_purchase``."""
    assert set(ALL_EVENTS) <= set(LIFE_EVENTS)
    assert set(LIFE_EVENTS) - set(ALL_EVENTS) == {done for _, done in TENSE_PAIRS}
