#pragma once

// The cluster file: where the coordinator listens and which node agents exist. Defaults live
// here and nowhere else. Example: configs/clusters/local.yaml.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/config/schema.h"
#include "common/config/security.h"
#include "common/ids.h"

namespace tandem::config {

template <>
struct EnumNames<ActorRole> {
    static constexpr std::array<std::pair<ActorRole, const char*>, 2> kNames{{
        {ActorRole::kTrainer, "trainer"},
        {ActorRole::kRollout, "rollout"},
    }};
};

// What a node offers. Absent fields are detected by the agent at start (cpus, memory, CUDA GPUs).
struct NodeResources {
    std::optional<double> cpus;
    std::optional<int64_t> memory_mb;
    std::optional<int> gpus;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("cpus", s.cpus, Range{0.0, 4096.0});
        v.field("memory_mb", s.memory_mb, Range<int64_t>{0, int64_t{1} << 40});
        v.field("gpus", s.gpus, Range{0, 1024});
    }
};

// How `tandem up` starts a node's agent: as a local process, over ssh on its host, with `srun` on
// its node of a Slurm allocation (set by `tandem up --slurm`), or not at all (manual: someone else
// starts it; `up` prints the command and waits for it to register).
enum class Launcher { kLocal, kSsh, kManual, kSlurm };

template <>
struct EnumNames<Launcher> {
    static constexpr std::array<std::pair<Launcher, const char*>, 4> kNames{{
        {Launcher::kLocal, "local"},
        {Launcher::kSsh, "ssh"},
        {Launcher::kManual, "manual"},
        {Launcher::kSlurm, "slurm"},
    }};
};

// ssh access to a node's host (launcher: ssh). Empty fields: ssh's own defaults (~/.ssh/config).
struct SshSpec {
    std::string user;
    int port = 22;
    std::string identity_file;
    std::vector<std::string> options;  // extra `-o` options, "ConnectTimeout=5"
    std::string bin_dir;  // where the tandem binaries are on the host; empty: the local CLI's dir
    std::string run_dir;  // the node's run directory there; empty: .tandem/<cluster>/<node id>

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("user", s.user);
        v.field("port", s.port, Range{1, 65535});
        v.field("identity_file", s.identity_file);
        v.field("options", s.options);
        v.field("bin_dir", s.bin_dir);
        v.field("run_dir", s.run_dir);
    }
};

// The interface (name, "eth1") or address each plane of a node uses. Empty: the one holding
// `advertise_address` (or `host`); on a host with several interfaces and nothing named, the agent
// refuses to guess.
struct PlaneInterfaces {
    std::string control;       // the agent's connection to the coordinator
    std::string weights;       // UCX: UCX_NET_DEVICES for actors of the node
    std::string trajectories;  // ZeroMQ trajectory sockets

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("control", s.control);
        v.field("weights", s.weights);
        v.field("trajectories", s.trajectories);
    }
};

struct NodeSpec {
    std::string id;
    ActorRole role = ActorRole::kRollout;
    std::string host = "127.0.0.1";  // where the agent runs; "127.0.0.1" is started by `tandem up`
    NodeResources resources;
    std::map<std::string, std::string> labels;
    // Absent: local for addresses of this host, ssh otherwise.
    std::optional<Launcher> launcher;
    SshSpec ssh;
    std::string advertise_address;  // the address peers use to reach this node; empty: host
    PlaneInterfaces interfaces;
    std::vector<int> gpu_devices;  // declared device indices; empty: 0..gpus-1 (detected or set)
    // The node's CURVE public key (Z85) when its key pair is made elsewhere (a remote node whose
    // secret key is already on its host at RUN_DIR/keys/<id>.key); empty: `tandem up` makes one.
    std::string public_key;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("id", s.id, Required{}, NonEmpty{});
        v.field("role", s.role, Required{});
        v.field("host", s.host, NonEmpty{});
        v.field("resources", s.resources);
        v.field("labels", s.labels);
        v.field("launcher", s.launcher);
        v.field("ssh", s.ssh);
        v.field("advertise_address", s.advertise_address);
        v.field("interfaces", s.interfaces);
        v.field("gpu_devices", s.gpu_devices);
        v.field("public_key", s.public_key);
        if (!s.public_key.empty()) {
            const Status key_ok = validate_z85_key(s.public_key);
            v.check(key_ok.ok(), "public_key", key_ok.message());
        }
        for (size_t i = 0; i < s.gpu_devices.size(); ++i) {
            v.check(s.gpu_devices[i] >= 0, "gpu_devices",
                    fmt::format("device indices are >= 0, got {}", s.gpu_devices[i]));
            for (size_t j = 0; j < i; ++j)
                v.check(s.gpu_devices[i] != s.gpu_devices[j], "gpu_devices",
                        fmt::format("device {} is listed twice", s.gpu_devices[i]));
        }
        v.check(s.gpu_devices.empty() || !s.resources.gpus ||
                    *s.resources.gpus == static_cast<int>(s.gpu_devices.size()),
                "gpu_devices",
                fmt::format("lists {} devices but resources.gpus is {}", s.gpu_devices.size(),
                            s.resources.gpus.value_or(0)));
        const Status id_ok = validate_node_id(s.id);
        v.check(s.id.empty() || id_ok.ok(), "id", id_ok.message());
    }
};

