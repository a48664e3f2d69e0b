#pragma once

// Which ring transport carries a ring whose ranks are placed on given hosts and devices, chosen at
// run time from the placement (no configuration):
//   one process                        -> in_process (threads; device memory when on GPUs)
//   GPUs, one host, one GPU per rank,
//     NCCL in this build               -> nccl (device memory, NVLink / PCIe / shared memory)
//   GPUs otherwise (several hosts, two
//     ranks on one GPU, no NCCL)        -> ucx with host staging (Debian's UCX moves host memory)
//   CPU ranks in several processes     -> ucx (host memory, the CPU ring)
// Mixing CPU and GPU ranks in one ring is an error naming the first rank that differs.

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kernels/ring/ring_transport.h"

namespace tandem::kernels {

// Where one rank runs.
struct RingRankPlacement {
    std::string host;  // node name; ranks with equal names share a host
    int process = 0;   // process id on that host (ranks of one process may share memory)
    int gpu = -1;      // device index on that host; -1: the rank computes on the CPU
};

enum class RingBackend { kInProcess, kNccl, kUcx };

const char* ring_backend_name(RingBackend backend);

struct RingChoice {
    RingBackend backend = RingBackend::kInProcess;
    RingMemory memory = RingMemory::kHost;  // where the ring's tensors live (kCuda: DeviceRing)
    bool host_staging = false;  // device data over a host transport (make_host_staged_ring)
    std::string reason;         // one line, for logs and errors
};

struct RingSelectOptions {
    bool nccl_available = false;  // this build has the NCCL transport (target tandem_ring_nccl)
};

// A placement as bytes for the bootstrap's all-gather ("host\nprocess\ngpu"), and back; a blob
// that does not parse is an error naming `rank`.
std::string encode_ring_placement(const RingRankPlacement& placement);
Result<RingRankPlacement> decode_ring_placement(std::string_view blob, int rank);

// ranks[r] is rank r. Fails on an empty ring, an empty host name, a negative process, or a ring
// that mixes CPU and GPU ranks.
Result<RingChoice> choose_ring_transport(const std::vector<RingRankPlacement>& ranks,
                                         const RingSelectOptions& options);

}  // namespace tandem::kernels
