"""Business rules: eligibility, suitability, named boosts/demotions/exclusions, diversity, and a
rules file that refuses every mistake with a message naming the rule and the problem."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from business_rules import ContactHistory, CustomerContext, RuleBook, RuleOutcome, RulesFileError
from settings import PROJECT_ROOT
from tests.utils.data_files import CANONICAL_SMALL
from text_models import LIFE_EVENTS

CATALOGUE_FILE = PROJECT_ROOT / "config" / "products.csv"
DEFAULT_RULES_FILE = PROJECT_ROOT / "config" / "business_rules.yaml"
VIEW_FIELDS = (
    "customer_id", "customer_type", "age", "gender", "location", "income", "education", "occupation", "industry",
    "employees", "interests", "preferences", "financial_needs", "age_band", "tx_count", "tx_total", "tx_mean_amount",
    "tx_monthly_mean", "tx_monthly_volatility", "tx_recency_days", "tx_tenure_days", "tx_trend",
    "debt_payment_share", "post_count", "sentiment_mean", "sentiment_min", "sentiment_recent_trend",
    "post_recency_days", "profile_text",
)
DEFAULT_RULE_NAMES = (
    "retirement_planning", "home_purchase", "not_a_first_time_buyer", "new_home", "new_child", "travel", "car_purchase",
    "speculation_under_financial_stress", "debt_relief", "no_new_credit_under_heavy_debt", "cautious_saver",
    "high_income_wealth_management", "employer_payroll", "growing_business_finance", "international_trade",
    "cash_flow_support", "green_finance",
)


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def catalogue() -> pd.DataFrame:
    return pd.read_csv(CATALOGUE_FILE)


@pytest.fixture(scope="module")
def default_book(catalogue: pd.DataFrame) -> RuleBook:
    return RuleBook.load(DEFAULT_RULES_FILE, catalogue, VIEW_FIELDS, known_life_events=LIFE_EVENTS)


def person(risk_level: str = "High", life_events: tuple[str, ...] = (), held: tuple[str, ...] = (),
           **profile: Any) -> CustomerContext:
    """A 40-year-old individual on 60,000 a year unless told otherwise."""
    return CustomerContext(profile={"customer_id": "C1", "customer_type": "individual", "age": 40, "income": 60_000.0,
                                    **profile},
                           risk_level=risk_level, risk_score=0.5, life_events=frozenset(life_events),
                           held_products=frozenset(held))


def organization(life_events: tuple[str, ...] = (), **profile: Any) -> CustomerContext:
    return CustomerContext(profile={"customer_id": "O1", "customer_type": "organization", "age": None,
                                    "income": 5_000_000.0, "employees": 40, **profile},
                           risk_level="High", risk_score=0.7, life_events=frozenset(life_events))


def scores(catalogue: pd.DataFrame, **overrides: float) -> dict[str, float]:
    """Distinct scores for every product (earlier catalogue rows score higher), with some set by name."""
    product_ids = list(catalogue["product_id"])
    base = {product_id: round(0.30 - 0.005 * index, 4) for index, product_id in enumerate(product_ids)}
    return base | overrides


def write_rules(directory: Path, rules: list[Any], **sections: Any) -> Path:
    document = {"suitability": {"max_product_risk": {"Low": 2, "Medium": 3, "High": 5}},
                "diversity": {"max_per_category": 2}, "rules": rules} | sections
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def rule(**fields: Any) -> dict[str, Any]:
    """A valid boost rule; a test changes what it is about."""
    return {"name": "pension_boost", "kind": "boost", "factor": 1.5, "reason": "the customer is 55 or older",
            "when": {"field": "customer.age", "op": ">=", "value": 55},
            "target": {"products": ["retirement_pension"]}} | fields


def load(directory: Path, rules: list[Any], catalogue: pd.DataFrame, **options: Any) -> RuleBook:
    return RuleBook.load(write_rules(directory, rules), catalogue, VIEW_FIELDS, **options)


def effects_by_product(outcome: RuleOutcome) -> dict[str, list[tuple[str, str]]]:
    return {product.product_id: [(effect.rule, effect.effect) for effect in product.effects]
            for product in outcome.ranked}


def excluded_by(outcome: RuleOutcome, rule_name: str) -> set[str]:
    return {product_id for product_id, effects in outcome.excluded.items()
            if any(effect.rule == rule_name for effect in effects)}


def risk_level_of(catalogue: pd.DataFrame) -> dict[str, int]:
    return dict(zip(catalogue["product_id"], catalogue["risk_level"]))


# ------------------------------------------------------------------------------------------------
# The default rules file
# ------------------------------------------------------------------------------------------------

def test_default_file_loads_against_the_catalogue_with_its_policy(default_book: RuleBook):
    assert default_book.rule_names == DEFAULT_RULE_NAMES
    assert [default_book.max_risk_level(level) for level in ("Low", "Medium", "High")] == [2, 3, 5]
    assert default_book.category_limits["cards"] == 2
    assert default_book.category_limits["business"] == 3


def test_default_file_never_conditions_on_protected_attributes(catalogue: pd.DataFrame):
    text = DEFAULT_RULES_FILE.read_text()
    assert "allow_protected" not in "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    # stricter protection (age bands too) still loads: no default rule looks at a protected column
    RuleBook.load(DEFAULT_RULES_FILE, catalogue, VIEW_FIELDS, protected_fields=("gender", "location", "age_band"))


def test_retirement_boost_multiplies_the_score_and_is_named(default_book: RuleBook, catalogue: pd.DataFrame):
    outcome = default_book.apply(person(age=60), scores(catalogue, retirement_pension=0.2), top_k=5)

    pension = next(product for product in outcome.ranked if product.product_id == "retirement_pension")
    assert pension.model_score == 0.2
    assert pension.adjusted_score == pytest.approx(0.3)
    [effect] = pension.effects
    assert (effect.rule, effect.effect, effect.factor) == ("retirement_planning", "boost", 1.5)
    assert "55 or older" in effect.reason


def test_a_counterfactual_reuses_only_the_tests_its_change_cannot_touch(default_book: RuleBook,
                                                                        catalogue: pd.DataFrame):
    """The bias check re-runs the rules for a customer with their age (and so their risk profile)
    changed, passing the original's outcome: the rules on age and risk must be tested again, the rest
    may be carried over, and the outcome must be the one of testing everything."""
    original = person(age=40, risk_level="Medium", life_events=("new_child",), interests="travel, golf")
    outcome = default_book.apply(original, scores(catalogue), top_k=5)
    for changed in (replace(original, profile={**original.profile, "age": 60}),  # the retirement boost now fires
                    replace(original, risk_level="Low", risk_score=0.2),
                    replace(original, profile={**original.profile, "interests": "golf"}),
                    replace(original, life_events=frozenset())):
        assert default_book.apply(changed, scores(catalogue), 5, like=outcome) == default_book.apply(
            changed, scores(catalogue), 5)
    older = default_book.apply(replace(original, profile={**original.profile, "age": 60}), scores(catalogue), 5,
                               like=outcome)
    assert [effect.rule for effect in older.rule_effects["retirement_pension"]] == ["retirement_planning"]
    assert not outcome.rule_effects["retirement_pension"]


def test_rules_whose_conditions_do_not_hold_change_nothing(default_book: RuleBook, catalogue: pd.DataFrame):
    outcome = default_book.apply(person(age=40, risk_level="Medium"), scores(catalogue), top_k=5)

    assert all(product.effects == [] and product.adjusted_score == product.model_score for product in outcome.ranked)


def test_life_event_boosts_the_targeted_products_and_categories(default_book: RuleBook, catalogue: pd.DataFrame):
    model = scores(catalogue, first_home_mortgage=0.25, home_insurance=0.24, remortgage=0.01)
    planning = default_book.apply(person(life_events=("home_purchase",)), model, top_k=3)
    moved_in = default_book.apply(person(life_events=("new_home",)), model, top_k=3)

    assert [product.product_id for product in planning.ranked][0] == "first_home_mortgage"
    assert effects_by_product(planning)["first_home_mortgage"] == [("home_purchase", "boost")]
    assert "home_insurance" not in planning.rule_effects or planning.rule_effects["home_insurance"] == []
    # a home just bought is a moment for home insurance, not for another mortgage
    assert [product.product_id for product in moved_in.ranked][0] == "home_insurance"
    assert effects_by_product(moved_in)["home_insurance"] == [("new_home", "boost")]
    assert moved_in.rule_effects["first_home_mortgage"] == []


def test_financial_stress_demotes_speculative_investments(default_book: RuleBook, catalogue: pd.DataFrame):
    model = scores(catalogue, stock_trading_account=0.9, index_fund_portfolio=0.8)
    outcome = default_book.apply(person(life_events=("financial_stress",), income=80_000.0), model, top_k=10)

    adjusted = {product.product_id: product for product in outcome.ranked}
    assert adjusted["stock_trading_account"].adjusted_score == pytest.approx(0.9 * 0.3)
    assert [(e.rule, e.effect, e.factor) for e in adjusted["stock_trading_account"].effects] == [
        ("speculation_under_financial_stress", "demote", 0.3)]
    # the target's `where: product.risk_level >= 4` spares the risk-3 index fund
    assert adjusted["index_fund_portfolio"].effects == []
    assert outcome.ranked[0].product_id == "index_fund_portfolio"


def test_exclude_rule_removes_the_product_and_says_why(default_book: RuleBook, catalogue: pd.DataFrame):
    stressed = person(life_events=("financial_stress",), debt_payment_share=0.5)
    outcome = default_book.apply(stressed, scores(catalogue, personal_loan=0.99), top_k=5)

    assert "personal_loan" not in effects_by_product(outcome)
    [effect] = outcome.excluded["personal_loan"]
    assert (effect.rule, effect.effect, effect.factor) == ("no_new_credit_under_heavy_debt", "exclude", None)
    assert "responsible lending" in effect.reason
    # the debt-relief boost fires for the same customer
    relief = default_book.apply(stressed, scores(catalogue, debt_consolidation_loan=0.9), top_k=5)
    assert effects_by_product(relief)["debt_consolidation_loan"] == [("debt_relief", "boost")]


def test_organization_rules_use_organization_fields(default_book: RuleBook, catalogue: pd.DataFrame):
    large = default_book.apply(organization(employees=300), scores(catalogue, payroll_services=0.2), top_k=5)
    small = default_book.apply(organization(employees=12), scores(catalogue, payroll_services=0.2), top_k=5)

    assert effects_by_product(large)["payroll_services"] == [("employer_payroll", "boost")]
    assert large.ranked[0].adjusted_score == pytest.approx(0.3)
    assert effects_by_product(small)["payroll_services"] == []


# ------------------------------------------------------------------------------------------------
# Hard eligibility and suitability
# ------------------------------------------------------------------------------------------------

def test_segment_keeps_individuals_and_organizations_to_their_products(default_book: RuleBook,
                                                                       catalogue: pd.DataFrame):
    segment = dict(zip(catalogue["product_id"], catalogue["segment"]))

    for_person = default_book.eligible(person())
    for_company = default_book.eligible(organization())

    assert for_person and all(segment[product_id] in ("individual", "both") for product_id in for_person)
    assert for_company and all(segment[product_id] in ("organization", "both") for product_id in for_company)
    outcome = default_book.apply(person(), scores(catalogue), top_k=5)
    assert excluded_by(outcome, "eligibility.segment") == {p for p, s in segment.items() if s == "organization"}
    assert outcome.excluded["payroll_services"][0].reason == (
        "only offered to organizations; the customer is an individual")


def test_unknown_customer_type_leaves_only_products_for_both_segments(default_book: RuleBook,
                                                                      catalogue: pd.DataFrame):
    both = set(catalogue.loc[catalogue["segment"] == "both", "product_id"])

    assert default_book.eligible(person(customer_type=None, income=1e6)) == both
    assert default_book.eligible(person(customer_type="partnership", income=1e6)) == both
    outcome = default_book.apply(person(customer_type=None), scores(catalogue), top_k=5)
    assert outcome.excluded["current_account"][0].reason == (
        "only offered to individuals; the customer type is unknown")


def test_minimum_age_excludes_the_too_young(default_book: RuleBook, catalogue: pd.DataFrame):
    outcome = default_book.apply(person(age=17), scores(catalogue), top_k=5)

    assert "current_account" not in outcome.excluded  # from 16
    [effect] = outcome.excluded["cashback_credit_card"]  # from 18
    assert effect.rule == "eligibility.min_age"
    assert effect.reason == "the customer is younger than the minimum age of 18"
    assert "retirement_annuity" in excluded_by(default_book.apply(person(age=54), scores(catalogue), 5),
                                               "eligibility.min_age")
    assert "retirement_annuity" in default_book.eligible(person(age=55))


def test_unknown_age_or_income_does_not_exclude_but_is_noted(default_book: RuleBook, catalogue: pd.DataFrame):
    outcome = default_book.apply(person(age=float("nan"), income=None), scores(catalogue), top_k=5)

    assert excluded_by(outcome, "eligibility.min_age") == set()
    assert excluded_by(outcome, "eligibility.min_income") == set()
    age_note, income_note = outcome.notes
    assert age_note.startswith("age unknown: the minimum age was not checked for ")
    assert "retirement_annuity" in age_note and "business_loan" not in age_note
    assert income_note.startswith("income unknown: the minimum income was not checked for ")
    assert "wealth_management" in income_note
    assert default_book.apply(person(), scores(catalogue), top_k=5).notes == []


def test_minimum_age_does_not_apply_to_organizations(default_book: RuleBook, catalogue: pd.DataFrame):
    outcome = default_book.apply(organization(), scores(catalogue), top_k=5)

    assert outcome.notes == []
    assert {"easy_access_savings", "wealth_management"} <= default_book.eligible(organization())


def test_minimum_income_applies_to_income_and_to_revenue(default_book: RuleBook, catalogue: pd.DataFrame):
    outcome = default_book.apply(person(income=20_000.0), scores(catalogue), top_k=5)

    assert {"first_home_mortgage", "premium_current_account", "wealth_management"} <= excluded_by(
        outcome, "eligibility.min_income")
    assert "cashback_credit_card" not in outcome.excluded  # from 15,000
    assert outcome.excluded["first_home_mortgage"][0].reason.endswith("is below the minimum of 30,000")
    assert "treasury_services" not in default_book.eligible(organization(income=900_000.0))
    assert "treasury_services" in default_book.eligible(organization(income=1_000_000.0))


def test_products_already_held_are_not_offered_again(default_book: RuleBook, catalogue: pd.DataFrame):
    customer = person(held=("current_account", "life_insurance", "no_longer_sold"))
    outcome = default_book.apply(customer, scores(catalogue, life_insurance=0.99), top_k=5)

    assert excluded_by(outcome, "eligibility.already_held") == {"current_account", "life_insurance"}
    assert outcome.excluded["life_insurance"][0].reason == "the customer already holds this product"
    assert not {"current_account", "life_insurance"} & default_book.eligible(customer)


def test_the_contact_policy_suppresses_declines_and_ignored_offers(default_book: RuleBook, catalogue: pd.DataFrame):
    contact = ContactHistory(declined_recently=frozenset({"travel_rewards_card"}),
                             unanswered_offers={"life_insurance": 3, "health_insurance": 2},
                             accepted=frozenset({"personal_loan"}))
    customer = CustomerContext(**{**vars(person()), "contact": contact})
    outcome = default_book.apply(customer, scores(catalogue, travel_rewards_card=0.99, life_insurance=0.98,
                                                  health_insurance=0.97, personal_loan=0.96), top_k=5)

    assert excluded_by(outcome, "contact_policy.suppress_after_decline") == {"travel_rewards_card"}
    assert excluded_by(outcome, "contact_policy.max_offers") == {"life_insurance"}
    assert "within the last 30 days" in outcome.excluded["travel_rewards_card"][0].reason
    assert excluded_by(outcome, "eligibility.already_held") >= {"personal_loan"}
    assert "health_insurance" in [item.product_id for item in outcome.ranked]
    assert not {"travel_rewards_card", "life_insurance", "personal_loan"} & default_book.eligible(customer)


def test_only_what_the_contact_policy_would_act_on_keys_a_cached_answer(default_book: RuleBook):
    """Offers under max_offers change no answer: the answer cached at a customer's first ask serves the next."""
    policy = default_book.contact_policy
    assert policy.answer_key(None) is None
    assert policy.answer_key(ContactHistory(unanswered_offers={"life_insurance": policy.max_offers - 1})) is None
    ignored = ContactHistory(unanswered_offers={"life_insurance": policy.max_offers, "health_insurance": 1})
    assert policy.answer_key(ignored) == ((), (("life_insurance", policy.max_offers),), ())
    declined = ContactHistory(declined_recently=frozenset({"travel_rewards_card"}))
    assert policy.answer_key(declined) == (("travel_rewards_card",), (), ())


