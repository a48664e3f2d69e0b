// Every control-plane message survives encode -> decode -> from_json with every field intact, and
// from_json refuses missing fields, wrong field types and bad actor phases naming the field.
#include "common/wire/messages.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/wire/envelope.h"

namespace tandem::wire {
namespace {

using ::testing::HasSubstr;

// ---- one sample per message type, every field set away from its default ----

ActorReport sample_report(int i) {
    return {"job-000003/rollout-" + std::to_string(i), 2 + i, ActorPhase::kFailed, 137,
            "CUDA error: out of memory"};
}

Register sample(const Register*) {
    Register m;
    m.node_id = "rollout-1";
    m.role = "rollout";
    m.host = "gpu-host-7";
    m.secret = "s3cret";
    m.instance = "inst-abc123";
    m.agent_version = "0.3.1";
    m.resources = {7.5, 65536, 8};
    m.labels = {{"zone", "a"}, {"gpu", "h100"}};
    m.actors = {sample_report(0), sample_report(1)};
    return m;
}
RegisterAck sample(const RegisterAck*) {
    return {"rollout-1", 250, 17, {"job-000001/rollout-0", "job-000002/trainer-0"}, "tok", "0.4.2"};
}
Heartbeat sample(const Heartbeat*) {
    Heartbeat m;
    m.node_id = "trainer-0";
    m.sent_ns = 123456789012345;
    m.epoch = 4;
    m.last_rtt_us = 873;
    m.actors = {sample_report(3)};
    return m;
}
HeartbeatAck sample(const HeartbeatAck*) { return {-5, 9}; }
StartActor sample(const StartActor*) {
    StartActor m;
    m.actor = "job-000003/trainer-0";
    m.job = "job-000003";
    m.attempt = 3;
    m.spec_yaml = "name: x\nkind: diagnostic\n";
    m.placement = {{"actors", {{"job-000003/trainer-0", {{"node", "t0"}, {"host", "h"}}}}}};
    return m;
}
StopActor sample(const StopActor*) { return {"job-000003/rollout-1", "job CANCELLED"}; }
ActorState sample(const ActorState*) {
    ActorState m;
    m.actor = "job-000003/rollout-1";
    m.attempt = 2;
    m.phase = ActorPhase::kSucceeded;
    m.exit_code = 3;
    m.error = "last line";
    m.progress = {{"step", 12}, {"fraction", 0.25}};
    return m;
}
LogLines sample(const LogLines*) {
    return {"job-000003",
            {{"job-000003/rollout-0", 1700000000000000001, "info", "hello"},
             {"job-000003/trainer-0", 1700000000000000002, "error", "bad \"quote\"\n"}}};
}
Error sample(const Error*) { return {"invalid_argument", "register: node_id: missing field", 88}; }
VersionPublished sample(const VersionPublished*) {
    return {"job-000003", 41, {{"fingerprint", "abcd"}, {"shards", Json::array({{{"bytes", 1}}})}}};
}
VersionRetired sample(const VersionRetired*) {
    return {"job-000003", 40, 1, "job-000003/trainer-1"};
}
RelayJoin sample(const RelayJoin*) {
    return {"job-000003", 41, "job-000003/rollout-2", {{"reader", "job-000003/rollout-2"}}};
}
ActorEndpoint sample(const ActorEndpoint*) {
    return {"job-000003/trainer-0", 2, "trajectories", "tcp://127.0.0.1:40123"};
}
JobMetrics sample(const JobMetrics*) {
    return {"job-000003", 17, {{"loss", 0.5}, {"reward", 0.75}}};
}

// ---- field-by-field equality (not through to_json, so a field to_json drops is caught) ----

void expect_same(const ActorReport& a, const ActorReport& b) {
    EXPECT_EQ(a.actor, b.actor);
    EXPECT_EQ(a.attempt, b.attempt);
    EXPECT_EQ(a.phase, b.phase);
    EXPECT_EQ(a.exit_code, b.exit_code);
    EXPECT_EQ(a.error, b.error);
}
void expect_same(const LogLine& a, const LogLine& b);

template <typename T>
void expect_same_list(const std::vector<T>& a, const std::vector<T>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) expect_same(a[i], b[i]);
}
void expect_same(const Register& a, const Register& b) {
    EXPECT_EQ(a.node_id, b.node_id);
    EXPECT_EQ(a.role, b.role);
    EXPECT_EQ(a.host, b.host);
    EXPECT_EQ(a.secret, b.secret);
    EXPECT_EQ(a.instance, b.instance);
    EXPECT_EQ(a.agent_version, b.agent_version);
    EXPECT_EQ(a.resources.cpus, b.resources.cpus);
    EXPECT_EQ(a.resources.memory_mb, b.resources.memory_mb);
    EXPECT_EQ(a.resources.gpus, b.resources.gpus);
    EXPECT_EQ(a.labels, b.labels);
    expect_same_list(a.actors, b.actors);
}
void expect_same(const RegisterAck& a, const RegisterAck& b) {
    EXPECT_EQ(a.node_id, b.node_id);
    EXPECT_EQ(a.heartbeat_ms, b.heartbeat_ms);
    EXPECT_EQ(a.epoch, b.epoch);
    EXPECT_EQ(a.stop_actors, b.stop_actors);
    EXPECT_EQ(a.actor_token, b.actor_token);
    EXPECT_EQ(a.coordinator_version, b.coordinator_version);
}
void expect_same(const Heartbeat& a, const Heartbeat& b) {
    EXPECT_EQ(a.node_id, b.node_id);
    EXPECT_EQ(a.sent_ns, b.sent_ns);
    EXPECT_EQ(a.epoch, b.epoch);
    EXPECT_EQ(a.last_rtt_us, b.last_rtt_us);
    expect_same_list(a.actors, b.actors);
}
void expect_same(const HeartbeatAck& a, const HeartbeatAck& b) {
    EXPECT_EQ(a.sent_ns, b.sent_ns);
    EXPECT_EQ(a.epoch, b.epoch);
}
void expect_same(const StartActor& a, const StartActor& b) {
    EXPECT_EQ(a.actor, b.actor);
    EXPECT_EQ(a.job, b.job);
    EXPECT_EQ(a.attempt, b.attempt);
    EXPECT_EQ(a.spec_yaml, b.spec_yaml);
    EXPECT_EQ(a.placement, b.placement);
}
void expect_same(const StopActor& a, const StopActor& b) {
    EXPECT_EQ(a.actor, b.actor);
    EXPECT_EQ(a.reason, b.reason);
}
void expect_same(const ActorState& a, const ActorState& b) {
    EXPECT_EQ(a.actor, b.actor);
    EXPECT_EQ(a.attempt, b.attempt);
    EXPECT_EQ(a.phase, b.phase);
    EXPECT_EQ(a.exit_code, b.exit_code);
    EXPECT_EQ(a.error, b.error);
    EXPECT_EQ(a.progress, b.progress);
}
void expect_same(const LogLine& a, const LogLine& b) {
    EXPECT_EQ(a.actor, b.actor);
    EXPECT_EQ(a.ts_ns, b.ts_ns);
    EXPECT_EQ(a.level, b.level);
    EXPECT_EQ(a.msg, b.msg);
}
void expect_same(const LogLines& a, const LogLines& b) {
    EXPECT_EQ(a.job, b.job);
    expect_same_list(a.lines, b.lines);
}
void expect_same(const Error& a, const Error& b) {
    EXPECT_EQ(a.code, b.code);
    EXPECT_EQ(a.message, b.message);
    EXPECT_EQ(a.in_reply_to, b.in_reply_to);
}
void expect_same(const VersionPublished& a, const VersionPublished& b) {
    EXPECT_EQ(a.job, b.job);
    EXPECT_EQ(a.version, b.version);
    EXPECT_EQ(a.descriptor, b.descriptor);
}
void expect_same(const VersionRetired& a, const VersionRetired& b) {
    EXPECT_EQ(a.job, b.job);
    EXPECT_EQ(a.version, b.version);
    EXPECT_EQ(a.shard, b.shard);
    EXPECT_EQ(a.publisher, b.publisher);
}
void expect_same(const RelayJoin& a, const RelayJoin& b) {
    EXPECT_EQ(a.job, b.job);
    EXPECT_EQ(a.version, b.version);
    EXPECT_EQ(a.reader, b.reader);
    EXPECT_EQ(a.relay_source, b.relay_source);
}
void expect_same(const ActorEndpoint& a, const ActorEndpoint& b) {
    EXPECT_EQ(a.actor, b.actor);
    EXPECT_EQ(a.attempt, b.attempt);
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.address, b.address);
}
void expect_same(const JobMetrics& a, const JobMetrics& b) {
    EXPECT_EQ(a.job, b.job);
    EXPECT_EQ(a.step, b.step);
    EXPECT_EQ(a.values, b.values);
}

