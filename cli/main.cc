// The `tandem` command line: parses the command and hands it to cli/cmd_*.cc.
#include <iostream>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/launch_k8s.h"
#include "common/version.h"

namespace {

constexpr const char* kHelp =
    "tandem: reinforcement-learning post-training across trainer and rollout nodes\n"
    "\n"
    "usage: tandem COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  up -f CLUSTER.yaml          start the coordinator and local node agents, wait for them\n"
    "  down                        stop what `up` started\n"
    "  deploy k8s -f CLUSTER.yaml  render Kubernetes manifests and a Dockerfile from it\n"
    "  status                      the cluster at a glance\n"
    "  nodes                       node agents, their resources and state\n"
    "  job submit -f JOB.yaml [KEY=VALUE ...] [--follow] [--dry-run]\n"
    "  job list | summary JOB | cancel JOB\n"
    "  job status JOB | events JOB | logs JOB [--follow]\n"
    "  job metrics JOB [--output csv|json]   a job's per-step metrics, for notebooks\n"
    "  versions JOB                the weight versions a job published\n"
    "  token create --role ROLE [--name N]   a new API token (scrape, viewer, submitter, admin)\n"
    "  dashboard [--run-dir DIR] [--port P]   the dashboard of a stopped cluster, read-only\n"
    "  config check -f FILE [KEY=VALUE ...]   validate a cluster or job file, print it resolved\n"
    "  model info|tokenize|logits|generate|eval --model DIR ...   inspect and run a Hugging Face\n"
    "                              model directory with the built-in engine (tandem model --help)\n"
    "\n"
    "The coordinator's address comes from --address, else TANDEM_ADDRESS, else the run\n"
    "directory (--run-dir, default .tandem); the API token from --token, else TANDEM_TOKEN,\n"
    "else the run directory's api-token. Read commands accept --output text|json.\n"
    "\n"
    "options:\n"
    "  --version    print the version\n"
    "  --help       print this help\n"
    "\n"
    "exit codes: 0 success, 1 the job or operation failed, 2 bad usage or bad input\n";

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        std::cerr << kHelp;
        return tandem::cli::kExitUsage;
    }
    const std::string cmd = args[0];
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    if (cmd == "--version" || cmd == "version") {
        std::cout << "tandem " << tandem::kVersion << "\n";
        return tandem::cli::kExitOk;
    }
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
        std::cout << kHelp;
        return tandem::cli::kExitOk;
    }
    if (cmd == "config") return tandem::cli::cmd_config(rest);
    if (cmd == "model") return tandem::cli::cmd_model(rest);
    if (cmd == "deploy") return tandem::cli::cmd_deploy(rest);
    if (cmd == "up") return tandem::cli::cmd_up(rest);
    if (cmd == "down") return tandem::cli::cmd_down(rest);
    if (cmd == "status") return tandem::cli::cmd_status(rest);
    if (cmd == "nodes") return tandem::cli::cmd_nodes(rest);
    if (cmd == "job" && !rest.empty() && rest[0] == "metrics")
        return tandem::cli::cmd_job_metrics(rest);
    if (cmd == "job") return tandem::cli::cmd_job(rest);
    if (cmd == "dashboard") return tandem::cli::cmd_dashboard(rest);
    if (cmd == "versions") return tandem::cli::cmd_versions(rest);
    if (cmd == "token") return tandem::cli::cmd_token(rest);
    std::cerr << "tandem: unknown command '" << cmd << "'\n\n" << kHelp;
    return tandem::cli::kExitUsage;
}
