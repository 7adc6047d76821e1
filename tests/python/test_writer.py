"""Tests for the reference Parley model-file writer (formats/python)."""

from __future__ import annotations

import filecmp
import math
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xxhash

import make_test_models as mtm
import parley_format as pf
from parley_format.reader import FormatError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCHEMA = os.path.join(ROOT, "formats", "parley.fbs")
PKG = os.path.join(ROOT, "formats", "python")
GIB = 1024**3


def small_config(**over) -> pf.ModelConfig:
    c = pf.ModelConfig(
        architecture="LlamaForCausalLM",
        vocab_size=16,
        decoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=2, ffn_size=16),
    )
    for k, v in over.items():
        setattr(c, k, v)
    return c


def raw_file(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def check_layout(path) -> tuple[pf.Preamble, object]:
    """Checks everything FORMAT.md sections 1-3 say about the layout."""
    data = raw_file(path)
    p = pf.read_preamble(path)
    assert data[:8] == b"\x89\x50\x52\x4c\x59\x0d\x0a\x1a"
    assert struct.unpack_from("<HHI", data, 8) == (1, p.format_minor, 64)
    assert p.preamble_size == 64 and p.header_offset == 64
    assert struct.unpack_from("<Q", data, 56)[0] == xxhash.xxh3_64_intdigest(data[:56])
    header = data[64 : 64 + p.header_length]
    assert header[4:8] == b"PRLY"
    assert p.header_checksum == xxhash.xxh3_64_intdigest(header)
    assert p.data_offset % 64 == 0
    assert p.data_offset >= 64 + p.header_length
    assert data[64 + p.header_length : p.data_offset] == bytes(p.data_offset - 64 - p.header_length)
    assert p.data_offset + p.data_length == len(data) == os.path.getsize(path)
    m = pf.verify_file(path)  # offsets, overlaps, checksums, zero gaps
    return p, m


# --- the generated bindings ---------------------------------------------------


def test_fbs_bindings_match_schema(tmp_path):
    """Fails when parley_format/_fbs drifted from parley.fbs: rerun
    formats/python/regen_schema.sh (with flatc 2.0.8) and commit the result."""
    if shutil.which("flatc") is None and not os.environ.get("FLATC"):
        pytest.skip("flatc not found (set FLATC or install flatc 2.0.8); drift check not run")
    out = tmp_path / "_fbs"
    subprocess.run(["bash", os.path.join(PKG, "regen_schema.sh"), str(out)], check=True)
    committed = os.path.join(PKG, "parley_format", "_fbs")
    want = sorted(f for f in os.listdir(out) if f.endswith(".py"))
    have = sorted(f for f in os.listdir(committed) if f.endswith(".py"))
    assert have == want, f"file lists differ: committed {have}, generated {want}"
    _, mismatch, errors = filecmp.cmpfiles(committed, out, want, shallow=False)
    assert not mismatch and not errors, (
        f"committed bindings differ from flatc output for {mismatch + errors}; "
        "run formats/python/regen_schema.sh"
    )


def test_fbs_enums_match_python_enums():
    import importlib

    class _M:
        def __getattr__(self, name):
            return importlib.import_module(f"parley_format._fbs.{name}")

    _fbs = _M()
    pairs = [
        (_fbs.DType.DType, pf.DType), (_fbs.ModelKind.ModelKind, pf.ModelKind),
        (_fbs.NormKind.NormKind, pf.NormKind), (_fbs.NormPlacement.NormPlacement, pf.NormPlacement),
        (_fbs.PositionKind.PositionKind, pf.PositionKind), (_fbs.Activation.Activation, pf.Activation),
        (_fbs.RopeScaling.RopeScaling, pf.RopeScaling), (_fbs.QuantScheme.QuantScheme, pf.QuantScheme),
        (_fbs.TokenizerKind.TokenizerKind, pf.TokenizerKind), (_fbs.TokenizerRole.TokenizerRole, pf.TokenizerRole),
    ]
    for fb, py in pairs:
        fb_members = {k: v for k, v in vars(fb).items() if not k.startswith("__")}
        assert fb_members == {m.name: m.value for m in py}, py.__name__


def test_dtype_values_match_plugin_h():
    text = open(os.path.join(ROOT, "include", "parley", "plugin.h")).read()
    for d in pf.DType:
        assert f"PARLEY_DTYPE_{d.name} = {d.value}," in text


# --- round trips ----------------------------------------------------------------


def stack_fields(fb_stack) -> dict:
    names = [
        "NumLayers", "HiddenSize", "NumHeads", "NumKvHeads", "HeadDim", "FfnSize", "Activation",
        "GatedFfn", "Norm", "NormPlacement", "NormEpsilon", "QkvBias", "OutBias", "FfnBias", "QkNorm",
        "EmbeddingNorm", "FinalNorm", "Position", "MaxPositions", "PositionOffset", "EmbeddingScale",
        "RopeTheta", "RopeDim", "RopeInterleaved", "RopeScaling", "RopeScalingFactor",
        "RopeLowFreqFactor", "RopeHighFreqFactor", "RopeOriginalMaxPositions",
    ]
    return {n: getattr(fb_stack, n)() for n in names}


def expected_stack(s: pf.StackConfig) -> dict:
    f32 = lambda x: pytest.approx(float(np.float32(x)), rel=1e-7)  # noqa: E731
    return {
        "NumLayers": s.num_layers, "HiddenSize": s.hidden_size, "NumHeads": s.num_heads,
        "NumKvHeads": s.num_kv_heads, "HeadDim": s.head_dim, "FfnSize": s.ffn_size,
        "Activation": int(s.activation), "GatedFfn": s.gated_ffn, "Norm": int(s.norm),
        "NormPlacement": int(s.norm_placement), "NormEpsilon": f32(s.norm_epsilon),
        "QkvBias": s.qkv_bias, "OutBias": s.out_bias, "FfnBias": s.ffn_bias, "QkNorm": s.qk_norm,
        "EmbeddingNorm": s.embedding_norm, "FinalNorm": s.final_norm, "Position": int(s.position),
        "MaxPositions": s.max_positions, "PositionOffset": s.position_offset,
        "EmbeddingScale": f32(s.embedding_scale), "RopeTheta": f32(s.rope_theta), "RopeDim": s.rope_dim,
        "RopeInterleaved": s.rope_interleaved, "RopeScaling": int(s.rope_scaling),
        "RopeScalingFactor": f32(s.rope_scaling_factor), "RopeLowFreqFactor": f32(s.rope_low_freq_factor),
        "RopeHighFreqFactor": f32(s.rope_high_freq_factor),
        "RopeOriginalMaxPositions": s.rope_original_max_positions,
    }


def check_tensors(path, m, given: dict):
    p = pf.read_preamble(path)
    data = raw_file(path)
    infos = pf.tensor_infos(m)
    names = [i.name for i in infos]
    assert names == sorted(given, key=lambda n: n.encode())
    regions = []
    for i, info in enumerate(infos):
        value = given[info.name]
        quant = None
        if isinstance(value, pf.Quantized):
            value, quant = value.data, value.quantization
        arr = value.bits if isinstance(value, pf.BF16) else value
        expect_dtype = pf.DType.BF16 if isinstance(value, pf.BF16) else {
            np.float32: pf.DType.F32, np.float16: pf.DType.F16, np.int8: pf.DType.I8,
            np.int32: pf.DType.I32, np.uint8: pf.DType.U8, np.int64: pf.DType.I64,
        }[arr.dtype.type]
        assert info.dtype == expect_dtype
        assert info.shape == arr.shape
        assert info.offset % 64 == 0
        assert info.length == arr.nbytes
        raw = data[p.data_offset + info.offset : p.data_offset + info.offset + info.length]
        assert raw == arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        assert info.checksum == xxhash.xxh3_64_intdigest(raw)
        np.testing.assert_array_equal(pf.read_tensor(path, info.name), arr)
        fb_q = m.Tensors(i).Quantization()
        if quant is None:
            assert fb_q is None
        else:
            assert fb_q.Scheme() == int(quant.scheme)
            assert fb_q.Axis() == quant.axis
            assert fb_q.ScaleTensor().decode() == quant.scale_tensor
        regions.append((info.offset, info.length))
    # written in name order, each at the next multiple of 64 after the previous
    for (o1, l1), (o2, _) in zip(regions, regions[1:]):
        assert o2 == (o1 + l1 + 63) // 64 * 64
    if regions:
        assert p.data_length == regions[-1][0] + regions[-1][1]


def test_tiny_decoder_roundtrip(tmp_path):
    path = tmp_path / "tiny_decoder.parley"
    info = mtm.write_tiny_decoder(str(path))
    p, m = check_layout(path)
    assert p.format_minor == 0
    assert info["file_size"] == os.path.getsize(path)

    cfg = mtm.tiny_decoder_config()
    c = m.Config()
    assert c.Architecture() == b"LlamaForCausalLM"
    assert c.Kind() == pf.ModelKind.DecoderOnly
    assert c.VocabSize() == 64
    assert c.Encoder() is None
    assert c.TieWordEmbeddings() is False and c.FinalLogitsBias() is False
    assert stack_fields(c.Decoder()) == expected_stack(cfg.decoder)

    check_tensors(path, m, mtm.tiny_decoder_tensors(np.random.default_rng(mtm.SEED)))
    names = [t.name for t in pf.tensor_infos(m)]
    for n in ("decoder.embed_tokens.weight", "decoder.layers.0.self_attn.q_proj.weight", "decoder.norm.weight"):
        assert n in names
    q = m.Tensors(names.index("decoder.layers.1.mlp.down_proj.weight"))
    assert q.Dtype() == pf.DType.I8
    assert q.Quantization().Scheme() == pf.QuantScheme.SymmetricPerChannel

    assert m.TokenizersLength() == 1
    tok = m.Tokenizers(0)
    assert tok.Kind() == pf.TokenizerKind.ByteLevelBPE and tok.Role() == pf.TokenizerRole.Shared
    blob = tok.Model()
    data = raw_file(path)
    blob_bytes = data[p.data_offset + blob.Offset() : p.data_offset + blob.Offset() + blob.Length()]
    assert blob_bytes == mtm.tiny_bpe_json()
    assert blob.Offset() % 64 == 0
    assert blob.Checksum() == xxhash.xxh3_64_intdigest(blob_bytes)
    assert tok.PreTokenizerRegex().decode().startswith("'s|'t")
    specials = [(tok.SpecialTokens(i).Id(), tok.SpecialTokens(i).Content().decode()) for i in range(tok.SpecialTokensLength())]
    assert specials == [(0, "<pad>"), (1, "<s>"), (2, "</s>"), (3, "<|end|>")]

    g = m.Generation()
    assert (g.BosTokenId(), g.PadTokenId(), g.MaxLength()) == (1, 0, 64)
    assert [g.EosTokenIds(i) for i in range(g.EosTokenIdsLength())] == [2, 3]
    assert g.DecoderStartTokenId() == -1 and g.NumBeams() == 1 and g.TopP() == 1.0
    assert g.SuppressTokensIsNone()

    assert m.ChatTemplate().Source().decode() == mtm.CHAT_TEMPLATE
    meta = [(m.Metadata(i).Key().decode(), m.Metadata(i).Value().decode()) for i in range(m.MetadataLength())]
    assert meta == [("license", "MIT"), ("source", "tests/data/make_test_models.py")]


def test_tiny_seq2seq_roundtrip(tmp_path):
    path = tmp_path / "tiny_seq2seq.parley"
    mtm.write_tiny_seq2seq(str(path))
    p, m = check_layout(path)
    cfg = mtm.tiny_seq2seq_config()
    c = m.Config()
    assert c.Architecture() == b"MarianMTModel"
    assert c.Kind() == pf.ModelKind.EncoderDecoder
    assert c.FinalLogitsBias() is True and c.TieWordEmbeddings() is True
    assert stack_fields(c.Encoder()) == expected_stack(cfg.encoder)
    assert stack_fields(c.Decoder()) == expected_stack(cfg.decoder)
    assert c.Decoder().Position() == pf.PositionKind.Sinusoidal
    assert c.Decoder().NormPlacement() == pf.NormPlacement.Post
    assert c.Decoder().EmbeddingScale() == pytest.approx(4.0)
    check_tensors(path, m, mtm.tiny_seq2seq_tensors(np.random.default_rng(mtm.SEED + 1)))
    assert "final_logits_bias" in [t.name for t in pf.tensor_infos(m)]
    roles = [(m.Tokenizers(i).Kind(), m.Tokenizers(i).Role()) for i in range(m.TokenizersLength())]
    assert roles == [(pf.TokenizerKind.SentencePiece, pf.TokenizerRole.Source),
                     (pf.TokenizerKind.SentencePiece, pf.TokenizerRole.Target)]
    assert m.ChatTemplate() is None
    g = m.Generation()
    assert g.NumBeams() == 4 and g.DecoderStartTokenId() == 47
    assert [g.SuppressTokens(i) for i in range(g.SuppressTokensLength())] == [47]


def test_make_test_models_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "data", "make_test_models.py"), str(d)],
                       check=True, capture_output=True)
    for name in ("tiny_decoder.parley", "tiny_seq2seq.parley"):
        assert raw_file(a / name) == raw_file(b / name)
        check_layout(a / name)


