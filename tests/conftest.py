"""Shared fixtures: the text model is loaded once per test session."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("STATE_DIR", tempfile.mkdtemp(prefix="nbp-test-state-"))  # never the checkout's state/

from settings import get_settings  # noqa: E402

HACKATHON_DIR = ROOT.parent / "shared" / "data" / "hackathon"


@pytest.fixture
def restore_logging():
    """`cli.main` configures the root logger for the process: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def environment(monkeypatch):
    """Sets the environment the settings are read from, as an operator would for one command:
    ``get_settings`` is cached, so it reads them again now and, without them, after the test."""
    def set_environment(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield set_environment
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def text_encoder(tmp_path_factory):
    """The packaged MiniLM with a cache private to this test session."""
    from text_models import TextEncoder

    settings = get_settings()
    return TextEncoder(settings.resolved_text_model_dir, tmp_path_factory.mktemp("embedding_cache"))


@pytest.fixture(scope="session")
def hackathon_dir() -> Path:
    if not HACKATHON_DIR.is_dir():
        pytest.skip(f"the hackathon data is not beside the checkout at {HACKATHON_DIR}")
    return HACKATHON_DIR


@pytest.fixture(scope="session")
def hackathon_service(hackathon_dir, tmp_path_factory):
    """The service started on the real hackathon files (trained once per session)."""
    from recommendation_service import RecommendationService
    from settings import Settings

    return RecommendationService.start(Settings(data_dir=hackathon_dir, api_keys=[],
                                                models_dir=tmp_path_factory.mktemp("hackathon_models")))


@pytest.fixture(scope="session")
def api_settings(tmp_path_factory):
    """A small generated bank, trained once per session."""
    from tests.utils.service import small_bank_settings

    return small_bank_settings(tmp_path_factory.mktemp("bank"))


@pytest.fixture(scope="session")
def trained_service(api_settings):
    from recommendation_service import RecommendationService

    return RecommendationService.start(api_settings)


@pytest.fixture(scope="session")
def client(api_settings, trained_service):
    from fastapi.testclient import TestClient

    from app import create_app
    from tests.utils.service import wait_ready

    with TestClient(create_app(api_settings, factory=lambda settings: trained_service)) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="session")
def known_customer(trained_service) -> str:
    """An individual with posts, so that explanations have something to cite."""
    view = trained_service.base.view
    individuals = view[(view["customer_type"] == "individual") & (view["post_count"] > 0)]
    return str(individuals.index[0])


@pytest.fixture(scope="session")
def trained_training(trained_service):
    """The training examples the session's service was fitted on (rebuilt with its fitted features)."""
    from data_loader import data_now
    from recommender import make_training_set

    detector = trained_service.text_models()
    training, _, _ = make_training_set(trained_service.data, data_now(trained_service.data), trained_service.settings,
                                       detector.encoder, detector, trained_service.model.features_)
    return training


@pytest.fixture(scope="session")
def refitted_here(trained_service, trained_training):
    """The session's model fitted again here on one thread, as a Ray task's trees run (with two, partial
    sums add up in another order), and each step of its products' fits as it ran: (the model, [(step
    name, the model's tree depth when it ran, its results, each product's fitted keys then)])."""
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits

    from recommender import fit_each_product_here

    steps = []

    def recording(step, training, model):
        results = fit_each_product_here(step, training, model)
        keys = [sorted(result[1].fits) if step.__name__ == "fit_plain_candidates" and result[1] else None
                for result in results]
        steps.append((step.__name__, getattr(model, "tree_depth_", None), results, keys))
        return results

    fitted = trained_service.model
    with threadpool_limits(limits=1, user_api="openmp"):
        model = clone(fitted).fit(trained_training, fitted.features_, fitted.product_ids_, fitted.label_scheme_,
                                  recording)
    return model, steps


@pytest.fixture(scope="session")
def fallback_service(trained_service, tmp_path_factory):
    """The same bank with a take-up threshold no product reaches: every product on the fallback."""
    from artifacts import train_artifacts
    from recommendation_service import RecommendationService

    settings = trained_service.settings.model_copy(update={"min_positives_for_model": 10**6,
                                                           "models_dir": tmp_path_factory.mktemp("fallback"),
                                                           # the same process-wide encoder and its cache
                                                           "embedding_cache_dir":
                                                               trained_service.settings.resolved_embedding_cache_dir})
    artifacts = train_artifacts(trained_service.data, settings, "fallback")
    return RecommendationService(settings, trained_service.data, trained_service.rules, artifacts)


@pytest.fixture(scope="session")
def no_social_credit_service(trained_service, tmp_path_factory):
    """The same bank trained under the data-use policy that keeps social media out of credit."""
    from artifacts import train_artifacts
    from recommendation_service import RecommendationService

    settings = trained_service.settings.model_copy(update={"data_use_policy": "no_social_credit",
                                                           "models_dir": tmp_path_factory.mktemp("no_social_credit"),
                                                           "embedding_cache_dir":
                                                               trained_service.settings.resolved_embedding_cache_dir})
    artifacts = train_artifacts(trained_service.data, settings, "no_social_credit")
    return RecommendationService(settings, trained_service.data, trained_service.rules, artifacts)


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session (pgserver starts it in about a second); each test that
    uses it gets a database of its own."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver (requirements-dev.txt) starts the PostgreSQL server")
    # Not under pytest's base directory: run as root, pgserver runs PostgreSQL as its own user, who must reach
    # the data directory, and every pytest session makes /tmp/pytest-of-<user> private again.
    data_dir = Path(tempfile.mkdtemp(prefix="nbp-test-postgres-"))
    try:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    except Exception as error:  # no PostgreSQL here: say why, run the SQLite half
        pytest.skip(f"pgserver could not start PostgreSQL on this machine: {type(error).__name__}: {error}")
    yield server
    server.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """The decision log's database: each test that takes it runs on SQLite and on PostgreSQL."""
    from tests.utils.databases import postgres_backend, sqlite_backend

    if request.param == "sqlite":
        return sqlite_backend(tmp_path)
    return postgres_backend(request.getfixturevalue("postgres_server"))
