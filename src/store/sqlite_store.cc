// The SQLite Store: the only file that includes <sqlite3.h>.
//
// Connections. One writer connection and a small pool of reader connections (kReaderConnections),
// all opened with SQLITE_OPEN_NOMUTEX: each connection is used by one thread at a time, which this
// file guarantees. In WAL mode readers see the last commit and never block the writer or each
// other, so HTTP handlers listing executions do not wait for the executor's writes.
//
// Writes: group commit (LevelDB's DBImpl::Write). A write is an operation queued with its caller;
// the caller at the head of the queue becomes the leader, runs up to kMaxGroup queued operations
// in one transaction (each inside its own SAVEPOINT, so one failing operation does not fail the
// others), commits, and wakes the callers with their statuses. A call returns only after the
// transaction holding its write has committed: written before acknowledged. Concurrent writers
// share one commit (and, with synchronous=FULL, one fsync). The queue holds at most one entry per
// calling thread, each of which is blocked in the call.
//
// Durability. WAL with synchronous=NORMAL by default: a commit has been written to the WAL file
// (in the OS page cache) before the call returns, so it survives a crash or kill -9 of cortex;
// after a power loss or OS crash the database is consistent but may lack the commits since the
// last checkpoint. SqliteOptions::fsync_every_commit selects synchronous=FULL (one fsync of the
// WAL per commit) for power-loss durability.
//
// Prepared statements are cached per connection, keyed by their SQL; the set of SQL texts is
// fixed (a few dozen), so the caches are bounded.
#include "store/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/mutex.h"

