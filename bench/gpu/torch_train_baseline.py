"""PyTorch baseline for tandem-bench-gpu-model --case train_step: one training step (forward +
backward + AdamW, gradient clipping at 1.0) of the same model shapes (Qwen2.5-0.5B, Llama-3.2-1B,
random weights) on `batch` sequences of `seq` tokens. transformers in bf16 (parameters, gradients
and AdamW state in bf16: "bf16 eager"), attention "eager" (the issue's baseline) and "sdpa"; the
loss is a policy-gradient-shaped one, -sum(w * log p(token)) over every position with fp32
log-softmax, as tandem's GRPO step computes its token log-probs. Tokens/s and MFU with the same
model-FLOPs formula as the C++ bench (train_flops in bench/gpu/model_bench.cc). Prints one JSON
object per line; without torch, transformers or a device it prints a skipped line.

    python3 bench/gpu/torch_train_baseline.py [--batch 8] [--seq 512] [--iters 5]
"""
import argparse
import json
import time

from torch_forward_baseline import configs


def peak_bf16_flops(device):
    # Dense bf16 tensor-core peak, as model_bench.cc's peak_bf16_flops; 0: unknown (MFU null).
    return 989.4e12 if ("H100" in device or "H200" in device) else 0.0


def train_flops(cfg, batch, seq):
    h, ff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    gemm_params = layers * (h * (q + 2 * kv) + q * h + 3 * h * ff) + h * cfg.vocab_size
    attention = 4.0 * layers * q * batch * seq * (seq + 1.0) / 2.0
    return 6.0 * gemm_params * batch * seq + 3.0 * attention


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"bench": "torch_train", "skipped": True, "reason": str(e)}))
        return
    if not torch.cuda.is_available():
        print(json.dumps({"bench": "torch_train", "skipped": True, "reason": "no CUDA device"}))
        return
    device = torch.cuda.get_device_name()
    for name, cfg in configs():
        for attn in ("eager", "sdpa"):
            torch.manual_seed(0)
            with torch.device("cuda"):
                model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
            model = model.to(torch.bfloat16).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
            ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device="cuda")
            w = (torch.rand(args.batch, args.seq - 1, device="cuda") - 0.5) / (args.batch * args.seq)

            def step():
                logits = model(input_ids=ids).logits.float()
                lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
                loss = -(lp * w).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                return loss

            step()  # warm-up (allocations, AdamW state)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(args.iters):
                step()
            torch.cuda.synchronize()
            sec = (time.perf_counter() - t0) / args.iters
            flops, peak = train_flops(cfg, args.batch, args.seq), peak_bf16_flops(device)
            print(json.dumps({"bench": "torch_train", "model": name, "attn": attn,
                              "device": device, "batch": args.batch, "seq": args.seq,
                              "tokens_per_s": round(args.batch * args.seq / sec, 1),
                              "seconds_per_step": round(sec, 5),
                              "model_tflops": round(flops / sec / 1e12, 1),
                              "mfu": round(flops / sec / peak, 4) if peak else None,
                              "peak_device_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                              "torch": torch.__version__}), flush=True)
            del model, opt
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()
