// `tandem up --slurm` and deploy/slurm/tandem.sbatch against a real single-node Slurm (Debian
// slurm-wlm): the test starts its own munged, slurmctld and slurmd on private ports and a private
// state directory, and stops them at the end. Skips with the reason when Slurm is not installed
// or does not come up (not root, no munge...). The hetjob case runs a second slurmd on this
// machine as a second node (`localhost`): Slurm's backfill scheduler, the only one that starts
// hetjobs, reserves whole nodes for a component, so two components never start on one node.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>

#include <gtest/gtest.h>

#include "common/config/loader.h"
#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// munged + slurmctld + slurmd for this machine alone, torn down by the destructor. With
// `two_nodes`, a second slurmd on this machine serves a second node named localhost (each node
// then has 1 CPU).
class SingleNodeSlurm {
public:
    explicit SingleNodeSlurm(bool two_nodes = false) {
        dir_ = (fs::temp_directory_path() / fmt::format("tandem-slurm-{}", ::getpid())).string();
        fs::remove_all(dir_);
        fs::create_directories(dir_ + "/state");
        fs::create_directories(dir_ + "/spool");
        if (::geteuid() != 0) {
            fail("needs root to run slurmctld and slurmd");
            return;
        }
        for (const char* exe : {"/usr/sbin/munged", "/usr/sbin/mungekey", "/usr/sbin/slurmctld",
                                "/usr/sbin/slurmd", "/usr/bin/sbatch"}) {
            if (!fs::exists(exe)) {
                fail(std::string(exe) + " is missing (slurm-wlm, munge)");
                return;
            }
        }
        auto key =
            run_cmd(fmt::format("mungekey -c -k {0}/munge.key && chmod 600 {0}/munge.key", dir_));
        if (key.code != 0) {
            fail("mungekey: " + key.out);
            return;
        }
        munged_ = spawn({"/usr/sbin/munged", "-F", "--force", "-S", dir_ + "/munge.sock",
                         "--key-file", dir_ + "/munge.key", "--pid-file", dir_ + "/munged.pid",
                         "--log-file", dir_ + "/munged.log", "--seed-file", dir_ + "/munge.seed"},
                        "munged.out");
        if (!wait_until([&] { return fs::exists(dir_ + "/munge.sock"); }, 10s)) {
            fail("munged did not start: " + read(dir_ + "/munged.out"));
            return;
        }
        char host[256] = {};
        ::gethostname(host, sizeof(host) - 1);
        host_ = host;
        const int ctld_port = free_port(), d_port = free_port();
        // Two nodes: one slurmd each (`slurmd -N`), told apart by their ports; the spool, pid
        // and log paths carry the node name (%n).
        const std::string nodes = two_nodes
                                      ? fmt::format(
                                            "NodeName={} Port={} CPUs=1 State=UNKNOWN\n"
                                            "NodeName=localhost Port={} CPUs=1 State=UNKNOWN\n",
                                            host, d_port, free_port())
                                      : fmt::format("NodeName={} CPUs={} State=UNKNOWN\n", host,
                                                    ::sysconf(_SC_NPROCESSORS_ONLN));
        std::ofstream(conf()) << fmt::format(
            "ClusterName=tandemtest\nSlurmctldHost={host}\nAuthType=auth/munge\n"
            "CredType=cred/munge\nAuthInfo=socket={d}/munge.sock\nSlurmUser=root\n"
            "SlurmdUser=root\nSlurmctldPort={cp}\nSlurmdPort={dp}\nStateSaveLocation={d}/state\n"
            "SlurmdSpoolDir={d}/spool/%n\nSlurmctldPidFile={d}/slurmctld.pid\n"
            "SlurmdPidFile={d}/slurmd-%n.pid\nSlurmctldLogFile={d}/slurmctld.log\n"
            "SlurmdLogFile={d}/slurmd-%n.log\nProctrackType=proctrack/linuxproc\n"
            "TaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n"
            "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nReturnToService=2\n"
            // Hetjobs start only from the backfill scheduler: run it every second.
            "SchedulerParameters=bf_interval=1\n"
            "MpiDefault=none\n{nodes}"
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP "
            "OverSubscribe=YES\n",
            fmt::arg("host", host), fmt::arg("d", dir_), fmt::arg("cp", ctld_port),
            fmt::arg("dp", d_port), fmt::arg("nodes", nodes));
        ctld_ = spawn({"/usr/sbin/slurmctld", "-D", "-i", "-f", conf()}, "slurmctld.out");
        slurmd_ = spawn({"/usr/sbin/slurmd", "-D", "-N", host, "-f", conf()}, "slurmd.out");
        if (two_nodes) {
            slurmd2_ =
                spawn({"/usr/sbin/slurmd", "-D", "-N", "localhost", "-f", conf()}, "slurmd2.out");
        }
        const std::string idle = fmt::format("{} idle\n", two_nodes ? 2 : 1);
        if (!wait_until([&] { return run_cmd(env() + " sinfo -h -o '%D %T'").out == idle; }, 30s)) {
            {
                fail("the Slurm nodes did not become idle: " + run_cmd(env() + " sinfo").out +
                     read(dir_ + "/slurmctld.log") + read(dir_ + "/slurmd.out") +
                     read(dir_ + "/slurmd2.out"));
                return;
            }
        }
        ok_ = true;
    }
    ~SingleNodeSlurm() {
        run_cmd(env() + " scancel --full --user=root 2>/dev/null");
        for (pid_t p : {slurmd2_, slurmd_, ctld_, munged_}) {
            if (p <= 0) continue;
            ::kill(p, SIGTERM);
            if (!wait_until([&] { return ::waitpid(p, nullptr, WNOHANG) == p; }, 10s)) {
                ::kill(p, SIGKILL);
                ::waitpid(p, nullptr, 0);
            }
        }
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    SingleNodeSlurm(const SingleNodeSlurm&) = delete;
    SingleNodeSlurm& operator=(const SingleNodeSlurm&) = delete;

    bool ok() const { return ok_; }
    const std::string& why() const { return why_; }
    const std::string& dir() const { return dir_; }
    const std::string& host() const { return host_; }  // the first node's name
    std::string conf() const { return dir_ + "/slurm.conf"; }
    std::string env() const { return "SLURM_CONF=" + conf(); }

private:
    void fail(std::string why) { why_ = std::move(why); }
    static std::string read(const std::string& path) {
        std::ifstream in(path);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }
    pid_t spawn(const std::vector<std::string>& argv, const std::string& out) const {
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::setsid();
            const std::string path = dir_ + "/" + out;
            FILE* f = std::fopen(path.c_str(), "w");
            ::dup2(fileno(f), 1);
            ::dup2(fileno(f), 2);
            ::setenv("SLURM_CONF", conf().c_str(), 1);
            std::vector<char*> a;
            for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
            a.push_back(nullptr);
            ::execv(a[0], a.data());
            ::_exit(127);
        }
        return pid;
    }

