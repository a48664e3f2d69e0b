#pragma once

// A host-memory RingDeviceOps for CPU tests of the device ring (kernels/ring/device_ring.h): the
// CPU attention kernel and merge.cc on host buffers, fp32 only, synchronous (the "stream" is a
// dummy pointer). Optionally appends every enqueued operation to a shared log so tests can check
// the device ring's ordering against its transport. Test-only code.

#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/merge.h"
#include "kernels/ring/device_ring.h"

namespace tandem::kernels::fakes {

// Events of one rank, in order ("order_after", "post", "order_before", "attend", "merge").
struct OrderLog {
    std::mutex mu;
    std::vector<std::vector<std::string>> by_rank;
    explicit OrderLog(int ranks) : by_rank(static_cast<size_t>(ranks)) {}
    void add(int rank, std::string event) {
        std::lock_guard<std::mutex> lock(mu);
        by_rank[static_cast<size_t>(rank)].push_back(std::move(event));
    }
};

class HostRingOps final : public RingDeviceOps {
public:
    explicit HostRingOps(int rank = 0, OrderLog* log = nullptr) : rank_(rank), log_(log) {}

    std::string name() const override { return "host fake"; }
    DType dtype() const override { return DType::kF32; }
    void* stream() const override { return const_cast<int*>(&rank_); }

    Result<std::shared_ptr<void>> allocate(size_t bytes, std::string_view) override {
        allocated_ += bytes;
        auto buf = std::shared_ptr<float[]>(new float[(bytes + 3) / 4 + 1]());
        return std::shared_ptr<void>(buf, buf.get());
    }
    Status copy(void* dst, const void* src, size_t bytes) override {
        if (bytes) std::memmove(dst, src, bytes);
        return Status();
    }
    Status copy_to_host(void* host, const void* src, size_t bytes) override {
        ++to_host_;
        return copy(host, src, bytes);
    }
    Status copy_from_host(void* dst, const void* host, size_t bytes) override {
        ++from_host_;
        return copy(dst, host, bytes);
    }
    Status clear_partial(float* o, int64_t o_elems, float* lse, int64_t lse_elems) override {
        std::fill(o, o + o_elems, 0.0f);
        std::fill(lse, lse + lse_elems, -std::numeric_limits<float>::infinity());
        return Status();
    }
    Status attend(const AttentionParams& p, const void* q, const void* k, const void* v, float* o,
                  float* lse) override {
        if (log_) log_->add(rank_, "attend");
        return attention_forward_cpu(p, static_cast<const float*>(q), static_cast<const float*>(k),
                                     static_cast<const float*>(v), o, lse);
    }
    Status merge_partials(const float* table, int parts, int64_t n, int hq, int d, float* o,
                          float* lse) override {
        if (log_) log_->add(rank_, "merge");
        std::vector<AttentionPartial> ps;
        const int64_t stride = partial_elems(n, hq, d);
        for (int r = 0; r < parts; ++r) {
            ps.push_back({table + r * stride, table + r * stride + n * hq * d});
        }
        return merge_attention(ps, n, hq, d, o, lse);
    }

    Status attend_backward(const AttentionParams& p, const void* q, const void* k, const void* v,
                           const float* o, const float* lse, const float* dout, float* dq,
                           float* dk, float* dv, bool accumulate_grads) override {
        if (log_) log_->add(rank_, "attend_backward");
        return attention_backward_cpu(p, static_cast<const float*>(q), static_cast<const float*>(k),
                                      static_cast<const float*>(v), o, lse, dout, dq, dk, dv,
                                      accumulate_grads);
    }
    Status add(float* dst, const float* src, int64_t n) override {
        if (log_) log_->add(rank_, "add");
        for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
        return Status();
    }

    size_t allocated_bytes() const { return allocated_; }
    int copies_to_host() const { return to_host_; }
    int copies_from_host() const { return from_host_; }

private:
    int rank_;
    OrderLog* log_;
    size_t allocated_ = 0;
    int to_host_ = 0;
    int from_host_ = 0;
};

// Wraps a transport and logs the ring's calls to it into an OrderLog.
class LoggingTransport final : public RingTransport {
public:
    LoggingTransport(RingTransport& inner, OrderLog& log) : inner_(inner), log_(log) {}
    RingCaps caps() const override { return inner_.caps(); }
    int rank() const override { return inner_.rank(); }
    int size() const override { return inner_.size(); }
    Status prepare(void* base, size_t bytes) override { return inner_.prepare(base, bytes); }
    Result<RingRequest> post_shift(uint32_t channel, const void* send, void* recv,
                                   size_t bytes) override {
        auto r = inner_.post_shift(channel, send, recv, bytes);
        if (r.ok()) log_.add(rank(), "post " + std::to_string(r->id));
        return r;
    }
    Result<bool> poll(RingRequest request) override { return inner_.poll(request); }
    Status wait(RingRequest request, std::chrono::milliseconds timeout) override {
        return inner_.wait(request, timeout);
    }
    Status flush(std::chrono::milliseconds timeout) override { return inner_.flush(timeout); }
    Status order_after(void* stream) override {
        log_.add(rank(), "order_after");
        return inner_.order_after(stream);
    }
    Status order_before(RingRequest request, void* stream) override {
        log_.add(rank(), "order_before " + std::to_string(request.id));
        return inner_.order_before(request, stream);
    }

private:
    RingTransport& inner_;
    OrderLog& log_;
};

}  // namespace tandem::kernels::fakes
