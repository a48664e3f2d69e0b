// Log-sum-exp merge of partial attention results.
#include "kernels/merge.h"

#include <cmath>
#include <limits>

namespace tandem::kernels {
namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}  // namespace

void merge_attention_into(int64_t tq, int hq, int d, float* o_acc, float* lse_acc, const float* o,
                          const float* lse) {
    for (int h = 0; h < hq; ++h) {
        for (int64_t t = 0; t < tq; ++t) {
            const float la = lse_acc[h * tq + t];
            const float lb = lse[h * tq + t];
            float* oa = o_acc + (t * hq + h) * d;
            const float* obv = o + (t * hq + h) * d;
            if (lb == kNegInf) continue;  // identity
            if (la == kNegInf) {
                for (int x = 0; x < d; ++x) oa[x] = obv[x];
                lse_acc[h * tq + t] = lb;
                continue;
            }
            const double hi = la > lb ? la : lb;
            const double lo = la > lb ? lb : la;
            const double merged = hi + std::log1p(std::exp(lo - hi));
            const float wa = static_cast<float>(std::exp(la - merged));
            const float wb = static_cast<float>(std::exp(lb - merged));
            for (int x = 0; x < d; ++x) oa[x] = wa * oa[x] + wb * obv[x];
            lse_acc[h * tq + t] = static_cast<float>(merged);
        }
    }
}

Status merge_attention(std::span<const AttentionPartial> parts, int64_t tq, int hq, int d,
                       float* o_out, float* lse_out) {
    if (tq < 0 || hq <= 0 || d <= 0) return invalid_argument("merge_attention: bad shape");
    for (const auto& part : parts) {
        if (tq > 0 && (!part.o || !part.lse)) {
            return invalid_argument("merge_attention: partial with a null pointer");
        }
    }
    for (int h = 0; h < hq; ++h) {
        for (int64_t t = 0; t < tq; ++t) {
            double m = -std::numeric_limits<double>::infinity();
            for (const auto& part : parts) m = std::fmax(m, part.lse[h * tq + t]);
            float* out = o_out + (t * hq + h) * d;
            for (int x = 0; x < d; ++x) out[x] = 0.0f;
            if (m == -std::numeric_limits<double>::infinity()) {
                lse_out[h * tq + t] = kNegInf;
                continue;
            }
            double sum = 0.0;
            for (const auto& part : parts) {
                const float l = part.lse[h * tq + t];
                if (l != kNegInf) sum += std::exp(l - m);
            }
            const double merged = m + std::log(sum);
            for (size_t i = 0; i < parts.size(); ++i) {
                const float l = parts[i].lse[h * tq + t];
                if (l == kNegInf) continue;
                const float wi = static_cast<float>(std::exp(l - merged));
                const float* src = parts[i].o + (t * hq + h) * d;
                for (int x = 0; x < d; ++x) out[x] += wi * src[x];
            }
            lse_out[h * tq + t] = static_cast<float>(merged);
        }
    }
    return Status();
}

}  // namespace tandem::kernels
