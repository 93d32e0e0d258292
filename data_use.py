"""Data-use policy: which of a customer's signals may touch which products.

The service reads customers' social-media posts, and some of its products are credit. The EU
Consumer Credit Directive 2023/2225 (Article 18(3)) bars personal data from social networks in
the assessment of creditworthiness, and GDPR Article 9 makes health a special category that a
bank keeps out of credit. A policy file (``DATA_USE_POLICY``) says, per group of products, which
signal families and which inferred life events may not touch them; this module validates it
against the catalogue and turns it into one :class:`SignalView` per product.

The views are applied where the model's input is laid out (``feature_engineer.ProductDesign``),
so a barred signal is absent from a product's model by construction: at training, at serving, in
batch scoring, in the business rules' view of life events and in the explanation alike.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence, get_args

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from settings import Settings
from text_models import LIFE_EVENTS

SignalFamily = Literal["profile", "transactions", "social_posts", "life_events_from_posts",
                       "life_events_from_spending", "text_match"]
SIGNAL_FAMILIES: tuple[str, ...] = get_args(SignalFamily)
READ_FROM = {"life_events_from_posts": "social_posts", "life_events_from_spending": "transactions"}
"""A family read from another: barring the source bars it too."""
SPECIAL_CATEGORIES = frozenset({"health"})
"""Inferences (GDPR Article 9 special categories) that never touch a credit product, whatever the file says."""
TEXT_SOURCES = ("profile and posts", "profile", "posts")
"""The customer's words a text match may compare with a product: the axis of the signals' text arrays."""
GROUP_SELECTORS = ("all", "credit", "non_credit")


class DataUsePolicyError(ValueError):
    """The policy file cannot be used; the message names the file and each problem."""


@dataclass(frozen=True)
class SignalView:
    """What one group of products may read of a customer: every signal but the barred ones."""

    barred_signals: frozenset[str] = frozenset()
    barred_inferences: frozenset[str] = frozenset()

    def reads(self, family: str) -> bool:
        return family not in self.barred_signals

    @property
    def text_source(self) -> int | None:
        """Which of :data:`TEXT_SOURCES` a text match may compare with the product (None: no text match)."""
        profile, posts = self.reads("profile"), self.reads("social_posts")
        if not self.reads("text_match") or not (profile or posts):
            return None
        return TEXT_SOURCES.index("profile and posts" if profile and posts else "profile" if profile else "posts")

    @property
    def withheld(self) -> tuple[str, ...]:
        """The barred signals, then the barred inferences: what an answer says was kept out."""
        return tuple(sorted(self.barred_signals)) + tuple(f"inferred {event}" for event in sorted(self.barred_inferences))

    def narrowest_with(self, other: SignalView) -> SignalView:
        return SignalView(self.barred_signals | other.barred_signals, self.barred_inferences | other.barred_inferences)


@dataclass(frozen=True)
class Restriction:
    """One rule of the policy: the products it covers, what may not touch them, and why."""

    products: tuple[str, ...]
    barred_signals: frozenset[str]
    barred_inferences: frozenset[str]
    reason: str


@dataclass(frozen=True)
class DataUsePolicy:
    """The policy in force, resolved against the catalogue: one view per product."""

    name: str
    description: str
    source: str
    restrictions: tuple[Restriction, ...]
    product_ids: tuple[str, ...]
    credit_products: tuple[str, ...]
    views: tuple[SignalView, ...]  # distinct views, the unrestricted one first when some product has it
    product_view: tuple[int, ...]  # per catalogue position: its index in ``views``

    def view_of(self, position: int) -> SignalView:
        return self.views[self.product_view[position]]

    @property
    def common_view(self) -> SignalView:
        """What every product may read: the view of what serves them all, the risk profile."""
        common = SignalView()
        for view in self.views:
            common = common.narrowest_with(view)
        return common

    def describe(self) -> dict[str, Any]:
        """The policy as /model prints it: its restrictions, and what each restricted product may not read."""
        return {"name": self.name, "description": self.description, "source": self.source,
                "credit_products": list(self.credit_products),
                "restrictions": [{"products": list(r.products), "bar_signals": sorted(r.barred_signals),
                                  "bar_inferences": sorted(r.barred_inferences), "reason": r.reason}
                                 for r in self.restrictions],
                "withheld_by_product": {product_id: list(self.view_of(position).withheld)
                                        for position, product_id in enumerate(self.product_ids)
                                        if self.view_of(position).withheld}}


class _RestrictionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    products: str | list[str]
    bar_signals: list[SignalFamily] = Field(default_factory=list)
    bar_inferences: list[str] = Field(default_factory=list)
    reason: str = Field(min_length=10)

    @field_validator("products")
    @classmethod
    def _as_list(cls, value: str | list[str]) -> list[str]:
        selectors = [value] if isinstance(value, str) else value
        if not selectors:
            raise ValueError("names no products")
        return selectors


class _PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    description: str = Field(min_length=10)
    restrictions: list[_RestrictionSpec] = Field(default_factory=list)


def policy_file_digest(path: Path) -> bytes:
    """What identifies a policy for the models fitted under it: its file's bytes."""
    return hashlib.blake2b(path.read_bytes(), digest_size=12).digest()


