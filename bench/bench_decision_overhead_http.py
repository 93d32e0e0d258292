"""What the decision log adds to /recommend over HTTP, with the server kept busy: wrk against three
servers (DECISION_LOG off, best_effort, required) in one run, every request a different customer.

bench_decision_overhead.py measures the same difference in process, one request after another. Between
two such requests the machine idles, and on these virtual machines the first work after an idle
moment runs several times slower than the same work on a busy core (a SQLite read: 0.07 ms in a
loop, 0.4 ms after a 3 ms pause), so that figure is what a quiet service's answers cost. Here wrk
keeps one connection busy (concurrency 1: latency, not throughput), which is what a service under
traffic meets.

A generated bank (``--customers``, default 15,000) is trained once and kept under bench/output (shared
with bench_serving.py); each server logs into a database of its own, new for the run; each wrk run gets customers no
other run asks for, so no answer comes from a cache and no contact-policy limit is reached (every
customer is new to the log: the read still runs, and finds nothing). Runs alternate between the
servers, the order rotating per round, so that drift in the machine's speed meets all three alike.

    python bench/bench_decision_overhead_http.py [--customers 15000] [--rounds 3] [--duration 5]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_serving import (free_port, generated_customers, kept_bank, run_wrk, start_server,  # noqa: E402
                                 stop)
from bench.results_file import RESULTS, record  # noqa: E402

MODES = ("off", "best_effort", "required")


def timed_runs(servers: dict[str, tuple[subprocess.Popen, int]], slices: list[list[str]], args: argparse.Namespace,
               scratch: Path) -> dict[str, list[dict]]:
    """Every round runs wrk once per server, each run on its own customers, the servers' order rotating."""
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    warm = scratch / "warm.txt"
    warm.write_text("\n".join(slices[-1][:200]) + "\n")
    for _, port in servers.values():
        run_wrk(port, 1, 2, warm)  # code paths and connections, on customers no timed run asks for
    run = 0
    for round_number in range(args.rounds):
        for turn in range(len(MODES)):
            mode = MODES[(round_number + turn) % len(MODES)]
            ids_file = scratch / f"run-{run}.txt"
            ids_file.write_text("\n".join(slices[run]) + "\n")
            result = run_wrk(servers[mode][1], 1, args.duration, ids_file)
            if result["non_2xx"] or result["errors"] or result["requests"] >= len(slices[run]):
                raise RuntimeError(f"{mode}: run {run} is not one answer per distinct customer: {result}")
            results[mode].append(result)
            run += 1
    return results


def summary(results: dict[str, list[dict]]) -> dict:
    """Per mode the median over rounds of wrk's p50 and p99; the added p50 against off, per round and overall."""
    figures: dict = {mode: {"p50_ms_per_round": [r["p50_ms"] for r in runs],
                            "p99_ms_per_round": [r["p99_ms"] for r in runs],
                            "requests_per_second_per_round": [r["requests_per_second"] for r in runs],
                            "p50_ms": round(float(np.median([r["p50_ms"] for r in runs])), 3)}
                     for mode, runs in results.items()}
    figures["added_p50_ms"] = {
        mode: {"per_round": [round(r["p50_ms"] - o["p50_ms"], 3) for r, o in zip(results[mode], results["off"])],
               "median": round(figures[mode]["p50_ms"] - figures["off"]["p50_ms"], 3)}
        for mode in MODES if mode != "off"}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--per-run", type=int, default=1_500, help="customers set aside for each wrk run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    runs = args.rounds * len(MODES)
    if runs * args.per_run > args.customers:
        sys.exit(f"--customers must be at least rounds x 3 x per-run = {runs * args.per_run}")

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        bank, env = kept_bank(args.customers, {**os.environ, "HF_HUB_OFFLINE": "1", "API_KEYS": "",
                                               "ANSWER_CACHE_SIZE": "0"})
        ids = generated_customers(bank / "data")
        slices = [ids[n * args.per_run:(n + 1) * args.per_run] for n in range(runs)]
        servers = {}
        try:
            for mode in MODES:
                port = free_port()
                process, _ = start_server([sys.executable, "cli.py", "serve"], port,
                                          {**env, "DECISION_LOG": mode, "STATE_DIR": str(root / "state" / mode)})
                servers[mode] = (process, port)
            results = timed_runs(servers, slices, args, root)
        finally:
            for process, _ in servers.values():
                stop(process)
    figures = summary(results)
    record(RESULTS / "decision_overhead.json", f"http_wrk_c1_{args.customers}_customers", figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
