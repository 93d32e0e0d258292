"""Where every benchmark writes its figures: bench/results/<name>.json, with the machine they ran on.

Runs of one size or one part merge into the file rather than replace it, so measuring 100,000
customers today keeps yesterday's 10,000-customer figures (each entry carries its own machine
and date).
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """The hardware and software a figure came from: these machines vary, so figures travel with it."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def record(path: Path, key: str, figures: dict) -> None:
    """Stores ``figures`` (with the machine) under ``key`` in the JSON file at ``path``, keeping other keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.is_file() else {}
    existing[key] = {"machine": machine(), **figures}
    path.write_text(json.dumps(existing, indent=2) + "\n")
