#pragma once

// RAII owners for the UCX (ucp) handles the weight plane uses. Every object belongs to the thread
// that progresses its worker (UCS_THREAD_MODE_SINGLE); only Worker::signal() may be called from
// another thread. Lifetimes nest through shared_ptr (endpoint -> worker -> context, rkey ->
// endpoint, memory -> context), so teardown never depends on member order.

#include <ucp/api/ucp.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/log.h"
#include "common/status.h"

namespace tandem::weights::ucx {

// How endpoints learn that a peer died.
enum class ErrorMode {
    // Peer failure detection where the transports support it; UCX 1.13's shared-memory transports
    // do not, so with them endpoints fall back to kNone (once per context, logged).
    kAuto,
    // UCP_ERR_HANDLING_MODE_PEER: failures reach the endpoint's error handler. Restricts UCX to
    // transports that support it (TCP and RDMA, not shared memory).
    kPeer,
    // No failure detection by UCX: every wait has a deadline, and same-host peers are watched by
    // pid. Lets UCX use shared memory next to TCP.
    kNone,
};

struct UcxOptions {
    // The UCX transport list ("shm,self", "tcp,self", "rc,sm,self"...); empty takes UCX's default
    // (which honours UCX_TLS from the environment).
    std::string transports;
    ErrorMode error_mode = ErrorMode::kAuto;
    // How long closing an endpoint may flush before it is forced.
    std::chrono::milliseconds close_timeout_ms{1000};
};

std::string_view error_mode_name(ErrorMode mode);

// A ucp context with RMA, AM and wakeup features. Not copyable or movable.
class Context {
public:
    static Result<std::shared_ptr<Context>> create(const UcxOptions& options);
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    ~Context();

    ucp_context_h handle() const { return handle_; }
    const UcxOptions& options() const { return options_; }
    // Whether this UCX build can register CUDA device memory.
    bool supports_cuda_memory() const { return cuda_memory_; }
    // kAuto resolved so far: true once an endpoint had to drop peer failure detection.
    bool peer_mode_unsupported() const { return peer_mode_unsupported_.load(); }
    void set_peer_mode_unsupported() { peer_mode_unsupported_.store(true); }

private:
    Context(ucp_context_h handle, UcxOptions options, bool cuda)
        : handle_(handle), options_(std::move(options)), cuda_memory_(cuda) {}
    ucp_context_h handle_;
    const UcxOptions options_;
    const bool cuda_memory_;
    std::atomic<bool> peer_mode_unsupported_{false};
};

// Receives active messages with one id; called on the worker's thread during progress.
// `data` is the payload (or a rendezvous descriptor, see ucp_am_recv_callback_t).
using AmHandler = std::function<ucs_status_t(std::span<const std::byte> header, void* data,
                                             size_t length, const ucp_am_recv_param_t& param)>;

// A ucp worker in single-thread mode with a wakeup file descriptor. Not copyable or movable.
class Worker {
public:
    static Result<std::shared_ptr<Worker>> create(std::shared_ptr<Context> context,
                                                  const std::string& name);
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    ~Worker();

    ucp_worker_h handle() const { return handle_; }
    const std::shared_ptr<Context>& context() const { return context_; }
    // The packed worker address peers connect to.
    const std::vector<std::byte>& address() const { return address_; }
    unsigned progress() { return ucp_worker_progress(handle_); }
    // Arms the wakeup fd; false means there are events to progress now (do not sleep).
    bool arm();
    int event_fd() const { return efd_; }
    Status set_am_handler(uint16_t id, AmHandler handler);
    // Unregisters the handler for `id` (before its owner goes away).
    void clear_am_handler(uint16_t id);
    // Replaces the handler for `id` with one that drops what arrives, for small eager messages
    // that peers may still send after their receiver went away (a rollout's last request racing
    // the trainer's SourceServer teardown): UCX would otherwise log "no registered callback for
    // that id". Not for ids that carry rendezvous payloads (replies), which must be received.
    void drop_am_messages(uint16_t id);

private:
    Worker(std::shared_ptr<Context> context, ucp_worker_h handle)
        : context_(std::move(context)), handle_(handle) {}
    static ucs_status_t am_trampoline(void* arg, const void* header, size_t header_length,
                                      void* data, size_t length, const ucp_am_recv_param_t* param);
    static ucs_status_t am_drop(void* arg, const void* header, size_t header_length, void* data,
                                size_t length, const ucp_am_recv_param_t* param);

    std::shared_ptr<Context> context_;
    ucp_worker_h handle_;
    int efd_ = -1;
    std::vector<std::byte> address_;
    std::map<uint16_t, std::unique_ptr<AmHandler>> handlers_;
};

// A connection to a peer worker. Errors reported by UCX land in error(); the destructor closes the
// endpoint (flush up to close_timeout, then force). Not copyable or movable (UCX holds `this`).
class Endpoint {
public:
    static Result<std::shared_ptr<Endpoint>> connect(std::shared_ptr<Worker> worker,
                                                     std::span<const std::byte> address,
                                                     const std::string& peer_name);
    Endpoint(const Endpoint&) = delete;
    Endpoint& operator=(const Endpoint&) = delete;
    ~Endpoint();

