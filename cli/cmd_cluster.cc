// `tandem up`, `tandem down`, `tandem status`, `tandem nodes`.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <thread>
#include <tuple>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/context.h"
#include "cli/launch_slurm.h"
#include "cli/launch_ssh.h"
#include "cli/processes.h"
#include "common/config/loader.h"
#include "common/net/curve.h"
#include "common/run_dir.h"

namespace tandem::cli {

namespace {

namespace fs = std::filesystem;

constexpr const char* kUpUsage =
    "usage: tandem up -f CLUSTER.yaml [--slurm] [--rotate-keys] [--run-dir DIR] [--timeout-s S] "
    "[KEY.PATH=VALUE "
    "...]\n"
    "  Starts the coordinator and the cluster's node agents that are not running (on other hosts\n"
    "  over ssh: nodes[].launcher, nodes[].ssh), waits until every node is registered, and prints\n"
    "  the coordinator's HTTP address. When a node cannot be started, says why per node and stops\n"
    "  what this run started. --slurm (inside an allocation): the nodes are the allocation's,\n"
    "  roles from the file's slurm: section, agents started with srun (docs/hosts.md).\n"
    "  With CURVE on (security.curve; on as soon as an address is not loopback), makes the\n"
    "  coordinator's and each node's key pair in RUN_DIR/keys when missing; --rotate-keys makes\n"
    "  new ones (the cluster must be down).\n";

Status ensure_secret_files(const RunDir& run, const config::ClusterSpec& spec) {
    if (spec.secret_file.empty() && !fs::exists(run.secret_path())) {
        TANDEM_ASSIGN_OR_RETURN(std::string secret, random_hex(32));
        TANDEM_RETURN_IF_ERROR(write_file_atomic(run.secret_path(), secret + "\n", 0600));
    }
    if (!fs::exists(run.token_path())) {
        TANDEM_ASSIGN_OR_RETURN(std::string token, random_hex(32));
        TANDEM_RETURN_IF_ERROR(write_file_atomic(run.token_path(), token + "\n", 0600));
    }
    return Status();
}

// CURVE key pairs (docs/security.md): RUN_DIR/keys/coordinator.key and <node>.key (0600) with
// their .pub files, for the nodes whose public key the cluster file does not give. Existing pairs
// are kept unless `rotate`.
Status ensure_curve_keys(const RunDir& run, const config::ClusterSpec& spec, bool rotate) {
    if (!spec.curve_enabled()) return Status();
    if (!net::curve_available())
        return unavailable(
            "CURVE is on (security.curve, or an address that is not loopback) but this libzmq has "
            "no CURVE: install a libzmq built with libsodium (Debian's libzmq5 is)");
    std::vector<std::string> names = {"coordinator"};
    for (const auto& n : spec.nodes) {
        if (n.public_key.empty()) names.push_back(n.id);
    }
    for (const auto& name : names) {
        if (!rotate && fs::exists(net::curve_key_path(run.root(), name))) continue;
        TANDEM_ASSIGN_OR_RETURN(net::CurveKeys keys, net::generate_curve_keys());
        TANDEM_RETURN_IF_ERROR(net::write_curve_keys(run.root(), name, keys));
    }
    return Status();
}

Result<pid_t> start(const RunDir& run, const std::string& name,
                    const std::vector<std::string>& argv) {
    TANDEM_ASSIGN_OR_RETURN(pid_t pid, spawn_daemon(argv, run.out_path(name)));
    TANDEM_RETURN_IF_ERROR(write_file_atomic(run.pid_path(name), fmt::format("{}\n", pid)));
    return pid;
}

int up(const std::vector<std::string>& argv) {
    ArgSpec spec{.flags = {"--help", "--slurm", "--rotate-keys"},
                 .options = {"--file", "--run-dir", "--timeout-s"},
                 .aliases = {{"-f", "--file"}}};
    auto args = parse_args(argv, spec);
    if (!args.ok()) return report(args.status().with_context("tandem up"));
    if (args->has("--help")) return std::cout << kUpUsage, kExitOk;
    auto file = args->get("--file");
    if (!file)
        return std::cerr << "tandem up: -f CLUSTER.yaml is required\n" << kUpUsage, kExitUsage;
    auto overrides = config::parse_overrides(args->positional);
    if (!overrides.ok()) return report(overrides.status());
    auto cluster = config::load_cluster_file(*file, *overrides);
    if (!cluster.ok()) return report(cluster.status());
    const RunDir run = RunDir::of(*cluster, args->get("--run-dir").value_or(""));
    if (Status s = run.create(); !s.ok()) return report(s);
    if (args->has("--slurm")) {
        // The allocation's nodes replace the file's (written into the run directory).
        auto generated = write_slurm_cluster(*cluster, run.root());
        if (!generated.ok()) return report(generated.status().with_context("tandem up --slurm"));
        file = *generated;
        cluster = config::load_cluster_file(*file, *overrides);
        if (!cluster.ok()) return report(cluster.status());
    }
    if (Status s = ensure_secret_files(run, *cluster); !s.ok()) return report(s);
    const bool rotate = args->has("--rotate-keys");
    if (rotate && running_pid(run.pid_path("coordinator"), "tandem-coordinator")) {
        std::cerr << "tandem up --rotate-keys: the coordinator is running; `tandem down` first\n";
        return kExitUsage;
    }
    if (Status s = ensure_curve_keys(run, *cluster, rotate); !s.ok())
        return report(s.with_context(*file));
    const std::string cluster_path = fs::absolute(*file).string();
    (void)write_file_atomic(run.root() + "/cluster-file", cluster_path + "\n");
    const double timeout_s = std::stod(args->get("--timeout-s").value_or("20"));
    const std::string bin = self_dir();
    std::vector<std::string> common = {"--cluster", cluster_path, "--run-dir", run.root()};
    for (const auto& o : args->positional) common.push_back(o);
    const SshLauncher ssh(run, *cluster, cluster_path, args->positional, bin);
    const bool any_ssh = std::any_of(cluster->nodes.begin(), cluster->nodes.end(), [](auto& n) {
        return launcher_of(n) == config::Launcher::kSsh;
    });
    if (Status s = any_ssh ? ssh.check_coordinator_address() : Status(); !s.ok())
        return report(s.with_context(*file));
    std::vector<std::pair<std::string, pid_t>> started_here;  // stopped again if a node fails
    std::vector<std::string> started_remote;

    // The coordinator first.
    int started = 0;
    std::optional<pid_t> coordinator_child;
    if (auto running = running_pid(run.pid_path("coordinator"), "tandem-coordinator")) {
        std::cout << fmt::format("coordinator already running (pid {})\n", *running);
    } else {
        fs::remove(run.address_path());
        // A port another process holds would only show in coordinator.out: say which one here.
        const auto& cs = cluster->coordinator;
        for (const auto& [field, host, port] :
             {std::tuple{"coordinator.agent_port", cs.host, cs.agent_port},
              std::tuple{"coordinator.http_port", cs.http_bind, cs.http_port}}) {
            if (const std::string why = bind_error(host, port); !why.empty()) {
                fs::remove(run.pid_path("coordinator"));
                std::cerr << fmt::format(
                    "tandem up: cannot start the coordinator: {}:{} ({}) is not free: {}; stop "
                    "what holds it or choose another port (`tandem up -f {} {}=PORT`)\n",
                    host, port, field, why, *file, field);
                return kExitFailed;
            }
        }
        std::vector<std::string> a = {bin + "/tandem-coordinator"};
        a.insert(a.end(), common.begin(), common.end());
        auto pid = start(run, "coordinator", a);
        if (!pid.ok()) return report(pid.status());
        std::cout << fmt::format("started coordinator (pid {})\n", *pid);
        coordinator_child = *pid;
        started_here.emplace_back("coordinator", *pid);
        ++started;
    }
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    Args ctx_args;
    ctx_args.options["--run-dir"] = run.root();
    std::optional<ClusterContext> ctx;
    while (std::chrono::steady_clock::now() < deadline) {
        if (auto c = cluster_context(ctx_args); c.ok()) {
            if (c->get("/api/v1/cluster").ok()) {
                ctx = *c;
                break;
            }
        }
        if (coordinator_child &&
            ::waitpid(*coordinator_child, nullptr, WNOHANG) == *coordinator_child) {
            break;  // it exited
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!ctx) {
        // Stop what we started, drop its pid file, and show why from its own output.
        if (coordinator_child) {
            const bool exited = ::waitpid(*coordinator_child, nullptr, WNOHANG) != 0;
            if (!exited) stop_process(*coordinator_child, std::chrono::seconds(5));
            fs::remove(run.pid_path("coordinator"));
        }
        std::cerr << fmt::format(
            "tandem up: the coordinator did not come up within {} s; the end of {}:\n{}", timeout_s,
            run.out_path("coordinator"), tail_lines(run.out_path("coordinator"), 5));
        return kExitFailed;
    }
    // Then the node agents: local processes, or over ssh on their hosts.
    std::vector<std::string> failures;
    for (const auto& n : cluster->nodes) {
        const std::string exe = fmt::format("tandem-{}-node", actor_role_name(n.role));
        if (launcher_of(n) == config::Launcher::kManual) {
            std::cout << fmt::format(
                "node {} is on {}: start it there with `{} --cluster {} --node {}`\n", n.id, n.host,
                exe, cluster_path, n.id);
            continue;
        }
        if (launcher_of(n) == config::Launcher::kSsh) {
            auto r = ssh.ensure_running(n);
            if (!r.ok()) {
                failures.push_back(r.status().message());
            } else if (r->started) {
                std::cout << fmt::format("started {} {} on {} (pid {})\n", exe, n.id, n.host,
                                         r->pid);
                started_remote.push_back(n.id);
                ++started;
            }
            continue;
        }
        if (running_pid(run.pid_path(n.id), exe)) continue;
        std::vector<std::string> a;
        if (launcher_of(n) == config::Launcher::kSlurm)
            a = srun_command(n, slurm_het_group(cluster->slurm, n.role));
        a.insert(a.end(), {bin + "/" + exe, "--node", n.id});
        a.insert(a.end(), common.begin(), common.end());
        auto pid = start(run, n.id, a);
        if (!pid.ok()) return report(pid.status());
        std::cout << fmt::format("started {} {} (pid {})\n", exe, n.id, *pid);
        started_here.emplace_back(n.id, *pid);
        ++started;
    }
    // All or nothing: names each node that failed and stops what this run started.
    auto fail_launch = [&]() {
        std::cerr << fmt::format("tandem up: {} node(s) could not be started:\n", failures.size());
        for (const auto& f : failures) std::cerr << "  " << f << "\n";
        // All or nothing: stop what this run started (agents first, the coordinator last).
        stop_remote_agents(run, std::cout, started_remote);
        for (auto it = started_here.rbegin(); it != started_here.rend(); ++it) {
            if (it->first == "coordinator") continue;
            stop_process(it->second, std::chrono::seconds(5));
            fs::remove(run.pid_path(it->first));
        }
        for (const auto& [name, pid] : started_here) {
            if (name != "coordinator") continue;
            stop_process(pid, std::chrono::seconds(5));
            fs::remove(run.pid_path(name));
            fs::remove(run.address_path());
        }
        if (!started_here.empty() || !started_remote.empty())
            std::cerr << "tandem up: stopped what this run had started\n";
        return kExitFailed;
    };
    if (!failures.empty()) return fail_launch();
    // Wait until every node of the file is registered and alive.
    std::string missing;
    while (true) {
        missing.clear();
        auto nodes = ctx->get("/api/v1/nodes");
        if (nodes.ok()) {
            for (const auto& n : cluster->nodes) {
                bool ok = false;
                for (const auto& j : (*nodes)["nodes"]) {
                    ok = ok || (j["id"] == n.id && j["state"] == "alive" && j["connected"] == true);
                }
                if (!ok) missing += (missing.empty() ? "" : ", ") + n.id;
            }
        }
        if (nodes.ok() && missing.empty()) break;
        // An agent (or its srun) that exits before registering fails the launch at once.
        for (const auto& [name, pid] : started_here) {
            int status = 0;
            if (name == "coordinator" || ::waitpid(pid, &status, WNOHANG) != pid) continue;
            failures.push_back(fmt::format(
                "node {}: its process exited before registering ({}); the end of {}:\n{}", name,
                WIFEXITED(status) ? fmt::format("exit code {}", WEXITSTATUS(status))
                                  : fmt::format("signal {}", WTERMSIG(status)),
                run.out_path(name), tail_lines(run.out_path(name), 5)));
        }
        if (!failures.empty()) return fail_launch();
        if (std::chrono::steady_clock::now() >= deadline) {
            std::cerr << fmt::format(
                "tandem up: nodes not registered after {} s: {} (see {}/logs)\n", timeout_s,
                missing, run.root());
            for (const auto& n : cluster->nodes) {
                if (launcher_of(n) != config::Launcher::kSsh ||
                    missing.find(n.id) == std::string::npos)
                    continue;
                std::cerr << fmt::format("node {} on {}: {}", n.id, n.host,
                                         ssh.startup_report(n, 5));
            }
            return kExitFailed;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::cout << fmt::format("cluster {} is up: {} nodes registered{}\n", cluster->name,
                             cluster->nodes.size(), started == 0 ? " (nothing to start)" : "");
    std::cout << fmt::format("coordinator: {}\n", ctx->address);
    return kExitOk;
}

int down(const std::vector<std::string>& argv) {
    ArgSpec spec{
        .flags = {"--help"}, .options = {"--file", "--run-dir"}, .aliases = {{"-f", "--file"}}};
    auto args = parse_args(argv, spec);
    if (!args.ok()) return report(args.status().with_context("tandem down"));
    std::string root = args->get("--run-dir").value_or("");
    if (root.empty() && args->get("--file")) {
        auto cluster = config::load_cluster_file(*args->get("--file"));
        if (!cluster.ok()) return report(cluster.status());
        root = cluster->run_dir;
    }
    if (root.empty()) root = ".tandem";
    const RunDir run(root);
    // Agents on other hosts first (over ssh).
    const int remote_stopped = stop_remote_agents(run, std::cout);
    if (!fs::exists(run.root() + "/pids")) {
        std::cout << (remote_stopped ? fmt::format("{} process(es) stopped\n", remote_stopped)
                                     : fmt::format("nothing to stop in {}\n", run.root()));
        return kExitOk;
    }
    // Agents first (they stop their actors), the coordinator last.
    std::vector<fs::path> pid_files;
    for (const auto& e : fs::directory_iterator(run.root() + "/pids"))
        pid_files.push_back(e.path());
    std::stable_partition(pid_files.begin(), pid_files.end(),
                          [](const fs::path& p) { return p.stem() != "coordinator"; });
    int stopped = remote_stopped;
    for (const auto& p : pid_files) {
        const std::string name = p.stem().string();
        const std::string exe = name == "coordinator" ? "tandem-coordinator" : "tandem-";
        if (auto pid = running_pid(p.string(), exe)) {
            const bool gone = stop_process(*pid, std::chrono::seconds(10));
            std::cout << fmt::format("stopped {} (pid {}){}\n", name, *pid,
                                     gone ? "" : " with SIGKILL");
            ++stopped;
        }
        fs::remove(p);
    }
    fs::remove(run.address_path());
    std::cout << fmt::format("{} process(es) stopped\n", stopped);
    return kExitOk;
}

int status(const std::vector<std::string>& argv) {
    ArgSpec spec;
    add_cluster_options(spec);
    auto args = parse_args(argv, spec);
    if (!args.ok()) return report(args.status().with_context("tandem status"));
    auto ctx = cluster_context(*args);
    if (!ctx.ok()) return report(ctx.status());
    auto c = ctx->get("/api/v1/cluster");
    if (!c.ok()) return report(c.status());
    if (json_output(*args)) return std::cout << c->dump(2) << "\n", kExitOk;
    std::cout << fmt::format("cluster {} (coordinator {} at {}, epoch {}, up {})\n",
                             (*c)["name"].get<std::string>(), (*c)["version"].get<std::string>(),
                             ctx->address, (*c)["epoch"].get<uint64_t>(),
                             format_duration_s((*c)["uptime_s"].get<double>()));
    std::cout << fmt::format("nodes: {} alive, {} dead\n", (*c)["nodes"]["alive"].get<int>(),
                             (*c)["nodes"]["dead"].get<int>());
    std::string jobs;
    for (auto it = (*c)["jobs"].begin(); it != (*c)["jobs"].end(); ++it) {
        jobs += fmt::format("{}{} {}", jobs.empty() ? "" : ", ", it.value().get<int>(), it.key());
    }
    std::cout << "jobs: " << (jobs.empty() ? "none" : jobs) << "\n";
    return kExitOk;
}

int nodes(const std::vector<std::string>& argv) {
    ArgSpec spec;
    add_cluster_options(spec);
    auto args = parse_args(argv, spec);
    if (!args.ok()) return report(args.status().with_context("tandem nodes"));
    auto ctx = cluster_context(*args);
    if (!ctx.ok()) return report(ctx.status());
    auto n = ctx->get("/api/v1/nodes");
    if (!n.ok()) return report(n.status());
    if (json_output(*args)) return std::cout << n->dump(2) << "\n", kExitOk;
    std::cout << fmt::format("{:<16} {:<8} {:<6} {:<16} {:>6} {:>9} {:>5} {:>7}  {}\n", "NODE",
                             "ROLE", "STATE", "HOST", "CPUS", "MEM_MB", "GPUS", "ACTORS",
                             "LAST SEEN");
    for (const auto& j : (*n)["nodes"]) {
        const auto& r = j["resources"];
        std::string seen = j["state"] == "dead"
                               ? j["dead_reason"].get<std::string>()
                               : format_duration_s(j["last_seen_s_ago"].get<double>()) + " ago";
        std::cout << fmt::format("{:<16} {:<8} {:<6} {:<16} {:>6} {:>9} {:>5} {:>7}  {}\n",
                                 j["id"].get<std::string>(), j["role"].get<std::string>(),
                                 j["state"].get<std::string>(), j["host"].get<std::string>(),
                                 r["cpus"].get<double>(), r["memory_mb"].get<int64_t>(),
                                 r["gpus"].get<int64_t>(), j["actors"].get<int>(), seen);
    }
    // A rolling upgrade in progress: which nodes still run another release than the coordinator.
    std::vector<std::string> skewed;
    for (const auto& j : (*n)["nodes"]) {
        if (j.value("version_skew", false) && j.value("state", "") != "dead")
            skewed.push_back(
                fmt::format("{} ({})", j["id"].get<std::string>(), j.value("agent_version", "?")));
    }
    if (!skewed.empty()) {
        std::cout << fmt::format(
            "{} node(s) run another release than the coordinator (tandem {}), on the same "
            "control protocol: {}\n",
            skewed.size(), n->value("coordinator_version", "?"), fmt::join(skewed, ", "));
    }
    return kExitOk;
}

}  // namespace

int cmd_up(const std::vector<std::string>& a) { return up(a); }
int cmd_down(const std::vector<std::string>& a) { return down(a); }
int cmd_status(const std::vector<std::string>& a) { return status(a); }
int cmd_nodes(const std::vector<std::string>& a) { return nodes(a); }

}  // namespace tandem::cli
