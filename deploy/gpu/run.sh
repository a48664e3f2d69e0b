#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, after deploy/gpu/bundle.sh built gpu-bundle/:
# the GPU tests, the CUDA kernel against PyTorch on the same inputs, and the attention benchmark
# against PyTorch's scaled_dot_product_attention. Full output goes to $OUT (or /tmp/tandem-gpu);
# a short table is printed last.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=gpu-bundle
O=${OUT:-/tmp/tandem-gpu}
mkdir -p "$O"
nccl_dir=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)
export UCX_MODULE_DIR="$PWD/$B/lib/ucx"
export LD_LIBRARY_PATH="$PWD/$B/lib${nccl_dir:+:$nccl_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv > "$O/nvidia-smi.txt" 2>&1
declare -A result
for t in tandem_gpu_device tandem_gpu_kernels_attention tandem_gpu_kernels_ring_nccl tandem_gpu_weights; do
    timeout 300 "$B/$t" > "$O/$t.txt" 2>&1
    rc=$?
    result[$t]="rc=$rc $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$O/$t.txt" | tr -s ' ' | tr '\n' ' ')"
done
timeout 200 python3 deploy/gpu/check_attention.py "$B" /tmp/tandem-attn-check > "$O/attention_vs_torch.jsonl" 2> "$O/attention_vs_torch.err"
timeout 300 "$B/tandem-bench-attention" --case gpu_forward > "$O/bench_gpu_forward.jsonl" 2> "$O/bench.err"
timeout 200 python3 bench/attention/sdpa_baseline.py > "$O/sdpa_baseline.jsonl" 2> "$O/sdpa.err"
echo "== $(head -2 "$O/nvidia-smi.txt" | tail -1)"
for t in "${!result[@]}"; do echo "$t: ${result[$t]}"; done
grep -h -E 'FAILED|Failure|error' "$O"/tandem_gpu_*.txt | head -20
python3 - "$O" <<'PY'
import json, sys, os
o = sys.argv[1]
def lines(name):
    p = os.path.join(o, name)
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")] if os.path.exists(p) else []
for r in lines("attention_vs_torch.jsonl"):
    if not r.get("ok"):
        print("vs_torch FAIL", r); continue
    print(f"vs_torch {r['dtype']:>4} tq={r['tq']:<5} h={r['hq']}/{r['hkv']} d={r['d']:<3} causal={int(r['causal'])}"
          f" tandem/f64={r['tandem_vs_f64']:.2e} torch/f64={r['torch_vs_f64']:.2e} tandem/torch={r['tandem_vs_torch']:.2e}")
sdpa = {(r["dtype"], r["t"], r["causal"]): r["tflops"] for r in lines("sdpa_baseline.jsonl") if "tflops" in r}
for r in lines("bench_gpu_forward.jsonl"):
    if r.get("skipped"):
        print("bench skipped:", r.get("reason")); continue
    s = sdpa.get((r["dtype"], r["t"], r["causal"]))
    print(f"fwd {r['dtype']:>4} t={r['t']:<6} causal={int(r['causal'])} tandem={r['tflops']:6.1f} TFLOP/s"
          f" sdpa={s if s else float('nan'):6.1f} ratio={(r['tflops']/s) if s else float('nan'):.2f}")
PY
for f in "$O"/*.err; do [ -s "$f" ] && { echo "-- $f"; tail -3 "$f"; }; done
exit 0
