"""Loading the bank's data: canonical tables or the hackathon workbooks, cleaned and reported.

The first layer of the seed architecture. Whatever arrives (the canonical CSV/Parquet tables of
SPEC section 2, or the hackathon's four Excel workbooks and their variants) leaves as one typed
:class:`BankData`: ids as text, numbers as numbers, dates as naive timestamps, every post scored
for sentiment with VADER. Real files are dirty, so nothing is fixed or dropped silently: every
repaired or dropped row is counted under a reason in the :class:`DataQualityReport`, which is
logged at load (counts only, never customers' words).

:func:`customer_view` then merges profiles, transaction aggregates and social sentiment into the
unified customer view, one row per customer, with group-wise numpy/pandas arithmetic so that a
hundred thousand customers take seconds.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Protocol, Sequence

import numpy as np
import pandas as pd

from caches import CacheStats, LruCache
from settings import Settings, age_band

if TYPE_CHECKING:
    from nltk.sentiment.vader import SentimentIntensityAnalyzer

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# The canonical schema (SPEC section 2)
# ----------------------------------------------------------------------------------------------

ID, TEXT, NUMBER, DATE = "id", "text", "number", "date"

SCHEMA: dict[str, dict[str, str]] = {
    "customers": {
        "customer_id": ID, "customer_type": TEXT, "age": NUMBER, "gender": TEXT, "location": TEXT,
        "income": NUMBER, "education": TEXT, "occupation": TEXT, "industry": TEXT, "employees": NUMBER,
        "interests": TEXT, "preferences": TEXT, "financial_needs": TEXT,
    },
    "transactions": {
        "transaction_id": ID, "customer_id": ID, "date": DATE, "amount": NUMBER, "category": TEXT,
        "type": TEXT, "payment_mode": TEXT,
    },
    "social_posts": {"post_id": ID, "customer_id": ID, "platform": TEXT, "content": TEXT, "timestamp": DATE},
    "products": {
        "product_id": ID, "name": TEXT, "category": TEXT, "segment": TEXT, "risk_level": NUMBER,
        "description": TEXT, "min_age": NUMBER, "min_income": NUMBER, "aliases": TEXT,
    },
    "holdings": {"customer_id": ID, "product_id": ID, "start_date": DATE},
}
REQUIRED_IDS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id",), "transactions": ("customer_id",), "social_posts": ("customer_id",),
    "products": ("product_id",), "holdings": ("customer_id", "product_id"),
}
# Tables whose own id should be unique; customers and products keep the first row of an id,
# transactions and posts drop exact repeats and rename the others (they are different events).
UNIQUE_KEYS = {"customers": "customer_id", "products": "product_id",
               "transactions": "transaction_id", "social_posts": "post_id"}
HOLDINGS_COLUMNS = ["customer_id", "product_id", "start_date", "source"]
INTEREST_COLUMNS = ["customer_id", "product_id", "evidence", "field", "similarity"]
INTEREST_FIELDS = ("preferences", "financial_needs")
TABLE_SUFFIXES = (".csv", ".parquet")

MISSING_MARKERS = frozenset({"", "nan", "NaN", "NAN", "none", "None", "NONE", "null", "NULL", "Null",
                             "n/a", "N/A", "NA", "#N/A", "-", "--", "—"})
CUSTOMER_TYPES = {"individual": "individual", "person": "individual", "retail": "individual",
                  "personal": "individual", "ind": "individual",
                  "organization": "organization", "organisation": "organization", "org": "organization",
                  "business": "organization", "company": "organization", "corporate": "organization"}
GENDERS = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}
AGE_RANGE = (0, 120)
MAX_LISTED_VALUES = 20  # distinct raw values named in the report per column; the rest are summed


class DataLoadError(Exception):
    """A file cannot be read at all; the message names the file (and sheet) and the problem."""


class SentenceEncoder(Protocol):
    """What the loader needs of ``text_models.TextEncoder``; the loader sits before that layer."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


# ----------------------------------------------------------------------------------------------
# The data-quality report
# ----------------------------------------------------------------------------------------------

@dataclass
class QualityIssue:
    """Rows or values repaired or dropped for one reason. ``code`` is the stable kind that logs carry;
    ``reason`` may quote a raw value (a date, an amount), never a customer's words."""

    code: str
    count: int
    reason: str
    action: str


@dataclass
class TableQuality:
    """What happened to one table between its source files and the cleaned frame."""

    sources: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_kept: int = 0
    issues: list[QualityIssue] = field(default_factory=list)
    missing_rate: dict[str, float] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # canonical column -> header in the source

    def label(self, column: str) -> str:
        """The column as the source file called it, so that a reason can be found in the file."""
        return self.headers.get(column, column)

    def add(self, code: str, count: int, reason: str, action: str) -> None:
        if count:
            self.issues.append(QualityIssue(code, int(count), reason, action))

    def absorb(self, part: TableQuality) -> None:
        """Adds the quality of the same table's rows in another part of the data (see ``DataQualityReport.merged``)."""
        kept = self.rows_kept + part.rows_kept
        self.missing_rate = {column: round((self.missing_rate.get(column, 0.0) * self.rows_kept
                                            + part.missing_rate.get(column, 0.0) * part.rows_kept) / kept, 4)
                             for column in {**self.missing_rate, **part.missing_rate}} if kept else {}
        self.rows_read += part.rows_read
        self.rows_kept = kept
        self.headers = self.headers or dict(part.headers)
        for issue in part.issues:
            same = next((mine for mine in self.issues if (mine.code, mine.action) == (issue.code, issue.action)), None)
            if same is None:
                self.issues.append(dataclasses.replace(issue))
            else:
                same.count += issue.count

    def finish(self, frame: pd.DataFrame) -> None:
        self.rows_kept = int(len(frame))
        self.missing_rate = {str(c): round(float(r), 4) for c, r in frame.isna().mean().items()} if len(frame) else {}


@dataclass
class DataQualityReport:
    """Per table: sources, rows read and kept, issues, missing rates; plus orphans and product evidence."""

    data_dir: str
    source_format: str = ""
    tables: dict[str, TableQuality] = field(default_factory=dict)
    orphans: dict[str, int] = field(default_factory=dict)
    ignored_sources: list[str] = field(default_factory=list)
    matched_evidence: list[dict[str, Any]] = field(default_factory=list)  # source "asked" (interest) or "paid" (holding)
    unmatched_evidence: list[dict[str, Any]] = field(default_factory=list)

    def table(self, name: str) -> TableQuality:
        return self.tables.setdefault(name, TableQuality())

    @classmethod
    def merged(cls, data_dir: str, parts: Sequence[DataQualityReport]) -> DataQualityReport:
        """One bank's report from the reports of its parts (its shards, each loaded on its own): rows
        and orphans summed, each issue summed by code and action (with the first part's reason), missing
        rates weighted by the rows each part kept; the catalogue, whole in every part, as the first part
        read it; each table's sources, the bank's own file. The evidence lists stay with the parts."""
        merged = cls(data_dir, parts[0].source_format if parts else "")
        for part in parts:
            for table, orphans in part.orphans.items():
                merged.orphans[table] = merged.orphans.get(table, 0) + orphans
            for name, quality in part.tables.items():
                if name != "products" or name not in merged.tables:
                    merged.table(name).absorb(quality)
        for name, quality in merged.tables.items():
            files = (Path(data_dir) / f"{name}{suffix}" for suffix in TABLE_SUFFIXES)
            quality.sources = [str(path) for path in files if path.is_file()]
        return merged

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def log(self) -> None:
        """Counts only: the report's raw values stay out of logs, which outlive the data's access rules."""
        for name, table in self.tables.items():
            logger.info("table %s: %d rows read, %d kept", name, table.rows_read, table.rows_kept,
                        extra={"table": name, "rows_read": table.rows_read, "rows_kept": table.rows_kept})
            for issue in table.issues:
                logger.warning("table %s: %d x %s (%s)", name, issue.count, issue.code, issue.action,
                               extra={"table": name, "code": issue.code, "count": issue.count, "action": issue.action})
        logger.info("%s data loaded; orphans %s", self.source_format, self.orphans,
                    extra={"source_format": self.source_format, "orphans": dict(self.orphans),
                           "unmatched_evidence": len(self.unmatched_evidence)})


# ----------------------------------------------------------------------------------------------
# Shared definitions: what counts as missing, who a product is for
# ----------------------------------------------------------------------------------------------

PRODUCT_SEGMENTS = ("individual", "organization", "both")
CUSTOMER_SEGMENTS = ("individual", "organization")
_COLLECTIONS = (set, frozenset, list, tuple)