namespace cortex::store {
namespace {

using sqlite_internal::Migration;

constexpr int32_t kApplicationId = 0x43525458;  // "CRTX": marks a database as Cortex's
constexpr int kBusyTimeoutMs = 5000;            // waiting for another process's lock
constexpr size_t kReaderConnections = 4;
constexpr size_t kMaxGroup = 64;  // operations committed together by one leader
constexpr size_t kMaxListLimit = 1000;
constexpr size_t kMaxLogLimit = 10000;
// After a checkpoint, a WAL file larger than this is truncated to it.
constexpr int64_t kJournalSizeLimitBytes = int64_t{64} << 20;
constexpr std::string_view kInterruptedError =
    "interrupted: the server stopped while it was running";

constexpr std::string_view kStatuses[] = {"queued",  "running",   "succeeded",  "failed",
                                          "timeout", "cancelled", "interrupted"};

// ---------------------------------------------------------------------------------------------
// The schema. Append only: each released migration stays as it is; a change is a new one.
//
// Workflow runs (issue 4) come as migration 2: workflow_runs (id, name, manifest_version, status,
// input_json, timestamps), workflow_steps (run_id, step, status, attempt, idempotency_key,
// execution_id, output_json, ...: the current state, PRIMARY KEY (run_id, step)) and
// workflow_events (run_id, seq, at_ms, step, type, data_json: the append-only log that state is
// derived from, PRIMARY KEY (run_id, seq)), each with real columns for what the engine queries.
constexpr Migration kMigrations[] = {
    {1, "executions and their output", R"sql(
CREATE TABLE executions (
  id                TEXT PRIMARY KEY NOT NULL,
  kind              TEXT NOT NULL,
  name              TEXT NOT NULL,
  status            TEXT NOT NULL,
  parameters_json   TEXT NOT NULL,
  result_json       TEXT NOT NULL,
  error             TEXT NOT NULL,
  exit_code         INTEGER,
  signal            INTEGER,
  stderr_tail       TEXT NOT NULL,
  created_ms        INTEGER NOT NULL,
  started_ms        INTEGER NOT NULL,
  finished_ms       INTEGER NOT NULL,
  duration_ms       INTEGER NOT NULL,
  cpu_user_ms       INTEGER NOT NULL,
  cpu_system_ms     INTEGER NOT NULL,
  peak_memory_bytes INTEGER NOT NULL,
  sandboxed         INTEGER NOT NULL CHECK (sandboxed IN (0, 1)),
  idempotency_key   TEXT NOT NULL,
  manifest_version  TEXT NOT NULL,
  -- Kept by AppendLogs: lines stored now, and the last seq appended (lines may have been dropped).
  log_line_count    INTEGER NOT NULL DEFAULT 0,
  log_last_seq      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX executions_by_created ON executions (created_ms DESC, id DESC);
CREATE INDEX executions_by_name ON executions (name, created_ms DESC, id DESC);
CREATE INDEX executions_by_status ON executions (status, created_ms DESC, id DESC);

CREATE TABLE execution_logs (
  execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
  seq          INTEGER NOT NULL,
  stream       TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
  at_ms        INTEGER NOT NULL,
  text         TEXT NOT NULL,
  PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;
)sql"},
    {2, "workflow runs, step states and their event log", R"sql(
CREATE TABLE workflow_runs (
  id               TEXT PRIMARY KEY NOT NULL,
  workflow         TEXT NOT NULL,
  status           TEXT NOT NULL,
  input_json       TEXT NOT NULL,
  output_json      TEXT NOT NULL,
  error            TEXT NOT NULL,
  trigger          TEXT NOT NULL,
  manifest_path    TEXT NOT NULL,
  manifest_text    TEXT NOT NULL,
  manifest_version TEXT NOT NULL,
  parent_run_id    TEXT NOT NULL,
  parent_step      TEXT NOT NULL,
  depth            INTEGER NOT NULL,
  created_ms       INTEGER NOT NULL,
  started_ms       INTEGER NOT NULL,
  finished_ms      INTEGER NOT NULL,
  updated_ms       INTEGER NOT NULL,
  last_event_seq   INTEGER NOT NULL
);
CREATE INDEX workflow_runs_by_created ON workflow_runs (created_ms DESC, id DESC);
CREATE INDEX workflow_runs_by_workflow ON workflow_runs (workflow, created_ms DESC, id DESC);
CREATE INDEX workflow_runs_by_status ON workflow_runs (status, created_ms DESC, id DESC);
CREATE INDEX workflow_runs_by_parent ON workflow_runs (parent_run_id) WHERE parent_run_id != '';

CREATE TABLE workflow_steps (
  run_id          TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
  step            TEXT NOT NULL,
  status          TEXT NOT NULL,
  attempt         INTEGER NOT NULL,
  output_json     TEXT NOT NULL,
  error           TEXT NOT NULL,
  execution_id    TEXT NOT NULL,
  started_ms      INTEGER NOT NULL,
  finished_ms     INTEGER NOT NULL,
  next_attempt_ms INTEGER NOT NULL,
  PRIMARY KEY (run_id, step)
) WITHOUT ROWID;

CREATE TABLE workflow_events (
  run_id    TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
  seq       INTEGER NOT NULL,
  at_ms     INTEGER NOT NULL,
  type      TEXT NOT NULL,
  step      TEXT NOT NULL,
  attempt   INTEGER NOT NULL,
  data_json TEXT NOT NULL,
  PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE workflow_schedules (
  workflow    TEXT PRIMARY KEY NOT NULL,
  last_due_ms INTEGER NOT NULL
) WITHOUT ROWID;
)sql"},
    {3, "deployments of relics and monuments", R"sql(
CREATE TABLE deployments (
  kind             TEXT NOT NULL,
  name             TEXT NOT NULL,
  driver           TEXT NOT NULL,
  desired          TEXT NOT NULL,
  state            TEXT NOT NULL,
  error            TEXT NOT NULL,
  owner            TEXT NOT NULL,
  environment      TEXT NOT NULL,
  pid              INTEGER NOT NULL,
  pid_start        INTEGER NOT NULL,
  project          TEXT NOT NULL,
  restarts         INTEGER NOT NULL,
  manifest_version TEXT NOT NULL,
  detail_json      TEXT NOT NULL,
  created_ms       INTEGER NOT NULL,
  updated_ms       INTEGER NOT NULL,
  started_ms       INTEGER NOT NULL,
  PRIMARY KEY (kind, name)
) WITHOUT ROWID;
)sql"},
    {4, "notes on an execution's output", R"sql(
-- What Cortex changed in a tool's output to keep it (invalid UTF-8 replaced, ...), one a line.
ALTER TABLE executions ADD COLUMN notes TEXT NOT NULL DEFAULT '';
)sql"},
    {5, "agent sessions and runs", R"sql(
CREATE TABLE agent_sessions (
  id             TEXT PRIMARY KEY,
  agent          TEXT NOT NULL,
  messages_json  TEXT NOT NULL,
  variables_json TEXT NOT NULL,
  runs           INTEGER NOT NULL,
  input_tokens   INTEGER NOT NULL,
  output_tokens  INTEGER NOT NULL,
  created_ms     INTEGER NOT NULL,
  updated_ms     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX agent_sessions_by_agent ON agent_sessions (agent, updated_ms);
CREATE TABLE agent_runs (
  id          TEXT PRIMARY KEY,
  agent       TEXT NOT NULL,
  session_id  TEXT NOT NULL,
  status      TEXT NOT NULL,
  reason      TEXT NOT NULL,
  input       TEXT NOT NULL,
  record_json TEXT NOT NULL,
  created_ms  INTEGER NOT NULL,
  finished_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX agent_runs_by_time ON agent_runs (created_ms);
CREATE INDEX agent_runs_by_session ON agent_runs (session_id, created_ms);
)sql"},
    {6, "agent run journals, to resume agent runs", R"sql(
ALTER TABLE agent_runs ADD COLUMN request_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE agent_runs ADD COLUMN parent TEXT NOT NULL DEFAULT '';
CREATE INDEX agent_runs_by_status ON agent_runs (status, created_ms);
CREATE TABLE agent_run_journal (
  run_id    TEXT NOT NULL,
  seq       INTEGER NOT NULL,
  at_ms     INTEGER NOT NULL,
  kind      TEXT NOT NULL,
  data_json TEXT NOT NULL,
  PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
)sql"},
    {7, "API keys and the audit log", R"sql(
CREATE TABLE api_keys (
  id           TEXT PRIMARY KEY,
  name         TEXT NOT NULL,
  role         TEXT NOT NULL,
  hash         TEXT NOT NULL UNIQUE,
  created_ms   INTEGER NOT NULL,
  revoked_ms   INTEGER NOT NULL,
  last_used_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE audit_log (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  at_ms      INTEGER NOT NULL,
  actor      TEXT NOT NULL,
  role       TEXT NOT NULL,
  method     TEXT NOT NULL,
  path       TEXT NOT NULL,
  target     TEXT NOT NULL,
  status     INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  detail     TEXT NOT NULL
);
CREATE INDEX audit_log_by_actor ON audit_log (actor, seq);
)sql"},
    {8, "API keys scoped to kinds and names", R"sql(
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
)sql"},
};

constexpr std::string_view kAgentSessionColumns =
    "id, agent, messages_json, variables_json, runs, input_tokens, output_tokens, created_ms, "
    "updated_ms";
constexpr std::string_view kAgentRunColumns =
    "id, agent, session_id, status, reason, input, record_json, created_ms, finished_ms, "
    "request_json, parent";

constexpr std::string_view kDeploymentColumns =
    "kind, name, driver, desired, state, error, owner, environment, pid, pid_start, project, "
    "restarts, manifest_version, detail_json, created_ms, updated_ms, started_ms";

constexpr std::string_view kRunColumns =
    "id, workflow, status, input_json, output_json, error, trigger, manifest_path, "
    "manifest_text, manifest_version, parent_run_id, parent_step, depth, created_ms, started_ms, "
    "finished_ms, updated_ms, last_event_seq";
constexpr std::string_view kStepColumns =
    "run_id, step, status, attempt, output_json, error, execution_id, started_ms, finished_ms, "
    "next_attempt_ms";
constexpr std::string_view kRunStatuses[] = {"queued",    "running", "paused",
                                             "succeeded", "failed",  "cancelled"};

// The record's columns, in the order BindRecord and ReadRecord use.
constexpr std::string_view kRecordColumns =
    "id, kind, name, status, parameters_json, result_json, error, exit_code, signal, "
    "stderr_tail, created_ms, started_ms, finished_ms, duration_ms, cpu_user_ms, cpu_system_ms, "
    "peak_memory_bytes, sandboxed, idempotency_key, manifest_version, notes";

constexpr std::string_view kInsertExecution =
    "INSERT INTO executions (id, kind, name, status, parameters_json, result_json, error, "
    "exit_code, signal, stderr_tail, created_ms, started_ms, finished_ms, duration_ms, "
    "cpu_user_ms, cpu_system_ms, peak_memory_bytes, sandboxed, idempotency_key, manifest_version, "
    "notes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
    "?18, ?19, ?20, ?24)";

constexpr std::string_view kUpdateExecution =
    "UPDATE executions SET kind = ?2, name = ?3, status = ?4, parameters_json = ?5, "
    "result_json = ?6, error = ?7, exit_code = ?8, signal = ?9, stderr_tail = ?10, "
    "created_ms = ?11, started_ms = ?12, finished_ms = ?13, duration_ms = ?14, cpu_user_ms = ?15, "
    "cpu_system_ms = ?16, peak_memory_bytes = ?17, sandboxed = ?18, idempotency_key = ?19, "
    "manifest_version = ?20, notes = ?24 WHERE id = ?1";

// The outcome of an execution (FinishExecution): only the columns that change while it runs, so
// the indexes on the ones fixed at its creation (name, created_ms) are left alone, plus the
// line counters of the lines written with it (?21 how many, ?22 the last seq, ?23 the first;
// NULL without lines), in the same statement. Numbered like BindRecord (notes are ?24, added
// after the counters).
constexpr std::string_view kFinishExecution =
    "UPDATE executions SET status = ?4, result_json = ?6, error = ?7, exit_code = ?8, "
    "signal = ?9, stderr_tail = ?10, started_ms = ?12, finished_ms = ?13, duration_ms = ?14, "
    "cpu_user_ms = ?15, cpu_system_ms = ?16, peak_memory_bytes = ?17, notes = ?24, "
    "log_line_count = log_line_count + ?21, log_last_seq = coalesce(?22, log_last_seq) "
    "WHERE id = ?1 AND (?23 IS NULL OR log_last_seq < ?23) RETURNING log_line_count";

// ---------------------------------------------------------------------------------------------
// Errors.

std::string SystemErrorSuffix(sqlite3* db, int rc) {
  if (db == nullptr) return "";
  switch (rc & 0xff) {
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_PERM: {
      int err = sqlite3_system_errno(db);
      if (err != 0) return " (" + std::generic_category().message(err) + ")";
      return "";
    }
    default:
      return "";
  }
}

// A Status for a failed SQLite call; `context` says what was being done. Must be called right
// after the failure, before the connection is used again (sqlite3_errmsg is per connection).
Status SqliteError(sqlite3* db, int rc, std::string_view context) {
  std::string message = "sqlite: ";
  message += context;
  message += ": ";
  const char* text = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  message += text != nullptr ? text : sqlite3_errstr(rc);
  message += SystemErrorSuffix(db, rc);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      message += " (still locked after waiting " + std::to_string(kBusyTimeoutMs) + " ms)";
      return UnavailableError(std::move(message));
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_NOMEM:
    case SQLITE_PROTOCOL:
      return UnavailableError(std::move(message));
    case SQLITE_TOOBIG:
      return InvalidArgumentError(std::move(message));
    default:  // SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_CONSTRAINT, SQLITE_ERROR, ...
      return InternalError(std::move(message));
  }
}

// ---------------------------------------------------------------------------------------------
// Connections and statements.

class Connection;

// A cached prepared statement in use. Reset (and its bindings cleared) when it goes out of scope,
// so no statement keeps a read transaction open. Bound text must outlive it (SQLITE_STATIC).
class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(Statement&& other) noexcept
      : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)), bind_rc_(other.bind_rc_) {}
  Statement& operator=(Statement&&) = delete;
  ~Statement() {
    if (stmt_ == nullptr) return;
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  // Bind errors are kept and reported by the next Step().
  void Bind(int index, std::string_view value) {
    Check(
        sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_STATIC, SQLITE_UTF8));
  }
  void Bind(int index, int64_t value) { Check(sqlite3_bind_int64(stmt_, index, value)); }
  void Bind(int index, const std::optional<int>& value) {
    Check(value ? sqlite3_bind_int64(stmt_, index, *value) : sqlite3_bind_null(stmt_, index));
  }
  void Bind(int index, const std::optional<int64_t>& value) {
    Check(value ? sqlite3_bind_int64(stmt_, index, *value) : sqlite3_bind_null(stmt_, index));
  }

  // true: a row is ready; false: done.
  Result<bool> Step() {
    if (bind_rc_ != SQLITE_OK) return SqliteError(db_, bind_rc_, "binding a parameter");
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, rc, Context());
  }
  // Steps to the end, ignoring rows.
  Status Run() {
    for (;;) {
      CORTEX_ASSIGN_OR_RETURN(bool row, Step());
      if (!row) return Status::Ok();
    }
  }
  // Ready to be bound and run again.
  void Reset() {
    sqlite3_reset(stmt_);
    bind_rc_ = SQLITE_OK;
  }

  // The extended result code of the last failed Step (for constraint violations).
  int ExtendedErrorCode() const { return sqlite3_extended_errcode(db_); }

  bool IsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  double Double(int column) const { return sqlite3_column_double(stmt_, column); }
  std::string Text(int column) const {
    const unsigned char* text = sqlite3_column_text(stmt_, column);
    if (text == nullptr) return "";
    return std::string(reinterpret_cast<const char*>(text),
                       static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
  }
  std::optional<int> OptionalInt(int column) const {
    if (IsNull(column)) return std::nullopt;
    return static_cast<int>(Int(column));
  }

 private:
  void Check(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }
  std::string Context() const {
    const char* sql = sqlite3_sql(stmt_);
    std::string text = sql != nullptr ? sql : "";
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    return "running \"" + text + "\"";
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
};

class Connection {
 public:
  // `flags`: SQLITE_OPEN_READWRITE, optionally | SQLITE_OPEN_CREATE.
  static Result<std::unique_ptr<Connection>> Open(const std::string& path, int flags) {
    sqlite3* db = nullptr;
    int rc = sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      Status status = SqliteError(db, rc, "opening " + path);
      sqlite3_close_v2(db);  // a handle is returned even on failure (or nullptr: a no-op)
      return status;
    }
    auto connection = std::unique_ptr<Connection>(new Connection(db));
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, kBusyTimeoutMs);
    return connection;
  }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() {
    for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }

  sqlite3* db() const { return db_; }

  // The cached statement for `sql`, prepared on first use.
  Result<Statement> Prepare(std::string_view sql) {
    auto it = cache_.find(std::string(sql));
    if (it != cache_.end()) return Statement(db_, it->second);
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return SqliteError(db_, rc, "preparing \"" + std::string(sql.substr(0, 60)) + "\"");
    }
    cache_.emplace(std::string(sql), stmt);
    return Statement(db_, stmt);
  }

  // Runs one statement through the cache, ignoring rows (transaction control on the hot path).
  Status Run(std::string_view sql) {
    CORTEX_ASSIGN_OR_RETURN(Statement stmt, Prepare(sql));
    return stmt.Run();
  }

  // Runs one or more statements without results (DDL, pragmas), prepared each time.
  Status Exec(const std::string& sql, std::string_view context = {}) {
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) return Status::Ok();
    return SqliteError(db_, rc, context.empty() ? "running \"" + sql + "\"" : std::string(context));
  }

  // The single integer a query (a pragma) returns.
  Result<int64_t> QueryInt(std::string_view sql) {
    CORTEX_ASSIGN_OR_RETURN(Statement stmt, Prepare(sql));
    CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return InternalError("sqlite: \"" + std::string(sql) + "\" returned no row");
    return stmt.Int(0);
  }
  Result<std::string> QueryText(std::string_view sql) {
    CORTEX_ASSIGN_OR_RETURN(Statement stmt, Prepare(sql));
    CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return InternalError("sqlite: \"" + std::string(sql) + "\" returned no row");
    return stmt.Text(0);
  }

  // Whether a transaction is open (SQLite rolls one back by itself after some errors).
  bool InTransaction() const { return sqlite3_get_autocommit(db_) == 0; }

 private:
  explicit Connection(sqlite3* db) : db_(db) {}

  sqlite3* db_;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
};

// ---------------------------------------------------------------------------------------------
// Records.

void BindRecord(Statement& stmt, const ExecutionRecord& r) {
  stmt.Bind(1, r.id);
  stmt.Bind(2, r.kind);
  stmt.Bind(3, r.name);
  stmt.Bind(4, r.status);
  stmt.Bind(5, r.parameters_json);
  stmt.Bind(6, r.result_json);
  stmt.Bind(7, r.error);
  stmt.Bind(8, r.exit_code);
  stmt.Bind(9, r.signal);
  stmt.Bind(10, r.stderr_tail);
  stmt.Bind(11, r.created_ms);
  stmt.Bind(12, r.started_ms);
  stmt.Bind(13, r.finished_ms);
  stmt.Bind(14, r.duration_ms);
  stmt.Bind(15, r.cpu_user_ms);
  stmt.Bind(16, r.cpu_system_ms);
  stmt.Bind(17, r.peak_memory_bytes);
  stmt.Bind(18, int64_t{r.sandboxed ? 1 : 0});
  stmt.Bind(19, r.idempotency_key);
  stmt.Bind(20, r.manifest_version);
  stmt.Bind(24, r.notes);
}

ExecutionRecord ReadRecord(const Statement& stmt) {
  ExecutionRecord r;
  r.id = stmt.Text(0);
  r.kind = stmt.Text(1);
  r.name = stmt.Text(2);
  r.status = stmt.Text(3);
  r.parameters_json = stmt.Text(4);
  r.result_json = stmt.Text(5);
  r.error = stmt.Text(6);
  r.exit_code = stmt.OptionalInt(7);
  r.signal = stmt.OptionalInt(8);
  r.stderr_tail = stmt.Text(9);
  r.created_ms = stmt.Int(10);
  r.started_ms = stmt.Int(11);
  r.finished_ms = stmt.Int(12);
  r.duration_ms = stmt.Int(13);
  r.cpu_user_ms = stmt.Int(14);
  r.cpu_system_ms = stmt.Int(15);
  r.peak_memory_bytes = stmt.Int(16);
  r.sandboxed = stmt.Int(17) != 0;
  r.idempotency_key = stmt.Text(18);
  r.manifest_version = stmt.Text(19);
  r.notes = stmt.Text(20);
  return r;
}

bool IsKnownStatus(std::string_view status) {
  return std::find(std::begin(kStatuses), std::end(kStatuses), status) != std::end(kStatuses);
}

Status ValidateRecord(const ExecutionRecord& r) {
  if (r.id.empty()) return InvalidArgumentError("an execution needs an id");
  if (!IsKnownStatus(r.status)) {
    return InvalidArgumentError("execution " + r.id + ": unknown status \"" + r.status + "\"");
  }
  return Status::Ok();
}

std::string ListSql(bool by_name, bool by_status, bool before) {
  std::string sql = "SELECT " + std::string(kRecordColumns) + " FROM executions";
  std::vector<std::string_view> conditions;
  if (by_name) conditions.push_back("name = ?1");
  // With both, the name index leads (a tool's records, in order) and status filters them: "+"
  // keeps the planner, which has no statistics, from sorting a status's records instead.
  if (by_status) conditions.push_back(by_name ? "+status = ?2" : "status = ?2");
  if (before) conditions.push_back("(created_ms, id) < (?3, ?4)");
  for (size_t i = 0; i < conditions.size(); ++i) {
    sql += i == 0 ? " WHERE " : " AND ";
    sql += conditions[i];
  }
  sql += " ORDER BY created_ms DESC, id DESC LIMIT ?5";
  return sql;
}

// ---------------------------------------------------------------------------------------------
// Opening: identity checks and migrations.

// Refuses a file that is not SQLite, a SQLite database that is not Cortex's, and a Cortex
// database from a newer schema version, before anything is written to it.
Status CheckIdentity(Connection& c, const std::string& path, int latest_version) {
  // The first read of the file: a file that is not SQLite fails here, before any write.
  int rc = sqlite3_exec(c.db(), "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr);
  if ((rc & 0xff) == SQLITE_NOTADB) {
    return FailedPreconditionError(path +
                                   " is not a SQLite database; refusing to use or change it "
                                   "(move it away, or choose another --data-dir)");
  }
  if (rc != SQLITE_OK) return SqliteError(c.db(), rc, "reading " + path);
  CORTEX_ASSIGN_OR_RETURN(int64_t app_id, c.QueryInt("PRAGMA application_id"));
  CORTEX_ASSIGN_OR_RETURN(int64_t version, c.QueryInt("PRAGMA user_version"));
  CORTEX_ASSIGN_OR_RETURN(int64_t objects, c.QueryInt("SELECT count(*) FROM sqlite_master"));
  if (app_id == 0 && version == 0 && objects == 0) return Status::Ok();  // new (or empty)
  if (app_id != kApplicationId) {
    char id[16];
    std::snprintf(id, sizeof id, "0x%08x", static_cast<unsigned>(app_id));
    return FailedPreconditionError(
        path + " is a SQLite database but not Cortex's (application_id " + id + ", " +
        std::to_string(objects) + " schema objects); refusing to change it");
  }
  if (version > latest_version) {
    return FailedPreconditionError(
        path + " has schema version " + std::to_string(version) +
        ", newer than this cortex supports (" + std::to_string(latest_version) +
        "): it was written by a newer cortex; run that version, or restore a backup");
  }
  return Status::Ok();
}

Status Migrate(Connection& c, const std::string& path, std::span<const Migration> migrations) {
  const int latest = migrations.empty() ? 0 : migrations.back().version;
  CORTEX_ASSIGN_OR_RETURN(int64_t current, c.QueryInt("PRAGMA user_version"));
  if (current >= latest) return Status::Ok();

  // BEGIN IMMEDIATE takes the write lock: another process opening the same file waits, then finds
  // the work done.
  CORTEX_RETURN_IF_ERROR(c.Exec("BEGIN IMMEDIATE", "starting the schema migration of " + path));
  auto apply = [&]() -> Status {
    CORTEX_RETURN_IF_ERROR(CheckIdentity(c, path, latest));
    CORTEX_ASSIGN_OR_RETURN(int64_t version, c.QueryInt("PRAGMA user_version"));
    CORTEX_RETURN_IF_ERROR(
        c.Exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY NOT "
               "NULL, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)"));
    for (const Migration& m : migrations) {
      if (m.version <= version) continue;
      std::string what = "schema migration " + std::to_string(m.version) + " (" +
                         std::string(m.name) + ") of " + path;
      CORTEX_RETURN_IF_ERROR(c.Exec(std::string(m.sql), what));
      CORTEX_ASSIGN_OR_RETURN(
          Statement record,
          c.Prepare("INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?1, ?2, "
                    "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))"));
      record.Bind(1, int64_t{m.version});
      record.Bind(2, m.name);
      CORTEX_RETURN_IF_ERROR(record.Run());
    }
    CORTEX_RETURN_IF_ERROR(c.Exec("PRAGMA application_id = " + std::to_string(kApplicationId)));
    return c.Exec("PRAGMA user_version = " + std::to_string(latest));
  };
  Status status = apply();
  if (status.ok()) status = c.Exec("COMMIT", "committing the schema migration of " + path);
  if (!status.ok() && c.InTransaction()) (void)c.Exec("ROLLBACK");
  return status;
}

// ---------------------------------------------------------------------------------------------
// The store.

class SqliteStore final : public Store {
 public:
  SqliteStore(SqliteOptions options, std::unique_ptr<Connection> writer,
              std::vector<std::unique_ptr<Connection>> readers)
      : options_(std::move(options)), writer_(std::move(writer)), readers_(std::move(readers)) {
    for (auto& r : readers_) free_readers_.push_back(r.get());
  }

