"""Every statement an explanation makes about a customer is true of that customer's data.

Over every customer of the generated bank and of hackathon-format data, each factor of the top-5
explanations is checked against the unified view (``service.customer_view``) and the customer's
own posts and transactions: products said to be held are held, amounts are the customer's, "above
typical" is above, a category is theirs, a life event was detected for them in a post or purchase
of theirs, quoted words are theirs. Then each kind of sentence on its own, and the per-feature
contributions every explanation rests on against scikit-learn's own predictions.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from business_rules import CustomerContext, RuleEffect
from customer_state import CLEAR_MATCH
from explanations import (MIN_FACTOR_WEIGHT, Factor, ProductContext, event_factors, explain, model_factors,
                          popularity_factor, rule_factors, text_factor)
from feature_engineer import CustomerFeatures, CustomerInputs, FeatureSpec
from recommendation_service import RecommendationService
from recommender import CompiledForest
from settings import Settings
from text_models import DetectedEvent

HACKATHON_FIXTURE = Path(__file__).parent / "fixtures" / "data_loader" / "hackathon"
NUMBER = r"-?[\d,]+(?:\.\d+)?"
NUMBER_CLAUSE = re.compile(rf"your ((?:(?!your )[^(),])+?) \(({NUMBER})\) is (above|below) the typical ({NUMBER})")
EVENT_CLAUSE = re.compile(r"(you posted about|your spending shows) ([a-z ]+) \(\"")


# --------------------------------------------------------------------------------------------------
# Every customer, every claim
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_hackathon_service(tmp_path_factory) -> RecommendationService:
    """The eight-customer hackathon-format fixture: every product on the content fallback."""
    return RecommendationService.start(Settings(data_dir=HACKATHON_FIXTURE, api_keys=[],
                                                models_dir=tmp_path_factory.mktemp("small_hackathon_models")))


def test_gender_and_location_are_audited_but_never_read_by_the_model(trained_service):
    """A city or a gender must never be why a customer is offered a product (fair lending: proxies)."""
    audited = {a.column for a in trained_service.settings.protected_attributes}
    read = {spec.column for spec in trained_service.model.design.specs}
    assert audited == {"gender", "age_band", "location"}
    assert not {"gender", "location"} & read and "age" in read  # age enters as a number, its band is audited


def test_every_claim_is_true_on_the_generated_bank(trained_service):
    seen = assert_every_claim_true(trained_service)
    assert seen["feature"] and seen["life_event"] and seen["text_match"], seen


def test_every_claim_is_true_on_the_hackathon_files(hackathon_service):
    seen = assert_every_claim_true(hackathon_service)
    assert sum(seen.values()) > len(hackathon_service.base.view), seen  # claims were there to check


def test_every_claim_is_true_on_a_small_hackathon_format_bank(small_hackathon_service):
    assert_every_claim_true(small_hackathon_service)


def assert_every_claim_true(service: RecommendationService) -> dict[str, int]:
    """Checks each customer's top 5; returns how many factors of each kind were checked."""
    seen: dict[str, int] = dict.fromkeys(("feature", "life_event", "text_match", "stated_need"), 0)
    false: list[str] = []
    for customer_id in map(str, service.base.view.index):
        false += false_claims(service, customer_id, seen)
    assert not false, f"{len(false)} false claims, e.g. {false[:5]}"
    return seen


def false_claims(service: RecommendationService, customer_id: str, seen: dict[str, int]) -> list[str]:
    view = service.customer_view(customer_id)
    names = dict(zip(service.products["name"], service.products["product_id"]))
    false = []
    for item in service.recommend(customer_id, 5).recommendations:
        explanation = item.explanation
        for factor in explanation.factors:
            seen[factor.kind] = seen.get(factor.kind, 0) + 1
            problem = _claim_problem(service, view, item, factor, names)
            if problem:
                false.append(f"{customer_id} / {item.product_id}: {problem}")
        false += [f"{customer_id} / {item.product_id}: {p}"
                  for p in _prose_problems(view, explanation.summary, explanation.factors, names)]
    return false