def is_missing(value: Any) -> bool:
    """Whether a value is absent in any of the ways a data frame row or a request can say it:
    None, NaN, NaT, pandas NA, blank text, an empty collection. The rules, the bias checks and
    the view all ask this one function."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, _COLLECTIONS):
        return not value
    return False


def segment_eligibility(customer_types: Sequence[object] | pd.Series,
                        product_segments: Sequence[object] | pd.Series) -> np.ndarray:
    """(customers, products): the product is offered to the customer's segment.

    A product for 'both' is offered to everyone; a product for one segment only to customers known
    to be of it. A customer of unknown type gets only products for both: neither a personal nor a
    business product can be called right for them. Training candidates, the rules' eligibility, the
    matching of hackathon evidence and the fairness audit's populations all use this definition.
    """
    segments = pd.Series(list(product_segments), dtype="string").str.strip().str.lower().fillna("both")
    segments = segments.where(segments.isin(PRODUCT_SEGMENTS), "both").to_numpy(dtype=object)
    kinds = pd.Series(list(customer_types), dtype="string").str.strip().str.lower().fillna("")
    kinds = kinds.where(kinds.isin(CUSTOMER_SEGMENTS), "").to_numpy(dtype=object)
    return (segments[None, :] == "both") | (segments[None, :] == kinds[:, None])


# ----------------------------------------------------------------------------------------------
# The loaded data
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BankData:
    """The cleaned tables of one data directory and the report of how they were cleaned."""

    customers: pd.DataFrame
    transactions: pd.DataFrame
    social_posts: pd.DataFrame
    products: pd.DataFrame
    holdings: pd.DataFrame  # what each customer holds (the hackathon format: products evidenced as paid for)
    quality: DataQualityReport
    source_format: str
    age_bands: tuple[int, ...]  # the bands of the settings it was loaded with: the view and cold start agree
    interests: pd.DataFrame  # what each customer asked for (preferences, financial needs): candidates, not holdings

    def as_of(self, cutoff: pd.Timestamp) -> "BankData":
        """The data as it stood at ``cutoff``: events strictly before it; undated holdings and the
        stated interests are kept because they describe the customer rather than a moment."""
        cutoff = pd.Timestamp(cutoff)
        holdings = self.holdings
        return dataclasses.replace(
            self,
            transactions=self.transactions[self.transactions["date"] < cutoff],
            social_posts=self.social_posts[self.social_posts["timestamp"] < cutoff],
            holdings=holdings[holdings["start_date"].isna() | (holdings["start_date"] < cutoff)],
        )


# ----------------------------------------------------------------------------------------------
# Cell values: text, numbers and ranges, dates
# ----------------------------------------------------------------------------------------------

def _tidy_cell(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        return None if value in MISSING_MARKERS else value
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    return value


def _tidy_column(column: pd.Series) -> pd.Series:
    """Text stripped and blank markers made missing; spreadsheet numbers and dates stay values."""
    if isinstance(column.dtype, pd.StringDtype):
        text = column.str.strip()
        return text.where(~text.isin(MISSING_MARKERS))
    if column.dtype == object:
        return column.map(_tidy_cell)
    return column


def _cell_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an Excel id 8810.0 is the id "8810"
    if isinstance(value, dt.datetime):  # pandas Timestamps included
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _as_text(column: pd.Series) -> pd.Series:
    """The column as pandas text; numbers written as an integer when they are one."""
    if isinstance(column.dtype, pd.StringDtype):
        return column
    if pd.api.types.is_integer_dtype(column):
        return column.astype("str").where(column.notna())
    return column.map(_cell_text, na_action="ignore").astype("str")


def _distinct_cells(column: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """Each row's code and the distinct cells as tidy text: columns repeat values, so each distinct
    value is parsed once and the result taken back to the rows with :func:`_per_row`."""
    codes, uniques = pd.factorize(column)
    return codes, _as_text(_tidy_column(pd.Series(uniques)))


def _per_row(distinct_values: np.ndarray, codes: np.ndarray, missing: object) -> np.ndarray:
    """Values of the distinct cells taken back to rows; code -1 (a missing cell) takes ``missing``."""
    return np.append(distinct_values, np.asarray([missing], dtype=distinct_values.dtype))[codes]


def _counted_values(text: pd.Series, codes: np.ndarray, mask: np.ndarray) -> dict[str, int]:
    """Raw values (of the distinct ones flagged by ``mask``) with their number of rows, most first."""
    counts = np.bincount(codes[codes >= 0], minlength=len(text))
    flagged = {str(text.iloc[i]): int(counts[i]) for i in np.flatnonzero(mask)}
    return dict(sorted(flagged.items(), key=lambda item: -item[1]))


_SCALES = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mn": 1e6, "mm": 1e6, "million": 1e6,
           "b": 1e9, "bn": 1e9, "billion": 1e9}
_NUMBER = r"(?P<{0}>(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d+)?|\.\d+)\s*(?P<{0}_scale>thousand|million|billion|mn|mm|bn|k|m|b)?"
_CURRENCY = r"(?:usd|us\$|\$|€|£)?\s*"
_AMOUNT = re.compile(
    r"^(?P<sign>[-−])?\s*" + _CURRENCY + _NUMBER.format("low")
    + r"(?:\s*(?:-|–|—|to)\s*" + _CURRENCY + _NUMBER.format("high") + r")?\s*(?:usd|dollars?)?$",
    re.IGNORECASE,
)


@dataclass
class ParsedAmounts:
    """Numbers parsed from amount cells: a range gives its bounds and the midpoint as ``value``."""

    lower: pd.Series
    upper: pd.Series
    value: pd.Series
    unparseable: dict[str, int]
    ranges: int


def _scaled(numbers: pd.Series, scales: pd.Series) -> pd.Series:
    multiplier = scales.str.lower().map(_SCALES).astype(float).fillna(1.0)
    return pd.to_numeric(numbers.str.replace(",", "", regex=False), errors="coerce") * multiplier


def parse_amounts(column: pd.Series) -> ParsedAmounts:
    """Amounts such as ``$1,200.50``, ``1.5B`` or ranges ``150M - 200M`` / ``800-1500``.

    Each distinct text is parsed once (columns repeat values), plain numbers by ``to_numeric``
    and only the rest by the pattern, which keeps a million-row column fast.
    """
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.astype(float)
        return ParsedAmounts(values, values, values, {}, 0)
    codes, text = _distinct_cells(column)
    low = pd.to_numeric(text, errors="coerce").astype(float)
    high = low.copy()
    pending = low.isna() & text.notna()
    parts = text[pending].str.extract(_AMOUNT)
    if len(parts):
        sign = np.where(parts["sign"].notna(), -1.0, 1.0)
        high_scale = parts["high_scale"]
        low.loc[pending] = sign * _scaled(parts["low"], parts["low_scale"].fillna(high_scale))
        high.loc[pending] = _scaled(parts["high"], high_scale).fillna(low.loc[pending])
    lower, upper = np.fmin(low, high).to_numpy(), np.fmax(low, high).to_numpy()
    counts = np.bincount(codes[codes >= 0], minlength=len(text))

    def rows(values: np.ndarray) -> pd.Series:
        return pd.Series(_per_row(values, codes, np.nan), index=column.index)

    return ParsedAmounts(rows(lower), rows(upper), rows((lower + upper) / 2),
                         _counted_values(text, codes, np.isnan(lower) & text.notna().to_numpy()),
                         int(counts[upper > lower].sum()))


_TIME = r"(?:[ T]+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.\d+)?)?\s*(?P<ampm>[AaPp][Mm])?)?"
_MONTH_DAY_YEAR = re.compile(r"^(?P<first>\d{1,2})[/.-](?P<second_part>\d{1,2})[/.-](?P<year>\d{4}|\d{2})" + _TIME + "$")
_YEAR_MONTH_DAY = re.compile(r"^(?P<year>\d{4})[/.-](?P<first>\d{1,2})[/.-](?P<second_part>\d{1,2})" + _TIME + "$")
_EXCEL_EPOCH = pd.Timestamp("1899-12-30")
_EXCEL_SERIALS = (20000, 80000)  # 1954 to 2119: numbers outside are not dates


@dataclass
class ParsedDates:
    """Naive timestamps, the raw texts that were no valid date, and how many were read day-first."""

    values: pd.Series
    invalid: dict[str, int]
    day_first: int


def _naive(values: pd.Series) -> pd.Series:
    if getattr(values.dt, "tz", None) is not None:
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values


def _from_components(parts: pd.DataFrame, year_first: bool) -> tuple[pd.Series, pd.Series]:
    """Dates from numbered parts: month first (US style) unless the first number cannot be a month.

    Invalid calendar dates (``2/29/2025``) and clock times (``24:34``) give NaT; pandas would
    otherwise roll an hour of 24 into the next day.
    """
    numbers = parts[["first", "second_part", "year", "hour", "minute", "second"]].apply(pd.to_numeric)
    year = numbers["year"].where(numbers["year"] >= 100, numbers["year"] + np.where(numbers["year"] < 70, 2000, 1900))
    day_first = (not year_first) & (numbers["first"] > 12) & (numbers["second_part"] <= 12)
    month = numbers["first"].where(~day_first, numbers["second_part"])
    day = numbers["second_part"].where(~day_first, numbers["first"])
    hour = numbers["hour"].fillna(0)
    is_pm = parts["ampm"].str.lower().eq("pm").fillna(False).to_numpy(dtype=bool)
    has_ampm = parts["ampm"].notna().to_numpy()
    hour = hour.where(~has_ampm, (hour % 12) + np.where(is_pm, 12, 0))
    clock_ok = (hour < 24) & (numbers["minute"].fillna(0) < 60) & (numbers["second"].fillna(0) < 60)
    clock_ok &= ~has_ampm | (numbers["hour"] <= 12)
    assembled = pd.to_datetime(pd.DataFrame({"year": year, "month": month, "day": day, "hour": hour,
                                             "minute": numbers["minute"].fillna(0),
                                             "second": numbers["second"].fillna(0)}), errors="coerce")
    return assembled.where(clock_ok), day_first


def parse_dates(column: pd.Series) -> ParsedDates:
    """Dates from mixed cells: ISO text, M/D/YY(YY) with or without a time, D/M/YYYY where the day
    is over 12, real Excel dates, Excel serial numbers and spelled-out months; each distinct
    text is parsed once. What is not a valid date becomes NaT and is returned for the report."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return ParsedDates(_naive(column).astype("datetime64[us]"), {}, 0)
    codes, text = _distinct_cells(column)
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]")
    day_first = pd.Series(False, index=text.index)

    iso = text.str.match(r"^\d{4}-\d{1,2}-\d{1,2}").fillna(False).astype(bool)
    parsed[iso] = _naive(pd.to_datetime(text[iso], format="ISO8601", errors="coerce", utc=True))
    for pattern, year_first in ((_MONTH_DAY_YEAR, False), (_YEAR_MONTH_DAY, True)):
        parts = text[parsed.isna()].str.extract(pattern).dropna(subset=["year"])
        if len(parts):
            parsed[parts.index], day_first[parts.index] = _from_components(parts, year_first)
    numeric = parsed.isna() & text.str.fullmatch(r"\d+(?:\.\d+)?").fillna(False).astype(bool)
    serial = pd.to_numeric(text[numeric])
    serial = serial[serial.between(*_EXCEL_SERIALS)]
    parsed[serial.index] = _EXCEL_EPOCH + pd.to_timedelta(serial, unit="D")
    spelled = parsed.isna() & text.str.contains(r"[A-Za-z]{3}", regex=True).fillna(False).astype(bool)
    if spelled.any():
        parsed[spelled] = pd.to_datetime(text[spelled], format="mixed", errors="coerce")
    counts = np.bincount(codes[codes >= 0], minlength=len(text))
    return ParsedDates(pd.Series(_per_row(parsed.to_numpy(), codes, np.datetime64("NaT")), index=column.index),
                       _counted_values(text, codes, (parsed.isna() & text.notna()).to_numpy()),
                       int(counts[day_first.to_numpy()].sum()))


