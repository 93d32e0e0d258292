"""Explanation generation: the real reasons behind one recommendation, as factors and sentences.

Factors are machine-readable (kind, name, the customer's value, weight, source) and come from the
scoring itself: the per-feature pushes of the knowledge prior and the trees that scored the product
for this customer (as the evidence blend weighs them), the post that showed a life event (quoted,
with its date), the customer's own words that matched the product description, the business rules
that moved it, and its fit with the risk profile. Every factor states a fact about the customer
read from structure, never from a feature's name: a feature's
:class:`~feature_engineer.FeatureSpec` says what it is, the customer's own value says what is true
(held or not, above or below the typical customer, this category or another).
The one or two plain sentences come last, from the strongest factors, so two customers get
different explanations for the same product, and a sentence never says more than its factor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np
import pandas as pd

from business_rules import AdjustedProduct, CustomerContext, RuleEffect
from feature_engineer import CustomerInputs, FeatureSpec
from feedback_learning import FeedbackShift
from recommender import HybridRecommender, RiskProfile
from text_models import REQUEST_POST_PREFIX, DetectedEvent

MAX_MODEL_FACTORS = 3
MAX_REASONS = 3
MIN_FACTOR_WEIGHT = 0.05
STRONG_TEXT_MATCH = 0.35
TYPICAL_BAND = 0.05  # a number within 5% of the typical customer's is not stated as above or below it
QUOTE_LIMIT = 100


@dataclass(frozen=True)
class Factor:
    """One reason: what it is, the customer's value, how strong (log-odds or score change), where from."""

    kind: str  # stated_need | feature | life_event | text_match | feedback | business_rule | risk_suitability
    # | popularity
    name: str
    weight: float
    value: str | float | None = None
    evidence: str | None = None
    source: str | None = None  # profile | transactions | posts | holdings | business rules | ...
    feature_kind: str | None = None  # kind "feature": numeric | category | holding (the FeatureSpec's kind)
    column: str | None = None  # a feature, or a stated need: the unified view's column it reads
    typical: float | None = None  # numeric feature: the training median of customers of their type
    comparison: str | None = None  # numeric feature: "above" or "below" the typical (never equal, see model_factors)
    reference: str | None = None  # the post or transaction quoted
    date: str | None = None  # its date


@dataclass(frozen=True)
class Explanation:
    factors: tuple[Factor, ...]
    summary: str


@dataclass(frozen=True)
class ProductContext:
    """What the explainer needs to know about the product and the customer's data behind it."""

    product_name: str
    product_risk: int
    max_risk: int
    risk_level: str
    score: float
    label_scheme: str = "next_takeup"  # what the score estimates: see LABEL_WORDS


class LabelWords(NamedTuple):
    score: str  # the score in the first sentence, with {share}
    counted: str  # what the popularity behind the prior counts: "share of similar customers who ..."


# What a score and the popularity behind it measure, by what the model learned from
# (recommender.label_scheme_of): the take-ups that followed each snapshot, or, where holdings carry no dates
# (the hackathon files), what customers hold or asked for. A banker told "99% estimated take-up" of the
# latter reads a promise no bank sees.
LABEL_WORDS = {"next_takeup": LabelWords("{share} estimated take-up", "took it up"),
               "holds": LabelWords("by our estimate, {share} of customers like you hold it or ask for it",
                                   "hold it or asked for it")}


def label_words(label_scheme: str) -> LabelWords:
    return LABEL_WORDS.get(label_scheme, LABEL_WORDS["next_takeup"])


def share_in_words(score: float) -> str:
    """A probability as a share a reader takes at its word: "0%" beside "you told us you are looking for it"
    reads as a contradiction, so a small share keeps a decimal ("0.4%"), and a tiny one is "under 0.1%";
    at the other end an estimate is never a certainty, so 0.998 is "over 99%", not "100%"."""
    if score > 0.99:
        return "over 99%"
    if score >= 0.01:
        return f"{score:.0%}"
    return f"{score:.1%}" if score >= 0.001 else "under 0.1%"


