#pragma once

// AgentRuntime: JobRuntime served by the actor's node agent. Connects a ZeroMQ DEALER to the
// agent's runtime socket (ActorContext::runtime_endpoint), says RuntimeHello and keeps the job view
// the coordinator pushes through the agent. One I/O thread owns the socket; callers' requests go
// through a queue and an eventfd that wakes it. Requests that need an answer (version numbers,
// relay places) are repeated every second until answered, and announcements (versions,
// endpoints, metrics) are repeated while the pushed view does not show them, so a coordinator
// restart or a lost message only delays them. Thread-safe; neither copyable nor movable.

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <zmq.hpp>

#include "common/agent/actor_context.h"
#include "common/runtime/job_runtime.h"
#include "common/wire/envelope.h"

namespace tandem::runtime {

class AgentRuntime final : public JobRuntime {
public:
    static Result<std::unique_ptr<AgentRuntime>> connect(agent::ActorContext ctx,
                                                         const Clock& clock);
    ~AgentRuntime() override;  // flushes what is queued (up to a second), then stops the thread
    AgentRuntime(const AgentRuntime&) = delete;
    AgentRuntime& operator=(const AgentRuntime&) = delete;

    const ActorId& actor() const override { return ctx_.actor; }
    int64_t attempt() const override { return ctx_.attempt; }
    const std::string& node() const override { return ctx_.node; }
    const config::JobSpec& spec() const override { return ctx_.spec; }
    const Json& placement() const override { return ctx_.placement; }
    const std::string& run_dir() const override { return ctx_.run_dir; }
    std::string bind_host() const override;
    const Clock& clock() const override { return clock_; }

    Result<VersionInfo> assign_version(int64_t step, uint64_t data_cursor,
                                       Clock::TimePoint deadline, Version at_least = 0) override;
    Status announce_version(const VersionInfo& info,
                            const weights::VersionDescriptor& shard) override;
    void retire_version(Version version, uint32_t shard) override;
    Result<PublishedVersion> wait_version(const std::function<bool(const VersionInfo&)>& accept,
                                          Clock::TimePoint deadline) override;
    Status announce_endpoint(std::string_view name, std::string_view address) override;
    Result<std::string> wait_endpoint(const ActorId& peer, std::string_view name,
                                      Clock::TimePoint deadline) override;
    Result<RelayChoice> relay_source(Version version, const weights::RelaySource& mine,
                                     Clock::TimePoint deadline) override;
    JobView view() const override;
    JobView wait_change(uint64_t seen, Clock::TimePoint deadline) override;
    void progress(const Json& progress) override;
    void metrics(int64_t step, const Json& values) override;
    void event(std::string_view kind, std::string_view message) override;
    void log(LogLevel level, std::string_view message) override;
    void fail(std::string_view reason) override;

private:
    AgentRuntime(agent::ActorContext ctx, const Clock& clock);
    void io_loop();
    void enqueue(wire::Envelope e);
    void wake();  // the I/O thread looks at the outbox and the resend timers
    void on_message(const wire::Envelope& e);  // with mu_ held
    void resend_due(Clock::TimePoint now);     // with mu_ held
    // Waits on cv_ until `ready` (with mu_ held) or the deadline; false at the deadline.
    template <typename Pred>
    bool wait_until(std::unique_lock<std::mutex>& lock, Clock::TimePoint deadline, Pred ready);

    agent::ActorContext ctx_;
    const Clock& clock_;
    zmq::context_t zmq_{1};
    int wake_fd_ = -1;

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<wire::Envelope> outbox_;
    bool stopping_ = false;
    JobView view_;
    Version highest_assigned_ = 0;
    bool any_assigned_ = false;
    struct Pending {
        wire::Envelope request;
        Clock::TimePoint sent{};
    };
    std::map<int64_t, Pending> assigning_;                  // by step
    std::map<int64_t, Result<VersionInfo>> assigned_;       // by step, answered
    std::map<Version, Pending> relay_joins_;                // by version
    std::map<Version, Result<RelayChoice>> relay_answers_;  // by version
    std::map<Version, Pending> announced_;                  // versions not yet seen in the view
    std::map<std::string, Pending> endpoints_;  // name -> announcement (kept for the actor's life)
    std::set<std::string> endpoints_seen_;      // shown by the last view
    std::map<int64_t, Pending> metrics_;        // steps not yet recorded by the coordinator
    bool was_connected_ = false;
    std::thread io_;  // last: started once everything above exists
};

}  // namespace tandem::runtime
