"""Reduces a Jinja chat template to a ChatFormat (prefixes and suffixes per
role), by rendering marker conversations with transformers'
apply_chat_template, then proves the reduction: every probe conversation
must render byte-identically both ways, or conversion is refused. This keeps
a template engine out of the runtime without guessing."""
from __future__ import annotations

import itertools

from ..types import ChatFormat, SystemPlacement
from .errors import UnsupportedError

S, U1, A1, U2, A2, U3 = "PRLYSYS0", "PRLYUSR1", "PRLYAST1", "PRLYUSR2", "PRLYAST2", "PRLYUSR3"


def _render(tok, messages, gen: bool) -> str | None:
    try:
        out = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    except Exception:  # noqa: BLE001 - templates raise via raise_exception
        return None
    return out if isinstance(out, str) else None


def _m(role, content):
    return {"role": role, "content": content}


def _split(text: str, markers: list[str]) -> list[str] | None:
    """text = parts[0] + m0 + parts[1] + m1 + ... ; None if a marker is missing."""
    parts, pos = [], 0
    for mk in markers:
        i = text.find(mk, pos)
        if i < 0:
            return None
        parts.append(text[pos:i])
        pos = i + len(mk)
    parts.append(text[pos:])
    return parts


def _strip_prefix(s: str, p: str) -> str | None:
    return s[len(p):] if s.startswith(p) else None


def _strip_suffix(s: str, p: str) -> str | None:
    return s[:len(s) - len(p)] if s.endswith(p) else None


def render_chat_format(f: ChatFormat, messages: list[dict], gen: bool) -> str:
    """The runtime's rendering (runtime/text/chat_format.cpp), in Python."""
    trim = {"system": f.trim_system, "user": f.trim_user, "assistant": f.trim_assistant}
    pre = {"system": f.system_prefix, "user": f.user_prefix, "assistant": f.assistant_prefix}
    suf = {"system": f.system_suffix, "user": f.user_suffix, "assistant": f.assistant_suffix}

    def content(m):
        c = m["content"]
        if m["role"] == "assistant" and f.assistant_strip_through and f.assistant_strip_through in c:
            c = c.split(f.assistant_strip_through)[-1].lstrip("\n")
        return c.strip() if trim[m["role"]] else c
    has_sys = bool(messages) and messages[0]["role"] == "system"
    system = content(messages[0]) if has_sys else f.default_system
    use_sys = has_sys or bool(f.default_system)
    carrier = None
    if use_sys and f.system_placement != SystemPlacement.OwnTurn:
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if users:
            carrier = users[0] if f.system_placement == SystemPlacement.FirstUserTurn else users[-1]
    out = f.begin
    if use_sys and f.system_placement == SystemPlacement.OwnTurn:
        out += f.system_prefix + system + f.system_suffix
    for i, m in enumerate(messages[1:] if has_sys else messages, start=1 if has_sys else 0):
        text = content(m)
        if i == carrier:
            text = system + f.system_separator + text
        out += pre[m["role"]] + text + suf[m["role"]]
    return out + (f.generation_prompt if gen else "")


PROBE_TEXTS = ["Hello!", "  padded with spaces  ", "line one\nline two\n", "Grüße, 你好 🙂", "\tTabbed\t", "x"]


def _probes() -> list[tuple[list[dict], bool]]:
    t = PROBE_TEXTS
    convs = [
        [_m("user", t[0])],
        [_m("system", t[2]), _m("user", t[1])],
        [_m("user", t[1]), _m("assistant", t[2]), _m("user", t[3])],
        [_m("system", t[4]), _m("user", t[3]), _m("assistant", t[1]), _m("user", t[4])],
        [_m("system", t[5]), _m("user", t[2]), _m("assistant", t[4]), _m("user", t[0]), _m("assistant", t[3]),
         _m("user", t[1])],
        [_m("user", t[4]), _m("assistant", t[0]), _m("user", t[2]), _m("assistant", t[5]), _m("user", t[3])],
    ]
    convs.append([_m("user", t[0]), _m("assistant", "<think>\nreasoning\n</think>\n\n" + t[3]), _m("user", t[2])])
    return [(c, True) for c in convs] + [(c, False) for c in convs]


def _prove(tok, f: ChatFormat) -> str | None:
    """None when f renders every probe as the template does; else the first difference."""
    for conv, gen in _probes():
        want = _render(tok, conv, gen)
        if want is None:
            continue  # the template refuses this conversation; the runtime refuses fewer, checked below
        got = render_chat_format(f, conv, gen)
        if got != want:
            return f"conversation {conv!r} (add_generation_prompt={gen}): template gives {want!r}, reduction {got!r}"
    return None


