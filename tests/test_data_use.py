"""Data-use governance: which signals may touch which products, and consent to read posts.

Under ``no_social_credit`` a credit product's score and explanation must not move when a
customer's posts are added or taken away; under ``default`` they do move (so the check can fail);
under either, nothing inferred about health touches a credit product; without consent, no post
is read for any product.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from data_loader import credit_flags, infer_credit, load_bank_data, TableQuality
from data_use import SPECIAL_CATEGORIES, DataUsePolicyError, load_policy
from feature_engineer import CustomerInputs
from recommender import snapshot_signals
from settings import PROJECT_ROOT, Settings, get_settings
from text_models import LIFE_EVENTS

CATALOGUE = pd.read_csv(PROJECT_ROOT / "config" / "products.csv")
CANONICAL_SMALL = Path(__file__).parent / "fixtures" / "canonical_small"
PROFILE_FIELDS = ("customer_type", "age", "gender", "location", "income", "education", "occupation", "industry",
                  "employees", "interests", "preferences", "financial_needs")
HEALTH_POST = "Stuck in hospital for surgery again and the medical bills keep piling up"
FIRST_HOME_POST = "We are saving to buy our first home next spring, looking at flats"
CUSTOMERS_COMPARED = 15  # cold starts, each read through the text models: the known-customer test covers them all


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def credit_positions(service) -> list[int]:
    return [i for i, p in enumerate(service.product_ids) if p in service.policy.credit_products]


def model_scores(service, state) -> np.ndarray:
    """Every product's calibrated score for one customer state (no rules), as the answer's ``score``."""
    return service.model.predict_proba(service.model.design.design(state.inputs(state.tabular[None])))[0]


def customers_with_posts(service, count: int) -> list[tuple[str, dict, list[str]]]:
    """Known individuals with posts, as a cold-start request would describe them: profile and posts."""
    view, posts = service.base.view, service.base.posts
    chosen = view[(view["customer_type"] == "individual") & (view["post_count"] > 0)].index[:count]
    described = []
    for customer_id in chosen:
        row = view.loc[customer_id]
        profile = {field: (None if pd.isna(row[field]) else row[field]) for field in PROFILE_FIELDS}
        theirs = posts[posts["customer_id"] == customer_id].sort_values("timestamp", ascending=False)
        described.append((f"new-{customer_id}", profile, theirs["content"].head(20).tolist()))
    return described


def explained(answer, product_ids) -> dict:
    return {item.product_id: (item.score, item.explanation) for item in answer.recommendations
            if item.product_id in product_ids}


def scores_of_known_customers(service, without_posts: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the known customers who posted, from their whole history, with or without their posts."""
    data = service.data
    posted = service.base.view.index[service.base.view["post_count"] > 0]
    if without_posts:
        data = dataclasses.replace(data, social_posts=data.social_posts[~data.social_posts["customer_id"].isin(posted)])
    detector = service.text_models()
    view, signals, _ = snapshot_signals(data, service.base.as_of, detector.encoder, detector)
    rows = view.index.get_indexer(posted)
    inputs = CustomerInputs.of(service.model.features_.transform(view), signals, rows)
    return service.model.score(inputs), rows


# ----------------------------------------------------------------------------------------------
# The policy file and the catalogue
# ----------------------------------------------------------------------------------------------

def test_credit_is_inferred_by_meaning_as_the_shipped_catalogue_states_it(text_encoder, caplog):
    """A catalogue without is_credit gets it by meaning, and the warning lists what was inferred:
    on the shipped catalogue, the inference agrees with the column the bank filled in."""
    stated = CATALOGUE["is_credit"].astype(bool).tolist()
    assert infer_credit(CATALOGUE, text_encoder) == stated
    quality = TableQuality()
    with caplog.at_level(logging.WARNING):
        flags = credit_flags(CATALOGUE.drop(columns="is_credit"), text_encoder, quality)
    assert flags.tolist() == stated
    assert [issue.code for issue in quality.issues] == ["is_credit_inferred"]
    assert "first_home_mortgage (credit)" in quality.issues[0].reason and "first_home_mortgage" in caplog.text


