"""The recommendation process of the seed, end to end, for one customer or for all of them.

Customer request → feature transformation → model prediction → business-rules adjustment →
bias check → explanation generation → final recommendation.

Start-up does everything that does not depend on the request once: load and merge the data, load
the fitted models (or train and save them when the data changed), compute every known customer's
features, text signals and risk profile, run the group fairness audit. A request then costs a few
array operations: the customer and all of their counterfactual variants are scored in one batch
of the compiled trees, and the rules run once per variant.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import joblib
import numpy as np
import pandas as pd

from bias_detector import (CounterfactualResult, IndividualBiasCheck, counterfactual_groups, group_audit,
                           individual_bias_check)
from business_rules import AdjustedProduct, CustomerContext, RuleBook, RuleEffect, RuleOutcome
from data_loader import BankData, DataLoadError, customer_view, load_bank_data, profile_text
from explanations import (Explanation, Factor, ProductContext, event_factors, explain, model_factors,
                          popularity_factor, rule_factors, suitability_factor, text_factor)
from feature_engineer import customer_signals, profile_phrase, readable_feature
from recommender import (MODEL_VERSION, CustomerBase, HybridRecommender, RiskProfile, TrainingSet,
                         build_customer_base, product_rows, risk_inputs, risk_level, risk_profile_at, risk_scores,
                         stress_evidence, train)
from settings import ProtectedAttribute, Settings
from text_models import (LIFE_EVENTS, DetectedEvent, LifeEventDetector, TextEncoder, events_by_customer,
                         get_text_encoder, model_fingerprint)

logger = logging.getLogger(__name__)

ARTIFACT_FILE = "recommender.joblib"
RECENT_EVENT_DAYS = 365
AUDIT_TOP_K = 5
CANONICAL_TABLES = ("customers", "transactions", "social_posts", "products", "holdings")


class ServiceError(RuntimeError):
    """The service cannot start: bad data, rules or configuration. The message says which."""


class UnknownCustomer(KeyError):
    """No customer with this id in the data."""


class UnknownReference(ValueError):
    """A request names something the data does not hold (like an unknown customer: a 404)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RecommendedProduct:
    product_id: str
    name: str
    category: str
    risk_level: int
    rank: int
    score: float
    adjusted_score: float
    scored_by: str
    rules: tuple[RuleEffect, ...]
    explanation: Explanation | None


@dataclass(frozen=True)
class Fallback:
    used: bool
    degraded: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Recommendation:
    customer_id: str
    cold_start: bool
    recommendations: tuple[RecommendedProduct, ...]
    risk_profile: RiskProfile
    bias_check: IndividualBiasCheck
    model_version: str
    fallback: Fallback
    excluded_count: int


@dataclass
class Artifacts:
    """What training produces and start-up reloads, tied to the data it was fitted on."""

    fingerprint: str
    model: HybridRecommender
    base: CustomerBase
    holdout: pd.DataFrame  # customer_id, product_id, recommended, took_up: for equal opportunity
    trained_at: str
    audit: dict[str, Any] = field(default_factory=dict)


@dataclass
class CustomerState:
    """One customer's inputs to scoring, from the customer base or built from a request."""

    customer_id: str
    profile: dict[str, Any]
    tabular: np.ndarray  # (F,)
    held: np.ndarray  # (P,)
    events: np.ndarray  # (E,)
    text_match: np.ndarray
    best_text_match: np.ndarray
    best_text_source: np.ndarray  # (P,) k >= 0: row k of ``posts``; -1 - k: the k-th phrase of the profile
    detected_events: list[DetectedEvent]  # newest first
    posts: "PostTexts"
    risk: dict[str, np.ndarray]
    stress: np.ndarray
    cold_start: bool


@dataclass(frozen=True)
class PostTexts:
    """Posts as plain arrays, so that quoting one in an explanation costs an index, not a pandas lookup."""

    post_id: np.ndarray
    content: np.ndarray
    timestamp: np.ndarray

    @classmethod
    def of(cls, posts: pd.DataFrame) -> "PostTexts":
        return cls(posts["post_id"].astype(str).to_numpy(), posts["content"].fillna("").astype(str).to_numpy(),
                   pd.to_datetime(posts["timestamp"]).dt.strftime("%Y-%m-%d").fillna("an unknown date").to_numpy())


