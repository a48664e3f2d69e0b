#include "cli/args.h"

#include <fmt/format.h>

namespace tandem::cli {

std::optional<std::string> Args::get(const std::string& option) const {
    auto it = options.find(option);
    if (it == options.end()) return std::nullopt;
    return it->second;
}

Result<Args> parse_args(const std::vector<std::string>& argv, const ArgSpec& spec) {
    Args out;
    auto canonical = [&](const std::string& name) {
        auto it = spec.aliases.find(name);
        return it == spec.aliases.end() ? name : it->second;
    };
    for (size_t i = 0; i < argv.size(); ++i) {
        const std::string& a = argv[i];
        if (a.size() < 2 || a[0] != '-' || a == "--") {
            out.positional.push_back(a);
            continue;
        }
        std::string name = a;
        std::optional<std::string> value;
        if (const auto eq = a.find('='); eq != std::string::npos && a.starts_with("--")) {
            name = a.substr(0, eq);
            value = a.substr(eq + 1);
        }
        name = canonical(name);
        if (spec.flags.count(name)) {
            if (value) return invalid_argument(fmt::format("{} takes no value", name));
            out.flags.insert(name);
        } else if (spec.options.count(name)) {
            if (!value) {
                if (i + 1 >= argv.size())
                    return invalid_argument(fmt::format("{} needs a value", a));
                value = argv[++i];
            }
            out.options[name] = *value;
        } else {
            return invalid_argument(fmt::format("unknown option {}", a));
        }
    }
    return out;
}

}  // namespace tandem::cli