def test_every_dtype_rank_and_empty_tensor(tmp_path, rng):
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((7,)).astype(np.float16),
        "bf16": pf.BF16(rng.integers(0, 2**16, size=(2, 3, 5), dtype=np.uint16)),
        "i8": rng.integers(-128, 128, size=(9,), dtype=np.int8),
        "i32": rng.integers(-(2**31), 2**31, size=(4, 1), dtype=np.int32),
        "u8": rng.integers(0, 256, size=(1, 1, 1, 1, 1, 1, 1, 3), dtype=np.uint8),  # rank 8
        "i64": rng.integers(-(2**63), 2**63 - 1, size=(5,), dtype=np.int64),
        "scalar": np.array(3.5, dtype=np.float32),  # rank 0
        "empty": np.zeros((0, 4), dtype=np.float32),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32)),
        "strided": rng.standard_normal((6, 6)).astype(np.float32)[::2, 1::2],
    }
    path = tmp_path / "dtypes.parley"
    pf.write_model(path, small_config(), tensors)
    _, m = check_layout(path)
    expected = dict(tensors)
    expected["big_endian"] = tensors["big_endian"].astype("<i4")
    check_tensors(path, m, expected)
    infos = {i.name: i for i in pf.tensor_infos(m)}
    assert infos["scalar"].shape == () and infos["scalar"].length == 4
    assert infos["empty"].length == 0 and infos["empty"].checksum == xxhash.xxh3_64_intdigest(b"")
    assert infos["bf16"].dtype == pf.DType.BF16 and infos["u8"].shape == (1,) * 7 + (3,)


