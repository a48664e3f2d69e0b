// tandem-bench-grpo-cluster: runs the SAME GRPO job on a real local cluster (coordinator, trainer
// node and rollout nodes as separate processes, started by `tandem up` from
// configs/clusters/local.yaml on free loopback ports) once per staleness bound, reads each job's
// per-step metrics from <run_dir>/jobs/<job>/metrics.jsonl, and prints one JSON line per mode and
// a comparison line:
//   {"case":"grpo_cluster","mode":"sync","max_staleness":0,"steps":..,"train_tokens_per_s":..,
//    "rollout_tokens_per_s":..,"time_to_0.9_s":..,"last5_reward":..,"weight_sync_wait_mean_s":..,
//    "weight_sync_share":..,"weight_sync_stall_share":..,...}
// weight_sync_share: the rollouts' wait for the transfer of the version they need, per step time
// (timing_s/weight_sync_wait). weight_sync_stall_share: the part of it the trainer's step could
// have waited for (timing_s/weight_sync_stall, at most the step's trajectory wait); in async mode
// a rollout ahead of the trainer fetches while the trainer trains, so the two differ.
//   {"case":"grpo_cluster_compare","throughput_ratio":..,"target_throughput_ratio":1.3,...}
//
// Usage: tandem-bench-grpo-cluster [-f configs/jobs/grpo-reverse.yaml]
//            [--cluster configs/clusters/local.yaml] [--staleness 0,2] [--target-reward 0.9]
//            [--tandem PATH] [--keep] [KEY.PATH=VALUE ...]
// Overrides go to every job (as for `tandem job submit`), e.g. algorithm.steps=200. Throughput is
// end to end: tokens per second of the trainer loop's wall time (steps timed by the trainer, from
// waiting for a batch to the published version), so the warm start and process start-up are
// outside it. Run it from the repository root; the cluster's run directory is a fresh temporary
// one (--keep leaves it).
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/net/http_client.h"

namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

struct CmdResult {
    int code = -1;
    std::string out;
};

