#include "tests/unit/kernels/support/attention_reference.h"

#include <cmath>
#include <limits>
#include <random>
#include <sstream>

namespace tandem::kernels::testkit {

AttentionParams attention_params(int64_t tq, int64_t tk, int hq, int hkv, int d, bool causal,
                                 int64_t q_pos0, int64_t k_pos0) {
    AttentionParams p;
    p.tq = tq;
    p.tk = tk;
    p.hq = hq;
    p.hkv = hkv;
    p.d = d;
    p.scale = default_softmax_scale(d);
    p.causal = causal;
    p.q_pos0 = q_pos0;
    p.k_pos0 = k_pos0;
    return p;
}
namespace {

constexpr double kNegInfDouble = -std::numeric_limits<double>::infinity();

bool visible(const AttentionParams& p, int64_t i, int64_t j) {
    // Written out rather than through query_position/key_position, so the reference does not
    // share the kernels' position code.
    const int64_t qpos = i < p.q_split ? p.q_pos0 + i : p.q_pos1 + (i - p.q_split);
    const int64_t kpos = j < p.k_split ? p.k_pos0 + j : p.k_pos1 + (j - p.k_split);
    return !p.causal || kpos <= qpos;
}

double dot(const double* a, const double* b, int d) {
    double s = 0.0;
    for (int x = 0; x < d; ++x) s += a[x] * b[x];
    return s;
}

// Probabilities of query row i of head h over all keys (0 for masked keys); returns lse.
double row_probs(const AttentionParams& p, std::span<const double> q, std::span<const double> k,
                 int h, int64_t i, std::vector<double>& probs) {
    const int g = h / (p.hq / p.hkv);
    const double* qr = q.data() + (i * p.hq + h) * p.d;
    probs.assign(static_cast<size_t>(p.tk), 0.0);
    double m = kNegInfDouble;
    for (int64_t j = 0; j < p.tk; ++j) {
        if (!visible(p, i, j)) continue;
        probs[j] = p.scale * dot(qr, k.data() + (j * p.hkv + g) * p.d, p.d);
        m = std::max(m, probs[j]);
    }
    if (m == kNegInfDouble) {
        probs.assign(static_cast<size_t>(p.tk), 0.0);
        return kNegInfDouble;
    }
    double sum = 0.0;
    for (int64_t j = 0; j < p.tk; ++j) {
        if (!visible(p, i, j)) continue;
        probs[j] = std::exp(probs[j] - m);
        sum += probs[j];
    }
    for (auto& x : probs) x /= sum;
    return m + std::log(sum);
}

}  // namespace

ReferenceForward reference_forward(const AttentionParams& p, std::span<const double> q,
                                   std::span<const double> k, std::span<const double> v) {
    ReferenceForward out;
    out.o.assign(static_cast<size_t>(p.tq * p.hq * p.d), 0.0);
    out.lse.assign(static_cast<size_t>(p.hq * p.tq), kNegInfDouble);
    std::vector<double> probs;
    for (int h = 0; h < p.hq; ++h) {
        const int g = h / (p.hq / p.hkv);
        for (int64_t i = 0; i < p.tq; ++i) {
            out.lse[h * p.tq + i] = row_probs(p, q, k, h, i, probs);
            double* orow = out.o.data() + (i * p.hq + h) * p.d;
            for (int64_t j = 0; j < p.tk; ++j) {
                if (probs[j] == 0.0) continue;
                const double* vr = v.data() + (j * p.hkv + g) * p.d;
                for (int x = 0; x < p.d; ++x) orow[x] += probs[j] * vr[x];
            }
        }
    }
    return out;
}

ReferenceGrads reference_backward(const AttentionParams& p, std::span<const double> q,
                                  std::span<const double> k, std::span<const double> v,
                                  std::span<const double> dout) {
    ReferenceGrads g;
    g.dq.assign(q.size(), 0.0);
    g.dk.assign(k.size(), 0.0);
    g.dv.assign(v.size(), 0.0);
    std::vector<double> probs, dp(static_cast<size_t>(p.tk));
    for (int h = 0; h < p.hq; ++h) {
        const int kvh = h / (p.hq / p.hkv);
        for (int64_t i = 0; i < p.tq; ++i) {
            if (row_probs(p, q, k, h, i, probs) == kNegInfDouble) continue;
            const double* qr = q.data() + (i * p.hq + h) * p.d;
            const double* gr = dout.data() + (i * p.hq + h) * p.d;
            double delta = 0.0;
            for (int64_t j = 0; j < p.tk; ++j) {
                dp[j] = dot(gr, v.data() + (j * p.hkv + kvh) * p.d, p.d);
                delta += probs[j] * dp[j];
            }
            double* dqr = g.dq.data() + (i * p.hq + h) * p.d;
            for (int64_t j = 0; j < p.tk; ++j) {
                if (probs[j] == 0.0) continue;
                const double ds = probs[j] * (dp[j] - delta) * p.scale;
                const size_t kv = static_cast<size_t>((j * p.hkv + kvh) * p.d);
                for (int x = 0; x < p.d; ++x) {
                    dqr[x] += ds * k[kv + x];
                    g.dk[kv + x] += ds * qr[x];
                    g.dv[kv + x] += probs[j] * gr[x];
                }
            }
        }
    }
    return g;
}

uint32_t test_seed() {
    static const uint32_t seed = [] {
        const int flag = ::testing::GTEST_FLAG(random_seed);
        return flag != 0 ? static_cast<uint32_t>(flag) : std::random_device{}();
    }();
    return seed;
}

std::vector<float> random_floats(size_t n, uint64_t seed, float lo, float hi) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> out(n);
    for (auto& x : out) x = dist(rng);
    return out;
}

