"""What a user sees: the examples under real servers, driven over HTTP by wrk.

For each server — uvicorn running the FastAPI example, gunicorn (2 workers, ``--preload``)
running the Flask example — the same fixed-time load (``POST /chat`` with a JSON body and the
three headers) runs with tracing off, then on (Kafka destination, the tansu broker), back to
back.  Reported: requests/s, p50 and p99 latency as wrk measured them, and the throughput cost
of tracing.  Needs ``wrk`` (Debian package ``wrk``).

Run: ``python -m benchmarks.bench_servers [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LUA = """
wrk.method = "POST"
wrk.body = '{"question": "How do I enable tracing in production?", "top_k": 3}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Request-ID"] = "bench-request"
wrk.headers["X-Session-ID"] = "bench-session"
wrk.headers["X-User-ID"] = "bench-user"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"server on port {port} did not start")


def _server_command(kind: str, port: int) -> list[str]:
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app", "--port", str(port),
                "--log-level", "warning", "--no-access-log"]
    return [sys.executable, "-m", "gunicorn", "-w", "2", "--preload", "-b", f"127.0.0.1:{port}",
            "--log-level", "warning", "examples.flask_app.app:app"]


def _wrk(port: int, seconds: int, script: str) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-s", script,
         f"http://127.0.0.1:{port}/chat"],
        capture_output=True, text=True, check=True,
    ).stdout

    def latency(pct: str) -> float:
        match = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": float(rps.group(1)) if rps else float("nan"), "p50_ms": latency("50"),
            "p99_ms": latency("99"), "non_2xx": float(errors.group(1)) if errors else 0.0}


def measure(kind: str, env: dict[str, str], seconds: int, script: str) -> dict[str, float]:
    port = _free_port()
    proc = subprocess.Popen(_server_command(kind, port), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_port(port)
        _wrk(port, 2, script)  # warm-up
        return _wrk(port, seconds, script)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def run(quick: bool = False) -> list[dict[str, Any]]:
    if shutil.which("wrk") is None:
        raise SystemExit("bench_servers needs wrk: apt-get install wrk")
    sys.path.insert(0, str(ROOT))
    from tests.kafka_broker import Broker, unique_topic

    seconds = 5 if quick else 15
    rows = []
    broker = Broker().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = str(Path(tmp) / "chat.lua")
            Path(script).write_text(LUA)
            base = {**os.environ, "PYTHONPATH": str(ROOT)}
            for kind in ("uvicorn", "gunicorn"):
                off = measure(kind, {**base, "ENABLE_TRACING": "false"}, seconds, script)
                on_env = {**base, "ENABLE_TRACING": "true",
                          "TRACING_DESTINATION": f"kafka://{broker.bootstrap}/{unique_topic('bench')}"}
                on = measure(kind, on_env, seconds, script)
                rows.append({"server": kind, "mode": "tracing off", **off})
                rows.append({"server": kind, "mode": "tracing on (kafka)", **on,
                             "cost": 1 - on["rps"] / off["rps"]})
    finally:
        broker.stop()
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n## Real servers over HTTP (wrk, 16 connections, POST /chat)\n")
    print("| server | mode | requests/s | p50 ms | p99 ms | non-2xx | throughput cost |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cost = f"{r['cost'] * 100:.1f}%" if "cost" in r else ""
        print(f"| {r['server']} | {r['mode']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['non_2xx']:.0f} | {cost} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    print_table(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