@functools.lru_cache(maxsize=4)
def request_closeness(service: RecommendationService) -> dict[tuple[str, str], float]:
    """How close each customer's words came to each product they are taken to have asked for."""
    interests = service.data.interests
    return dict(zip(zip(interests["customer_id"].astype(str), interests["product_id"]), interests["similarity"]))


def _claim_problem(service: RecommendationService, view: dict, item, factor: Factor, names: dict) -> str | None:
    profile = view["profile"]
    not_inputs = {a.column for a in service.settings.protected_attributes if not a.is_model_input}
    if factor.kind == "feature" and factor.column in not_inputs:
        return f"gives {factor.column}, a protected attribute that is not a model input, as a reason"
    if factor.kind == "feature" and factor.feature_kind == "holding":
        if names.get(factor.name) not in view["held_products"] or factor.value != "held":
            return f"says the customer holds {factor.name}; holds {view['held_products']}"
    elif factor.kind == "feature" and factor.feature_kind == "category":
        if str(profile.get(factor.column)) != factor.value:
            return f"says {factor.column} is {factor.value}; it is {profile.get(factor.column)!r}"
    elif factor.kind == "feature" and factor.feature_kind == "numeric":
        return _numeric_problem(service, profile, factor)
    elif factor.kind == "life_event":
        return _event_problem(service, view, item, factor)
    elif factor.kind == "text_match":
        if factor.weight < MIN_FACTOR_WEIGHT:
            return f"gives the words {factor.evidence!r} as a reason; they moved the score by {factor.weight}"
        return _quote_problem(service, view, factor)
    elif factor.kind == "stated_need":
        written = " ".join(str(profile.get(factor.column) or "").split())
        if factor.evidence.rstrip("…") not in written:
            return f"says the customer asked in {factor.column} for {factor.evidence!r}; they wrote {written!r}"
        closeness = request_closeness(service).get((view["customer_id"], item.product_id), 0.0)
        if closeness < CLEAR_MATCH:
            return f"gives {factor.evidence!r} as a request for {item.product_id}; the words match it at {closeness}"
    elif factor.kind == "feature":
        return f"a feature of unexpected kind {factor.feature_kind}"
    return None


def _numeric_problem(service: RecommendationService, profile: dict, factor: Factor) -> str | None:
    actual = profile.get(factor.column)
    if actual is None or not math.isclose(float(actual), factor.value, rel_tol=1e-9, abs_tol=1e-9):
        return f"says {factor.column} is {factor.value}; it is {actual}"
    fitted = next(s for s in service.model.features_.feature_specs_ if s.column == factor.column)
    typical = fitted.typical_for(profile.get("customer_type"))
    expected = "above" if actual > typical else "below" if actual < typical else "equal (not a reason)"
    if factor.typical != typical or factor.comparison != expected:
        return f"says {factor.column} {actual} is {factor.comparison} typical {factor.typical} ({typical})"
    return None


def _event_problem(service: RecommendationService, view: dict, item, factor: Factor) -> str | None:
    detections = [e for e in view["life_events"] if e["event"] == factor.name and e["post_id"] == factor.reference]
    if not detections or detections[0]["timestamp"] != factor.date:
        return f"cites {factor.name} from {factor.reference} on {factor.date}, not detected for the customer"
    if factor.weight < MIN_FACTOR_WEIGHT and not any(e.effect == "boost" and factor.name in e.life_events
                                                     for e in item.rules):
        return f"credits {factor.name} to a rule that did not boost on it: {item.rules}"
    if factor.source == "posts":
        return _post_problem(service, view["customer_id"], factor)
    transactions = service.data.transactions
    own = transactions[transactions["customer_id"] == view["customer_id"]]
    if factor.reference is not None and factor.reference not in set(own["transaction_id"].dropna().astype(str)):
        return f"refers to transaction {factor.reference!r}, not one of the customer's"
    described = (own["category"].fillna("").astype(str) + ": " + own["type"].fillna("").astype(str)).tolist()
    return None if any(_quoted(factor.evidence, text) for text in described) else \
        f"quotes spending {factor.evidence!r} the customer never made"


