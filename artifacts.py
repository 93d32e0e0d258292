"""Start-up and persistence: the data a service answers from and the fitted state it serves.

Start-up does everything that does not depend on a request once: make sure there is data (an
empty data directory gets the embedded synthetic bank), load and validate it and the rules, then
reload the fitted models when they were fitted on exactly these inputs (the fingerprint says so)
or train and save them. Training also scores held-out customers, for the equal-opportunity part of
the fairness audit.
"""
from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import joblib
import numpy as np
import pandas as pd
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from business_rules import MitigationPair, RuleBook
from data_loader import BankData, DataLoadError, customer_view, data_now, load_bank_data
from data_use import DataUsePolicy, DataUsePolicyError, policy_file_digest, policy_in_force
from decision_store import DecisionStore, FinalOutcome, migrate
from feature_engineer import CustomerInputs
from recommender import (MODEL_VERSION, CustomerBase, HybridRecommender, ProductStep, StepResult, TrainingSet,
                         build_customer_base, train)
from settings import Settings
from text_models import LIFE_EVENTS, LifeEventDetector, PostAnalysis, get_text_encoder, model_fingerprint

if TYPE_CHECKING:
    from bias_detector import ExposureMitigation

logger = logging.getLogger(__name__)

ARTIFACT_FILE = "recommender.joblib"
AUDIT_TOP_K = 5
FINGERPRINTED_SETTINGS = {"protected_attributes", "age_bands", "min_positives_for_model", "training_snapshots",
                          "min_positives_for_smote", "training_horizon_days", "social_data_default_consent"}


class ServiceError(RuntimeError):
    """The service cannot start: bad data, rules or configuration. The message says which."""


@dataclass
class Artifacts:
    """What training produces and start-up reloads, tied to the data it was fitted on."""

    fingerprint: str
    model: HybridRecommender
    base: CustomerBase
    holdout: pd.DataFrame  # customer_id, product_id, recommended, took_up: for equal opportunity
    trained_at: str
    audit: dict[str, Any] = field(default_factory=dict)
    trained_on_feedback: dict[str, int] = field(default_factory=dict)  # accepted and declined offers learned from
    mitigation: tuple[ExposureMitigation, ...] = ()
    """The boosts the audit calibrated for the rules file's ``fairness_mitigation`` pairs, put in force
    at start-up (a class default, so artifacts saved before mitigation existed load with none)."""

    def mitigated_pairs(self) -> frozenset[MitigationPair]:
        return frozenset(m.pair for m in self.mitigation)


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
    digest.update(policy_file_digest(settings.data_use_policy_file))
    digest.update(model_fingerprint(settings.resolved_text_model_dir).encode())
    digest.update(MODEL_VERSION.encode())
    digest.update(settings.model_dump_json(include=FINGERPRINTED_SETTINGS).encode())
    return digest.hexdigest()


def load_data(settings: Settings, log_report: bool = True) -> BankData:
    try:
        return load_bank_data(settings.data_dir, settings, get_text_encoder(settings), log_report)
    except DataLoadError as error:
        raise ServiceError(f"cannot load the data in {settings.data_dir}: {error}") from error


def load_rules(settings: Settings, data: BankData) -> RuleBook:
    """The rules file, checked against this data's catalogue and customer fields."""
    known_fields = list(customer_view(data).columns)
    try:
        return RuleBook.load(settings.rules_file, data.products, known_fields, known_life_events=LIFE_EVENTS,
                             skip_absent_targets=settings.rules_file_is_default,
                             protected_attributes={a.name: a.column for a in settings.protected_attributes})
    except ValueError as error:
        raise ServiceError(f"invalid rules file {settings.rules_file}: {error}") from error


def check_data_use_policy(settings: Settings, data: BankData) -> DataUsePolicy:
    """The data-use policy, validated against this data's catalogue before anything is served or trained."""
    try:
        return policy_in_force(settings, data.products)
    except DataUsePolicyError as error:
        raise ServiceError(f"invalid data-use policy (DATA_USE_POLICY={settings.data_use_policy}): {error}") from error


class TrainingEngine(Protocol):
    """Where training's parallel parts run: the per-product fits and the BERT pass over the posts
    (``ray_engine.RayTraining``). Without one, both run here, one after another."""

    def fit_products(self, step: ProductStep[StepResult], training: TrainingSet, model: HybridRecommender
                     ) -> list[StepResult]: ...

    def analyse_texts(self, texts: Sequence[str], here: Callable[[Sequence[str]], list[PostAnalysis]]
                      ) -> list[PostAnalysis]: ...


