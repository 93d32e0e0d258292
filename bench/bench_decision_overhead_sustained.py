"""What the decision log adds to /recommend under sustained load: wrk at concurrency 1 against a server with
DECISION_LOG=off and one with best_effort, fresh servers every round.

bench_decision_overhead_http.py keeps the same three servers for the whole run, and its paired steps let each
server idle between answers. Under sustained load a server's writer and poll threads compete with its request
thread, and a server started once can be faster or slower than its twin for the whole run (where its memory
and threads landed): so here every round starts a new pair, asks both for the same customers (each new to
each server's own log; no answer cache), the order alternating per round, and the figure is the median over
rounds of the per-round differences in wrk's p50 and p99.

    python bench/bench_decision_overhead_sustained.py [--customers 15000] [--rounds 8] [--duration 8]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_serving import free_port, generated_customers, kept_bank, run_wrk, start_server, stop  # noqa: E402
from bench.results_file import RESULTS, record  # noqa: E402

MODES = ("off", "best_effort")
WARM_CUSTOMERS = 200


def one_round(env: dict[str, str], customers: list[str], warm: Path, state: Path, round_number: int,
              duration: int) -> dict[str, dict]:
    """A new off / best_effort pair, warmed on customers no round asks for, then wrk on the round's customers."""
    ids_file = state / f"round-{round_number}.txt"
    ids_file.write_text("\n".join(customers) + "\n")
    servers = {}
    try:
        for mode in MODES:
            port = free_port()
            process, _ = start_server([sys.executable, "cli.py", "serve"], port,
                                      {**env, "DECISION_LOG": mode, "STATE_DIR": str(state / f"{mode}-{round_number}")})
            servers[mode] = (process, port)
        for _, port in servers.values():
            run_wrk(port, 1, 2, warm)
        order = MODES if round_number % 2 == 0 else MODES[::-1]
        results = {}
        for mode in order:
            result = run_wrk(servers[mode][1], 1, duration, ids_file)
            if result["non_2xx"] or result["errors"] or result["requests"] >= len(customers):
                raise RuntimeError(f"{mode}: round {round_number} is not one answer per distinct customer: {result}")
            results[mode] = result
        return results
    finally:
        for process, _ in servers.values():
            stop(process)


def summary(rounds: list[dict[str, dict]]) -> dict:
    """Per round each server's p50 and p99; the median over rounds of what best_effort added to each."""
    figures: dict = {mode: {"p50_ms_per_round": [r[mode]["p50_ms"] for r in rounds],
                            "p99_ms_per_round": [r[mode]["p99_ms"] for r in rounds]} for mode in MODES}
    for percentile in ("p50_ms", "p99_ms"):
        added = [round(r["best_effort"][percentile] - r["off"][percentile], 3) for r in rounds]
        figures[f"best_effort_added_{percentile}"] = {"per_round": added, "median": round(statistics.median(added), 3)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=None, help=(
        "customers set aside for each round (default: all but the warm-up ones; each round's servers are new, so "
        "rounds may share customers, and wrk must not get through them within --duration)"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    bank, env = kept_bank(args.customers, {**os.environ, "HF_HUB_OFFLINE": "1", "API_KEYS": "",
                                           "ANSWER_CACHE_SIZE": "0"})
    ids = generated_customers(bank / "data")
    usable = ids[:-WARM_CUSTOMERS]
    args.per_round = args.per_round or len(usable)
    if args.per_round > len(usable):
        sys.exit(f"--per-round must be at most {len(usable)}")
    rounds = []
    with tempfile.TemporaryDirectory() as scratch:
        state = Path(scratch)
        warm = state / "warm.txt"
        warm.write_text("\n".join(ids[-WARM_CUSTOMERS:]) + "\n")
        for number in range(args.rounds):
            start = (number * args.per_round) % (len(usable) - args.per_round + 1)
            rounds.append(one_round(env, usable[start:start + args.per_round], warm, state, number, args.duration))
            print(number, {mode: (rounds[-1][mode]["p50_ms"], rounds[-1][mode]["p99_ms"]) for mode in MODES},
                  flush=True)
    figures = summary(rounds)
    record(RESULTS / "decision_overhead.json", f"sustained_wrk_c1_fresh_servers_{args.customers}_customers", figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
