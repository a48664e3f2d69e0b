"""PyTorch baseline for tandem-bench-gpu-model: the same model shapes (Qwen2.5-0.5B, Llama-3.2-1B)
with random weights in bf16, transformers eager attention and SDPA, forward of `batch` sequences of
`seq` tokens computing log-probs of every position. Prints one JSON object per line; without
torch, transformers or a device it prints a skipped line.

    python3 bench/gpu/torch_forward_baseline.py [--batch 8] [--seq 512] [--iters 5]
"""
import argparse
import json
import time


def configs():
    from transformers import LlamaConfig, Qwen2Config
    qwen = Qwen2Config(vocab_size=151936, hidden_size=896, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
                       max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=True)
    llama = LlamaConfig(vocab_size=128256, hidden_size=2048, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192,
                        max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                        tie_word_embeddings=True,
                        rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192})
    return [("qwen2.5-0.5b", qwen), ("llama-3.2-1b", llama)]


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
        print(json.dumps({"bench": "torch_forward", "skipped": True, "reason": str(e)}))
        return
    if not torch.cuda.is_available():
        print(json.dumps({"bench": "torch_forward", "skipped": True, "reason": "no CUDA device"}))
        return
    for name, cfg in configs():
        for attn in ("eager", "sdpa"):
            torch.manual_seed(0)
            with torch.device("cuda"):  # initialise the random weights on the device
                model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
            model = model.to(torch.bfloat16).eval()
            ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device="cuda")

            def step():
                with torch.no_grad():
                    logits = model(input_ids=ids).logits.float()
                    lp = torch.log_softmax(logits[:, :-1], dim=-1)
                    return lp.gather(-1, ids[:, 1:, None])

            step()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.iters):
                step()
            torch.cuda.synchronize()
            sec = (time.perf_counter() - t0) / args.iters
            print(json.dumps({"bench": "torch_forward", "model": name, "attn": attn,
                              "batch": args.batch, "seq": args.seq,
                              "tokens_per_s": round(args.batch * args.seq / sec, 1),
                              "peak_device_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                              "torch": torch.__version__}), flush=True)
            del model
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()