// ---- round trip of every type ----

template <typename M>
class MessageRoundTrip : public ::testing::Test {};

using AllMessages = ::testing::Types<Register, RegisterAck, Heartbeat, HeartbeatAck, StartActor,
                                     StopActor, ActorState, LogLines, Error, VersionPublished,
                                     VersionRetired, RelayJoin, ActorEndpoint, JobMetrics>;
TYPED_TEST_SUITE(MessageRoundTrip, AllMessages);

TYPED_TEST(MessageRoundTrip, SurvivesEncodeAndDecodeWithEveryField) {
    const TypeParam original = sample(static_cast<const TypeParam*>(nullptr));
    Envelope e = make_envelope(original, 31);
    e.frames = {std::string("\0bin", 4)};
    auto decoded = decode(encode(e));
    ASSERT_TRUE(decoded.ok()) << decoded.status().to_string();
    EXPECT_EQ(decoded->type, TypeParam::kType);
    EXPECT_EQ(decoded->seq, 31u);
    ASSERT_EQ(decoded->frames.size(), 1u);
    EXPECT_EQ(decoded->frames[0], std::string("\0bin", 4));
    auto m = body_as<TypeParam>(*decoded);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    expect_same(*m, original);
}

TYPED_TEST(MessageRoundTrip, DefaultConstructedMessageSurvivesToo) {
    // Empty strings, zeros and empty lists are values, not missing fields.
    TypeParam original{};
    if constexpr (std::is_same_v<TypeParam, Register>) original.role = "trainer";
    auto m = TypeParam::from_json(Json::parse(original.to_json().dump()));
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    expect_same(*m, original);
}