  ~SqliteStore() override {
    readers_.clear();  // the writer closes last: its close checkpoints the WAL into the database
    writer_.reset();
  }

  Status CreateExecution(const ExecutionRecord& record) override {
    CORTEX_RETURN_IF_ERROR(ValidateRecord(record));
    return Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(Statement stmt, c.Prepare(kInsertExecution));
      BindRecord(stmt, record);
      Status status = stmt.Run();
      if (!status.ok() && (stmt.ExtendedErrorCode() == SQLITE_CONSTRAINT_PRIMARYKEY ||
                           stmt.ExtendedErrorCode() == SQLITE_CONSTRAINT_UNIQUE)) {
        return AlreadyExistsError("execution " + record.id + " already exists");
      }
      return status;
    });
  }

  Status UpdateExecution(const ExecutionRecord& record) override {
    CORTEX_RETURN_IF_ERROR(ValidateRecord(record));
    return Write([&](Connection& c) { return UpdateIn(c, record); });
  }

  Status FinishExecution(const ExecutionRecord& record,
                         const std::vector<LogLine>& lines) override {
    CORTEX_RETURN_IF_ERROR(ValidateRecord(record));
    CORTEX_RETURN_IF_ERROR(ValidateLines(record.id, lines));
    return Write([&](Connection& c) -> Status { return FinishIn(c, record, lines); });
  }

  Result<std::optional<ExecutionRecord>> GetExecution(const std::string& id) override {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(Statement stmt,
                            reader->Prepare("SELECT " + std::string(kRecordColumns) +
                                            " FROM executions WHERE id = ?1"));
    stmt.Bind(1, id);
    CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return std::optional<ExecutionRecord>();
    return std::optional<ExecutionRecord>(ReadRecord(stmt));
  }

