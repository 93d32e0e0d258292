"""What the bank knows about a product before it has take-ups, and how far take-ups move it.

A bank starts with few customers and few take-ups per product, and customers who say in plain
words what they need. The trees of :mod:`recommender` learn a product only from its own
take-ups, so in a thin bank most products have none, or trees fitted on a handful. Two pieces
close that gap:

* :class:`KnowledgePrior` scores every product for every customer from what needs no take-up of
  that product: how close the customer's posts of the last months, their words overall and their
  detected life events are to the product's meaning, and how popular the product is. It is one
  logistic model pooled over all products (five weights, so a few hundred take-ups across the
  whole bank fit it); with none at all it is the knowledge-only ranking: the closest recent post,
  popularity to break ties.
* :class:`EvidenceBlend` moves each product from the prior towards its trees in proportion to
  the evidence, on the log-odds scale: weight ``n / (n + K)`` for a product with ``n`` take-ups
  (empirical Bayes shrinkage), ``K`` chosen by held-out NDCG@5. A product with a handful of
  take-ups leans on the prior; one with thousands, on its trees.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from feature_engineer import ProductDesign

KNOWLEDGE_INPUTS = ("popularity", "life event this product serves", "text match", "best text match",
                    "closest recent post")
KNOWLEDGE_ONLY_POST_WEIGHT = 30.0  # no take-ups: 0.1 of closeness outweighs 3 log-odds of popularity
MAX_POOLED_EXAMPLES = 200_000
BLEND_STRENGTHS = (0.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, np.inf)  # K: take-ups at which trees count half
RANKING_DEPTH = 5


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class KnowledgePrior:
    """One logistic score for every (customer, product) from the inputs of ``KNOWLEDGE_INPUTS``.

    ``weights`` apply to the standardised inputs (``(x - means) / scales``), so a contribution is
    the input's push away from the typical candidate: what an explanation can state.
    """

    intercept: float
    weights: np.ndarray  # (5,) per KNOWLEDGE_INPUTS
    means: np.ndarray  # (5,) typical value over the training candidates
    scales: np.ndarray  # (5,)
    fitted: bool  # False: the bank had no take-up to fit on; the weights are the knowledge-only ranking's

    @classmethod
    def knowledge_only(cls) -> "KnowledgePrior":
        """The prior of a bank with no take-ups: the closest recent post, popularity to break ties."""
        return cls(0.0, np.array([1.0, 0.0, 0.0, 0.0, KNOWLEDGE_ONLY_POST_WEIGHT]), np.zeros(5), np.ones(5), False)

    @classmethod
    def fit(cls, inputs: np.ndarray, labels: np.ndarray) -> "KnowledgePrior":
        """Fitted on (examples, 5) pooled (customer, product) candidates and whether they took it up."""
        if len(labels) == 0 or labels.min() == labels.max():
            return cls.knowledge_only()
        means, scales = inputs.mean(axis=0), inputs.std(axis=0) + 1e-6
        fitted = LogisticRegression(C=1.0).fit((inputs - means) / scales, labels)
        return cls(float(fitted.intercept_[0]), fitted.coef_[0].astype(float), means, scales, True)

    def log_odds(self, inputs: np.ndarray) -> np.ndarray:
        """(..., 5) inputs -> (...) log-odds of take-up."""
        return self.intercept + ((inputs - self.means) / self.scales) @ self.weights

    def contributions(self, inputs: np.ndarray) -> np.ndarray:
        """(..., 5) inputs -> (..., 5) each input's push on the log-odds, from the typical candidate."""
        return (inputs - self.means) / self.scales * self.weights


def knowledge_inputs(design: ProductDesign, rows: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """(customers, products, 5) prior inputs of a design (customers, products, features) built for
    the products whose take-up rates are ``popularity``."""
    popular = np.broadcast_to(logit(popularity), rows.shape[:2])[..., None]
    return np.concatenate([popular, rows[..., prior_columns(design)]], axis=-1)


def prior_columns(design: ProductDesign) -> list[int]:
    """The design columns of the prior's inputs after popularity (which is no column of the design)."""
    return [design.event_need_column, *range(design.text_columns.start, design.text_columns.stop)]


@dataclass(frozen=True)
class EvidenceBlend:
    """Per product, the weight of its trees against the prior: ``take_ups / (take_ups + strength)``.

    ``strength`` (K) is the number of take-ups at which a product's trees and the prior count
    equally; ``held_out_ndcg`` is what each K of the grid scored on held-out customers.
    """

    strength: float
    tree_weight: np.ndarray  # (P,) 0 for a product without trees
    held_out_ndcg: dict[str, float]

    @staticmethod
    def weights(take_ups: np.ndarray, has_trees: np.ndarray, strength: float) -> np.ndarray:
        if np.isinf(strength):
            return np.zeros(len(take_ups))
        return np.where(has_trees, take_ups / np.maximum(take_ups + strength, 1e-9), 0.0)

    @classmethod
    def chosen(cls, prior: np.ndarray, trees: np.ndarray, candidates: np.ndarray, labels: np.ndarray,
               take_ups: np.ndarray, has_trees: np.ndarray) -> "EvidenceBlend":
        """K of the grid whose blend ranks held-out customers best (NDCG@5 over their candidates);
        ties go to the larger K, the simpler answer. ``prior`` and ``trees`` are (customers, P)
        log-odds, ``candidates`` and ``labels`` (customers, P) booleans."""
        scored = {}
        for strength in BLEND_STRENGTHS:
            blended = blend(prior, trees, cls.weights(take_ups, has_trees, strength))
            scored[strength] = mean_ndcg(np.where(candidates, blended, -np.inf), labels & candidates, RANKING_DEPTH)
        best = max(scored.values())
        strength = max(k for k, value in scored.items() if value >= best - 1e-9)
        return cls(float(strength), cls.weights(take_ups, has_trees, strength),
                   {str(k): round(v, 4) for k, v in scored.items()})


def blend(prior: np.ndarray, trees: np.ndarray, tree_weight: np.ndarray) -> np.ndarray:
    """Log-odds moved from the prior towards the trees by each product's weight."""
    return prior + tree_weight * (trees - prior)


def mean_ndcg(scores: np.ndarray, relevant: np.ndarray, depth: int) -> float:
    """Mean NDCG@depth over the rows with at least one relevant product (binary relevance)."""
    rows = relevant.any(axis=1)
    if not rows.any():
        return 0.0
    scores, relevant = scores[rows], relevant[rows]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    gains = np.take_along_axis(relevant, order, axis=1) / np.log2(np.arange(2, depth + 2))
    ideal = np.array([(1 / np.log2(np.arange(2, min(n, depth) + 2))).sum() for n in relevant.sum(axis=1)])
    return float((gains.sum(axis=1) / ideal).mean())
