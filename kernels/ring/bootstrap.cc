// Ring bootstrap: in-process (shared memory) and TCP (rank 0 serves) all-gathers.
#include "kernels/ring/bootstrap.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>

namespace tandem::kernels {
namespace {

using Clock = std::chrono::steady_clock;

// ---- in-process ----

// Shared by the ranks of one in-process group; all fields guarded by mu.
struct Rendezvous {
    explicit Rendezvous(int n) : size(n), slots(static_cast<size_t>(n)) {}
    std::mutex mu;
    std::condition_variable cv;
    const int size;
    int arrived = 0;
    uint64_t generation = 0;
    std::vector<std::string> slots;
    std::vector<std::string> result;
};

// One rank of an in-process group; one thread per rank, the shared Rendezvous is locked.
class InProcessBootstrap final : public RingBootstrap {
public:
    InProcessBootstrap(std::shared_ptr<Rendezvous> rv, int rank)
        : rv_(std::move(rv)), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return rv_->size; }

    Result<std::vector<std::string>> allgather(std::string_view mine,
                                               std::chrono::milliseconds timeout) override {
        std::unique_lock<std::mutex> lock(rv_->mu);
        rv_->slots[rank_] = std::string(mine);
        const uint64_t gen = rv_->generation;
        if (++rv_->arrived == rv_->size) {
            rv_->result = rv_->slots;
            rv_->arrived = 0;
            ++rv_->generation;
            rv_->cv.notify_all();
            return rv_->result;
        }
        if (!rv_->cv.wait_for(lock, timeout, [&] { return rv_->generation != gen; })) {
            return deadline_exceeded("in-process bootstrap: rank " + std::to_string(rank_) +
                                     " waited " + std::to_string(timeout.count()) +
                                     " ms for the other ranks");
        }
        return rv_->result;
    }

private:
    std::shared_ptr<Rendezvous> rv_;
    const int rank_;
};

// ---- TCP ----

// Owns a socket file descriptor (closed on destruction); movable, not copyable, not shared.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = o.release();
        }
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    int release() {
        const int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

int ms_left(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(left);
}

Status sys_error(const std::string& what) {
    return unavailable("tcp bootstrap: " + what + ": " + std::strerror(errno));
}

// Waits until fd is readable (POLLIN) or writable (POLLOUT) before the deadline.
Status wait_fd(int fd, short events, Clock::time_point deadline, const char* what) {
    for (;;) {
        pollfd pfd{fd, events, 0};
        const int n = ::poll(&pfd, 1, ms_left(deadline));
        if (n > 0) return Status();
        if (n == 0) return deadline_exceeded(std::string("tcp bootstrap: timed out ") + what);
        if (errno != EINTR) return sys_error(what);
    }
}

Status write_all(int fd, const void* data, size_t n, Clock::time_point deadline) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
        TANDEM_RETURN_IF_ERROR(wait_fd(fd, POLLOUT, deadline, "writing to a peer"));
        const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return sys_error("send");
        }
        p += w;
        n -= static_cast<size_t>(w);
    }
    return Status();
}

Status read_all(int fd, void* data, size_t n, Clock::time_point deadline) {
    char* p = static_cast<char*>(data);
    while (n > 0) {
        TANDEM_RETURN_IF_ERROR(wait_fd(fd, POLLIN, deadline, "reading from a peer"));
        const ssize_t r = ::recv(fd, p, n, 0);
        if (r == 0) return unavailable("tcp bootstrap: peer closed the connection");
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return sys_error("recv");
        }
        p += r;
        n -= static_cast<size_t>(r);
    }
    return Status();
}

Status write_frame(int fd, std::string_view s, Clock::time_point deadline) {
    const uint64_t len = s.size();
    TANDEM_RETURN_IF_ERROR(write_all(fd, &len, sizeof(len), deadline));
    return write_all(fd, s.data(), s.size(), deadline);
}

Result<std::string> read_frame(int fd, Clock::time_point deadline) {
    uint64_t len = 0;
    TANDEM_RETURN_IF_ERROR(read_all(fd, &len, sizeof(len), deadline));
    if (len > (1u << 30))
        return data_loss("tcp bootstrap: frame of " + std::to_string(len) + " bytes");
    std::string s(len, '\0');
    TANDEM_RETURN_IF_ERROR(read_all(fd, s.data(), s.size(), deadline));
    return s;
}

Result<sockaddr_storage> resolve(const std::string& host, int port, socklen_t* len) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const std::string service = std::to_string(port);
    if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0) {
        return unavailable("tcp bootstrap: cannot resolve " + host + ": " + gai_strerror(rc));
    }
    sockaddr_storage out{};
    std::memcpy(&out, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    ::freeaddrinfo(res);
    return out;
}

// One rank of a TCP bootstrap; driven by one thread, owns its sockets.
class TcpBootstrap final : public RingBootstrap {
public:
    TcpBootstrap(int rank, int size, std::vector<Fd> peers)
        : rank_(rank), size_(size), peers_(std::move(peers)) {}
    int rank() const override { return rank_; }
    int size() const override { return size_; }

