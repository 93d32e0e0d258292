"""Server memory under sustained cold-start traffic: does RSS stay flat once the caches are full?

Starts ``cli.py serve`` on the default data and sends ``--requests`` cold-start requests (a new
customer id each, a profile, and ``--posts`` posts no earlier request carried) from ``--concurrency``
clients. Reads the server's RSS from /proc after every ``--every`` requests, and prints the growth
from the RSS after the first ``--warm-up`` requests to the RSS after the last, with the text caches'
entries from /metrics. Fails if that growth is above ``--tolerance`` (5% by default).

    python bench/bench_cold_memory.py [--requests 10000] [--posts 20] [--concurrency 2]
    python bench/bench_cold_memory.py --request-text-cache 1000000   # what an unbounded cache does
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_serving import free_port, start_server, stop  # noqa: E402
from bench.results_file import RESULTS, record  # noqa: E402

OPENINGS = ["Thinking about", "Finally sorted", "Worried about", "So excited for", "Still saving for", "Looking into",
            "Can't stop thinking about", "Just booked", "Comparing offers for", "Asked my partner about"]
TOPICS = ["our first flat", "the wedding", "a new car", "the baby's room", "retirement", "a trip to Lisbon",
          "the kitchen renovation", "my daughter's tuition", "a small business loan", "the rent going up",
          "a pension top-up", "moving to a new city", "our credit card bill", "an emergency fund", "a used van"]
ENDINGS = ["this weekend", "before spring", "with the bonus", "after the promotion", "if rates drop", "next month",
           "since the move", "with a bit of luck", "on a tight budget", "once the loan clears"]


def distinct_posts(request: int, count: int) -> list[str]:
    """Posts that read like customers' own and that no other request carries (the request's number
    and the post's are in each)."""
    pick = random.Random(request)
    return [f"{pick.choice(OPENINGS)} {pick.choice(TOPICS)} {pick.choice(ENDINGS)} (note {request}.{number})"
            for number in range(count)]


def cold_start_body(request: int, posts: int) -> dict:
    pick = random.Random(-request)
    return {"customer_id": f"cold-{request:07d}", "top_k": 5, "profile": {
        "age": pick.randint(18, 85), "gender": pick.choice(["female", "male"]), "income": pick.randint(12, 200) * 1000,
        "location": pick.choice(["Lisbon", "Porto", "Braga"]), "posts": distinct_posts(request, posts)}}


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def text_cache_entries(client: httpx.Client) -> dict[str, float]:
    metrics = client.get("/metrics").text
    return {cache: float(value) for cache, value in re.findall(r'^cache_entries\{cache="(\w+)"\} (\S+)$', metrics, re.M)}


def send_all(client: httpx.Client, requests: range, posts: int, concurrency: int) -> list[int]:
    """Sends the requests from ``concurrency`` threads; returns the statuses that were not 200."""
    def send(request: int) -> int:
        return client.post("/recommend", json=cold_start_body(request, posts)).status_code

    with ThreadPoolExecutor(concurrency) as pool:
        return [status for status in pool.map(send, requests) if status != 200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--posts", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--warm-up", type=int, default=1000)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--request-text-cache", type=int, default=None,
                        help="REQUEST_TEXT_CACHE_SIZE for the server (default: the service's own default)")
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DECISION_LOG": "off"}
    if args.request_text_cache is not None:
        env["REQUEST_TEXT_CACHE_SIZE"] = str(args.request_text_cache)
    checkpoints: list[dict] = []
    failures: list[int] = []
    with tempfile.TemporaryDirectory() as scratch:
        env["STATE_DIR"] = str(Path(scratch) / "state")
        process, _ = start_server([sys.executable, "cli.py", "serve"], port, env)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                              limits=httpx.Limits(max_connections=args.concurrency)) as client:
                started = time.perf_counter()
                boundaries = sorted({args.warm_up, *range(args.every, args.requests + 1, args.every), args.requests})
                for first, last in itertools.pairwise([0, *boundaries]):
                    failures += send_all(client, range(first, last), args.posts, args.concurrency)
                    checkpoints.append({"requests": last, "rss_mb": round(rss_mb(process.pid), 1),
                                        "seconds": round(time.perf_counter() - started, 1),
                                        "cache_entries": text_cache_entries(client)})
                    print(json.dumps(checkpoints[-1]), flush=True)
        finally:
            stop(process)
    warm = next(point for point in checkpoints if point["requests"] == args.warm_up)["rss_mb"]
    growth = checkpoints[-1]["rss_mb"] / warm - 1
    figures = {"requests": args.requests, "posts_per_request": args.posts, "concurrency": args.concurrency,
               "request_text_cache_size": args.request_text_cache, "rss_after_warm_up_mb": warm,
               "rss_after_last_mb": checkpoints[-1]["rss_mb"], "growth": round(growth, 4), "non_200": len(failures),
               "requests_per_second": round(args.requests / checkpoints[-1]["seconds"], 1), "checkpoints": checkpoints}
    label = f"default_data_{args.requests}x{args.posts}_cache{args.request_text_cache or 'default'}"
    record(RESULTS / "cold_memory.json", label, figures)
    print(json.dumps({key: value for key, value in figures.items() if key != "checkpoints"}, indent=2))
    if failures or growth > args.tolerance:
        sys.exit(f"RSS grew {growth:.1%} from request {args.warm_up} to {args.requests} "
                 f"(tolerance {args.tolerance:.0%}); {len(failures)} answers were not 200")


if __name__ == "__main__":
    main()
