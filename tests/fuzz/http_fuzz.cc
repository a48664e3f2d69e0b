// Fuzz target: one HTTP request through what the coordinator does with it after Beast has parsed
// it: request-target parsing (parse_target: percent-decoding, query), the body pre-checks and the
// router with every handler of HttpApi (auth and roles, submit, cancel, tokens, job, event, log,
// metric and version endpoints), against a small cluster: two nodes, a running job and a published
// version. Must never crash, hang or throw (an exception here is a 500 in production); every
// answer has a status in 200..599, and a JSON answer is valid JSON.
//
// Input format (readable seeds; the replay driver's mutations keep the line structure):
//   METHOD\nTARGET\nAUTHORIZATION\nCONTENT-TYPE\nBODY...
// AUTHORIZATION "@admin", "@viewer", "@submitter", "@actor" or "@scrape" stands for that role's
// bearer token; anything else is sent as it is.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/config/cluster_spec.h"
#include "common/log.h"
#include "coordinator/auth.h"
#include "coordinator/http_api.h"
#include "coordinator/http_server.h"
#include "coordinator/job_manager.h"
#include "coordinator/json_depth.h"
#include "coordinator/metrics.h"
#include "coordinator/node_registry.h"
#include "coordinator/state_store.h"
#include "coordinator/version_table.h"
#include "tests/fakes/fake_clock.h"

namespace {

using namespace tandem;
using namespace tandem::coord;

class NullLink final : public AgentLink {
public:
    Status send(const std::string&, const wire::Envelope&) override { return Status(); }
};

constexpr const char* kJob =
    "name: diag\nkind: diagnostic\n"
    "trainer:\n  replicas: 1\n  resources: {cpus: 1, memory_mb: 512}\n"
    "rollout:\n  replicas: 1\n  resources: {cpus: 1, memory_mb: 512}\n";

// A coordinator's managers over a fresh state directory, with one job and one version.
struct World {
    World() {
        static int generation = 0;
        dir = std::filesystem::temp_directory_path() /
              fmt::format("tandem-http-fuzz-{}-{}", ::getpid(), generation++);
        std::filesystem::remove_all(dir);
        auto s = StateStore::open(dir.string());
        if (!s.ok()) std::abort();
        store = std::move(*s);
        config::CoordinatorSpec cs;
        registry = std::make_unique<NodeRegistry>(clock, *store, cs, "secret");
        jobs = std::make_unique<JobManager>(clock, *store, *registry, link, metrics);
        versions = std::make_unique<VersionTable>(clock, *store);
        for (const auto& [id, role] : {std::pair{"t0", "trainer"}, {"r0", "rollout"}}) {
            wire::Register m;
            m.node_id = id;
            m.role = role;
            m.host = "127.0.0.1";
            m.secret = "secret";
            m.instance = std::string(id) + "-1";
            m.agent_version = "fuzz";
            m.resources = {64, 1 << 20, 0};
            if (!registry->on_register(m, std::string("route-") + id).ok()) std::abort();
        }
        jobs->schedule();
        auto j = jobs->submit(kJob, "fuzz", false);
        if (!j.ok()) std::abort();
        const nlohmann::json descriptor = {
            {"fingerprint", "f"},
            {"shards", {{{"publisher", j->id.str() + "/trainer-0"}, {"rkey", "AAAA"}}}}};
        (void)versions->publish(j->id, 0, descriptor, "t0");
        for (Role r : {Role::kScrape, Role::kViewer, Role::kSubmitter, Role::kActor, Role::kAdmin})
            auth.add(std::string(role_name(r)) + "-token", r, std::string(role_name(r)));
        api = std::make_unique<HttpApi>(clock, *jobs, *registry, *versions, *store, metrics, auth,
                                        ApiSettings{"fuzz", store->epoch()});
    }
    ~World() {
        api.reset();
        versions.reset();
        jobs.reset();
        registry.reset();
        store.reset();
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }

    std::filesystem::path dir;
    testing::FakeClock clock;
    NullLink link;
    Metrics metrics;
    Auth auth;
    std::unique_ptr<StateStore> store;
    std::unique_ptr<NodeRegistry> registry;
    std::unique_ptr<JobManager> jobs;
    std::unique_ptr<VersionTable> versions;
    std::unique_ptr<HttpApi> api;
};

std::string_view next_line(std::string_view& in) {
    const size_t nl = in.find('\n');
    const std::string_view line = in.substr(0, nl);
    in.remove_prefix(nl == std::string_view::npos ? in.size() : nl + 1);
    return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // Submits and tokens accumulate: start over now and then so each input meets a small world.
    static World* world = nullptr;  // never destroyed at exit (the loggers go first)
    static int uses = 0;
    static const bool quiet = [] {
        LogOptions o;
        o.console_level = LogLevel::kOff;  // a refused request logs a warning: millions of them
        return init_logging(o).ok();
    }();
    (void)quiet;
    if (!world || ++uses % 2000 == 0) {
        delete world;
        world = new World();
    }
    std::string_view in(reinterpret_cast<const char*>(data), size);
    HttpRequest r;
    r.method = std::string(next_line(in));
    const std::string_view target = next_line(in);
    const std::string_view auth = next_line(in);
    r.content_type = std::string(next_line(in));
    r.body = std::string(in);
    r.remote = "127.0.0.1";
    if (auth.starts_with("@")) {
        r.authorization = fmt::format("Bearer {}-token", auth.substr(1));
    } else {
        r.authorization = std::string(auth);
    }
    (void)json_depth_within(r.body, 64);
    if (!parse_target(target, r)) return 0;  // answered 400 by the server

    const HttpResponse out = world->api->handle(r);
    if (out.status < 200 || out.status > 599) std::abort();
    if (out.content_type == "application/json" &&
        nlohmann::json::parse(out.body, nullptr, false).is_discarded()) {
        std::abort();
    }
    return 0;
}