TYPED_TEST(MessageRoundTrip, BodyAsRefusesAnEnvelopeOfAnotherType) {
    Envelope e = make_envelope(sample(static_cast<const TypeParam*>(nullptr)), 1);
    e.type = std::string(TypeParam::kType) == "error" ? "heartbeat" : "error";
    auto m = body_as<TypeParam>(e);
    ASSERT_FALSE(m.ok());
    EXPECT_THAT(m.status().message(), HasSubstr(std::string("expected a ") + TypeParam::kType));
}

TYPED_TEST(MessageRoundTrip, ValidateBodyAcceptsTheType) {
    const Json body = sample(static_cast<const TypeParam*>(nullptr)).to_json();
    EXPECT_TRUE(validate_body(TypeParam::kType, body).ok());
}

// ---- actor phases ----

TEST(ActorPhase, EveryPhaseNameParsesBack) {
    for (auto p : {ActorPhase::kStarting, ActorPhase::kRunning, ActorPhase::kSucceeded,
                   ActorPhase::kFailed, ActorPhase::kStopped}) {
        auto parsed = parse_actor_phase(actor_phase_name(p));
        ASSERT_TRUE(parsed.ok());
        EXPECT_EQ(*parsed, p);
    }
}

TEST(ActorPhase, TerminalPhasesAreSucceededFailedAndStopped) {
    EXPECT_FALSE(is_terminal(ActorPhase::kStarting));
    EXPECT_FALSE(is_terminal(ActorPhase::kRunning));
    EXPECT_TRUE(is_terminal(ActorPhase::kSucceeded));
    EXPECT_TRUE(is_terminal(ActorPhase::kFailed));
    EXPECT_TRUE(is_terminal(ActorPhase::kStopped));
}

TEST(ActorPhase, UnknownPhaseIsRefusedNamingIt) {
    Json body = sample(static_cast<const ActorState*>(nullptr)).to_json();
    body["phase"] = "exploded";
    const Status s = ActorState::from_json(body).status();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), "actor_state: phase: unknown actor phase 'exploded'");
    // Case matters: phases are lower case on the wire.
    body["phase"] = "RUNNING";
    EXPECT_FALSE(ActorState::from_json(body).ok());
}

TEST(ActorPhase, EmptyPhaseIsRefusedNotReadAsRunning) {
    Json body = sample(static_cast<const ActorState*>(nullptr)).to_json();
    body["phase"] = "";
    const Status s = ActorState::from_json(body).status();
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.message(), HasSubstr("phase: unknown actor phase ''"));

    Json report = sample_report(0).to_json();
    report["phase"] = "";
    EXPECT_FALSE(ActorReport::from_json(report).ok());
}

TEST(ActorPhase, PhaseOfTheWrongTypeIsRefused) {
    Json body = sample(static_cast<const ActorState*>(nullptr)).to_json();
    body["phase"] = 2;
    EXPECT_EQ(ActorState::from_json(body).status().message(),
              "actor_state: phase: expected a string");
}

