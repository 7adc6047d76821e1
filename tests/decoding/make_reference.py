#!/usr/bin/env python3
"""Reference outputs for tests/decoding from Hugging Face transformers' own
`generate()` and logits processors.

The model is the same scripted model the C++ test uses (fake_model.hpp): the
logits of a position are a hash of (previous token, current token, candidate)
with a per-case salt, so they depend on the row's history and nothing else.
It is wrapped as a PreTrainedModel without a KV cache (use_cache=False, the
whole sequence is re-run every step), which exercises transformers' real
`_sample` / `_beam_search` loops and processors.

Usage (in the project venv with torch + transformers):
    python tests/decoding/make_reference.py tests/decoding/reference.json
"""

import json
import math
import sys

import torch
import transformers
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.generation import logits_process as lp
from transformers.modeling_outputs import CausalLMOutput

MASK = (1 << 64) - 1


def fmix64(x):
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK
    x ^= x >> 33
    return x


def fake_logit(salt, prev2, prev1, v):
    """Must match fake_logit() in fake_model.hpp. prev2/prev1 are -1 when absent."""
    key = ((prev2 + 1) * 1000003 + (prev1 + 1) * 7919 + v * 131 + salt * 0x9E3779B97F4A7C15) & MASK
    return (fmix64(key) >> 40) / float(1 << 24) * 8.0 - 4.0


def fake_table(salt, vocab):
    t = torch.empty(vocab + 1, vocab + 1, vocab, dtype=torch.float32)
    for a in range(vocab + 1):
        for b in range(vocab + 1):
            for v in range(vocab):
                t[a, b, v] = fake_logit(salt, a - 1, b - 1, v)
    return t


class FakeConfig(PretrainedConfig):
    model_type = "parley_fake"

    def __init__(self, vocab_size=16, salt=0, **kwargs):
        self.vocab_size = vocab_size
        self.salt = salt
        super().__init__(**kwargs)


class FakeLM(PreTrainedModel, GenerationMixin):
    config_class = FakeConfig
    main_input_name = "input_ids"

    def __init__(self, config):
        super().__init__(config)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.register_buffer("table", fake_table(config.salt, config.vocab_size), persistent=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        prev1 = input_ids + 1
        prev2 = torch.cat([torch.zeros_like(input_ids[:, :1]), input_ids[:, :-1] + 1], dim=1)
        return CausalLMOutput(logits=self.table[prev2, prev1])


def trim(tokens, eos):
    out = []
    for t in tokens:
        out.append(int(t))
        if int(t) in eos:
            break
    return out


def run_case(case):
    cfg = FakeConfig(vocab_size=case["vocab"], salt=case["salt"])
    model = FakeLM(cfg).eval()
    o = dict(case["options"])
    eos = o.get("eos_token_ids", [])
    kwargs = dict(
        max_new_tokens=o.get("max_new_tokens", 20),
        min_new_tokens=o.get("min_new_tokens", 0),
        num_beams=o.get("num_beams", 1),
        num_return_sequences=o.get("num_return_sequences", 1),
        length_penalty=o.get("length_penalty", 1.0),
        early_stopping={"false": False, "true": True, "never": "never"}[o.get("early_stopping", "false")],
        no_repeat_ngram_size=o.get("no_repeat_ngram_size", 0),
        repetition_penalty=o.get("repetition_penalty", 1.0),
        eos_token_id=eos if eos else None,
        pad_token_id=o.get("pad_token_id", 0),
        forced_bos_token_id=o.get("forced_bos_token_id"),
        forced_eos_token_id=o.get("forced_eos_token_ids"),
        suppress_tokens=o.get("suppress_tokens"),
        begin_suppress_tokens=o.get("begin_suppress_tokens"),
        do_sample=False,
        use_cache=False,
        return_dict_in_generate=True,
        output_scores=True,
    )
    prompts = torch.tensor(case["prompts"], dtype=torch.long)
    with torch.no_grad():
        res = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), **kwargs)
    plen = prompts.shape[1]
    nrs = kwargs["num_return_sequences"]
    expected = []
    for b in range(prompts.shape[0]):
        hyps = []
        for s in range(nrs):
            r = b * nrs + s
            tokens = trim(res.sequences[r, plen:].tolist(), eos)
            if kwargs["num_beams"] > 1:
                score = float(res.sequences_scores[r])
            else:
                score = 0.0
                for t, tok in enumerate(tokens):
                    score += float(torch.log_softmax(res.scores[t][r], dim=-1)[tok])
            hyps.append({"tokens": tokens, "score": score})
        expected.append(hyps)
    return expected