def test_a_contact_policy_is_validated_like_the_rules(tmp_path: Path, catalogue: pd.DataFrame):
    path = write_rules(tmp_path, [], contact_policy={"suppress_after_decline_days": 7, "max_offers": 1})
    book = RuleBook.load(path, catalogue, VIEW_FIELDS)
    assert (book.contact_policy.suppress_after_decline_days, book.contact_policy.max_offers,
            book.contact_policy.window_days) == (7, 1, 30)
    with pytest.raises(RulesFileError, match="contact_policy.max_offers"):
        RuleBook.load(write_rules(tmp_path, [], contact_policy={"max_offers": 0}), catalogue, VIEW_FIELDS)
    with pytest.raises(RulesFileError, match="contact_policy.suppress_days"):
        RuleBook.load(write_rules(tmp_path, [], contact_policy={"suppress_days": 7}), catalogue, VIEW_FIELDS)


def test_all_reasons_for_an_exclusion_are_reported(default_book: RuleBook, catalogue: pd.DataFrame):
    outcome = default_book.apply(person(age=19, income=10_000.0, risk_level="Low"), scores(catalogue), top_k=5)

    assert [effect.rule for effect in outcome.excluded["crypto_growth_fund"]] == [
        "eligibility.min_age", "eligibility.min_income", "suitability.max_risk"]