def test_names_and_metadata_sorted_bytewise(tmp_path):
    names = ["b", "B", "a.10", "a.9", "é", "z", "a", "_"]
    tensors = {n: np.full((i + 1,), i, np.int32) for i, n in enumerate(names)}
    meta = {"zeta": "1", "Alpha": "2", "ä": "3", "alpha": "4", "": "empty key"}
    path = tmp_path / "sorted.parley"
    pf.write_model(path, small_config(), tensors, metadata=meta)
    _, m = check_layout(path)
    got = [t.name for t in pf.tensor_infos(m)]
    assert [n.encode() for n in got] == sorted(n.encode() for n in names)
    assert got[-1] == "é"
    keys = [m.Metadata(i).Key() for i in range(m.MetadataLength())]
    assert keys == sorted(k.encode() for k in meta)
    assert {m.Metadata(i).Key().decode(): m.Metadata(i).Value().decode() for i in range(m.MetadataLength())} == meta


def test_defaults_and_options(tmp_path):
    path = tmp_path / "defaults.parley"
    pf.write_model(path, {"architecture": "X", "vocab_size": 5,
                          "decoder": {"num_layers": 1, "hidden_size": 4, "num_heads": 1, "ffn_size": 8}},
                   {}, generation={}, format_minor=3)
    p, m = check_layout(path)
    assert p.format_minor == 3 and p.data_length == 0
    assert m.TensorsLength() == 0 and not m.TensorsIsNone()
    assert m.TokenizersIsNone() and m.MetadataIsNone() and m.ChatTemplate() is None
    d = m.Config().Decoder()
    assert stack_fields(d) == expected_stack(pf.StackConfig(num_layers=1, hidden_size=4, num_heads=1, ffn_size=8))
    g = m.Generation()
    assert (g.BosTokenId(), g.NumBeams(), g.Temperature(), g.EosTokenIdsLength()) == (-1, 1, 1.0, 0)


