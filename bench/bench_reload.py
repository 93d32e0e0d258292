"""A hot reload under load: wrk keeps /recommend busy while POST /admin/reload swaps the model in.

Starts ``cli.py serve`` on the default data with an admin key, runs wrk for ``--duration`` seconds at
``--concurrency`` over the data's customers (answer cache off, so every request is computed), and
asks for a reload ``--reload-after`` seconds in. Prints wrk's figures, the reload's outcome and how long
it took, and fails unless the reload succeeded with zero non-2xx answers and zero socket errors.
With ``--workers N`` the server runs N worker processes, each of which reloads in place; the reload
counts as done when several new connections in a row (spread over the workers by the kernel) report
it done.

    python bench/bench_reload.py [--duration 30] [--concurrency 8] [--reload-after 5] [--workers 1]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_serving import customer_ids, free_port, run_wrk, start_server, stop  # noqa: E402
from bench.results_file import RESULTS, record  # noqa: E402

ADMIN_KEY = "bench-admin"


def admin_call(port: int, method: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/admin/reload", method=method,
                                     headers={"X-API-Key": ADMIN_KEY})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def reload_later(port: int, delay: float, outcome: dict, workers: int) -> None:
    """Asks for the reload after ``delay`` seconds, then follows it to its end (in every worker: each
    call is a new connection, which the kernel hands to any of them)."""
    time.sleep(delay)
    started = time.perf_counter()
    outcome["accepted"] = admin_call(port, "POST")["state"]
    time.sleep(0.5)  # the supervisor passes the reload on to every worker
    while any((status := admin_call(port, "GET"))["state"] == "running" for _ in range(4 * workers)):
        time.sleep(0.1)
    outcome.update(status=status, seconds=round(time.perf_counter() - started, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--reload-after", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    from settings import get_settings

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "API_KEYS": f"{ADMIN_KEY}:admin", "ANSWER_CACHE_SIZE": "0",
           "WORKERS": str(args.workers)}
    with tempfile.TemporaryDirectory() as scratch:
        env["STATE_DIR"] = str(Path(scratch) / "state")
        process, _ = start_server([sys.executable, "cli.py", "serve"], port, env)
        try:
            ids_file = Path(scratch) / "ids.txt"
            ids_file.write_text("\n".join(customer_ids(get_settings().data_dir)) + "\n")
            os.environ["API_KEY"] = ADMIN_KEY  # the key recommend.lua sends
            outcome: dict = {}
            reloader = threading.Thread(target=reload_later, args=(port, args.reload_after, outcome, args.workers))
            reloader.start()
            load = run_wrk(port, args.concurrency, args.duration, ids_file)
            reloader.join()
        finally:
            stop(process)
    figures = {"wrk": load, "reload": outcome, "concurrency": args.concurrency, "duration_s": args.duration,
               "workers": args.workers}
    key = f"default_data_c{args.concurrency}" + (f"_workers{args.workers}" if args.workers > 1 else "")
    record(RESULTS / "reload.json", key, figures)
    print(json.dumps(figures, indent=2))
    if load["non_2xx"] or load["errors"] or outcome.get("status", {}).get("state") != "succeeded":
        sys.exit("the reload under load lost requests or failed")


if __name__ == "__main__":
    main()
