// tandem-coordinator: the control plane. One Boost.Asio loop owns all cluster state; the managers
// (NodeRegistry, Scheduler, JobManager, VersionTable, StateStore, HttpApi) are wired together here.
//
//   tandem-coordinator --cluster configs/clusters/local.yaml [--run-dir DIR] [KEY=VALUE ...]
#include <csignal>
#include <iostream>

#include <fmt/format.h>
#include <unistd.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/config/loader.h"
#include "common/log.h"
#include "common/run_dir.h"
#include "common/version.h"
#include "coordinator/agent_dispatcher.h"
#include "coordinator/agent_security.h"
#include "coordinator/agent_server.h"
#include "coordinator/auth.h"
#include "coordinator/cluster_metrics.h"
#include "coordinator/dashboard.h"
#include "coordinator/http_api.h"
#include "coordinator/http_server.h"
#include "coordinator/job_manager.h"
#include "coordinator/metrics.h"
#include "coordinator/node_registry.h"
#include "coordinator/state_lock.h"
#include "coordinator/state_store.h"
#include "coordinator/version_table.h"

namespace {

using namespace tandem;

constexpr const char* kUsage =
    "usage: tandem-coordinator --cluster FILE [--run-dir DIR] [KEY.PATH=VALUE ...]\n";

int fail(int code, const std::string& message) {
    std::cerr << "tandem-coordinator: " << message << "\n";
    return code;
}

// Re-arms itself every `period`.
void every(boost::asio::steady_timer& timer, std::chrono::milliseconds period,
           std::function<void()> fn) {
    timer.expires_after(period);
    timer.async_wait([&timer, period, fn = std::move(fn)](const boost::system::error_code& ec) {
        if (ec) return;
        fn();
        every(timer, period, fn);
    });
}

int run(int argc, char** argv) {
    std::string cluster_file, run_dir_override;
    std::vector<std::string> override_texts;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if ((a == "--cluster" || a == "-f") && i + 1 < argc) {
            cluster_file = argv[++i];
        } else if (a == "--run-dir" && i + 1 < argc) {
            run_dir_override = argv[++i];
        } else if (a == "--help") {
            std::cout << kUsage;
            return 0;
        } else if (a.find('=') != std::string::npos && a[0] != '-') {
            override_texts.push_back(a);
        } else {
            return fail(2, fmt::format("unknown argument '{}'\n{}", a, kUsage));
        }
    }
    if (cluster_file.empty()) return fail(2, std::string("--cluster FILE is required\n") + kUsage);
    auto overrides = config::parse_overrides(override_texts);
    if (!overrides.ok()) return fail(2, overrides.status().message());
    auto spec = config::load_cluster_file(cluster_file, *overrides);
    if (!spec.ok()) return fail(2, spec.status().message());
    const RunDir run_dir = RunDir::of(*spec, run_dir_override);
    if (Status s = run_dir.create(); !s.ok()) return fail(1, s.message());
    // One coordinator per state directory: a second one exits 2 naming the holder.
    auto lock = coord::StateLock::acquire(run_dir.state_dir(*spec));
    if (!lock.ok())
        return fail(lock.status().code() == StatusCode::kAlreadyExists ? 2 : 1,
                    lock.status().message());
    auto secret = read_cluster_secret(*spec, run_dir);
    if (!secret.ok()) return fail(2, secret.status().message());
    auto token = read_file(run_dir.token_path());
    std::string api_token = token.ok() ? *token : "";
    while (!api_token.empty() && api_token.back() == '\n') api_token.pop_back();
    if (api_token.empty()) {  // never serve an open API: make the admin token `tandem up` would
        auto fresh = random_hex(24);
        if (!fresh.ok()) return fail(1, fresh.status().message());
        if (Status s = write_file_atomic(run_dir.token_path(), *fresh + "\n", 0600); !s.ok())
            return fail(1, s.message());
        api_token = *fresh;
    }
    auto auth = coord::Auth::load(run_dir.root() + "/tokens.json");
    if (!auth.ok()) return fail(2, auth.status().message());
    auth->add(api_token, coord::Role::kAdmin, "admin");
    auto actor_token = auth->token_named("actors");
    if (!actor_token) {
        auto created = auth->create(coord::Role::kActor, "actors");
        if (!created.ok()) return fail(1, created.status().message());
        actor_token = *created;
    }

    LogOptions log_opts;
    log_opts.json_path = run_dir.log_path("coordinator");
    log_opts.node = "coordinator";
    if (Status s = init_logging(log_opts); !s.ok()) return fail(1, s.message());
    Logger log("coordinator");

    const Clock& clock = SystemClock::instance();
    auto store = coord::StateStore::open(run_dir.state_dir(*spec));
    if (!store.ok()) return fail(1, store.status().message());

