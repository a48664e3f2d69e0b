// Agent fencing against a stand-in coordinator (a ROUTER socket in the test): after registering
// with epoch 5, a start_actor stamped with epoch 4 (an older coordinator incarnation) is refused,
// and one stamped with epoch 5 is acted on. Commands on one connection arrive in order, so the
// first actor_state the agent sends names which start it acted on first. And reconnection: an
// agent whose coordinator stays away for many times dead_after_ms registers with the one that
// comes back on the same port.
#include "common/agent/agent.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <optional>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <zmq.hpp>

#include "common/version.h"
#include "common/wire/envelope.h"
#include "common/wire/messages.h"
#include "common/wire/zmq_io.h"

namespace tandem::agent {
namespace {

using Clock = std::chrono::steady_clock;

class StandInCoordinator {
public:
    // port 0: any free one.
    explicit StandInCoordinator(int port = 0) : router_(ctx_, zmq::socket_type::router) {
        router_.set(zmq::sockopt::linger, 0);
        router_.bind(port ? fmt::format("tcp://127.0.0.1:{}", port) : "tcp://127.0.0.1:*");
        const std::string ep = router_.get(zmq::sockopt::last_endpoint);
        port_ = std::stoi(ep.substr(ep.rfind(':') + 1));
    }
    int port() const { return port_; }

    // The next message of `type` from the agent (others skipped), within `within`.
    std::optional<wire::Envelope> next(const std::string& type,
                                       Clock::duration within = std::chrono::seconds(10)) {
        const auto deadline = Clock::now() + within;
        while (Clock::now() < deadline) {
            zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
            zmq::poll(&item, 1, std::chrono::milliseconds(50));
            while (auto frames = wire::try_recv_frames(router_)) {
                if (frames->size() < 2) continue;
                routing_ = (*frames)[0];
                frames->erase(frames->begin());
                auto e = wire::decode(*frames);
                if (e.ok() && e->type == type) return *e;
            }
        }
        return std::nullopt;
    }
    void send_raw(const wire::Envelope& e) {
        ASSERT_TRUE(wire::send_envelope(router_, e, routing_).ok());
    }
    template <typename M>
    void send(const M& m) {
        ASSERT_TRUE(wire::send_envelope(router_, wire::make_envelope(m, ++seq_), routing_).ok());
    }

private:
    zmq::context_t ctx_;
    zmq::socket_t router_;
    int port_ = 0;
    std::string routing_;
    uint64_t seq_ = 0;
};

wire::StartActor start(const std::string& actor, uint64_t epoch) {
    wire::StartActor m;
    m.actor = actor;
    m.job = "job-000001";
    m.attempt = 1;
    m.spec_yaml = "name: d\nkind: diagnostic\n";
    m.epoch = epoch;
    return m;
}

// A fresh directory for one test, removed when the test ends (after the agent has stopped, when
// declared before it).
struct ScratchDir {
    explicit ScratchDir(const std::string& name)
        : path(std::filesystem::temp_directory_path() /
               fmt::format("tandem-agent-{}-{}", name, ::getpid())) {
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    ~ScratchDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::filesystem::path path;
};

// A rollout agent n0 that registers with the stand-in coordinator on `port`. Its bin_dir does
// not exist: starting an actor fails fast, which is all these tests need.
AgentOptions agent_options(const std::filesystem::path& dir, int port) {
    AgentOptions o;
    o.cluster.coordinator.host = "127.0.0.1";
    o.cluster.coordinator.agent_port = port;
    o.node.id = "n0";
    o.node.role = ActorRole::kRollout;
    o.secret = "secret";
    o.run_dir = dir.string();
    o.bin_dir = (dir / "no-such-bin").string();
    o.resources = {2, 1024, 0};
    return o;
}

// Runs `agent` on its own thread until the test ends (then stops and joins it); code() is what
// run() returned.
class AgentThread {
public:
    explicit AgentThread(Agent& agent)
        : code_(result_.get_future()),
          loop_([this, &agent] { result_.set_value(agent.run(stop_)); }) {}
    AgentThread(const AgentThread&) = delete;
    AgentThread& operator=(const AgentThread&) = delete;
    ~AgentThread() {
        stop_ = true;
        loop_.join();
    }
    std::future<int>& code() { return code_; }

private:
    std::atomic<bool> stop_{false};
    std::promise<int> result_;
    std::future<int> code_;
    std::thread loop_;  // started once the members above exist
};

TEST(AgentEpoch, StartFromAnOlderCoordinatorEpochIsRefused) {
    ScratchDir dir("epoch");
    StandInCoordinator coordinator;
    Agent agent(SystemClock::instance(), agent_options(dir.path, coordinator.port()));
    AgentThread running(agent);

    ASSERT_TRUE(coordinator.next(wire::Register::kType).has_value());
    wire::RegisterAck ack;
    ack.node_id = "n0";
    ack.heartbeat_ms = 1000;
    ack.epoch = 5;
    coordinator.send(ack);
    coordinator.send(start("job-000001/rollout-0", 4));  // an older coordinator's
    coordinator.send(start("job-000001/rollout-1", 5));  // this one's

    auto state = coordinator.next(wire::ActorState::kType);
    ASSERT_TRUE(state.has_value()) << "the agent never answered the epoch-5 start";
    auto m = wire::body_as<wire::ActorState>(*state);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->actor, "job-000001/rollout-1");
}

// The coordinator is killed and comes back after many times dead_after_ms (a slow restart under
// load). The agent keeps registering on every socket it makes: its registration backoff stays
// below the silence after which it replaces the socket (it used to grow past it, and the agent
// then replaced each socket before registering on it: the new coordinator never heard from it).
TEST(AgentReconnect, RegistersWithACoordinatorThatComesBackLate) {
    ScratchDir dir("reconnect");
    auto coordinator = std::make_unique<StandInCoordinator>();
    const int port = coordinator->port();
    AgentOptions o = agent_options(dir.path, port);
    o.cluster.coordinator.heartbeat_ms = 50;
    o.cluster.coordinator.dead_after_ms = 200;
    Agent agent(SystemClock::instance(), o);
    AgentThread running(agent);

    ASSERT_TRUE(coordinator->next(wire::Register::kType).has_value());
    wire::RegisterAck ack;
    ack.node_id = "n0";
    ack.heartbeat_ms = 50;
    ack.epoch = 1;
    coordinator->send(ack);
    ASSERT_TRUE(coordinator->next(wire::Heartbeat::kType).has_value());
    coordinator.reset();  // gone without a word, like kill -9
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));  // 15 x dead_after_ms
    coordinator = std::make_unique<StandInCoordinator>(port);
    // Within two socket replacements (2 x 2 x dead_after_ms) plus the backoff, with margin.
    EXPECT_TRUE(coordinator->next(wire::Register::kType, std::chrono::seconds(5)).has_value())
        << "the agent never registered with the coordinator that came back";
}

