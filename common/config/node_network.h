#pragma once

// Where a node's planes go on the machine its agent runs on: the address peers use to reach it
// (the trainer's trajectory and version sockets bind there), the source address of its control
// connection, and the network device UCX may use for weights (UCX_NET_DEVICES). Resolved once at
// agent start from the node's `advertise_address` and `interfaces` and this host's interfaces.
// With several interfaces, a host that is not one of this machine's addresses and nothing named,
// it refuses to guess and lists the interfaces.

#include <string>
#include <vector>

#include "common/config/cluster_spec.h"
#include "common/status.h"

namespace tandem::config {

struct HostInterface {
    std::string name;     // "eth0"
    std::string address;  // "10.0.0.2" (IPv4 or IPv6 literal)
};

// This machine's interfaces that are up, with their addresses; loopback included ("lo").
std::vector<HostInterface> host_interfaces();

struct NodeNetwork {
    std::string advertise_address;  // never empty
    std::string control_source;     // empty: the kernel's route decides
    std::string weights_device;     // empty: UCX's default (every device)
};

// `interfaces` is host_interfaces() in production, a fixed list in tests.
Result<NodeNetwork> resolve_node_network(const NodeSpec& node,
                                         const std::vector<HostInterface>& interfaces);

}  // namespace tandem::config