class PostArrays(Protocol):
    """The posts a customer's best text match points into, as arrays (row k: post k)."""

    post_id: np.ndarray
    content: np.ndarray
    timestamp: np.ndarray  # ISO dates


class StatedNeed(Protocol):
    words: str  # the customer's own words that asked for a product
    field: str  # the profile column they wrote them in: preferences | financial_needs


class ExplainedCustomer(Protocol):
    """What explaining reads about one customer (the service's customer state provides it)."""

    @property
    def profile(self) -> Mapping[str, Any]: ...  # the unified view's row, unscaled
    @property
    def best_text_match(self) -> np.ndarray: ...  # (P,)
    @property
    def best_text_source(self) -> np.ndarray: ...  # (P,) k >= 0: post k; -1 - k: the k-th profile phrase
    @property
    def events(self) -> np.ndarray: ...  # (E,) event evidence, as the model saw it
    @property
    def detected_events(self) -> Sequence[DetectedEvent]: ...  # newest first
    @property
    def posts(self) -> PostArrays: ...
    @property
    def stated_needs(self) -> Mapping[str, StatedNeed]: ...  # product id -> the words that asked for it
    @property
    def profile_phrases(self) -> Sequence[str]: ...  # the profile's phrases, as best_text_source numbers them


# --------------------------------------------------------------------------------------------------
# Assembly: one customer's final list
# --------------------------------------------------------------------------------------------------

def explain_recommendations(model: HybridRecommender, seen_by: Callable[[int], ExplainedCustomer],
                            inputs: CustomerInputs, ranked: Sequence[AdjustedProduct],
                            products: Sequence[Mapping[str, Any]], risk: RiskProfile, max_risk: int,
                            rules_saw: CustomerContext, feedback: Mapping[str, FeedbackShift]) -> list[Explanation]:
    """Explanations of the final list, the model's contributions for all of it in one pass.

    ``seen_by(product)`` is the customer as that product's data-use view shows them: an
    explanation cites only what its product's score could read. ``inputs`` are the customer's
    model inputs (one row), laid out for the listed products only; ``products`` the catalogue
    records by position, ``max_risk`` the highest product risk the customer's profile allows,
    ``rules_saw`` what the business rules knew of the customer (the life events each product's
    rules saw) and ``feedback`` what the segment's answers to offers did to each product's score
    since training.
    """
    position = {product_id: index for index, product_id in enumerate(model.product_ids_)}
    indices = [position[item.product_id] for item in ranked]
    if not indices:
        return []
    design = model.design.design(inputs, indices)[0]
    contributions = model.contributions(design, indices)
    explanations = []
    for index, item, row, pushes in zip(indices, ranked, design, contributions):
        product = products[index]
        context = ProductContext(str(product["name"]), int(product["risk_level"]), max_risk, risk.level,
                                 item.model_score, model.label_scheme_)
        explanations.append(_explain(model, seen_by(index), index, item, context, row, pushes,
                                     rules_saw.life_events_for(item.product_id), feedback.get(item.product_id)))
    return explanations


def _explain(model: HybridRecommender, customer: ExplainedCustomer, index: int, item: AdjustedProduct,
             context: ProductContext, design_row: np.ndarray, contributions: np.ndarray,
             recent_events: frozenset[str], feedback: FeedbackShift | None) -> Explanation:
    factors: list[Factor] = []
    need = customer.stated_needs.get(item.product_id)
    if need is not None:
        factors.append(stated_need_factor(need.words, need.field))
    factors += event_factors(model.design.event_weights(contributions, customer.events, index),
                             customer.detected_events, item.effects, recent_events)
    text, source, reference, date = _best_text(customer, index)
    if need is not None and text == need.words:
        text = None  # the stated need already quotes these words
    factors += text_factor(float(customer.best_text_match[index]), text, source, reference, date,
                           float(contributions[model.design.text_columns].sum()))
    factors += model_factors(contributions, model.design.specs, design_row, customer.profile)
    if model.blend_.tree_weight[index] < 0.5:  # scored mostly by the prior, whose base is popularity
        factors.append(popularity_factor(float(model.prior_[index]), model.label_scheme_))
    if feedback is not None:
        factors.append(feedback_factor(feedback))
    factors += rule_factors(item.effects)
    factors.append(suitability_factor(context))
    return explain(context, factors)


