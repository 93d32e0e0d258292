"""Explanation generation: the real reasons behind one recommendation, as factors and sentences.

Factors are machine-readable (kind, name, value or evidence, weight) and come from the scoring
itself: the per-feature contributions of the trees that scored the product for this customer, the
post that showed a life event (quoted, with its date), the customer's own words that matched the
product description, the business rules that moved it, and its fit with the risk profile. The one
or two plain sentences are assembled from the strongest factors, so two customers get different
explanations for the same product.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from business_rules import RuleEffect
from text_models import DetectedEvent

MAX_MODEL_FACTORS = 3
MIN_FACTOR_WEIGHT = 0.05
STRONG_TEXT_MATCH = 0.35
QUOTE_LIMIT = 100


@dataclass(frozen=True)
class Factor:
    """One reason: what it is, how strong (log-odds or score change), and where it comes from."""

    kind: str  # stated_need | feature | life_event | text_match | business_rule | risk_suitability | popularity
    name: str
    weight: float
    value: str | float | None = None
    evidence: str | None = None
    source: str | None = None  # e.g. "post 8810 on 2025-01-16", "profile: preferences"


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


def model_factors(contributions: np.ndarray, feature_names: Sequence[str], design_values: np.ndarray,
                  raw_values: Mapping[str, object]) -> list[Factor]:
    """The features that pushed this product's score up the most, with the customer's own value.

    ``raw_values`` maps a readable feature name to the customer's unscaled value (the model sees it
    standardised, the customer knows it as it is).
    """
    order = np.argsort(-contributions)
    factors = []
    for index in order[:MAX_MODEL_FACTORS * 2]:
        weight = float(contributions[index])
        name = feature_names[index]
        if weight < MIN_FACTOR_WEIGHT or name.startswith("life event") or "text match" in name:
            continue  # events and text are explained with their evidence below
        factors.append(Factor("feature", name, round(weight, 3), _feature_value(name, design_values[index], raw_values)))
        if len(factors) == MAX_MODEL_FACTORS:
            break
    return factors


def event_factors(event_weights: dict[str, float], customer_events: Sequence[DetectedEvent],
                  fired_rules: Sequence[RuleEffect]) -> list[Factor]:
    """Life events that raised the score (per the trees or a rule), each with the post that showed it.

    ``event_weights`` are each event's contribution to the score; ``customer_events`` come newest
    first, and the newest post showing an event is the one quoted.
    """
    weights = {event: weight for event, weight in event_weights.items() if weight >= MIN_FACTOR_WEIGHT}
    newest = {}
    for detected in customer_events:
        newest.setdefault(detected.event, detected)
    for effect in fired_rules:
        for event in newest:
            if event.replace("_", " ") in effect.reason:
                weights.setdefault(event, 0.0)
    factors = []
    for event, weight in sorted(weights.items(), key=lambda item: -item[1]):
        if event in newest:
            post = newest[event]
            kind = "post" if post.source == "post" else "transaction"
            factors.append(Factor("life_event", event.replace("_", " "), round(weight, 3), round(post.score, 3),
                                  _quote(post.evidence), f"{kind} {post.post_id} on {_day(post.timestamp)}"))
    return factors


STATED_FIELDS = {"preferences": "your preferences", "financial_needs": "your financial needs"}


def stated_need_factor(words: str, field: str) -> Factor:
    """The customer asked for the product: their own words, and where they wrote them."""
    return Factor("stated_need", "you asked for it", 0.0, None, _quote(words), STATED_FIELDS.get(field, field))


def text_factor(best_match: float, source_text: str | None, source: str, contribution: float) -> list[Factor]:
    """The customer's own words that came closest to the product description, when close enough."""
    if best_match < STRONG_TEXT_MATCH or not source_text:
        return []
    return [Factor("text_match", "your words match the product description", round(contribution, 3),
                   round(float(best_match), 3), _quote(source_text), source)]


def rule_factors(effects: Sequence[RuleEffect]) -> list[Factor]:
    return [Factor("business_rule", effect.rule, round(float(np.log(effect.factor)), 3) if effect.factor else 0.0,
                   effect.effect, effect.reason, "business rules") for effect in effects]


def suitability_factor(context: ProductContext) -> Factor:
    return Factor("risk_suitability", "product risk within the customer's risk profile", 0.0,
                  f"risk {context.product_risk} of max {context.max_risk}",
                  f"{context.risk_level} risk profile allows products up to risk level {context.max_risk}",
                  "risk profile")


def popularity_factor(prior: float) -> Factor:
    return Factor("popularity", "share of similar customers who took it up", 0.0, round(float(prior), 4), None,
                  "training data")


def explain(context: ProductContext, factors: list[Factor]) -> Explanation:
    """Factors plus one or two sentences built from the strongest of them."""
    return Explanation(tuple(factors), _sentences(context, factors))


def _sentences(context: ProductContext, factors: Sequence[Factor]) -> str:
    reasons = []
    for factor in factors:
        if factor.kind == "stated_need":
            reasons.append(f"you told us in {factor.source} that you are looking for \"{factor.evidence}\"")
        elif factor.kind == "life_event":
            said = "you posted about" if factor.source.startswith("post") else "your spending shows"
            reasons.append(f"{said} {factor.name} (\"{factor.evidence}\", {factor.source.split(' on ')[-1]})")
        elif factor.kind == "text_match":
            reasons.append(f"your own words (\"{factor.evidence}\") are close to what it offers")
        elif factor.kind == "feature":
            reasons.append(_feature_phrase(factor))
        if len(reasons) == 3:
            break
    if not reasons:
        fallback = next((f for f in factors if f.kind == "popularity"), None)
        reasons.append(f"{fallback.value:.1%} of comparable customers took it up" if fallback else
                       "it suits customers with a profile like yours")
    first = f"We suggest the {context.product_name} ({context.score:.0%} estimated take-up) because " \
            + _join(reasons) + "."
    boosts = [f.name for f in factors if f.kind == "business_rule" and f.value in ("boost", "demote")]
    second = (f"Its risk level {context.product_risk} fits your {context.risk_level} risk profile"
              + (f"; bank rules applied: {', '.join(boosts)}." if boosts else "."))
    return f"{first} {second}"


def _feature_phrase(factor: Factor) -> str:
    if factor.name.startswith("holds "):
        return f"you already hold the {factor.name.removeprefix('holds ')}"
    if " = " in factor.name:
        column, value = factor.name.split(" = ", 1)
        return f"your {column} is {value}"
    return f"your {factor.name} ({factor.value})" if factor.value is not None else f"your {factor.name}"


def _feature_value(name: str, design_value: float, raw_values: Mapping[str, object]) -> str | float | None:
    if name.startswith("holds ") or " = " in name:
        return "yes" if design_value > 0.5 else "no"
    raw = raw_values.get(name)
    if raw is None or (isinstance(raw, float) and np.isnan(raw)):
        return None
    return round(float(raw), 3) if isinstance(raw, (int, float, np.number)) else str(raw)


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _quote(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 1].rstrip() + "…"


def _day(timestamp: object) -> str:
    stamp = pd.Timestamp(timestamp)
    return "an unknown date" if pd.isna(stamp) else stamp.date().isoformat()
