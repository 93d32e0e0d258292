"""A synthetic bank with a known causal story, for training, evaluating and auditing the recommender.

The data set has to be realistic where the models look: take-ups follow life events (which show
in social posts and transactions a little before the products are taken), the customer's profile
and a background rate, and a configurable historical bias multiplies one group's take-up of one
product category. Because the causes are known, the evaluation can tell whether the recommender
found the signals, and the fairness audit can be checked against the bias that was injected.

Everything is generated as numpy arrays (one row per customer, event, post or transaction) and
written with pyarrow; no Python loop runs per customer, so a million customers take minutes. The
same seed gives byte-identical files. Besides the five canonical tables, ``life_events.csv`` holds
the ground truth of the events (for evaluating the life-event detector); nothing else reads it.
"""
from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from settings import PROJECT_ROOT

DEFAULT_CATALOGUE_FILE = PROJECT_ROOT / "config" / "products.csv"
FILE_FORMATS = ("csv", "parquet")
WRITE_BATCH_ROWS = 500_000
DAYS_PER_YEAR = 365.25


# ==============================================================================================
# Public API
# ==============================================================================================

@dataclass(frozen=True)
class HistoricalBias:
    """A past unfairness to inject: customers whose ``attribute`` is ``value`` took up the products
    of ``category`` (or the one product ``product_id``) ``factor`` times as often as everyone else.

    ``attribute`` is a column of customers.csv (gender, location, education, occupation, industry,
    customer_type) or ``age``, whose value is a range such as ``18-29`` or ``60+``.
    """

    attribute: str
    value: str
    factor: float
    category: str | None = None
    product_id: str | None = None

    def __post_init__(self) -> None:
        if self.attribute not in BIAS_ATTRIBUTES:
            raise ValueError(f"bias attribute {self.attribute!r} is not one of {', '.join(BIAS_ATTRIBUTES)}")
        if (self.category is None) == (self.product_id is None):
            raise ValueError("a bias names exactly one of category or product_id")
        if not (np.isfinite(self.factor) and self.factor >= 0):
            raise ValueError(f"bias factor must be a finite number, zero or more, not {self.factor}")
        if self.attribute == "age":
            _age_range(self.value)

    @property
    def spec(self) -> str:
        """The command-line form that :func:`parse_bias` reads back."""
        target = f"category={self.category}" if self.category else f"product={self.product_id}"
        return f"{self.attribute}={self.value}:{target}:factor={self.factor:g}"


BIAS_ATTRIBUTES = ("gender", "location", "education", "occupation", "industry", "customer_type", "age")
DEFAULT_BIASES: tuple[HistoricalBias, ...] = (
    HistoricalBias(attribute="gender", value="F", category="investments", factor=0.5),
)


def parse_bias(spec: str) -> HistoricalBias:
    """Read a bias from its command-line form, ``gender=F:category=investments:factor=0.5``
    (``product=<product_id>`` instead of ``category=`` targets one product)."""
    parts = [part.strip() for part in spec.split(":")]
    if len(parts) != 3:
        raise ValueError(f"bias {spec!r} must have three ':'-separated parts: "
                         "ATTRIBUTE=VALUE:category=CATEGORY|product=PRODUCT_ID:factor=NUMBER")
    attribute, value = _key_value(parts[0], spec)
    target_key, target = _key_value(parts[1], spec)
    if target_key not in ("category", "product"):
        raise ValueError(f"bias {spec!r}: second part {parts[1]!r} must be category=... or product=...")
    factor_key, factor_text = _key_value(parts[2], spec)
    if factor_key != "factor":
        raise ValueError(f"bias {spec!r}: third part {parts[2]!r} must be factor=NUMBER")
    try:
        factor = float(factor_text)
    except ValueError:
        raise ValueError(f"bias {spec!r}: factor {factor_text!r} is not a number") from None
    try:
        return HistoricalBias(attribute=attribute, value=value, factor=factor,
                              category=target if target_key == "category" else None,
                              product_id=target if target_key == "product" else None)
    except ValueError as error:
        raise ValueError(f"bias {spec!r}: {error}") from None


def _key_value(part: str, spec: str) -> tuple[str, str]:
    key, sep, value = part.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ValueError(f"bias {spec!r}: part {part!r} must be KEY=VALUE")
    return key.strip(), value.strip()


def _age_range(value: str) -> tuple[float, float]:
    """``18-29`` -> (18, 29); ``60+`` -> (60, inf)."""
    try:
        if value.endswith("+"):
            return float(value[:-1]), float("inf")
        low, high = value.split("-")
        return float(low), float(high)
    except ValueError:
        raise ValueError(f"age bias value {value!r} must be a range such as 18-29 or 60+") from None


@dataclass
class GenerationSummary:
    """What was written, for the CLI to print and the benchmarks to time."""

    out_dir: Path
    n_customers: int
    seed: int
    file_format: str
    customers: int
    transactions: int
    social_posts: int
    products: int
    holdings: int
    life_events: int
    seconds: float
    biases: list[str] = field(default_factory=list)

    @property
    def rows(self) -> dict[str, int]:
        return {"customers": self.customers, "transactions": self.transactions, "social_posts": self.social_posts,
                "products": self.products, "holdings": self.holdings, "life_events": self.life_events}


def generate_bank_data(out_dir: Path, n_customers: int, seed: int, catalogue_file: Path | None = None,
                       biases: Sequence[HistoricalBias] = DEFAULT_BIASES, start: str = "2022-01-01",
                       end: str = "2025-12-31", file_format: str = "csv") -> GenerationSummary:
    """Write a synthetic canonical data set (SPEC section 2) of ``n_customers`` to ``out_dir``."""
    began = time.perf_counter()
    if n_customers < 1:
        raise ValueError(f"n_customers must be at least 1, not {n_customers}")
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {', '.join(FILE_FORMATS)}, not {file_format!r}")
    timeline = Timeline.between(start, end)
    catalogue_path = Path(catalogue_file) if catalogue_file is not None else DEFAULT_CATALOGUE_FILE
    catalogue = Catalogue.read(catalogue_path)

    population = draw_population(n_customers, timeline, _rng(seed, "population"))
    customers = customer_table(population, _rng(seed, "profile_text"), _rng(seed, "missing_values"))
    bias_rng = _rng(seed, "bias")
    bias_rules = [_BiasRule.resolve(bias, customers, catalogue, bias_rng) for bias in biases]
    base = base_holdings(population, catalogue, bias_rules, _rng(seed, "base_holdings"))
    events = draw_life_events(population, catalogue.holders(base, "first_home_mortgage", len(population)),
                              timeline, _rng(seed, "life_events"))
    customers = _append_event_needs(customers, events, _rng(seed, "event_needs"))
    holdings = take_up_products(population, events, base, catalogue, bias_rules, timeline, _rng(seed, "take_up"),
                                stated_intent(customers, catalogue))
    posts = draw_social_posts(population, events, timeline, _rng(seed, "social_posts"))
    transactions = draw_transactions(population, events, holdings, catalogue, timeline, _rng(seed, "transactions"))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    customer_ids = _customer_ids(population)
    tables = {
        "customers": customers.add_column(0, "customer_id", customer_ids),
        "transactions": transaction_table(transactions, customer_ids, timeline),
        "social_posts": post_table(posts, customer_ids, timeline, file_format),
        "products": pa.Table.from_pandas(catalogue.frame, preserve_index=False),
        "holdings": holding_table(holdings, customer_ids, catalogue, timeline),
        "life_events": life_event_table(events, customer_ids, timeline),
    }
    for name, table in tables.items():
        _write_table(table, out_dir / f"{name}.{file_format}", file_format)
    return GenerationSummary(out_dir=out_dir, n_customers=n_customers, seed=seed, file_format=file_format,
                             **{name: table.num_rows for name, table in tables.items()},
                             seconds=round(time.perf_counter() - began, 3), biases=[b.spec for b in biases])


# ==============================================================================================
# Time and randomness
# ==============================================================================================

@dataclass(frozen=True)
class Timeline:
    """The simulated period; every date inside the generator is a day number from ``start``."""

    start: np.datetime64
    days: int

    @classmethod
    def between(cls, start: str, end: str) -> "Timeline":
        try:
            first, last = date.fromisoformat(start), date.fromisoformat(end)
        except ValueError as error:
            raise ValueError(f"start and end must be ISO dates (YYYY-MM-DD): {error}") from None
        if (last - first).days < 365:
            raise ValueError(f"the period {start} to {end} must span at least one year")
        return cls(start=np.datetime64(first, "D"), days=(last - first).days)

    def dates(self, day: np.ndarray) -> np.ndarray:
        return self.start + day.astype("timedelta64[D]")


def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent random stream per stage, so changing one stage leaves the others' draws alone."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


def _uniform_days(rng: np.random.Generator, low: np.ndarray, high: np.ndarray | int) -> np.ndarray:
    """One day drawn uniformly in [low, high] per row."""
    return (low + rng.random(len(low)) * (high - low + 1)).astype(np.int32)


def _choice(rng: np.random.Generator, weights: Sequence[float], size: int) -> np.ndarray:
    probabilities = np.asarray(weights, dtype=float)
    return rng.choice(len(probabilities), size=size, p=probabilities / probabilities.sum()).astype(np.int16)


def _pick_within(rng: np.random.Generator, offsets: np.ndarray, sizes: np.ndarray, group: np.ndarray) -> np.ndarray:
    """For each row, a uniform index inside the pool ``group`` (pools concatenated, given by offsets/sizes)."""
    return (offsets[group] + (rng.random(len(group)) * sizes[group]).astype(np.int64)).astype(np.int32)


# ==============================================================================================
# Customers
# ==============================================================================================

INDIVIDUAL_SHARE = 0.85
ESTABLISHED_SHARE = 0.75   # customers who joined before the period
POSTING_SHARE = 0.72       # customers with a public social media presence
REFERENCE_INCOME = 60_000.0
REFERENCE_REVENUE = 5_000_000.0

# (city, share of customers, cost-of-living multiplier of income)
CITIES = (("New York", 0.22, 1.15), ("Los Angeles", 0.16, 1.08), ("Chicago", 0.13, 1.0), ("Houston", 0.12, 0.95),
          ("Phoenix", 0.09, 0.9), ("San Francisco", 0.09, 1.3), ("Seattle", 0.1, 1.15), ("Miami", 0.09, 0.95))
# Gender is drawn independently of everything else, so the injected bias is the only gender effect.
GENDERS = (("M", 0.485), ("F", 0.485), ("X", 0.01), (None, 0.02))
AGE_BANDS = ((18, 24, 0.11), (25, 34, 0.18), (35, 44, 0.17), (45, 54, 0.16), (55, 64, 0.16), (65, 74, 0.13),
             (75, 85, 0.09))
EDUCATION = ("High School", "Associate", "Bachelor's", "Master's", "Doctorate")
EDUCATION_INCOME = np.array([0.9, 0.95, 1.0, 1.1, 1.2])
EDUCATION_BY_AGE = ((18, 22, (0.6, 0.25, 0.15, 0.0, 0.0)), (23, 64, (0.28, 0.1, 0.37, 0.2, 0.05)),
                    (65, 85, (0.45, 0.1, 0.3, 0.12, 0.03)))
# (occupation, median income, lowest education index, weight among those qualified)
OCCUPATIONS = (
    ("Retail Associate", 32_000, 0, 1.2), ("Server", 30_000, 0, 0.8), ("Warehouse Worker", 38_000, 0, 0.9),
    ("Truck Driver", 54_000, 0, 0.8), ("Administrative Assistant", 44_000, 0, 1.0), ("Electrician", 62_000, 0, 0.7),
    ("Sales Representative", 65_000, 1, 1.0), ("Graphic Designer", 58_000, 1, 0.5), ("Nurse", 80_000, 1, 1.0),
    ("Small Business Owner", 85_000, 0, 0.6), ("Teacher", 62_000, 2, 1.0), ("Accountant", 82_000, 2, 0.8),
    ("Marketing Manager", 98_000, 2, 0.6), ("HR Manager", 90_000, 2, 0.5), ("Software Engineer", 130_000, 2, 0.9),
    ("Financial Analyst", 95_000, 2, 0.6), ("Data Scientist", 135_000, 3, 0.4), ("Lawyer", 155_000, 3, 0.3),
    ("Physician", 240_000, 4, 0.25), ("Executive", 280_000, 3, 0.2),
)
STUDENT, RETIRED = "Student", "Retired"
OCCUPATION_NAMES = tuple(name for name, *_ in OCCUPATIONS) + (STUDENT, RETIRED)
BUSINESS_OWNER = OCCUPATION_NAMES.index("Small Business Owner")
AGE_INCOME_CURVE = ((18, 25, 35, 45, 55, 65, 85), (0.62, 0.78, 0.95, 1.08, 1.1, 1.0, 0.95))
LIFE_STAGES = ("student", "young_adult", "family", "established", "pre_retirement", "retired")
INCOME_TIERS = ("budget", "middle", "affluent")


@dataclass(frozen=True)
class Industry:
    """An organization's industry and how it shapes the events and products of its companies."""

    name: str
    weight: float
    revenue_per_employee: float
    international: float
    equipment: float
    sustainability: float
    card_payments: float


