#pragma once

// RAII owners for a SQLite database and prepared statements. Owned by one thread.

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tandem::coord {

class Stmt {
public:
    Stmt(sqlite3* db, sqlite3_stmt* s) : db_(db), s_(s) {}
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;
    Stmt(Stmt&& o) noexcept : db_(o.db_), s_(o.s_) { o.s_ = nullptr; }
    ~Stmt() {
        if (s_) sqlite3_finalize(s_);
    }

    Stmt& bind(int i, int64_t v) {
        sqlite3_bind_int64(s_, i, v);
        return *this;
    }
    Stmt& bind(int i, std::string_view v) {
        sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
        return *this;
    }
    Stmt& bind(int i, double v) {
        sqlite3_bind_double(s_, i, v);
        return *this;
    }
    // Steps once: true while a row is available; errors become Status through `done()`.
    bool row();
    // Runs to completion.
    Status run();
    Status status() const { return status_; }

    int64_t i64(int col) const { return sqlite3_column_int64(s_, col); }
    double f64(int col) const { return sqlite3_column_double(s_, col); }
    std::string text(int col) const {
        const auto* p = sqlite3_column_text(s_, col);
        return p ? std::string(reinterpret_cast<const char*>(p),
                               static_cast<size_t>(sqlite3_column_bytes(s_, col)))
                 : std::string();
    }

private:
    sqlite3* db_;
    sqlite3_stmt* s_;
    Status status_;
};

class Database {
public:
    static Result<std::unique_ptr<Database>> open(const std::string& path);
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;
    ~Database();

    Status exec(const std::string& sql);
    Result<Stmt> prepare(std::string_view sql);
    sqlite3* handle() const { return db_; }
    const std::string& path() const { return path_; }

private:
    Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
    sqlite3* db_;
    std::string path_;
};

}  // namespace tandem::coord