CASES = [
    # Greedy.
    dict(name="greedy_plain", vocab=20, salt=1, prompts=[[3, 7, 1], [5, 5, 2], [9, 0, 4]],
         options=dict(max_new_tokens=12, eos_token_ids=[2])),
    dict(name="greedy_several_eos_min_new", vocab=20, salt=2, prompts=[[3, 7, 1], [5, 5, 2], [11, 4, 8], [1, 2, 3]],
         options=dict(max_new_tokens=15, min_new_tokens=4, eos_token_ids=[2, 5, 13])),
    dict(name="greedy_repetition_ngram", vocab=20, salt=3, prompts=[[3, 7, 1, 3], [6, 6, 6, 6]],
         options=dict(max_new_tokens=16, eos_token_ids=[1], repetition_penalty=1.3, no_repeat_ngram_size=2)),
    dict(name="greedy_forced_bos_eos_suppress", vocab=20, salt=4, prompts=[[0], [1]],
         options=dict(max_new_tokens=8, eos_token_ids=[2], forced_bos_token_id=17, forced_eos_token_ids=[2],
                      suppress_tokens=[3, 4], begin_suppress_tokens=[5, 6, 7])),
    dict(name="greedy_no_eos", vocab=16, salt=5, prompts=[[1, 2], [3, 4]], options=dict(max_new_tokens=9)),
    # Beam search.
    dict(name="beam4_default", vocab=24, salt=6, prompts=[[3, 7, 1], [5, 5, 2], [9, 0, 4]],
         options=dict(max_new_tokens=10, num_beams=4, eos_token_ids=[2])),
    dict(name="beam4_lp2_early_true_nrs3", vocab=24, salt=7, prompts=[[3, 7, 1], [5, 5, 2]],
         options=dict(max_new_tokens=12, num_beams=4, num_return_sequences=3, length_penalty=2.0,
                      early_stopping="true", eos_token_ids=[2])),
    dict(name="beam3_lp05_early_false_nrs3", vocab=24, salt=8, prompts=[[3, 7, 1], [5, 5, 2], [8, 8, 8]],
         options=dict(max_new_tokens=12, num_beams=3, num_return_sequences=3, length_penalty=0.5,
                      early_stopping="false", eos_token_ids=[2, 9])),
    dict(name="beam4_never_lp15", vocab=24, salt=9, prompts=[[3, 7, 1], [5, 5, 2]],
         options=dict(max_new_tokens=10, num_beams=4, num_return_sequences=2, length_penalty=1.5,
                      early_stopping="never", eos_token_ids=[2])),
    dict(name="beam4_neg_lp_never", vocab=24, salt=10, prompts=[[4, 1], [2, 6]],
         options=dict(max_new_tokens=10, num_beams=4, num_return_sequences=4, length_penalty=-0.7,
                      early_stopping="never", eos_token_ids=[3])),
    dict(name="beam5_ngram_repetition_min_new", vocab=24, salt=11, prompts=[[3, 7, 1, 3], [6, 6, 5, 6]],
         options=dict(max_new_tokens=14, num_beams=5, num_return_sequences=2, no_repeat_ngram_size=3,
                      repetition_penalty=1.5, min_new_tokens=5, eos_token_ids=[2, 4])),
    dict(name="beam4_forced_bos_eos", vocab=24, salt=12, prompts=[[0], [1], [5]],
         options=dict(max_new_tokens=7, num_beams=4, num_return_sequences=2, eos_token_ids=[2],
                      forced_bos_token_id=19, forced_eos_token_ids=[2], suppress_tokens=[5],
                      begin_suppress_tokens=[6, 7])),
    dict(name="beam2_no_eos", vocab=16, salt=13, prompts=[[1, 2], [3, 4]],
         options=dict(max_new_tokens=6, num_beams=2, num_return_sequences=2)),
    dict(name="beam6_eos_likely", vocab=12, salt=14, prompts=[[1, 2, 3], [4, 5, 6], [7, 8, 9]],
         options=dict(max_new_tokens=20, num_beams=6, num_return_sequences=6, eos_token_ids=[0, 1],
                      length_penalty=1.2)),
    # Pairs chosen (by searching salts) so that early_stopping changes the result.
    dict(name="beam4_lp2_early_true_vs", vocab=16, salt=100, prompts=[[3, 7, 1], [5, 5, 2]],
         options=dict(max_new_tokens=12, num_beams=4, num_return_sequences=4, length_penalty=2.0,
                      early_stopping="true", eos_token_ids=[2, 3])),
    dict(name="beam4_lp2_early_false_vs", vocab=16, salt=100, prompts=[[3, 7, 1], [5, 5, 2]],
         options=dict(max_new_tokens=12, num_beams=4, num_return_sequences=4, length_penalty=2.0,
                      early_stopping="false", eos_token_ids=[2, 3])),
    dict(name="beam3_lp05_never_vs", vocab=8, salt=211, prompts=[[3, 7, 1], [5, 5, 2]],
         options=dict(max_new_tokens=16, num_beams=3, num_return_sequences=3, length_penalty=0.5,
                      early_stopping="never", eos_token_ids=[2, 3])),
    dict(name="beam3_lp05_false_vs", vocab=8, salt=211, prompts=[[3, 7, 1], [5, 5, 2]],
         options=dict(max_new_tokens=16, num_beams=3, num_return_sequences=3, length_penalty=0.5,
                      early_stopping="false", eos_token_ids=[2, 3])),
    # forced_bos_token_id is not applied to prompts longer than one token.
    dict(name="greedy_forced_bos_long_prompt", vocab=20, salt=4, prompts=[[1, 2, 3], [4, 5, 6]],
         options=dict(max_new_tokens=6, eos_token_ids=[2], forced_bos_token_id=17, begin_suppress_tokens=[5, 6, 7])),
]


