"""parley.ray_serve on a local Ray cluster (127.0.0.1 only), driven by the real
`openai` client, checked against `parley serve` on the same demo models
(samples/support-bot/models): greedy chat, streaming, stop strings, JSON-schema
output and text completions give the same texts and token counts from both
servers; errors the same statuses and codes; translations the same texts,
scores and protected spans. Two replicas both serve concurrent requests, and
an autoscaling deployment (target_ongoing_requests 1) grows from 1 to 2
replicas under load.

Run through ctest (ray_serve_openai: PARLEY_CLI, PARLEY_LIBRARY,
PARLEY_DEMO_MODELS). Run directly, it exits 77 (ctest: skipped) when ray[serve]
cannot be imported; CI installs it (formats/python/requirements-ray.txt).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Before ray is imported: no usage-stats upload attempt (the cluster is
# loopback-only), and no token file written under ~/.ray for a throwaway cluster.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[2]
BINDING = ROOT / "bindings" / "python"

if __name__ == "__main__":
    try:
        import fastapi  # noqa: F401
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as e:
        print(f"SKIPPED: ray[serve] cannot be imported ({e}); pip install -r formats/python/requirements-ray.txt")
        sys.exit(77)
    import pytest

    sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", __file__, *sys.argv[1:]]))

import openai  # noqa: E402
import pytest  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

# The replicas are Ray worker processes started by the raylet with this
# process's environment: they import parley from the source tree.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BINDING), os.environ.get("PYTHONPATH", "")]))
sys.path.insert(0, str(BINDING))

from parley.ray_serve import build_app  # noqa: E402

CLI = os.environ.get("PARLEY_CLI", "")
MODELS = Path(os.environ.get("PARLEY_DEMO_MODELS", ROOT / "samples" / "support-bot" / "models"))
POLICY = (MODELS / "policy.txt").read_text(encoding="utf-8")
QUESTION = "How long does standard shipping take?"
MODEL_FILES = {"bot": str(MODELS / "support-llama.parley"), "en-de": str(MODELS / "opus-mt-en-de.parley")}
pytestmark = pytest.mark.skipif(not CLI or not os.environ.get("PARLEY_LIBRARY"),
                                reason="PARLEY_CLI / PARLEY_LIBRARY are not set (run through ctest)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Endpoint:
    """One server's base URL with an openai client and raw HTTP."""

    def __init__(self, port: int, prefix: str = ""):
        self.port, self.prefix = port, prefix
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}{prefix}/v1", api_key="unused", max_retries=0,
                                    timeout=300)

    def raw(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        conn.request(method, self.prefix + path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        headers = {k.lower(): v for k, v in r.getheaders()}
        conn.close()
        return r.status, headers, data

    def post(self, path: str, doc) -> tuple[int, dict]:
        status, _, data = self.raw("POST", path, json.dumps(doc).encode())
        return status, json.loads(data)


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", include_dashboard=False, num_cpus=2, object_store_memory=80 << 20,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def rayep(cluster):
    # Two fixed replicas of half a CPU each (the autoscaling test's replicas take the other CPU).
    serve.run(build_app(MODEL_FILES, num_replicas=2, num_cpus=0.5, threads=1), name="parley", route_prefix="/")
    return Endpoint(cluster)


@pytest.fixture(scope="module")
def ref():
    """`parley serve` on the same models: what the Ray deployment must answer alike."""
    env = dict(os.environ, PARLEY_PLUGIN_PATH=os.environ.get("PARLEY_PLUGIN_BUILD_DIR", ""))
    proc = subprocess.Popen([CLI, "serve", "--model", f"bot={MODEL_FILES['bot']}", "--model",
                             f"en-de={MODEL_FILES['en-de']}", "--port", "0", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    line = proc.stdout.readline()
    m = re.match(r"parley serve: listening on http://127\.0\.0\.1:(\d+)$", line.strip())
    assert m, line
    yield Endpoint(int(m.group(1)))
    proc.terminate()
    proc.communicate(timeout=60)


def messages(question: str = QUESTION) -> list[dict]:
    return [{"role": "system", "content": POLICY}, {"role": "user", "content": question}]


def chat(ep: Endpoint, **kw):
    kw.setdefault("model", "bot")
    kw.setdefault("messages", messages())
    kw.setdefault("temperature", 0)
    return ep.client.chat.completions.create(**kw)


def test_models_and_health(rayep, ref):
    got = {m.id: m.model_extra["parley"] for m in rayep.client.models.list().data}
    want = {m.id: m.model_extra["parley"] for m in ref.client.models.list().data}
    assert got == want and got["bot"]["kind"] == "chat" and got["en-de"]["kind"] == "translation"
    status, headers, body = rayep.raw("GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok" and headers["x-parley-replica"]
    assert rayep.client.models.retrieve("en-de").id == "en-de"
    with pytest.raises(openai.NotFoundError):
        rayep.client.models.retrieve("nope")


def test_chat_equals_parley_serve(rayep, ref):
    for kw in ({"max_tokens": 24}, {"max_tokens": 40, "messages": messages("Where is my order 9019917?")}):
        got, want = chat(rayep, **kw), chat(ref, **kw)
        assert got.choices[0].message.content == want.choices[0].message.content
        assert got.choices[0].message.content
        assert got.choices[0].finish_reason == want.choices[0].finish_reason
        assert got.usage.prompt_tokens == want.usage.prompt_tokens
        assert got.usage.completion_tokens == want.usage.completion_tokens
    # max_tokens reached: finish_reason "length" with exactly that many tokens.
    short = chat(rayep, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    # Seeded sampling is reproducible, and equal to parley serve's.
    a = chat(rayep, temperature=0.9, top_p=0.95, seed=7, max_tokens=24).choices[0].message.content
    assert a == chat(rayep, temperature=0.9, top_p=0.95, seed=7, max_tokens=24).choices[0].message.content
    assert a == chat(ref, temperature=0.9, top_p=0.95, seed=7, max_tokens=24).choices[0].message.content


def test_stream_equals_plain_reply(rayep, ref):
    plain = chat(rayep, max_tokens=32)
    chunks = list(chat(rayep, max_tokens=32, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([p for p in pieces if p]) > 3  # streamed in pieces, not at the end
    assert "".join(pieces) == plain.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    ref_pieces = [c.choices[0].delta.content or "" for c in chat(ref, max_tokens=32, stream=True) if c.choices]
    assert "".join(ref_pieces) == "".join(pieces)


def replica_stats(ep: Endpoint, replicas: int = 2) -> dict[str, dict]:
    """/v1/parley/stats of every replica (each call is answered by one of them)."""
    out: dict[str, dict] = {}
    for _ in range(100):
        status, _, data = ep.raw("GET", "/v1/parley/stats")
        assert status == 200, data
        doc = json.loads(data)
        out.setdefault(doc["replica"], doc)
        if len(out) == replicas:
            return out
    raise AssertionError(f"only replicas {sorted(out)} answered")


# A reply forced long by its schema (40 strings of 8 to 12 characters: well over 60 tokens).
LONG = {"type": "json_schema", "json_schema": {"name": "long", "schema": {
    "type": "array", "items": {"type": "string", "minLength": 8, "maxLength": 12}, "minItems": 40, "maxItems": 40}}}


def test_client_hang_up_cancels_the_stream(rayep):
    def totals() -> tuple[int, int, int]:
        st = replica_stats(rayep).values()
        return (sum(d["client_disconnects"] for d in st), sum(d["requests_in_flight"] for d in st),
                sum(d["models"]["bot"]["engine"]["decode_tokens"] for d in st))

    disc0, _, decoded0 = totals()
    body = json.dumps({"model": "bot", "messages": [{"role": "user", "content": "List forty order numbers."}],
                       "temperature": 0, "max_tokens": 900, "response_format": LONG, "stream": True}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", rayep.port, timeout=120)
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    assert r.readline().startswith(b"data: ")  # the reply has begun
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    deadline = time.monotonic() + 60
    while True:
        disc, in_flight, decoded = totals()
        if disc == disc0 + 1 and in_flight == 0:
            break
        assert time.monotonic() < deadline, "the request of a client that hung up was not cancelled"
        time.sleep(0.2)
    assert decoded - decoded0 < 60, decoded - decoded0  # stopped early


def test_stop_strings(rayep, ref):
    plain = chat(rayep, max_tokens=40).choices[0].message.content
    words = plain.split()
    assert len(words) >= 4, plain
    stop = " " + words[3]
    want = plain[: plain.index(stop)]
    got = chat(rayep, max_tokens=40, stop=[stop, "\nUser:"])
    assert got.choices[0].message.content == want and got.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in chat(rayep, max_tokens=40, stop=stop, stream=True)
                       if c.choices)
    assert streamed == want
    assert chat(ref, max_tokens=40, stop=[stop, "\nUser:"]).choices[0].message.content == want


def test_json_schema_response_format(rayep, ref):
    schema = {"type": "object", "properties": {"order": {"type": "integer"}, "urgent": {"type": "boolean"}},
              "required": ["order", "urgent"]}
    kw = {"max_tokens": 64, "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}},
          "messages": messages("Order 9019917 is late.")}
    got = chat(rayep, **kw).choices[0].message.content
    doc = json.loads(got)
    assert list(doc) == ["order", "urgent"] and isinstance(doc["order"], int) and isinstance(doc["urgent"], bool)
    assert got == chat(ref, **kw).choices[0].message.content


TOOLS = [{"type": "function", "function": {
    "name": "order_status", "description": "Look up an order",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
# The schema makes the demo model write a {"name", "arguments"} object, which is a tool call.
CALL_SCHEMA = {"type": "object", "properties": {
    "name": {"const": "order_status"},
    "arguments": {"type": "object", "properties": {"order_id": {"enum": ["9019917"]}}, "required": ["order_id"]}},
    "required": ["name", "arguments"]}


def test_tools(rayep, ref):
    rf = {"type": "json_schema", "json_schema": {"name": "call", "schema": CALL_SCHEMA}}
    msgs = [{"role": "user", "content": "Where is order 9019917?"}]
    r = chat(rayep, messages=msgs, tools=TOOLS, max_tokens=100, response_format=rf)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "order_status" and call.id
    assert json.loads(call.function.arguments) == {"order_id": "9019917"}
    pieces = list(chat(rayep, messages=msgs, tools=TOOLS, max_tokens=100, response_format=rf, stream=True))
    calls = [tc for p in pieces for c in p.choices for tc in (c.delta.tool_calls or [])]
    assert [json.loads(tc.function.arguments) for tc in calls] == [{"order_id": "9019917"}]
    assert pieces[-1].choices[0].finish_reason == "tool_calls"
    # The call and its result go back into the conversation: the same reply as parley serve's.
    msgs += [choice.message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped"}'}]
    got, want = chat(rayep, messages=msgs, tools=TOOLS, max_tokens=16), chat(ref, messages=msgs, tools=TOOLS,
                                                                              max_tokens=16)
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.usage.prompt_tokens == want.usage.prompt_tokens > r.usage.prompt_tokens


def test_text_completions(rayep, ref):
    kw = {"model": "bot", "prompt": "Standard shipping takes", "max_tokens": 12, "temperature": 0}
    got, want = rayep.client.completions.create(**kw), ref.client.completions.create(**kw)
    assert got.choices[0].text == want.choices[0].text and got.choices[0].text
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (want.usage.prompt_tokens,
                                                                      want.usage.completion_tokens)
    words = got.choices[0].text.split()
    stop = " " + words[min(2, len(words) - 1)]
    cut = rayep.client.completions.create(**kw, stop=stop)
    assert cut.choices[0].text == got.choices[0].text[: got.choices[0].text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == ref.client.completions.create(**kw, stop=stop).choices[0].text
    streamed = "".join(c.choices[0].text for c in rayep.client.completions.create(**kw, stream=True))
    assert streamed == got.choices[0].text


def test_logit_bias_as_parley_serve(rayep, ref):
    # Biases (a token forced with +100; one banned with -100 beside a small
    # one) give the same text as parley serve, and a forced token changes the reply.
    plain = chat(rayep, max_tokens=4).choices[0].message.content
    kw = {"model": "bot", "prompt": "Standard shipping takes", "max_tokens": 4, "temperature": 0}
    for bias in ({"17": 100}, {"17": -100, "5": 3.5}):
        got = chat(rayep, max_tokens=4, logit_bias=bias).choices[0].message.content
        assert got == chat(ref, max_tokens=4, logit_bias=bias).choices[0].message.content
        g = rayep.client.completions.create(**kw, logit_bias=bias).choices[0].text
        assert g == ref.client.completions.create(**kw, logit_bias=bias).choices[0].text
    forced = chat(rayep, max_tokens=4, logit_bias={"17": 100}).choices[0].message.content
    assert forced != plain


def test_chat_logprobs_as_parley_serve(rayep, ref):
    # logprobs / top_logprobs: the same tokens, texts, bytes and alternatives
    # as parley serve, one entry per token of the reply's text; streamed, they
    # come with the last chunk.
    for kw in ({"logprobs": True}, {"logprobs": True, "top_logprobs": 3}, {"logprobs": True, "stop": ["."]}):
        got = chat(rayep, max_tokens=12, **kw).choices[0]
        want = chat(ref, max_tokens=12, **kw).choices[0]
        assert got.message.content == want.message.content
        g, w = got.logprobs.model_dump(), want.logprobs.model_dump()
        assert len(g["content"]) == len(w["content"]) >= 1
        for a, b in zip(g["content"], w["content"]):
            assert (a["token"], a["bytes"]) == (b["token"], b["bytes"])
            assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-4) and a["logprob"] <= 0
            assert [t["token"] for t in a["top_logprobs"]] == [t["token"] for t in b["top_logprobs"]]
            assert len(a["top_logprobs"]) == kw.get("top_logprobs", 0)
        assert "".join(t["token"] for t in g["content"]).startswith(got.message.content[:1])
    chunks = list(chat(rayep, max_tokens=12, stream=True, logprobs=True, top_logprobs=2))
    plain = chat(rayep, max_tokens=12, logprobs=True, top_logprobs=2).choices[0].logprobs.model_dump()
    # Each piece's chunk carries the tokens its text completes, the last chunk the rest.
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs
                for e in c.choices[0].logprobs.model_dump()["content"]]
    assert streamed == plain["content"]
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content and c.choices[0].logprobs
               and c.choices[0].logprobs.content) >= 2
    # Without logprobs the choice has none.
    assert chat(rayep, max_tokens=4).choices[0].logprobs is None


def test_n_choices_as_parley_serve(rayep, ref):
    # n choices: each a session of its own, seeded seed + index as parley
    # serve seeds them, so sampled choices equal its choices one by one.
    kw = {"n": 3, "temperature": 1.8, "seed": 11, "max_tokens": 12}
    got, want = chat(rayep, **kw), chat(ref, **kw)
    assert [c.index for c in got.choices] == [0, 1, 2]
    texts = [c.message.content for c in got.choices]
    assert texts == [c.message.content for c in want.choices]
    assert len(set(texts)) > 1  # different seeds: different samples
    assert [c.finish_reason for c in got.choices] == [c.finish_reason for c in want.choices]
    assert got.usage.completion_tokens == want.usage.completion_tokens
    assert got.usage.prompt_tokens == want.usage.prompt_tokens
    # Streamed: the pieces of every choice, interleaved, each naming its index.
    chunks = list(chat(rayep, stream=True, stream_options={"include_usage": True}, **kw))
    pieces: dict[int, str] = {}
    finals = {}
    for c in chunks:
        for ch in c.choices:
            pieces[ch.index] = pieces.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                finals[ch.index] = ch.finish_reason
    assert [pieces[i] for i in range(3)] == texts
    assert finals == {i: c.finish_reason for i, c in enumerate(got.choices)}
    assert chunks[-1].usage.completion_tokens == got.usage.completion_tokens
    # With logprobs, every choice carries its own.
    lp = chat(rayep, n=2, logprobs=True, max_tokens=6, temperature=0.9, seed=3)
    assert all(c.logprobs is not None and c.logprobs.content for c in lp.choices)



def test_completion_choices_and_logprobs_as_parley_serve(rayep, ref):
    # /v1/completions: n choices are the rows of one batch, sampled rows from
    # their own streams, as parley serve submits them; `logprobs` (legacy: a
    # count of alternatives) is written as parley serve writes it.
    kw = {"model": "bot", "prompt": "Standard shipping takes", "max_tokens": 10, "n": 3, "temperature": 1.5,
          "seed": 5, "logprobs": 2}
    got = rayep.post("/v1/completions", kw)[1]
    want = ref.post("/v1/completions", kw)[1]
    assert [c["index"] for c in got["choices"]] == [0, 1, 2]
    for g, w in zip(got["choices"], want["choices"]):
        assert (g["text"], g["finish_reason"]) == (w["text"], w["finish_reason"])
        gl, wl = g["logprobs"], w["logprobs"]
        assert gl["tokens"] == wl["tokens"] and gl["tokens"], gl
        assert gl["text_offset"] == wl["text_offset"]
        assert gl["text_offset"][0] == len(kw["prompt"].encode())
        assert [list(a) for a in gl["top_logprobs"]] == [list(a) for a in wl["top_logprobs"]]
        assert all(len(a) <= 2 for a in gl["top_logprobs"])
        # Scores up to float32 rounding (the engine may batch the rows otherwise).
        assert gl["token_logprobs"] == pytest.approx(wl["token_logprobs"], abs=1e-4)
    assert len({c["text"] for c in got["choices"]}) > 1  # own random streams: different samples
    assert got["usage"] == want["usage"]
    # Streamed: every choice's pieces, interleaved and naming their index, add
    # up to its text; its logprobs come with its last chunk.
    chunks = list(rayep.client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    pieces: dict[int, str] = {}
    finals = {}
    for c in chunks:
        for ch in c.choices:
            pieces[ch.index] = pieces.get(ch.index, "") + ch.text
            if ch.finish_reason:
                finals[ch.index] = (ch.finish_reason, ch.logprobs.tokens)
    assert [pieces[i] for i in range(3)] == [c["text"] for c in got["choices"]]
    assert finals == {i: (c["finish_reason"], c["logprobs"]["tokens"]) for i, c in enumerate(got["choices"])}
    assert chunks[-1].usage.completion_tokens == got["usage"]["completion_tokens"]
    # Greedy with logprobs 0: the chosen tokens' log-probabilities only.
    g0 = rayep.post("/v1/completions", dict(kw, n=1, temperature=0, logprobs=0))[1]["choices"][0]["logprobs"]
    assert g0["top_logprobs"] == [{}] * len(g0["tokens"]) and all(x <= 0 for x in g0["token_logprobs"])

BAD_REQUESTS = [
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "n": 9}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 21,
                              "logprobs": True}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "logit_bias": [1]}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}],
                              "logit_bias": {"abc": 1}}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}],
                              "logit_bias": {"99999999": 1}}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}],
                              "logit_bias": {"5": 101}}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}],
                              "logit_bias": {"5": "high"}}),
    ("/v1/completions", {"model": "bot", "prompt": "a", "logit_bias": {"1.5": 3}}),
    ("/v1/completions", {"model": "bot", "prompt": "a", "logprobs": 21}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "frobnicate": 1}),
    ("/v1/chat/completions", {"model": "bot", "messages": []}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "wizard", "content": "hi"}]}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
    ("/v1/chat/completions", {"model": "bot", "messages": [{"role": "user", "content": "hi"}],
                              "response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}),
    ("/v1/chat/completions", {"model": "en-de", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"model": "bot", "prompt": "", "max_tokens": 4}),
    ("/v1/completions", {"model": "bot", "prompt": "a", "echo": True}),
    ("/v1/translations", {"model": "en-de", "text": "a", "texts": ["b"]}),
    ("/v1/translations", {"model": "en-de", "text": "a", "protect": "secrets"}),
    ("/v1/translations", {"model": "bot", "text": "a"}),
    ("/v1/translations", {"model": "en-de", "text": ""}),
]


def test_errors_as_parley_serve(rayep, ref):
    for path, body in BAD_REQUESTS:
        got_status, got = rayep.post(path, body)
        want_status, want = ref.post(path, body)
        assert got_status == want_status and got_status in (400, 404), (path, body, got)
        assert (got["error"]["code"], got["error"]["param"], got["error"]["type"]) == (
            want["error"]["code"], want["error"]["param"], want["error"]["type"]), (path, body, got, want)
    # Through the openai client: a 400 raises BadRequestError naming the field.
    with pytest.raises(openai.BadRequestError) as e:
        chat(rayep, max_tokens=10, top_p=1.5)
    assert e.value.status_code == 400 and e.value.body["param"] == "top_p"
    with pytest.raises(openai.NotFoundError):
        chat(rayep, model="nope")
    for raw in (b"{not json", b"[1, 2]", b"[" * 100 + b"]" * 100):
        status, _, data = rayep.raw("POST", "/v1/chat/completions", raw)
        assert status == 400 and json.loads(data)["error"]["code"] == "invalid_json", data
    status, _, data = rayep.raw("POST", "/v1/chat/completions", b'{"model": "' + b"x" * (1 << 20) + b'"}')
    assert status == 413 and json.loads(data)["error"]["code"] == "request_too_large"
    status, _, data = rayep.raw("GET", "/v1/nothing/here")
    assert status == 404 and json.loads(data)["error"]["code"] == "not_found"
    status, _, data = rayep.raw("GET", "/v1/chat/completions")
    assert status == 405 and json.loads(data)["error"]["code"] == "method_not_allowed"


def test_translations_equal_parley_serve(rayep, ref):
    body = {"model": "en-de", "texts": ["Where is order 9019917?", "", "Thank you for your help!"],
            "protect": ["numbers"], "beam_size": 2, "n": 2}
    s1, got = rayep.post("/v1/translations", body)
    s2, want = ref.post("/v1/translations", body)
    assert s1 == s2 == 200
    assert got["usage"] == want["usage"] and len(got["data"]) == 3
    for g, w in zip(got["data"], want["data"]):
        assert g["index"] == w["index"]
        if "error" in w:
            assert g["error"]["code"] == w["error"]["code"] == "PARLEY_ERROR_INVALID_ARGUMENT"
            continue
        assert g["text"] == w["text"] and g["score"] == pytest.approx(w["score"], rel=1e-5)
        assert g["finish_reason"] == w["finish_reason"] == "stop"
        assert g.get("protected") == w.get("protected")
        assert [a["text"] for a in g["alternatives"]] == [a["text"] for a in w["alternatives"]]
    assert "9019917" in got["data"][0]["text"] and got["data"][0]["protected"][0]["kind"] == "number"
    # Nested objects: refused by name, as parley serve refuses them.
    msgs = [{"role": "user", "content": "hi"}]
    for extra in ({"response_format": {"type": "text", "foo": 1}},
                  {"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
                  {"parallel_tool_calls": "x"}, {"messages": [{"role": "user", "content": "hi", "name": 5}]},
                  {"messages": [{"role": "user", "content": "hi", "tool_calls": 5}]}):
        s1, got = rayep.post("/v1/chat/completions", {"model": "bot", "messages": msgs, **extra})
        s2, want = ref.post("/v1/chat/completions", {"model": "bot", "messages": msgs, **extra})
        assert s1 == s2 == 400 and got["error"]["param"] == want["error"]["param"], (extra, got, want)
    # Runtime refusals: the same field named, the same message (no C function in it).
    for extra in ({"glossary": [""]}, {"source_language": "de"}):
        s1, got = rayep.post("/v1/translations", {"model": "en-de", "text": "Hi", **extra})
        s2, want = ref.post("/v1/translations", {"model": "en-de", "text": "Hi", **extra})
        assert s1 == s2 == 400 and got["error"] == want["error"] and got["error"]["param"] == next(iter(extra)), got


def _replica_states(app: str) -> dict:
    return dict(serve.status().applications[app].deployments["parley"].replica_states)


def test_two_replicas_serve_concurrent_requests(rayep):
    assert _replica_states("parley") == {"RUNNING": 2}
    want = chat(rayep, max_tokens=16).choices[0].message.content

    def one(i: int):
        r = rayep.client.chat.completions.with_raw_response.create(
            model="bot", messages=messages(), temperature=0, max_tokens=16)
        return r.headers["x-parley-replica"], r.parse().choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(32)))
    assert all(text == want for _, text in results)
    replicas = {rid for rid, _ in results}
    assert len(replicas) == 2, replicas  # both replicas answered