def _best_text(customer: ExplainedCustomer, index: int) -> tuple[str | None, str, str | None, str | None]:
    """The customer's text closest to the product: (text, source, post id, date)."""
    source = int(customer.best_text_source[index])
    if source < 0:
        phrases, number = customer.profile_phrases, -1 - source
        return (phrases[number] if number < len(phrases) else None), "profile", None, None
    posts = customer.posts
    post_id = str(posts.post_id[source])
    return str(posts.content[source]), "posts", post_id, _posted_on(post_id, posts.timestamp[source])


# --------------------------------------------------------------------------------------------------
# Factors
# --------------------------------------------------------------------------------------------------

def model_factors(contributions: np.ndarray, specs: Sequence[FeatureSpec], design_row: np.ndarray,
                  profile: Mapping[str, Any]) -> list[Factor]:
    """The features that pushed this product's score up the most, each stated from the customer's value.

    Only what is true of the customer and says something about them becomes a reason: a product
    they hold, the category they are in, a number of theirs against the typical customer's. A
    contribution from what the customer is *not* (does not hold a pension, is not a teacher) is
    left out: "you do not have a pension" is true of most customers, says nothing about why the
    product suits this one, and reads to a banker as a sales pitch. So is a number the data lacks
    (the model saw the median in its place) or one within 5% of the typical customer's (a share
    of spending of 0, like most customers'; 760 days against 758). Life events and text are
    explained with their evidence (:func:`event_factors`, :func:`text_factor`).
    """
    factors = []
    strong = np.flatnonzero(contributions >= MIN_FACTOR_WEIGHT)
    for index in strong[np.argsort(-contributions[strong], kind="stable")]:
        weight = float(contributions[index])
        if len(factors) == MAX_MODEL_FACTORS:
            break
        factor = _stated_feature(specs[index], round(weight, 3), float(design_row[index]), profile)
        if factor is not None:
            factors.append(factor)
    return factors


def _stated_feature(spec: FeatureSpec, weight: float, design_value: float,
                    profile: Mapping[str, Any]) -> Factor | None:
    """The feature as a fact about the customer, or None when it is not one worth stating."""
    if spec.kind == "holding":
        held = design_value > 0.5
        return Factor("feature", spec.column, weight, "held", None, spec.source, spec.kind) if held else None
    if spec.kind == "category":
        value = profile.get(spec.column)
        if spec.category is None or _is_missing(value) or str(value) != spec.category:
            return None
        return Factor("feature", spec.column.replace("_", " "), weight, spec.category, None, spec.source, spec.kind,
                      spec.column)
    if spec.kind == "numeric":
        value = _number(profile.get(spec.column))
        customer_type = profile.get("customer_type")
        typical = spec.typical_for(customer_type)
        if value is None or _close_to_typical(value, typical):
            return None
        return Factor("feature", spec.name_for(customer_type), weight, value, None, spec.source, spec.kind,
                      spec.column, typical, None if typical is None else "above" if value > typical else "below")
    return None


def _close_to_typical(value: float, typical: float | None) -> bool:
    """Within ``TYPICAL_BAND`` of the typical value: "760 days, above the typical 758" tells a
    customer nothing about why the product suits them."""
    if typical is None:
        return False
    return abs(value - typical) <= TYPICAL_BAND * max(abs(value), abs(typical))


