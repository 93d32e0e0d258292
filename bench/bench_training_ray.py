"""Training with the Ray engine against training here: seconds to fit, at 1 and 2 Ray workers.

For each size it generates a synthetic bank once (outside the timing), then trains it end to end
(load, text encoding with an empty embedding cache, features, model, serving state) in a fresh
process per engine: here (``cli.py train``), and on a local Ray started with 1 and with 2 CPUs
(``cli.py train --engine ray``: the per-product fits and the posts' BERT pass as Ray tasks).
Reported per run: the whole training, the model fit alone, and their ratios to training here;
the driver's own peak RSS (VmHWM, not getrusage's, which Linux carries across exec from the parent).

    python bench/bench_training_ray.py [--sizes 10000 100000] [--rounds 1] [--engines here ray_2_cpus]
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

ENGINES = ("here", "ray_1_cpu", "ray_2_cpus")


def measure(data_dir: Path, models_dir: Path, engine: str) -> dict:
    """Runs in the child process: one end-to-end training on one engine."""
    from artifacts import data_fingerprint, load_data, train_artifacts
    from settings import Settings

    settings = Settings(data_dir=data_dir, models_dir=models_dir)
    training = None
    if engine != "here":
        import ray

        from ray_engine import RayTraining

        ray.init(num_cpus=1 if engine == "ray_1_cpu" else 2, include_dashboard=False)
        training = RayTraining(settings)
    started = time.perf_counter()
    data = load_data(settings)
    artifacts = train_artifacts(data, settings, data_fingerprint(settings), training)
    return {"engine": engine, "train_seconds": round(time.perf_counter() - started, 2),
            "model_fit_seconds": artifacts.model.training_seconds_,
            "driver_peak_rss_mb": round(peak_rss_mb(os.getpid()), 1)}


def train_in_child(data_dir: Path, engine: str) -> dict:
    with tempfile.TemporaryDirectory() as models_dir:
        child = subprocess.run([sys.executable, __file__, "--child", str(data_dir), models_dir, engine],
                               capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if child.returncode != 0:
        raise RuntimeError(child.stderr[-2000:])
    return json.loads(child.stdout.strip().splitlines()[-1])


def summary(runs: list[dict], engines: list[str]) -> dict:
    """Median seconds per engine and the ratio of each to training here (above 1: faster)."""
    import statistics

    median = {engine: {key: statistics.median(r[key] for r in runs if r["engine"] == engine)
                       for key in ("train_seconds", "model_fit_seconds")} for engine in engines}
    here = median["here"]
    return {engine: {**figures, "train_speedup": round(here["train_seconds"] / figures["train_seconds"], 2),
                     "model_fit_speedup": round(here["model_fit_seconds"] / figures["model_fit_seconds"], 2)}
            for engine, figures in median.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the engines, alternating")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES),
                        help="engines to time (training here is always among them: the ratios are to it)")
    parser.add_argument("--out", type=Path, default=RESULTS / "training_ray.json")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), Path(args.child[1]), args.child[2])))
        return
    from synthetic_data import generate_bank_data

    engines = [engine for engine in ENGINES if engine == "here" or engine in args.engines]

    for size in args.sizes:
        with tempfile.TemporaryDirectory() as scratch:
            data_dir = Path(scratch) / "data"
            generate_bank_data(data_dir, size, seed=1)
            runs = []
            for _ in range(args.rounds):
                for engine in engines:
                    runs.append(train_in_child(data_dir, engine))
                    print(json.dumps({size: runs[-1]}), flush=True)
        figures = {"customers": size, "runs": runs, "median": summary(runs, engines)}
        record(args.out, str(size), figures)
        print(json.dumps({size: figures["median"]}, indent=2), flush=True)


if __name__ == "__main__":
    main()