struct CoordinatorSpec {
    std::string host = "127.0.0.1";       // address agents and the CLI use to reach it
    int agent_port = 7601;                // ZeroMQ ROUTER for node agents
    std::string http_bind = "127.0.0.1";  // HTTP API bind address
    int http_port = 7680;
    int64_t heartbeat_ms = 1000;
    int64_t dead_after_ms = 5000;
    std::string state_dir;  // SQLite state; empty: <run_dir>/state
    // The coordinator's CURVE public key (Z85) for agents whose run directory lacks
    // keys/coordinator.pub; empty: read from there.
    std::string public_key;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("host", s.host, NonEmpty{});
        v.field("agent_port", s.agent_port, Range{1, 65535});
        v.field("http_bind", s.http_bind, NonEmpty{});
        v.field("http_port", s.http_port, Range{1, 65535});
        v.field("heartbeat_ms", s.heartbeat_ms, Range<int64_t>{10, 600'000});
        v.field("dead_after_ms", s.dead_after_ms, Range<int64_t>{20, 3'600'000});
        v.field("state_dir", s.state_dir);
        v.field("public_key", s.public_key);
        if (!s.public_key.empty()) {
            const Status key_ok = validate_z85_key(s.public_key);
            v.check(key_ok.ok(), "public_key", key_ok.message());
        }
        v.check(s.dead_after_ms > s.heartbeat_ms, "dead_after_ms",
                fmt::format("must be greater than heartbeat_ms ({})", s.heartbeat_ms));
        v.check(s.agent_port != s.http_port, "http_port",
                fmt::format("must differ from agent_port ({})", s.agent_port));
    }
};

// `tandem up --slurm`: how the nodes of the allocation (SLURM_JOB_NODELIST, in order) get roles.
// The coordinator runs on the first node; the file's first node of each role is the template of
// that role's nodes (resources, labels, interfaces...), their ids are <role>-<k>.
struct SlurmSpec {
    int trainer_nodes = 1;  // the first nodes of the allocation
    int rollout_nodes = 0;  // the nodes after them; 0: all the rest
    // Rollout nodes start again from the first host (a trainer and a rollout agent per host;
    // rollout_nodes 0: one per host).
    bool colocate = false;
    // A heterogeneous job (`sbatch A : B`, `#SBATCH hetjob`): trainer nodes are the first
    // trainer_nodes of het group 0 (0: all of them), rollout nodes the first rollout_nodes of
    // group 1, and each agent's srun gets --het-group of its role.
    bool hetjob = false;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("trainer_nodes", s.trainer_nodes, Range{0, 100000});
        v.field("rollout_nodes", s.rollout_nodes, Range{0, 100000});
        v.field("colocate", s.colocate);
        v.field("hetjob", s.hetjob);
    }
};

// ZeroMQ CURVE on the agent and trajectory planes (docs/security.md). auto: on as soon as any
// address of the cluster (coordinator.host, nodes[].host, nodes[].advertise_address) is not
// loopback, off on a loopback-only cluster; off is refused unless every address is loopback.
enum class CurveMode { kAuto, kOn, kOff };

template <>
struct EnumNames<CurveMode> {
    static constexpr std::array<std::pair<CurveMode, const char*>, 3> kNames{{
        {CurveMode::kAuto, "auto"},
        {CurveMode::kOn, "on"},
        {CurveMode::kOff, "off"},
    }};
};

struct SecuritySpec {
    CurveMode curve = CurveMode::kAuto;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("curve", s.curve);
    }
};

struct ClusterSpec {
    std::string name = "local";
    std::string run_dir = ".tandem";  // pids, logs, token, address; relative to the working dir
    std::string secret_file;          // cluster secret; empty: generated into the run dir
    CoordinatorSpec coordinator;
    std::vector<NodeSpec> nodes;
    SlurmSpec slurm;
    SecuritySpec security;

    // The first address of the cluster that is not loopback ("" when all are).
    std::string first_remote_address() const {
        if (!is_loopback_host(coordinator.host)) return coordinator.host;
        for (const auto& n : nodes) {
            if (!is_loopback_host(n.host)) return n.host;
            if (!n.advertise_address.empty() && !is_loopback_host(n.advertise_address))
                return n.advertise_address;
        }
        return "";
    }
    bool curve_enabled() const {
        return security.curve == CurveMode::kOn ||
               (security.curve == CurveMode::kAuto && !first_remote_address().empty());
    }

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("name", s.name, NonEmpty{});
        v.field("run_dir", s.run_dir, NonEmpty{});
        v.field("secret_file", s.secret_file);
        v.field("coordinator", s.coordinator);
        v.field("nodes", s.nodes, Required{}, NonEmpty{});
        v.field("slurm", s.slurm);
        v.field("security", s.security);
        const std::string remote = s.first_remote_address();
        v.check(s.security.curve != CurveMode::kOff || remote.empty(), "security",
                fmt::format("curve: off is allowed only when every address is loopback, and {} "
                            "is not (remove it, or set auto or on)",
                            remote));
        for (size_t i = 0; i < s.nodes.size(); ++i) {
            for (size_t j = 0; j < i; ++j) {
                v.check(s.nodes[i].id.empty() || s.nodes[i].id != s.nodes[j].id, "nodes",
                        fmt::format("node id \"{}\" is used twice (nodes[{}] and nodes[{}])",
                                    s.nodes[i].id, j, i));
            }
        }
    }
};

}  // namespace tandem::config
