"""Serving benchmark: start-up, throughput and latency of /recommend against FastAPI's own ceiling.

Runs uvicorn with the real app on 127.0.0.1 and loads it from a separate process with wrk
(Debian package `wrk`), at several concurrencies, two ways: over the default data's 2,000 customers
again and again with the answer cache on (repeat traffic: after the warm-up nearly every answer comes
from the cache), and over a generated bank (``--customers``) with the answer cache off and on, every
request a customer no other request asks for (a bank's front-ends: nearly every request misses). In the same
run and the same way it loads a bare FastAPI endpoint that validates the same body and returns a
response of the same schema and size (bench/ceiling_app.py): the framework's ceiling here.
Also measures cold start-up (no saved models: training from the data) and warm start-up (loading
the saved artifacts) to /health 200, and the server's peak resident memory after the load.

    python bench/bench_serving.py [--duration 10] [--concurrency 1 8 32] [--skip-cold]
        [--customers 15000] [--per-run 2400] [--distinct-duration 5]

The generated bank and its models are kept under bench/output/serving-bank-N for the next run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import record  # noqa: E402
BENCH = ROOT / "bench"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(port: int, process: subprocess.Popen, timeout: float) -> float:
    """Seconds until /health answers 200; fails if the server dies or the timeout passes."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server not ready after {timeout} s")


def start_server(command: list[str], port: int, env: dict[str, str]) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env={**env, "PORT": str(port), "LOG_LEVEL": "WARNING"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_healthy(port, process, timeout=600)
    return process, time.perf_counter() - started


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def run_wrk(port: int, concurrency: int, duration: int, ids_file: Path) -> dict:
    """wrk over the customers in ``ids_file``, its threads on disjoint shares of them (recommend.lua)."""
    threads = min(concurrency, 2)
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration}s", "--latency", "-s", str(BENCH / "recommend.lua"),
         f"http://127.0.0.1:{port}"], capture_output=True, text=True,
        env={**os.environ, "CUSTOMER_IDS_FILE": str(ids_file), "WRK_THREADS": str(threads)}, check=True).stdout
    result = json.loads(output.split("JSON", 1)[1])
    result["requests_per_second"] = round(result["requests"] / result["seconds"], 1)
    return result


def customer_ids(data_dir: Path, count: int = 2000) -> list[str]:
    import pandas as pd

    from data_loader import load_bank_data
    from text_models import get_text_encoder
    from settings import get_settings

    data = load_bank_data(data_dir, get_settings(), get_text_encoder(get_settings()))
    ids = pd.Series(data.customers["customer_id"].astype(str))
    return ids.sample(min(count, len(ids)), random_state=0).tolist()


