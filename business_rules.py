"""Business rules: the bank's own adjustments to the model's ranking, kept in a file it can edit.

The product team states its policy in a declarative YAML file (``config/business_rules.yaml``)
instead of code, so that a rule can be read, reviewed and changed without a release:

- **hard eligibility**, from the catalogue columns: segment (individual / organization / both),
  ``min_age``, ``min_income``, and products the customer already holds;
- **suitability** (MiFID-style): no product whose ``risk_level`` is above what the customer's risk
  profile allows (``suitability.max_product_risk``: Low / Medium / High -> 1-5);
- **named rules** that boost (factor > 1), demote (0 < factor < 1) or exclude products, chosen
  by ids, categories and/or a condition on the product, when a condition on the customer holds;
- **diversity**: at most ``diversity.max_per_category`` products of one category in a list.

Conditions are a small data language, compiled once at load into closures (never ``eval``)::

    when: {all: [{field: customer.age, op: '>=', value: 55},
                 {field: life_events, op: contains, value: retirement}]}

Fields: ``customer.<unified view column>``, ``risk.level``, ``risk.score``, ``life_events``,
``holdings`` (the product ids the customer holds; in ``when``, the customer side) and
``product.<catalogue column>`` (in ``target.where``, the product side). Operators:
``== != < <= > >= in not_in contains not_contains exists missing``; combinators
``all``, ``any``, ``not``. Text compares without regard to case; ``contains`` is a substring test
on text and a membership test on a set such as ``life_events``. A comparison with a missing value
(None, NaN, empty text or set) is false, whatever the operator; ``exists``/``missing`` test for it.

Missing customer values in eligibility: an unknown age or income does not exclude a product (the
data is dirty, and excluding every product with an age limit would leave such customers with
nothing), but the outcome says which products passed unchecked (:attr:`RuleOutcome.notes`).
Minimum ages apply to individuals only: organizations have no age. An unknown customer type is
the exception: only products offered to both segments remain, since offering business products
to a person (or the reverse) is never right.

Everything that does not depend on the customer is done at load: rule targets become catalogue
positions, catalogue columns become numpy arrays, and every exclusion's :class:`RuleEffect` is
built once, so :meth:`RuleBook.apply` (run per request and per counterfactual of the bias check)
only evaluates the customer conditions and moves scores.
"""
from __future__ import annotations

import copy
import difflib
import logging
import math
import operator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from data_loader import CUSTOMER_SEGMENTS, PRODUCT_SEGMENTS, is_missing

RISK_LEVELS = ("Low", "Medium", "High")
SEGMENTS = PRODUCT_SEGMENTS
CUSTOMER_TYPES = CUSTOMER_SEGMENTS
DEFAULT_PROTECTED_FIELDS = ("gender", "location")

Predicate = Callable[[Any], bool]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Records that cross modules
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CustomerContext:
    """What the rules may know about one customer (or one counterfactual variant of them)."""

    profile: Mapping[str, Any]
    risk_level: str
    risk_score: float
    life_events: frozenset[str] = frozenset()
    held_products: frozenset[str] = frozenset()
    asked_products: frozenset[str] = frozenset()  # named in the customer's preferences or financial needs
    contact: ContactHistory | None = None  # what the decision log says of past offers; None: nothing logged
    life_events_by_product: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Products the data-use policy lets see fewer of the customer's life events (a credit product
    reads no health, say): the events the rules that target them see, instead of ``life_events``."""

    def life_events_for(self, product_id: str) -> frozenset[str]:
        """The life events a rule sees when it targets this product."""
        return self.life_events_by_product.get(product_id, self.life_events)

    @property
    def holdings(self) -> frozenset[str]:
        """What the customer holds, accepted offers included (held from then on, as eligibility counts them)."""
        return (self.held_products | self.contact.accepted) if self.contact is not None else self.held_products


@dataclass(frozen=True)
class ContactHistory:
    """One customer's offers and answers in the decision log, over the contact policy's windows:
    what the policy needs to stop offering what a customer just declined or keeps ignoring."""

    declined_recently: frozenset[str] = frozenset()  # declined within suppress_after_decline_days
    unanswered_offers: Mapping[str, int] = field(default_factory=dict)  # offers without any answer, in window_days
    accepted: frozenset[str] = frozenset()  # accepted offers: held from then on


@dataclass(frozen=True)
class RuleEffect:
    """One rule that changed one product's fate, with the plain-English reason shown to people.

    ``fields`` are the customer fields the rule's condition tests (``customer.age``, ``life_events``);
    ``life_events`` the events whose presence it looks for. An explanation may credit a rule's
    boost to a life event only if the rule looked for that event: the reason text is for people.
    """

    rule: str
    effect: Literal["boost", "demote", "exclude"]
    factor: float | None
    reason: str
    fields: frozenset[str] = frozenset()
    life_events: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MitigationPair:
    """A product whose exposure across the groups of a protected attribute the rules file asks to keep
    within the fairness band (``fairness_mitigation``); ``column`` is the attribute's customer view column."""

    product_id: str
    attribute: str
    column: str


@dataclass(frozen=True)
class GroupRebalance:
    """The calibrated boost of one mitigation pair: customers of the ``boosted`` group (privileged or
    not, by ``privileged_values``) get the product's score multiplied by ``factor`` (> 1).

    Boosting the group the product under-reaches, rather than demoting the other, takes nothing away
    from anyone's list except by the product moving up; a customer whose value is unknown is in
    neither group and gets nothing.
    """

    pair: MitigationPair
    privileged_values: frozenset[str]
    boosted: Literal["privileged", "unprivileged"]
    factor: float

    def __post_init__(self) -> None:
        if not self.factor > 1:
            raise ValueError(f"a rebalancing factor must be greater than 1, got {self.factor}")

    def applies_to(self, profile: Mapping[str, Any]) -> bool:
        value = profile.get(self.pair.column)
        if is_missing(value):
            return False
        return (str(value).strip() in self.privileged_values) == (self.boosted == "privileged")

    def effect(self) -> RuleEffect:
        return RuleEffect(REBALANCE_RULE, "boost", self.factor,
                          f"raised for this customer's {self.pair.attribute} group, which the fairness audit found "
                          f"shown this product less often or lower in their lists than the other group: the "
                          f"boost brings the two groups' exposure within the fairness band",
                          frozenset({f"customer.{self.pair.column}"}))


REBALANCE_RULE = "fairness.exposure_rebalance"


@dataclass(frozen=True)
class SkippedRule:
    """A rule of the shipped default file left out because it names what this catalogue lacks."""

    rule: str
    absent: tuple[str, ...]  # the product ids and categories it names that the catalogue lacks


@dataclass
class AdjustedProduct:
    """A recommended product: the model's probability, the score after the rules, and why."""

    product_id: str
    model_score: float
    adjusted_score: float
    effects: list[RuleEffect]


