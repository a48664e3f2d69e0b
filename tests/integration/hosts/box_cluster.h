#pragma once

// A Tandem cluster on a cluster in a box: the coordinator (and the CLI) on this machine, listening
// on the box's bridge address; one node agent per box host, started by `tandem up` over ssh with
// the box's key. `tandem down` on destruction, then the box goes (and with it anything left).
// Owned by one test thread.

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/integration/control/cluster_harness.h"
#include "tests/integration/hosts/cluster_in_a_box.h"

namespace tandem::testing {

struct BoxNode {
    std::string id;
    std::string role;       // trainer | rollout
    int host = 0;           // box host index
    std::string ssh_extra;  // more fields of its ssh mapping, ", port: 2222"
    std::string extra;      // more fields of the node, ", labels: {zone: a}"
};

class BoxCluster {
public:
    BoxCluster(const ClusterInABox& box, const std::string& name, std::vector<BoxNode> nodes)
        : box_(box), nodes_(std::move(nodes)) {
        dir_ = box.dir() + "/" + name;
        std::filesystem::create_directories(dir_);
        agent_port_ = free_port();
        http_port_ = free_port();
        std::string yaml = fmt::format(
            "name: {}\nrun_dir: {}\ncoordinator: {{host: {}, agent_port: {}, http_bind: "
            "127.0.0.1, http_port: {}, heartbeat_ms: 200, dead_after_ms: 1000}}\nnodes:\n",
            name, run_dir(), box.root_address(), agent_port_, http_port_);
        for (const auto& n : nodes_) {
            yaml += fmt::format(
                "  - {{id: {id}, role: {role}, host: {addr}, resources: {{cpus: 2}}, "
                "ssh: {{user: root, identity_file: {key}, run_dir: {dir}/remote/{id}, options: "
                "[StrictHostKeyChecking=no, UserKnownHostsFile=/dev/null]{more_ssh}}}{extra}}}\n",
                fmt::arg("id", n.id), fmt::arg("role", n.role),
                fmt::arg("addr", box.address(n.host)), fmt::arg("key", box.identity_file()),
                fmt::arg("dir", dir_), fmt::arg("more_ssh", n.ssh_extra),
                fmt::arg("extra", n.extra));
        }
        cluster_file_ = dir_ + "/cluster.yaml";
        std::ofstream(cluster_file_) << yaml;
    }
    ~BoxCluster() { run_cmd(tandem() + " down --run-dir " + run_dir()); }
    BoxCluster(const BoxCluster&) = delete;
    BoxCluster& operator=(const BoxCluster&) = delete;

    static std::string tandem() { return std::string(TANDEM_BINARY_DIR) + "/bin/tandem"; }
    std::string run_dir() const { return dir_ + "/run"; }
    const std::string& dir() const { return dir_; }
    const std::string& cluster_file() const { return cluster_file_; }
    std::string address() const { return fmt::format("http://127.0.0.1:{}", http_port_); }

    CmdResult up(const std::string& more = "") const {
        return run_cmd(tandem() + " up -f " + cluster_file_ + " --timeout-s 20 " + more);
    }
    CmdResult cli(const std::string& args) const {
        return run_cmd(tandem() + " " + args + " --run-dir " + run_dir());
    }
    nlohmann::json get(const std::string& target) const {
        std::ifstream in(run_dir() + "/api-token");
        std::string token;
        in >> token;
        auto r = net::http_call(address(), "GET", target, "", token);
        if (!r.ok() || r->status != 200) return nullptr;
        return nlohmann::json::parse(r->body, nullptr, false);
    }
    // Node id -> "alive"/"dead" as the coordinator sees it.
    bool alive(const std::string& id) const {
        const auto nodes = get("/api/v1/nodes");
        if (!nodes.is_object()) return false;
        for (const auto& n : nodes["nodes"]) {
            if (n["id"] == id && n["state"] == "alive" && n["connected"] == true) return true;
        }
        return false;
    }

private:
    const ClusterInABox& box_;
    std::vector<BoxNode> nodes_;
    std::string dir_, cluster_file_;
    int agent_port_ = 0, http_port_ = 0;
};

}  // namespace tandem::testing
