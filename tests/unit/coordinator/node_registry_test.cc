// NodeRegistry: the cluster secret, one live agent per node id, heartbeats, and dead nodes after
// dead_after_ms of silence (never before), driven by a FakeClock.
#include "coordinator/node_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "tests/unit/coordinator/coordinator_fixture.h"

namespace tandem::coord::testing {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class NodeRegistryTest : public ::testing::Test {
protected:
    NodeRegistryTest() {
        auto s = StateStore::open(dir_.str());
        EXPECT_TRUE(s.ok()) << s.status().to_string();
        store_ = std::move(*s);
        registry_ =
            std::make_unique<NodeRegistry>(clock_, *store_, coordinator_spec(), "cluster-secret");
    }

    Result<const NodeRegistry::Entry*> add(const std::string& id, const std::string& routing,
                                           const std::string& instance = "") {
        return registry_->on_register(register_msg(id, "rollout", {4, 8192, 1}, instance), routing);
    }
    const NodeRegistry::Entry* heartbeat(const std::string& id, const std::string& routing) {
        wire::Heartbeat hb;
        hb.node_id = id;
        return registry_->on_heartbeat(hb, routing);
    }

    TempDir dir_;
    tandem::testing::FakeClock clock_;
    std::unique_ptr<StateStore> store_;
    std::unique_ptr<NodeRegistry> registry_;
};

TEST_F(NodeRegistryTest, RegisteredNodeIsAliveReachableAndStored) {
    auto e = add("r0", "route-a");
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    EXPECT_EQ((*e)->record.id, "r0");
    EXPECT_EQ((*e)->record.role, "rollout");
    EXPECT_EQ((*e)->record.host, "r0.local");
    EXPECT_EQ((*e)->record.resources.gpus, 1);
    EXPECT_EQ((*e)->record.state, NodeState::kAlive);
    EXPECT_EQ((*e)->record.first_seen_ns, clock_.wall_ns());
    EXPECT_EQ(registry_->node_of("route-a"), "r0");
    EXPECT_EQ(registry_->alive_count(), 1u);

    auto stored = store_->load_nodes();
    ASSERT_TRUE(stored.ok());
    ASSERT_EQ(stored->size(), 1u);
    EXPECT_EQ((*stored)[0].id, "r0");
}

TEST_F(NodeRegistryTest, WrongSecretIsPermissionDenied) {
    wire::Register m = register_msg("r0", "rollout");
    m.secret = "guess";
    auto e = registry_->on_register(m, "route-a");
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.status().code(), StatusCode::kPermissionDenied);
    EXPECT_EQ(e.status().message(), "node r0: wrong cluster secret");
    EXPECT_EQ(registry_->find("r0"), nullptr);
    EXPECT_FALSE(registry_->node_of("route-a").has_value());
    EXPECT_THAT(*store_->load_nodes(), IsEmpty());
}

TEST_F(NodeRegistryTest, EmptySecretIsPermissionDenied) {
    wire::Register m = register_msg("r0", "rollout");
    m.secret = "";
    EXPECT_EQ(registry_->on_register(m, "route-a").status().code(), StatusCode::kPermissionDenied);
}

TEST_F(NodeRegistryTest, InvalidNodeIdIsRefused) {
    auto e = add("bad id/with slash", "route-a");
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(e.status().message(), HasSubstr("bad id/with slash"));
}

TEST_F(NodeRegistryTest, SecondLiveAgentWithTheSameIdIsRefusedNamingTheNode) {
    ASSERT_TRUE(add("r0", "route-a", "first").ok());
    clock_.advance(milliseconds(1500));
    auto dup = add("r0", "route-b", "second");
    ASSERT_FALSE(dup.ok());
    EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
    EXPECT_EQ(dup.status().message(),
              "node id r0 is already registered by a live agent on r0.local (last heartbeat 1.5 s "
              "ago)");
    // The first agent keeps the node.
    EXPECT_EQ(registry_->node_of("route-a"), "r0");
    EXPECT_FALSE(registry_->node_of("route-b").has_value());
    EXPECT_EQ(registry_->find("r0")->instance, "first");
}

TEST_F(NodeRegistryTest, SameAgentReRegisteringIsAcceptedAndMovesItsRoute) {
    ASSERT_TRUE(add("r0", "route-a", "same").ok());
    const int64_t first_seen = registry_->find("r0")->record.first_seen_ns;
    clock_.advance(milliseconds(300));
    auto again = add("r0", "route-b", "same");  // reconnected with a new socket
    ASSERT_TRUE(again.ok()) << again.status().to_string();
    EXPECT_EQ(registry_->node_of("route-b"), "r0");
    EXPECT_FALSE(registry_->node_of("route-a").has_value());
    EXPECT_EQ(registry_->find("r0")->record.first_seen_ns, first_seen);
    EXPECT_EQ(heartbeat("r0", "route-a"), nullptr);
    EXPECT_NE(heartbeat("r0", "route-b"), nullptr);
}

TEST_F(NodeRegistryTest, AnotherAgentMayTakeOverTheIdOfASilentNode) {
    ASSERT_TRUE(add("r0", "route-a", "old").ok());
    clock_.advance(milliseconds(5000));  // silent for dead_after_ms, not yet swept
    auto e = add("r0", "route-b", "new");
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    EXPECT_EQ(registry_->find("r0")->instance, "new");
    EXPECT_EQ(registry_->node_of("route-b"), "r0");
}