@dataclass
class RuleOutcome:
    """The final list, the scored products that were removed and why, and checks that were skipped.

    ``ranked`` may be shorter than ``top_k`` when too few products are eligible or the diversity
    cap leaves too few categories. ``adjusted_score`` ranks; only ``model_score`` is a probability.
    """

    ranked: list[AdjustedProduct]
    excluded: dict[str, list[RuleEffect]]
    notes: list[str] = field(default_factory=list)
    adjusted: dict[str, float] = field(default_factory=dict)
    """Adjusted score of every product still eligible after exclusions (before the diversity cap):
    what the individual bias check compares, so that a product crossing the top-k cut-off counts
    with its real score change rather than its whole score."""
    rule_effects: dict[str, list[RuleEffect]] = field(default_factory=dict)
    """The boosts and demotions of every eligible product (the ranked ones and the rest)."""
    tests: _RuleTests | None = field(default=None, repr=False, compare=False)
    """Which rule conditions held for the customer (:meth:`RuleBook.apply`'s ``like``)."""


ELIGIBILITY_FIELDS = frozenset({"customer.age", "customer.income", "customer.customer_type", "risk.level"})


class RulesFileError(ValueError):
    """The rules file cannot be used; the message names the rule and each problem."""


# ----------------------------------------------------------------------------------------------
# Reading values
# ----------------------------------------------------------------------------------------------

_COLLECTIONS = (set, frozenset, list, tuple)


