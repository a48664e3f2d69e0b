#include "common/rl/grpo_protocol.h"

#include <fmt/format.h>

namespace tandem::rl {

using Json = nlohmann::json;

std::string TrajectoryBatch::encode() const {
    Json trajs = Json::array();
    for (const auto& t : trajectories) {
        trajs.push_back({{"p", t.prompt},
                         {"c", t.completion},
                         {"lp", t.behaviour_logprobs},
                         {"r", t.reward},
                         {"g", t.group},
                         {"v", t.version}});
    }
    const Json j = {{"rollout", rollout},
                    {"batch", batch},
                    {"version", version},
                    {"fence", fence.to_json()},
                    {"rollout_s", rollout_s},
                    {"weight_sync_wait_s", weight_sync_wait_s},
                    {"trainer_wait_s", trainer_wait_s},
                    {"fetch_s", fetch_s},
                    {"generated_tokens", generated_tokens},
                    {"kv",
                     {{"bytes_in_use", kv.bytes_in_use},
                      {"budget_bytes", kv.budget_bytes},
                      {"prefix_bytes", kv.prefix_bytes},
                      {"prefix_hits", kv.prefix_hits},
                      {"admission_waits", kv.admission_waits},
                      {"evictions", kv.evictions},
                      {"compressed_blocks", kv.compressed_blocks},
                      {"bytes_per_token", kv.bytes_per_token},
                      {"compression", kv.compression}}},
                    {"trajectories", trajs}};
    const std::vector<uint8_t> bytes = Json::to_msgpack(j);
    return std::string(bytes.begin(), bytes.end());
}

Result<TrajectoryBatch> TrajectoryBatch::decode(const std::string& bytes) {
    try {
        const Json j = Json::from_msgpack(bytes);
        TrajectoryBatch b;
        b.rollout = j.at("rollout").get<int64_t>();
        b.batch = j.at("batch").get<int64_t>();
        b.version = j.at("version").get<int64_t>();
        if (j.contains("fence")) {
            TANDEM_ASSIGN_OR_RETURN(b.fence, wire::Fence::from_json(j.at("fence")));
        }
        b.rollout_s = j.at("rollout_s").get<double>();
        b.weight_sync_wait_s = j.at("weight_sync_wait_s").get<double>();
        b.trainer_wait_s = j.at("trainer_wait_s").get<double>();
        b.fetch_s = j.at("fetch_s").get<double>();
        b.generated_tokens = j.at("generated_tokens").get<int64_t>();
        if (j.contains("kv")) {  // absent from rollouts that predate it
            const Json& kv = j.at("kv");
            b.kv.bytes_in_use = kv.at("bytes_in_use").get<int64_t>();
            b.kv.budget_bytes = kv.at("budget_bytes").get<int64_t>();
            b.kv.prefix_bytes = kv.at("prefix_bytes").get<int64_t>();
            b.kv.prefix_hits = kv.at("prefix_hits").get<int64_t>();
            b.kv.admission_waits = kv.at("admission_waits").get<int64_t>();
            b.kv.evictions = kv.at("evictions").get<int64_t>();
            b.kv.compressed_blocks = kv.at("compressed_blocks").get<int64_t>();
            b.kv.bytes_per_token = kv.at("bytes_per_token").get<double>();
            b.kv.compression = kv.at("compression").get<double>();
        }
        for (const auto& t : j.at("trajectories")) {
            model::Trajectory tr;
            tr.prompt = t.at("p").get<std::vector<int32_t>>();
            tr.completion = t.at("c").get<std::vector<int32_t>>();
            tr.behaviour_logprobs = t.at("lp").get<std::vector<float>>();
            tr.reward = t.at("r").get<double>();
            tr.group = t.at("g").get<uint64_t>();
            tr.version = t.at("v").get<int64_t>();
            if (tr.behaviour_logprobs.size() != tr.completion.size()) {
                return invalid_argument("trajectory batch: log-probs and tokens differ in length");
            }
            b.trajectories.push_back(std::move(tr));
        }
        return b;
    } catch (const Json::exception& e) {
        return invalid_argument(fmt::format("trajectory batch: {}", e.what()));
    }
}

std::string weight_transports(const nlohmann::json& placement) {
    const nlohmann::json& actors = placement.value("actors", nlohmann::json::object());
    std::string host;
    for (const auto& [id, a] : actors.items()) {
        const std::string h = a.value("host", "");
        if (h.empty() || (!host.empty() && h != host)) return "";
        host = h;
    }
    return host.empty() ? "" : "shm,self";
}

}  // namespace tandem::rl