def test_a_stated_credit_flag_is_kept_and_an_unreadable_one_is_reported(text_encoder):
    catalogue = CATALOGUE.head(3).assign(is_credit=["yes", "maybe", "0"])
    quality = TableQuality()
    flags = credit_flags(catalogue, text_encoder, quality)
    assert flags.tolist() == [True, False, False]  # "maybe" is inferred: a current account is no credit
    assert {issue.code for issue in quality.issues} == {"unreadable_flag", "is_credit_inferred"}


@pytest.mark.parametrize("name", ["default", "no_social_credit"])
def test_shipped_policies_keep_health_out_of_credit(name):
    policy = load_policy(PROJECT_ROOT / "config" / "data_use" / f"{name}.yaml", CATALOGUE, LIFE_EVENTS)
    credit = set(CATALOGUE.loc[CATALOGUE["is_credit"], "product_id"])
    for position, product_id in enumerate(policy.product_ids):
        view = policy.view_of(position)
        assert ("health" in view.barred_inferences) == (product_id in credit)
        assert view.reads("social_posts") == (name == "default" or product_id not in credit)
    if name == "no_social_credit":
        mortgage = policy.view_of(policy.product_ids.index("first_home_mortgage"))
        assert not mortgage.reads("life_events_from_posts"), "no posts means no events read from posts"
        assert mortgage.text_source == 1 and policy.common_view.barred_signals >= {"social_posts"}


def test_health_stays_out_of_credit_whatever_a_policy_file_says(tmp_path):
    path = tmp_path / "lenient.yaml"
    path.write_text("name: lenient\ndescription: a policy that restricts nothing at all\nrestrictions: []\n")
    policy = load_policy(path, CATALOGUE, LIFE_EVENTS)
    mortgage = policy.view_of(policy.product_ids.index("first_home_mortgage"))
    assert mortgage.barred_inferences == SPECIAL_CATEGORIES
    assert policy.view_of(policy.product_ids.index("health_insurance")).withheld == ()


@pytest.mark.parametrize("restriction, problem", [
    ("- {products: credit, bar_signals: [telepathy], reason: not a real signal family}", "bar_signals"),
    ("- {products: credit, bar_inferences: [astrology], reason: not a real inference}", "unknown inferences astrology"),
    ("- {products: 'category:spaceships', bar_signals: [profile], reason: names no category}", "names nothing"),
    ("- {products: everything, bar_signals: [profile], reason: an unknown group of products}", "must be one of"),
    ("- {products: credit, bar_signals: [profile], reason: short}", "reason"),
    ("- {products: credit, bar_signal: [profile], reason: a misspelt key must not be ignored}", "bar_signal"),
])
def test_a_broken_policy_file_is_refused_naming_the_problem(tmp_path, restriction, problem):
    path = tmp_path / "policy.yaml"
    path.write_text(f"name: broken\ndescription: a policy with one mistake in it\nrestrictions:\n  {restriction}\n")
    with pytest.raises(DataUsePolicyError, match=problem):
        load_policy(path, CATALOGUE, LIFE_EVENTS)


def test_an_unknown_policy_name_refuses_to_start():
    with pytest.raises(ValidationError, match="DATA_USE_POLICY must be one of default, no_social_credit"):
        Settings(data_use_policy="lax")


# ----------------------------------------------------------------------------------------------
# Consent
# ----------------------------------------------------------------------------------------------

def _bank_with_consent(tmp_path: Path, consent: dict[str, str]) -> Path:
    shutil.copytree(CANONICAL_SMALL, tmp_path / "bank")
    customers = pd.read_csv(tmp_path / "bank" / "customers.csv", dtype=str)
    customers["consent_social"] = customers["customer_id"].map(consent)
    customers.to_csv(tmp_path / "bank" / "customers.csv", index=False)
    return tmp_path / "bank"


def test_posts_of_customers_without_consent_are_never_read(tmp_path, text_encoder):
    data_dir = _bank_with_consent(tmp_path, {"C001": "no", "C002": "yes", "C003": "maybe"})
    data = load_bank_data(data_dir, get_settings(), text_encoder)
    assert "C001" not in set(data.social_posts["customer_id"]) and "C002" in set(data.social_posts["customer_id"])
    assert "C003" in set(data.social_posts["customer_id"]), "an unreadable answer falls back to the bank's default"
    issues = {issue.code: issue for issue in data.quality.tables["customers"].issues}
    assert issues["no_social_consent"].count == 1 and "unreadable_flag" in issues
    assert {i.code: i.count for i in data.quality.tables["social_posts"].issues}["without_consent"] == 2