def _as_number(value: Any) -> float | None:
    """A finite-or-infinite float, or None for anything that is not a number (or is NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _normalise(value: Any) -> Any:
    """Text compares without case or surrounding spaces, so 'Retirement ' matches 'retirement'."""
    return value.strip().casefold() if isinstance(value, str) else value


def _customer_type(profile: Mapping[str, Any]) -> str | None:
    customer_type = _normalise(profile.get("customer_type"))
    return customer_type if customer_type in CUSTOMER_TYPES else None


def _plain_number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    matches = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


# ----------------------------------------------------------------------------------------------
# The condition language
# ----------------------------------------------------------------------------------------------

class _RuleProblem(Exception):
    """A problem in one rule; the loader adds which rule it is."""


class _AbsentTarget(_RuleProblem):
    """A rule aims at products or categories the catalogue lacks: a mistake in a bank's own rules
    file, but in the shipped default only a sign that the bank brought its own catalogue."""

    def __init__(self, message: str, absent: Sequence[str]) -> None:
        super().__init__(message)
        self.absent = tuple(absent)


def _equals(actual: Any, expected: Any) -> bool:
    return _normalise(actual) == expected


def _is_one_of(actual: Any, expected: frozenset[Any]) -> bool:
    if isinstance(actual, _COLLECTIONS):
        return any(_normalise(item) in expected for item in actual)
    return _normalise(actual) in expected


def _contains(actual: Any, expected: str) -> bool:
    if isinstance(actual, str):
        return expected in actual.casefold()
    if isinstance(actual, _COLLECTIONS):
        return any(_normalise(item) == expected for item in actual)
    return False


def _ordered(compare: Callable[[float, float], bool]) -> Callable[[Any, float], bool]:
    def test(actual: Any, expected: float) -> bool:
        number = _as_number(actual)
        return number is not None and compare(number, expected)

    return test


_VALUE_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _equals,
    "!=": lambda actual, expected: not _equals(actual, expected),
    "<": _ordered(operator.lt),
    "<=": _ordered(operator.le),
    ">": _ordered(operator.gt),
    ">=": _ordered(operator.ge),
    "in": _is_one_of,
    "not_in": lambda actual, expected: not _is_one_of(actual, expected),
    "contains": _contains,
    "not_contains": lambda actual, expected: not _contains(actual, expected),
}
_PRESENCE_TESTS = ("exists", "missing")
OPERATORS = (*_VALUE_TESTS, *_PRESENCE_TESTS)


@dataclass(frozen=True)
class _Field:
    """How to read a field from the subject of a condition, and its closed vocabulary if any."""

    read: Callable[[Any], Any]
    vocabulary: frozenset[Any] | None = None
    vocabulary_is_the_catalogue: bool = False
    """The values are product ids: one the catalogue lacks is an absent target (:class:`_AbsentTarget`), so the
    shipped default file leaves the rule out for a bank with its own catalogue instead of refusing to load."""


@dataclass(frozen=True)
class _Scope:
    """The fields one part of a rule may use: ``when`` reads the customer, ``target.where`` a product."""

    section: str
    fields: Mapping[str, _Field]
    other_section: str
    other_prefixes: tuple[str, ...]

    def resolve(self, name: Any, location: str) -> _Field:
        if isinstance(name, str) and name in self.fields:
            return self.fields[name]
        if isinstance(name, str) and name.startswith(self.other_prefixes):
            raise _RuleProblem(f"{location}: field {name!r} cannot be used in {self.section}; "
                               f"it belongs under {self.other_section}")
        raise _RuleProblem(f"{location}: unknown field {name!r}{_did_you_mean(str(name), self.fields)}")


def _profile_reader(column: str) -> Callable[[CustomerContext], Any]:
    return lambda context: context.profile.get(column)


def _record_reader(column: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda record: record.get(column)


def _customer_scope(known_customer_fields: Iterable[str], known_life_events: Iterable[str] | None,
                    catalogue: _Catalogue) -> _Scope:
    fields = {f"customer.{column}": _Field(_profile_reader(column)) for column in known_customer_fields}
    if "customer.customer_type" in fields:
        fields["customer.customer_type"] = _Field(_profile_reader("customer_type"), frozenset(CUSTOMER_TYPES))
    fields["risk.level"] = _Field(lambda context: context.risk_level,
                                  frozenset(_normalise(level) for level in RISK_LEVELS))
    fields["risk.score"] = _Field(lambda context: context.risk_score)
    events = None if known_life_events is None else frozenset(_normalise(event) for event in known_life_events)
    fields["life_events"] = _Field(lambda context: context.life_events, events)
    fields["holdings"] = _Field(lambda context: context.holdings,
                                frozenset(_normalise(product) for product in catalogue.product_ids),
                                vocabulary_is_the_catalogue=True)
    return _Scope("when", fields, "target.where", ("product.",))


def _product_scope(catalogue: _Catalogue) -> _Scope:
    fields = {f"product.{column}": _Field(_record_reader(column)) for column in catalogue.columns}
    closed = {"product_id": catalogue.product_ids, "category": catalogue.categories, "segment": SEGMENTS}
    for column, values in closed.items():
        fields[f"product.{column}"] = _Field(_record_reader(column), frozenset(_normalise(v) for v in values))
    return _Scope("target.where", fields, "when", ("customer.", "risk.", "life_events", "holdings"))


def _compile_condition(node: Any, scope: _Scope, location: str, fields_used: set[str]) -> Predicate:
    """Turn a condition tree into one closure; every problem is found here, at load, not per request."""
    if not isinstance(node, dict):
        raise _RuleProblem(f"{location}: a condition must be a mapping (field/op/value, or all/any/not), "
                           f"got {node!r}")
    combinators = node.keys() & {"all", "any", "not"}
    if not combinators:
        return _compile_comparison(node, scope, location, fields_used)
    if len(node) != 1:
        raise _RuleProblem(f"{location}: {sorted(combinators)[0]!r} must be the only key of its condition, "
                           f"found {sorted(node)}")
    (combinator, children), = node.items()
    if combinator == "not":
        negated = _compile_condition(children, scope, f"{location}.not", fields_used)
        return lambda subject: not negated(subject)
    if not isinstance(children, list) or not children:
        raise _RuleProblem(f"{location}.{combinator}: must be a non-empty list of conditions")
    parts = tuple(_compile_condition(child, scope, f"{location}.{combinator}[{index}]", fields_used)
                  for index, child in enumerate(children))
    combine = all if combinator == "all" else any
    return lambda subject: combine(part(subject) for part in parts)


def _compile_comparison(node: dict[str, Any], scope: _Scope, location: str, fields_used: set[str]) -> Predicate:
    extra_keys = sorted(node.keys() - {"field", "op", "value"})
    if extra_keys or "field" not in node or "op" not in node:
        raise _RuleProblem(f"{location}: a comparison needs 'field' and 'op' (and usually 'value'), "
                           f"found {sorted(node)}")
    name, op = node["field"], node["op"]
    field_spec = scope.resolve(name, location)
    read = field_spec.read
    fields_used.add(name)
    if op not in OPERATORS:
        raise _RuleProblem(f"{location}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
    if op in _PRESENCE_TESTS:
        if "value" in node:
            raise _RuleProblem(f"{location}: operator {op!r} takes no value")
        if op == "exists":
            return lambda subject: not is_missing(read(subject))
        return lambda subject: is_missing(read(subject))
    if "value" not in node:
        raise _RuleProblem(f"{location}: operator {op!r} needs a value")
    expected = _expected_value(op, node["value"], name, field_spec, location)
    test = _VALUE_TESTS[op]

    def comparison(subject: Any) -> bool:
        actual = read(subject)
        return not is_missing(actual) and test(actual, expected)

    return comparison


def _expected_value(op: str, value: Any, name: str, field_spec: _Field, location: str) -> Any:
    """Check the value against what the operator and the field accept, and normalise it once."""
    if op in ("<", "<=", ">", ">="):
        number = _as_number(value)
        if number is None:
            raise _RuleProblem(f"{location}: operator {op!r} compares numbers, got {value!r}")
        return number
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or any(isinstance(item, (dict, list)) for item in value):
            raise _RuleProblem(f"{location}: operator {op!r} needs a non-empty list of values, got {value!r}")
        expected = frozenset(_normalise(item) for item in value)
    elif op in ("contains", "not_contains"):
        if not isinstance(value, str) or not value.strip():
            raise _RuleProblem(f"{location}: operator {op!r} needs a text value, got {value!r}")
        expected = _normalise(value)
    else:
        if isinstance(value, (dict, list)) or value is None:
            raise _RuleProblem(f"{location}: operator {op!r} needs a single value (use 'in' for a list), "
                               f"got {value!r}")
        expected = _normalise(value)
    _check_vocabulary(expected, name, field_spec, location)
    return expected


def _check_vocabulary(expected: Any, name: str, field_spec: _Field, location: str) -> None:
    """Refuse a value the field can never take, such as a misspelt life event that would never fire."""
    if field_spec.vocabulary is None:
        return
    for value in expected if isinstance(expected, frozenset) else (expected,):
        if value not in field_spec.vocabulary:
            message = (f"{location}: {name} never takes the value {value!r}"
                       f"{_did_you_mean(str(value), map(str, field_spec.vocabulary))}; "
                       f"known values: {', '.join(sorted(map(str, field_spec.vocabulary)))}")
            raise _AbsentTarget(message, [str(value)]) if field_spec.vocabulary_is_the_catalogue else \
                _RuleProblem(message)


def _always(subject: Any) -> bool:
    return True


# ----------------------------------------------------------------------------------------------
# The rules file
# ----------------------------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """Refuses a key written twice in one mapping, which plain YAML silently resolves to the last."""


def _mapping_without_repeated_keys(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    keys: list[Any] = []
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in keys:
            raise yaml.constructor.ConstructorError("while reading a mapping", node.start_mark,
                                                    f"found the key {key!r} twice", key_node.start_mark)
        keys.append(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeated_keys)


class _Suitability(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_product_risk: dict[Literal["Low", "Medium", "High"], int] = Field(
        description="Highest product risk level (1-5) each customer risk level may be offered.")

    @field_validator("max_product_risk")
    @classmethod
    def _every_level_mapped_in_order(cls, limits: dict[str, int]) -> dict[str, int]:
        missing = [level for level in RISK_LEVELS if level not in limits]
        if missing:
            raise ValueError(f"map every risk level; missing {', '.join(missing)}")
        if any(not 1 <= limit <= 5 for limit in limits.values()):
            raise ValueError(f"product risk levels run from 1 to 5, got {limits}")
        ordered = [limits[level] for level in RISK_LEVELS]
        if ordered != sorted(ordered):
            raise ValueError(f"a higher risk level may not allow less product risk than a lower one, got {limits}")
        return limits


class _Diversity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_per_category: int = Field(ge=1)
    per_category: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="Other caps for some categories, e.g. one that holds most of a segment.")


class _Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    products: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    where: Any = None

    @model_validator(mode="after")
    def _selects_something(self) -> _Target:
        if not (self.products or self.categories or self.where is not None):
            raise ValueError("name products, categories and/or a product condition under where")
        return self


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["boost", "demote", "exclude"]
    factor: float | None = Field(default=None, allow_inf_nan=False)
    reason: str
    when: Any = None
    target: _Target
    allow_protected: bool = False
    justification: str | None = None

    @field_validator("name")
    @classmethod
    def _snake_case(cls, name: str) -> str:
        """Names appear in reports and metrics; snake_case also keeps them apart from 'eligibility.*'."""
        if not name or not (name[0].isalpha() and name.islower() and name.replace("_", "").isalnum()):
            raise ValueError(f"a rule name must be snake_case (lower-case letters, digits, _), got {name!r}")
        return name

    @field_validator("reason")
    @classmethod
    def _plain_english_reason(cls, reason: str) -> str:
        """The reason is what customers and advisers read when the rule changes a recommendation."""
        if not reason.strip():
            raise ValueError("a rule needs a reason in plain English")
        return reason.strip()

    @model_validator(mode="after")
    def _factor_fits_kind(self) -> _RuleSpec:
        if self.kind == "exclude" and self.factor is not None:
            raise ValueError("an exclude rule takes no factor")
        if self.kind == "boost" and (self.factor is None or self.factor <= 1):
            raise ValueError(f"a boost needs a factor greater than 1, got {self.factor}")
        if self.kind == "demote" and (self.factor is None or not 0 < self.factor < 1):
            raise ValueError(f"a demotion needs a factor between 0 and 1 (exclusive), got {self.factor}")
        return self

    @model_validator(mode="after")
    def _protected_use_is_justified(self) -> _RuleSpec:
        if self.allow_protected and not (self.justification or "").strip():
            raise ValueError("allow_protected: true needs a justification saying why the rule may use "
                             "a protected attribute")
        return self


class _StatedNeeds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offer_first: bool = Field(default=True, description="Products the customer asked for and does not hold are "
                                                         "ranked ahead of the others (still subject to every rule).")


class ContactPolicy(BaseModel):
    """How often one product may be offered to one customer: the rules file's ``contact_policy``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suppress_after_decline_days: int = Field(default=30, ge=0, description="After a decline, the product is not "
                                                                               "offered to that customer for this long.")
    max_offers: int = Field(default=3, ge=1, description="At most this many offers of one product to one customer "
                                                         "without any response within window_days.")
    window_days: int = Field(default=30, ge=1)

    def answer_key(self, contact: ContactHistory | None) -> tuple | None:
        """What of a contact history can change an answer under this policy: part of the answer cache's key.
        Offers still under ``max_offers`` change nothing, so a customer asked again meets the cache; None
        when nothing can (no history at all among them), so the answer cached at the first ask is found."""
        if contact is None:
            return None
        saturated = tuple(sorted((product, offers) for product, offers in contact.unanswered_offers.items()
                                 if offers >= self.max_offers))
        if not (saturated or contact.declined_recently or contact.accepted):
            return None
        return tuple(sorted(contact.declined_recently)), saturated, tuple(sorted(contact.accepted))


