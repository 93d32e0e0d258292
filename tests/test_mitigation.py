"""Fairness mitigation: the rules file's ``fairness_mitigation`` pairs, the search for the least boost
that brings a pair's exposure disparity into the fairness band, and the boost as a visible rule."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bias_detector import (ExposureMitigation, RebalanceSearch, exposure_disparity, least_rebalancing_factor,
                           position_discount)
from business_rules import REBALANCE_RULE, GroupRebalance, MitigationPair, RuleBook, RulesFileError
from tests.test_business_rules import CATALOGUE_FILE, VIEW_FIELDS, person, scores, write_rules

BAND = (0.8, 1.25)
ATTRIBUTES = {"gender": "gender", "age": "age_band", "location": "location"}
PAIR = MitigationPair("index_fund_portfolio", "gender", "gender")


@pytest.fixture(scope="module")
def catalogue() -> pd.DataFrame:
    return pd.read_csv(CATALOGUE_FILE)


def book_with(directory: Path, catalogue: pd.DataFrame, mitigation: list[dict[str, Any]] | None) -> RuleBook:
    sections = {} if mitigation is None else {"fairness_mitigation": mitigation}
    return RuleBook.load(write_rules(directory, [], **sections), catalogue, VIEW_FIELDS,
                         protected_attributes=ATTRIBUTES)


def women_boosted(factor: float) -> GroupRebalance:
    return GroupRebalance(PAIR, frozenset({"M"}), "unprivileged", factor)


# ------------------------------------------------------------------------------------------------
# The rules file section
# ------------------------------------------------------------------------------------------------

def test_listed_pairs_load_with_the_attribute_column(tmp_path: Path, catalogue: pd.DataFrame):
    book = book_with(tmp_path, catalogue, [{"product": "index_fund_portfolio", "attribute": "gender"},
                                           {"product": "retirement_pension", "attribute": "age"}])

    assert book.fairness_mitigation == (PAIR, MitigationPair("retirement_pension", "age", "age_band"))
    assert book.reads("customer.gender") and book.reads("customer.age_band")  # the counterfactual check re-ranks


FUND = {"product": "index_fund_portfolio", "attribute": "gender"}


@pytest.mark.parametrize(("entry", "problem"), [
    ({"product": "index_fund_portfolo", "attribute": "gender"},
     r"fairness_mitigation\[1\] \(index_fund_portfolo, gender\): unknown product 'index_fund_portfolo' "
     r"\(did you mean 'index_fund_portfolio'\?\)"),
    ({"product": "retirement_pension", "attribute": "sex"},
     r"fairness_mitigation\[1\] \(retirement_pension, sex\): 'sex' is not a configured protected attribute.*"
     r"configured: gender, age, location"),
    (FUND, r"fairness_mitigation\[1\] \(index_fund_portfolio, gender\): listed twice"),
    ({"product": "retirement_pension"}, r"fairness_mitigation\.1\.attribute: Field required"),
])
def test_a_wrong_entry_refuses_the_file_naming_it(tmp_path: Path, catalogue: pd.DataFrame, entry: dict[str, str],
                                                  problem: str):
    with pytest.raises(RulesFileError, match=problem):
        book_with(tmp_path, catalogue, [FUND, entry])


def test_without_the_section_nothing_is_rebalanced(tmp_path: Path, catalogue: pd.DataFrame):
    book = book_with(tmp_path, catalogue, None)
    woman = person(gender="F")
    model_scores = scores(catalogue, index_fund_portfolio=0.2)

    rebalanced = book.rebalanced([women_boosted(3.0)])  # a boost for a pair the file does not list is dropped

    assert book.fairness_mitigation == () and rebalanced.rebalances == ()
    assert not book.reads("customer.gender")
    assert rebalanced.apply(woman, model_scores, 5) == book.apply(woman, model_scores, 5)


# ------------------------------------------------------------------------------------------------
# The boost as a rule
# ------------------------------------------------------------------------------------------------

def test_the_boosted_group_gets_a_named_visible_boost_and_the_other_group_none(tmp_path: Path,
                                                                              catalogue: pd.DataFrame):
    book = book_with(tmp_path, catalogue, [{"product": "index_fund_portfolio", "attribute": "gender"}])
    rebalanced = book.rebalanced([women_boosted(2.0)])
    model_scores = scores(catalogue, index_fund_portfolio=0.2)

    def fund(book: RuleBook, profile: dict[str, Any]) -> tuple[float, list[Any]]:
        """The fund's adjusted score and rule effects, listed or not."""
        outcome = book.apply(person(**profile), model_scores, 5)
        return outcome.adjusted["index_fund_portfolio"], outcome.rule_effects["index_fund_portfolio"]

    woman_score, [effect] = fund(rebalanced, {"gender": "F"})
    man, unknown = fund(rebalanced, {"gender": "M"}), fund(rebalanced, {})
    assert (effect.rule, effect.effect, effect.factor) == (REBALANCE_RULE, "boost", 2.0)
    assert "gender group" in effect.reason and "exposure" in effect.reason
    assert effect.fields == frozenset({"customer.gender"})
    assert woman_score == pytest.approx(0.4)
    assert man == (pytest.approx(0.2), [])
    assert unknown == (pytest.approx(0.2), [])  # in neither group: no boost
    assert fund(book, {"gender": "F"}) == (pytest.approx(0.2), [])  # not calibrated yet: nothing
    woman_list = rebalanced.apply(person(gender="F"), model_scores, 5).ranked
    assert woman_list[0].product_id == "index_fund_portfolio" and woman_list[0].effects == [effect]


