// The tool executor service: checks a call against the tool's manifest, records it in the Store
// before acknowledging it, runs it on a bounded worker pool (sandboxed when the sandbox is on),
// records the outcome, and lets callers wait, follow or cancel.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/metrics.h"
#include "common/mutex.h"
#include "common/trace.h"
#include "exec/params.h"
#include "exec/process.h"
#include "exec/sandbox.h"
#include "exec/tool_process.h"
#include "registry/registry.h"
#include "store/store.h"

namespace cortex::exec {

// Tools the executor does not start as a process (implementation.type: mcp, another MCP
// server's tool): the composition root says how to call them. The executor still checks,
// records, times out, cancels and follows them like any other call.
class ExternalTools {
 public:
  virtual ~ExternalTools() = default;
  struct Call {
    const ToolCall* tool = nullptr;  // the manifest, its folder, the checked parameters, ids
    std::chrono::milliseconds timeout{0};
    const CancelToken* cancel = nullptr;
    std::function<void(const std::string& line)> on_line;  // what it reports as it goes
  };
  // The tool's outcome, or why it could not be called (DeadlineExceeded: its timeout passed).
  virtual Result<ToolOutcome> Run(const Call& call) = 0;
  // Its health: OK when it can be called now (for an MCP server's tool: the server answers and
  // lists it), else why not.
  virtual Status Check(const ToolCall& tool, std::chrono::milliseconds timeout) = 0;
};

struct ExecutorOptions {
  int workers = 4;
  size_t queue_capacity = 64;  // calls waiting for a worker; past it, Submit is refused (429)
  ToolDefaults defaults;
  // When set, tools run under bubblewrap; when not (no usable bwrap), they run only if
  // allow_unsandboxed, and every result says so.
  std::optional<SandboxInfo> sandbox;
  bool allow_unsandboxed = false;
  // Tools with network: true share the host's network namespace (SandboxPolicy::host_network)
  // instead of getting one of their own through pasta.
  bool tool_network_host = false;
  std::vector<std::string> hidden_paths;  // e.g. Cortex's data folder
  size_t stderr_tail_bytes = 4096;
  size_t live_lines = 2000;  // output lines kept in memory per execution for followers
  size_t recent = 1000;      // finished executions kept in memory for waiters
  // Where tool calls, their durations and the queue's depth are counted (none when null).
  metrics::Registry* metrics = nullptr;
  // Each execution is a span "tool <name>" under its request's traceparent (none when null:
  // the caller's traceparent still reaches the tool).
  const trace::Tracer* tracer = nullptr;
  // How tools of type mcp are called (none when null: such a call fails, saying so).
  ExternalTools* external = nullptr;
};

struct ExecuteRequest {
  std::string tool;
  nlohmann::ordered_json parameters = nlohmann::ordered_json::object();
  std::string idempotency_key;
  // Set by callers that name the execution themselves (the workflow engine records the id before
  // it submits); "" = a new id.
  std::string execution_id;
  // Called once with the final record, on a worker thread, after it is in the Store. Must not
  // block or call back into the Executor.
  std::function<void(const store::ExecutionRecord&)> on_finish;
  // The timeout of this call when shorter than the tool's own (a workflow step's `timeout`).
  std::optional<std::chrono::milliseconds> timeout;
  // The caller's W3C trace context: the execution's span is its child, and the tool process
  // gets TRACEPARENT.
  std::string traceparent;
};

// One output line of an execution, numbered from 1.
struct LiveLine {
  int64_t seq = 0;
  bool is_stderr = false;
  std::string text;
};

// The outcome of a tool's health check.
struct ToolHealth {
  std::string tool;
  std::string status;  // "healthy" | "unhealthy"
  std::string check;   // "command" (its health_check) | "static" (none declared) | "mcp"
  std::string command;
  std::optional<int> exit_code;
  int expected_exit_code = 0;
  std::string expected_output;  // "" when the check does not look at the output
  std::string output;           // stdout (then stderr), bounded
  std::string error;            // why it is unhealthy; "" when healthy
  int64_t duration_ms = 0;
  int64_t checked_ms = 0;
  bool sandboxed = false;
};
nlohmann::ordered_json ToolHealthJson(const ToolHealth& health);

class Executor {
 public:
  Executor(ExecutorOptions options, registry::Registry& registry, store::Store& store,
           ProcessRunner& runner, ProgramResolver resolve);
  ~Executor();  // cancels running calls, waits for the workers
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Checks the call and queues it. The execution is in the Store (status "queued") before this
  // returns its id. Errors: NotFound (no such tool), InvalidArgument (bad parameters: each in
  // `field_errors`), FailedPrecondition (the tool's manifest is unresolved or cannot run, or no
  // sandbox and unsandboxed runs are not allowed), ResourceExhausted (the queue is full).
  Result<std::string> Submit(const ExecuteRequest& request, std::vector<FieldError>* field_errors);