def _quote_problem(service: RecommendationService, view: dict, factor: Factor) -> str | None:
    if factor.source == "posts":
        return _post_problem(service, view["customer_id"], factor)
    profile_text = " ".join(str(view["profile"].get("profile_text") or "").split())
    return None if factor.evidence.rstrip("…") in profile_text else f"quotes {factor.evidence!r}, not in the profile"


def _post_problem(service: RecommendationService, customer_id: str, factor: Factor) -> str | None:
    posts = service.base.posts
    post = posts[(posts["post_id"].astype(str) == factor.reference) & (posts["customer_id"] == customer_id)]
    if post.empty:
        return f"quotes post {factor.reference}, not a post of the customer"
    if not _quoted(factor.evidence, post["content"].iloc[0]):
        return f"quotes {factor.evidence!r}, not the words of post {factor.reference}"
    if factor.date != pd.Timestamp(post["timestamp"].iloc[0]).date().isoformat():
        return f"dates post {factor.reference} {factor.date}"
    return None


def _quoted(quote: str, text: str) -> bool:
    """The quote (whitespace tidied, perhaps cut short with "…") is words of the text."""
    return quote.rstrip("…") in " ".join(str(text).split())


def _prose_problems(view: dict, summary: str, factors: tuple[Factor, ...], names: dict) -> list[str]:
    """What the sentence says, read as a customer reads it, against the data."""
    problems = [f"the sentence says 'you already hold the {name}'; holds {view['held_products']}"
                for name, product_id in names.items()
                if f"you already hold the {name}" in summary and product_id not in view["held_products"]]
    for name, number, comparison, typical in NUMBER_CLAUSE.findall(summary):
        factor = next(f for f in factors if f.name == name)
        actual = float(view["profile"][factor.column])
        said = float(number.replace(",", ""))
        if abs(said - actual) > (0.5 if abs(actual) >= 100 else 0.005) + 1e-9:
            problems.append(f"the sentence says {name} is {number}; it is {actual}")
        if (actual > factor.typical) != (comparison == "above") or actual == factor.typical:
            problems.append(f"the sentence says {name} {actual} is {comparison} the typical {typical}")
    detected = {e["event"].replace("_", " ") for e in view["life_events"]}
    problems += [f"the sentence cites {event}, not detected for the customer"
                 for _, event in EVENT_CLAUSE.findall(summary) if event not in detected]
    return problems


# --------------------------------------------------------------------------------------------------
# Each kind of sentence
# --------------------------------------------------------------------------------------------------

SPECS = (FeatureSpec("holds Personal Pension", "holding", "holdings", "Personal Pension"),
         FeatureSpec("holds Credit Card", "holding", "holdings", "Credit Card"),
         FeatureSpec("average monthly spending", "numeric", "transactions", "tx_monthly_mean", None, 1000.0),
         FeatureSpec("occupation = Teacher", "category", "profile", "occupation", "Teacher"),
         FeatureSpec("occupation = another, less common value", "category", "profile", "occupation"))
CONTRIBUTIONS = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
CONTEXT = ProductContext("Cashback Card", 2, 3, "Medium", 0.31)


def sentence(factors: list[Factor]) -> str:
    return explain(CONTEXT, factors).summary