def test_autoscaling_on_queue_depth(cluster):
    # One replica at rest; with target_ongoing_requests 1, eight requests in
    # flight ask for 8 replicas: Serve scales to max_replicas (2).
    app = build_app(MODEL_FILES, autoscaling={"min_replicas": 1, "max_replicas": 2, "initial_replicas": 1,
                                              "target_ongoing_requests": 1, "upscale_delay_s": 0,
                                              "downscale_delay_s": 600},
                    max_ongoing_requests=4, num_cpus=0.5, threads=1)
    serve.run(app, name="auto", route_prefix="/auto")
    ep = Endpoint(cluster, "/auto")
    assert _replica_states("auto") == {"RUNNING": 1}
    deadline = time.monotonic() + 240
    seen: set[str] = set()
    failures = []

    def one(i: int):
        try:
            r = ep.client.chat.completions.with_raw_response.create(
                model="bot", messages=messages(), temperature=0, max_tokens=64)
            r.parse()
            return r.headers["x-parley-replica"]
        except Exception as e:  # noqa: BLE001
            failures.append(repr(e))
            return None

    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline and len(seen) < 2:
            seen.update(filter(None, pool.map(one, range(16))))
    assert not failures, failures[:3]
    assert len(seen) == 2, (seen, _replica_states("auto"))
    assert _replica_states("auto").get("RUNNING") == 2
    serve.delete("auto")