INDUSTRIES = (
    Industry("Retail", 1.4, 180_000, 0.5, 0.6, 0.8, 1.0),
    Industry("Manufacturing", 1.1, 260_000, 1.2, 1.5, 1.2, 0.2),
    Industry("IT Services and Software", 1.2, 240_000, 1.0, 0.7, 0.6, 0.3),
    Industry("Healthcare", 0.9, 150_000, 0.3, 1.2, 0.6, 0.6),
    Industry("Hospitality and Restaurants", 1.1, 80_000, 0.3, 0.9, 0.9, 1.0),
    Industry("Construction", 0.9, 200_000, 0.3, 1.5, 0.8, 0.2),
    Industry("Agriculture and Food Production", 0.6, 220_000, 0.9, 1.6, 1.6, 0.3),
    Industry("Transportation and Logistics", 0.7, 190_000, 1.1, 1.4, 1.2, 0.2),
    Industry("Professional Services", 1.1, 170_000, 0.5, 0.4, 0.5, 0.3),
    Industry("Fashion and Apparel", 0.6, 210_000, 1.4, 0.6, 1.3, 0.9),
    Industry("Renewable Energy", 0.4, 320_000, 0.8, 1.3, 2.5, 0.1),
    Industry("Wholesale Trade", 0.7, 400_000, 1.5, 0.8, 0.6, 0.3),
)


@dataclass
class Population:
    """Every customer's true profile, one array entry per customer (the file may hide some values)."""

    is_org: np.ndarray
    age: np.ndarray          # age at the end of the period; NaN for organizations
    gender: np.ndarray       # index into GENDERS
    location: np.ndarray     # index into CITIES
    education: np.ndarray    # index into EDUCATION; -1 for organizations
    occupation: np.ndarray   # index into OCCUPATION_NAMES; -1 for organizations
    stage: np.ndarray        # index into LIFE_STAGES; -1 for organizations
    industry: np.ndarray     # index into INDUSTRIES; -1 for individuals
    employees: np.ndarray    # 0 for individuals
    income: np.ndarray       # annual income, or annual revenue for organizations
    join_day: np.ndarray     # day the customer joined the bank (negative: before the period)
    spend_activity: np.ndarray
    post_activity: np.ndarray  # 0 for customers who never post

    def __len__(self) -> int:
        return len(self.is_org)

    def active_from(self) -> np.ndarray:
        """First day of the period on which the customer banks with us."""
        return np.maximum(self.join_day, 0)

    def age_on(self, customer: np.ndarray, day: np.ndarray, timeline: Timeline) -> np.ndarray:
        return self.age[customer] - (timeline.days - day) / DAYS_PER_YEAR

    def scale(self, customer: np.ndarray) -> np.ndarray:
        """Income or revenue relative to a typical customer of the same type: what spend scales with."""
        reference = np.where(self.is_org[customer], REFERENCE_REVENUE, REFERENCE_INCOME)
        return np.maximum(self.income[customer], 1_000.0) / reference


def draw_population(n: int, timeline: Timeline, rng: np.random.Generator) -> Population:
    """Profiles drawn with their real dependencies: education by age, occupation by education,
    income by occupation, education, age and city; organizations' revenue by industry and size."""
    is_org = rng.random(n) >= INDIVIDUAL_SHARE
    age = np.full(n, np.nan)
    education = np.full(n, -1, np.int16)
    occupation = np.full(n, -1, np.int16)
    stage = np.full(n, -1, np.int16)
    industry = np.full(n, -1, np.int16)
    employees = np.zeros(n, np.int64)
    income = np.zeros(n)
    location = _choice(rng, [share for _, share, _ in CITIES], n)
    gender = _choice(rng, [share for _, share in GENDERS], n)
    gender[is_org] = len(GENDERS) - 1  # organizations have no gender: the "missing" entry

    people = np.flatnonzero(~is_org)
    age[people] = _draw_ages(rng, len(people))
    education[people] = _draw_education(rng, age[people])
    occupation[people] = _draw_occupation(rng, age[people], education[people])
    stage[people] = _life_stage(rng, age[people], occupation[people])
    city_cost = np.array([cost for *_, cost in CITIES])[location[people]]
    income[people] = _draw_income(rng, age[people], education[people], occupation[people], city_cost)

    companies = np.flatnonzero(is_org)
    industry[companies] = _choice(rng, [i.weight for i in INDUSTRIES], len(companies))
    employees[companies] = np.clip(np.rint(rng.lognormal(np.log(25), 1.4, len(companies))), 1, 50_000)
    revenue_per_head = np.array([i.revenue_per_employee for i in INDUSTRIES])[industry[companies]]
    income[companies] = np.round(employees[companies] * revenue_per_head * rng.lognormal(0, 0.4, len(companies)), -3)

    return Population(is_org=is_org, age=age, gender=gender, location=location, education=education,
                      occupation=occupation, stage=stage, industry=industry, employees=employees, income=income,
                      join_day=_draw_join_day(rng, age, timeline), spend_activity=rng.lognormal(-0.125, 0.5, n),
                      post_activity=np.where(rng.random(n) < POSTING_SHARE, rng.lognormal(-0.18, 0.6, n), 0.0))


def _draw_join_day(rng: np.random.Generator, age: np.ndarray, timeline: Timeline) -> np.ndarray:
    """Most customers joined in the ten years before the period, the rest during its first part
    (everyone has at least 18 months of history); nobody joined before turning 18."""
    n = len(age)
    established = rng.random(n) < ESTABLISHED_SHARE
    join_day = np.where(established, -rng.integers(1, 3650, n), rng.integers(0, max(timeline.days - 540, 1), n))
    turned_18 = np.ceil(timeline.days - (np.nan_to_num(age, nan=99.0) - 18) * DAYS_PER_YEAR)
    return np.maximum(join_day, np.minimum(turned_18, 0)).astype(np.int32)


def _draw_ages(rng: np.random.Generator, n: int) -> np.ndarray:
    band = _choice(rng, [share for *_, share in AGE_BANDS], n)
    low = np.array([lo for lo, _, _ in AGE_BANDS])[band]
    high = np.array([hi for _, hi, _ in AGE_BANDS])[band]
    return np.floor(low + rng.random(n) * (high - low + 1))


def _draw_education(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    education = np.zeros(len(age), np.int16)
    for low, high, shares in EDUCATION_BY_AGE:
        rows = np.flatnonzero((age >= low) & (age <= high))
        education[rows] = _choice(rng, shares, len(rows))
    return education


def _draw_occupation(rng: np.random.Generator, age: np.ndarray, education: np.ndarray) -> np.ndarray:
    """Students among the young, retirees among the old, otherwise a job one is qualified for
    (people mostly work at their level of education)."""
    occupation = np.zeros(len(age), np.int16)
    for level in range(len(EDUCATION)):
        rows = np.flatnonzero(education == level)
        weights = [weight * (3.0 if lowest == level else 1.0) if lowest <= level else 0.0
                   for _, _, lowest, weight in OCCUPATIONS]
        occupation[rows] = _choice(rng, weights, len(rows))
    student = (age <= 24) & (rng.random(len(age)) < np.where(age <= 21, 0.6, 0.3))
    retired = rng.random(len(age)) < np.interp(age, [58, 62, 66, 70], [0.0, 0.2, 0.75, 0.95])
    occupation[student] = OCCUPATION_NAMES.index(STUDENT)
    occupation[retired] = OCCUPATION_NAMES.index(RETIRED)
    return occupation


def _life_stage(rng: np.random.Generator, age: np.ndarray, occupation: np.ndarray) -> np.ndarray:
    parents = rng.random(len(age)) < 0.6
    stage = np.select(
        [occupation == OCCUPATION_NAMES.index(STUDENT), occupation == OCCUPATION_NAMES.index(RETIRED), age < 30,
         (age < 55) & parents, age < 55],
        [0, 5, 1, 2, 3], default=4)
    return stage.astype(np.int16)


def _draw_income(rng: np.random.Generator, age: np.ndarray, education: np.ndarray, occupation: np.ndarray,
                 city_cost: np.ndarray) -> np.ndarray:
    """Lognormal around the occupation's median, moved by education, career stage and city."""
    median = np.array([income for _, income, *_ in OCCUPATIONS] + [14_000, 36_000], float)[occupation]
    career = np.interp(age, *AGE_INCOME_CURVE)
    career = np.where(occupation >= len(OCCUPATIONS), 1.0, career)  # students and retirees: no career curve
    spread = np.where(occupation == OCCUPATION_NAMES.index(RETIRED), 0.5, 0.35)
    income = median * EDUCATION_INCOME[education] * career * city_cost * rng.lognormal(0, spread)
    return np.round(np.maximum(income, 4_000), -2)


def _income_tier(population: Population) -> np.ndarray:
    return np.digitize(population.income, [40_000, 120_000]).astype(np.int16)


def _customer_ids(population: Population) -> pa.Array:
    """``CUST0000123`` for individuals, ``ORG0000456`` for organizations: numbered in one sequence."""
    width = max(6, len(str(len(population))))
    numbers = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, len(population) + 1)), pa.string()), width, "0")
    prefix = pa.array(np.where(population.is_org, "ORG", "CUST"))
    return pc.binary_join_element_wise(prefix, numbers, "")


# ==============================================================================================
# Profile text (interests, preferences, financial needs)
# ==============================================================================================

STAGE_INTERESTS = {
    "student": ("gaming", "concerts", "campus sports", "coffee shops", "budget travel", "music festivals",
                "fitness", "anime", "coding", "thrifting", "streaming", "basketball"),
    "young_adult": ("travel", "dining out", "fitness", "concerts", "tech gadgets", "fashion", "craft beer",
                    "hiking", "photography", "startups", "yoga", "sneakers"),
    "family": ("family vacations", "kids activities", "home improvement", "cooking", "gardening",
               "school events", "camping", "board games", "soccer practice", "theme parks", "home essentials"),
    "established": ("travel", "fine dining", "wine", "golf", "home design", "running", "art galleries",
                    "cycling", "podcasts", "cooking", "tennis"),
    "pre_retirement": ("golf", "gardening", "travel", "wine", "home renovation", "grandchildren", "cruises",
                       "book clubs", "fishing", "classic cars"),
    "retired": ("gardening", "cruises", "grandchildren", "volunteering", "bridge", "golf", "bird watching",
                "history", "knitting", "church community"),
}
TIER_INTERESTS = {"budget": ("budget shopping", "coupons", "discount deals", "thrift stores"),
                  "middle": ("online shopping", "weekend trips", "home cooking"),
                  "affluent": ("luxury shopping", "sailing", "private clubs", "art collecting", "luxury travel")}
STAGE_PREFERENCES = {
    "student": ("no fees", "mobile banking", "student discounts", "cashback", "instant transfers"),
    "young_adult": ("mobile banking", "cashback", "rewards points", "travel perks", "contactless payments",
                    "digital banking", "ethical investing"),
    "family": ("low fees", "family plans", "mobile banking", "cashback", "online support", "savings goals"),
    "established": ("rewards points", "travel perks", "personal adviser", "digital banking", "premium service",
                    "ethical investing"),
    "pre_retirement": ("personal adviser", "in-branch service", "low-risk options", "phone support",
                       "tax efficiency"),
    "retired": ("in-branch service", "paper statements", "phone support", "low-risk options", "personal adviser"),
}
STAGE_NEEDS = {
    "student": ("budgeting", "fee-free account", "student loan help", "building credit"),
    "young_adult": ("emergency fund", "first credit card", "saving for travel", "start investing",
                    "building credit"),
    "family": ("saving for kids' education", "family protection", "bigger home", "paying down the mortgage",
               "household budgeting"),
    "established": ("growing investments", "paying down the mortgage", "retirement saving", "tax planning"),
    "pre_retirement": ("retirement planning", "pension top-up", "estate planning", "low-risk savings"),
    "retired": ("steady income", "healthcare costs", "estate planning", "low-risk savings", "helping grandchildren"),
}
# A customer with a life event in the period says so in their needs with this probability (intent
# precedes the event, so the profile text predicts some take-ups, as stated needs do in real life).
EVENT_NEED_SHARE = 0.35
EVENT_NEEDS = {
    "home_purchase": ("saving for a first home deposit", "mortgage advice", "buying a house"),
    "new_child": ("planning for a growing family", "saving for the baby", "family protection"),
    "marriage": ("paying for the wedding", "combining finances", "wedding costs"),
    "travel": ("travel money", "travel insurance", "no foreign transaction fees"),
    "retirement": ("turning my pension into income", "retirement income", "wealth advice"),
    "business_start": ("funding a side business", "startup costs"),
    "business_growth": ("funding business growth", "expansion finance"),
    "health": ("covering medical bills", "health cover"),
    "study_debt": ("managing student loans", "tuition costs", "consolidating debt"),
    "new_job": ("workplace pension", "managing a higher salary"),
    "car_purchase": ("financing a new car", "car loan"),
    "financial_stress": ("getting on top of credit card debt", "lower monthly payments", "debt relief"),
    "investing": ("learning to invest", "ETFs and index funds", "growing my savings in the stock market"),
    "international_trade": ("foreign exchange", "export finance", "currency hedging"),
    "cash_flow_stress": ("working capital", "invoice finance", "managing cash flow"),
    "hiring": ("payroll for a growing team", "employee benefits"),
    "equipment_purchase": ("equipment finance", "asset leasing"),
    "sustainability": ("green financing", "renewable energy investment"),
}
INDUSTRY_PREFERENCES = (
    "international expansion", "e-commerce", "sustainable sourcing", "digital payments", "cloud services",
    "employee benefits", "R&D", "influencer marketing", "new store openings", "automation", "supplier diversity",
    "brand partnerships", "energy efficiency", "customer loyalty programs",
)
ORGANIZATION_NEEDS = ("business loans", "payment processing", "treasury services", "supply chain financing",
                      "retail banking", "corporate cards", "payroll processing", "business insurance",
                      "cash management", "equipment finance", "working capital")
PROFILE_POOL_SIZE = 400