# ----------------------------------------------------------------------------------------------
# Reporting parsed values
# ----------------------------------------------------------------------------------------------

def _report_values(quality: TableQuality, code: str, what: str, column: str, values: dict[str, int],
                   action: str) -> None:
    """One issue per distinct raw value (the first few), one for the rest: readable and bounded."""
    listed = list(values.items())
    column = quality.label(column)
    for raw, count in listed[:MAX_LISTED_VALUES]:
        quality.add(code, count, f"{what} {raw!r} in {column}", action)
    rest = listed[MAX_LISTED_VALUES:]
    quality.add(code, sum(c for _, c in rest), f"{len(rest)} other {what} values in {column}", action)


def _typed_number(frame: pd.DataFrame, column: str, quality: TableQuality) -> pd.Series:
    amounts = parse_amounts(frame[column])
    _report_values(quality, "unparseable_number", "unparseable number", column, amounts.unparseable,
                   "set to missing")
    quality.add("range_midpoint", amounts.ranges, f"ranges in {quality.label(column)}", "took the midpoint")
    return amounts.value


def _typed_date(frame: pd.DataFrame, column: str, quality: TableQuality) -> pd.Series:
    dates = parse_dates(frame[column])
    _report_values(quality, "invalid_date", "invalid date", column, dates.invalid, "set to missing")
    quality.add("day_first_date", dates.day_first, f"dates in {quality.label(column)} whose first number is over 12",
                "read as day/month/year")
    return dates.values


def _typed_extra(name: str, column: pd.Series) -> pd.Series:
    """Extra columns are kept: ids as text, numbers when every value is one, else text."""
    if name.endswith("_id"):
        return _as_text(column)
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
        return column
    numbers = pd.to_numeric(column, errors="coerce")
    if column.notna().any() and numbers.notna().sum() == column.notna().sum():
        return numbers
    return _as_text(column)


# ----------------------------------------------------------------------------------------------
# Cleaning one table (shared by both formats)
# ----------------------------------------------------------------------------------------------

def _drop_unusable_rows(frame: pd.DataFrame, labels: Sequence[str], quality: TableQuality) -> pd.DataFrame:
    """Blank rows and copies of the header row inside the data (files pasted together) go first."""
    frame = frame.apply(_tidy_column)
    blank = frame.isna().all(axis=1)
    quality.add("blank_row", blank.sum(), "blank rows", "dropped")
    frame = frame[~blank]
    labels = [str(label).strip() for label in labels]
    repeats = sum((frame[column] == label).to_numpy(dtype=bool) for column, label in zip(frame.columns, labels) if label)
    is_header = np.asarray(repeats) >= max(2, sum(map(bool, labels)) // 2)
    quality.add("repeated_header", is_header.sum(), "header row repeated inside the data", "dropped")
    return frame[~is_header]


def _clean_table(table: str, frame: pd.DataFrame, quality: TableQuality,
                expected: Collection[str] | None = None) -> pd.DataFrame:
    """Types every column of one table (extra columns kept), drops rows without their id and
    resolves duplicate ids; the canonical columns come first, absent ones as missing (reported
    when the source was ``expected`` to have them: by default every canonical column)."""
    schema = SCHEMA[table]
    expected = schema if expected is None else expected
    for column in REQUIRED_IDS[table]:
        missing = frame[column].isna()
        quality.add("missing_id", missing.sum(), f"rows without {column}", "dropped")
        frame = frame[~missing]
    typed: dict[str, pd.Series] = {}
    for column, kind in schema.items():
        if column not in frame:
            quality.add("absent_column", len(frame) if column in expected else 0, f"no {column} column",
                        "left missing")
            typed[column] = pd.Series(np.nan if kind == NUMBER else None, index=frame.index,
                                      dtype={NUMBER: "float64", DATE: "datetime64[us]"}.get(kind, "str"))
        elif kind == NUMBER:
            typed[column] = _typed_number(frame, column, quality)
        elif kind == DATE:
            typed[column] = _typed_date(frame, column, quality)
        else:
            typed[column] = _as_text(frame[column])
    extras = {column: _typed_extra(column, frame[column]) for column in frame.columns if column not in schema}
    frame = pd.DataFrame({**typed, **extras}, index=frame.index)
    if table == "customers":
        frame = _normalise_customer_fields(frame, quality)
    return _resolve_duplicate_ids(table, frame, quality).reset_index(drop=True)


def _normalise_customer_fields(customers: pd.DataFrame, quality: TableQuality) -> pd.DataFrame:
    """Customer type and gender in the canonical spellings; impossible ages made missing."""
    kind = customers["customer_type"].str.lower().map(CUSTOMER_TYPES)
    unknown = kind.isna()
    looks_like_business = customers["industry"].notna() | customers["employees"].notna()
    customers["customer_type"] = kind.where(~unknown, np.where(looks_like_business, "organization", "individual"))
    quality.add("customer_type_inferred", unknown.sum(), "missing or unknown customer_type",
                "inferred: organization when industry or employees is given, else individual")
    gender = customers["gender"]
    canonical = gender.str.lower().map(GENDERS)
    respelled = canonical.notna() & canonical.ne(gender)
    quality.add("gender_respelled", respelled.sum(), "gender written other than M/F (e.g. 'female')",
                "normalised to M/F")
    customers["gender"] = canonical.fillna(gender).astype("str")
    impossible = ~customers["age"].between(*AGE_RANGE) & customers["age"].notna()
    quality.add("impossible_age", impossible.sum(), f"age outside {AGE_RANGE[0]}-{AGE_RANGE[1]}", "set to missing")
    customers["age"] = customers["age"].mask(impossible)
    return customers


def _resolve_duplicate_ids(table: str, frame: pd.DataFrame, quality: TableQuality) -> pd.DataFrame:
    key = UNIQUE_KEYS.get(table)
    if key is None or frame[key].isna().all():
        return frame
    repeated = frame[key].notna() & frame[key].duplicated()
    if not repeated.any():
        return frame
    if table in ("customers", "products"):
        quality.add("duplicate_id", repeated.sum(), f"duplicate {key}s", "kept the first")
        return frame[~repeated]
    identical = repeated & frame.duplicated()
    quality.add("duplicate_row", identical.sum(), f"rows repeating another row with the same {key}", "dropped")
    frame = frame[~identical].copy()
    renamed = frame[key].notna() & frame[key].duplicated()
    quality.add("duplicate_id", renamed.sum(), f"{key}s shared by different rows",
                f"kept; later ones renamed '<{key}>#2', '#3', ...")
    occurrence = frame.groupby(key, sort=False).cumcount() + 1
    frame.loc[renamed, key] = frame.loc[renamed, key] + "#" + occurrence[renamed].astype("str")
    return frame


def _drop_orphans(data: dict[str, pd.DataFrame], report: DataQualityReport) -> None:
    """Events of customers without a profile cannot be attached to anyone in the view, and holdings
    of unknown products cannot be recommended against; both are dropped and counted."""
    known_customers = pd.Index(data["customers"]["customer_id"])
    for table in ("transactions", "social_posts", "holdings"):
        frame = data[table]
        orphan = ~frame["customer_id"].isin(known_customers)
        report.orphans[table] = int(orphan.sum())
        report.table(table).add("orphan", orphan.sum(), "customer_id matches no customer profile", "dropped")
        data[table] = frame[~orphan].reset_index(drop=True)
    holdings = data["holdings"]
    unknown = ~holdings["product_id"].isin(data["products"]["product_id"])
    report.table("holdings").add("unknown_product", unknown.sum(), "product_id not in the catalogue", "dropped")
    data["holdings"] = holdings[~unknown].reset_index(drop=True)


def _deduplicated_holdings(holdings: pd.DataFrame, quality: TableQuality) -> pd.DataFrame:
    """One row per (customer, product): the earliest evidence, dated rows before undated ones."""
    ordered = holdings.sort_values("start_date", na_position="last", kind="stable")
    repeated = ordered.duplicated(["customer_id", "product_id"])
    quality.add("duplicate_holding", repeated.sum(), "repeated (customer_id, product_id)", "kept the earliest")
    return ordered[~repeated].sort_index().reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Canonical format
# ----------------------------------------------------------------------------------------------

def _canonical_path(data_dir: Path, table: str) -> Path | None:
    for suffix in TABLE_SUFFIXES:
        path = data_dir / f"{table}{suffix}"
        if path.is_file():
            return path
    return None


def _read_table_file(path: Path, header: int | None = 0) -> pd.DataFrame:
    """A CSV (everything as text: ids keep their zeros, blank lines stay countable) or Parquet file."""
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, header=header,
                           encoding="utf-8-sig", encoding_errors="replace")
    except Exception as error:
        raise DataLoadError(f"{path}: cannot be read as a table ({type(error).__name__}: {error})") from error