def test_the_score_is_called_what_the_model_estimated():
    """Trained on dated take-ups, a score is an estimated take-up; trained on what customers hold or asked for
    (holdings without dates), it is not, and "99% estimated take-up" promised a banker what no bank sees."""
    factors = model_factors(CONTRIBUTIONS, SPECS, np.array([0.0, 1.0, 0.3, 1.0, 0.0]), {"tx_monthly_mean": 1234.5})
    assert "(31% estimated take-up)" in sentence(factors)
    held = explain(dataclasses.replace(CONTEXT, label_scheme="holds"), factors).summary
    assert "(by our estimate, 31% of customers like you hold it or ask for it)" in held and "take-up" not in held
    small = [explain(dataclasses.replace(CONTEXT, score=score), factors).summary for score in (0.004, 0.0002)]
    assert "(0.4% estimated take-up)" in small[0] and "(under 0.1% estimated take-up)" in small[1]
    near_certain = explain(dataclasses.replace(CONTEXT, score=0.998, label_scheme="holds"), factors).summary
    assert "(by our estimate, over 99% of customers like you hold it or ask for it)" in near_certain  # not "100%"
    popular = {scheme: explain(dataclasses.replace(CONTEXT, label_scheme=scheme), [popularity_factor(0.052, scheme)])
               for scheme in ("next_takeup", "holds")}
    assert "because 5.2% of comparable customers took it up." in popular["next_takeup"].summary
    assert "because 5.2% of comparable customers hold it or asked for it." in popular["holds"].summary
    assert popular["holds"].factors[0].name == "share of similar customers who hold it or asked for it"
    rarer = explain(CONTEXT, [popularity_factor(0.52, "next_takeup")]).summary  # estimated 31% against a 52% share
    assert "because 52.0% of comparable customers took it up (your own data make it less likely for you)." in rarer


def test_words_that_lowered_the_score_are_not_given_as_a_reason():
    """The customer's words can sit close to a product's description and still push its score down (the model
    learned that customers who say so rarely take it): "because your own words are close to what it offers"
    would then state the opposite of what the model did."""
    raised = text_factor(0.6, "Health", "profile", None, None, contribution=0.11)
    assert raised and 'your own words ("Health") are close to what it offers' in sentence(raised)
    assert text_factor(0.6, "Health", "profile", None, None, contribution=-0.2) == []


def test_a_held_product_is_a_reason_and_one_not_held_is_never_read_as_held():
    factors = model_factors(CONTRIBUTIONS, SPECS, np.array([0.0, 1.0, 0.3, 1.0, 0.0]),
                            {"tx_monthly_mean": 1234.5, "occupation": "Teacher"})
    assert [(f.name, f.value) for f in factors] == [("Credit Card", "held"), ("average monthly spending", 1234.5),
                                                   ("occupation", "Teacher")]
    text = sentence(factors)
    assert "you already hold the Credit Card" in text
    assert "Personal Pension" not in text


def test_a_number_is_stated_as_above_or_below_the_typical_customer():
    above = model_factors(CONTRIBUTIONS[2:3], SPECS[2:3], np.array([0.3]), {"tx_monthly_mean": 1234.5})
    below = model_factors(CONTRIBUTIONS[2:3], SPECS[2:3], np.array([-0.2]), {"tx_monthly_mean": 812.25})
    assert above[0].comparison == "above" and below[0].comparison == "below"
    assert "your average monthly spending (1,234) is above the typical 1,000" in sentence(above)
    assert "your average monthly spending (812) is below the typical 1,000" in sentence(below)


def test_a_number_the_data_lacks_or_close_to_the_typical_one_is_not_stated():
    assert model_factors(CONTRIBUTIONS[2:3], SPECS[2:3], np.array([0.0]), {"tx_monthly_mean": None}) == []
    assert model_factors(CONTRIBUTIONS[2:3], SPECS[2:3], np.array([0.0]), {"tx_monthly_mean": 1000.0}) == []
    assert model_factors(CONTRIBUTIONS[2:3], SPECS[2:3], np.array([0.0]), {"tx_monthly_mean": 1030.0}) == []
    assert model_factors(CONTRIBUTIONS[2:3], SPECS[2:3], np.array([0.0]), {"tx_monthly_mean": 1080.0}) != []


def test_a_category_is_stated_only_when_it_is_the_customers():
    other = model_factors(CONTRIBUTIONS[3:], SPECS[3:], np.array([0.0, 1.0]), {"occupation": "Glassblower"})
    unknown = model_factors(CONTRIBUTIONS[3:], SPECS[3:], np.array([0.0, 0.0]), {"occupation": None})
    assert other == [] and unknown == []
    assert "occupation" not in sentence(other)