CmdResult run_cmd(const std::string& cmd) {
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    CmdResult r;
    if (!p) return r;
    std::array<char, 4096> buf;
    while (size_t n = fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
    const int status = pclose(p);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

std::string quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

// The `tandem` CLI next to this benchmark in the build tree (<build>/bench/grpo -> <build>/bin).
std::string default_tandem() {
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        const fs::path p = self.parent_path().parent_path().parent_path() / "bin" / "tandem";
        if (fs::exists(p)) return p.string();
    }
    return std::string(TANDEM_BINARY_DIR) + "/bin/tandem";
}

struct Mode {
    int staleness = 0;
    Json line;
    bool ok = false;
};

double num(const Json& v, const char* key) {
    return v.contains(key) && v[key].is_number() ? v[key].get<double>() : 0.0;
}

// Figures of one finished job from its metrics rows ({"step":..,"metrics":{...}} per line).
Json figures(const std::vector<Json>& rows, double target) {
    double rl_s = 0, train_s = 0, gen_tokens = 0, train_tokens = 0, sync_wait = 0, sync_share = 0;
    double traj_wait = 0, publish = 0, staleness = 0, fetch = 0, rollout_s = 0, trainer_wait = 0;
    double stall = 0, stall_share = 0;
    double t_target = -1;
    int64_t step_target = -1;
    std::vector<double> rewards;
    for (const Json& row : rows) {
        const Json& m = row["metrics"];
        const double step_s = num(m, "timing_s/step"), tr = num(m, "timing_s/train");
        rl_s += step_s;
        train_s += tr;
        gen_tokens += m.contains("rollout/generated_tokens")
                          ? num(m, "rollout/generated_tokens")
                          : num(m, "throughput/rollout_tokens_per_s") * step_s;
        train_tokens += m.contains("train/tokens") ? num(m, "train/tokens")
                                                   : num(m, "throughput/train_tokens_per_s") * tr;
        sync_wait += num(m, "timing_s/weight_sync_wait");
        sync_share += step_s > 0 ? num(m, "timing_s/weight_sync_wait") / step_s : 0.0;
        traj_wait += num(m, "timing_s/trajectory_wait");
        stall += num(m, "timing_s/weight_sync_stall");
        stall_share += step_s > 0 ? num(m, "timing_s/weight_sync_stall") / step_s : 0.0;
        publish += num(m, "timing_s/publish");
        fetch += num(m, "timing_s/weight_fetch");
        rollout_s += num(m, "timing_s/rollout");
        trainer_wait += num(m, "timing_s/rollout_wait_for_trainer");
        staleness += num(m, "weights/staleness_mean");
        rewards.push_back(num(m, "rollout/reward_mean"));
        if (t_target < 0 && rewards.size() >= 5) {
            double last5 = 0;
            for (size_t i = rewards.size() - 5; i < rewards.size(); ++i) last5 += rewards[i] / 5;
            if (last5 >= target) {
                t_target = rl_s;
                step_target = row.value("step", int64_t{-1});
            }
        }
    }
    const double n = static_cast<double>(std::max<size_t>(rows.size(), 1));
    double last5 = 0;
    const size_t k = std::min<size_t>(rewards.size(), 5);
    for (size_t i = rewards.size() - k; i < rewards.size(); ++i) last5 += rewards[i] / k;
    const std::string at = fmt::format("{}", target);
    return Json{{"steps", rows.size()},
                {"rl_s", rl_s},
                {"steps_per_s", rl_s > 0 ? rows.size() / rl_s : 0.0},
                {"train_tokens_per_s", rl_s > 0 ? train_tokens / rl_s : 0.0},
                {"rollout_tokens_per_s", rl_s > 0 ? gen_tokens / rl_s : 0.0},
                {"train_compute_tokens_per_s", train_s > 0 ? train_tokens / train_s : 0.0},
                {"first_reward", rewards.empty() ? 0.0 : rewards.front()},
                {"last5_reward", last5},
                {"time_to_" + at + "_s", t_target},
                {"step_to_" + at, step_target},
                {"step_mean_s", rl_s / n},
                {"train_mean_s", train_s / n},
                {"trajectory_wait_mean_s", traj_wait / n},
                {"publish_mean_s", publish / n},
                {"rollout_batch_mean_s", rollout_s / n},
                {"rollout_wait_for_trainer_mean_s", trainer_wait / n},
                {"weight_fetch_mean_s", fetch / n},
                {"weight_sync_wait_mean_s", sync_wait / n},
                {"weight_sync_share", sync_share / n},
                {"weight_sync_stall_mean_s", stall / n},
                {"weight_sync_stall_share", stall_share / n},
                {"staleness_mean", staleness / n}};
}

int run(int argc, char** argv) {
    std::string job_file = "configs/jobs/grpo-reverse.yaml";
    std::string cluster_file = "configs/clusters/local.yaml";
    std::string tandem = default_tandem();
    std::vector<int> modes_s;
    double target = 0.9;
    bool keep = false;
    std::string overrides;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
            return argv[++i];
        };
        if (a == "-f" || a == "--job") {
            job_file = value();
        } else if (a == "--cluster") {
            cluster_file = value();
        } else if (a == "--tandem") {
            tandem = value();
        } else if (a == "--target-reward") {
            target = std::stod(value());
        } else if (a == "--keep") {
            keep = true;
        } else if (a == "--staleness") {
            std::stringstream ss(value());
            for (std::string x; std::getline(ss, x, ',');) modes_s.push_back(std::stoi(x));
        } else if (a.find('=') != std::string::npos && a[0] != '-') {
            overrides += " " + quote(a);
        } else {
            std::fprintf(stderr,
                         "usage: tandem-bench-grpo-cluster [-f JOB.yaml] [--cluster CLUSTER.yaml] "
                         "[--staleness 0,2] [--target-reward 0.9] [--tandem PATH] [--keep] "
                         "[KEY.PATH=VALUE ...]\n");
            return 2;
        }
    }
    if (modes_s.empty()) modes_s = {0, 2};
    for (const auto& f : {job_file, cluster_file, tandem}) {
        if (!fs::exists(f)) {
            std::fprintf(stderr,
                         "tandem-bench-grpo-cluster: %s does not exist (run from the "
                         "repository root or pass the path)\n",
                         f.c_str());
            return 2;
        }
    }
    const fs::path dir = fs::temp_directory_path() / fmt::format("tandem_bench_grpo_{}", getpid());
    fs::remove_all(dir);
    fs::create_directories(dir);
    const std::string run_dir = (dir / "run").string();
    const int http_port = free_port(), agent_port = free_port();
    const std::string address = fmt::format("http://127.0.0.1:{}", http_port);
    const std::string cli = quote(tandem);
    auto cleanup = [&]() {
        run_cmd(cli + " down --run-dir " + quote(run_dir));
        if (!keep) fs::remove_all(dir);
    };
    auto up =
        run_cmd(fmt::format("{} up -f {} --run-dir {} --timeout-s 30 coordinator.agent_port={} "
                            "coordinator.http_port={}",
                            cli, quote(cluster_file), quote(run_dir), agent_port, http_port));
    if (up.code != 0) {
        std::fprintf(stderr, "tandem up -f %s failed:\n%s", cluster_file.c_str(), up.out.c_str());
        cleanup();
        return 1;
    }
    std::vector<Mode> modes;
    int rc = 0;
    for (const int s : modes_s) {
        Mode m;
        m.staleness = s;
        auto sub =
            run_cmd(fmt::format("{} job submit -f {}{} async.max_staleness={} --run-dir {} "
                                "--output json",
                                cli, quote(job_file), overrides, s, quote(run_dir)));
        const Json sj = Json::parse(sub.out, nullptr, false);
        if (sub.code != 0 || !sj.is_object() || !sj.contains("job")) {
            std::fprintf(stderr, "tandem job submit -f %s (async.max_staleness=%d) failed:\n%s",
                         job_file.c_str(), s, sub.out.c_str());
            rc = 1;
            break;
        }
        const std::string id = sj["job"].get<std::string>();
        // Wait for the job to end (an hour at most).
        Json job;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::hours(1);
        while (true) {
            std::ifstream token_file(run_dir + "/api-token");
            std::string token;
            token_file >> token;
            auto r = tandem::net::http_call(address, "GET", "/api/v1/jobs/" + id, "", token);
            if (r.ok() && r->status == 200) {
                job = Json::parse(r->body, nullptr, false);
                const std::string st = job.is_object() ? job.value("state", "") : "";
                if (st == "SUCCEEDED" || st == "FAILED" || st == "CANCELLED") break;
            }
            if (std::chrono::steady_clock::now() > deadline) {
                std::fprintf(stderr, "job %s did not finish within an hour\n", id.c_str());
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        const std::string state = job.is_object() ? job.value("state", "") : "";
        std::vector<Json> rows;
        const std::string metrics = fmt::format("{}/jobs/{}/metrics.jsonl", run_dir, id);
        std::ifstream in(metrics);
        for (std::string l; std::getline(in, l);) {
            Json r = Json::parse(l, nullptr, false);
            if (r.is_object() && r.contains("metrics")) rows.push_back(std::move(r));
        }
        if (state != "SUCCEEDED" || rows.empty()) {
            std::fprintf(stderr,
                         "job %s (async.max_staleness=%d) ended %s with %zu metric rows "
                         "in %s\n",
                         id.c_str(), s, state.c_str(), rows.size(), metrics.c_str());
            rc = 1;
            break;
        }
        m.line = {
            {"case", "grpo_cluster"},
            {"mode", s == 0 ? "sync" : fmt::format("async_s{}", s)},
            {"max_staleness", s},
            {"job", id},
            {"job_wall_s",
             (job.value("finished_ns", int64_t{0}) - job.value("started_ns", int64_t{0})) / 1e9}};
        m.line.update(figures(rows, target));
        m.ok = true;
        std::printf("%s\n", m.line.dump().c_str());
        std::fflush(stdout);
        modes.push_back(std::move(m));
    }
    if (rc == 0 && modes.size() >= 2 && modes[0].staleness == 0) {
        const Json& a = modes[0].line;
        for (size_t i = 1; i < modes.size(); ++i) {
            const Json& b = modes[i].line;
            const std::string t = fmt::format("time_to_{}_s", target);
            const double ta = a[t], tb = b[t];
            const double ratio = b["train_tokens_per_s"].get<double>() /
                                 std::max(1e-9, a["train_tokens_per_s"].get<double>());
            Json c = {
                {"case", "grpo_cluster_compare"},
                {"sync", a["mode"]},
                {"async", b["mode"]},
                {"throughput_ratio", ratio},
                {"rollout_throughput_ratio",
                 b["rollout_tokens_per_s"].get<double>() /
                     std::max(1e-9, a["rollout_tokens_per_s"].get<double>())},
                {"steps_per_s_ratio",
                 b["steps_per_s"].get<double>() / std::max(1e-9, a["steps_per_s"].get<double>())},
                {"time_to_target_ratio", ta > 0 && tb > 0 ? tb / ta : -1.0},
                {"last5_reward_sync", a["last5_reward"]},
                {"last5_reward_async", b["last5_reward"]},
                {"weight_sync_share_sync", a["weight_sync_share"]},
                {"weight_sync_share_async", b["weight_sync_share"]},
                {"weight_sync_stall_share_sync", a["weight_sync_stall_share"]},
                {"weight_sync_stall_share_async", b["weight_sync_stall_share"]},
                {"target_throughput_ratio", 1.3},
                {"target_weight_sync_share", 0.05},
                {"throughput_target_met", ratio >= 1.3},
                // The step's time lost to weight sync (the stall) against the target; the
                // rollouts' own wait is reported beside it (weight_sync_share_*).
                {"weight_sync_target_met", a["weight_sync_stall_share"].get<double>() < 0.05 &&
                                               b["weight_sync_stall_share"].get<double>() < 0.05}};
            std::printf("%s\n", c.dump().c_str());
        }
    }
    cleanup();
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-bench-grpo-cluster: %s\n", e.what());
        return 2;
    }
}