def derive_chat_format(tok) -> ChatFormat:
    r = lambda msgs, gen: _render(tok, msgs, gen)  # noqa: E731
    u = r([_m("user", U1)], False)
    ug = r([_m("user", U1)], True)
    ua = r([_m("user", U1), _m("assistant", A1)], False)
    uau = r([_m("user", U1), _m("assistant", A1), _m("user", U2)], True)
    su = r([_m("system", S), _m("user", U1)], False)
    if None in (u, ug, ua, uau):
        raise UnsupportedError("chat template: cannot render a plain user/assistant conversation")
    pu = _split(u, [U1])
    generation_prompt = _strip_prefix(ug, u)
    pua = _split(ua, [U1, A1])
    puau = _split(uau, [U1, A1, U2])
    if None in (pu, pua, puau) or generation_prompt is None:
        raise UnsupportedError("chat template: messages are not rendered in order with fixed text around them")
    user_suffix = pu[1]
    # From a turn in the history: some templates dress a final assistant
    # message differently (Qwen3 adds an empty <think> block to it).
    assistant_prefix = _strip_prefix(puau[1], user_suffix)
    assistant_suffix = pua[2]
    user_prefix = _strip_prefix(puau[2], assistant_suffix)
    if assistant_prefix is None or user_prefix is None or _strip_suffix(puau[3], generation_prompt) != user_suffix:
        raise UnsupportedError("chat template: turns are not rendered as prefix + content + suffix")
    begin_and_default = _strip_suffix(pu[0], user_prefix)
    if begin_and_default is None:
        raise UnsupportedError("chat template: the first user turn differs from later ones")
    alternate = r([_m("user", U1), _m("user", U2)], False) is None
    # Reasoning dropped from assistant turns in the history (Qwen3).
    strip_through = ""
    think = r([_m("user", U1), _m("assistant", "<think>\nPRLYHIDDEN\n</think>\n\n" + A1), _m("user", U2)], True)
    if think is not None and "PRLYHIDDEN" not in think and A1 in think:
        strip_through = "</think>"

    candidates: list[ChatFormat] = []
    base = dict(user_prefix=user_prefix, user_suffix=user_suffix, assistant_prefix=assistant_prefix,
                assistant_suffix=assistant_suffix, generation_prompt=generation_prompt, alternate=alternate,
                assistant_strip_through=strip_through)
    ps = _split(su, [S, U1]) if su is not None else None
    if ps is not None:
        b_s = ps[0]  # begin + system_prefix
        system_suffix = _strip_suffix(ps[1], user_prefix)
        if system_suffix is not None:
            # begin_and_default is begin alone (no default system turn) or
            # begin + system_prefix + default + system_suffix.
            x = begin_and_default
            if b_s.startswith(x):
                candidates.append(ChatFormat(begin=x, system_prefix=b_s[len(x):], system_suffix=system_suffix,
                                             **base))
            rest = _strip_prefix(x, b_s)
            if rest and rest.endswith(system_suffix) and len(rest) > len(system_suffix):
                candidates.append(ChatFormat(begin="", system_prefix=b_s, system_suffix=system_suffix,
                                             default_system=rest[:len(rest) - len(system_suffix)], **base))
        # System text inside a user turn: "<user_prefix>" + S + sep + U1.
        if ps[0].endswith(user_prefix) and ps[0][:len(ps[0]) - len(user_prefix)] == begin_and_default:
            for placement in (SystemPlacement.LastUserTurn, SystemPlacement.FirstUserTurn):
                candidates.append(ChatFormat(begin=begin_and_default, system_placement=placement,
                                             system_separator=ps[1], **base))
    else:
        # No system role: refuse system messages rather than guess.
        raise UnsupportedError("chat template: cannot render a system message")

    reasons = []
    for cand in candidates:
        first_why = None
        for ts, tu, ta in itertools.product((False, True), repeat=3):
            cand.trim_system, cand.trim_user, cand.trim_assistant = ts, tu, ta
            why = _prove(tok, cand)
            if why is None:
                return cand
            first_why = first_why or why
        reasons.append(first_why)
    raise UnsupportedError("chat template cannot be represented as prefixes/suffixes per role: " +
                           (reasons[0] if reasons else "no consistent reading of its system turn"))
