"""Public request and response schemas of the HTTP API, separate from the internal records.

Every route declares one of these as its ``response_model``; they read the service's dataclasses
directly (``from_attributes``), so the API contract is written down once, here, with examples.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class CustomerProfile(BaseModel):
    """A customer the bank's data does not hold yet (cold start)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "customer_type": "individual", "age": 31, "gender": "F", "location": "Austin", "income": 72000,
        "occupation": "Nurse", "interests": "hiking, cooking", "preferences": "saving for a home",
        "posts": ["Considering a mortgage for my first home"], "held_products": ["current_account"]}})

    customer_type: Literal["individual", "organization"] = "individual"
    age: int | None = Field(default=None, ge=16, le=120)
    gender: str | None = Field(default=None, max_length=32)
    location: str | None = Field(default=None, max_length=80)
    income: float | None = Field(default=None, ge=0, le=1e12)
    education: str | None = Field(default=None, max_length=80)
    occupation: str | None = Field(default=None, max_length=80)
    industry: str | None = Field(default=None, max_length=120)
    employees: int | None = Field(default=None, ge=0, le=10_000_000)
    interests: str | None = Field(default=None, max_length=1000)
    preferences: str | None = Field(default=None, max_length=1000)
    financial_needs: str | None = Field(default=None, max_length=1000)
    posts: list[str] = Field(default_factory=list, max_length=20,
                             description="Recent posts of the customer, newest first (up to 20).")
    held_products: list[str] = Field(default_factory=list, max_length=50)
    consent_social: bool | None = Field(default=None, description=(
        "Whether the customer consents to their posts being read; false: the posts are ignored for every product. "
        "Missing: the bank's default (SOCIAL_DATA_DEFAULT_CONSENT)."))

    def fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"posts", "held_products"})


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"customer_id": "C000001", "top_k": 5, "include_explanation": True}]})

    customer_id: str = Field(pattern=CUSTOMER_ID_PATTERN, description="Letters, digits, '_', '-', '.'; 1-64 chars.")
    top_k: int = Field(default=5, ge=1, le=20)
    include_explanation: bool = True
    profile: CustomerProfile | None = Field(
        default=None, description="Scores a customer unknown to the data from this profile (cold start).")


class RuleEffectPublic(Public):
    rule: str
    effect: str
    factor: float | None
    reason: str


class FactorPublic(Public):
    kind: str = Field(description="feature | life_event | text_match | business_rule | risk_suitability | popularity")
    name: str
    weight: float = Field(description="Contribution to the log-odds of take-up (0 for context factors).")
    value: str | float | None = Field(default=None, description="The customer's own value: a number, a category, "
                                      "'held', an event's detection score, a rule's effect.")
    evidence: str | None = None
    source: str | None = Field(default=None, description="profile | transactions | posts | holdings | business "
                                                         "rules | risk profile | training data")
    feature_kind: str | None = Field(default=None, description="For a feature: numeric | category | holding.")
    column: str | None = Field(default=None, description="For a numeric or category feature: its customer column.")
    typical: float | None = Field(default=None, description="For a numeric feature: the typical (median) value among customers of the same type (individual or organization).")
    comparison: str | None = Field(default=None, description="For a numeric feature: above | below the typical value.")
    reference: str | None = Field(default=None, description="The post or transaction quoted.")
    date: str | None = None


class ExplanationPublic(Public):
    summary: str
    factors: list[FactorPublic]


class RecommendedProductPublic(Public):
    product_id: str
    name: str
    category: str
    risk_level: int
    rank: int
    score: float = Field(description="Calibrated probability of take-up.")
    adjusted_score: float = Field(description="Score after business-rule boosts and demotions; the ranking key.")
    scored_by: str = Field(description="gbm | smote+gbm | balanced_gbm (its trees, blended with the knowledge prior "
                           "by report.tree_weight) | knowledge_prior (the prior alone)")
    rules: list[RuleEffectPublic]
    explanation: ExplanationPublic | None
    withheld_signals: list[str] = Field(default_factory=list, description=(
        "What the data-use policy kept out of this product's score and explanation (social_posts, "
        "life_events_from_posts, inferred health, ...)."))


