// Run-time choice of the ring transport from the ranks' placement (kernels/ring/ring_select.h).
#include "kernels/ring/ring_select.h"

#include <set>
#include <utility>

namespace tandem::kernels {

const char* ring_backend_name(RingBackend backend) {
    switch (backend) {
        case RingBackend::kInProcess:
            return "in_process";
        case RingBackend::kNccl:
            return "nccl";
        case RingBackend::kUcx:
            return "ucx";
    }
    return "unknown";
}

std::string encode_ring_placement(const RingRankPlacement& placement) {
    return placement.host + "\n" + std::to_string(placement.process) + "\n" +
           std::to_string(placement.gpu);
}

Result<RingRankPlacement> decode_ring_placement(std::string_view blob, int rank) {
    const auto bad = [&](const std::string& why) {
        return invalid_argument("ring placement of rank " + std::to_string(rank) + ": " + why);
    };
    const size_t a = blob.find('\n');
    const size_t b = a == std::string_view::npos ? a : blob.find('\n', a + 1);
    if (b == std::string_view::npos) return bad("expected host, process and gpu lines");
    RingRankPlacement p;
    p.host = std::string(blob.substr(0, a));
    const auto number = [](std::string_view text, int& out) {
        if (text.empty() || text.size() > 10) return false;
        size_t i = text[0] == '-' ? 1 : 0;
        if (i == text.size()) return false;
        long long v = 0;
        for (; i < text.size(); ++i) {
            if (text[i] < '0' || text[i] > '9') return false;
            v = v * 10 + (text[i] - '0');
        }
        out = static_cast<int>(text[0] == '-' ? -v : v);
        return true;
    };
    if (!number(blob.substr(a + 1, b - a - 1), p.process)) return bad("process is not a number");
    if (!number(blob.substr(b + 1), p.gpu)) return bad("gpu is not a number");
    return p;
}

Result<RingChoice> choose_ring_transport(const std::vector<RingRankPlacement>& ranks,
                                         const RingSelectOptions& options) {
    if (ranks.empty()) return invalid_argument("ring placement: the ring has no rank");
    const bool on_gpu = ranks[0].gpu >= 0;
    for (size_t r = 0; r < ranks.size(); ++r) {
        const RingRankPlacement& p = ranks[r];
        const std::string who = "ring placement: rank " + std::to_string(r);
        if (p.host.empty()) return invalid_argument(who + " has no host name");
        if (p.process < 0)
            return invalid_argument(who + " has process " + std::to_string(p.process));
        if ((p.gpu >= 0) != on_gpu) {
            return invalid_argument(who +
                                    (p.gpu >= 0 ? " is on GPU " + std::to_string(p.gpu)
                                                : std::string(" computes on the CPU")) +
                                    " but rank 0 " +
                                    (on_gpu ? "is on a GPU" : "computes on the CPU") +
                                    ": a ring runs all its ranks on one kind of device");
        }
    }
    std::set<std::string> hosts;
    std::set<std::pair<std::string, int>> processes;
    std::set<std::pair<std::string, int>> gpus;
    bool shared_gpu = false;
    for (const RingRankPlacement& p : ranks) {
        hosts.insert(p.host);
        processes.insert({p.host, p.process});
        if (on_gpu) shared_gpu |= !gpus.insert({p.host, p.gpu}).second;
    }
    RingChoice c;
    c.memory = on_gpu ? RingMemory::kCuda : RingMemory::kHost;
    const std::string n = std::to_string(ranks.size()) + " ranks";
    if (processes.size() == 1) {
        c.backend = RingBackend::kInProcess;
        c.reason = n + " in one process" + (on_gpu ? ", device memory" : "");
        return c;
    }
    if (!on_gpu) {
        c.backend = RingBackend::kUcx;
        c.reason = n + " on the CPU in " + std::to_string(processes.size()) + " processes on " +
                   std::to_string(hosts.size()) + " host(s)";
        return c;
    }
    if (hosts.size() == 1 && !shared_gpu && options.nccl_available) {
        c.backend = RingBackend::kNccl;
        c.reason = n + " on " + std::to_string(gpus.size()) + " GPUs of host " + *hosts.begin();
        return c;
    }
    c.backend = RingBackend::kUcx;
    c.host_staging = true;
    if (hosts.size() > 1) {
        c.reason = n + " on GPUs of " + std::to_string(hosts.size()) +
                   " hosts: UCX between hosts, staged through host memory";
    } else if (shared_gpu) {
        c.reason = n +
                   " in several processes share a GPU (NCCL needs one GPU per rank): UCX, "
                   "staged through host memory";
    } else {
        c.reason = n +
                   " on GPUs of one host, but this build has no NCCL: UCX, staged through "
                   "host memory";
    }
    return c;
}

}  // namespace tandem::kernels
