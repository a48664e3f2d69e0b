#pragma once

// Loads cluster and job files: YAML syntax, then the typed structs of cluster_spec.h and
// job_spec.h, with `a.b.c=value` overrides applied first. Every error names the file, line,
// column (or the override) and the key path; nothing is half-loaded.

#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "common/config/cluster_spec.h"
#include "common/config/job_spec.h"
#include "common/config/schema.h"
#include "common/status.h"

namespace tandem::config {

enum class FileKind { kCluster, kJob };

// `rollout.sampling.top_p=0.9`: the dotted path (list items by index: `nodes.1.host=...`) and
// the value, parsed as YAML (so `labels={zone: a}` and `x=[1,2]` work).
struct Override {
    std::vector<std::string> path;
    std::string value;
    std::string text;  // as the user wrote it
};
Result<Override> parse_override(std::string_view text);
Result<std::vector<Override>> parse_overrides(const std::vector<std::string>& texts);

// Parses YAML text; `source` names it in errors ("configs/jobs/x.yaml").
Result<YAML::Node> parse_yaml(const std::string& text, const std::string& source);
Result<YAML::Node> load_yaml_file(const std::string& path);

// A cluster file has `nodes`; a job file has `kind`.
Result<FileKind> detect_kind(const YAML::Node& root, const std::string& source);

// Applies overrides to a parsed document. Unknown paths are caught by decoding afterwards.
Status apply_overrides(YAML::Node& root, const std::vector<Override>& overrides);

template <typename T>
Result<T> decode_document(const YAML::Node& root, const std::string& source,
                          const std::vector<Override>& overrides = {}) {
    DecodeContext ctx(source);
    for (const auto& o : overrides) {
        std::string dotted;
        for (const auto& p : o.path) dotted += (dotted.empty() ? "" : ".") + p;
        ctx.add_override(dotted, o.text);
    }
    T out{};
    decode_value(ctx, root, "", out);
    if (!ctx.ok()) return ctx.status();
    return out;
}

Result<ClusterSpec> load_cluster_file(const std::string& path,
                                      const std::vector<Override>& overrides = {});
Result<JobSpec> load_job_file(const std::string& path, const std::vector<Override>& overrides = {});
// For specs that arrive as text (a submitted job): same rules, `source` names it in errors.
Result<JobSpec> parse_job_text(const std::string& text, const std::string& source);

// The resolved configuration as YAML, every default filled in.
template <typename T>
std::string to_yaml(const T& value) {
    YAML::Emitter out;
    out << encode_value(value);
    return std::string(out.c_str()) + "\n";
}

}  // namespace tandem::config
