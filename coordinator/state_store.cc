#include "coordinator/state_store.h"

#include <filesystem>

#include <fmt/format.h>

#include "common/config/loader.h"

namespace tandem::coord {

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY, role TEXT NOT NULL, host TEXT NOT NULL, agent_version TEXT NOT NULL,
    resources TEXT NOT NULL, labels TEXT NOT NULL, state TEXT NOT NULL,
    first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL, dead_reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, spec_yaml TEXT NOT NULL, state TEXT NOT NULL,
    reason TEXT NOT NULL, restarts_used INTEGER NOT NULL, submitted_ns INTEGER NOT NULL,
    started_ns INTEGER NOT NULL, finished_ns INTEGER NOT NULL, step INTEGER NOT NULL,
    last_metrics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actors (
    job INTEGER NOT NULL, actor TEXT NOT NULL, node TEXT NOT NULL, attempt INTEGER NOT NULL,
    phase TEXT NOT NULL, exit_code INTEGER NOT NULL, last_error TEXT NOT NULL,
    progress TEXT NOT NULL, endpoints TEXT NOT NULL, gpus TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (job, actor));
CREATE TABLE IF NOT EXISTS events (
    job INTEGER NOT NULL, seq INTEGER NOT NULL, ts_ns INTEGER NOT NULL, kind TEXT NOT NULL,
    message TEXT NOT NULL, PRIMARY KEY (job, seq));
CREATE TABLE IF NOT EXISTS logs (
    job INTEGER NOT NULL, seq INTEGER NOT NULL, ts_ns INTEGER NOT NULL, actor TEXT NOT NULL,
    level TEXT NOT NULL, msg TEXT NOT NULL, PRIMARY KEY (job, seq));
CREATE TABLE IF NOT EXISTS metrics (
    job INTEGER NOT NULL, step INTEGER NOT NULL, ts_ns INTEGER NOT NULL, vals TEXT NOT NULL,
    PRIMARY KEY (job, step));
CREATE TABLE IF NOT EXISTS versions (
    job INTEGER NOT NULL, version INTEGER NOT NULL, published_ns INTEGER NOT NULL,
    available INTEGER NOT NULL, descriptor TEXT NOT NULL, PRIMARY KEY (job, version));
)sql";

Result<std::string> meta(Database& db, const std::string& key) {
    TANDEM_ASSIGN_OR_RETURN(Stmt s, db.prepare("SELECT value FROM meta WHERE key = ?"));
    s.bind(1, key);
    if (s.row()) return s.text(0);
    TANDEM_RETURN_IF_ERROR(s.status());
    return not_found(key);
}

Status set_meta(Database& db, const std::string& key, const std::string& value) {
    TANDEM_ASSIGN_OR_RETURN(Stmt s,
                            db.prepare("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) "
                                       "DO UPDATE SET value = excluded.value"));
    return s.bind(1, key).bind(2, value).run();
}

// BEGIN ... COMMIT, rolled back if not committed.
class Transaction {
public:
    explicit Transaction(Database& db) : db_(db) { begun_ = db_.exec("BEGIN IMMEDIATE").ok(); }
    ~Transaction() {
        if (begun_ && !done_) (void)db_.exec("ROLLBACK");
    }
    Status commit() {
        if (!begun_) return internal_error("sqlite: could not begin a transaction");
        done_ = true;
        return db_.exec("COMMIT");
    }

private:
    Database& db_;
    bool begun_ = false;
    bool done_ = false;
};

}  // namespace

Result<std::unique_ptr<StateStore>> StateStore::open(const std::string& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec)
        return unavailable(fmt::format("cannot create state directory {}: {}", dir, ec.message()));
    TANDEM_ASSIGN_OR_RETURN(auto db, Database::open(dir + "/state.db"));
    std::unique_ptr<StateStore> store(new StateStore(std::move(db)));
    TANDEM_RETURN_IF_ERROR(store->migrate());
    return store;
}