def _read_canonical_table(path: Path, table: str, report: DataQualityReport) -> pd.DataFrame:
    quality = report.table(table)
    quality.sources.append(str(path))
    frame = _read_table_file(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in REQUIRED_IDS[table] if c not in frame.columns]
    if missing:
        raise DataLoadError(f"{path}: required column {', '.join(missing)} missing (columns: {list(frame.columns)})")
    quality.rows_read = len(frame)
    return _drop_unusable_rows(frame, list(frame.columns), quality)


def _empty_raw(table: str) -> pd.DataFrame:
    """A table with no rows, for a file that is absent: cleaning gives it every canonical column."""
    return pd.DataFrame({column: pd.Series(dtype="str") for column in REQUIRED_IDS[table]})


def _load_canonical(data_dir: Path, report: DataQualityReport) -> dict[str, pd.DataFrame]:
    tables: dict[str, pd.DataFrame] = {}
    for table in ("customers", "transactions", "social_posts", "holdings"):
        path = _canonical_path(data_dir, table)
        if path is None:
            report.table(table).add("absent_table", 1, f"no {table}.csv or {table}.parquet", "table left empty")
            raw = _empty_raw(table)
        else:
            raw = _read_canonical_table(path, table, report)
        tables[table] = _clean_table(table, raw, report.table(table))
    tables["holdings"]["source"] = "holding"
    return tables


# ----------------------------------------------------------------------------------------------
# Hackathon format: tables recognised by their headers
# ----------------------------------------------------------------------------------------------

CUSTOMER_ID_NAMES = ("customer id", "customerid", "cust id", "custid", "customer", "client id", "customer no",
                     "customer number")
PREFERENCE_NAMES = ("preferences", "preference", "product preferences")
LOCATION_NAMES = ("location", "city", "region")
HACKATHON_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "individuals": {
        "customer_id": CUSTOMER_ID_NAMES, "location": LOCATION_NAMES, "preferences": PREFERENCE_NAMES,
        "interests": ("interests", "interest", "hobbies"),
        "age": ("age", "age years", "customer age"),
        "gender": ("gender", "sex"),
        "income": ("income per year", "income", "annual income", "yearly income", "income per annum", "salary"),
        "education": ("education", "education level", "qualification"),
        "occupation": ("occupation", "job", "profession", "job title"),
    },
    "organizations": {
        "customer_id": CUSTOMER_ID_NAMES, "location": LOCATION_NAMES, "preferences": PREFERENCE_NAMES,
        "industry": ("industry", "sector", "business type"),
        "financial_needs": ("financial needs", "financial need", "needs"),
        "revenue": ("revenue", "annual revenue", "revenue per year", "turnover"),
        "employees": ("no of employees", "number of employees", "num of employees", "num employees",
                      "nb of employees", "of employees", "employees", "employee count", "headcount"),
    },
    "transactions": {
        "customer_id": CUSTOMER_ID_NAMES,
        "transaction_id": ("transaction id", "txn id", "tx id", "transaction no", "transaction number"),
        "source_product_id": ("product id",),
        "type": ("transaction type", "type", "txn type", "transaction kind"),
        "category": ("category", "transaction category", "merchant category"),
        "amount": ("amount", "amt", "transaction amount", "amount spent", "value"),
        "date": ("purchase date", "date", "transaction date", "txn date", "payment date"),
        "payment_mode": ("payment mode", "payment method", "mode of payment", "payment type"),
    },
    "social_posts": {
        "customer_id": CUSTOMER_ID_NAMES,
        "post_id": ("post id", "post no", "post number"),
        "platform": ("platform", "social media platform", "network", "channel"),
        "content": ("content", "post", "post content", "post text", "text", "message"),
        "timestamp": ("timestamp", "time stamp", "date", "post date", "posted at", "date time", "created at"),
    },
}
SHARED_FIELDS = {"customer_id", "location", "preferences", "interests"}
MIN_DISTINCTIVE_FIELDS = 2
HEADER_SEARCH_ROWS = 10
TYPO_SIMILARITY = 0.8
SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls")
SOURCE_COLUMN_RENAMES = {"revenue": "income"}  # an organisation's income is its revenue
_COLUMN_OF_HEADER = {table: {name: column for column, names in fields.items() for name in names}
                     for table, fields in HACKATHON_FIELDS.items()}


def _header_key(label: object) -> str:
    """A header reduced to its words: case, spacing, punctuation, camelCase and units ignored, so that
    'Customer_Id', 'CustomerID' and 'customer id', or 'Amount (in Dollars)' and 'Amt in USD', meet."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(label))
    text = re.sub(r"\(.*?\)", " ", text).casefold()
    text = re.sub(r"[^0-9a-z]+", " ", text)
    text = re.sub(r"\b(?:in )?(?:us )?(?:dollars?|usd)\b", " ", text)
    return " ".join(text.split())


def canonical_field(label: object, table: str) -> str | None:
    """The canonical column a hackathon header means in a table, by synonym or a close spelling."""
    key = _header_key(label)
    names = _COLUMN_OF_HEADER[table]
    if key in names:
        return names[key]
    close = [name for name in names if _misspelled(key, name)]
    return names[max(close, key=lambda name: difflib.SequenceMatcher(None, key, name).ratio())] if close else None


def _misspelled(key: str, name: str) -> bool:
    """The same words but for typos ('customr id' for 'customer id'); a different word is a different
    column ('customer name' is not 'customer age', 'transaction time' not 'transaction type')."""
    words, other = key.split(), name.split()
    return len(words) == len(other) and all(
        a == b or (min(len(a), len(b)) > 3 and difflib.SequenceMatcher(None, a, b).ratio() >= TYPO_SIMILARITY)
        for a, b in zip(words, other))


def recognise_table(labels: Sequence[object]) -> tuple[str, list[str]] | None:
    """Which hackathon table a header row belongs to, and its columns' canonical names.

    Each table has columns no other has (age, revenue, amount, post id...); the table with the
    most of them wins, so sheet names and file names never matter.
    """
    best: tuple[int, str] = (0, "")
    for table in HACKATHON_FIELDS:
        fields = {canonical_field(label, table) for label in labels} - SHARED_FIELDS - {None}
        best = max(best, (len(fields), table), key=lambda item: item[0])
    if best[0] < MIN_DISTINCTIVE_FIELDS:
        return None
    table = best[1]
    columns: list[str] = []
    for position, label in enumerate(labels):
        column = canonical_field(label, table)
        if column is None or column in columns:
            column = "_".join(_header_key(label).split()) or f"column_{position + 1}"
        columns.append(column if column not in columns else f"{column}_{position + 1}")
    return table, columns


def _sheets(path: Path) -> dict[str, pd.DataFrame]:
    """Every sheet of a workbook (or the one table of a CSV) as raw cells, header not yet found."""
    if path.suffix.lower() not in SPREADSHEET_SUFFIXES:
        return {"": _read_table_file(path, header=None)}
    try:
        return pd.read_excel(path, sheet_name=None, header=None, dtype=object)
    except Exception as error:
        raise DataLoadError(f"{path}: not a readable workbook ({type(error).__name__}: {error})") from error


def _hackathon_sources(data_dir: Path) -> list[Path]:
    canonical_names = set(SCHEMA)
    return sorted(path for path in data_dir.iterdir()
                  if path.is_file() and path.suffix.lower() in SPREADSHEET_SUFFIXES + (".csv",)
                  and not path.name.startswith(("~$", ".")) and path.stem not in canonical_names)


def _read_hackathon_sheet(label: str, cells: pd.DataFrame, report: DataQualityReport) -> tuple[str, pd.DataFrame] | None:
    cells = cells.dropna(axis=1, how="all")
    for row in range(min(HEADER_SEARCH_ROWS, len(cells))):
        labels = [_tidy_cell(value) or "" for value in cells.iloc[row]]
        recognised = recognise_table(labels)
        if recognised is None:
            continue
        table, columns = recognised
        if "customer_id" not in columns:
            raise DataLoadError(f"{label}: required column customer_id missing (the {table} table's headers: {labels})")
        quality = report.table(table)
        quality.sources.append(label)
        frame = cells.iloc[row + 1:].reset_index(drop=True)
        quality.rows_read += len(frame)
        quality.add("rows_above_header", int(cells.iloc[:row].apply(_tidy_column).notna().any(axis=1).sum()),
                    f"non-blank rows above the header in {label}", "skipped")
        frame = _drop_unusable_rows(frame, labels, quality)
        frame.columns = columns
        quality.headers.update({c: str(l) for c, l in zip(columns, labels) if l and c != l})
        return table, frame
    report.ignored_sources.append(label)
    return None


def _read_hackathon(data_dir: Path, report: DataQualityReport) -> dict[str, pd.DataFrame]:
    """The hackathon tables of a directory, each concatenated from every file or sheet that holds it."""
    found: dict[str, list[pd.DataFrame]] = {}
    for path in _hackathon_sources(data_dir):
        for sheet, cells in _sheets(path).items():
            label = f"{path} [{sheet}]" if sheet else str(path)
            recognised = _read_hackathon_sheet(label, cells, report)
            if recognised:
                found.setdefault(recognised[0], []).append(recognised[1])
    if not found:
        raise DataLoadError(f"{data_dir}: no recognisable tables (neither customers.csv nor hackathon "
                            f"profiles, transactions or posts; looked at {[p.name for p in _hackathon_sources(data_dir)]})")
    return {table: pd.concat(frames, ignore_index=True) for table, frames in found.items()}


def _organisation_profiles(raw: pd.DataFrame, quality: TableQuality) -> pd.DataFrame:
    """Revenue and head-count ranges become bounds and midpoints; revenue is an organisation's income."""
    raw = raw.copy()
    for column, target in (("revenue", "income"), ("employees", "employees")):
        if column not in raw:
            continue
        amounts = parse_amounts(raw.pop(column))
        _report_values(quality, "unparseable_number", "unparseable number", column, amounts.unparseable,
                       "set to missing")
        raw[f"{column}_min"], raw[f"{column}_max"], raw[target] = amounts.lower, amounts.upper, amounts.value
    return raw