  // Like Submit, for a caller that will wait for the result: when a worker's place is free and
  // nothing is queued, the call runs right here on the calling thread (no hand-off to a worker
  // and back: ~0.3 ms less per call), provided the tool's timeout is below `inline_up_to`;
  // otherwise it is queued as by Submit. Either way the result is then read with Wait().
  Result<std::string> Run(const ExecuteRequest& request, std::vector<FieldError>* field_errors,
                          std::chrono::milliseconds inline_up_to);

  // Several calls at once, all or nothing: every call is checked first (an InvalidArgument or
  // NotFound for any of them refuses the whole batch, with one BatchItemError per bad call), then
  // queue places for all of them are taken at once (ResourceExhausted when they do not fit).
  // The ids are in the order of the requests.
  struct BatchItemError {
    size_t index = 0;
    Status status;
    std::vector<FieldError> fields;
  };
  Result<std::vector<std::string>> SubmitBatch(const std::vector<ExecuteRequest>& requests,
                                               std::vector<BatchItemError>* errors);

  // Runs the tool's declared health check now (on the calling thread, sandboxed like the tool;
  // at most `workers` checks at once, ResourceExhausted beyond). A tool without a health check
  // gets a static check: its manifest is resolved, its entrypoint exists and its interpreter is
  // found. NotFound for an unknown tool.
  Result<ToolHealth> CheckHealth(const std::string& tool);

  // The execution's record once it has finished, or as it is when `timeout` passes.
  Result<store::ExecutionRecord> Wait(const std::string& id, std::chrono::milliseconds timeout);

  // Output lines after `after_seq` (waiting up to `timeout` for new ones while it runs); `done`
  // tells whether the execution has finished. NotFound when it is not live any more (then read
  // the Store's logs).
  Result<std::vector<LiveLine>> Follow(const std::string& id, int64_t after_seq,
                                       std::chrono::milliseconds timeout, bool* done);

  // Stops a queued or running execution. NotFound for an unknown id, FailedPrecondition when it
  // has already finished.
  Status Cancel(const std::string& id);

  bool sandboxed() const { return options_.sandbox.has_value(); }
  size_t queued() const;

 private:
  struct Job;
  Result<std::shared_ptr<Job>> Prepare(const ExecuteRequest& request,
                                       std::vector<FieldError>* field_errors);
  Status Enqueue(const std::vector<std::shared_ptr<Job>>& jobs);
  Result<ProcessSpec> Sandboxed(ProcessSpec spec, const ToolCall& call) const;
  void WorkerLoop();
  // Runs a job that holds a worker's place. With record_at_spawn (inline sandboxed calls) the
  // job is not in the Store yet: it is recorded while the sandbox is set up, before the tool
  // runs; an error here means it could not be, and nothing ran. Otherwise always OK.
  Status RunJob(const std::shared_ptr<Job>& job, bool record_at_spawn);
  // RunJob, and if anything in it throws (a bug), the job still ends: recorded as failed with
  // the reason, its waiters woken. The caller's slot is then released as after any run.
  Status RunJobGuarded(const std::shared_ptr<Job>& job, bool record_at_spawn);
  void Finish(const std::shared_ptr<Job>& job, store::ExecutionRecord record,
              std::vector<store::LogLine> lines = {});

  ExecutorOptions options_;
  registry::Registry& registry_;
  store::Store& store_;
  ProcessRunner& runner_;
  ProgramResolver resolve_;

  mutable Mutex mu_;
  std::condition_variable work_cv_;
  std::deque<std::shared_ptr<Job>> queue_ CORTEX_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Job>> jobs_ CORTEX_GUARDED_BY(mu_);  // live and recent
  std::deque<std::string> finished_order_ CORTEX_GUARDED_BY(mu_);  // for evicting recent jobs
  bool stopping_ CORTEX_GUARDED_BY(mu_) = false;
  size_t reserved_ CORTEX_GUARDED_BY(mu_) = 0;    // queue slots held by calls being recorded
  int health_checks_ CORTEX_GUARDED_BY(mu_) = 0;  // running health checks
  // Calls running (on workers or inline), at most `workers`.
  int running_ CORTEX_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> workers_;
  // Sandbox plans per tool folder and program (see Sandboxed), bounded.
  static constexpr size_t kMaxSandboxPlans = 256;
  mutable Mutex plans_mu_;
  mutable std::unordered_map<std::string, std::shared_ptr<const SandboxPlan>> plans_
      CORTEX_GUARDED_BY(plans_mu_);
  // Metrics (null without a registry).
  metrics::Counter* calls_metric_ = nullptr;
  metrics::Histogram* duration_metric_ = nullptr;
  metrics::Registry::CollectorHandle depth_collector_;
};

// "ex_" + 20 random hex digits.
std::string NewExecutionId();
// Unix milliseconds now: UnixNowMs() (common/clock.h), under the name its many callers use.
int64_t NowMs();

// An execution record as API JSON (result parsed back to JSON).
nlohmann::ordered_json ExecutionJson(const store::ExecutionRecord& record);

}  // namespace cortex::exec