TEST(ActorPhase, BadPhaseInsideAHeartbeatNamesTheListEntry) {
    Json body = sample(static_cast<const Heartbeat*>(nullptr)).to_json();
    body["actors"][0]["phase"] = "zombie";
    const Status s = validate_body("heartbeat", body);
    EXPECT_THAT(s.message(), HasSubstr("heartbeat: actors[0]: actor report: phase: unknown actor "
                                       "phase 'zombie'"));
}

// ---- missing required fields, each named ----

struct RequiredField {
    const char* type;
    Json body;
    const char* field;
};

std::vector<RequiredField> required_fields() {
    const auto body = [](auto m) { return m.to_json(); };
    return {
        {"register", body(sample(static_cast<const Register*>(nullptr))), "node_id"},
        {"register", body(sample(static_cast<const Register*>(nullptr))), "role"},
        {"register", body(sample(static_cast<const Register*>(nullptr))), "host"},
        {"register", body(sample(static_cast<const Register*>(nullptr))), "secret"},
        {"register", body(sample(static_cast<const Register*>(nullptr))), "instance"},
        {"register", body(sample(static_cast<const Register*>(nullptr))), "agent_version"},
        {"register", body(sample(static_cast<const Register*>(nullptr))), "resources"},
        {"register_ack", body(sample(static_cast<const RegisterAck*>(nullptr))), "node_id"},
        {"register_ack", body(sample(static_cast<const RegisterAck*>(nullptr))), "heartbeat_ms"},
        {"register_ack", body(sample(static_cast<const RegisterAck*>(nullptr))), "epoch"},
        {"heartbeat", body(sample(static_cast<const Heartbeat*>(nullptr))), "node_id"},
        {"heartbeat", body(sample(static_cast<const Heartbeat*>(nullptr))), "sent_ns"},
        {"heartbeat", body(sample(static_cast<const Heartbeat*>(nullptr))), "epoch"},
        {"heartbeat_ack", body(sample(static_cast<const HeartbeatAck*>(nullptr))), "sent_ns"},
        {"heartbeat_ack", body(sample(static_cast<const HeartbeatAck*>(nullptr))), "epoch"},
        {"start_actor", body(sample(static_cast<const StartActor*>(nullptr))), "actor"},
        {"start_actor", body(sample(static_cast<const StartActor*>(nullptr))), "job"},
        {"start_actor", body(sample(static_cast<const StartActor*>(nullptr))), "attempt"},
        {"start_actor", body(sample(static_cast<const StartActor*>(nullptr))), "spec_yaml"},
        {"stop_actor", body(sample(static_cast<const StopActor*>(nullptr))), "actor"},
        {"actor_state", body(sample(static_cast<const ActorState*>(nullptr))), "actor"},
        {"actor_state", body(sample(static_cast<const ActorState*>(nullptr))), "attempt"},
        {"actor_state", body(sample(static_cast<const ActorState*>(nullptr))), "phase"},
        {"log_lines", body(sample(static_cast<const LogLines*>(nullptr))), "job"},
        {"log_lines", body(sample(static_cast<const LogLines*>(nullptr))), "lines"},
        {"error", body(sample(static_cast<const Error*>(nullptr))), "code"},
        {"error", body(sample(static_cast<const Error*>(nullptr))), "message"},
        {"version_published", body(sample(static_cast<const VersionPublished*>(nullptr))), "job"},
        {"version_published", body(sample(static_cast<const VersionPublished*>(nullptr))),
         "version"},
        {"version_published", body(sample(static_cast<const VersionPublished*>(nullptr))),
         "descriptor"},
        {"version_retired", body(sample(static_cast<const VersionRetired*>(nullptr))), "version"},
        {"version_retired", body(sample(static_cast<const VersionRetired*>(nullptr))), "shard"},
        {"version_retired", body(sample(static_cast<const VersionRetired*>(nullptr))), "publisher"},
        {"relay_join", body(sample(static_cast<const RelayJoin*>(nullptr))), "version"},
        {"relay_join", body(sample(static_cast<const RelayJoin*>(nullptr))), "reader"},
        {"actor_endpoint", body(sample(static_cast<const ActorEndpoint*>(nullptr))), "actor"},
        {"actor_endpoint", body(sample(static_cast<const ActorEndpoint*>(nullptr))), "attempt"},
        {"actor_endpoint", body(sample(static_cast<const ActorEndpoint*>(nullptr))), "name"},
        {"actor_endpoint", body(sample(static_cast<const ActorEndpoint*>(nullptr))), "address"},
        {"job_metrics", body(sample(static_cast<const JobMetrics*>(nullptr))), "job"},
        {"job_metrics", body(sample(static_cast<const JobMetrics*>(nullptr))), "step"},
        {"job_metrics", body(sample(static_cast<const JobMetrics*>(nullptr))), "values"},
    };
}

