#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, after deploy/gpu/bundle.sh built gpu-bundle/:
# the GPU tests (device, device ops, device model, training path, attention, NCCL ring, weights),
# the CUDA attention kernel against PyTorch on the same inputs, the attention benchmark against
# PyTorch's scaled_dot_product_attention (forward and backward), the device model's forward and
# whole GRPO training step against transformers on the same shapes. Full output goes to $OUT (or
# /tmp/tandem-gpu); a short table is printed last.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=gpu-bundle
[ -d "$B" ] || [ ! -f build/gpu-bundle.tar.gz ] || tar -xzf build/gpu-bundle.tar.gz
O=${OUT:-/tmp/tandem-gpu}
mkdir -p "$O"
nccl_dir=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)
# cuBLASLt for the device GEMMs (dlopened; without it they use a slow fallback kernel and the
# tests say so): the CUDA toolkit's, else PyTorch's wheel.
cublas_dir=$( (ls -d /usr/local/cuda/lib64/libcublasLt.so.* 2>/dev/null | head -1 | xargs -r dirname) ||
              true)
[ -n "$cublas_dir" ] || cublas_dir=$(python3 -c '
import glob, os, nvidia
for root in list(nvidia.__path__):
    for p in sorted(glob.glob(os.path.join(root, "**", "libcublasLt.so.*"), recursive=True), reverse=True):
        print(os.path.dirname(p)); raise SystemExit' 2>/dev/null || true)
export UCX_MODULE_DIR="$PWD/$B/lib/ucx"
export LD_LIBRARY_PATH="$PWD/$B/lib${nccl_dir:+:$nccl_dir}${cublas_dir:+:$cublas_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv > "$O/nvidia-smi.txt" 2>&1
declare -A result
for t in tandem_gpu_device tandem_gpu_ops tandem_gpu_model tandem_gpu_train \
         tandem_gpu_kernels_attention tandem_gpu_kernels_ring_nccl tandem_gpu_weights; do
    timeout 300 "$B/$t" > "$O/$t.txt" 2>&1
    rc=$?
    result[$t]="rc=$rc $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$O/$t.txt" | tr -s ' ' | tr '\n' ' ')"
