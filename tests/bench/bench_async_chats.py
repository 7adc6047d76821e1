#!/usr/bin/env python3
"""Asynchronous streamed chat turns through the serving engine, Python asyncio.

N chats, each its own session with one shared system prompt, run one turn at
once with Chat.stream_async (parley_chat_submit: the turn on a worker
thread, every streamed piece a callback on the model's engine thread handed
to the event loop). Prints total generated tok/s per run. With several
--lib folders (each a build's lib/ with libparley.so.0 and parley/plugins)
the builds run interleaved in fresh processes, for an A/B of two builds on
one machine (e.g. before/after a change to the request path).

  python3 tests/bench/bench_async_chats.py MODEL.parley --lib build/lib \
      [--lib /tmp/base/build/lib] [--chats 32] [--new-tokens 64] [--repeats 3]

No anchor: llama.cpp's server is compared with blocking calls in
bench_serving.py. Greedy, end of turn suppressed (min_new_tokens), so every
turn generates exactly --new-tokens tokens.
"""
import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "You are the support assistant of Nordwind Shop. Answer briefly and politely. " * 8


def worker(model_path: str, plugins: str, chats: int, new: int, threads: int) -> None:
    sys.path.insert(0, str(ROOT / "bindings/python"))
    import parley

    rt = parley.Runtime(threads=threads, plugin_dirs=[plugins], load_default_plugins=False)
    model = parley.Model(rt, model_path)

    async def one(i: int, pieces: list) -> None:
        with parley.Chat(model, system_prompt=SYSTEM) as c:
            async for _ in c.stream_async(f"Hello, where is my order {9000000 + i}?", do_sample=False,
                                          max_new_tokens=new, min_new_tokens=new):
                pieces[i] += 1

    async def main() -> None:
        await one(0, [0])  # warm-up: weights bound, engine started, system prompt cached
        pieces = [0] * chats
        t = time.perf_counter()
        await asyncio.gather(*(one(i, pieces) for i in range(chats)))
        dt = time.perf_counter() - t
        print(f"{chats * new / dt:.1f} {dt:.3f} {sum(pieces)}")

    asyncio.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--lib", action="append", type=Path, help="a build's lib folder (repeat for an A/B)")
    ap.add_argument("--chats", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--plugins", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(str(args.model), args.plugins, args.chats, args.new_tokens, args.threads)
        return 0
    libs = args.lib or [ROOT / "build/lib"]
    print(f"{args.chats} async streamed chats x {args.new_tokens} tokens, {args.threads} threads, {args.model.name}")
    results = {str(lib): [] for lib in libs}
    for r in range(args.repeats):
        for lib in libs:
            env = dict(os.environ, PARLEY_LIBRARY=str(lib / "libparley.so.0"))
            out = subprocess.run([sys.executable, __file__, str(args.model), "--worker", "--plugins",
                                  str(lib / "parley/plugins"), "--chats", str(args.chats), "--new-tokens",
                                  str(args.new_tokens), "--threads", str(args.threads)],
                                 env=env, capture_output=True, text=True, check=True)
            tok_s, secs, pieces = out.stdout.split()
            results[str(lib)].append(float(tok_s))
            print(f"  run {r + 1} {lib}: {float(tok_s):.1f} tok/s ({float(secs):.2f} s, {pieces} pieces)")
    for lib, xs in results.items():
        xs = sorted(xs)
        print(f"{lib}: median {xs[len(xs) // 2]:.1f} tok/s (min {xs[0]:.1f}, max {xs[-1]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
