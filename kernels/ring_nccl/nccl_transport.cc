// NCCL ring transport: one communicator per ring, one event per posted shift.
#include "kernels/ring_nccl/nccl_transport.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_map>

namespace tandem::kernels {
namespace {

using Clock = std::chrono::steady_clock;

Status cuda_error(const std::string& what, cudaError_t err) {
    return unavailable("nccl ring: " + what + ": " + cudaGetErrorString(err));
}

Status nccl_error(const std::string& what, ncclResult_t res) {
    return unavailable("nccl ring: " + what + ": " + ncclGetErrorString(res));
}

// One rank. Owns its communicator, its events and (unless given one) its stream. Driven by one
// thread at a time; every call selects the rank's device on that thread first.
class NcclTransport final : public RingTransport {
public:
    NcclTransport(int rank, int size, int device) : rank_(rank), size_(size), device_(device) {}

    ~NcclTransport() override {
        cudaSetDevice(device_);
        const bool pending = !events_.empty();
        for (auto& [id, ev] : events_) cudaEventDestroy(ev);
        if (comm_) {
            // A shift still in flight may never be matched: abort instead of waiting for it.
            const ncclResult_t res = pending ? ncclCommAbort(comm_) : ncclCommDestroy(comm_);
            if (res != ncclSuccess) {
                std::fprintf(stderr, "tandem nccl ring: rank %d: closing the communicator: %s\n",
                             rank_, ncclGetErrorString(res));
            }
        }
        if (ready_) cudaEventDestroy(ready_);
        if (after_) cudaEventDestroy(after_);
        if (own_stream_) cudaStreamDestroy(stream_);
    }

    Status init(RingBootstrap& bootstrap, const NcclRingOptions& options) {
        cudaError_t err = cudaSetDevice(device_);
        if (err != cudaSuccess)
            return cuda_error("selecting device " + std::to_string(device_), err);
        if (options.stream) {
            stream_ = static_cast<cudaStream_t>(options.stream);
        } else {
            err = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
            if (err != cudaSuccess) return cuda_error("creating a stream", err);
            own_stream_ = true;
            err = cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming);
            if (err != cudaSuccess) return cuda_error("cudaEventCreate", err);
        }
        err = cudaEventCreateWithFlags(&after_, cudaEventDisableTiming);
        if (err != cudaSuccess) return cuda_error("cudaEventCreate", err);
        if (size_ == 1) return Status();  // no communicator: a shift is a local copy
        ncclUniqueId id{};
        std::string mine;
        if (rank_ == 0) {
            const ncclResult_t res = ncclGetUniqueId(&id);
            if (res != ncclSuccess) return nccl_error("ncclGetUniqueId", res);
            mine.assign(reinterpret_cast<const char*>(&id), sizeof(id));
        }
        auto all = bootstrap.allgather(mine, options.bootstrap_timeout);
        if (!all.ok()) return all.status().with_context("nccl ring: sharing the unique id");
        if ((*all)[0].size() != sizeof(id)) return internal_error("nccl ring: bad unique id");
        std::memcpy(&id, (*all)[0].data(), sizeof(id));
        const ncclResult_t res = ncclCommInitRank(&comm_, size_, id, rank_);
        if (res != ncclSuccess) return nccl_error("ncclCommInitRank", res);
        return Status();
    }

    RingCaps caps() const override { return RingCaps{"nccl", RingMemory::kCuda, 1 << 16, true}; }
    int rank() const override { return rank_; }
    int size() const override { return size_; }
    Status prepare(void*, size_t) override { return Status(); }  // NCCL needs no registration

