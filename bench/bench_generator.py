"""Benchmark of the synthetic bank generator: seconds, rows, rows/s and peak memory per size.

Target (issue): 100,000 customers well under a minute, 1,000,000 in minutes, on 2 cores.
Each size runs in a fresh process, so that its peak RSS is that size's alone. Prints JSON.

    python bench/bench_generator.py [--sizes 100000 1000000] [--seed 1] [--format csv] [--keep]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import RESULTS, record  # noqa: E402

DEFAULT_SIZES = (100_000, 1_000_000)
DEFAULT_OUT = ROOT / "bench" / "output" / "generator"


def measure_one(n_customers: int, seed: int, file_format: str, out_dir: Path) -> dict:
    """Generate one data set in this process and report what it cost."""
    from synthetic_data import generate_bank_data

    summary = generate_bank_data(out_dir, n_customers, seed, file_format=file_format)
    rows = summary.rows
    total_rows = sum(rows.values())
    return {
        "customers": n_customers,
        "format": file_format,
        "seconds": summary.seconds,
        "rows": rows,
        "rows_per_second": round(total_rows / summary.seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "disk_mb": round(sum(path.stat().st_size for path in out_dir.iterdir()) / 2**20),
    }


def measure_in_fresh_process(n_customers: int, seed: int, file_format: str, out_dir: Path) -> dict:
    command = [sys.executable, __file__, "--one", str(n_customers), "--seed", str(seed), "--format", file_format,
               "--out", str(out_dir)]
    finished = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(finished.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    args = parser.parse_args()

    if args.one is not None:
        print(json.dumps(measure_one(args.one, args.seed, args.format, args.out)))
        return
    results = []
    for size in args.sizes:
        out_dir = args.out / f"{size}_{args.format}"
        shutil.rmtree(out_dir, ignore_errors=True)
        results.append(measure_in_fresh_process(size, args.seed, args.format, out_dir))
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    for size, figures in zip(args.sizes, results):
        record(RESULTS / "generator.json", f"{size}_{args.format}", figures)
    print(json.dumps({"benchmark": "synthetic_data.generate_bank_data", "results": results}, indent=2))


if __name__ == "__main__":
    main()
