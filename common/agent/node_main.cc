#include "common/agent/node_main.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/agent/agent.h"
#include "common/config/loader.h"
#include "common/config/node_network.h"
#include "common/log.h"
#include "common/run_dir.h"
#include "common/version.h"

namespace tandem::agent {

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }  // relaxed: a flag

int fail(const std::string& binary, int code, const std::string& message) {
    std::cerr << binary << ": " << message << "\n";
    return code;
}

int actor_main(const std::string& binary, int argc, char** argv, const ActorMain& actor) {
    std::string context_path;
    for (int i = 2; i < argc; ++i) {
        if (std::string(argv[i]) == "--context" && i + 1 < argc) context_path = argv[++i];
    }
    if (context_path.empty()) return fail(binary, 2, "usage: " + binary + " actor --context FILE");
    auto ctx = ActorContext::load(context_path);
    if (!ctx.ok()) return fail(binary, 2, ctx.status().message());
    // The GPUs the coordinator gave this actor, before anything can initialise CUDA.
    const auto& actors = ctx->placement.value("actors", nlohmann::json::object());
    if (const auto me = actors.find(ctx->actor.str());
        me != actors.end() && me->contains("cuda_visible_devices")) {
        ::setenv("CUDA_VISIBLE_DEVICES", (*me)["cuda_visible_devices"].get<std::string>().c_str(),
                 1);
    }
    try {
        return actor(*ctx);
    } catch (const std::exception& e) {
        // The last stderr line is the failure reason the agent reports.
        return fail(binary, 1, fmt::format("uncaught exception: {}", e.what()));
    }
}

}  // namespace

int node_main(ActorRole role, int argc, char** argv, const ActorMain& actor) {
    const std::string binary = fmt::format("tandem-{}-node", actor_role_name(role));
    if (argc >= 2 && std::string(argv[1]) == "actor") return actor_main(binary, argc, argv, actor);
    // `tandem up` over ssh compares this with its own version before starting the agent.
    if (argc == 2 && std::string(argv[1]) == "--version") return std::cout << kVersion << "\n", 0;

    const std::string usage = fmt::format(
        "usage: {} --cluster FILE --node ID [--run-dir DIR] [KEY.PATH=VALUE ...]\n"
        "       {} actor --context FILE\n",
        binary, binary);
    std::string cluster_file, node_id, run_dir_override;
    std::vector<std::string> override_texts;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if ((a == "--cluster" || a == "-f") && i + 1 < argc) {
            cluster_file = argv[++i];
        } else if (a == "--node" && i + 1 < argc) {
            node_id = argv[++i];
        } else if (a == "--run-dir" && i + 1 < argc) {
            run_dir_override = argv[++i];
        } else if (a == "--help") {
            std::cout << usage;
            return 0;
        } else if (a.find('=') != std::string::npos && a[0] != '-') {
            override_texts.push_back(a);
        } else {
            return fail(binary, 2, fmt::format("unknown argument '{}'\n{}", a, usage));
        }
    }
    if (cluster_file.empty() || node_id.empty()) return fail(binary, 2, usage);
    auto overrides = config::parse_overrides(override_texts);
    if (!overrides.ok()) return fail(binary, 2, overrides.status().message());
    auto spec = config::load_cluster_file(cluster_file, *overrides);
    if (!spec.ok()) return fail(binary, 2, spec.status().message());
    const config::NodeSpec* node = nullptr;
    for (const auto& n : spec->nodes) {
        if (n.id == node_id) node = &n;
    }
    if (!node)
        return fail(binary, 2, fmt::format("{}: no node '{}' in nodes", cluster_file, node_id));
    if (node->role != role) {
        return fail(
            binary, 2,
            fmt::format("{}: node {} has role {}; start it with tandem-{}-node", cluster_file,
                        node_id, actor_role_name(node->role), actor_role_name(node->role)));
    }
    const RunDir run_dir = RunDir::of(*spec, run_dir_override);
    if (Status s = run_dir.create(); !s.ok()) return fail(binary, 1, s.message());
    auto secret = read_cluster_secret(*spec, run_dir);
    if (!secret.ok()) return fail(binary, 2, secret.status().message());

    LogOptions log_opts;
    log_opts.json_path = run_dir.log_path(node_id);
    log_opts.node = node_id;
    if (Status s = init_logging(log_opts); !s.ok()) return fail(binary, 1, s.message());

    AgentOptions opt;
    opt.cluster = *spec;
    opt.node = *node;
    opt.secret = *secret;
    opt.run_dir = std::filesystem::absolute(run_dir.root()).string();
    opt.bin_dir = std::filesystem::canonical("/proc/self/exe").parent_path().string();
    opt.resources = detect_resources(node->resources);
    if (spec->curve_enabled()) {
        // This node's key pair and the coordinator's public key (docs/security.md).
        auto keys = net::read_curve_keys(net::curve_key_path(run_dir.root(), node_id));
        if (!keys.ok())
            return fail(binary, 2,
                        fmt::format("CURVE is on for {} ({}): {}", cluster_file,
                                    spec->security.curve == config::CurveMode::kOn
                                        ? "security.curve: on"
                                        : "an address is not loopback",
                                    keys.status().message()));
        opt.curve_keys = *keys;
        opt.curve_server_key = spec->coordinator.public_key;
        if (opt.curve_server_key.empty()) {
            auto pub =
                net::read_curve_public(net::curve_public_path(run_dir.root(), "coordinator"));
            if (!pub.ok())
                return fail(binary, 2,
                            fmt::format("{} (or set coordinator.public_key in {})",
                                        pub.status().message(), cluster_file));
            opt.curve_server_key = *pub;
        }
    }
    opt.coordinator_http =
        fmt::format("http://{}:{}", spec->coordinator.host, spec->coordinator.http_port);
    // The planes' interfaces: peers reach the node at its advertised address (registered as its
    // host), UCX uses the weights device (actors inherit UCX_NET_DEVICES), and the control
    // connection leaves from the control interface (ZeroMQ's tcp://SOURCE;HOST:PORT form).
    auto planes = config::resolve_node_network(*node, config::host_interfaces());
    if (!planes.ok()) return fail(binary, 2, planes.status().message());
    opt.node.host = planes->advertise_address;
    if (!planes->weights_device.empty())
        ::setenv("UCX_NET_DEVICES", planes->weights_device.c_str(), 1);
    if (!planes->control_source.empty())
        opt.cluster.coordinator.host = planes->control_source + ";" + spec->coordinator.host;

    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);

    Logger("agent", {.node = node_id})
        .info("{} for node {} starting ({} cpus, {} MiB, {} gpus)", binary, node_id,
              opt.resources.cpus, opt.resources.memory_mb, opt.resources.gpus);
    Agent agent(SystemClock::instance(), std::move(opt));
    const int code = agent.run(g_stop);
    shutdown_logging();
    return code;
}

}  // namespace tandem::agent
