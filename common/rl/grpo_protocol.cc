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