done
# Decode attention over quantized KV pages against the CPU kernel and a double reference.
timeout 120 "$B/tandem_gpu_kv_attention" > "$O/tandem_gpu_kv_attention.txt" 2>&1
rc=$?
result[tandem_gpu_kv_attention]="rc=$rc $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$O/tandem_gpu_kv_attention.txt" | tr -s ' ' | tr '\n' ' ')"
# The device ring (kernels/ring/device_ring.h): merge kernels against merge.cc, ring prefill and
# sharded decode on device memory (threads sharing a device, NCCL per device, separate processes
# with the transport chosen at run time), and the context-parallel benchmark's device case.
timeout 240 "$B/tandem_gpu_ring_device" > "$O/tandem_gpu_ring_device.txt" 2>&1
rc=$?
result[tandem_gpu_ring_device]="rc=$rc $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$O/tandem_gpu_ring_device.txt" | tr -s ' ' | tr '\n' ' ')"
timeout 180 "$B/tandem-bench-context-parallel" --case device > "$O/bench_context_parallel_device.jsonl" 2> "$O/bench_context_parallel_device.err"
# Generation on the device: paged KV kernels, device sampling, greedy tokens vs the CPU engine.
timeout 180 "$B/tandem_gpu_generate" > "$O/tandem_gpu_generate.txt" 2>&1
rc=$?
result[tandem_gpu_generate]="rc=$rc $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$O/tandem_gpu_generate.txt" | tr -s ' ' | tr '\n' ' ')"
# Weights GPU -> GPU: publish + fetch of 1 GB through pinned host slots, and a second process
# opening the device slot by CUDA IPC, against cudaMemcpy D2H + H2D of the same bytes.
timeout 180 "$B/tandem-bench-weights-gpu" --bytes 1G > "$O/bench_weights_gpu.jsonl" 2> "$O/bench_weights_gpu.err"
# The trainer actor on the device: checkpoint round trip, CPU <-> device resume, the cuda policy
# against the cpu one over a supervised and two GRPO steps, publishing from device memory.
timeout 240 "$B/tandem_gpu_trainer_device" > "$O/tandem_gpu_trainer_device.txt" 2>&1
rc=$?
result[tandem_gpu_trainer_device]="rc=$rc $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$O/tandem_gpu_trainer_device.txt" | tr -s ' ' | tr '\n' ' ')"
# The rollout's weights on the device: versions converted from device memory (bit for bit against
# a host upload), a fetched version switched into the cuda sampler, the trainer's publish on its
# actor stream; the rollout's context-parallel sampler (2 ranks on device 0, and on 2 GPUs when
# there are) against the CPU generator.
timeout 120 "$B/tandem_gpu_rollout_weights" > "$O/tandem_gpu_rollout_weights.txt" 2>&1
rc=$?
result[tandem_gpu_rollout_weights]="rc=$rc $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$O/tandem_gpu_rollout_weights.txt" | tr -s ' ' | tr '\n' ' ')"
# Opt-in (TANDEM_GPU_SANITIZE=1; memcheck slows kernels 10-100x, racecheck more): compute-sanitizer
# memcheck and racecheck over every kernel suite, one output per tool and suite
# ($O/sanitizer_<tool>_<suite>.txt; its ERROR SUMMARY, or the exit status, goes in the table).
# Filters keep each run short: kernel tests only (no multi-process CudaRingProcesses, one model
# comparison for the device model's own kernels); TANDEM_GPU_SANITIZE_TIMEOUT_S caps each run.
san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
declare -A san_suites=(
    [tandem_gpu_ops]='*'
    [tandem_gpu_kernels_attention]='*'
    [tandem_gpu_kv_attention]='*'
    [tandem_gpu_train]='CudaAttentionBackward.*:DeviceTrainTest.Backward*'
    [tandem_gpu_ring_device]='CudaAttentionMerge.*:CudaDeviceRing.*'
    [tandem_gpu_generate]='PagedKvTest.*:PagedKvPagesTest.*:SamplingTest.*'
    [tandem_gpu_model]='DeviceModelTest.LogitsAndLogProbs*'
)
declare -A san_result
if [ "${TANDEM_GPU_SANITIZE:-0}" = 1 ] && [ -z "$san" ]; then
    san_result[compute-sanitizer]="requested (TANDEM_GPU_SANITIZE=1) but not found on PATH or in /usr/local/cuda/bin"
elif [ "${TANDEM_GPU_SANITIZE:-0}" = 1 ]; then
    for tool in memcheck racecheck; do
        for t in "${!san_suites[@]}"; do
            f="$O/sanitizer_${tool}_$t.txt"
            timeout "${TANDEM_GPU_SANITIZE_TIMEOUT_S:-180}" "$san" --tool "$tool" --error-exitcode 3 \
                "$B/$t" --gtest_filter="${san_suites[$t]}" > "$f" 2>&1
            rc=$?
            summary=$(grep -h 'ERROR SUMMARY' "$f" | tail -1)
            [ "$rc" = 124 ] && summary="timed out after ${TANDEM_GPU_SANITIZE_TIMEOUT_S:-180} s ${summary}"
            san_result[${tool}_$t]="rc=$rc ${summary:-no ERROR SUMMARY (see $(basename "$f"))}"
        done
    done
