"""`cli.py score`: every customer's answer in Parquet, the same as `/recommend`, in chunks that resume."""
from __future__ import annotations

import dataclasses
import io
import json

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

import cli
from app import create_app
from batch_scoring import BarProgress, LogProgress, ResumeRefused, chunk_progress, plan_chunks, score_customers
from recommendation_service import RecommendationService
from tests.utils.scoring import StopAfter
from tests.utils.service import wait_ready

TOP_K = 3
CHUNK = 150  # the small bank's 600 customers in four chunks


def run(service, out, chunk_size=CHUNK, top_k=TOP_K, restart=False, stop_after=None):
    progress = LogProgress if stop_after is None else (lambda total, done: StopAfter(stop_after, total, done))
    return score_customers(service, out, top_k, chunk_size, "local", restart, progress)


@pytest.fixture(scope="module")
def scored(trained_service, tmp_path_factory):
    """One uninterrupted run over the small bank, in four chunks."""
    out = tmp_path_factory.mktemp("scored") / "answers.parquet"
    return out, run(trained_service, out)


def test_every_customer_is_in_the_file_once_in_the_base_order(scored, trained_service):
    out, summary = scored
    table = pq.read_table(out)
    customers = list(dict.fromkeys(table.column("customer_id").to_pylist()))
    assert customers == [str(c) for c in trained_service.base.view.index]
    assert summary.customers == 600 and summary.rows == table.num_rows and summary.chunks == 4
    assert pq.ParquetFile(out).metadata.num_row_groups == 4  # one row group per chunk
    assert not out.with_name(out.name + ".parts").exists()


def test_file_rows_are_the_answers_of_recommend(scored, trained_service, api_settings, tmp_path):
    """Compared with the API's own JSON, for customers with rules, a failed bias check, a fallback."""
    rows = pq.read_table(scored[0]).to_pylist()
    chosen = {rows[0]["customer_id"],
              next(r["customer_id"] for r in rows if r["rules"]),
              next(r["customer_id"] for r in rows if r["fallback_used"]),
              *[r["customer_id"] for r in rows if not r["bias_check_passed"]][:2],
              rows[-1]["customer_id"]}
    settings = api_settings.model_copy(update={"state_dir": tmp_path})  # no contact history
    with TestClient(create_app(settings, factory=lambda settings: trained_service)) as client:
        wait_ready(client)
        for customer_id in chosen:
            answer = client.post("/recommend", json={"customer_id": customer_id, "top_k": TOP_K}).json()
            assert [without_customer(r) for r in rows if r["customer_id"] == customer_id] == expected_rows(answer)


def without_customer(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "customer_id"}


def expected_rows(answer: dict) -> list[dict]:
    """The file's rows of one `/recommend` answer, read off its JSON."""
    checks = answer["bias_check"]["attributes"]
    worst = max(checks, key=lambda check: (not check["passed"], check["max_score_change"]))
    customer = {"bias_check_passed": answer["bias_check"]["passed"], "bias_worst_attribute": worst["attribute"],
                "bias_max_score_change": worst["max_score_change"], "fallback_used": answer["fallback"]["used"],
                "fallback_degraded": answer["fallback"]["degraded"], "fallback_reasons": answer["fallback"]["reasons"],
                "model_version": answer["model_version"]}
    return [{"rank": item["rank"], "product_id": item["product_id"], "score": item["score"],
             "adjusted_score": item["adjusted_score"], "scored_by": item["scored_by"],
             "rules": [{"rule": r["rule"], "effect": r["effect"], "factor": r["factor"]} for r in item["rules"]],
             **customer} for item in answer["recommendations"]]


def test_a_single_chunk_gives_the_same_rows(scored, trained_service, tmp_path):
    out = tmp_path / "one_chunk.parquet"
    summary = run(trained_service, out, chunk_size=1000)
    assert summary.chunks == 1 and pq.ParquetFile(out).metadata.num_row_groups == 1
    assert pq.read_table(out).equals(pq.read_table(scored[0]))


