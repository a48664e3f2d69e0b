#pragma once

// Bootstrap for ring transports: an out-of-band all-gather of small blobs (UCX worker addresses,
// the NCCL unique id) among the ranks of a ring before the data path exists.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tandem::kernels {

// One rank's side of a bootstrap group. Not thread-safe; one thread per rank.
class RingBootstrap {
public:
    virtual ~RingBootstrap() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    // Collective: every rank contributes `mine`; returns all contributions indexed by rank.
    virtual Result<std::vector<std::string>> allgather(std::string_view mine,
                                                       std::chrono::milliseconds timeout) = 0;
    // Collective: returns once every rank has entered.
    Status barrier(std::chrono::milliseconds timeout) { return allgather({}, timeout).status(); }
};

// Bootstrap for ranks that are threads of one process; element r is rank r.
std::vector<std::unique_ptr<RingBootstrap>> make_in_process_bootstrap(int size);

struct TcpBootstrapOptions {
    int rank = 0;
    int size = 1;
    std::string host = "127.0.0.1";  // where rank 0 listens (IPv4 address or name)
    int port = 0;                    // rank 0's port
    // Rank 0 only: an already bound and listening socket to use instead of binding host:port
    // (tests create it before forking so connects are never refused). Ownership passes here.
    int listen_fd = -1;
    std::chrono::milliseconds connect_timeout{30000};
};

// Bootstrap over TCP: rank 0 serves, the others connect to it and keep the connection for every
// later all-gather. Creating it is itself collective (rank 0 returns once all peers joined).
Result<std::unique_ptr<RingBootstrap>> make_tcp_bootstrap(const TcpBootstrapOptions& options);

}  // namespace tandem::kernels
