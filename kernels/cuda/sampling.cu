// Device sampling (kernels/cuda/sampling.h): one block per row.
#include "kernels/cuda/ops_common.cuh"
#include "kernels/cuda/philox.h"
#include "kernels/cuda/sampling.h"

namespace tandem::kernels::cuda {

using detail::launched;
using detail::raw;

namespace {

constexpr int kThreads = 1024;
constexpr double kMassScale = 1099511627776.0;  // 2^40: fixed point of the top-p histograms

// Order-preserving map of a float to uint32 (larger float, larger key).
__device__ __forceinline__ uint32_t key_of(float z) {
    const uint32_t b = __float_as_uint(z);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The largest key t such that the weight of the row's elements with key >= t reaches `need`
// (weight 1 each for top-k: the k-th largest key; fixed-point probability for top-p), by radix
// selection one byte at a time from the top. `hist` is 256 shared uint64.
template <typename WeightFn>
__device__ uint32_t radix_select(const float* x, int64_t vocab, float it, unsigned long long need,
                                 unsigned long long* hist, WeightFn weight) {
    __shared__ uint32_t s_prefix;
    __shared__ unsigned long long s_need;
    uint32_t prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
            const float z = x[j] * it;
            const uint32_t key = key_of(z);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], weight(z));
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned long long acc = 0;
            int chosen = 0;
            for (int b = 255; b >= 0; --b) {
                if (acc + hist[b] >= need) {
                    chosen = b;
                    break;
                }
                acc += hist[b];
            }
            s_prefix = prefix | (static_cast<uint32_t>(chosen) << shift);
            s_need = need - acc;
        }
        __syncthreads();
        prefix = s_prefix;
        need = s_need;
        mask |= 255u << shift;
        __syncthreads();
    }
    return prefix;
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(DeviceSampling o, SampleRows r, float it, bool use_k, bool use_p) {
    __shared__ float red[32];
    __shared__ float scan[kThreads];
    __shared__ unsigned long long hist[256];
    __shared__ int s_choice;
    const int64_t i = blockIdx.x;
    const int64_t V = r.vocab;
    const float* x = r.logits + (r.logit_row ? static_cast<int64_t>(r.logit_row[i]) : i) * V;
    const int t = threadIdx.x;

    float lm = -INFINITY;
    for (int64_t j = t; j < V; j += blockDim.x) lm = fmaxf(lm, x[j] * it);
    const float m = detail::block_max(lm, red);
    float ls = 0.0f;
    for (int64_t j = t; j < V; j += blockDim.x) ls += expf(x[j] * it - m);
    const float total = detail::block_sum(ls, red);
    const float log_sum = logf(total);

    if (o.temperature <= 0.0f) {  // greedy: the first largest logit
        float best = -INFINITY;
        int best_j = INT_MAX;
        for (int64_t j = t; j < V; j += blockDim.x) {
            if (x[j] > best || (best_j == INT_MAX && x[j] == best)) {
                best = x[j];
                best_j = static_cast<int>(j);
            }
        }
        for (int off = 16; off > 0; off >>= 1) {
            const float ob = __shfl_xor_sync(0xffffffffu, best, off);
            const int oj = __shfl_xor_sync(0xffffffffu, best_j, off);
            if (ob > best || (ob == best && oj < best_j)) {
                best = ob;
                best_j = oj;
            }
        }
        __shared__ float wb[32];
        __shared__ int wj[32];
        if ((t & 31) == 0) {
            wb[t >> 5] = best;
            wj[t >> 5] = best_j;
        }
        __syncthreads();
        if (t == 0) {
            for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) {
                if (wb[w] > best || (wb[w] == best && wj[w] < best_j)) {
                    best = wb[w];
                    best_j = wj[w];
                }
            }
            if (best_j == INT_MAX) best_j = 0;  // every logit NaN
            r.token[i] = best_j;
            r.logp[i] = x[best_j] * it - m - log_sum;
        }
        return;
    }

    uint32_t threshold = 0;  // keep every key
    if (use_k) {
        threshold = radix_select(x, V, it, static_cast<unsigned long long>(o.top_k), hist,
                                 [](float) { return 1ull; });
    }
    if (use_p) {
        const double scale = kMassScale / static_cast<double>(total);
        const auto need =
            static_cast<unsigned long long>(static_cast<double>(o.top_p) * kMassScale);
        const uint32_t tp = radix_select(x, V, it, need, hist, [=](float z) {
            return static_cast<unsigned long long>(static_cast<double>(expf(z - m)) * scale);
        });
        threshold = max(threshold, tp);
    }
    // Kept probability mass, then the inverse CDF over kept tokens in vocabulary order: thread t
    // owns the contiguous range [t * chunk, (t + 1) * chunk).
    const int64_t chunk = (V + blockDim.x - 1) / blockDim.x;
    const int64_t j0 = min(V, t * chunk), j1 = min(V, j0 + chunk);
    float csum = 0.0f;
    for (int64_t j = j0; j < j1; ++j) {
        const float z = x[j] * it;
        if (key_of(z) >= threshold) csum += expf(z - m);
    }
    scan[t] = csum;
    __syncthreads();
    for (int off = 1; off < static_cast<int>(blockDim.x); off <<= 1) {
        const float v = t >= off ? scan[t - off] : 0.0f;
        __syncthreads();
        scan[t] += v;
        __syncthreads();
    }
    const float kept = scan[blockDim.x - 1];
    const float excl = scan[t] - csum;
    const double u = philox_uniform(o.seed, r.stream[i], static_cast<uint32_t>(r.step[i]));
    const float target = static_cast<float>(u * static_cast<double>(kept));
    if (t == 0) s_choice = -1;
    __syncthreads();
    // The last range that starts at or below the target and holds kept mass.
    if (csum > 0.0f && excl <= target) atomicMax(&s_choice, t);
    __syncthreads();
    if (t == s_choice) {
        float acc = excl;
        int64_t pick = -1, last = -1;
        for (int64_t j = j0; j < j1; ++j) {
            const float z = x[j] * it;
            if (key_of(z) < threshold) continue;
            last = j;
            acc += expf(z - m);
            if (target < acc) {
                pick = j;
                break;
            }
        }
        if (pick < 0) pick = last;  // rounding: the range's last kept token
        r.token[i] = static_cast<int32_t>(pick);
        r.logp[i] = x[pick] * it - m - log_sum;
    }
}

}  // namespace

