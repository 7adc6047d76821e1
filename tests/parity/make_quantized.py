#!/usr/bin/env python3
"""Reduced-precision parity models and their same-rounding references.

    python tests/parity/make_quantized.py [--check]

No torch needed (numpy, flatbuffers, xxhash: formats/python/requirements.txt).

1. Models: for `llama`, `qwen3` and `marian`, re-stores the committed float32
   `models/<name>.parley` (which holds the checkpoint's values exactly) with
   the converter's own storage step (restore.py) as `models/<name>.int8.parley`
   and `models/<name>.int4.parley` (group size per model in INT4_GROUP:
   the layers' Linear weights I4 group-wise, a group the input size does not
   allow falls back to a smaller one or to I8 per row; token embeddings and
   lm_head I8 per row). These are the bytes `parley-convert --dtype int8` /
   `--dtype int4 --group-size G` writes from the same checkpoint. float16 and
   bfloat16 files come from make_goldens.py (transformers); re-storing them
   here gives the same bytes, which --check verifies.

2. Same-rounding references: for every `models/<name>.<dtype>.parley`,
   `goldens/stored/<name>.<dtype>.json` holds the float64 numpy forward pass
   of reference.py over that very file (weights carrying exactly the file's
   rounding) for the inputs of `goldens/<name>.json`: the logits, and the
   greedy tokens of the golden's generate() call decoded from them (full
   recompute per step, transformers' processors for these settings:
   bad_words_ids suppressed, forced BOS/EOS, EOS ids, pad after finishing),
   with each row's smallest top-1 minus top-2 margin over its unforced steps.
   tests/model/test_storage.cpp holds the C++ runtime to them.

--check regenerates into a temporary folder and fails if anything committed
differs (models byte for byte, references to 1e-9).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from restore import restore  # noqa: E402  (also puts formats/python on the path)

from reference import ParleyModel  # noqa: E402

STORAGE_MODELS = ("llama", "qwen3", "marian")
REFERENCE_DTYPES = ("float16", "bfloat16", "int8", "int4")
# int4 group size per model. llama and marian g32: their 64-input weights
# (llama down_proj, marian encoder down_proj) have two groups per row, so a
# scale read from the wrong group shows; marian's 48-input decoder down_proj
# falls back to I8 per row. qwen3 g64: o_proj (64 inputs) is g64, 32-input
# weights fall back to g32 and 48-input ones to I8 per row. (These models have
# no weight with 128 inputs, so g64 with several groups per row is covered
# only by the kernel tests.)
INT4_GROUP = {"llama": 32, "qwen3": 64, "marian": 32}


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def f32(x) -> list:
    """float64 values as the nearest float32, printed to round-trip."""
    return np.asarray(x, dtype=np.float32).tolist()


def greedy(model: ParleyModel, gold: dict) -> tuple[list, list]:
    """transformers generate(do_sample=False, num_beams=1) with the golden's
    settings, over the numpy reference. Returns (sequences as transformers
    returns them, per-row smallest top-1 minus top-2 margin of the processed
    scores over unforced steps while the row is unfinished; None if none)."""
    s = gold["greedy"]["settings"]
    inp = gold["inputs"]
    eos = s["eos_token_id"]
    eos = set(eos if isinstance(eos, list) else ([] if eos is None else [eos]))
    pad = s["pad_token_id"]
    suppress = [w[0] for w in s.get("bad_words_ids") or []]
    if any(len(w) != 1 for w in s.get("bad_words_ids") or []):
        raise ValueError("multi-token bad_words_ids")
    if s["repetition_penalty"] != 1.0 or s["no_repeat_ngram_size"]:
        raise ValueError("processor not implemented by this reference decoder")
    enc_dec = "decoder_input_ids" in inp
    ids = np.array(inp["input_ids"])
    mask = np.array(inp["attention_mask"])
    B = ids.shape[0]
    if enc_dec:
        seq = np.full((B, 1), s["decoder_start_token_id"])
    else:
        seq, pos = ids.copy(), np.array(inp["position_ids"])
    prompt = seq.shape[1]
    max_len = prompt + s["max_new_tokens"]
    done = np.zeros(B, bool)
    margins: list = [None] * B
    while seq.shape[1] < max_len and not done.all():
        if enc_dec:
            logits = model.forward(ids, mask, seq)[:, -1]
        else:
            logits = model.forward(seq, mask, position_ids=pos)[:, -1]
        scores = logits.copy()
        scores[:, suppress] = -np.inf
        cur = seq.shape[1]
        forced = None
        if cur == 1 and enc_dec and s.get("forced_bos_token_id") is not None:
            forced = s["forced_bos_token_id"]
        if cur == max_len - 1 and s.get("forced_eos_token_id") is not None:
            forced = s["forced_eos_token_id"]
        if forced is not None:
            nxt = np.full(B, forced)
        else:
            nxt = scores.argmax(-1)
            top2 = np.sort(scores, axis=-1)[:, -2:]
            for b in range(B):
                if not done[b]:
                    m = float(top2[b, 1] - top2[b, 0])
                    margins[b] = m if margins[b] is None else min(margins[b], m)
        nxt = np.where(done, pad, nxt)
        seq = np.concatenate([seq, nxt[:, None]], 1)
        if not enc_dec:
            mask = np.concatenate([mask, np.ones((B, 1), mask.dtype)], 1)
            pos = np.concatenate([pos, pos[:, -1:] + 1], 1)
        done |= np.isin(nxt, list(eos))
    return seq.tolist(), margins


def reference(model_path: str, gold: dict, rel_path: str) -> dict:
    model = ParleyModel(model_path)
    inp = gold["inputs"]
    logits = model.forward(inp["input_ids"], inp["attention_mask"], inp.get("decoder_input_ids"),
                           inp.get("position_ids"))
    seqs, margins = greedy(model, gold)
    return {
        "what": "float64 numpy reference (tests/parity/reference.py) over the stored file, inputs of the golden",
        "golden": gold["name"], "model_file": rel_path, "model_sha256": sha256(model_path),
        "logits": {"shape": list(logits.shape), "values": f32(logits)},
        "greedy": {"settings": gold["greedy"]["settings"], "sequences": seqs, "min_margin": margins},
    }


def generate(out_dir: str) -> list[str]:
    """Writes models and references under out_dir; returns relative paths written."""
    written = []
    os.makedirs(os.path.join(out_dir, "models"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "goldens", "stored"), exist_ok=True)
    for name in STORAGE_MODELS:
        src = os.path.join(HERE, "models", f"{name}.parley")
        for dtype, group in (("int8", None), ("int4", INT4_GROUP[name])):
            rel = f"models/{name}.{dtype}.parley"
            warnings: list[str] = []
            restore(src, os.path.join(out_dir, rel), dtype, group, warnings=warnings)
            for w in warnings:
                print(f"  {rel}: {w}")
            written.append(rel)
        gold = json.load(open(os.path.join(HERE, "goldens", f"{name}.json")))
        for dtype in REFERENCE_DTYPES:
            rel = f"models/{name}.{dtype}.parley"
            path = os.path.join(out_dir, rel)
            if not os.path.exists(path):  # float16/bfloat16: the committed (transformers-converted) files
                path = os.path.join(HERE, rel)
            ref = reference(path, gold, rel)
            out = f"goldens/stored/{name}.{dtype}.json"
            with open(os.path.join(out_dir, out), "w") as f:
                json.dump(ref, f, separators=(",", ":"))
                f.write("\n")
            written.append(out)
            m = [round(x, 4) if x is not None else None for x in ref["greedy"]["min_margin"]]
            print(f"{name}.{dtype}: greedy margins {m}")
    return written


def check() -> int:
    bad = []
    with tempfile.TemporaryDirectory() as tmp:
        written = generate(tmp)
        for name in STORAGE_MODELS:  # float16/bfloat16 re-stored = the transformers conversion
            for dtype in ("float16", "bfloat16"):
                p = os.path.join(tmp, f"{name}.{dtype}.parley")
                restore(os.path.join(HERE, "models", f"{name}.parley"), p, dtype)
                if sha256(p) != sha256(os.path.join(HERE, "models", f"{name}.{dtype}.parley")):
                    bad.append(f"models/{name}.{dtype}.parley (re-stored float32 differs)")
        for rel in written:
            new, old = os.path.join(tmp, rel), os.path.join(HERE, rel)
            if not os.path.exists(old):
                bad.append(f"{rel} (missing)")
            elif rel.endswith(".parley"):
                if sha256(new) != sha256(old):
                    bad.append(rel)
            else:
                a, b = json.load(open(new)), json.load(open(old))
                try:
                    va, vb = np.array(a["logits"]["values"]), np.array(b["logits"]["values"], dtype=np.float64)
                    same = (a["model_sha256"] == b.get("model_sha256") and va.shape == vb.shape
                            and np.allclose(va, vb, rtol=1e-6, atol=1e-9)
                            and a["greedy"]["sequences"] == b["greedy"]["sequences"])
                except (KeyError, TypeError, ValueError):  # malformed
                    same = False
                if not same:
                    bad.append(rel)
    for b in bad:
        print(f"stale: {b}")
    print("up to date" if not bad else "run: python tests/parity/make_quantized.py")
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="regenerate into a temporary folder and compare")
    args = ap.parse_args(argv)
    if args.check:
        return check()
    for rel in generate(HERE):
        print(f"wrote tests/parity/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
