"""Learning from what customers did with their offers (issue 12, point 5).

Two speeds. At each retrain, accepted offers become take-ups and declined offers negatives of the
product shown (:func:`feedback_examples`, used by ``recommender.make_training_set``). Between
retrains, :class:`FeedbackEvidence` moves each score toward the acceptance rate that customers of
the same segment showed for that product since the model was trained: the model's score is the
prior mean of a Beta distribution worth ``strength`` offers, and the segment's accepted and
declined offers update it (a Beta-binomial posterior mean). Little evidence moves a score little;
a product declined by most of the segment falls, whatever the trees said, until the next retrain
has learned why.

The segment is the customer's ``customer_type`` (individual, business, ...): coarse enough that a
product's evidence builds up quickly, and no protected attribute, so a customer and their
counterfactual variants (other gender, age, location) meet the same evidence.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from decision_store import FinalOutcome

SEGMENT_COLUMN = "customer_type"


@dataclass(frozen=True)
class FeedbackShift:
    """What the evidence did to one product's score for one customer: the outcomes it rests on and
    the score before and after."""

    segment: str
    accepted: int
    declined: int
    model_score: float
    score: float

    @property
    def log_odds_change(self) -> float:
        before, after = np.clip([self.model_score, self.score], 1e-9, 1 - 1e-9)
        return float(np.log(after / (1 - after)) - np.log(before / (1 - before)))


class FeedbackEvidence:
    """Accepted and declined offers per (product, segment) since the model was trained, and the
    Beta-binomial update they make to scores. Immutable: a refresh builds a new one and swaps it in."""

    def __init__(self, product_ids: Sequence[str], counts: Mapping[tuple[str, str], tuple[int, int]],
                 strength: float, since: str | None):
        if strength <= 0:
            raise ValueError(f"the prior strength must be positive, not {strength}")
        self.product_ids = list(product_ids)
        self.strength = float(strength)
        self.since = since
        self.counts = dict(sorted(counts.items()))
        position = {product: index for index, product in enumerate(self.product_ids)}
        self._by_segment: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for (product, segment), (accepted, declined) in self.counts.items():
            arrays = self._by_segment.setdefault(segment, (np.zeros(len(position)), np.zeros(len(position))))
            arrays[0][position[product]] = accepted
            arrays[1][position[product]] = accepted + declined
        self.version = hash(tuple(self.counts.items()))  # part of an answer's cache key

    @classmethod
    def from_outcomes(cls, product_ids: Sequence[str], outcomes: Iterable[FinalOutcome],
                      segment_of: Mapping[str, str], strength: float, since: str | None) -> FeedbackEvidence:
        """Counts the outcomes of customers whose segment is known (the bank's customers; a cold-start
        customer's segment is not kept, so their answers wait for the next retrain) on products of
        the catalogue."""
        known = set(product_ids)
        tally: Counter[tuple[str, str, str]] = Counter(
            (outcome.product_id, segment_of[outcome.customer_id], outcome.outcome) for outcome in outcomes
            if outcome.customer_id in segment_of and outcome.product_id in known)
        pairs = {(product, segment) for product, segment, _ in tally}
        counts = {pair: (tally[(*pair, "accepted")], tally[(*pair, "declined")]) for pair in pairs}
        return cls(product_ids, counts, strength, since)

    def including(self, outcomes: Iterable[FinalOutcome], segment_of: Mapping[str, str]) -> FeedbackEvidence:
        """This evidence with more answers counted (the same customers and products left out as in
        :meth:`from_outcomes`)."""
        more = FeedbackEvidence.from_outcomes(self.product_ids, outcomes, segment_of, self.strength, self.since)
        counts = dict(self.counts)
        for pair, (accepted, declined) in more.counts.items():
            before = counts.get(pair, (0, 0))
            counts[pair] = (before[0] + accepted, before[1] + declined)
        return FeedbackEvidence(self.product_ids, counts, self.strength, self.since)

    def adjust(self, probabilities: np.ndarray, segment: str) -> tuple[np.ndarray, dict[str, FeedbackShift]]:
        """Every row's scores (a customer and their variants, one segment) after the update, and what it
        did to the first row's, per product with evidence."""
        if segment not in self._by_segment:
            return probabilities, {}
        accepted, answered = self._by_segment[segment]
        adjusted = (self.strength * probabilities + accepted) / (self.strength + answered)
        adjusted = np.where(answered > 0, adjusted, probabilities)
        shifts = {self.product_ids[index]: FeedbackShift(segment, int(accepted[index]),
                                                         int(answered[index] - accepted[index]),
                                                         float(probabilities[0, index]), float(adjusted[0, index]))
                  for index in np.flatnonzero(answered)}
        return adjusted, shifts

    def summary(self) -> dict[str, object]:
        """For /model: the update, its strength, since when, and the evidence per product and segment."""
        return {"update": "Beta-binomial posterior mean: (strength x model score + accepted) / "
                          "(strength + accepted + declined), per product and customer segment",
                "strength": self.strength, "segment_column": SEGMENT_COLUMN, "outcomes_since": self.since,
                "evidence": [{"product_id": product, "segment": segment, "accepted": accepted,
                              "declined": declined, "acceptance_rate": round(accepted / (accepted + declined), 4)}
                             for (product, segment), (accepted, declined) in self.counts.items()]}


def feedback_examples(customer_ids: np.ndarray, product_ids: Sequence[str], outcomes: Iterable[FinalOutcome]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training examples from final outcomes of known customers: the rows (into ``customer_ids``) of
    the customers with any, a label per product (accepted) and the products each row teaches (those
    the customer answered). A customer who answered one product twice counts by the latest answer."""
    latest = (pd.DataFrame([(o.customer_id, o.product_id, o.outcome, o.at) for o in outcomes],
                           columns=["customer_id", "product_id", "outcome", "at"])
              .sort_values("at", kind="stable").drop_duplicates(["customer_id", "product_id"], keep="last"))
    row_of = {customer: row for row, customer in enumerate(customer_ids)}
    column_of = {product: column for column, product in enumerate(product_ids)}
    latest = latest[latest["customer_id"].isin(row_of) & latest["product_id"].isin(column_of)]
    rows = np.array(sorted({row_of[c] for c in latest["customer_id"]}), dtype=int)
    position = {row: index for index, row in enumerate(rows)}
    labels = np.zeros((len(rows), len(column_of)), dtype=bool)
    taught = np.zeros_like(labels)
    for customer, product, outcome in latest[["customer_id", "product_id", "outcome"]].itertuples(index=False):
        index, column = position[row_of[customer]], column_of[product]
        taught[index, column] = True
        labels[index, column] = outcome == "accepted"
    return rows, labels, taught