  Result<std::vector<ExecutionRecord>> ListExecutions(const ExecutionFilter& filter) override {
    if (filter.status && !IsKnownStatus(*filter.status)) {
      return InvalidArgumentError("unknown execution status \"" + *filter.status + "\"");
    }
    const int64_t limit = static_cast<int64_t>(std::clamp<size_t>(filter.limit, 1, kMaxListLimit));
    Lease reader(*this);
    Connection& c = *reader;
    // One read transaction: the page starts exactly where the cursor record is in this snapshot.
    CORTEX_RETURN_IF_ERROR(c.Run("BEGIN"));
    auto list = [&]() -> Result<std::vector<ExecutionRecord>> {
      int64_t before_created = 0;
      if (filter.before_id) {
        CORTEX_ASSIGN_OR_RETURN(Statement cursor,
                                c.Prepare("SELECT created_ms FROM executions WHERE id = ?1"));
        cursor.Bind(1, *filter.before_id);
        CORTEX_ASSIGN_OR_RETURN(bool found, cursor.Step());
        if (!found) {
          return InvalidArgumentError("before_id: no execution " + *filter.before_id);
        }
        before_created = cursor.Int(0);
      }
      CORTEX_ASSIGN_OR_RETURN(Statement stmt,
                              c.Prepare(ListSql(filter.name.has_value(), filter.status.has_value(),
                                                filter.before_id.has_value())));
      if (filter.name) stmt.Bind(1, *filter.name);
      if (filter.status) stmt.Bind(2, *filter.status);
      if (filter.before_id) {
        stmt.Bind(3, before_created);
        stmt.Bind(4, *filter.before_id);
      }
      stmt.Bind(5, limit);
      std::vector<ExecutionRecord> records;
      for (;;) {
        CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (!row) break;
        records.push_back(ReadRecord(stmt));
      }
      return records;
    };
    auto records = list();  // its statements are reset when it returns
    Status end = c.Run("COMMIT");
    if (!records.ok()) return records.status();
    if (!end.ok()) return end;
    return records;
  }

