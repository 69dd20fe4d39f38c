// The workflow engine: runs workflows as durable DAGs (docs/workflows.md).
//
// Shape (ninja's Builder, made durable): each run has a static Plan (plan.h) and per-node
// state. One engine thread reacts to completions (tool executions, child runs, relic calls) and
// timers (retry delays, step and run timeouts); API calls (start, pause, resume, cancel, retry)
// act under the same mutex. Every reaction first computes the state changes and the events they
// make, writes them to the Store as one transition, and only then acts (dispatches, cancels):
// after a crash the Store never lags behind what was done. A restarted engine rebuilds each
// unfinished run from its rows: finished steps are not run again; a step that was running is
// adopted when its execution finished meanwhile, or dispatched again with the same idempotency
// key.
//
// Bounds: at most `max_inflight` steps dispatched at once across all runs (the others wait in a
// FIFO), sub-workflows at most `max_depth` deep, each run's event log grows by a few events per
// step attempt.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/metrics.h"
#include "common/mutex.h"
#include "common/trace.h"
#include "exec/params.h"
#include "registry/registry.h"
#include "store/store.h"
#include "workflow/plan.h"
#include "workflow/states.h"

namespace cortex::workflow {

using Json = nlohmann::ordered_json;

// How action steps run. The daemon wires the executor (tools) and an HTTP caller (relics);
// tests use fakes.
class StepDispatcher {
 public:
  virtual ~StepDispatcher() = default;

  struct ToolCall {
    std::string tool;
    Json parameters;
    std::string execution_id;     // chosen by the engine, recorded before the call
    std::string idempotency_key;  // the same for every dispatch of one attempt
    std::optional<std::chrono::milliseconds> timeout;
    std::string traceparent;  // the step attempt's trace context
  };
  // Starts a tool call; `done` is called once, on any thread, with the final record. An error
  // means it did not start (ResourceExhausted: try again later).
  virtual Status StartTool(const ToolCall& call,
                           std::function<void(const store::ExecutionRecord&)> done) = 0;
  virtual void CancelTool(const std::string& execution_id) = 0;

  struct RelicCall {
    std::string target;  // a relic name or a URL
    std::string action;  // the operation, "" when none
    Json parameters;
    std::chrono::milliseconds timeout{30000};
    std::string traceparent;  // sent as the traceparent header
  };
  // `done` gets the response (JSON) or why the call failed.
  virtual Status StartRelicCall(const RelicCall& call, std::function<void(Result<Json>)> done) {
    (void)call;
    (void)done;
    return UnimplementedError("relic steps are not available in this server");
  }

  struct AgentCall {
    std::string agent;
    Json input;           // the step's resolved parameters: the agent's input
    std::string run_key;  // "<workflow run>/<step>/<attempt>", for the agent run's records
    std::optional<std::chrono::milliseconds> timeout;
    std::string traceparent;
  };
  // Runs an agent; `done` gets the agent run's record (JSON, whatever its status) or why it
  // could not start.
  virtual Status StartAgent(const AgentCall& call, std::function<void(Result<Json>)> done) {
    (void)call;
    (void)done;
    return UnimplementedError("agent steps are not available in this server");
  }
};

struct EngineOptions {
  // What workflows posted through the API may read of `env` (registry::AllowListedEnv).
  std::vector<std::string> allowed_env;
  int max_depth = 8;         // sub-workflow nesting
  size_t max_inflight = 32;  // steps dispatched at once, all runs together
  size_t max_active_runs = 10000;
  std::chrono::milliseconds dispatch_retry{50};  // after the executor said its queue is full
  // Injected time (Unix ms) and environment, for tests.
  std::function<int64_t()> now_ms;
  std::function<std::optional<std::string>(std::string_view)> env;
  // Where steps and runs are counted and the active runs gauged (none when null).
  metrics::Registry* metrics = nullptr;
  // A run is a span "workflow <name>", each step attempt a span "step <name>" under it, and the
  // attempt's context goes on to its tool, relic call, agent or sub-workflow (none when null:
  // the run's traceparent is still passed on).
  const trace::Tracer* tracer = nullptr;
};

struct StartRequest {
  std::string workflow;
  Json input = Json::object();
  std::string trigger = "manual";  // manual | scheduled | webhook | workflow
  std::string run_id;              // "" = a new id; else AlreadyExists when it exists
  std::string traceparent;         // the caller's trace context (the run's span is its child)
};

// A run and its steps as the API shows them.
Json RunJson(const store::RunRecord& run, const std::vector<store::StepRecord>* steps);

class Engine {
 public:
  Engine(EngineOptions options, registry::Registry& registry, store::Store& store,
         StepDispatcher& dispatcher);
  ~Engine();  // Stop()
  // Stops the engine thread: completions and timers are no longer acted on; runs stay as
  // recorded and resume at the next start. Call before stopping the executor.
  void Stop();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Rebuilds unfinished runs from the Store and starts the engine thread. Call once.
  Status Start();

