"""Serving benchmark: start-up, throughput and latency of /recommend against FastAPI's own ceiling.

Runs uvicorn with the real app on 127.0.0.1 and loads it from a separate process with wrk
(Debian package `wrk`), over many different known customers, at several concurrencies. In the same
run and the same way it loads a bare FastAPI endpoint that validates the same body and returns a
response of the same schema and size (bench/ceiling_app.py): the framework's ceiling here.
Also measures cold start-up (no saved models: training from the data) and warm start-up (loading
the saved artifacts) to /health 200, and the server's peak resident memory after the load.

    python bench/bench_serving.py [--duration 10] [--concurrency 1 8 32] [--skip-cold]
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
    threads = min(concurrency, 2)
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration}s", "--latency", "-s", str(BENCH / "recommend.lua"),
         f"http://127.0.0.1:{port}"], capture_output=True, text=True, env={**os.environ, "CUSTOMER_IDS_FILE": str(ids_file)},
        check=True).stdout
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--skip-cold", action="store_true", help="do not measure the cold start (keeps saved models)")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "serving.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    from settings import get_settings

    settings = get_settings()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "API_KEYS": ""}
    serve = [PYTHON, "cli.py", "serve"]
    results: dict = {"startup": {}}

    if not args.skip_cold:
        shutil.rmtree(settings.models_dir, ignore_errors=True)
        port = free_port()
        process, seconds = start_server(serve, port, env)
        results["startup"]["cold_seconds"] = round(seconds, 2)
        stop(process)
    port = free_port()
    process, seconds = start_server(serve, port, env)
    results["startup"]["warm_seconds"] = round(seconds, 2)

    with tempfile.TemporaryDirectory() as scratch:
        ids_file = Path(scratch) / "ids.txt"
        ids = customer_ids(settings.data_dir)
        ids_file.write_text("\n".join(ids) + "\n")
        template = sample_response(port, ids[0])
        response_file = Path(scratch) / "response.json"
        response_file.write_text(json.dumps(template))
        results["response_bytes"] = len(json.dumps(template))
        run_wrk(port, 8, 10, ids_file)  # warm-up: every customer once, text models loaded in the background
        results["recommend"] = {f"c{c}": run_wrk(port, c, args.duration, ids_file) for c in args.concurrency}
        results["server_peak_rss_mb"] = round(peak_rss_mb(process.pid), 1)
        stop(process)

        ceiling_port = free_port()
        ceiling = subprocess.Popen([PYTHON, "-m", "uvicorn", "ceiling_app:app", "--port", str(ceiling_port),
                                    "--log-level", "warning", "--no-access-log"], cwd=BENCH,
                                   env={**env, "CEILING_RESPONSE_FILE": str(response_file)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_listening(ceiling_port, ceiling)
        run_wrk(ceiling_port, 8, 2, ids_file)
        results["ceiling"] = {f"c{c}": run_wrk(ceiling_port, c, args.duration, ids_file) for c in args.concurrency}
        stop(ceiling)

    results["ratios"] = ratios(results)
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


def ratios(results: dict) -> dict:
    """/recommend relative to the ceiling: throughput share, p99 multiple, p50 difference."""
    out = {}
    for key, ours in results["recommend"].items():
        bare = results["ceiling"][key]
        out[key] = {"throughput_share": round(ours["requests_per_second"] / bare["requests_per_second"], 3),
                    "p99_multiple": round(ours["p99_ms"] / bare["p99_ms"], 2),
                    "p50_difference_ms": round(ours["p50_ms"] - bare["p50_ms"], 3)}
    return out


if __name__ == "__main__":
    main()
