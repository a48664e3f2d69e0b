// tandem-bench-grpo: trains a job's policy with GRPO in one process (no cluster, no weight plane)
// and prints one JSON object per step, then a summary:
//   {"case":"grpo_step","step":1,"reward_mean":0.06,...,"rollout_s":..,"train_s":..}
//   {"case":"grpo_summary","steps":120,"steps_per_s":..,"first_reward":..,"last5_reward":..,
//    "step_to_0.9":..,"rollout_tokens_per_s":..,"train_tokens_per_s":..}
//
// Usage: tandem-bench-grpo [-f configs/jobs/grpo-reverse.yaml] [--threads N]
//                          [--sft-steps N [--sft-lr LR]] [key=value ...]
// --sft-steps runs a supervised warm start first (its lines are "sft_step"); the GRPO numbers
// then measure the RL-only gain from the warm-started policy.
// (overrides as for `tandem job submit`, e.g. algorithm.steps=40). BLAS runs on one thread unless
// --threads says otherwise, as each actor would on a shared 2-core machine.
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/config/loader.h"
#include "common/rl/local_loop.h"

namespace {

int run(int argc, char** argv) {
    using namespace tandem;
    std::string job_file;
    std::vector<std::string> overrides;
    int threads = 1;
    int sft_steps = 0;
    double sft_lr = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if ((a == "-f" || a == "--job") && i + 1 < argc) {
            job_file = argv[++i];
        } else if (a == "--threads" && i + 1 < argc) {
            threads = std::stoi(argv[++i]);
        } else if (a == "--sft-steps" && i + 1 < argc) {
            sft_steps = std::stoi(argv[++i]);
        } else if (a == "--sft-lr" && i + 1 < argc) {
            sft_lr = std::stod(argv[++i]);
        } else {
            overrides.push_back(a);
        }
    }
    auto parsed = config::parse_overrides(overrides);
    if (!parsed.ok()) {
        std::fprintf(stderr, "%s\n", parsed.status().to_string().c_str());
        return 2;
    }
    // The job file goes through the same loader as `tandem job submit` (defaults, checks, a
    // relative dataset path resolved beside the file); without one, the built-in defaults.
    Result<config::JobSpec> job = [&]() -> Result<config::JobSpec> {
        if (!job_file.empty()) return config::load_job_file(job_file, *parsed);
        TANDEM_ASSIGN_OR_RETURN(
            auto root, config::parse_yaml("name: bench\nkind: grpo\n", "(built-in defaults)"));
        TANDEM_RETURN_IF_ERROR(config::apply_overrides(root, *parsed));
        return config::decode_document<config::JobSpec>(root, "(built-in defaults)", *parsed);
    }();
    if (!job.ok()) {
        std::fprintf(stderr, "%s\n", job.status().to_string().c_str());
        return 2;
    }
    openblas_set_num_threads(threads);
    std::vector<double> rewards;
    double rollout_s = 0, train_s = 0, total_s = 0;
    int64_t gen_tokens = 0, train_tokens = 0;
    int step_to_09 = -1;
    const auto t0 = std::chrono::steady_clock::now();
    double sft_s = 0, sft_nll = 0;
    rl::LocalLoopOptions lo;
    lo.supervised_steps = sft_steps;
    lo.supervised_lr = sft_lr;
    lo.on_supervised_step = [&](const rl::LocalStep& s) {
        sft_s += s.step_s;
        sft_nll = s.train.loss;
        nlohmann::json j;
        j["case"] = "sft_step";
        j["step"] = s.step;
        j["nll"] = s.train.loss;
        j["step_s"] = s.step_s;
        std::printf("%s\n", j.dump().c_str());
    };
    lo.on_step = [&](const rl::LocalStep& s) {
        nlohmann::json j;
        j["case"] = "grpo_step";
        j["step"] = s.step;
        j["reward_mean"] = s.reward_mean;
        j["reward_min"] = s.train.reward_min;
        j["reward_max"] = s.train.reward_max;
        j["response_length"] = s.train.response_length_mean;
        j["loss"] = s.train.loss;
        j["entropy"] = s.train.entropy;
        j["kl"] = s.train.kl;
        j["grad_norm"] = s.train.grad_norm;
        j["lr"] = s.train.lr;
        j["clip_fraction"] = s.train.clip_fraction;
        j["tis_weight_mean"] = s.train.tis_weight_mean;
        j["tis_truncated_fraction"] = s.train.tis_truncated_fraction;
        j["logprob_diff_max"] = s.train.logprob_diff_max;
        j["rollout_s"] = s.rollout_s;
        j["train_s"] = s.train_s;
        j["forward_s"] = s.train.forward_s;
        j["backward_s"] = s.train.backward_s;
        j["optimizer_s"] = s.train.optimizer_s;
        j["step_s"] = s.step_s;
        std::printf("%s\n", j.dump().c_str());
        std::fflush(stdout);
        rewards.push_back(s.reward_mean);
        rollout_s += s.rollout_s;
        train_s += s.train_s;
        total_s += s.step_s;
        gen_tokens += s.generated_tokens;
        train_tokens += s.train.tokens;
        if (step_to_09 < 0 && rewards.size() >= 5) {
            double m = 0;
            for (size_t i = rewards.size() - 5; i < rewards.size(); ++i) m += rewards[i] / 5;
            if (m >= 0.9) step_to_09 = static_cast<int>(s.step);
        }
    };
    auto result = rl::run_local_grpo(*job, lo);
    if (!result.ok()) {
        std::fprintf(stderr, "%s\n", result.status().to_string().c_str());
        return 1;
    }
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double last5 = 0;
    const size_t n = rewards.size();
    for (size_t i = n >= 5 ? n - 5 : 0; i < n; ++i)
        last5 += rewards[i] / static_cast<double>(std::min<size_t>(n, 5));
    nlohmann::json j;
    j["case"] = "grpo_summary";
    j["steps"] = n;
    j["wall_s"] = wall;
    j["steps_per_s"] = static_cast<double>(n) / total_s;
    j["first_reward"] = n ? rewards[0] : 0.0;
    j["last5_reward"] = last5;
    j["step_to_0.9_last5"] = step_to_09;
    j["rollout_s"] = rollout_s;
    j["train_s"] = train_s;
    j["rollout_tokens_per_s"] = static_cast<double>(gen_tokens) / rollout_s;
    j["train_tokens_per_s"] = static_cast<double>(train_tokens) / train_s;
    j["blas_threads"] = threads;
    j["sft_steps"] = sft_steps;
    j["sft_s"] = sft_s;
    j["sft_final_nll"] = sft_nll;
    std::printf("%s\n", j.dump().c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
