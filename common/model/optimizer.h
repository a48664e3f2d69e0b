#pragma once

// AdamW with global-norm gradient clipping and a learning-rate schedule, over the model's flat
// parameter buffer.

#include <cstdint>
#include <vector>

#include "common/config/job_spec.h"
#include "common/model/params.h"

namespace tandem::model {

// Learning rate for optimizer step `step` (0-based) of `total_steps`: linear warmup from
// lr / warmup_steps to lr over the first warmup_steps, then constant, linear decay to 0, or
// cosine decay to 0 at total_steps.
double learning_rate(const config::OptimizerSpec& spec, int64_t step, int64_t total_steps);

// Owns the first and second moments. Not thread-safe.
class AdamW {
public:
    struct StepResult {
        double grad_norm = 0;  // global L2 norm before clipping
        double lr = 0;
    };

    AdamW(const config::OptimizerSpec& spec, const ParamIndex& index, int64_t total_steps);

    // Clips `grads` in place to the global norm, then updates `params`: decoupled weight decay on
    // 2-D weights only, bias-corrected Adam on everything.
    StepResult step(float* params, float* grads);

    int64_t steps_taken() const { return t_; }
    std::vector<float>& exp_avg() { return m_; }
    std::vector<float>& exp_avg_sq() { return v_; }
    const std::vector<float>& exp_avg() const { return m_; }
    const std::vector<float>& exp_avg_sq() const { return v_; }
    void set_steps_taken(int64_t t) { t_ = t; }

private:
    config::OptimizerSpec spec_;
    std::vector<std::pair<uint64_t, uint64_t>> decay_ranges_;
    int64_t total_steps_;
    int64_t t_ = 0;
    std::vector<float> m_, v_;
};

}  // namespace tandem::model
