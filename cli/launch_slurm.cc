#include "cli/launch_slurm.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>

#include <fmt/format.h>

#include "cli/launch_ssh.h"
#include "common/config/loader.h"
#include "common/run_dir.h"

namespace tandem::cli {

namespace {

// The first IPv4 address of a host name (the name itself if it does not resolve).
std::string resolve(const std::string& host) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || !res) return host;
    char buf[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof(buf));
    ::freeaddrinfo(res);
    return buf;
}

// `name` found on PATH (spawn_daemon does not search it); the name itself when not found.
std::string on_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::istringstream dirs(path ? path : "/usr/bin:/bin");
    for (std::string d; std::getline(dirs, d, ':');) {
        const std::string p = (d.empty() ? "." : d) + "/" + name;
        if (::access(p.c_str(), X_OK) == 0) return p;
    }
    return name;
}

// The cluster: `file` with its coordinator on `coordinator_address` and one node per host of
// each role, each copied from the file's first node of its role, launched by Slurm.
config::ClusterSpec with_nodes(const config::ClusterSpec& file,
                               const std::vector<std::string>& trainer_hosts,
                               const std::vector<std::string>& rollout_hosts,
                               const std::string& coordinator_address) {
    const config::NodeSpec* templates[2] = {nullptr, nullptr};
    for (const auto& n : file.nodes) {
        auto& t = templates[n.role == ActorRole::kTrainer ? 0 : 1];
        if (!t) t = &n;
    }
    config::ClusterSpec out = file;
    out.coordinator.host = coordinator_address;
    out.nodes.clear();
    for (const bool trainer : {true, false}) {
        const auto& hosts = trainer ? trainer_hosts : rollout_hosts;
        for (size_t k = 0; k < hosts.size(); ++k) {
            const config::NodeSpec* t = templates[trainer ? 0 : 1];
            config::NodeSpec n = t ? *t : config::NodeSpec{};
            n.role = trainer ? ActorRole::kTrainer : ActorRole::kRollout;
            n.id = fmt::format("{}-{}", actor_role_name(n.role), k);  // index within the role
            n.host = hosts[k];
            n.launcher = config::Launcher::kSlurm;
            out.nodes.push_back(std::move(n));
        }
    }
    return out;
}

}  // namespace

Result<std::vector<std::string>> slurm_hosts(const std::string& nodelist) {
    const Captured r =
        run_captured({"scontrol", "show", "hostnames", nodelist}, "", std::chrono::seconds(30));
    if (r.code != 0) {
        return unavailable(
            fmt::format("scontrol show hostnames {} failed ({}): {}", nodelist, r.code, r.err));
    }
    std::vector<std::string> hosts;
    std::istringstream in(r.out);
    for (std::string h; in >> h;) hosts.push_back(h);
    if (hosts.empty()) return invalid_argument("SLURM_JOB_NODELIST names no nodes");
    return hosts;
}

Result<config::ClusterSpec> slurm_cluster(const config::ClusterSpec& file,
                                          const std::vector<std::string>& hosts,
                                          const std::string& coordinator_address) {
    const int trainers = file.slurm.trainer_nodes;
    const int have = static_cast<int>(hosts.size());
    const bool colocate = file.slurm.colocate;
    const int first_rollout = colocate ? 0 : trainers;
    const int rollouts = file.slurm.rollout_nodes ? file.slurm.rollout_nodes : have - first_rollout;
    if (trainers > have || first_rollout + rollouts > have || rollouts < 0) {
        return invalid_argument(fmt::format(
            "slurm: {} trainer and {} rollout nodes asked for, the allocation has {} ({})",
            trainers, rollouts, have, fmt::join(hosts, ",")));
    }
    return with_nodes(file, std::vector<std::string>(hosts.begin(), hosts.begin() + trainers),
                      std::vector<std::string>(hosts.begin() + first_rollout,
                                               hosts.begin() + first_rollout + rollouts),
                      coordinator_address);
}

