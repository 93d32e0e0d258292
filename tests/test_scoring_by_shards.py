"""`cli.py score --shards N`: a bank split by customer, each shard loaded and scored on its own, gives
the answers of the bank loaded whole, messy files included, and resumes like any run."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import cli
from batch_scoring import LogProgress, score_customers
from data_loader import DataLoadError
from data_shards import shard_of, split_bank
from sharded_scoring import score_by_shards
from tests.utils.scoring import StopAfter

TOP_K = 3
SHARDS = 4
EXACT = ["customer_id", "rank", "product_id", "score", "adjusted_score", "scored_by", "rules", "bias_check_passed",
         "bias_worst_attribute", "fallback_used", "fallback_degraded", "fallback_reasons", "model_version"]


def answers(path: Path) -> pd.DataFrame:
    """A file's rows in customer and rank order (a sharded file lists customers shard by shard)."""
    table = pq.read_table(path).to_pandas()
    return table.sort_values(["customer_id", "rank"], na_position="first").reset_index(drop=True)


def assert_same_answers(left: Path, right: Path) -> None:
    """Every answer column equal; the bias check's largest score change to float32 precision: the text
    signals behind it come from matrix products whose rounding depends on how many customers are in one."""
    a, b = answers(left), answers(right)
    assert len(a) == len(b) and len(a) > 0
    pd.testing.assert_frame_equal(a[EXACT].astype(str), b[EXACT].astype(str))
    assert np.allclose(a["bias_max_score_change"], b["bias_max_score_change"], rtol=0, atol=1e-6, equal_nan=True)


def by_shards(settings, out, shards=SHARDS, engine="local", restart=False, stop_after=None):
    progress = LogProgress if stop_after is None else (lambda total, done: StopAfter(stop_after, total, done))
    return score_by_shards(settings, out, TOP_K, shards, engine, restart, progress)


@pytest.fixture(scope="module")
def whole_file(trained_service, tmp_path_factory) -> Path:
    """The small bank loaded whole, as the service loads it: the answers every sharded run must give."""
    out = tmp_path_factory.mktemp("whole") / "answers.parquet"
    score_customers(trained_service, out, TOP_K, 600, "local", False, LogProgress)
    return out