    std::string dir_, why_, host_;
    bool ok_ = false;
    pid_t munged_ = -1, ctld_ = -1, slurmd_ = -1, slurmd2_ = -1;
};

// A cluster file for `up --slurm`: by default the allocation's one node runs a trainer and a
// rollout agent.
std::string write_cluster(const std::string& dir, const std::string& rollout_extra,
                          const std::string& slurm = "{trainer_nodes: 1, colocate: true}") {
    const std::string path = dir + "/cluster.yaml";
    std::ofstream(path) << fmt::format(
        "name: slurm\ncoordinator: {{agent_port: {}, http_bind: 127.0.0.1, http_port: {}, "
        "heartbeat_ms: 200, dead_after_ms: 1000}}\n"
        "slurm: {}\n"
        "nodes:\n  - {{id: t, role: trainer, resources: {{cpus: 1}}}}\n"
        "  - {{id: r, role: rollout, resources: {{cpus: 1}}{}}}\n",
        free_port(), free_port(), slurm, rollout_extra);
    return path;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

void write_diagnostic_job(const std::string& path) {
    std::ofstream(path)
        << "name: d\nkind: diagnostic\ntrainer: {replicas: 1}\nrollout: {replicas: 1}\n"
           "diagnostic: {duration_s: 1, report_every_s: 0.2}\n";
}

TEST(Slurm, SbatchBringsTheClusterUpRunsTheJobAndTearsItDown) {
    SingleNodeSlurm slurm;
    if (!slurm.ok()) GTEST_SKIP() << slurm.why();
    const std::string cluster = write_cluster(slurm.dir(), "");
    write_diagnostic_job(slurm.dir() + "/job.yaml");
    const std::string out = slurm.dir() + "/job.out";
    auto r = run_cmd(
        fmt::format("cd {d} && {env} TANDEM_BIN={bin} sbatch --wait -N1 -o {out} "
                    "{src}/deploy/slurm/tandem.sbatch "
                    "{cluster} {d}/job.yaml",
                    fmt::arg("d", slurm.dir()), fmt::arg("env", slurm.env()),
                    fmt::arg("bin", std::string(TANDEM_BINARY_DIR) + "/bin"), fmt::arg("out", out),
                    fmt::arg("src", TANDEM_SOURCE_DIR), fmt::arg("cluster", cluster)));
    const std::string text = read_text(out);
    EXPECT_EQ(r.code, 0) << r.out << text;
    EXPECT_NE(text.find("cluster slurm is up: 2 nodes registered"), std::string::npos) << text;
    EXPECT_NE(text.find("started tandem-rollout-node rollout-0"), std::string::npos) << text;
    EXPECT_NE(text.find("process(es) stopped"), std::string::npos) << text;
}

// `sbatch A : B` with `slurm: {hetjob: true}`: the trainer agent is started in het group 0 on its
// node and the rollout agent in group 1 on the other (an srun naming a node outside its het group
// fails the step, so the job getting through shows the groups are right).
TEST(Slurm, HetjobRunsTheTrainerInGroupZeroAndTheRolloutInGroupOne) {
    SingleNodeSlurm slurm(/*two_nodes=*/true);
    if (!slurm.ok()) GTEST_SKIP() << slurm.why();
    const std::string cluster =
        write_cluster(slurm.dir(), "", "{hetjob: true, trainer_nodes: 1, rollout_nodes: 1}");
    write_diagnostic_job(slurm.dir() + "/job.yaml");
    const std::string out = slurm.dir() + "/job.out", run = slurm.dir() + "/run";
    auto r = run_cmd(fmt::format(
        "cd {d} && {env} TANDEM_BIN={bin} TANDEM_RUN_DIR={run} timeout 120 sbatch --wait -o {out} "
        "-N1 -w {host} : -N1 -w localhost {src}/deploy/slurm/tandem.sbatch {cluster} {d}/job.yaml",
        fmt::arg("d", slurm.dir()), fmt::arg("env", slurm.env()),
        fmt::arg("bin", std::string(TANDEM_BINARY_DIR) + "/bin"), fmt::arg("run", run),
        fmt::arg("out", out), fmt::arg("host", slurm.host()), fmt::arg("src", TANDEM_SOURCE_DIR),
        fmt::arg("cluster", cluster)));
    const std::string text = read_text(out);
    EXPECT_EQ(r.code, 0) << r.out << text;
    EXPECT_NE(text.find("cluster slurm is up: 2 nodes registered"), std::string::npos) << text;
    EXPECT_NE(text.find("started tandem-trainer-node trainer-0"), std::string::npos) << text;
    EXPECT_NE(text.find("started tandem-rollout-node rollout-0"), std::string::npos) << text;
    EXPECT_NE(text.find("process(es) stopped"), std::string::npos) << text;
    // The generated cluster: the trainer on group 0's node, the rollout on group 1's.
    auto spec = config::load_cluster_file(run + "/cluster-slurm.yaml");
    ASSERT_TRUE(spec.ok()) << spec.status().to_string();
    std::map<std::string, std::string> host_of;
    for (const auto& n : spec->nodes) host_of[n.id] = n.host;
    EXPECT_EQ(host_of, (std::map<std::string, std::string>{{"trainer-0", slurm.host()},
                                                           {"rollout-0", "localhost"}}));
}

TEST(Slurm, ANodeThatCannotStartFailsTheLaunchWithItsName) {
    SingleNodeSlurm slurm;
    if (!slurm.ok()) GTEST_SKIP() << slurm.why();
    // The rollout template names an interface no host has: its agent exits at start.
    const std::string cluster = write_cluster(slurm.dir(), ", interfaces: {weights: nosuch0}");
    const std::string run = slurm.dir() + "/run";
    auto r = run_cmd(fmt::format(
        "(cd {d} && {env} salloc -N1 {bin}/tandem up --slurm -f {cluster} --run-dir {run} "
        "--timeout-s 60; {bin}/tandem down --run-dir {run})",
        fmt::arg("d", slurm.dir()), fmt::arg("env", slurm.env()),
        fmt::arg("bin", std::string(TANDEM_BINARY_DIR) + "/bin"), fmt::arg("cluster", cluster),
        fmt::arg("run", run)));
    EXPECT_NE(r.out.find("node rollout-0: its process exited before registering"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("interfaces.weights is nosuch0"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("stopped what this run had started"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace tandem::testing