def test_low_risk_profile_never_gets_a_product_above_its_limit(default_book: RuleBook, catalogue: pd.DataFrame):
    risk_of = risk_level_of(catalogue)
    rng = np.random.default_rng(7)
    limit = default_book.max_risk_level("Low")
    for _ in range(200):
        model = dict(zip(catalogue["product_id"], rng.random(len(catalogue))))
        events = tuple(rng.choice(list(LIFE_EVENTS), size=3, replace=False))
        customer = person(risk_level="Low", life_events=events, income=1_000_000.0, age=60, employees=500)
        outcome = default_book.apply(customer, model, top_k=8)
        assert outcome.ranked
        assert max(risk_of[product.product_id] for product in outcome.ranked) <= limit
    assert excluded_by(outcome, "suitability.max_risk") == {p for p, r in risk_of.items() if r > limit}
    assert all(risk_of[product_id] <= limit for product_id in default_book.eligible(customer))
    assert outcome.excluded["stock_trading_account"][-1].reason == (
        "product risk level 4 is above the maximum of 2 for a Low risk profile")


def test_medium_risk_profile_is_limited_to_its_own_level(default_book: RuleBook, catalogue: pd.DataFrame):
    eligible = default_book.eligible(person(risk_level="Medium"))

    assert "index_fund_portfolio" in eligible  # risk 3
    assert "stock_trading_account" not in eligible  # risk 4