def test_enum_names_accepted_and_eos_int(tmp_path):
    cfg = small_config()
    cfg.decoder.activation = "gelu_tanh".replace("_", "")
    cfg.decoder.position = "none"
    cfg.decoder.norm = 1
    path = tmp_path / "e.parley"
    pf.write_model(path, cfg, {}, generation={"eos_token_ids": 7},
                   tokenizers=[{"model": b"x", "kind": "bytelevelbpe", "role": "target",
                                "special_tokens": [(5, "<x>"), {"id": 6, "content": "<y>"}]}])
    m = pf.read_header(path)
    d = m.Config().Decoder()
    assert (d.Activation(), d.Position(), d.Norm()) == (pf.Activation.GeluTanh, pf.PositionKind.None_, pf.NormKind.RMSNorm)
    assert m.Generation().EosTokenIds(0) == 7
    assert m.Tokenizers(0).Role() == pf.TokenizerRole.Target


def test_same_input_same_bytes(tmp_path):
    t = {"w": np.arange(100, dtype=np.float32)}
    pf.write_model(tmp_path / "1.parley", small_config(), t, metadata={"a": "b"})
    pf.write_model(tmp_path / "2.parley", small_config(), t, metadata={"a": "b"})
    assert raw_file(tmp_path / "1.parley") == raw_file(tmp_path / "2.parley")
    assert not os.path.exists(tmp_path / "1.parley.partial")