def test_a_demotion_is_never_a_reason_to_recommend():
    stress = DetectedEvent("financial_stress", "p1", pd.Timestamp("2025-03-01"), 0.9, "Money is tight this month")
    demotion = RuleEffect("speculation_under_financial_stress", "demote", 0.3,
                          "high-risk investments do not suit a customer in financial stress",
                          frozenset({"life_events"}), frozenset({"financial_stress"}))
    boost_that_only_mentions_it = RuleEffect("debt_help", "boost", 1.5, "helps with financial stress",
                                             frozenset({"customer.debt_payment_share"}), frozenset())
    factors = event_factors({}, [stress], [demotion, boost_that_only_mentions_it], frozenset({"financial_stress"}))
    assert factors == []
    text = sentence(rule_factors([demotion, boost_that_only_mentions_it]))
    because, rest = text.split(". ", 1)
    assert "financial stress" not in because and "speculation" not in because
    assert "raised it (debt_help)" in rest and "lowered it (speculation_under_financial_stress)" in rest


def test_a_boost_is_credited_to_the_event_it_looked_for_when_the_customer_has_it_recently():
    retirement = DetectedEvent("retirement", "p7", pd.Timestamp("2025-02-10"), 0.8, "Retiring next spring!")
    boost = RuleEffect("retirement_planning", "boost", 1.5, "55 or older or talked about retirement",
                       frozenset({"customer.age", "life_events"}), frozenset({"retirement"}))
    credited = event_factors({}, [retirement], [boost], frozenset({"retirement"}))
    assert [(f.name, f.reference, f.date, f.source) for f in credited] == [
        ("retirement", "p7", "2025-02-10", "posts")]
    assert 'you posted about retirement ("Retiring next spring!", 2025-02-10)' in sentence(credited)
    assert event_factors({}, [retirement], [boost], frozenset()) == []  # an old post: the rule fired on age


def test_a_rule_says_which_events_and_fields_it_tested(trained_service):
    context = CustomerContext({"customer_type": "individual", "age": 60}, "High", 80.0,
                              frozenset({"retirement", "financial_stress"}))
    outcome = trained_service.rules.apply(context, dict.fromkeys(trained_service.product_ids, 0.5), 20)
    effects = {e.rule: e for effects in outcome.rule_effects.values() for e in effects}
    assert effects["retirement_planning"].life_events == {"retirement"}
    assert effects["retirement_planning"].fields == {"customer.age", "life_events"}
    demotion = effects["speculation_under_financial_stress"]
    assert demotion.effect == "demote" and demotion.life_events == {"financial_stress"}


