#include "common/wire/messages.h"

#include <fmt/format.h>

#include "common/wire/json_fields.h"
#include "common/wire/runtime_messages.h"

namespace tandem::wire {

std::string_view actor_phase_name(ActorPhase p) {
    switch (p) {
        case ActorPhase::kStarting:
            return "starting";
        case ActorPhase::kRunning:
            return "running";
        case ActorPhase::kSucceeded:
            return "succeeded";
        case ActorPhase::kFailed:
            return "failed";
        case ActorPhase::kStopped:
            return "stopped";
        case ActorPhase::kPending:
            return "pending";
    }
    return "?";
}

Result<ActorPhase> parse_actor_phase(std::string_view s) {
    for (auto p : {ActorPhase::kStarting, ActorPhase::kRunning, ActorPhase::kSucceeded,
                   ActorPhase::kFailed, ActorPhase::kStopped, ActorPhase::kPending}) {
        if (actor_phase_name(p) == s) return p;
    }
    return invalid_argument(fmt::format("unknown actor phase '{}'", s));
}

namespace {
void read_phase(JsonFields& f, const Json& j, const char* key, ActorPhase& out) {
    std::string s;
    f.req(key, s);
    const auto it = j.find(key);
    if (it == j.end() || !it->is_string()) return;  // missing or not a string: already reported
    auto p = parse_actor_phase(s);
    if (!p.ok()) return f.problem(fmt::format("{}: {}", key, p.status().message()));
    out = *p;
}
template <typename T>
Json list_json(const std::vector<T>& v) {
    Json a = Json::array();
    for (const auto& x : v) a.push_back(x.to_json());
    return a;
}
}  // namespace

Json Resources::to_json() const {
    return {{"cpus", cpus}, {"memory_mb", memory_mb}, {"gpus", gpus}};
}
Result<Resources> Resources::from_json(const Json& j) {
    Resources r;
    JsonFields f(j, "resources");
    f.req("cpus", r.cpus);
    f.req("memory_mb", r.memory_mb);
    f.req("gpus", r.gpus);
    TANDEM_RETURN_IF_ERROR(f.status());
    return r;
}

Json ActorReport::to_json() const {
    return {{"actor", actor},
            {"attempt", attempt},
            {"phase", actor_phase_name(phase)},
            {"exit_code", exit_code},
            {"error", error}};
}
Result<ActorReport> ActorReport::from_json(const Json& j) {
    ActorReport r;
    JsonFields f(j, "actor report");
    f.req("actor", r.actor);
    f.req("attempt", r.attempt);
    read_phase(f, j, "phase", r.phase);
    f.opt("exit_code", r.exit_code);
    f.opt("error", r.error);
    TANDEM_RETURN_IF_ERROR(f.status());
    return r;
}

Json Register::to_json() const {
    return {{"node_id", node_id},
            {"role", role},
            {"host", host},
            {"secret", secret},
            {"instance", instance},
            {"agent_version", agent_version},
            {"resources", resources.to_json()},
            {"labels", labels},
            {"actors", list_json(actors)}};
}
Result<Register> Register::from_json(const Json& j) {
    Register m;
    JsonFields f(j, kType);
    f.req("node_id", m.node_id);
    f.req("role", m.role);
    f.req("host", m.host);
    f.req("secret", m.secret);
    f.req("instance", m.instance);
    f.req("agent_version", m.agent_version);
    f.req_object("resources", m.resources);
    f.opt("labels", m.labels);
    f.opt_list("actors", m.actors);
    const auto role = j.find("role");
    if (role != j.end() && role->is_string() && m.role != "trainer" && m.role != "rollout") {
        f.problem(fmt::format("role: expected trainer or rollout, got '{}'", m.role));
    }
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json RegisterAck::to_json() const {
    return {{"node_id", node_id},
            {"heartbeat_ms", heartbeat_ms},
            {"epoch", epoch},
            {"stop_actors", stop_actors},
            {"actor_token", actor_token},
            {"coordinator_version", coordinator_version}};
}
Result<RegisterAck> RegisterAck::from_json(const Json& j) {
    RegisterAck m;
    JsonFields f(j, kType);
    f.req("node_id", m.node_id);
    f.req("heartbeat_ms", m.heartbeat_ms);
    f.req("epoch", m.epoch);
    f.opt("actor_token", m.actor_token);
    f.opt("coordinator_version", m.coordinator_version);
    Json stops;
    f.opt("stop_actors", stops);
    if (!stops.is_null() && !stops.is_array()) f.problem("stop_actors: expected a list");
    for (size_t i = 0; stops.is_array() && i < stops.size(); ++i) {
        if (!stops[i].is_string()) {
            f.problem(fmt::format("stop_actors[{}]: expected a string", i));
            continue;
        }
        m.stop_actors.push_back(stops[i].get<std::string>());
    }
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json Heartbeat::to_json() const {
    return {{"node_id", node_id},
            {"sent_ns", sent_ns},
            {"epoch", epoch},
            {"last_rtt_us", last_rtt_us},
            {"actors", list_json(actors)}};
}
Result<Heartbeat> Heartbeat::from_json(const Json& j) {
    Heartbeat m;
    JsonFields f(j, kType);
    f.req("node_id", m.node_id);
    f.req("sent_ns", m.sent_ns);
    f.req("epoch", m.epoch);
    f.opt("last_rtt_us", m.last_rtt_us);
    f.opt_list("actors", m.actors);
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json HeartbeatAck::to_json() const { return {{"sent_ns", sent_ns}, {"epoch", epoch}}; }
Result<HeartbeatAck> HeartbeatAck::from_json(const Json& j) {
    HeartbeatAck m;
    JsonFields f(j, kType);
    f.req("sent_ns", m.sent_ns);
    f.req("epoch", m.epoch);
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json StartActor::to_json() const {
    return {{"actor", actor},         {"job", job},
            {"attempt", attempt},     {"spec_yaml", spec_yaml},
            {"placement", placement}, {"epoch", epoch}};
}
Result<StartActor> StartActor::from_json(const Json& j) {
    StartActor m;
    JsonFields f(j, kType);
    f.req("actor", m.actor);
    f.req("job", m.job);
    f.req("attempt", m.attempt);
    f.req("spec_yaml", m.spec_yaml);
    f.opt("placement", m.placement);
    f.opt("epoch", m.epoch);
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json StopActor::to_json() const { return {{"actor", actor}, {"reason", reason}, {"epoch", epoch}}; }
Result<StopActor> StopActor::from_json(const Json& j) {
    StopActor m;
    JsonFields f(j, kType);
    f.req("actor", m.actor);
    f.opt("reason", m.reason);
    f.opt("epoch", m.epoch);
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json ActorState::to_json() const {
    Json j = {{"actor", actor},
              {"attempt", attempt},
              {"phase", actor_phase_name(phase)},
              {"exit_code", exit_code},
              {"error", error}};
    if (!progress.is_null()) j["progress"] = progress;
    return j;
}
Result<ActorState> ActorState::from_json(const Json& j) {
    ActorState m;
    JsonFields f(j, kType);
    f.req("actor", m.actor);
    f.req("attempt", m.attempt);
    read_phase(f, j, "phase", m.phase);
    f.opt("exit_code", m.exit_code);
    f.opt("error", m.error);
    f.opt("progress", m.progress);
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json LogLine::to_json() const {
    return {{"actor", actor}, {"ts_ns", ts_ns}, {"level", level}, {"msg", msg}};
}
Result<LogLine> LogLine::from_json(const Json& j) {
    LogLine m;
    JsonFields f(j, "log line");
    f.req("actor", m.actor);
    f.req("ts_ns", m.ts_ns);
    f.req("level", m.level);
    f.req("msg", m.msg);
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json LogLines::to_json() const { return {{"job", job}, {"lines", list_json(lines)}}; }
Result<LogLines> LogLines::from_json(const Json& j) {
    LogLines m;
    JsonFields f(j, kType);
    f.req("job", m.job);
    f.req_list("lines", m.lines);
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json Error::to_json() const {
    Json j = {{"code", code}, {"message", message}, {"in_reply_to", in_reply_to}};
    if (!coordinator_version.empty()) j["coordinator_version"] = coordinator_version;
    return j;
}
Result<Error> Error::from_json(const Json& j) {
    Error m;
    JsonFields f(j, kType);
    f.req("code", m.code);
    f.req("message", m.message);
    f.opt("in_reply_to", m.in_reply_to);
    f.opt("coordinator_version", m.coordinator_version);
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json VersionPublished::to_json() const {
    Json j = {{"job", job}, {"version", version}, {"descriptor", descriptor}};
    if (!info.is_null()) j["info"] = info;
    return j;
}
Result<VersionPublished> VersionPublished::from_json(const Json& j) {
    VersionPublished m;
    JsonFields f(j, kType);
    f.req("job", m.job);
    f.req("version", m.version);
    f.req("descriptor", m.descriptor);
    f.opt("info", m.info);
    if (!m.descriptor.is_object()) f.problem("descriptor: expected an object");
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json VersionRetired::to_json() const {
    return {{"job", job}, {"version", version}, {"shard", shard}, {"publisher", publisher}};
}
Result<VersionRetired> VersionRetired::from_json(const Json& j) {
    VersionRetired m;
    JsonFields f(j, kType);
    f.req("job", m.job);
    f.req("version", m.version);
    f.req("shard", m.shard);
    f.req("publisher", m.publisher);
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json RelayJoin::to_json() const {
    return {{"job", job}, {"version", version}, {"reader", reader}, {"relay_source", relay_source}};
}
Result<RelayJoin> RelayJoin::from_json(const Json& j) {
    RelayJoin m;
    JsonFields f(j, kType);
    f.req("job", m.job);
    f.req("version", m.version);
    f.req("reader", m.reader);
    f.opt("relay_source", m.relay_source);
    if (!m.relay_source.is_null() && !m.relay_source.is_object())
        f.problem("relay_source: expected an object or null");
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json ActorEndpoint::to_json() const {
    return {{"actor", actor}, {"attempt", attempt}, {"name", name}, {"address", address}};
}
Result<ActorEndpoint> ActorEndpoint::from_json(const Json& j) {
    ActorEndpoint m;
    JsonFields f(j, kType);
    f.req("actor", m.actor);
    f.req("attempt", m.attempt);
    f.req("name", m.name);
    f.req("address", m.address);
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

Json JobMetrics::to_json() const { return {{"job", job}, {"step", step}, {"values", values}}; }
Result<JobMetrics> JobMetrics::from_json(const Json& j) {
    JobMetrics m;
    JsonFields f(j, kType);
    f.req("job", m.job);
    f.req("step", m.step);
    f.req("values", m.values);
    if (!m.values.is_object()) f.problem("values: expected an object");
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

namespace {
template <typename M>
Status check(const Json& body) {
    return M::from_json(body).status();
}
}  // namespace

Status validate_body(std::string_view type, const Json& body) {
    struct Entry {
        std::string_view type;
        Status (*validate)(const Json&);
    };
    static constexpr Entry kTable[] = {
        {Register::kType, &check<Register>},
        {RegisterAck::kType, &check<RegisterAck>},
        {Heartbeat::kType, &check<Heartbeat>},
        {HeartbeatAck::kType, &check<HeartbeatAck>},
        {StartActor::kType, &check<StartActor>},
        {StopActor::kType, &check<StopActor>},
        {ActorState::kType, &check<ActorState>},
        {LogLines::kType, &check<LogLines>},
        {ActorEndpoint::kType, &check<ActorEndpoint>},
        {Error::kType, &check<Error>},
        {VersionPublished::kType, &check<VersionPublished>},
        {VersionRetired::kType, &check<VersionRetired>},
        {RelayJoin::kType, &check<RelayJoin>},
        {JobMetrics::kType, &check<JobMetrics>},
    };
    for (const auto& e : kTable) {
        if (e.type == type) return e.validate(body);
    }
    return validate_runtime_body(type, body);  // the actor runtime's messages
}

std::string protocol_mismatch_message(std::string_view node, std::string_view agent_release,
                                      std::string_view agent_protocol,
                                      std::string_view coordinator_release,
                                      std::string_view coordinator_protocol) {
    auto release = [](std::string_view r) {
        return r.empty() ? std::string("an unknown release") : fmt::format("tandem {}", r);
    };
    return fmt::format(
        "node {} will not join: the agent ({}) speaks control protocol {}, the coordinator ({}) "
        "speaks {}; agents and coordinator need the same protocol major: install one Tandem "
        "release on the coordinator and every node",
        node.empty() ? "?" : node, release(agent_release), agent_protocol,
        release(coordinator_release), coordinator_protocol);
}

std::string release_skew_message(std::string_view node, std::string_view agent_release,
                                 std::string_view coordinator_release) {
    if (agent_release.empty() || coordinator_release.empty() ||
        agent_release == coordinator_release)
        return "";
    return fmt::format(
        "node {} runs tandem {}, the coordinator tandem {}: they speak the same control protocol "
        "({}.x), so the node joins; finish the upgrade so that every host runs one release",
        node, agent_release, coordinator_release, kProtocolMajor);
}

std::string string_field_of(std::string_view body, const char* key) {
    const Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return "";
    const auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace tandem::wire
