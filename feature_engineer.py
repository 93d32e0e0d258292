"""Feature engineering: the same transformation of a customer at training and at serving time.

Three kinds of features describe a customer, and a fourth describes the customer *for a product*:

- tabular: the unified view's numbers and categories through a scikit-learn ``ColumnTransformer``
  (impute + scale; impute + one-hot that tolerates unseen values), fitted once and persisted;
- holdings: which products the customer already has (cross-selling is the strongest signal);
- life events: per event, the strongest recency-weighted evidence in the customer's posts and in
  the new kinds of spending their transactions show;
- text match (per product): how close the customer's own words are to the product description,
  as a recency-weighted average and as the single best-matching text.

Protected attributes that are not model inputs (gender by default) never enter the tabular part.
For the individual bias check, :meth:`CustomerFeatures.counterfactual_patch` gives the exact encoded
columns of a protected attribute set to another group, so a counterfactual costs an array copy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from data_loader import PRODUCT_PAYMENT_PATTERN, stated_risk_conflicts
from data_use import TEXT_SOURCES, DataUsePolicy, SignalView
from settings import ProtectedAttribute, Settings, band_labels
from text_models import DETECTED_COLUMNS, LifeEventDetector, TextEncoder, events_possible

RECENCY_HALF_LIFE_DAYS = 120.0
RECENT_POST_DAYS = 180  # the posts that speak for what a customer needs now
PROFILE_TEXT_WEIGHT = 1.0
PROFILE_FIELD_BREAK = re.compile(r"\.\s+(?=[A-Za-z ]{1,40}:)")  # between "Label: ..." fields (data_loader.profile_text)
PROFILE_FIELD_LABEL = re.compile(r"^\s*[A-Za-z ]{1,40}:\s*")
PROFILE_ITEM_BREAK = re.compile(r"\s*[,;]\s*")
CATEGORICAL_COLUMNS = ("customer_type", "education", "occupation", "industry", "location")
NOT_FEATURES = ("customer_id", "age_band", "revenue_min", "revenue_max", "employees_min", "employees_max")
MIN_CATEGORY_FREQUENCY = 5
SPEND_SHARE = "spend_share__"
TRANSACTION_COLUMNS = ("tx_", SPEND_SHARE, "debt_payment_share")  # data_loader.transaction_aggregates
POST_COLUMNS = ("post_", "sentiment_")  # data_loader.social_aggregates
EVENT_SOURCES = ("posts", "spending")  # the axis of the signals' event evidence
FAMILY_OF_SOURCE = {"profile": "profile", "transactions": "transactions", "posts": "social_posts"}

FeatureKind = Literal["numeric", "category", "holding", "life_event", "event_need", "text_match"]
FeatureSource = Literal["profile", "transactions", "posts", "holdings", "posts and transactions",
                        "posts and profile"]


@dataclass(frozen=True)
class FeatureSpec:
    """What one model input is and where it comes from, decided once when the design is fitted.

    Explanations read a feature through this, never from its name: whether it is a number of the
    view (``column``, compared with the ``typical`` training median), one category of a view
    column (``category``; None for the bucket of rare values), a product held (``column`` is the
    product's name), a life event (``column`` is the event) or a text match.
    """

    name: str
    kind: FeatureKind
    source: FeatureSource
    column: str | None = None
    category: str | None = None
    typical: float | None = None
    typical_by_type: tuple[tuple[str, float], ...] | None = None  # numeric: the median of each customer type

    def typical_for(self, customer_type: object) -> float | None:
        """The typical value among customers of the same type: an organization's revenue is set
        against organizations', not against the income of the households that make up most of a
        bank. The median of all customers when the type is unknown or had no values."""
        return dict(self.typical_by_type or ()).get(str(customer_type), self.typical)

    def name_for(self, customer_type: object) -> str:
        """The feature in the words of a customer of this type (an organization's income is its revenue)."""
        return FEATURE_WORDS_BY_TYPE.get(str(customer_type), {}).get(self.column or "", self.name)


def column_source(column: str) -> FeatureSource:
    """Which data a view column is computed from (its name is the loader's contract)."""
    if column.startswith(TRANSACTION_COLUMNS):
        return "transactions"
    return "posts" if column.startswith(POST_COLUMNS) else "profile"


def feature_columns(view: pd.DataFrame, protected: Sequence[ProtectedAttribute]) -> tuple[list[str], list[str]]:
    """The view's numeric and categorical columns that the model may use.

    Protected attributes marked as not model inputs are left out here, the one place that decides.
    """
    excluded = set(NOT_FEATURES) | {a.column for a in protected if not a.is_model_input}
    categorical = [c for c in CATEGORICAL_COLUMNS if c in view.columns and c not in excluded]
    numeric = [c for c in view.columns
               if c not in excluded and c not in categorical and pd.api.types.is_numeric_dtype(view[c])
               and not pd.api.types.is_bool_dtype(view[c])]
    return numeric, categorical


class CustomerFeatures(BaseEstimator, TransformerMixin):
    """The tabular features of the unified customer view (a fitted ``ColumnTransformer``)."""

    def __init__(self, protected: Sequence[ProtectedAttribute] = (), age_bands: Sequence[int] = (18, 30, 45, 60)):
        self.protected = protected
        self.age_bands = age_bands

    def fit(self, view: pd.DataFrame, y=None) -> "CustomerFeatures":
        numeric, categorical = feature_columns(view, self.protected)
        numeric = [c for c in numeric if view[c].notna().any()]
        self.numeric_columns_ = numeric
        self.categorical_columns_ = categorical
        self.transformer_ = ColumnTransformer([
            ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            ("cat", Pipeline([
                ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=MIN_CATEGORY_FREQUENCY,
                                         sparse_output=False)),
            ]), categorical),
        ], verbose_feature_names_out=True)
        self.transformer_.fit(self._as_input(view))
        self.feature_specs_ = self._feature_specs(view)
        self.feature_names_ = [spec.name for spec in self.feature_specs_]
        self.patches_ = self._counterfactual_patches(view)
        return self

    @property
    def spend_categories(self) -> list[str]:
        """The categories whose share of spending the model reads: the view of the customers it
        scores gives exactly these, whichever are the most frequent among them."""
        return [column.removeprefix(SPEND_SHARE) for column in self.numeric_columns_ if column.startswith(SPEND_SHARE)]

    def transform(self, view: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "transformer_")
        return np.asarray(self.transformer_.transform(self._as_input(view)), dtype=np.float32)

    def counterfactual_patch(self, attribute: str, group: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(column indices, values) that set a protected attribute to a group; None if not an input."""
        check_is_fitted(self, "patches_")
        return self.patches_.get(attribute, {}).get(group)

    def _as_input(self, view: pd.DataFrame) -> pd.DataFrame:
        frame = view.reindex(columns=self.numeric_columns_ + self.categorical_columns_)
        frame[self.numeric_columns_] = frame[self.numeric_columns_].apply(pd.to_numeric, errors="coerce")
        for column in self.categorical_columns_:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), np.nan)
        return frame

    def _counterfactual_patches(self, view: pd.DataFrame) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Encoded columns of each protected model input for each of its groups, computed once.

        Every transformer here works column by column, so replacing those columns is exactly what
        transforming the changed customer would give.
        """
        patches: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        names = list(self.transformer_.get_feature_names_out())
        template = view.iloc[:1].copy()
        for attribute in self.protected:
            if not attribute.is_model_input:
                continue
            source = "age" if attribute.column == "age_band" else attribute.column
            if source not in self.numeric_columns_ + self.categorical_columns_:
                continue
            columns = np.array([i for i, n in enumerate(names)
                                if n == f"num__{source}" or n.startswith(f"cat__{source}_")])
            groups = self._group_values(attribute, view)
            patches[attribute.name] = {}
            for group, value in groups.items():
                changed = template.copy()
                changed[source] = value
                patches[attribute.name][group] = (columns, self.transform(changed)[0, columns])
        return patches

    def _group_values(self, attribute: ProtectedAttribute, view: pd.DataFrame) -> dict[str, object]:
        """Each group's value of the underlying column (an age band stands for its middle age)."""
        if attribute.column != "age_band":
            return {str(v): v for v in view[attribute.column].dropna().unique()}
        return {band: Settings.band_age(band) for band in band_labels(list(self.age_bands))}

    def _feature_specs(self, view: pd.DataFrame) -> tuple[FeatureSpec, ...]:
        """One spec per encoded column, in the transformer's output order: the numbers (with their
        training median, the imputer's, and each customer type's), then each categorical column's
        frequent values and, where some values were too rare to get a column of their own, the
        column that groups them."""
        medians = self.transformer_.named_transformers_["num"].named_steps["impute"].statistics_
        by_type = _medians_by_type(view, self.numeric_columns_)
        specs = [FeatureSpec(readable_feature(column), "numeric", column_source(column), column, None, float(median),
                             by_type.get(column))
                 for column, median in zip(self.numeric_columns_, medians)]
        encoded = [f"num__{column}" for column in self.numeric_columns_]
        encoder = self.transformer_.named_transformers_["cat"].named_steps["onehot"]
        infrequent = getattr(encoder, "infrequent_categories_", [None] * len(encoder.categories_))
        for column, categories, rare in zip(self.categorical_columns_, encoder.categories_, infrequent):
            rare = [] if rare is None else list(rare)
            words = column.replace("_", " ")
            frequent = [value for value in categories if value not in rare]
            specs += [FeatureSpec(f"{words} = {value}", "category", "profile", column, str(value)) for value in frequent]
            encoded += [f"cat__{column}_{value}" for value in frequent]
            if rare:
                specs.append(FeatureSpec(f"{words} = another, less common value", "category", "profile", column))
                encoded.append(f"cat__{column}_infrequent_sklearn")
        if encoded != list(self.transformer_.get_feature_names_out()):
            raise RuntimeError("feature specs are out of step with the fitted transformer's columns")
        return tuple(specs)


def _medians_by_type(view: pd.DataFrame, columns: Sequence[str]) -> dict[str, tuple[tuple[str, float], ...]]:
    """Each numeric column's median per customer type (types without a value left out)."""
    if "customer_type" not in view or not columns:
        return {}
    medians = view.groupby(view["customer_type"].astype(str))[list(columns)].median()
    return {column: tuple((kind, float(value)) for kind, value in medians[column].items() if pd.notna(value))
            for column in columns}


FEATURE_WORDS = {
    "tx_count": "number of transactions", "tx_total": "total spending", "tx_mean_amount": "average transaction",
    "tx_monthly_mean": "average monthly spending", "tx_monthly_volatility": "month-to-month swings in spending",
    "tx_recency_days": "days since the last transaction", "tx_tenure_days": "days since the first transaction",
    "tx_trend": "recent change in spending", "debt_payment_share": "share of spending on debt repayments",
    "post_count": "number of posts", "sentiment_mean": "average mood of the posts",
    "sentiment_min": "mood of the most negative post", "sentiment_recent_trend": "recent change in the mood of posts",
    "post_recency_days": "days since the last post", "employees": "number of employees",
}
# What a column means for one type of customer when it differs: the data format's ``income`` of an
# organization is its annual revenue, and a company told its "income" is above typical reads it wrong.
FEATURE_WORDS_BY_TYPE = {"organization": {"income": "annual revenue"}}


def readable_feature(column: str) -> str:
    """A view column in words a customer or an adviser reads (``spend_share__travel``: share of spending on travel)."""
    if column.startswith(SPEND_SHARE):
        return "share of spending on " + column.removeprefix(SPEND_SHARE).replace("_", " ")
    return FEATURE_WORDS.get(column, column.replace("_", " "))


@dataclass
class CustomerSignals:
    """Per-customer inputs beyond the view, aligned with a list of customer ids.

    Evidence is kept apart by where it was read (events: posts or spending; text: the profile, the
    posts, or both), so that a product the data-use policy bars from a source reads none of it.
    """

    customer_ids: np.ndarray  # (n,)
    held: np.ndarray  # (n, P) float32 0/1
    events: np.ndarray  # (n, 2, E) float32 recency-weighted event evidence, per EVENT_SOURCES
    text_match: np.ndarray  # (n, 3, P) float32 recency-weighted similarity to each product, per TEXT_SOURCES
    best_text_match: np.ndarray  # (n, 3, P) float32 best single text's similarity, per TEXT_SOURCES
    best_text_source: np.ndarray  # (n, 3, P) int: k >= 0 row k of the posts frame used; -1 - k the k-th profile phrase
    event_posts: pd.DataFrame  # detected events with post (or transaction) id, date, evidence (for explanations)
    asked: np.ndarray  # (n, P) float32 0/1: the customer named the product in their preferences or needs
    recent_post_match: np.ndarray  # (n, P) float32 closeness of the best post of the last RECENT_POST_DAYS


def events_seen(events: np.ndarray, view: SignalView, event_names: Sequence[str]) -> np.ndarray:
    """Event evidence (..., 2, E) as a product under ``view`` may see it, (..., E): the strongest of
    the sources it may read, nothing of the inferences it may not."""
    allowed = [view.reads("life_events_from_posts"), view.reads("life_events_from_spending")]
    seen = np.where(np.asarray(allowed)[:, None], events, 0.0).max(axis=-2)
    barred = [i for i, event in enumerate(event_names) if event in view.barred_inferences]
    if barred:
        seen[..., barred] = 0.0
    return seen


def recency_weight(timestamps: pd.Series, as_of: pd.Timestamp) -> np.ndarray:
    """Half-life decay: a post from four months ago counts half as much as one from today."""
    age_days = (as_of - pd.to_datetime(timestamps)).dt.total_seconds().to_numpy() / 86400.0
    age_days = np.nan_to_num(age_days, nan=365.0 * 5).clip(min=0)
    return np.power(0.5, age_days / RECENCY_HALF_LIFE_DAYS).astype(np.float32)


def held_matrix(holdings: pd.DataFrame, customer_ids: np.ndarray, product_ids: Sequence[str]) -> np.ndarray:
    """0/1 matrix of the products each customer holds."""
    row = pd.Index(customer_ids).get_indexer(holdings["customer_id"])
    column = pd.Index(product_ids).get_indexer(holdings["product_id"])
    keep = (row >= 0) & (column >= 0)
    matrix = np.zeros((len(customer_ids), len(product_ids)), dtype=np.float32)
    matrix[row[keep], column[keep]] = 1.0
    return matrix


def product_texts(products: pd.DataFrame) -> list[str]:
    """What a product is, in words a customer might use: name, description and other names."""
    aliases = products.get("aliases", pd.Series("", index=products.index)).fillna("").astype(str)
    return [f"{name}. {description} {alias.replace(';', ',')}".strip()
            for name, description, alias in zip(products["name"].fillna(""), products["description"].fillna(""),
                                                 aliases)]


def customer_signals(view: pd.DataFrame, posts: pd.DataFrame, holdings: pd.DataFrame, interests: pd.DataFrame,
                     products: pd.DataFrame, as_of: pd.Timestamp, encoder: TextEncoder, detector: LifeEventDetector,
                     transactions: pd.DataFrame | None = None, profiles: ProfileMatch | None = None
                     ) -> CustomerSignals:
    """Holdings, stated interests, life events (from posts and, where given, from what the customer
    spent on) and text match for every customer of the view, as of a date; ``profiles``: the view's
    customers' :func:`profile_match`, when the caller has it."""
    customer_ids = view.index.to_numpy()
    posts = posts[posts["customer_id"].isin(view.index)].reset_index(drop=True)
    weights = recency_weight(posts["timestamp"], as_of)
    row_of_post = pd.Index(customer_ids).get_indexer(posts["customer_id"])
    events = np.zeros((len(customer_ids), len(EVENT_SOURCES), len(detector.events)), dtype=np.float32)
    post_scores = detector.detected_scores(posts["content"].fillna("").astype(str).tolist())
    events[:, 0] = _event_evidence(post_scores, weights, row_of_post, len(customer_ids), len(detector.events))
    detected = detector.detect(posts, post_scores)
    if transactions is not None and len(transactions):
        spending = spending_events(transactions, view.index, detector)
        rows, event = view.index.get_indexer(spending["customer_id"]), pd.Index(detector.events).get_indexer(spending["event"])
        np.maximum.at(events[:, 1], (rows, event), spending["score"].to_numpy() * recency_weight(spending["timestamp"], as_of))
        detected = pd.concat([detected, spending], ignore_index=True) if len(detected) else spending
    events, detected = _events_of_their_kind(view, events, detected, detector.events)
    recent = ((as_of - pd.to_datetime(posts["timestamp"])) <= pd.Timedelta(days=RECENT_POST_DAYS)).to_numpy()
    text_match, best, source, recent_best = _text_match(view, posts, weights, row_of_post, recent, products, encoder,
                                                        detector, profiles)
    return CustomerSignals(customer_ids, held_matrix(holdings, customer_ids, products["product_id"]), events,
                           text_match, best, source, detected,
                           held_matrix(interests, customer_ids, products["product_id"]), recent_best)


def without_naming_words(signals: CustomerSignals, view: pd.DataFrame, posts: pd.DataFrame,
                         interests: pd.DataFrame, products: pd.DataFrame, as_of: pd.Timestamp,
                         encoder: TextEncoder, detector: LifeEventDetector) -> CustomerSignals:
    """Text match of each asked-for product as if the customer had not named it, for "holds" training.

    Where the labels are what customers have or asked for (data without take-up dates), the phrase
    that asked (``evidence``) sits in the profile, and a model trained with it learns only "names
    the product, wants it". That never helps when serving, where a named product is offered first
    as a stated need anyway, and it drowns what does help (the products held, the other words).
    So the text features of those (customer, product) cells are recomputed with the phrase
    removed, as leave-one-out evaluation removes it. Sources of the best match are left as they
    were: training signals are never quoted.
    """
    if "evidence" not in interests.columns or "profile_text" not in view.columns:
        return signals
    named = interests.dropna(subset=["evidence"])
    row = view.index.get_indexer(named["customer_id"])
    column = pd.Index(products["product_id"]).get_indexer(named["product_id"])
    profile = view["profile_text"].to_numpy()[row]
    keep = (row >= 0) & (column >= 0) & pd.notna(profile)
    row, column, phrase, profile = row[keep], column[keep], named["evidence"].to_numpy()[keep], profile[keep]
    if not len(row):
        return signals
    pairs = pd.Index([f"{r}:{c}" for r, c in zip(row, column)], name="customer_id")
    reduced = pd.DataFrame({"profile_text": [str(t).replace(str(w), "") for t, w in zip(profile, phrase)]}, index=pairs)
    pair_of = pd.DataFrame({"pair": pairs, "customer_id": view.index.to_numpy()[row]})
    pair_posts = posts.merge(pair_of, on="customer_id").drop(columns="customer_id").rename(columns={"pair": "customer_id"})
    recent = np.zeros(len(pair_posts), dtype=bool)  # posts keep no naming words: their recent closeness stands
    text_match, best, _, _ = _text_match(reduced, pair_posts, recency_weight(pair_posts["timestamp"], as_of),
                                         pairs.get_indexer(pair_posts["customer_id"]), recent, products, encoder,
                                         detector)
    position = np.arange(len(row))
    signals.text_match[row, :, column] = text_match[position, :, column]
    signals.best_text_match[row, :, column] = best[position, :, column]
    return signals


def _events_of_their_kind(view: pd.DataFrame, events: np.ndarray, detected: pd.DataFrame, event_names: Sequence[str]
                          ) -> tuple[np.ndarray, pd.DataFrame]:
    """The evidence and detected events without those the customer's type cannot live through
    (:func:`~text_models.events_possible`): no rule, feature or explanation reads them."""
    if "customer_type" not in view.columns:
        return events, detected
    possible = events_possible(view["customer_type"].to_numpy(), event_names)
    events = events * possible[:, None, :]
    if len(detected):
        rows = view.index.get_indexer(detected["customer_id"])
        columns = pd.Index(event_names).get_indexer(detected["event"])
        detected = detected[possible[rows, columns]].reset_index(drop=True)
    return events, detected


def _event_evidence(post_scores: np.ndarray, weights: np.ndarray, row_of_post: np.ndarray, n_customers: int,
                    n_events: int) -> np.ndarray:
    """Per customer and event, the strongest post showing it, discounted by the post's age."""
    evidence = np.zeros((n_customers, n_events), dtype=np.float32)
    np.maximum.at(evidence, row_of_post, post_scores * weights[:, None])
    return evidence


def profile_phrases(profile_text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's profile split into the phrases they chose ("golf", "retirement saving").

    Returns the row of each phrase and the phrase. Profiles are lists of short phrases, so a
    customer's words are matched phrase by phrase: "paying down the mortgage" is not diluted by
    "golf, tennis", and the few thousand distinct phrases of a bank are encoded instead of one
    distinct string per customer.
    """
    lists = [split_profile(text) for text in profile_text.tolist()]
    rows = np.repeat(np.arange(len(lists), dtype=np.int64), [len(phrases) for phrases in lists])
    return rows, np.array([phrase for phrases in lists for phrase in phrases], dtype=object)


def split_profile(text: object) -> list[str]:
    """The phrases of one profile text ("Interests: golf, tennis. Preferences: ..."), labels dropped."""
    if not isinstance(text, str):
        return []
    phrases = (phrase.strip(" .") for field in PROFILE_FIELD_BREAK.split(text)
               for phrase in PROFILE_ITEM_BREAK.split(PROFILE_FIELD_LABEL.sub("", field)))
    return [phrase for phrase in phrases if phrase]


def spending_events(transactions: pd.DataFrame, customers: pd.Index, detector: LifeEventDetector) -> pd.DataFrame:
    """Life events shown by a *new* kind of spending, read by the same detector as posts
    ("wedding: Wedding Venue", "housing: Down Payment Transfer"), dated by its first occurrence: a
    venue paid last month says a wedding is near. A payment to a product ("housing: Mortgage
    Payment", a premium, a contribution: the loader's ``PRODUCT_PAYMENT_PATTERN``, its evidence of
    holdings) shows no event at all: it is the trace of a product held, not a plan to get one. Columns as :meth:`LifeEventDetector.detect` gives
    them, source "spending"."""
    rows = customers.get_indexer(transactions["customer_id"])
    described = (transactions["category"].fillna("").astype(str) + ": " + transactions["type"].fillna("").astype(str))
    codes, descriptions = pd.factorize(described)
    keep = (rows >= 0) & (codes >= 0) & transactions["date"].notna().to_numpy()
    identifiers = transactions.get("transaction_id", pd.Series(transactions.index.astype(str), index=transactions.index))
    identifiers = identifiers.astype(object).where(identifiers.notna(), "")  # no id: nothing to refer to, not "nan"
    first = (pd.DataFrame({"row": rows[keep], "code": codes[keep], "timestamp": transactions["date"].to_numpy()[keep],
                           "post_id": identifiers.astype(str).to_numpy()[keep]})
             .sort_values("timestamp", kind="stable").drop_duplicates(["row", "code"]))
    scores = detector.detected_scores(list(descriptions))
    scores[np.asarray(descriptions.str.contains(PRODUCT_PAYMENT_PATTERN), dtype=bool)] = 0.0
    position, event = np.nonzero(scores[first["code"].to_numpy()])
    shown = first.iloc[position]
    return pd.DataFrame({
        "post_id": shown["post_id"].to_numpy(), "customer_id": customers.to_numpy()[shown["row"].to_numpy()],
        "timestamp": shown["timestamp"].to_numpy(), "event": np.asarray(detector.events, dtype=object)[event],
        "score": scores[shown["code"].to_numpy(), event].astype(float),
        "evidence": descriptions.to_numpy()[shown["code"].to_numpy()], "source": "spending",
    }, columns=DETECTED_COLUMNS)


@dataclass(frozen=True)
class ProfileMatch:
    """What each customer's profile says about each product: the profile as one text, and its
    closest phrase per product. Profiles are not dated, so every snapshot of a training reads the
    same ones: training computes this once for all its snapshots (:func:`profile_match`)."""

    customer_ids: pd.Index
    vectors: np.ndarray  # (n, d) float32: the phrases' sum, scaled to PROFILE_TEXT_WEIGHT (0 without phrases)
    best: np.ndarray  # (n, P) float32: the closest phrase's similarity, 0 for none
    source: np.ndarray  # (n, P) int32: -1 - k for the k-th phrase, as CustomerSignals.best_text_source; -1 for none


def profile_match(profile: pd.Series, products: pd.DataFrame, product_vectors: np.ndarray, encoder: TextEncoder
                  ) -> ProfileMatch:
    """The customers' profile texts (indexed by customer) matched with the products (``product_vectors``:
    their :func:`product_texts` encoded), phrase by phrase."""
    phrase_row, phrases = profile_phrases(profile)
    distinct, phrase_code = np.unique(phrases.astype(str), return_inverse=True)
    distinct_vectors = encoder.encode(distinct.tolist())
    vectors = np.zeros((len(profile), product_vectors.shape[1]), dtype=np.float32)
    _add_by_row(vectors, phrase_row, distinct_vectors, phrase_code)
    vectors *= PROFILE_TEXT_WEIGHT / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    best = np.zeros((len(profile), len(product_vectors)), dtype=np.float32)
    source = np.full(best.shape, -1, dtype=np.int32)
    if len(phrase_row):
        _keep_best(best, source, phrase_row,
                   _quotable(distinct_vectors @ product_vectors.T, pd.Series(distinct), products)[phrase_code],
                   -1 - occurrence_numbers(phrase_row))
    return ProfileMatch(profile.index, vectors, best, source)


def _text_match(view: pd.DataFrame, posts: pd.DataFrame, weights: np.ndarray, row_of_post: np.ndarray,
                recent: np.ndarray, products: pd.DataFrame, encoder: TextEncoder, detector: LifeEventDetector,
                profiles: ProfileMatch | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Similarity of the customer's own words (profile phrases and posts) to each product description.

    ``text_match`` compares the customer's average meaning (profile phrases, plus recency-weighted
    posts) with each product; ``best_text_match`` is the single closest phrase or post, whose
    source (see :class:`CustomerSignals`) the explanations quote. Both come per
    :data:`~data_use.TEXT_SOURCES` (both kinds of words, the profile's alone, the posts' alone), so a
    product that may not read posts is matched with the profile alone. The last array is the
    closest of the ``recent`` posts alone, what the knowledge prior reads. ``profiles``: the view's
    customers' :func:`profile_match`, when the caller has it (else it is computed here).
    """
    product_vectors = encoder.encode(product_texts(products))
    if profiles is None:
        profiles = profile_match(view.get("profile_text", pd.Series("", index=view.index)), products, product_vectors,
                                 encoder)
    elif not profiles.customer_ids.equals(view.index):
        raise ValueError("the profile match given is of other customers than the view's")
    n_customers = len(view)
    post_vectors_sum = np.zeros_like(profiles.vectors)

    both, profile_only, posts_only = (TEXT_SOURCES.index(s) for s in ("profile and posts", "profile", "posts"))
    best = np.zeros((n_customers, len(TEXT_SOURCES), len(product_vectors)), dtype=np.float32)
    source = np.full(best.shape, -1, dtype=np.int32)
    best[:, profile_only], source[:, profile_only] = profiles.best, profiles.source
    recent_best = np.zeros((n_customers, len(product_vectors)), dtype=np.float32)
    if len(posts):
        codes, contents = pd.factorize(posts["content"].fillna("").astype(str))  # a bank's posts repeat
        content_vectors = np.stack([a.embedding for a in detector.analyse(contents.tolist())])
        _add_by_row(post_vectors_sum, row_of_post, content_vectors, codes, weights)
        similarity = _quotable(content_vectors @ product_vectors.T, pd.Series(contents), products)[codes]
        _keep_best(best[:, posts_only], source[:, posts_only], row_of_post, similarity, np.arange(len(posts)))
        np.maximum.at(recent_best, row_of_post[recent], np.clip(similarity[recent], 0.0, None))
    post_wins = best[:, posts_only] > best[:, profile_only]
    best[:, both] = np.where(post_wins, best[:, posts_only], best[:, profile_only])
    source[:, both] = np.where(post_wins, source[:, posts_only], source[:, profile_only])
    text_match = np.zeros_like(best)
    for index, vectors in ((both, profiles.vectors + post_vectors_sum), (profile_only, profiles.vectors),
                           (posts_only, post_vectors_sum)):
        text_match[:, index] = _closeness(vectors, product_vectors)
    return text_match, best, source, recent_best


def _quotable(similarity: np.ndarray, texts: pd.Series, products: pd.DataFrame) -> np.ndarray:
    """Each text's similarity to each product, 0 where the text states a risk appetite the product
    contradicts: "low-risk savings" is never the words that make a crypto fund the customer's
    (:func:`data_loader.stated_risk_conflicts`), however close the encoder puts them."""
    return np.where(stated_risk_conflicts(texts, products["risk_level"]), np.float32(0.0), similarity)


def _closeness(customer_vectors: np.ndarray, product_vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of each customer's (summed) words to each product; 0 for a customer without words."""
    norms = np.linalg.norm(customer_vectors, axis=1, keepdims=True)
    return np.where(norms > 0, (customer_vectors / np.maximum(norms, 1e-12)) @ product_vectors.T, 0.0)


def occurrence_numbers(rows: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... for each row's texts in the order given: a phrase's number in its profile, a
    post's among its customer's posts."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    numbers = np.empty(len(rows), dtype=np.int64)
    numbers[order] = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    return numbers


def _rounds_by_occurrence(rows: np.ndarray) -> list[np.ndarray]:
    """The texts in rounds, each holding at most one text per row: every row's first text, then
    every row's second, and so on. Updating the rows round by round visits each row's texts in
    their order, as ``np.add.at`` does, but with one vectorised step per round instead of numpy's
    per-element loop (which took 8 s per snapshot to sum 100,000 customers' profile phrases)."""
    numbers = occurrence_numbers(rows)
    order = np.argsort(numbers, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(numbers[order])) + 1) if len(rows) else []


def _add_by_row(totals: np.ndarray, rows: np.ndarray, vectors: np.ndarray, codes: np.ndarray,
                weights: np.ndarray | None = None) -> None:
    """``np.add.at(totals, rows, vectors[codes] * weights[:, None])``, bit for bit (each row's texts
    added in their order), without making the (texts, dimensions) array: a text's vector is
    looked up by its code among the distinct texts."""
    for texts in _rounds_by_occurrence(rows):
        added = vectors[codes[texts]]
        totals[rows[texts]] += added if weights is None else added * weights[texts, None]


def _keep_best(best: np.ndarray, source: np.ndarray, rows: np.ndarray, similarity: np.ndarray,
               labels: np.ndarray) -> None:
    """Where a text beats a customer's best match so far for a product, keep it and its label; of
    texts equally close, the last one given."""
    beaten = best.copy()  # what a text must beat; once one has, an equal later one takes its place
    for texts in _rounds_by_occurrence(rows):
        customers = rows[texts]
        values, current = similarity[texts], best[customers]
        better = (values > current) | ((values == current) & (current > beaten[customers]))
        best[customers] = np.where(better, values, current)
        source[customers] = np.where(better, labels[texts][:, None], source[customers])


@dataclass(frozen=True)
class CustomerInputs:
    """What the model reads about customers, one row each: the input of :meth:`ProductDesign.design`.

    Rows of one array may be shared by all customers (a leading axis of 1): a customer's
    counterfactual variants differ only in their tabular features, so their holdings, events and
    text matches are given once and broadcast. Events and text matches keep their sources apart
    (see :class:`CustomerSignals`): the design shows each product only what it may read.
    """

    tabular: np.ndarray  # (n, T)
    held: np.ndarray  # (n or 1, P)
    events: np.ndarray  # (n or 1, 2, E)
    text_match: np.ndarray  # (n or 1, 3, P)
    best_text_match: np.ndarray  # (n or 1, 3, P)
    recent_post_match: np.ndarray  # (n or 1, P)

    @classmethod
    def of(cls, tabular: np.ndarray, signals: CustomerSignals, rows: np.ndarray) -> "CustomerInputs":
        """The customers at ``rows`` of a tabular matrix and the signals aligned with it."""
        return cls(tabular[rows], signals.held[rows], signals.events[rows], signals.text_match[rows],
                   signals.best_text_match[rows], signals.recent_post_match[rows])


class ProductDesign:
    """Lays out the model input of (customer, product) pairs: one function for fit, serve and batch.

    After the customer's own columns (tabular, holdings, life events) come the columns of the
    customer *for this product*: how strongly a recent life event calls for it, and how close the
    customer's words are to it (on average and at best). The first reads the detected events
    through ``event_relevance``, the closeness in meaning of each event to each product, so one
    column carries what the trees of a rare product could not learn from its few take-ups alone:
    which events it serves.

    Each product sees the customer through its view of the data-use ``policy``: a signal the
    policy bars for it is a constant here, in training as in serving, so its trees never learn
    from it and no explanation can cite it. ``disabled`` names the signals an ablation switches off
    ("events", "text"); they are zeroed here too, so no path can forget either.
    """

    def __init__(self, tabular_specs: Sequence[FeatureSpec], product_names: Sequence[str], event_names: Sequence[str],
                 event_relevance: np.ndarray, policy: DataUsePolicy, disabled: frozenset[str] = frozenset()):
        self.specs: tuple[FeatureSpec, ...] = (
            tuple(tabular_specs)
            + tuple(FeatureSpec(f"holds {name}", "holding", "holdings", name) for name in product_names)
            + tuple(FeatureSpec(f"life event: {event.replace('_', ' ')}", "life_event", "posts and transactions",
                                event) for event in event_names)
            + (FeatureSpec("life event this product serves", "event_need", "posts and transactions"),
               FeatureSpec("text match", "text_match", "posts and profile"),
               FeatureSpec("best text match", "text_match", "posts and profile"),
               FeatureSpec("closest recent post", "text_match", "posts")))
        self.feature_names = [spec.name for spec in self.specs]
        self.n_tabular = len(tabular_specs)
        self.n_products = len(product_names)
        self.event_names = list(event_names)
        start = self.n_tabular + self.n_products
        self.event_columns = slice(start, start + len(event_names) + 1)  # the events and the product's event need
        self.event_need_column = self.event_columns.stop - 1
        self.text_columns = slice(self.event_columns.stop, len(self.specs))  # text match, best, closest recent post
        self.event_relevance = np.asarray(event_relevance, dtype=np.float32)  # (events, products) in 0..1
        self.policy = policy
        self.product_view = np.asarray(policy.product_view, dtype=np.intp)
        self.tabular_family = np.array([FAMILY_OF_SOURCE[spec.source] for spec in tabular_specs], dtype=object)
        self.disabled = frozenset(disabled)

    @cached_property
    def _barred_tabular(self) -> list[np.ndarray]:
        """Per view of the policy, the tabular columns of the families it bars (computed on first use,
        so that designs saved before it existed load as they are)."""
        return [np.flatnonzero([not view.reads(family) for family in self.tabular_family])
                for view in self.policy.views]

    def event_weights(self, contributions: np.ndarray, events: np.ndarray, product: int) -> dict[str, float]:
        """Each life event's share of a product's score: its own column, plus the product's event-need
        column credited to the event that set it. ``events`` (E,) as the product saw them."""
        start = self.event_columns.start
        weights = contributions[start:start + len(self.event_names)].astype(float)
        need = self._needs(events[None, :], [product])[0, :, 0]
        if need.max(initial=0.0) > 0:
            weights[int(need.argmax())] += contributions[self.event_need_column]
        return dict(zip(self.event_names, weights.tolist()))

    def _needs(self, events: np.ndarray, products: Sequence[int] | np.ndarray) -> np.ndarray:
        """Each event's call for each product, (n, E, products): the event's evidence times its
        relevance to the product."""
        return events[:, :, None] * self.event_relevance[None, :, products]

    def design(self, inputs: CustomerInputs, products: Sequence[int] | None = None) -> np.ndarray:
        """(customers, products, features) model input; ``products`` default: all, in catalogue order.

        Each product is seen by a customer who does not hold it (its own holding column is zero),
        as in training, where the label is taking it up, and through its data-use view. Disabled
        signals are zeroed.
        """
        positions = np.arange(self.n_products) if products is None else np.asarray(products, dtype=np.intp)
        tabular_end, held_end = self.n_tabular, self.n_tabular + self.n_products
        design = np.empty((len(inputs.tabular), len(positions), len(self.feature_names)), dtype=np.float32)
        design[:, :, :tabular_end] = inputs.tabular[:, None, :]
        design[:, :, tabular_end:held_end] = inputs.held[:, None, :]
        design[:, np.arange(len(positions)), tabular_end + positions] = 0.0
        views = self.product_view[positions]
        for view in np.unique(views):
            slots = np.flatnonzero(views == view)
            self._fill_signals(design, inputs, positions[slots], slots, int(view))
        if self.disabled & {"events", "text"}:
            design[..., self.event_columns] = 0.0
        if "text" in self.disabled:
            design[..., self.text_columns] = 0.0
        return design

    def _fill_signals(self, design: np.ndarray, inputs: CustomerInputs, products: np.ndarray, slots: np.ndarray,
                      view_number: int) -> None:
        """The events and text matches of the products at ``slots`` (catalogue positions ``products``)
        as their view (the policy's ``view_number``) lets them see the customer; the tabular columns of
        barred families held at 0."""
        view = self.policy.views[view_number]
        events = events_seen(inputs.events, view, self.event_names)
        design[:, slots, self.n_tabular + self.n_products:self.event_need_column] = events[:, None, :]
        design[:, slots, self.event_need_column] = self._needs(events, products).max(axis=1, initial=0.0)
        source = view.text_source
        recent_posts = view.reads("social_posts") and view.reads("text_match")
        columns = range(self.text_columns.start, self.text_columns.stop)
        matches = (None if source is None else inputs.text_match[:, source],
                   None if source is None else inputs.best_text_match[:, source],
                   inputs.recent_post_match if recent_posts else None)
        for column, match in zip(columns, matches):
            design[:, slots, column] = 0.0 if match is None else match[:, products]
        barred = self._barred_tabular[view_number]
        if len(barred):
            design[:, slots[:, None], barred[None, :]] = 0.0


def event_relevance(encoder: TextEncoder, detector: LifeEventDetector, products: pd.DataFrame) -> np.ndarray:
    """(events, products): how closely each life event's descriptions mean each product, scaled so
    that the event's closest product is 1 and products no closer than the median are 0."""
    event_vectors = np.stack([detector.event_vector(event) for event in detector.events])
    similarity = event_vectors @ encoder.encode(product_texts(products)).T
    median = np.median(similarity, axis=1, keepdims=True)
    top = similarity.max(axis=1, keepdims=True)
    return np.clip((similarity - median) / np.maximum(top - median, 1e-6), 0.0, 1.0).astype(np.float32)
