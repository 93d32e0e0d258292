"""Helpers to build and wait for a trained service in tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

import httpx
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


@contextmanager
def served(settings: Settings, state_dir: Path, **environment: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``cli.py serve`` in its own process on ``settings``' data and saved models, ready (``/health`` 200);
    yields the process and its base URL, and kills it and its workers on the way out if the test has not
    stopped them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "MODELS_DIR": str(settings.models_dir),
           "STATE_DIR": str(state_dir), "PORT": str(port), "API_KEYS": "",
           "MIN_GROUP_SIZE": str(settings.min_group_size), "LOG_LEVEL": "WARNING", **environment}
    server = subprocess.Popen([sys.executable, "cli.py", "serve"], cwd=Path(__file__).resolve().parents[2], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while not _healthy(url):
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield server, url
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=30)
        with suppress(ProcessLookupError):  # worker processes left behind by a killed supervisor
            os.killpg(server.pid, signal.SIGKILL)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
