#!/usr/bin/env bash
# Builds the GPU test binaries and benchmarks (CUDA runtime and GoogleTest linked statically, for
# sm_90a) into build/gpu and copies them, with the few shared libraries they need that a bare GPU
# machine lacks, into gpu-bundle/ (git-ignored through .git/info/exclude). Then run on the GPU
# machine, from the repository root:   bash deploy/gpu/run.sh
# (the `device` tool: carry gpu-bundle and run that command). See docs/kernels.md, "On a GPU".
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_CUDA=ON >/dev/null
targets=(tandem_gpu_device tandem_gpu_kernels_attention tandem_gpu_kernels_ring_nccl
         tandem_gpu_weights tandem-bench-attention tandem-attn)
cmake --build build/gpu --target "${targets[@]}" -j "$(nproc)"
rm -rf gpu-bundle && mkdir -p gpu-bundle/lib
cp build/gpu/tests/gpu/tandem_gpu_device build/gpu/tests/gpu/tandem_gpu_kernels_attention \
   build/gpu/tests/gpu/tandem_gpu_kernels_ring_nccl build/gpu/bench/attention/tandem-bench-attention \
   build/gpu/kernels/tandem-attn build/gpu/tests/integration/weights/tandem_gpu_weights gpu-bundle/
# The benchmark's sgemm baseline needs OpenBLAS; NCCL comes from the GPU machine's PyTorch.
for lib in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0; do
    cp -L "$(ldd build/gpu/bench/attention/tandem-bench-attention | awk -v l="$lib" '$1 == l {print $3}')" \
        gpu-bundle/lib/
done
# The weights test needs Debian's UCX (libraries and its transport modules), spdlog, fmt, xxhash.
for lib in $(ldd build/gpu/tests/integration/weights/tandem_gpu_weights |
             awk '$1 ~ /^lib(uc[pstm]|xxhash|spdlog|fmt|numa)/ {print $3}'); do
    cp -L "$lib" gpu-bundle/lib/
done
ucx_modules=$(dirname "$(ldd build/gpu/tests/integration/weights/tandem_gpu_weights |
                         awk '$1 ~ /^libucs/ {print $3}')")/ucx
cp -rL "$ucx_modules" gpu-bundle/lib/ucx
for f in gpu-bundle/tandem*; do
    echo "$f: $(ldd "$f" | awk '{print $1}' | grep -v -e vdso -e ld-linux | tr '\n' ' ')"
done