class _MitigationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product: str
    attribute: str


class _RulesDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suitability: _Suitability
    diversity: _Diversity
    stated_needs: _StatedNeeds = Field(default_factory=_StatedNeeds)
    contact_policy: ContactPolicy = Field(default_factory=ContactPolicy)
    fairness_mitigation: list[_MitigationSpec] = Field(
        default_factory=list, description="(product, protected attribute) pairs whose exposure across the "
                                          "attribute's groups is rebalanced into the fairness band.")
    rules: list[Any] = Field(default_factory=list)


def _validation_problems(error: ValidationError) -> str:
    """Pydantic's findings as 'where: what' in the file's own terms, without pydantic's prefixes."""
    problems = []
    for problem in error.errors():
        where, what = ".".join(map(str, problem["loc"])), problem["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {what}" if where else what)
    return "; ".join(problems)


def _read_rules_document(path: Path) -> _RulesDocument:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise RulesFileError(f"{path}: cannot read the rules file: {error.strerror or error}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        raise RulesFileError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RulesFileError(f"{path}: the rules file must be a mapping with the sections "
                             f"suitability, diversity and rules")
    try:
        return _RulesDocument.model_validate(data)
    except ValidationError as error:
        raise RulesFileError(f"{path}: {_validation_problems(error)}") from None


# ----------------------------------------------------------------------------------------------
# Compiling rules against the catalogue
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Catalogue:
    """The product catalogue as the rules see it: ids in catalogue order and one record per product."""

    product_ids: tuple[str, ...]
    records: tuple[dict[str, Any], ...]
    columns: tuple[str, ...]
    categories: tuple[str, ...]

    def unknown_category(self, category: str) -> str:
        return (f"unknown category {category!r}{_did_you_mean(category, self.categories)}; "
                f"known categories: {', '.join(self.categories)}")

    @classmethod
    def from_frame(cls, products: pd.DataFrame) -> _Catalogue:
        """Accept the catalogue indexed by product_id or with it as a column; refuse what rules cannot use."""
        if "product_id" not in products.columns and products.index.name == "product_id":
            products = products.reset_index()
        missing = sorted({"product_id", "category", "segment", "risk_level"} - set(products.columns))
        if missing:
            raise ValueError(f"the product catalogue lacks the column(s) {', '.join(missing)}")
        products = products.assign(**{column: products.get(column, np.nan) for column in ("min_age", "min_income")})
        duplicated = sorted(set(products.loc[products["product_id"].duplicated(), "product_id"]))
        bad_segment = sorted(products.loc[~products["segment"].isin(SEGMENTS), "product_id"])
        bad_risk = sorted(products.loc[~products["risk_level"].isin(range(1, 6)), "product_id"])
        for problem, product_ids in (("duplicate product_id", duplicated),
                                     (f"segment not one of {', '.join(SEGMENTS)}", bad_segment),
                                     ("risk_level not 1 to 5", bad_risk)):
            if product_ids:
                raise ValueError(f"product catalogue: {problem}: {', '.join(map(str, product_ids))}")
        records = products.assign(product_id=products["product_id"].astype(str),
                                  category=products["category"].astype(str),
                                  risk_level=products["risk_level"].astype(int)).to_dict("records")
        return cls(tuple(record["product_id"] for record in records), tuple(records),
                   tuple(products.columns), tuple(dict.fromkeys(record["category"] for record in records)))


@dataclass(frozen=True)
class _CompiledRule:
    """A named rule ready to apply: one customer test and the catalogue positions it targets."""

    effect: RuleEffect
    applies_to: Predicate
    targets: tuple[int, ...]


def _refuse_absent_targets(target: _Target, catalogue: _Catalogue) -> None:
    """Name every product and category of the target that the catalogue lacks, all at once."""
    products = [product_id for product_id in target.products if product_id not in catalogue.product_ids]
    categories = [category for category in target.categories if category not in catalogue.categories]
    problems = ([f"target.products: unknown product {product_id!r}{_did_you_mean(product_id, catalogue.product_ids)}"
                 for product_id in products]
                + [f"target.categories: {catalogue.unknown_category(category)}" for category in categories])
    if problems:
        raise _AbsentTarget("; ".join(problems), products + categories)


def _target_positions(target: _Target, catalogue: _Catalogue, scope: _Scope, fields_used: set[str]) -> tuple[int, ...]:
    """Products named by id or category (all products if neither), narrowed by the product condition."""
    _refuse_absent_targets(target, catalogue)
    if target.products or target.categories:
        positions = [position for position, record in enumerate(catalogue.records)
                     if catalogue.product_ids[position] in target.products or record["category"] in target.categories]
    else:
        positions = list(range(len(catalogue.product_ids)))
    if target.where is not None:
        matches = _compile_condition(target.where, scope, "target.where", fields_used)
        positions = [position for position in positions if matches(catalogue.records[position])]
    if not positions:
        raise _AbsentTarget("the target selects no product of the catalogue", ["products matching target.where"])
    return tuple(positions)


