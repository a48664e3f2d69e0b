// The `tandem` command line: parses the command and hands it to cli/cmd_*.cc.
#include <iostream>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/version.h"

namespace {

constexpr const char* kHelp =
    "tandem: reinforcement-learning post-training across trainer and rollout nodes\n"
    "\n"
    "usage: tandem COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  config check -f FILE [KEY=VALUE ...]   validate a cluster or job file, print it resolved\n"
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
    std::cerr << "tandem: unknown command '" << cmd << "'\n\n" << kHelp;
    return tandem::cli::kExitUsage;
}