TEST_F(NodeRegistryTest, HeartbeatFromTheRegisteredRouteIsAccepted) {
    ASSERT_TRUE(add("r0", "route-a").ok());
    clock_.advance(milliseconds(700));
    const auto* e = heartbeat("r0", "route-a");
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->last_heartbeat, clock_.now());
    EXPECT_EQ(e->record.last_seen_ns, clock_.wall_ns());
}

TEST_F(NodeRegistryTest, HeartbeatFromAnUnknownNodeOrRouteMustRegisterFirst) {
    ASSERT_TRUE(add("r0", "route-a").ok());
    EXPECT_EQ(heartbeat("r9", "route-a"), nullptr);
    EXPECT_EQ(heartbeat("r0", "route-x"), nullptr);
}

TEST_F(NodeRegistryTest, SilentNodeIsMarkedDeadAfterDeadAfterMsAndNotBefore) {
    ASSERT_TRUE(add("r0", "route-a").ok());
    clock_.advance(milliseconds(4999));
    EXPECT_THAT(registry_->sweep(), IsEmpty());
    EXPECT_EQ(registry_->find("r0")->record.state, NodeState::kAlive);

    clock_.advance(milliseconds(1));
    const auto dead = registry_->sweep();
    ASSERT_EQ(dead.size(), 1u);
    EXPECT_EQ(dead[0].first, "r0");
    EXPECT_EQ(dead[0].second, "missed heartbeats for 5.0 s");
    const auto* e = registry_->find("r0");
    EXPECT_EQ(e->record.state, NodeState::kDead);
    EXPECT_EQ(e->record.dead_reason, "missed heartbeats for 5.0 s");
    EXPECT_FALSE(registry_->node_of("route-a").has_value());
    EXPECT_EQ(registry_->alive_count(), 0u);

    // Reported once, stored as dead.
    EXPECT_THAT(registry_->sweep(), IsEmpty());
    auto stored = store_->load_nodes();
    ASSERT_TRUE(stored.ok());
    EXPECT_EQ((*stored)[0].state, NodeState::kDead);
    EXPECT_EQ((*stored)[0].dead_reason, "missed heartbeats for 5.0 s");
}

TEST_F(NodeRegistryTest, HeartbeatsKeepANodeAlive) {
    ASSERT_TRUE(add("r0", "route-a").ok());
    ASSERT_TRUE(add("r1", "route-b").ok());
    for (int i = 0; i < 10; ++i) {
        clock_.advance(milliseconds(1000));
        ASSERT_NE(heartbeat("r0", "route-a"), nullptr);
        const auto dead = registry_->sweep();
        if (i < 4) {
            EXPECT_THAT(dead, IsEmpty()) << i;
        }
        if (i == 4) {
            ASSERT_EQ(dead.size(), 1u);
            EXPECT_EQ(dead[0].first, "r1");
        }
    }
    EXPECT_EQ(registry_->find("r0")->record.state, NodeState::kAlive);
}

TEST_F(NodeRegistryTest, DeadNodeMustRegisterAgainAndThenLivesAgain) {
    ASSERT_TRUE(add("r0", "route-a", "i").ok());
    clock_.advance(milliseconds(6000));
    ASSERT_EQ(registry_->sweep().size(), 1u);
    EXPECT_EQ(heartbeat("r0", "route-a"), nullptr);

    ASSERT_TRUE(add("r0", "route-c", "i").ok());
    EXPECT_EQ(registry_->find("r0")->record.state, NodeState::kAlive);
    EXPECT_TRUE(registry_->find("r0")->record.dead_reason.empty());
    EXPECT_NE(heartbeat("r0", "route-c"), nullptr);
}

TEST_F(NodeRegistryTest, RestoredNodesGetAGracePeriodToReRegister) {
    ASSERT_TRUE(add("r0", "route-a").ok());
    ASSERT_TRUE(add("r1", "route-b").ok());
    clock_.advance(milliseconds(60'000));

    // A new registry (coordinator restart) on the same store.
    NodeRegistry restarted(clock_, *store_, coordinator_spec(), "cluster-secret");
    restarted.restore(*store_->load_nodes());
    EXPECT_EQ(restarted.alive_count(), 2u);
    EXPECT_TRUE(restarted.find("r0")->routing_id.empty());
    EXPECT_FALSE(restarted.node_of("route-a").has_value());

    // r0's agent comes back with another instance: nobody holds the id live, so it is accepted.
    ASSERT_TRUE(
        restarted.on_register(register_msg("r0", "rollout", {4, 8192, 1}, "reborn"), "route-new")
            .ok());
    clock_.advance(milliseconds(2000));
    wire::Heartbeat hb;
    hb.node_id = "r0";
    ASSERT_NE(restarted.on_heartbeat(hb, "route-new"), nullptr);
    clock_.advance(milliseconds(2999));
    EXPECT_THAT(restarted.sweep(), IsEmpty());
    clock_.advance(milliseconds(1));
    const auto dead = restarted.sweep();
    ASSERT_EQ(dead.size(), 1u);
    EXPECT_EQ(dead[0].first, "r1");
    EXPECT_EQ(dead[0].second, "did not re-register within 5.0 s of a coordinator restart");
}

}  // namespace
}  // namespace tandem::coord::testing