# ------------------------------------------------------------------------------------------------
# Ranking and diversity
# ------------------------------------------------------------------------------------------------

def test_diversity_caps_products_per_category(default_book: RuleBook, catalogue: pd.DataFrame):
    model = scores(catalogue, cashback_credit_card=0.99, travel_rewards_card=0.98, balance_transfer_card=0.97)
    outcome = default_book.apply(person(income=80_000.0), model, top_k=5)

    ranked = [product.product_id for product in outcome.ranked]
    assert ranked[:2] == ["cashback_credit_card", "travel_rewards_card"]
    assert "balance_transfer_card" not in ranked and len(ranked) == 5
    [effect] = outcome.excluded["balance_transfer_card"]
    assert effect.rule == "diversity.max_per_category"
    assert effect.reason == "2 higher-ranked cards products are already in the list (at most 2 of this category)"
    categories = dict(zip(catalogue["product_id"], catalogue["category"]))
    assert max(pd.Series([categories[p] for p in ranked]).value_counts()) <= 2


def test_diversity_cap_per_category_can_be_set(default_book: RuleBook, catalogue: pd.DataFrame):
    business = catalogue.loc[catalogue["category"] == "business", "product_id"].head(5)
    model = scores(catalogue) | {product_id: 0.9 - 0.01 * rank for rank, product_id in enumerate(business)}
    outcome = default_book.apply(organization(), model, top_k=5)

    assert [product.product_id for product in outcome.ranked][:3] == list(business[:3])
    assert excluded_by(outcome, "diversity.max_per_category") == set(business[3:])