def event_factors(event_weights: Mapping[str, float], customer_events: Sequence[DetectedEvent],
                  fired_rules: Sequence[RuleEffect], recent_events: frozenset[str]) -> list[Factor]:
    """Life events that raised the score (per the trees or a boost), each with the post that showed it.

    ``event_weights`` are each event's contribution to the score; ``customer_events`` come newest
    first, and the newest post showing an event is the one quoted. A rule credits an event only
    when it boosted the product and looked for that event, and the customer has it among the
    ``recent_events`` the rule saw: a demotion or exclusion is never a reason to recommend.
    """
    weights = {event: weight for event, weight in event_weights.items() if weight >= MIN_FACTOR_WEIGHT}
    for effect in fired_rules:
        if effect.effect == "boost":
            for event in effect.life_events & recent_events:
                weights.setdefault(event, 0.0)
    newest: dict[str, DetectedEvent] = {}
    for detected in customer_events:
        newest.setdefault(detected.event, detected)
    return [_event_factor(newest[event], weight) for event, weight in sorted(weights.items(), key=lambda e: -e[1])
            if event in newest]


def _event_factor(detected: DetectedEvent, weight: float) -> Factor:
    source = "posts" if detected.source == "post" else "transactions"
    return Factor("life_event", detected.event, round(weight, 3), round(float(detected.score), 3),
                  _quote(detected.evidence), source, reference=str(detected.post_id) or None,
                  date=_posted_on(str(detected.post_id), detected.timestamp))


STATED_FIELDS = {"preferences": "your preferences", "financial_needs": "your financial needs"}


def stated_need_factor(words: str, field: str) -> Factor:
    """The customer asked for the product: their own words, and the profile field they wrote them in."""
    return Factor("stated_need", "you asked for it", 0.0, None, _quote(words), "profile", column=field)


def text_factor(best_match: float, text: str | None, source: str, reference: str | None, date: str | None,
                contribution: float) -> list[Factor]:
    """The customer's own words that came closest to the product description, when close enough and when
    they raised the score: words the model read as a reason against the product (a negative
    ``contribution``) are not stated as a reason for it, as a feature or event that lowered it is not."""
    if best_match < STRONG_TEXT_MATCH or not text or contribution < MIN_FACTOR_WEIGHT:
        return []
    return [Factor("text_match", "your words match the product description", round(contribution, 3),
                   round(float(best_match), 3), _quote(text), source, reference=reference, date=date)]


def rule_factors(effects: Sequence[RuleEffect]) -> list[Factor]:
    return [Factor("business_rule", effect.rule, round(float(np.log(effect.factor)), 3) if effect.factor else 0.0,
                   effect.effect, effect.reason, "business rules") for effect in effects]


def feedback_factor(shift: FeedbackShift) -> Factor:
    """How the segment answered this product's offers since training, and what that did to the score."""
    answered = shift.accepted + shift.declined
    return Factor("feedback", "how customers of your segment answered this offer", round(shift.log_odds_change, 3),
                  f"{shift.accepted} of {answered} accepted",
                  f"{shift.segment} customers accepted {shift.accepted} and declined {shift.declined} of its offers "
                  f"since the model was trained: estimated take-up {shift.model_score:.1%} before, "
                  f"{shift.score:.1%} after", "decision log")


def suitability_factor(context: ProductContext) -> Factor:
    return Factor("risk_suitability", "product risk within the customer's risk profile", 0.0,
                  f"risk {context.product_risk} of max {context.max_risk}",
                  f"{context.risk_level} risk profile allows products up to risk level {context.max_risk}",
                  "risk profile")


def popularity_factor(prior: float, label_scheme: str) -> Factor:
    return Factor("popularity", f"share of similar customers who {label_words(label_scheme).counted}", 0.0,
                  round(float(prior), 4), None, "training data")


# --------------------------------------------------------------------------------------------------
# Prose, last
# --------------------------------------------------------------------------------------------------

