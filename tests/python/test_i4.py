"""I4 tensors and group-wise quantization (format 1.2) in the reference writer and reader."""

from __future__ import annotations

import numpy as np
import pytest

import parley_format as pf
from parley_format.reader import FormatError


def small_config() -> pf.ModelConfig:
    return pf.ModelConfig(architecture="LlamaForCausalLM", vocab_size=16,
                          decoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=2, ffn_size=16))


def packed_by_hand(q: np.ndarray) -> np.ndarray:
    """The PARLEY_DTYPE_I4 layout spelled out element by element (plugin.h):
    byte i of a row holds element 2i in bits 0-3 and 2i+1 in bits 4-7, two's complement."""
    rows = q.reshape(-1, q.shape[-1])
    out = np.zeros((rows.shape[0], rows.shape[1] // 2), np.uint8)
    for r in range(rows.shape[0]):
        for i in range(rows.shape[1] // 2):
            lo, hi = int(rows[r, 2 * i]), int(rows[r, 2 * i + 1])
            out[r, i] = (lo + 16 if lo < 0 else lo) | ((hi + 16 if hi < 0 else hi) << 4)
    return out.reshape(q.shape[:-1] + (q.shape[-1] // 2,))


def test_pack_matches_the_documented_layout(rng):
    q = rng.integers(-8, 8, size=(5, 3, 10)).astype(np.int8)
    q[0, 0, :4] = [-8, 7, 7, -8]  # both extremes, in both nibbles
    packed = pf.pack_i4(q)
    assert packed.dtype == np.uint8 and packed.shape == (5, 3, 5)
    np.testing.assert_array_equal(packed, packed_by_hand(q))
    assert packed[0, 0, 0] == 0x78 and packed[0, 0, 1] == 0x87
    np.testing.assert_array_equal(pf.unpack_i4(packed), q)
    every = np.arange(-8, 8, dtype=np.int8)  # all 16 values in both positions
    pairs = np.stack(np.meshgrid(every, every), -1).reshape(-1, 2)
    np.testing.assert_array_equal(pf.unpack_i4(pf.pack_i4(pairs)), pairs)


@pytest.mark.parametrize("bad,match", [
    (np.array([[1, 2, 3]], np.int8), "even last dimension"),
    (np.array([[8, 0]], np.int16), r"\[-8, 7\]"),
    (np.array([[-9, 0]], np.int8), r"\[-8, 7\]"),
    (np.array([[0.5, 1.0]], np.float32), "integers"),
])
def test_pack_refuses_what_i4_cannot_hold(bad, match):
    with pytest.raises(ValueError, match=match):
        pf.pack_i4(bad)


def groupwise_entries(rng, n=4, k=64, group=32, dtype="I4"):
    w = rng.standard_normal((n, k)).astype(np.float32)
    scale = (np.abs(w.reshape(n, k // group, group)).max(-1) / 7).astype(np.float32)
    q = np.clip(np.rint(w / np.repeat(scale, group, axis=1)), -8, 7).astype(np.int8)
    data = pf.I4(pf.pack_i4(q), (n, k)) if dtype == "I4" else q
    quant = pf.Quantization(scheme="SymmetricGroupwise", scale_tensor="w.scale", group_size=group)
    return {"w": pf.Quantized(data, quant), "w.scale": scale}, q, scale


@pytest.mark.parametrize("dtype", ["I4", "I8"])
def test_groupwise_round_trip(tmp_path, rng, dtype):
    tensors, q, scale = groupwise_entries(rng, n=6, k=128, group=64, dtype=dtype)
    path = tmp_path / "m.parley"
    summary = pf.write_model(path, small_config(), tensors)
    assert pf.read_preamble(path).format_minor == 2  # I4 / group-wise scales are format 1.2
    model = pf.verify_file(path)
    infos = {t.name: t for t in pf.tensor_infos(model)}
    w = infos["w"]
    assert w.dtype == getattr(pf.DType, dtype) and w.shape == (6, 128)
    assert w.length == (6 * 128 // 2 if dtype == "I4" else 6 * 128) == summary["tensors"]["w"][1]
    assert (w.scheme, w.axis, w.group_size, w.scale_tensor) == (pf.QuantScheme.SymmetricGroupwise, 0, 64, "w.scale")
    assert infos["w.scale"].shape == (6, 2)
    np.testing.assert_array_equal(pf.read_tensor(path, "w"), q)
    want = q.astype(np.float32) * np.repeat(scale, 64, axis=1)
    np.testing.assert_array_equal(pf.read_dequantized(path, "w"), want)


def test_per_channel_files_stay_format_1_0(tmp_path):
    q = np.ones((4, 8), np.int8)
    quant = pf.Quantization(scheme="SymmetricPerChannel", scale_tensor="s")
    pf.write_model(tmp_path / "m.parley", small_config(), {"w": pf.Quantized(q, quant), "s": np.ones(4, np.float32)})
    assert pf.read_preamble(tmp_path / "m.parley").format_minor == 0


def _edit(entries, name, **changes):
    v = entries[name]
    q = v.quantization
    for k, val in changes.items():
        setattr(q, k, val)
    return entries


@pytest.mark.parametrize("case,match", [
    ("group 48", "group_size 48 is not one of 32, 64, 128"),
    ("group 0", "group_size 0 is not one of"),
    ("group does not divide", "group_size 128 does not divide the row length 64"),
    ("scale shape", r"has shape \[4, 2\], expected \[4, 1\]"),
    ("scale dtype", "must be F32"),
    ("nan scale", "element 3 is not finite"),
    ("inf per-channel scale", "element 1 is not finite"),
    ("axis", "axis 0"),
    ("group on per-channel", "only valid with scheme SymmetricGroupwise"),
    ("f32 tensor", "needs an I8 or I4 tensor, got F32"),
    ("rank 3", "needs a 2-D tensor"),
    ("i4 per-channel", "SymmetricPerChannel needs an I8 tensor, got I4"),
    ("i4 short", r"holds 127 bytes, shape \[4, 64\] needs 128"),
    ("i4 odd", r"even last dimension .* shape \[2, 3\]"),
    ("i4 zero odd", r"even last dimension .* shape \[3\]"),
    ("i4 rank 0", r"even last dimension .* shape \[\]"),
    ("i4 not uint8", "uint8"),
])
def test_writer_refuses_malformed_i4_and_groupwise(tmp_path, rng, case, match):
    e, q, scale = groupwise_entries(rng)
    Q = pf.Quantization
    if case == "group 48":
        _edit(e, "w", group_size=48)
    elif case == "group 0":
        _edit(e, "w", group_size=0)
    elif case == "group does not divide":
        _edit(e, "w", group_size=128)
    elif case == "scale shape":
        _edit(e, "w", group_size=64)
    elif case == "scale dtype":
        e["w.scale"] = scale.astype(np.float16)
    elif case == "nan scale":
        scale = scale.copy()
        scale.flat[3] = np.nan
        e["w.scale"] = scale
    elif case == "inf per-channel scale":
        e = {"w": pf.Quantized(q, Q(scheme="SymmetricPerChannel", scale_tensor="s")),
             "s": np.array([1, np.inf, 1, 1], np.float32)}
    elif case == "axis":
        _edit(e, "w", axis=1)
    elif case == "group on per-channel":
        e = {"w": pf.Quantized(q, Q(scheme="SymmetricPerChannel", scale_tensor="s", group_size=32)),
             "s": np.ones(4, np.float32)}
    elif case == "f32 tensor":
        e["w"] = pf.Quantized(q.astype(np.float32), e["w"].quantization)
    elif case == "rank 3":
        e["w"] = pf.Quantized(q.reshape(2, 2, 64), e["w"].quantization)
    elif case == "i4 per-channel":
        e = {"w": pf.Quantized(pf.I4(pf.pack_i4(q), q.shape), Q(scheme="SymmetricPerChannel", scale_tensor="s")),
             "s": np.ones(4, np.float32)}
    elif case == "i4 short":
        e["w"] = pf.Quantized(pf.I4(pf.pack_i4(q).reshape(-1)[:-1], q.shape), e["w"].quantization)
    elif case == "i4 odd":
        e = {"x": pf.I4(np.zeros(3, np.uint8), (2, 3))}
    elif case == "i4 zero odd":
        e = {"x": pf.ZeroTensor((3,), "I4")}
    elif case == "i4 rank 0":
        e = {"x": pf.ZeroTensor((), "I4")}
    elif case == "i4 not uint8":
        e = {"x": pf.I4(pf.pack_i4(q).astype(np.int8), q.shape)}
    path = tmp_path / "m.parley"
    with pytest.raises(ValueError, match=match):
        pf.write_model(path, small_config(), e)
    assert not path.exists()


def test_reader_checks_i4_and_groupwise(tmp_path, rng):
    """verify_file refuses what the loader refuses (planted past the writer's checks)."""
    import parley_format.writer as W

    e, _, _ = groupwise_entries(rng)
    path = tmp_path / "m.parley"
    pf.write_model(path, small_config(), e)
    pf.verify_file(path)
    orig = W._collect_tensors

    def sloppy(tensors):  # the writer's checks pass, then the group size is damaged
        entries = orig(tensors)
        for x in entries:
            if x.quantization is not None:
                x.quantization.group_size = 48
        return entries

    W._collect_tensors = sloppy
    try:
        pf.write_model(path, small_config(), e)
    finally:
        W._collect_tensors = orig
    with pytest.raises(FormatError, match="bad quantization"):
        pf.verify_file(path)
