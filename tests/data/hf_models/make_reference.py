#!/usr/bin/env python3
"""Builds tiny random Hugging Face model directories WITH transformers and the logits transformers
computes from them, for tests/unit/model/hf_transformers_test.cc.

    python3 tests/data/hf_models/make_reference.py OUT_DIR

Needs torch, transformers and numpy (the GPU machine has them; this machine does not). Writes, under
OUT_DIR, one directory per case holding what `save_pretrained` wrote plus `logits.npy` (float32
[T, vocab], computed in fp32 with eager attention after loading the directory back with
`from_pretrained(..., dtype=float32)`), and OUT_DIR/manifest.json listing the cases, the token ids
and the transformers/torch versions. Every directory is well under 1 MB.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM)

MAJOR = int(transformers.__version__.split(".")[0])
TOKENS = [1, 17, 300, 5, 511, 42, 42, 7, 256, 99, 0, 3, 128, 64, 200, 31, 450, 12, 8, 77, 310,
          2, 405, 60, 61, 62, 489, 150, 151, 9, 10, 500]
VOCAB = 512


def rope_kwargs(theta, scaling):
    """Constructor arguments for RoPE in this transformers version's form."""
    if MAJOR >= 5:
        params = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            params.update(scaling)
        return {"rope_parameters": params}
    return {"rope_theta": theta, "rope_scaling": scaling}


def common(**kw):
    base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)
    base.update(kw)
    return base


def cases():
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    yield "llama_gqa", LlamaForCausalLM, LlamaConfig(
        **common(head_dim=32, tie_word_embeddings=False, attention_bias=True, mlp_bias=True),
        **rope_kwargs(500000.0, llama3)), {}
    yield "llama_tied_linear", LlamaForCausalLM, LlamaConfig(
        **common(tie_word_embeddings=True, num_key_value_heads=4),
        **rope_kwargs(10000.0, {"rope_type": "linear", "factor": 2.0})), {}
    yield "qwen2", Qwen2ForCausalLM, Qwen2Config(
        **common(tie_word_embeddings=True, use_sliding_window=False),
        **rope_kwargs(1000000.0, None)), {}
    yield "qwen3", Qwen3ForCausalLM, Qwen3Config(
        **common(head_dim=16, tie_word_embeddings=False, use_sliding_window=False,
                 attention_bias=False), **rope_kwargs(1000000.0, None)), {}
    yield "qwen3_bf16", Qwen3ForCausalLM, Qwen3Config(
        **common(head_dim=16, tie_word_embeddings=True, use_sliding_window=False),
        **rope_kwargs(1000000.0, None)), {"dtype": torch.bfloat16}
    yield "qwen2_f16", Qwen2ForCausalLM, Qwen2Config(
        **common(tie_word_embeddings=False, use_sliding_window=False),
        **rope_kwargs(10000.0, None)), {"dtype": torch.float16}
    yield "llama_sharded", LlamaForCausalLM, LlamaConfig(
        **common(head_dim=16, tie_word_embeddings=False),
        **rope_kwargs(500000.0, llama3)), {"max_shard_size": "100KB"}


def randomize(model, seed):
    """Weights large enough that logits are O(1..10), so 1e-4 relative is a real check."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))


def from_pretrained(cls, path):
    kw = {"attn_implementation": "eager"}
    try:
        return cls.from_pretrained(path, dtype=torch.float32, **kw)
    except TypeError:
        return cls.from_pretrained(path, torch_dtype=torch.float32, **kw)


def logits_of(cls, path):
    model = from_pretrained(cls, path).eval()
    assert next(model.parameters()).dtype == torch.float32
    with torch.no_grad():
        out = model(torch.tensor([TOKENS], dtype=torch.long)).logits[0]
    return out.float().numpy()


def other_form(cfg):
    """The config in the other transformers major's key spelling (4: rope_theta, rope_scaling,
    torch_dtype; 5: rope_parameters, dtype)."""
    cfg = dict(cfg)
    if "rope_parameters" in cfg:  # 5 -> 4
        params = dict(cfg.pop("rope_parameters") or {})
        cfg["rope_theta"] = params.pop("rope_theta", 10000.0)
        cfg["rope_scaling"] = None if params.get("rope_type", "default") == "default" else params
        if "dtype" in cfg:
            cfg["torch_dtype"] = cfg.pop("dtype")
    else:  # 4 -> 5
        params = {"rope_type": "default", "rope_theta": cfg.pop("rope_theta", 10000.0)}
        scaling = cfg.pop("rope_scaling", None)
        if scaling:
            scaling = dict(scaling)
            if "type" in scaling and "rope_type" not in scaling:
                scaling["rope_type"] = scaling.pop("type")
            params.update(scaling)
        cfg["rope_parameters"] = params
        if "torch_dtype" in cfg:
            cfg["dtype"] = cfg.pop("torch_dtype")
    return cfg


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    manifest = {"transformers": transformers.__version__, "torch": torch.__version__,
                "tokens": TOKENS, "cases": []}
    for i, (name, cls, config, opts) in enumerate(cases()):
        torch.manual_seed(1000 + i)
        model = cls(config).eval()
        randomize(model, 1000 + i)
        if "dtype" in opts:
            model = model.to(opts["dtype"])
        path = os.path.join(out, name)
        shutil.rmtree(path, ignore_errors=True)
        save_kw = {}
        if "max_shard_size" in opts:
            save_kw["max_shard_size"] = opts["max_shard_size"]
        try:
            model.save_pretrained(path, safe_serialization=True, **save_kw)
        except TypeError:  # transformers 5 always writes safetensors
            model.save_pretrained(path, **save_kw)
        logits = logits_of(cls, path)
        np.save(os.path.join(path, "logits.npy"), logits.astype(np.float32))
        manifest["cases"].append({"name": name, "architecture": cls.__name__,
                                  "files": sorted(os.listdir(path)),
                                  "max_abs_logit": float(np.abs(logits).max())})
        print(f"{name}: {sorted(os.listdir(path))} max|logit| {np.abs(logits).max():.3f}")
        if name == "llama_gqa":
            # The same weights with config.json in the other major's spelling.
            alt = os.path.join(out, name + "_otherform")
            shutil.rmtree(alt, ignore_errors=True)
            shutil.copytree(path, alt)
            with open(os.path.join(path, "config.json")) as f:
                cfg = json.load(f)
            with open(os.path.join(alt, "config.json"), "w") as f:
                json.dump(other_form(cfg), f, indent=2)
            alt_logits = logits_of(cls, alt)
            diff = float(np.abs(alt_logits - logits).max())
            print(f"{name}_otherform: transformers reads it back, max diff {diff:g}")
            manifest["cases"].append({"name": name + "_otherform", "architecture": cls.__name__,
                                      "files": sorted(os.listdir(alt)),
                                      "transformers_reread_max_diff": diff})
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)


if __name__ == "__main__":
    main()
