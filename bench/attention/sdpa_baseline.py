#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention baseline for the gpu_forward case of
tandem-bench-attention: same shapes (16 heads, head dim 128, 4K..32K tokens, causal and not),
one JSON object per line. Run it on the machine that ran the benchmark and divide
tandem's tflops by sdpa_tflops for the ratio (target >= 0.5). Needs torch with CUDA."""
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
