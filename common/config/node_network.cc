#include "common/config/node_network.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <algorithm>

#include <fmt/format.h>

namespace tandem::config {

namespace {

bool is_loopback(const std::string& address) {
    return address == "localhost" || address == "::1" || address.rfind("127.", 0) == 0;
}

// The interface a plane names, by interface name or by one of its addresses.
const HostInterface* find(const std::vector<HostInterface>& ifs, const std::string& name_or_addr) {
    for (const auto& i : ifs) {
        if (i.name == name_or_addr || i.address == name_or_addr) return &i;
    }
    return nullptr;
}

std::string listing(const std::vector<HostInterface>& ifs) {
    std::string out;
    for (const auto& i : ifs) {
        if (is_loopback(i.address)) continue;
        out += fmt::format("{}{} {}", out.empty() ? "" : ", ", i.name, i.address);
    }
    return out;
}

}  // namespace

std::vector<HostInterface> host_interfaces() {
    std::vector<HostInterface> out;
    ifaddrs* ifs = nullptr;
    if (::getifaddrs(&ifs) != 0) return out;
    for (ifaddrs* i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || !(i->ifa_flags & IFF_UP)) continue;
        char buf[INET6_ADDRSTRLEN] = {};
        if (i->ifa_addr->sa_family == AF_INET) {
            ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf,
                        sizeof(buf));
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            const auto* a6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
            if (IN6_IS_ADDR_LINKLOCAL(&a6->sin6_addr)) continue;
            ::inet_ntop(AF_INET6, &a6->sin6_addr, buf, sizeof(buf));
        } else {
            continue;
        }
        out.push_back({i->ifa_name, buf});
    }
    ::freeifaddrs(ifs);
    return out;
}

Result<NodeNetwork> resolve_node_network(const NodeSpec& node,
                                         const std::vector<HostInterface>& ifs) {
    NodeNetwork net;
    const auto named = [&](const std::string& plane,
                           const std::string& value) -> Result<const HostInterface*> {
        if (value.empty()) return static_cast<const HostInterface*>(nullptr);
        if (const HostInterface* i = find(ifs, value)) return i;
        return invalid_argument(fmt::format(
            "node {}: interfaces.{} is {}, which is not an interface or address of this host "
            "(it has: {})",
            node.id, plane, value, listing(ifs)));
    };
    TANDEM_ASSIGN_OR_RETURN(const HostInterface* control,
                            named("control", node.interfaces.control));
    TANDEM_ASSIGN_OR_RETURN(const HostInterface* weights,
                            named("weights", node.interfaces.weights));
    TANDEM_ASSIGN_OR_RETURN(const HostInterface* traj,
                            named("trajectories", node.interfaces.trajectories));
    // The advertised address: as written, else the trajectory interface's, else the host's when it
    // is one of this machine's (or loopback), else the only interface there is.
    const HostInterface* own = find(ifs, node.host);
    if (!node.advertise_address.empty()) {
        net.advertise_address = node.advertise_address;
    } else if (traj) {
        net.advertise_address = traj->address;
    } else if (own || is_loopback(node.host)) {
        net.advertise_address = node.host;
    } else {
        // One candidate per interface (an interface with IPv4 and IPv6 addresses is one), its
        // IPv4 address first.
        std::vector<HostInterface> candidates;
        for (const auto& i : ifs) {
            if (is_loopback(i.address)) continue;
            auto same = std::find_if(candidates.begin(), candidates.end(),
                                     [&](const HostInterface& c) { return c.name == i.name; });
            if (same == candidates.end()) {
                candidates.push_back(i);
            } else if (same->address.find(':') != std::string::npos &&
                       i.address.find(':') == std::string::npos) {
                *same = i;
            }
        }
        if (candidates.size() != 1) {
            return invalid_argument(fmt::format(
                "node {}: host {} is not an address of this machine and it has {} interfaces "
                "({}); Tandem does not guess: set nodes[].advertise_address or "
                "nodes[].interfaces {{control, weights, trajectories}}",
                node.id, node.host, candidates.size(), listing(ifs)));
        }
        net.advertise_address = candidates[0].address;
    }
    if (control) net.control_source = control->address;
    std::vector<std::string> names;  // interfaces with a non-loopback address
    for (const auto& i : ifs) {
        if (!is_loopback(i.address) && std::find(names.begin(), names.end(), i.name) == names.end())
            names.push_back(i.name);
    }
    const size_t network_interfaces = names.size();
    if (weights) {
        net.weights_device = weights->name;
    } else if (const HostInterface* adv = find(ifs, net.advertise_address);
               adv && !is_loopback(adv->address) && network_interfaces > 1) {
        net.weights_device = adv->name;  // with a choice, weights go where peers reach this node
    }
    return net;
}

}  // namespace tandem::config