def sample_response(port: int, customer_id: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/recommend", method="POST",
                                     data=json.dumps({"customer_id": customer_id, "top_k": 5}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def trained_bank(root: Path, customers: int, env: dict[str, str]) -> None:
    """A generated bank in ``root/data`` with its models in ``root/models``."""
    for command in (["generate-data", "--out", str(root / "data"), "--customers", str(customers)],
                    ["train", "--data", str(root / "data")]):
        subprocess.run([PYTHON, "cli.py", *command], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def kept_bank(customers: int, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A generated and trained bank of ``customers`` under bench/output, made on the first run and reused by
    the next (training 15,000 customers takes minutes), with the environment that serves it."""
    root = BENCH / "output" / f"serving-bank-{customers}"
    bank_env = {**env, "MODELS_DIR": str(root / "models"), "DATA_DIR": str(root / "data")}
    if not (root / "models").is_dir():
        shutil.rmtree(root, ignore_errors=True)
        trained_bank(root, customers, bank_env)
    return root, bank_env


def generated_customers(data_dir: Path) -> list[str]:
    """The bank's customer ids in file order (each asked once; a 404 would show in wrk's non-2xx count)."""
    import pandas as pd

    customers = pd.read_csv(data_dir / "customers.csv", usecols=["customer_id"], dtype=str)
    return customers["customer_id"].drop_duplicates().tolist()


def distinct_customer_runs(args: argparse.Namespace, env: dict[str, str], scratch: Path) -> dict:
    """wrk against a generated bank with the answer cache off and on, every request a customer no other
    request of the whole run asks for (as a bank's front-ends mostly do): what a cache miss costs."""
    root, bank_env = kept_bank(args.customers, env)
    ids = generated_customers(root / "data")
    runs = 2 * len(args.concurrency)
    if runs * args.per_run + 200 > len(ids):
        sys.exit(f"--customers must be at least 2 x concurrencies x per-run + 200 = {runs * args.per_run + 200}")
    slices = iter(ids[n * args.per_run:(n + 1) * args.per_run] for n in range(runs))
    warm = scratch / "warm.txt"
    warm.write_text("\n".join(ids[-200:]) + "\n")
    results = {}
    for cache, size in (("off", "0"), ("on", "10000")):
        port = free_port()
        process, _ = start_server([PYTHON, "cli.py", "serve"], port,
                                  {**bank_env, "ANSWER_CACHE_SIZE": size,
                                   "STATE_DIR": str(scratch / f"state-{cache}")})  # a log new to every customer
        try:
            run_wrk(port, 8, 3, warm)  # code paths and connections, on customers no timed run asks for
            results[f"cache_{cache}"] = {f"c{c}": distinct_run(port, c, args.distinct_duration, next(slices), scratch)
                                         for c in args.concurrency}
            results[f"cache_{cache}"]["server_peak_rss_mb"] = round(peak_rss_mb(process.pid), 1)
        finally:
            stop(process)
    return results


def distinct_run(port: int, concurrency: int, duration: int, customers: list[str], scratch: Path) -> dict:
    ids_file = scratch / f"distinct-{port}-{concurrency}.txt"
    ids_file.write_text("\n".join(customers) + "\n")
    result = run_wrk(port, concurrency, duration, ids_file)
    if result["non_2xx"] or result["errors"] or result["requests"] >= len(customers):
        raise RuntimeError(f"c{concurrency}: not one answer per distinct customer (raise --per-run): {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--skip-cold", action="store_true", help="do not measure the cold start (keeps saved models)")
    parser.add_argument("--customers", type=int, default=15_000, help="the bank of the distinct-customer runs")
    parser.add_argument("--per-run", type=int, default=2_400, help="customers set aside for each distinct-customer run")
    parser.add_argument("--distinct-duration", type=int, default=5, help="seconds of each distinct-customer run")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "serving.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    from artifacts import ARTIFACT_FILE
    from settings import get_settings

    settings = get_settings()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "API_KEYS": ""}
    serve = [PYTHON, "cli.py", "serve"]
    results: dict = {"startup": {}}

    if not args.skip_cold:
        shutil.rmtree(settings.models_dir, ignore_errors=True)
    if not (settings.models_dir / ARTIFACT_FILE).is_file():  # removed above, or none saved yet: this start trains
        port = free_port()
        process, seconds = start_server(serve, port, env)
        results["startup"]["cold_seconds"] = round(seconds, 2)
        stop(process)
    port = free_port()
    process, seconds = start_server(serve, port, env)
    results["startup"]["warm_seconds"] = round(seconds, 2)

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        ids_file = scratch / "ids.txt"
        ids = customer_ids(settings.data_dir)
        ids_file.write_text("\n".join(ids) + "\n")
        template = sample_response(port, ids[0])
        response_file = scratch / "response.json"
        response_file.write_text(json.dumps(template))
        results["response_bytes"] = len(json.dumps(template))
        run_wrk(port, 8, 10, ids_file)  # warm-up: every customer once, text models loaded in the background
        results["recommend"] = {f"c{c}": run_wrk(port, c, args.duration, ids_file) for c in args.concurrency}
        results["server_peak_rss_mb"] = round(peak_rss_mb(process.pid), 1)
        stop(process)
        results["distinct_customers"] = distinct_customer_runs(args, env, scratch)

        ceiling_port = free_port()
        ceiling = subprocess.Popen([PYTHON, "-m", "uvicorn", "ceiling_app:app", "--port", str(ceiling_port),
                                    "--log-level", "warning", "--no-access-log"], cwd=BENCH,
                                   env={**env, "CEILING_RESPONSE_FILE": str(response_file)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_listening(ceiling_port, ceiling)
        run_wrk(ceiling_port, 8, 2, ids_file)
        results["ceiling"] = {f"c{c}": run_wrk(ceiling_port, c, args.duration, ids_file) for c in args.concurrency}
        stop(ceiling)

    results["ratios"] = {"repeat_customers_cache_on": ratios(results["recommend"], results["ceiling"]),
                         **{f"distinct_customers_{name}": ratios(block, results["ceiling"])
                            for name, block in results["distinct_customers"].items()}}
    record(args.out, "default_data", results)
    print(json.dumps(results, indent=2))


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    """The ceiling app has no /health: wait until its port accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ceiling app exited: {process.stderr.read().decode()[-500:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError("ceiling app did not start")


def ratios(recommend: dict, ceiling: dict) -> dict:
    """/recommend relative to the ceiling: throughput share, p99 multiple, p50 difference."""
    out = {}
    for key, bare in ceiling.items():
        ours = recommend[key]
        out[key] = {"throughput_share": round(ours["requests_per_second"] / bare["requests_per_second"], 3),
                    "p99_multiple": round(ours["p99_ms"] / bare["p99_ms"], 2),
                    "p50_difference_ms": round(ours["p50_ms"] - bare["p50_ms"], 3)}
    return out


if __name__ == "__main__":
    main()
