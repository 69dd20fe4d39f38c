// The Store: everything a user would miss after a crash, written before it is acknowledged.
// One interface, implementations for SQLite (the embedded default) and, later, PostgreSQL.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace cortex::store {

// One tool (later: agent) execution. Payloads (parameters, result) are JSON text: they are the
// caller's data, not the schema; every field Cortex queries or updates is a column.
struct ExecutionRecord {
  std::string id;  // "ex_..." unique
  std::string kind = "tool";
  std::string name;    // the tool's name
  std::string status;  // queued | running | succeeded | failed | timeout | cancelled | interrupted
  std::string parameters_json = "{}";
  std::string result_json;  // the tool's parsed output (JSON), or a JSON string of its text
  std::string error;        // why it failed ("" when it did not)
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::string stderr_tail;                                  // bounded
  int64_t created_ms = 0, started_ms = 0, finished_ms = 0;  // Unix epoch milliseconds
  int64_t duration_ms = 0;
  int64_t cpu_user_ms = 0, cpu_system_ms = 0;
  int64_t peak_memory_bytes = 0;
  bool sandboxed = true;
  std::string idempotency_key;
  std::string manifest_version;  // the manifest revision it ran with
  // What Cortex changed in the output to keep it ("stdout was not valid UTF-8: ..."), a line each.
  std::string notes;
};

struct ExecutionFilter {
  std::optional<std::string> name;
  std::optional<std::string> status;
  size_t limit = 50;                     // at most 1000
  std::optional<std::string> before_id;  // page: records created before this one
};

struct LogLine {
  int64_t seq = 0;
  bool is_stderr = false;
  int64_t at_ms = 0;
  std::string text;
};

// ---- Workflow runs (the engine's durable state) -------------------------------------------
// The current state of a run and of its steps, plus an append-only event log of every
// transition. The engine writes a RunTransition (state and events together, atomically) before
// it acts on it, and rebuilds a run from its rows after a restart.

struct RunRecord {
  std::string id;        // "wf_..." unique
  std::string workflow;  // the workflow's name
  // queued | running | paused | succeeded | failed | cancelled
  std::string status;
  std::string input_json = "{}";
  std::string output_json;         // the workflow's outputs, when it succeeded
  std::string error;               // why it failed / was cancelled
  std::string trigger = "manual";  // manual | scheduled | webhook | workflow | retry
  // The workflow manifest the run is pinned to (a hot reload changes new runs only).
  std::string manifest_path, manifest_text, manifest_version;
  std::string parent_run_id, parent_step;  // set for a sub-workflow's run
  int depth = 0;                           // 0 for a top-level run
  int64_t created_ms = 0, started_ms = 0, finished_ms = 0, updated_ms = 0;
  int64_t last_event_seq = 0;  // the seq of the run's last event
};

struct StepRecord {
  std::string run_id;
  std::string step;
  // pending | running | retrying | succeeded | failed | skipped | cancelled
  std::string status = "pending";
  int attempt = 0;  // attempts started so far
  std::string output_json;
  std::string error;
  std::string execution_id;  // the tool execution / child run of the current attempt
  int64_t started_ms = 0, finished_ms = 0;
  int64_t next_attempt_ms = 0;  // when retrying: when the next attempt is due
};

struct RunEvent {
  std::string run_id;
  int64_t seq = 0;  // 1, 2, ... per run
  int64_t at_ms = 0;
  std::string type;  // run_started, step_running, step_succeeded, ...
  std::string step;  // "" for run events
  int attempt = 0;
  std::string data_json;  // details ("" or a JSON object)
};

// Written atomically: the run row (inserted or replaced), step rows (upserted), events appended.
struct RunTransition {
  // The run row. When `run_exists`, only its mutable columns are written (status, output,
  // error, timestamps, last_event_seq): the pinned manifest and input are written once.
  std::optional<RunRecord> run;
  bool run_exists = false;
  std::vector<StepRecord> steps;
  std::vector<RunEvent> events;
};

struct RunFilter {
  std::optional<std::string> workflow;
  std::optional<std::string> status;
  bool unfinished_only = false;  // queued, running or paused
  std::optional<std::string> parent_run_id;
  size_t limit = 50;                     // at most 1000 (unfinished_only: no limit)
  std::optional<std::string> before_id;  // page: runs created before this one
};

// ---- Deployments (the deployer's desired and observed state) -------------------------------
// One row per deployed relic or monument. `desired` is what the user asked for; the deployer's
// reconcile loop drives the runtime toward it and records what it observed. After a restart the
// rows say what to adopt (by recorded pid, or by the compose project's labels).
struct DeploymentRecord {
  std::string kind = "relic";  // relic | monument
  std::string name;
  std::string driver;               // process | compose | monument
  std::string desired = "running";  // running | stopped
  // pending | starting | healthy | unhealthy | stopping | stopped | failed
  std::string state = "pending";
  std::string error;        // why it failed / the last probe's error
  std::string owner;        // the monument that deployed this relic ("" = deployed on its own)
  std::string environment;  // a monument's environment ("" for relics)
  int64_t pid = 0;          // process driver: the supervised process (its process group)
  int64_t pid_start = 0;    // its start time (clock ticks since boot), against pid reuse
  std::string project;      // compose driver: the compose project name
  int64_t restarts = 0;
  std::string manifest_version;
  std::string detail_json = "{}";  // driver and health details (JSON object)
  int64_t created_ms = 0, updated_ms = 0, started_ms = 0;
};