class RiskComponentPublic(Public):
    name: str
    value: float | None
    points: float
    meaning: str


class RiskProfilePublic(Public):
    level: str
    score: float
    components: list[RiskComponentPublic]


class RuleCausePublic(Public):
    rule: str
    applies_to: Literal["group", "customer"] = Field(description=(
        "Whom the rule fired for: the customer moved to the other group, or the customer as they are."))
    reason: str


class TopKChangePublic(Public):
    group: str
    entered: list[str] = Field(description="Products in the group's top k and not in the customer's.")
    left: list[str] = Field(description="Products in the customer's top k and not in the group's.")
    rules: list[RuleCausePublic] = Field(description=(
        "Bank rules and eligibility checks that treat the two differently on those products."))
    model_score_change: float = Field(description=(
        "The largest change of the model's own score (before any rule) among those products."))
    reason: str


class AttributeCheckPublic(Public):
    attribute: str
    original_group: str | None
    groups_tested: list[str]
    max_score_change: float
    worst_group: str | None
    worst_product: str | None
    top_k_set_changed: bool
    top_k_order_changed: bool
    passed: bool
    groups_changing_top_k: list[str]
    note: str | None = None
    top_k_changes: list[TopKChangePublic] = Field(default_factory=list, description=(
        "For each group in groups_changing_top_k: what entered and left the list and what made the difference."))


class BiasCheckPublic(Public):
    passed: bool
    tolerance: float
    attributes: list[AttributeCheckPublic]


class FallbackPublic(Public):
    used: bool
    degraded: bool
    reasons: list[str]


class SuppressedPublic(Public):
    product_id: str
    policy: str
    reason: str


class DataUsePublic(Public):
    policy: str = Field(description="The data-use policy the answer was computed under (DATA_USE_POLICY).")
    posts_read: bool = Field(description="False when the customer has not consented to their posts being read.")
    note: str | None = None


class RecommendResponse(Public):
    request_id: str
    customer_id: str
    cold_start: bool
    model_version: str
    recommendations: list[RecommendedProductPublic]
    risk_profile: RiskProfilePublic
    bias_check: BiasCheckPublic
    fallback: FallbackPublic
    excluded_count: int = Field(description="Products left out by eligibility, suitability or rules.")
    suppressed: list[SuppressedPublic] = Field(default_factory=list, description="Products the contact policy held "
                                               "back (declined lately, or offered too often without a response).")
    data_use: DataUsePublic | None = None


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64)
    product_id: str = Field(min_length=1, max_length=64)
    outcome: Literal["shown", "clicked", "accepted", "declined"]


class FeedbackResponse(Public):
    request_id: str
    customer_id: str
    product_id: str
    outcome: str
    created_at: datetime


class DecisionsPage(BaseModel):
    """One page of a customer's logged decisions, newest first, each offer with its outcomes."""

    customer_id: str
    limit: int
    offset: int
    decisions: list[dict[str, Any]]


class HealthResponse(BaseModel):
    status: Literal["starting", "ready", "failed"]
    ready: bool
    model_version: str | None = None
    detail: str | None = None
    decision_log: dict[str, Any] | None = None
    workers: dict[str, int] | None = Field(default=None, description="With WORKERS > 1: workers ready and expected.")


class ProductPublic(BaseModel):
    product_id: str
    name: str
    category: str
    segment: str
    risk_level: int
    description: str
    min_age: float | None = None
    min_income: float | None = None


class CustomerViewResponse(BaseModel):
    customer_id: str
    profile: dict[str, Any]
    held_products: list[str]
    life_events: list[dict[str, Any]]
    risk_profile: RiskProfilePublic


class ErrorResponse(BaseModel):
    error: str
    detail: Any = None
    request_id: str | None = None
