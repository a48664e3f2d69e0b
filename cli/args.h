#pragma once

// A small argv parser for the tandem CLI: flags (`--follow`), options with values (`-f FILE`,
// `--output=json`) and positional arguments, with errors that name the argument.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::cli {

struct ArgSpec {
    std::set<std::string> flags;                 // "--follow"
    std::set<std::string> options;               // "-f", "--file", "--output"
    std::map<std::string, std::string> aliases;  // "-f" -> "--file"
};

struct Args {
    std::set<std::string> flags;
    std::map<std::string, std::string> options;
    std::vector<std::string> positional;

    bool has(const std::string& flag) const { return flags.count(flag) > 0; }
    std::optional<std::string> get(const std::string& option) const;
};

Result<Args> parse_args(const std::vector<std::string>& argv, const ArgSpec& spec);

// Exit codes shared by every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

}  // namespace tandem::cli