def test_ranking_follows_adjusted_scores_and_top_k(default_book: RuleBook, catalogue: pd.DataFrame):
    outcome = default_book.apply(person(age=60, life_events=("travel",)), scores(catalogue), top_k=4)

    assert len(outcome.ranked) == 4
    adjusted = [product.adjusted_score for product in outcome.ranked]
    assert adjusted == sorted(adjusted, reverse=True)


def test_only_scored_products_are_considered(default_book: RuleBook):
    outcome = default_book.apply(person(), {"current_account": 0.4, "business_loan": 0.9}, top_k=5)

    assert [product.product_id for product in outcome.ranked] == ["current_account"]
    assert set(outcome.excluded) == {"business_loan"}


def test_apply_refuses_bad_input(default_book: RuleBook, catalogue: pd.DataFrame):
    with pytest.raises(ValueError, match="not in the catalogue: 'gold_card'"):
        default_book.apply(person(), {"gold_card": 0.5}, top_k=5)
    with pytest.raises(ValueError, match="finite numbers; not for current_account"):
        default_book.apply(person(), {"current_account": float("nan")}, top_k=5)
    with pytest.raises(ValueError, match="unknown risk level 'Extreme'"):
        default_book.apply(person(risk_level="Extreme"), scores(catalogue), top_k=5)
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        default_book.apply(person(), scores(catalogue), top_k=0)


# ------------------------------------------------------------------------------------------------
# The condition language
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("condition, profile, life_events, fires", [
    ({"field": "customer.age", "op": ">=", "value": 55}, {"age": 55}, (), True),
    ({"field": "customer.age", "op": ">=", "value": 55}, {"age": 54.9}, (), False),
    ({"field": "customer.age", "op": "<", "value": 55}, {"age": None}, (), False),
    ({"field": "customer.age", "op": "!=", "value": 55}, {"age": float("nan")}, (), False),
    ({"field": "customer.age", "op": "missing"}, {"age": float("nan")}, (), True),
    ({"field": "customer.occupation", "op": "exists"}, {"occupation": "  "}, (), False),
    ({"field": "customer.occupation", "op": "==", "value": "Teacher"}, {"occupation": "teacher "}, (), True),
    ({"field": "customer.occupation", "op": "in", "value": ["nurse", "teacher"]}, {"occupation": "Teacher"}, (), True),
    ({"field": "customer.occupation", "op": "not_in", "value": ["nurse"]}, {"occupation": "Teacher"}, (), True),
    ({"field": "customer.interests", "op": "contains", "value": "golf"}, {"interests": "Travel, Golf"}, (), True),
    ({"field": "customer.interests", "op": "not_contains", "value": "golf"}, {"interests": "travel"}, (), True),
    ({"field": "life_events", "op": "contains", "value": "retirement"}, {}, ("retirement",), True),
    ({"field": "life_events", "op": "in", "value": ["marriage", "new_child"]}, {}, ("new_child", "travel"), True),
    ({"field": "life_events", "op": "exists"}, {}, (), False),
    ({"field": "risk.level", "op": "==", "value": "high"}, {}, (), True),
    ({"field": "risk.score", "op": ">", "value": 0.4}, {}, (), True),
    ({"not": {"field": "life_events", "op": "contains", "value": "travel"}}, {}, (), True),
    ({"all": [{"field": "customer.age", "op": ">=", "value": 55},
              {"field": "life_events", "op": "contains", "value": "retirement"}]}, {"age": 60}, (), False),
    ({"any": [{"field": "customer.age", "op": ">=", "value": 55},
              {"field": "life_events", "op": "contains", "value": "retirement"}]}, {"age": 60}, (), True),
])
def test_condition_language(tmp_path, catalogue, condition, profile, life_events, fires):
    book = load(tmp_path, [rule(when=condition)], catalogue)
    outcome = book.apply(person(life_events=life_events, **profile), {"retirement_pension": 0.2}, top_k=1)

    assert (effects_by_product(outcome)["retirement_pension"] == [("pension_boost", "boost")]) is fires


