#pragma once

// Shared pieces of the coordinator unit tests: a temporary state directory, job YAML built from a
// few knobs, and a fixture wiring a FakeClock, a StateStore, a NodeRegistry with fake nodes, a
// RecordingAgentLink and a JobManager the way main.cc does (without sockets).

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "common/config/cluster_spec.h"
#include "common/version.h"
#include "coordinator/job_manager.h"
#include "coordinator/metrics.h"
#include "coordinator/node_registry.h"
#include "coordinator/state_store.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/recording_agent_link.h"

namespace tandem::coord::testing {

// A fresh directory under the system temp dir, with the pid in its name; removed on destruction.
class TempDir {
public:
    TempDir() {
        static std::atomic<int> counter{0};
        path_ = std::filesystem::temp_directory_path() /
                fmt::format("tandem-coord-test-{}-{}", ::getpid(), counter++);
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    std::string str() const { return path_.string(); }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

struct Res {
    double cpus = 1;
    int64_t memory_mb = 512;
    int gpus = 0;
};

// A job file with the knobs the control plane cares about; everything else takes its default.
struct JobYaml {
    std::string name = "diag";
    std::string kind = "diagnostic";
    int priority = 0;
    int max_actor_restarts = 0;
    std::string strategy = "pack";
    bool colocate = false;
    int trainers = 1;
    int rollouts = 2;
    Res trainer;
    Res rollout;
    int64_t none_alive_timeout_ms = 120000;  // rollout.none_alive_timeout_ms

    std::string str() const {
        return fmt::format(
            "name: {}\nkind: {}\npriority: {}\nmax_actor_restarts: {}\n"
            "placement:\n  strategy: {}\n  colocate: {}\n"
            "trainer:\n  replicas: {}\n  resources: {{cpus: {}, memory_mb: {}, gpus: {}}}\n"
            "rollout:\n  replicas: {}\n  resources: {{cpus: {}, memory_mb: {}, gpus: {}}}\n"
            "  none_alive_timeout_ms: {}\n",
            name, kind, priority, max_actor_restarts, strategy, colocate, trainers, trainer.cpus,
            trainer.memory_mb, trainer.gpus, rollouts, rollout.cpus, rollout.memory_mb,
            rollout.gpus, none_alive_timeout_ms);
    }
};

inline wire::Register register_msg(const std::string& id, const std::string& role,
                                   Res r = {4, 8192, 0}, const std::string& instance = "") {
    wire::Register m;
    m.node_id = id;
    m.role = role;
    m.host = id + ".local";
    m.secret = "cluster-secret";
    m.instance = instance.empty() ? id + "-instance" : instance;
    m.agent_version = kVersion;  // the same release: no version-skew warning
    m.resources = {r.cpus, r.memory_mb, r.gpus};
    return m;
}

inline config::CoordinatorSpec coordinator_spec() {
    config::CoordinatorSpec spec;
    spec.heartbeat_ms = 1000;
    spec.dead_after_ms = 5000;
    return spec;
}

// Everything a JobManager needs, fresh per test.
class CoordinatorTest : public ::testing::Test {
protected:
    CoordinatorTest() { open(); }

    // (Re)opens the store and builds new managers on it: what a coordinator restart does.
    void open() {
        jobs_.reset();
        registry_.reset();
        store_.reset();
        metrics_ = std::make_unique<Metrics>();
        auto store = StateStore::open(dir_.str());
        EXPECT_TRUE(store.ok()) << store.status().to_string();
        store_ = std::move(*store);
        registry_ =
            std::make_unique<NodeRegistry>(clock_, *store_, coordinator_spec(), "cluster-secret");
        jobs_ = std::make_unique<JobManager>(clock_, *store_, *registry_, link_, *metrics_);
    }

    // Registers a node and lets the JobManager place what now fits (as the dispatcher does).
    void add_node(const std::string& id, const std::string& role, Res r = {4, 8192, 0}) {
        auto e = registry_->on_register(register_msg(id, role, r), "route-" + id);
        ASSERT_TRUE(e.ok()) << e.status().to_string();
        jobs_->schedule();
    }

    JobId submit(const JobYaml& y) {
        auto r = jobs_->submit(y.str(), "test.yaml", false);
        EXPECT_TRUE(r.ok()) << r.status().to_string();
        return r.ok() ? r->id : JobId();
    }

    const JobRecord& job(JobId id) const {
        const JobRecord* j = jobs_->find(id);
        EXPECT_NE(j, nullptr) << id.str();
        static const JobRecord kNone;
        return j ? *j : kNone;
    }
    const ActorRecord& actor(JobId id, const std::string& role_index) const {
        const std::string name = id.str() + "/" + role_index;
        for (const auto& a : job(id).actors) {
            if (a.name() == name) return a;
        }
        ADD_FAILURE() << "no actor " << name;
        static const ActorRecord kNone;
        return kNone;
    }

    // An actor's report of its current attempt, from the node it is placed on.
    void report(JobId id, const std::string& role_index, wire::ActorPhase phase,
                const std::string& error = "", int64_t exit_code = 0) {
        const ActorRecord& a = actor(id, role_index);
        wire::ActorState m;
        m.actor = a.name();
        m.attempt = a.attempt;
        m.phase = phase;
        m.exit_code = exit_code;
        m.error = error;
        jobs_->on_actor_state(a.node, m);
    }
    void run_all(JobId id) {
        for (const auto& a : std::vector<ActorRecord>(job(id).actors)) {
            report(id, a.name().substr(a.name().find('/') + 1), wire::ActorPhase::kRunning);
        }
    }

    std::vector<std::string> event_kinds(JobId id) {
        std::vector<std::string> out;
        auto ev = store_->events(id, 0, 1000);
        EXPECT_TRUE(ev.ok());
        if (ev.ok()) {
            for (const auto& e : *ev) out.push_back(e.kind);
        }
        return out;
    }
    std::vector<EventRecord> events(JobId id) {
        auto ev = store_->events(id, 0, 1000);
        EXPECT_TRUE(ev.ok());
        return ev.ok() ? *ev : std::vector<EventRecord>{};
    }

    TempDir dir_;
    tandem::testing::FakeClock clock_;
    tandem::testing::RecordingAgentLink link_;
    std::unique_ptr<Metrics> metrics_;
    std::unique_ptr<StateStore> store_;
    std::unique_ptr<NodeRegistry> registry_;
    std::unique_ptr<JobManager> jobs_;
};

}  // namespace tandem::coord::testing
