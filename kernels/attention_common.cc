// Shape checks and counting helpers shared by the CPU and CUDA launchers.
#include <cmath>
#include <string>

#include "kernels/attention.h"
#include "kernels/attention_cuda_host.h"

namespace tandem::kernels {

const char* dtype_name(DType dtype) {
    switch (dtype) {
        case DType::kF32:
            return "f32";
        case DType::kF16:
            return "f16";
        case DType::kBF16:
            return "bf16";
    }
    return "unknown";
}

size_t dtype_bytes(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

float default_softmax_scale(int d) { return d > 0 ? 1.0f / std::sqrt(static_cast<float>(d)) : 0; }

Status validate(const AttentionParams& p) {
    auto bad = [&](const std::string& what) {
        return invalid_argument("attention: " + what + " (tq=" + std::to_string(p.tq) +
                                " tk=" + std::to_string(p.tk) + " hq=" + std::to_string(p.hq) +
                                " hkv=" + std::to_string(p.hkv) + " d=" + std::to_string(p.d) +
                                ")");
    };
    if (p.tq < 0 || p.tk < 0) return bad("tq and tk must be >= 0");
    if (p.hq <= 0 || p.hkv <= 0) return bad("hq and hkv must be > 0");
    if (p.hq % p.hkv != 0) return bad("hq must be a multiple of hkv");
    if (p.d <= 0 || p.d > 256) return bad("d must be in 1..256");
    if (!std::isfinite(p.scale) || p.scale <= 0) {
        return bad("scale must be finite and > 0, got " + std::to_string(p.scale));
    }
    if (p.lse_stride != 0 && p.lse_stride < p.tq) return bad("lse_stride must be 0 or >= tq");
    if (p.q_split < 0 || p.k_split < 0) return bad("q_split and k_split must be >= 0");
    if (p.q_split != kNoSplit && p.q_pos1 < p.q_pos0 + p.q_split) {
        return bad("query positions decrease at q_split");
    }
    if (p.k_split != kNoSplit && p.k_pos1 < p.k_pos0 + p.k_split) {
        return bad("key positions decrease at k_split");
    }
    return Status();
}

namespace {
// Rows [0, rows) at base + i: how many have a position <= pos.
int64_t run_prefix(int64_t base, int64_t rows, int64_t pos) {
    const int64_t n = pos - base + 1;
    return n <= 0 ? 0 : (n < rows ? n : rows);
}
}  // namespace

int64_t keys_visible_at(const AttentionParams& p, int64_t pos) {
    const int64_t first_rows = p.k_split < p.tk ? p.k_split : p.tk;
    const int64_t a = run_prefix(p.k_pos0, first_rows, pos);
    if (a < first_rows || first_rows == p.tk) return a;
    return a + run_prefix(p.k_pos1, p.tk - first_rows, pos);
}

int64_t queries_before(const AttentionParams& p, int64_t pos) {
    const int64_t first_rows = p.q_split < p.tq ? p.q_split : p.tq;
    const int64_t a = run_prefix(p.q_pos0, first_rows, pos - 1);
    if (a < first_rows || first_rows == p.tq) return a;
    return a + run_prefix(p.q_pos1, p.tq - first_rows, pos - 1);
}

int64_t attended_entries(const AttentionParams& p) {
    if (!p.causal) return p.tq * p.tk;
    int64_t total = 0;
    for (int64_t i = 0; i < p.tq; ++i) total += keys_visible_at(p, query_position(p, i));
    return total;
}

double attention_forward_flops(const AttentionParams& p) {
    return 4.0 * p.d * p.hq * static_cast<double>(attended_entries(p));
}

#ifndef TANDEM_KERNELS_CUDA
Status attention_forward_cuda(const AttentionParams&, DType, const void*, const void*, const void*,
                              float*, float*, void*) {
    return unavailable("attention_forward_cuda: built without CUDA (TANDEM_CUDA=OFF or no nvcc)");
}

Status attention_forward_cuda_from_host(const AttentionParams&, DType, const float*, const float*,
                                        const float*, float*, float*) {
    return unavailable("built without CUDA (TANDEM_CUDA=OFF or no nvcc)");
}

Result<CudaTiming> time_attention_cuda(const AttentionParams&, DType, int, int) {
    return unavailable("built without CUDA (TANDEM_CUDA=OFF or no nvcc)");
}
#endif

}  // namespace tandem::kernels