def _refuse_unjustified_protected_fields(spec: _RuleSpec, fields_used: set[str],
                                         protected_fields: Iterable[str]) -> None:
    if spec.allow_protected:
        return
    used = sorted({f"customer.{column}" for column in protected_fields} & fields_used)
    if used:
        raise _RuleProblem(f"conditions on the protected attribute {', '.join(used)}; a rule may use a protected "
                           f"attribute only with allow_protected: true and a justification")


def _compile_rule(raw: Any, catalogue: _Catalogue, customer_scope: _Scope, product_scope: _Scope,
                  protected_fields: Iterable[str]) -> _CompiledRule:
    spec = _RuleSpec.model_validate(raw)
    fields_used: set[str] = set()
    applies_to = _always if spec.when is None else _compile_condition(spec.when, customer_scope, "when", fields_used)
    customer_fields = frozenset(fields_used)
    targets = _target_positions(spec.target, catalogue, product_scope, fields_used)
    _refuse_unjustified_protected_fields(spec, fields_used, protected_fields)
    effect = RuleEffect(spec.name, spec.kind, spec.factor, spec.reason, customer_fields, _events_sought(spec.when))
    return _CompiledRule(effect, applies_to, targets)


def _events_sought(node: Any, negated: bool = False) -> frozenset[str]:
    """The life events a (compiled, hence valid) condition fires on the presence of.

    ``contains`` looks for an event, ``not_contains`` for its absence, and each ``not`` turns one
    into the other: ``{not: {field: life_events, op: not_contains, value: travel}}`` looks for travel.
    """
    if not isinstance(node, dict):
        return frozenset()
    if "not" in node:
        return _events_sought(node["not"], not negated)
    children = node.get("all", node.get("any"))
    if children is not None:
        return frozenset().union(*(_events_sought(child, negated) for child in children))
    looks_for_presence = {"contains": True, "not_contains": False}.get(node.get("op"))
    if node.get("field") != "life_events" or looks_for_presence is None or looks_for_presence == negated:
        return frozenset()
    return frozenset({_normalise(node["value"])})


def _category_limits(path: Path, diversity: _Diversity, catalogue: _Catalogue,
                     skipped: list[SkippedRule] | None) -> dict[str, int]:
    """The most products of each catalogue category that one list may show.

    With ``skipped`` (the shipped default file), a cap for a category the catalogue lacks is
    recorded there instead of refused: it has nothing to cap.
    """
    absent = [category for category in diversity.per_category if category not in catalogue.categories]
    if absent and skipped is None:
        raise RulesFileError(f"{path}: diversity.per_category: {catalogue.unknown_category(absent[0])}")
    if absent:
        skipped.append(SkippedRule("diversity.per_category", tuple(absent)))
    return {category: diversity.per_category.get(category, diversity.max_per_category)
            for category in catalogue.categories}


def _mitigation_pairs(path: Path, specs: Sequence[_MitigationSpec], catalogue: _Catalogue,
                      attribute_columns: Mapping[str, str]) -> tuple[MitigationPair, ...]:
    """The ``fairness_mitigation`` entries, each naming a catalogue product and a configured protected
    attribute once; a mistake refuses the file, naming the entry, as a misspelt pair would silently
    leave a flagged product unmitigated."""
    pairs: list[MitigationPair] = []
    for number, spec in enumerate(specs):
        location = f"{path}: fairness_mitigation[{number}] ({spec.product}, {spec.attribute})"
        if spec.product not in catalogue.product_ids:
            raise RulesFileError(f"{location}: unknown product {spec.product!r}"
                                 f"{_did_you_mean(spec.product, catalogue.product_ids)}")
        if spec.attribute not in attribute_columns:
            raise RulesFileError(f"{location}: {spec.attribute!r} is not a configured protected attribute"
                                 f"{_did_you_mean(spec.attribute, attribute_columns)}; configured: "
                                 f"{', '.join(attribute_columns) or 'none'}")
        pair = MitigationPair(spec.product, spec.attribute, attribute_columns[spec.attribute])
        if pair in pairs:
            raise RulesFileError(f"{location}: listed twice")
        pairs.append(pair)
    return tuple(pairs)


