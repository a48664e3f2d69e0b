"""PyTorch baseline for tandem-bench-gpu-generate: transformers.generate on the same shapes
(Qwen2.5-0.5B, Llama-3.2-1B) with random weights in bf16 (SDPA attention, the default dynamic KV
cache): `prompts` random prompts of `prompt_len` tokens, num_return_sequences = `group`,
`new` new tokens per sample (min_new_tokens = max_new_tokens, no eos), temperature 1, no top-k or
top-p. Generated tokens per second over the whole call (prefill included), after a warm-up call.
Prints one JSON object per line; without torch, transformers or a device it prints a skipped line.

    python3 bench/gpu/torch_generate_baseline.py [--prompts 64] [--group 8] [--new 512]
        [--prompt-len 128] [--model qwen2.5-0.5b|llama-3.2-1b|all]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new", type=int, default=512)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--model", default="all")
    args = ap.parse_args()
    try:
        import torch
        from transformers import AutoModelForCausalLM
        from torch_forward_baseline import configs
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"bench": "torch_generate", "skipped": True, "reason": str(e)}))
        return
    if not torch.cuda.is_available():
        print(json.dumps({"bench": "torch_generate", "skipped": True, "reason": "no CUDA device"}))
        return
    for name, cfg in configs():
        if args.model not in ("all", name):
            continue
        cfg.eos_token_id = None
        cfg.bos_token_id = None
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
        model = model.to(torch.bfloat16).eval()
        ids = torch.randint(0, cfg.vocab_size, (args.prompts, args.prompt_len), device="cuda")
        mask = torch.ones_like(ids)

        def run(new):
            with torch.no_grad():
                return model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                      temperature=1.0, top_k=0, top_p=1.0,
                                      max_new_tokens=new, min_new_tokens=new,
                                      num_return_sequences=args.group, pad_token_id=0,
                                      eos_token_id=None)

        try:
            run(2)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            out = run(args.new)
            torch.cuda.synchronize()
            s = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001  (out of memory, an API change)
            print(json.dumps({"bench": "torch_generate", "model": name, "skipped": True,
                              "reason": str(e)[:300]}))
            continue
        generated = (out.shape[1] - args.prompt_len) * out.shape[0]
        print(json.dumps({
            "bench": "torch_generate", "model": name, "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "prompts": args.prompts, "group": args.group,
            "prompt_len": args.prompt_len, "new_tokens": args.new,
            "generated_tokens": int(generated), "seconds": round(s, 4),
            "tokens_per_s": round(generated / s, 1),
            "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}), flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
