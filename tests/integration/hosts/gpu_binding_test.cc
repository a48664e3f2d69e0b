// GPU binding with declared (fake) GPUs on a machine that may have none: a rollout node declares
// two devices (indices 5 and 7); a job's two rollout actors of one GPU each get one device each,
// never the same, as CUDA_VISIBLE_DEVICES in their actor context. Loopback only; no root needed.
#include <gtest/gtest.h>

#include <set>

#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

TEST(GpuBinding, ActorsGetDistinctDeclaredDevices) {
    const auto dir =
        std::filesystem::temp_directory_path() / fmt::format("tandem_it_gpus_{}", ::getpid());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const std::string run = (dir / "run").string();
    const std::string tandem = std::string(TANDEM_BINARY_DIR) + "/bin/tandem";
    struct Down {
        std::string cmd;
        std::filesystem::path dir;
        ~Down() {
            run_cmd(cmd);
            std::filesystem::remove_all(dir);
        }
    } down{tandem + " down --run-dir " + run, dir};
    const int http_port = free_port();
    std::ofstream(dir / "cluster.yaml") << fmt::format(
        "name: gpus\nrun_dir: {}\ncoordinator: {{agent_port: {}, http_port: {}, heartbeat_ms: 200, "
        "dead_after_ms: 1000}}\nnodes:\n"
        "  - {{id: trainer-0, role: trainer, resources: {{cpus: 2}}}}\n"
        "  - {{id: rollout-0, role: rollout, resources: {{cpus: 4, gpus: 2}}, gpu_devices: [5, "
        "7]}}\n",
        run, free_port(), http_port);
    auto up = run_cmd(fmt::format("{} up -f {}/cluster.yaml --timeout-s 20", tandem, dir.string()));
    ASSERT_EQ(up.code, 0) << up.out;
    std::ofstream(dir / "job.yaml") << "name: gpus\nkind: diagnostic\ntrainer: {replicas: 1}\n"
                                       "rollout: {replicas: 2, resources: {gpus: 1}}\n"
                                       "diagnostic: {duration_s: 1, report_every_s: 0.2}\n";
    auto sub = run_cmd(fmt::format("{} job submit -f {}/job.yaml --run-dir {} --follow", tandem,
                                   dir.string(), run));
    ASSERT_EQ(sub.code, 0) << sub.out;

    // What each rollout actor was started with.
    std::set<std::string> devices;
    for (const auto& e : std::filesystem::directory_iterator(run + "/actors/job-000001")) {
        const std::string name = e.path().filename().string();
        if (name.rfind("rollout-", 0) != 0) continue;
        std::ifstream in(e.path());
        const Json ctx = Json::parse(in, nullptr, false);
        ASSERT_TRUE(ctx.is_object()) << name;
        const std::string actor = "job-000001/" + name.substr(0, name.find('.'));
        const Json me = ctx["placement"]["actors"][actor];
        ASSERT_TRUE(me.contains("cuda_visible_devices")) << ctx.dump(2);
        devices.insert(me["cuda_visible_devices"].get<std::string>());
    }
    EXPECT_EQ(devices, (std::set<std::string>{"5", "7"}));
    // A third GPU actor does not fit: the job waits and says why.
    auto dry =
        run_cmd(fmt::format("{} job submit -f {}/job.yaml rollout.replicas=3 --dry-run "
                            "--run-dir {}",
                            tandem, dir.string(), run));
    EXPECT_NE(dry.code, 0) << dry.out;
    EXPECT_NE(dry.out.find("gpu"), std::string::npos) << dry.out;
}

}  // namespace
}  // namespace tandem::testing