Result<config::ClusterSpec> slurm_het_cluster(const config::ClusterSpec& file,
                                              const std::vector<std::string>& trainer_hosts,
                                              const std::vector<std::string>& rollout_hosts,
                                              const std::string& coordinator_address) {
    if (file.slurm.colocate) {
        return invalid_argument(
            "slurm: colocate and hetjob exclude each other (a het group per role)");
    }
    auto first = [](const std::vector<std::string>& hosts, int n, int group,
                    const char* role) -> Result<std::vector<std::string>> {
        if (n > static_cast<int>(hosts.size())) {
            return invalid_argument(
                fmt::format("slurm: {} {} nodes asked for, het group {} has {} ({})", n, role,
                            group, hosts.size(), fmt::join(hosts, ",")));
        }
        return std::vector<std::string>(hosts.begin(), n ? hosts.begin() + n : hosts.end());
    };
    TANDEM_ASSIGN_OR_RETURN(auto trainers,
                            first(trainer_hosts, file.slurm.trainer_nodes, 0, "trainer"));
    TANDEM_ASSIGN_OR_RETURN(auto rollouts,
                            first(rollout_hosts, file.slurm.rollout_nodes, 1, "rollout"));
    return with_nodes(file, trainers, rollouts, coordinator_address);
}

int slurm_het_group(const config::SlurmSpec& slurm, ActorRole role) {
    if (!slurm.hetjob) return -1;
    return role == ActorRole::kTrainer ? 0 : 1;
}

std::vector<std::string> srun_command(const config::NodeSpec& node, int het_group) {
    // One task on the node, sharing the allocation's resources with the batch step; any task
    // failing ends the step (Slurm's view of a bad node).
    std::vector<std::string> argv = {on_path("srun")};
    if (het_group >= 0) argv.push_back(fmt::format("--het-group={}", het_group));
    for (std::string a : {"--nodes=1", "--ntasks=1", "--overlap", "--kill-on-bad-exit=1"})
        argv.push_back(a);
    argv.push_back("--nodelist=" + node.host);
    argv.push_back("--job-name=tandem-" + node.id);
    return argv;
}

Result<std::string> write_slurm_cluster(const config::ClusterSpec& file,
                                        const std::string& run_root) {
    const char* nodelist = std::getenv("SLURM_JOB_NODELIST");
    if (!nodelist || !*nodelist) {
        return invalid_argument(
            "tandem up --slurm runs inside a Slurm allocation (sbatch or salloc): "
            "SLURM_JOB_NODELIST is not set");
    }
    config::ClusterSpec spec;
    if (file.slurm.hetjob) {
        std::vector<std::string> groups[2];
        for (int g = 0; g < 2; ++g) {
            const std::string var = fmt::format("SLURM_JOB_NODELIST_HET_GROUP_{}", g);
            const char* list = std::getenv(var.c_str());
            if (!list || !*list) {
                return invalid_argument(fmt::format(
                    "slurm.hetjob is set but this allocation is not a heterogeneous job with "
                    "two components ({} is not set): submit as `sbatch -N T : -N R ...` or with "
                    "`#SBATCH hetjob`, trainer nodes first",
                    var));
            }
            TANDEM_ASSIGN_OR_RETURN(groups[g], slurm_hosts(list));
        }
        TANDEM_ASSIGN_OR_RETURN(
            spec, slurm_het_cluster(file, groups[0], groups[1], resolve(groups[0].front())));
    } else {
        TANDEM_ASSIGN_OR_RETURN(std::vector<std::string> hosts, slurm_hosts(nodelist));
        TANDEM_ASSIGN_OR_RETURN(spec, slurm_cluster(file, hosts, resolve(hosts.front())));
    }
    const std::string path = run_root + "/cluster-slurm.yaml";
    TANDEM_RETURN_IF_ERROR(write_file_atomic(
        path, "# Generated by `tandem up --slurm` for this allocation.\n" + config::to_yaml(spec)));
    return path;
}

}  // namespace tandem::cli
