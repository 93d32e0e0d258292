"""Uncached throughput with one worker process and with two (WORKERS=2), side by side.

Starts ``cli.py serve`` on the default data with the answer cache off (every request computed, as
for a bank's front-ends that rarely ask for the same customer twice), loads it with wrk at
``--concurrency`` over the data's customers for ``--duration`` seconds after a warm-up, and does so
``--rounds`` times alternating one and two workers (this machine's noise hits both alike). Prints
requests/s and latency per round, the medians and the ratio of two workers to one, with each
server's peak resident memory (the supervisor's and every worker's).

    python bench/bench_workers.py [--duration 20] [--concurrency 8] [--rounds 2]
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
from bench.bench_serving import customer_ids, free_port, peak_rss_mb, run_wrk, start_server, stop  # noqa: E402
from bench.results_file import RESULTS, record  # noqa: E402


def process_tree(pid: int) -> list[int]:
    """The process and its children (the supervisor's workers)."""
    children = [int(status.parent.name) for status in Path("/proc").glob("[0-9]*/status")
                if _parent(status) == pid]
    return [pid, *children]


def _parent(status: Path) -> int | None:
    try:
        return int(next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("PPid:")))
    except (OSError, StopIteration):
        return None


def measure(workers: int, ids_file: Path, concurrency: int, duration: int, scratch: Path) -> dict:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "API_KEYS": "", "ANSWER_CACHE_SIZE": "0", "WORKERS": str(workers),
           "STATE_DIR": str(scratch / f"state-{workers}-{port}")}
    process, started = start_server([sys.executable, "cli.py", "serve"], port, env)
    try:
        run_wrk(port, concurrency, 5, ids_file)  # warm-up: text models and first-touch costs
        figures = run_wrk(port, concurrency, duration, ids_file)
        figures["peak_rss_mb_per_process"] = [round(peak_rss_mb(pid), 1) for pid in process_tree(process.pid)]
        figures["start_seconds"] = round(started, 1)
    finally:
        stop(process)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    from settings import get_settings

    runs: dict[str, list[dict]] = {"1": [], "2": []}
    with tempfile.TemporaryDirectory() as scratch:
        ids_file = Path(scratch) / "ids.txt"
        ids_file.write_text("\n".join(customer_ids(get_settings().data_dir)) + "\n")
        for round_number in range(args.rounds):
            for workers in ("1", "2"):
                figures = measure(int(workers), ids_file, args.concurrency, args.duration, Path(scratch))
                runs[workers].append(figures)
                print(json.dumps({"round": round_number + 1, "workers": workers, **figures}), flush=True)
    median = {workers: {key: statistics.median(run[key] for run in figures)
                        for key in ("requests_per_second", "p50_ms", "p99_ms")} for workers, figures in runs.items()}
    summary = {"concurrency": args.concurrency, "duration_s": args.duration, "rounds": args.rounds,
               "answer_cache": "off", "median": median,
               "two_workers_over_one": round(median["2"]["requests_per_second"] / median["1"]["requests_per_second"], 2),
               "runs": runs}
    record(RESULTS / "workers.json", f"default_data_c{args.concurrency}", summary)
    print(json.dumps({key: value for key, value in summary.items() if key != "runs"}, indent=2))


if __name__ == "__main__":
    main()
