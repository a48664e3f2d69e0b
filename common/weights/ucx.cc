#include "common/weights/ucx.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include <fmt/format.h>

namespace tandem::weights::ucx {

namespace {

const Logger& logger() {
    static const Logger log("weights");
    return log;
}

// The lanes ucp_ep_print_info reports, e.g. "lane[2]: 3:cma/memory.0 md[3] -> ... rma_bw#0".
std::string print_endpoint(ucp_ep_h ep) {
    char* text = nullptr;
    size_t size = 0;
    FILE* stream = open_memstream(&text, &size);
    if (stream == nullptr) return {};
    ucp_ep_print_info(ep, stream);
    std::fclose(stream);
    std::string report(text, size);
    std::free(text);
    return report;
}

// Whether a lane of an RDMA transport carries RMA ("lane[1]: 3:rc_mlx5/mlx5_0:1.0 md[2] -> ...
// rma_bw#0"): there gets are done by the NIC. Shared-memory lanes are judged per remote key
// (RemoteKey::directly_addressable); TCP, self and cma lanes never make ucp_get native in 1.13.
bool has_rdma_rma_lane(const std::string& report) {
    std::istringstream lines(report);
    std::string line;
    while (std::getline(lines, line)) {
        const auto lane = line.find("lane[");
        if (lane == std::string::npos || line.find("rma") == std::string::npos) continue;
        const auto colon = line.find(':', line.find(']', lane) + 2);
        const auto slash = line.find('/', colon);
        if (colon == std::string::npos || slash == std::string::npos) continue;
        const std::string transport = line.substr(colon + 1, slash - colon - 1);
        static const char* const kNotRdma[] = {"tcp",  "self",  "posix", "sysv", "cma",
                                               "knem", "xpmem", "mm",    "sm"};
        bool rdma = true;
        for (const char* t : kNotRdma) rdma &= transport != t;
        if (rdma) return true;
    }
    return false;
}

// True when the transport list names only shared-memory transports (and self), which in UCX 1.13
// have no peer failure handler: asking for one would fail (and make UCX log an error).
bool shared_memory_only(const std::string& transports) {
    if (transports.empty() || transports[0] == '^') return false;
    std::istringstream list(transports);
    std::string name;
    while (std::getline(list, name, ',')) {
        if (name != "shm" && name != "sm" && name != "mm" && name != "posix" && name != "sysv" &&
            name != "cma" && name != "knem" && name != "xpmem" && name != "self") {
            return false;
        }
    }
    return true;
}

}  // namespace

std::string_view error_mode_name(ErrorMode mode) {
    switch (mode) {
        case ErrorMode::kAuto:
            return "auto";
        case ErrorMode::kPeer:
            return "peer";
        case ErrorMode::kNone:
            return "none";
    }
    return "auto";
}

Status ucx_status(ucs_status_t status, std::string_view what) {
    if (status == UCS_OK) return Status();
    const std::string message = fmt::format("UCX {}: {}", what, ucs_status_string(status));
    switch (status) {
        case UCS_ERR_INVALID_PARAM:
        case UCS_ERR_UNSUPPORTED:
            return invalid_argument(message);
        case UCS_ERR_TIMED_OUT:
            return deadline_exceeded(message);
        case UCS_ERR_NO_MEMORY:
        case UCS_ERR_NO_RESOURCE:
        case UCS_ERR_UNREACHABLE:
        case UCS_ERR_ENDPOINT_TIMEOUT:
        case UCS_ERR_CONNECTION_RESET:
        case UCS_ERR_REJECTED:
        case UCS_ERR_CANCELED:
        case UCS_ERR_IO_ERROR:
        case UCS_ERR_NOT_CONNECTED:
            return unavailable(message);
        default:
            return internal_error(message);
    }
}

Result<std::shared_ptr<Context>> Context::create(const UcxOptions& options) {
    ucp_config_t* config = nullptr;
    ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
    if (st != UCS_OK) return ucx_status(st, "reading configuration");
    if (!options.transports.empty()) {
        st = ucp_config_modify(config, "TLS", options.transports.c_str());
        if (st != UCS_OK) {
            ucp_config_release(config);
            return ucx_status(st, fmt::format("setting transports \"{}\"", options.transports));
        }
    }
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
    params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    params.name = "tandem-weights";
    ucp_context_h handle = nullptr;
    st = ucp_init(&params, config, &handle);
    ucp_config_release(config);
    if (st != UCS_OK) {
        return ucx_status(st,
                          fmt::format("creating a context (transports \"{}\")",
                                      options.transports.empty() ? "default" : options.transports));
    }
    ucp_context_attr_t attr{};
    attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
    bool cuda = false;
    if (ucp_context_query(handle, &attr) == UCS_OK) {
        cuda = (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
    }
    return std::shared_ptr<Context>(new Context(handle, options, cuda));
}

Context::~Context() { ucp_cleanup(handle_); }

Result<std::shared_ptr<Worker>> Worker::create(std::shared_ptr<Context> context,
                                               const std::string& name) {
    ucp_worker_params_t params{};
    params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_NAME;
    params.thread_mode = UCS_THREAD_MODE_SINGLE;
    params.name = name.c_str();
    ucp_worker_h handle = nullptr;
    ucs_status_t st = ucp_worker_create(context->handle(), &params, &handle);
    if (st != UCS_OK) return ucx_status(st, "creating a worker");
    std::shared_ptr<Worker> worker(new Worker(std::move(context), handle));

    ucp_worker_attr_t attr{};
    attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS;
    st = ucp_worker_query(handle, &attr);
    if (st != UCS_OK) return ucx_status(st, "querying the worker address");
    const auto* bytes = reinterpret_cast<const std::byte*>(attr.address);
    worker->address_.assign(bytes, bytes + attr.address_length);
    ucp_worker_release_address(handle, attr.address);

    st = ucp_worker_get_efd(handle, &worker->efd_);
    if (st != UCS_OK) return ucx_status(st, "getting the worker's wakeup fd");
    return worker;
}

Worker::~Worker() { ucp_worker_destroy(handle_); }

bool Worker::arm() { return ucp_worker_arm(handle_) == UCS_OK; }

ucs_status_t Worker::am_trampoline(void* arg, const void* header, size_t header_length, void* data,
                                   size_t length, const ucp_am_recv_param_t* param) {
    auto* handler = static_cast<AmHandler*>(arg);
    return (*handler)({static_cast<const std::byte*>(header), header_length}, data, length, *param);
}

Status Worker::set_am_handler(uint16_t id, AmHandler handler) {
    auto owned = std::make_unique<AmHandler>(std::move(handler));
    ucp_am_handler_param_t param{};
    param.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                       UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    param.id = id;
    param.cb = &Worker::am_trampoline;
    param.arg = owned.get();
    param.flags = UCP_AM_FLAG_WHOLE_MSG;
    ucs_status_t st = ucp_worker_set_am_recv_handler(handle_, &param);
    if (st != UCS_OK) return ucx_status(st, fmt::format("registering handler {}", id));
    handlers_[id] = std::move(owned);
    return Status();
}

ucs_status_t Worker::am_drop(void*, const void*, size_t, void*, size_t,
                             const ucp_am_recv_param_t*) {
    return UCS_OK;  // the data (whole message, eager) is released by UCX on return
}

void Worker::clear_am_handler(uint16_t id) {
    ucp_am_handler_param_t param{};
    param.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                       UCP_AM_HANDLER_PARAM_FIELD_ARG;
    param.id = id;
    param.cb = nullptr;
    param.arg = nullptr;
    ucp_worker_set_am_recv_handler(handle_, &param);
    handlers_.erase(id);
}

void Worker::drop_am_messages(uint16_t id) {
    ucp_am_handler_param_t param{};
    param.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                       UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    param.id = id;
    param.cb = &Worker::am_drop;
    param.arg = nullptr;
    param.flags = UCP_AM_FLAG_WHOLE_MSG;
    ucp_worker_set_am_recv_handler(handle_, &param);
    handlers_.erase(id);
}

Result<std::shared_ptr<Endpoint>> Endpoint::connect(std::shared_ptr<Worker> worker,
                                                    std::span<const std::byte> address,
                                                    const std::string& peer_name) {
    Context& context = *worker->context();
    std::shared_ptr<Endpoint> ep(new Endpoint(worker, peer_name));
    const ErrorMode mode = context.options().error_mode;
    if (mode == ErrorMode::kAuto && shared_memory_only(context.options().transports)) {
        context.set_peer_mode_unsupported();
    }
    bool peer =
        mode == ErrorMode::kPeer || (mode == ErrorMode::kAuto && !context.peer_mode_unsupported());
    for (;;) {
        ucp_ep_params_t params{};
        params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                            UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_NAME;
        params.address = reinterpret_cast<const ucp_address_t*>(address.data());
        params.err_mode = peer ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
        params.name = ep->peer_name_.c_str();
        params.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
        params.err_handler.cb = &Endpoint::on_error;
        params.err_handler.arg = ep.get();
        ucs_status_t st = ucp_ep_create(worker->handle(), &params, &ep->handle_);
        if (st == UCS_ERR_UNREACHABLE && peer && mode == ErrorMode::kAuto) {
            // UCX 1.13's shared-memory transports have no peer failure handler.
            context.set_peer_mode_unsupported();
            logger().warn(
                "UCX transports \"{}\" cannot detect peer failure; endpoints rely on operation "
                "deadlines and pid checks instead",
                context.options().transports.empty() ? "default" : context.options().transports);
            peer = false;
            continue;
        }
        if (st != UCS_OK) return ucx_status(st, fmt::format("connecting to {}", peer_name));
        break;
    }
    ep->peer_mode_ = peer;
    ep->lane_report_ = print_endpoint(ep->handle_);
    ep->rdma_rma_ = has_rdma_rma_lane(ep->lane_report_);
    return ep;
}

void Endpoint::on_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* ep = static_cast<Endpoint*>(arg);
    ep->failure_ = status;
    // Relaxed: failed_ is read on the same (worker) thread; other threads only poll it as a hint.
    ep->failed_.store(true, std::memory_order_relaxed);
    // Logged where the failure is acted on (a fetch fails, a reader is dropped); a peer that
    // closed is routine.
    logger().debug("UCX endpoint to {} failed: {}", ep->peer_name_, ucs_status_string(status));
}

void Endpoint::abandon(ucs_status_t status) {
    if (failed()) return;
    failure_ = status;
    failed_.store(true, std::memory_order_relaxed);  // relaxed: see on_error
}

bool Endpoint::close_now(std::chrono::milliseconds bound) {
    if (handle_ == nullptr) return true;
    abandon(UCS_ERR_CANCELED);
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t req = ucp_ep_close_nbx(handle_, &param);
    handle_ = nullptr;
    if (req == nullptr || UCS_PTR_IS_ERR(req)) return true;
    const auto& clock = SystemClock::instance();
    const auto deadline = clock.now() + bound;
    bool done = true;
    while (ucp_request_check_status(req) == UCS_INPROGRESS) {
        if (clock.now() >= deadline) {
            done = false;
            break;
        }
        worker_->progress();
    }
    ucp_request_free(req);
    return done;
}

Status Endpoint::error() const {
    if (!failed()) return Status();
    return ucx_status(failure_, fmt::format("endpoint to {}", peer_name_));
}

Endpoint::~Endpoint() {
    if (handle_ == nullptr) return;
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    // A failed endpoint must be forced; a healthy one flushes what it has in flight first.
    param.flags = failed() ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    ucs_status_ptr_t req = ucp_ep_close_nbx(handle_, &param);
    if (req == nullptr || UCS_PTR_IS_ERR(req)) return;
    const auto& clock = SystemClock::instance();
    const auto deadline = clock.now() + worker_->context()->options().close_timeout_ms;
    while (ucp_request_check_status(req) == UCS_INPROGRESS) {
        if (clock.now() >= deadline) {
            // The peer does not answer the flush (dead, and the transport cannot tell). The
            // request is released when UCX finishes with it; the worker reclaims the endpoint.
            logger().warn("closing the endpoint to {} timed out; abandoning it", peer_name_);
            break;
        }
        worker_->progress();
    }
    ucp_request_free(req);
}

Result<std::unique_ptr<MemoryRegion>> MemoryRegion::register_memory(
    std::shared_ptr<Context> context, void* address, size_t bytes, Kind kind) {
    ucp_mem_map_params_t params{};
    params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    params.address = address;
    params.length = bytes;
    if (kind == Kind::kCuda) {
        params.field_mask |= UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
        params.memory_type = UCS_MEMORY_TYPE_CUDA;
    }
    ucp_mem_h handle = nullptr;
    ucs_status_t st = ucp_mem_map(context->handle(), &params, &handle);
    if (st != UCS_OK) return ucx_status(st, fmt::format("registering {} bytes", bytes));
    std::unique_ptr<MemoryRegion> region(
        new MemoryRegion(std::move(context), handle, address, bytes));
    void* packed = nullptr;
    size_t packed_size = 0;
    st = ucp_rkey_pack(region->context_->handle(), handle, &packed, &packed_size);
    if (st != UCS_OK) return ucx_status(st, "packing a remote key");
    const auto* b = static_cast<const std::byte*>(packed);
    region->rkey_.assign(b, b + packed_size);
    ucp_rkey_buffer_release(packed);
    return region;
}

Result<std::unique_ptr<MemoryRegion>> MemoryRegion::allocate(std::shared_ptr<Context> context,
                                                             size_t bytes) {
    ucp_mem_map_params_t params{};
    params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                        UCP_MEM_MAP_PARAM_FIELD_FLAGS;
    params.address = nullptr;
    params.length = bytes;
    params.flags = UCP_MEM_MAP_ALLOCATE;
    ucp_mem_h handle = nullptr;
    ucs_status_t st = ucp_mem_map(context->handle(), &params, &handle);
    if (st != UCS_OK) return ucx_status(st, fmt::format("allocating {} bytes", bytes));
    ucp_mem_attr_t attr{};
    attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
    st = ucp_mem_query(handle, &attr);
    if (st != UCS_OK) {
        ucp_mem_unmap(context->handle(), handle);
        return ucx_status(st, "querying allocated memory");
    }
    std::unique_ptr<MemoryRegion> region(
        new MemoryRegion(std::move(context), handle, attr.address, attr.length));
    void* packed = nullptr;
    size_t packed_size = 0;
    st = ucp_rkey_pack(region->context_->handle(), handle, &packed, &packed_size);
    if (st != UCS_OK) return ucx_status(st, "packing a remote key");
    const auto* b = static_cast<const std::byte*>(packed);
    region->rkey_.assign(b, b + packed_size);
    ucp_rkey_buffer_release(packed);
    return region;
}

MemoryRegion::~MemoryRegion() {
    ucs_status_t st = ucp_mem_unmap(context_->handle(), handle_);
    if (st != UCS_OK) logger().warn("UCX unregistering memory: {}", ucs_status_string(st));
}

Result<std::unique_ptr<RemoteKey>> RemoteKey::unpack(std::shared_ptr<Endpoint> endpoint,
                                                     std::span<const std::byte> packed) {
    ucp_rkey_h handle = nullptr;
    ucs_status_t st = ucp_ep_rkey_unpack(endpoint->handle(), packed.data(), &handle);
    if (st != UCS_OK) {
        return ucx_status(st, fmt::format("unpacking a remote key from {}", endpoint->peer_name()));
    }
    return std::unique_ptr<RemoteKey>(new RemoteKey(std::move(endpoint), handle));
}

RemoteKey::~RemoteKey() { ucp_rkey_destroy(handle_); }

bool RemoteKey::directly_addressable(uint64_t remote_address) const {
    return local_pointer(remote_address) != nullptr;
}

const std::byte* RemoteKey::local_pointer(uint64_t remote_address) const {
    void* local = nullptr;
    if (ucp_rkey_ptr(handle_, remote_address, &local) != UCS_OK) return nullptr;
    return static_cast<const std::byte*>(local);
}

Request::Request(ucs_status_ptr_t ptr, ucp_worker_h worker) : worker_(worker) {
    if (ptr == nullptr) {
        status_ = UCS_OK;
    } else if (UCS_PTR_IS_ERR(ptr)) {
        status_ = UCS_PTR_STATUS(ptr);
    } else {
        request_ = ptr;
        status_ = UCS_INPROGRESS;
    }
}

Request::Request(Request&& other) noexcept
    : request_(std::exchange(other.request_, nullptr)),
      worker_(other.worker_),
      status_(other.status_) {}

Request& Request::operator=(Request&& other) noexcept {
    if (this != &other) {
        reset();
        request_ = std::exchange(other.request_, nullptr);
        worker_ = other.worker_;
        status_ = other.status_;
    }
    return *this;
}

Request::~Request() { reset(); }

void Request::reset() {
    if (request_ != nullptr) {
        ucp_request_cancel(worker_, request_);
        ucp_request_free(request_);  // released by UCX when it completes
        request_ = nullptr;
    }
}

ucs_status_t Request::poll() {
    if (request_ == nullptr) return status_;
    const ucs_status_t st = ucp_request_check_status(request_);
    if (st != UCS_INPROGRESS) {
        ucp_request_free(request_);
        request_ = nullptr;
        status_ = st;
    }
    return st;
}

Status wait(Worker& worker, Request& request, const Clock& clock, Clock::TimePoint deadline,
            std::string_view what) {
    for (;;) {
        const ucs_status_t st = request.poll();
        if (st != UCS_INPROGRESS) return ucx_status(st, what);
        if (clock.now() >= deadline) {
            return deadline_exceeded(
                fmt::format("UCX {}: no completion before the deadline", what));
        }
        worker.progress();
    }
}

}  // namespace tandem::weights::ucx
