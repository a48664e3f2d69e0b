#pragma once

// FakeRuntime: an in-process JobRuntime for unit tests of actors. The test sets the job view
// (fence, newest version, peers, cancellation) with edit_view(); every blocking call first runs
// the test's on_wait hook (the place to make the cluster move deterministically: publish the next
// version, restart the trainer) and then waits on a condition with the caller's deadline.
// Version numbers are assigned from a counter under the view's fence; fence_off() makes the next
// assignment fail as the version table refuses a superseded trainer. Everything an actor reports
// is recorded. Thread-safe.

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/runtime/job_runtime.h"

namespace tandem::testing {

using Json = nlohmann::json;

class FakeRuntime final : public runtime::JobRuntime {
public:
    FakeRuntime(config::JobSpec spec, ActorId actor, int64_t attempt = 1)
        : spec_(std::move(spec)), actor_(actor), attempt_(attempt) {
        view_.connected = true;
    }

    // ---- test controls ----
    void edit_view(const std::function<void(runtime::JobView&)>& edit) {
        {
            std::lock_guard lock(mu_);
            edit(view_);
            ++view_.generation;
        }
        cv_.notify_all();
    }
    void set_fence(runtime::Fence f) {
        edit_view([&](runtime::JobView& v) { v.fence = f; });
    }
    // Makes `version` (of `fence`, after `step` steps) the job's newest.
    void publish(Version version, runtime::Fence fence, int64_t step, uint64_t cursor = 0) {
        edit_view([&](runtime::JobView& v) {
            runtime::PublishedVersion p;
            p.info = {version, fence, step, cursor};
            p.descriptor.job = actor_.job;
            p.descriptor.version = version;
            v.newest = p;
        });
    }
    void set_peer(const ActorId& id, int64_t attempt, const std::string& phase,
                  std::map<std::string, std::string> endpoints = {}) {
        edit_view([&](runtime::JobView& v) {
            for (auto& p : v.peers) {
                if (p.actor == id) {
                    p = {id, attempt, phase, std::move(endpoints)};
                    return;
                }
            }
            v.peers.push_back({id, attempt, phase, std::move(endpoints)});
        });
    }
    void cancel() {
        edit_view([](runtime::JobView& v) { v.cancelled = true; });
    }
    void fence_off() {
        std::lock_guard lock(mu_);
        fenced_off_ = true;
    }
    void set_next_version(Version v) {
        std::lock_guard lock(mu_);
        next_version_ = v;
    }
    // Runs at the start of every blocking call (without the lock held).
    std::function<void()> on_wait;

    // ---- what the actor did ----
    std::vector<runtime::VersionInfo> assigned() const { return locked(assigned_); }
    std::vector<runtime::VersionInfo> announced() const { return locked(announced_); }
    std::map<int64_t, Json> metrics_by_step() const { return locked(metrics_); }
    std::vector<std::string> logs() const { return locked(logs_); }
    std::map<std::string, std::string> endpoints() const { return locked(endpoints_); }
    int waits() const { return locked(waits_); }

    // ---- JobRuntime ----
    const ActorId& actor() const override { return actor_; }
    int64_t attempt() const override { return attempt_; }
    const std::string& node() const override { return node_; }
    const config::JobSpec& spec() const override { return spec_; }
    const Json& placement() const override { return placement_; }
    const std::string& run_dir() const override { return run_dir_; }
    std::string bind_host() const override { return "127.0.0.1"; }
    const Clock& clock() const override { return SystemClock::instance(); }

    Result<runtime::VersionInfo> assign_version(int64_t step, uint64_t data_cursor,
                                                Clock::TimePoint, Version at_least) override {
        std::lock_guard lock(mu_);
        const runtime::Fence fence{1, attempt_};
        if (fenced_off_ || (view_.fence.valid() && fence < view_.fence)) {
            return unavailable(fmt::format("trainer of fence {} was fenced off", fence.str()));
        }
        for (const auto& a : assigned_) {
            if (a.step == step) return a;
        }
        next_version_ = std::max(next_version_, at_least);
        runtime::VersionInfo info{next_version_++, fence, step, data_cursor};
        assigned_.push_back(info);
        return info;
    }
    Status announce_version(const runtime::VersionInfo& info,
                            const weights::VersionDescriptor&) override {
        std::lock_guard lock(mu_);
        announced_.push_back(info);
        return Status();
    }
    void retire_version(Version, uint32_t) override {}
    Result<runtime::PublishedVersion> wait_version(
        const std::function<bool(const runtime::VersionInfo&)>& accept,
        Clock::TimePoint deadline) override {
        hook();
        std::unique_lock lock(mu_);
        if (!cv_.wait_until(lock, deadline,
                            [&] { return view_.newest && accept(view_.newest->info); })) {
            return deadline_exceeded("no acceptable version");
        }
        return *view_.newest;
    }
    Status announce_endpoint(std::string_view name, std::string_view address) override {
        std::lock_guard lock(mu_);
        endpoints_[std::string(name)] = std::string(address);
        return Status();
    }
    Result<std::string> wait_endpoint(const ActorId& peer, std::string_view name,
                                      Clock::TimePoint deadline) override {
        hook();
        std::unique_lock lock(mu_);
        std::optional<std::string> found;
        cv_.wait_until(lock, deadline, [&] {
            const runtime::Peer* p = view_.peer(peer);
            if (p && p->alive()) found = p->endpoint(name);
            return found.has_value();
        });
        if (!found) return deadline_exceeded(fmt::format("{} has no {}", peer.str(), name));
        return *found;
    }
    // The coordinator's answer to every relay join (set before the actor runs): by default
    // "read the publishers".
    Result<runtime::RelayChoice> relay_answer = runtime::RelayChoice();
    Result<runtime::RelayChoice> relay_source(Version, const weights::RelaySource&,
                                              Clock::TimePoint) override {
        return relay_answer;
    }
    runtime::JobView view() const override {
        std::lock_guard lock(mu_);
        return view_;
    }
    runtime::JobView wait_change(uint64_t seen, Clock::TimePoint deadline) override {
        hook();
        std::unique_lock lock(mu_);
        cv_.wait_until(lock, deadline, [&] { return view_.generation > seen || view_.cancelled; });
        return view_;
    }
    void progress(const Json&) override {}
    void metrics(int64_t step, const Json& values) override {
        std::lock_guard lock(mu_);
        metrics_[step] = values;
    }
    void event(std::string_view kind, std::string_view message) override {
        log(LogLevel::kInfo, fmt::format("event {}: {}", kind, message));
    }
    void log(LogLevel, std::string_view message) override {
        std::lock_guard lock(mu_);
        logs_.emplace_back(message);
    }
    void fail(std::string_view reason) override { log(LogLevel::kError, reason); }

private:
    void hook() {
        {
            std::lock_guard lock(mu_);
            ++waits_;
        }
        if (on_wait) on_wait();
    }
    template <typename T>
    T locked(const T& v) const {
        std::lock_guard lock(mu_);
        return v;
    }

    const config::JobSpec spec_;
    const ActorId actor_;
    const int64_t attempt_;
    const std::string node_ = "fake-node";
    const std::string run_dir_ = "/nonexistent";
    const Json placement_ = Json::object();
    mutable std::mutex mu_;
    std::condition_variable cv_;
    runtime::JobView view_;
    bool fenced_off_ = false;
    Version next_version_ = 0;
    std::vector<runtime::VersionInfo> assigned_, announced_;
    std::map<int64_t, Json> metrics_;
    std::vector<std::string> logs_;
    std::map<std::string, std::string> endpoints_;
    int waits_ = 0;
};

}  // namespace tandem::testing
