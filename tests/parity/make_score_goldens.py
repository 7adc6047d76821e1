#!/usr/bin/env python3
"""Records score goldens from `transformers` for a few parity models:

* ``score``: teacher-forced log-probabilities of given targets (what
  parley_score_tokens returns): log_softmax(logits)[target token] at each
  target position, and their sum;
* ``greedy`` / ``beam``: per-token log-probabilities of generated hypotheses
  as ``compute_transition_scores`` gives them (greedy: normalize_logits=True
  over ``output_scores``; beam search: the processed log-probabilities along
  ``beam_indices``), and the top-``K_ALTERNATIVES`` alternatives per step
  (top-k of the same distribution: log_softmax(scores[step]) for greedy,
  scores[step][beam_indices[step]] for beam search).

    PYTHONPATH=formats/python python tests/parity/make_score_goldens.py tests/parity

writes OUT_DIR/goldens/scores/<name>.json. The models are rebuilt exactly as
make_goldens.py builds them (same seeds), so they are the committed
OUT_DIR/models/<name>.parley; each run re-converts them to a temporary file and
refuses to write a golden when that file differs from the committed one.
Needs torch and transformers (formats/python/requirements-convert.txt).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import transformers as T  # noqa: E402

import make_goldens as mg  # noqa: E402
from parley_format.convert import convert  # noqa: E402

NAMES = ("marian", "llama")
K_ALTERNATIVES = 3
SEED = 4321


def _f(values) -> list:
    """float32 values as JSON numbers; -inf (a token a processor removed) as the string "-inf"."""
    return [float(f"{float(v):.9g}") if v != float("-inf") else "-inf" for v in values]


def _score(model, source, prompt, target) -> dict:
    """log_softmax of the logits at the target tokens (teacher forcing)."""
    cfg = model.config
    with torch.no_grad():
        if cfg.is_encoder_decoder:
            start = model.generation_config.decoder_start_token_id
            dec = torch.tensor([[start] + target[:-1]])  # shift_tokens_right(labels)
            logits = model(input_ids=torch.tensor([source]), decoder_input_ids=dec).logits[0]
            rows = logits
        else:
            seq = prompt + target
            logits = model(input_ids=torch.tensor([seq])).logits[0]
            rows = logits[len(prompt) - 1: len(seq) - 1]
        lp = torch.log_softmax(rows.double(), dim=-1)
        per = lp[torch.arange(len(target)), torch.tensor(target)]
    item = {"target": target, "logprobs": _f(per.tolist()), "sum": float(per.sum())}
    if cfg.is_encoder_decoder:
        item["source"] = source
    else:
        item["prompt"] = prompt
    return item


def _generated(model, inputs: dict, seq: torch.Tensor) -> list[int]:
    start = 1 if model.config.is_encoder_decoder else inputs["input_ids"].shape[1]
    return seq[start:].tolist()


def _hypotheses(model, inputs: dict, common: dict, beams: int) -> list[dict]:
    with torch.no_grad():
        out = model.generate(**inputs, num_beams=beams, num_return_sequences=2 if beams > 1 else 1,
                             output_scores=True, return_dict_in_generate=True, **common)
        if beams > 1:
            trans = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices,
                                                    normalize_logits=False)
        else:
            trans = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    hyps = []
    for r in range(out.sequences.shape[0]):
        toks = _generated(model, inputs, out.sequences[r])
        pad = model.generation_config.pad_token_id
        eos = common["eos_token_id"]
        eos = eos if isinstance(eos, list) else [eos]
        n = len(toks)
        for i, t in enumerate(toks):  # up to and including the first EOS
            if t in eos:
                n = i + 1
                break
        toks = toks[:n]
        alt_ids, alt_lps = [], []
        for s in range(n):
            if beams > 1:
                row = out.scores[s][int(out.beam_indices[r, s])]
            else:
                row = torch.log_softmax(out.scores[s][r], dim=-1)
            v, i = torch.topk(row, K_ALTERNATIVES)
            alt_ids.append(i.tolist())
            alt_lps.append(_f(v.tolist()))
        h = {"tokens": toks, "logprobs": _f(trans[r, :n].tolist()), "alternative_ids": alt_ids,
             "alternative_logprobs": alt_lps}
        if beams > 1:
            h["sequence_score"] = float(out.sequences_scores[r])
        del pad
        hyps.append(h)
    return hyps


def golden(name: str, model) -> dict:
    cfg = model.config
    g = torch.Generator().manual_seed(SEED + sum(map(ord, name)))
    V = cfg.vocab_size
    banned = mg._special(cfg)
    gc = model.generation_config
    eos = gc.eos_token_id
    eos_list = eos if isinstance(eos, list) else [eos]
    common = dict(do_sample=False, max_new_tokens=mg.MAX_NEW_TOKENS, pad_token_id=gc.pad_token_id, eos_token_id=eos,
                  bos_token_id=gc.bos_token_id, forced_bos_token_id=gc.forced_bos_token_id,
                  forced_eos_token_id=gc.forced_eos_token_id, no_repeat_ngram_size=0, repetition_penalty=1.0,
                  length_penalty=1.0, early_stopping=False)
    out: dict = {"name": name, "vocab_size": V, "k_alternatives": K_ALTERNATIVES,
                 "versions": {"torch": torch.__version__, "transformers": T.__version__},
                 "score": [], "generate": []}
    if cfg.is_encoder_decoder:
        common["decoder_start_token_id"] = gc.decoder_start_token_id
        for n_src, n_tgt in ((5, 4), (3, 6)):
            src = mg._draw(g, n_src - 1, V, banned) + [eos_list[0]]
            tgt = mg._draw(g, n_tgt - 1, V, banned) + [eos_list[0]]
            out["score"].append(_score(model, src, None, tgt))
        for n_src in (5, 4):
            src = mg._draw(g, n_src - 1, V, banned) + [eos_list[0]]
            inputs = {"input_ids": torch.tensor([src])}
            out["generate"].append({"source": src, "greedy": _hypotheses(model, inputs, common, 1),
                                    "beam": _hypotheses(model, inputs, common, 3)})
    else:
        for n_prompt, n_tgt in ((1, 6), (4, 3)):
            prompt = [gc.bos_token_id] + mg._draw(g, n_prompt - 1, V, banned)
            tgt = mg._draw(g, n_tgt, V, banned)
            out["score"].append(_score(model, None, prompt, tgt))
        for n_prompt in (4, 3):
            prompt = [gc.bos_token_id] + mg._draw(g, n_prompt - 1, V, banned)
            inputs = {"input_ids": torch.tensor([prompt]), "attention_mask": torch.ones(1, n_prompt, dtype=torch.long)}
            out["generate"].append({"prompt": prompt, "greedy": _hypotheses(model, inputs, common, 1),
                                    "beam": _hypotheses(model, inputs, common, 3)})
    out["settings"] = {k: v for k, v in common.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="e.g. tests/parity (writes goldens/scores/ inside)")
    args = ap.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    T.logging.set_verbosity_error()
    dest = os.path.join(args.out_dir, "goldens", "scores")
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for name in NAMES:
            model, hf_dir, _ = mg.build(name, work)
            rebuilt = os.path.join(work, f"{name}.parley")
            convert(hf_dir, rebuilt, dtype="float32", force=True, progress=False)
            committed = os.path.join(args.out_dir, "models", f"{name}.parley")
            if not filecmp.cmp(rebuilt, committed, shallow=False):
                raise SystemExit(f"{name}: the rebuilt model differs from {committed}; regenerate it with "
                                 "make_goldens.py first")
            path = os.path.join(dest, f"{name}.json")
            with open(path, "w") as f:
                json.dump(golden(name, model), f, indent=1)
                f.write("\n")
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
