#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

// Each command takes the arguments after its name and returns an exit code (cli/args.h). It
// writes results to stdout and errors to stderr.
int cmd_config(const std::vector<std::string>& args);

}  // namespace tandem::cli
