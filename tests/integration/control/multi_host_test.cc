// The control plane across hosts: the coordinator and a trainer node on this host, two rollout
// nodes in their own network namespaces (their own addresses, reached over veth pairs). Skips with
// a reason when namespaces cannot be made (not root, no iproute2).
#include <signal.h>

#include <set>

#include <gtest/gtest.h>

#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

using namespace std::chrono_literals;

// A network namespace with a veth pair: host side 10.77.N.1, namespace side 10.77.N.2. Removed
// (with anything left running in it) on destruction.
class NetnsHost {
public:
    NetnsHost(int n) : n_(n), name_(fmt::format("tandem-it-{}-{}", ::getpid() % 100000, n)) {
        const std::string host_if = fmt::format("tdh{}x{}", ::getpid() % 10000, n);
        const std::string ns_if = fmt::format("tdn{}x{}", ::getpid() % 10000, n);
        const std::string script = fmt::format(
            "set -e; ip netns add {ns}; ip link add {h} type veth peer name {p}; "
            "ip link set {p} netns {ns}; ip addr add 10.77.{n}.1/24 dev {h}; ip link set {h} up; "
            "ip netns exec {ns} ip addr add 10.77.{n}.2/24 dev {p}; "
            "ip netns exec {ns} ip link set {p} up; ip netns exec {ns} ip link set lo up",
            fmt::arg("ns", name_), fmt::arg("h", host_if), fmt::arg("p", ns_if), fmt::arg("n", n));
        auto r = run_cmd("sh -c '" + script + "'");
        ok_ = r.code == 0;
        why_ = r.out;
        host_if_ = host_if;
    }
    ~NetnsHost() {
        run_cmd(fmt::format("ip netns pids {} | xargs -r kill -9", name_));
        run_cmd(fmt::format("ip link del {}", host_if_));
        run_cmd(fmt::format("ip netns del {}", name_));
    }
    bool ok() const { return ok_; }
    const std::string& why() const { return why_; }
    std::string host_address() const { return fmt::format("10.77.{}.1", n_); }
    std::string address() const { return fmt::format("10.77.{}.2", n_); }
    std::string exec(const std::string& cmd) const {
        return fmt::format("ip netns exec {} {}", name_, cmd);
    }
    std::string pids() const { return run_cmd(fmt::format("ip netns pids {}", name_)).out; }

private:
    int n_;
    std::string name_, host_if_, why_;
    bool ok_ = false;
};