def customer_table(population: Population, rng: np.random.Generator, missing_rng: np.random.Generator) -> pa.Table:
    """customers.csv without the id column, with a few values missing as they would be in a real extract."""
    is_org = population.is_org
    columns = {
        "customer_type": _labels(np.where(is_org, 1, 0), ("individual", "organization")),
        "age": pa.array(np.nan_to_num(population.age).astype(np.int64), mask=is_org),
        "gender": _labels(population.gender, [g for g, _ in GENDERS]),
        "location": _labels(population.location, [c for c, *_ in CITIES]),
        "income": pa.array(population.income.astype(np.int64)),
        "education": _labels(population.education, EDUCATION),
        "occupation": _labels(population.occupation, OCCUPATION_NAMES),
        "industry": _labels(population.industry, [i.name for i in INDUSTRIES]),
        "employees": pa.array(population.employees, mask=~is_org),
        **_profile_text(population, rng),
    }
    for name, share in MISSING_SHARES.items():
        columns[name] = _hide(columns[name], missing_rng.random(len(population)) < share)
    return pa.table(columns)


MISSING_SHARES = {"age": 0.02, "location": 0.02, "income": 0.03, "education": 0.04, "occupation": 0.03,
                  "industry": 0.02, "employees": 0.04, "interests": 0.03, "preferences": 0.04,
                  "financial_needs": 0.03}


def _hide(column: pa.Array, hide: np.ndarray) -> pa.Array:
    """The column with the ``hide`` rows made missing (dictionary columns keep their dictionary)."""
    mask = pa.array(hide)
    if pa.types.is_dictionary(column.type):
        indices = pc.if_else(mask, pa.scalar(None, column.indices.type), column.indices)
        return pa.DictionaryArray.from_arrays(indices, column.dictionary)
    return pc.if_else(mask, pa.scalar(None, column.type), column)


def _labels(codes: np.ndarray, labels: Sequence[str | None]) -> pa.Array:
    """Integer codes as a dictionary-encoded text column; code -1 or a None label is a missing value."""
    codes = np.asarray(codes, np.int32)
    none_codes = [i for i, label in enumerate(labels) if label is None]
    missing = (codes < 0) | np.isin(codes, none_codes)
    dictionary = pa.array(["" if label is None else label for label in labels])
    return pa.DictionaryArray.from_arrays(pa.array(np.where(missing, 0, codes), mask=missing), dictionary)


def _profile_text(population: Population, rng: np.random.Generator) -> dict[str, pa.Array]:
    """Interests, preferences and needs drawn from pools per life stage and income tier (individuals)
    or per industry (organizations); the pools are rendered once, rows pick from them by index."""
    pools = _TextPools(rng)
    group = np.where(population.is_org, len(LIFE_STAGES) * len(INCOME_TIERS) + np.maximum(population.industry, 0),
                     np.maximum(population.stage, 0) * len(INCOME_TIERS) + _income_tier(population))
    n_groups = len(LIFE_STAGES) * len(INCOME_TIERS) + len(INDUSTRIES)
    for stage in LIFE_STAGES:
        for tier in INCOME_TIERS:
            pools.add("interests", STAGE_INTERESTS[stage] + TIER_INTERESTS[tier], 2, 4)
            pools.add("preferences", STAGE_PREFERENCES[stage], 1, 3)
            pools.add("needs", STAGE_NEEDS[stage], 1, 3)
    for industry in INDUSTRIES:
        pools.add("interests", (industry.name.lower(), "industry events", "trade shows", "networking"), 1, 2)
        pools.add("preferences", INDUSTRY_PREFERENCES, 2, 4)
        pools.add("needs", ORGANIZATION_NEEDS, 2, 4)
    interests = pools.pick("interests", group, n_groups)
    preferences = pools.pick("preferences", group, n_groups)
    needs = pools.pick("needs", group, n_groups)
    return {"interests": interests, "preferences": preferences, "financial_needs": needs}


class _TextPools:
    """Pools of rendered comma-separated phrase lists, kept in one dictionary per column."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._random = random.Random(int(rng.integers(2**63)))
        self._rng = rng
        self._texts: dict[str, list[str]] = {}
        self._sizes: dict[str, list[int]] = {}

    def add(self, column: str, phrases: Sequence[str], fewest: int, most: int) -> None:
        rendered = sorted({", ".join(self._random.sample(list(phrases), self._random.randint(fewest, most)))
                           for _ in range(PROFILE_POOL_SIZE)})
        self._texts.setdefault(column, []).extend(rendered)
        self._sizes.setdefault(column, []).append(len(rendered))

    def pick(self, column: str, group: np.ndarray, n_groups: int) -> pa.Array:
        sizes = np.array(self._sizes[column][:n_groups])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        index = _pick_within(self._rng, offsets, sizes, group)
        return pa.DictionaryArray.from_arrays(pa.array(index), pa.array(self._texts[column]))


def _append_event_needs(customers: pa.Table, events: "LifeEvents", rng: np.random.Generator) -> pa.Table:
    """Add a stated need for (some) customers' own life events, so needs carry some real intent."""
    shown = rng.random(len(events.customer)) < EVENT_NEED_SHARE
    order = np.argsort(events.customer[shown], kind="stable")
    customer, event = events.customer[shown][order], events.event[shown][order]
    first = np.unique(customer, return_index=True)[1]
    phrases = [phrase for name in ALL_EVENTS for phrase in EVENT_NEEDS[name]]
    sizes = np.array([len(EVENT_NEEDS[name]) for name in ALL_EVENTS])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    phrase = _pick_within(rng, offsets, sizes, event[first])
    extra = np.full(customers.num_rows, -1, np.int64)
    extra[customer[first]] = phrase
    extra_text = pa.DictionaryArray.from_arrays(pa.array(np.maximum(extra, 0), mask=extra < 0),
                                                pa.array(phrases)).cast(pa.string())
    needs = customers["financial_needs"].combine_chunks().cast(pa.string())
    # a hidden value stays hidden; without an event phrase the needs stay as they are
    joined = pc.if_else(pc.is_null(extra_text), needs, pc.binary_join_element_wise(needs, extra_text, ", "))
    return customers.set_column(customers.schema.get_field_index("financial_needs"), "financial_needs", joined)


# ==============================================================================================
# Life events
# ==============================================================================================

INDIVIDUAL_EVENTS = ("home_purchase", "new_child", "marriage", "travel", "retirement", "business_start",
                     "business_growth", "health", "study_debt", "new_job", "car_purchase", "financial_stress",
                     "investing")
ORGANIZATION_EVENTS = ("business_growth", "international_trade", "cash_flow_stress", "hiring",
                       "equipment_purchase", "sustainability")
ALL_EVENTS = INDIVIDUAL_EVENTS + tuple(e for e in ORGANIZATION_EVENTS if e not in INDIVIDUAL_EVENTS)
ONCE_ONLY_EVENTS = ("home_purchase", "marriage", "retirement", "business_start")


@dataclass
class LifeEvents:
    """Every life event in the period: who, what (index into ALL_EVENTS), when (day number)."""

    customer: np.ndarray
    event: np.ndarray
    day: np.ndarray
    in_posts: np.ndarray | None = None
    in_transactions: np.ndarray | None = None


def draw_life_events(population: Population, homeowner: np.ndarray, timeline: Timeline,
                     rng: np.random.Generator) -> LifeEvents:
    """A Poisson process per customer and event, with yearly rates from the profile, over the part
    of the period in which the customer banks with us."""
    active_years = (timeline.days - population.active_from()) / DAYS_PER_YEAR
    parts = []
    for events, rates, rows in (
            (INDIVIDUAL_EVENTS, _individual_event_rates(population, homeowner), np.flatnonzero(~population.is_org)),
            (ORGANIZATION_EVENTS, _organization_event_rates(population), np.flatnonzero(population.is_org))):
        counts = rng.poisson(rates[rows] * active_years[rows, None])
        once = [events.index(name) for name in ONCE_ONLY_EVENTS if name in events]
        counts[:, once] = np.minimum(counts[:, once], 1)
        row, column = np.nonzero(counts)
        repeats = counts[row, column]
        event_codes = np.array([ALL_EVENTS.index(name) for name in events], np.int16)
        parts.append((np.repeat(rows[row], repeats), np.repeat(event_codes[column], repeats)))
    customer = np.concatenate([p[0] for p in parts]).astype(np.int32)
    event = np.concatenate([p[1] for p in parts])
    day = _uniform_days(rng, population.active_from()[customer], timeline.days)
    return LifeEvents(customer=customer, event=event, day=day)


def _individual_event_rates(population: Population, homeowner: np.ndarray) -> np.ndarray:
    """Yearly rate of each individual event (columns in INDIVIDUAL_EVENTS order), by life stage."""
    age, income = np.nan_to_num(population.age), population.income
    wealth = np.clip(income / REFERENCE_INCOME, 0.2, 5.0)
    student = population.occupation == OCCUPATION_NAMES.index(STUDENT)
    retired = population.occupation == OCCUPATION_NAMES.index(RETIRED)
    owner = population.occupation == BUSINESS_OWNER
    graduate = population.education >= EDUCATION.index("Bachelor's")

    def ages(low: float, high: float) -> np.ndarray:
        return ((age >= low) & (age <= high)).astype(float)

    rates = {
        "home_purchase": (0.08 * ages(25, 45) * np.clip(wealth, 0.3, 2.0) + 0.01) * np.where(homeowner, 0.25, 1.0),
        "new_child": 0.15 * ages(24, 40) + 0.04 * ages(41, 45),
        "marriage": 0.08 * ages(22, 38) + 0.015 * ages(39, 70),
        "travel": 0.22 * np.sqrt(wealth),
        "retirement": np.where(retired & (age <= 72), 0.3, 0.0) + np.where(~retired & (age >= 58), 0.12, 0.0),
        "business_start": 0.02 * ages(23, 55) * np.where(owner, 4.0, 1.0),
        "business_growth": np.where(owner, 0.3, 0.005),
        "health": 0.02 + 0.0015 * (age - 18),
        "study_debt": np.where(graduate, 0.14, 0.05) * ages(18, 32) + 0.08 * student,
        "new_job": (0.18 * ages(20, 34) + 0.08 * ages(35, 59)) * ~retired,
        "car_purchase": 0.07 * ages(20, 72),
        "financial_stress": 0.07 * np.clip((45_000 / np.maximum(income, 1)) ** 0.7, 0.2, 3.0),
        "investing": 0.06 * ages(22, 65) * np.clip(wealth ** 0.6, 0.3, 3.0),
    }
    return np.column_stack([rates[name] for name in INDIVIDUAL_EVENTS])


def _organization_event_rates(population: Population) -> np.ndarray:
    """Yearly rate of each organization event (columns in ORGANIZATION_EVENTS order), by industry and size."""
    industry = np.maximum(population.industry, 0)
    trait = lambda name: np.array([getattr(i, name) for i in INDUSTRIES])[industry]  # noqa: E731
    size = np.clip(np.log10(np.maximum(population.employees, 1)) / 2, 0.2, 2.0)
    small = np.clip(REFERENCE_REVENUE / np.maximum(population.income, 1), 0.5, 3.0) ** 0.3
    rates = {
        "business_growth": np.full(len(population), 0.2),
        "international_trade": 0.1 * trait("international"),
        "cash_flow_stress": 0.1 * small,
        "hiring": 0.1 * size,
        "equipment_purchase": 0.1 * trait("equipment"),
        "sustainability": 0.06 * trait("sustainability"),
    }
    return np.column_stack([rates[name] for name in ORGANIZATION_EVENTS])


def life_event_table(events: LifeEvents, customer_ids: pa.Array, timeline: Timeline) -> pa.Table:
    order = np.lexsort((events.day, events.customer))
    return pa.table({
        "customer_id": customer_ids.take(pa.array(events.customer[order])),
        "event": _labels(events.event[order], ALL_EVENTS),
        "date": pa.array(timeline.dates(events.day[order])),
        "in_posts": pa.array(events.in_posts[order]),
        "in_transactions": pa.array(events.in_transactions[order]),
    })


# ==============================================================================================
# Product catalogue and historical bias
# ==============================================================================================

SEGMENTS = ("individual", "organization", "both")
NUMERIC_PRODUCT_COLUMNS = ("risk_level", "min_age", "min_income")