def explain(context: ProductContext, factors: list[Factor]) -> Explanation:
    """Factors plus one or two sentences built from the strongest of them."""
    return Explanation(tuple(factors), _sentences(context, factors))


def _sentences(context: ProductContext, factors: Sequence[Factor]) -> str:
    words = label_words(context.label_scheme)
    reasons = [phrase for phrase in map(reason_phrase, factors) if phrase][:MAX_REASONS]
    if not reasons:
        reasons.append(_fallback_reason(context, factors))
    estimate = words.score.format(share=share_in_words(context.score))
    first = f"We suggest the {context.product_name} ({estimate}) because " + _join(reasons) + "."
    return f"{first} Its risk level {context.product_risk} fits your {context.risk_level} risk profile" \
           + _rules_clause(factors) + "."


def _fallback_reason(context: ProductContext, factors: Sequence[Factor]) -> str:
    """The reason when nothing of the customer's own raised the score: how common the product is.

    "(0.9% estimated) because 26.8% of comparable customers hold it" read as a contradiction to a
    banker; said with its cause, it is not: the customer's own data put them below the common rate.
    """
    popularity = next((f for f in factors if f.kind == "popularity"), None)
    if popularity is None:
        return "it suits customers with a profile like yours"
    common = f"{popularity.value:.1%} of comparable customers {label_words(context.label_scheme).counted}"
    return common + (" (your own data make it less likely for you)" if context.score < popularity.value else "")


def reason_phrase(factor: Factor) -> str | None:
    """The factor as a reason to recommend, in words; None for what is not one (rules, suitability)."""
    if factor.kind == "stated_need":
        return (f"you told us in {STATED_FIELDS.get(factor.column, factor.column)} that you are looking for "
                f"\"{factor.evidence}\"")
    if factor.kind == "life_event":
        said = "you posted about" if factor.source == "posts" else "your spending shows"
        when = factor.date or "sent with this request"
        return f"{said} {factor.name.replace('_', ' ')} (\"{factor.evidence}\", {when})"
    if factor.kind == "text_match":
        return f"your own words (\"{factor.evidence}\") are close to what it offers"
    if factor.kind == "feedback":
        return f"customers like you accepted it ({factor.value} offers)" if factor.weight > 0 else None
    if factor.kind != "feature":
        return None
    if factor.feature_kind == "holding":
        return f"you already hold the {factor.name}"
    if factor.feature_kind == "category":
        return f"your {factor.name} is {factor.value}"
    return f"your {factor.name} ({amount(factor.value)}) is {factor.comparison} the typical {amount(factor.typical)}"


def _rules_clause(factors: Sequence[Factor]) -> str:
    """The bank rules that moved the product, boosts apart from demotions: a demotion is no reason."""
    boosted = [f.name for f in factors if f.kind == "business_rule" and f.value == "boost"]
    demoted = [f.name for f in factors if f.kind == "business_rule" and f.value == "demote"]
    parts = ([f"bank rules raised it ({', '.join(boosted)})"] if boosted else []) + \
            ([f"bank rules lowered it ({', '.join(demoted)})"] if demoted else [])
    return "; " + " and ".join(parts) if parts else ""


def amount(value: float) -> str:
    """A number as a sentence shows it: 1,234 for amounts and counts, 0.23 for shares and rates."""
    return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.2f}"


def _number(value: object) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _quote(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1].rstrip() + "…"


def _posted_on(post_id: str, timestamp: object) -> str | None:
    """The day a post was written; None for a post sent with a cold-start request, which carries no date
    (the model dates it at its data's as-of day, which is not when the customer wrote it)."""
    return None if post_id.startswith(REQUEST_POST_PREFIX) else _day(timestamp)


def _day(timestamp: object) -> str:
    stamp = pd.Timestamp(timestamp)
    return "an unknown date" if pd.isna(stamp) else stamp.date().isoformat()