fi
timeout 200 python3 deploy/gpu/check_attention.py "$B" /tmp/tandem-attn-check > "$O/attention_vs_torch.jsonl" 2> "$O/attention_vs_torch.err"
timeout 300 "$B/tandem-bench-attention" --case gpu_forward > "$O/bench_gpu_forward.jsonl" 2> "$O/bench.err"
# Attention backward, tiled and simple kernels (sdpa_baseline.py prints SDPA's backward too).
timeout 240 "$B/tandem-bench-attention" --case gpu_backward > "$O/bench_gpu_backward.jsonl" 2> "$O/bench_backward.err"
timeout 200 python3 bench/attention/sdpa_baseline.py > "$O/sdpa_baseline.jsonl" 2> "$O/sdpa.err"
timeout 240 "$B/tandem-bench-gpu-model" --case forward > "$O/bench_gpu_model.jsonl" 2> "$O/bench_gpu_model.err"
timeout 240 python3 bench/gpu/torch_forward_baseline.py > "$O/torch_forward.jsonl" 2> "$O/torch_forward.err"
# The whole GRPO step (DeviceTrainer: forward + backward + AdamW) against transformers bf16 eager.
timeout 240 "$B/tandem-bench-gpu-model" --case train_step > "$O/bench_gpu_train_step.jsonl" 2> "$O/bench_gpu_train_step.err"
timeout 240 python3 bench/gpu/torch_train_baseline.py > "$O/torch_train.jsonl" 2> "$O/torch_train.err"
# Generation, 64 prompts x 8 samples x 512 new tokens, against transformers.generate.
timeout 200 "$B/tandem-bench-gpu-generate" > "$O/bench_gpu_generate.jsonl" 2> "$O/bench_gpu_generate.err"
# Quantized KV pages and split-K decode (Qwen2.5-0.5B shapes, graphs on): bf16 rows against int8
# pages with int2 compression and int2 KIVI behind a bf16 window (16 x 8 x 256), and one long
# context (2 x 2, 7680 + 256 tokens) with split-K chosen automatically against none.
for kv_args in "--kv-dtype f32" "--kv-dtype int8 --compress-after 256" "--kv-dtype int2" \
    "--kv-dtype f32 --prompts 2 --group 2 --prompt-len 7680 --splits 1" \
    "--kv-dtype f32 --prompts 2 --group 2 --prompt-len 7680 --splits 0"; do
    # shellcheck disable=SC2086  # kv_args is a list of options
    timeout 100 "$B/tandem-bench-gpu-generate" --model qwen2.5-0.5b --graphs on --prompts 16 \
        --new 256 $kv_args >> "$O/bench_gpu_generate_kv.jsonl" 2>> "$O/bench_gpu_generate_kv.err"
done
timeout 240 python3 bench/gpu/torch_generate_baseline.py > "$O/torch_generate.jsonl" 2> "$O/torch_generate.err"
echo "== $(head -2 "$O/nvidia-smi.txt" | tail -1)"
echo "cuBLASLt from: ${cublas_dir:-not found (fallback GEMM kernel)}"
grep -h -E '^gemm|logits max|log-prob max' "$O"/tandem_gpu_ops.txt "$O"/tandem_gpu_model.txt 2>/dev/null | sort -u | head -12
# Training path: the whole-model gradient against the CPU engine, one GRPO step against the CPU
# trainer (loss, grad norm, updated weights), per architecture.
grep -h -E 'gradient norm|: loss |updated weights' "$O"/tandem_gpu_train.txt 2>/dev/null | head -12
# The trainer actor on cuda against cpu (supervised and GRPO steps) and the resumed step.
grep -h -E '^(supervised|grpo step [12]|resumed step):' "$O"/tandem_gpu_trainer_device.txt 2>/dev/null | head -4
grep -h -E '^rollout weights:' "$O"/tandem_gpu_rollout_weights.txt 2>/dev/null | head -8
grep -h -E '^rollout context parallel .*(: [0-9]+ ranks|max \|err\|)' \
    "$O"/tandem_gpu_rollout_weights.txt 2>/dev/null | head -10
for t in "${!result[@]}"; do echo "$t: ${result[$t]}"; done
for k in "${!san_result[@]}"; do echo "sanitizer $k: ${san_result[$k]}"; done | sort
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
sdpa = {(r["dtype"], r["t"], r["causal"]): r["tflops"] for r in lines("sdpa_baseline.jsonl")
        if "tflops" in r and r.get("case") == "sdpa_baseline"}
for r in lines("bench_gpu_forward.jsonl"):
    if r.get("skipped"):
        print("bench skipped:", r.get("reason")); continue
    s = sdpa.get((r["dtype"], r["t"], r["causal"]))
    print(f"fwd {r['dtype']:>4} t={r['t']:<6} causal={int(r['causal'])} tandem={r['tflops']:6.1f} TFLOP/s"
          f" sdpa={s if s else float('nan'):6.1f} ratio={(r['tflops']/s) if s else float('nan'):.2f}")
sdpa_bwd = {(r["model"], r["t"]): r["tflops"] for r in lines("sdpa_baseline.jsonl")
            if r.get("case") == "sdpa_backward"}
