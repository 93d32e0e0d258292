"""What the decision log adds to /recommend over HTTP, with the server kept busy: wrk against three
servers (DECISION_LOG off, best_effort, required) in one run, every request a different customer.

bench_decision_overhead.py measures the same difference in process, one request after another. Between
two such requests the machine idles, and on these virtual machines the first work after an idle
moment runs several times slower than the same work on a busy core (a SQLite read: 0.07 ms in a
loop, 0.4 ms after a 3 ms pause), so that figure is what a quiet service's answers cost. Here wrk
keeps one connection busy (concurrency 1: latency, not throughput), which is what a service under
traffic meets.

A generated bank (``--customers``, default 15,000) is trained once and kept under bench/output (shared
with bench_serving.py); each server logs into a database of its own, new for the run, and keeps no answer
cache. Within a round the three servers are asked for the same customers, which no other round asks for:
customers differ in what an answer costs (posts, transactions, history), and the same customers on every
server take that out of the comparison, while each server still meets each customer once (no answer
from a cache, no contact-policy limit reached: every customer is new to that server's log, the read still
runs and finds nothing). Runs alternate between the servers, the order rotating per round, so that drift
in the machine's speed meets all three alike.

Then the paired runs: wrk's rounds are seconds apart, and between rounds this machine's speed moves more
than the 0.2 ms looked for (``off``'s own p50 moved between 5.4 and 8.3 ms from one round to the next). So a
client asks the three servers in turn, one request each, over one kept-alive connection per server, all
three for the same customer (one no other step asks for), the order rotating at each step: the three
answers of a step meet the same moment of the machine and the same customer, and the median of the
per-step differences against ``off`` is what logging adds. Each server idles while the other two answer,
as the wrk rounds' servers do while the others are measured.

    python bench/bench_decision_overhead_http.py [--customers 15000] [--rounds 3] [--duration 5]
        [--per-run 2000] [--steps 4000]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_serving import (free_port, generated_customers, kept_bank, run_wrk, start_server,  # noqa: E402
                                 stop)
from bench.results_file import RESULTS, record  # noqa: E402

MODES = ("off", "best_effort", "required")


def timed_runs(servers: dict[str, tuple[subprocess.Popen, int]], slices: list[list[str]], warm_ids: list[str],
               args: argparse.Namespace, scratch: Path) -> dict[str, list[dict]]:
    """Every round runs wrk once per server on the round's customers, the servers' order rotating."""
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    warm = scratch / "warm.txt"
    warm.write_text("\n".join(warm_ids) + "\n")
    for _, port in servers.values():
        run_wrk(port, 1, 2, warm)  # code paths and connections, on customers no timed run asks for
    for round_number in range(args.rounds):
        ids_file = scratch / f"round-{round_number}.txt"
        ids_file.write_text("\n".join(slices[round_number]) + "\n")
        for turn in range(len(MODES)):
            mode = MODES[(round_number + turn) % len(MODES)]
            result = run_wrk(servers[mode][1], 1, args.duration, ids_file)
            if result["non_2xx"] or result["errors"] or result["requests"] >= len(slices[round_number]):
                raise RuntimeError(f"{mode}: round {round_number} is not one answer per distinct customer: {result}")
            results[mode].append(result)
    return results


def paired_runs(ports: dict[str, int], ids: list[str]) -> dict[str, np.ndarray]:
    """Latency in ms of each server's answers, step by step: a step asks every server once for the step's
    customer, the servers' order rotating from one step to the next."""
    connections = {mode: http.client.HTTPConnection("127.0.0.1", port) for mode, port in ports.items()}
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for step, customer in enumerate(ids):
            for turn in range(len(MODES)):
                mode = MODES[(step + turn) % len(MODES)]
                latencies[mode].append(timed_answer(connections[mode], customer))
    finally:
        for connection in connections.values():
            connection.close()
    return {mode: np.asarray(values) for mode, values in latencies.items()}


def timed_answer(connection: http.client.HTTPConnection, customer_id: str) -> float:
    """One /recommend as wrk asks it (top 5 with explanations), in ms from sending to the last byte read."""
    body = json.dumps({"customer_id": customer_id, "top_k": 5, "include_explanation": True})
    started = time.perf_counter()
    connection.request("POST", "/recommend", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"{customer_id}: HTTP {response.status}")
    return elapsed


def paired_summary(latencies: dict[str, np.ndarray], resamples: int = 2000) -> dict:
    """Per mode p50 and p99; per logging mode the median of the per-step differences against ``off``, and a
    bootstrap 95% interval of that median (steps resampled), so the reader sees how sure the figure is."""
    rng = np.random.default_rng(0)
    figures: dict = {"steps": int(len(latencies["off"]))}
    for mode, values in latencies.items():
        figures[mode] = {"p50_ms": round(float(np.median(values)), 3),
                         "p99_ms": round(float(np.quantile(values, 0.99)), 3)}
    for mode in MODES[1:]:
        added = latencies[mode] - latencies["off"]
        medians = np.median(rng.choice(added, size=(resamples, len(added))), axis=1)
        interval = np.quantile(medians, [0.025, 0.975])
        p50_difference = figures[mode]["p50_ms"] - figures["off"]["p50_ms"]
        figures[f"{mode}_added_ms"] = {"median_of_step_differences": round(float(np.median(added)), 3),
                                       "interval_95": [round(float(q), 3) for q in interval],
                                       "difference_of_p50s": round(p50_difference, 3)}
    return figures


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
    parser.add_argument("--per-run", type=int, default=2_000, help="customers set aside for each round of wrk runs")
    parser.add_argument("--steps", type=int, default=4_000, help="paired steps (three requests, one customer each)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    needed = args.rounds * args.per_run + args.steps + 200
    if needed > args.customers:
        sys.exit(f"--customers must be at least rounds x per-run + steps + 200 = {needed}")

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        bank, env = kept_bank(args.customers, {**os.environ, "HF_HUB_OFFLINE": "1", "API_KEYS": "",
                                               "ANSWER_CACHE_SIZE": "0"})
        ids = generated_customers(bank / "data")
        slices = [ids[n * args.per_run:(n + 1) * args.per_run] for n in range(args.rounds)]
        servers = {}
        try:
            for mode in MODES:
                port = free_port()
                process, _ = start_server([sys.executable, "cli.py", "serve"], port,
                                          {**env, "DECISION_LOG": mode, "STATE_DIR": str(root / "state" / mode)})
                servers[mode] = (process, port)
            results = timed_runs(servers, slices, ids[-200:], args, root)
            paired = paired_runs({mode: port for mode, (_, port) in servers.items()},
                                 ids[args.rounds * args.per_run:][:args.steps])
        finally:
            for process, _ in servers.values():
                stop(process)
    figures = {**summary(results), "paired": paired_summary(paired)}
    record(RESULTS / "decision_overhead.json", f"http_wrk_c1_{args.customers}_customers", figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
