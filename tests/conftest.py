"""Shared fixtures: the text model is loaded once per test session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from settings import get_settings  # noqa: E402

HACKATHON_DIR = ROOT.parent / "shared" / "data" / "hackathon"


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
