#include "common/runtime/agent_runtime.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <fmt/format.h>

#include "common/wire/messages.h"
#include "common/wire/runtime_messages.h"
#include "common/wire/zmq_io.h"

namespace tandem::runtime {

namespace {

// How often an unanswered request or an unseen announcement is sent again.
constexpr auto kResendEvery = std::chrono::seconds(1);
// The I/O thread's poll timeout: the resend timer's resolution.
constexpr auto kPollEvery = std::chrono::milliseconds(100);
// Metrics held for a coordinator that is away (about ten minutes of steps at 2 per second).
constexpr size_t kMaxHeldMetrics = 1200;
constexpr auto kFlushOnExit = std::chrono::seconds(1);

template <typename M>
wire::Envelope envelope(const M& m) {
    return wire::make_envelope(m, 0);
}

std::string level_name(LogLevel level) {
    switch (level) {
        case LogLevel::kError:
            return "error";
        case LogLevel::kWarn:
            return "warn";
        default:
            return "info";
    }
}

// The pushed view as the runtime shows it.
JobView parse_view(const wire::JobView& m, uint64_t generation) {
    JobView v;
    v.generation = generation;
    v.connected = m.connected;
    v.cancelled = m.cancelled;
    v.metrics_step = m.metrics_step;
    if (m.fence.is_object()) {
        if (auto f = Fence::from_json(m.fence); f.ok()) v.fence = *f;
    }
    if (m.newest.is_object()) {
        auto info = VersionInfo::from_json(m.newest.value("info", Json()));
        auto d = weights::descriptor_from_json(m.newest.value("descriptor", Json()));
        if (info.ok() && d.ok() && d->complete()) v.newest = PublishedVersion{*info, *d};
    }
    for (const auto& p : m.peers) {
        auto id = ActorId::parse(p.value("actor", ""));
        if (!id.ok()) continue;
        Peer peer;
        peer.actor = *id;
        peer.attempt = p.value("attempt", int64_t{0});
        peer.phase = p.value("phase", "");
        const Json endpoints = p.value("endpoints", Json::object());
        for (const auto& [name, addr] : endpoints.items()) {
            if (addr.is_string()) peer.endpoints[name] = addr.get<std::string>();
        }
        v.peers.push_back(std::move(peer));
    }
    return v;
}

}  // namespace

Result<std::unique_ptr<AgentRuntime>> AgentRuntime::connect(agent::ActorContext ctx,
                                                            const Clock& clock) {
    if (ctx.runtime_endpoint.empty()) {
        return invalid_argument(fmt::format(
            "{}: the actor context names no runtime endpoint (an agent older than the runtime?)",
            ctx.actor.str()));
    }
    return std::unique_ptr<AgentRuntime>(new AgentRuntime(std::move(ctx), clock));
}

AgentRuntime::AgentRuntime(agent::ActorContext ctx, const Clock& clock)
    : ctx_(std::move(ctx)), clock_(clock) {
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    enqueue(envelope(wire::RuntimeHello{ctx_.actor.str(), ctx_.attempt}));
    io_ = std::thread([this] { io_loop(); });
}

AgentRuntime::~AgentRuntime() {
    {
        std::unique_lock lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    wake();
    if (io_.joinable()) io_.join();
    if (wake_fd_ >= 0) ::close(wake_fd_);
}

void AgentRuntime::enqueue(wire::Envelope e) {
    {
        std::lock_guard lock(mu_);
        outbox_.push_back(std::move(e));
    }
    wake();
}

void AgentRuntime::wake() {
    uint64_t one = 1;
    if (wake_fd_ >= 0) (void)::write(wake_fd_, &one, sizeof one);
}

void AgentRuntime::io_loop() {
    zmq::socket_t socket(zmq_, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger,
               static_cast<int>(std::chrono::milliseconds(kFlushOnExit).count()));
    socket.set(zmq::sockopt::sndhwm, 100000);
    socket.connect(ctx_.runtime_endpoint);
    uint64_t seq = 0;
    std::optional<Clock::TimePoint> stop_at;
    while (true) {
        std::deque<wire::Envelope> out;
        {
            std::lock_guard lock(mu_);
            resend_due(clock_.now());
            out.swap(outbox_);
            if (stopping_ && !stop_at) stop_at = clock_.now();
        }
        for (auto& e : out) {
            e.seq = ++seq;
            (void)wire::send_envelope(socket, e);  // queued by ZeroMQ; the agent is local
        }
        if (stop_at) break;  // linger flushes what was sent
        zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0},
                                   {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
        try {
            zmq::poll(items, 2, kPollEvery);
        } catch (const zmq::error_t&) {
            continue;  // interrupted by a signal
        }
        if (items[1].revents & ZMQ_POLLIN) {
            uint64_t n;
            (void)::read(wake_fd_, &n, sizeof n);
        }
        if (items[0].revents & ZMQ_POLLIN) {
            std::unique_lock lock(mu_);
            while (auto frames = wire::try_recv_frames(socket)) {
                auto e = wire::decode(*frames);
                if (e.ok()) on_message(*e);
            }
            lock.unlock();
            cv_.notify_all();
        }
    }
}

void AgentRuntime::on_message(const wire::Envelope& e) {
    if (e.type == wire::JobView::kType) {
        auto m = wire::JobView::from_json(e.body);
        if (!m.ok()) return;
        view_ = parse_view(*m, view_.generation + 1);
        // What the view shows has arrived; the rest is sent again when due.
        const Version newest = view_.newest ? view_.newest->info.version : 0;
        for (auto it = announced_.begin(); it != announced_.end();) {
            it = view_.newest && it->first <= newest ? announced_.erase(it) : std::next(it);
        }
        // Endpoints are kept: a coordinator that lost one (restored without it) is told again.
        endpoints_seen_.clear();
        if (const Peer* me = view_.peer(ctx_.actor); me && me->attempt == ctx_.attempt) {
            for (const auto& [name, p] : endpoints_) {
                const auto have = me->endpoint(name);
                if (have && *have == p.request.body.value("address", ""))
                    endpoints_seen_.insert(name);
            }
        }
        metrics_.erase(metrics_.begin(), metrics_.upper_bound(view_.metrics_step));
        if (view_.connected && !was_connected_) {
            // Back in touch (a coordinator restart): everything outstanding goes again now.
            for (auto* m : {&assigning_, &metrics_}) {
                for (auto& [k, p] : *m) p.sent = {};
            }
            for (auto& [k, p] : relay_joins_) p.sent = {};
            for (auto& [k, p] : announced_) p.sent = {};
            for (auto& [k, p] : endpoints_) p.sent = {};
        }
        was_connected_ = view_.connected;
    } else if (e.type == wire::VersionAssigned::kType) {
        auto m = wire::VersionAssigned::from_json(e.body);
        if (!m.ok() || !assigning_.count(m->step)) return;
        assigning_.erase(m->step);
        if (!m->error_code.empty()) {
            const std::string msg = fmt::format("version for step {}: {}", m->step, m->error);
            assigned_.emplace(
                m->step, m->error_code == "unavailable" ? unavailable(msg) : invalid_argument(msg));
            return;
        }
        auto info = VersionInfo::from_json(m->info);
        if (info.ok()) {
            highest_assigned_ =
                any_assigned_ ? std::max(highest_assigned_, info->version) : info->version;
            any_assigned_ = true;
        }
        assigned_.emplace(m->step, std::move(info));
    } else if (e.type == wire::RelayAssigned::kType) {
        auto m = wire::RelayAssigned::from_json(e.body);
        if (!m.ok() || !relay_joins_.count(m->version)) return;
        relay_joins_.erase(m->version);
        if (!m->error.empty()) {
            relay_answers_.emplace(m->version, unavailable(m->error));
        } else if (m->source.is_null()) {
            relay_answers_.emplace(m->version, RelayChoice());
        } else {
            auto rs = weights::relay_source_from_json(m->source);
            if (rs.ok()) {
                relay_answers_.emplace(m->version, RelayChoice(std::move(*rs)));
            } else {
                relay_answers_.emplace(m->version, rs.status());
            }
        }
    }
}

void AgentRuntime::resend_due(Clock::TimePoint now) {
    auto due = [&](Pending& p) {
        if (now - p.sent < kResendEvery) return;
        p.sent = now;
        outbox_.push_back(p.request);
    };
    for (auto& [k, p] : assigning_) due(p);
    for (auto& [k, p] : relay_joins_) due(p);
    for (auto& [k, p] : announced_) due(p);
    for (auto& [k, p] : endpoints_) {
        if (!endpoints_seen_.count(k)) due(p);
    }
    if (view_.connected) {
        for (auto& [k, p] : metrics_) due(p);
    }
}

template <typename Pred>
bool AgentRuntime::wait_until(std::unique_lock<std::mutex>& lock, Clock::TimePoint deadline,
                              Pred ready) {
    while (!ready()) {
        if (stopping_ || clock_.now() >= deadline) return false;
        // The condition variable waits on the steady clock; Clock::TimePoint is one.
        cv_.wait_until(lock,
                       std::chrono::time_point_cast<std::chrono::steady_clock::duration>(
                           std::chrono::steady_clock::time_point(deadline.time_since_epoch())));
    }
    return true;
}

std::string AgentRuntime::bind_host() const {
    const Json& actors = ctx_.placement.value("actors", Json::object());
    if (actors.contains(ctx_.actor.str()))
        return actors[ctx_.actor.str()].value("host", std::string("127.0.0.1"));
    return "127.0.0.1";
}

Result<VersionInfo> AgentRuntime::assign_version(int64_t step, uint64_t data_cursor,
                                                 Clock::TimePoint deadline, Version at_least) {
    std::unique_lock lock(mu_);
    if (auto it = assigned_.find(step); it != assigned_.end()) return it->second;
    if (!assigning_.count(step)) {
        wire::VersionAssign m;
        m.job = ctx_.actor.job.str();
        m.actor = ctx_.actor.str();
        m.attempt = ctx_.attempt;
        m.step = step;
        m.data_cursor = data_cursor;
        m.after = any_assigned_ ? static_cast<int64_t>(highest_assigned_) : -1;
        m.after = std::max(m.after, static_cast<int64_t>(at_least) - 1);
        assigning_[step] = {envelope(m), {}};
    }
    lock.unlock();
    wake();  // the I/O thread sends it now
    lock.lock();
    if (!wait_until(lock, deadline, [&] { return assigned_.count(step) > 0; })) {
        return deadline_exceeded(
            fmt::format("no version number for step {} from the coordinator ({} connected)", step,
                        view_.connected ? "agent" : "agent not"));
    }
    return assigned_.at(step);
}

Status AgentRuntime::announce_version(const VersionInfo& info,
                                      const weights::VersionDescriptor& shard) {
    wire::VersionPublished m;
    m.job = ctx_.actor.job.str();
    m.version = info.version;
    m.descriptor = weights::to_json(shard);
    m.info = info.to_json();
    {
        std::lock_guard lock(mu_);
        announced_[info.version] = {envelope(m), {}};
        // Older unseen announcements are superseded: readers want the newest.
        announced_.erase(announced_.begin(), announced_.find(info.version));
        assigned_.erase(assigned_.begin(), assigned_.upper_bound(info.step - 1));
    }
    wake();
    return Status();
}

void AgentRuntime::retire_version(Version version, uint32_t shard) {
    enqueue(envelope(wire::VersionRetired{ctx_.actor.job.str(), version, shard, ctx_.actor.str()}));
}

Result<PublishedVersion> AgentRuntime::wait_version(
    const std::function<bool(const VersionInfo&)>& accept, Clock::TimePoint deadline) {
    std::unique_lock lock(mu_);
    auto ready = [&] { return view_.newest && accept(view_.newest->info); };
    if (!wait_until(lock, deadline, ready)) {
        if (stopping_ || view_.cancelled) return unavailable("the runtime is stopping");
        return deadline_exceeded("no acceptable version was published in time");
    }
    return *view_.newest;
}

Status AgentRuntime::announce_endpoint(std::string_view name, std::string_view address) {
    wire::ActorEndpoint m{ctx_.actor.str(), ctx_.attempt, std::string(name), std::string(address)};
    {
        std::lock_guard lock(mu_);
        endpoints_[std::string(name)] = {envelope(m), {}};
    }
    wake();
    return Status();
}

Result<std::string> AgentRuntime::wait_endpoint(const ActorId& peer, std::string_view name,
                                                Clock::TimePoint deadline) {
    std::unique_lock lock(mu_);
    std::optional<std::string> found;
    auto ready = [&] {
        const Peer* p = view_.peer(peer);
        if (p && p->alive()) found = p->endpoint(name);
        return found.has_value() || view_.cancelled;
    };
    if (!wait_until(lock, deadline, ready) || !found) {
        return deadline_exceeded(
            fmt::format("{} did not announce its {} endpoint in time", peer.str(), name));
    }
    return *found;
}

Result<RelayChoice> AgentRuntime::relay_source(Version version, const weights::RelaySource& mine,
                                               Clock::TimePoint deadline) {
    std::unique_lock lock(mu_);
    relay_answers_.erase(version);
    wire::RelayJoin m{ctx_.actor.job.str(), version, ctx_.actor.str(), weights::to_json(mine)};
    relay_joins_[version] = {envelope(m), {}};
    lock.unlock();
    wake();
    lock.lock();
    if (!wait_until(lock, deadline, [&] { return relay_answers_.count(version) > 0; })) {
        relay_joins_.erase(version);
        return deadline_exceeded(fmt::format("no relay place for version {} in time", version));
    }
    auto out = relay_answers_.at(version);
    relay_answers_.erase(relay_answers_.begin(), relay_answers_.upper_bound(version));
    return out;
}

JobView AgentRuntime::view() const {
    std::lock_guard lock(mu_);
    return view_;
}

JobView AgentRuntime::wait_change(uint64_t seen, Clock::TimePoint deadline) {
    std::unique_lock lock(mu_);
    wait_until(lock, deadline, [&] { return view_.generation > seen || view_.cancelled; });
    return view_;
}

void AgentRuntime::progress(const Json& progress) {
    enqueue(envelope(wire::ActorState{ctx_.actor.str(), ctx_.attempt, wire::ActorPhase::kRunning, 0,
                                      "", progress}));
}

void AgentRuntime::metrics(int64_t step, const Json& values) {
    {
        std::lock_guard lock(mu_);
        metrics_[step] = {envelope(wire::JobMetrics{ctx_.actor.job.str(), step, values}), {}};
        while (metrics_.size() > kMaxHeldMetrics) metrics_.erase(metrics_.begin());
    }
    wake();
}

void AgentRuntime::event(std::string_view kind, std::string_view message) {
    enqueue(envelope(wire::JobEvent{ctx_.actor.job.str(), ctx_.actor.str(), std::string(kind),
                                    std::string(message)}));
}

void AgentRuntime::log(LogLevel level, std::string_view message) {
    wire::LogLines m;
    m.job = ctx_.actor.job.str();
    m.lines.push_back(
        {ctx_.actor.str(), clock_.wall_ns(), level_name(level), std::string(message)});
    enqueue(envelope(m));
}

void AgentRuntime::fail(std::string_view reason) { log(LogLevel::kError, reason); }

}  // namespace tandem::runtime
