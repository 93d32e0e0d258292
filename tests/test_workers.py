"""WORKERS=2: two processes on one port, one readiness, one set of metrics, a reload in place, a clean stop."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.utils.service import served


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's worker processes (multiprocessing's spawned children)."""
    pids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            command = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields["PPid"]) == supervisor and b"spawn_main" in command:
            pids.add(int(status.parent.name))
    return pids


def recommend_requests_counted(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    return sum(float(value) for value in
               re.findall(r'^http_requests_total\{endpoint="/recommend",method="POST",status="200"\} (\S+)$',
                          metrics, re.M))


def test_two_workers_answer_as_one_service(api_settings, trained_service, tmp_path):
    customers = [str(c) for c in trained_service.base.view.index[:30]]
    with served(api_settings, tmp_path / "state", WORKERS="2", ANSWER_CACHE_SIZE="0") as (server, url):
        health = httpx.get(f"{url}/health").json()
        assert health["ready"] and health["workers"] == {"ready": 2, "expected": 2}
        first_workers = worker_pids(server.pid)
        assert len(first_workers) == 2

        for customer in customers:  # a new connection each: the kernel hands them to either worker
            assert httpx.post(f"{url}/recommend", json={"customer_id": customer}).status_code == 200
        # whichever worker answers the scrape counts both workers' requests
        assert [recommend_requests_counted(url) for _ in range(6)] == [len(customers)] * 6

        statuses: list[int | str] = []
        stop = threading.Event()

        def keep_asking() -> None:
            while not stop.is_set():
                try:
                    statuses.append(httpx.post(f"{url}/recommend", json={"customer_id": customers[len(statuses) % 30]},
                                               timeout=60).status_code)
                except httpx.TransportError as error:  # a dropped connection is a failed request, not a lost thread
                    statuses.append(f"{type(error).__name__}: {error}")

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            time.sleep(1)
            server.send_signal(signal.SIGHUP)  # every worker reloads in place, answering on with its old model
            reloaded = wait_for(lambda: all(httpx.get(f"{url}/admin/reload").json()["state"] == "succeeded"
                                            for _ in range(6)))  # new connections: either worker answers
            time.sleep(1)
        finally:
            stop.set()
            asker.join()
        assert reloaded, "the workers did not reload"
        assert worker_pids(server.pid) == first_workers  # no worker replaced: no connection closed
        assert len(statuses) > 10 and set(statuses) == {200}, [s for s in statuses if s != 200]
        assert httpx.get(f"{url}/health").json()["workers"] == {"ready": 2, "expected": 2}

        workers = worker_pids(server.pid)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def wait_for(condition, seconds: float = 300) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_workers_refuse_a_port_another_program_holds(api_settings, tmp_path):
    """The supervisor takes the port before loading anything: a taken port stops the start at once, with the reason."""
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", 0))
        other_program.listen()
        port = other_program.getsockname()[1]
        env = {**os.environ, "DATA_DIR": str(api_settings.data_dir), "MODELS_DIR": str(api_settings.models_dir),
               "STATE_DIR": str(tmp_path / "state"), "PORT": str(port), "WORKERS": "2", "API_KEYS": ""}
        refused = subprocess.run([sys.executable, "cli.py", "serve"], cwd=Path(__file__).resolve().parents[1], env=env,
                                 capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert f"cannot bind 127.0.0.1:{port}" in refused.stderr and "Address already in use" in refused.stderr
    assert not (tmp_path / "state").exists()  # nothing was prepared: no decision log created
