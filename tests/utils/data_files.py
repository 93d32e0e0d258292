"""Messy hackathon-format files for the loader's tests, built from the fixture CSVs.

The fixture CSVs under ``tests/fixtures/data_loader/hackathon`` are the single source of the messy
cells. From them these helpers write the other layouts the loader must read: four workbooks, or one
workbook with a sheet per table under other header spellings. Cells are stored the way Excel stores
them (whole numbers as numbers, ISO dates as real dates), so every layout carries the same values.
"""
from __future__ import annotations

import csv
import re
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd

HACKATHON_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data_loader" / "hackathon"
CANONICAL_SMALL = Path(__file__).resolve().parents[1] / "fixtures" / "canonical_small"

# Other spellings seen in the wild for the fixture headers (case, punctuation, wording).
ALTERNATIVE_HEADERS = {
    "Customer ID": "customer id",
    "CustomerID": "Customer_Id",
    "customer_id": "Customer Id",
    "Income per year (in dollars)": "Income per year",
    "Amt (in dollars)": "Amount (In Dollars)",
    "No. of employees": "No of employees",
    "Revenue (In Dollars)": "Revenue (in dollars)",
    "Post ID": "Post_Id",
    "Purchase Date": "purchase date",
    "Transaction Type": "transaction_type",
}
# Sheet names say nothing about their table: the loader must recognise tables by their columns.
SHEET_NAMES = ("Sheet1", "Data", "Feuil3", "export (2)")


def raw_rows(path: Path) -> list[list[str]]:
    """The cells of a fixture CSV, header and all, exactly as written."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.reader(handle)]


def excel_value(cell: str) -> object:
    """A cell as Excel would hold it: blank as empty, whole numbers as numbers, ISO dates as dates."""
    if cell == "":
        return None
    if re.fullmatch(r"[1-9]\d*", cell):
        return int(cell)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", cell):
        return datetime.fromisoformat(cell)
    return cell


def _sheet(rows: list[list[str]], headers: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([[excel_value(headers.get(cell, cell)) for cell in row] for row in rows])


def fixture_tables(source: Path = HACKATHON_FIXTURES) -> dict[str, list[list[str]]]:
    return {path.stem: raw_rows(path) for path in sorted(source.glob("*.csv"))}


def write_workbooks(out_dir: Path, source: Path = HACKATHON_FIXTURES) -> Path:
    """One workbook per table, like the original hackathon files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in fixture_tables(source).items():
        _sheet(rows, {}).to_excel(out_dir / f"{name}.xlsx", header=False, index=False)
    return out_dir


def write_single_workbook(out_dir: Path, source: Path = HACKATHON_FIXTURES,
                          headers: dict[str, str] = ALTERNATIVE_HEADERS) -> Path:
    """One workbook with a sheet per table, arbitrary sheet names and other header spellings."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(out_dir / "bank_export.xlsx") as writer:
        for sheet, rows in zip(SHEET_NAMES, fixture_tables(source).values()):
            _sheet(rows, headers).to_excel(writer, sheet_name=sheet, header=False, index=False)
    return out_dir


def copy_csvs(out_dir: Path, source: Path = HACKATHON_FIXTURES, drop_columns: dict[str, str] | None = None) -> Path:
    """The fixture CSVs, optionally without one named column in some tables (``{table: header}``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.csv"):
        dropped = (drop_columns or {}).get(path.stem)
        if dropped is None:
            shutil.copy(path, out_dir / path.name)
            continue
        rows = raw_rows(path)
        position = next(row.index(dropped) for row in rows if dropped in row)
        with (out_dir / path.name).open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([cell for i, cell in enumerate(row) if i != position] for row in rows)
    return out_dir
