"""Batch scoring benchmark: customers per second and peak memory of `cli.py score`, local and Ray side by side.

It generates a bank (``cli.py generate-data``'s generator) and trains its models once, outside the
timing, in a work directory that later runs reuse (``--work``). Then each engine runs in a fresh
process on the saved models: start-up (loading data and models), then scoring every customer to
Parquet. Ray runs on a local Ray of ``--ray-cpus`` CPUs started by the benchmark, so that the
workers' peak memory (VmHWM of every ``ray::`` worker process, read before Ray stops) can be
reported beside the driver's. A worker's peak counts the object-store pages it maps (the shipped
kit's arrays, shared by the workers of a node), so the workers' peaks overstate their sum.

``--shards S`` measures ``cli.py score --shards S``, the path for a bank too large to load whole:
the models are trained on a sample of the bank (one of ``--sample-shards`` equal parts split by
customer, outside the timing, as a bank would train on a sample), and the run splits, loads and
scores the bank shard by shard. Its figure is end to end: from the command's start (split, load,
posts analysed, every shard scored, the final file combined) to its end. The peak memory it
reports is the largest sum, sampled every half second, of the resident memory of every process of
the run (the driver, and with Ray its raylet, store and workers): pages shared between processes
are counted once per process, so the figure overstates what the machine held.

    python bench/bench_batch_scoring.py --customers 3000 [--engines local ray] [--chunk-size 1000]
    python bench/bench_batch_scoring.py --customers 1000000 --shards 200 --sample-shards 20 --work /work/bank1m-bench
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


def prepare(work: Path, customers: int, sample_shards: int | None) -> dict:
    """The bank and its trained models, made once per work directory: trained on the whole bank, or
    on one of ``sample_shards`` parts of it split by customer (a random sample of the customers)."""
    from data_shards import split_bank
    from recommendation_service import RecommendationService
    from settings import Settings
    from synthetic_data import generate_bank_data

    if not (work / "data").is_dir():
        generate_bank_data(work / "data", customers, seed=1)
    trained_on = work / "data"
    if sample_shards:
        trained_on = split_bank(work / "data", work / "sample", sample_shards)[0]
    started = time.perf_counter()
    service = RecommendationService.start(Settings(data_dir=trained_on, models_dir=work / "models", api_keys=[]))
    return {"trained_on_customers": len(service.base.view), "models_seconds":
            round(time.perf_counter() - started, 1)}


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


def measure(work: Path, engine: str, chunk_size: int, ray_cpus: int, shards: int | None) -> dict:
    """Runs in the child process: one engine over the work directory's bank."""
    from batch_scoring import LogProgress, score_customers
    from recommendation_service import RecommendationService
    from settings import Settings
    from sharded_scoring import score_by_shards

    started = time.perf_counter()
    if engine == "ray":
        import ray

        ray.init(num_cpus=ray_cpus, include_dashboard=False)
    settings = Settings(data_dir=work / "data", models_dir=work / "models", api_keys=[])
    with tempfile.TemporaryDirectory(dir=work) as scratch:  # the work disk: a sharded run keeps its shards there
        out = Path(scratch) / "answers.parquet"
        if shards:
            summary = score_by_shards(settings, out, TOP_K, shards, engine, True, LogProgress)
        else:
            summary = score_customers(RecommendationService.start(settings), out, TOP_K, chunk_size, engine, True,
                                      LogProgress)
    figures = {"engine": engine, "customers": summary.customers, "chunks": summary.chunks, "shards": shards,
               "rows": summary.rows,
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
    parser.add_argument("--shards", type=int, default=None, help="score with `cli.py score --shards` instead")
    parser.add_argument("--sample-shards", type=int, default=None,
                        help="train on one of this many parts of the bank, split by customer (default: the whole bank)")
    parser.add_argument("--work", type=Path, default=None,
                        help="where the bank and its models are kept between runs (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=RESULTS / "batch_scoring.json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1], args.chunk_size, args.ray_cpus, args.shards)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        results = {"models": prepare(work, args.customers, args.sample_shards)}
        results |= {engine: run_child(work, engine, args) for engine in args.engines}
    record(args.out, f"{args.customers}" + (f" by {args.shards} shards" if args.shards else ""), results)
    print(json.dumps(results, indent=2))


def run_child(work: Path, engine: str, args: argparse.Namespace) -> dict:
    """One engine in a fresh process, with the peak of its processes' summed memory sampled alongside."""
    command = [sys.executable, __file__, "--child", str(work), engine, "--chunk-size", str(args.chunk_size),
               "--ray-cpus", str(args.ray_cpus)] + (["--shards", str(args.shards)] if args.shards else [])
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1"})
        peak = peak_of_process_tree(child)
        stdout.seek(0)
        stderr.seek(0)
        if child.returncode != 0:
            raise RuntimeError(stderr.read()[-2000:])
        return json.loads(stdout.read().strip().splitlines()[-1]) | {"all_processes_peak_rss_mb": round(peak, 1)}


def peak_of_process_tree(child: subprocess.Popen, every: float = 0.5) -> float:
    """Until ``child`` exits: the largest sum of resident memory over it and its descendants, in MB."""
    import psutil

    root, peak = psutil.Process(child.pid), 0.0
    while child.poll() is None:
        total = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:  # gone while being read
                continue
        peak = max(peak, total / 2**20)
        time.sleep(every)
    return peak


if __name__ == "__main__":
    main()
