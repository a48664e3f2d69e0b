// Device log-sum-exp merge of attention partials (kernels/cuda/attention_merge.h). One warp per
// (query row, head): lane 0 computes the weights in double, the warp scales the d outputs.
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/attention_merge.h"
#include "kernels/cuda/ops_common.cuh"

namespace tandem::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

__global__ void merge_into_kernel(int64_t tq, int hq, int d, float* o_acc, float* lse_acc,
                                  const float* o, const float* lse) {
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= tq * hq) return;
    const int64_t t = row / hq;
    const int h = static_cast<int>(row % hq);
    const float la = lse_acc[h * tq + t];
    const float lb = lse[h * tq + t];
    float* oa = o_acc + (t * hq + h) * d;
    const float* ob = o + (t * hq + h) * d;
    if (lb == -INFINITY) return;  // identity
    if (la == -INFINITY) {
        for (int x = lane; x < d; x += 32) oa[x] = ob[x];
        if (lane == 0) lse_acc[h * tq + t] = lb;
        return;
    }
    const double hi = la > lb ? la : lb;
    const double lo = la > lb ? lb : la;
    const double merged = hi + log1p(exp(lo - hi));
    const float wa = static_cast<float>(exp(la - merged));
    const float wb = static_cast<float>(exp(lb - merged));
    for (int x = lane; x < d; x += 32) oa[x] = wa * oa[x] + wb * ob[x];
    __syncwarp();
    if (lane == 0) lse_acc[h * tq + t] = static_cast<float>(merged);
}

__global__ void merge_table_kernel(const float* table, int parts, int64_t stride, int64_t tq,
                                   int hq, int d, float* o_out, float* lse_out) {
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= tq * hq) return;
    const int64_t t = row / hq;
    const int h = static_cast<int>(row % hq);
    const int64_t o_elems = tq * hq * d;
    const int64_t li = h * tq + t;
    // Every lane computes the same weights (parts is small), in the order of merge.cc.
    double m = -INFINITY;
    for (int r = 0; r < parts; ++r)
        m = fmax(m, static_cast<double>(table[r * stride + o_elems + li]));
    float* out = o_out + (t * hq + h) * d;
    if (m == -INFINITY) {
        for (int x = lane; x < d; x += 32) out[x] = 0.0f;
        if (lane == 0) lse_out[li] = -INFINITY;
        return;
    }
    double sum = 0.0;
    for (int r = 0; r < parts; ++r) {
        const float l = table[r * stride + o_elems + li];
        if (l != -INFINITY) sum += exp(l - m);
    }
    const double merged = m + log(sum);
    for (int x = lane; x < d; x += 32) {
        float acc = 0.0f;
        for (int r = 0; r < parts; ++r) {
            const float l = table[r * stride + o_elems + li];
            if (l == -INFINITY) continue;
            const float w = static_cast<float>(exp(l - merged));
            acc += w * table[r * stride + (t * hq + h) * d + x];
        }
        out[x] = acc;
    }
    if (lane == 0) lse_out[li] = static_cast<float>(merged);
}

__global__ void clear_kernel(float* o, int64_t o_elems, float* lse, int64_t lse_elems) {
    const int64_t n = o_elems > lse_elems ? o_elems : lse_elems;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        if (i < o_elems) o[i] = 0.0f;
        if (i < lse_elems) lse[i] = -INFINITY;
    }
}

__global__ void accumulate_kernel(float* dst, const float* src, int64_t n) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        dst[i] += src[i];
    }
}

Status check_shape(const char* op, int64_t tq, int hq, int d) {
    if (tq < 0 || hq <= 0 || d <= 0) {
        return invalid_argument(std::string(op) + ": bad shape tq=" + std::to_string(tq) +
                                " hq=" + std::to_string(hq) + " d=" + std::to_string(d));
    }
    return Status();
}

unsigned row_blocks(int64_t rows) {
    return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

}  // namespace

Status merge_attention_into(const Stream& stream, int64_t tq, int hq, int d, float* o_acc,
                            float* lse_acc, const float* o, const float* lse) {
    TANDEM_RETURN_IF_ERROR(check_shape("merge_attention_into", tq, hq, d));
    TANDEM_RETURN_IF_ERROR(
        detail::check_args("merge_attention_into", tq, {o_acc, lse_acc, o, lse}));
    if (tq == 0) return Status();
    merge_into_kernel<<<row_blocks(tq * hq), kWarpsPerBlock * 32, 0, detail::raw(stream)>>>(
        tq, hq, d, o_acc, lse_acc, o, lse);
    return detail::launched("merge_attention_into");
}

Status merge_attention_table(const Stream& stream, const float* table, int parts,
                             int64_t slot_stride, int64_t tq, int hq, int d, float* o, float* lse) {
    TANDEM_RETURN_IF_ERROR(check_shape("merge_attention_table", tq, hq, d));
    TANDEM_RETURN_IF_ERROR(detail::check_args("merge_attention_table", tq, {table, o, lse}));
    if (parts < 1 || slot_stride < tq * hq * (d + 1)) {
        return invalid_argument("merge_attention_table: " + std::to_string(parts) +
                                " parts with a slot stride of " + std::to_string(slot_stride) +
                                " floats (a partial needs " + std::to_string(tq * hq * (d + 1)) +
                                ")");
    }
    if (tq == 0) return Status();
    merge_table_kernel<<<row_blocks(tq * hq), kWarpsPerBlock * 32, 0, detail::raw(stream)>>>(
        table, parts, slot_stride, tq, hq, d, o, lse);
    return detail::launched("merge_attention_table");
}

Status clear_attention_partial(const Stream& stream, float* o, int64_t o_elems, float* lse,
                               int64_t lse_elems) {
    TANDEM_RETURN_IF_ERROR(detail::check_args("clear_attention_partial", o_elems, {o}));
    TANDEM_RETURN_IF_ERROR(detail::check_args("clear_attention_partial", lse_elems, {lse}));
    const int64_t n = o_elems > lse_elems ? o_elems : lse_elems;
    if (n == 0) return Status();
    clear_kernel<<<detail::blocks_for(n), 256, 0, detail::raw(stream)>>>(o, o_elems, lse,
                                                                         lse_elems);
    return detail::launched("clear_attention_partial");
}

Status accumulate_f32(const Stream& stream, float* dst, const float* src, int64_t n) {
    TANDEM_RETURN_IF_ERROR(detail::check_args("accumulate_f32", n, {dst, src}));
    if (n == 0) return Status();
    accumulate_kernel<<<detail::blocks_for(n), 256, 0, detail::raw(stream)>>>(dst, src, n);
    return detail::launched("accumulate_f32");
}

}  // namespace tandem::kernels::cuda