@dataclass
class Catalogue:
    """The products customers can take up, with the eligibility every take-up must respect."""

    frame: pd.DataFrame
    product_ids: list[str]
    category: np.ndarray
    segment: np.ndarray      # index into SEGMENTS
    min_age: np.ndarray      # NaN: no minimum
    min_income: np.ndarray   # NaN: no minimum

    @classmethod
    def read(cls, path: Path) -> "Catalogue":
        if not path.is_file():
            raise ValueError(f"product catalogue not found: {path}")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False).replace("", None)
        missing = [c for c in ("product_id", "category", "segment") if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: column {', '.join(missing)} missing")
        frame["product_id"] = frame["product_id"].str.strip()
        if frame["product_id"].isna().any() or frame["product_id"].duplicated().any():
            raise ValueError(f"{path}: product_id must be present and unique")
        bad = sorted(set(frame["segment"].dropna()) - set(SEGMENTS))
        if bad or frame["segment"].isna().any():
            raise ValueError(f"{path}: segment must be one of {', '.join(SEGMENTS)}, found {bad or 'empty'}")
        for column in NUMERIC_PRODUCT_COLUMNS:
            if column in frame.columns:
                frame[column] = _numeric_column(frame[column], path, column)
        return cls(frame=frame, product_ids=frame["product_id"].tolist(),
                   category=frame["category"].fillna("").to_numpy(str),
                   segment=frame["segment"].map(SEGMENTS.index).to_numpy(np.int8),
                   min_age=_optional_numbers(frame, "min_age"), min_income=_optional_numbers(frame, "min_income"))

    def __len__(self) -> int:
        return len(self.product_ids)

    def index(self, product_id: str) -> int | None:
        return self.product_ids.index(product_id) if product_id in self.product_ids else None

    def holders(self, holdings: "Holdings", product_id: str, n_customers: int) -> np.ndarray:
        """Which customers hold ``product_id`` (all False when the catalogue lacks it)."""
        held = np.zeros(n_customers, bool)
        product = self.index(product_id)
        if product is not None:
            held[holdings.customer[holdings.product == product]] = True
        return held


def _numeric_column(values: pd.Series, path: Path, column: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values[numbers.isna() & values.notna()]
    if len(bad):
        raise ValueError(f"{path}: {column} must be a number, not {bad.iloc[0]!r}")
    integral = numbers.dropna().mod(1).eq(0).all()
    return numbers.astype("Int64") if integral else numbers


def _optional_numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return frame[column].astype("Float64").to_numpy(float, na_value=np.nan)


@dataclass
class _BiasRule:
    """A historical bias resolved against this data: the factor on each customer's take-up chances
    of the biased products.

    A factor below one shuts a random (1 - factor) share of the group out of the products, drawn once
    per customer, rather than scaling every single chance: customers have several chances at a
    category (three investment products per ``investing`` event), and scaled chances would saturate,
    leaving the group's holding rate above factor times everyone else's. Shutting out keeps each
    take-up's expected chance at factor times and makes the injected disparate impact equal to the
    factor for every product and for the category. A factor above one multiplies each chance.
    """

    customer_factor: np.ndarray
    products: np.ndarray

    @classmethod
    def resolve(cls, bias: HistoricalBias, customers: pa.Table, catalogue: Catalogue,
                rng: np.random.Generator) -> "_BiasRule":
        if bias.category is not None:
            products = catalogue.category == bias.category
            if not products.any():
                raise ValueError(f"bias {bias.spec!r}: no product of category {bias.category!r} in the catalogue "
                                 f"(categories: {', '.join(sorted(set(catalogue.category)))})")
        else:
            products = np.array([pid == bias.product_id for pid in catalogue.product_ids])
            if not products.any():
                raise ValueError(f"bias {bias.spec!r}: product {bias.product_id!r} is not in the catalogue")
        group = _bias_group(bias, customers)
        if bias.factor < 1:
            group_factor = (rng.random(len(group)) < bias.factor).astype(float)
        else:
            group_factor = np.full(len(group), bias.factor)
        return cls(customer_factor=np.where(group, group_factor, 1.0), products=products)


def _bias_group(bias: HistoricalBias, customers: pa.Table) -> np.ndarray:
    """The customers in the bias's group, as recorded in customers.csv (a hidden value is in no group)."""
    if bias.attribute == "age":
        low, high = _age_range(bias.value)
        age = customers["age"].to_numpy(zero_copy_only=False).astype(float)
        return (age >= low) & (age <= high)
    column = customers[bias.attribute].combine_chunks()
    values = column.dictionary.to_pylist()
    if bias.value not in values:
        raise ValueError(f"bias {bias.spec!r}: {bias.attribute} is never {bias.value!r} "
                         f"(values: {', '.join(v for v in values if v)})")
    return pc.fill_null(pc.equal(column.cast(pa.string()), bias.value), False).to_numpy(zero_copy_only=False)


def _bias_factor(rules: Sequence[_BiasRule], customer: np.ndarray, product: np.ndarray | int) -> np.ndarray:
    """The factor by which the injected biases scale each (customer, product) take-up chance."""
    factor = np.ones(len(customer))
    for rule in rules:
        factor *= np.where(rule.products[product], rule.customer_factor[customer], 1.0)
    return factor


# ==============================================================================================
# Product take-up
# ==============================================================================================

@dataclass
class Holdings:
    """Take-ups: who, which product (index into the catalogue), from which day."""

    customer: np.ndarray
    product: np.ndarray
    day: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence["Holdings"]) -> "Holdings":
        """One set of take-ups from several (possibly none: a catalogue may lack every product of a rule)."""
        empty = np.empty(0, np.int32)
        return cls(customer=np.concatenate([empty, *(p.customer for p in parts)]).astype(np.int32),
                   product=np.concatenate([empty, *(p.product for p in parts)]).astype(np.int16),
                   day=np.concatenate([empty, *(p.day for p in parts)]).astype(np.int32))

    def subset(self, rows: np.ndarray) -> "Holdings":
        return Holdings(customer=self.customer[rows], product=self.product[rows], day=self.day[rows])


@dataclass(frozen=True)
class EventTakeUp:
    """A life event makes a product likely, some weeks or months after it."""

    event: str
    product_id: str
    probability: float
    mean_delay_days: float


# Customers shop around before taking a product up: the delays above stretch by this factor, so
# that a life event talked about today shows in take-ups over the following months.
DECISION_DELAY_FACTOR = 3.0

EVENT_TAKE_UPS = (
    EventTakeUp("home_purchase", "first_home_mortgage", 0.75, 14),
    EventTakeUp("home_purchase", "home_insurance", 0.6, 30),
    EventTakeUp("home_purchase", "life_insurance", 0.25, 90),
    EventTakeUp("new_child", "junior_savings", 0.45, 90),
    EventTakeUp("new_child", "life_insurance", 0.35, 60),
    EventTakeUp("new_child", "education_savings_plan", 0.25, 180),
    EventTakeUp("new_child", "health_insurance", 0.15, 60),
    EventTakeUp("marriage", "personal_loan", 0.35, 30),
    EventTakeUp("marriage", "life_insurance", 0.25, 120),
    EventTakeUp("marriage", "travel_insurance", 0.15, 30),
    EventTakeUp("travel", "travel_rewards_card", 0.2, 30),
    EventTakeUp("travel", "travel_insurance", 0.3, 14),
    EventTakeUp("travel", "premium_current_account", 0.04, 60),
    EventTakeUp("retirement", "retirement_annuity", 0.5, 90),
    EventTakeUp("retirement", "wealth_management", 0.3, 120),
    EventTakeUp("retirement", "fixed_term_deposit", 0.2, 90),
    EventTakeUp("business_start", "personal_loan", 0.3, 30),
    EventTakeUp("business_start", "cashback_credit_card", 0.1, 30),
    EventTakeUp("business_growth", "easy_access_savings", 0.2, 60),
    EventTakeUp("business_growth", "business_loan", 0.45, 45),
    EventTakeUp("business_growth", "business_credit_card", 0.2, 60),
    EventTakeUp("business_growth", "investment_banking", 0.25, 120),
    EventTakeUp("health", "health_insurance", 0.45, 30),
    EventTakeUp("health", "life_insurance", 0.1, 90),
    EventTakeUp("study_debt", "debt_consolidation_loan", 0.3, 60),
    EventTakeUp("study_debt", "student_account", 0.35, 14),
    EventTakeUp("new_job", "retirement_pension", 0.3, 60),
    EventTakeUp("new_job", "premium_current_account", 0.1, 60),
    EventTakeUp("new_job", "cashback_credit_card", 0.15, 45),
    EventTakeUp("car_purchase", "car_loan", 0.6, 7),
    EventTakeUp("financial_stress", "balance_transfer_card", 0.35, 30),
    EventTakeUp("financial_stress", "debt_consolidation_loan", 0.3, 45),
    EventTakeUp("investing", "index_fund_portfolio", 0.45, 30),
    EventTakeUp("investing", "stock_trading_account", 0.35, 30),
    EventTakeUp("investing", "crypto_growth_fund", 0.2, 45),
    EventTakeUp("international_trade", "treasury_services", 0.5, 60),
    EventTakeUp("international_trade", "supply_chain_finance", 0.3, 60),
    EventTakeUp("cash_flow_stress", "supply_chain_finance", 0.4, 30),
    EventTakeUp("cash_flow_stress", "business_loan", 0.2, 45),
    EventTakeUp("hiring", "payroll_services", 0.5, 30),
    EventTakeUp("hiring", "business_credit_card", 0.1, 60),
    EventTakeUp("equipment_purchase", "equipment_leasing", 0.55, 14),
    EventTakeUp("equipment_purchase", "commercial_insurance", 0.25, 30),
    EventTakeUp("sustainability", "green_business_loan", 0.5, 60),
)


@dataclass(frozen=True)
class FollowOn:
    """Holding one product makes another likely later (a mortgage is refinanced after some years)."""

    source: str
    target: str
    probability: float
    min_delay_days: int
    mean_extra_delay_days: float


FOLLOW_ONS = (
    FollowOn("first_home_mortgage", "remortgage", 0.35, 540, 500),
    FollowOn("first_home_mortgage", "home_insurance", 0.3, 0, 60),
    FollowOn("index_fund_portfolio", "stock_trading_account", 0.15, 90, 300),
    FollowOn("retirement_pension", "retirement_annuity", 0.2, 180, 500),
    FollowOn("business_loan", "business_credit_card", 0.2, 30, 200),
    FollowOn("merchant_payments", "supply_chain_finance", 0.1, 90, 400),
)

ProfileRule = Callable[[Population], np.ndarray]


def _between(population: Population, low: float, high: float) -> np.ndarray:
    return (population.age >= low) & (population.age <= high)


def _stage(population: Population, *names: str) -> np.ndarray:
    return np.isin(population.stage, [LIFE_STAGES.index(name) for name in names])


def _industry_trait(population: Population, name: str) -> np.ndarray:
    return np.where(population.is_org, np.array([getattr(i, name) for i in INDUSTRIES])[population.industry], 0.0)


def _wealth(population: Population) -> np.ndarray:
    return np.clip(population.income / REFERENCE_INCOME, 0.2, 5.0)


# The products a customer has on joining, with the chance of each (dated at joining).
BASE_HOLDINGS: dict[str, ProfileRule] = {
    "current_account": lambda p: np.where(p.is_org, 0.0, 0.93),
    "easy_access_savings": lambda p: np.full(len(p), 0.3),
    "cashback_credit_card": lambda p: np.where(p.is_org, 0.0, 0.22),
    "student_account": lambda p: np.where(_stage(p, "student"), 0.5, 0.0),
    "first_home_mortgage": lambda p: np.where(_between(p, 33, 75) & (p.income >= 35_000), 0.3, 0.0),
    "retirement_pension": lambda p: np.where(_between(p, 30, 64), 0.2, 0.0),
    "life_insurance": lambda p: np.where(_stage(p, "family"), 0.2, 0.0),
    "business_current_account": lambda p: np.where(p.is_org, 0.95, 0.0),
    "merchant_payments": lambda p: np.where(p.is_org, 0.4 * _industry_trait(p, "card_payments"), 0.0),
    "payroll_services": lambda p: np.where(p.is_org & (p.employees >= 50), 0.3, 0.0),
    "commercial_insurance": lambda p: np.where(p.is_org, 0.3, 0.0),
}
# Yearly take-up rate of each product from the customer's profile alone (segment and eligibility
# are applied afterwards); catalogue products not named here get DEFAULT_YEARLY_RATE.
DEFAULT_YEARLY_RATE = 0.01
PROFILE_RATES: dict[str, ProfileRule] = {
    "current_account": lambda p: np.full(len(p), 0.01),
    "premium_current_account": lambda p: 0.01 * np.where(p.income >= 150_000, 3.0, 1.0),
    "student_account": lambda p: 0.02 * np.select([_stage(p, "student"), p.age < 26], [8.0, 2.0], 0.1),
    "easy_access_savings": lambda p: np.where(p.is_org, 0.02, 0.04),
    "fixed_term_deposit": lambda p: np.where(p.is_org, 0.01, 0.015 * np.where(p.age >= 50, 3.0, 1.0)),
    "junior_savings": lambda p: 0.005 * np.where(_stage(p, "family"), 5.0, 0.3),
    "education_savings_plan": lambda p: 0.004 * np.where(_stage(p, "family"), 5.0, 0.2),
    "cashback_credit_card": lambda p: 0.04 * np.where(p.age < 40, 1.5, 1.0),
    "travel_rewards_card": lambda p: 0.015 * np.where(p.income >= 80_000, 2.0, 1.0),
    "balance_transfer_card": lambda p: 0.01 * np.where(p.income < 40_000, 2.0, 1.0),
    "first_home_mortgage": lambda p: np.full(len(p), 0.005),
    "remortgage": lambda p: 0.01 * np.where(_between(p, 35, 65), 1.5, 0.5),
    "personal_loan": lambda p: np.full(len(p), 0.02),
    "car_loan": lambda p: np.full(len(p), 0.01),
    "debt_consolidation_loan": lambda p: 0.01 * np.where(p.income < 40_000, 2.0, 1.0),
    "life_insurance": lambda p: 0.015 * np.where(_stage(p, "family"), 2.5, 1.0),
    "health_insurance": lambda p: 0.02 * np.where(p.age >= 45, 2.0, 1.0),
    "travel_insurance": lambda p: np.full(len(p), 0.02),
    "home_insurance": lambda p: np.full(len(p), 0.005),
    "index_fund_portfolio": lambda p: 0.02 * np.sqrt(_wealth(p)) * np.where(_between(p, 25, 60), 1.5, 1.0),
    "stock_trading_account": lambda p: 0.012 * np.sqrt(_wealth(p)),
    "crypto_growth_fund": lambda p: 0.008 * np.where(p.age < 40, 2.5, 0.5),
    "wealth_management": lambda p: np.where(p.is_org, 0.005, 0.03 * np.where(p.income >= 400_000, 2.0, 1.0)),
    "retirement_pension": lambda p: 0.03 * np.where(_between(p, 30, 60), 2.5, 0.3),
    "retirement_annuity": lambda p: 0.02 * np.where(p.age >= 62, 3.0, 1.0),
    "business_current_account": lambda p: np.full(len(p), 0.01),
    "business_loan": lambda p: np.full(len(p), 0.03),
    "supply_chain_finance": lambda p: 0.02 * (_industry_trait(p, "international") + 0.3),
    "merchant_payments": lambda p: 0.03 * _industry_trait(p, "card_payments"),
    "treasury_services": lambda p: 0.015 * _industry_trait(p, "international"),
    "business_credit_card": lambda p: np.full(len(p), 0.03),
    "equipment_leasing": lambda p: 0.015 * _industry_trait(p, "equipment"),
    "green_business_loan": lambda p: 0.01 * _industry_trait(p, "sustainability"),
    "payroll_services": lambda p: 0.02 * np.where(p.employees >= 20, 2.0, 0.5),
    "investment_banking": lambda p: np.full(len(p), 0.02),
    "commercial_insurance": lambda p: np.full(len(p), 0.03),
}
BASE_HOLDING_SPREAD_DAYS = 60

# What a stated need or preference says the customer intends, and how much more likely it makes the
# products that serve it (on top of the profile's rate). Stated needs are noisy but real intent in a
# bank's records; a recommender that reads them should find these take-ups earlier than one that
# only counts what is popular. Phrases not listed (interests, event needs) carry no extra intent.
STATED_NEED_FACTOR = 4.0
STATED_PREFERENCE_FACTOR = 2.0
STATED_INTENT: dict[str, tuple[str, ...]] = {
    # needs
    "budgeting": ("current_account",), "fee-free account": ("student_account", "current_account"),
    "student loan help": ("debt_consolidation_loan",), "building credit": ("cashback_credit_card",),
    "emergency fund": ("easy_access_savings",), "first credit card": ("cashback_credit_card",),
    "saving for travel": ("travel_rewards_card", "easy_access_savings"),
    "start investing": ("index_fund_portfolio", "stock_trading_account"),
    "saving for kids' education": ("education_savings_plan", "junior_savings"),
    "family protection": ("life_insurance",), "bigger home": ("remortgage",),
    "paying down the mortgage": ("remortgage",), "household budgeting": ("easy_access_savings",),
    "growing investments": ("index_fund_portfolio", "wealth_management"),
    "retirement saving": ("retirement_pension",), "tax planning": ("wealth_management", "retirement_pension"),
    "retirement planning": ("retirement_pension", "retirement_annuity"), "pension top-up": ("retirement_pension",),
    "estate planning": ("wealth_management", "life_insurance"), "low-risk savings": ("fixed_term_deposit",),
    "steady income": ("retirement_annuity", "fixed_term_deposit"), "healthcare costs": ("health_insurance",),
    "helping grandchildren": ("junior_savings",),
    "business loans": ("business_loan",), "payment processing": ("merchant_payments",),
    "treasury services": ("treasury_services",), "supply chain financing": ("supply_chain_finance",),
    "corporate cards": ("business_credit_card",), "payroll processing": ("payroll_services",),
    "business insurance": ("commercial_insurance",), "cash management": ("treasury_services",),
    "equipment finance": ("equipment_leasing",), "working capital": ("supply_chain_finance", "business_loan"),
    # preferences
    "cashback": ("cashback_credit_card",), "rewards points": ("travel_rewards_card",),
    "travel perks": ("travel_rewards_card", "travel_insurance"), "premium service": ("premium_current_account",),
    "personal adviser": ("wealth_management",), "ethical investing": ("index_fund_portfolio",),
    "savings goals": ("easy_access_savings",), "family plans": ("life_insurance", "junior_savings"),
    "low-risk options": ("fixed_term_deposit",), "tax efficiency": ("retirement_pension",),
    "international expansion": ("treasury_services",), "digital payments": ("merchant_payments",),
    "employee benefits": ("payroll_services",), "energy efficiency": ("green_business_loan",),
    "new store openings": ("business_loan",), "automation": ("equipment_leasing",),
    "sustainable sourcing": ("green_business_loan",), "e-commerce": ("merchant_payments",),
}


def stated_intent(customers: pa.Table, catalogue: "Catalogue") -> np.ndarray:
    """(customers, products) multiplier of the profile take-up rate from the needs and preferences
    each customer stated (1 where they said nothing that points at the product)."""
    factor = np.ones((customers.num_rows, len(catalogue)))
    for column, strength in (("financial_needs", STATED_NEED_FACTOR), ("preferences", STATED_PREFERENCE_FACTOR)):
        values = pc.fill_null(customers[column].combine_chunks().cast(pa.string()), "").to_numpy(zero_copy_only=False)
        distinct, row_of = np.unique(values.astype(str), return_inverse=True)
        per_text = np.ones((len(distinct), len(catalogue)))
        for text_row, text in enumerate(distinct):
            for phrase in text.split(", "):
                for product_id in STATED_INTENT.get(phrase, ()):
                    product = catalogue.index(product_id)
                    if product is not None:
                        per_text[text_row, product] = strength
        factor *= per_text[row_of]
    return factor




def base_holdings(population: Population, catalogue: Catalogue, rules: Sequence[_BiasRule],
                  rng: np.random.Generator) -> Holdings:
    """The products each customer already has when joining the bank."""
    parts = []
    for product_id, chance in BASE_HOLDINGS.items():
        product = catalogue.index(product_id)
        if product is None:
            continue
        customer = np.arange(len(population))
        chance = chance(population) * _bias_factor(rules, customer, product)
        taken = np.flatnonzero(rng.random(len(population)) < chance)
        day = population.join_day[taken] + rng.integers(0, BASE_HOLDING_SPREAD_DAYS, len(taken))
        parts.append(Holdings(taken, np.full(len(taken), product), day))
    return Holdings.concat(parts)


def take_up_products(population: Population, events: LifeEvents, base: Holdings, catalogue: Catalogue,
                     rules: Sequence[_BiasRule], timeline: Timeline, rng: np.random.Generator,
                     intent: np.ndarray) -> Holdings:
    """Every customer's holdings: base products, then take-ups caused by life events, by the profile
    (and the needs stated in it: ``intent``, see :func:`stated_intent`) and by products already held,
    each scaled by the injected biases; only eligible products, each at most once (its first take-up)."""
    first = _first_eligible(Holdings.concat([
        base,
        _event_take_ups(events, catalogue, rules, rng),
        _profile_take_ups(population, catalogue, rules, timeline, rng, intent),
    ]), population, catalogue, timeline)
    follow_ons = _follow_on_take_ups(first, catalogue, rules, rng)
    return _first_eligible(Holdings.concat([first, follow_ons]), population, catalogue, timeline)


def _event_take_ups(events: LifeEvents, catalogue: Catalogue, rules: Sequence[_BiasRule],
                    rng: np.random.Generator) -> Holdings:
    parts = []
    for rule in EVENT_TAKE_UPS:
        product = catalogue.index(rule.product_id)
        if product is None:
            continue
        rows = np.flatnonzero(events.event == ALL_EVENTS.index(rule.event))
        chance = rule.probability * _bias_factor(rules, events.customer[rows], product)
        rows = rows[rng.random(len(rows)) < chance]
        delay = rng.gamma(2.0, rule.mean_delay_days * DECISION_DELAY_FACTOR / 2.0, len(rows))
        parts.append(Holdings(events.customer[rows], np.full(len(rows), product), events.day[rows] + delay))
    return Holdings.concat(parts)


def _profile_take_ups(population: Population, catalogue: Catalogue, rules: Sequence[_BiasRule],
                      timeline: Timeline, rng: np.random.Generator, intent: np.ndarray) -> Holdings:
    """First arrival of a Poisson process with the profile's yearly rate, from the day the customer joined."""
    customer = np.arange(len(population), dtype=np.int32)
    start = population.active_from()
    parts = []
    for product, product_id in enumerate(catalogue.product_ids):
        rule = PROFILE_RATES.get(product_id, _default_yearly_rate)
        rate = np.nan_to_num(rule(population)) * _bias_factor(rules, customer, product) * intent[:, product]
        wait = rng.exponential(DAYS_PER_YEAR, len(population)) / np.maximum(rate, 1e-9)
        taken = np.flatnonzero(start + wait <= timeline.days)
        parts.append(Holdings(taken, np.full(len(taken), product), start[taken] + wait[taken]))
    return Holdings.concat(parts)


def _default_yearly_rate(population: Population) -> np.ndarray:
    return np.full(len(population), DEFAULT_YEARLY_RATE)


def _follow_on_take_ups(held: Holdings, catalogue: Catalogue, rules: Sequence[_BiasRule],
                        rng: np.random.Generator) -> Holdings:
    parts = []
    for rule in FOLLOW_ONS:
        source, target = catalogue.index(rule.source), catalogue.index(rule.target)
        if source is None or target is None:
            continue
        rows = np.flatnonzero(held.product == source)
        rows = rows[rng.random(len(rows)) < rule.probability * _bias_factor(rules, held.customer[rows], target)]
        delay = rule.min_delay_days + rng.exponential(rule.mean_extra_delay_days, len(rows))
        parts.append(Holdings(held.customer[rows], np.full(len(rows), target), held.day[rows] + delay))
    return Holdings.concat(parts)


def _first_eligible(candidates: Holdings, population: Population, catalogue: Catalogue,
                    timeline: Timeline) -> Holdings:
    """Drop take-ups the catalogue forbids (segment, age on the day, income) or after the period,
    then keep each customer's first take-up of each product."""
    customer, product, day = candidates.customer, candidates.product, candidates.day
    is_org = population.is_org[customer]
    segment = catalogue.segment[product]
    own_segment = np.where(is_org, SEGMENTS.index("organization"), SEGMENTS.index("individual"))
    eligible = (segment == SEGMENTS.index("both")) | (segment == own_segment)
    min_age = catalogue.min_age[product]
    with np.errstate(invalid="ignore"):
        eligible &= is_org | np.isnan(min_age) | (population.age_on(customer, day, timeline) >= min_age)
        min_income = catalogue.min_income[product]
        eligible &= np.isnan(min_income) | (population.income[customer] >= min_income)
    eligible &= day <= timeline.days
    kept = candidates.subset(np.flatnonzero(eligible))
    key = kept.customer.astype(np.int64) * len(catalogue) + kept.product
    order = np.lexsort((kept.day, key))
    first = order[np.unique(key[order], return_index=True)[1]]
    return kept.subset(first)


def holding_table(holdings: Holdings, customer_ids: pa.Array, catalogue: Catalogue, timeline: Timeline) -> pa.Table:
    order = np.lexsort((holdings.product, holdings.day, holdings.customer))
    return pa.table({
        "customer_id": customer_ids.take(pa.array(holdings.customer[order])),
        "product_id": _labels(holdings.product[order], catalogue.product_ids),
        "start_date": pa.array(timeline.dates(holdings.day[order])),
    })


# ==============================================================================================
# Social posts
# ==============================================================================================

# Chance that an event shows in the posts of a customer who posts at all; the rest show only in
# transactions, or nowhere.
EVENT_POST_SHARE = {
    "home_purchase": 0.6, "new_child": 0.7, "marriage": 0.7, "travel": 0.55, "retirement": 0.5,
    "business_start": 0.6, "business_growth": 0.55, "health": 0.3, "study_debt": 0.4, "new_job": 0.6,
    "car_purchase": 0.45, "financial_stress": 0.35, "investing": 0.4, "international_trade": 0.5,
    "cash_flow_stress": 0.4, "hiring": 0.6, "equipment_purchase": 0.45, "sustainability": 0.6,
}
SECOND_EVENT_POST_SHARE = 0.6
# People talk about plans before they happen (house hunting, a pregnancy, wedding planning), so
# event posts run from four months before the event to a week after it.
EVENT_POST_WINDOW_DAYS = (-120, 7)
NOISE_POSTS_PER_YEAR = 0.65
# (kind of noise post, share) for individuals and organizations
INDIVIDUAL_NOISE = (("noise_individual", 0.75), ("negative_individual", 0.15), ("near_miss", 0.10))
ORGANIZATION_NOISE = (("noise_organization", 0.85), ("negative_organization", 0.15))
PLATFORMS = ("Twitter", "Instagram", "Facebook", "Reddit", "LinkedIn")
PLATFORM_SHARES = {False: (0.35, 0.3, 0.22, 0.1, 0.03), True: (0.3, 0.1, 0.1, 0.0, 0.5)}
PLATFORM_MISSING_SHARE = 0.01
POSTING_HOUR_WEIGHTS = (1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 3, 3, 3, 3, 4, 3, 3, 3, 3, 4, 5, 6, 6, 5, 4, 2)
POST_POOL_SIZE = 1500

POST_TEMPLATES: dict[str, tuple[str, ...]] = {
    "home_purchase": (
        "We finally got the keys!! {emoji}", "Closing day is done. Homeowners at last {emoji}",
        "Moving into our first place in {city} this {weekday}", "Signed the papers on a little {n}-bedroom house, "
        "can't believe it's ours", "Goodbye landlord, hello mortgage lol", "Spent the whole weekend at open "
        "houses in {city}, think we found the one", "Offer accepted!!! {emoji}", "Painting walls in our new "
        "home, every room a different color", "First night in the new house. So many boxes.",
        "Just became a homeowner in {city}. Adulting level: max", "house hunting is exhausting but we're "
        "finally under contract", "Our own front door. Still can't believe it {emoji}"),
    "new_child": (
        "Baby #{nth} arriving in {month}! {emoji}", "Welcome to the world, our little {kid} {emoji}",
        "Nursery is finally painted, just waiting for the little one", "Sleepless nights and the happiest "
        "days. Parenthood is wild", "We're expecting!! Due in {month}", "Gender reveal party today, it's a {kid}!",
        "Parental leave starts {weekday}, bring on the baby", "{n} weeks to go until we meet our {kid}",
        "Diapers, bottles, car seat... our living room looks like a baby store", "Our family just got a "
        "little bigger {emoji}", "Tiny socks everywhere. Life changed overnight"),
    "marriage": (
        "I said YES!! {emoji}", "Officially married! Best day of my life", "Engaged!!! Wedding planned for {month}",
        "Wedding venue booked in {city}, now the guest list nightmare starts", "Mr & Mrs as of this {weekday} "
        "{emoji}", "Tasting wedding cakes all day, tough life", "Honeymoon in {dest} after the big day",
        "{n} months till we tie the knot", "Just married, still floating", "Sending out save-the-dates today!",
        "Put a ring on it {emoji}"),
    "travel": (
        "Just landed in {dest} {emoji}", "Booked flights to {dest} for {month}!", "Passport renewed, ready "
        "for {dest}", "Beach, sunshine and zero emails. {dest} is unreal", "Airport lounge life before the "
        "long flight to {dest}", "Counting down the days until {dest}", "Road trip through {dest}, {n} stops "
        "planned", "Jet lag is real but so worth it", "Any tips for {dest}? Going in {month}",
        "Packing for {dest}, why do I always overpack", "Out of office: {dest} {emoji}"),
    "retirement": (
        "Last day at work after {years} years. Retired!", "Retirement party tonight, the team spoiled me",
        "First Monday of retirement. No alarm clock {emoji}", "Handed in my notice: retiring in {month}",
        "Time for golf, grandkids and gardening. Retired life!", "After {years} years I'm finally hanging up "
        "my work boots", "Pension paperwork done, officially retired", "Retired this {weekday}, now what do "
        "I do with my mornings?", "Planning the first trip of my retirement", "No more commute. Ever. {emoji}"),
    "business_start": (
        "Launched my own business today {emoji}", "Quit my job to go all in on my startup", "Registered my "
        "LLC! Small business owner now", "Our little bakery opens in {city} on {weekday}", "Side hustle is "
        "officially a company", "Day one of being my own boss", "Just signed the lease for my first shop in "
        "{city}", "Building something of my own, website goes live {weekday}", "Business cards printed, "
        "first client signed {emoji}"),
    "business_growth": (
        "We just opened our second location in {city}!", "Revenue up {pct}% this quarter, proud of this team",
        "Expanding! New office in {city} opening in {month}", "Record month for orders, scaling up production",
        "Our team grew to {n}0 people this year", "Signed our biggest client yet {emoji}", "Demand is through "
        "the roof, time to scale", "Now shipping to {n} new states!", "Big news: we're expanding our product "
        "line in {month}", "Best quarter in our history {emoji}"),
    "health": (
        "Back home after {n} days in hospital, thank you nurses", "Surgery went well, long recovery ahead",
        "Another round of physio today, slowly getting there", "Doctor appointments every week, exhausting",
        "Broke my wrist playing {sport}, ouch", "Medical bills are piling up after the ER visit",
        "Health scare this month. Take care of yourselves", "Recovering from knee surgery, Netflix "
        "recommendations welcome", "Finally got a diagnosis after months of tests"),
    "study_debt": (
        "Student loan payments start again next month, ugh", "Just enrolled in a master's program in {city}!",
        "Tuition went up again, how is anyone supposed to afford this", "{debt}k in student debt and counting",
        "Grad school acceptance letter came in today {emoji}", "Refinancing my student loans, any advice?",
        "Paying off student loans feels like it will take forever", "Financial aid office all morning, send "
        "coffee", "Back to school at my age, wish me luck"),
    "new_job": (
        "Excited to announce I've joined {company} as {role}!", "New job starts {weekday} {emoji}",
        "Signed the offer! Big raise and a shorter commute", "Last day at the old job, onto the next chapter",
        "First week at the new job done, great team", "Got promoted to {role}!", "Relocating to {city} for a "
        "new role", "After {n} interviews I finally got the job!!", "Onboarding paperwork all day, new job life"),
    "car_purchase": (
        "Picked up my new car today {emoji}", "Finally traded in the old car for {car}", "Test drove {car} this "
        "weekend, signing tomorrow", "New wheels! Road trip anyone?", "Car shopping is the worst, but we got "
        "{car}", "Goodbye bus pass, hello {car}", "Went electric: picked up {car}", "The dealership took {n} "
        "hours but I drove home in {car}", "first car payment done lol"),
    "financial_stress": (
        "Rent went up again and I don't know how to cover it", "Overdraft fees are killing me",
        "Maxed out my credit card again, need to get this under control", "Living paycheck to paycheck and "
        "it's exhausting", "Bills piling up, can't catch a break {emoji}", "Got laid off today. Scary times",
        "Anyone consolidated their debt? drowning in payments", "Had to skip a bill this month, stressed",
        "Cutting every expense I can, money is so tight"),
    "investing": (
        "Bought my first ETF today {emoji}", "Started investing ${amount} a month, compounding let's go",
        "Reading up on index funds all weekend", "My portfolio is finally green", "Opened a brokerage account, "
        "time to learn the stock market", "Crypto or index funds? Asking for a friend", "Dollar-cost averaging "
        "into the S&P 500 from now on", "Finally putting my savings to work in the market", "Stock market "
        "down {pct}%... buying the dip"),
    "international_trade": (
        "Our products are now available in {country}!", "First container shipped to {country} {emoji}",
        "Signed a distribution deal with a partner in {country}", "Exploring new suppliers in {country}, FX "
        "rates are wild", "Exporting to {n} countries now. Going global!", "Visited our manufacturing partner "
        "in {country} this week", "Import tariffs and currency swings keep us busy", "Opening our first "
        "overseas office in {country}", "International orders up {pct}% this quarter"),
    "cash_flow_stress": (
        "Waiting on invoices from {n} clients, cash flow is tight", "Raw material prices up again, margins are "
        "getting squeezed", "Late payments from customers are hurting small businesses like ours",
        "Navigating a tough quarter, cash flow planning is KEY", "Supplier wants payment upfront, customers "
        "pay in 90 days. Fun.", "Seasonal dip hit hard this year", "Had to delay a few purchases until "
        "receivables come in", "Working capital is the real struggle for growing companies",
        "Slow quarter. Tightening belts"),
    "hiring": (
        "We're hiring! {n} open roles in {city}", "Welcome to the {n} new team members who joined this month",
        "Join our team: engineers, sales and support roles open", "Growing the crew: now hiring in {city}",
        "Job fair this {weekday}, come say hi", "Onboarding our biggest class of new hires yet", "Our "
        "headcount doubled this year", "Internship applications are open now", "Know someone great? We're "
        "recruiting {emoji}"),
    "equipment_purchase": (
        "New production line installed {emoji}", "Upgraded our fleet with {n} new delivery vans", "Just took "
        "delivery of a new CNC machine", "New tractors arrived for the harvest season", "Replacing all our "
        "laptops and servers this quarter", "Investing in new kitchen equipment for the restaurant",
        "Our new warehouse robots are up and running", "Machinery upgrade complete, output up {pct}%",
        "New ovens, new possibilities"),
    "sustainability": (
        "Solar panels installed on our roof {emoji}", "We're going carbon neutral by {year}", "Switched our "
        "fleet to electric vehicles", "Proud to launch our sustainable packaging", "Energy audit done, "
        "cutting consumption by {pct}%", "Our new collection uses 100% recycled materials", "Planted {n}00 "
        "trees with our customers this month", "Working toward B Corp certification", "Green energy now "
        "powers our whole factory"),
    "noise_individual": (
        "Best {food} in {city}, no contest", "Trying a new {food} place tonight", "{team} won again!!",
        "Can't believe {team} lost like that", "Morning run done, {n} miles", "New running shoes, any "
        "suggestions?", "Loving the new fashion trends", "Big sale at {shop}, bought way too much",
        "Coffee first, questions later", "Binge-watched a whole series this weekend", "Beautiful sunset in "
        "{city} tonight", "Hot take: pineapple belongs on pizza", "Who else is watching the game tonight?",
        "Homemade {food} turned out great", "Finally finished that book, highly recommend", "Gym was packed "
        "today", "Rainy {weekday}, perfect for staying in", "Concert last night was amazing {emoji}",
        "My dog stole my sandwich", "Farmers market haul {emoji}", "Does anyone actually like {weekday}s?",
        "Weekend plans: nothing, and I love it", "This new phone update is actually nice", "Finished a 5K "
        "today!", "Podcast recommendations? Long drive ahead", "Watching {team} with friends tonight"),
    "negative_individual": (
        "Worst customer service ever at {shop}", "My bank charged me a fee again. Unbelievable", "Flight "
        "delayed {n} hours, great", "Internet down again, thanks a lot {provider}", "So tired of this weather",
        "Terrible {food} tonight, never again", "App keeps crashing, so frustrating", "Stuck in traffic for "
        "{n} hours in {city}", "Why is everything so expensive now", "Lost my wallet today, awful day",
        "{team} are a disaster this season"),
    "near_miss": (
        "My sister just bought a house, so happy for her!", "Watching house hunting shows again, guilty "
        "pleasure", "Friend's wedding this weekend, need a gift idea", "Babysitting my nephew today",
        "Dreaming about travel but stuck at my desk", "Car alarm went off all night on our street",
        "Retirement is so far away lol", "Stock market memes are the best memes", "My coworker quit to start "
        "a company, brave", "Helped my parents move into their new condo"),
    "noise_organization": (
        "Thank you to our amazing customers!", "Check out our new {product}", "Proud to sponsor the {city} "
        "marathon", "Exciting collaborations coming soon!", "Happy holidays from all of us", "Behind the scenes "
        "at our {city} studio", "Our team volunteered at the food bank today", "Tune in to our webinar this "
        "{weekday}", "Customer spotlight: how {city} businesses use our products", "We won an industry award! "
        "{emoji}", "Our {product} launches {weekday}", "Meet us at the trade show in {city}"),
    "negative_organization": (
        "Shipping delays due to weather, sorry for the wait", "Supply issues again, thanks for your patience",
        "Our website is down for maintenance, apologies", "Tough market conditions this quarter",
        "Disappointed by the new regulations affecting small businesses"),
}
SLOT_VALUES: dict[str, tuple[str, ...]] = {
    "city": tuple(c for c, *_ in CITIES) + ("Austin", "Denver", "Boston", "Atlanta"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "month": ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"),
    "n": ("2", "3", "4", "5", "6", "8"),
    "nth": ("2", "2", "3", "4"),
    "kid": ("baby girl", "baby boy", "little one", "twins"),
    "dest": ("Lisbon", "Tokyo", "Bali", "Paris", "Cancun", "Iceland", "Rome", "Banff", "Mexico City",
             "Thailand", "Greece", "Hawaii", "Peru"),
    "years": ("25", "30", "35", "40", "42"),
    "pct": ("12", "18", "20", "30", "35", "50"),
    "debt": ("25", "40", "60", "85", "120"),
    "amount": ("100", "200", "250", "500", "1,000"),
    "year": ("2026", "2027", "2028", "2030"),
    "sport": ("basketball", "soccer", "tennis", "pickleball", "volleyball"),
    "car": ("a Tesla Model 3", "a used Civic", "a RAV4", "a Mustang", "an F-150", "a Prius", "an EV",
            "a minivan"),
    "provider": ("Comcast", "Verizon", "AT&T", "Spectrum"),
    "company": ("Google", "a startup", "the hospital", "a law firm", "Amazon", "the city council"),
    "role": ("senior analyst", "team lead", "nurse practitioner", "product manager", "software engineer",
             "store manager"),
    "food": ("tacos", "ramen", "pizza", "sushi", "bbq", "pho", "dim sum", "burgers", "bagels"),
    "team": ("the Knicks", "the Lakers", "the Bears", "the Seahawks", "the Heat", "the Astros", "the Suns",
             "the Giants"),
    "shop": ("Target", "Costco", "the mall", "Trader Joe's", "Walmart", "Best Buy"),
    "country": ("Mexico", "Germany", "Japan", "Vietnam", "Canada", "Brazil", "India", "the UK"),
    "product": ("collection", "summer line", "app update", "flagship store", "service plan"),
}
POSITIVE_EMOJIS = ("😂", "🙌", "😍", "👍", "🔥", "😅", "😊")
POST_EMOJIS = {
    "home_purchase": ("🏡", "🔑", "🎉", "📦"), "new_child": ("👶", "🍼", "💕", "🥰"), "marriage": ("💍", "💒", "🥂", "❤️"),
    "travel": ("✈️", "🌴", "🌍", "🏖️"), "retirement": ("🎉", "⛳", "🌅"), "business_start": ("🚀", "💼", "🙌"),
    "business_growth": ("📈", "🚀", "🎉"), "health": ("🏥", "💊", "🙏"), "study_debt": ("🎓", "📚", "😩"),
    "new_job": ("💼", "🎉", "🙌"), "car_purchase": ("🚗", "⚡", "🔑"), "financial_stress": ("😩", "😞", "💸"),
    "investing": ("📈", "💰", "🤓"), "international_trade": ("🌍", "🚢", "📦"), "cash_flow_stress": ("😬", "📉"),
    "hiring": ("👋", "🙌", "💼"), "equipment_purchase": ("🏭", "🚚", "⚙️"), "sustainability": ("🌱", "♻️", "☀️"),
    "noise_individual": POSITIVE_EMOJIS, "near_miss": POSITIVE_EMOJIS, "negative_individual": ("😡", "🙄", "😤", "😒"),
    "noise_organization": ("🎉", "🙌", "📣", "🚀"), "negative_organization": ("😬", "🙏"),
}
POST_HASHTAGS = {
    "home_purchase": ("#newhome", "#homeowner", "#movingday", "#firsthome"),
    "new_child": ("#newborn", "#babyontheway", "#parenthood", "#family"), "marriage": ("#justmarried",
    "#engaged", "#weddingplanning"), "travel": ("#wanderlust", "#travel", "#vacation"), "retirement": (
    "#retired", "#retirementlife"), "business_start": ("#smallbusiness", "#entrepreneur", "#startup"),
    "business_growth": ("#growth", "#smallbusiness", "#expansion"), "health": ("#recovery", "#health"),
    "study_debt": ("#studentloans", "#gradschool"), "new_job": ("#newjob", "#career", "#hired"),
    "car_purchase": ("#newcar", "#ev", "#roadtrip"), "financial_stress": ("#broke", "#debt", "#stressed"),
    "investing": ("#investing", "#stocks", "#ETF", "#crypto"), "international_trade": ("#export", "#global",
    "#trade"), "cash_flow_stress": ("#smallbiz", "#cashflow"), "hiring": ("#hiring", "#jobs", "#careers"),
    "equipment_purchase": ("#manufacturing", "#upgrade"), "sustainability": ("#sustainability", "#green",
    "#netzero"), "noise_individual": ("#life", "#weekend", "#mood", "#tbt", "#foodie", "#sports"),
    "near_miss": ("#life", "#family", "#weekend"), "negative_individual": ("#fail", "#annoyed", "#mondays"),
    "noise_organization": ("#business", "#community", "#team", "#news"),
    "negative_organization": ("#update", "#supplychain"),
}
POST_KINDS = tuple(POST_TEMPLATES)


@dataclass
class SocialPosts:
    customer: np.ndarray
    second: np.ndarray     # seconds since the start of the period
    content: np.ndarray    # index into the rendered post pool
    platform: np.ndarray   # index into PLATFORMS; -1 missing
    pool: list[str]


def draw_social_posts(population: Population, events: LifeEvents, timeline: Timeline,
                      rng: np.random.Generator) -> SocialPosts:
    """Posts about the customers' own life events around the day they happen, and everyday noise;
    also marks which events show in posts."""
    pool, offsets, sizes = _render_post_pool(random.Random(int(rng.integers(2**63))))
    shown = (population.post_activity[events.customer] > 0) & (
        rng.random(len(events.event)) < np.array([EVENT_POST_SHARE[e] for e in ALL_EVENTS])[events.event])
    events.in_posts = shown
    rows = np.flatnonzero(shown)
    rows = np.repeat(rows, 1 + (rng.random(len(rows)) < SECOND_EVENT_POST_SHARE))
    event_customer = events.customer[rows]
    event_day = events.day[rows] + rng.integers(*EVENT_POST_WINDOW_DAYS, len(rows), endpoint=True)
    event_kind = events.event[rows].astype(np.int16)  # ALL_EVENTS come first in POST_KINDS

    noise_customer, noise_kind = _noise_posts(population, timeline, rng)
    noise_day = _uniform_days(rng, population.active_from()[noise_customer], timeline.days)
    customer = np.concatenate([event_customer, noise_customer])
    day = np.concatenate([event_day, noise_day])
    kind = np.concatenate([event_kind, noise_kind])
    inside = (day >= population.active_from()[customer]) & (day <= timeline.days)
    customer, day, kind = customer[inside], day[inside], kind[inside]

    hour = _choice(rng, POSTING_HOUR_WEIGHTS, len(day)).astype(np.int64)
    second = day.astype(np.int64) * 86_400 + hour * 3_600 + rng.integers(0, 3_600, len(day))
    platform = np.zeros(len(customer), np.int16)
    for is_org, shares in PLATFORM_SHARES.items():
        rows = np.flatnonzero(population.is_org[customer] == is_org)
        platform[rows] = _choice(rng, shares, len(rows))
    platform[rng.random(len(customer)) < PLATFORM_MISSING_SHARE] = -1
    return SocialPosts(customer=customer, second=second, content=_pick_within(rng, offsets, sizes, kind),
                       platform=platform, pool=pool)


def _noise_posts(population: Population, timeline: Timeline, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Everyday posts unrelated to any event of the customer's (a few only look related)."""
    active_years = (timeline.days - population.active_from()) / DAYS_PER_YEAR
    counts = rng.poisson(NOISE_POSTS_PER_YEAR * active_years * population.post_activity)
    customer = np.repeat(np.arange(len(population), dtype=np.int32), counts)
    kind = np.zeros(len(customer), np.int16)
    for is_org, mix in ((False, INDIVIDUAL_NOISE), (True, ORGANIZATION_NOISE)):
        rows = np.flatnonzero(population.is_org[customer] == is_org)
        codes = np.array([POST_KINDS.index(name) for name, _ in mix], np.int16)
        kind[rows] = codes[_choice(rng, [share for _, share in mix], len(rows))]
    return customer, kind


def _render_post_pool(rnd: random.Random) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Many distinct wordings per kind of post: templates with their slots filled, casing, punctuation,
    emojis and hashtags varied. Rendered once; posts pick from the pool by index."""
    pool: list[str] = []
    sizes = []
    for kind in POST_KINDS:
        emojis, hashtags = POST_EMOJIS[kind], POST_HASHTAGS[kind]
        rendered = sorted({_render_post(rnd.choice(POST_TEMPLATES[kind]), rnd, emojis, hashtags)
                           for _ in range(POST_POOL_SIZE)})
        pool.extend(rendered)
        sizes.append(len(rendered))
    sizes_array = np.array(sizes)
    return pool, np.concatenate([[0], np.cumsum(sizes_array)[:-1]]), sizes_array


def _render_post(template: str, rnd: random.Random, emojis: Sequence[str], hashtags: Sequence[str]) -> str:
    slots = {name: rnd.choice(values) for name, values in SLOT_VALUES.items() if "{" + name + "}" in template}
    text = template.format(emoji=rnd.choice(emojis), **slots) if "{emoji}" in template else template.format(**slots)
    casing = rnd.random()
    if casing < 0.12:
        text = text.lower()
    elif casing < 0.16:
        text = text.upper()
    if rnd.random() < 0.25 and text[-1].isalnum():
        text += rnd.choice(("!", "!!", "!!!", ".", "..."))
    if rnd.random() < 0.3:
        text += " " + rnd.choice(emojis)
    if rnd.random() < 0.3:
        text += " " + " ".join(rnd.sample(list(hashtags), rnd.randint(1, min(2, len(hashtags)))))
    return text


def post_table(posts: SocialPosts, customer_ids: pa.Array, timeline: Timeline, file_format: str) -> pa.Table:
    order = np.argsort(posts.second, kind="stable")
    timestamp = pa.array(timeline.start.astype("datetime64[s]") + posts.second[order].astype("timedelta64[s]"))
    if file_format == "csv":  # ISO 8601 with the "T"; Parquet keeps the typed timestamp
        timestamp = pc.strftime(timestamp, format="%Y-%m-%dT%H:%M:%S")
    return pa.table({
        "post_id": _sequence_ids("P", len(order)),
        "customer_id": customer_ids.take(pa.array(posts.customer[order])),
        "platform": _labels(posts.platform[order], PLATFORMS),
        "content": pa.DictionaryArray.from_arrays(pa.array(posts.content[order]), pa.array(posts.pool)),
        "timestamp": timestamp,
    })


def _sequence_ids(prefix: str, n: int) -> pa.Array:
    numbers = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), max(8, len(str(n))), "0")
    return pc.binary_join_element_wise(prefix, numbers, "")


# ==============================================================================================
# Transactions
# ==============================================================================================

@dataclass(frozen=True)
class TransactionKind:
    """A kind of payment: its canonical category and type, its typical amount for a typical customer
    (income REFERENCE_INCOME, or revenue REFERENCE_REVENUE), and how the amount scales with income."""

    category: str
    type: str
    amount: float
    modes: tuple[str, ...]
    elasticity: float = 0.6
    spread: float = 0.5
    monthly: bool = False


CARD = ("Debit Card", "Debit Card", "Credit Card", "Credit Card", "Mobile Wallet", "Cash")
BILL = ("Direct Debit", "Direct Debit", "Bank Transfer")
COMPANY = ("Wire Transfer", "ACH", "ACH", "Corporate Card", "Check")
TRANSACTION_KINDS: dict[str, TransactionKind] = {
    # everyday spend of individuals
    "groceries": TransactionKind("groceries", "Purchase", 65, CARD),
    "dining": TransactionKind("dining", "Purchase", 38, CARD),
    "utilities": TransactionKind("utilities", "Bill Payment", 140, BILL, 0.4, 0.3, monthly=True),
    "transport": TransactionKind("transport", "Purchase", 45, CARD),
    "shopping": TransactionKind("shopping", "Purchase", 90, CARD, 0.8),
    "entertainment": TransactionKind("entertainment", "Subscription", 18, ("Credit Card", "Debit Card"), 0.3, 0.4,
                                     monthly=True),
    "health": TransactionKind("health", "Purchase", 55, CARD, 0.3),
    "travel": TransactionKind("travel", "Purchase", 420, ("Credit Card", "Credit Card", "Debit Card"), 0.9, 0.7),
    "education": TransactionKind("education", "Purchase", 120, ("Debit Card", "Bank Transfer"), 0.5),
    # everyday spend of organizations
    "payroll": TransactionKind("payroll", "Payroll", 90_000, ("ACH", "Direct Deposit"), 1.0, 0.3, monthly=True),
    "suppliers": TransactionKind("suppliers", "Supplier Payment", 30_000, COMPANY, 1.0, 0.8),
    "rent": TransactionKind("rent", "Rent", 18_000, ("ACH", "Direct Debit"), 0.9, 0.3, monthly=True),
    "marketing": TransactionKind("marketing", "Purchase", 8_000, ("Corporate Card", "Wire Transfer"), 1.0, 0.8),
    "equipment": TransactionKind("equipment", "Purchase", 12_000, COMPANY, 1.0, 0.9),
    "tax": TransactionKind("tax", "Tax Payment", 40_000, ("ACH", "Wire Transfer"), 1.0, 0.4),
    "business_utilities": TransactionKind("utilities", "Bill Payment", 3_000, ("Direct Debit", "ACH"), 0.8, 0.3,
                                          monthly=True),
    "business_travel": TransactionKind("travel", "Purchase", 2_500, ("Corporate Card",), 0.7, 0.7),
    # what life events leave in the account
    "down_payment": TransactionKind("housing", "Down Payment Transfer", 40_000, ("Wire Transfer",), 1.0, 0.4),
    "furniture": TransactionKind("shopping", "Furniture Store", 2_500, ("Credit Card", "Debit Card"), 0.8, 0.6),
    "baby_store": TransactionKind("shopping", "Nursery & Baby Store", 350, CARD, 0.5, 0.6),
    "wedding_venue": TransactionKind("wedding", "Wedding Venue", 12_000, ("Bank Transfer", "Credit Card"), 0.8, 0.5),
    "flight": TransactionKind("travel", "Airline Tickets", 900, ("Credit Card", "Debit Card"), 0.8, 0.5),
    "hotel": TransactionKind("travel", "Hotel Booking", 1_100, ("Credit Card", "Debit Card"), 0.8, 0.6),
    "adviser_fee": TransactionKind("financial services", "Financial Adviser Fee", 1_500, ("Bank Transfer",), 0.7, 0.4),
    "company_registration": TransactionKind("business", "Company Registration", 800, ("Debit Card",), 0.3, 0.4),
    "shop_fit_out": TransactionKind("business", "Business Supplies", 4_000, ("Debit Card", "Credit Card"), 0.6, 0.7),
    "hospital": TransactionKind("health", "Hospital Bill", 2_500, ("Credit Card", "Bank Transfer"), 0.3, 0.8),
    "pharmacy": TransactionKind("health", "Pharmacy", 120, CARD, 0.2, 0.6),
    "tuition": TransactionKind("education", "Tuition Fee", 8_000, ("Bank Transfer",), 0.3, 0.5),
    "relocation": TransactionKind("transport", "Moving Company", 1_800, ("Credit Card", "Debit Card"), 0.5, 0.5),
    "car_dealer": TransactionKind("transport", "Car Dealer", 6_000, ("Bank Transfer", "Debit Card"), 0.8, 0.5),
    "overdraft_fee": TransactionKind("fees", "Overdraft Fee", 35, ("Account Debit",), 0.0, 0.2),
    "payday_lender": TransactionKind("loans", "Payday Loan Repayment", 450, ("Debit Card", "Cash"), 0.3, 0.4),
    "brokerage_transfer": TransactionKind("investments", "Brokerage Transfer", 3_000, ("Bank Transfer",), 1.0, 0.7),
    "office_lease": TransactionKind("rent", "New Premises Lease", 60_000, ("Wire Transfer",), 1.0, 0.5),
    "international_wire": TransactionKind("suppliers", "International Wire", 80_000, ("Wire Transfer",), 1.0, 0.7),
    "late_payment_penalty": TransactionKind("tax", "Late Payment Penalty", 2_500, ("ACH",), 0.8, 0.6),
    "recruitment_agency": TransactionKind("payroll", "Recruitment Agency", 15_000, ("Wire Transfer", "ACH"), 0.8, 0.5),
    "machinery": TransactionKind("equipment", "Machinery Purchase", 120_000, ("Wire Transfer",), 1.0, 0.7),
    "solar_installation": TransactionKind("equipment", "Solar Installation", 90_000, ("Wire Transfer",), 0.9, 0.5),
    # what products leave in the account after take-up
    "mortgage_payment": TransactionKind("housing", "Mortgage Payment", 1_300, BILL, 1.0, 0.25, monthly=True),
    "loan_repayment": TransactionKind("loans", "Loan Repayment", 380, BILL, 0.8, 0.35, monthly=True),
    "card_repayment": TransactionKind("cards", "Credit Card Repayment", 600, BILL, 0.8, 0.6, monthly=True),
    "insurance_premium": TransactionKind("insurance", "Insurance Premium", 95, BILL, 0.5, 0.4, monthly=True),
    "pension_contribution": TransactionKind("pensions", "Pension Contribution", 300, BILL, 1.0, 0.3, monthly=True),
    "investment_contribution": TransactionKind("investments", "Investment Contribution", 400, BILL, 1.0, 0.5,
                                               monthly=True),
    "savings_transfer": TransactionKind("savings", "Savings Transfer", 250, BILL, 0.8, 0.5, monthly=True),
    "account_fee": TransactionKind("fees", "Account Fee", 25, ("Account Debit",), 0.0, 0.0, monthly=True),
    "business_loan_repayment": TransactionKind("loans", "Loan Repayment", 25_000, ("ACH", "Direct Debit"), 1.0, 0.4,
                                               monthly=True),
    "lease_payment": TransactionKind("equipment", "Lease Payment", 9_000, ("ACH", "Direct Debit"), 1.0, 0.4,
                                     monthly=True),
    "service_fee": TransactionKind("fees", "Banking Service Fee", 600, ("Direct Debit",), 0.7, 0.4, monthly=True),
}
KIND_NAMES = tuple(TRANSACTION_KINDS)
EVERYDAY_TRANSACTIONS_PER_YEAR = 1.5
# Share of each everyday kind per life stage (individuals) and for organizations.
EVERYDAY_MIX: dict[str, dict[str, float]] = {
    "student": {"groceries": .22, "dining": .2, "utilities": .05, "transport": .15, "shopping": .12,
                "entertainment": .14, "health": .02, "travel": .03, "education": .07},
    "young_adult": {"groceries": .22, "dining": .2, "utilities": .08, "transport": .13, "shopping": .15,
                    "entertainment": .11, "health": .03, "travel": .06, "education": .02},
    "family": {"groceries": .32, "dining": .12, "utilities": .11, "transport": .12, "shopping": .14,
               "entertainment": .07, "health": .05, "travel": .04, "education": .03},
    "established": {"groceries": .26, "dining": .18, "utilities": .1, "transport": .12, "shopping": .14,
                    "entertainment": .08, "health": .04, "travel": .07, "education": .01},
    "pre_retirement": {"groceries": .28, "dining": .15, "utilities": .11, "transport": .11, "shopping": .13,
                       "entertainment": .07, "health": .07, "travel": .07, "education": .01},
    "retired": {"groceries": .3, "dining": .12, "utilities": .12, "transport": .08, "shopping": .1,
                "entertainment": .07, "health": .13, "travel": .08},
    "organization": {"payroll": .2, "suppliers": .3, "rent": .1, "marketing": .12, "equipment": .08, "tax": .07,
                     "business_utilities": .08, "business_travel": .05},
}


@dataclass(frozen=True)
class EventTransaction:
    """A life event leaves a payment of this kind with this chance, between these days around it."""

    event: str
    kind: str
    probability: float
    first_day: int
    last_day: int


EVENT_TRANSACTIONS = (
    EventTransaction("home_purchase", "down_payment", 0.6, -20, 3),
    EventTransaction("home_purchase", "furniture", 0.5, 3, 60),
    EventTransaction("new_child", "baby_store", 0.6, -60, 30),
    EventTransaction("marriage", "wedding_venue", 0.5, -180, -14),
    EventTransaction("travel", "flight", 0.6, -60, -7),
    EventTransaction("travel", "hotel", 0.4, -30, 0),
    EventTransaction("retirement", "adviser_fee", 0.2, -60, 60),
    EventTransaction("business_start", "company_registration", 0.5, -30, 0),
    EventTransaction("business_start", "shop_fit_out", 0.3, 0, 45),
    EventTransaction("business_growth", "office_lease", 0.3, 0, 60),
    EventTransaction("health", "hospital", 0.6, 0, 14),
    EventTransaction("health", "pharmacy", 0.5, 0, 45),
    EventTransaction("study_debt", "tuition", 0.7, -30, 14),
    EventTransaction("new_job", "relocation", 0.2, -30, 30),
    EventTransaction("car_purchase", "car_dealer", 0.7, 0, 3),
    EventTransaction("financial_stress", "overdraft_fee", 0.5, 0, 30),
    EventTransaction("financial_stress", "payday_lender", 0.3, 0, 45),
    EventTransaction("investing", "brokerage_transfer", 0.5, -7, 30),
    EventTransaction("international_trade", "international_wire", 0.6, -30, 60),
    EventTransaction("cash_flow_stress", "late_payment_penalty", 0.5, 0, 45),
    EventTransaction("hiring", "recruitment_agency", 0.5, -30, 30),
    EventTransaction("equipment_purchase", "machinery", 0.7, -7, 14),
    EventTransaction("sustainability", "solar_installation", 0.4, -30, 60),
)
# The monthly payment each held product leaves: by product first, else by catalogue category.
PRODUCT_PAYMENTS = {"premium_current_account": "account_fee", "business_loan": "business_loan_repayment",
                    "green_business_loan": "business_loan_repayment", "equipment_leasing": "lease_payment",
                    "business_credit_card": "card_repayment", "commercial_insurance": "insurance_premium"}
CATEGORY_PAYMENTS = {"mortgages": "mortgage_payment", "loans": "loan_repayment", "cards": "card_repayment",
                     "insurance": "insurance_premium", "pensions": "pension_contribution",
                     "investments": "investment_contribution", "savings": "savings_transfer",
                     "business": "service_fee"}
PAYMENTS_PER_HOLDING = 1.2
PAYMENT_MODE_MISSING_SHARE = 0.02


class Spend(NamedTuple):
    """Payments of one source: who, what kind (index into KIND_NAMES), which day, how much
    (NaN: drawn per payment; a product's monthly payments share one amount)."""

    customer: np.ndarray
    kind: np.ndarray
    day: np.ndarray
    amount: np.ndarray


@dataclass
class Transactions:
    customer: np.ndarray
    kind: np.ndarray     # index into KIND_NAMES
    day: np.ndarray
    amount: np.ndarray
    mode: np.ndarray     # index into PAYMENT_MODES; -1 missing


PAYMENT_MODES = tuple(sorted({mode for kind in TRANSACTION_KINDS.values() for mode in kind.modes}))


def draw_transactions(population: Population, events: LifeEvents, holdings: Holdings, catalogue: Catalogue,
                      timeline: Timeline, rng: np.random.Generator) -> Transactions:
    """Everyday spend, what life events leave, and the monthly payments of held products; also
    marks which events show in transactions."""
    from_events, events.in_transactions = _event_spend(events, rng)
    sources = (_everyday_spend(population, timeline, rng), from_events,
               _product_payments(population, holdings, catalogue, timeline, rng))
    customer, kind, day, amount = (np.concatenate(column) for column in zip(*sources))
    inside = (day >= population.active_from()[customer]) & (day <= timeline.days)
    customer, kind, day, amount = customer[inside], kind[inside], day[inside], amount[inside]
    to_draw = np.isnan(amount)
    amount[to_draw] = _amounts(population, customer[to_draw], kind[to_draw], rng)
    return Transactions(customer=customer, kind=kind, day=day, amount=amount, mode=_payment_modes(kind, rng))


def _everyday_spend(population: Population, timeline: Timeline, rng: np.random.Generator) -> Spend:
    """A Poisson number of purchases and bills per customer, in the mix of their life stage."""
    start = population.active_from()
    active_years = (timeline.days - start) / DAYS_PER_YEAR
    counts = rng.poisson(EVERYDAY_TRANSACTIONS_PER_YEAR * active_years * population.spend_activity)
    customer = np.repeat(np.arange(len(population), dtype=np.int32), counts)
    mix_of = np.where(population.is_org, len(LIFE_STAGES), np.maximum(population.stage, 0))[customer]
    kind = np.zeros(len(customer), np.int16)
    for code, mix in enumerate(EVERYDAY_MIX.values()):
        rows = np.flatnonzero(mix_of == code)
        names = np.array([KIND_NAMES.index(name) for name in mix], np.int16)
        kind[rows] = names[_choice(rng, list(mix.values()), len(rows))]
    day = _uniform_days(rng, start[customer], timeline.days)
    monthly = np.array([TRANSACTION_KINDS[name].monthly for name in KIND_NAMES])[kind]
    day[monthly] = _billing_day(customer[monthly], day[monthly], timeline)
    return Spend(customer, kind, day, np.full(len(day), np.nan))


def _billing_day(customer: np.ndarray, day: np.ndarray, timeline: Timeline) -> np.ndarray:
    """The same day of the month for each customer's bills: what gives the account its monthly rhythm."""
    month_start = timeline.dates(day).astype("datetime64[M]").astype("datetime64[D]")
    day_of_month = (customer.astype(np.int64) * 7_919) % 28
    return ((month_start - timeline.start).astype(np.int64) + day_of_month).astype(np.int32)


def _event_spend(events: LifeEvents, rng: np.random.Generator) -> tuple[Spend, np.ndarray]:
    """The payments life events leave around their day, and which events left one."""
    parts = []
    shown = np.zeros(len(events.event), bool)
    for rule in EVENT_TRANSACTIONS:
        rows = np.flatnonzero(events.event == ALL_EVENTS.index(rule.event))
        rows = rows[rng.random(len(rows)) < rule.probability]
        shown[rows] = True
        day = events.day[rows] + rng.integers(rule.first_day, rule.last_day, len(rows), endpoint=True)
        parts.append(Spend(events.customer[rows], np.full(len(rows), KIND_NAMES.index(rule.kind), np.int16), day,
                           np.full(len(rows), np.nan)))
    return Spend(*(np.concatenate(column) for column in zip(*parts))), shown


def _product_payments(population: Population, holdings: Holdings, catalogue: Catalogue, timeline: Timeline,
                      rng: np.random.Generator) -> Spend:
    """A run of consecutive monthly payments (same day, same amount) somewhere in each holding's life."""
    payment_of_product = _payment_kinds(catalogue)
    paying = holdings.subset(np.flatnonzero(payment_of_product[holdings.product] >= 0))
    first_day = np.maximum(paying.day, population.active_from()[paying.customer])
    first_month = (timeline.dates(first_day).astype("datetime64[M]") + 1).astype(np.int64)
    last_month = (timeline.dates(np.array([timeline.days])).astype("datetime64[M]")).astype(np.int64)[0]
    months_left = np.maximum(last_month - first_month + 1, 0)
    count = np.minimum(1 + rng.poisson(PAYMENTS_PER_HOLDING - 1, len(first_month)), months_left)
    run_start = first_month + (rng.random(len(count)) * (months_left - count + 1)).astype(np.int64)
    row = np.repeat(np.arange(len(count)), count)
    month = run_start[row] + (np.arange(len(row)) - np.repeat(np.cumsum(count) - count, count))
    day_of_month = np.minimum(_day_of_month(timeline.dates(paying.day)), 28)[row]
    date = month.astype("datetime64[M]").astype("datetime64[D]") + (day_of_month - 1)
    kind = payment_of_product[paying.product][row]
    amount = _amounts(population, paying.customer, payment_of_product[paying.product], rng)[row]
    return Spend(paying.customer[row], kind, (date - timeline.start).astype(np.int32), amount)


def _payment_kinds(catalogue: Catalogue) -> np.ndarray:
    """Per product, the kind of its monthly payment (index into KIND_NAMES), -1 for none (accounts)."""
    kinds = [PRODUCT_PAYMENTS.get(product_id, CATEGORY_PAYMENTS.get(category))
             for product_id, category in zip(catalogue.product_ids, catalogue.category)]
    return np.array([KIND_NAMES.index(kind) if kind else -1 for kind in kinds], np.int16)


def _day_of_month(dates: np.ndarray) -> np.ndarray:
    return (dates - dates.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1


def _amounts(population: Population, customer: np.ndarray, kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Typical amount of the kind, scaled to the customer's income or revenue, with lognormal noise."""
    typical = np.array([TRANSACTION_KINDS[name].amount for name in KIND_NAMES])[kind]
    elasticity = np.array([TRANSACTION_KINDS[name].elasticity for name in KIND_NAMES])[kind]
    spread = np.array([TRANSACTION_KINDS[name].spread for name in KIND_NAMES])[kind]
    amount = typical * population.scale(customer) ** elasticity * np.exp(spread * rng.standard_normal(len(kind)))
    return np.round(np.maximum(amount, 1.0), 2)


def _payment_modes(kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    width = max(len(k.modes) for k in TRANSACTION_KINDS.values())
    table = np.full((len(KIND_NAMES), width), -1, np.int16)
    for row, name in enumerate(KIND_NAMES):
        modes = TRANSACTION_KINDS[name].modes
        table[row, :len(modes)] = [PAYMENT_MODES.index(mode) for mode in modes]
    n_modes = (table >= 0).sum(axis=1)
    mode = table[kind, (rng.random(len(kind)) * n_modes[kind]).astype(np.int64)]
    mode[rng.random(len(kind)) < PAYMENT_MODE_MISSING_SHARE] = -1
    return mode


def transaction_table(transactions: Transactions, customer_ids: pa.Array, timeline: Timeline) -> pa.Table:
    """Chronological, so that transaction ids grow with time as a bank's would."""
    key = transactions.day.astype(np.int64) * len(customer_ids) + transactions.customer
    order = np.argsort(key, kind="stable")
    kind = transactions.kind[order]
    return pa.table({
        "transaction_id": _sequence_ids("T", len(order)),
        "customer_id": customer_ids.take(pa.array(transactions.customer[order])),
        "date": pa.array(timeline.dates(transactions.day[order])),
        "amount": pa.array(transactions.amount[order]),
        "category": _labels(kind, [TRANSACTION_KINDS[name].category for name in KIND_NAMES]),
        "type": _labels(kind, [TRANSACTION_KINDS[name].type for name in KIND_NAMES]),
        "payment_mode": _labels(transactions.mode[order], PAYMENT_MODES),
    })


# ==============================================================================================
# Writing
# ==============================================================================================

def _write_table(table: pa.Table, path: Path, file_format: str) -> None:
    """Write in batches, decoding dictionary columns batch by batch to keep memory flat."""
    schema = pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                        for f in table.schema])
    writer = (pa_csv.CSVWriter(path, schema, write_options=pa_csv.WriteOptions(quoting_style="needed"))
              if file_format == "csv" else pq.ParquetWriter(path, schema))
    with writer:
        for batch in table.to_batches(max_chunksize=WRITE_BATCH_ROWS):
            writer.write_batch(batch.cast(schema))
