"""parley-convert --lora: PEFT LoRA adapters merged at conversion (no torch).

The reference is PEFT's merge rule (peft/tuners/lora/layer.py
get_delta_weight): W + scaling * (B @ A), scaling = alpha / r (alpha /
sqrt(r) with use_rslora), transposed for fan_in_fan_out and embeddings, r and
alpha per module from rank_pattern / alpha_pattern. Adapters are written here
in the layout PEFT's save_pretrained uses; the support bot's committed adapter
(samples/support-bot/models/smollm2-support-lora, written by PEFT itself) is
converted by fetch_smollm2.sh --support and played by the cli_support_bot test.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from test_convert import canonical, infos_of, metadata_of, tiny_llama_dir, write_safetensors

from parley_format import read_dequantized, read_tensor
from parley_format.convert import ConversionError, UnsupportedError, convert
from parley_format.convert.cli import main as cli_main

TARGETS = ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")


def write_adapter(path, tensors: dict, **config) -> None:
    os.makedirs(path, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"],
           "bias": "none", "use_rslora": False, "use_dora": False, "fan_in_fan_out": False, "modules_to_save": None,
           "rank_pattern": {}, "alpha_pattern": {}, "task_type": "CAUSAL_LM"}
    cfg.update(config)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(cfg, f)
    write_safetensors(os.path.join(path, "adapter_model.safetensors"), tensors)


def lora_tensors(hf: dict, rng, rank=4, targets=TARGETS, layers=(0, 1)) -> dict:
    out = {}
    for i in layers:
        for t in targets:
            rows, cols = hf[f"model.layers.{i}.{t}.weight"].shape
            key = f"base_model.model.model.layers.{i}.{t}"
            out[f"{key}.lora_A.weight"] = (rng.standard_normal((rank, cols)) * 0.1).astype(np.float32)
            out[f"{key}.lora_B.weight"] = (rng.standard_normal((rows, rank)) * 0.1).astype(np.float32)
    return out


def expected(hf: dict, adapter: dict, scaling) -> dict:
    """hf name -> merged weight, by PEFT's rule (float64)."""
    merged = {}
    for key in adapter:
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[len("base_model.model."):-len(".lora_A.weight")]
        a = adapter[key].astype(np.float64)
        b = adapter[key.replace("lora_A", "lora_B")].astype(np.float64)
        s = scaling(module) if callable(scaling) else scaling
        merged[f"{module}.weight"] = hf[f"{module}.weight"].astype(np.float64) + s * (b @ a)
    return merged


def test_float32_merge_is_peft_rule_and_leaves_the_rest(tmp_path, rng):
    hf = tiny_llama_dir(str(tmp_path / "hf"), rng)
    adapter = lora_tensors(hf, rng)
    write_adapter(tmp_path / "lora", adapter)
    plain, merged_path = str(tmp_path / "plain.parley"), str(tmp_path / "merged.parley")
    convert(str(tmp_path / "hf"), plain, progress=False, tokenizer=False)
    convert(str(tmp_path / "hf"), merged_path, progress=False, tokenizer=False, lora=str(tmp_path / "lora"))
    want = expected(hf, adapter, 8 / 4)
    assert len(want) == 6
    for hf_name in hf:
        name = canonical(hf_name)
        got = read_tensor(merged_path, name)
        if hf_name in want:
            np.testing.assert_allclose(got, want[hf_name], rtol=0, atol=1e-6, err_msg=name)
            # The delta is not negligible: the test could not pass by ignoring the adapter.
            assert np.abs(want[hf_name] - hf[hf_name]).max() > 1e-2
        else:
            np.testing.assert_array_equal(got, read_tensor(plain, name), err_msg=name)
    meta = metadata_of(merged_path)
    assert meta["converter.lora"] == "lora" and meta["converter.lora_tensors"] == "6"
    assert "converter.lora" not in metadata_of(plain)