def test_target_by_category_narrowed_by_a_product_condition(tmp_path, catalogue):
    target = {"categories": ["investments", "pensions"],
              "where": {"field": "product.risk_level", "op": "<=", "value": 2}}
    book = load(tmp_path, [rule(kind="demote", factor=0.5, when=None, target=target)], catalogue)
    outcome = book.apply(person(), scores(catalogue), top_k=36)

    demoted = {product_id for product_id, effects in effects_by_product(outcome).items() if effects}
    assert demoted == {"retirement_pension"}  # the annuity needs age 55; investments are all above risk 2


def test_a_justified_rule_may_use_a_protected_attribute(tmp_path, catalogue):
    condition = {"field": "customer.location", "op": "==", "value": "Rural County"}
    protected_rule = rule(when=condition, allow_protected=True,
                          justification="regulator-mandated rural access programme, reviewed by compliance")
    book = load(tmp_path, [protected_rule], catalogue)

    outcome = book.apply(person(location="Rural County"), {"retirement_pension": 0.2}, top_k=1)
    assert effects_by_product(outcome)["retirement_pension"] == [("pension_boost", "boost")]


# ------------------------------------------------------------------------------------------------
# Rules-file errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad_rule, expected", [
    (rule(when={"field": "customer.agee", "op": ">=", "value": 55}),
     ["rule #1 'pension_boost'", "when: unknown field 'customer.agee' (did you mean 'customer.age'?)"]),
    (rule(when={"field": "customer.age", "op": "=>", "value": 55}),
     ["rule #1 'pension_boost'", "when: unknown operator '=>'; use one of ==, !=, <"]),
    (rule(target={"products": ["gold_card"]}),
     ["rule #1 'pension_boost'", "target.products: unknown product 'gold_card'"]),
    (rule(target={"categories": ["pension"]}),
     ["rule #1 'pension_boost'", "unknown category 'pension' (did you mean 'pensions'?)"]),
    (rule(factor=0.8), ["rule #1 'pension_boost'", "a boost needs a factor greater than 1, got 0.8"]),
    (rule(kind="demote", factor=1.2), ["a demotion needs a factor between 0 and 1 (exclusive), got 1.2"]),
    (rule(kind="exclude"), ["rule #1 'pension_boost'", "an exclude rule takes no factor"]),
    (rule(factor=".inf"), ["rule #1 'pension_boost'", "factor:"]),
    (rule(name=None), ["rule #1 (no name)", "name: Input should be a valid string"]),
    ({key: value for key, value in rule().items() if key != "name"}, ["rule #1 (no name)", "name: Field required"]),
    (rule(name="Pension Boost"), ["rule #1 'Pension Boost'", "a rule name must be snake_case"]),
    (rule(reason=" "), ["rule #1 'pension_boost'", "a rule needs a reason in plain English"]),
    (rule(kind="promote"), ["kind: Input should be 'boost', 'demote' or 'exclude'"]),
    (rule(facter=1.5), ["rule #1 'pension_boost'", "facter: Extra inputs are not permitted"]),
    (rule(target={}), ["target: name products, categories and/or a product condition under where"]),
    (rule(when={"field": "customer.gender", "op": "==", "value": "F"}),
     ["rule #1 'pension_boost'", "conditions on the protected attribute customer.gender",
      "allow_protected: true and a justification"]),
    (rule(when={"not": {"field": "customer.location", "op": "exists"}}),
     ["conditions on the protected attribute customer.location"]),
    (rule(allow_protected=True), ["rule #1 'pension_boost'", "allow_protected: true needs a justification"]),
    (rule(when={"field": "life_events", "op": "contains", "value": "retirment"}),
     ["life_events never takes the value 'retirment' (did you mean 'retirement'?)"]),
    (rule(when={"field": "risk.level", "op": "in", "value": ["Low", "Moderate"]}),
     ["risk.level never takes the value 'moderate'"]),
    (rule(when={"field": "product.risk_level", "op": ">", "value": 3}),
     ["when: field 'product.risk_level' cannot be used in when; it belongs under target.where"]),
    (rule(target={"categories": ["pensions"], "where": {"field": "customer.age", "op": ">", "value": 3}}),
     ["target.where: field 'customer.age' cannot be used in target.where; it belongs under when"]),
    (rule(target={"categories": ["pensions"], "where": {"field": "product.risk_level", "op": ">", "value": 4}}),
     ["the target selects no product of the catalogue"]),
    (rule(when={"field": "customer.age", "op": ">=", "value": "old"}), ["operator '>=' compares numbers, got 'old'"]),
    (rule(when={"field": "customer.age", "op": "in", "value": 55}), ["operator 'in' needs a non-empty list"]),
    (rule(when={"field": "customer.age", "op": "exists", "value": 1}), ["operator 'exists' takes no value"]),
    (rule(when={"field": "customer.age", "op": "=="}), ["operator '==' needs a value"]),
    (rule(when={"all": []}), ["when.all: must be a non-empty list of conditions"]),
    (rule(when={"any": [{"field": "customer.age", "op": ">=", "value": 55}, "retired"]}),
     ["when.any[1]: a condition must be a mapping"]),
    (rule(when={"all": [{"field": "customer.age", "op": ">", "value": 1}], "field": "customer.age"}),
     ["when: 'all' must be the only key of its condition"]),
])
def test_each_rule_mistake_names_the_rule_and_the_problem(tmp_path, catalogue, bad_rule, expected):
    with pytest.raises(RulesFileError) as raised:
        load(tmp_path, [bad_rule], catalogue, known_life_events=LIFE_EVENTS)

    message = str(raised.value)
    assert message.startswith(str(tmp_path / "rules.yaml"))
    for fragment in expected:
        assert fragment in message


