#include "common/agent/actor_context.h"

#include <fmt/format.h>

#include "common/config/loader.h"
#include "common/run_dir.h"

namespace tandem::agent {

Json ActorContext::to_json() const {
    return {
        {"actor", actor.str()},   {"attempt", attempt},     {"node", node},
        {"spec_yaml", spec_yaml}, {"placement", placement}, {"coordinator_http", coordinator_http},
        {"run_dir", run_dir},     {"api_token", api_token}, {"runtime_endpoint", runtime_endpoint}};
}

Result<ActorContext> ActorContext::from_json(const Json& j) {
    if (!j.is_object()) return invalid_argument("actor context: expected a JSON object");
    ActorContext c;
    try {
        TANDEM_ASSIGN_OR_RETURN(c.actor, ActorId::parse(j.at("actor").get<std::string>()));
        c.attempt = j.at("attempt").get<int64_t>();
        c.node = j.at("node").get<std::string>();
        c.spec_yaml = j.at("spec_yaml").get<std::string>();
        c.placement = j.value("placement", Json::object());
        c.coordinator_http = j.value("coordinator_http", std::string());
        c.run_dir = j.value("run_dir", std::string());
        c.api_token = j.value("api_token", std::string());
        c.runtime_endpoint = j.value("runtime_endpoint", std::string());
    } catch (const Json::exception& e) {
        return invalid_argument(fmt::format("actor context: {}", e.what()));
    }
    TANDEM_ASSIGN_OR_RETURN(c.spec,
                            config::parse_job_text(c.spec_yaml, "spec of " + c.actor.str()));
    return c;
}

Result<ActorContext> ActorContext::load(const std::string& path) {
    TANDEM_ASSIGN_OR_RETURN(std::string text, read_file(path));
    auto j = Json::parse(text, nullptr, false);
    if (j.is_discarded()) return invalid_argument(fmt::format("{}: not JSON", path));
    auto c = from_json(j);
    if (!c.ok()) return c.status().with_context(path);
    return c;
}

}  // namespace tandem::agent
