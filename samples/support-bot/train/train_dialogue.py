#!/usr/bin/env python3
"""Train a tiny Llama-3-style chat model for the Nordwind Shop support bot.

Produces a Hugging Face folder (config.json, generation_config.json,
model.safetensors, tokenizer.json, tokenizer_config.json with the Llama-3 chat
template, eval.json) that `parley-convert` treats like a Llama-3 checkpoint:

  * tokenizer: byte-level BPE trained here with the Llama-3 pre-tokenizer
    regex; the five Llama-3 special tokens follow the learned vocabulary (as in
    Llama-3, where they start at id 128000) and a post-processor prepends
    <|begin_of_text|> to plain encodes. Rendered chat text already starts with
    it, and apply_chat_template encodes without special tokens, so a chat
    prompt carries exactly one BOS (checked below).
  * model: LlamaForCausalLM with grouped-query attention and tied embeddings.
  * training: each conversation is rendered with the chat template with
    policy.txt as the system message; the loss covers assistant replies and
    their <|eot_id|> only.

Run make_corpus.py first. Example:
  .venv/bin/python samples/support-bot/train/train_dialogue.py
"""

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BOS, EOS_TEXT, HDR_START, HDR_END, EOT = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                          "<|end_header_id|>", "<|eot_id|>")
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(REPO / "build/demo-train/corpus"))
    ap.add_argument("--policy", default=str(HERE / "policy.txt"))
    ap.add_argument("--out", default=str(REPO / "build/demo-train/support-llama"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1, help="torch/tokenizers CPU threads (the build machine is shared)")
    ap.add_argument("--vocab", type=int, default=3000, help="BPE vocabulary size, without the special tokens")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=768)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16, help="conversations per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--eval-dialogues", type=int, default=60, help="held-out conversations to score")
    return ap.parse_args()


ARGS = parse_args()
# The Rust tokenizers library sizes its thread pool on first use.
os.environ["RAYON_NUM_THREADS"] = str(ARGS.threads)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def train_tokenizer(texts, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    # Added after training so that they get the ids after the BPE vocabulary.
    tok.add_special_tokens([BOS, EOS_TEXT, HDR_START, HDR_END, EOT])
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS}:1 $B:1",
                                      special_tokens=[(BOS, bos_id)]),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOT, chat_template=CHAT_TEMPLATE,
                                   model_max_length=1024, clean_up_tokenization_spaces=False)


def encode_conversation(tok, messages):
    """Token ids and loss mask of one rendered conversation.

    Every template segment starts and ends with a special token, so encoding
    segment by segment gives exactly the ids of the whole rendered text; that
    lets us mark which ids belong to assistant replies.
    """
    ids = [tok.bos_token_id]
    mask = [False]
    for m in messages:
        header = tok.encode(f"{HDR_START}{m['role']}{HDR_END}\n\n", add_special_tokens=False)
        body = tok.encode(m["content"].strip() + EOT, add_special_tokens=False)
        ids += header + body
        mask += [False] * len(header) + [m["role"] == "assistant"] * len(body)
    return ids, mask


def check_tokenizer(tok, messages):
    ids, _ = encode_conversation(tok, messages)
    ref = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert ids == ref, "segment-wise encoding differs from apply_chat_template"
    assert ref[0] == tok.bos_token_id and ref.count(tok.bos_token_id) == 1, "chat prompt must hold exactly one BOS"
    plain = tok("Where is my order 1234567?")["input_ids"]
    assert plain[0] == tok.bos_token_id and plain[1] != tok.bos_token_id
    assert tok.decode(ref, skip_special_tokens=False) == tok.apply_chat_template(messages, tokenize=False)


def shared_prefix_logits(model, prefix, rest):
    """Logits for `rest` (B x L) continuing the same `prefix` (1 x P).

    The system prompt (the policy) is identical in every conversation and makes
    up most of its tokens, so it is run once per step and its key/value cache
    is broadcast over the batch. Gradients flow through the cache, so this is
    the same computation as running each full sequence, at a fraction of the
    cost. `rest` is right-padded; padding only ever follows real tokens, so
    the causal mask alone keeps it out of the real positions.
    """
    cache = model(input_ids=prefix, use_cache=True).past_key_values
    cache.batch_repeat_interleave(rest.size(0))
    return model(input_ids=rest, past_key_values=cache, use_cache=True).logits


def reply(model, tok, messages, max_new_tokens=96):
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_length=enc["input_ids"].size(1) + max_new_tokens, do_sample=False,
                             pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, enc["input_ids"].size(1):], skip_special_tokens=True).strip()


