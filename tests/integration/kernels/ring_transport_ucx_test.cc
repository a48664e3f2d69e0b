// The ring transport contract suite against the UCX backend. Ranks are threads, each with its
// own UCX context, worker and endpoint, bootstrapped in-process.
#include <thread>

#include "kernels/ring/bootstrap.h"
#include "kernels/ring_ucx/ucx_transport.h"
#include "tests/unit/kernels/support/ring_transport_contract.h"

namespace tandem::kernels::testkit {
namespace {

Result<std::unique_ptr<RingWorld>> make_ucx_world(int size, bool progress_thread) {
    auto group = make_in_process_bootstrap(size);
    std::vector<Result<std::unique_ptr<RingTransport>>> made;
    for (int r = 0; r < size; ++r) made.emplace_back(internal_error("not created"));
    std::vector<std::thread> threads;
    for (int r = 0; r < size; ++r) {
        threads.emplace_back([&, r] {
            UcxRingOptions options;
            options.progress_thread = progress_thread;
            made[r] = make_ucx_ring_transport(*group[r], options);
        });
    }
    for (auto& t : threads) t.join();
    std::vector<std::unique_ptr<RingTransport>> ranks;
    for (auto& m : made) {
        if (!m.ok()) return m.status();
        ranks.push_back(std::move(m).value());
    }
    return std::unique_ptr<RingWorld>(std::make_unique<HostRingWorld>(std::move(ranks)));
}

// With a progress thread (the default: transfers overlap compute) and without one (UCX
// progresses only inside poll and wait).
INSTANTIATE_TEST_SUITE_P(
    Ucx, RingTransportContract,
    ::testing::Values(RingContractParam{"ucx_progress_thread",
                                        [](int size) { return make_ucx_world(size, true); }, 4},
                      RingContractParam{"ucx_caller_progress",
                                        [](int size) { return make_ucx_world(size, false); }, 4}),
    ring_contract_name);

}  // namespace
}  // namespace tandem::kernels::testkit
