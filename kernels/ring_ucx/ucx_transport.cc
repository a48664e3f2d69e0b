// UCX ring transport: one context, one worker and one endpoint (to rank + 1) per rank.
//
// Tags: [channel:16][sequence:48]. A rank only ever receives from rank - 1 and sends to rank + 1,
// so (channel, sequence) identifies a shift. Each shift posts the receive before the send.
// Endpoints use peer error handling so teardown can close them without waiting for the peer.
#include "kernels/ring_ucx/ucx_transport.h"

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tandem::kernels {
namespace {

using Clock = std::chrono::steady_clock;

constexpr ucp_tag_t kFullTagMask = ~ucp_tag_t{0};

Status ucx_error(const std::string& what, ucs_status_t status) {
    return unavailable("ucx ring: " + what + ": " + ucs_status_string(status));
}

ucp_tag_t make_tag(uint32_t channel, uint64_t seq) {
    return (static_cast<ucp_tag_t>(channel & 0xffff) << 48) | (seq & ((ucp_tag_t{1} << 48) - 1));
}

// One posted shift: its two UCX requests (nullptr once complete) and their outcome.
struct Shift {
    void* send_req = nullptr;
    void* recv_req = nullptr;
    size_t bytes = 0;
    Status error;
};

// One rank. Every UCX handle is released in the destructor, in dependency order. The public
// methods run on the caller's thread; progress_thread_ (optional) only calls ucp_worker_progress,
// which UCS_THREAD_MODE_MULTI makes safe alongside them.
class UcxTransport final : public RingTransport {
public:
    UcxTransport(int rank, int size) : rank_(rank), size_(size) {}

    ~UcxTransport() override {
        if (progress_thread_.joinable()) {
            // release: the progress thread's acquire load sees the request to stop.
            stop_.store(true, std::memory_order_release);
            progress_thread_.join();
        }
        // Receives are cancelled, then the endpoint is force-closed, which completes every send
        // still in flight with UCS_ERR_CANCELED; no step waits for a peer.
        for (auto& [id, shift] : shifts_) {
            if (shift.recv_req) ucp_request_cancel(worker_, shift.recv_req);
            release(shift.recv_req);
        }
        if (ep_) {
            ucp_request_param_t param{};
            param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
            param.flags = UCP_EP_CLOSE_FLAG_FORCE;
            void* req = ucp_ep_close_nbx(ep_, &param);
            if (UCS_PTR_IS_PTR(req)) release(req);
        }
        for (auto& [id, shift] : shifts_) release(shift.send_req);
        for (auto& region : regions_) ucp_mem_unmap(context_, region.memh);
        if (worker_) ucp_worker_destroy(worker_);
        if (context_) ucp_cleanup(context_);
    }

    Status init(RingBootstrap& bootstrap, const UcxRingOptions& options) {
        ucp_config_t* config = nullptr;
        ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
        if (st != UCS_OK) return ucx_error("reading the UCX configuration", st);
        ucp_params_t params{};
        params.field_mask = UCP_PARAM_FIELD_FEATURES;
        params.features = UCP_FEATURE_TAG;
        st = ucp_init(&params, config, &context_);
        ucp_config_release(config);
        if (st != UCS_OK) return ucx_error("ucp_init", st);

        ucp_worker_params_t wparams{};
        wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
        wparams.thread_mode =
            options.progress_thread ? UCS_THREAD_MODE_MULTI : UCS_THREAD_MODE_SERIALIZED;
        st = ucp_worker_create(context_, &wparams, &worker_);
        if (st != UCS_OK) return ucx_error("ucp_worker_create", st);
        bool multi = false;
        if (options.progress_thread) {
            ucp_worker_attr_t attr{};
            attr.field_mask = UCP_WORKER_ATTR_FIELD_THREAD_MODE;
            multi = ucp_worker_query(worker_, &attr) == UCS_OK &&
                    attr.thread_mode == UCS_THREAD_MODE_MULTI;  // else: no progress thread
        }

        ucp_address_t* address = nullptr;
        size_t address_len = 0;
        st = ucp_worker_get_address(worker_, &address, &address_len);
        if (st != UCS_OK) return ucx_error("ucp_worker_get_address", st);
        const std::string mine(reinterpret_cast<const char*>(address), address_len);
        ucp_worker_release_address(worker_, address);

        auto all = bootstrap.allgather(mine, options.bootstrap_timeout);
        if (!all.ok()) return all.status().with_context("ucx ring: exchanging worker addresses");
        const std::string& next = (*all)[(rank_ + 1) % size_];

        ucp_ep_params_t ep_params{};
        ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                               UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                               UCP_EP_PARAM_FIELD_ERR_HANDLER;
        ep_params.address = reinterpret_cast<const ucp_address_t*>(next.data());
        ep_params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
        ep_params.err_handler.cb = &UcxTransport::on_peer_error;
        ep_params.err_handler.arg = this;
        st = ucp_ep_create(worker_, &ep_params, &ep_);
        if (st != UCS_OK)
            return ucx_error("ucp_ep_create to rank " + std::to_string((rank_ + 1) % size_), st);
        // Every endpoint exists before any rank sends.
        TANDEM_RETURN_IF_ERROR(bootstrap.barrier(options.bootstrap_timeout)
                                   .with_context("ucx ring: waiting for every rank's endpoint"));
        if (multi) {
            const auto idle = options.progress_idle_sleep;
            progress_thread_ = std::thread([this, idle] {
                // acquire: pairs with the destructor's release store.
                while (!stop_.load(std::memory_order_acquire)) {
                    if (ucp_worker_progress(worker_) == 0) std::this_thread::sleep_for(idle);
                }
            });
        }
        return Status();
    }

    RingCaps caps() const override { return RingCaps{"ucx", RingMemory::kHost, 1 << 16, true}; }
    int rank() const override { return rank_; }
    int size() const override { return size_; }

    Status prepare(void* base, size_t bytes) override {
        if (!base || bytes == 0) return Status();
        ucp_mem_map_params_t mp{};
        mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
        mp.address = base;
        mp.length = bytes;
        ucp_mem_h memh = nullptr;
        const ucs_status_t st = ucp_mem_map(context_, &mp, &memh);
        if (st != UCS_OK) return ucx_error("ucp_mem_map", st);
        regions_.push_back(Region{static_cast<const char*>(base), bytes, memh});
        return Status();
    }

    Result<RingRequest> post_shift(uint32_t channel, const void* send, void* recv,
                                   size_t bytes) override {
        if (bytes > 0 && (!send || !recv)) return invalid_argument("ucx ring: null buffer");
        const ucp_tag_t tag = make_tag(channel, seq_[channel]++);
        Shift shift;
        shift.bytes = bytes;

        ucp_tag_recv_info_t info{};
        ucp_request_param_t rp{};
        rp.op_attr_mask = UCP_OP_ATTR_FIELD_RECV_INFO;
        rp.recv_info.tag_info = &info;
        add_memh(recv, bytes, rp);
        void* r = ucp_tag_recv_nbx(worker_, recv, bytes, tag, kFullTagMask, &rp);
        if (UCS_PTR_IS_ERR(r)) return ucx_error("ucp_tag_recv_nbx", UCS_PTR_STATUS(r));
        // r == nullptr: completed at once from the unexpected queue. UCX 1.13 does not fill
        // recv_info then, so a short message is only detected on the request path (a long one
        // fails with UCS_ERR_MESSAGE_TRUNCATED on both paths).
        shift.recv_req = r;

        ucp_request_param_t sp{};
        add_memh(send, bytes, sp);
        void* s = ucp_tag_send_nbx(ep_, send, bytes, tag, &sp);
        if (UCS_PTR_IS_ERR(s)) {
            cancel(shift);
            return ucx_error("ucp_tag_send_nbx to rank " + std::to_string((rank_ + 1) % size_),
                             UCS_PTR_STATUS(s));
        }
        shift.send_req = s;
        const uint64_t id = ++next_id_;
        shifts_.emplace(id, shift);
        return RingRequest{id};
    }

    Result<bool> poll(RingRequest request) override {
        auto it = shifts_.find(request.id);
        if (it == shifts_.end()) return invalid_argument("ucx ring: unknown request");
        ucp_worker_progress(worker_);
        if (!check(it->second)) return false;
        const Status error = it->second.error;
        shifts_.erase(it);
        if (!error.ok()) return error;
        return true;
    }

    Status wait(RingRequest request, std::chrono::milliseconds timeout) override {
        auto it = shifts_.find(request.id);
        if (it == shifts_.end()) return invalid_argument("ucx ring: unknown request");
        const auto deadline = Clock::now() + timeout;
        for (;;) {
            // Drain all pending progress before looking at the clock.
            while (ucp_worker_progress(worker_) != 0) {
            }
            if (check(it->second)) break;
            // acquire: pairs with the release store in on_peer_error.
            if (const int err = peer_error_.load(std::memory_order_acquire); err != UCS_OK) {
                return ucx_error("rank " + std::to_string((rank_ + 1) % size_) + " failed",
                                 static_cast<ucs_status_t>(err));
            }
            if (progress_thread_.joinable()) std::this_thread::yield();
            if (Clock::now() >= deadline) {
                return deadline_exceeded("ucx ring: rank " + std::to_string(rank_) + " waited " +
                                         std::to_string(timeout.count()) +
                                         " ms for a shift (a neighbour has not posted it)");
            }
        }
        const Status error = it->second.error;
        shifts_.erase(it);
        return error;
    }

    Status flush(std::chrono::milliseconds timeout) override {
        const auto deadline = Clock::now() + timeout;
        while (!shifts_.empty()) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            TANDEM_RETURN_IF_ERROR(wait(RingRequest{shifts_.begin()->first},
                                        std::max(left, std::chrono::milliseconds(0))));
        }
        return Status();
    }

private:
    // UCX calls this (from whichever thread progresses the worker) when the endpoint to the
    // next rank fails, for example because that process exited. Waits then fail instead of
    // running into their deadline; at teardown it is expected and ignored.
    static void on_peer_error(void* arg, ucp_ep_h, ucs_status_t status) {
        // release: publishes the failure to the waiting thread's acquire load.
        static_cast<UcxTransport*>(arg)->peer_error_.store(static_cast<int>(status),
                                                           std::memory_order_release);
    }

    struct Region {
        const char* base;
        size_t bytes;
        ucp_mem_h memh;
    };

    static Status truncated(size_t got, size_t want) {
        return invalid_argument("ucx ring: received " + std::to_string(got) + " bytes, expected " +
                                std::to_string(want) + " (ranks disagree on the shift size)");
    }

    void add_memh(const void* p, size_t bytes, ucp_request_param_t& param) const {
        const char* c = static_cast<const char*>(p);
        for (const auto& region : regions_) {
            if (c >= region.base && c + bytes <= region.base + region.bytes) {
                param.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
                param.memh = region.memh;
                return;
            }
        }
    }

    // Updates the shift from its requests; true when both sides are done.
    bool check(Shift& shift) {
        if (shift.recv_req) {
            ucp_tag_recv_info_t info{};
            const ucs_status_t st = ucp_tag_recv_request_test(shift.recv_req, &info);
            if (st != UCS_INPROGRESS) {
                if (st != UCS_OK) {
                    shift.error = ucx_error(
                        "receive from rank " + std::to_string((rank_ - 1 + size_) % size_), st);
                } else if (info.length != shift.bytes && shift.error.ok()) {
                    shift.error = truncated(info.length, shift.bytes);
                }
                ucp_request_free(shift.recv_req);
                shift.recv_req = nullptr;
            }
        }
        if (shift.send_req) {
            const ucs_status_t st = ucp_request_check_status(shift.send_req);
            if (st != UCS_INPROGRESS) {
                if (st != UCS_OK && shift.error.ok()) {
                    shift.error =
                        ucx_error("send to rank " + std::to_string((rank_ + 1) % size_), st);
                }
                ucp_request_free(shift.send_req);
                shift.send_req = nullptr;
            }
        }
        return !shift.recv_req && !shift.send_req;
    }

    // Cancels a shift whose send could not be posted (only its receive is outstanding).
    void cancel(Shift& shift) {
        if (shift.recv_req) ucp_request_cancel(worker_, shift.recv_req);
        release(shift.recv_req);
    }

    // Progresses until `req` leaves UCS_INPROGRESS (bounded: teardown never hangs on a dead
    // peer; a request still stuck after the bound is leaked) and frees it.
    void release(void*& req) {
        if (!req) return;
        const auto deadline = Clock::now() + std::chrono::seconds(5);
        while (ucp_request_check_status(req) == UCS_INPROGRESS) {
            ucp_worker_progress(worker_);
            if (Clock::now() > deadline) {
                std::fprintf(stderr, "tandem ucx ring: rank %d leaks a stuck request\n", rank_);
                req = nullptr;
                return;
            }
        }
        ucp_request_free(req);
        req = nullptr;
    }

    const int rank_;
    const int size_;
    ucp_context_h context_ = nullptr;
    ucp_worker_h worker_ = nullptr;
    ucp_ep_h ep_ = nullptr;
    std::vector<Region> regions_;
    std::unordered_map<uint32_t, uint64_t> seq_;  // per channel
    std::unordered_map<uint64_t, Shift> shifts_;
    uint64_t next_id_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> peer_error_{UCS_OK};  // ucs_status_t of a failed endpoint
    std::thread progress_thread_;          // joined first in the destructor
};

}  // namespace

Result<std::unique_ptr<RingTransport>> make_ucx_ring_transport(RingBootstrap& bootstrap,
                                                               const UcxRingOptions& options) {
    auto t = std::make_unique<UcxTransport>(bootstrap.rank(), bootstrap.size());
    TANDEM_RETURN_IF_ERROR(t->init(bootstrap, options));
    return std::unique_ptr<RingTransport>(std::move(t));
}

}  // namespace tandem::kernels
