#!/usr/bin/env python3
"""Sizing of parley.ray_serve: requests/s with 1 and 2 replicas, against `parley serve`.

    build/venv/bin/python tests/bench/bench_ray_serve.py [--cli build/bin/parley]
        [--lib build/lib/libparley.so] [--replicas 1,2] [--concurrency 16] [--requests 96]
        [--max-tokens 32] [--runs 2]

Starts a local Ray cluster on 127.0.0.1 (num_cpus = the machine's CPUs) and,
for each replica count R, deploys parley.ray_serve.build_app with the demo
chat model (samples/support-bot/models/support-llama.parley), R replicas of
one CPU and one Parley thread each; as the anchor it starts `parley serve
--threads R` (the same CPUs in one process). Each row sends --requests chat
completions from --concurrency client threads (one keep-alive connection
each, stdlib http.client): the support policy as system prompt (~300
tokens), a question of their own, --max-tokens greedy tokens, not streamed.
Rows are interleaved (serve R=1, Ray R=1, serve R=2, Ray R=2, then again) so
a noisy neighbour hits both sides; each cell shows every run. Reports failed
requests (the script exits 1 if any), requests/s, requests/s per replica
(per thread for parley serve), p50/p99 latency, and generated tokens/s.
Not a test: timing depends on the machine and its load; quote ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "samples" / "support-bot" / "models" / "support-llama.parley"
POLICY = (ROOT / "samples" / "support-bot" / "models" / "policy.txt").read_text(encoding="utf-8")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http_load import QUESTIONS, percentile  # noqa: E402  (the same questions as parley serve's load test)


def load(port: int, concurrency: int, requests: int, max_tokens: int) -> dict[str, float]:
    latencies: list[float] = []
    tokens = [0]
    failed = [0]
    lock = threading.Lock()
    counter = [0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                i = counter[0]
                counter[0] += 1
            if i >= requests:
                break
            q = QUESTIONS[i % len(QUESTIONS)].format(n=9019900 + i)
            body = json.dumps({"model": "bot", "temperature": 0, "max_tokens": max_tokens,
                               "messages": [{"role": "system", "content": POLICY}, {"role": "user", "content": q}]})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                ok = r.status == 200
                n = json.loads(data)["usage"]["completion_tokens"] if ok else 0
            except Exception:  # noqa: BLE001  (counted as a failure)
                ok, n = False, 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(dt)
                    tokens[0] += n
                else:
                    failed[0] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"failed": failed[0], "rps": len(latencies) / wall, "tok_s": tokens[0] / wall,
            "p50": percentile(latencies, 50) * 1000 if latencies else 0.0,
            "p99": percentile(latencies, 99) * 1000 if latencies else 0.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_parley_serve(cli: str, threads: int, args) -> dict[str, float]:
    proc = subprocess.Popen([cli, "serve", "--model", f"bot={MODEL}", "--port", "0", "--threads", str(threads)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        m = re.match(r"parley serve: listening on http://127\.0\.0\.1:(\d+)$", proc.stdout.readline().strip())
        assert m, "parley serve did not start"
        port = int(m.group(1))
        load(port, 2, 4, args.max_tokens)  # warm-up
        return load(port, args.concurrency, args.requests, args.max_tokens)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cli", default=str(ROOT / "build" / "bin" / "parley"))
    ap.add_argument("--lib", default=os.environ.get("PARLEY_LIBRARY", str(ROOT / "build" / "lib" / "libparley.so")))
    ap.add_argument("--replicas", default="1,2")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    os.environ["PARLEY_LIBRARY"] = args.lib
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    binding = str(ROOT / "bindings" / "python")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [binding, os.environ.get("PYTHONPATH", "")]))
    sys.path.insert(0, binding)
    import ray
    from ray import serve

    from parley.ray_serve import build_app

    replicas = [int(r) for r in args.replicas.split(",")]
    cpus = os.cpu_count() or 2
    ray.init(address="local", include_dashboard=False, num_cpus=max(cpus, max(replicas)),
             object_store_memory=80 << 20, _node_ip_address="127.0.0.1", log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for _ in range(args.runs):
            for r in replicas:
                rows.setdefault(("parley serve", r), []).append(run_parley_serve(args.cli, r, args))
                serve.run(build_app({"bot": str(MODEL)}, num_replicas=r, num_cpus=1, threads=1,
                                    max_ongoing_requests=64), name="bench", route_prefix="/")
                load(port, 2, 4 * r, args.max_tokens)  # warm-up (every replica)
                rows.setdefault(("ray serve", r), []).append(load(port, args.concurrency, args.requests,
                                                                  args.max_tokens))
                serve.delete("bench")
    finally:
        serve.shutdown()
        ray.shutdown()

    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[0]
    print(f"\n{cpus} CPUs, load average {loadavg} at the end; {args.requests} requests per cell from "
          f"{args.concurrency} clients, {args.max_tokens} greedy tokens, not streamed; each cell: run 1 / run 2 ...\n")
    print("| server | replicas (threads) | failed | req/s | req/s per replica | p50 ms | p99 ms | gen tok/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")

    def cells(rs: list[dict[str, float]], key: str, fmt: str, div: float = 1.0) -> str:
        return " / ".join(format(x[key] / div, fmt) for x in rs)

    failed = 0
    for (name, r), rs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        failed += sum(int(x["failed"]) for x in rs)
        print(f"| {name} | {r} | {cells(rs, 'failed', '.0f')} | {cells(rs, 'rps', '.1f')} | "
              f"{cells(rs, 'rps', '.1f', r)} | {cells(rs, 'p50', '.0f')} | {cells(rs, 'p99', '.0f')} | "
              f"{cells(rs, 'tok_s', '.0f')} |")
    for r in replicas:
        ray_med = statistics.median(x["rps"] for x in rows[("ray serve", r)])
        ref_med = statistics.median(x["rps"] for x in rows[("parley serve", r)])
        print(f"\nR={r}: Ray Serve / parley serve requests/s (medians) = {ray_med / ref_med:.2f}")
    if len(replicas) > 1:
        base = statistics.median(x["rps"] for x in rows[("ray serve", replicas[0])])
        for r in replicas[1:]:
            print(f"Ray Serve {r} replicas / {replicas[0]}: "
                  f"{statistics.median(x['rps'] for x in rows[('ray serve', r)]) / base:.2f}x requests/s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