    boost::asio::io_context io;
    zmq::context_t zmq_ctx(1);
    const auto& cs = spec->coordinator;
    const std::string agent_endpoint = fmt::format("tcp://{}:{}", cs.host, cs.agent_port);
    // CURVE on the agent plane (docs/security.md): per-node keys, checked by a ZAP handler.
    std::optional<coord::AgentCurve> curve;
    if (spec->curve_enabled()) {
        auto c = coord::load_agent_curve(*spec, run_dir.root(), zmq_ctx);
        if (!c.ok()) return fail(2, fmt::format("{}: {}", cluster_file, c.status().message()));
        curve = std::move(*c);
    }
    Status curve_setup;
    auto server = coord::AgentServer::bind(io, zmq_ctx, agent_endpoint, {}, [&](zmq::socket_t& s) {
        if (!curve) return;
        net::set_curve_server(s, curve->keys, coord::kAgentZapDomain);
        curve_setup = curve->zap->watch(s, "agent ROUTER");
    });
    if (!server.ok()) return fail(1, server.status().message());
    if (!curve_setup.ok()) return fail(1, curve_setup.message());
    coord::AgentIdentity identity;
    if (curve) {
        curve->zap->start();
        (*server)->set_gate([&](const std::string& user_id, const std::vector<std::string>& f) {
            return identity.check(user_id, f);
        });
    }

    coord::Metrics metrics;
    coord::NodeRegistry registry(clock, **store, cs, *secret);
    coord::NodeSender sender(**server, registry, (*store)->epoch());
    // With CURVE, trajectory actors get their keys in start_actor (derived from the coordinator's).
    std::optional<coord::TrajectoryKeyStamper> stamper;
    if (curve) stamper.emplace(sender, curve->keys.secret_z85);
    coord::AgentLink& link = stamper ? static_cast<coord::AgentLink&>(*stamper) : sender;
    coord::JobManager jobs(clock, **store, registry, link, metrics);
    coord::VersionTable versions(clock, **store);
    coord::AgentDispatcher dispatcher(clock, **server, registry, jobs, versions, metrics,
                                      {cs.heartbeat_ms, (*store)->epoch(), *actor_token});
    (*server)->set_handler([&](const std::string& rid, const std::vector<std::string>& frames) {
        dispatcher.handle(rid, frames);
    });
    coord::HttpApi api(clock, jobs, registry, versions, **store, metrics, *auth,
                       {spec->name, (*store)->epoch()});
    coord::register_cluster_metrics(metrics, clock, jobs, registry, versions);
    if (curve) {
        metrics.collector([&] {
            coord::Metrics::Family f{
                "tandem_agent_refused_total",
                "Agent connections refused by CURVE (failed handshakes: "
                "unknown keys, peers without CURVE) and messages claiming "
                "another node's id",
                "counter",
                {{{{"reason", "handshake"}}, static_cast<double>(curve->zap->failed_handshakes())},
                 {{{"reason", "node_id"}}, static_cast<double>(identity.refused())}}};
            return std::vector<coord::Metrics::Family>{f};
        });
    }
    const coord::Dashboard dashboard({.run_dir = run_dir.root(), .auth = &*auth});
    auto http = coord::HttpServer::listen(io, cs.http_bind, static_cast<uint16_t>(cs.http_port),
                                          [&](const coord::HttpRequest& r) {
                                              // Pages hold no data; process logs check a token.
                                              if (auto page = dashboard.handle(r)) return *page;
                                              return api.handle(r);
                                          });
    if (!http.ok()) return fail(1, http.status().message());

    // Restore what the last incarnation knew.
    auto nodes = (*store)->load_nodes();
    auto stored_jobs = (*store)->load_jobs();
    if (!nodes.ok()) return fail(1, nodes.status().message());
    if (!stored_jobs.ok()) return fail(1, stored_jobs.status().message());
    for (const auto& j : *stored_jobs) {
        auto v = (*store)->versions(j.id);
        if (v.ok()) versions.restore(j.id, std::move(*v));
    }
    registry.restore(std::move(*nodes));
    jobs.restore(std::move(*stored_jobs));

    const std::string http_url = fmt::format("http://{}:{}", cs.http_bind, (*http)->port());
    const nlohmann::json address = {{"http", http_url},
                                    {"agent", agent_endpoint},
                                    {"pid", ::getpid()},
                                    {"epoch", (*store)->epoch()}};
    if (Status s = write_file_atomic(run_dir.address_path(), address.dump() + "\n"); !s.ok()) {
        return fail(1, s.message());
    }
    log.info("tandem-coordinator {} (epoch {}) serving agents on {} ({}) and HTTP on {}", kVersion,
             (*store)->epoch(), agent_endpoint, curve ? "CURVE" : "no CURVE: loopback only",
             http_url);

    boost::asio::steady_timer sweep_timer(io);
    every(sweep_timer, std::chrono::milliseconds(std::max<int64_t>(10, cs.heartbeat_ms / 4)), [&] {
        dispatcher.sweep();
        jobs.sweep();
    });
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code&, int sig) {
        log.info("signal {}: shutting down", sig);
        io.stop();
    });
    jobs.schedule();
    io.run();
    log.info("stopped");
    shutdown_logging();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    return run(argc, argv);
}