TEST(MessageFields, EachMissingRequiredFieldIsRefusedByName) {
    for (auto [type, body, field] : required_fields()) {
        SCOPED_TRACE(std::string(type) + "." + field);
        ASSERT_TRUE(body.contains(field));
        body.erase(field);
        const Status s = validate_body(type, body);
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
        EXPECT_EQ(s.message(), fmt::format("{}: {}: missing field", type, field));

        // Through the whole decoder too.
        auto d = decode({fmt::format("TANDEM/1.0 {} 3", type), body.dump()});
        ASSERT_FALSE(d.ok());
        EXPECT_EQ(d.status().message(), s.message());
    }
}

TEST(MessageFields, ARequiredFieldSetToNullCountsAsPresentButWrong) {
    Json body = sample(static_cast<const StopActor*>(nullptr)).to_json();
    body["actor"] = nullptr;
    EXPECT_EQ(validate_body("stop_actor", body).message(), "stop_actor: actor: expected a string");
}

TEST(MessageFields, OptionalFieldsMayBeLeftOutOrNull) {
    Json state = {{"actor", "job-000001/rollout-0"}, {"attempt", 1}, {"phase", "running"}};
    auto m = ActorState::from_json(state);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    EXPECT_EQ(m->exit_code, 0);
    EXPECT_TRUE(m->progress.is_null());
    state["error"] = nullptr;
    state["exit_code"] = nullptr;
    EXPECT_TRUE(ActorState::from_json(state).ok());

    const Json hb = Json::parse(R"({"node_id": "n", "sent_ns": 1, "epoch": 1})");
    auto h = Heartbeat::from_json(hb);
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->last_rtt_us, -1);
    EXPECT_TRUE(h->actors.empty());
}

TEST(MessageFields, EveryProblemIsReportedInOneMessage) {
    const Status s = validate_body("heartbeat", Json{{"sent_ns", "soon"}});
    EXPECT_EQ(s.message(),
              "heartbeat: node_id: missing field; sent_ns: expected an integer; epoch: missing "
              "field");
}

// ---- wrong field types, each named ----

struct WrongType {
    const char* type;
    const char* field;
    Json value;
    const char* expected;
};

TEST(MessageFields, WrongFieldTypeIsRefusedNamingFieldAndExpectedType) {
    const std::vector<WrongType> cases = {
        {"stop_actor", "actor", 5, "actor: expected a string"},
        {"stop_actor", "reason", Json::array(), "reason: expected a string"},
        {"start_actor", "attempt", "1", "attempt: expected an integer"},
        {"start_actor", "attempt", 1.5, "attempt: expected an integer"},
        {"start_actor", "attempt", true, "attempt: expected an integer"},
        {"heartbeat", "epoch", -1, "epoch: expected a non-negative integer"},
        {"heartbeat", "epoch", 2.0, "epoch: expected a non-negative integer"},
        {"heartbeat", "sent_ns", UINT64_MAX, "sent_ns: integer too large"},
        {"heartbeat", "actors", Json::object(), "actors: expected a list"},
        {"heartbeat", "actors", Json::array({1}),
         "actors[0]: actor report: expected a JSON object"},
        {"register", "resources", "big", "resources: resources: expected a JSON object"},
        {"register", "labels", Json::array(), "labels: expected an object"},
        {"register", "labels", Json{{"zone", 1}}, "labels.zone: expected a string"},
        {"register", "role", "scheduler", "role: expected trainer or rollout, got 'scheduler'"},
        {"log_lines", "lines", "one line", "lines: expected a list"},
        {"error", "in_reply_to", -3, "in_reply_to: expected a non-negative integer"},
        {"version_published", "descriptor", Json::array(), "descriptor: expected an object"},
        {"relay_join", "relay_source", "here", "relay_source: expected an object or null"},
        {"job_metrics", "values", 0.5, "values: expected an object"},
        {"actor_state", "exit_code", "1", "exit_code: expected an integer"},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(std::string(c.type) + "." + c.field + " = " + c.value.dump());
        Json body;
        for (const auto& r : required_fields()) {
            if (std::string(r.type) == c.type) body = r.body;
        }
        ASSERT_TRUE(body.is_object());
        body[c.field] = c.value;
        const Status s = validate_body(c.type, body);
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
        EXPECT_EQ(s.message(), fmt::format("{}: {}", c.type, c.expected));
    }
}

