"""Runs every benchmark in turn; each writes its own JSON under bench/results/.

    python bench/run_all.py [--quick]   (--quick: 10,000 customers only for training)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = ["10000"] if args.quick else ["10000", "100000"]
    runs = [["bench_data.py"], ["bench_generator.py"], ["bench_training.py", "--sizes", *sizes],
            ["bench_request_parts.py"], ["bench_event_detection.py"], ["bench_serving.py"], ["bench_decision_log.py"],
            ["bench_decision_overhead.py"], ["bench_decision_overhead_http.py"],
            ["bench_decision_overhead_sustained.py"], ["bench_reload.py"],
            ["bench_batch_scoring.py", "--customers", sizes[-1]]]
    for script, *options in runs:
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(BENCH / script), *options], check=True)


if __name__ == "__main__":
    main()
