#pragma once

// StateStore: the coordinator's SQLite database (WAL) in its state directory: nodes seen, jobs with
// their specs and actors, per-job events, logs, metrics and weight versions. Every change is
// written before it is acknowledged, so `kill -9` loses nothing. Owned by the coordinator loop;
// not thread-safe.

#include <memory>
#include <string>
#include <vector>

#include "coordinator/records.h"
#include "coordinator/sqlite.h"

namespace tandem::coord {

class StateStore {
public:
    // 2: store-assigned event/log seqs, actor endpoints; 3: actors' GPU slots (a version-2
    // database gets the column when opened for writing; read as none when opened to read).
    static constexpr int kSchemaVersion = 3;

    // Opens (creating if needed) `dir`/state.db and bumps the coordinator epoch.
    static Result<std::unique_ptr<StateStore>> open(const std::string& dir);
    // Opens `dir`/state.db of a stopped (or running) coordinator to read it (`tandem dashboard`):
    // not_found when there is none, nothing created, the epoch not bumped. The caller must not
    // call the writing methods.
    static Result<std::unique_ptr<StateStore>> open_existing(const std::string& dir);

    uint64_t epoch() const { return epoch_; }
    Result<uint64_t> allocate_job_id();

    Status save_node(const NodeRecord& n);
    Result<std::vector<NodeRecord>> load_nodes();

    // Writes the job row and all its actors in one transaction.
    Status save_job(const JobRecord& j);
    Result<std::vector<JobRecord>> load_jobs();

    // Appends with the next sequence number of the job (assigned here, in the same statement, so
    // a crash between two writes can never reuse one) and returns it.
    Result<int64_t> append_event(JobId job, const EventRecord& e);
    Result<std::vector<EventRecord>> events(JobId job, int64_t after_seq, int limit);

    // Appends in order with the job's next sequence numbers.
    Status append_logs(JobId job, const std::vector<LogRecord>& lines);
    Result<std::vector<LogRecord>> logs(JobId job, int64_t after_seq, int limit);

    Status append_metrics(JobId job, int64_t step, int64_t ts_ns, const Json& values);
    Result<std::vector<std::pair<int64_t, Json>>> metrics(JobId job, int64_t after_step, int limit);

    Status save_version(JobId job, const VersionRecord& v);
    Result<std::vector<VersionRecord>> versions(JobId job);

private:
    explicit StateStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}
    Status migrate();

    std::unique_ptr<Database> db_;
    uint64_t epoch_ = 0;
    bool actor_gpus_ = true;  // the actors table has the gpus column (schema 3)
};

}  // namespace tandem::coord
