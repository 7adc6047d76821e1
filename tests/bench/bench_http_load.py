#!/usr/bin/env python3
"""Bounded loopback load test of `parley serve` (issue 14, item 9).

    python3 tests/bench/bench_http_load.py [--cli build/bin/parley] [--concurrency 1,64] [--requests 256]
    python3 tests/bench/bench_http_load.py --url http://127.0.0.1:8080 --model bot   # a running server

Starts `parley serve` on 127.0.0.1 (port 0) with the demo chat model
(samples/support-bot/models/support-llama.parley) unless --url is given,
then for each concurrency C runs --requests chat completions from C client
threads (one keep-alive HTTP connection each, stdlib http.client, so no
client library is measured), every request streamed (SSE): the support
policy as system prompt (~300 tokens, shared, so the prefix cache serves
it), a user question of its own, --max-tokens greedy tokens. Measured per
request: latency (request sent -> [DONE]) and time to first token (first
content delta); per run: wall time, generated tokens / wall time, failed
requests (any non-200, error event or missing [DONE]: the script exits 1),
and the serving engine's mean batch (batched rows / steps from /metrics).
Prints a markdown table. Timing depends on the machine and its load: quote
ratios (C=64 vs C=1), not absolute figures, from a shared machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "samples" / "support-bot" / "models"
QUESTIONS = [
    "How long does standard shipping take?",
    "Can I pay by invoice?",
    "How do I return a damaged monitor?",
    "When are you open on Saturday?",
    "How do I reset my password?",
    "When will I get my refund?",
    "Can I cancel my order {n}?",
    "How much is express shipping for order {n}?",
]


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def metrics(host: str, port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def one_request(conn: http.client.HTTPConnection, model: str, policy: str, i: int, max_tokens: int) -> dict:
    q = QUESTIONS[i % len(QUESTIONS)].format(n=9019900 + i)
    body = json.dumps({
        "model": model, "stream": True, "temperature": 0, "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": policy}, {"role": "user", "content": q}],
    })
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        return {"error": f"HTTP {r.status}: {r.read()[:300]!r}"}
    ttft, tokens, done = None, 0, False
    for raw in r:  # SSE lines
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            continue
        event = json.loads(data)
        if "error" in event:
            return {"error": f"error event: {event['error']}"}
        for c in event.get("choices", []):
            if c["delta"].get("content") and ttft is None:
                ttft = time.perf_counter() - t0
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
    latency = time.perf_counter() - t0
    if not done:
        return {"error": "stream ended without [DONE]"}
    return {"latency": latency, "ttft": ttft if ttft is not None else latency, "tokens": tokens}


def run(host: str, port: int, model: str, policy: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    results: list[dict] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker():
        conn = http.client.HTTPConnection(host, port, timeout=600)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            try:
                res = one_request(conn, model, policy, i, max_tokens)
            except Exception as e:  # noqa: BLE001 - every failure is counted
                res = {"error": repr(e)}
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=600)
            with lock:
                results.append(res)
        conn.close()

    before = metrics(host, port)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = metrics(host, port)
    key = '{model="' + model + '"}'
    steps = after["parley_engine_steps_total" + key] - before["parley_engine_steps_total" + key]
    rows = after["parley_engine_batched_rows_total" + key] - before["parley_engine_batched_rows_total" + key]
    ok = [r for r in results if "error" not in r]
    failed = [r["error"] for r in results if "error" in r]
    lat = [r["latency"] for r in ok] or [0.0]
    ttft = [r["ttft"] for r in ok] or [0.0]
    tokens = sum(r["tokens"] for r in ok)
    return {
        "concurrency": concurrency, "requests": len(results), "failed": len(failed), "errors": failed[:5],
        "wall_s": wall, "tokens": tokens, "tok_per_s": tokens / wall, "req_per_s": len(ok) / wall,
        "p50_s": statistics.median(lat), "p99_s": percentile(lat, 99),
        "ttft_p50_s": statistics.median(ttft), "ttft_p99_s": percentile(ttft, 99),
        "mean_batch": rows / steps if steps else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", default=str(ROOT / "build" / "bin" / "parley"), help="the parley binary to start")
    ap.add_argument("--url", help="use a running server instead (http://HOST:PORT)")
    ap.add_argument("--model", default="bot", help="model name on the server")
    ap.add_argument("--model-file", default=str(MODELS / "support-llama.parley"))
    ap.add_argument("--concurrency", default="64", help="comma-separated client counts (e.g. 1,64)")
    ap.add_argument("--requests", type=int, default=256, help="requests per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="kernel threads of the started server (0: all CPUs)")
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    args = ap.parse_args()
    policy = (MODELS / "policy.txt").read_text(encoding="utf-8")

    proc = None
    if args.url:
        m = re.match(r"http://([^:/]+):(\d+)", args.url)
        host, port = m.group(1), int(m.group(2))
    else:
        env = dict(os.environ)
        env.setdefault("PARLEY_PLUGIN_PATH", str(Path(args.cli).resolve().parents[1] / "lib" / "parley" / "plugins"))
        proc = subprocess.Popen(
            [args.cli, "serve", "--model", f"{args.model}={args.model_file}", "--port", "0",
             "--threads", str(args.threads), "--max-concurrent", "256"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        line = proc.stdout.readline()
        m = re.search(r"http://([\d.]+):(\d+)", line)
        if not m:
            print(f"the server did not start: {line!r}", file=sys.stderr)
            return 1
        host, port = m.group(1), int(m.group(2))
    try:
        run(host, port, args.model, policy, 4, 8, args.max_tokens)  # warm-up (engine start, page-in)
        rows = [run(host, port, args.model, policy, int(c), args.requests, args.max_tokens)
                for c in args.concurrency.split(",")]
    finally:
        if proc:
            proc.terminate()
            proc.wait(60)
    print(f"\n`parley serve`, model {args.model} ({Path(args.model_file).name}), {args.requests} streamed chat "
          f"requests per row, {args.max_tokens} max new tokens (greedy), shared ~300-token system prompt, "
          f"{os.cpu_count()} CPUs, server --threads {args.threads}\n")
    print("| clients | requests | failed | wall s | gen tok/s | req/s | p50 ms | p99 ms | TTFT p50 ms | TTFT p99 ms "
          "| mean batch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['requests']} | {r['failed']} | {r['wall_s']:.1f} | {r['tok_per_s']:.0f} "
              f"| {r['req_per_s']:.2f} | {r['p50_s'] * 1e3:.0f} | {r['p99_s'] * 1e3:.0f} | {r['ttft_p50_s'] * 1e3:.0f} "
              f"| {r['ttft_p99_s'] * 1e3:.0f} | {r['mean_batch']:.1f} |")
    if args.json:
        print(json.dumps(rows, indent=1))
    failed = sum(r["failed"] for r in rows)
    for r in rows:
        for e in r["errors"]:
            print(f"failed ({r['concurrency']} clients): {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
