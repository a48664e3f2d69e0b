// `tandem config check -f FILE [key=value ...]`: validates a cluster or job file and prints it
// resolved, with every default filled in. A GRPO job's task is loaded as its actors load it, and
// the job's longest context is checked against the limits the actors check when they start.
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/config/loader.h"
#include "common/model/config.h"
#include "common/model/job_setup.h"
#include "common/model/tasks.h"

namespace tandem::cli {

namespace {

constexpr const char* kUsage =
    "usage: tandem config check -f FILE [KEY.PATH=VALUE ...]\n"
    "  Validates a cluster file (it has 'nodes') or a job file (it has 'kind'), applies the\n"
    "  overrides, and prints the resolved configuration with every default filled in.\n"
    "  A grpo job's task is loaded (a jsonl dataset is read) and its longest context (longest\n"
    "  prompt + rollout.sampling.max_new_tokens) is checked against rollout.context_parallel x\n"
    "  rollout.max_tokens_per_device and model.max_seq_len; the figures are printed.\n"
    "  Exit code 0 when valid, 2 with the errors otherwise.\n";

// The config (and recorded vocabulary) the job's policy will have: model.* for a random init,
// otherwise model.init's config.json. No weights are made or read.
Result<model::HfConfig> policy_config(const config::JobSpec& job, const model::Vocabulary& vocab) {
    if (job.model.init == "random") {
        TANDEM_ASSIGN_OR_RETURN(model::ModelConfig cfg,
                                model::ModelConfig::from_spec(job.model, vocab.size()));
        return model::HfConfig{cfg, std::nullopt};
    }
    return model::read_hf_config(job.model.init + "/config.json");
}

// What make_job_setup and the rollout actor's start reject, checked from the job file: loads the
// task (errors name the dataset file and line) and checks the longest context against both
// limits. Returns every error, each prefixed with `file`; on success sets `summary` to one line
// with the figures.
std::vector<std::string> check_grpo_limits(const config::JobSpec& job, const std::string& file,
                                           std::string& summary) {
    auto task = model::make_task(job.task);
    if (!task.ok()) return {fmt::format("{}: task: {}", file, task.status().message())};
    const int prompt = (*task)->max_prompt_tokens();
    const auto& r = job.rollout;
    const int64_t need = static_cast<int64_t>(prompt) + r.sampling.max_new_tokens;
    std::vector<std::string> errors;
    auto policy = policy_config(job, (*task)->vocab());
    if (!policy.ok()) {
        errors.push_back(fmt::format("{}: {}", file, policy.status().message()));
    } else if (Status s = model::check_model_fits(job, policy->model, policy->vocab, **task);
               !s.ok()) {
        errors.push_back(fmt::format("{}: {}", file, s.message()));
    }
    if (Status s = model::check_context_length(job, prompt); !s.ok()) {
        errors.push_back(fmt::format("{}: {}", file, s.message()));
    }
    if (errors.empty()) {
        summary = fmt::format(
            "longest context {} ({} prompt tokens + rollout.sampling.max_new_tokens {}); "
            "rollout.context_parallel ({}) x rollout.max_tokens_per_device ({}) = {}; "
            "model.max_seq_len {}",
            need, prompt, r.sampling.max_new_tokens, r.context_parallel, r.max_tokens_per_device,
            static_cast<int64_t>(r.context_parallel) * r.max_tokens_per_device,
            policy->model.max_seq_len);
    }
    return errors;
}

int check(const std::vector<std::string>& argv) {
    ArgSpec spec{.flags = {"--help"},
                 .options = {"--file"},
                 .aliases = {{"-f", "--file"}, {"-h", "--help"}}};
    auto args = parse_args(argv, spec);
    if (!args.ok()) {
        std::cerr << "tandem config check: " << args.status().message() << "\n" << kUsage;
        return kExitUsage;
    }
    if (args->has("--help")) {
        std::cout << kUsage;
        return kExitOk;
    }
    const auto file = args->get("--file");
    if (!file) {
        std::cerr << "tandem config check: -f FILE is required\n" << kUsage;
        return kExitUsage;
    }
    auto overrides = config::parse_overrides(args->positional);
    if (!overrides.ok()) {
        std::cerr << overrides.status().message() << "\n";
        return kExitUsage;
    }
    auto root = config::load_yaml_file(*file);
    if (!root.ok()) {
        std::cerr << root.status().message() << "\n";
        return kExitUsage;
    }
    auto kind = config::detect_kind(*root, *file);
    if (!kind.ok()) {
        std::cerr << kind.status().message() << "\n";
        return kExitUsage;
    }
    std::string resolved;
    std::string limits;  // a grpo job's longest context and limits
    if (*kind == config::FileKind::kCluster) {
        auto spec_or = config::load_cluster_file(*file, *overrides);
        if (!spec_or.ok()) {
            std::cerr << spec_or.status().message() << "\n";
            return kExitUsage;
        }
        resolved = config::to_yaml(*spec_or);
    } else {
        auto spec_or = config::load_job_file(*file, *overrides);
        if (!spec_or.ok()) {
            std::cerr << spec_or.status().message() << "\n";
            return kExitUsage;
        }
        if (spec_or->kind == config::JobKind::kGrpo) {
            const auto errors = check_grpo_limits(*spec_or, *file, limits);
            for (const auto& e : errors) std::cerr << e << "\n";
            if (!errors.empty()) return kExitUsage;
        }
        resolved = config::to_yaml(*spec_or);
    }
    std::cout << fmt::format("# {}: valid {} file\n", *file,
                             *kind == config::FileKind::kCluster ? "cluster" : "job");
    if (!limits.empty()) std::cout << "# " << limits << "\n";
    std::cout << resolved;
    return kExitOk;
}

}  // namespace

int cmd_config(const std::vector<std::string>& args) {
    if (args.empty() || args[0] == "--help" || args[0] == "-h") {
        (args.empty() ? std::cerr : std::cout) << kUsage;
        return args.empty() ? kExitUsage : kExitOk;
    }
    if (args[0] == "check") return check({args.begin() + 1, args.end()});
    std::cerr << "tandem config: unknown subcommand '" << args[0] << "'\n" << kUsage;
    return kExitUsage;
}

}  // namespace tandem::cli