Result<std::unique_ptr<StateStore>> StateStore::open_existing(const std::string& dir) {
    const std::string path = dir + "/state.db";
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
        return not_found(fmt::format("no coordinator state at {}", path));
    TANDEM_ASSIGN_OR_RETURN(auto db, Database::open(path));
    std::unique_ptr<StateStore> store(new StateStore(std::move(db)));
    auto version = meta(*store->db_, "schema_version");
    if (!version.ok()) return version.status().with_context(path);
    store->actor_gpus_ = *version != "2";
    if (*version != std::to_string(kSchemaVersion) && *version != "2") {
        return invalid_argument(fmt::format("{}: schema version {} is not supported (expected {})",
                                            path, *version, kSchemaVersion));
    }
    auto epoch = meta(*store->db_, "epoch");
    store->epoch_ = epoch.ok() ? std::stoull(*epoch) : 0;
    return store;
}

Status StateStore::migrate() {
    // WAL with synchronous=NORMAL survives a killed process (not a power cut) without a sync per
    // commit.
    TANDEM_RETURN_IF_ERROR(db_->exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"));
    TANDEM_RETURN_IF_ERROR(db_->exec(kSchema));
    auto version = meta(*db_, "schema_version");
    const bool from_2 = version.ok() && *version == "2";
    if (from_2) {  // 2 -> 3: the actors' GPU slots
        TANDEM_RETURN_IF_ERROR(
            db_->exec("ALTER TABLE actors ADD COLUMN gpus TEXT NOT NULL DEFAULT '[]'"));
    }
    if (version.ok() && !from_2 && *version != std::to_string(kSchemaVersion)) {
        return invalid_argument(fmt::format("{}: schema version {} is not supported (expected {})",
                                            db_->path(), *version, kSchemaVersion));
    }
    TANDEM_RETURN_IF_ERROR(set_meta(*db_, "schema_version", std::to_string(kSchemaVersion)));
    auto epoch = meta(*db_, "epoch");
    epoch_ = epoch.ok() ? std::stoull(*epoch) + 1 : 1;
    return set_meta(*db_, "epoch", std::to_string(epoch_));
}

Result<uint64_t> StateStore::allocate_job_id() {
    auto last = meta(*db_, "last_job_id");
    const uint64_t id = last.ok() ? std::stoull(*last) + 1 : 1;
    TANDEM_RETURN_IF_ERROR(set_meta(*db_, "last_job_id", std::to_string(id)));
    return id;
}

Status StateStore::save_node(const NodeRecord& n) {
    TANDEM_ASSIGN_OR_RETURN(
        Stmt s, db_->prepare("INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    return s.bind(1, n.id)
        .bind(2, n.role)
        .bind(3, n.host)
        .bind(4, n.agent_version)
        .bind(5, n.resources.to_json().dump())
        .bind(6, Json(n.labels).dump())
        .bind(7, node_state_name(n.state))
        .bind(8, n.first_seen_ns)
        .bind(9, n.last_seen_ns)
        .bind(10, n.dead_reason)
        .run();
}

Result<std::vector<NodeRecord>> StateStore::load_nodes() {
    TANDEM_ASSIGN_OR_RETURN(Stmt s, db_->prepare("SELECT * FROM nodes ORDER BY id"));
    std::vector<NodeRecord> out;
    while (s.row()) {
        NodeRecord n;
        n.id = s.text(0);
        n.role = s.text(1);
        n.host = s.text(2);
        n.agent_version = s.text(3);
        auto r = wire::Resources::from_json(Json::parse(s.text(4), nullptr, false));
        if (r.ok()) n.resources = *r;
        n.labels = Json::parse(s.text(5), nullptr, false).get<std::map<std::string, std::string>>();
        n.state = s.text(6) == "alive" ? NodeState::kAlive : NodeState::kDead;
        n.first_seen_ns = s.i64(7);
        n.last_seen_ns = s.i64(8);
        n.dead_reason = s.text(9);
        out.push_back(std::move(n));
    }
    TANDEM_RETURN_IF_ERROR(s.status());
    return out;
}

Status StateStore::save_job(const JobRecord& j) {
    Transaction tx(*db_);
    {
        TANDEM_ASSIGN_OR_RETURN(
            Stmt s,
            db_->prepare("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
        TANDEM_RETURN_IF_ERROR(s.bind(1, static_cast<int64_t>(j.id.number()))
                                   .bind(2, j.spec.name)
                                   .bind(3, j.spec_yaml)
                                   .bind(4, job_state_name(j.state))
                                   .bind(5, j.reason)
                                   .bind(6, static_cast<int64_t>(j.restarts_used))
                                   .bind(7, j.submitted_ns)
                                   .bind(8, j.started_ns)
                                   .bind(9, j.finished_ns)
                                   .bind(10, j.step)
                                   .bind(11, j.last_metrics.dump())
                                   .run());
    }
    for (const auto& a : j.actors) {
        TANDEM_ASSIGN_OR_RETURN(
            Stmt s,
            db_->prepare("INSERT OR REPLACE INTO actors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
        TANDEM_RETURN_IF_ERROR(s.bind(1, static_cast<int64_t>(j.id.number()))
                                   .bind(2, a.name())
                                   .bind(3, a.node)
                                   .bind(4, a.attempt)
                                   .bind(5, wire::actor_phase_name(a.phase))
                                   .bind(6, a.exit_code)
                                   .bind(7, a.last_error)
                                   .bind(8, a.progress.dump())
                                   .bind(9, a.endpoints.dump())
                                   .bind(10, Json(a.gpus).dump())
                                   .run());
    }
    return tx.commit();
}

Result<std::vector<JobRecord>> StateStore::load_jobs() {
    std::vector<JobRecord> out;
    {
        TANDEM_ASSIGN_OR_RETURN(Stmt s, db_->prepare("SELECT * FROM jobs ORDER BY id"));
        while (s.row()) {
            JobRecord j;
            j.id = JobId(static_cast<uint64_t>(s.i64(0)));
            j.spec_yaml = s.text(2);
            auto spec =
                config::parse_job_text(j.spec_yaml, fmt::format("stored spec of {}", j.id.str()));
            if (!spec.ok()) return spec.status().with_context(db_->path());
            j.spec = std::move(*spec);
            TANDEM_ASSIGN_OR_RETURN(j.state, parse_job_state(s.text(3)));
            j.reason = s.text(4);
            j.restarts_used = static_cast<int>(s.i64(5));
            j.submitted_ns = s.i64(6);
            j.started_ns = s.i64(7);
            j.finished_ns = s.i64(8);
            j.step = s.i64(9);
            j.last_metrics = Json::parse(s.text(10), nullptr, false);
            out.push_back(std::move(j));
        }
        TANDEM_RETURN_IF_ERROR(s.status());
    }
    for (auto& j : out) {
        TANDEM_ASSIGN_OR_RETURN(
            Stmt s,
            db_->prepare(fmt::format(
                "SELECT actor, node, attempt, phase, exit_code, last_error, progress, endpoints, "
                "{} FROM actors WHERE job = ? ORDER BY actor",
                actor_gpus_ ? "gpus" : "'[]'")));
        s.bind(1, static_cast<int64_t>(j.id.number()));
        while (s.row()) {
            ActorRecord a;
            TANDEM_ASSIGN_OR_RETURN(a.id, ActorId::parse(s.text(0)));
            a.node = s.text(1);
            a.attempt = s.i64(2);
            TANDEM_ASSIGN_OR_RETURN(a.phase, wire::parse_actor_phase(s.text(3)));
            a.exit_code = s.i64(4);
            a.last_error = s.text(5);
            a.progress = Json::parse(s.text(6), nullptr, false);
            a.endpoints = Json::parse(s.text(7), nullptr, false);
            const Json gpus = Json::parse(s.text(8), nullptr, false);
            if (gpus.is_array()) {
                for (const Json& g : gpus)
                    if (g.is_number_integer()) a.gpus.push_back(g.get<int>());
            }
            j.actors.push_back(std::move(a));
        }
        TANDEM_RETURN_IF_ERROR(s.status());
        // Trainers first, then rollouts, by index: the order the scheduler made them in.
        std::sort(j.actors.begin(), j.actors.end(),
                  [](const ActorRecord& x, const ActorRecord& y) { return x.id < y.id; });
    }
    return out;
}

Result<int64_t> StateStore::append_event(JobId job, const EventRecord& e) {
    TANDEM_ASSIGN_OR_RETURN(
        Stmt s,
        db_->prepare(
            "INSERT INTO events SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4 FROM events "
            "WHERE job = ?1 RETURNING seq"));
    s.bind(1, static_cast<int64_t>(job.number()))
        .bind(2, e.ts_ns)
        .bind(3, e.kind)
        .bind(4, e.message);
    if (s.row()) {
        const int64_t seq = s.i64(0);
        TANDEM_RETURN_IF_ERROR(s.run());
        return seq;
    }
    TANDEM_RETURN_IF_ERROR(s.status());
    return internal_error("sqlite: appending an event returned no sequence number");
}

Result<std::vector<EventRecord>> StateStore::events(JobId job, int64_t after_seq, int limit) {
    TANDEM_ASSIGN_OR_RETURN(Stmt s, db_->prepare("SELECT seq, ts_ns, kind, message FROM events "
                                                 "WHERE job = ? AND seq > ? ORDER BY seq LIMIT ?"));
    s.bind(1, static_cast<int64_t>(job.number())).bind(2, after_seq).bind(3, int64_t{limit});
    std::vector<EventRecord> out;
    while (s.row()) out.push_back({s.i64(0), s.i64(1), s.text(2), s.text(3)});
    TANDEM_RETURN_IF_ERROR(s.status());
    return out;
}

Status StateStore::append_logs(JobId job, const std::vector<LogRecord>& lines) {
    Transaction tx(*db_);
    for (const auto& l : lines) {
        TANDEM_ASSIGN_OR_RETURN(
            Stmt s,
            db_->prepare(
                "INSERT INTO logs SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5 FROM logs "
                "WHERE job = ?1"));
        TANDEM_RETURN_IF_ERROR(s.bind(1, static_cast<int64_t>(job.number()))
                                   .bind(2, l.ts_ns)
                                   .bind(3, l.actor)
                                   .bind(4, l.level)
                                   .bind(5, l.msg)
                                   .run());
    }
    return tx.commit();
}

Result<std::vector<LogRecord>> StateStore::logs(JobId job, int64_t after_seq, int limit) {
    TANDEM_ASSIGN_OR_RETURN(Stmt s, db_->prepare("SELECT seq, ts_ns, actor, level, msg FROM logs "
                                                 "WHERE job = ? AND seq > ? ORDER BY seq LIMIT ?"));
    s.bind(1, static_cast<int64_t>(job.number())).bind(2, after_seq).bind(3, int64_t{limit});
    std::vector<LogRecord> out;
    while (s.row()) out.push_back({s.i64(0), s.i64(1), s.text(2), s.text(3), s.text(4)});
    TANDEM_RETURN_IF_ERROR(s.status());
    return out;
}

Status StateStore::append_metrics(JobId job, int64_t step, int64_t ts_ns, const Json& values) {
    TANDEM_ASSIGN_OR_RETURN(Stmt s,
                            db_->prepare("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)"));
    return s.bind(1, static_cast<int64_t>(job.number()))
        .bind(2, step)
        .bind(3, ts_ns)
        .bind(4, values.dump())
        .run();
}

Result<std::vector<std::pair<int64_t, Json>>> StateStore::metrics(JobId job, int64_t after_step,
                                                                  int limit) {
    TANDEM_ASSIGN_OR_RETURN(
        Stmt s,
        db_->prepare(
            "SELECT step, vals FROM metrics WHERE job = ? AND step > ? ORDER BY step LIMIT ?"));
    s.bind(1, static_cast<int64_t>(job.number())).bind(2, after_step).bind(3, int64_t{limit});
    std::vector<std::pair<int64_t, Json>> out;
    while (s.row()) out.emplace_back(s.i64(0), Json::parse(s.text(1), nullptr, false));
    TANDEM_RETURN_IF_ERROR(s.status());
    return out;
}

Status StateStore::save_version(JobId job, const VersionRecord& v) {
    TANDEM_ASSIGN_OR_RETURN(Stmt s,
                            db_->prepare("INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?, ?)"));
    return s.bind(1, static_cast<int64_t>(job.number()))
        .bind(2, static_cast<int64_t>(v.version))
        .bind(3, v.published_ns)
        .bind(4, int64_t{v.available ? 1 : 0})
        .bind(5, v.descriptor.dump())
        .run();
}

Result<std::vector<VersionRecord>> StateStore::versions(JobId job) {
    TANDEM_ASSIGN_OR_RETURN(Stmt s,
                            db_->prepare("SELECT version, published_ns, available, descriptor FROM "
                                         "versions WHERE job = ? ORDER BY version"));
    s.bind(1, static_cast<int64_t>(job.number()));
    std::vector<VersionRecord> out;
    while (s.row()) {
        out.push_back({static_cast<Version>(s.i64(0)), s.i64(1), s.i64(2) != 0,
                       Json::parse(s.text(3), nullptr, false)});
    }
    TANDEM_RETURN_IF_ERROR(s.status());
    return out;
}

}  // namespace tandem::coord