def evaluate(model, tok, system, convs):
    """Share of held-out assistant turns that contain every expected fact/slot.

    Earlier turns come from the reference conversation, so each reply is scored
    on its own.
    """
    model.eval()
    passed = total = 0
    for conv in convs:
        msgs = conv["messages"]
        for turn, checks in zip(range(1, len(msgs), 2), conv["checks"]):
            text = reply(model, tok, [system] + msgs[:turn])
            passed += all(c in text for c in checks)
            total += 1
    return passed, total


def main():
    args = ARGS
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    corpus = Path(args.corpus)
    train = read_jsonl(corpus / "dialogue_train.jsonl")
    test = read_jsonl(corpus / "dialogue_test.jsonl")
    system = {"role": "system", "content": Path(args.policy).read_text(encoding="utf-8").strip()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # --- tokenizer -----------------------------------------------------------
    t0 = time.time()
    # Role names and the blank line after them are learned as they appear in
    # rendered chats (between <|start_header_id|> ... <|end_header_id|> and the content).
    texts = [f"{m['role']}\n\n{m['content']}" for c in train for m in [system] + c["messages"]]
    tok = train_tokenizer(texts, args.vocab)
    check_tokenizer(tok, [system] + train[0]["messages"])
    eot_id = tok.convert_tokens_to_ids(EOT)
    prefix, _ = encode_conversation(tok, [system])
    data = []
    for conv in train:
        ids, mask = encode_conversation(tok, [system] + conv["messages"])
        assert ids[:len(prefix)] == prefix
        data.append((ids[len(prefix):], mask[len(prefix):]))
    mean_len = sum(len(d[0]) for d in data) / len(data)
    print(f"tokenizer: {len(tok)} ids; system prompt {len(prefix)} tokens, conversations {mean_len:.1f} tokens "
          f"on average after it; {time.time() - t0:.1f}s")

    # --- model -----------------------------------------------------------
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.ffn,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads, max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=eot_id,
    )
    model = LlamaForCausalLM(config)
    # Greedy by default: the demo should give the same answer every run.
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eot_id,
                                               do_sample=False, max_length=1024)
    n_params = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    print(f"model: {n_params / 1e6:.2f}M parameters ({n_params * 2 / 2**20:.1f} MiB in float16)")

    # --- training ----------------------------------------------------------
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / args.warmup, 0.05 + 0.95 * 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, s - args.warmup) / max(1, args.steps - args.warmup))))))
    prefix_t = torch.tensor([prefix])
    order, t0 = [], time.time()
    model.train()
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            order = list(range(len(data)))
            rng.shuffle(order)
        batch = [data[order.pop()] for _ in range(args.batch)]
        width = max(len(ids) for ids, _ in batch)
        rest = torch.tensor([ids + [eot_id] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([[t if m else -100 for t, m in zip(ids, mask)] + [-100] * (width - len(ids))
                               for ids, mask in batch])
        logits = shared_prefix_logits(model, prefix_t, rest)
        # Position j predicts token j+1; the first token after the prefix is a
        # user header and never a target, so the prefix's own logits are unused.
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                               ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0 or step == args.steps:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {sched.get_last_lr()[0]:.2e}  "
                  f"{time.time() - t0:.0f}s", flush=True)
    train_seconds = time.time() - t0

    # --- evaluation and samples --------------------------------------------------
    t0 = time.time()
    passed, total = evaluate(model, tok, system, test[:args.eval_dialogues])
    eval_seconds = time.time() - t0
    print(f"held-out replies with all expected facts and slots: {passed}/{total} ({100 * passed / total:.1f}%), "
          f"{eval_seconds:.0f}s")

    samples = []
    seen_intents = set()
    for conv in test:  # three held-out questions of different intents, first turn only
        if conv["intent"] in seen_intents:
            continue
        seen_intents.add(conv["intent"])
        question = conv["messages"][0]
        samples.append({"user": question["content"], "assistant": reply(model, tok, [system, question])})
        if len(samples) == 3:
            break
    two_turn = next(c for c in test if len(c["messages"]) == 4 and c["checks"][1][0].isdigit())
    hist = [system] + two_turn["messages"][:2]
    samples.append({"history": two_turn["messages"][:2], "user": two_turn["messages"][2]["content"],
                    "assistant": reply(model, tok, hist + [two_turn["messages"][2]])})
    for s in samples:
        if "history" in s:
            print(f"  (after: {s['history'][0]['content']!r})")
        print(f"  customer: {s['user']}\n  agent:    {s['assistant']}\n")

    model.save_pretrained(out)
    tok.save_pretrained(out)
    result = {
        "eval_passed": passed, "eval_turns": total, "eval_pass_rate": round(passed / total, 4),
        "steps": args.steps, "batch": args.batch, "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1), "threads": args.threads, "parameters": n_params,
        "float16_bytes": n_params * 2, "final_train_loss": round(loss.item(), 4), "seed": args.seed,
        "samples": samples,
    }
    (out / "eval.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