# --- ZeroTensor -------------------------------------------------------------------


def test_zero_checksum_streaming_matches_one_shot():
    for n in (0, 1, 63, 64, 1000, 16 * 1024 * 1024, 16 * 1024 * 1024 + 3, 40 * 1024 * 1024 + 17):
        assert pf.xxh3_64_of_zeros(n) == xxhash.xxh3_64_intdigest(bytes(n)), n


def test_zero_tensor_small(tmp_path):
    path = tmp_path / "zeros.parley"
    info = pf.write_model(path, small_config(), {
        "a": np.ones(3, np.float32),
        "m.zero": pf.ZeroTensor((100, 3), "f16"),
        "n.zero_bf16": pf.ZeroTensor([5], pf.DType.BF16),
        "o.zero_np": pf.ZeroTensor((2, 2), np.int64),
        "z": np.arange(4, dtype=np.int8),
    })
    _, m = check_layout(path)
    infos = {i.name: i for i in pf.tensor_infos(m)}
    assert infos["m.zero"].dtype == pf.DType.F16 and infos["m.zero"].length == 600
    assert infos["n.zero_bf16"].dtype == pf.DType.BF16
    assert infos["o.zero_np"].dtype == pf.DType.I64 and infos["o.zero_np"].length == 32
    np.testing.assert_array_equal(pf.read_tensor(path, "m.zero"), np.zeros((100, 3), np.float16))
    np.testing.assert_array_equal(pf.read_tensor(path, "z"), np.arange(4, dtype=np.int8))
    assert info["tensors"]["m.zero"][2] == xxhash.xxh3_64_intdigest(bytes(600))


def test_trailing_zero_tensor_extends_file(tmp_path):
    path = tmp_path / "tail.parley"
    pf.write_model(path, small_config(), {"a": np.ones(3, np.float32), "b": pf.ZeroTensor((1000,))})
    p, _ = check_layout(path)
    assert os.path.getsize(path) == p.data_offset + 64 + 4000