  Result<int> MarkInterrupted(int64_t now_ms) override {
    int changed = 0;
    CORTEX_RETURN_IF_ERROR(Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(
          Statement stmt,
          c.Prepare("UPDATE executions SET status = 'interrupted', error = ?1, finished_ms = ?2, "
                    "duration_ms = CASE WHEN status = 'running' AND started_ms > 0 "
                    "THEN max(?2 - started_ms, 0) ELSE duration_ms END "
                    "WHERE status IN ('queued', 'running')"));
      stmt.Bind(1, kInterruptedError);
      stmt.Bind(2, now_ms);
      CORTEX_RETURN_IF_ERROR(stmt.Run());
      changed = sqlite3_changes(c.db());
      return Status::Ok();
    }));
    return changed;
  }

  Status AppendLogs(const std::string& execution_id, const std::vector<LogLine>& lines) override {
    if (lines.empty()) return Status::Ok();
    CORTEX_RETURN_IF_ERROR(ValidateLines(execution_id, lines));
    return Write([&](Connection& c) { return AppendLogsIn(c, execution_id, lines); });
  }

  Result<std::vector<LogLine>> GetLogs(const std::string& execution_id, int64_t after_seq,
                                       size_t limit) override {
    Lease reader(*this);
    Connection& c = *reader;
    std::vector<LogLine> lines;
    {
      CORTEX_ASSIGN_OR_RETURN(Statement stmt,
                              c.Prepare("SELECT seq, stream, at_ms, text FROM execution_logs WHERE "
                                        "execution_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"));
      stmt.Bind(1, execution_id);
      stmt.Bind(2, after_seq);
      stmt.Bind(3, static_cast<int64_t>(std::clamp<size_t>(limit, 1, kMaxLogLimit)));
      for (;;) {
        CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (!row) break;
        LogLine line;
        line.seq = stmt.Int(0);
        line.is_stderr = stmt.Text(1) == "stderr";
        line.at_ms = stmt.Int(2);
        line.text = stmt.Text(3);
        lines.push_back(std::move(line));
      }
    }
    if (lines.empty()) {  // none yet, or no such execution?
      CORTEX_ASSIGN_OR_RETURN(Statement exists,
                              c.Prepare("SELECT 1 FROM executions WHERE id = ?1"));
      exists.Bind(1, execution_id);
      CORTEX_ASSIGN_OR_RETURN(bool found, exists.Step());
      if (!found) return NotFoundError("no execution " + execution_id);
    }
    return lines;
  }

  Status WriteRun(const RunTransition& t) override {
    std::string run_id = t.run               ? t.run->id
                         : !t.steps.empty()  ? t.steps.front().run_id
                         : !t.events.empty() ? t.events.front().run_id
                                             : "";
    if (run_id.empty()) return Status::Ok();
    if (t.run && !IsOneOf(t.run->status, kRunStatuses)) {
      return InvalidArgumentError("unknown run status \"" + t.run->status + "\"");
    }
    return Write([&](Connection& c) -> Status {
      if (t.run && t.run_exists) {
        const RunRecord& r = *t.run;
        CORTEX_ASSIGN_OR_RETURN(
            Statement stmt,
            c.Prepare("UPDATE workflow_runs SET status = ?2, output_json = ?3, error = ?4, "
                      "started_ms = ?5, finished_ms = ?6, updated_ms = ?7, last_event_seq = ?8 "
                      "WHERE id = ?1"));
        stmt.Bind(1, r.id);
        stmt.Bind(2, r.status);
        stmt.Bind(3, r.output_json);
        stmt.Bind(4, r.error);
        stmt.Bind(5, r.started_ms);
        stmt.Bind(6, r.finished_ms);
        stmt.Bind(7, r.updated_ms);
        stmt.Bind(8, r.last_event_seq);
        CORTEX_RETURN_IF_ERROR(stmt.Run());
        if (sqlite3_changes(c.db()) == 0) return NotFoundError("no workflow run " + r.id);
      } else if (t.run) {
        const RunRecord& r = *t.run;
        CORTEX_ASSIGN_OR_RETURN(
            Statement stmt,
            // An upsert, not INSERT OR REPLACE: a replace deletes the row first, and the
            // delete would cascade to the run's steps and events.
            c.Prepare("INSERT INTO workflow_runs (" + std::string(kRunColumns) +
                      ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
                      "?15, ?16, ?17, ?18) ON CONFLICT (id) DO UPDATE SET status = ?3, "
                      "output_json = ?5, error = ?6, started_ms = ?15, finished_ms = ?16, "
                      "updated_ms = ?17, last_event_seq = ?18"));
        stmt.Bind(1, r.id);
        stmt.Bind(2, r.workflow);
        stmt.Bind(3, r.status);
        stmt.Bind(4, r.input_json);
        stmt.Bind(5, r.output_json);
        stmt.Bind(6, r.error);
        stmt.Bind(7, r.trigger);
        stmt.Bind(8, r.manifest_path);
        stmt.Bind(9, r.manifest_text);
        stmt.Bind(10, r.manifest_version);
        stmt.Bind(11, r.parent_run_id);
        stmt.Bind(12, r.parent_step);
        stmt.Bind(13, int64_t{r.depth});
        stmt.Bind(14, r.created_ms);
        stmt.Bind(15, r.started_ms);
        stmt.Bind(16, r.finished_ms);
        stmt.Bind(17, r.updated_ms);
        stmt.Bind(18, r.last_event_seq);
        CORTEX_RETURN_IF_ERROR(stmt.Run());
      }
      if (!t.steps.empty()) {
        CORTEX_ASSIGN_OR_RETURN(
            Statement stmt,
            c.Prepare("INSERT OR REPLACE INTO workflow_steps (" + std::string(kStepColumns) +
                      ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"));
        for (const StepRecord& st : t.steps) {
          stmt.Bind(1, st.run_id);
          stmt.Bind(2, st.step);
          stmt.Bind(3, st.status);
          stmt.Bind(4, int64_t{st.attempt});
          stmt.Bind(5, st.output_json);
          stmt.Bind(6, st.error);
          stmt.Bind(7, st.execution_id);
          stmt.Bind(8, st.started_ms);
          stmt.Bind(9, st.finished_ms);
          stmt.Bind(10, st.next_attempt_ms);
          Status status = stmt.Run();
          if (!status.ok() && stmt.ExtendedErrorCode() == SQLITE_CONSTRAINT_FOREIGNKEY) {
            return NotFoundError("no workflow run " + st.run_id);
          }
          CORTEX_RETURN_IF_ERROR(status);
          stmt.Reset();
        }
      }
      if (!t.events.empty()) {
        CORTEX_ASSIGN_OR_RETURN(
            Statement stmt,
            c.Prepare("INSERT INTO workflow_events (run_id, seq, at_ms, type, step, attempt, "
                      "data_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
        for (const RunEvent& e : t.events) {
          stmt.Bind(1, e.run_id);
          stmt.Bind(2, e.seq);
          stmt.Bind(3, e.at_ms);
          stmt.Bind(4, e.type);
          stmt.Bind(5, e.step);
          stmt.Bind(6, int64_t{e.attempt});
          stmt.Bind(7, e.data_json);
          Status status = stmt.Run();
          if (!status.ok() && (stmt.ExtendedErrorCode() == SQLITE_CONSTRAINT_PRIMARYKEY)) {
            return InvalidArgumentError("event " + std::to_string(e.seq) + " of run " + e.run_id +
                                        " already exists");
          }
          if (!status.ok() && stmt.ExtendedErrorCode() == SQLITE_CONSTRAINT_FOREIGNKEY) {
            return NotFoundError("no workflow run " + e.run_id);
          }
          CORTEX_RETURN_IF_ERROR(status);
          stmt.Reset();
        }
      }
      return Status::Ok();
    });
  }

  Result<std::optional<RunRecord>> GetRun(const std::string& id) override {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(Statement stmt, reader->Prepare("SELECT " + std::string(kRunColumns) +
                                                            " FROM workflow_runs WHERE id = ?1"));
    stmt.Bind(1, id);
    CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return std::optional<RunRecord>();
    return std::optional<RunRecord>(ReadRun(stmt));
  }

  Result<std::vector<StepRecord>> GetSteps(const std::string& run_id) override {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(Statement stmt,
                            reader->Prepare("SELECT " + std::string(kStepColumns) +
                                            " FROM workflow_steps WHERE run_id = ?1"));
    stmt.Bind(1, run_id);
    std::vector<StepRecord> out;
    for (;;) {
      CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      StepRecord st;
      st.run_id = stmt.Text(0);
      st.step = stmt.Text(1);
      st.status = stmt.Text(2);
      st.attempt = static_cast<int>(stmt.Int(3));
      st.output_json = stmt.Text(4);
      st.error = stmt.Text(5);
      st.execution_id = stmt.Text(6);
      st.started_ms = stmt.Int(7);
      st.finished_ms = stmt.Int(8);
      st.next_attempt_ms = stmt.Int(9);
      out.push_back(std::move(st));
    }
    return out;
  }

  Result<std::vector<RunRecord>> ListRuns(const RunFilter& f) override {
    if (f.status && !IsOneOf(*f.status, kRunStatuses)) {
      return InvalidArgumentError("unknown run status \"" + *f.status + "\"");
    }
    std::string sql = "SELECT " + std::string(kRunColumns) + " FROM workflow_runs WHERE 1";
    if (f.workflow) sql += " AND workflow = ?1";
    if (f.status) sql += " AND status = ?2";
    if (f.unfinished_only) sql += " AND status IN ('queued', 'running', 'paused')";
    if (f.parent_run_id) sql += " AND parent_run_id = ?3";
    if (f.before_id) {
      sql += " AND (created_ms, id) < (SELECT created_ms, id FROM workflow_runs WHERE id = ?4)";
    }
    sql += " ORDER BY created_ms DESC, id DESC";
    if (!f.unfinished_only) sql += " LIMIT ?5";
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(Statement stmt, reader->Prepare(sql));
    if (f.workflow) stmt.Bind(1, *f.workflow);
    if (f.status) stmt.Bind(2, *f.status);
    if (f.parent_run_id) stmt.Bind(3, *f.parent_run_id);
    if (f.before_id) stmt.Bind(4, *f.before_id);
    if (!f.unfinished_only) {
      stmt.Bind(5, static_cast<int64_t>(std::clamp<size_t>(f.limit, 1, kMaxListLimit)));
    }
    std::vector<RunRecord> out;
    for (;;) {
      CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      out.push_back(ReadRun(stmt));
    }
    return out;
  }

  Result<std::vector<RunEvent>> GetRunEvents(const std::string& run_id, int64_t after_seq,
                                             size_t limit) override {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(
        Statement stmt,
        reader->Prepare("SELECT run_id, seq, at_ms, type, step, attempt, data_json FROM "
                        "workflow_events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"));
    stmt.Bind(1, run_id);
    stmt.Bind(2, after_seq);
    stmt.Bind(3, static_cast<int64_t>(std::clamp<size_t>(limit, 1, kMaxLogLimit)));
    std::vector<RunEvent> out;
    for (;;) {
      CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      RunEvent e;
      e.run_id = stmt.Text(0);
      e.seq = stmt.Int(1);
      e.at_ms = stmt.Int(2);
      e.type = stmt.Text(3);
      e.step = stmt.Text(4);
      e.attempt = static_cast<int>(stmt.Int(5));
      e.data_json = stmt.Text(6);
      out.push_back(std::move(e));
    }
    return out;
  }

  Result<std::optional<int64_t>> GetScheduleMark(const std::string& workflow) override {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(
        Statement stmt,
        reader->Prepare("SELECT last_due_ms FROM workflow_schedules WHERE workflow = ?1"));
    stmt.Bind(1, workflow);
    CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return std::optional<int64_t>();
    return std::optional<int64_t>(stmt.Int(0));
  }

  Status PutDeployment(const DeploymentRecord& r) override {
    return Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(
          Statement stmt,
          c.Prepare("INSERT OR REPLACE INTO deployments (" + std::string(kDeploymentColumns) +
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
                    "?16, ?17)"));
      stmt.Bind(1, r.kind);
      stmt.Bind(2, r.name);
      stmt.Bind(3, r.driver);
      stmt.Bind(4, r.desired);
      stmt.Bind(5, r.state);
      stmt.Bind(6, r.error);
      stmt.Bind(7, r.owner);
      stmt.Bind(8, r.environment);
      stmt.Bind(9, r.pid);
      stmt.Bind(10, r.pid_start);
      stmt.Bind(11, r.project);
      stmt.Bind(12, r.restarts);
      stmt.Bind(13, r.manifest_version);
      stmt.Bind(14, r.detail_json);
      stmt.Bind(15, r.created_ms);
      stmt.Bind(16, r.updated_ms);
      stmt.Bind(17, r.started_ms);
      return stmt.Run();
    });
  }

  Result<std::optional<DeploymentRecord>> GetDeployment(const std::string& kind,
                                                        const std::string& name) override {
    CORTEX_ASSIGN_OR_RETURN(auto rows, QueryDeployments(kind, &name));
    if (rows.empty()) return std::optional<DeploymentRecord>();
    return std::optional<DeploymentRecord>(std::move(rows.front()));
  }

  Result<std::vector<DeploymentRecord>> ListDeployments(const std::string& kind) override {
    return QueryDeployments(kind, nullptr);
  }

  Status DeleteDeployment(const std::string& kind, const std::string& name) override {
    return Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(Statement stmt,
                              c.Prepare("DELETE FROM deployments WHERE kind = ?1 AND name = ?2"));
      stmt.Bind(1, kind);
      stmt.Bind(2, name);
      CORTEX_RETURN_IF_ERROR(stmt.Run());
      if (sqlite3_changes(c.db()) == 0) return NotFoundError("no " + kind + " deployment " + name);
      return Status::Ok();
    });
  }

  Status PutAgentSession(const AgentSessionRecord& r) override {
    return Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(
          Statement stmt,
          c.Prepare("INSERT OR REPLACE INTO agent_sessions (" + std::string(kAgentSessionColumns) +
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"));
      stmt.Bind(1, r.id);
      stmt.Bind(2, r.agent);
      stmt.Bind(3, r.messages_json);
      stmt.Bind(4, r.variables_json);
      stmt.Bind(5, r.runs);
      stmt.Bind(6, r.input_tokens);
      stmt.Bind(7, r.output_tokens);
      stmt.Bind(8, r.created_ms);
      stmt.Bind(9, r.updated_ms);
      return stmt.Run();
    });
  }

  Result<std::optional<AgentSessionRecord>> GetAgentSession(const std::string& id) override {
    CORTEX_ASSIGN_OR_RETURN(auto rows, QuerySessions("id = ?1", id, 1));
    if (rows.empty()) return std::optional<AgentSessionRecord>();
    return std::optional<AgentSessionRecord>(std::move(rows.front()));
  }

  Result<std::vector<AgentSessionRecord>> ListAgentSessions(const std::string& agent,
                                                            size_t limit) override {
    return QuerySessions(agent.empty() ? "?1 = ''" : "agent = ?1", agent, limit);
  }

  Status DeleteAgentSession(const std::string& id) override {
    return Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(Statement stmt,
                              c.Prepare("DELETE FROM agent_sessions WHERE id = ?1"));
      stmt.Bind(1, id);
      CORTEX_RETURN_IF_ERROR(stmt.Run());
      if (sqlite3_changes(c.db()) == 0) return NotFoundError("no agent session " + id);
      return Status::Ok();
    });
  }

  Status PutAgentRun(const AgentRunRecord& r) override {
    return Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(
          Statement stmt,
          c.Prepare("INSERT OR REPLACE INTO agent_runs (" + std::string(kAgentRunColumns) +
                    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"));
      stmt.Bind(1, r.id);
      stmt.Bind(2, r.agent);
      stmt.Bind(3, r.session_id);
      stmt.Bind(4, r.status);
      stmt.Bind(5, r.reason);
      stmt.Bind(6, r.input);
      stmt.Bind(7, r.record_json);
      stmt.Bind(8, r.created_ms);
      stmt.Bind(9, r.finished_ms);
      stmt.Bind(10, r.request_json);
      stmt.Bind(11, r.parent);
      return stmt.Run();
    });
  }

  Result<std::optional<AgentRunRecord>> GetAgentRun(const std::string& id) override {
    CORTEX_ASSIGN_OR_RETURN(auto rows, QueryAgentRuns("id = ?1", id, "", 1));
    if (rows.empty()) return std::optional<AgentRunRecord>();
    return std::optional<AgentRunRecord>(std::move(rows.front()));
  }

  Result<std::vector<AgentRunRecord>> ListAgentRuns(const std::string& agent,
                                                    const std::string& session_id,
                                                    size_t limit) override {
    return QueryAgentRuns("(?1 = '' OR agent = ?1) AND (?2 = '' OR session_id = ?2)", agent,
                          session_id, limit);
  }

  Result<int> MarkAgentRunsInterrupted(int64_t now_ms) override {
    int changed = 0;
    CORTEX_RETURN_IF_ERROR(Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(
          Statement stmt,
          c.Prepare("UPDATE agent_runs SET status = 'interrupted', reason = 'interrupted', "
                    "finished_ms = ?1 WHERE status = 'running'"));
      stmt.Bind(1, now_ms);
      CORTEX_RETURN_IF_ERROR(stmt.Run());
      changed = sqlite3_changes(c.db());
      return Status::Ok();
    }));
    return changed;
  }

  Result<std::vector<AgentUsage>> AgentUsageTotals(const std::string& agent) override {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(
        Statement stmt,
        reader->Prepare("SELECT agent, COUNT(*), "
                        "COALESCE(SUM(json_extract(record_json, '$.usage.input_tokens')), 0), "
                        "COALESCE(SUM(json_extract(record_json, '$.usage.output_tokens')), 0), "
                        "COALESCE(SUM(json_extract(record_json, '$.usage.cost')), 0.0) "
                        "FROM agent_runs WHERE status != 'running' AND json_valid(record_json) "
                        "AND (?1 = '' OR agent = ?1) GROUP BY agent ORDER BY agent"));
    stmt.Bind(1, agent);
    std::vector<AgentUsage> out;
    for (;;) {
      CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      AgentUsage u;
      u.agent = stmt.Text(0);
      u.runs = stmt.Int(1);
      u.input_tokens = stmt.Int(2);
      u.output_tokens = stmt.Int(3);
      u.cost = stmt.Double(4);
      out.push_back(std::move(u));
    }
    return out;
  }

  Result<std::vector<AgentRunRecord>> ListRunningAgentRuns() override {
    CORTEX_ASSIGN_OR_RETURN(auto rows,
                            QueryAgentRuns("status = 'running' AND ?1 = ''", "", "", 1000000));
    std::reverse(rows.begin(), rows.end());
    return rows;
  }

  Status AppendAgentJournal(const AgentJournalEntry& e) override {
    return Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(
          Statement stmt,
          c.Prepare("INSERT INTO agent_run_journal (run_id, seq, at_ms, kind, data_json) VALUES "
                    "(?1, ?2, ?3, ?4, ?5)"));
      stmt.Bind(1, e.run_id);
      stmt.Bind(2, e.seq);
      stmt.Bind(3, e.at_ms);
      stmt.Bind(4, e.kind);
      stmt.Bind(5, e.data_json);
      Status st = stmt.Run();
      if (!st.ok() && stmt.ExtendedErrorCode() == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return AlreadyExistsError("agent run " + e.run_id + " already has journal entry " +
                                  std::to_string(e.seq));
      }
      return st;
    });
  }

  Result<std::vector<AgentJournalEntry>> GetAgentJournal(const std::string& run_id) override {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(Statement stmt,
                            reader->Prepare("SELECT seq, at_ms, kind, data_json FROM "
                                            "agent_run_journal WHERE run_id = ?1 ORDER BY seq"));
    stmt.Bind(1, run_id);
    std::vector<AgentJournalEntry> out;
    for (;;) {
      CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      AgentJournalEntry e;
      e.run_id = run_id;
      e.seq = stmt.Int(0);
      e.at_ms = stmt.Int(1);
      e.kind = stmt.Text(2);
      e.data_json = stmt.Text(3);
      out.push_back(std::move(e));
    }
    return out;
  }

  Status PutApiKey(const ApiKeyRecord& r) override {
    return Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(
          Statement stmt,
          c.Prepare("INSERT OR REPLACE INTO api_keys (id, name, role, hash, created_ms, "
                    "revoked_ms, last_used_ms, scopes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"));
      stmt.Bind(1, r.id);
      stmt.Bind(2, r.name);
      stmt.Bind(3, r.role);
      stmt.Bind(4, r.hash);
      stmt.Bind(5, r.created_ms);
      stmt.Bind(6, r.revoked_ms);
      stmt.Bind(7, r.last_used_ms);
      std::string scopes;  // space-separated: a scope has no spaces
      for (const auto& sc : r.scopes) scopes += (scopes.empty() ? "" : " ") + sc;
      stmt.Bind(8, scopes);
      return stmt.Run();
    });
  }

  Result<std::optional<ApiKeyRecord>> FindApiKeyByHash(const std::string& hash) override {
    CORTEX_ASSIGN_OR_RETURN(auto rows, QueryApiKeys("hash = ?1", hash));
    if (rows.empty()) return std::optional<ApiKeyRecord>();
    return std::optional<ApiKeyRecord>(std::move(rows.front()));
  }

  Result<std::optional<ApiKeyRecord>> GetApiKey(const std::string& id) override {
    CORTEX_ASSIGN_OR_RETURN(auto rows, QueryApiKeys("id = ?1", id));
    if (rows.empty()) return std::optional<ApiKeyRecord>();
    return std::optional<ApiKeyRecord>(std::move(rows.front()));
  }

  Result<std::vector<ApiKeyRecord>> ListApiKeys() override { return QueryApiKeys("?1 = ''", ""); }

  Result<int64_t> AppendAudit(const AuditEntry& e) override {
    int64_t seq = 0;
    CORTEX_RETURN_IF_ERROR(Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(
          Statement stmt,
          c.Prepare("INSERT INTO audit_log (at_ms, actor, role, method, path, target, status, "
                    "request_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"));
      stmt.Bind(1, e.at_ms);
      stmt.Bind(2, e.actor);
      stmt.Bind(3, e.role);
      stmt.Bind(4, e.method);
      stmt.Bind(5, e.path);
      stmt.Bind(6, e.target);
      stmt.Bind(7, static_cast<int64_t>(e.status));
      stmt.Bind(8, e.request_id);
      stmt.Bind(9, e.detail);
      CORTEX_RETURN_IF_ERROR(stmt.Run());
      seq = sqlite3_last_insert_rowid(c.db());
      return Status::Ok();
    }));
    return seq;
  }

  Result<std::vector<AuditEntry>> ListAudit(const AuditFilter& f) override {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(
        Statement stmt,
        reader->Prepare("SELECT seq, at_ms, actor, role, method, path, target, status, "
                        "request_id, detail FROM audit_log WHERE (?1 IS NULL OR actor = ?1) AND "
                        "(?2 IS NULL OR substr(path, 1, length(?2)) = ?2) AND (?3 IS NULL OR "
                        "at_ms >= ?3) AND (?4 IS NULL OR seq < ?4) ORDER BY seq DESC LIMIT " +
                        std::to_string(std::clamp<size_t>(f.limit, 1, 1000))));
    if (f.actor) stmt.Bind(1, *f.actor);
    if (f.path_prefix) stmt.Bind(2, *f.path_prefix);
    if (f.since_ms) stmt.Bind(3, *f.since_ms);
    if (f.before_seq) stmt.Bind(4, *f.before_seq);
    std::vector<AuditEntry> out;
    for (;;) {
      CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      AuditEntry e;
      e.seq = stmt.Int(0);
      e.at_ms = stmt.Int(1);
      e.actor = stmt.Text(2);
      e.role = stmt.Text(3);
      e.method = stmt.Text(4);
      e.path = stmt.Text(5);
      e.target = stmt.Text(6);
      e.status = static_cast<int>(stmt.Int(7));
      e.request_id = stmt.Text(8);
      e.detail = stmt.Text(9);
      out.push_back(std::move(e));
    }
    return out;
  }

  Status SetScheduleMark(const std::string& workflow, int64_t due_ms) override {
    return Write([&](Connection& c) -> Status {
      CORTEX_ASSIGN_OR_RETURN(
          Statement stmt,
          c.Prepare("INSERT OR REPLACE INTO workflow_schedules (workflow, last_due_ms) VALUES "
                    "(?1, ?2)"));
      stmt.Bind(1, workflow);
      stmt.Bind(2, due_ms);
      return stmt.Run();
    });
  }

 private:
  Result<std::vector<ApiKeyRecord>> QueryApiKeys(const char* where, const std::string& arg) {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(
        Statement stmt,
        reader->Prepare(std::string("SELECT id, name, role, hash, created_ms, revoked_ms, "
                                    "last_used_ms, scopes FROM api_keys WHERE ") +
                        where + " ORDER BY created_ms, id"));
    stmt.Bind(1, arg);
    std::vector<ApiKeyRecord> out;
    for (;;) {
      CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      ApiKeyRecord r;
      r.id = stmt.Text(0);
      r.name = stmt.Text(1);
      r.role = stmt.Text(2);
      r.hash = stmt.Text(3);
      r.created_ms = stmt.Int(4);
      r.revoked_ms = stmt.Int(5);
      r.last_used_ms = stmt.Int(6);
      std::istringstream scopes(stmt.Text(7));
      for (std::string sc; scopes >> sc;) r.scopes.push_back(sc);
      out.push_back(std::move(r));
    }
    return out;
  }

  Result<std::vector<AgentSessionRecord>> QuerySessions(const char* where, const std::string& arg,
                                                        size_t limit) {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(
        Statement stmt,
        reader->Prepare("SELECT " + std::string(kAgentSessionColumns) +
                        " FROM agent_sessions WHERE " + where + " ORDER BY updated_ms DESC LIMIT " +
                        std::to_string(std::min<size_t>(limit, 1000))));
    stmt.Bind(1, arg);
    std::vector<AgentSessionRecord> out;
    for (;;) {
      CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      AgentSessionRecord r;
      r.id = stmt.Text(0);
      r.agent = stmt.Text(1);
      r.messages_json = stmt.Text(2);
      r.variables_json = stmt.Text(3);
      r.runs = stmt.Int(4);
      r.input_tokens = stmt.Int(5);
      r.output_tokens = stmt.Int(6);
      r.created_ms = stmt.Int(7);
      r.updated_ms = stmt.Int(8);
      out.push_back(std::move(r));
    }
    return out;
  }

  Result<std::vector<AgentRunRecord>> QueryAgentRuns(const char* where, const std::string& a,
                                                     const std::string& b, size_t limit) {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(
        Statement stmt,
        reader->Prepare("SELECT " + std::string(kAgentRunColumns) + " FROM agent_runs WHERE " +
                        where + " ORDER BY created_ms DESC LIMIT " +
                        std::to_string(std::min<size_t>(limit, 1000))));
    stmt.Bind(1, a);
    if (std::string_view(where).find("?2") != std::string_view::npos) stmt.Bind(2, b);
    std::vector<AgentRunRecord> out;
    for (;;) {
      CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      AgentRunRecord r;
      r.id = stmt.Text(0);
      r.agent = stmt.Text(1);
      r.session_id = stmt.Text(2);
      r.status = stmt.Text(3);
      r.reason = stmt.Text(4);
      r.input = stmt.Text(5);
      r.record_json = stmt.Text(6);
      r.created_ms = stmt.Int(7);
      r.finished_ms = stmt.Int(8);
      r.request_json = stmt.Text(9);
      r.parent = stmt.Text(10);
      out.push_back(std::move(r));
    }
    return out;
  }

  Result<std::vector<DeploymentRecord>> QueryDeployments(const std::string& kind,
                                                         const std::string* name) {
    Lease reader(*this);
    CORTEX_ASSIGN_OR_RETURN(Statement stmt,
                            reader->Prepare("SELECT " + std::string(kDeploymentColumns) +
                                            " FROM deployments WHERE kind = ?1" +
                                            (name ? " AND name = ?2" : " ORDER BY name")));
    stmt.Bind(1, kind);
    if (name) stmt.Bind(2, *name);
    std::vector<DeploymentRecord> out;
    for (;;) {
      CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      DeploymentRecord r;
      r.kind = stmt.Text(0);
      r.name = stmt.Text(1);
      r.driver = stmt.Text(2);
      r.desired = stmt.Text(3);
      r.state = stmt.Text(4);
      r.error = stmt.Text(5);
      r.owner = stmt.Text(6);
      r.environment = stmt.Text(7);
      r.pid = stmt.Int(8);
      r.pid_start = stmt.Int(9);
      r.project = stmt.Text(10);
      r.restarts = stmt.Int(11);
      r.manifest_version = stmt.Text(12);
      r.detail_json = stmt.Text(13);
      r.created_ms = stmt.Int(14);
      r.updated_ms = stmt.Int(15);
      r.started_ms = stmt.Int(16);
      out.push_back(std::move(r));
    }
    return out;
  }

  static Status ValidateLines(const std::string& execution_id, const std::vector<LogLine>& lines) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].seq < 1 || (i > 0 && lines[i].seq <= lines[i - 1].seq)) {
        return InvalidArgumentError("log lines of " + execution_id +
                                    ": seq must be >= 1 and increasing, got " +
                                    std::to_string(lines[i].seq) + " at line " + std::to_string(i));
      }
    }
    return Status::Ok();
  }

  // One UPDATE for the outcome and the line counters, then the lines (see kFinishExecution).
  Status FinishIn(Connection& c, const ExecutionRecord& record, const std::vector<LogLine>& lines) {
    const int64_t cap = static_cast<int64_t>(options_.max_log_lines_per_execution);
    const int64_t n = static_cast<int64_t>(lines.size());
    const int64_t skip = std::max<int64_t>(0, n - cap);  // dropped by the cap at once: not written
    int64_t count = 0;
    {
      CORTEX_ASSIGN_OR_RETURN(Statement stmt, c.Prepare(kFinishExecution));
      BindRecord(stmt, record);
      stmt.Bind(21, n - skip);
      stmt.Bind(22, lines.empty() ? std::optional<int64_t>() : lines.back().seq);
      stmt.Bind(23, lines.empty() ? std::optional<int64_t>() : lines.front().seq);
      CORTEX_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) {
        // No such execution, or lines that do not follow the stored ones: the precise error.
        if (!lines.empty()) CORTEX_RETURN_IF_ERROR(AppendLogsIn(c, record.id, lines));
        return UpdateIn(c, record);
      }
      count = stmt.Int(0);
      CORTEX_RETURN_IF_ERROR(stmt.Run());  // to SQLITE_DONE
    }
    CORTEX_RETURN_IF_ERROR(InsertLines(c, record.id, lines, skip));
    if (count <= cap) return Status::Ok();
    CORTEX_RETURN_IF_ERROR(DeleteOldestLines(c, record.id, count - cap));
    CORTEX_ASSIGN_OR_RETURN(Statement update,
                            c.Prepare("UPDATE executions SET log_line_count = ?2 WHERE id = ?1"));
    update.Bind(1, record.id);
    update.Bind(2, cap);
    return update.Run();
  }

  // Inserts lines[skip..].
  static Status InsertLines(Connection& c, const std::string& execution_id,
                            const std::vector<LogLine>& lines, int64_t skip) {
    const int64_t n = static_cast<int64_t>(lines.size());
    if (skip >= n) return Status::Ok();
    CORTEX_ASSIGN_OR_RETURN(Statement insert,
                            c.Prepare("INSERT INTO execution_logs (execution_id, seq, stream, "
                                      "at_ms, text) VALUES (?1, ?2, ?3, ?4, ?5)"));
    for (int64_t i = skip; i < n; ++i) {
      const LogLine& line = lines[static_cast<size_t>(i)];
      insert.Bind(1, execution_id);
      insert.Bind(2, line.seq);
      insert.Bind(3, std::string_view(line.is_stderr ? "stderr" : "stdout"));
      insert.Bind(4, line.at_ms);
      insert.Bind(5, line.text);
      CORTEX_RETURN_IF_ERROR(insert.Run());
      insert.Reset();
    }
    return Status::Ok();
  }

  // Drops the `excess` oldest lines of an execution.
  static Status DeleteOldestLines(Connection& c, const std::string& execution_id, int64_t excess) {
    CORTEX_ASSIGN_OR_RETURN(
        Statement trim,
        c.Prepare("DELETE FROM execution_logs WHERE execution_id = ?1 AND seq IN (SELECT seq "
                  "FROM execution_logs WHERE execution_id = ?1 ORDER BY seq LIMIT ?2)"));
    trim.Bind(1, execution_id);
    trim.Bind(2, excess);
    return trim.Run();
  }

  static Status UpdateIn(Connection& c, const ExecutionRecord& record) {
    CORTEX_ASSIGN_OR_RETURN(Statement stmt, c.Prepare(kUpdateExecution));
    BindRecord(stmt, record);
    CORTEX_RETURN_IF_ERROR(stmt.Run());
    if (sqlite3_changes(c.db()) == 0) return NotFoundError("no execution " + record.id);
    return Status::Ok();
  }

  Status AppendLogsIn(Connection& c, const std::string& execution_id,
                      const std::vector<LogLine>& lines) {
    const int64_t cap = static_cast<int64_t>(options_.max_log_lines_per_execution);
    int64_t count = 0, last_seq = 0;
    {
      CORTEX_ASSIGN_OR_RETURN(
          Statement stmt,
          c.Prepare("SELECT log_line_count, log_last_seq FROM executions WHERE id = ?1"));
      stmt.Bind(1, execution_id);
      CORTEX_ASSIGN_OR_RETURN(bool found, stmt.Step());
      if (!found) return NotFoundError("no execution " + execution_id);
      count = stmt.Int(0);
      last_seq = stmt.Int(1);
    }
    if (lines.front().seq <= last_seq) {
      return InvalidArgumentError(
          "log lines of " + execution_id + ": seq " + std::to_string(lines.front().seq) +
          " is not after the last one stored (" + std::to_string(last_seq) + ")");
    }
    // Lines that the cap would drop at once are not written at all.
    const int64_t n = static_cast<int64_t>(lines.size());
    const int64_t skip = std::max<int64_t>(0, n - cap);
    CORTEX_RETURN_IF_ERROR(InsertLines(c, execution_id, lines, skip));
    count += n - skip;
    if (count > cap) {
      CORTEX_RETURN_IF_ERROR(DeleteOldestLines(c, execution_id, count - cap));
      count = cap;
    }
    CORTEX_ASSIGN_OR_RETURN(
        Statement update,
        c.Prepare("UPDATE executions SET log_line_count = ?2, log_last_seq = ?3 WHERE id = ?1"));
    update.Bind(1, execution_id);
    update.Bind(2, count);
    update.Bind(3, lines.back().seq);
    return update.Run();
  }

  static bool IsOneOf(std::string_view v, std::span<const std::string_view> set) {
    return std::find(set.begin(), set.end(), v) != set.end();
  }

  static RunRecord ReadRun(Statement& stmt) {
    RunRecord r;
    r.id = stmt.Text(0);
    r.workflow = stmt.Text(1);
    r.status = stmt.Text(2);
    r.input_json = stmt.Text(3);
    r.output_json = stmt.Text(4);
    r.error = stmt.Text(5);
    r.trigger = stmt.Text(6);
    r.manifest_path = stmt.Text(7);
    r.manifest_text = stmt.Text(8);
    r.manifest_version = stmt.Text(9);
    r.parent_run_id = stmt.Text(10);
    r.parent_step = stmt.Text(11);
    r.depth = static_cast<int>(stmt.Int(12));
    r.created_ms = stmt.Int(13);
    r.started_ms = stmt.Int(14);
    r.finished_ms = stmt.Int(15);
    r.updated_ms = stmt.Int(16);
    r.last_event_seq = stmt.Int(17);
    return r;
  }

  // A reader connection borrowed from the pool for one call.
  class Lease {
   public:
    explicit Lease(SqliteStore& store) : store_(store) {
      MutexLock lock(store_.readers_mu_);
      store_.readers_cv_.wait(lock.native(), [&]() CORTEX_REQUIRES(store_.readers_mu_) {
        return !store_.free_readers_.empty();
      });
      connection_ = store_.free_readers_.back();
      store_.free_readers_.pop_back();
    }
    ~Lease() {
      {
        MutexLock lock(store_.readers_mu_);
        store_.free_readers_.push_back(connection_);
      }
      store_.readers_cv_.notify_one();
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Connection* operator->() const { return connection_; }
    Connection& operator*() const { return *connection_; }

   private:
    SqliteStore& store_;
    Connection* connection_ = nullptr;
  };

  using WriteOp = std::function<Status(Connection&)>;

  // A caller waiting in Write(). Lives on the caller's stack; guarded by write_mu_.
  struct Writer {
    const WriteOp* op = nullptr;
    Status status;
    bool done = false;
    std::condition_variable cv;
  };

  // Runs `op` in a committed transaction (shared with other callers' operations) and returns its
  // status, or the transaction's failure.
  Status Write(const WriteOp& op) {
    Writer self;
    self.op = &op;
    MutexLock lock(write_mu_);
    writers_.push_back(&self);
    self.cv.wait(lock.native(), [&]() CORTEX_REQUIRES(write_mu_) {
      return self.done || writers_.front() == &self;
    });
    if (self.done) return self.status;  // a leader committed it

    // The leader: commit a group, then hand the lead to the next waiting caller.
    std::vector<Writer*> group(writers_.begin(),
                               writers_.begin() + std::min(writers_.size(), kMaxGroup));
    lock.Unlock();
    CommitGroup(group);  // only the leader uses writer_
    lock.Lock();
    for (size_t i = 0; i < group.size(); ++i) {
      Writer* w = writers_.front();
      writers_.pop_front();
      w->done = true;
      if (w != &self) w->cv.notify_one();
    }
    if (!writers_.empty()) writers_.front()->cv.notify_one();
    return self.status;
  }

  // Sets each writer's status. An operation that fails is undone alone (ROLLBACK TO its
  // savepoint); a failure of the transaction itself fails every operation of the group.
  void CommitGroup(const std::vector<Writer*>& group) {
    Connection& c = *writer_;
    // Rolls the transaction back; operations that had not failed on their own fail with `status`.
    auto abort = [&](const Status& status) {
      if (c.InTransaction()) (void)c.Exec("ROLLBACK");
      for (Writer* w : group) {
        if (w->status.ok()) w->status = status;
      }
    };
    Status begin = c.Run("BEGIN IMMEDIATE");
    if (!begin.ok()) return abort(begin);
    for (Writer* w : group) {
      Status savepoint = c.Run("SAVEPOINT op");
      if (!savepoint.ok()) return abort(savepoint);
      Status status = (*w->op)(c);
      if (!c.InTransaction()) {  // SQLite rolled it all back itself (disk full, I/O error, ...)
        return abort(status.ok() ? InternalError("sqlite: the transaction was rolled back")
                                 : status);
      }
      Status end = status.ok() ? Status::Ok() : c.Run("ROLLBACK TO op");
      if (end.ok()) end = c.Run("RELEASE op");
      if (!end.ok()) return abort(end);
      w->status = std::move(status);
    }
    Status commit = c.Run("COMMIT");
    if (!commit.ok()) abort(commit);
  }

  const SqliteOptions options_;
  std::unique_ptr<Connection> writer_;

  Mutex write_mu_;
  // Head: the leader; at most one entry per calling thread.
  std::deque<Writer*> writers_ CORTEX_GUARDED_BY(write_mu_);

  std::vector<std::unique_ptr<Connection>> readers_;
  Mutex readers_mu_;
  std::condition_variable readers_cv_;
  std::vector<Connection*> free_readers_ CORTEX_GUARDED_BY(readers_mu_);
};