def test_without_consent_by_default_only_a_stated_yes_lets_posts_be_read(tmp_path, text_encoder):
    data_dir = _bank_with_consent(tmp_path, {"C002": "true"})
    settings = get_settings().model_copy(update={"social_data_default_consent": False})
    data = load_bank_data(data_dir, settings, text_encoder)
    assert set(data.social_posts["customer_id"]) == {"C002"}
    consenting = data.customers.loc[data.customers["consent_social"], "customer_id"].tolist()
    assert consenting == ["C002"]


def test_a_cold_start_without_consent_is_answered_as_if_it_had_no_posts(trained_service):
    customer_id, profile, posts = customers_with_posts(trained_service, 1)[0]
    refused = trained_service.recommend_for_profile(customer_id, {**profile, "consent_social": False}, [], posts, 20)
    silent = trained_service.recommend_for_profile(customer_id, profile, [], [], 20)
    read = trained_service.recommend_for_profile(customer_id, profile, [], posts, 20)
    assert refused.recommendations == silent.recommendations
    assert refused.recommendations != read.recommendations, "the posts matter when read, so the check can fail"
    assert not refused.data_use.posts_read and "consented" in refused.data_use.note and read.data_use.posts_read


def test_the_api_takes_consent_and_says_which_policy_answered(client, known_customer):
    body = {"customer_id": "new-consent", "top_k": 5,
            "profile": {"age": 33, "income": 50000, "posts": [FIRST_HOME_POST], "consent_social": False}}
    answer = client.post("/recommend", json=body).json()
    assert answer["data_use"] == {"policy": "default", "posts_read": False, "note": answer["data_use"]["note"]}
    assert not any(f["reference"] or f["source"] == "posts" and f["kind"] != "feature"
                   for item in answer["recommendations"] for f in item["explanation"]["factors"]), "no post is quoted"
    bad = client.post("/recommend", json={**body, "profile": {**body["profile"], "consent_social": "perhaps"}})
    assert bad.status_code == 422 and "consent_social" in bad.text
    model = client.get("/model").json()["data_use_policy"]
    assert model["name"] == "default" and model["withheld_by_product"]["first_home_mortgage"] == ["inferred health"]


# ----------------------------------------------------------------------------------------------
# Under the policies: what posts and health may move
# ----------------------------------------------------------------------------------------------

def test_under_no_social_credit_posts_never_move_a_credit_score_or_explanation(no_social_credit_service):
    service = no_social_credit_service
    credit = credit_positions(service)
    credit_ids = {service.product_ids[i] for i in credit}
    moved_elsewhere = 0
    for customer_id, profile, posts in customers_with_posts(service, CUSTOMERS_COMPARED):
        with_posts = service.customers.cold(customer_id, profile, [], posts)
        without = service.customers.cold(customer_id, profile, [], [])
        scored, unscored = model_scores(service, with_posts), model_scores(service, without)
        assert np.array_equal(scored[credit], unscored[credit]), customer_id
        moved_elsewhere += not np.array_equal(scored, unscored)
        answer_with = service.recommend_for_profile(customer_id, profile, [], posts, 20)
        answer_without = service.recommend_for_profile(customer_id, profile, [], [], 20)
        shared = explained(answer_with, credit_ids).keys() & explained(answer_without, credit_ids).keys()
        for product_id in shared:
            assert explained(answer_with, credit_ids)[product_id] == explained(answer_without, credit_ids)[product_id]
        assert answer_with.data_use.policy == "no_social_credit"
    assert moved_elsewhere, "posts move other products' scores: the policy, not the posts' silence, holds credit still"


def test_under_no_social_credit_known_customers_credit_scores_ignore_their_posts(no_social_credit_service):
    credit = credit_positions(no_social_credit_service)
    with_posts, rows = scores_of_known_customers(no_social_credit_service, without_posts=False)
    without, _ = scores_of_known_customers(no_social_credit_service, without_posts=True)
    assert len(rows) > 50
    assert np.array_equal(with_posts[:, credit], without[:, credit])
    assert not np.array_equal(with_posts, without)