def test_duplicate_rule_names_are_refused(tmp_path, catalogue):
    with pytest.raises(RulesFileError, match="rule #2 'pension_boost': duplicate rule name; rule #1 has the same"):
        load(tmp_path, [rule(), rule(factor=2.0)], catalogue)


def test_all_problems_of_a_file_are_reported_at_once(tmp_path, catalogue):
    rules = [rule(name="first", factor=0.5), rule(name="second"), rule(name="third", target={"products": ["x"]})]
    with pytest.raises(RulesFileError) as raised:
        load(tmp_path, rules, catalogue)

    lines = str(raised.value).splitlines()
    assert lines[0].endswith("2 problems:")
    assert lines[1].startswith("rule #1 'first': ") and lines[2].startswith("rule #3 'third': ")


@pytest.mark.parametrize("text, expected", [
    ("rules: [\n  - name: broken\n", "not valid YAML"),
    ("suitability: {max_product_risk: {Low: 2, Medium: 3, High: 5}}\ndiversity: {max_per_category: 2}\n"
     "rules:\n  - {name: twice, kind: boost, factor: 1.5, factor: 2.0, reason: r, target: {products: [car_loan]}}\n",
     "found the key 'factor' twice"),
    ("- just\n- a list\n", "must be a mapping with the sections suitability, diversity and rules"),
    ("suitability: {max_product_risk: {Low: 2, High: 5}}\ndiversity: {max_per_category: 2}\n",
     "suitability.max_product_risk: map every risk level; missing Medium"),
    ("suitability: {max_product_risk: {Low: 4, Medium: 3, High: 5}}\ndiversity: {max_per_category: 2}\n",
     "may not allow less product risk than a lower one"),
    ("suitability: {max_product_risk: {Low: 2, Medium: 3, High: 5}}\ndiversity: {max_per_category: 0}\n",
     "diversity.max_per_category: Input should be greater than or equal to 1"),
    ("suitability: {max_product_risk: {Low: 2, Medium: 3, High: 5}}\n"
     "diversity: {max_per_category: 2, per_category: {busines: 3}}\n",
     "diversity.per_category: unknown category 'busines' (did you mean 'business'?)"),
    ("suitability: {max_product_risk: {Low: 2, Medium: 3, High: 5}}\n", "diversity: Field required"),
])
def test_file_level_mistakes_are_refused(tmp_path, catalogue, text, expected):
    path = tmp_path / "rules.yaml"
    path.write_text(text)

    with pytest.raises(RulesFileError, match=r"rules\.yaml: ") as raised:
        RuleBook.load(path, catalogue, VIEW_FIELDS)
    assert expected in str(raised.value)


def test_malformed_yaml_says_where(tmp_path, catalogue):
    path = tmp_path / "rules.yaml"
    path.write_text("suitability:\n  max_product_risk: {Low: 2\ndiversity: 2\n")

    with pytest.raises(RulesFileError, match=r"not valid YAML: (?s:.*)line 2, column 21"):
        RuleBook.load(path, catalogue, VIEW_FIELDS)


def test_a_missing_file_is_a_rules_file_error(tmp_path, catalogue):
    with pytest.raises(RulesFileError, match="cannot read the rules file"):
        RuleBook.load(tmp_path / "absent.yaml", catalogue, VIEW_FIELDS)


def test_catalogue_indexed_by_product_id_is_accepted(tmp_path, catalogue):
    book = load(tmp_path, [rule()], catalogue.set_index("product_id"))

    assert book.product_ids == tuple(catalogue["product_id"])


# ------------------------------------------------------------------------------------------------
# Re-scoring an outcome for a counterfactual the rules cannot see
# ------------------------------------------------------------------------------------------------

def test_rescore_equals_a_full_apply_when_the_context_is_unchanged(default_book: RuleBook, catalogue: pd.DataFrame):
    customer = person(age=60, life_events=("retirement", "travel"), held=("current_account",), risk_level="Medium")
    original = default_book.apply(customer, scores(catalogue), top_k=5)
    other_scores = scores(catalogue, travel_insurance=0.9, retirement_pension=0.01, personal_loan=0.4)
    full = default_book.apply(customer, other_scores, top_k=5)
    fast = default_book.rescore(original, other_scores, top_k=5)
    assert [(p.product_id, p.adjusted_score, p.effects) for p in fast.ranked] == \
           [(p.product_id, p.adjusted_score, p.effects) for p in full.ranked]
    assert fast.adjusted == pytest.approx(full.adjusted)
    assert fast.excluded.keys() == full.excluded.keys()