def _rule_label(number: int, raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"rule #{number} {name!r}" if isinstance(name, str) and name else f"rule #{number} (no name)"


def _compile_rules(path: Path, raw_rules: Sequence[Any], catalogue: _Catalogue, customer_scope: _Scope,
                   protected_fields: Iterable[str], skipped: list[SkippedRule] | None) -> tuple[_CompiledRule, ...]:
    """Compile every rule, collecting all problems so the product team can fix the file in one pass.

    With ``skipped`` (the shipped default file), a rule aiming at products or categories the
    catalogue lacks is recorded there and left out instead of refused.
    """
    product_scope = _product_scope(catalogue)
    compiled: list[_CompiledRule] = []
    first_number: dict[str, int] = {}
    problems: list[str] = []
    for number, raw in enumerate(raw_rules, start=1):
        label = _rule_label(number, raw)
        try:
            rule = _compile_rule(raw, catalogue, customer_scope, product_scope, protected_fields)
        except ValidationError as error:
            problems.append(f"{label}: {_validation_problems(error)}")
            continue
        except _AbsentTarget as problem:
            if skipped is None:
                problems.append(f"{label}: {problem}")
            else:
                skipped.append(SkippedRule(raw["name"], problem.absent))
            continue
        except _RuleProblem as problem:
            problems.append(f"{label}: {problem}")
            continue
        if rule.effect.rule in first_number:
            problems.append(f"{label}: duplicate rule name; rule #{first_number[rule.effect.rule]} has the same name")
            continue
        first_number[rule.effect.rule] = number
        compiled.append(rule)
    if len(problems) == 1:
        raise RulesFileError(f"{path}: {problems[0]}")
    if problems:
        raise RulesFileError(f"{path}: {len(problems)} problems:\n" + "\n".join(problems))
    return tuple(compiled)


# ----------------------------------------------------------------------------------------------
# Precomputed exclusions
# ----------------------------------------------------------------------------------------------

def _exclusion(rule: str, reason: str) -> RuleEffect:
    return RuleEffect(rule, "exclude", None, reason)


_ALREADY_HELD = _exclusion("eligibility.already_held", "the customer already holds this product")
CONTACT_POLICY_RULES = frozenset({"contact_policy.suppress_after_decline", "contact_policy.max_offers"})
_ACCEPTED = _exclusion("eligibility.already_held", "the customer accepted this offer: it counts as held")
_STATED_NEED = RuleEffect("stated_need", "boost", 1.0, "offered first: the customer asked for this kind of product")
"""Orders rather than scales (factor 1): what a customer asked for comes before what the model guesses."""


@dataclass(frozen=True)
class _MinimumRequirement:
    """A catalogue minimum (age or income) that the customer's own value must reach."""

    column: str
    minimums: np.ndarray
    effects: tuple[RuleEffect | None, ...]
    applies_to_organizations: bool

    @classmethod
    def build(cls, column: str, catalogue: _Catalogue, rule: str, describe: Callable[[str], str],
              applies_to_organizations: bool) -> _MinimumRequirement:
        minimums = np.array([_as_number(record.get(f"min_{column}")) for record in catalogue.records], dtype=float)
        effects = tuple(None if math.isnan(minimum) else _exclusion(rule, describe(_plain_number(minimum)))
                        for minimum in minimums)
        return cls(column, minimums, effects, applies_to_organizations)

    def applies(self, customer_type: str | None) -> bool:
        return customer_type != "organization" or self.applies_to_organizations

    def failures(self, value: float) -> list[int]:
        return np.flatnonzero(self.minimums > value).tolist()


def _segment_failures(catalogue: _Catalogue) -> dict[str | None, dict[int, RuleEffect]]:
    """Per customer type (None: unknown), the products of the other segment and why they are out."""
    offered_to = {"individual": "individuals", "organization": "organizations"}
    customer_is = {"individual": "the customer is an individual", "organization": "the customer is an organization",
                   None: "the customer type is unknown"}
    return {customer_type: {position: _exclusion("eligibility.segment",
                                                 f"only offered to {offered_to[record['segment']]}; {description}")
                            for position, record in enumerate(catalogue.records)
                            if record["segment"] not in ("both", customer_type)}
            for customer_type, description in customer_is.items()}


def _suitability_failures(catalogue: _Catalogue,
                          max_product_risk: Mapping[str, int]) -> dict[str, dict[int, RuleEffect]]:
    """Per risk level, the products riskier than it allows and why they are out."""
    return {level: {position: _exclusion("suitability.max_risk",
                                         f"product risk level {record['risk_level']} is above the maximum of "
                                         f"{limit} for a {level} risk profile")
                    for position, record in enumerate(catalogue.records) if record["risk_level"] > limit}
            for level, limit in max_product_risk.items()}


def _unknown_risk_level(risk_level: str) -> ValueError:
    return ValueError(f"unknown risk level {risk_level!r}; expected one of {', '.join(RISK_LEVELS)}")


# ----------------------------------------------------------------------------------------------
# The rule book
# ----------------------------------------------------------------------------------------------

class _RuleTests:
    """Whether a rule fires for one customer and target product, each condition tested once per set
    of life events: a rule on life events sees, for each product, only the events the data-use
    policy lets that product see.

    ``known``: results already known for this context (from another context that differs only in
    fields these rules do not read, :meth:`carried_to`)."""

    def __init__(self, context: CustomerContext,
                 known: dict[tuple[str, frozenset[str] | None], bool] | None = None) -> None:
        self.context = context
        self._results: dict[tuple[str, frozenset[str] | None], bool] = known or {}

    def carried_to(self, context: CustomerContext, fields_of: Mapping[str, frozenset[str]],
                   read: frozenset[str]) -> _RuleTests:
        """Tests for ``context`` that keep every result here of a rule reading none of the fields where
        it differs from this context (``fields_of``: each rule's fields; ``read``: all of them)."""
        changed = _changed_fields(self.context, context, read)
        return _RuleTests(context, {key: fired for key, fired in self._results.items()
                                    if fields_of[key[0]].isdisjoint(changed)})

    def __call__(self, rule: _CompiledRule, product_id: str) -> bool:
        events = self.context.life_events_by_product.get(product_id) if "life_events" in rule.effect.fields else None
        key = (rule.effect.rule, events)
        if key not in self._results:
            seen = self.context if events is None else replace(self.context, life_events=events)
            self._results[key] = rule.applies_to(seen)
        return self._results[key]


def _changed_fields(before: CustomerContext, after: CustomerContext, fields: Iterable[str]) -> set[str]:
    """Which of the rule ``fields`` (``customer.<column>``, ``risk.level``, ...) differ between two contexts."""
    changed = set()
    for name in fields:
        if name.startswith("customer."):
            column = name.removeprefix("customer.")
            value, other = before.profile.get(column), after.profile.get(column)
            if value is not other and value != other:
                changed.add(name)
    if before.risk_level != after.risk_level:
        changed.add("risk.level")
    if before.risk_score != after.risk_score:
        changed.add("risk.score")
    if before.life_events != after.life_events or before.life_events_by_product != after.life_events_by_product:
        changed.add("life_events")
    return changed


class _HardEligibility:
    """What rules a product out before any score: segment, minimum age and income, holding it
    already, and the customer's risk profile (suitability)."""

    def __init__(self, catalogue: _Catalogue, max_product_risk: Mapping[str, int], contact_policy: ContactPolicy
                 ) -> None:
        self.position = {product_id: position for position, product_id in enumerate(catalogue.product_ids)}
        self.contact_policy = contact_policy
        self._max_product_risk = dict(max_product_risk)
        self._segment_failures = _segment_failures(catalogue)
        self._suitability_failures = _suitability_failures(catalogue, max_product_risk)
        self._minimums = (
            _MinimumRequirement.build("age", catalogue, "eligibility.min_age",
                                      lambda age: f"the customer is younger than the minimum age of {age}",
                                      applies_to_organizations=False),
            _MinimumRequirement.build("income", catalogue, "eligibility.min_income",
                                      lambda income: f"the customer's annual income (revenue for an organization) "
                                                     f"is below the minimum of {income}",
                                      applies_to_organizations=True),
        )

    def _contact_failures(self, contact: ContactHistory) -> Iterator[tuple[int, RuleEffect]]:
        """Accepted offers count as held; the contact policy suppresses recent declines and offers
        that keep going unanswered."""
        policy = self.contact_policy
        for product_id in contact.accepted & self.position.keys():
            yield self.position[product_id], _ACCEPTED
        for product_id in contact.declined_recently & self.position.keys():
            yield self.position[product_id], _exclusion(
                "contact_policy.suppress_after_decline",
                f"the customer declined it within the last {policy.suppress_after_decline_days} days")
        for product_id, offers in contact.unanswered_offers.items():
            if offers >= policy.max_offers and product_id in self.position:
                yield self.position[product_id], _exclusion(
                    "contact_policy.max_offers",
                    f"offered {offers} times in the last {policy.window_days} days without a response "
                    f"(at most {policy.max_offers})")

    def max_risk_level(self, risk_level: str) -> int:
        try:
            return self._max_product_risk[risk_level]
        except KeyError:
            raise _unknown_risk_level(risk_level) from None

    def failures(self, context: CustomerContext) -> Iterator[tuple[int, RuleEffect]]:
        """Every (product position, reason) that hard eligibility or suitability rules out."""
        customer_type = _customer_type(context.profile)
        yield from self._segment_failures[customer_type].items()
        for requirement in self._minimums:
            value = _as_number(context.profile.get(requirement.column))
            if value is not None and requirement.applies(customer_type):
                for position in requirement.failures(value):
                    yield position, requirement.effects[position]
        for product_id in context.held_products:
            if product_id in self.position:
                yield self.position[product_id], _ALREADY_HELD
        if context.contact is not None:
            yield from self._contact_failures(context.contact)
        try:
            unsuitable = self._suitability_failures[context.risk_level]
        except KeyError:
            raise _unknown_risk_level(context.risk_level) from None
        yield from unsuitable.items()

    def exclusions(self, context: CustomerContext) -> dict[int, list[RuleEffect]]:
        exclusions: dict[int, list[RuleEffect]] = {}
        for position, effect in self.failures(context):
            exclusions.setdefault(position, []).append(effect)
        return exclusions

    def unchecked_minimums(self, context: CustomerContext, positions: Iterable[int], product_ids: Sequence[str]
                           ) -> list[str]:
        """Say which products passed a minimum age or income only because the customer's value is unknown."""
        customer_type = _customer_type(context.profile)
        notes = []
        for requirement in self._minimums:
            if requirement.applies(customer_type) and _as_number(context.profile.get(requirement.column)) is None:
                unchecked = [product_ids[position] for position in positions
                             if requirement.effects[position] is not None]
                if unchecked:
                    notes.append(f"{requirement.column} unknown: the minimum {requirement.column} was not checked "
                                 f"for {', '.join(unchecked)}")
        return notes


class RuleBook:
    """The bank's rules, compiled once at load and applied to every request and counterfactual.

    Build it with :meth:`load`; the constructor takes what ``load`` compiled.
    """

    def __init__(self, catalogue: _Catalogue, max_product_risk: Mapping[str, int], category_limits: Mapping[str, int],
                 rules: Sequence[_CompiledRule], stated_needs_first: bool = True,
                 skipped_rules: Sequence[SkippedRule] = (), contact_policy: ContactPolicy = ContactPolicy(),
                 fairness_mitigation: Sequence[MitigationPair] = ()) -> None:
        self.product_ids = catalogue.product_ids
        self.stated_needs_first = stated_needs_first
        self.category_limits = dict(category_limits)
        self.rule_names = tuple(rule.effect.rule for rule in rules)
        self.skipped_rules = tuple(skipped_rules)
        """Rules of the shipped default file left out for naming what the catalogue lacks."""
        self.contact_policy = contact_policy
        self._eligibility = _HardEligibility(catalogue, max_product_risk, contact_policy)
        self._position = self._eligibility.position
        self._category = tuple(record["category"] for record in catalogue.records)
        self._diversity_effects = {
            category: _exclusion("diversity.max_per_category",
                                 f"{limit} higher-ranked {category} products are already in the list "
                                 f"(at most {limit} of this category)")
            for category, limit in self.category_limits.items()}
        self._exclusion_rules = tuple(rule for rule in rules if rule.effect.effect == "exclude")
        self._scoring_rules = tuple(rule for rule in rules if rule.effect.effect != "exclude")
        self._fields_of_rule = {rule.effect.rule: rule.effect.fields for rule in rules}
        self._fields_rules_read = frozenset().union(*self._fields_of_rule.values())
        self.fairness_mitigation = tuple(fairness_mitigation)
        """The pairs the rules file asks to rebalance; their factors come from the audit (:meth:`rebalanced`)."""
        self.rebalances: tuple[GroupRebalance, ...] = ()
        self._rebalance_effects: tuple[tuple[int, GroupRebalance, RuleEffect], ...] = ()
        mitigated_fields = frozenset(f"customer.{pair.column}" for pair in self.fairness_mitigation)
        self.customer_fields = (frozenset().union(*(rule.effect.fields for rule in rules)) | ELIGIBILITY_FIELDS
                                | mitigated_fields)
        """Every customer field some rule or eligibility check reads (``customer.age``, ``risk.level``, ...);
        with mitigation, the attributes it rebalances on, so the counterfactual check measures it."""

    @classmethod
    def load(cls, path: Path, products: pd.DataFrame, known_customer_fields: Iterable[str],
             protected_fields: Iterable[str] = DEFAULT_PROTECTED_FIELDS,
             known_life_events: Iterable[str] | None = None, skip_absent_targets: bool = False,
             protected_attributes: Mapping[str, str] | None = None) -> RuleBook:
        """Read and validate a rules file against the catalogue and the customer view's columns.

        ``protected_fields`` are view columns no rule may condition on unless it says
        ``allow_protected: true`` with a ``justification``. With ``known_life_events`` (the event
        detector's vocabulary), a misspelt event is refused instead of silently never firing.

        ``skip_absent_targets`` is for the shipped default file, written for the shipped catalogue:
        a bank that brings its own catalogue must not be stopped by it, so its rules (and diversity
        caps) that name products or categories this catalogue lacks are left out, listed in
        :attr:`skipped_rules` and in one warning. A bank's own rules file stays strict: there, an
        unknown name is a mistake to fix.

        ``protected_attributes`` maps the configured protected attributes' names to their view
        columns: the names a ``fairness_mitigation`` entry may use (by default the protected fields').
        """
        catalogue = _Catalogue.from_frame(products)
        document = _read_rules_document(path)
        customer_scope = _customer_scope(known_customer_fields, known_life_events, catalogue)
        skipped: list[SkippedRule] | None = [] if skip_absent_targets else None
        category_limits = _category_limits(path, document.diversity, catalogue, skipped)
        rules = _compile_rules(path, document.rules, catalogue, customer_scope, tuple(protected_fields), skipped)
        attribute_columns = ({field: field for field in protected_fields} if protected_attributes is None
                             else dict(protected_attributes))
        mitigation = _mitigation_pairs(path, document.fairness_mitigation, catalogue, attribute_columns)
        if skipped:
            logger.warning("default rules skipped: they name products or categories absent from the catalogue",
                           extra={"rules_file": str(path),
                                  "skipped_rules": {rule.rule: list(rule.absent) for rule in skipped}})
        return cls(catalogue, document.suitability.max_product_risk, category_limits, rules,
                   document.stated_needs.offer_first, skipped or (), document.contact_policy, mitigation)

    def rebalanced(self, rebalances: Iterable[GroupRebalance]) -> RuleBook:
        """These rules with the audit's calibrated boosts in place of any earlier ones (none: unmitigated).

        Boosts for pairs the rules file no longer lists are dropped: the file decides what is mitigated,
        the audit only how much.
        """
        book = copy.copy(self)
        book.rebalances = tuple(r for r in rebalances if r.pair in self.fairness_mitigation)
        book._rebalance_effects = tuple((self._position[r.pair.product_id], r, r.effect()) for r in book.rebalances)
        return book

    def max_risk_level(self, risk_level: str) -> int:
        """The highest product risk level a customer of this risk level may be offered."""
        return self._eligibility.max_risk_level(risk_level)

    def eligible(self, context: CustomerContext) -> frozenset[str]:
        """Products passing hard eligibility and suitability: the candidates worth scoring."""
        failed = {position for position, _ in self._eligibility.failures(context)}
        return frozenset(product_id for position, product_id in enumerate(self.product_ids) if position not in failed)

    def apply(self, context: CustomerContext, model_scores: Mapping[str, float], top_k: int,
              like: RuleOutcome | None = None) -> RuleOutcome:
        """Filter, adjust, rank and diversify the model's scores for one customer.

        Order: hard eligibility and suitability, then exclude rules, then boosts and demotions
        (they multiply, so their order does not matter), then the diversity cap while the top
        ``top_k`` is filled. Products absent from ``model_scores`` are not considered; ties keep
        the order of ``model_scores``.

        ``like``: the outcome for a context that differs from this one in a few fields (a
        counterfactual's original): the conditions of rules that read none of those fields are not
        tested again. The outcome is the same either way.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        model_score = self._candidate_scores(model_scores)
        hard = self._eligibility.exclusions(context)
        excluded = {self.product_ids[position]: effects for position, effects in hard.items()
                    if position in model_score}
        adjusted = {position: score for position, score in model_score.items() if position not in hard}
        notes = self._eligibility.unchecked_minimums(context, adjusted, self.product_ids)
        tests = (_RuleTests(context) if like is None or like.tests is None
                 else like.tests.carried_to(context, self._fields_of_rule, self._fields_rules_read))
        effects = self._apply_rules(tests, adjusted, excluded)
        self._mark_stated_needs(context, adjusted, effects)
        ranked = self._diverse_top_k(adjusted, model_score, effects, excluded, top_k)
        return RuleOutcome(ranked, excluded, notes, {self.product_ids[p]: score for p, score in adjusted.items()},
                           {self.product_ids[p]: effects.get(p, []) for p in adjusted}, tests)

    def reads(self, customer_field: str) -> bool:
        """Whether any rule or eligibility check reads this field (``customer.<column>``, ``risk.level``...)."""
        return customer_field in self.customer_fields

    def rescore(self, outcome: RuleOutcome, model_scores: Mapping[str, float], top_k: int) -> RuleOutcome:
        """The outcome of :meth:`apply` for the same customer context with other model scores.

        Valid when nothing the rules read has changed (see :meth:`reads`): eligibility, exclusions
        and the rules that fire are then the same, only the scores they multiply differ. Cheaper
        than :meth:`apply`, for counterfactuals that change a model input no rule looks at.
        """
        model_score = {self._position[p]: float(model_scores[p]) for p in outcome.rule_effects}
        effects = {self._position[p]: e for p, e in outcome.rule_effects.items() if e}
        adjusted = {position: score * math.prod(e.factor for e in effects.get(position, ()))
                    for position, score in model_score.items()}
        excluded = {p: e for p, e in outcome.excluded.items() if e[0].rule != "diversity.max_per_category"}
        ranked = self._diverse_top_k(adjusted, model_score, effects, excluded, top_k)
        return RuleOutcome(ranked, excluded, outcome.notes, {self.product_ids[p]: s for p, s in adjusted.items()},
                           outcome.rule_effects)

    def _candidate_scores(self, model_scores: Mapping[str, float]) -> dict[int, float]:
        try:
            scores = {self._position[product_id]: float(score) for product_id, score in model_scores.items()}
        except KeyError as error:
            raise ValueError(f"model_scores names a product that is not in the catalogue: {error.args[0]!r}") from None
        if not all(map(math.isfinite, scores.values())):
            bad = [product_id for product_id, score in model_scores.items() if not math.isfinite(score)]
            raise ValueError(f"model_scores must be finite numbers; not for {', '.join(bad)}")
        return scores

    def _apply_rules(self, fires: _RuleTests, adjusted: dict[int, float],
                     excluded: dict[str, list[RuleEffect]]) -> dict[int, list[RuleEffect]]:
        """Run the named rules, in place; exclusions first, so no removed product is reported as boosted."""
        context = fires.context
        for rule in self._exclusion_rules:
            for position in rule.targets:
                if position in adjusted and fires(rule, self.product_ids[position]):
                    del adjusted[position]
                    excluded[self.product_ids[position]] = [rule.effect]
        effects: dict[int, list[RuleEffect]] = {}
        for rule in self._scoring_rules:
            for position in rule.targets:
                if position in adjusted and fires(rule, self.product_ids[position]):
                    adjusted[position] *= rule.effect.factor
                    effects.setdefault(position, []).append(rule.effect)
        for position, rebalance, effect in self._rebalance_effects:
            if position in adjusted and rebalance.applies_to(context.profile):
                adjusted[position] *= effect.factor
                effects.setdefault(position, []).append(effect)
        return effects

    def _mark_stated_needs(self, context: CustomerContext, adjusted: dict[int, float],
                           effects: dict[int, list[RuleEffect]]) -> None:
        """The eligible products the customer asked for, marked to be offered first."""
        if not self.stated_needs_first:
            return
        for product_id in context.asked_products:
            position = self._position.get(product_id)
            if position in adjusted:
                effects.setdefault(position, []).append(_STATED_NEED)

    def _diverse_top_k(self, adjusted: dict[int, float], model_score: dict[int, float],
                       effects: dict[int, list[RuleEffect]], excluded: dict[str, list[RuleEffect]],
                       top_k: int) -> list[AdjustedProduct]:
        """Fill the list best-first (stated needs before the rest), skipping (and reporting) products
        whose category is already full."""
        ranked: list[AdjustedProduct] = []
        shown_per_category: dict[str, int] = {}

        def order(position: int) -> tuple[bool, float]:
            return _STATED_NEED in effects.get(position, ()), adjusted[position]

        for position in sorted(adjusted, key=order, reverse=True):
            if len(ranked) == top_k:
                break
            category = self._category[position]
            shown = shown_per_category.get(category, 0)
            if shown >= self.category_limits[category]:
                excluded[self.product_ids[position]] = [self._diversity_effects[category]]
                continue
            shown_per_category[category] = shown + 1
            ranked.append(AdjustedProduct(self.product_ids[position], model_score[position], adjusted[position],
                                          effects.get(position, [])))
        return ranked