def test_under_default_posts_do_move_some_credit_scores(trained_service):
    """The counterpart of the no_social_credit checks: without it they could pass by accident."""
    credit = credit_positions(trained_service)
    with_posts, _ = scores_of_known_customers(trained_service, without_posts=False)
    without, _ = scores_of_known_customers(trained_service, without_posts=True)
    assert not np.array_equal(with_posts[:, credit], without[:, credit])


def without_health(state, event_names):
    """The same customer with everything inferred about their health taken away (posts kept)."""
    events = state.events.copy()
    events[..., event_names.index("health")] = 0.0
    return dataclasses.replace(state, events=events,
                               detected_events=[e for e in state.detected_events if e.event != "health"])


@pytest.mark.parametrize("service_name", ["trained_service", "no_social_credit_service"])
def test_nothing_inferred_about_health_touches_a_credit_product(request, service_name):
    """A post about a hospital stay shows health; taking that inference away (the post stays, so
    its words may still count where posts may) changes no credit score, but other products'."""
    service = request.getfixturevalue(service_name)
    credit = credit_positions(service)
    events = service.model.design.event_names
    moved_elsewhere = 0
    for customer_id, profile, posts in customers_with_posts(service, 10):
        ill = service.customers.cold(customer_id, profile, [], [HEALTH_POST, *posts[:19]])
        assert "health" in {event.event for event in ill.detected_events}, "the post must show health"
        scored, unaware = model_scores(service, ill), model_scores(service, without_health(ill, events))
        assert np.array_equal(scored[credit], unaware[credit]), customer_id
        moved_elsewhere += not np.array_equal(scored, unaware)
        answer = service.recommend_for_profile(customer_id, profile, [], [HEALTH_POST, *posts[:19]], 20)
        for item in answer.recommendations:
            if item.product_id in service.policy.credit_products:
                assert "inferred health" in item.withheld_signals
                assert not any(f.name == "health" for f in item.explanation.factors)
    assert moved_elsewhere, "health does move other products (health insurance), so the check can fail"


def test_health_shown_by_spending_touches_no_credit_product(trained_service):
    """Known customers whose spending shows health (a hospital bill): their credit scores do not
    depend on it."""
    service, base = trained_service, trained_service.base
    health = service.model.design.event_names.index("health")
    rows = np.flatnonzero(base.signals.events[:, 1, health] > 0)
    assert len(rows) >= 5, "the small bank has customers whose spending shows health"
    inputs = CustomerInputs.of(base.tabular, base.signals, rows)
    unaware = dataclasses.replace(inputs, events=inputs.events.copy())
    unaware.events[..., health] = 0.0
    credit = credit_positions(service)
    scored, without = service.model.score(inputs), service.model.score(unaware)
    assert np.array_equal(scored[:, credit], without[:, credit])
    assert not np.array_equal(scored, without)


def test_a_first_home_post_leads_to_a_mortgage_only_where_social_media_may_touch_credit(trained_service,
                                                                                       no_social_credit_service):
    """The seed's own example: under default the post is the reason for the mortgage offer; under
    no_social_credit the mortgage is scored as if the post had not been written."""
    profile = {"customer_type": "individual", "age": 30, "income": 60000}
    default = trained_service.recommend_for_profile("new-home", profile, [], [FIRST_HOME_POST], 5)
    mortgage = explained(default, {"first_home_mortgage"}).get("first_home_mortgage")
    assert mortgage is not None, "under default the post leads to the mortgage"
    assert any(f.source == "posts" for f in mortgage[1].factors)

    strict = no_social_credit_service
    answer = strict.recommend_for_profile("new-home", profile, [], [FIRST_HOME_POST], 20)
    silent = strict.recommend_for_profile("new-home", profile, [], [], 20)
    assert explained(answer, {"first_home_mortgage"}) == explained(silent, {"first_home_mortgage"})
    for item in answer.recommendations:
        if item.product_id == "first_home_mortgage":
            assert not any(f.source == "posts" for f in item.explanation.factors)
            assert {"social_posts", "life_events_from_posts"} <= set(item.withheld_signals)