    Result<RingRequest> post_shift(uint32_t, const void* send, void* recv, size_t bytes) override {
        if (bytes > 0 && (!send || !recv)) return invalid_argument("nccl ring: null buffer");
        cudaError_t err = cudaSetDevice(device_);
        if (err != cudaSuccess) return cuda_error("selecting the device", err);
        if (own_stream_) {
            // Our stream does not synchronise with the legacy default stream, where cudaMemcpy
            // and kernels launched without a stream run (a pageable cudaMemcpy may even return
            // before its DMA lands). Order the shift after that work without blocking the host.
            err = cudaEventRecord(ready_, cudaStreamLegacy);
            if (err == cudaSuccess) err = cudaStreamWaitEvent(stream_, ready_, 0);
            if (err != cudaSuccess) return cuda_error("ordering after the default stream", err);
        }
        if (size_ == 1) {
            if (bytes > 0) {
                err = cudaMemcpyAsync(recv, send, bytes, cudaMemcpyDeviceToDevice, stream_);
                if (err != cudaSuccess) return cuda_error("cudaMemcpyAsync", err);
            }
        } else {
            const int next = (rank_ + 1) % size_, prev = (rank_ - 1 + size_) % size_;
            ncclResult_t res = ncclGroupStart();
            if (res == ncclSuccess) res = ncclSend(send, bytes, ncclUint8, next, comm_, stream_);
            if (res == ncclSuccess) res = ncclRecv(recv, bytes, ncclUint8, prev, comm_, stream_);
            const ncclResult_t end = ncclGroupEnd();
            if (res == ncclSuccess) res = end;
            if (res != ncclSuccess) return nccl_error("posting a shift", res);
        }
        cudaEvent_t ev = nullptr;
        err = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
        if (err != cudaSuccess) return cuda_error("cudaEventCreate", err);
        err = cudaEventRecord(ev, stream_);
        if (err != cudaSuccess) {
            cudaEventDestroy(ev);
            return cuda_error("cudaEventRecord", err);
        }
        const uint64_t id = ++next_id_;
        events_.emplace(id, ev);
        return RingRequest{id};
    }

    // Device-side ordering with events: neither call blocks the host.
    Status order_after(void* stream) override {
        cudaError_t err = cudaSetDevice(device_);
        if (err != cudaSuccess) return cuda_error("selecting the device", err);
        if (static_cast<cudaStream_t>(stream) == stream_) return Status();  // one stream: in order
        err = cudaEventRecord(after_, static_cast<cudaStream_t>(stream));
        if (err == cudaSuccess) err = cudaStreamWaitEvent(stream_, after_, 0);
        if (err != cudaSuccess) return cuda_error("ordering shifts after the compute stream", err);
        return Status();
    }

    Status order_before(RingRequest request, void* stream) override {
        auto it = events_.find(request.id);
        if (it == events_.end()) return invalid_argument("nccl ring: unknown request");
        cudaError_t err = cudaSetDevice(device_);
        if (err == cudaSuccess) {
            err = cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), it->second, 0);
        }
        if (err != cudaSuccess) return cuda_error("ordering the compute stream after a shift", err);
        return Status();
    }

    Result<bool> poll(RingRequest request) override {
        auto it = events_.find(request.id);
        if (it == events_.end()) return invalid_argument("nccl ring: unknown request");
        cudaSetDevice(device_);
        const cudaError_t err = cudaEventQuery(it->second);
        if (err == cudaErrorNotReady) {
            if (comm_) {
                ncclResult_t async = ncclSuccess;
                ncclCommGetAsyncError(comm_, &async);
                if (async != ncclSuccess && async != ncclInProgress) {
                    return nccl_error("communicator failed", async);
                }
            }
            return false;
        }
        cudaEventDestroy(it->second);
        events_.erase(it);
        if (err != cudaSuccess) return cuda_error("shift", err);
        return true;
    }

    Status wait(RingRequest request, std::chrono::milliseconds timeout) override {
        const auto deadline = Clock::now() + timeout;
        for (;;) {
            TANDEM_ASSIGN_OR_RETURN(bool done, poll(request));
            if (done) return Status();
            if (Clock::now() >= deadline) {
                return deadline_exceeded("nccl ring: rank " + std::to_string(rank_) + " waited " +
                                         std::to_string(timeout.count()) + " ms for a shift");
            }
            std::this_thread::yield();
        }
    }

    Status flush(std::chrono::milliseconds timeout) override {
        const auto deadline = Clock::now() + timeout;
        while (!events_.empty()) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            TANDEM_RETURN_IF_ERROR(wait(RingRequest{events_.begin()->first},
                                        std::max(left, std::chrono::milliseconds(0))));
        }
        return Status();
    }

private:
    const int rank_;
    const int size_;
    const int device_;
    ncclComm_t comm_ = nullptr;
    cudaStream_t stream_ = nullptr;
    bool own_stream_ = false;
    cudaEvent_t ready_ = nullptr;  // own stream only: the default stream's work before a shift
    cudaEvent_t after_ = nullptr;  // order_after: the compute stream's work before later shifts
    std::unordered_map<uint64_t, cudaEvent_t> events_;
    uint64_t next_id_ = 0;
};

}  // namespace

Result<std::unique_ptr<RingTransport>> make_nccl_ring_transport(RingBootstrap& bootstrap,
                                                                const NcclRingOptions& options) {
    auto t = std::make_unique<NcclTransport>(bootstrap.rank(), bootstrap.size(), options.device);
    TANDEM_RETURN_IF_ERROR(t->init(bootstrap, options));
    return std::unique_ptr<RingTransport>(std::move(t));
}

}  // namespace tandem::kernels
