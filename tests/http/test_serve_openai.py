"""`parley serve` on 127.0.0.1 with the demo models (samples/support-bot/models:
support-llama.parley, a small Llama chat model with a Llama-3 Jinja template,
and opus-mt-en-de.parley, a Marian translation model), driven by the real
`openai` Python client where OpenAI has the route: chat (plain, streamed,
stop strings, max_tokens, seeds, JSON-schema response_format, tools, n
choices, logprobs / top_logprobs checked against the Python binding's
blocking call, logit_bias), text completions, models, errors (unknown model 404, bad body 400, too large 413,
unsupported options 400, overload 503), translations, /metrics in
Prometheus' text format, batching of concurrent requests, and graceful
shutdown on SIGTERM. Run through ctest (PARLEY_CLI, PARLEY_DEMO_MODELS,
PARLEY_PLUGIN_BUILD_DIR)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

CLI = os.environ.get("PARLEY_CLI", "")
MODELS = Path(os.environ.get("PARLEY_DEMO_MODELS", ""))
pytestmark = pytest.mark.skipif(not CLI, reason="PARLEY_CLI is not set (run through ctest)")

POLICY = (MODELS / "policy.txt").read_text(encoding="utf-8") if CLI else ""
QUESTION = "How long does standard shipping take?"


class Server:
    def __init__(self, *extra: str):
        env = dict(os.environ)
        env["PARLEY_PLUGIN_PATH"] = os.environ.get("PARLEY_PLUGIN_BUILD_DIR", "")
        self.proc = subprocess.Popen(
            [CLI, "serve", "--model", f"bot={MODELS / 'support-llama.parley'}",
             "--model", f"en-de={MODELS / 'opus-mt-en-de.parley'}", "--port", "0", "--threads", "2", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"parley serve: listening on http://127\.0\.0\.1:(\d+)$", line.strip())
        assert m, (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=120)

    def raw(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    def stop(self, sig=signal.SIGTERM, timeout=60) -> tuple[int, str]:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    rc, err = s.stop()
    assert rc == 0, err
    assert "stopped" in err, err


def chat(server, **kw):
    kw.setdefault("model", "bot")
    kw.setdefault("messages", [{"role": "system", "content": POLICY}, {"role": "user", "content": QUESTION}])
    return server.client.chat.completions.create(**kw)


def test_models(server):
    ids = {m.id for m in server.client.models.list()}
    assert ids == {"bot", "en-de"}
    assert server.client.models.retrieve("en-de").id == "en-de"


def test_chat_greedy_is_deterministic_and_counts_usage(server):
    a = chat(server, temperature=0, max_tokens=24)
    b = chat(server, temperature=0, max_tokens=24)
    assert a.object == "chat.completion" and a.model == "bot"
    msg = a.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str) and msg.content
    assert msg.content == b.choices[0].message.content
    assert a.choices[0].finish_reason in ("stop", "length")
    assert 0 < a.usage.completion_tokens <= 24
    assert a.usage.prompt_tokens > 100  # the policy is the system prompt
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    # the second request found the shared system prompt in the prefix cache
    assert b.usage.prompt_tokens_details.cached_tokens > 0


def test_max_tokens_ends_with_length(server):
    r = chat(server, temperature=0, max_tokens=2)
    assert r.usage.completion_tokens == 2 and r.choices[0].finish_reason == "length"


def test_stream_equals_the_plain_reply(server):
    plain = chat(server, temperature=0, max_tokens=32)
    pieces, finish, usage = [], None, None
    for chunk in chat(server, temperature=0, max_tokens=32, stream=True, stream_options={"include_usage": True}):
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert len(pieces) > 1, pieces  # streamed, not sent at once
    assert "".join(pieces) == plain.choices[0].message.content
    assert finish == plain.choices[0].finish_reason
    assert usage.completion_tokens == plain.usage.completion_tokens
    # An HTTP/1.0 client knows no chunked encoding: the events come as they are, the body ending with the connection.
    import socket

    body = json.dumps({"model": "bot", "temperature": 0, "max_tokens": 32, "stream": True, "messages": [
        {"role": "system", "content": POLICY}, {"role": "user", "content": QUESTION}]}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, events = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0] and b"chunked" not in head, head
    lines = [line for line in events.split(b"\n") if line]
    assert all(line.startswith(b"data: ") for line in lines) and lines[-1] == b"data: [DONE]", events[:300]
    text = "".join(c["delta"].get("content") or "" for line in lines[:-1] for c in json.loads(line[6:])["choices"])
    assert text == plain.choices[0].message.content


def test_stop_strings_cut_the_reply(server):
    full = chat(server, temperature=0, max_tokens=48).choices[0].message.content
    assert len(full) > 12, full
    stop = full[6:10]
    cut = full[: full.index(stop)]
    r = chat(server, temperature=0, max_tokens=48, stop=[stop, "@@never@@"])
    assert r.choices[0].message.content == cut and r.choices[0].finish_reason == "stop"
    streamed = "".join(
        c.choices[0].delta.content or "" for c in chat(server, temperature=0, max_tokens=48, stop=stop, stream=True)
        if c.choices)
    assert streamed == cut


def test_seeded_sampling_is_reproducible(server):
    a = chat(server, temperature=1.0, top_p=0.9, seed=1234, max_tokens=24).choices[0].message.content
    b = chat(server, temperature=1.0, top_p=0.9, seed=1234, max_tokens=24).choices[0].message.content
    assert a == b


SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "maxLength": 10},
        "status": {"enum": ["shipped", "pending", "returned"]},
        "express": {"type": "boolean"},
    },
    "required": ["order_id", "status", "express"],
    "additionalProperties": False,
}


def test_json_schema_response_format(server):
    r = chat(server, temperature=0, max_tokens=200,
             response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": SCHEMA}})
    assert r.choices[0].finish_reason == "stop"
    doc = json.loads(r.choices[0].message.content)
    assert list(doc) == ["order_id", "status", "express"]  # declared order
    assert isinstance(doc["order_id"], str) and len(doc["order_id"]) <= 10
    assert doc["status"] in SCHEMA["properties"]["status"]["enum"] and isinstance(doc["express"], bool)
    r = chat(server, temperature=0, max_tokens=200, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)


TOOLS = [{"type": "function", "function": {
    "name": "order_status", "description": "Look up an order",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
# A reply that is a {"name", "arguments"} object is a tool call (parley_chat_set_tools): the
# schema makes the demo model write one, so the mapping to OpenAI's tool_calls is tested exactly.
CALL_SCHEMA = {"type": "object", "properties": {
    "name": {"const": "order_status"},
    "arguments": {"type": "object", "properties": {"order_id": {"enum": ["9019917"]}}, "required": ["order_id"]}},
    "required": ["name", "arguments"]}


def test_tools_give_tool_calls_and_take_results(server):
    rf = {"type": "json_schema", "json_schema": {"name": "call", "schema": CALL_SCHEMA}}
    msgs = [{"role": "user", "content": "Where is order 9019917?"}]
    r = chat(server, messages=msgs, tools=TOOLS, temperature=0, max_tokens=100, response_format=rf)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "order_status" and call.id
    assert json.loads(call.function.arguments) == {"order_id": "9019917"}
    pieces = list(chat(server, messages=msgs, tools=TOOLS, temperature=0, max_tokens=100, response_format=rf,
                       stream=True))
    calls = [tc for p in pieces for c in p.choices for tc in (c.delta.tool_calls or [])]
    assert [json.loads(tc.function.arguments) for tc in calls] == [{"order_id": "9019917"}]
    assert pieces[-1].choices[0].finish_reason == "tool_calls"
    # the call and its result go back in the conversation (arguments as OpenAI's JSON string)
    msgs += [choice.message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped"}'}]
    r2 = chat(server, messages=msgs, tools=TOOLS, temperature=0, max_tokens=16)
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as e:
        chat(server, messages=msgs, tools=TOOLS, tool_choice="required", max_tokens=4)
    assert e.value.body["param"] == "tool_choice"


def test_text_completions(server):
    r = server.client.completions.create(model="bot", prompt="Refunds go back to", max_tokens=12, temperature=0)
    text = r.choices[0].text
    assert r.object == "text_completion" and isinstance(text, str) and text
    assert 0 < r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0
    streamed = "".join(c.choices[0].text for c in server.client.completions.create(
        model="bot", prompt="Refunds go back to", max_tokens=12, temperature=0, stream=True) if c.choices)
    assert streamed == text
    stop = text[3:6]
    if stop.strip():
        r = server.client.completions.create(model="bot", prompt="Refunds go back to", max_tokens=12,
                                             temperature=0, stop=stop)
        assert r.choices[0].text == text[: text.index(stop)] and r.choices[0].finish_reason == "stop"


# Greedy log-probabilities through HTTP (JSON doubles of the runtime's
# float32 values) against the Python binding's blocking call on the same
# prompt: the same tokens; values equal up to the last bits of a logit that a
# batched engine step may change (the GEMMs of another batch size accumulate
# in another order), far below 1e-4.
LP_TOL = 1e-4


def binding_model():
    # The sanitizer pass builds an ASan libparley, which an uninstrumented
    # interpreter cannot load (.ci/test); the server side runs there all the same.
    if os.environ.get("PARLEY_TEST_SANITIZED") == "1":
        pytest.skip("the Python binding cannot load a sanitizer-instrumented libparley in this interpreter")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings" / "python"))
    import parley  # noqa: E402 (the binding from the source tree, PARLEY_LIBRARY's libparley)
    rt = parley.Runtime(threads=2)
    return rt, parley.Model(rt, MODELS / "support-llama.parley")


def test_completion_logprobs_equal_the_bindings(server):
    prompt, k = "Refunds go back to", 5
    r = server.client.completions.create(model="bot", prompt=prompt, max_tokens=12, temperature=0, logprobs=k)
    lp = r.choices[0].logprobs
    assert lp is not None and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == len(prompt.encode()) and lp.text_offset == sorted(lp.text_offset)
    rt, model = binding_model()
    try:
        ids = model.tokenize(prompt)
        h = model.generate([ids], max_new_tokens=12, do_sample=False, return_logprobs=True, alternatives=k)[0][0]
        ref_tokens = [model.detokenize([t], skip_special_tokens=False) for t in h.tokens]
        ref_top = []  # per step: {token text: logprob}, the first of equal texts
        for row in h.alternatives:
            named: dict[str, float] = {}
            for tok_id, v in row:
                named.setdefault(model.detokenize([tok_id], skip_special_tokens=False), v)
            ref_top.append(named)
    finally:
        model.close()
        rt.close()
    n = len(lp.tokens)  # the text's tokens: an EOS at the end is not part of the text
    assert n >= 1 and lp.tokens == ref_tokens[:n] and n >= len(h.tokens) - 1
    for got, want in zip(lp.token_logprobs, h.logprobs):
        assert abs(got - want) <= LP_TOL, (lp.token_logprobs, h.logprobs)
    for chosen, chosen_lp, top, want in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, ref_top):
        assert 1 <= len(top) <= k  # two ids with the same text share an entry
        values = list(top.values())
        assert values == sorted(values, reverse=True)
        assert all(chosen_lp >= v for v in values)  # greedy: the chosen token is the best
        assert top[chosen] == chosen_lp
        assert top.keys() == want.keys() and all(abs(top[x] - want[x]) <= LP_TOL for x in want)
    # Streamed: the same values, in the choice's last chunk.
    chunks = list(server.client.completions.create(model="bot", prompt=prompt, max_tokens=12, temperature=0,
                                                   logprobs=k, stream=True))
    last = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason][0]
    assert last.logprobs.tokens == lp.tokens and last.logprobs.token_logprobs == lp.token_logprobs
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text


def test_chat_logprobs_are_consistent(server):
    r = chat(server, temperature=0, max_tokens=16, logprobs=True, top_logprobs=3)
    choice = r.choices[0]
    content = choice.logprobs.content
    assert content and "".join(c.token for c in content) == choice.message.content
    total = 0.0
    for c in content:
        assert c.logprob <= 0.0 and bytes(c.bytes) == c.token.encode()
        assert len(c.top_logprobs) == 3
        values = [a.logprob for a in c.top_logprobs]
        assert values == sorted(values, reverse=True)
        # greedy: the chosen token is the best alternative, with the same value
        assert c.top_logprobs[0].token == c.token and c.top_logprobs[0].logprob == c.logprob
        assert all(c.logprob >= v for v in values)
        total += c.logprob
    assert total < 0.0
    # Without top_logprobs: the same tokens and values, no alternatives.
    plain = chat(server, temperature=0, max_tokens=16, logprobs=True).choices[0].logprobs.content
    assert [(c.token, c.top_logprobs) for c in plain] == [(c.token, []) for c in content]
    assert all(abs(a.logprob - b.logprob) <= LP_TOL for a, b in zip(plain, content))
    # Without logprobs: none.
    assert chat(server, temperature=0, max_tokens=4).choices[0].logprobs is None
    # Streamed: each text piece carries the tokens it completes, the finishing
    # chunk the rest; together they are the non-streamed list, in order.
    chunks = list(chat(server, temperature=0, max_tokens=16, logprobs=True, top_logprobs=3, stream=True))
    pieces = [c.choices[0] for c in chunks if c.choices and c.choices[0].logprobs is not None]
    streamed = [e for p in pieces for e in p.logprobs.content]
    assert [(e.token, e.logprob, [a.token for a in e.top_logprobs]) for e in streamed] == \
        [(c.token, c.logprob, [a.token for a in c.top_logprobs]) for c in content]
    with_text = [p for p in pieces if p.delta.content and p.logprobs.content]
    assert len(content) < 2 or len(with_text) >= 2, [(p.delta.content, len(p.logprobs.content)) for p in pieces]
    # A piece's entries spell text the stream has sent by then (tokens are never ahead of the text).
    sent, spelled = "", ""
    for p in pieces:
        sent += p.delta.content or ""
        spelled += "".join(e.token for e in p.logprobs.content)
        assert sent.startswith(spelled) or p.finish_reason, (sent, spelled)
    # A stop string cuts the tokens with the text.
    stop = choice.message.content[len(choice.message.content) // 2:][:3]
    if stop.strip():
        cut = chat(server, temperature=0, max_tokens=16, logprobs=True, stop=stop).choices[0]
        toks = "".join(c.token for c in cut.logprobs.content)
        assert toks.startswith(cut.message.content) and len(toks) < len(choice.message.content)


def test_n_choices(server):
    before = metrics(server)
    r = chat(server, temperature=0, max_tokens=8, n=3)
    after = metrics(server)
    assert [c.index for c in r.choices] == [0, 1, 2]
    # The counters count as usage does: the prompt once, every choice's completion.
    for key, used in (("prompt", r.usage.prompt_tokens), ("completion", r.usage.completion_tokens)):
        name = f'parley_model_{key}_tokens_total{{model="bot"}}'
        assert after[name] - before[name] == used, (key, after[name] - before[name], used)
    assert len({c.message.content for c in r.choices}) == 1  # greedy: the same answer three times
    one = chat(server, temperature=0, max_tokens=8)
    assert r.choices[0].message.content == one.choices[0].message.content
    assert r.usage.prompt_tokens == one.usage.prompt_tokens
    assert r.usage.completion_tokens == 3 * one.usage.completion_tokens
    # Sampled choices differ (seed + i each), and a seed makes them reproducible.
    a = chat(server, temperature=1.5, max_tokens=12, n=4, seed=7)
    b = chat(server, temperature=1.5, max_tokens=12, n=4, seed=7)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len({c.message.content for c in a.choices}) > 1
    # Streamed: chunks of every index, each choice's text as its own.
    texts, finished = {}, set()
    for chunk in chat(server, temperature=0, max_tokens=8, n=3, stream=True):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finished.add(c.index)
    assert finished == {0, 1, 2} and all(t == one.choices[0].message.content for t in texts.values())
    # Text completions: n rows of one batch.
    t = server.client.completions.create(model="bot", prompt="Refunds go back to", max_tokens=6, temperature=0, n=2,
                                         logprobs=1)
    assert [c.index for c in t.choices] == [0, 1] and t.choices[0].text == t.choices[1].text
    a_lp, b_lp = t.choices[0].logprobs, t.choices[1].logprobs
    assert a_lp.tokens == b_lp.tokens  # values up to the batch's rounding (LP_TOL)
    assert all(abs(x - y) <= LP_TOL for x, y in zip(a_lp.token_logprobs, b_lp.token_logprobs))
    streamed = {}
    for chunk in server.client.completions.create(model="bot", prompt="Refunds go back to", max_tokens=6,
                                                  temperature=0, n=2, stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert streamed == {0: t.choices[0].text, 1: t.choices[1].text}


def test_logit_bias(server):
    prompt = "Refunds go back to"
    rt, model = binding_model()
    try:
        h = model.generate([model.tokenize(prompt)], max_new_tokens=4, do_sample=False, alternatives=2)[0][0]
        greedy_id, second_id = h.tokens[0], h.alternatives[0][1][0]
        name = {i: model.detokenize([i], skip_special_tokens=False) for i in (greedy_id, second_id)}
    finally:
        model.close()
        rt.close()
    kw = {"model": "bot", "prompt": prompt, "max_tokens": 4, "temperature": 0, "logprobs": 0}
    plain = server.client.completions.create(**kw).choices[0].logprobs
    assert plain.tokens[0] == name[greedy_id]
    # +100 makes the second-best first token the choice; -100 bans the greedy one.
    forced = server.client.completions.create(**kw, logit_bias={str(second_id): 100}).choices[0].logprobs
    assert forced.tokens[0] == name[second_id] and forced.token_logprobs[0] > -1e-3  # (now almost certain)
    banned = server.client.completions.create(**kw, logit_bias={str(greedy_id): -100}).choices[0].logprobs
    assert banned.tokens[0] != name[greedy_id]
    assert server.client.completions.create(**kw, logit_bias={}).choices[0].logprobs.tokens == plain.tokens
    # Chat takes it too (the bias applies at every step of the reply).
    r = chat(server, temperature=0, max_tokens=3, logprobs=True, logit_bias={str(second_id): 100})
    assert [c.token for c in r.choices[0].logprobs.content] == [name[second_id]] * 3


def test_bad_n_logprobs_and_logit_bias_name_the_field(server):
    cases = [
        ("/v1/chat/completions", {"n": 0}, "n"),
        ("/v1/chat/completions", {"n": 1000}, "n"),
        ("/v1/chat/completions", {"n": "2"}, "n"),
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true
        ("/v1/chat/completions", {"logprobs": 3}, "logprobs"),  # a boolean on chat
        ("/v1/chat/completions", {"logit_bias": {"abc": 1}}, "logit_bias"),
        ("/v1/chat/completions", {"logit_bias": {"-1": 1}}, "logit_bias"),
        ("/v1/chat/completions", {"logit_bias": {"99999999": 1}}, "logit_bias"),
        ("/v1/chat/completions", {"logit_bias": {"5": 101}}, "logit_bias"),
        ("/v1/chat/completions", {"logit_bias": {"5": "high"}}, "logit_bias"),
        ("/v1/chat/completions", {"logit_bias": [5]}, "logit_bias"),
        ("/v1/chat/completions", {"model": "en-de", "logprobs": True}, "model"),  # a translation model
        ("/v1/completions", {"n": 9}, "n"),
        ("/v1/completions", {"logprobs": 21}, "logprobs"),
        ("/v1/completions", {"logprobs": True}, "logprobs"),  # an integer on legacy completions
        ("/v1/completions", {"n": 2, "best_of": 3}, "best_of"),
        ("/v1/completions", {"logit_bias": {"1.5": 3}}, "logit_bias"),
        ("/v1/chat/completions", {"user": 5}, "user"),  # accepted and unused, but a string
        ("/v1/completions", {"user": ["a"]}, "user"),
    ]
    for path, extra, param in cases:
        body = {"model": "bot", "max_tokens": 2}
        body.update({"messages": [{"role": "user", "content": "hi"}]} if "chat" in path else {"prompt": "hi"})
        body.update(extra)
        status, data = server.raw("POST", path, json.dumps(body).encode())
        err = json.loads(data)["error"]
        assert status == 400 and err["param"] == param, (path, extra, data)
        if param == "logit_bias" and isinstance(extra["logit_bias"], dict):
            key = next(iter(extra["logit_bias"]))
            assert f"'{key}'" in err["message"] or f"token {key}" in err["message"], err


def test_errors_in_openai_shape(server):
    with pytest.raises(openai.NotFoundError) as e:
        chat(server, model="no-such-model")
    assert e.value.status_code == 404 and e.value.body["code"] == "model_not_found"
    assert e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        chat(server, n=9)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        chat(server, max_tokens=10**6)
    assert e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        chat(server, temperature="hot")
    assert e.value.body["code"] == "invalid_type"
    # A nested field is named with its parent; a prompt past the model's
    # positions names the prompt.
    for kw in ({"stream": True, "stream_options": {"include_usage": 1}},):
        with pytest.raises(openai.BadRequestError) as e:
            chat(server, max_tokens=2, **kw)
        assert e.value.body["param"] == "stream_options.include_usage", e.value.body
    with pytest.raises(openai.BadRequestError) as e:
        server.client.completions.create(model="bot", prompt="Order " * 3000, max_tokens=2)
    assert e.value.body["param"] == "prompt" and e.value.body["code"] == "context_length_exceeded", e.value.body
    long = " ".join(f"Order {i} has not arrived yet." for i in range(200))
    with pytest.raises(openai.BadRequestError) as e:
        chat(server, max_tokens=2, messages=[{"role": "user", "content": long}])
    assert e.value.body["param"] == "messages", e.value.body
    # A malformed tool call is named with its index.
    with pytest.raises(openai.BadRequestError) as e:
        chat(server, max_tokens=2, messages=[{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": None, "tool_calls": [7]},
                                             {"role": "user", "content": "and?"}])
    assert e.value.body["param"] == "messages[1].tool_calls[0]", e.value.body
    # Integers past int64 either way (-2^63 - 1 arrives as the double -2^63).
    for seed in (2**63, -(2**63) - 1, -(2**64)):
        with pytest.raises(openai.BadRequestError) as e:
            chat(server, temperature=1.0, seed=seed, max_tokens=2)
        assert e.value.body["param"] == "seed", (seed, e.value.body)
    # A temperature too small for float (1e-320), or one whose scores
    # overflow (1e-40), is the greedy limit, not an error.
    greedy = chat(server, temperature=0, max_tokens=8).choices[0].message.content
    for t in (1e-320, 1e-40):
        assert chat(server, temperature=t, max_tokens=8, seed=3).choices[0].message.content == greedy, t
    with pytest.raises(openai.BadRequestError) as e:
        chat(server, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    assert "not supported" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        chat(server, model="en-de")  # a translation model
    assert e.value.body["code"] == "model_not_supported"
    with pytest.raises(openai.APIStatusError) as e:  # larger than --max-body-bytes (1 MiB)
        chat(server, messages=[{"role": "user", "content": "x" * (2 << 20)}])
    assert e.value.status_code == 413 and e.value.body["code"] == "request_too_large"
    for body, code in [(b"{not json", "invalid_json"), (b"[1, 2]", "invalid_json"),
                       (b'{"model": "bot", "messages": [], "frobnicate": 1}', "unknown_parameter"),
                       (b'{"model": "bot", "messages": "hi"}', "invalid_type"),
                       (b'{"model": "bot", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", '
                        b'"foo": 1}]}]}', "unknown_parameter"),
                       (b'{"model": "bot", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": '
                        b'"function"}]}', "missing_required_parameter"),
                       (b'{"model": "bot", "messages": [{"role": "user", "content": "hi"}], "tools": [7]}',
                        "invalid_type"),
                       (b'{"model": "bot", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": '
                        b'"code", "function": {"name": "f"}}]}', "unsupported_value"),
                       (b'{"model": "bot", "tools": ' + b"[" * 100000 + b"]" * 100000 + b"}", "invalid_json"),
                       # the depth of a JSON string inside the body (it overflowed the stack when copied)
                       (json.dumps({"model": "bot", "messages": [
                           {"role": "user", "content": "hi"},
                           {"role": "assistant", "content": None, "tool_calls": [
                               {"id": "c", "type": "function",
                                "function": {"name": "f", "arguments": "[" * 100000 + "]" * 100000}}]},
                           {"role": "tool", "tool_call_id": "c", "content": "x"}]}).encode(), "invalid_value")]:
        status, data = server.raw("POST", "/v1/chat/completions", body)
        err = json.loads(data)["error"]
        assert status == 400 and err["code"] == code, (body, data)
        assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    status, data = server.raw("GET", "/v1/chat/completions")
    assert status == 405 and json.loads(data)["error"]["code"] == "method_not_allowed"
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):  # 404 before, and PATCH waited for a body
        status, data = server.raw(method, "/v1/models")
        assert status == 405 and json.loads(data)["error"]["code"] == "method_not_allowed", (method, data)
    status, data = server.raw("GET", "/v1/nothing")
    assert status == 404 and "error" in json.loads(data)
    # A declared body over the limit, or a Content-Length that is no number,
    # is answered from the headers at once (it waited for the whole
    # declared body before: a client that never sends it got no answer).
    import socket
    for length, status, code in [(b"99999999999", 413, "request_too_large"), (b"2097152", 413, "request_too_large"),
                                 (b"-1", 400, "invalid_request"), (b"12x", 400, "invalid_request")]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n")
            reply = b""  # the head, then the body it announces; recv raises socket.timeout after 5 s of nothing
            while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < int(
                    re.search(rb"Content-Length: (\d+)", reply).group(1)):
                chunk = s.recv(4096)
                assert chunk, (length, reply)  # closed before the whole answer
                reply += chunk
        head, body = reply.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 %d " % status), (length, head)
        assert b"Connection: close" in head, head
        assert json.loads(body)["error"]["code"] == code, body


def test_translations(server):
    status, data = server.raw("POST", "/v1/translations", json.dumps(
        {"model": "en-de", "texts": ["Where is my order 9019917?", "", "Thank you!"], "protect": ["numbers"]}).encode())
    assert status == 200, data
    out = json.loads(data)
    assert out["object"] == "translation.list" and len(out["data"]) == 3
    first, empty, third = out["data"]
    assert "9019917" in first["text"] and first["protected"][0]["kind"] == "number"
    assert empty["error"]["code"] == "PARLEY_ERROR_INVALID_ARGUMENT" and "text" not in empty
    assert empty["error"]["param"] == "texts[1]", empty
    assert third["text"] and out["usage"]["target_tokens"] > 0
    assert first["finish_reason"] == third["finish_reason"] == "stop"
    # A translation that used up max_tokens says so.
    status, data = server.raw("POST", "/v1/translations", json.dumps(
        {"model": "en-de", "text": "Where is my order 9019917?", "max_tokens": 2, "n": 2, "beam_size": 2}).encode())
    assert status == 200, data
    cut = json.loads(data)["data"][0]
    assert cut["finish_reason"] == "length" and [a["finish_reason"] for a in cut["alternatives"]] == ["length"] * 2
    status, data = server.raw("POST", "/v1/translations", json.dumps({"model": "bot", "text": "Hi"}).encode())
    assert status == 400 and json.loads(data)["error"]["code"] == "model_not_supported"
    status, data = server.raw("POST", "/v1/translations", json.dumps(
        {"model": "en-de", "text": "Hi", "protect": "colours"}).encode())
    assert status == 400 and json.loads(data)["error"]["param"] == "protect"
    status, data = server.raw("POST", "/v1/translations", json.dumps({"model": "en-de", "text": "Hi", "user": 5}).encode())
    assert status == 400 and json.loads(data)["error"]["param"] == "user", data
    status, data = server.raw("POST", "/v1/translations", json.dumps({"model": "en-de", "text": ""}).encode())
    assert status == 400 and json.loads(data)["error"]["param"] == "text", data
    # Nested objects are checked as the top level is: unknown fields and wrong types are refused by name.
    msgs = [{"role": "user", "content": "hi"}]
    for extra, param in (({"response_format": {"type": "text", "foo": 1}}, "response_format.foo"),
                         ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
                          "tools[0].function.parameters"),
                         ({"parallel_tool_calls": "x"}, "parallel_tool_calls"),
                         ({"messages": [{"role": "user", "content": "hi", "name": 5}]}, "messages[0].name"),
                         ({"messages": [{"role": "user", "content": "hi", "tool_calls": 5}]}, "messages[0].tool_calls"),
                         ({"max_tokens": 2**70}, "max_tokens")):
        status, data = server.raw("POST", "/v1/chat/completions",
                                  json.dumps({"model": "bot", "messages": msgs, **extra}).encode())
        assert status == 400 and json.loads(data)["error"]["param"] == param, (extra, data)
    status, data = server.raw("POST", "/v1/chat/completions",
                              json.dumps({"model": "bot", "messages": msgs, "max_tokens": 2.0}).encode())
    assert status == 200 and json.loads(data)["usage"]["completion_tokens"] <= 2, data  # a whole number written 2.0
    # Refusals from the runtime name the field too, and no C function.
    for extra, param, words in (({"source_language": "de"}, "source_language", "no language codes"),
                                ({"target_language": "fr"}, "target_language", "no language codes"),
                                ({"protect_patterns": ["(("]}, "protect_patterns", "does not compile"),
                                ({"glossary": [""]}, "glossary", "is empty")):
        status, data = server.raw("POST", "/v1/translations", json.dumps({"model": "en-de", "text": "Hi", **extra}).encode())
        err = json.loads(data)["error"]
        assert status == 400 and err["param"] == param and words in err["message"], data
        assert "parley_" not in err["message"], data


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def metrics(server) -> dict[str, float]:
    status, data = server.raw("GET", "/metrics")
    assert status == 200
    out, types = {}, {}
    for line in data.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge"), line
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample: {line!r}"
        assert m.group(1) in types, f"sample without # TYPE: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(4))
    return out


def test_concurrent_requests_are_batched_and_metrics_parse(server):
    before = metrics(server)
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: chat(server, temperature=0, max_tokens=16, messages=[
            {"role": "system", "content": POLICY}, {"role": "user", "content": f"Question {i}: {QUESTION}"}]),
            range(16)))
    assert all(r.choices[0].message.content for r in replies)
    after = metrics(server)
    m = '{model="bot"}'
    steps = after["parley_engine_steps_total" + m] - before["parley_engine_steps_total" + m]
    rows = after["parley_engine_batched_rows_total" + m] - before["parley_engine_batched_rows_total" + m]
    assert steps > 0 and rows / steps > 1.5, (rows, steps)  # decode steps shared between requests
    assert after["parley_engine_active" + m] == 1
    assert after["parley_kv_budget_bytes" + m] > 0
    assert after["parley_prefix_cache_hits_total" + m] > before["parley_prefix_cache_hits_total" + m]
    gen = sum(r.usage.completion_tokens for r in replies)
    assert after["parley_model_completion_tokens_total" + m] - before["parley_model_completion_tokens_total" + m] == gen
    assert after['parley_http_responses_total{path="/v1/chat/completions",code="200"}'] >= 16
    assert "parley_engine_queue_depth" + m in after and "parley_generated_tokens_per_second" in after
    status, data = server.raw("GET", "/health")
    assert status == 200 and json.loads(data)["status"] == "ok"


# A reply the schema makes long: 40 strings of 8 to 12 characters (a few hundred tokens).
LONG = {"type": "json_schema", "json_schema": {"name": "long", "schema": {
    "type": "array", "items": {"type": "string", "minLength": 8, "maxLength": 12}, "minItems": 40, "maxItems": 40}}}
LONG_MSGS = [{"role": "user", "content": "List forty order numbers."}]


def test_a_client_that_hangs_up_cancels_its_stream(server):
    before = metrics(server)
    body = json.dumps({"model": "bot", "messages": LONG_MSGS, "temperature": 0, "max_tokens": 900,
                       "response_format": LONG, "stream": True}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    sock = conn.sock  # the response takes it over (Connection: close)
    r = conn.getresponse()
    assert r.status == 200
    assert r.readline().startswith(b"data: ")  # the reply has begun
    sock.shutdown(2)
    r.close()
    conn.close()
    deadline = time.time() + 60
    while time.time() < deadline:
        m = metrics(server)
        if m["parley_http_client_disconnects_total"] > before["parley_http_client_disconnects_total"] and \
                m["parley_http_requests_in_flight"] == 0:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the request of a client that hung up was not cancelled")
    # stopped early: the whole reply (40 strings of >= 8 characters) is well over 60 tokens
    key = 'parley_engine_decode_tokens_total{model="bot"}'
    assert m[key] - before[key] < 60, m[key] - before[key]
    # ... and counted as cancelled (the decoding loop stops between engine steps: it was not)
    key = 'parley_engine_cancelled_total{model="bot"}'
    assert m[key] == before[key] + 1, (before[key], m[key])


def test_overload_is_503():
    s = Server("--max-concurrent", "1")
    try:
        first = threading.Thread(target=lambda: chat(s, messages=LONG_MSGS, temperature=0, max_tokens=900, response_format=LONG))
        first.start()
        deadline = time.time() + 30
        while metrics(s)["parley_http_requests_in_flight"] < 1 and time.time() < deadline:
            time.sleep(0.02)
        with pytest.raises(openai.APIStatusError) as e:
            chat(s, temperature=0, max_tokens=4)
        assert e.value.status_code == 503 and e.value.body["type"] == "server_overloaded"
        first.join()
    finally:
        rc, err = s.stop()
    assert rc == 0, err


def long_stream(s: Server, out: dict):
    try:
        text, finish = "", None
        for c in chat(s, messages=LONG_MSGS, temperature=0, max_tokens=900, response_format=LONG,
                      stream=True):
            for ch in c.choices:
                text += ch.delta.content or ""
                finish = ch.finish_reason or finish
        out["text"], out["finish"] = text, finish
    except Exception as e:  # noqa: BLE001 - the test looks at what ended the stream
        out["error"] = e


def wait_streaming(s: Server):
    deadline = time.time() + 30
    while metrics(s)['parley_engine_decode_tokens_total{model="bot"}'] < 5 and time.time() < deadline:
        time.sleep(0.02)


def test_sigterm_lets_in_flight_requests_finish():
    s = Server("--grace-seconds", "120")
    out: dict = {}
    t = threading.Thread(target=long_stream, args=(s, out))
    t.start()
    wait_streaming(s)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):  # no new connections
        s.raw("GET", "/health")
    t.join(120)
    rc, err = s.stop(timeout=120)
    assert rc == 0, err
    assert "error" not in out, out
    assert out["finish"] == "stop" and len(json.loads(out["text"])) == 40


def test_sigterm_cancels_what_outlives_the_grace_period():
    s = Server("--grace-seconds", "0")
    out: dict = {}
    t = threading.Thread(target=long_stream, args=(s, out))
    t.start()
    wait_streaming(s)
    start = time.time()
    s.proc.send_signal(signal.SIGTERM)
    t.join(60)
    rc, err = s.stop(timeout=60)
    assert rc == 0, err
    assert time.time() - start < 20
    assert "cancelling 1 request(s)" in err and "1 request(s) cancelled" in err, err
    assert "error" in out or out.get("finish") is None, out  # the stream ended with an error, not a reply


def test_bodies_the_size_limit_cannot_see_and_strings_the_runtime_would_cut(server):
    import gzip
    import socket

    def exchange(head: bytes, body: bytes) -> tuple[int, dict]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(head + body)
            reply = b""
            while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < int(
                    re.search(rb"Content-Length: (\d+)", reply).group(1)):
                chunk = s.recv(65536)
                assert chunk, reply
                reply += chunk
        head_out, body_out = reply.split(b"\r\n\r\n", 1)
        return int(head_out.split()[1]), json.loads(body_out)["error"]

    small = json.dumps({"model": "bot", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    # Chunked: no size to check against --max-body-bytes before reading (a 20 MiB body was taken).
    status, err = exchange(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small))
    assert status == 411 and err["code"] == "length_required", err
    # Compressed: 300 KiB of gzip grew to 300 MiB in the server.
    packed = gzip.compress(small)
    status, err = exchange(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed), packed)
    assert status == 415 and err["code"] == "unsupported_content_encoding", err
    status, err = exchange(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\nContent-Length: 5\r\n\r\n" % len(small), small)
    assert status == 400 and "more than one Content-Length" in err["message"], err
    # A body refused unread is not read as the next request: the connection closes after the answer
    # (the 413 was followed by a 200 for a GET sent on the same connection).
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
        reply, sent = b"", False
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
            if not sent and b'"request_too_large"' in reply:
                sent = True
                try:
                    s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    break
        assert reply.startswith(b"HTTP/1.1 413") and b"Connection: close" in reply, reply
        assert b"HTTP/1.1 200" not in reply and b"Keep-Alive" not in reply, reply
    # Expect: 100-continue with a body over the limit: the 413 at once, no "100 Continue" inviting the upload.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        reply = b""
        while b'"request_too_large"' not in reply:
            chunk = s.recv(65536)
            assert chunk, reply
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 413") and b"100 Continue" not in reply, reply
    start = time.time()  # no Content-Length at all: answered at once, not after the 30 s read timeout
    status, err = exchange(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", b"")
    assert status == 411 and err["code"] == "length_required" and time.time() - start < 10, err
    # A number past a double was a 500; a NUL inside a stop string cut it there ("day\0zzz" stopped at "day").
    for body, param in ((b'{"model": "bot", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}', None),
                        (b'{"model": "bot", "messages": [{"role": "user", "content": "hi"}], "stop": "day\\u0000zzz"}',
                         "stop"),
                        (b'{"model": "en-de", "texts": ["Hallo"], "glossary": ["Bestellung\\u0000|x"]}', "glossary[0]")):
        path = "/v1/translations" if b"texts" in body else "/v1/chat/completions"
        status, data = server.raw("POST", path, body)
        err = json.loads(data)["error"]
        assert status == 400 and err["param"] == param, (body, data)
        assert err["code"] == ("invalid_json" if param is None else "invalid_value"), (body, data)


def test_a_reply_cut_by_the_context_window_ends_with_length(server):
    # The demo model has 1,024 positions: a long prompt leaves fewer than max_tokens for the reply.
    schema = {"type": "json_schema", "json_schema": {"name": "long", "schema": {
        "type": "array", "items": {"type": "string", "minLength": 8, "maxLength": 12}, "minItems": 40, "maxItems": 40}}}
    r = chat(server, messages=[{"role": "user", "content": "order " * 950 + "List forty order numbers."}],
             temperature=0, max_tokens=1024, response_format=schema)
    assert r.usage.total_tokens == 1024, r.usage
    assert r.choices[0].finish_reason == "length", r.choices[0]


def test_sigterm_exits_although_a_client_never_finishes_its_request():
    import socket

    s = Server("--grace-seconds", "1")
    # A client that sends a byte of its request head now and then holds a connection thread for ever.
    c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHo")
    stop = threading.Event()

    def drip():
        while not stop.wait(1.0):
            try:
                c.sendall(b"s")
            except OSError:
                return

    t = threading.Thread(target=drip)
    t.start()
    try:
        time.sleep(0.5)
        start = time.time()
        rc, err = s.stop(timeout=60)
        assert rc == 0, err
        assert time.time() - start < 20, err
        assert "connection(s) still open" in err, err
    finally:
        stop.set()
        t.join()
        c.close()