for r in lines("bench_gpu_backward.jsonl"):
    if r.get("skipped"):
        print("bench gpu_backward skipped:", r.get("reason")); continue
    s = sdpa_bwd.get((r["model"], r["t"]))
    print(f"bwd {r['model']:<13} {r['kernel']:<6} t={r['t']:<5} tandem={r['tflops']:6.1f} TFLOP/s"
          f" sdpa={s if s else float('nan'):6.1f} ratio={(r['tflops']/s) if s else float('nan'):.2f} (target 0.4)")
torch_train = {(r["model"], r["attn"]): r for r in lines("torch_train.jsonl") if "tokens_per_s" in r}
for r in lines("torch_train.jsonl"):
    if r.get("skipped"):
        print("torch train baseline skipped:", r.get("reason"))
for r in lines("bench_gpu_train_step.jsonl"):
    if r.get("skipped"):
        print("gpu train step skipped:", r.get("reason")); continue
    e, s = torch_train.get((r["model"], "eager"), {}), torch_train.get((r["model"], "sdpa"), {})
    te, ts = e.get("tokens_per_s"), s.get("tokens_per_s")
    print(f"train step {r['model']:<13} {r['batch']}x{r['seq']} tandem={r['tokens_per_s']:8.0f} tok/s"
          f" mfu={r['mfu']} torch_eager={te or float('nan'):8.0f} (mfu {e.get('mfu')})"
          f" torch_sdpa={ts or float('nan'):8.0f} ratio_eager={(r['tokens_per_s']/te) if te else float('nan'):.2f}"
          f" (target 1.0) fwd/bwd/adamw={r['forward_s']:.3f}/{r['backward_s']:.3f}/{r['optimizer_s']:.3f}s"
          f" peak={r['peak_device_mib']:.0f} MiB fallback_gemms={r['gemm_fallback_calls']}")
torch = {(r["model"], r["attn"]): r["tokens_per_s"] for r in lines("torch_forward.jsonl") if "tokens_per_s" in r}
for r in lines("torch_forward.jsonl"):
    if r.get("skipped"):
        print("torch baseline skipped:", r.get("reason"))
for r in lines("bench_gpu_model.jsonl"):
    if r.get("skipped"):
        print("gpu model bench skipped:", r.get("reason")); continue
    if r["bench"] == "gpu_train_pass":
        print(f"train pass {r['model']:<13} {r['batch']}x{r['seq']} tandem={r['tokens_per_s']:9.0f} tok/s"
              f" (forward with saved activations + backward) peak={r['peak_device_mib']:.0f} MiB")
        continue
    if r["bench"] == "gpu_gemm":
        print(f"gemm {r['model']:<13} {r['gemm']:<16} {r['m']}x{r['n']}x{r['k']} {r['tflops']:6.1f} TFLOP/s")
        continue
    e, s = torch.get((r["model"], "eager")), torch.get((r["model"], "sdpa"))
    print(f"forward {r['model']:<13} {r['batch']}x{r['seq']} tandem={r['tokens_per_s']:9.0f} tok/s"
          f" torch_eager={e or float('nan'):9.0f} torch_sdpa={s or float('nan'):9.0f}"
          f" ratio_eager={(r['tokens_per_s']/e) if e else float('nan'):.2f}"
          f" peak={r['peak_device_mib']:.0f} MiB fallback_gemms={r['gemm_fallback_calls']}")
PY
python3 - "$O/bench_weights_gpu.jsonl" <<'PY'
import json, sys, os
p = sys.argv[1]
for l in (open(p) if os.path.exists(p) else []):
    if not l.strip().startswith("{"): continue
    r = json.loads(l)
    if r.get("skipped") or "error" in r:
        print(f"weights gpu {r.get('path', '')}:", r.get("reason") or r.get("error")); continue
    if r["path"] == "ucx_device":
        print(f"weights gpu ucx_device (used {r['path_used']}) publish(+device slot)={r['publish_seconds']:.3f}s"
              f" fetch={r['fetch_seconds']:.3f}s {r['gb_per_s']:.1f} GB/s ratio={r['ratio_to_memcpy']:.2f}"
              f" verified={r['verified']}")
    elif r["path"] == "pinned_host":
        print(f"weights gpu pinned {r['bytes']/2**30:.2f} GiB publish={r['publish_seconds']:.3f}s fetch={r['fetch_seconds']:.3f}s"
              f" {r['gb_per_s']:.1f} GB/s memcpy d2h+h2d {r['memcpy_gb_per_s']:.1f} GB/s ratio={r['ratio_to_memcpy']:.2f}"
              f" overlapped={r['fetch_overlapped_fraction']:.2f} verified={r['verified']}")
    else:
        print(f"weights gpu cuda_ipc publish(+device slot)={r['publish_seconds']:.3f}s open={r['open_seconds']*1e3:.2f} ms"
              f" verified={r['verified']}")