# --------------------------------------------------------------------------------------------------
# The contributions explanations rest on
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 4])
def test_contributions_add_up_to_scikit_learns_decision_function(trained_service, trained_training, depth):
    """For real training rows and real customers' serving rows: Saabas contributions plus the
    expected log-odds are scikit-learn's own ``decision_function``, feature by feature summed."""
    model, base = trained_service.model, trained_service.base
    taken_up = trained_training.labels.sum(axis=0)
    products = [int(p) for p in np.argsort(-taken_up)[:3]]
    n_products, n_features = len(model.product_ids_), len(model.design.specs)
    signals = base.signals
    for product in products:
        candidates = np.flatnonzero(trained_training.candidates[:, product])
        inputs = CustomerInputs.of(trained_training.tabular, trained_training.signals, candidates)
        rows, labels = model.design.design(inputs, [product])[:, 0, :], trained_training.labels[candidates, product]
        classifier = HistGradientBoostingClassifier(max_depth=depth, max_iter=40, min_samples_leaf=5,
                                                    random_state=0).fit(rows, labels)
        forest = CompiledForest({product: classifier}, n_products, n_features)
        for row in (0, 1, len(base.view) // 2, len(base.view) - 1):
            design = model.design.design(CustomerInputs.of(base.tabular, signals, np.array([row])))[0]
            contributions = forest.contributions(design[[product]], [product])[0]
            expected = classifier.decision_function(design[[product]])[0]
            assert contributions.sum() + forest.expected_raw(product) == pytest.approx(expected, abs=1e-6)
            if depth == 4:
                assert np.count_nonzero(contributions) > 1  # the test sees more than one feature at work


def test_each_products_contributions_are_its_own_whatever_products_are_asked_with_it(trained_service):
    """An answer explains its top products in one call: each product's row must be what it alone
    gets, in the order asked, not another product's trees."""
    model, base = trained_service.model, trained_service.base
    modelled = [p for p in range(len(model.product_ids_)) if model.forest_.has_model[p]][::-1][:5]
    assert len(modelled) >= 3
    design = model.design.design(CustomerInputs.of(base.tabular, base.signals, np.array([0])))[0]
    together = model.forest_.contributions(design[modelled], modelled)
    for row, product in enumerate(modelled):
        np.testing.assert_allclose(together[row], model.forest_.contributions(design[[product]], [product])[0],
                                   rtol=0, atol=1e-12)
        assert together[row].any()


# --------------------------------------------------------------------------------------------------
# The specs the explanations read
# --------------------------------------------------------------------------------------------------

def test_the_fitted_features_say_what_each_column_is_and_what_is_typical():
    view = pd.DataFrame({"customer_type": ["individual"] * 12, "income": [30_000.0] * 6 + [90_000.0] * 5 + [None],
                         "tx_monthly_mean": np.arange(12, dtype=float), "post_count": [0.0, 5.0] * 6,
                         "occupation": ["Teacher"] * 6 + ["Nurse"] * 5 + ["Glassblower"]},
                        index=pd.Index([f"c{i}" for i in range(12)], name="customer_id"))
    features = CustomerFeatures().fit(view)
    specs = {spec.name: spec for spec in features.feature_specs_}
    assert specs["income"] == FeatureSpec("income", "numeric", "profile", "income", None, 30_000.0,
                                          (("individual", 30_000.0),))
    assert specs["average monthly spending"].source == "transactions"
    assert specs["average monthly spending"].typical == view["tx_monthly_mean"].median()
    assert specs["number of posts"].source == "posts"
    assert specs["occupation = Teacher"] == FeatureSpec("occupation = Teacher", "category", "profile", "occupation",
                                                        "Teacher")
    rare = [s for s in features.feature_specs_ if s.column == "occupation" and s.category is None]
    assert len(rare) == 1  # Glassblower (1 customer) is grouped with the other rare values
    encoded = features.transform(view)
    column = features.feature_names_.index("occupation = Teacher")
    assert encoded[:6, column].tolist() == [1.0] * 6 and encoded[6:, column].tolist() == [0.0] * 6


def test_an_organizations_number_is_set_against_organizations_not_against_households():
    """A company's revenue "above the typical 58,300" compared it with the bank's households (most of
    its customers): true and meaningless to a banker. Each type is compared with its own median, and a
    company's income is called what it is, its annual revenue."""
    view = pd.DataFrame({"customer_type": ["individual"] * 9 + ["organization"] * 3,
                         "income": [40_000.0, 50_000.0, 60_000.0] * 3 + [2e6, 5e6, 9e6],
                         "occupation": ["Teacher"] * 12},
                        index=pd.Index([f"c{i}" for i in range(12)], name="customer_id"))
    income = next(s for s in CustomerFeatures().fit(view).feature_specs_ if s.column == "income")
    assert (income.typical_for("individual"), income.typical_for("organization")) == (50_000.0, 5e6)
    assert income.typical_for(None) == income.typical == 55_000.0  # the type unknown: every customer's median
    weight = np.array([0.5])
    company = model_factors(weight, [income], np.array([0.0]), {"income": 3e6, "customer_type": "organization"})
    assert sentence(company).count("your annual revenue (3,000,000) is below the typical 5,000,000") == 1
    household = model_factors(weight, [income], np.array([0.0]), {"income": 3e6, "customer_type": "individual"})
    assert "your income (3,000,000) is above the typical 50,000" in sentence(household)


def test_a_cold_start_is_explained_from_what_the_request_told(trained_service):
    """A new customer's posts are counted and their mood read as a known customer's are, and the bank's
    lack of their history is never stated as a fact about them ("your number of transactions (0)")."""
    from tests.test_data_use import customers_with_posts

    for customer_id, profile, posts in customers_with_posts(trained_service, 25):
        state = trained_service.customers.cold(customer_id, profile, [], posts)
        assert state.profile["post_count"] == len(posts) and not math.isnan(state.profile["sentiment_mean"])
        for told in (posts, []):
            answer = trained_service.recommend_for_profile(customer_id, profile, [], told, 5)
            for item in answer.recommendations:
                claims = NUMBER_CLAUSE.findall(item.explanation.summary)
                assert not [c for c in claims if c[0] == "number of transactions"], item.explanation.summary
                for name, value, _, _ in claims:
                    if name == "number of posts":
                        assert float(value.replace(",", "")) == len(told), item.explanation.summary
    silent = trained_service.customers.cold("new-silent", {"age": 30}, [], [])
    assert silent.profile["post_count"] == 0 and silent.no_history == {"tx_count"}


def test_words_only_vaguely_like_a_product_are_never_given_as_a_request_for_it(trained_service):
    """The encoder puts "Tax Savings" about as close (0.63-0.64) to a junior savings account as to the
    pension and the education plan: a coin flip, not a request. "Travel Insurance" names its product."""
    profile = {"customer_type": "individual", "age": 66, "income": 120_000,
               "preferences": "Tax Savings, Travel Insurance"}
    answer = trained_service.recommend_for_profile("new-retiree", profile, [], [], 10)
    requests = {item.product_id: factor.evidence for item in answer.recommendations
                for factor in item.explanation.factors if factor.kind == "stated_need"}
    assert requests.get("travel_insurance") == "Travel Insurance"
    assert "Tax Savings" not in requests.values()
    assert answer.recommendations[0].product_id == "travel_insurance"  # what they asked for is offered first
    vague = trained_service.customers.cold("new-retiree", profile, [], []).stated_needs
    assert set(vague) == {"travel_insurance"}


def test_a_new_customer_is_not_given_a_risk_capacity_their_unknown_finances_cannot_show(trained_service):
    """A young, well-paid customer new to the bank: their spending, its swings and their debts are unknown,
    so each takes away half the most it can (not nothing, as if none were spent and nothing owed, which made
    them High), and the risk profile says which inputs were not known and what they counted for."""
    answer = trained_service.recommend_for_profile("new-earner", {"age": 29, "income": 85_000.0}, [], [], 5)
    components = {c.name: c for c in answer.risk_profile.components}
    for name, half in (("spend_to_income", -10.0), ("spending_volatility", -5.0), ("debt_repayments", -7.5)):
        assert components[name].value is None and components[name].points == half
        assert components[name].meaning.endswith(f"not known to the bank: counted as {half:+g} points")
    assert components["income"].value == 85_000.0 and "not known" not in components["income"].meaning
    assert answer.risk_profile.level == "Medium"
    limit = trained_service.rules.max_risk_level(answer.risk_profile.level)
    assert all(item.risk_level <= limit for item in answer.recommendations)


def test_a_post_sent_with_a_request_is_quoted_without_a_date_it_does_not_have(trained_service):
    """The request does not say when its posts were written: the explanation says they came with it. (The
    rules boost a pension for a customer who wrote about retirement, and credit the post for it.)"""
    post = "Thinking about saving for my retirement"
    answer = trained_service.recommend_for_profile("new-saver", {"age": 45, "income": 85_000.0}, [], [post], 5)
    quoting = [f for item in answer.recommendations for f in item.explanation.factors if f.evidence == post]
    assert quoting, "the post should explain at least one recommendation"
    assert all(f.date is None and f.reference.startswith("request-") for f in quoting)
    summaries = [item.explanation.summary for item in answer.recommendations]
    assert any(f'("{post}", sent with this request)' in summary for summary in summaries)
    assert not any(str(trained_service.base.as_of.year) in summary for summary in summaries)
