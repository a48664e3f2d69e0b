#include "common/config/loader.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <type_traits>

namespace tandem::config {

Result<Override> parse_override(std::string_view text) {
    const auto eq = text.find('=');
    if (eq == std::string_view::npos || eq == 0) {
        return invalid_argument(fmt::format(
            "override '{}': expected KEY.PATH=VALUE, such as rollout.replicas=4", text));
    }
    Override o;
    o.text = std::string(text);
    o.value = std::string(text.substr(eq + 1));
    std::string_view key = text.substr(0, eq);
    while (true) {
        const auto dot = key.find('.');
        const std::string_view part = key.substr(0, dot);
        if (part.empty()) {
            return invalid_argument(fmt::format("override '{}': empty key in path", text));
        }
        o.path.emplace_back(part);
        if (dot == std::string_view::npos) break;
        key.remove_prefix(dot + 1);
    }
    return o;
}

Result<std::vector<Override>> parse_overrides(const std::vector<std::string>& texts) {
    std::vector<Override> out;
    for (const auto& t : texts) {
        TANDEM_ASSIGN_OR_RETURN(auto o, parse_override(t));
        out.push_back(std::move(o));
    }
    return out;
}

Result<YAML::Node> parse_yaml(const std::string& text, const std::string& source) {
    try {
        YAML::Node root = YAML::Load(text);
        if (!root.IsDefined() || root.IsNull()) {
            return invalid_argument(fmt::format("{}: the document is empty", source));
        }
        if (!root.IsMap()) {
            return invalid_argument(fmt::format("{}:{}:{}: expected a mapping at the top, got {}",
                                                source, root.Mark().line + 1,
                                                root.Mark().column + 1, describe_node(root)));
        }
        return root;
    } catch (const YAML::Exception& e) {
        if (e.mark.is_null()) {
            return invalid_argument(fmt::format("{}: YAML syntax error: {}", source, e.msg));
        }
        return invalid_argument(fmt::format("{}:{}:{}: YAML syntax error: {}", source,
                                            e.mark.line + 1, e.mark.column + 1, e.msg));
    }
}

Result<YAML::Node> load_yaml_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return not_found(fmt::format("{}: cannot open file", path));
    std::ostringstream buf;
    buf << in.rdbuf();
    if (in.bad()) return unavailable(fmt::format("{}: read error", path));
    return parse_yaml(buf.str(), path);
}

Result<FileKind> detect_kind(const YAML::Node& root, const std::string& source) {
    if (root["nodes"]) return FileKind::kCluster;
    if (root["kind"]) return FileKind::kJob;
    return invalid_argument(fmt::format(
        "{}: neither a cluster file (it has no 'nodes') nor a job file (it has no 'kind')",
        source));
}

Status apply_overrides(YAML::Node& root, const std::vector<Override>& overrides) {
    for (const auto& o : overrides) {
        YAML::Node value;
        try {
            value = YAML::Load(o.value);
        } catch (const YAML::Exception& e) {
            return invalid_argument(
                fmt::format("override '{}': value is not valid YAML: {}", o.text, e.msg));
        }
        YAML::Node cur = root;
        std::string walked;
        for (size_t i = 0; i < o.path.size(); ++i) {
            const std::string& part = o.path[i];
            const bool last = i + 1 == o.path.size();
            if (cur.IsSequence()) {
                const auto index = parse_uint(part);
                if (!index) {
                    return invalid_argument(
                        fmt::format("override '{}': {} is a list; expected an index, got '{}'",
                                    o.text, walked, part));
                }
                if (*index >= cur.size()) {
                    return invalid_argument(
                        fmt::format("override '{}': index {} is out of range ({} has {} entries)",
                                    o.text, *index, walked, cur.size()));
                }
                if (last) {
                    cur[*index] = value;
                } else {
                    cur.reset(cur[*index]);
                }
            } else if (cur.IsMap() || cur.IsNull() || !cur.IsDefined()) {
                if (last) {
                    cur[part] = value;
                } else {
                    if (!cur[part]) cur[part] = YAML::Node(YAML::NodeType::Map);
                    YAML::Node next = cur[part];
                    cur.reset(next);
                }
            } else {
                return invalid_argument(
                    fmt::format("override '{}': {} is a value, not a mapping", o.text, walked));
            }
            walked += (walked.empty() ? "" : ".") + part;
        }
    }
    return Status();
}