def _expected_columns(table: str) -> set[str]:
    """The canonical columns a hackathon table normally carries: only their absence is news."""
    return {SOURCE_COLUMN_RENAMES.get(column, column) for column in HACKATHON_FIELDS[table]}


def _hackathon_customers(raw: dict[str, pd.DataFrame], report: DataQualityReport) -> pd.DataFrame:
    """Individual and organisation profiles, each cleaned and reported on its own, then as one table."""
    profiles = []
    for table, customer_type in (("individuals", "individual"), ("organizations", "organization")):
        if table not in raw:
            continue
        quality = report.table(table)
        frame = raw[table].assign(customer_type=customer_type)
        if table == "organizations":
            frame = _organisation_profiles(frame, quality)
        profiles.append(_clean_table("customers", frame, quality, _expected_columns(table)))
        quality.finish(profiles[-1])
    quality = report.table("customers")
    quality.sources = [source for table in ("individuals", "organizations") for source in report.table(table).sources]
    if not profiles:
        return _clean_table("customers", _empty_raw("customers"), quality)
    customers = pd.concat(profiles, ignore_index=True)
    quality.rows_read = len(customers)
    return _resolve_duplicate_ids("customers", customers, quality).reset_index(drop=True)


def _load_hackathon(data_dir: Path, report: DataQualityReport) -> dict[str, pd.DataFrame]:
    raw = _read_hackathon(data_dir, report)
    tables = {"customers": _hackathon_customers(raw, report)}
    for table in ("transactions", "social_posts"):
        frame = raw.get(table, _empty_raw(table))
        tables[table] = _clean_table(table, frame, report.table(table), _expected_columns(table))
    return tables


# ----------------------------------------------------------------------------------------------
# Hackathon format: product evidence mapped onto the catalogue by meaning
# ----------------------------------------------------------------------------------------------

EVIDENCE_THRESHOLD = 0.60
LOW_RISK_WORDS = re.compile(r"\b(?:low|lower|minimal|minimum|no|zero|little)[- ]risk\b|\brisk[- ]free\b"
                            r"|\b(?:safe|secure|guaranteed|capital[- ]protected)\b", re.IGNORECASE)
HIGH_RISK_WORDS = re.compile(r"\b(?:high|higher)[- ]risk\b|\b(?:aggressive|speculative)\b", re.IGNORECASE)
LOW_RISK_MAX_LEVEL, HIGH_RISK_MIN_LEVEL = 2, 4  # the catalogue's levels: 1 savings ... 5 crypto
INTEREST_MARGIN = 0.1  # an interest also names the products this close to its best match ("Health & Life Insurance")
PRODUCT_PAYMENT_PATTERN = re.compile(r"\b(?:repayments?|emi|mortgage payments?|premiums?|contributions?|deposits?"
                                     r"|loans?)\b", re.IGNORECASE)


def _asked_items(customers: pd.DataFrame) -> pd.DataFrame:
    """Each comma-separated item of preferences / financial needs, one row per customer and item."""
    columns = [c for c in INTEREST_FIELDS if c in customers]
    listed = customers.melt(id_vars=["customer_id", "customer_type"], value_vars=columns, var_name="field",
                            value_name="text") if columns else pd.DataFrame(columns=["text"])
    listed = listed[listed["text"].map(lambda text: isinstance(text, str))]
    if listed.empty:  # nobody stated anything (a column of missing values is not text)
        return pd.DataFrame(columns=["customer_id", "customer_type", "field", "text", "start_date", "source"])
    items = listed.assign(text=listed["text"].str.split(r"[,;]", regex=True)).explode("text")
    items["text"] = items["text"].str.strip(" .")
    items = items[items["text"].str.len() > 0]
    return items[["customer_id", "customer_type", "field", "text"]].assign(start_date=pd.NaT, source="asked")