@pytest.mark.skipif(sys.platform == "win32", reason="st_blocks is POSIX")
def test_big_sparse_file(tmp_path, rng):
    """A > 4 GiB file with a tensor past 4 GiB, written as a hole."""
    free = shutil.disk_usage(tmp_path).free
    if free < 256 * 1024 * 1024:
        pytest.skip(f"only {free} bytes free in {tmp_path}")
    path = tmp_path / "big_sparse.parley"
    small = rng.standard_normal((16, 16)).astype(np.float32)
    rows = 1105921  # F32 x 1024 columns: just over 4.2 GiB
    pf.write_model(path, small_config(), {"big.zero": pf.ZeroTensor((rows, 1024)), "zz.after_4g": small})
    st = os.stat(path)
    p = pf.read_preamble(path)
    assert st.st_size == p.data_offset + p.data_length > int(4.2 * GIB)
    if st.st_blocks * 512 > 64 * 1024 * 1024:
        pytest.fail(f"file is not sparse: {st.st_blocks * 512} bytes allocated for {st.st_size}")
    # reading the hole back costs seconds; check the layout and the small tensor only
    m = pf.verify_file(path, checksums=False, check_gaps=False)
    infos = {i.name: i for i in pf.tensor_infos(m)}
    assert infos["big.zero"].offset == 0 and infos["big.zero"].length == rows * 4096
    assert infos["big.zero"].checksum == pf.xxh3_64_of_zeros(rows * 4096)
    after = infos["zz.after_4g"]
    assert after.offset > 4 * GIB and after.offset % 64 == 0
    np.testing.assert_array_equal(pf.read_tensor(path, "zz.after_4g"), small)
    assert after.checksum == xxhash.xxh3_64_intdigest(small.tobytes())


def test_make_big_sparse_main(tmp_path):
    """make_test_models.py --big writes big_sparse.parley quickly and sparsely."""
    if shutil.disk_usage(tmp_path).free < 256 * 1024 * 1024:
        pytest.skip("not enough disk space")
    import time
    t0 = time.perf_counter()
    mtm.write_big_sparse(str(tmp_path / "big_sparse.parley"))
    assert time.perf_counter() - t0 < 10
    st = os.stat(tmp_path / "big_sparse.parley")
    assert st.st_size > 4.5 * GIB
    assert st.st_blocks * 512 < 64 * 1024 * 1024
    m = pf.verify_file(tmp_path / "big_sparse.parley", checksums=False, check_gaps=False)
    infos = {i.name: i for i in pf.tensor_infos(m)}
    assert infos["big.zero"].shape == (1179648, 1024) and infos["big.zero"].length == int(4.5 * GIB)
    assert infos["zz.after_4g"].offset > 4 * GIB


# --- invalid input ------------------------------------------------------------------


def _bad(**kw):
    args = dict(config=small_config(), tensors={"w": np.zeros(4, np.float32)})
    args.update(kw)
    return args


F32x4 = np.zeros(4, np.float32)
Q = pf.Quantization(scheme="SymmetricPerChannel", axis=0, scale_tensor="s")

