"""Bias detection and explanations on generated banks: the audit, the per-response check, the reasons."""
from __future__ import annotations

import pytest

from bias_detector import group_audit
from data_loader import customer_view, load_bank_data
from artifacts import ServiceError
from recommendation_service import RecommendationService
from settings import get_settings


@pytest.fixture(scope="module")
def biased_bank(tmp_path_factory, text_encoder):
    """A bank whose history gives women half the investment take-up of men (the generator's default bias)."""
    from synthetic_data import generate_bank_data

    data_dir = tmp_path_factory.mktemp("biased") / "data"
    generate_bank_data(data_dir, 6000, seed=11)
    return load_bank_data(data_dir, get_settings(), text_encoder)


def test_audit_flags_the_injected_bias_and_only_where_the_data_supports_it(biased_bank):
    settings = get_settings()
    view = customer_view(biased_bank)
    protected = view[["gender", "age_band", "location", "customer_type"]]
    holdings = biased_bank.holdings[["customer_id", "product_id"]]
    audit = group_audit(holdings.iloc[:0], holdings, protected, settings.protected_attributes, biased_bank.products)
    gender = {e.product_id: e for e in audit.entries if e.attribute == "gender"}
    investments = biased_bank.products.loc[biased_bank.products["category"] == "investments", "product_id"]
    individual_investments = [p for p in investments if gender[p].holdings.n_positives >= 50]
    assert individual_investments
    for product in individual_investments:
        assert gender[product].holdings.flagged, product
        assert gender[product].holdings.disparate_impact < 0.8
        assert gender[product].source_of_bias == "data"
    others = [e for p, e in gender.items() if p not in set(investments) and e.holdings.n_positives >= 200
              and min(e.n_privileged, e.n_unprivileged) >= 500]
    assert others
    assert not [e.product_id for e in others if e.holdings.flagged]


def test_counterfactual_that_changes_the_list_is_reported(trained_service):
    """Near the annuity's minimum age, moving the customer to a younger band removes it."""
    view = trained_service.base.view
    candidates = view[(view["customer_type"] == "individual") & view["age"].between(56, 59)].index
    changed = None
    for customer in candidates:
        answer = trained_service.recommend(str(customer), 10, False)
        age = next(a for a in answer.bias_check.attributes if a.attribute == "age")
        if "retirement_annuity" in [i.product_id for i in answer.recommendations]:
            changed = age
            break
    assert changed is not None, "some 56-59 year old should get the annuity"
    assert changed.top_k_set_changed and not changed.passed
    assert "18-29" in changed.groups_changing_top_k or "30-44" in changed.groups_changing_top_k
    assert changed.max_score_change > 0
    assert [c.group for c in changed.top_k_changes] == changed.groups_changing_top_k
    younger = next(c for c in changed.top_k_changes if c.group in ("18-29", "30-44"))
    assert "retirement_annuity" in younger.left
    assert ("eligibility.min_age", "group") in [(cause.rule, cause.applies_to) for cause in younger.rules]
    assert younger.reason.startswith(f"As {younger.group}, ")


def test_attribute_no_model_or_rule_reads_changes_nothing(trained_service, known_customer):
    answer = trained_service.recommend(known_customer, 5)
    gender = next(a for a in answer.bias_check.attributes if a.attribute == "gender")
    assert gender.groups_tested and gender.max_score_change == 0
    assert not gender.top_k_set_changed and not gender.top_k_order_changed and gender.passed


def test_location_counterfactuals_are_scored_by_the_model(trained_service, known_customer):
    answer = trained_service.recommend(known_customer, 5)
    location = next(a for a in answer.bias_check.attributes if a.attribute == "location")
    assert len(location.groups_tested) >= 3
    assert location.passed == (location.max_score_change <= answer.bias_check.tolerance
                               and not location.top_k_set_changed)


def test_mortgage_post_gives_a_home_loan_explained_by_that_post(trained_service):
    answer = trained_service.recommend_for_profile(
        "NEW-HOME-1", {"customer_type": "individual", "age": 29, "gender": "M", "location": "Austin",
                       "income": 68000, "occupation": "Electrician", "interests": "football, cooking"},
        ["current_account"], ["Considering a mortgage for my first home"], top_k=5)
    mortgage = next((i for i in answer.recommendations if i.product_id == "first_home_mortgage"), None)
    assert mortgage is not None, [i.product_id for i in answer.recommendations]
    cited = [f for f in mortgage.explanation.factors if f.kind in ("life_event", "text_match")]
    assert any("mortgage for my first home" in (f.evidence or "") for f in cited)
    assert "mortgage for my first home" in mortgage.explanation.summary


def test_bad_rules_file_refuses_to_start_naming_the_rule(api_settings, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("suitability: {max_product_risk: {Low: 2, Medium: 3, High: 5}}\n"
                     "diversity: {max_per_category: 2}\n"
                     "rules:\n  - name: odd_rule\n    kind: boost\n    factor: 1.2\n    reason: test\n"
                     "    when: {field: customer.shoe_size, op: '>', value: 3}\n    target: {categories: [cards]}\n")
    with pytest.raises(ServiceError, match="odd_rule.*shoe_size"):
        RecommendationService.start(api_settings.model_copy(update={"rules_file": rules}))
