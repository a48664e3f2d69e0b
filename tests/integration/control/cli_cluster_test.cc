// The CLI's edges against a real local cluster: a taken port, a coordinator that went away, the
// address and token from elsewhere, a dry run that cannot be placed, and what `job summary`
// prints for a job without GRPO figures.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {
namespace {

using namespace std::chrono_literals;

const std::string kDiagnostic =
    "name: diag\nkind: diagnostic\ntrainer: {replicas: 1}\nrollout: {replicas: 2}\n"
    "diagnostic: {duration_s: 0.5, report_every_s: 0.1}\n";

// A listening socket on a free loopback port, closed on destruction.
class HeldPort {
public:
    HeldPort() {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
        ::listen(fd_, 1);
        socklen_t len = sizeof(a);
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
    }
    ~HeldPort() { ::close(fd_); }
    HeldPort(const HeldPort&) = delete;
    HeldPort& operator=(const HeldPort&) = delete;
    int port() const { return port_; }

private:
    int fd_ = -1;
    int port_ = 0;
};

TEST(TandemCliCluster, UpNamesATakenPortAndLeavesNoPidFile) {
    LocalCluster c("taken_port", 1);
    const HeldPort held;
    // The cluster file's http_port, overridden to the held one.
    auto up = run_cmd(LocalCluster::tandem() + " up -f " + c.path("cluster.yaml") +
                      fmt::format(" coordinator.http_port={} --timeout-s 10", held.port()));
    EXPECT_EQ(up.code, 1) << up.out;
    EXPECT_NE(
        up.out.find(fmt::format("127.0.0.1:{} (coordinator.http_port) is not free", held.port())),
        std::string::npos)
        << up.out;
    EXPECT_NE(up.out.find("coordinator.http_port=PORT"), std::string::npos) << up.out;
    EXPECT_FALSE(std::filesystem::exists(c.run_dir() + "/pids/coordinator.pid"));
}

TEST(TandemCliCluster, AGoneCoordinatorIsNamedWithTandemUp) {
    LocalCluster c("gone", 1);
    ASSERT_EQ(c.up().code, 0);
    const pid_t pid = c.pid_of("coordinator");
    ASSERT_GT(pid, 0);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_TRUE(wait_until([&] { return ::kill(pid, 0) != 0; }, 10s));
    auto st = c.cli("status");
    EXPECT_EQ(st.code, 1) << st.out;
    EXPECT_NE(st.out.find("is not running any more"), std::string::npos) << st.out;
    EXPECT_NE(st.out.find("tandem up -f " + c.path("cluster.yaml")), std::string::npos) << st.out;
    EXPECT_EQ(c.up().code, 0);  // as suggested
    EXPECT_EQ(c.cli("status").code, 0);
}

TEST(TandemCliCluster, FromElsewhereAddressAndTokenAreEnough) {
    LocalCluster c("elsewhere", 1);
    ASSERT_EQ(c.up().code, 0);
    const std::string job = c.write_file("diag.yaml", kDiagnostic);
    const std::string tandem = LocalCluster::tandem();
    const std::string nowhere = " --run-dir " + c.path("no-run-dir");
    // No token: the coordinator refuses, and the CLI says what to pass.
    auto refused =
        run_cmd(tandem + " job submit -f " + job + " --address " + c.address() + nowhere);
    EXPECT_EQ(refused.code, 1) << refused.out;
    EXPECT_NE(refused.out.find("--token"), std::string::npos) << refused.out;
    EXPECT_NE(refused.out.find("TANDEM_TOKEN"), std::string::npos) << refused.out;
    // The token as an option, then as variables.
    auto sub = run_cmd(tandem + " job submit -f " + job + " --follow --address " + c.address() +
                       " --token " + c.token() + nowhere);
    EXPECT_EQ(sub.code, 0) << sub.out;
    auto list = run_cmd("TANDEM_ADDRESS=" + c.address() + " TANDEM_TOKEN=" + c.token() + " " +
                        tandem + " job list" + nowhere);
    EXPECT_EQ(list.code, 0) << list.out;
    EXPECT_NE(list.out.find("SUCCEEDED"), std::string::npos) << list.out;
    auto wrong = run_cmd("TANDEM_ADDRESS=" + c.address() + " TANDEM_TOKEN=wrong " + tandem +
                         " job list" + nowhere);
    EXPECT_EQ(wrong.code, 1) << wrong.out;
    EXPECT_NE(wrong.out.find("the API token from TANDEM_TOKEN"), std::string::npos) << wrong.out;
}

TEST(TandemCliCluster, DryRunShowsRolesAndFailsWhenItCannotBePlaced) {
    LocalCluster c("dry", 2);
    ASSERT_EQ(c.up().code, 0);
    const std::string job = c.write_file("diag.yaml", kDiagnostic);
    auto ok = c.cli("job submit -f " + job + " --dry-run");
    EXPECT_EQ(ok.code, 0) << ok.out;
    EXPECT_NE(ok.out.find("trainer-0        -> trainer-0"), std::string::npos) << ok.out;
    EXPECT_EQ(ok.out.find("job-000000/"), std::string::npos) << ok.out;
    auto no = c.cli("job submit -f " + job + " rollout.resources.gpus=1 --dry-run");
    EXPECT_EQ(no.code, 1) << no.out;
    EXPECT_NE(no.out.find("cannot be placed now"), std::string::npos) << no.out;
    auto json = c.cli("job submit -f " + job + " rollout.resources.gpus=1 --dry-run --output json");
    EXPECT_EQ(json.code, 1) << json.out;
    EXPECT_EQ(c.cli("job list --output json").out.find("diag"), std::string::npos);  // none stored
}

TEST(TandemCliCluster, SummaryOfADiagnosticJobPrintsNoPlaceholders) {
    LocalCluster c("summary", 2);
    ASSERT_EQ(c.up().code, 0);
    const std::string job = c.write_file("diag.yaml", kDiagnostic);
    ASSERT_EQ(c.cli("job submit -f " + job + " --follow").code, 0);
    auto text = c.cli("job summary diag");
    EXPECT_EQ(text.code, 0) << text.out;
    EXPECT_NE(text.out.find("job-000001 SUCCEEDED:"), std::string::npos) << text.out;
    EXPECT_EQ(text.out.find("-1"), std::string::npos) << text.out;
    EXPECT_EQ(text.out.find("reward"), std::string::npos) << text.out;
    auto json = nlohmann::json::parse(c.cli("job summary diag --output json").out, nullptr, false);
    ASSERT_TRUE(json.is_object());
    EXPECT_FALSE(json.contains("reward_first")) << json.dump();
    EXPECT_FALSE(json.contains("step_mean_s")) << json.dump();
    EXPECT_GT(json["steps"].get<int>(), 0) << json.dump();
    // events --follow of a finished job prints its events and exits with its result.
    auto ev = c.cli("job events diag --follow");
    EXPECT_EQ(ev.code, 0) << ev.out;
    EXPECT_NE(ev.out.find("finished"), std::string::npos) << ev.out;
}

}  // namespace
}  // namespace tandem::testing
