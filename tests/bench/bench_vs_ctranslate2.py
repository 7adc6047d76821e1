#!/usr/bin/env python3
"""Parley vs CTranslate2 on random-weight models with real public dimensions.

    .venv/bin/python tests/bench/bench_vs_ctranslate2.py [--threads 2,1] [--repeats 3]

Builds (once, cached under build/bench-models) random-weight Hugging Face
models with the dimensions of Helsinki-NLP/opus-mt-en-de (MarianMTModel) and
Qwen/Qwen2.5-0.5B-Instruct (Qwen2ForCausalLM) from config objects written
here (nothing is downloaded), converts each with `parley-convert` (float32)
and with CTranslate2's TransformersConverter (float32, a stand-in tokenizer
whose vocabulary is just "<id>" strings), then, in the same run, times both
engines on identical token-id inputs:

  * translation: beam 4, batch 1 and 32, target tokens/s
  * LLM: prefill of a 128-token prompt (batch 1, prefill tokens/s) and greedy
    decode of 64 tokens (batch 1, decode tokens/s)

Random weights generate arbitrary tokens, so both engines are forced to run a
fixed number of decoding steps (Parley: min_new_tokens = max_new_tokens;
CTranslate2: min_decoding_length = max_decoding_length / min_length =
max_length): tokens/s compare like for like. Each engine runs in its own
subprocess per workload (peak RSS = ru_maxrss of that process; load time =
model load in that process); timings are medians over --repeats runs after a
warm-up. Not a test: nothing fails on timing. See tests/bench/README.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
VENV_BIN = Path(sys.executable).parent

SEED = 1234
MARIAN = "opus-mt-en-de"
QWEN = "qwen2.5-0.5b"

# Hugging Face ids of the special tokens (as in the public checkpoints).
MARIAN_EOS, MARIAN_UNK, MARIAN_PAD = 0, 1, 58100
QWEN_EOS = 151645  # <|im_end|> (Qwen2.5-Instruct generation eos)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

def marian_config():
    from transformers import MarianConfig

    # Helsinki-NLP/opus-mt-en-de config.json, written out.
    return MarianConfig(
        vocab_size=58101,
        decoder_vocab_size=58101,
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        activation_function="swish",
        max_position_embeddings=512,
        static_position_embeddings=True,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        normalize_embedding=False,
        normalize_before=False,
        add_final_layer_norm=False,
        pad_token_id=MARIAN_PAD,
        decoder_start_token_id=MARIAN_PAD,
        eos_token_id=MARIAN_EOS,
        bos_token_id=0,
        forced_eos_token_id=MARIAN_EOS,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        init_std=0.02,
        architectures=["MarianMTModel"],
    )


def qwen_config():
    from transformers import Qwen2Config

    # Qwen/Qwen2.5-0.5B-Instruct config.json, written out.
    return Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        use_sliding_window=False,
        sliding_window=32768,
        max_window_layers=21,
        attention_dropout=0.0,
        bos_token_id=151643,
        eos_token_id=QWEN_EOS,
        initializer_range=0.02,
        architectures=["Qwen2ForCausalLM"],
    )


def build_hf_model(name: str, out: Path) -> None:
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return
    import torch
    from transformers import GenerationConfig, MarianMTModel, Qwen2ForCausalLM

    print(f"[bench] building random-weight {name} in {out}", flush=True)
    torch.manual_seed(SEED)
    if name == MARIAN:
        model = MarianMTModel(marian_config())
        gen = GenerationConfig(
            bos_token_id=0, eos_token_id=MARIAN_EOS, pad_token_id=MARIAN_PAD,
            decoder_start_token_id=MARIAN_PAD, forced_eos_token_id=MARIAN_EOS,
            num_beams=4, max_length=512, bad_words_ids=[[MARIAN_PAD]],
        )
    else:
        model = Qwen2ForCausalLM(qwen_config())
        gen = GenerationConfig(bos_token_id=151643, eos_token_id=[QWEN_EOS, 151643], pad_token_id=151643)
    model = model.to(torch.float32).eval()
    model.generation_config = gen
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)


class _FakeTokenizer:
    """What CTranslate2's loaders read from a tokenizer, for an id-only vocabulary."""

    def __init__(self, vocab_size, specials, eos, unk=None, bos=None, pad=None):
        self._tokens = [token_str(i, specials) for i in range(vocab_size)]
        self.eos_token = token_str(eos, specials)
        self.unk_token = token_str(unk, specials) if unk is not None else None
        self.bos_token = token_str(bos, specials) if bos is not None else None
        self.pad_token = token_str(pad, specials) if pad is not None else None
        self.special_tokens_map = {}

    def get_vocab(self):
        return {t: i for i, t in enumerate(self._tokens)}

    def convert_ids_to_tokens(self, i):
        return self._tokens[i]


