// AgentServer against hostile ZeroMQ peers over loopback TCP: a flooding peer is throttled to its
// budget while another peer's messages all arrive; a frame over the size limit never reaches the
// handler (ZeroMQ drops the connection); a message with too many frames is dropped unread.
#include "coordinator/agent_server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <zmq.hpp>

namespace tandem::coord {
namespace {

using SteadyClock = std::chrono::steady_clock;

class AgentServerTest : public ::testing::Test {
protected:
    void start(AgentServerLimits limits) {
        auto s = AgentServer::bind(io_, zmq_, "tcp://127.0.0.1:*", limits);
        ASSERT_TRUE(s.ok()) << s.status().to_string();
        server_ = std::move(*s);
        server_->set_handler([this](const std::string& routing, const std::vector<std::string>& f) {
            ++received_[routing];
            last_frames_[routing] = f;
        });
    }
    zmq::socket_t peer(const std::string& id) {
        zmq::socket_t s(zmq_, zmq::socket_type::dealer);
        s.set(zmq::sockopt::routing_id, id);
        s.set(zmq::sockopt::linger, 0);
        s.set(zmq::sockopt::sndhwm, 0);  // queue everything: the test floods on purpose
        s.connect(server_->endpoint());
        return s;
    }
    static void send(zmq::socket_t& s, const std::vector<std::string>& frames) {
        for (size_t i = 0; i < frames.size(); ++i) {
            s.send(zmq::buffer(frames[i]),
                   i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
        }
    }
    // Runs the loop until `done` holds (10 s deadline); returns whether it held.
    bool run_until(const std::function<bool()>& done) {
        const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
        while (!done() && SteadyClock::now() < deadline) io_.run_for(std::chrono::milliseconds(5));
        return done();
    }

    boost::asio::io_context io_;
    zmq::context_t zmq_;
    std::unique_ptr<AgentServer> server_;
    std::map<std::string, int> received_;
    std::map<std::string, std::vector<std::string>> last_frames_;
};

TEST_F(AgentServerTest, FloodingPeerIsThrottledWhileAnotherPeerGetsEverythingThrough) {
    AgentServerLimits limits;
    limits.peer_rate_per_s = 100;
    limits.peer_burst = 200;
    start(limits);
    auto flood = peer("flood"), calm = peer("calm");
    constexpr int kFlood = 5000, kCalm = 50;
    const auto t0 = SteadyClock::now();
    for (int i = 0; i < kFlood; ++i) send(flood, {"hdr", "body"});
    for (int i = 0; i < kCalm; ++i) send(calm, {"hdr", "body"});
    ASSERT_TRUE(run_until([&] {
        return received_["calm"] == kCalm &&
               received_["flood"] + static_cast<int>(server_->dropped_over_budget()) == kFlood;
    })) << "calm "
        << received_["calm"] << ", flood " << received_["flood"] << ", dropped "
        << server_->dropped_over_budget();
    const double elapsed_s = std::chrono::duration<double>(SteadyClock::now() - t0).count();
    EXPECT_EQ(received_["calm"], kCalm);
    EXPECT_LE(received_["flood"], limits.peer_burst + limits.peer_rate_per_s * elapsed_s + 1);
    EXPECT_GE(server_->dropped_over_budget(), static_cast<uint64_t>(kFlood / 2));
}

TEST_F(AgentServerTest, FrameOverTheSizeLimitNeverReachesTheHandler) {
    AgentServerLimits limits;
    limits.max_frame_bytes = 1024;
    start(limits);
    auto big = peer("big"), calm = peer("calm");
    send(big, {"hdr", std::string(4096, 'x')});
    send(calm, {"hdr", std::string(1000, 'y')});
    ASSERT_TRUE(run_until([&] { return received_["calm"] == 1; }));
    io_.run_for(std::chrono::milliseconds(100));  // a bounded look for anything late
    EXPECT_EQ(received_.count("big"), 0u);
    EXPECT_EQ(last_frames_["calm"][1].size(), 1000u);
}

TEST_F(AgentServerTest, MessageWithTooManyFramesIsDroppedUnread) {
    start({});
    auto p = peer("p");
    send(p, std::vector<std::string>(40, "f"));
    send(p, {"hdr", "body"});
    ASSERT_TRUE(run_until([&] { return received_["p"] == 1; }));
    EXPECT_EQ(server_->dropped_too_many_frames(), 1u);
    EXPECT_EQ(last_frames_["p"].size(), 2u);
}

}  // namespace
}  // namespace tandem::coord
