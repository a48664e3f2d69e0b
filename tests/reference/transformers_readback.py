#!/usr/bin/env python3
"""Checks that transformers reads back model directories Tandem writes (checkpoints, the final
policy, `tandem model create`) and computes the logits `tandem model logits` computes.

    python3 tests/reference/transformers_readback.py TANDEM_BINARY WORK_DIR [CHECKPOINT_DIR ...]

Needs torch, transformers and numpy (the GPU machine has them; this development machine has no
transformers, so this script is not part of CTest). With no CHECKPOINT_DIR it first writes one
directory per supported architecture with `tandem model create` (random weights: Llama with GQA,
explicit head_dim, biases and llama3 RoPE, untied; Qwen2 tied with q/k/v biases; Qwen3 with q/k
norms). Sharded output (above 2 GiB) is checked by passing such a CHECKPOINT_DIR.
For each directory: `AutoModelForCausalLM.from_pretrained(dir, dtype=float32)` must load with no
missing or unexpected keys, and its fp32 eager logits on fixed tokens must match
`tandem model logits` within 1e-4 of the largest logit. Exit 0 when every directory passes; one
line per directory either way.
"""

import json
import os
import subprocess
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

TOKENS = [1, 17, 30, 5, 51, 42, 42, 7, 25, 9, 0, 3, 12, 6, 20, 31]

CONFIGS = {
    "llama": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64,
        "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        "tie_word_embeddings": False, "attention_bias": True, "mlp_bias": True,
        "bos_token_id": 1, "eos_token_id": [2, 3], "torch_dtype": "float32",
        "initializer_range": 0.2,
    },
    "qwen2": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 64,
        "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
        "use_sliding_window": False, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "float32", "initializer_range": 0.2,
    },
    "qwen3": {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 64,
        "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": False, "attention_bias": False, "use_sliding_window": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
        "initializer_range": 0.2,
    },
}


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def create(tandem, work):
    dirs = []
    for name, cfg in CONFIGS.items():
        cfg_path = os.path.join(work, f"{name}.config.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        out = os.path.join(work, name)
        if os.path.exists(os.path.join(out, "config.json")):
            dirs.append(out)
            continue
        run([tandem, "model", "create", "--model", out, "--config", cfg_path, "--seed", "7"])
        dirs.append(out)
    return dirs


def check(tandem, work, d):
    vocab = json.load(open(os.path.join(d, "config.json")))["vocab_size"]
    tokens = [t % vocab for t in TOKENS]
    npy = os.path.join(work, os.path.basename(os.path.normpath(d)) + ".tandem_logits.npy")
    run([tandem, "model", "logits", "--model", d, "--tokens", ",".join(map(str, tokens)),
         "--out", npy])
    ours = np.load(npy)
    kw = {"attn_implementation": "eager", "output_loading_info": True}
    try:
        model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, **kw)
    except TypeError:
        model, info = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, **kw)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys",
                                                    "mismatched_keys") and v}
    model.eval()
    with torch.no_grad():
        theirs = model(torch.tensor([tokens], dtype=torch.long)).logits[0].float().numpy()
    scale = float(np.abs(theirs).max())
    diff = float(np.abs(theirs - ours).max()) / scale
    ok = not bad and ours.shape == theirs.shape and diff <= 1e-4
    print(f"{'PASS' if ok else 'FAIL'} {d}: {type(model).__name__}, max |logit| {scale:.3f}, "
          f"max diff / max |logit| {diff:.2e}" + (f", loading info {bad}" if bad else ""))
    return ok


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    tandem, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    dirs = sys.argv[3:] or create(tandem, work)
    results = [check(tandem, work, d) for d in dirs]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
