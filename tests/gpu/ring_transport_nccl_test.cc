// The ring transport contract suite against the NCCL backend: one rank per visible GPU (up to
// four), device buffers. Skips with a reason without a device.
#include <cuda_runtime_api.h>

#include <mutex>
#include <thread>

#include "kernels/device.h"
#include "kernels/ring/bootstrap.h"
#include "kernels/ring_nccl/nccl_transport.h"
#include "tests/unit/kernels/support/ring_transport_contract.h"

namespace tandem::kernels::testkit {
namespace {

// Rank r lives on device r; buffers are cudaMalloc'ed there and freed with the world.
class NcclWorld final : public RingWorld {
public:
    explicit NcclWorld(std::vector<std::unique_ptr<RingTransport>> ranks)
        : ranks_(std::move(ranks)) {}
    ~NcclWorld() override {
        ranks_.clear();
        for (auto [device, ptr] : buffers_) {
            cudaSetDevice(device);
            cudaFree(ptr);
        }
    }
    int size() const override { return static_cast<int>(ranks_.size()); }
    RingTransport& rank(int r) override { return *ranks_[r]; }
    void enter_rank_thread(int r) override { cudaSetDevice(r); }
    void* alloc(int r, size_t bytes) override {
        cudaSetDevice(r);
        void* p = nullptr;
        if (cudaMalloc(&p, bytes > 0 ? bytes : 16) != cudaSuccess) return nullptr;
        std::lock_guard<std::mutex> lock(mu_);
        buffers_.emplace_back(r, p);
        return p;
    }
    void upload(int r, void* dst, const void* host, size_t bytes) override {
        cudaSetDevice(r);
        cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice);
    }
    void download(int r, void* host, const void* src, size_t bytes) override {
        cudaSetDevice(r);
        cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost);
    }

private:
    std::mutex mu_;  // guards buffers_: ranks allocate from their own threads
    std::vector<std::pair<int, void*>> buffers_;
    std::vector<std::unique_ptr<RingTransport>> ranks_;
};

int device_count() { return static_cast<int>(cuda_devices().size()); }

Result<std::unique_ptr<RingWorld>> make_nccl_world(int size) {
    if (size > device_count()) return unavailable("nccl world: not enough devices");
    auto group = make_in_process_bootstrap(size);
    std::vector<Result<std::unique_ptr<RingTransport>>> made;
    for (int r = 0; r < size; ++r) made.emplace_back(internal_error("not created"));
    std::vector<std::thread> threads;
    for (int r = 0; r < size; ++r) {
        threads.emplace_back([&, r] {
            NcclRingOptions options;
            options.device = r;
            made[r] = make_nccl_ring_transport(*group[r], options);
        });
    }
    for (auto& t : threads) t.join();
    std::vector<std::unique_ptr<RingTransport>> ranks;
    for (auto& m : made) {
        if (!m.ok()) return m.status();
        ranks.push_back(std::move(m).value());
    }
    return std::unique_ptr<RingWorld>(std::make_unique<NcclWorld>(std::move(ranks)));
}

std::string nccl_skip_reason() {
    std::string why;
    if (cuda_devices(&why).empty()) return why;
    return {};
}

INSTANTIATE_TEST_SUITE_P(Nccl, RingTransportContract,
                         ::testing::Values(RingContractParam{
                             "nccl", make_nccl_world, std::max(1, std::min(4, device_count())),
                             nccl_skip_reason}),
                         ring_contract_name);

}  // namespace
}  // namespace tandem::kernels::testkit