std::vector<double> to_double(std::span<const float> x) { return {x.begin(), x.end()}; }

std::vector<float> to_float(std::span<const double> x) {
    std::vector<float> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = static_cast<float>(x[i]);
    return out;
}

::testing::AssertionResult all_close(std::span<const float> got, std::span<const double> want,
                                     double atol, double rtol, const std::string& what) {
    if (got.size() != want.size()) {
        return ::testing::AssertionFailure()
               << what << ": size " << got.size() << " != " << want.size();
    }
    size_t bad = 0, first = 0;
    double worst = 0.0;
    for (size_t i = 0; i < got.size(); ++i) {
        const double g = got[i], w = want[i];
        bool ok;
        if (std::isnan(g) || std::isnan(w)) {
            ok = false;
        } else if (std::isinf(w) || std::isinf(g)) {
            ok = g == w;
        } else {
            const double err = std::fabs(g - w);
            worst = std::max(worst, err);
            ok = err <= atol + rtol * std::fabs(w);
        }
        if (!ok && bad++ == 0) first = i;
    }
    if (bad == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << what << ": " << bad << " of " << got.size() << " elements off (atol " << atol
           << ", rtol " << rtol << "); first at " << first << ": got " << got[first] << ", want "
           << want[first] << "; max finite error " << worst << "; seed " << test_seed();
}

double max_abs_error(std::span<const float> got, std::span<const double> want) {
    double worst = 0.0;
    for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
        if (std::isinf(want[i]) && got[i] == want[i]) continue;
        worst = std::max(worst, std::fabs(got[i] - want[i]));
    }
    return worst;
}

AttentionInputs make_inputs(const AttentionParams& p, uint64_t seed) {
    AttentionInputs in;
    in.p = p;
    in.q = random_floats(static_cast<size_t>(p.tq * p.hq * p.d), seed * 3 + 1);
    in.k = random_floats(static_cast<size_t>(p.tk * p.hkv * p.d), seed * 3 + 2);
    in.v = random_floats(static_cast<size_t>(p.tk * p.hkv * p.d), seed * 3 + 3);
    in.qd = to_double(in.q);
    in.kd = to_double(in.k);
    in.vd = to_double(in.v);
    return in;
}

std::string describe(const AttentionParams& p) {
    std::ostringstream s;
    s << "tq=" << p.tq << " tk=" << p.tk << " hq=" << p.hq << " hkv=" << p.hkv << " d=" << p.d
      << " causal=" << p.causal << " q_pos0=" << p.q_pos0 << " k_pos0=" << p.k_pos0
      << " scale=" << p.scale << " seed=" << test_seed();
    return s.str();
}

}  // namespace tandem::kernels::testkit