PY
# Generation: the kernels' and the greedy comparison's observed errors (context parallel on
# device ranks: 'context parallel <arch> P=<ranks>'; the system-prompt cache and KV budget:
# '<arch>: prefix cache / budget'; quantized KV pages: 'paged pages ...', 'paged decode pages ...',
# 'quantized kv ...'), tokens/s against transformers.generate.
grep -h -E 'paged decode|paged pages|tokens equal the reference|chi-square|greedy log-prob|first divergence|quantized kv' \
    "$O"/tandem_gpu_generate.txt 2>/dev/null | head -48
python3 - "$O" <<'PY'
import json, sys, os
o = sys.argv[1]
def lines(name):
    p = os.path.join(o, name)
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")] if os.path.exists(p) else []
hf = {r["model"]: r for r in lines("torch_generate.jsonl") if "tokens_per_s" in r}
for r in lines("torch_generate.jsonl"):
    if r.get("skipped"):
        print("transformers.generate baseline skipped:", r.get("model", ""), r.get("reason"))
for r in lines("bench_gpu_generate.jsonl"):
    if r.get("skipped"):
        print("gpu generate bench skipped:", r.get("reason")); continue
    b = hf.get(r["model"], {}).get("tokens_per_s")
    print(f"generate {r['model']:<13} {r['prompts']}x{r['group']}x{r['new_tokens']} graphs={int(r['cuda_graphs'])}"
          f" tandem={r['tokens_per_s']:9.0f} tok/s hf_generate={b or float('nan'):9.0f}"
          f" ratio={(r['tokens_per_s']/b) if b else float('nan'):.2f} (goal 2)"
          f" peak={r['device_peak_mib']:.0f} MiB {r['graph_note']}")
for r in lines("bench_gpu_generate_kv.jsonl"):
    if r.get("skipped"):
        print("gpu generate kv bench skipped:", r.get("reason")); continue
    print(f"generate kv {r['kv_dtype']:<4}->{r.get('kv_second_dtype') or '-':<4} compress_after={r['compress_after']} splits={r['splits']}"
          f" (ran {r['last_splits']}) {r['prompts']}x{r['group']}x{r['new_tokens']} prompt_len={r['prompt_len']}"
          f" tandem={r['tokens_per_s']:9.0f} tok/s block={r['kv_block_bytes']} B / {r['kv_block_tokens']} tokens"
          f" compressions={r['kv_compressions']} pool={r['kv_pool_mib']:.0f} MiB")
PY
# The device ring: observed errors per case, then prefill / decode time against one device.
grep -h -E '^(merge table|ring prefill|sharded decode P=|rank [0-9]+: )' "$O/tandem_gpu_ring_device.txt" 2>/dev/null | head -24
python3 - "$O/bench_context_parallel_device.jsonl" <<'PY'
import json, sys, os
p = sys.argv[1]
for l in (open(p) if os.path.exists(p) else []):
    if not l.strip().startswith("{"): continue
    r = json.loads(l)
    if r.get("skipped"):
        print("context parallel device skipped:", r.get("reason")); continue
    print(f"ring {r['transport']:<15} T={r['t']:<6} P={r['ranks']} prefill {r['ring_prefill_ms']:.2f} ms"
          f" (one device {r['single_prefill_ms']:.2f}, ratio {r['prefill_ratio']:.2f}) decode {r['ring_decode_us']:.0f} us"
          f" (one device {r['single_decode_us']:.0f}, ratio {r['decode_ratio']:.2f}) max|diff| {r['max_abs_diff_o']:.2e}")
PY
for f in "$O"/*.err; do [ -s "$f" ] && { echo "-- $f"; tail -3 "$f"; }; done
exit 0