    ucp_ep_h handle() const { return handle_; }
    const std::shared_ptr<Worker>& worker() const { return worker_; }
    const std::string& peer_name() const { return peer_name_; }
    // ok until UCX reports the peer failed.
    Status error() const;
    bool failed() const { return failed_.load(std::memory_order_relaxed); }  // relaxed: a flag
    // Whether an RDMA lane carries RMA on this endpoint, so that the NIC does one-sided gets
    // (from the lanes ucp_ep_print_info reports). Shared-memory gets are native when the remote
    // key is directly addressable (RemoteKey::directly_addressable); otherwise (TCP) UCX 1.13
    // emulates gets over active messages.
    bool rdma_rma() const { return rdma_rma_; }
    // The lanes UCX chose, as ucp_ep_print_info prints them.
    const std::string& lane_report() const { return lane_report_; }
    bool peer_failure_detection() const { return peer_mode_; }
    // Declares the peer dead from the outside (a deadline passed, its pid is gone): the endpoint
    // reports `status` from error() and is force-closed.
    void abandon(ucs_status_t status);
    // Closes the endpoint now with UCP_EP_CLOSE_FLAG_FORCE (it is abandoned first if healthy) and
    // progresses the worker for at most `bound` until the close completes. UCX then completes the
    // requests that were outstanding on it with an error status. True if the close completed.
    // handle() is null afterwards; senders must check closed() first.
    bool close_now(std::chrono::milliseconds bound);
    bool closed() const { return handle_ == nullptr; }

private:
    Endpoint(std::shared_ptr<Worker> worker, std::string peer_name)
        : worker_(std::move(worker)), peer_name_(std::move(peer_name)) {}
    static void on_error(void* arg, ucp_ep_h ep, ucs_status_t status);

    std::shared_ptr<Worker> worker_;
    const std::string peer_name_;
    ucp_ep_h handle_ = nullptr;
    bool peer_mode_ = false;
    bool rdma_rma_ = false;
    std::string lane_report_;
    std::atomic<bool> failed_{false};
    ucs_status_t failure_ = UCS_OK;  // written before failed_ is set, on the worker thread
};

// Memory registered with a context for remote access (ucp_mem_map of an existing buffer).
// Not copyable or movable.
class MemoryRegion {
public:
    enum class Kind { kHost, kCuda };
    static Result<std::unique_ptr<MemoryRegion>> register_memory(std::shared_ptr<Context> context,
                                                                 void* address, size_t bytes,
                                                                 Kind kind = Kind::kHost);
    // Memory allocated by UCX itself (UCP_MEM_MAP_ALLOCATE): on shared-memory transports it lives
    // in a segment peers attach, so their gets are plain copies rather than emulated.
    static Result<std::unique_ptr<MemoryRegion>> allocate(std::shared_ptr<Context> context,
                                                          size_t bytes);
    MemoryRegion(const MemoryRegion&) = delete;
    MemoryRegion& operator=(const MemoryRegion&) = delete;
    ~MemoryRegion();

    ucp_mem_h handle() const { return handle_; }
    std::byte* data() const { return static_cast<std::byte*>(address_); }
    uint64_t address() const { return reinterpret_cast<uint64_t>(address_); }
    size_t size() const { return bytes_; }
    // The packed remote key peers unpack to read this region.
    const std::vector<std::byte>& packed_rkey() const { return rkey_; }

private:
    MemoryRegion(std::shared_ptr<Context> context, ucp_mem_h handle, void* address, size_t bytes)
        : context_(std::move(context)), handle_(handle), address_(address), bytes_(bytes) {}
    std::shared_ptr<Context> context_;
    ucp_mem_h handle_;
    void* address_;
    size_t bytes_;
    std::vector<std::byte> rkey_;
};

// An unpacked remote key, usable on the endpoint it was unpacked for. Not copyable or movable.
class RemoteKey {
public:
    static Result<std::unique_ptr<RemoteKey>> unpack(std::shared_ptr<Endpoint> endpoint,
                                                     std::span<const std::byte> packed);
    RemoteKey(const RemoteKey&) = delete;
    RemoteKey& operator=(const RemoteKey&) = delete;
    ~RemoteKey();
    ucp_rkey_h handle() const { return handle_; }
    // Whether the remote memory is directly addressable here (a shared-memory segment UCX
    // attached): then gets through this key are local copies.
    bool directly_addressable(uint64_t remote_address) const;
    // Where a directly addressable remote range is mapped here, or nullptr.
    const std::byte* local_pointer(uint64_t remote_address) const;

private:
    RemoteKey(std::shared_ptr<Endpoint> endpoint, ucp_rkey_h handle)
        : endpoint_(std::move(endpoint)), handle_(handle) {}
    std::shared_ptr<Endpoint> endpoint_;
    ucp_rkey_h handle_;
};

// An outstanding ucp request (or an immediate result). Polled, never called back, so abandoning
// one (timeout, dead peer) cannot leave UCX pointing at freed state: the destructor cancels and
// frees it. Movable; not thread-safe.
class Request {
public:
    Request() = default;
    explicit Request(ucs_status_ptr_t ptr, ucp_worker_h worker);
    Request(Request&& other) noexcept;
    Request& operator=(Request&& other) noexcept;
    Request(const Request&) = delete;
    Request& operator=(const Request&) = delete;
    ~Request();

    // UCS_INPROGRESS while outstanding; UCS_OK or an error once done.
    ucs_status_t poll();
    bool pending() { return poll() == UCS_INPROGRESS; }

private:
    void reset();
    void* request_ = nullptr;
    ucp_worker_h worker_ = nullptr;
    ucs_status_t status_ = UCS_OK;
};

// "UCX <what>: <ucs status string>" as a Status (unavailable for peer and transport errors).
Status ucx_status(ucs_status_t status, std::string_view what);

// Progresses `worker` until `request` completes or `deadline` passes (deadline_exceeded).
Status wait(Worker& worker, Request& request, const Clock& clock, Clock::TimePoint deadline,
            std::string_view what);

}  // namespace tandem::weights::ucx