MARIAN_SPECIALS = {MARIAN_EOS: "</s>", MARIAN_UNK: "<unk>", MARIAN_PAD: "<pad>"}
QWEN_SPECIALS = {151643: "<|endoftext|>", 151644: "<|im_start|>", QWEN_EOS: "<|im_end|>"}


def token_str(i: int, specials: dict) -> str:
    return specials.get(i, f"<{i}>")


def convert_ct2(name: str, hf_dir: Path, out: Path) -> None:
    if (out / "model.bin").exists():
        return
    from ctranslate2.converters import TransformersConverter

    if name == MARIAN:
        tok = _FakeTokenizer(58101, MARIAN_SPECIALS, eos=MARIAN_EOS, unk=MARIAN_UNK, pad=MARIAN_PAD)
    else:
        tok = _FakeTokenizer(151936, QWEN_SPECIALS, eos=QWEN_EOS, bos=None, pad=151643)

    class Converter(TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return tok

    print(f"[bench] converting {name} with CTranslate2", flush=True)
    Converter(str(hf_dir)).convert(str(out), quantization="float32", force=True)


def convert_parley(hf_dir: Path, out: Path) -> None:
    if out.exists():
        return
    print(f"[bench] converting {hf_dir.name} with parley-convert", flush=True)
    subprocess.run([str(VENV_BIN / "parley-convert"), str(hf_dir), str(out), "--dtype", "float32", "--quiet"],
                   check=True)


# --------------------------------------------------------------------------
# CTranslate2 worker (own subprocess: its RSS and load time alone)
# --------------------------------------------------------------------------

def peak_rss_mib() -> float:
    """VmHWM of this process (reset at exec, unlike ru_maxrss, which Linux
    carries over from the forking parent's address space)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ct2_worker(spec_path: str) -> None:
    import ctranslate2

    spec = json.loads(Path(spec_path).read_text())
    threads, repeats = spec["threads"], spec["repeats"]
    workload = spec["workload"]
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    if workload == "translate":
        model = ctranslate2.Translator(spec["model"], device="cpu", compute_type="float32",
                                       intra_threads=threads, inter_threads=1)
    else:
        model = ctranslate2.Generator(spec["model"], device="cpu", compute_type="float32",
                                      intra_threads=threads, inter_threads=1)
    load_s = time.perf_counter() - t0
    rss_after_load = peak_rss_mib()

    if workload == "translate":
        sources = [[token_str(i, MARIAN_SPECIALS) for i in s] for s in spec["sources"]]
        m = spec["max_new_tokens"]

        def once():
            res = model.translate_batch(sources, beam_size=spec["beam"], max_decoding_length=m,
                                        min_decoding_length=m, return_scores=True, max_batch_size=0)
            return sum(len(r.hypotheses[0]) for r in res)

        t = time.perf_counter()
        once()
        warmup = time.perf_counter() - t
        times, tokens = [], 0
        for _ in range(repeats):
            t = time.perf_counter()
            tokens = once()
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        result = {"warmup_s": warmup, "batch": len(sources), "beam": spec["beam"], "max_new_tokens": m, "target_tokens": tokens,
                  "seconds": times, "median_s": med, "target_tokens_per_s": tokens / med}
    else:
        prompt = [token_str(i, QWEN_SPECIALS) for i in spec["prompt"]]
        d = spec["decode_tokens"]

        def gen(n):
            t = time.perf_counter()
            res = model.generate_batch([prompt], max_length=n, min_length=n, sampling_topk=1, beam_size=1,
                                       include_prompt_in_result=False)
            return time.perf_counter() - t, len(res[0].sequences_ids[0])

        warmup = gen(1)[0]
        prefill = [gen(1)[0] for _ in range(repeats)]
        gen(d)
        total, tokens = [], 0
        for _ in range(repeats):
            s, tokens = gen(d)
            total.append(s)
        mp, mt = statistics.median(prefill), statistics.median(total)
        result = {"warmup_s": warmup, "prompt_tokens": len(prompt), "prefill_seconds": prefill, "prefill_median_s": mp,
                  "prefill_tokens_per_s": len(prompt) / mp, "generated_tokens": tokens,
                  "generate_seconds": total, "generate_median_s": mt,
                  "decode_median_s": mt - mp, "decode_tokens_per_s": (tokens - 1) / (mt - mp)}
    out = {"engine": "ctranslate2", "version": ctranslate2.__version__, "workload": workload,
           "threads": threads, "repeats": repeats, "load_s": load_s,
           "peak_rss_mib_before_load": rss_before, "peak_rss_mib_after_load": rss_after_load,
           "peak_rss_mib": peak_rss_mib(),
           "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "result": result}
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def run_json(cmd: list[str]) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct2-worker", help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="2,1", help="comma-separated thread counts (default 2,1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median reported)")
    ap.add_argument("--cache", type=Path, default=BUILD / "bench-models")
    ap.add_argument("--parley-bench", type=Path, default=BUILD / "tests" / "bench" / "parley_bench")
    ap.add_argument("--src-len", type=int, default=20, help="mean source length (tokens, EOS included)")
    ap.add_argument("--max-new-tokens", type=int, default=24, help="translation target length (forced)")
    ap.add_argument("--prompt", type=int, default=128, help="LLM prompt length")
    ap.add_argument("--decode", type=int, default=64, help="LLM decode length (forced)")
    ap.add_argument("--only", choices=["translate", "llm"], help="run one model family only")
    ap.add_argument("--json", type=Path, help="also write all raw results here")
    args = ap.parse_args()
    if args.ct2_worker:
        ct2_worker(args.ct2_worker)
        return 0

    import numpy as np

    threads = [int(t) for t in args.threads.split(",")]
    if not args.parley_bench.exists():
        sys.exit(f"{args.parley_bench} not found: cmake --build build --target parley_bench")
    cache = args.cache
    hf = {n: cache / "hf" / n for n in (MARIAN, QWEN)}
    parley_file = {n: cache / f"{n}.f32.parley" for n in (MARIAN, QWEN)}
    ct2_dir = {n: cache / "ct2" / f"{n}-float32" for n in (MARIAN, QWEN)}
    names = [MARIAN, QWEN] if not args.only else ([MARIAN] if args.only == "translate" else [QWEN])
    for n in names:
        build_hf_model(n, hf[n])
        convert_parley(hf[n], parley_file[n])
        convert_ct2(n, hf[n], ct2_dir[n])

    # Identical token-id inputs for both engines (no special ids inside).
    rng = np.random.default_rng(SEED)
    sources = []
    for _ in range(32):
        length = int(rng.integers(args.src_len - 3, args.src_len + 4))
        sources.append([int(x) for x in rng.integers(2, MARIAN_PAD, size=length - 1)] + [MARIAN_EOS])
    prompt = [int(x) for x in rng.integers(0, 151643, size=args.prompt)]

    workloads = []
    if MARIAN in names:
        for b in (1, 32):
            workloads.append((f"translate b{b} beam4", MARIAN, {
                "workload": "translate", "sources": sources[:b], "beam": 4,
                "decoder_start_token_id": MARIAN_PAD, "eos_token_id": MARIAN_EOS,
                "max_new_tokens": args.max_new_tokens}))
    if QWEN in names:
        workloads.append(("llm b1", QWEN, {"workload": "llm", "prompt": prompt, "decode_tokens": args.decode,
                                           "eos_token_id": QWEN_EOS}))

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in threads:
            for label, model, spec in workloads:
                spec = dict(spec, threads=t, repeats=args.repeats)
                ps = Path(tmp) / "parley.json"
                ps.write_text(json.dumps(dict(spec, model=str(parley_file[model]))))
                cs = Path(tmp) / "ct2.json"
                cs.write_text(json.dumps(dict(spec, model=str(ct2_dir[model]))))
                print(f"[bench] {label}, {t} thread(s): parley ...", flush=True)
                p = run_json([str(args.parley_bench), str(ps)])
                print(f"[bench] {label}, {t} thread(s): ctranslate2 ...", flush=True)
                c = run_json([sys.executable, str(Path(__file__).resolve()), "--ct2-worker", str(cs)])
                results.append({"label": label, "model": model, "threads": t, "parley": p, "ctranslate2": c})

    import ctranslate2  # version for the header only

    lines = []
    lines.append(f"Parley vs CTranslate2 {ctranslate2.__version__} — {datetime.date.today().isoformat()}, "
                 f"{cpu_model()}, {os.cpu_count()} CPUs visible, float32 weights and compute, "
                 f"medians of {args.repeats} runs after 1 warm-up")
    lines.append(f"Models: random weights, real dims of Helsinki-NLP/opus-mt-en-de and Qwen/Qwen2.5-0.5B-Instruct. "
                 f"Decoding length forced on both sides (min = max): translation {args.max_new_tokens} target "
                 f"tokens per sentence, LLM prompt {args.prompt} + decode {args.decode}.")
    lines.append("")
    lines.append("| workload | threads | Parley | CTranslate2 | Parley/CT2 | Parley load s | CT2 load s "
                 "| Parley peak RSS MiB | CT2 peak RSS MiB |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")

    def row(name, t, pv, cv, unit, p, c):
        lines.append(f"| {name} ({unit}) | {t} | {pv:.1f} | {cv:.1f} | {pv / cv:.2f} | {p['load_s']:.2f} | "
                     f"{c['load_s']:.2f} | {p['peak_rss_mib']:.0f} | {c['peak_rss_mib']:.0f} |")

    for r in results:
        p, c = r["parley"], r["ctranslate2"]
        pr, cr = p["result"], c["result"]
        if p["workload"] == "translate":
            if pr["target_tokens"] != cr["target_tokens"]:
                lines.append(f"<!-- WARNING: target token counts differ: parley {pr['target_tokens']} "
                             f"ct2 {cr['target_tokens']} -->")
            row(r["label"], r["threads"], pr["target_tokens_per_s"], cr["target_tokens_per_s"], "target tok/s", p, c)
        else:
            row("llm prefill 128, b1", r["threads"], pr["prefill_tokens_per_s"], cr["prefill_tokens_per_s"],
                "tok/s", p, c)
            row(f"llm greedy decode {args.decode}, b1", r["threads"], pr["decode_tokens_per_s"],
                cr["decode_tokens_per_s"], "tok/s", p, c)
    lines.append("")
    lines.append("Parley/CT2 > 1 means Parley is faster (throughput ratio). Peak RSS: VmHWM of the process running "
                 "that engine and workload (CT2's includes the Python interpreter and the ctranslate2 module, "
                 f"{statistics.median(r['ctranslate2']['peak_rss_mib_before_load'] for r in results):.0f} MiB before "
                 "loading the model; Parley's process "
                 f"{statistics.median(r['parley']['peak_rss_mib_before_load'] for r in results):.0f} MiB).")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
