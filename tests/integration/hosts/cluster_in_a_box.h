#pragma once

// Cluster in a box: N "hosts" as Linux network namespaces on this machine, each joined to one or
// more bridges (networks) by a veth pair with its own address, an optional sshd of its own, and a
// `tc` rate limit on each link (both directions). The root namespace holds each bridge's first
// address (x.y.z.1), so processes on this machine (the coordinator, the CLI) reach every host.
//
//   network k:   bridge <tag>b<k>, subnet 10.<a>.<b+k>.0/24, root 10.<a>.<b+k>.1
//   host i:      namespace <tag>-h<i>, interface eth<k> = 10.<a>.<b+k>.<10+i> in network k
//
// Names carry a tag unique to this process and box (parallel ctest runs do not collide), subnets
// are chosen under a file lock among those not in use. Everything (processes in the namespaces,
// sshd, links, bridges, namespaces, the temp dir) is removed by the destructor, also when a test
// fails. Needs root and iproute2 (and /usr/sbin/sshd for ssh); create() says why it cannot.
// Owned by one test thread; not thread-safe.

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::testing {

struct BoxOptions {
    int hosts = 2;
    int networks = 1;             // bridges; host i is on every one (eth0, eth1, ...)
    std::string rate = "1gbit";   // tc tbf rate per link and direction; empty: no limit
    bool sshd = true;             // start an sshd in every host that accepts the box's key
    std::vector<int> refuse_ssh;  // hosts whose sshd refuses the box's key (auth refused)
};

class ClusterInABox {
public:
    // Builds the box, or says why it cannot (not root, no `ip`, no sshd...).
    static Result<std::unique_ptr<ClusterInABox>> create(const BoxOptions& options);
    ~ClusterInABox();
    ClusterInABox(const ClusterInABox&) = delete;
    ClusterInABox& operator=(const ClusterInABox&) = delete;

    int hosts() const { return options_.hosts; }
    // Host i's address on network k, and the root namespace's address on it.
    std::string address(int host, int network = 0) const;
    std::string root_address(int network = 0) const;
    std::string namespace_name(int host) const;
    std::string interface(int network) const { return "eth" + std::to_string(network); }
    // `cmd` wrapped to run inside host i (`ip netns exec NS sh -c 'cmd'`).
    std::string exec(int host, const std::string& cmd) const;
    // The private key every accepting sshd trusts (0600), and a temp dir removed with the box.
    const std::string& identity_file() const { return identity_; }
    const std::string& dir() const { return dir_; }
    // Pids of the processes running in host i (sshd excluded).
    std::vector<pid_t> processes(int host) const;
    // Kills every process in host i but its sshd (a host whose Tandem processes die).
    void kill_processes(int host) const;
    // Bytes received + sent on host i's interface of network k (from /sys/class/net statistics).
    uint64_t interface_bytes(int host, int network) const;

private:
    explicit ClusterInABox(BoxOptions options) : options_(std::move(options)) {}
    Status build();
    Status start_sshd(int host);

    BoxOptions options_;
    std::string tag_;
    int subnet_a_ = 0, subnet_b_ = 0;
    std::string dir_, identity_;
    std::vector<pid_t> sshd_;
    bool bridges_made_ = false;
    int namespaces_made_ = 0;
};

}  // namespace tandem::testing
