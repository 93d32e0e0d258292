"""Batch scoring benchmark: customers per second and peak memory of `cli.py score`, local and Ray side by side.

It generates a bank (``cli.py generate-data``'s generator) and trains its models once, outside the
timing, in a work directory that later runs reuse (``--work``). Then each engine runs in a fresh
process on the saved models: start-up (loading data and models), then scoring every customer to
Parquet. Ray runs on a local Ray of ``--ray-cpus`` CPUs started by the benchmark, so that the
workers' peak memory (VmHWM of every ``ray::`` worker process, read before Ray stops) can be
reported beside the driver's. A worker's peak counts the object-store pages it maps (the shipped
kit's arrays, shared by the workers of a node), so the workers' peaks overstate their sum.

    python bench/bench_batch_scoring.py --customers 3000 [--engines local ray] [--chunk-size 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_serving import peak_rss_mb  # noqa: E402
from bench.results_file import RESULTS, record  # noqa: E402

TOP_K = 5


def prepare(work: Path, customers: int) -> None:
    """The bank and its trained models, made once per work directory."""
    from recommendation_service import RecommendationService
    from settings import Settings
    from synthetic_data import generate_bank_data

    if not (work / "data").is_dir():
        generate_bank_data(work / "data", customers, seed=1)
    RecommendationService.start(Settings(data_dir=work / "data", models_dir=work / "models", api_keys=[]))


def ray_worker_peaks_mb() -> list[float]:
    """Peak RSS of every Ray worker process on this machine (their titles start with ``ray::``)."""
    peaks = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::"):
                peaks.append(peak_rss_mb(int(entry.name)))
        except (OSError, AttributeError):  # gone while being read
            continue
    return peaks


def measure(work: Path, engine: str, chunk_size: int, ray_cpus: int) -> dict:
    """Runs in the child process: one engine over the work directory's bank."""
    from batch_scoring import LogProgress, score_customers
    from recommendation_service import RecommendationService
    from settings import Settings

    started = time.perf_counter()
    if engine == "ray":
        import ray

        ray.init(num_cpus=ray_cpus, include_dashboard=False)
    service = RecommendationService.start(Settings(data_dir=work / "data", models_dir=work / "models", api_keys=[]))
    with tempfile.TemporaryDirectory() as scratch:
        summary = score_customers(service, Path(scratch) / "answers.parquet", TOP_K, chunk_size, engine, True,
                                  LogProgress)
    figures = {"engine": engine, "customers": summary.customers, "chunks": summary.chunks,
               "scoring_seconds": summary.seconds, "customers_per_second": summary.customers_per_second,
               "end_to_end_seconds": round(time.perf_counter() - started, 2),
               # the process's own VmHWM, not getrusage's ru_maxrss: Linux carries that across exec, and it
               # reported the parent's training peak (4,711.5 MB for both engines at 100,000 customers, 2026-12-03)
               "driver_peak_rss_mb": round(peak_rss_mb(os.getpid()), 1)}
    if engine == "ray":
        peaks = ray_worker_peaks_mb()
        figures |= {"ray_cpus": ray_cpus, "ray_workers": len(peaks),
                    "worker_peak_rss_mb_max": round(max(peaks, default=0), 1)}
        ray.shutdown()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=3_000)
    parser.add_argument("--engines", nargs="+", choices=("local", "ray"), default=["local", "ray"])
    parser.add_argument("--chunk-size", type=int, default=1_000)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None,
                        help="where the bank and its models are kept between runs (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=RESULTS / "batch_scoring.json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1], args.chunk_size, args.ray_cpus)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        prepare(work, args.customers)
        results = {engine: run_child(work, engine, args) for engine in args.engines}
    record(args.out, str(args.customers), results)
    print(json.dumps(results, indent=2))


def run_child(work: Path, engine: str, args: argparse.Namespace) -> dict:
    child = subprocess.run([sys.executable, __file__, "--child", str(work), engine, "--chunk-size",
                            str(args.chunk_size), "--ray-cpus", str(args.ray_cpus)],
                           capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if child.returncode != 0:
        raise RuntimeError(child.stderr[-2000:])
    return json.loads(child.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