@dataclass
class Variant:
    """The customer with one protected attribute set to another group's value."""

    attribute: str
    group: str
    profile: dict[str, Any]
    tabular: np.ndarray | None  # None: not a model input, the model's scores are the original's
    age: float | None  # set when the variant changes the age (risk profile and age rules)
    rules_read_it: bool  # some rule or eligibility check reads the changed field


# --------------------------------------------------------------------------------------------------
# Start-up
# --------------------------------------------------------------------------------------------------

def ensure_data(settings: Settings) -> None:
    """An empty data directory gets the embedded default: a generated synthetic bank."""
    data_dir = settings.data_dir
    if data_dir.is_dir() and any(p for p in data_dir.iterdir() if not p.name.startswith(".")):
        return
    from synthetic_data import generate_bank_data

    logger.info("data directory empty: generating the default data set",
                extra={"customers": settings.default_customers, "seed": settings.default_seed})
    generate_bank_data(data_dir, settings.default_customers, settings.default_seed,
                       catalogue_file=settings.catalogue_file)


def data_fingerprint(settings: Settings) -> str:
    """Identifies the training inputs: data files, catalogue, text model, code version, settings."""
    digest = hashlib.blake2b(digest_size=12)
    for path in sorted(p for p in settings.data_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(path.relative_to(settings.data_dir).as_posix().encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    digest.update(settings.catalogue_file.read_bytes())
    digest.update(model_fingerprint(settings.resolved_text_model_dir).encode())
    digest.update(MODEL_VERSION.encode())
    digest.update(settings.model_dump_json(include={"protected_attributes", "age_bands", "min_positives_for_model",
                                                    "training_snapshots", "min_positives_for_smote",
                                                    "training_horizon_days"}).encode())
    return digest.hexdigest()


def load_data(settings: Settings) -> BankData:
    try:
        return load_bank_data(settings.data_dir, settings.catalogue_file)
    except DataLoadError as error:
        raise ServiceError(f"cannot load the data in {settings.data_dir}: {error}") from error


def load_rules(settings: Settings, data: BankData, known_fields: Sequence[str]) -> RuleBook:
    try:
        return RuleBook.load(settings.rules_file, data.products, known_fields, known_life_events=LIFE_EVENTS)
    except ValueError as error:
        raise ServiceError(f"invalid rules file {settings.rules_file}: {error}") from error


def train_artifacts(data: BankData, settings: Settings, fingerprint: str,
                    encoder: TextEncoder | None = None) -> tuple[Artifacts, LifeEventDetector]:
    """Fits everything on the data and computes the serving state of every customer."""
    encoder = encoder or get_text_encoder(settings)
    detector = LifeEventDetector(encoder)
    end = data_end(data)
    model, training = train(data, end, settings, encoder, detector)
    base = build_customer_base(data, model.features, end, encoder, detector)
    encoder.flush()
    holdout = holdout_recommendations(model, training, AUDIT_TOP_K)
    return Artifacts(fingerprint, model, base, holdout, datetime.now(timezone.utc).isoformat(timespec="seconds")), detector


def data_end(data: BankData) -> pd.Timestamp:
    """The day after the latest dated record: what "now" is for this data set."""
    dates = [data.transactions["date"].max(), data.social_posts["timestamp"].max(), data.holdings["start_date"].max()]
    dates = [d for d in dates if pd.notna(d)]
    return (max(dates) if dates else pd.Timestamp.now()).normalize() + pd.Timedelta(days=1)


def load_or_train(data: BankData, settings: Settings) -> tuple[Artifacts, bool]:
    """Saved artifacts when they were fitted on exactly this data; otherwise train and save."""
    path = settings.models_dir / ARTIFACT_FILE
    fingerprint = data_fingerprint(settings)
    if path.is_file():
        try:
            artifacts = joblib.load(path)
            if isinstance(artifacts, Artifacts) and artifacts.fingerprint == fingerprint:
                return artifacts, False
            logger.info("saved models were fitted on other data: retraining")
        except Exception as error:  # an unreadable artifact is replaced, never half-used
            logger.warning("saved models unreadable: retraining", extra={"error": type(error).__name__})
    artifacts, _ = train_artifacts(data, settings, fingerprint)
    save_artifacts(artifacts, path)
    return artifacts, True


def save_artifacts(artifacts: Artifacts, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    joblib.dump(artifacts, temporary)
    temporary.replace(path)


def holdout_recommendations(model: HybridRecommender, training: TrainingSet, top_k: int) -> pd.DataFrame:
    """Top-k of held-out customers at the latest snapshot vs what they took up: equal-opportunity data."""
    latest = np.zeros(len(training.holdout), dtype=bool)
    latest[:training.latest_rows] = True
    rows_mask = training.holdout & latest
    scores = np.full((rows_mask.sum(), len(model.product_ids)), -1.0)
    for product in range(len(model.product_ids)):
        rows, _ = product_rows(training, model, product, np.flatnonzero(rows_mask))
        scores[:, product] = np.where(training.candidates[rows_mask, product], model.product_scores(rows, product), -1.0)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    recommended = np.zeros_like(scores, dtype=bool)
    np.put_along_axis(recommended, top, True, axis=1)
    recommended &= scores >= 0
    customer, product = np.nonzero(training.candidates[rows_mask])
    return pd.DataFrame({"customer_id": training.signals.customer_ids[rows_mask][customer],
                         "product_id": np.asarray(model.product_ids)[product],
                         "recommended": recommended[customer, product],
                         "took_up": training.labels[rows_mask][customer, product]})


# --------------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------------

class RecommendationService:
    """Answers recommendation requests from the state computed at start-up."""

    def __init__(self, settings: Settings, data: BankData, rules: RuleBook, artifacts: Artifacts):
        self.settings = settings
        self.data = data
        self.rules = rules
        self.artifacts = artifacts
        self.model = artifacts.model
        self.base = artifacts.base
        self.products = data.products.reset_index(drop=True)
        self.product_ids: list[str] = self.products["product_id"].tolist()
        self._product_index = {p: i for i, p in enumerate(self.product_ids)}
        self._product_records = self.products.astype(object).where(self.products.notna(), None).to_dict("records")
        self._row_of = {str(c): i for i, c in enumerate(self.base.view.index)}
        self._view_columns = _object_columns(self.base.view)
        self._events_by_customer = events_by_customer(self.base.signals.event_posts)
        self._posts = PostTexts.of(self.base.posts)
        self._observed = {a.name: self._observed_groups(a) for a in settings.protected_attributes}
        self._text_lock = threading.Lock()
        self._detector: LifeEventDetector | None = None
        self._audit_lock = threading.Lock()

    @classmethod
    def start(cls, settings: Settings) -> "RecommendationService":
        started = time.perf_counter()
        ensure_data(settings)
        data = load_data(settings)
        rules = load_rules(settings, data, list(customer_view(data).columns))
        artifacts, trained = load_or_train(data, settings)
        service = cls(settings, data, rules, artifacts)
        if not artifacts.audit:
            artifacts.audit = service.run_audit()
            save_artifacts(artifacts, settings.models_dir / ARTIFACT_FILE)
        logger.info("service ready", extra={"seconds": round(time.perf_counter() - started, 2), "trained": trained,
                                            "customers": len(service.base.view)})
        return service

    def knows(self, customer_id: str) -> bool:
        return customer_id in self._row_of

    # ---------------------------------------------------------------- one customer

    def recommend(self, customer_id: str, top_k: int, include_explanation: bool = True) -> Recommendation:
        row = self._row_of.get(customer_id)
        if row is None:
            raise UnknownCustomer(customer_id)
        return self._recommend(self._known_state(row), top_k, include_explanation)

    def recommend_for_profile(self, customer_id: str, profile: Mapping[str, Any], held_products: Sequence[str],
                              posts: Sequence[str], top_k: int, include_explanation: bool = True) -> Recommendation:
        """Cold start: a customer the data does not know, scored from a profile and their words."""
        return self._recommend(self._cold_state(customer_id, profile, held_products, posts), top_k, include_explanation)

    def _recommend(self, state: CustomerState, top_k: int, include_explanation: bool) -> Recommendation:
        variants = self._variants(state)
        tensor = self.model.design.customer_tensor(
            np.stack([state.tabular] + [v.tabular for v in variants if v.tabular is not None]),
            state.held, state.events, state.text_match, state.best_text_match)
        reasons: list[str] = []
        try:
            probabilities = self.model.probabilities(tensor)
            degraded = False
        except Exception as error:  # the answer degrades to popularity, and says so
            logger.exception("model scoring failed; answering from popularity")
            probabilities = np.tile(self.model.prior, (tensor.shape[0], 1))
            degraded = True
            reasons.append(f"degraded: the model could not score ({type(error).__name__}); popularity and rules only")
        risk = risk_profile_at(state.risk, state.stress, 0)
        recent_events = self._recent_events(state)
        outcome = self.rules.apply(self._context(state, state.profile, risk.level, risk.score, recent_events),
                                   dict(zip(self.product_ids, probabilities[0].tolist())), top_k)
        counterfactuals = self._counterfactual_results(state, variants, probabilities, outcome, recent_events, top_k)
        bias = individual_bias_check(
            outcome.adjusted, [p.product_id for p in outcome.ranked],
            {a.name: _group_of(state.profile, a) for a in self.settings.protected_attributes},
            counterfactuals, self.settings.bias_tolerance)
        explanations = (self._explanations(state, tensor[0], outcome.ranked, risk)
                        if include_explanation and not degraded else [None] * len(outcome.ranked))
        recommended = tuple(self._recommended(rank, item, explanation) for rank, (item, explanation)
                            in enumerate(zip(outcome.ranked, explanations), start=1))
        reasons += self._fallback_reasons(state, recommended)
        return Recommendation(state.customer_id, state.cold_start, recommended, risk, bias, self.model.version,
                              Fallback(bool(reasons), degraded, tuple(reasons)), len(outcome.excluded))

    def _context(self, state: CustomerState, profile: Mapping[str, Any], risk_level: str, risk_score: float,
                 life_events: frozenset[str]) -> CustomerContext:
        held = frozenset(self.product_ids[i] for i in np.flatnonzero(state.held))
        return CustomerContext(profile, risk_level, risk_score, life_events, held)

    def _recent_events(self, state: CustomerState) -> frozenset[str]:
        since = self.base.as_of - pd.Timedelta(days=RECENT_EVENT_DAYS)
        return frozenset(e.event for e in state.detected_events if e.timestamp >= since)

    # ---------------------------------------------------------------- counterfactuals

    def _variants(self, state: CustomerState) -> list[Variant]:
        """The customer with each protected attribute set to each other group's value."""
        variants = []
        for attribute in self.settings.protected_attributes:
            original = _group_of(state.profile, attribute)
            changes_age = attribute.column == "age_band"
            rules_read_it = self.rules.reads(f"customer.{attribute.column}") or (
                changes_age and self.rules.reads("customer.age"))
            patch = self.model.features.patches_.get(attribute.name, {})
            for group in counterfactual_groups(attribute, self._observed[attribute.name], original):
                profile = dict(state.profile)
                profile[attribute.column] = group
                age = None
                if changes_age:
                    age = self.settings.band_age(group)
                    profile["age"] = age
                tabular = None
                if group in patch:
                    tabular = state.tabular.copy()
                    tabular[patch[group][0]] = patch[group][1]
                variants.append(Variant(attribute.name, group, profile, tabular, age, rules_read_it or changes_age))
        return variants

    def _counterfactual_results(self, state: CustomerState, variants: Sequence[Variant], probabilities: np.ndarray,
                                outcome: RuleOutcome, recent_events: frozenset[str],
                                top_k: int) -> list[CounterfactualResult]:
        """Each variant through the model and the rules; rules are re-run only where they could differ."""
        ages = [v.age for v in variants if v.age is not None]
        risk_of_age = dict(zip(ages, self._risk_levels_for_ages(state, ages)))
        results, row = [], 0
        for variant in variants:
            scored_row = 0
            if variant.tabular is not None:
                row += 1
                scored_row = row
            scores = dict(zip(self.product_ids, probabilities[scored_row].tolist()))
            if variant.rules_read_it:
                level, score = risk_of_age[variant.age] if variant.age is not None else self._original_risk(state)
                varied = self.rules.apply(self._context(state, variant.profile, level, score, recent_events),
                                          scores, top_k)
            elif variant.tabular is not None:
                varied = self.rules.rescore(outcome, scores, top_k)
            else:
                varied = outcome  # neither the model nor the rules see this attribute
            results.append(CounterfactualResult(variant.attribute, variant.group, varied.adjusted,
                                                [p.product_id for p in varied.ranked]))
        return results

    def _original_risk(self, state: CustomerState) -> tuple[str, float]:
        score, _, _ = risk_scores(state.risk, state.stress)
        return risk_level(float(score[0])), float(score[0])

    def _risk_levels_for_ages(self, state: CustomerState, ages: Sequence[float]) -> list[tuple[str, float]]:
        """Risk level and score of the customer at each counterfactual age, in one vectorised pass."""
        if not ages:
            return []
        inputs = {k: np.repeat(v, len(ages)) for k, v in state.risk.items()}
        inputs["age"] = np.asarray(ages, dtype=float)
        scores, _, _ = risk_scores(inputs, np.repeat(state.stress, len(ages)))
        return [(risk_level(float(s)), float(s)) for s in scores]

    # ---------------------------------------------------------------- explanations

    def _explanations(self, state: CustomerState, design: np.ndarray, ranked: Sequence[AdjustedProduct],
                      risk: RiskProfile) -> list[Explanation]:
        """Explanations of the final list; the model's contributions for all of it in one pass."""
        indices = [self._product_index[item.product_id] for item in ranked]
        forest = self.model.forest
        modelled = [i for i in indices if forest is not None and forest.has_model[i]]
        contributions = dict(zip(modelled, forest.contributions(design, modelled))) if modelled else {}
        raw_values = {readable_feature(column): value for column, value in state.profile.items()}
        max_risk = self.rules.max_risk_level(risk.level)
        return [self._explain(state, index, item, risk, max_risk, design, contributions.get(index), raw_values)
                for index, item in zip(indices, ranked)]

    def _explain(self, state: CustomerState, index: int, item: AdjustedProduct, risk: RiskProfile, max_risk: int,
                 design: np.ndarray, contributions: np.ndarray | None, raw_values: dict[str, Any]) -> Explanation:
        feature_names = self.model.design.feature_names
        has_model = contributions is not None
        if not has_model:
            contributions = np.zeros(len(feature_names))
        factors: list[Factor] = []
        factors += event_factors(self.model.design.event_weights(contributions, state.events, index),
                                 state.detected_events, item.effects)
        text, source = self._best_text(state, index)
        factors += text_factor(float(state.best_text_match[index]), text, source, float(contributions[-2:].sum()))
        factors += model_factors(contributions, feature_names, design[index], raw_values)
        if not has_model:
            factors.append(popularity_factor(float(self.model.prior[index])))
        factors += rule_factors(item.effects)
        product = self._product_records[index]
        context = ProductContext(str(product["name"]), int(product["risk_level"]), max_risk, risk.level,
                                 item.model_score)
        factors.append(suitability_factor(context))
        return explain(context, factors)

    def _best_text(self, state: CustomerState, index: int) -> tuple[str | None, str]:
        source = int(state.best_text_source[index])
        if source < 0:
            phrase = profile_phrase(state.profile.get("profile_text"), -1 - source)
            return phrase, "your profile (interests, preferences, needs)"
        posts = state.posts
        return str(posts.content[source]), f"post {posts.post_id[source]} on {posts.timestamp[source]}"

    def _recommended(self, rank: int, item: AdjustedProduct, explanation: Explanation | None) -> RecommendedProduct:
        index = self._product_index[item.product_id]
        product = self._product_records[index]
        return RecommendedProduct(item.product_id, str(product["name"]), str(product["category"]),
                                  int(product["risk_level"]), rank, round(item.model_score, 5),
                                  round(item.adjusted_score, 5), self.model.reports[index].strategy,
                                  tuple(item.effects), explanation)

    def _fallback_reasons(self, state: CustomerState, recommended: Sequence[RecommendedProduct]) -> list[str]:
        reasons = []
        if state.cold_start:
            reasons.append("cold start: no history for this customer; scored from the profile and their own words")
        for item in recommended:
            if item.scored_by == "content_prior":
                report = self.model.reports[self._product_index[item.product_id]]
                why = (f"too few take-ups to learn from ({report.positives})"
                       if report.positives < self.settings.min_positives_for_model
                       else f"its trees did not beat the fallback on held-out customers (AUC {report.content_auc})")
                reasons.append(f"{item.product_id}: {why}; scored by text match times popularity")
        return reasons

    # ---------------------------------------------------------------- customer state

    def _known_state(self, row: int) -> CustomerState:
        base = self.base
        signals = base.signals
        customer_id = str(base.view.index[row])
        profile = {column: values[row] for column, values in self._view_columns}
        profile["customer_id"] = customer_id
        return CustomerState(
            customer_id, profile, base.tabular[row], signals.held[row], signals.events[row],
            signals.text_match[row], signals.best_text_match[row], signals.best_text_source[row],
            self._events_by_customer.get(customer_id, []), self._posts,
            {k: v[row:row + 1] for k, v in base.risk.items()}, base.stress[row:row + 1], False)

    def _cold_state(self, customer_id: str, profile: Mapping[str, Any], held_products: Sequence[str],
                    posts: Sequence[str]) -> CustomerState:
        detector = self.text_models()
        unknown = [p for p in held_products if p not in self._product_index]
        if unknown:
            raise UnknownReference("profile.held_products", f"unknown products: {', '.join(map(repr, unknown))}")
        view = self._cold_view(customer_id, profile)
        now = self.base.as_of
        post_frame = pd.DataFrame({"post_id": [f"request-{i + 1}" for i in range(len(posts))],
                                   "customer_id": customer_id, "content": list(posts),
                                   "timestamp": [now - pd.Timedelta(days=1)] * len(posts)})
        holdings = pd.DataFrame({"customer_id": customer_id, "product_id": list(held_products), "start_date": pd.NaT})
        with self._text_lock:
            signals = customer_signals(view, post_frame, holdings, self.products, now, detector.encoder, detector)
        record = {column: values[0] for column, values in _object_columns(view)}
        record["customer_id"] = customer_id
        return CustomerState(customer_id, record, self.model.features.transform(view)[0], signals.held[0],
                             signals.events[0], signals.text_match[0], signals.best_text_match[0],
                             signals.best_text_source[0], events_by_customer(signals.event_posts).get(customer_id, []),
                             PostTexts.of(post_frame), risk_inputs(view), stress_evidence(signals, detector.events),
                             True)

    def _cold_view(self, customer_id: str, profile: Mapping[str, Any]) -> pd.DataFrame:
        """A one-row customer view from a request's profile: no history, so counts are zero."""
        record: dict[str, Any] = {column: np.nan for column in self.base.view.columns}
        record.update({k: v for k, v in profile.items() if v is not None})
        record["age_band"] = self.settings.age_band(record.get("age"))
        record["profile_text"] = profile_text(pd.DataFrame([record])).iloc[0]
        for column in self.base.view.columns:
            if column.endswith("_count"):
                record[column] = 0
        view = pd.DataFrame([record], index=pd.Index([customer_id], name="customer_id"))
        for column in view.columns:
            if column in self.base.view.columns and pd.api.types.is_numeric_dtype(self.base.view[column]):
                view[column] = pd.to_numeric(view[column], errors="coerce")
        return view

    def text_models(self) -> LifeEventDetector:
        """The text models, loaded on first need (warm start-up does not wait for them)."""
        with self._text_lock:
            if self._detector is None:
                self._detector = LifeEventDetector(get_text_encoder(self.settings))
            return self._detector

    # ---------------------------------------------------------------- analysts

    def customer_view(self, customer_id: str) -> dict[str, Any]:
        row = self._row_of.get(customer_id)
        if row is None:
            raise UnknownCustomer(customer_id)
        state = self._known_state(row)
        return {"customer_id": customer_id, "profile": state.profile,
                "held_products": [self.product_ids[i] for i in np.flatnonzero(state.held)],
                "life_events": [{**e._asdict(), "timestamp": e.timestamp.date().isoformat()}
                                for e in state.detected_events],
                "risk_profile": risk_profile_at(state.risk, state.stress, 0)}

    def run_audit(self) -> dict[str, Any]:
        """The AIF360 group audit of the current recommendations, holdings and held-out take-ups."""
        with self._audit_lock:
            recommended = self.batch_recommendations(AUDIT_TOP_K)
            view = self.base.view
            protected = pd.DataFrame({a.column: view[a.column] for a in self.settings.protected_attributes},
                                     index=view.index)
            protected["customer_type"] = view["customer_type"]
            audit = group_audit(recommended, self.data.holdings[["customer_id", "product_id"]], protected,
                                self.settings.protected_attributes, self.products, self.artifacts.holdout,
                                self.settings.fairness_band, self.settings.min_group_size)
            self.artifacts.audit = audit.to_dict()
            return self.artifacts.audit

    def batch_recommendations(self, top_k: int, rows: np.ndarray | None = None,
                              popularity: bool = False) -> pd.DataFrame:
        """Top-k of known customers (default: all) after the business rules.

        ``popularity`` is the evaluation's baseline instead: the most popular products each
        customer is eligible for and does not hold, with no model and no boosts.
        """
        rows = np.arange(len(self.base.view)) if rows is None else np.asarray(rows)
        scores = None if popularity else self.all_scores(rows)
        popular_first = [self.product_ids[i] for i in np.argsort(-self.model.prior, kind="stable")]
        ranked = []
        for position, row in enumerate(rows):
            state = self._known_state(int(row))
            level, score = self._original_risk(state)
            context = self._context(state, state.profile, level, score, self._recent_events(state))
            if popularity:
                eligible = self.rules.eligible(context)
                chosen = [p for p in popular_first if p in eligible][:top_k]
            else:
                outcome = self.rules.apply(context, dict(zip(self.product_ids, scores[position].tolist())), top_k)
                chosen = [p.product_id for p in outcome.ranked]
            ranked += [(state.customer_id, product, rank) for rank, product in enumerate(chosen, start=1)]
        return pd.DataFrame(ranked, columns=["customer_id", "product_id", "rank"])

    def all_scores(self, rows: np.ndarray) -> np.ndarray:
        """Calibrated scores of the customers at ``rows`` for every product, product by product."""
        base, model = self.base, self.model
        signals = base.signals
        scores = np.zeros((len(rows), len(self.product_ids)))
        for product in range(len(self.product_ids)):
            held = signals.held[rows].copy()
            held[:, product] = 0.0
            design = model.design.rows(base.tabular[rows], held, signals.events[rows], signals.text_match[rows],
                                       signals.best_text_match[rows], product)
            scores[:, product] = model.product_scores(design, product)
        return scores

    def model_card(self) -> dict[str, Any]:
        model = self.model
        reports = [vars(r) for r in model.reports]
        aucs = [r.auc for r in model.reports if r.auc is not None]
        return {
            "model_version": model.version, "trained_at": self.artifacts.trained_at,
            "data_fingerprint": self.artifacts.fingerprint, "label_scheme": model.label_scheme,
            "training_seconds": model.training_seconds, "tree_depth": model.tree_depth,
            "as_of": self.base.as_of.date().isoformat(),
            "customers": int(len(self.base.view)), "products": len(self.product_ids),
            "offline_metrics": {"mean_holdout_auc": round(float(np.mean(aucs)), 4) if aucs else None,
                                "per_product": reports},
            "fallbacks_in_force": [r.product_id for r in model.reports if r.strategy == "content_prior"],
            "data_quality": self.data.quality.to_dict(),
        }

    def _observed_groups(self, attribute: ProtectedAttribute) -> list[str]:
        if attribute.column == "age_band":
            return self.settings.age_band_labels
        column = self.base.view.get(attribute.column)
        return [] if column is None else [str(v) for v in column.value_counts().index]


def _object_columns(view: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """The view's columns as object arrays with None for missing: a customer's record in one index per column."""
    return [(column, view[column].astype(object).where(view[column].notna(), None).to_numpy())
            for column in view.columns]


def _group_of(profile: Mapping[str, Any], attribute: ProtectedAttribute) -> str | None:
    value = profile.get(attribute.column)
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