def warper_cases():
    """Processed scores from transformers' warpers for fixed random rows."""
    g = torch.Generator().manual_seed(1234)
    out = []
    for i in range(12):
        vocab = 30
        scores = (torch.randn(1, vocab, generator=g) * 2.0).to(torch.float32)
        if i % 3 == 0:
            scores[0, 5] = scores[0, 6]  # a tie
        params = [
            ("temperature", dict(t=0.7)),
            ("top_k", dict(k=1 + i, keep=1 + (i % 3))),
            ("top_p", dict(p=0.15 + 0.07 * i, keep=1 + (i % 2))),
            ("min_p", dict(p=0.02 + 0.05 * i, keep=1 + (i % 3))),
        ]
        for kind, p in params:
            if kind == "temperature":
                w = lp.TemperatureLogitsWarper(p["t"])
            elif kind == "top_k":
                w = lp.TopKLogitsWarper(p["k"], min_tokens_to_keep=p["keep"])
            elif kind == "top_p":
                w = lp.TopPLogitsWarper(p["p"], min_tokens_to_keep=p["keep"])
            else:
                w = lp.MinPLogitsWarper(p["p"], min_tokens_to_keep=p["keep"])
            res = w(torch.zeros(1, 1, dtype=torch.long), scores.clone())[0]
            out.append(dict(kind=kind, params=p, scores=scores[0].tolist(),
                            expected=[None if math.isinf(x) else x for x in res.tolist()]))
    # Repetition penalty and no-repeat-ngram on a history.
    for i in range(4):
        vocab = 16
        scores = (torch.randn(1, vocab, generator=g) * 2.0).to(torch.float32)
        hist = torch.randint(0, vocab, (1, 9 + i), generator=g)
        hist[0, -2:] = hist[0, 2:4]  # make an n-gram repeat
        for kind, w, p in [("repetition", lp.RepetitionPenaltyLogitsProcessor(1.2 + 0.3 * i), dict(penalty=1.2 + 0.3 * i)),
                           ("no_repeat_ngram", lp.NoRepeatNGramLogitsProcessor(2 + i % 2), dict(n=2 + i % 2))]:
            res = w(hist, scores.clone())[0]
            out.append(dict(kind=kind, params=p, history=hist[0].tolist(), scores=scores[0].tolist(),
                            expected=[None if math.isinf(x) else x for x in res.tolist()]))
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "reference.json"
    cases = []
    for case in CASES:
        c = dict(case)
        c["expected"] = run_case(case)
        cases.append(c)
    doc = dict(transformers_version=transformers.__version__, torch_version=torch.__version__,
               cases=cases, warpers=warper_cases())
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} generate cases and {len(doc['warpers'])} processor cases to {path}")


if __name__ == "__main__":
    main()
