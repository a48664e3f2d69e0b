#pragma once

// Test support for ring tests that run every rank in its own process, bootstrapped over TCP on
// loopback: the parent opens the listener, forks the ranks before touching UCX or NCCL, and each
// rank reports through its exit status. Test-only code.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace tandem::kernels::testkit {

// Deadline of a rank's bootstrap, ring steps and barriers.
inline constexpr std::chrono::milliseconds kRankTimeout{30000};

// Prints "rank R: what" to stderr and returns 1: a rank's exit status for a failure.
inline int rank_failed(int rank, const std::string& what) {
    std::fprintf(stderr, "rank %d: %s\n", rank, what.c_str());
    return 1;
}

// Forks `ranks` processes; rank r runs rank_main(r, port, listen_fd) and exits with what it
// returns. listen_fd listens on 127.0.0.1:port (rank 0 accepts the bootstrap on it, the others
// close it). Expects every rank to exit with 0; `what` names the case in the failure message.
inline void run_rank_processes(int ranks, const std::function<int(int, int, int)>& rank_main,
                               const std::string& what) {
    const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(listener, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(::listen(listener, ranks), 0);
    socklen_t len = sizeof(addr);
    ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    const int port = ntohs(addr.sin_port);
    std::vector<pid_t> pids;
    for (int r = 0; r < ranks; ++r) {
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) ::_exit(rank_main(r, port, listener));
        pids.push_back(pid);
    }
    ::close(listener);
    for (int r = 0; r < ranks; ++r) {
        int status = 0;
        ASSERT_EQ(::waitpid(pids[r], &status, 0), pids[r]);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << what << " P=" << ranks << " rank " << r << " exited with status " << status;
    }
}

}  // namespace tandem::kernels::testkit