// A coordinator of another release on the same protocol major (a rolling upgrade): the agent
// sent its own release, reads the coordinator's from the register_ack, warns, and stays.
TEST(AgentVersion, JoinsACoordinatorOfAnotherReleaseOnTheSameProtocol) {
    ScratchDir dir("release");
    StandInCoordinator coordinator;
    Agent agent(SystemClock::instance(), agent_options(dir.path, coordinator.port()));
    AgentThread running(agent);

    auto reg = coordinator.next(wire::Register::kType);
    ASSERT_TRUE(reg.has_value());
    EXPECT_EQ(wire::body_as<wire::Register>(*reg)->agent_version, kVersion);
    wire::RegisterAck ack;
    ack.node_id = "n0";
    ack.epoch = 5;
    ack.coordinator_version = std::string(kVersion) + "-newer";
    coordinator.send(ack);
    // Registered: it heartbeats with the epoch of that ack, and does not stop.
    auto hb = coordinator.next(wire::Heartbeat::kType);
    ASSERT_TRUE(hb.has_value()) << "the agent did not heartbeat after the register_ack";
    EXPECT_EQ(wire::body_as<wire::Heartbeat>(*hb)->epoch, 5u);
    EXPECT_EQ(running.code().wait_for(std::chrono::milliseconds(300)), std::future_status::timeout)
        << "the agent stopped for a release difference on the same protocol";
}

// A coordinator of another protocol major answers the registration: the agent cannot understand
// it, so it stops with exit code 2 (its log names both versions) instead of registering for ever.
TEST(AgentVersion, StopsWhenTheCoordinatorSpeaksAnotherProtocolMajor) {
    ScratchDir dir("protocol");
    StandInCoordinator coordinator;
    Agent agent(SystemClock::instance(), agent_options(dir.path, coordinator.port()));
    AgentThread running(agent);

    ASSERT_TRUE(coordinator.next(wire::Register::kType).has_value());
    wire::RegisterAck ack;
    ack.node_id = "n0";
    ack.epoch = 5;
    ack.coordinator_version = "99.0.0";  // named in the agent's log with its own release
    wire::Envelope e = wire::make_envelope(ack, 1);
    e.major = wire::kProtocolMajor + 1;
    coordinator.send_raw(e);
    ASSERT_EQ(running.code().wait_for(std::chrono::seconds(10)), std::future_status::ready)
        << "the agent kept running after a reply it cannot read";
    EXPECT_EQ(running.code().get(), 2);
}

}  // namespace
}  // namespace tandem::agent