def _paid_items(transactions: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    """Payments to a financial product (a repayment, an EMI, a premium, a contribution, a deposit, a
    loan drawn), their type and category as candidate texts, dated by the payment.

    Spending is not holding: a travel booking, a BNPL purchase or a supplier payment shows a need
    (read as such by the life-event detector), not a product the customer has.
    """
    described = transactions["type"].fillna("").astype(str) + " " + transactions["category"].fillna("").astype(str)
    product_payment = described.str.contains(PRODUCT_PAYMENT_PATTERN).to_numpy()
    kinds = (transactions.loc[product_payment, ["customer_id", "date", "type", "category"]]
             .assign(payment=np.flatnonzero(product_payment)))
    kinds = kinds.merge(customers[["customer_id", "customer_type"]], on="customer_id")
    paid = kinds.melt(id_vars=["customer_id", "customer_type", "date", "payment"], value_vars=["type", "category"],
                      value_name="text").dropna(subset=["text"])
    return paid.rename(columns={"date": "start_date"}).drop(columns="variable").assign(source="paid")


def _one_product_per_payment(evidence: pd.DataFrame, quality: TableQuality) -> pd.DataFrame:
    """A payment buys one thing: of its type and category, the text closer to a product speaks
    ('Stock Investment' rather than its category 'Equity', which alone reads as home equity)."""
    paid = evidence["source"].eq("paid")
    ranked = evidence[paid].sort_values("similarity", ascending=False, kind="stable")
    weaker = ranked.duplicated("payment")
    quality.add("weaker_payment_text", weaker.sum(),
                "transaction type or category less close to a product than the other text of the same payment",
                "not used as evidence")
    return pd.concat([evidence[~paid], ranked[~weaker]]).sort_index()


DESCRIPTION_CLAUSE = re.compile(r"[,;:.()]|\band\b|\bor\b|\bwith\b|\bfor\b")
MIN_CLAUSE_WORDS = 2
CLAUSE_WEIGHT = 0.85  # a clause is one feature among several: weaker evidence than the name or an alias


def _product_phrases(products: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each product's name, aliases, description and the description's clauses, with the row of
    the product they describe and the weight of a match with them.

    A bank's catalogue says what a product does in a sentence ("Cash management, foreign exchange
    and hedging of currency risk for international trade"); a customer states a need in two words
    ("Cash Management"). Each clause of two or more words is a phrase of its own, so the need meets
    the clause that says it instead of a sentence that dilutes it. A clause counts for
    ``CLAUSE_WEIGHT`` of a name: "Travel Insurance" is the travel insurance product, not the
    premium account that includes it.
    """
    phrases: list[str] = []
    owners: list[int] = []
    weights: list[float] = []
    for row, product in enumerate(products.itertuples(index=False)):
        aliases = [a.strip() for a in product.aliases.split(";")] if isinstance(product.aliases, str) else []
        description = product.description if isinstance(product.description, str) else ""
        whole = [t for t in [product.name, *aliases, description] if isinstance(t, str) and t]
        clauses = [c for c in (part.strip() for part in DESCRIPTION_CLAUSE.split(description))
                   if len(c.split()) >= MIN_CLAUSE_WORDS and c != description]
        phrases += whole + clauses
        owners += [row] * (len(whole) + len(clauses))
        weights += [1.0] * len(whole) + [CLAUSE_WEIGHT] * len(clauses)
    return phrases, np.asarray(owners), np.asarray(weights, dtype=np.float32)


def _match_products(evidence: pd.DataFrame, products: pd.DataFrame, encoder: SentenceEncoder,
                    margin: float = 0.0) -> pd.DataFrame:
    """For each distinct (text, customer type): the closest eligible product and its similarity,
    and with a ``margin``, also every other product at least that close to the text's best.

    A product's similarity is its best over name, aliases and description, so a short item such as
    'Home Loan' meets the alias 'home loan' rather than being diluted by a long description. A
    stated interest may name several products ("Health & Life Insurance"), a payment pays one.
    """
    distinct = evidence[["text", "customer_type"]].drop_duplicates().reset_index(drop=True)
    phrases, owners, weights = _product_phrases(products)
    similarity = (encoder.encode(distinct["text"].tolist()) @ encoder.encode(phrases).T) * weights
    per_product = np.full((len(distinct), len(products)), -1.0, dtype=np.float32)
    np.maximum.at(per_product.T, owners, similarity.T)
    per_product[~segment_eligibility(distinct["customer_type"], products["segment"])] = -1.0
    per_product[stated_risk_conflicts(distinct["text"], products["risk_level"])] = -1.0
    best = per_product.max(axis=1, initial=-1.0)
    near_best = (per_product >= best[:, None] - margin) if margin else (per_product == best[:, None])
    row, column = np.nonzero(near_best & (per_product >= -0.5))
    matches = distinct.iloc[row].reset_index(drop=True)
    matches["best_product_id"] = products["product_id"].to_numpy()[column]
    matches["similarity"] = per_product[row, column].round(3)
    matches["product_id"] = matches["best_product_id"].where(matches["similarity"] >= EVIDENCE_THRESHOLD)
    matched = matches["product_id"].notna()
    return pd.concat([matches[matched], matches[~matched].drop_duplicates(["text", "customer_type"])])


def stated_risk_conflicts(texts: pd.Series, risk_levels: pd.Series) -> np.ndarray:
    """(texts, products): True where a text states a risk appetite the product contradicts.

    The sentence encoder reads "low-risk savings" as close to a crypto fund's alias "high risk
    investment" (0.684, closer than any savings account): it weighs the shared word, not which
    way it points. A customer who asks for low risk is not asking for a product above
    ``LOW_RISK_MAX_LEVEL`` (2), and one who asks for high risk is not asking for one below
    ``HIGH_RISK_MIN_LEVEL`` (4: a savings account, a card, a loan), so such a match is never made,
    whatever the similarity.
    """
    levels = pd.to_numeric(risk_levels, errors="coerce").to_numpy(dtype=float)[None, :]
    low = texts.str.contains(LOW_RISK_WORDS).to_numpy()[:, None]
    high = texts.str.contains(HIGH_RISK_WORDS).to_numpy()[:, None] & ~low
    return (low & (levels > LOW_RISK_MAX_LEVEL)) | (high & (levels < HIGH_RISK_MIN_LEVEL))


def _summarise_evidence(report: DataQualityReport, evidence: Sequence[pd.DataFrame]) -> None:
    """How each distinct text was read: the product it was matched to (and how closely), or none."""
    frames = [frame for frame in evidence if len(frame)]
    if not frames:
        return
    evidence = pd.concat(frames, ignore_index=True)
    counts = (evidence.groupby(["text", "customer_type", "source"], dropna=False)
              .agg(count=("customer_id", "size"), product_id=("product_id", "first"),
                   best_product_id=("best_product_id", "first"), similarity=("similarity", "first"))
              .reset_index().sort_values(["count", "text"], ascending=[False, True]))
    matched = counts["product_id"].notna()
    report.matched_evidence = counts.loc[matched, ["text", "customer_type", "source", "count", "product_id",
                                                    "similarity"]].to_dict("records")
    report.unmatched_evidence = counts.loc[~matched, ["text", "customer_type", "source", "count",
                                                      "best_product_id", "similarity"]].to_dict("records")
    for row in report.matched_evidence + report.unmatched_evidence:
        row["count"], row["similarity"] = int(row["count"]), float(row["similarity"])


def _matched_evidence(evidence: pd.DataFrame, products: pd.DataFrame, encoder: SentenceEncoder,
                      margin: float = 0.0) -> pd.DataFrame:
    """Each evidence row with the catalogue product its text means (``product_id`` NaN: none is close)."""
    if evidence.empty:
        return evidence.assign(best_product_id=pd.Series(dtype=object), similarity=pd.Series(dtype=float),
                               product_id=pd.Series(dtype=object))
    return evidence.merge(_match_products(evidence, products, encoder, margin), on=["text", "customer_type"],
                          how="left")


def _evidence_holdings(transactions: pd.DataFrame, customers: pd.DataFrame, products: pd.DataFrame,
                       encoder: SentenceEncoder, report: DataQualityReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Products customers pay for (loan and mortgage repayments, premiums, contributions), as
    holdings, and the payment texts as matched: a payment is evidence of a product held, never of a
    plan or a wish."""
    quality = report.table("holdings")
    quality.sources.append("transaction types and categories")
    evidence = _matched_evidence(_paid_items(transactions, customers), products, encoder)
    quality.rows_read = len(evidence)
    if evidence.empty:
        return _clean_table("holdings", _empty_raw("holdings"), quality).assign(source="paid", evidence=None), evidence
    evidence = _one_product_per_payment(evidence, quality)
    quality.add("unmatched_evidence", evidence["product_id"].isna().sum(),
                "transaction items close to no catalogue product", "not used as evidence")
    holdings = (evidence.dropna(subset=["product_id"])[HOLDINGS_COLUMNS + ["text"]]
                .rename(columns={"text": "evidence"}).reset_index(drop=True))  # the payment that showed it
    holdings["start_date"] = pd.NaT  # a payment shows the product held then, not when it was taken up
    holdings["start_date"] = holdings["start_date"].astype("datetime64[us]")
    return holdings, evidence


def stated_interests(customers: pd.DataFrame, products: pd.DataFrame, encoder: SentenceEncoder) -> pd.DataFrame:
    """The products customers asked for in their preferences and financial needs, each with the
    customer's own words: candidates to offer (when not held), never holdings.

    Each comma-separated item is matched to the closest catalogue product of the customer's segment
    by meaning; an item close to none is not used.
    """
    return _interests_from(_matched_interest_items(_asked_items(customers), products, encoder))


def _matched_interest_items(items: pd.DataFrame, products: pd.DataFrame,
                            encoder: SentenceEncoder | None) -> pd.DataFrame:
    """Each stated item with the products it names (``product_id`` NaN: none is close enough)."""
    return _matched_evidence(items, products, encoder, INTEREST_MARGIN) if len(items) else items


def _interests_from(evidence: pd.DataFrame) -> pd.DataFrame:
    """One row per (customer, product) asked for. Where several of a customer's items name the same
    product, the closest in meaning is kept as their words for it: the explanation quoted a company's
    "Athlete Sponsorship" as its request for a business loan when it had also written "Business Loans"."""
    interests = (evidence.dropna(subset=["product_id"]).sort_values("similarity", ascending=False, kind="stable")
                 .rename(columns={"text": "evidence"}).drop_duplicates(["customer_id", "product_id"]).sort_index()
                 ) if len(evidence) else evidence
    return interests.reindex(columns=INTEREST_COLUMNS).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Sentiment
# ----------------------------------------------------------------------------------------------

SENTIMENT_CACHE_SIZE = 200_000
"""Distinct texts whose sentiment a process keeps: a bank's posts repeat across its customers, so
across the shards a process loads (``cli.py score --shards``) and the posts cold-start requests
bring; bounded, as every cache a request can grow."""
_sentiments: LruCache[str, float] = LruCache(SENTIMENT_CACHE_SIZE)


def sentiment_cache_stats() -> CacheStats:
    return _sentiments.stats()


@lru_cache(maxsize=1)
def sentiment_analyzer() -> "SentimentIntensityAnalyzer":
    """NLTK's VADER with the lexicon shipped in the vaderSentiment package: no download at run time."""
    import nltk
    import vaderSentiment
    from nltk.sentiment.vader import SentimentIntensityAnalyzer

    lexicon_dir = os.path.dirname(vaderSentiment.__file__)
    if lexicon_dir not in nltk.data.path:
        nltk.data.path.append(lexicon_dir)
    return SentimentIntensityAnalyzer(lexicon_file="vader_lexicon.txt")


def sentiment_scores(contents: pd.Series) -> pd.Series:
    """VADER compound score per post; each distinct text is scored once (posts repeat a lot)."""
    codes, uniques = pd.factorize(contents)
    scores = np.array([_sentiment(text) for text in uniques], dtype=float)
    return pd.Series(_per_row(scores, codes, np.nan), index=contents.index)


def _sentiment(text: str) -> float:
    score = _sentiments.get(text)
    if score is None:
        score = sentiment_analyzer().polarity_scores(text)["compound"]
        _sentiments.put(text, score)
    return score


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def _load_products(data_dir: Path, catalogue_file: Path, report: DataQualityReport) -> pd.DataFrame:
    """The data directory's own products table when it has one, else the configured catalogue."""
    path = _canonical_path(data_dir, "products") or Path(catalogue_file)
    if not path.is_file():
        raise DataLoadError(f"{path}: product catalogue not found")
    raw = _read_canonical_table(path, "products", report)
    products = _clean_table("products", raw, report.table("products"))
    if products.empty:
        raise DataLoadError(f"{path}: the product catalogue holds no products")
    return products


def load_bank_data(data_dir: str | Path, settings: Settings, encoder: SentenceEncoder | None = None,
                   log_report: bool = True) -> BankData:
    """Loads, cleans and reports a data directory in the canonical or the hackathon format
    (``log_report``: the report logged too; a part of a bank's data leaves it to the whole's).

    ``encoder`` maps free-text preferences and needs (and hackathon payments) onto products by
    meaning. The caller gives it: the data layer never loads a text model itself. Data with such
    text and no encoder is refused with a :class:`ValueError` that says so.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataLoadError(f"{data_dir}: data directory not found")
    report = DataQualityReport(data_dir=str(data_dir))
    report.source_format = "canonical" if _canonical_path(data_dir, "customers") else "hackathon"
    tables = (_load_canonical if report.source_format == "canonical" else _load_hackathon)(data_dir, report)
    tables["products"] = _load_products(data_dir, settings.catalogue_file, report)
    evidence = []
    if report.source_format == "hackathon":
        tables["holdings"], paid = _evidence_holdings(tables["transactions"], tables["customers"],
                                                      tables["products"], _required(encoder, "hackathon payments"), report)
        evidence.append(paid)
    tables["products"]["is_credit"] = credit_flags(tables["products"], encoder, report.table("products"))
    tables["interests"], asked = _interests_of(tables["customers"], tables["products"], encoder, report)
    _summarise_evidence(report, [*evidence, asked])
    _drop_orphans(tables, report)
    tables["customers"]["consent_social"] = social_consent(tables["customers"], settings.social_data_default_consent,
                                                           report.table("customers"))
    tables["social_posts"] = _posts_with_consent(tables["social_posts"], tables["customers"],
                                                 report.table("social_posts"))
    tables["holdings"] = _deduplicated_holdings(tables["holdings"], report.table("holdings"))
    tables["social_posts"]["sentiment"] = sentiment_scores(tables["social_posts"]["content"])
    for table, frame in tables.items():
        report.table(table).finish(frame)
    if log_report:
        report.log()
    return BankData(**tables, quality=report, source_format=report.source_format,
                    age_bands=tuple(settings.age_bands))


# ----------------------------------------------------------------------------------------------
# What the bank may use: consent to read posts, and which products are credit
# ----------------------------------------------------------------------------------------------

FLAG_VALUES = {"true": True, "t": True, "yes": True, "y": True, "1": True, "1.0": True,
               "false": False, "f": False, "no": False, "n": False, "0": False, "0.0": False}
CREDIT_MEANINGS = (
    "a loan: borrow a sum of money and repay it in instalments with interest",
    "a credit card: spend on credit and pay the balance back later",
    "a company credit card for business expenses",
    "a mortgage: a loan to buy a home, secured on the property",
    "an overdraft or a line of credit to borrow against",
    "finance repaid over time: car finance, invoice finance, buy now pay later",
)
NOT_CREDIT_MEANINGS = (
    "a savings or deposit account that earns interest on your own money",
    "an insurance policy that pays out when something goes wrong",
    "an investment fund or an account to buy and sell shares",
    "a current account for everyday payments and a debit card",
    "a pension or an annuity for an income in retirement",
    "a service that processes card payments for a business",
    "an adviser who manages your wealth and your taxes",
)


def parse_flags(column: pd.Series, quality: TableQuality, name: str) -> pd.Series:
    """A yes/no column as True, False or None (missing); a value that is neither is reported and missing."""
    text = column.map(lambda value: None if is_missing(value) else str(value).strip().casefold())
    flags = text.map(FLAG_VALUES)
    unreadable = text.notna() & flags.isna()
    _report_values(quality, "unreadable_flag", "unreadable yes/no", name,
                   text[unreadable].value_counts().to_dict(), "set to missing")
    return flags.astype(object).where(flags.notna(), None)


def social_consent(customers: pd.DataFrame, default: bool, quality: TableQuality) -> pd.Series:
    """Whether each customer's posts may be read: their ``consent_social``, or the bank's default
    (``SOCIAL_DATA_DEFAULT_CONSENT``) where it is missing."""
    given = (parse_flags(customers["consent_social"], quality, "consent_social") if "consent_social" in customers
             else pd.Series(None, index=customers.index, dtype=object))
    consent = given.where(given.notna(), default).astype(bool)
    quality.add("no_social_consent", (~consent).sum(),
                "customers without consent to the use of their social-media posts"
                + ("" if default else " (missing consent_social counts as no: SOCIAL_DATA_DEFAULT_CONSENT=false)"),
                "their posts are never read")
    return consent


def _posts_with_consent(posts: pd.DataFrame, customers: pd.DataFrame, quality: TableQuality) -> pd.DataFrame:
    """Posts of customers who did not consent leave here, before anything reads them."""
    refused = customers.loc[~customers["consent_social"], "customer_id"]
    withheld = posts["customer_id"].isin(refused)
    quality.add("without_consent", withheld.sum(), "posts of customers without consent to their use", "not read")
    return posts[~withheld].reset_index(drop=True)


def credit_flags(products: pd.DataFrame, encoder: SentenceEncoder | None, quality: TableQuality) -> pd.Series:
    """Which products are credit: the catalogue's ``is_credit`` column; where it is absent or blank,
    inferred by meaning (a product closer to a kind of borrowing than to any other kind of product)
    and named in a warning and the report, for the bank to check and fill in."""
    given = (parse_flags(products["is_credit"], quality, "is_credit") if "is_credit" in products
             else pd.Series(None, index=products.index, dtype=object))
    unknown = given.isna()
    if not unknown.any():
        return given.astype(bool)
    inferred = infer_credit(products[unknown], _required(encoder, "products without is_credit"))
    credit = given.where(~unknown, pd.Series(inferred, index=products.index[unknown]))
    named = products.loc[unknown, "product_id"].astype(str)
    listing = ", ".join(f"{p} ({'credit' if c else 'not credit'})" for p, c in zip(named, inferred))
    quality.add("is_credit_inferred", unknown.sum(), f"no is_credit: inferred by meaning: {listing}", "inferred")
    logger.warning("is_credit inferred by meaning for %d products: %s", unknown.sum(), listing,
                   extra={"products_inferred": named.tolist()})
    return credit.astype(bool)


def infer_credit(products: pd.DataFrame, encoder: SentenceEncoder) -> list[bool]:
    """Credit or not, per product, by whether its name and description mean a kind of borrowing more
    than any other kind of product."""
    aliases = products.get("aliases", pd.Series("", index=products.index)).fillna("").astype(str)
    texts = (products["name"].fillna("").astype(str) + ". " + products["description"].fillna("").astype(str) + " "
             + aliases.str.replace(";", ",")).tolist()
    vectors = encoder.encode(texts)
    credit = (vectors @ encoder.encode(list(CREDIT_MEANINGS)).T).max(axis=1)
    other = (vectors @ encoder.encode(list(NOT_CREDIT_MEANINGS)).T).max(axis=1)
    return [bool(c > o) for c, o in zip(credit, other)]


def _interests_of(customers: pd.DataFrame, products: pd.DataFrame, encoder: SentenceEncoder | None,
                  report: DataQualityReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stated interests and their items as matched, reported; the encoder is needed only when
    some customer stated something."""
    items = _asked_items(customers)
    evidence = _matched_interest_items(items, products, _required(encoder, "preferences and financial needs")
                                       if len(items) else None)
    quality = report.table("interests")
    quality.sources.append(", ".join(INTEREST_FIELDS))
    quality.rows_read = len(evidence)
    if len(evidence):
        quality.add("unmatched_interest", evidence["product_id"].isna().sum(),
                    "preference or need items close to no catalogue product", "not used")
    return _interests_from(evidence), evidence


def _required(encoder: SentenceEncoder | None, text: str) -> SentenceEncoder:
    if encoder is None:
        raise ValueError(f"this data has {text} to map onto products by meaning: load_bank_data needs an encoder")
    return encoder


# ----------------------------------------------------------------------------------------------
# The unified customer view
# ----------------------------------------------------------------------------------------------

RECENT_DAYS = 90
TOP_SPEND_CATEGORIES = 15
DEBT_PATTERN = re.compile(r"\b(?:loans?|mortgages?|emi|bnpl|buy now pay later|repayments?|instal+ments?|debts?"
                          r"|credit card (?:bill|payment|repayment))\b", re.IGNORECASE)
PROFILE_TEXT_PARTS = (("occupation", "Occupation"), ("industry", "Industry"), ("interests", "Interests"),
                      ("preferences", "Preferences"), ("financial_needs", "Financial needs"))


def data_now(data: BankData) -> pd.Timestamp:
    """What "now" is for a data set: the day after its latest dated record (transaction, post or
    take-up), so that every dated event is in the past. Training, serving, the view and evaluation
    all read it here."""
    return now_after([latest_record(data)])


def latest_record(data: BankData) -> pd.Timestamp | None:
    """The latest dated record of the data (transaction, post or take-up); None when nothing is dated."""
    dates = [data.transactions["date"].max(), data.social_posts["timestamp"].max(), data.holdings["start_date"].max()]
    dates = [d for d in dates if pd.notna(d)]
    return max(dates) if dates else None


def now_after(latest: Sequence[pd.Timestamp | None]) -> pd.Timestamp:
    """The day after the latest of ``latest`` (the parts of a bank loaded one by one: its shards)."""
    dates = [d for d in latest if d is not None]
    return (max(dates) if dates else pd.Timestamp.now()).normalize() + pd.Timedelta(days=1)


def customer_view(data: BankData, as_of: pd.Timestamp | None = None,
                  spend_categories: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per customer, indexed by customer_id: profile, age band, transaction and social
    aggregates from events strictly before ``as_of`` (undated events cannot be placed and are left
    out), and the customer's own words as ``profile_text``. Customers without events get counts 0
    and NaN for statistics that need events. ``spend_categories``: the categories whose share of
    spending the view gives (category slugs); by default the data's most frequent ones."""
    as_of = data_now(data) if as_of is None else pd.Timestamp(as_of)
    customers = data.customers.set_index("customer_id")
    bands = {age: age_band(age, data.age_bands) for age in customers["age"].dropna().unique()}
    return pd.concat([
        customers,
        customers["age"].map(bands).astype(object).rename("age_band"),  # unknown age: no band, not "nan"
        transaction_aggregates(data.transactions, customers.index, as_of, spend_categories),
        social_aggregates(data.social_posts, customers.index, as_of),
        profile_text(customers),
    ], axis=1)


def _customer_rows(events: pd.DataFrame, column: str, customers: pd.Index,
                   as_of: pd.Timestamp) -> tuple[pd.DataFrame, np.ndarray]:
    """The events dated before as_of, and each one's customer as a row number of the view."""
    events = events[events[column] < as_of]
    rows = customers.get_indexer(events["customer_id"])
    return events[rows >= 0], rows[rows >= 0]


def _per_customer(rows: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(rows, weights=weights, minlength=n).astype(float)


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _days_since(dates: pd.Series, rows: np.ndarray, n: int, as_of: pd.Timestamp, how: str) -> np.ndarray:
    """Days from the customer's first ('min') or last ('max') event to as_of; NaN without events."""
    extreme = dates.groupby(rows).agg(how).reindex(range(n))
    return ((as_of - extreme).dt.total_seconds() / 86400.0).to_numpy()


def _monthly_spend(dates: pd.Series, rows: np.ndarray, spend: np.ndarray, n: int,
                   as_of: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
    """Mean monthly spend and its volatility (std / mean) over every month from the customer's
    first transaction to as_of, quiet months as zero: one big purchase reads as volatile, not as
    a steady level. Volatility needs two months."""
    months = (dates.dt.year * 12 + dates.dt.month).to_numpy()
    last = as_of - pd.Timedelta(microseconds=1)
    span = last.year * 12 + last.month + 1 - pd.Series(months).groupby(rows).min().reindex(range(n)).to_numpy()
    monthly = pd.Series(spend).groupby([rows, months]).sum()
    squares = _per_customer(monthly.index.get_level_values(0).to_numpy(), n, monthly.to_numpy() ** 2)
    mean = _safe_ratio(_per_customer(rows, n, spend), span)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(np.maximum(squares - span * mean ** 2, 0) / (span - 1))
    return mean, _safe_ratio(np.where(span > 1, std, np.nan), mean)


def _spend_trend(dates: pd.Series, rows: np.ndarray, spend: np.ndarray, count: np.ndarray,
                 as_of: pd.Timestamp) -> np.ndarray:
    """(last 90 days - the 90 before) / their sum: -1 stopped spending, 0 steady, +1 started."""
    days_before = (as_of - dates).dt.days.to_numpy()
    recent = _per_customer(rows, len(count), spend * (days_before < RECENT_DAYS))
    prior = _per_customer(rows, len(count), spend * ((days_before >= RECENT_DAYS) & (days_before < 2 * RECENT_DAYS)))
    return np.where(count > 0, np.nan_to_num(_safe_ratio(recent - prior, recent + prior)), np.nan)


def transaction_aggregates(transactions: pd.DataFrame, customers: pd.Index, as_of: pd.Timestamp,
                           spend_categories: Sequence[str] | None = None) -> pd.DataFrame:
    """Counts, totals, monthly level and volatility, recency, tenure, trend and spend mix per customer.

    Spend counts outflows only (positive amounts), so that a refund cannot make a month negative.
    """
    n = len(customers)
    tx, rows = _customer_rows(transactions, "date", customers, as_of)
    amount = tx["amount"].to_numpy(dtype=float)
    spend = np.clip(np.nan_to_num(amount), 0, None)
    count = _per_customer(rows, n)
    total = _per_customer(rows, n, np.nan_to_num(amount))
    total_spend = _per_customer(rows, n, spend)
    monthly_mean, monthly_volatility = _monthly_spend(tx["date"], rows, spend, n, as_of)
    debt = _matches_pattern(tx["category"], DEBT_PATTERN) | _matches_pattern(tx["type"], DEBT_PATTERN)
    aggregates = pd.DataFrame({
        "tx_count": count,
        "tx_total": total,
        "tx_mean_amount": _safe_ratio(total, _per_customer(rows, n, ~np.isnan(amount))),
        "tx_monthly_mean": monthly_mean,
        "tx_monthly_volatility": monthly_volatility,
        "tx_recency_days": _days_since(tx["date"], rows, n, as_of, "max"),
        "tx_tenure_days": _days_since(tx["date"], rows, n, as_of, "min"),
        "tx_trend": _spend_trend(tx["date"], rows, spend, count, as_of),
        "debt_payment_share": _safe_ratio(_per_customer(rows, n, spend * debt), total_spend),
    }, index=customers)
    shares = _spend_shares(tx["category"], rows, spend, total_spend, customers, spend_categories)
    return pd.concat([aggregates, shares], axis=1)


def _matches_pattern(text: pd.Series, pattern: re.Pattern) -> np.ndarray:
    codes, uniques = pd.factorize(text)
    hits = np.array([bool(pattern.search(value)) for value in uniques], dtype=bool)
    return _per_row(hits, codes, False)


def category_slug(category: str) -> str:
    """A column-name-safe form of a category: 'Real Estate' -> 'real_estate'."""
    return re.sub(r"[^0-9a-z]+", "_", category.casefold()).strip("_")


def _spend_shares(category: pd.Series, rows: np.ndarray, spend: np.ndarray, total_spend: np.ndarray,
                  customers: pd.Index, categories: Sequence[str] | None) -> pd.DataFrame:
    """Share of each customer's spend in each of ``categories``, by default the most frequent ones
    (by transactions). A fitted model names its own: which categories are the most frequent depends
    on whose transactions are counted (a shard's, a later month's), what a customer spent does not."""
    codes, uniques = pd.factorize(category)
    slugs = pd.Index([category_slug(value) for value in uniques], dtype="str")
    if categories is None:
        frequency = pd.Series(np.bincount(codes[codes >= 0], minlength=len(uniques)), index=slugs)
        frequency = frequency.drop("", errors="ignore").groupby(level=0).sum()
        categories = sorted(frequency.index, key=lambda slug: (-frequency[slug], slug))[:TOP_SPEND_CATEGORIES]
    top = pd.Index(list(categories), dtype="str")
    column = _per_row(top.get_indexer(slugs), codes, -1)
    inside = column >= 0
    n, k = len(customers), len(top)
    spent = np.bincount(rows[inside] * k + column[inside], weights=spend[inside], minlength=n * k).reshape(n, k)
    return pd.DataFrame(_safe_ratio(spent, total_spend[:, None]), index=customers,
                        columns=[f"spend_share__{slug}" for slug in top])


def social_aggregates(posts: pd.DataFrame, customers: pd.Index, as_of: pd.Timestamp) -> pd.DataFrame:
    """Post count, sentiment level and low point, recent change in mood, and recency per customer."""
    n = len(customers)
    posts, rows = _customer_rows(posts, "timestamp", customers, as_of)
    sentiment = posts["sentiment"].to_numpy(dtype=float)
    scored = ~np.isnan(sentiment)
    recent = scored & ((as_of - posts["timestamp"]).dt.days.to_numpy() < RECENT_DAYS)
    count = _per_customer(rows, n)
    mean = _safe_ratio(_per_customer(rows[scored], n, sentiment[scored]), _per_customer(rows[scored], n))
    recent_mean = _safe_ratio(_per_customer(rows[recent], n, sentiment[recent]), _per_customer(rows[recent], n))
    return pd.DataFrame({
        "post_count": count,
        "sentiment_mean": mean,
        "sentiment_min": pd.Series(sentiment).groupby(rows).min().reindex(range(n)).to_numpy(),
        "sentiment_recent_trend": np.where(np.isnan(mean), np.nan, np.nan_to_num(recent_mean - mean)),
        "post_recency_days": _days_since(posts["timestamp"], rows, n, as_of, "max"),
    }, index=customers)


def profile_text(customers: pd.DataFrame) -> pd.Series:
    """The customer's own words in one readable string, for matching against product descriptions."""
    text = pd.Series("", index=customers.index, dtype="string")
    for column, label in PROFILE_TEXT_PARTS:
        if column in customers:
            text = text + (label + ": " + customers[column].astype("string") + ". ").fillna("")
    text = text.str.strip().astype(object)
    return text.where(text != "", np.nan).rename("profile_text")
