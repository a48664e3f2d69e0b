#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention baseline for the gpu_forward and gpu_backward cases of
tandem-bench-attention, one JSON object per line. Forward (case sdpa_baseline): same shapes (16
heads, head dim 128, 4K..32K tokens, causal and not); divide tandem's tflops by sdpa_tflops for
the ratio (target >= 0.5). Backward (case sdpa_backward): causal, bf16, T 4096 and 8192, the head
shapes of gpu_backward (Qwen2.5-0.5B 14/2 d 64, Llama-3.2-1B 32/8 d 64, 16/16 d 128); the
gradient of q, k, v from a saved forward (torch.autograd.grad with retain_graph), keys and values
repeated to the query heads first as transformers does (the group sum is not timed), TFLOP/s
counted as FlashAttention does (2.5 x forward); target ratio >= 0.4. Run it on the machine that
ran the benchmark. Needs torch with CUDA. --backward-only skips the forward cases."""
import json
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print(json.dumps({"case": "sdpa_baseline", "skipped": True, "reason": "torch not installed",
                      "ratio": None}))
    sys.exit(0)

if not torch.cuda.is_available():
    print(json.dumps({"case": "sdpa_baseline", "skipped": True, "reason": "no CUDA device",
                      "ratio": None}))
    sys.exit(0)


def backward_cases():
    for model, hq, hkv, d in (("qwen2.5-0.5b", 14, 2, 64), ("llama-3.2-1b", 32, 8, 64),
                              ("h16-d128", 16, 16, 128)):
        for t in (4096, 8192):
            q = (torch.rand(1, hq, t, d, device="cuda", dtype=torch.bfloat16) * 2 - 1)
            k, v = ((torch.rand(1, hkv, t, d, device="cuda", dtype=torch.bfloat16) * 2 - 1)
                    .repeat_interleave(hq // hkv, dim=1) for _ in range(2))
            for x in (q, k, v):
                x.requires_grad_(True)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            dout = torch.rand_like(o) * 2 - 1
            for _ in range(2):
                torch.autograd.grad(o, (q, k, v), dout, retain_graph=True)
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            calls = 10
            start.record()
            for _ in range(calls):
                torch.autograd.grad(o, (q, k, v), dout, retain_graph=True)
            stop.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(stop) / 1e3 / calls
            flops = 2.5 * 4.0 * d * hq * t * (t + 1) / 2
            print(json.dumps({"case": "sdpa_backward", "device": torch.cuda.get_device_name(),
                              "model": model, "dtype": "bf16", "t": t, "hq": hq, "hkv": hkv,
                              "d": d, "causal": True, "seconds": seconds,
                              "tflops": round(flops / seconds / 1e12, 1), "ratio": None}))
            sys.stdout.flush()
            del q, k, v, o, dout


if "--backward-only" in sys.argv:
    backward_cases()
    sys.exit(0)

HEADS, D = 16, 128
for dtype_name, dtype in (("bf16", torch.bfloat16), ("f16", torch.float16)):
    for t in (4096, 8192, 16384, 32768):
        for causal in (False, True):
            q, k, v = (torch.rand(1, HEADS, t, D, device="cuda", dtype=dtype) * 2 - 1
                       for _ in range(3))
            for _ in range(2):
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            calls = 10
            start.record()
            for _ in range(calls):
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            stop.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(stop) / 1e3 / calls
            entries = t * (t + 1) / 2 if causal else t * t
            flops = 4.0 * D * HEADS * entries
            print(json.dumps({"case": "sdpa_baseline", "device": torch.cuda.get_device_name(),
                              "dtype": dtype_name, "t": t, "hq": HEADS, "d": D,
                              "causal": causal, "seconds": seconds,
                              "tflops": round(flops / seconds / 1e12, 1), "ratio": None}))
            sys.stdout.flush()

backward_cases()