  // Starts a run (recorded before this returns its id). NotFound: no such workflow;
  // FailedPrecondition: it is unresolved; InvalidArgument: bad input (each in `field_errors`).
  Result<std::string> StartRun(const StartRequest& request,
                               std::vector<exec::FieldError>* field_errors);

  // FailedPrecondition when the run is not in a state that allows it; NotFound when unknown.
  Status Pause(const std::string& run_id);
  Status Resume(const std::string& run_id);
  Status Cancel(const std::string& run_id);
  // Re-runs a failed or cancelled run: from its failed steps, or from `from` (that step and
  // everything after it run again; what succeeded before it is kept).
  Status Retry(const std::string& run_id, const std::string& from);

  // Waits until the run has finished or `timeout` passes; the run as recorded then.
  Result<store::RunRecord> Wait(const std::string& run_id, std::chrono::milliseconds timeout);
  // Waits until the run has an event after `after_seq` (or it finished, or timeout).
  void WaitForEvents(const std::string& run_id, int64_t after_seq,
                     std::chrono::milliseconds timeout);

  size_t active_runs() const;

 private:
  struct StepState;
  struct Run;
  struct Timer {
    int64_t due_ms;
    std::string run_id;
    int node;
    int attempt;
    // kWriteRetry: write a run again that the Store refused (node -1).
    enum class Kind { kRetry, kStepTimeout, kRunTimeout, kDispatch, kWriteRetry } kind;
    bool operator>(const Timer& o) const { return due_ms > o.due_ms; }
  };
  struct Completion {
    std::string run_id;
    int node = -1;
    int attempt = 0;
    bool success = false;
    Json output;
    std::string error;
    bool cancelled = false;    // ended because it was cancelled (or the server stopped)
    bool interrupted = false;  // the execution was interrupted by a server stop: run it again
  };
  // A side effect decided under mu_, performed after the transition is written.
  struct Effect {
    enum class Kind { kDispatch, kCancelStep, kNotifyParent } kind;
    std::string run_id;
    int node = -1;
    int attempt = 0;
  };

  void Loop();
  int64_t Now() const;
  std::optional<std::string> Env(std::string_view name) const;

