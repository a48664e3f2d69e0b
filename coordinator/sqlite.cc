#include "coordinator/sqlite.h"

#include <memory>

#include <fmt/format.h>

namespace tandem::coord {

bool Stmt::row() {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) status_ = internal_error(fmt::format("sqlite: {}", sqlite3_errmsg(db_)));
    return false;
}

Status Stmt::run() {
    while (row()) {
    }
    return status_;
}

Result<std::unique_ptr<Database>> Database::open(const std::string& path) {
    sqlite3* db = nullptr;
    const int rc =
        sqlite3_open_v2(path.c_str(), &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
        if (db) sqlite3_close(db);
        return unavailable(fmt::format("cannot open state database {}: {}", path, msg));
    }
    sqlite3_busy_timeout(db, 2000);
    return std::unique_ptr<Database>(new Database(db, path));
}

Database::~Database() { sqlite3_close(db_); }

Status Database::exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
        std::string msg = err ? err : "?";
        sqlite3_free(err);
        return internal_error(fmt::format("sqlite {}: {}", path_, msg));
    }
    return Status();
}

Result<Stmt> Database::prepare(std::string_view sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &s, nullptr) !=
        SQLITE_OK) {
        return internal_error(fmt::format("sqlite prepare: {}: {}", sqlite3_errmsg(db_), sql));
    }
    return Stmt(db_, s);
}

}  // namespace tandem::coord