def test_a_customer_with_a_mortgage_is_not_offered_a_first_time_buyers_one(default_book, catalogue):
    """A generated customer holding a remortgage who wrote "paying down the mortgage" was offered the
    First-Time Buyer Mortgage first, as what they asked for."""
    asked = scores(catalogue, first_home_mortgage=0.9)
    with_mortgage = default_book.apply(person(held=("remortgage",)), asked, top_k=5)
    assert [effect.rule for effect in with_mortgage.excluded["first_home_mortgage"]] == ["not_a_first_time_buyer"]
    assert "first_home_mortgage" in [p.product_id for p in default_book.apply(person(), asked, top_k=5).ranked]
    accepted = replace(person(), contact=ContactHistory(accepted=frozenset({"remortgage"})))  # held from then on
    assert "first_home_mortgage" in default_book.apply(accepted, asked, top_k=5).excluded


def test_holdings_name_catalogue_products_and_a_bank_file_naming_another_is_refused(tmp_path, catalogue):
    holds = rule(when={"field": "holdings", "op": "contains", "value": "remortage"})
    with pytest.raises(RulesFileError, match="holdings never takes the value 'remortage'.*did you mean 'remortgage'"):
        load(tmp_path, [holds], catalogue)
    with pytest.raises(RulesFileError, match="field 'holdings' cannot be used in target.where"):
        load(tmp_path, [rule(target={"where": {"field": "holdings", "op": "contains", "value": "remortgage"}})],
             catalogue)


def test_rule_book_knows_which_customer_fields_it_reads(default_book: RuleBook):
    assert default_book.reads("customer.age") and default_book.reads("life_events")
    assert not default_book.reads("customer.gender") and not default_book.reads("customer.location")


# ------------------------------------------------------------------------------------------------
# A bank with its own catalogue
# ------------------------------------------------------------------------------------------------

OWN_CATALOGUE_FILE = Path(__file__).parent / "fixtures" / "own_catalogue" / "products.csv"


def test_default_file_skips_what_an_own_catalogue_lacks_with_one_warning(caplog):
    own = pd.read_csv(OWN_CATALOGUE_FILE)
    with caplog.at_level("WARNING", logger="business_rules"):
        book = RuleBook.load(DEFAULT_RULES_FILE, own, VIEW_FIELDS, known_life_events=LIFE_EVENTS,
                             skip_absent_targets=True)

    assert book.rule_names == ("car_purchase",)  # the one default rule whose product this bank offers
    skipped = {rule.rule: rule.absent for rule in book.skipped_rules}
    assert set(skipped) == set(DEFAULT_RULE_NAMES) - {"car_purchase"} | {"diversity.per_category"}
    assert skipped["home_purchase"] == ("mortgages",) and skipped["new_home"] == ("home_insurance",)
    assert skipped["not_a_first_time_buyer"] == ("remortgage",)  # a product held, named in a condition
    assert skipped["diversity.per_category"] == ("business",)
    assert set(book.category_limits) == set(own["category"])
    warnings = [record for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].skipped_rules["retirement_planning"] == ["pensions"]

    outcome = book.apply(person(life_events=("car_purchase",)), {"car_loan": 0.2, "home_loan": 0.3}, top_k=2)
    assert effects_by_product(outcome)["car_loan"] == [("car_purchase", "boost")]


def test_default_file_loads_strictly_on_the_catalogue_it_was_written_for(catalogue, caplog):
    with caplog.at_level("WARNING", logger="business_rules"):
        book = RuleBook.load(DEFAULT_RULES_FILE, catalogue, VIEW_FIELDS, known_life_events=LIFE_EVENTS,
                             skip_absent_targets=True)
    assert book.rule_names == DEFAULT_RULE_NAMES and book.skipped_rules == ()
    assert not caplog.records


def test_skipping_absent_targets_does_not_excuse_other_mistakes(tmp_path):
    own = pd.read_csv(OWN_CATALOGUE_FILE)
    with pytest.raises(RulesFileError, match="unknown field 'customer.agee'"):
        load(tmp_path, [rule(when={"field": "customer.agee", "op": ">=", "value": 55})], own,
             skip_absent_targets=True)


def test_a_bank_with_its_own_catalogue_gets_past_the_default_rules_and_a_named_file_stays_strict(tmp_path):
    from artifacts import ServiceError, load_data, load_rules
    from settings import Settings

    data_dir = tmp_path / "bank"
    shutil.copytree(CANONICAL_SMALL, data_dir)
    shutil.copy(OWN_CATALOGUE_FILE, data_dir / "products.csv")
    settings = Settings(data_dir=data_dir, models_dir=tmp_path / "models")
    data = load_data(settings)

    book = load_rules(settings, data)  # RULES_FILE not set: the shipped default, lenient
    assert book.product_ids == tuple(pd.read_csv(OWN_CATALOGUE_FILE)["product_id"])
    assert "retirement_planning" in {rule.rule for rule in book.skipped_rules}

    named = settings.model_copy(update={"rules_file": DEFAULT_RULES_FILE})  # RULES_FILE set: strict, as ever
    with pytest.raises(ServiceError, match="unknown category 'business'"):
        load_rules(named, data)