    Result<std::vector<std::string>> allgather(std::string_view mine,
                                               std::chrono::milliseconds timeout) override {
        const auto deadline = Clock::now() + timeout;
        std::vector<std::string> all(static_cast<size_t>(size_));
        if (rank_ == 0) {
            all[0] = std::string(mine);
            for (int r = 1; r < size_; ++r) {
                TANDEM_ASSIGN_OR_RETURN(all[r], read_frame(peers_[r].get(), deadline));
            }
            for (int r = 1; r < size_; ++r) {
                for (const auto& s : all) {
                    TANDEM_RETURN_IF_ERROR(write_frame(peers_[r].get(), s, deadline));
                }
            }
        } else {
            TANDEM_RETURN_IF_ERROR(write_frame(peers_[0].get(), mine, deadline));
            for (auto& s : all) {
                TANDEM_ASSIGN_OR_RETURN(s, read_frame(peers_[0].get(), deadline));
            }
        }
        return all;
    }

private:
    const int rank_;
    const int size_;
    std::vector<Fd> peers_;  // rank 0: one per peer rank (index 0 unused); others: [0] = rank 0
};

Result<std::vector<Fd>> serve(const TcpBootstrapOptions& o, Clock::time_point deadline) {
    Fd listener(o.listen_fd);
    if (listener.get() < 0) {
        socklen_t len = 0;
        TANDEM_ASSIGN_OR_RETURN(sockaddr_storage addr, resolve(o.host, o.port, &len));
        listener = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (listener.get() < 0) return sys_error("socket");
        const int one = 1;
        ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
            return sys_error("bind " + o.host + ":" + std::to_string(o.port));
        }
        if (::listen(listener.get(), o.size) != 0) return sys_error("listen");
    }
    std::vector<Fd> peers(static_cast<size_t>(o.size));
    for (int joined = 1; joined < o.size; ++joined) {
        TANDEM_RETURN_IF_ERROR(wait_fd(listener.get(), POLLIN, deadline, "waiting for ranks"));
        Fd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (conn.get() < 0) return sys_error("accept");
        int32_t peer_rank = -1;
        TANDEM_RETURN_IF_ERROR(read_all(conn.get(), &peer_rank, sizeof(peer_rank), deadline));
        if (peer_rank <= 0 || peer_rank >= o.size || peers[peer_rank].get() >= 0) {
            return invalid_argument("tcp bootstrap: unexpected hello from rank " +
                                    std::to_string(peer_rank));
        }
        peers[peer_rank] = std::move(conn);
    }
    return peers;
}

Result<Fd> connect_to_root(const TcpBootstrapOptions& o, Clock::time_point deadline) {
    socklen_t len = 0;
    TANDEM_ASSIGN_OR_RETURN(sockaddr_storage addr, resolve(o.host, o.port, &len));
    for (;;) {
        Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (s.get() < 0) return sys_error("socket");
        if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0) {
            const int one = 1;
            ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            const int32_t me = o.rank;
            TANDEM_RETURN_IF_ERROR(write_all(s.get(), &me, sizeof(me), deadline));
            return s;
        }
        if (errno != ECONNREFUSED && errno != EINTR) return sys_error("connect");
        if (ms_left(deadline) == 0) {
            return deadline_exceeded("tcp bootstrap: rank 0 at " + o.host + ":" +
                                     std::to_string(o.port) + " did not accept in time");
        }
        // Rank 0 is not listening yet: back off briefly (bounded by the deadline) and retry.
        ::poll(nullptr, 0, std::min(20, ms_left(deadline)));
    }
}

}  // namespace

std::vector<std::unique_ptr<RingBootstrap>> make_in_process_bootstrap(int size) {
    std::vector<std::unique_ptr<RingBootstrap>> out;
    if (size <= 0) return out;
    auto rv = std::make_shared<Rendezvous>(size);
    for (int r = 0; r < size; ++r) out.push_back(std::make_unique<InProcessBootstrap>(rv, r));
    return out;
}

Result<std::unique_ptr<RingBootstrap>> make_tcp_bootstrap(const TcpBootstrapOptions& o) {
    if (o.size <= 0 || o.rank < 0 || o.rank >= o.size) {
        return invalid_argument("tcp bootstrap: rank " + std::to_string(o.rank) + " of " +
                                std::to_string(o.size));
    }
    const auto deadline = Clock::now() + o.connect_timeout;
    std::vector<Fd> peers;
    if (o.rank == 0) {
        TANDEM_ASSIGN_OR_RETURN(peers, serve(o, deadline));
    } else {
        if (o.listen_fd >= 0) ::close(o.listen_fd);
        TANDEM_ASSIGN_OR_RETURN(Fd root, connect_to_root(o, deadline));
        peers.push_back(std::move(root));
    }
    return std::unique_ptr<RingBootstrap>(
        std::make_unique<TcpBootstrap>(o.rank, o.size, std::move(peers)));
}

}  // namespace tandem::kernels
