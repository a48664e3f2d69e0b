#include "common/model/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/model/hf_model.h"
#include "common/weights/safetensors.h"

namespace tandem::model {

namespace fs = std::filesystem;

namespace {

constexpr int kFormatVersion = 1;

// step-00000012 -> 12; -1 for anything else.
int64_t step_of(const std::string& name) {
    if (name.rfind("step-", 0) != 0 || name.size() <= 5) return -1;
    int64_t v = 0;
    for (size_t i = 5; i < name.size(); ++i) {
        if (name[i] < '0' || name[i] > '9') return -1;
        v = v * 10 + (name[i] - '0');
    }
    return v;
}

Status write_optimizer(const std::string& path, const ModelWeights& w, const AdamW& opt) {
    std::vector<weights::TensorSpec> specs;
    for (const char* prefix : {"exp_avg.", "exp_avg_sq."}) {
        for (const auto& t : w.layout().tensors()) {
            specs.push_back({prefix + t.name, weights::DType::kF32, t.shape});
        }
    }
    TANDEM_ASSIGN_OR_RETURN(weights::Layout layout, weights::Layout::create(std::move(specs)));
    std::vector<std::byte> data(layout.total_bytes());
    const size_t n = w.layout().tensors().size();
    for (size_t i = 0; i < 2 * n; ++i) {
        const auto& src = w.layout().tensors()[i % n];
        const auto& dst = layout.tensors()[i];
        const float* from = (i < n ? opt.exp_avg() : opt.exp_avg_sq()).data() + src.offset / 4;
        std::memcpy(data.data() + dst.offset, from, src.bytes);
    }
    return weights::write_safetensors(path, layout, data);
}

Status read_optimizer(const std::string& path, const ModelWeights& w, LoadedCheckpoint& out) {
    TANDEM_ASSIGN_OR_RETURN(weights::LoadedWeights loaded, weights::read_safetensors(path));
    out.exp_avg.assign(static_cast<size_t>(w.elements()), 0.0f);
    out.exp_avg_sq.assign(static_cast<size_t>(w.elements()), 0.0f);
    for (const auto& t : w.layout().tensors()) {
        for (int which = 0; which < 2; ++which) {
            const std::string name = (which == 0 ? "exp_avg." : "exp_avg_sq.") + t.name;
            const weights::TensorInfo* s = loaded.layout.find(name);
            if (!s || s->dtype != weights::DType::kF32 || s->shape != t.shape) {
                return invalid_argument(
                    fmt::format("{}: missing or mis-shaped tensor \"{}\"", path, name));
            }
            std::memcpy((which == 0 ? out.exp_avg : out.exp_avg_sq).data() + t.offset / 4,
                        loaded.data.data() + s->offset, s->bytes);
        }
    }
    return Status();
}

}  // namespace

Result<std::string> save_checkpoint(const std::string& root, const TrainerState& state,
                                    const ModelWeights& weights, const Vocabulary* vocab,
                                    const AdamW& optimizer, const std::string& side_files_from) {
    const std::string final_dir = fmt::format("{}/step-{:08d}", root, state.step);
    const std::string tmp_dir = final_dir + ".tmp";
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);
    fs::create_directories(tmp_dir, ec);
    if (ec) return unavailable(fmt::format("{}: cannot create: {}", tmp_dir, ec.message()));
    SaveOptions save;
    save.copy_side_files_from = side_files_from;
    TANDEM_RETURN_IF_ERROR(save_pretrained(tmp_dir, weights, vocab, save));
    TANDEM_RETURN_IF_ERROR(write_optimizer(tmp_dir + "/optimizer.safetensors", weights, optimizer));
    nlohmann::json j;
    j["format_version"] = kFormatVersion;
    j["step"] = state.step;
    j["optimizer_steps"] = optimizer.steps_taken();
    j["version"] = state.version;
    j["data_cursor"] = state.data_cursor;
    j["rng"] = state.rng;
    j["layout_fingerprint"] = weights.layout().fingerprint_text();
    {
        std::ofstream f(tmp_dir + "/trainer_state.json", std::ios::trunc);
        f << j.dump(2) << "\n";
        if (!f.flush())
            return unavailable(fmt::format("{}: writing trainer_state.json failed", tmp_dir));
    }
    fs::remove_all(final_dir, ec);
    fs::rename(tmp_dir, final_dir, ec);
    if (ec) return unavailable(fmt::format("{}: rename failed: {}", final_dir, ec.message()));
    return final_dir;
}

Result<LoadedCheckpoint> load_checkpoint(const std::string& path) {
    LoadedCheckpoint out;
    TANDEM_ASSIGN_OR_RETURN(out.model, load_pretrained(path));
    const std::string state_path = path + "/trainer_state.json";
    std::ifstream f(state_path);
    if (!f) return not_found(fmt::format("{}: cannot open", state_path));
    std::stringstream ss;
    ss << f.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return invalid_argument(fmt::format("{}: not a JSON object", state_path));
    }
    try {
        if (j.at("format_version").get<int>() != kFormatVersion) {
            return invalid_argument(fmt::format("{}: format_version {} is not {}", state_path,
                                                j["format_version"].dump(), kFormatVersion));
        }
        out.state.step = j.at("step").get<int64_t>();
        out.state.version = j.at("version").get<int64_t>();
        out.state.data_cursor = j.at("data_cursor").get<uint64_t>();
        out.state.rng = j.at("rng").get<std::array<uint64_t, 4>>();
        out.optimizer_steps = j.at("optimizer_steps").get<int64_t>();
        const std::string fp = j.at("layout_fingerprint").get<std::string>();
        if (fp != out.model.weights.layout().fingerprint_text()) {
            return data_loss(fmt::format("{}: layout fingerprint {} does not match the model's {}",
                                         state_path, fp,
                                         out.model.weights.layout().fingerprint_text()));
        }
    } catch (const nlohmann::json::exception& e) {
        return invalid_argument(fmt::format("{}: {}", state_path, e.what()));
    }
    TANDEM_RETURN_IF_ERROR(read_optimizer(path + "/optimizer.safetensors", out.model.weights, out));
    return out;
}

Result<std::string> latest_checkpoint(const std::string& root) {
    std::error_code ec;
    int64_t best = -1;
    std::string best_path;
    for (const auto& e : fs::directory_iterator(root, ec)) {
        const int64_t s = step_of(e.path().filename().string());
        if (s > best && fs::exists(e.path() / "trainer_state.json")) {
            best = s;
            best_path = e.path().string();
        }
    }
    if (best < 0) return not_found(fmt::format("{}: no checkpoint", root));
    return best_path;
}

Status prune_checkpoints(const std::string& root, int keep_last) {
    std::error_code ec;
    std::vector<std::pair<int64_t, fs::path>> found;
    for (const auto& e : fs::directory_iterator(root, ec)) {
        const int64_t s = step_of(e.path().filename().string());
        if (s >= 0) found.emplace_back(s, e.path());
    }
    std::sort(found.begin(), found.end());
    const int64_t drop = static_cast<int64_t>(found.size()) - std::max(keep_last, 1);
    for (int64_t i = 0; i < drop; ++i) {
        fs::remove_all(found[i].second, ec);
        if (ec)
            return unavailable(
                fmt::format("{}: cannot remove: {}", found[i].second.string(), ec.message()));
    }
    return Status();
}

}  // namespace tandem::model
