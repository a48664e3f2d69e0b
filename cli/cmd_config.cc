// `tandem config check -f FILE [key=value ...]`: validates a cluster or job file and prints it
// resolved, with every default filled in. A job file goes through check_job_file
// (cli/job_checks.h), the path `tandem job submit` takes too.
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/job_checks.h"
#include "common/config/loader.h"

namespace tandem::cli {

namespace {

constexpr const char* kConfigUsage =
    "usage: tandem config check -f FILE [KEY.PATH=VALUE ...]\n"
    "  Validates a cluster file (it has 'nodes') or a job file (it has 'kind'), applies the\n"
    "  overrides, and prints the resolved configuration with every default filled in.\n"
    "  A grpo job's task is loaded (a jsonl dataset is read) and its longest context (longest\n"
    "  prompt + rollout.sampling.max_new_tokens) is checked against rollout.context_parallel x\n"
    "  rollout.max_tokens_per_device and model.max_seq_len; the figures are printed.\n"
    "  Exit code 0 when valid, 2 with the errors otherwise.\n";

int check(const std::vector<std::string>& argv) {
    ArgSpec spec{.flags = {"--help"},
                 .options = {"--file"},
                 .aliases = {{"-f", "--file"}, {"-h", "--help"}}};
    auto args = parse_args(argv, spec);
    if (!args.ok()) {
        std::cerr << "tandem config check: " << args.status().message() << "\n" << kConfigUsage;
        return kExitUsage;
    }
    if (args->has("--help")) {
        std::cout << kConfigUsage;
        return kExitOk;
    }
    const auto file = args->get("--file");
    if (!file) {
        std::cerr << "tandem config check: -f FILE is required\n" << kConfigUsage;
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
        // The same checks `tandem job submit` runs before it submits.
        auto job = check_job_file(*file, *overrides);
        if (!job.ok()) {
            std::cerr << job.status().message() << "\n";
            return kExitUsage;
        }
        limits = job->limits;
        resolved = config::to_yaml(job->spec);
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
        (args.empty() ? std::cerr : std::cout) << kConfigUsage;
        return args.empty() ? kExitUsage : kExitOk;
    }
    if (args[0] == "check") return check({args.begin() + 1, args.end()});
    std::cerr << "tandem config: unknown subcommand '" << args[0] << "'\n" << kConfigUsage;
    return kExitUsage;
}

}  // namespace tandem::cli
