"""`cli.py score --engine ray` on a real local Ray (2 CPUs, started once for the module, no mocks):
the same file as the local engine, even when a worker is killed mid-run, and serving never loads Ray."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batch_scoring import LogProgress, score_customers
from sharded_scoring import score_by_shards
from tests.utils.scoring import StopAfter

ray = pytest.importorskip("ray", reason="ray (requirements.txt) is not installed in this environment")

ROOT = Path(__file__).resolve().parents[1]
TOP_K = 3
CHUNK = 50  # the small bank's 600 customers in twelve chunks: several in flight on each of the two CPUs
TASK_TITLE = b"ray::score_bank_chunk"  # the process title of a Ray worker while it scores a chunk


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module: starting one takes several seconds."""
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    except Exception as error:  # a machine where Ray cannot run: say why, skip the module
        pytest.skip(f"a local Ray could not start on this machine: {type(error).__name__}: {error}")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_file(trained_service, tmp_path_factory) -> Path:
    """The local engine's file over the small bank, the reference every Ray run is compared with."""
    out = tmp_path_factory.mktemp("local") / "answers.parquet"
    score_customers(trained_service, out, TOP_K, CHUNK, "local", False, LogProgress)
    return out


class KillAScoringWorker(LogProgress):
    """Once the first chunk is on disk, SIGKILLs a Ray worker that is scoring another chunk, as the
    out-of-memory killer or a lost node would."""

    def __init__(self, total: int, done: int) -> None:
        super().__init__(total, done)
        self.killed: int | None = None

    def advance(self, chunk) -> None:
        super().advance(chunk)
        if self.killed is None:
            self.killed = scoring_worker()
            os.kill(self.killed, signal.SIGKILL)


def scoring_worker(seconds: float = 10) -> int:
    """The pid of a Ray worker process in the middle of a chunk (its title names the task)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(TASK_TITLE):
                    return int(entry.name)
            except OSError:  # the process ended while being looked at
                continue
        time.sleep(0.01)
    raise AssertionError("no Ray worker was scoring a chunk")


def test_ray_writes_the_local_engine_file_byte_for_byte(local_ray, local_file, trained_service, tmp_path):
    out = tmp_path / "answers.parquet"
    summary = score_customers(trained_service, out, TOP_K, CHUNK, "ray", False, LogProgress)
    assert summary.engine == "ray" and summary.customers == 600 and summary.chunks == 12
    assert out.read_bytes() == local_file.read_bytes()


def test_a_worker_killed_mid_run_is_retried_and_the_file_is_complete_and_identical(
        local_ray, local_file, trained_service, tmp_path):
    out = tmp_path / "answers.parquet"
    progress: list[KillAScoringWorker] = []

    def killing(total: int, done: int) -> KillAScoringWorker:
        progress.append(KillAScoringWorker(total, done))
        return progress[0]

    summary = score_customers(trained_service, out, TOP_K, CHUNK, "ray", False, killing)
    killed = progress[0].killed
    assert killed is not None and not Path(f"/proc/{killed}").exists()  # the worker did die mid-chunk
    assert summary.chunks == 12 and summary.resumed_chunks == 0
    assert out.read_bytes() == local_file.read_bytes()


def test_a_local_run_interrupted_resumes_on_ray_to_the_same_file(local_ray, local_file, trained_service, tmp_path):
    """The parts do not depend on the engine: either one resumes the other's run."""
    out = tmp_path / "answers.parquet"
    with pytest.raises(KeyboardInterrupt):
        score_customers(trained_service, out, TOP_K, CHUNK, "local", False,
                        lambda total, done: StopAfter(5, total, done))
    summary = score_customers(trained_service, out, TOP_K, CHUNK, "ray", False, LogProgress)
    assert summary.resumed_chunks == 5 and summary.chunks == 12
    assert out.read_bytes() == local_file.read_bytes()


def test_a_bank_scored_by_shards_on_ray_gets_the_local_engines_answers(local_ray, trained_service, tmp_path):
    """Shards loaded, posts analysed and shards scored as Ray tasks: the file of the same run here."""
    here, there = tmp_path / "here.parquet", tmp_path / "ray.parquet"
    score_by_shards(trained_service.settings, here, TOP_K, 3, "local", False, LogProgress)
    summary = score_by_shards(trained_service.settings, there, TOP_K, 3, "ray", False, LogProgress)
    assert summary.engine == "ray" and summary.customers == 600 and summary.chunks == 3
    assert there.read_bytes() == here.read_bytes()


def test_serving_and_the_local_engine_never_load_ray():
    """What `make run` and `cli.py score --engine local` import: no Ray among it."""
    code = ("import sys, app, cli, batch_scoring, recommendation_service; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_training_on_ray_fits_the_same_model_as_training_here(local_ray, trained_service, trained_training,
                                                             refitted_here):
    """`cli.py train --engine ray`: the products fitted as Ray tasks give the model fitted here (the
    fits are seeded, and each product's depends on nothing else): the same strategies, held-out
    figures and scores. A Ray task's trees run on one thread (Ray sets it per CPU of the task), so
    the fit here is limited to one thread too: with two, partial sums add up in another order, and
    on the small bank one split in 7,200 scores came out otherwise (a score 0.0026 apart)."""
    import numpy as np
    from sklearn.base import clone

    from feature_engineer import CustomerInputs
    from ray_engine import RayTraining

    model = trained_service.model
    here, _ = refitted_here
    on_ray = clone(model).fit(trained_training, model.features_, model.product_ids_, model.label_scheme_,
                              RayTraining(trained_service.settings).fit_products)
    assert [vars(r) for r in on_ray.reports_] == [vars(r) for r in here.reports_]
    base = trained_service.base
    inputs = CustomerInputs.of(base.tabular, base.signals, np.arange(200))
    np.testing.assert_allclose(on_ray.score(inputs), here.score(inputs), rtol=0, atol=1e-9)
    assert ray.is_initialized(), "a Ray the caller started is left running"


def test_posts_analysed_on_ray_read_as_the_posts_analysed_here(local_ray, trained_service, text_encoder,
                                                              monkeypatch):
    """`cli.py train --engine ray`: the posts a detector has not seen go to Ray workers in batches;
    each worker loads the same weights, and the analyses come back in the posts' order, read as the
    ones made here (the same events, evidence spans and tense; embeddings equal to float rounding)."""
    import numpy as np

    import ray_engine
    from text_models import LifeEventDetector

    monkeypatch.setattr(ray_engine, "TEXTS_PER_BATCH", 7)  # 30 posts: five batches over the two CPUs
    posts = [str(post) for post in trained_service.data.social_posts["content"].drop_duplicates().iloc[:30]]
    here = LifeEventDetector(text_encoder).fresh_analyses(posts)
    on_ray = LifeEventDetector(text_encoder, ray_engine.RayTraining(trained_service.settings).analyse_texts)
    analysed = on_ray.analyse(posts)
    assert [a.event_spans for a in analysed] == [a.event_spans for a in here]
    assert [a.aspect for a in analysed] == [a.aspect for a in here]
    np.testing.assert_allclose(np.stack([a.embedding for a in analysed]), np.stack([a.embedding for a in here]),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.stack([a.event_scores for a in analysed]),
                               np.stack([a.event_scores for a in here]), rtol=0, atol=1e-5)
    assert on_ray.analyse(posts[:3]) == analysed[:3], "what came back from Ray is kept: asked again, not re-sent"