TEST(MultiHost, RolloutNodesInOtherNamespacesRunAJobAndALostHostIsHandled) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create network namespaces";
    NetnsHost a(1), b(2);
    if (!a.ok() || !b.ok())
        GTEST_SKIP() << "cannot create network namespaces: " << a.why() << b.why();

    // Cluster file: the coordinator listens on the host side of both links (0.0.0.0 would do too).
    const auto dir =
        std::filesystem::temp_directory_path() / fmt::format("tandem_it_multihost_{}", ::getpid());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const int agent_port = free_port(), http_port = free_port();
    const std::string run_dir = (dir / "run").string();
    const std::string cluster = (dir / "cluster.yaml").string();
    std::ofstream(cluster) << fmt::format(
        "name: multihost\nrun_dir: {}\n"
        "coordinator: {{host: 0.0.0.0, agent_port: {}, http_bind: 127.0.0.1, http_port: {}, "
        "heartbeat_ms: 200, dead_after_ms: 1000}}\n"
        "nodes:\n"
        "  - {{id: trainer-0, role: trainer, host: 127.0.0.1, resources: {{cpus: 2}}}}\n"
        "  - {{id: rollout-a, role: rollout, host: {}, launcher: manual, resources: {{cpus: 2}}, "
        "labels: {{zone: a}}}}\n"
        "  - {{id: rollout-b, role: rollout, host: {}, launcher: manual, resources: {{cpus: 2}}, "
        "labels: {{zone: b}}}}\n",
        run_dir, agent_port, http_port, a.address(), b.address());
    const std::string tandem = std::string(TANDEM_BINARY_DIR) + "/bin/tandem";
    struct Down {
        std::string cmd;
        std::filesystem::path dir;
        ~Down() {
            run_cmd(cmd);
            std::filesystem::remove_all(dir);
        }
    } down{tandem + " down --run-dir " + run_dir, dir};

    // `up` starts the coordinator and the local trainer node, and says how to start the manual
    // ones.
    auto up = run_cmd(fmt::format("{} up -f {} --timeout-s 1", tandem, cluster));
    EXPECT_NE(up.out.find("node rollout-a is on " + a.address()), std::string::npos) << up.out;

    // Each remote node agent connects to the coordinator through its host's veth address.
    const std::string agent = std::string(TANDEM_BINARY_DIR) + "/bin/tandem-rollout-node";
    for (const auto* h : {&a, &b}) {
        const std::string id = h == &a ? "rollout-a" : "rollout-b";
        const std::string cmd = h->exec(fmt::format(
            "{} --cluster {} --node {} --run-dir {} coordinator.host={} >{}/{}.out 2>&1 &", agent,
            cluster, id, run_dir, h->host_address(), dir.string(), id));
        ASSERT_EQ(run_cmd("sh -c '" + cmd + "'").code, 0);
    }
    const std::string http = fmt::format("http://127.0.0.1:{}", http_port);
    auto get = [&](const std::string& target) {
        std::ifstream token_file(run_dir + "/api-token");
        std::string token;
        token_file >> token;
        auto r = net::http_call(http, "GET", target, "", token);
        return r.ok() ? nlohmann::json::parse(r->body, nullptr, false) : nlohmann::json();
    };
    auto alive = [&](const std::string& id) {
        const auto nodes = get("/api/v1/nodes");
        if (!nodes.is_object()) return false;
        for (const auto& n : nodes["nodes"]) {
            if (n["id"] == id && n["state"] == "alive" && n["connected"] == true) return true;
        }
        return false;
    };
    ASSERT_TRUE(wait_until(
        [&] { return alive("trainer-0") && alive("rollout-a") && alive("rollout-b"); }, 15s))
        << get("/api/v1/nodes").dump(2);

    // spread puts one rollout actor on each remote host.
    const std::string job = (dir / "job.yaml").string();
    std::ofstream(job)
        << "name: spread\nkind: diagnostic\nmax_actor_restarts: 1\nplacement: {strategy: spread}\n"
           "rollout: {replicas: 2}\ndiagnostic: {duration_s: 3, report_every_s: 0.1}\n";
    auto sub = run_cmd(fmt::format("{} job submit -f {} --run-dir {}", tandem, job, run_dir));
    ASSERT_EQ(sub.code, 0) << sub.out;
    ASSERT_TRUE(wait_until(
        [&] {
            const auto j = get("/api/v1/jobs/job-000001");
            if (!j.is_object()) return false;
            int running = 0;
            for (const auto& act : j["actors"]) running += act["phase"] == "running";
            return running == 3;
        },
        10s));
    const auto placed = get("/api/v1/jobs/job-000001");
    std::set<std::string> rollout_nodes;
    for (const auto& act : placed["actors"]) {
        if (act["actor"].get<std::string>().find("rollout") != std::string::npos)
            rollout_nodes.insert(act["node"]);
    }
    EXPECT_EQ(rollout_nodes, (std::set<std::string>{"rollout-a", "rollout-b"}));

    // Host b goes away (its agent and actor killed): its node is declared dead and the actor moves.
    run_cmd(fmt::format("sh -c 'kill -9 {}'", b.pids().empty() ? "0" : b.pids()));
    ASSERT_TRUE(wait_until([&] { return !alive("rollout-b"); }, 5s));
    ASSERT_TRUE(wait_until(
        [&] { return get("/api/v1/jobs/job-000001").value("state", "") == "SUCCEEDED"; }, 20s))
        << get("/api/v1/jobs/job-000001").dump(2);
    const auto done = get("/api/v1/jobs/job-000001");
    EXPECT_EQ(done["restarts_used"], 1);
}

}  // namespace
}  // namespace tandem::testing
