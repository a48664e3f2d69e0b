#!/usr/bin/env bash
# Builds the GPU test binaries and benchmarks (CUDA runtime and GoogleTest linked statically, for
# sm_90a) into build/gpu and copies them, with the few shared libraries they need that a bare GPU
# machine lacks, into gpu-bundle/ (git-ignored) and build/gpu-bundle.tar.gz. Then run on the GPU
# machine, from the repository root:   bash deploy/gpu/run.sh
# (the `device` tool: carry gpu-bundle, or build/gpu-bundle.tar.gz when that is over the limit, and
# run that command). See docs/gpu.md and docs/kernels.md, "On a GPU".
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_CUDA=ON >/dev/null
targets=(tandem_gpu_device tandem_gpu_kernels_attention tandem_gpu_kernels_ring_nccl
         tandem_gpu_weights tandem_gpu_ops tandem_gpu_model tandem_gpu_train tandem-bench-attention
         tandem-bench-gpu-model tandem-attn)
cmake --build build/gpu --target "${targets[@]}" -j "$(nproc)"
rm -rf gpu-bundle && mkdir -p gpu-bundle/lib
cp build/gpu/tests/gpu/tandem_gpu_device build/gpu/tests/gpu/tandem_gpu_kernels_attention \
   build/gpu/tests/gpu/tandem_gpu_kernels_ring_nccl build/gpu/tests/gpu/tandem_gpu_ops \
   build/gpu/tests/gpu/tandem_gpu_model build/gpu/tests/gpu/tandem_gpu_train \
   build/gpu/bench/attention/tandem-bench-attention \
   build/gpu/bench/gpu/tandem-bench-gpu-model \
   build/gpu/kernels/tandem-attn build/gpu/tests/integration/weights/tandem_gpu_weights gpu-bundle/
# Decode attention over quantized KV pages (kernels/cuda/kv_attention.h, docs/kv-cache.md).
cmake --build build/gpu --target tandem_gpu_kv_attention -j "$(nproc)"
cp build/gpu/tests/gpu/tandem_gpu_kv_attention gpu-bundle/
# The device ring (kernels/ring/device_ring.h): its tests and the context-parallel benchmark.
cmake --build build/gpu --target tandem_gpu_ring_device tandem-bench-context-parallel -j "$(nproc)"
cp build/gpu/tests/gpu/tandem_gpu_ring_device \
   build/gpu/bench/context_parallel/tandem-bench-context-parallel gpu-bundle/
# Generation on the device (common/gpu/device_generate.h): its tests and its benchmark.
cmake --build build/gpu --target tandem_gpu_generate tandem-bench-gpu-generate -j "$(nproc)"
cp build/gpu/tests/gpu/tandem_gpu_generate build/gpu/bench/gpu/tandem-bench-gpu-generate gpu-bundle/
# Weights GPU -> GPU (pinned path, CUDA IPC) against cudaMemcpy (bench/weights, docs/gpu.md).
cmake --build build/gpu --target tandem-bench-weights-gpu -j "$(nproc)"
cp build/gpu/bench/weights/tandem-bench-weights-gpu gpu-bundle/
# The trainer actor on the device (trainer_node/policy.h): device checkpoints, cuda against cpu,
# publishing from device memory.
cmake --build build/gpu --target tandem_gpu_trainer_device -j "$(nproc)"
cp build/gpu/tests/gpu/tandem_gpu_trainer_device gpu-bundle/
# The rollout's weights on the device (rollout_node/device_weights.h) and the trainer's publish
# on its actor stream.
cmake --build build/gpu --target tandem_gpu_rollout_weights -j "$(nproc)"
cp build/gpu/tests/gpu/tandem_gpu_rollout_weights gpu-bundle/
# The binaries are not stripped of symbols by the Release build; strip them (the bundle travels
# under a 64 MiB limit).
strip gpu-bundle/tandem* 2>/dev/null || true
# The benchmark's sgemm baseline needs OpenBLAS; NCCL comes from the GPU machine's PyTorch.
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
    cp -L "$(ldd build/gpu/bench/attention/tandem-bench-attention | awk -v l="$lib" '$1 == l {print $3}')" \
        gpu-bundle/lib/
done
# The weights test and the model tests need Debian's UCX (libraries and its transport modules),
# spdlog, fmt, xxhash, yaml-cpp, ZeroMQ and the like: every shared library of the bundle's
# binaries except the C/C++ runtime, which the GPU machine has. cuBLASLt is not linked (the device
# GEMM dlopens it; run.sh points at PyTorch's copy) and NCCL comes from PyTorch too.
# (grep finds nothing for a binary that needs only the runtime: not an error under pipefail.)
for f in gpu-bundle/tandem*; do
    ldd "$f" | awk '$3 ~ /^\// {print $1, $3}' |
        { grep -v -E '^(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|ld-linux[^ ]*|libnccl|libcuda|libcublas[A-Za-z]*|libnvidia[^ ]*)\.so' || true; } |
        while read -r name path; do
            [ -e "gpu-bundle/lib/$name" ] || cp -L "$path" "gpu-bundle/lib/$name"
        done
done
ucx_modules=$(dirname "$(ldd build/gpu/tests/integration/weights/tandem_gpu_weights |
                         awk '$1 ~ /^libucs/ {print $3}')")/ucx
cp -rL "$ucx_modules" gpu-bundle/lib/ucx
for f in gpu-bundle/tandem*; do
    echo "$f: $(ldd "$f" | awk '{print $1}' | grep -v -e vdso -e ld-linux | tr '\n' ' ')"
done
# The device tool carries at most 64 MiB: the same files compressed (run.sh unpacks them when
# gpu-bundle/ is absent). Carry gpu-bundle or build/gpu-bundle.tar.gz, whichever fits.
tar -czf build/gpu-bundle.tar.gz gpu-bundle
du -sh gpu-bundle build/gpu-bundle.tar.gz
