"""Regenerates goldens.json: chat templates rendered by transformers'
render_jinja_template (what apply_chat_template(tokenize=False) calls) and
by the same Jinja2 environment for small feature templates. The C++ test
(test_jinja.cpp) renders every case with Parley's Jinja subset and compares
byte for byte.

    PYTHONPATH=formats/python /work/venvs/bench/bin/python tests/chat_templates/make_chat_goldens.py

Templates: tests/tokenizers/chat_templates/{llama3,qwen2,qwen3,mistral}.jinja
(the real templates: Qwen2.5's and Mistral-7B-Instruct-v0.3's carry tool
calls), llama3_1.jinja here (Llama-3.1-Instruct's tool template as published
on the model card), and the test models' template (tests/data/make_test_models.py).
"""
from __future__ import annotations

import copy
import json
import pathlib
import sys

from transformers.utils.chat_template_utils import _compile_jinja_template, render_jinja_template

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "data"))
from make_test_models import CHAT_TEMPLATE  # noqa: E402

TEMPLATES = {name: (ROOT / "tests" / "tokenizers" / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")
             for name in ("llama3", "qwen2", "qwen3", "mistral")}
TEMPLATES["llama3_1"] = (HERE / "llama3_1.jinja").read_text(encoding="utf-8")
TEMPLATES["test_model"] = CHAT_TEMPLATE

SPECIAL = {
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3_1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "qwen2": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "qwen3": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "mistral": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "test_model": {"bos_token": "<s>", "eos_token": "</s>"},
}

TOOLS = [
    {"type": "function", "function": {
        "name": "order_status",
        "description": "Look up the status of a customer's order by its number.",
        "parameters": {"type": "object", "properties": {
            "order_id": {"type": "string", "description": "The order number, e.g. 9019917"},
            "include_items": {"type": "boolean", "description": "Whether to list the items", "default": False}},
            "required": ["order_id"]}}},
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Wetter für eine Stadt — température actuelle 🌡",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
            "threshold": {"type": "number", "default": 0.5, "multipleOf": 1e-05},
            "note": {"type": ["string", "null"], "description": "Quote \"this\" \\ and\ttab"}},
            "required": ["city"]},
        "return": {"type": "string"}}},
]