def test_rank_and_alpha_patterns_rslora_and_fan_in_fan_out(tmp_path, rng):
    hf = tiny_llama_dir(str(tmp_path / "hf"), rng)
    adapter = lora_tensors(hf, rng, rank=4, targets=("self_attn.q_proj",), layers=(0,))
    adapter.update(lora_tensors(hf, rng, rank=2, targets=("self_attn.q_proj",), layers=(1,)))
    # rank 2 in layer 1 (rank_pattern), alpha 3 for layer 0 (alpha_pattern), rsLoRA scaling.
    write_adapter(tmp_path / "lora", adapter, r=4, lora_alpha=8, use_rslora=True,
                  rank_pattern={"layers.1.self_attn.q_proj": 2}, alpha_pattern={"layers.0.self_attn.q_proj": 3})
    out = str(tmp_path / "m.parley")
    convert(str(tmp_path / "hf"), out, progress=False, tokenizer=False, lora=str(tmp_path / "lora"))
    want = expected(hf, adapter, lambda m: 3 / np.sqrt(4) if ".0." in m else 8 / np.sqrt(2))
    for hf_name, w in want.items():
        np.testing.assert_allclose(read_tensor(out, canonical(hf_name)), w, rtol=0, atol=1e-6, err_msg=hf_name)
    # fan_in_fan_out (GPT-2's Conv1D layout): the delta is transposed; on a square q_proj only the layout tells.
    write_adapter(tmp_path / "fan", adapter, r=4, lora_alpha=8, fan_in_fan_out=True,
                  rank_pattern={"layers.1.self_attn.q_proj": 2})
    out = str(tmp_path / "fan.parley")
    convert(str(tmp_path / "hf"), out, progress=False, tokenizer=False, lora=str(tmp_path / "fan"))
    for hf_name in want:
        module = hf_name[:-len(".weight")]
        key = f"base_model.model.{module}"
        a, b = adapter[f"{key}.lora_A.weight"], adapter[f"{key}.lora_B.weight"]
        ref = hf[hf_name] + (8 / a.shape[0]) * (b.astype(np.float64) @ a).T
        np.testing.assert_allclose(read_tensor(out, canonical(hf_name)), ref, rtol=0, atol=1e-6, err_msg=hf_name)


def test_embedding_adapter(tmp_path, rng):
    hf = tiny_llama_dir(str(tmp_path / "hf"), rng)
    vocab, hidden = hf["model.embed_tokens.weight"].shape
    a = (rng.standard_normal((4, vocab)) * 0.1).astype(np.float32)
    b = (rng.standard_normal((hidden, 4)) * 0.1).astype(np.float32)
    write_adapter(tmp_path / "lora", {"base_model.model.model.embed_tokens.lora_embedding_A": a,
                                      "base_model.model.model.embed_tokens.lora_embedding_B": b})
    out = str(tmp_path / "m.parley")
    convert(str(tmp_path / "hf"), out, progress=False, tokenizer=False, lora=str(tmp_path / "lora"))
    ref = hf["model.embed_tokens.weight"] + 2.0 * (b.astype(np.float64) @ a).T
    np.testing.assert_allclose(read_tensor(out, "decoder.embed_tokens.weight"), ref, rtol=0, atol=1e-6)


def test_gguf_merge_stores_merged_tensors_as_dequantized(tmp_path, rng):
    gguf = pytest.importorskip("gguf")
    from test_gguf import dequantized_gguf, gguf_name, parity_tensors, write_gguf

    cfg, tensors = parity_tensors("llama")  # canonical names
    src = write_gguf(tmp_path / "m.gguf", cfg, tensors, qtype="Q8_0")
    assert gguf  # the module is what writes it
    name = "decoder.layers.0.self_attn.q_proj.weight"
    q = tensors[name]
    adapter = lora_tensors({"model.layers.0.self_attn.q_proj.weight": q}, rng, rank=2,
                           targets=("self_attn.q_proj",), layers=(0,))
    write_adapter(tmp_path / "lora", adapter, r=2, lora_alpha=2)
    out = str(tmp_path / "m.parley")
    convert(str(src), out, progress=False, lora=str(tmp_path / "lora"))
    deq = dequantized_gguf(src)
    infos = infos_of(out)
    base = deq[gguf_name(name)]
    # The GGUF holds q rows permuted for llama.cpp's RoPE; the reader undoes it before the merge.
    from parley_format.convert.gguf_source import unpermute_rows

    base = unpermute_rows(base, cfg.decoder.num_heads)
    a, b = adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"], \
        adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    merged = base + (b.astype(np.float64) @ a)
    got = read_dequantized(out, name)
    scale = read_tensor(out, f"{name}.scale")
    assert infos[name].dtype.name == "I8" and infos[name].group_size == 32
    step = np.repeat(np.abs(scale), 32, axis=1)
    assert np.all(np.abs(got - merged) <= step / 2 * (1 + 1e-5) + 1e-7)
    assert np.abs(merged - q).max() > 1e-2  # the delta shows
    # A tensor the adapter does not touch keeps the Q8_0 blocks, bit for bit.
    other = "decoder.layers.0.self_attn.k_proj.weight"
    assert infos[other].dtype.name == "I8"
    np.testing.assert_array_equal(read_dequantized(out, other),
                                  unpermute_rows(deq[gguf_name(other)], cfg.decoder.num_kv_heads or cfg.decoder.num_heads))