def train_artifacts(data: BankData, settings: Settings, fingerprint: str,
                    engine: TrainingEngine | None = None) -> Artifacts:
    """Fits everything on the data and computes the serving state of every customer; ``engine``
    runs the per-product fits and the posts' text analysis (default: here, one after another)."""
    encoder = get_text_encoder(settings)
    detector = LifeEventDetector(encoder, engine.analyse_texts if engine else None)
    end = data_now(data)
    outcomes = logged_outcomes(settings)
    model, training = train(data, end, settings, encoder, detector, outcomes=outcomes,
                            fit_products=engine.fit_products if engine else None)
    base = build_customer_base(data, model, end, encoder, detector)
    encoder.flush()
    holdout = holdout_recommendations(model, training, AUDIT_TOP_K)
    trained_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    learned = Counter(outcome.outcome for outcome in outcomes)
    return Artifacts(fingerprint, model, base, holdout, trained_at,
                     trained_on_feedback={"accepted": learned["accepted"], "declined": learned["declined"]})


def logged_outcomes(settings: Settings) -> list[FinalOutcome]:
    """The offers customers accepted or declined, from the decision log: training learns from them.
    None when nothing can have been logged (``DECISION_LOG=off``, or no SQLite file yet: reading
    must not create one); a configured database that cannot be read stops training, saying why."""
    url = settings.resolved_database_url
    parsed = make_url(url)
    if settings.decision_log == "off" or (parsed.get_backend_name() == "sqlite" and not Path(parsed.database).is_file()):
        return []
    try:
        migrate(url)
        store = DecisionStore(url)
        try:
            return store.final_outcomes()
        finally:
            store.close()
    except SQLAlchemyError as error:
        raise ServiceError(f"cannot read the customers' answers from the decision log: {type(error).__name__}: "
                           f"{str(error).splitlines()[0]}") from error


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
    artifacts = train_artifacts(data, settings, fingerprint)
    save_artifacts(artifacts, path)
    return artifacts, True


def saved_artifacts(settings: Settings) -> Artifacts:
    """The saved models as they are, whatever data they were fitted on: a batch run over a bank too
    large to train on (``cli.py score --shards``) scores it with models fitted on a sample of it."""
    path = settings.models_dir / ARTIFACT_FILE
    if not path.is_file():
        raise ServiceError(f"no saved models in {settings.models_dir}: train them first, on the bank or on a sample "
                           f"of it (cli.py train --data SAMPLE_DIR, with MODELS_DIR={settings.models_dir})")
    try:
        artifacts = joblib.load(path)
    except Exception as error:
        raise ServiceError(f"{path} cannot be read: {type(error).__name__}: {error}") from error
    if not isinstance(artifacts, Artifacts):
        raise ServiceError(f"{path} holds no fitted models of this service")
    return artifacts


def save_artifacts(artifacts: Artifacts, path: Path) -> None:
    """Written beside and renamed into place: a crash mid-write never leaves half an artifact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    joblib.dump(artifacts, temporary)
    temporary.replace(path)


def holdout_recommendations(model: HybridRecommender, training: TrainingSet, top_k: int) -> pd.DataFrame:
    """Top-k of held-out customers at the latest snapshot vs what they took up: equal-opportunity data."""
    latest = np.zeros(len(training.holdout), dtype=bool)
    latest[:training.latest_rows] = True
    rows_mask = training.holdout & latest
    inputs = CustomerInputs.of(training.tabular, training.signals, np.flatnonzero(rows_mask))
    scores = np.full((rows_mask.sum(), len(model.product_ids_)), -1.0)
    for product in range(len(model.product_ids_)):
        scores[:, product] = np.where(training.candidates[rows_mask, product], model.score(inputs, [product])[:, 0], -1.0)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    recommended = np.zeros_like(scores, dtype=bool)
    np.put_along_axis(recommended, top, True, axis=1)
    recommended &= scores >= 0
    customer, product = np.nonzero(training.candidates[rows_mask])
    return pd.DataFrame({"customer_id": training.signals.customer_ids[rows_mask][customer],
                         "product_id": np.asarray(model.product_ids_)[product],
                         "recommended": recommended[customer, product],
                         "took_up": training.labels[rows_mask][customer, product]})
