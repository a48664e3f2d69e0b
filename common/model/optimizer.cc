#include "common/model/optimizer.h"

#include <algorithm>
#include <cmath>

namespace tandem::model {

double learning_rate(const config::OptimizerSpec& spec, int64_t step, int64_t total_steps) {
    if (spec.warmup_steps > 0 && step < spec.warmup_steps) {
        return spec.lr * static_cast<double>(step + 1) / spec.warmup_steps;
    }
    const int64_t span = std::max<int64_t>(1, total_steps - spec.warmup_steps);
    const double progress = std::clamp(
        static_cast<double>(step - spec.warmup_steps) / static_cast<double>(span), 0.0, 1.0);
    switch (spec.schedule) {
        case config::LrSchedule::kConstant:
            return spec.lr;
        case config::LrSchedule::kLinear:
            return spec.lr * (1.0 - progress);
        case config::LrSchedule::kCosine:
            return spec.lr * 0.5 * (1.0 + std::cos(M_PI * progress));
    }
    return spec.lr;
}

AdamW::AdamW(const config::OptimizerSpec& spec, const ParamIndex& index, int64_t total_steps)
    : spec_(spec),
      decay_ranges_(index.matrices),
      total_steps_(total_steps),
      m_(static_cast<size_t>(index.elements), 0.0f),
      v_(static_cast<size_t>(index.elements), 0.0f) {}

AdamW::StepResult AdamW::step(float* params, float* grads) {
    const size_t n = m_.size();
    double ss = 0;
    for (size_t i = 0; i < n; ++i) ss += static_cast<double>(grads[i]) * grads[i];
    StepResult r;
    r.grad_norm = std::sqrt(ss);
    r.lr = learning_rate(spec_, t_, total_steps_);
    if (spec_.grad_clip > 0 && r.grad_norm > spec_.grad_clip) {
        const float scale = static_cast<float>(spec_.grad_clip / (r.grad_norm + 1e-12));
        for (size_t i = 0; i < n; ++i) grads[i] *= scale;
    }
    ++t_;
    const float lr = static_cast<float>(r.lr);
    if (spec_.weight_decay > 0) {
        const float keep = static_cast<float>(1.0 - r.lr * spec_.weight_decay);
        for (const auto& [b, e] : decay_ranges_) {
            for (uint64_t i = b; i < e; ++i) params[i] *= keep;
        }
    }
    const float b1 = static_cast<float>(spec_.beta1), b2 = static_cast<float>(spec_.beta2);
    const float c1 =
        static_cast<float>(1.0 / (1.0 - std::pow(spec_.beta1, static_cast<double>(t_))));
    const float c2 =
        static_cast<float>(1.0 / (1.0 - std::pow(spec_.beta2, static_cast<double>(t_))));
    const float eps = static_cast<float>(spec_.eps);
    float* m = m_.data();
    float* v = v_.data();
    for (size_t i = 0; i < n; ++i) {
        const float g = grads[i];
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        params[i] -= lr * (m[i] * c1) / (std::sqrt(v[i] * c2) + eps);
    }
    return r;
}

}  // namespace tandem::model