INVALID = [
    ("duplicate", _bad(tensors=[("w", F32x4), ("w", F32x4)]), "duplicate tensor name 'w'"),
    ("float64", _bad(tensors={"w": np.zeros(3)}), "unsupported dtype float64"),
    ("bool", _bad(tensors={"w": np.zeros(3, bool)}), "unsupported dtype bool"),
    ("uint16", _bad(tensors={"w": np.zeros(3, np.uint16)}), "BF16"),
    ("bf16 of float", _bad(tensors={"w": pf.BF16(np.zeros(3, np.float32))}), "uint16"),
    ("list value", _bad(tensors={"w": [1.0, 2.0]}), "unsupported value"),
    ("rank 9", _bad(tensors={"w": np.zeros((1,) * 9, np.float32)}), "rank 9 exceeds"),
    ("zero rank 9", _bad(tensors={"w": pf.ZeroTensor((1,) * 9)}), "rank 9 exceeds"),
    ("negative dim", _bad(tensors={"w": pf.ZeroTensor((2, -1))}), "dimension -1"),
    ("zero bad dtype", _bad(tensors={"w": pf.ZeroTensor((2,), "f64")}), "unsupported dtype"),
    ("empty name", _bad(tensors={"": F32x4}), "must not be empty"),
    ("long name", _bad(tensors={"x" * 513: F32x4}), "more than 512"),
    ("nul name", _bad(tensors={"a\0b": F32x4}), "NUL"),
    ("non-str name", _bad(tensors={1: F32x4}), "must be a str"),
    ("scale missing", _bad(tensors={"w": pf.Quantized(np.zeros((4, 2), np.int8), Q)}), "scale tensor 's' is not in the tensor table"),
    ("scale unnamed", _bad(tensors={"w": pf.Quantized(np.zeros((4, 2), np.int8), pf.Quantization(scheme=1))}), "scale_tensor is missing"),
    ("scale not f32", _bad(tensors={"w": pf.Quantized(np.zeros((4, 2), np.int8), Q), "s": np.zeros(4, np.float16)}), "must be F32"),
    ("scale wrong len", _bad(tensors={"w": pf.Quantized(np.zeros((4, 2), np.int8), Q), "s": np.zeros(2, np.float32)}), "expected [4]"),
    ("quant axis", _bad(tensors={"w": pf.Quantized(np.zeros((4, 2), np.int8), pf.Quantization(scheme=1, axis=2, scale_tensor="s")), "s": np.zeros(2, np.float32)}), "axis 2 out of range"),
    ("quant dtype", _bad(tensors={"w": pf.Quantized(np.zeros((4, 2), np.float32), Q), "s": np.zeros(4, np.float32)}), "needs an I8 tensor"),
    ("vocab 0", _bad(config=small_config(vocab_size=0)), "config.vocab_size"),
    ("vocab big", _bad(config=small_config(vocab_size=16777217)), "config.vocab_size"),
    ("no layers", _bad(config=small_config(decoder=pf.StackConfig(num_layers=0, hidden_size=8, num_heads=2))), "config.decoder.num_layers"),
    ("no ffn", _bad(config=small_config(decoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=2))), "config.decoder.ffn_size"),
    ("llama3 factors", _bad(config=small_config(decoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=2, ffn_size=16, rope_scaling="Llama3", rope_original_max_positions=64, rope_low_freq_factor=4.0, rope_high_freq_factor=4.0))), "rope_high_freq_factor"),
    ("learned without rows", _bad(config=small_config(decoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=2, ffn_size=16, position="Learned"))), "config.decoder.max_positions"),
    ("kv heads", _bad(config=small_config(decoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=4, num_kv_heads=3))), "does not divide"),
    ("head dim", _bad(config=small_config(decoder=pf.StackConfig(num_layers=1, hidden_size=10, num_heads=4))), "not divisible"),
    ("rope dim odd", _bad(config=small_config(decoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=2, rope_dim=3, ffn_size=16))), "rope_dim"),
    ("eps", _bad(config=small_config(decoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=2, norm_epsilon=1e-50, ffn_size=16))), "norm_epsilon"),
    ("theta", _bad(config=small_config(decoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=2, rope_theta=math.inf, ffn_size=16))), "rope_theta"),
    ("scale inf", _bad(config=small_config(decoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=2, embedding_scale=1e39, ffn_size=16))), "embedding_scale"),
    ("activation", _bad(config=small_config(decoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=2, activation="swish"))), "activation"),
    ("no encoder", _bad(config=small_config(kind="EncoderDecoder")), "config.encoder is required"),
    ("stray encoder", _bad(config=small_config(encoder=pf.StackConfig(num_layers=1, hidden_size=8, num_heads=2))), "DecoderOnly"),
    ("unknown field", _bad(config={"architecture": "X", "vocab_size": 2, "decoder": {"num_layers": 1, "hidden_size": 2, "num_heads": 1, "heads": 3}}), "unknown field"),
    ("no arch", _bad(config={"vocab_size": 2, "decoder": {}}), "architecture"),
    ("dup metadata", _bad(metadata=[("a", "1"), ("a", "2")]), "duplicate metadata key 'a'"),
    ("metadata value", _bad(metadata={"a": 1}), "must be str"),
    ("tokenizer model", _bad(tokenizers=[pf.Tokenizer(model="text")]), "tokenizers[0].model"),
    ("tokenizer kind", _bad(tokenizers=[pf.Tokenizer(model=b"", kind="wordpiece")]), "tokenizers[0].kind"),
    ("eos range", _bad(generation=pf.GenerationConfig(eos_token_ids=[2**31])), "generation.eos_token_ids"),
    ("minor", _bad(format_minor=70000), "format_minor"),
    ("chat template", _bad(chat_template=b"bytes"), "chat_template"),
]