// ---- Agents: sessions (a conversation that runs continue) and runs ------------------------
struct AgentSessionRecord {
  std::string id;
  std::string agent;
  std::string messages_json = "[]";   // [{"role": "user"|"assistant", "content"}], oldest first
  std::string variables_json = "{}";  // the $variables runs left behind, for the next run
  int64_t runs = 0;
  int64_t input_tokens = 0, output_tokens = 0;
  int64_t created_ms = 0, updated_ms = 0;
};

struct AgentRunRecord {
  std::string id;
  std::string agent;
  std::string session_id;
  std::string status = "running";  // running | succeeded | failed | cancelled | interrupted
  std::string reason;
  std::string input;
  std::string record_json = "{}";  // the run's JSON record once it has finished
  int64_t created_ms = 0, finished_ms = 0;
  // How it started, to resume it: the conversation sent first, the request's options (JSON).
  std::string request_json = "{}";
  // Who resumes it after a restart: "" = the server, on its own; else the workflow step or the
  // agent run that started it (they run it again under the same id, and it resumes then).
  std::string parent;
};

// What an agent's finished runs used, all together.
struct AgentUsage {
  std::string agent;
  int64_t runs = 0;
  int64_t input_tokens = 0, output_tokens = 0;
  double cost = 0;
};

// One entry of an agent run's journal: a model turn received ("turn") or an action's outcome
// ("action"), written before the loop acts on it, so that a restarted server resumes the run.
struct AgentJournalEntry {
  std::string run_id;
  int64_t seq = 0;    // 1, 2, ... within the run
  int64_t at_ms = 0;  // since the run started (its running time, across restarts)
  std::string kind;
  std::string data_json = "{}";
};

// ---- Access: API keys and the audit log ---------------------------------------------------
struct ApiKeyRecord {
  std::string id;    // "key_" + hex: how it is named in lists, revocations and the audit log
  std::string name;  // what the user called it
  std::string role;  // viewer | operator | admin
  std::string hash;  // SHA-256 of the secret, hex: the secret itself is never stored
  // "kind:pattern" each (api/scopes.h): what the role applies to; none: everything.
  std::vector<std::string> scopes;
  int64_t created_ms = 0, revoked_ms = 0, last_used_ms = 0;  // 0: never
};

struct AuditEntry {
  int64_t seq = 0;  // assigned by the Store, 1, 2, ...
  int64_t at_ms = 0;
  std::string actor;  // the key's id and name ("key_ab12 (ci)"), or "anonymous"
  std::string role;
  std::string method, path;
  std::string target;  // what the call was about (a manifest, a run, a relic...), when known
  int status = 0;      // the answer's HTTP status
  std::string request_id;
  std::string detail;  // the error's message, when it failed
};

struct AuditFilter {
  std::optional<std::string> actor;
  std::optional<std::string> path_prefix;
  std::optional<int64_t> since_ms;
  std::optional<int64_t> before_seq;  // page: entries before this one
  size_t limit = 100;                 // at most 1000; newest first
};

class Store {
 public:
  virtual ~Store() = default;

  virtual Status CreateExecution(const ExecutionRecord& record) = 0;  // AlreadyExists on a dup id
  virtual Status UpdateExecution(const ExecutionRecord& record) = 0;  // NotFound if absent
  // The final record and the last output lines (as AppendLogs) in one transaction. Writes what
  // changes while an execution runs (status, result, error, exit code, signal, stderr tail,
  // started/finished/duration, CPU, peak memory); what is fixed at creation (kind, name,
  // parameters, created_ms, sandboxed, idempotency key, manifest version) is left as created.
  virtual Status FinishExecution(const ExecutionRecord& record,
                                 const std::vector<LogLine>& lines) = 0;
  virtual Result<std::optional<ExecutionRecord>> GetExecution(const std::string& id) = 0;
  // Newest first.
  virtual Result<std::vector<ExecutionRecord>> ListExecutions(const ExecutionFilter& filter) = 0;
  // At start-up: every execution still queued or running is marked interrupted (with finished_ms
  // = now_ms and an error saying the server stopped); returns how many.
  virtual Result<int> MarkInterrupted(int64_t now_ms) = 0;

  // Output lines of an execution, bounded per execution (older lines are dropped past the cap).
  // The caller numbers lines: seq >= 1, increasing within the batch and after every seq already
  // appended to that execution (else InvalidArgument); a batch is stored whole or not at all.
  // NotFound for an unknown execution (both calls).
  virtual Status AppendLogs(const std::string& execution_id, const std::vector<LogLine>& lines) = 0;
  virtual Result<std::vector<LogLine>> GetLogs(const std::string& execution_id, int64_t after_seq,
                                               size_t limit) = 0;