def call(name, args, cid="call00001"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


U1 = "Where is my order 9019917?"
A1 = "Let me check that for you."
SYS = "You are the support bot of Saale-Monitor GmbH.\nAnswer briefly."
WS = "  padded  \n"
UNI = "Grüße, 你好 🙂 — «quotes» \"double\" and 'single' \\ <|eot_id|>"
TOOL_RESULT = '{"order_id": "9019917", "status": "shipped", "eta": "2026-12-08", "amount": 149.9}'

CONVERSATIONS = {
    "user": [{"role": "user", "content": U1}],
    "system_user": [{"role": "system", "content": SYS}, {"role": "user", "content": U1}],
    "multi_turn": [{"role": "system", "content": SYS}, {"role": "user", "content": WS},
                   {"role": "assistant", "content": A1}, {"role": "user", "content": UNI}],
    "no_system_multi": [{"role": "user", "content": UNI}, {"role": "assistant", "content": WS},
                        {"role": "user", "content": "x"}],
    "tool_call": [{"role": "system", "content": SYS}, {"role": "user", "content": U1},
                  {"role": "assistant", "content": "", "tool_calls": [call("order_status", {"order_id": "9019917"})]},
                  {"role": "tool", "tool_call_id": "call00001", "name": "order_status", "content": TOOL_RESULT}],
    "tool_call_reply": [{"role": "user", "content": U1},
                        {"role": "assistant", "content": "",
                         "tool_calls": [call("order_status", {"order_id": "9019917", "include_items": True})]},
                        {"role": "tool", "tool_call_id": "call00001", "content": TOOL_RESULT},
                        {"role": "assistant", "content": "Your order 9019917 has shipped."},
                        {"role": "user", "content": "Thanks! And the weather in Halle?"}],
    "two_tool_calls": [{"role": "user", "content": "Weather in Halle and order 4564714?"},
                       {"role": "assistant", "content": "Checking both.",
                        "tool_calls": [call("get_weather", {"city": "Halle (Saale)", "unit": "celsius", "days": 3,
                                                            "threshold": 0.25, "note": None}, "abcDEF123"),
                                       call("order_status", {"order_id": "4564714"}, "XYZ987abc")]},
                       {"role": "tool", "tool_call_id": "abcDEF123", "content": "Sunny, 12 °C"},
                       {"role": "tool", "tool_call_id": "XYZ987abc", "content": "{\"status\": \"delivered\"}"}],
    "string_arguments": [{"role": "user", "content": U1},
                         {"role": "assistant", "content": "",
                          "tool_calls": [{"id": "a1b2c3d4e", "type": "function",
                                          "function": {"name": "order_status",
                                                       "arguments": "{\"order_id\": \"9019917\"}"}}]}],
    "not_alternating": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    "assistant_last": [{"role": "user", "content": U1}, {"role": "assistant", "content": A1}],
    "think": [{"role": "user", "content": U1},
              {"role": "assistant", "content": "<think>\nreasoning here\n</think>\n\nIt shipped."},
              {"role": "user", "content": "ok"}],
    "reasoning_field": [{"role": "user", "content": U1},
                        {"role": "assistant", "content": "It shipped.", "reasoning_content": "Look it up."},
                        {"role": "user", "content": "ok"}],
}

# Small templates for the constructs the subset promises (template.hpp).
FEATURES = {
    "loop_vars": "{% for m in messages %}{{ loop.index0 }}/{{ loop.index }}/{{ loop.revindex }}/{{ loop.length }}/"
                 "{{ loop.first }}/{{ loop.last }}:{{ m.role|upper }}|{{ m.content|length }}\n{% endfor %}",
    "loop_else_filter": "{% for m in messages if m.role == 'nobody' %}{{ m }}{% else %}empty{% endfor %}|"
                        "{% for m in messages if m.role == 'user' %}{{ loop.index }}={{ m.content[:5] }};{% endfor %}",
    "loop_controls": "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 5 %}{% break %}"
                     "{% endif %}{{ i }},{% endfor %}",
    "namespace": "{% set ns = namespace(n=0, last='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                 "{% set ns.last = m.role %}{% set local = 5 %}{% endfor %}{{ ns.n }} {{ ns.last }} {{ local is defined }}",
    "macro": "{% macro turn(role, text, sep='\\n') -%}\n<{{ role }}>{{ text|trim }}{{ sep }}\n{%- endmacro %}"
             "{% for m in messages %}{{ turn(m.role, m.content) }}{{ turn('x', 'y', sep='|') }}{% endfor %}",
    "set_block": "{% set head %}[{{ messages|length }} messages]{% endset %}{{ head }}{{ head|length }}",
    "slicing": "{{ messages[::-1]|map(attribute='role')|join(',') }}|{{ messages[1:]|length }}|"
               "{{ 'abcdef'[1:4] }}|{{ 'abcdef'[::-2] }}|{{ 'abcdef'[-2:] }}|{{ 'héllo'[1] }}|{{ [1,2,3][-1] }}|"
               "{{ 'abc'[5:] }}|{{ 'Grüße'[::-1] }}",
    "strings": "{{ '  a b  '.strip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'xxhixx'.strip('x') }}|"
               "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x','c')) }}|{{ 'Hello'.lower() }}{{ 'Hello'.upper() }}|"
               "{{ 'hello world'.title() }}|{{ 'hELLO'|capitalize }}|{{ 'a-b-c'.replace('-', '+') }}|"
               "{{ 'a</think>b'.split('</think>')[-1].lstrip('\\n') }}|{{ 'x' ~ 1 ~ none ~ true }}|{{ 'ab' * 3 }}|"
               "{{ '\\u00e9\\x41\\t' }}|{{ \"it's\" }}|{{ 'a' 'b' }}",
    "numbers": "{{ 10 / 4 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 0.1 + 0.2 }} {{ 1e16 }} "
               "{{ 1.5e-5 }} {{ 123456789.0 }} {{ 1/3 }} {{ 3 - 5 }} {{ -(2) }} {{ 1e22 }} {{ 0.0001 }} {{ 100.0 }} "
               "{{ '42'|int + 1 }} {{ '3.7'|int }} {{ 'x'|int(7) }} {{ 2|float }} {{ 1 == 1.0 }} {{ true + 1 }}",
    "reprs": "{{ [1, 'a', none, true, 2.5, {'k': \"it's\"}] }}|{{ {'a': [1, {'b': none}]} }}|{{ none }}|{{ messages[0] }}",
    "tojson": "{{ tools|tojson }}\n{{ tools[0]|tojson(indent=2) }}\n{{ {'b': 1, 'a': [1.0, 'é']}|tojson(sort_keys=true) }}\n"
              "{{ {'a': 'ü\\n'}|tojson(ensure_ascii=true) }}\n{{ [1, 2]|tojson(separators=(',', ':')) }}\n"
              "{{ []|tojson(indent=4) }}{{ {}|tojson }}{{ 'x'|tojson }}{{ none|tojson }}",
    "filters": "{{ messages|selectattr('role', 'equalto', 'user')|list|length }}|"
               "{{ messages|rejectattr('role', 'equalto', 'user')|map(attribute='role')|join('+') }}|"
               "{{ [1, 0, 2, none]|select|list }}|{{ ['a', 'b', 'code_interpreter']|reject('equalto', 'code_interpreter')|join(', ') }}|"
               "{{ messages|first|tojson }}|{{ (messages|last).role }}|{{ 'abc'|list }}|{{ undefined_var|default('dflt') }}|"
               "{{ ''|default('e', true) }}|{{ {'x': 1, 'y': 2}|items|list }}|{{ 'x'|string }}{{ 5|string|length }}|"
               "{{ [3, 'a']|map('string')|join }}|{{ '  t  '|trim }}|{{ 'xx'|trim('x') }}|{{ -3|abs }}",
    "tests": "{{ x is defined }}{{ messages is defined }}{{ none is none }}{{ 'a' is string }}{{ 1 is number }}"
             "{{ {} is mapping }}{{ [] is iterable }}{{ 'a' is iterable }}{{ 3 is odd }}{{ 4 is even }}"
             "{{ 6 is divisibleby 3 }}{{ 1 is equalto 1 }}{{ 'a' is in 'abc' }}{{ tools is not none }}"
             "{{ 'tool_calls' in messages[0] }}{{ 'role' in messages[0] }}{{ 2 not in [1, 3] }}{{ 1 is integer }}"
             "{{ 1.0 is float }}{{ true is boolean }}",
    "logic": "{{ 'y' if messages else 'n' }}{{ 'y' if not messages }}|{{ 1 and 'b' }}|{{ 0 or 'c' }}|{{ none or [] }}|"
             "{{ not 0 }}{{ 1 < 2 <= 2 }}{{ 'a' < 'b' }}{{ [1] == [1] }}{{ {'a': 1} != {'a': 1} }}",
    "dict_methods": "{% for k, v in tools[0].function.items() %}{{ k }}={{ v is string }};{% endfor %}|"
                    "{{ tools[0].get('type') }}{{ tools[0].get('nope', 'd') }}{{ tools[0].get('nope') }}|"
                    "{{ tools[0].keys()|list }}|{{ tools[0].function.parameters.required }}",
    "whitespace": "A\n  {% if true %}\n    B\n  {% endif %}\nC\n{%- if true %} D {% endif -%}\n  E\n"
                  "{# comment #}\n  {#- trimmed -#}  F\n  {%+ if true %}G{% endif +%}\nH\n\t{{ 'I' }}\n{{- ' J ' -}}\n  K\n",
    "whitespace_crlf": "line1\r\n{% if true %}\r\n  x\r\n{% endif %}\r\nline2\r\n",
    "raise": "{% if messages|length > 0 %}{{ raise_exception('Conversation refused: ' ~ messages|length) }}{% endif %}",
    "undefined_attr": "{{ nothing.at_all }}",
    "undefined_print": "[{{ nothing }}][{{ messages[0].nothing }}][{{ messages[99] }}][{{ none.x }}]",
    "generation": "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}"
                  "{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}",
    "trailing_newline": "x\n",
}


def render(src, variables):
    try:
        return {"rendered": _compile_jinja_template(src).render(**copy.deepcopy(variables))}
    except Exception as e:  # noqa: BLE001 - the golden records that it fails
        return {"error": f"{type(e).__name__}: {e}"}


def main():
    cases = []
    for tname, src in TEMPLATES.items():
        for cname, conv in CONVERSATIONS.items():
            for with_tools in (False, True):
                for agp in (False, True):
                    variables = {"messages": conv, "tools": TOOLS if with_tools else None, "documents": None,
                                 "add_generation_prompt": agp, **SPECIAL[tname]}
                    case = {"name": f"{tname}/{cname}/tools={int(with_tools)}/agp={int(agp)}", "template": tname,
                            "variables": variables}
                    try:
                        out, _ = render_jinja_template([copy.deepcopy(conv)], tools=variables["tools"],
                                                       chat_template=src, add_generation_prompt=agp,
                                                       **SPECIAL[tname])
                        case["rendered"] = out[0]
                        # Check that this module's variables are what transformers passes.
                        assert render(src, _aliased(variables)) == {"rendered": out[0]}, case["name"]
                        case["variables"] = _aliased(variables)
                    except Exception as e:  # noqa: BLE001
                        case["error"] = f"{type(e).__name__}: {e}"
                    cases.append(case)
    fvars = {"messages": CONVERSATIONS["multi_turn"], "tools": TOOLS, "add_generation_prompt": True}
    for fname, src in FEATURES.items():
        TEMPLATES["feature/" + fname] = src
        cases.append({"name": "feature/" + fname, "template": "feature/" + fname, "variables": fvars,
                      **render(src, fvars)})
    out = {"regenerate": "PYTHONPATH=formats/python /work/venvs/bench/bin/python tests/chat_templates/make_chat_goldens.py",
           "templates": TEMPLATES, "cases": cases}
    text = json.dumps(out, ensure_ascii=False, indent=1) + "\n"
    (HERE / "goldens.json").write_text(text, encoding="utf-8")
    errors = sum("error" in c for c in cases)
    print(f"{len(cases)} cases ({errors} raise), {len(text.encode())} bytes")


def _aliased(variables):
    from transformers.utils.chat_template_utils import _alias_reasoning_fields
    v = dict(variables)
    v["messages"] = _alias_reasoning_fields(copy.deepcopy(variables["messages"]))
    return v


if __name__ == "__main__":
    main()
