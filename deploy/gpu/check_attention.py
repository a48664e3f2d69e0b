#!/usr/bin/env python3
"""Runs tandem-attn (the CUDA backend) on fresh random inputs and compares its output with PyTorch
on the same inputs: the float64 reference (upcast inputs, explicit softmax) and
torch's scaled_dot_product_attention in the same dtype. One JSON line per case.
Usage: check_attention.py BUNDLE_DIR WORK_DIR"""
import json
import os
import subprocess
import sys

import numpy as np
import torch

bundle, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
torch_dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))


def reference(q, k, v, causal, q_pos0):
    # q [Tq, Hq, D], k/v [Tk, Hkv, D] in float64; GQA by repeating kv heads.
    tq, hq, d = q.shape
    tk, hkv, _ = k.shape
    rep = hq // hkv
    qt = torch.from_numpy(q).double().permute(1, 0, 2)
    kt = torch.from_numpy(k).double().permute(1, 0, 2).repeat_interleave(rep, 0)
    vt = torch.from_numpy(v).double().permute(1, 0, 2).repeat_interleave(rep, 0)
    s = qt @ kt.transpose(1, 2) / d ** 0.5
    if causal:
        qpos = torch.arange(tq).unsqueeze(1) + q_pos0
        kpos = torch.arange(tk).unsqueeze(0)
        s = s.masked_fill(kpos > qpos, float("-inf"))
    return (torch.softmax(s, -1) @ vt).permute(1, 0, 2).numpy()


def sdpa(q, k, v, causal, dtype):
    hq, hkv = q.shape[1], k.shape[1]
    qt = torch.from_numpy(q).to("cuda", torch_dtypes[dtype]).permute(1, 0, 2).unsqueeze(0)
    kt = torch.from_numpy(k).to("cuda", torch_dtypes[dtype]).permute(1, 0, 2).unsqueeze(0)
    vt = torch.from_numpy(v).to("cuda", torch_dtypes[dtype]).permute(1, 0, 2).unsqueeze(0)
    kt = kt.repeat_interleave(hq // hkv, 1)
    vt = vt.repeat_interleave(hq // hkv, 1)
    o = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
    return o.squeeze(0).permute(1, 0, 2).double().cpu().numpy()


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


cases = [  # (tq, tk, hq, hkv, d, causal, dtype)
    (1024, 1024, 8, 2, 128, True, "bf16"),
    (1024, 1024, 8, 8, 64, False, "f16"),
    (777, 777, 4, 2, 128, True, "f16"),
    (2048, 2048, 16, 16, 128, True, "bf16"),
    (513, 513, 4, 1, 96, True, "f32"),
    (300, 300, 2, 2, 256, False, "f32"),
]
for tq, tk, hq, hkv, d, causal, dtype in cases:
    q = rng.standard_normal((tq, hq, d), dtype=np.float32)
    k = rng.standard_normal((tk, hkv, d), dtype=np.float32)
    v = rng.standard_normal((tk, hkv, d), dtype=np.float32)
    d_case = os.path.join(work, f"{tq}_{hq}_{hkv}_{d}_{int(causal)}_{dtype}")
    os.makedirs(d_case, exist_ok=True)
    for name, arr in (("q", q), ("k", k), ("v", v)):
        np.save(os.path.join(d_case, name + ".npy"), arr)
    cmd = [os.path.join(bundle, "tandem-attn"), "--q", f"{d_case}/q.npy", "--k", f"{d_case}/k.npy",
           "--v", f"{d_case}/v.npy", "--out", d_case, "--backend", "cuda", "--dtype", dtype]
    if causal:
        cmd.append("--causal")
    run = subprocess.run(cmd, capture_output=True, text=True)
    line = {"case": "attention_vs_torch", "tq": tq, "hq": hq, "hkv": hkv, "d": d,
            "causal": causal, "dtype": dtype}
    if run.returncode != 0:
        line.update(ok=False, error=(run.stderr or run.stdout).strip()[-300:])
        print(json.dumps(line), flush=True)
        continue
    ours = np.load(os.path.join(d_case, "o.npy")).astype(np.float64)
    ref = reference(q, k, v, causal, tk - tq)
    # Inputs rounded to the dtype first, so the reference sees what the kernel saw.
    qr, kr, vr = (torch.from_numpy(x).to(torch_dtypes[dtype]).float().numpy() for x in (q, k, v))
    ref_rounded = reference(qr, kr, vr, causal, tk - tq)
    theirs = sdpa(q, k, v, causal, dtype)
    line.update(ok=bool(np.isfinite(ours).all()), tandem_vs_f64=rel(ours, ref_rounded),
                torch_vs_f64=rel(theirs, ref_rounded), tandem_vs_torch=rel(ours, theirs),
                unrounded_ref=rel(ours, ref))
    print(json.dumps(line), flush=True)