@pytest.mark.parametrize("case, error, match", [
    ("dora", UnsupportedError, "DoRA"),
    ("bias", UnsupportedError, "bias 'all'"),
    ("modules_to_save", UnsupportedError, "modules_to_save"),
    ("layer_replication", UnsupportedError, "layer_replication changes what the adapter computes"),
    ("prefix", UnsupportedError, "peft_type 'PREFIX_TUNING'"),
    ("unknown_tensor", UnsupportedError, "is not a LoRA A/B matrix"),
    ("missing_b", ConversionError, "lora_B missing"),
    ("rank_mismatch", ConversionError, "rank 4 in the tensors, 8 in adapter_config.json"),
    ("not_in_model", ConversionError, "which the model does not have"),
    ("wrong_shape", ConversionError, "the model's tensor"),
    ("nan", ConversionError, "inf or NaN"),
    ("bad_alpha", ConversionError, "lora_alpha must be a positive number"),
    ("no_config", ConversionError, "adapter_config.json not found"),
    ("bin_only", ConversionError, "adapter_model.bin is not read"),
    ("not_a_folder", ConversionError, "not a folder"),
])
def test_adapters_that_cannot_be_merged_faithfully_are_refused(tmp_path, rng, case, error, match):
    hf = tiny_llama_dir(str(tmp_path / "hf"), rng)
    adapter = lora_tensors(hf, rng)
    cfg = {}
    lora = tmp_path / "lora"
    if case == "dora":
        cfg["use_dora"] = True
    elif case == "bias":
        cfg["bias"] = "all"
    elif case == "modules_to_save":
        cfg["modules_to_save"] = ["lm_head"]
    elif case == "layer_replication":
        cfg["layer_replication"] = [[0, 2], [1, 2]]
    elif case == "prefix":
        cfg["peft_type"] = "PREFIX_TUNING"
    elif case == "unknown_tensor":
        adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = np.ones(64, np.float32)
    elif case == "missing_b":
        del adapter["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    elif case == "rank_mismatch":
        cfg["r"] = 8
    elif case == "not_in_model":
        adapter["base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight"] = np.ones((4, 64), np.float32)
        adapter["base_model.model.model.layers.5.self_attn.q_proj.lora_B.weight"] = np.ones((64, 4), np.float32)
    elif case == "wrong_shape":
        adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = np.ones((4, 63), np.float32)
    elif case == "nan":
        adapter["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"][0, 0] = np.nan
    elif case == "bad_alpha":
        cfg["lora_alpha"] = -1
    write_adapter(lora, adapter, **cfg)
    if case == "no_config":
        os.unlink(lora / "adapter_config.json")
    elif case == "bin_only":
        os.rename(lora / "adapter_model.safetensors", lora / "adapter_model.bin")
    elif case == "not_a_folder":
        lora = lora / "adapter_config.json"
    out = tmp_path / "m.parley"
    with pytest.raises(error, match=match):
        convert(str(tmp_path / "hf"), str(out), progress=False, tokenizer=False, lora=str(lora))
    assert not out.exists() and not os.path.exists(f"{out}.converting")


def test_cli_lora_error_is_one_line(tmp_path, rng, capsys):
    tiny_llama_dir(str(tmp_path / "hf"), rng)
    out = tmp_path / "m.parley"
    assert cli_main([str(tmp_path / "hf"), str(out), "--quiet", "--no-tokenizer", "--lora", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("parley-convert: error: --lora") and "not a folder" in err and "Traceback" not in err
    assert not out.exists()