namespace {
// Defaults that depend on the job's kind, applied where the document (after overrides) leaves
// the field out.
void apply_kind_defaults(const YAML::Node& root, JobSpec& spec) {
    const bool restarts_given = root.IsMap() && root["max_actor_restarts"].IsDefined();
    if (spec.kind == JobKind::kGrpo && !restarts_given)
        spec.max_actor_restarts = kGrpoMaxActorRestarts;
}

template <typename T>
Result<T> load_typed(const std::string& path, const std::vector<Override>& overrides,
                     FileKind want) {
    TANDEM_ASSIGN_OR_RETURN(YAML::Node root, load_yaml_file(path));
    TANDEM_ASSIGN_OR_RETURN(FileKind kind, detect_kind(root, path));
    if (kind != want) {
        return invalid_argument(fmt::format("{}: expected a {} file, this is a {} file", path,
                                            want == FileKind::kCluster ? "cluster" : "job",
                                            kind == FileKind::kCluster ? "cluster" : "job"));
    }
    TANDEM_RETURN_IF_ERROR(apply_overrides(root, overrides));
    TANDEM_ASSIGN_OR_RETURN(T spec, decode_document<T>(root, path, overrides));
    if constexpr (std::is_same_v<T, JobSpec>) apply_kind_defaults(root, spec);
    return spec;
}
}  // namespace

Result<ClusterSpec> load_cluster_file(const std::string& path,
                                      const std::vector<Override>& overrides) {
    return load_typed<ClusterSpec>(path, overrides, FileKind::kCluster);
}

Result<JobSpec> load_job_file(const std::string& path, const std::vector<Override>& overrides) {
    TANDEM_ASSIGN_OR_RETURN(JobSpec spec, load_typed<JobSpec>(path, overrides, FileKind::kJob));
    // A relative dataset path means: beside the job file when the file gives it, in the current
    // directory when an override does. Either way the submitted spec carries an absolute path, so
    // actors (started in other directories, maybe on other hosts with the same layout) find it.
    // The same holds for task.tokenizer and a model.init other than "random".
    const auto absolutize = [&](std::string& value, std::vector<std::string> key) {
        if (value.empty() || !std::filesystem::path(value).is_relative()) return;
        const bool overridden = std::any_of(overrides.begin(), overrides.end(),
                                            [&](const Override& o) { return o.path == key; });
        const std::filesystem::path base = overridden
                                               ? std::filesystem::current_path()
                                               : std::filesystem::absolute(path).parent_path();
        value = (base / value).lexically_normal().string();
    };
    absolutize(spec.task.dataset, {"task", "dataset"});
    absolutize(spec.task.tokenizer, {"task", "tokenizer"});
    if (spec.model.init != "random") absolutize(spec.model.init, {"model", "init"});
    // A reward command runs beside the job file unless the file says where (so that
    // `python3 my_reward.py` finds the script wherever the actor starts).
    if (!spec.task.reward.command.empty() && spec.task.reward.working_dir.empty()) {
        spec.task.reward.working_dir = std::filesystem::absolute(path).parent_path().string();
    }
    // User actors start in their working_dir, the job file's directory unless the file says
    // otherwise (a relative working_dir is beside the job file too).
    for (auto [user, role] :
         {std::pair{&spec.trainer.user, "trainer"}, std::pair{&spec.rollout.user, "rollout"}}) {
        if (user->command.empty()) continue;
        if (user->working_dir.empty()) {
            user->working_dir = std::filesystem::absolute(path).parent_path().string();
        } else {
            absolutize(user->working_dir, {role, "working_dir"});
        }
    }
    return spec;
}

Result<JobSpec> parse_job_text(const std::string& text, const std::string& source) {
    TANDEM_ASSIGN_OR_RETURN(YAML::Node root, parse_yaml(text, source));
    TANDEM_ASSIGN_OR_RETURN(JobSpec spec, decode_document<JobSpec>(root, source));
    apply_kind_defaults(root, spec);
    return spec;
}

}  // namespace tandem::config