def test_an_interrupted_run_resumes_from_its_last_complete_chunk(scored, trained_service, tmp_path):
    out = tmp_path / "answers.parquet"
    with pytest.raises(KeyboardInterrupt):
        run(trained_service, out, stop_after=2)
    parts = out.with_name(out.name + ".parts")
    assert sorted(p.name for p in parts.iterdir()) == ["manifest.json", "part-000000.parquet", "part-000001.parquet"]
    assert not out.exists()
    summary = run(trained_service, out)
    assert summary.resumed_chunks == 2 and summary.chunks == 4
    assert out.read_bytes() == scored[0].read_bytes()  # the same file as the uninterrupted run
    assert not parts.exists()


def test_resuming_under_other_models_data_or_arguments_is_refused(trained_service, tmp_path):
    out = tmp_path / "answers.parquet"
    with pytest.raises(KeyboardInterrupt):
        run(trained_service, out, stop_after=1)
    retrained = dataclasses.replace(trained_service.artifacts, trained_at="2030-01-01T00:00:00+00:00")
    other_data = dataclasses.replace(trained_service.artifacts, fingerprint="fitted-on-other-data")
    for artifacts, named in ((retrained, "trained_at"), (other_data, "data_fingerprint")):
        service = RecommendationService(trained_service.settings, trained_service.data, trained_service.rules,
                                        artifacts)
        with pytest.raises(ResumeRefused, match=f"{named}: .*--restart"):
            run(service, out)
    with pytest.raises(ResumeRefused, match="top_k: 3 -> 2"):
        run(trained_service, out, top_k=2)
    with pytest.raises(ResumeRefused, match="chunk_size: 150 -> 100"):
        run(trained_service, out, chunk_size=100)
    summary = run(service, out, restart=True)
    assert summary.resumed_chunks == 0 and pq.read_table(out).num_rows == summary.rows


def test_plan_chunks_cover_every_customer_once():
    chunks = plan_chunks(601, 150)
    assert [(c.start, c.stop) for c in chunks] == [(0, 150), (150, 300), (300, 450), (450, 600), (600, 601)]
    assert sum(c.size for c in chunks) == 601 and plan_chunks(0, 150) == []


def test_score_command_writes_the_file_and_logs_each_chunk_without_personal_data(
        scored, api_settings, trained_service, tmp_path, environment, capsys, restore_logging):
    """Through the command as an operator runs it, on the saved models of the small bank."""
    environment(MODELS_DIR=str(api_settings.models_dir))
    code = cli.main(["score", "--data", str(api_settings.data_dir), "--out", str(tmp_path / "answers.parquet"),
                     "--top-k", str(TOP_K), "--chunk-size", str(CHUNK)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    summary = json.loads(printed.out)
    assert summary["customers"] == 600 and summary["engine"] == "local" and summary["customers_per_second"] > 0
    assert pq.read_table(tmp_path / "answers.parquet").equals(pq.read_table(scored[0]))
    chunk_lines = [json.loads(line) for line in printed.err.splitlines() if '"chunk scored"' in line]
    assert [line["customers_done"] for line in chunk_lines] == [150, 300, 450, 600]
    customer_ids = {str(c) for c in trained_service.base.view.index}
    assert not any(customer_id in printed.err for customer_id in customer_ids)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_and_anything_else_log_lines():
    bar = chunk_progress(600, 150, Terminal())
    bar.advance(plan_chunks(600, 150)[1])
    bar.close()
    assert isinstance(bar, BarProgress) and bar.bar.n == 300
    assert isinstance(chunk_progress(600, 0, io.StringIO()), LogProgress)


@pytest.mark.parametrize("arguments, message", [
    (["--top-k", "0"], "argument --top-k: must be 1 or more, not 0"),
    (["--chunk-size", "0"], "argument --chunk-size: must be 1 or more, not 0"),
    (["--engine", "spark"], "argument --engine: invalid choice"),
    (["--shards", "0"], "argument --shards: must be 1 or more, not 0"),
    (["--shards", "4", "--chunk-size", "10"], "argument --chunk-size: not allowed with argument --shards"),
])
def test_bad_arguments_are_usage_errors(arguments, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["score", "--data", str(tmp_path), "--out", str(tmp_path / "a.parquet"), *arguments])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_a_missing_data_directory_is_a_clear_error(tmp_path, capsys, restore_logging):
    code = cli.main(["score", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "a.parquet")])
    assert code == 2 and "error: data directory not found" in capsys.readouterr().err