@pytest.fixture(scope="module")
def sharded_file(trained_service, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharded") / "answers.parquet"
    by_shards(trained_service.settings, out)
    return out


def test_a_bank_scored_by_shards_gets_the_answers_of_the_bank_loaded_whole(whole_file, sharded_file):
    assert_same_answers(whole_file, sharded_file)
    assert not sharded_file.with_name(sharded_file.name + ".parts").exists()  # shards and parts are gone


def test_every_customer_lands_in_exactly_one_shard_whatever_the_spacing_of_its_id():
    ids = pd.Series(["CUST1", " CUST1 ", "CUST1\t", "CUST2", "", "NULL", "nan"])
    shards = shard_of(ids, 7)
    assert shards[0] == shards[1] == shards[2]
    assert list(shards[4:]) == [0, 0, 0]  # no id: shard 0, whose load drops and reports the row
    assert (shard_of(pd.Series([f"C{i}" for i in range(5000)]), 4) == np.arange(4)[:, None]).any(axis=1).all()


def messy_copy(source: Path, target: Path) -> Path:
    """The small bank with the mess a nightly extract brings: ids padded with spaces and tabs, a profile
    repeated, blank lines, a header pasted again, rows without an id, posts and payments of nobody."""
    shutil.copytree(source, target)
    customers = pd.read_csv(target / "customers.csv", dtype=str, keep_default_na=False)
    transactions = pd.read_csv(target / "transactions.csv", dtype=str, keep_default_na=False)
    posts = pd.read_csv(target / "social_posts.csv", dtype=str, keep_default_na=False)
    transactions.loc[::7, "customer_id"] = "  " + transactions.loc[::7, "customer_id"] + "\t"
    posts.loc[::5, "customer_id"] = " " + posts.loc[::5, "customer_id"]
    customers = pd.concat([customers, customers.iloc[[3]].assign(income="1")])  # a repeat: the first row is kept
    header = pd.DataFrame([transactions.columns], columns=transactions.columns)
    nobody = transactions.iloc[:2].assign(customer_id=["GHOST1", "NULL"])
    transactions = pd.concat([transactions.iloc[:100], header, nobody, transactions.iloc[100:]])
    posts = pd.concat([posts, posts.iloc[:1].assign(customer_id="GHOST2")])
    for frame, name in ((customers, "customers"), (transactions, "transactions"), (posts, "social_posts")):
        frame.to_csv(target / f"{name}.csv", index=False, quoting=csv.QUOTE_ALL)
    with (target / "transactions.csv").open("a") as handle:
        handle.write("\n\n")
    return target


def test_messy_files_split_into_any_number_of_shards_give_the_same_answers(trained_service, tmp_path):
    """One shard is the bank loaded whole through the same path: every split must answer as it does."""
    settings = trained_service.settings.model_copy(update={"data_dir": messy_copy(trained_service.settings.data_dir,
                                                                                   tmp_path / "messy")})
    one = by_shards(settings, tmp_path / "one.parquet", shards=1)
    five = by_shards(settings, tmp_path / "five.parquet", shards=5)
    assert one.customers == five.customers == 600 and five.chunks == 5
    assert_same_answers(tmp_path / "one.parquet", tmp_path / "five.parquet")
    # the bank's report, summed over the shards; but an event id used by two customers (a post copied to
    # nobody, here) lands in two shards: no shard sees it twice, and the repeat goes unreported
    assert without_repeated_event_ids(five.data_quality) == without_repeated_event_ids(one.data_quality)
    assert dict(what_was_dropped(one.data_quality)["tables"]["social_posts"]["issues"])["duplicate_id"] == 1
    assert five.data_quality["tables"]["transactions"]["sources"] == [str(settings.data_dir / "transactions.csv")]
    transactions = dict(what_was_dropped(five.data_quality)["tables"]["transactions"]["issues"])
    assert (transactions["orphan"], transactions["missing_id"], transactions["repeated_header"],
            transactions["blank_row"]) == (1, 1, 1, 2)


def without_repeated_event_ids(report: dict) -> dict:
    counts = what_was_dropped(report)
    for table in ("transactions", "social_posts"):
        counts["tables"][table]["issues"] = [i for i in counts["tables"][table]["issues"] if i[0] != "duplicate_id"]
    return counts


def what_was_dropped(report: dict) -> dict:
    """A data-quality report's counts: rows read and kept, and each issue's count, per table."""
    return {"orphans": report["orphans"],
            "tables": {name: {"rows": (table["rows_read"], table["rows_kept"]),
                              "issues": sorted((issue["code"], issue["count"]) for issue in table["issues"])}
                       for name, table in report["tables"].items()}}


def test_an_interrupted_sharded_run_resumes_from_its_last_complete_shard(trained_service, sharded_file, tmp_path):
    out = tmp_path / "answers.parquet"
    with pytest.raises(KeyboardInterrupt):
        by_shards(trained_service.settings, out, stop_after=2)
    parts = out.with_name(out.name + ".parts")
    assert len(list(parts.glob("part-*.parquet"))) == 2 and not out.exists()
    summary = by_shards(trained_service.settings, out)
    assert summary.resumed_chunks == 2 and summary.chunks == SHARDS
    assert out.read_bytes() == sharded_file.read_bytes()


def test_a_split_refuses_what_it_cannot_read(tmp_path, hackathon_dir):
    with pytest.raises(DataLoadError, match="canonical format's CSV tables"):
        split_bank(hackathon_dir, tmp_path / "shards", 2)


def test_sharded_scoring_without_saved_models_says_to_train_first(trained_service, tmp_path, capsys,
                                                                 restore_logging, environment):
    environment(MODELS_DIR=str(tmp_path / "no-models"))
    code = cli.main(["score", "--data", str(trained_service.settings.data_dir), "--out", str(tmp_path / "a.parquet"),
                     "--shards", "2"])
    error = capsys.readouterr().err
    assert code == 2 and "no saved models in" in error and "train them first" in error


def test_split_data_gives_disjoint_samples_of_the_customers_and_never_deletes_another_directory(
        trained_service, tmp_path, capsys, restore_logging):
    source = trained_service.settings.data_dir
    assert cli.main(["split-data", "--data", str(source), "--out", str(tmp_path / "shards"), "--shards", "3"]) == 0
    directories = [Path(d) for d in json.loads(capsys.readouterr().out)["shards"]]
    ids = [set(pd.read_csv(d / "customers.csv", dtype=str)["customer_id"]) for d in directories]
    assert sum(map(len, ids)) == len(set().union(*ids)) == len(pd.read_csv(source / "customers.csv"))
    assert all(len(shard) > 100 for shard in ids)  # a hash, not a range: every shard a sample of the bank
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert cli.main(["split-data", "--data", str(source), "--out", str(mine), "--shards", "3"]) == 2
    assert "is not a split of a bank's data" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep"