  // All of these run with mu_ held.
  Result<std::string> CreateRun(const StartRequest& request, const std::string& parent_run,
                                const std::string& parent_step, int depth,
                                std::vector<exec::FieldError>* field_errors) CORTEX_REQUIRES(mu_);
  void Event(Run& run, const std::string& type, int node, Json data = Json()) CORTEX_REQUIRES(mu_);
  void Touch(Run& run, int node) CORTEX_REQUIRES(mu_);
  void Decide(Run& run, int node) CORTEX_REQUIRES(mu_);
  void AfterTerminal(Run& run, int node) CORTEX_REQUIRES(mu_);
  void EndAttempt(Run& run, int node, const Completion& c) CORTEX_REQUIRES(mu_);
  void FinishNode(Run& run, int node, StepStatus status, Json output, const std::string& error)
      CORTEX_REQUIRES(mu_);
  void AbortRun(Run& run, const std::string& reason, bool cancelled)
      CORTEX_REQUIRES(mu_);  // BeginAbort + finish
  void BeginAbort(Run& run, const std::string& reason, bool cancelled)
      CORTEX_REQUIRES(mu_);  // flags, cancels
  void MaybeFinishRun(Run& run) CORTEX_REQUIRES(mu_);
  void ApplyCompletion(const Completion& c) CORTEX_REQUIRES(mu_);
  void FireTimer(const Timer& t) CORTEX_REQUIRES(mu_);
  void ArmRunTimeout(Run& run) CORTEX_REQUIRES(mu_);
  void PumpReadyQueue() CORTEX_REQUIRES(mu_);
  void Flush() CORTEX_REQUIRES(
      mu_);  // writes pending transitions, then performs pending effects (repeatedly)
  void PerformEffect(const Effect& e) CORTEX_REQUIRES(mu_);
  void DispatchNow(Run& run, int node, int attempt) CORTEX_REQUIRES(mu_);
  // The run's span, under `parent` (a traceparent, "" for a new trace).
  void StartRunSpan(Run& run, const std::string& parent) CORTEX_REQUIRES(mu_);
  Status Recover() CORTEX_REQUIRES(mu_);
  registry::VariableContext ContextFor(const Run& run) const CORTEX_REQUIRES(mu_);
  Run* FindRun(const std::string& id) CORTEX_REQUIRES(mu_);

  EngineOptions options_;
  registry::Registry& registry_;
  store::Store& store_;
  StepDispatcher& dispatcher_;

  // Lock order: mu_, then inbox_mu_; never mu_ while holding inbox_mu_. Flush (under mu_) takes
  // inbox_mu_ to wake the loop for an earlier timer; the loop takes each alone, inbox_mu_ to wait
  // and mu_ to apply. Under mu_ the engine calls out to the Store and the step dispatcher, whose
  // locks therefore come after mu_: a dispatcher never calls back into the engine's locked
  // methods, it reports a step's end through the inbox (which takes inbox_mu_ alone).
  mutable Mutex mu_;
  std::condition_variable changed_;  // any run changed (for Wait / WaitForEvents)
  std::map<std::string, std::unique_ptr<Run>> runs_ CORTEX_GUARDED_BY(mu_);   // unfinished runs
  std::map<std::string, store::RunTransition> dirty_ CORTEX_GUARDED_BY(mu_);  // written by Flush
  std::deque<Effect> effects_ CORTEX_GUARDED_BY(mu_);
  std::deque<std::pair<std::string, int>> ready_ CORTEX_GUARDED_BY(mu_);  // waiting for a slot
  size_t inflight_ CORTEX_GUARDED_BY(mu_) = 0;
  metrics::Counter* steps_metric_ = nullptr;
  metrics::Counter* runs_metric_ = nullptr;
  metrics::Registry::CollectorHandle runs_collector_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_ CORTEX_GUARDED_BY(mu_);

  Mutex inbox_mu_ CORTEX_ACQUIRED_AFTER(mu_);
  std::condition_variable inbox_cv_;
  std::deque<Completion> inbox_ CORTEX_GUARDED_BY(inbox_mu_);
  bool stopping_ CORTEX_GUARDED_BY(inbox_mu_) = false;
  bool wake_ CORTEX_GUARDED_BY(inbox_mu_) = false;  // timers changed
  // When the waiting loop wakes (0: busy).
  int64_t loop_due_ CORTEX_GUARDED_BY(inbox_mu_) = 0;
  std::thread thread_;
};

std::string NewRunId();

}  // namespace cortex::workflow