  // Workflow runs. WriteRun: InvalidArgument for an event whose seq is not after the run's
  // stored last_event_seq; the run row must exist (or be in the transition).
  virtual Status WriteRun(const RunTransition& transition) = 0;
  virtual Result<std::optional<RunRecord>> GetRun(const std::string& id) = 0;
  virtual Result<std::vector<StepRecord>> GetSteps(const std::string& run_id) = 0;
  virtual Result<std::vector<RunRecord>> ListRuns(const RunFilter& filter) = 0;  // newest first
  virtual Result<std::vector<RunEvent>> GetRunEvents(const std::string& run_id, int64_t after_seq,
                                                     size_t limit) = 0;
  // The last due time (Unix ms) a scheduled workflow was started for; nullopt when never.
  virtual Result<std::optional<int64_t>> GetScheduleMark(const std::string& workflow) = 0;
  virtual Status SetScheduleMark(const std::string& workflow, int64_t due_ms) = 0;

  // Deployments: Put inserts or replaces the whole row; Delete is NotFound when absent.
  virtual Status PutDeployment(const DeploymentRecord& record) = 0;
  virtual Result<std::optional<DeploymentRecord>> GetDeployment(const std::string& kind,
                                                                const std::string& name) = 0;
  virtual Result<std::vector<DeploymentRecord>> ListDeployments(const std::string& kind) = 0;
  virtual Status DeleteDeployment(const std::string& kind, const std::string& name) = 0;

  // Agent sessions and runs. Put* inserts or replaces the whole row.
  virtual Status PutAgentSession(const AgentSessionRecord& record) = 0;
  virtual Result<std::optional<AgentSessionRecord>> GetAgentSession(const std::string& id) = 0;
  // An agent's sessions ("" = every agent's), most recently used first.
  virtual Result<std::vector<AgentSessionRecord>> ListAgentSessions(const std::string& agent,
                                                                    size_t limit) = 0;
  virtual Status DeleteAgentSession(const std::string& id) = 0;  // NotFound if absent
  virtual Status PutAgentRun(const AgentRunRecord& record) = 0;
  virtual Result<std::optional<AgentRunRecord>> GetAgentRun(const std::string& id) = 0;
  // Newest first; `agent` "" = all, `session_id` "" = any.
  virtual Result<std::vector<AgentRunRecord>> ListAgentRuns(const std::string& agent,
                                                            const std::string& session_id,
                                                            size_t limit) = 0;
  // Runs still `running` (the server stopped during them) become `interrupted`; how many.
  virtual Result<int> MarkAgentRunsInterrupted(int64_t now_ms) = 0;
  // Per agent ("" = every agent), by name: the recorded runs and their token usage and cost.
  virtual Result<std::vector<AgentUsage>> AgentUsageTotals(const std::string& agent) = 0;
  // Runs still `running` (the server stopped during them), oldest first.
  virtual Result<std::vector<AgentRunRecord>> ListRunningAgentRuns() = 0;
  virtual Status AppendAgentJournal(const AgentJournalEntry& entry) = 0;  // AlreadyExists: dup seq
  virtual Result<std::vector<AgentJournalEntry>> GetAgentJournal(const std::string& run_id) = 0;

  // API keys: Put inserts or replaces; by hash for authentication (revoked ones too: the caller
  // checks); List in creation order.
  virtual Status PutApiKey(const ApiKeyRecord& record) = 0;
  virtual Result<std::optional<ApiKeyRecord>> FindApiKeyByHash(const std::string& hash) = 0;
  virtual Result<std::optional<ApiKeyRecord>> GetApiKey(const std::string& id) = 0;
  virtual Result<std::vector<ApiKeyRecord>> ListApiKeys() = 0;
  // The audit log: appended (seq assigned, returned), read newest first.
  virtual Result<int64_t> AppendAudit(const AuditEntry& entry) = 0;
  virtual Result<std::vector<AuditEntry>> ListAudit(const AuditFilter& filter) = 0;
};

struct SqliteOptions {
  std::string path;  // the database file; its folder must exist
  size_t max_log_lines_per_execution = 10000;
  // false (synchronous=NORMAL, the default): an acknowledged write survives a crash or kill -9 of
  // cortex; after a power loss or OS crash the database is intact but may lack the last commits.
  // true (synchronous=FULL): the WAL is fsynced at every commit, so acknowledged writes also
  // survive power loss, at the cost of one fsync per commit (concurrent writes share one).
  bool fsync_every_commit = false;
};

// Opens (creating and migrating as needed) a SQLite store in WAL mode. A file that is not a
// Cortex database, or one from a newer schema version, is a clear error.
Result<std::unique_ptr<Store>> OpenSqliteStore(const SqliteOptions& options);

// Copies the SQLite database at `db_path` into a new file `dest` with SQLite's online backup,
// while other processes (a running `cortex serve`) go on reading and writing it: the copy is
// the database as of one commit. The source is opened read-only and never migrated. `dest`
// must not exist.
Status BackupSqlite(const std::string& db_path, const std::string& dest);

}  // namespace cortex::store
