"""A bank's data files split by customer into shards, each a data directory of its own.

Why: a bank of millions does not fit in one process once loaded (at 100,000 customers the loaded
data and serving state take 2-3 GB). Split by customer, every shard holds all the rows of its
customers (profile, transactions, posts, holdings) and nothing of anyone else's, so the loader
reads a shard exactly as it reads the whole bank, and what it computes for a customer (their
view, signals, answer) is the same: everything per customer stays inside one shard. Only what
is about the whole bank (its "now", which groups exist) is gathered across shards by the caller.

A row goes to the shard of its customer id as the loader reads it (text stripped), through a
fixed hash, so the split does not depend on the order of the files nor on the machine. Rows
without a customer id go to shard 0, where the loader drops and reports them as it would have.
Files are streamed in blocks of rows: memory is bounded by a block, not by the bank.

One thing a shard cannot see: an event id (a transaction's or a post's) used by two customers. The
bank loaded whole reports the repeat and renames the later one; split, the two rows are in two shards
and go unreported (their customers' answers are the same either way: the ids are never scored).

The split reads the canonical format's CSV tables, the format a bank's nightly extract comes in;
a Parquet table or a spreadsheet export (the hackathon format) is refused with the reason.
"""
from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_loader import MISSING_MARKERS, DataLoadError

SHARDED_TABLES = ("customers", "transactions", "social_posts", "holdings")
"""The tables the loader reads with a row per customer or customer event."""
SHARED_FILES = ("products.csv", "products.parquet")
"""The loader's other input, the catalogue, copied whole into every shard; other files of the
directory (a generator's ground truth, notes) are not the loader's and stay behind."""
ROWS_PER_BLOCK = 200_000
SPLIT_MARKER = ".split"  # {"shards": N, "complete": bool}: what a directory of shards is, and whether it is whole


def shard_directories(out: Path, shards: int) -> list[Path]:
    return [out / f"shard-{index:05d}" for index in range(shards)]


def shard_of(customer_ids: pd.Series, shards: int) -> np.ndarray:
    """Each row's shard: a fixed hash of the customer id as the loader reads it; 0 without one."""
    ids = customer_ids.astype(str).str.strip()
    missing = ids.isin(MISSING_MARKERS).to_numpy()
    hashed = pd.util.hash_pandas_object(ids, index=False).to_numpy() % np.uint64(shards)
    return np.where(missing, 0, hashed).astype(np.int64)


TableTasks = Callable[[Callable[[list[Path], Path], None], list[Path], Sequence[Path]], Iterable[Any]]
"""Runs ``split_table(directories, path)`` for every table file, in any order: one after the
other by default, or in parallel (a scoring engine's ``map``)."""


def one_after_the_other(task: Callable[[list[Path], Path], None], directories: list[Path],
                        paths: Sequence[Path]) -> Iterable[Any]:
    return [task(directories, path) for path in paths]


def split_bank(data_dir: Path, out: Path, shards: int, table_tasks: TableTasks = one_after_the_other) -> list[Path]:
    """``data_dir`` split into ``shards`` data directories under ``out``, each table by its own task
    (``table_tasks``). A complete split of as many shards already there is kept (the first step a
    resumed run skips); an unfinished one is made again; a directory that is not a split is never
    deleted."""
    directories = shard_directories(out, shards)
    marker = out / SPLIT_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == {"shards": shards, "complete": True}:
        return directories
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise ValueError(f"{out} exists and is not a split of a bank's data; choose another directory or move it away")
    tables = _sharded_files(data_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    marker.write_text(json.dumps({"shards": shards, "complete": False}))
    for directory in directories:
        directory.mkdir()
    for name in SHARED_FILES:
        if (data_dir / name).is_file():
            for directory in directories:
                shutil.copyfile(data_dir / name, directory / name)
    for _ in table_tasks(split_table, directories, sorted(tables.values(), key=lambda p: -p.stat().st_size)):
        pass  # the largest first: it decides when a parallel split ends
    marker.write_text(json.dumps({"shards": shards, "complete": True}))
    return directories


def _sharded_files(data_dir: Path) -> dict[str, Path]:
    """The CSV file of every sharded table present; refuses what the split cannot read."""
    if not (data_dir / "customers.csv").is_file():
        raise DataLoadError(f"{data_dir}: sharding reads the canonical format's CSV tables (customers.csv, "
                            f"transactions.csv, ...); load this directory whole instead")
    files = {}
    for table in SHARDED_TABLES:
        if (data_dir / f"{table}.parquet").is_file():
            raise DataLoadError(f"{data_dir / f'{table}.parquet'}: sharding reads CSV tables, not Parquet")
        if (data_dir / f"{table}.csv").is_file():
            files[table] = data_dir / f"{table}.csv"
    return files


def split_table(directories: list[Path], path: Path) -> None:
    """Streams one table file into the shards, every value as the text it was (the loader types it).
    Starts from no rows in any shard, so that a task run again (its worker lost) writes each row once."""
    for directory in directories:
        (directory / path.name).unlink(missing_ok=True)
    written: set[int] = set()
    options = {"dtype": str, "keep_default_na": False, "skip_blank_lines": False, "encoding": "utf-8-sig",
               "encoding_errors": "replace"}
    columns = list(pd.read_csv(path, nrows=0, **options).columns)
    for block in pd.read_csv(path, chunksize=ROWS_PER_BLOCK, **options):
        key = [column for column in block.columns if str(column).strip() == "customer_id"]
        if not key:
            raise DataLoadError(f"{path}: required column customer_id missing (columns: {list(block.columns)})")
        for shard, rows in block.groupby(shard_of(block[key[0]], len(directories)), sort=True):
            rows.to_csv(directories[shard] / path.name, mode="a", header=shard not in written, index=False,
                        quoting=csv.QUOTE_ALL)
            written.add(int(shard))
    for shard in set(range(len(directories))) - written:  # a shard without rows still has the table, empty
        pd.DataFrame(columns=columns).to_csv(directories[shard] / path.name, index=False, quoting=csv.QUOTE_ALL)