Status CheckFolder(const std::string& path) {
  std::string folder = ".";
  if (size_t slash = path.rfind('/'); slash != std::string::npos) {
    folder = slash == 0 ? "/" : path.substr(0, slash);
  }
  struct stat st {};
  if (stat(folder.c_str(), &st) != 0) {
    const int err = errno;
    return FailedPreconditionError("cannot open the state database " + path + ": its folder " +
                                   folder +
                                   (err == ENOENT ? " does not exist" : " cannot be reached") +
                                   " (" + std::generic_category().message(err) + ")");
  }
  if (!S_ISDIR(st.st_mode)) {
    return FailedPreconditionError("cannot open the state database " + path + ": " + folder +
                                   " is not a folder");
  }
  // WAL mode creates <path>-wal and <path>-shm next to the database, even when it exists.
  if (faccessat(AT_FDCWD, folder.c_str(), W_OK | X_OK, AT_EACCESS) != 0) {
    const int err = errno;
    return FailedPreconditionError("cannot open the state database " + path + ": its folder " +
                                   folder + " is not writable (" +
                                   std::generic_category().message(err) +
                                   "); SQLite creates the database and its -wal and -shm files "
                                   "there");
  }
  return Status::Ok();
}

}  // namespace

namespace sqlite_internal {

std::span<const Migration> Migrations() { return kMigrations; }

std::string ListExecutionsSql(bool by_name, bool by_status, bool before) {
  return ListSql(by_name, by_status, before);
}

Result<std::unique_ptr<Store>> OpenWithMigrations(const SqliteOptions& options,
                                                  std::span<const Migration> migrations) {
  for (size_t i = 0; i < migrations.size(); ++i) {
    CORTEX_CHECK_MSG(migrations[i].version == static_cast<int>(i) + 1,
                     "migrations are numbered 1, 2, 3, ... in order");
  }
  const std::string& path = options.path;
  if (path.empty()) return InvalidArgumentError("the state database needs a path");
  if (path == ":memory:") {
    return InvalidArgumentError("the state database must be a file, not " + path);
  }
  CORTEX_RETURN_IF_ERROR(CheckFolder(path));
  const int latest = migrations.empty() ? 0 : migrations.back().version;

  CORTEX_ASSIGN_OR_RETURN(std::unique_ptr<Connection> writer,
                          Connection::Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  sqlite3_db_config(writer->db(), SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  if (sqlite3_db_readonly(writer->db(), "main") == 1) {  // SQLite falls back to read-only
    return FailedPreconditionError("cannot open the state database " + path +
                                   ": the file is not writable");
  }
  // Nothing is written before the file is known to be ours (or new).
  CORTEX_RETURN_IF_ERROR(CheckIdentity(*writer, path, latest));

  CORTEX_ASSIGN_OR_RETURN(std::string mode, writer->QueryText("PRAGMA journal_mode = WAL"));
  if (mode != "wal") {
    return FailedPreconditionError("cannot put " + path + " in WAL mode (journal_mode is " + mode +
                                   "); is it on a network file system?");
  }
  CORTEX_RETURN_IF_ERROR(writer->Exec(options.fsync_every_commit ? "PRAGMA synchronous = FULL"
                                                                 : "PRAGMA synchronous = NORMAL"));
  CORTEX_RETURN_IF_ERROR(writer->Exec("PRAGMA foreign_keys = ON"));
  CORTEX_RETURN_IF_ERROR(
      writer->Exec("PRAGMA journal_size_limit = " + std::to_string(kJournalSizeLimitBytes)));
  CORTEX_RETURN_IF_ERROR(Migrate(*writer, path, migrations));

  std::vector<std::unique_ptr<Connection>> readers;
  for (size_t i = 0; i < kReaderConnections; ++i) {
    CORTEX_ASSIGN_OR_RETURN(std::unique_ptr<Connection> reader,
                            Connection::Open(path, SQLITE_OPEN_READWRITE));
    sqlite3_db_config(reader->db(), SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
    CORTEX_RETURN_IF_ERROR(reader->Exec("PRAGMA query_only = ON"));
    readers.push_back(std::move(reader));
  }
  return std::unique_ptr<Store>(
      std::make_unique<SqliteStore>(options, std::move(writer), std::move(readers)));
}

Result<std::vector<std::vector<std::string>>> RawQuery(const std::string& path,
                                                       const std::string& sql) {
  CORTEX_ASSIGN_OR_RETURN(std::unique_ptr<Connection> c,
                          Connection::Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  std::vector<std::vector<std::string>> rows;
  auto collect = [](void* out, int n, char** values, char**) -> int {
    auto& table = *static_cast<std::vector<std::vector<std::string>>*>(out);
    std::vector<std::string> row;
    for (int i = 0; i < n; ++i) row.emplace_back(values[i] != nullptr ? values[i] : "NULL");
    table.push_back(std::move(row));
    return 0;
  };
  int rc = sqlite3_exec(c->db(), sql.c_str(), collect, &rows, nullptr);
  if (rc != SQLITE_OK) return SqliteError(c->db(), rc, "running \"" + sql + "\"");
  return rows;
}

}  // namespace sqlite_internal

Result<std::unique_ptr<Store>> OpenSqliteStore(const SqliteOptions& options) {
  return sqlite_internal::OpenWithMigrations(options, kMigrations);
}

Status BackupSqlite(const std::string& db_path, const std::string& dest) {
  std::error_code ec;
  if (!std::filesystem::exists(db_path, ec)) {
    return NotFoundError("no state database at " + db_path);
  }
  if (std::filesystem::exists(dest, ec)) return AlreadyExistsError(dest + " already exists");
  sqlite3* src = nullptr;
  sqlite3* out = nullptr;
  auto close = [&] {
    sqlite3_close_v2(src);
    sqlite3_close_v2(out);
  };
  int rc =
      sqlite3_open_v2(db_path.c_str(), &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status st = SqliteError(src, rc, "opening " + db_path);
    close();
    return st;
  }
  sqlite3_busy_timeout(src, 5000);
  rc = sqlite3_open_v2(dest.c_str(), &out,
                       SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status st = SqliteError(out, rc, "creating " + dest);
    close();
    return st;
  }
  sqlite3_backup* b = sqlite3_backup_init(out, "main", src, "main");
  if (!b) {
    Status st = SqliteError(out, sqlite3_errcode(out), "starting the backup of " + db_path);
    close();
    return st;
  }
  // All pages in one step: one read transaction, so the copy is one commit's state; in WAL
  // mode the server's writers are not blocked meanwhile.
  rc = sqlite3_backup_step(b, -1);
  sqlite3_backup_finish(b);
  Status st =
      rc == SQLITE_DONE ? Status::Ok() : SqliteError(out, rc, "copying " + db_path + " to " + dest);
  if (st.ok()) {
    // The copy is a standalone file: rollback journal, no WAL beside it.
    char* err = nullptr;
    if (sqlite3_exec(out, "PRAGMA journal_mode=DELETE", nullptr, nullptr, &err) != SQLITE_OK) {
      st = InternalError(std::string("finishing the backup: ") + (err ? err : "?"));
    }
    sqlite3_free(err);
  }
  close();
  if (!st.ok()) std::filesystem::remove(dest, ec);
  return st;
}

}  // namespace cortex::store
