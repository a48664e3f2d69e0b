// Loss-side ops of kernels/cuda/ops.h: token log-probabilities, entropy, log-softmax and the
// log-probability backward, plus the optimizer (sum of squares, AdamW with clipping).
#include "kernels/cuda/ops_common.cuh"

namespace tandem::kernels::cuda {

using detail::blocks_for;
using detail::check_args;
using detail::launched;
using detail::raw;

namespace {

struct RowStats {
    float m;    // max of z = logits * inv_temp
    float sum;  // sum exp(z - m)
    float dot;  // sum exp(z - m) (z - m)
};

// Every thread of the block gets the row's statistics.
__device__ RowStats row_stats(const float* z, int64_t vocab, float it, float* scratch) {
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) m = fmaxf(m, z[j] * it);
    m = detail::block_max(m, scratch);
    float sum = 0.0f, dot = 0.0f;
    for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
        const float zj = z[j] * it - m;
        const float e = expf(zj);
        sum += e;
        dot += e * zj;
    }
    sum = detail::block_sum(sum, scratch);
    dot = detail::block_sum(dot, scratch);
    return {m, sum, dot};
}

__global__ void logprob_kernel(int64_t vocab, const float* logits, const int32_t* target, float it,
                               float* logp, float* entropy) {
    __shared__ float scratch[32];
    const int64_t row = blockIdx.x;
    const float* z = logits + row * vocab;
    const RowStats st = row_stats(z, vocab, it, scratch);
    if (threadIdx.x == 0) {
        const float log_sum = logf(st.sum);
        logp[row] = z[target[row]] * it - st.m - log_sum;
        if (entropy) entropy[row] = log_sum - st.dot / st.sum;
    }
}

__global__ void log_softmax_kernel(int64_t vocab, const float* logits, float it, float* out) {
    __shared__ float scratch[32];
    const int64_t row = blockIdx.x;
    const float* z = logits + row * vocab;
    const RowStats st = row_stats(z, vocab, it, scratch);
    const float shift = st.m + logf(st.sum);
    __syncthreads();  // out may alias logits: every thread has read z
    for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x)
        out[row * vocab + j] = z[j] * it - shift;
}

__global__ void logprob_backward_kernel(int64_t vocab, const float* logits, const int32_t* target,
                                        float it, const float* weight, float* dlogits) {
    __shared__ float scratch[32];
    const int64_t row = blockIdx.x;
    const float* z = logits + row * vocab;
    const RowStats st = row_stats(z, vocab, it, scratch);
    const float w = weight[row] * it;
    const float scale = -w / st.sum;
    const int32_t t = target[row];
    float* dz = dlogits + row * vocab;
    for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
        const float g = expf(z[j] * it - st.m) * scale;
        dz[j] = j == t ? g + w : g;
    }
}

__global__ void sum_squares_kernel(int64_t count, const float* x, double* out) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        const double v = x[i];
        acc += v * v;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) scratch[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = lane < static_cast<int>(blockDim.x >> 5) ? scratch[lane] : 0.0;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (lane == 0) atomicAdd(out, acc);
    }
}

__global__ void adamw_kernel(int64_t count, float* p, const float* grads, float* m, float* v,
                             AdamWStep a, bool decay, const double* sum_sq, Bf16* p_bf16) {
    float clip = 1.0f;
    if (a.max_grad_norm > 0) {
        const double norm = sqrt(*sum_sq);
        if (norm > a.max_grad_norm) clip = static_cast<float>(a.max_grad_norm / (norm + 1e-12));
    }
    const float keep = decay ? static_cast<float>(1.0 - double{a.lr} * a.weight_decay) : 1.0f;
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        const float g = grads[i] * clip;
        const float mi = a.beta1 * m[i] + (1.0f - a.beta1) * g;
        const float vi = a.beta2 * v[i] + (1.0f - a.beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float pi = p[i] * keep;
        pi -= a.lr * (mi * a.bias_correction1) / (sqrtf(vi * a.bias_correction2) + a.eps);
        p[i] = pi;
        if (p_bf16) detail::st(p_bf16, i, pi);
    }
}

Status row_launch_check(const char* op, int64_t n, int64_t vocab) {
    if (vocab <= 0 || n > 0x7fffffff) return invalid_argument(std::string(op) + ": bad shape");
    return Status();
}

int row_threads(int64_t vocab) { return vocab >= 4096 ? 1024 : (vocab >= 512 ? 256 : 128); }

}  // namespace

Status logprob_forward(const Stream& s, int64_t n, int64_t vocab, const float* logits,
                       const int32_t* target, float inv_temp, float* logp, float* entropy) {
    TANDEM_RETURN_IF_ERROR(check_args("logprob_forward", n, {logits, target, logp}));
    if (n == 0) return Status();
    TANDEM_RETURN_IF_ERROR(row_launch_check("logprob_forward", n, vocab));
    logprob_kernel<<<static_cast<unsigned>(n), row_threads(vocab), 0, raw(s)>>>(
        vocab, logits, target, inv_temp, logp, entropy);
    return launched("logprob_forward");
}

Status log_softmax(const Stream& s, int64_t n, int64_t vocab, const float* logits, float inv_temp,
                   float* out) {
    TANDEM_RETURN_IF_ERROR(check_args("log_softmax", n, {logits, out}));
    if (n == 0) return Status();
    TANDEM_RETURN_IF_ERROR(row_launch_check("log_softmax", n, vocab));
    log_softmax_kernel<<<static_cast<unsigned>(n), row_threads(vocab), 0, raw(s)>>>(vocab, logits,
                                                                                    inv_temp, out);
    return launched("log_softmax");
}

Status logprob_backward(const Stream& s, int64_t n, int64_t vocab, const float* logits,
                        const int32_t* target, float inv_temp, const float* weight,
                        float* dlogits) {
    TANDEM_RETURN_IF_ERROR(check_args("logprob_backward", n, {logits, target, weight, dlogits}));
    if (n == 0) return Status();
    TANDEM_RETURN_IF_ERROR(row_launch_check("logprob_backward", n, vocab));
    logprob_backward_kernel<<<static_cast<unsigned>(n), row_threads(vocab), 0, raw(s)>>>(
        vocab, logits, target, inv_temp, weight, dlogits);
    return launched("logprob_backward");
}

Status sum_squares(const Stream& s, int64_t count, const float* x, double* sum_sq) {
    TANDEM_RETURN_IF_ERROR(check_args("sum_squares", count, {x, sum_sq}));
    if (count == 0) return Status();
    const unsigned blocks = blocks_for(count) < 1024 ? blocks_for(count) : 1024;
    sum_squares_kernel<<<blocks, 256, 0, raw(s)>>>(count, x, sum_sq);
    return launched("sum_squares");
}

Status adamw_update(const Stream& s, int64_t count, float* params, const float* grads, float* m,
                    float* v, const AdamWStep& step, bool decay, const double* sum_sq,
                    Bf16* p_bf16) {
    TANDEM_RETURN_IF_ERROR(check_args("adamw_update", count, {params, grads, m, v}));
    if (count == 0) return Status();
    if (step.max_grad_norm > 0 && !sum_sq) {
        return invalid_argument("adamw_update: clipping needs the sum of squares");
    }
    adamw_kernel<<<blocks_for(count), 256, 0, raw(s)>>>(count, params, grads, m, v, step, decay,
                                                        sum_sq, p_bf16);
    return launched("adamw_update");
}

}  // namespace tandem::kernels::cuda