@pytest.mark.parametrize("args,message", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_input(tmp_path, args, message):
    path = tmp_path / "bad.parley"
    args = dict(args)
    with pytest.raises(ValueError) as e:
        pf.write_model(path, args.pop("config"), args.pop("tensors"), **args)
    assert message in str(e.value)
    assert not path.exists() and not (tmp_path / "bad.parley.partial").exists()


# --- the reader rejects damage --------------------------------------------------------


def test_reader_detects_corruption(tmp_path):
    path = tmp_path / "c.parley"
    pf.write_model(path, small_config(), {"w": np.arange(64, dtype=np.float32)})
    good = raw_file(path)
    p = pf.read_preamble(path)

    def damaged(pos, byte=0x55):
        b = bytearray(good)
        b[pos] ^= byte
        path.write_bytes(bytes(b))

    damaged(0)
    with pytest.raises(FormatError, match="magic"):
        pf.read_preamble(path)
    damaged(30)
    with pytest.raises(FormatError, match="preamble_checksum"):
        pf.read_preamble(path)
    damaged(70)
    with pytest.raises(FormatError, match="header_checksum"):
        pf.read_header(path)
    damaged(p.data_offset + 5)
    with pytest.raises(FormatError, match="tensor 'w': checksum"):
        pf.verify_file(path)
    path.write_bytes(good + b"\0")
    with pytest.raises(FormatError, match="file size"):
        pf.read_preamble(path)


# --- cross-check with the C++ FlatBuffers verifier --------------------------------------

VERIFY_CPP = textwrap.dedent("""
    #include "parley_generated.h"
    #include <cstdio>
    #include <vector>
    int main(int argc, char** argv) {
      for (int i = 1; i < argc; ++i) {
        FILE* f = std::fopen(argv[i], "rb");
        std::vector<uint8_t> b; int c;
        while ((c = std::fgetc(f)) != EOF) b.push_back((uint8_t)c);
        std::fclose(f);
        flatbuffers::Verifier::Options o; o.max_depth = 64; o.max_tables = 1000000;
        flatbuffers::Verifier v(b.data(), b.size(), o);
        if (!parley::format::VerifyModelBuffer(v)) { std::printf("FAIL %s\\n", argv[i]); return 1; }
        auto* m = parley::format::GetModel(b.data());
        for (auto* t : *m->tensors())
          if (m->tensors()->LookupByKey(t->name()->c_str()) != t) { std::printf("LOOKUP %s\\n", t->name()->c_str()); return 1; }
      }
      std::printf("OK\\n");
      return 0;
    }
""")


def test_cpp_flatbuffers_verifier_accepts_headers(tmp_path):
    flatc, cxx = shutil.which("flatc"), shutil.which("c++") or shutil.which("g++")
    if not flatc or not cxx or not os.path.exists("/usr/include/flatbuffers/flatbuffers.h"):
        pytest.skip("needs flatc, a C++ compiler and the flatbuffers headers")
    subprocess.run([flatc, "--cpp", "--scoped-enums", "-o", str(tmp_path), SCHEMA], check=True)
    (tmp_path / "v.cpp").write_text(VERIFY_CPP)
    subprocess.run([cxx, "-std=c++17", "-I", str(tmp_path), str(tmp_path / "v.cpp"), "-o", str(tmp_path / "v")], check=True)
    headers = []
    for name, fn in (("d", mtm.write_tiny_decoder), ("s", mtm.write_tiny_seq2seq)):
        fn(str(tmp_path / f"{name}.parley"))
        _, h = pf.read_header_bytes(tmp_path / f"{name}.parley")
        (tmp_path / f"{name}.bin").write_bytes(h)
        headers.append(str(tmp_path / f"{name}.bin"))
    r = subprocess.run([str(tmp_path / "v"), *headers], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stdout + r.stderr