def test_a_rebalance_factor_must_raise_the_score():
    with pytest.raises(ValueError, match="greater than 1"):
        women_boosted(0.9)


# ------------------------------------------------------------------------------------------------
# The search for the least boost
# ------------------------------------------------------------------------------------------------

def skewed_bank(customers: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Scores of 6 products for ``customers``; product 0 scores half as high for the unprivileged half."""
    generator = np.random.default_rng(seed)
    privileged = np.arange(customers) < customers // 2
    frame = generator.uniform(0.05, 0.5, size=(customers, 6))
    frame[~privileged, 0] *= 0.5
    return frame, privileged


def top_3_ranks(frame: np.ndarray, privileged: np.ndarray, product: int, group: str, factor: float) -> np.ndarray:
    """The product's place in every top-3 list, after multiplying its score by ``factor`` for ``group``."""
    boosted = frame.copy()
    members = privileged if group == "privileged" else ~privileged
    boosted[members, product] *= factor
    places = np.argsort(np.argsort(-boosted, axis=1), axis=1)[:, product] + 1
    return np.where(places <= 3, places, 0)


def search(frame: np.ndarray, privileged: np.ndarray) -> tuple[RebalanceSearch, Any]:
    def disparity_with(group: str, factor: float) -> float | None:
        return exposure_disparity(top_3_ranks(frame, privileged, 0, group, factor), privileged)

    return least_rebalancing_factor(disparity_with, BAND), disparity_with


def test_exposure_disparity_is_the_audit_s_mean_discount_ratio():
    ranks = np.array([1, 0, 3, 2, 0, 0])
    privileged = np.array([True, True, True, False, False, False])
    discount = position_discount(ranks)

    assert exposure_disparity(ranks, privileged) == pytest.approx(discount[3:].mean() / discount[:3].mean())
    assert exposure_disparity(ranks, np.ones(6, dtype=bool)) is None


def test_the_least_boost_brings_an_under_exposed_group_inside_the_band():
    frame, privileged = skewed_bank()
    found, disparity_with = search(frame, privileged)

    assert found.status == "rebalanced" and found.boosted == "unprivileged"
    assert found.disparity_before < BAND[0]
    assert BAND[0] <= found.disparity_after <= BAND[1]
    assert found.disparity_after == disparity_with("unprivileged", found.factor)
    # the least: a boost 1% smaller falls short of the band
    assert disparity_with("unprivileged", found.factor / 1.01) < BAND[0]
    assert 1 < found.factor < 2.5  # the skew halves the score: no more than undoing it is needed


def test_an_over_exposed_group_is_balanced_by_boosting_the_other():
    frame, privileged = skewed_bank()
    found, disparity_with = search(frame, ~privileged)  # the halved group is now the privileged one

    assert found.status == "rebalanced" and found.boosted == "privileged"
    assert found.disparity_before > BAND[1]
    assert BAND[0] <= found.disparity_after <= BAND[1]
    assert disparity_with("privileged", found.factor / 1.01) > BAND[1]


def test_a_pair_already_within_the_band_is_left_alone():
    frame, privileged = skewed_bank()
    frame[:, 0] = np.random.default_rng(2).uniform(0.05, 0.5, size=len(frame))  # no skew
    found, _ = search(frame, privileged)

    assert (found.status, found.factor, found.boosted) == ("within_band", None, None)
    assert found.disparity_before == found.disparity_after


def test_a_product_no_boost_can_place_is_out_of_reach():
    frame, privileged = skewed_bank()
    unprivileged = np.flatnonzero(~privileged)
    frame[unprivileged[: len(unprivileged) * 3 // 4], 0] = 0.0  # unscored for most of the group: no boost helps
    found, _ = search(frame, privileged)

    assert found.status == "out_of_reach" and found.factor is None
    assert found.disparity_after == found.disparity_before < BAND[0]


# ------------------------------------------------------------------------------------------------
# Through the trained small bank
# ------------------------------------------------------------------------------------------------

def test_the_audit_calibrates_the_pair_and_answers_show_the_boost(trained_service, tmp_path: Path):
    from batch import run_audit
    from recommendation_service import RecommendationService

    settings = trained_service.settings
    assert "mitigation" not in trained_service.artifacts.audit  # the shipped rules list no pair: nothing calibrated
    assert trained_service.rules.rebalances == () and trained_service.artifacts.mitigation == ()
    book = RuleBook.load(write_rules(tmp_path, [], fairness_mitigation=[
        {"product": PAIR.product_id, "attribute": "gender"}]), trained_service.products, VIEW_FIELDS,
        protected_attributes={a.name: a.column for a in settings.protected_attributes})
    forced = ExposureMitigation(PAIR, RebalanceSearch("rebalanced", 0.5, 0.9, "unprivileged", 2.0), women_boosted(2.0))
    service = RecommendationService(settings, trained_service.data, book,
                                    replace(trained_service.artifacts, mitigation=(forced,), audit={}))

    women = service.base.view.index[service.base.view["gender"].eq("F")]
    answers = (service.recommend(customer, top_k=10) for customer in women[:60])
    answer, fund = next((a, p) for a in answers for p in a.recommendations if p.product_id == PAIR.product_id)
    assert [(r.rule, r.factor) for r in fund.rules if r.rule == REBALANCE_RULE] == [(REBALANCE_RULE, 2.0)]
    gender = next(check for check in answer.bias_check.attributes if check.attribute == "gender")
    assert gender.max_score_change > 0  # the counterfactual man loses the boost: measured, not hidden

    audit = run_audit(service)

    [pair] = audit["mitigation"]["pairs"]
    assert (pair["product_id"], pair["attribute"]) == (PAIR.product_id, "gender")
    assert pair["status"] in {"within_band", "rebalanced", "out_of_reach", "undefined"}
    if pair["status"] == "rebalanced":
        assert BAND[0] <= pair["with"]["exposure_disparity"] <= BAND[1]
        [rebalance] = service.rules.rebalances
        assert (rebalance.boosted, round(rebalance.factor, 4)) == (pair["boosted_group"], pair["factor"])
    else:
        assert service.rules.rebalances == ()  # the forced boost gave way to what the calibration found
    if pair["disparity_before"] is not None:  # the calibration aims at the figure the audit reports
        assert pair["without"]["exposure_disparity"] == pytest.approx(pair["disparity_before"])