def load_policy(path: Path, products: pd.DataFrame, known_inferences: Iterable[str]) -> DataUsePolicy:
    """Read and validate a policy file against the catalogue (``is_credit`` filled) and the life
    events the detector knows; a mistake names the restriction and what is wrong with it."""
    document = _read_document(path)
    product_ids = tuple(products["product_id"].astype(str))
    credit = products["is_credit"].astype(bool).to_numpy() if "is_credit" in products else None
    if credit is None or products["is_credit"].isna().any():
        raise DataUsePolicyError(f"{path}: the catalogue does not say which products are credit (is_credit)")
    categories = products["category"].astype(str).str.casefold().to_numpy()
    known = frozenset(known_inferences)
    restrictions = tuple(_restriction(path, number, spec, known)
                         for number, spec in enumerate(document.restrictions, start=1))
    per_product = [SignalView(frozenset(), SPECIAL_CATEGORIES if is_credit else frozenset()) for is_credit in credit]
    for number, restriction in enumerate(restrictions, start=1):
        covered = _covered(path, number, restriction.products, product_ids, credit, categories)
        barred = SignalView(_with_what_they_read_from(restriction.barred_signals), restriction.barred_inferences)
        for position in covered:
            per_product[position] = per_product[position].narrowest_with(barred)
    views = tuple(dict.fromkeys(sorted(per_product, key=lambda view: len(view.withheld))))
    return DataUsePolicy(document.name, document.description, str(path), restrictions, product_ids,
                         tuple(p for p, is_credit in zip(product_ids, credit) if is_credit), views,
                         tuple(views.index(view) for view in per_product))


def _read_document(path: Path) -> _PolicyDocument:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise DataUsePolicyError(f"{path}: cannot read the data-use policy: {error}") from None
    try:
        return _PolicyDocument.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in error.errors())
        raise DataUsePolicyError(f"{path}: {problems}") from None


def _restriction(path: Path, number: int, spec: _RestrictionSpec, known: frozenset[str]) -> Restriction:
    unknown = sorted(set(spec.bar_inferences) - known)
    if unknown:
        raise DataUsePolicyError(f"{path}: restriction {number}: unknown inferences {', '.join(unknown)}; the "
                                 f"detector knows {', '.join(sorted(known))}")
    return Restriction(tuple(spec.products), frozenset(spec.bar_signals), frozenset(spec.bar_inferences), spec.reason)


def _with_what_they_read_from(barred: frozenset[str]) -> frozenset[str]:
    """Barring a source bars what is read from it (no posts: no life events from posts)."""
    return barred | {family for family, source in READ_FROM.items() if source in barred}


def _covered(path: Path, number: int, selectors: Sequence[str], product_ids: Sequence[str], credit: Sequence[bool],
             categories: Sequence[str]) -> list[int]:
    """Catalogue positions a restriction's selectors name; a selector naming nothing is a mistake."""
    covered: set[int] = set()
    for selector in selectors:
        kind, _, value = selector.partition(":")
        if selector in GROUP_SELECTORS:
            chosen = [i for i, is_credit in enumerate(credit) if selector == "all" or is_credit == (selector == "credit")]
        elif kind == "category" and value:
            chosen = [i for i, category in enumerate(categories) if category == value.casefold()]
        elif kind == "product" and value:
            chosen = [i for i, product_id in enumerate(product_ids) if product_id == value]
        else:
            raise DataUsePolicyError(f"{path}: restriction {number}: products {selector!r} must be one of "
                                     f"{', '.join(GROUP_SELECTORS)}, category:<name> or product:<id>")
        if not chosen and selector not in GROUP_SELECTORS:
            raise DataUsePolicyError(f"{path}: restriction {number}: {selector!r} names nothing in the catalogue")
        covered.update(chosen)
    return sorted(covered)


def policy_in_force(settings: Settings, products: pd.DataFrame) -> DataUsePolicy:
    """The policy ``DATA_USE_POLICY`` names, resolved against this catalogue."""
    return load_policy(settings.data_use_policy_file, products, LIFE_EVENTS)