Status sample_tokens(const Stream& s, const DeviceSampling& o, const SampleRows& r) {
    TANDEM_RETURN_IF_ERROR(
        detail::check_args("sample_tokens", r.n, {r.logits, r.stream, r.step, r.token, r.logp}));
    if (r.vocab < 1 || r.vocab > (int64_t{1} << 30)) {
        return invalid_argument("sample_tokens: vocab must be in [1, 2^30], got " +
                                std::to_string(r.vocab));
    }
    if (!(o.temperature >= 0.0f) || !(o.top_p > 0.0f && o.top_p <= 1.0f) || o.top_k < 0) {
        return invalid_argument(
            "sample_tokens: need temperature >= 0, top_p in (0, 1], top_k >= 0; got temperature " +
            std::to_string(o.temperature) + ", top_p " + std::to_string(o.top_p) + ", top_k " +
            std::to_string(o.top_k));
    }
    if (r.n == 0) return Status();
    // Log-probs at the sampling temperature (1 when greedy), as model::Sampler reports them.
    const float it = o.temperature > 0.0f ? 1.0f / o.temperature : 1.0f;
    const bool use_k = o.top_k > 0 && o.top_k < r.vocab;
    const bool use_p = o.top_p < 1.0f;
    sample_kernel<<<static_cast<unsigned>(r.n), kThreads, 0, raw(s)>>>(o, r, it, use_k, use_p);
    return launched("sample_tokens");
}

}  // namespace tandem::kernels::cuda