TEST(MessageFields, NestedResourceFieldsAreNamed) {
    Json body = sample(static_cast<const Register*>(nullptr)).to_json();
    body["resources"].erase("gpus");
    body["resources"]["cpus"] = "eight";
    EXPECT_EQ(validate_body("register", body).message(),
              "register: resources: resources: cpus: expected a number; gpus: missing field");
}

TEST(MessageFields, BadLogLineNamesItsIndexAndField) {
    Json body = sample(static_cast<const LogLines*>(nullptr)).to_json();
    body["lines"][1].erase("msg");
    EXPECT_EQ(validate_body("log_lines", body).message(),
              "log_lines: lines[1]: log line: msg: missing field");
}

TEST(MessageFields, EmptyRoleIsRefused) {
    Json body = sample(static_cast<const Register*>(nullptr)).to_json();
    body["role"] = "";
    const Status s = validate_body("register", body);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.message(), HasSubstr("role: expected trainer or rollout, got ''"));
}

TEST(MessageFields, StopActorsMustBeAListOfStrings) {
    Json body = sample(static_cast<const RegisterAck*>(nullptr)).to_json();
    body["stop_actors"] = "job-000001/rollout-0";
    EXPECT_THAT(validate_body("register_ack", body).message(),
                HasSubstr("stop_actors: expected a list"));
    body["stop_actors"] = Json::array({"job-000001/rollout-0", 7});
    EXPECT_THAT(validate_body("register_ack", body).message(),
                HasSubstr("stop_actors[1]: expected a string"));
}

TEST(MessageFields, UnknownTypeIsNotFound) {
    const Status s = validate_body("nope", Json::object());
    EXPECT_EQ(s.code(), StatusCode::kNotFound);
    EXPECT_EQ(s.message(), "unknown message type 'nope'");
}

// ---- releases (issue 15) ----

TEST(Releases, ARegisterAckFromAnOlderCoordinatorHasNoRelease) {
    Json j = sample(static_cast<const RegisterAck*>(nullptr)).to_json();
    j.erase("coordinator_version");
    auto m = RegisterAck::from_json(j);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    EXPECT_EQ(m->coordinator_version, "");
}

TEST(Releases, AnotherReleaseOnTheSameProtocolIsAWarningNamingBoth) {
    EXPECT_EQ(release_skew_message("r0", "0.4.2", "0.4.2"), "");
    EXPECT_EQ(release_skew_message("r0", "", "0.4.2"), "");  // an older coordinator: unknown
    EXPECT_EQ(release_skew_message("r0", "0.4.2", ""), "");
    const std::string w = release_skew_message("r0", "0.3.1", "0.4.2");
    EXPECT_NE(w.find("node r0 runs tandem 0.3.1, the coordinator tandem 0.4.2"), std::string::npos)
        << w;
    EXPECT_NE(w.find(fmt::format("same control protocol ({}.x)", kProtocolMajor)),
              std::string::npos)
        << w;
}

TEST(Releases, AnotherProtocolMajorIsRefusedNamingBothReleasesAndProtocols) {
    const std::string m = protocol_mismatch_message("r0", "0.3.1", "1.0", "2.0.0", "2.0");
    EXPECT_NE(m.find("node r0 will not join: the agent (tandem 0.3.1) speaks control protocol "
                     "1.0, the coordinator (tandem 2.0.0) speaks 2.0"),
              std::string::npos)
        << m;
    // A peer that does not say its release (an older one) is named as such.
    EXPECT_NE(protocol_mismatch_message("r0", "0.3.1", "1.0", "", "2.0")
                  .find("the coordinator (an unknown release)"),
              std::string::npos);
}

TEST(Releases, StringFieldOfAnUndecodableBody) {
    EXPECT_EQ(string_field_of(R"({"coordinator_version": "2.0.0", "n": 1})", "coordinator_version"),
              "2.0.0");
    EXPECT_EQ(string_field_of(R"({"coordinator_version": 2})", "coordinator_version"), "");
    EXPECT_EQ(string_field_of("not json", "coordinator_version"), "");
    EXPECT_EQ(string_field_of("[1, 2]", "coordinator_version"), "");
}

}  // namespace
}  // namespace tandem::wire
