"""Helpers to build and wait for a trained service in tests."""
from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from settings import Settings


def small_bank_settings(root: Path, customers: int = 600, seed: int = 7) -> Settings:
    """Settings over a freshly generated small bank, with models and caches under ``root``."""
    from synthetic_data import generate_bank_data

    data_dir = root / "data"
    generate_bank_data(data_dir, customers, seed)
    return Settings(data_dir=data_dir, models_dir=root / "models", api_keys=[], min_group_size=20)


def wait_ready(client: TestClient, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while client.get("/health").status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError("service did not become ready")
        time.sleep(0.05)
