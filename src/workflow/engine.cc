#include "workflow/engine.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/random_id.h"
#include "exec/executor.h"
#include "registry/parser.h"
#include "registry/variables.h"

namespace cortex::workflow {

namespace {

constexpr const char* kComponent = "workflow";
// The longest wait between two attempts to record a run the Store refused (50 ms, doubling).
constexpr int64_t kMaxWriteRetryMs = 5000;

// A Store record's step status; an unknown one (written by another version) reads as pending,
// so that a recovered run runs that step again rather than trusting a state it cannot read.
StepStatus StepStatusOf(const std::string& text) {
  return ParseStepStatus(text).value_or(StepStatus::kPending);
}
bool RunFinishedText(const std::string& text) {
  auto s = ParseRunStatus(text);
  return s && Finished(*s);
}

std::string DurationText(int64_t ms) {
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

int64_t Millis(const registry::Duration& d) {
  return static_cast<int64_t>(std::llround(d.seconds * 1000.0));
}

// Whether a running step holds one of the `max_inflight` slots. A sub-workflow step does not: it
// only waits for its child run, whose steps need slots of their own (parents holding every slot
// while their children's steps wait for one would never finish).
bool TakesSlot(const Node& n) { return !n.step || n.step->type != registry::StepType::kWorkflow; }

Json ParseOr(const std::string& text, Json fallback) {
  if (text.empty()) return fallback;
  return ParseJsonOrString(text);
}

}  // namespace

std::string NewRunId() { return RandomId("wf_"); }

// ---- State --------------------------------------------------------------------------------

struct Engine::StepState {
  StepStatus status = StepStatus::kPending;
  int attempt = 0;
  Json output;  // null when none
  std::string error;
  std::string execution_id;
  int64_t started_ms = 0, finished_ms = 0, next_attempt_ms = 0;
  bool timed_out = false;
  bool queued = false;  // waiting for a dispatch slot
  trace::Span span;     // the attempt in flight
};

struct Engine::Run {
  store::RunRecord rec;  // rec.status is StatusName(status): set both with SetStatus
  RunStatus status = RunStatus::kRunning;
  std::shared_ptr<const Plan> plan;
  Json input;
  std::vector<StepState> steps;
  int running = 0;  // attempts dispatched and not ended
  bool aborting = false, cancelling = false;
  std::string abort_reason;
  std::set<int> touched;    // steps to write at the next Flush
  std::deque<int> waiting;  // decided, waiting for the run's max_parallel_steps
  int max_parallel = 0;     // 0: no per-run bound
  bool finished = false;    // removed from runs_ after the next Flush
  bool persisted = false;   // its row is in the Store (later writes update it)
  int64_t deadline_ms = 0;  // the run's timeout (0: none); older timers are ignored
  // When the Store refuses a write, nothing of it is acted on: its events are written again
  // (before newer ones) and its effects held until a write succeeds, retried with backoff
  // (kWriteRetry); the run stays in memory, finished or not, until then.
  std::vector<store::RunEvent> unwritten_events;
  std::vector<Effect> held_effects;
  int write_failures = 0;  // in a row
  bool write_retry_armed = false;
  std::string last_write_error;
  trace::Span span;         // from its start in this process to its end
  std::string traceparent;  // what its steps' spans hang under (the span's, else the caller's)

  void SetStatus(RunStatus s) {
    status = s;
    rec.status = StatusName(s);
  }
};

Json RunJson(const store::RunRecord& r, const std::vector<store::StepRecord>* steps) {
  Json j = {{"run_id", r.id},
            {"workflow", r.workflow},
            {"status", r.status},
            {"trigger", r.trigger},
            {"input", ParseOr(r.input_json, Json::object())}};
  if (!r.output_json.empty()) j["output"] = ParseOr(r.output_json, nullptr);
  if (!r.error.empty()) j["error"] = r.error;
  if (!r.parent_run_id.empty()) {
    j["parent_run_id"] = r.parent_run_id;
    j["parent_step"] = r.parent_step;
  }
  j["depth"] = r.depth;
  j["manifest_version"] = r.manifest_version;
  j["created_ms"] = r.created_ms;
  if (r.started_ms) j["started_ms"] = r.started_ms;
  if (r.finished_ms) {
    j["finished_ms"] = r.finished_ms;
    j["duration_ms"] = r.finished_ms - r.started_ms;
  }
  if (steps) {
    std::vector<const store::StepRecord*> order;
    for (const auto& s : *steps) order.push_back(&s);
    // Started steps in the order they started, then the rest by name.
    std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) {
      int64_t ka = a->started_ms ? a->started_ms : INT64_MAX;
      int64_t kb = b->started_ms ? b->started_ms : INT64_MAX;
      return ka < kb;
    });
    Json arr = Json::array();
    size_t done = 0;
    for (const auto* s : order) {
      Json sj = {{"name", s->step}, {"status", s->status}, {"attempt", s->attempt}};
      if (!s->output_json.empty()) sj["output"] = ParseOr(s->output_json, nullptr);
      if (!s->error.empty()) sj["error"] = s->error;
      if (!s->execution_id.empty()) sj["execution_id"] = s->execution_id;
      if (s->started_ms) sj["started_ms"] = s->started_ms;
      if (s->finished_ms) sj["finished_ms"] = s->finished_ms;
      if (s->finished_ms && s->started_ms) sj["duration_ms"] = s->finished_ms - s->started_ms;
      StepStatus status = StepStatusOf(s->status);
      if (status == StepStatus::kRetrying) sj["next_attempt_ms"] = s->next_attempt_ms;
      if (Terminal(status)) ++done;
      arr.push_back(std::move(sj));
    }
    j["progress"] = {{"steps", steps->size()}, {"finished", done}};
    j["steps"] = std::move(arr);
  }
  return j;
}

// ---- Life cycle ---------------------------------------------------------------------------

Engine::Engine(EngineOptions options, registry::Registry& registry, store::Store& store,
               StepDispatcher& dispatcher)
    : options_(std::move(options)), registry_(registry), store_(store), dispatcher_(dispatcher) {
  if (metrics::Registry* m = options_.metrics) {
    steps_metric_ = &m->NewCounter("cortex_workflow_steps_total",
                                   "Workflow steps ended, by workflow, step type and status.",
                                   {"workflow", "type", "status"});
    runs_metric_ =
        &m->NewCounter("cortex_workflow_runs_total", "Workflow runs ended, by workflow and status.",
                       {"workflow", "status"});
    auto& active = m->NewGauge("cortex_workflow_queue_depth",
                               "Unfinished workflow runs, steps dispatched, and steps ready but "
                               "waiting for a dispatch slot.",
                               {"state"});
    runs_collector_ = m->OnScrape([this, &active]() CORTEX_EXCLUDES(mu_) {
      MutexLock lock(mu_);
      active.Set({"active_runs"}, static_cast<double>(runs_.size()));
      active.Set({"inflight_steps"}, static_cast<double>(inflight_));
      active.Set({"ready_steps"}, static_cast<double>(ready_.size()));
    });
  }
}

Engine::~Engine() { Stop(); }

void Engine::Stop() {
  {
    MutexLock lock(inbox_mu_);
    stopping_ = true;
  }
  inbox_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  changed_.notify_all();
}

Status Engine::Start() {
  {
    MutexLock lock(mu_);
    CORTEX_RETURN_IF_ERROR(Recover());
    Flush();
  }
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

int64_t Engine::Now() const { return options_.now_ms ? options_.now_ms() : UnixNowMs(); }

std::optional<std::string> Engine::Env(std::string_view name) const {
  return options_.env ? options_.env(name) : std::nullopt;
}

size_t Engine::active_runs() const {
  MutexLock lock(mu_);
  return runs_.size();
}

Engine::Run* Engine::FindRun(const std::string& id) {
  auto it = runs_.find(id);
  return it == runs_.end() ? nullptr : it->second.get();
}

void Engine::Loop() {
  for (;;) {
    std::deque<Completion> batch;
    int64_t next_due = 0;
    {
      MutexLock lock(mu_);
      if (!timers_.empty()) next_due = timers_.top().due_ms;
    }
    {
      MutexLock lock(inbox_mu_);
      auto pred = [&]()
                      CORTEX_REQUIRES(inbox_mu_) { return stopping_ || !inbox_.empty() || wake_; };
      int64_t wait = next_due == 0 ? 1000 : std::clamp<int64_t>(next_due - Now(), 0, 1000);
      loop_due_ = Now() + wait;
      inbox_cv_.wait_for(lock.native(), std::chrono::milliseconds(wait), pred);
      loop_due_ = 0;
      if (stopping_) return;
      batch.swap(inbox_);
      wake_ = false;
    }
    MutexLock lock(mu_);
    for (const Completion& c : batch) ApplyCompletion(c);
    int64_t now = Now();
    while (!timers_.empty() && timers_.top().due_ms <= now) {
      Timer t = timers_.top();
      timers_.pop();
      FireTimer(t);
    }
    PumpReadyQueue();
    Flush();
  }
}

// ---- Starting runs ------------------------------------------------------------------------

Result<std::string> Engine::StartRun(const StartRequest& request,
                                     std::vector<exec::FieldError>* field_errors) {
  MutexLock lock(mu_);
  CORTEX_ASSIGN_OR_RETURN(std::string id, CreateRun(request, "", "", 0, field_errors));
  Flush();
  if (Run* run = FindRun(id); run && !run->persisted) {
    // Not acknowledged unless recorded: the run is forgotten, and nothing of it was started.
    Status why = UnavailableError("the run could not be recorded, so it was not started: " +
                                  run->last_write_error);
    for (size_t i = 0; i < run->steps.size(); ++i) {
      if (run->steps[i].status == StepStatus::kRunning && TakesSlot(run->plan->nodes[i]))
        inflight_ -= 1;
    }
    runs_.erase(id);
    PumpReadyQueue();
    Flush();
    return why;
  }
  return id;
}

Result<std::string> Engine::CreateRun(const StartRequest& request, const std::string& parent_run,
                                      const std::string& parent_step, int depth,
                                      std::vector<exec::FieldError>* field_errors) {
  auto snap = registry_.snapshot();
  const registry::Entry* entry = snap->Find(registry::Kind::kWorkflow, request.workflow);
  if (!entry) {
    std::string msg = "no Workflow named '" + request.workflow + "'";
    std::vector<std::string_view> names;
    for (const registry::Entry* e : snap->List(registry::Kind::kWorkflow)) {
      names.push_back(e->name());
    }
    std::string_view hint = registry::ClosestMatch(request.workflow, names);
    if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
    return NotFoundError(msg);
  }
  if (!entry->resolved()) {
    return FailedPreconditionError("Workflow/" + request.workflow +
                                   " cannot run: " + entry->problems.front());
  }
  if (runs_.size() >= options_.max_active_runs) {
    return ResourceExhaustedError("too many unfinished workflow runs (" +
                                  std::to_string(runs_.size()) + "); retry later");
  }
  std::shared_ptr<const registry::Manifest> manifest = entry->file->manifest;
  const auto* spec = manifest->As<registry::WorkflowSpec>();
  exec::ParameterCheck check = exec::CheckParameters(spec->trigger.parameters, request.input);
  if (!check.ok()) {
    if (field_errors) *field_errors = check.errors;
    std::string msg = "invalid input for Workflow/" + request.workflow + ": ";
    for (size_t i = 0; i < check.errors.size(); ++i) {
      const auto& e = check.errors[i];
      msg += (i ? "; " : "") + (e.field.empty() ? e.message : e.field + ": " + e.message);
    }
    return InvalidArgumentError(msg);
  }
  CORTEX_ASSIGN_OR_RETURN(std::shared_ptr<const Plan> plan, BuildPlan(manifest));

  if (!request.run_id.empty()) {
    if (FindRun(request.run_id)) return AlreadyExistsError("run " + request.run_id + " exists");
    auto existing = store_.GetRun(request.run_id);
    if (!existing.ok()) return existing.status();
    if (*existing) return AlreadyExistsError("run " + request.run_id + " exists");
  }
  auto run = std::make_unique<Run>();
  run->plan = plan;
  run->input = check.values.is_null() ? Json::object() : check.values;
  run->steps.resize(plan->nodes.size());
  store::RunRecord& r = run->rec;
  r.id = request.run_id.empty() ? NewRunId() : request.run_id;
  if (!parent_run.empty()) {
    // A child's id is chosen by its parent step (recorded there first).
    if (Run* parent = FindRun(parent_run)) {
      const Node* n = parent->plan->Find(parent_step);
      if (n) r.id = parent->steps[n - parent->plan->nodes.data()].execution_id;
    }
  }
  r.workflow = request.workflow;
  run->SetStatus(RunStatus::kRunning);
  r.input_json = DumpJson(run->input);
  r.trigger = request.trigger;
  r.manifest_path = entry->file->path;
  r.manifest_text =
      entry->file->stale ? DumpJson(registry::ManifestToJson(*manifest)) : entry->file->text;
  r.manifest_version = std::to_string(entry->file->revision);
  r.parent_run_id = parent_run;
  r.parent_step = parent_step;
  r.depth = depth;
  r.created_ms = r.started_ms = r.updated_ms = Now();
  if (const auto& cfg = spec->configuration;
      cfg && cfg->concurrency && cfg->concurrency->max_parallel_steps) {
    run->max_parallel = static_cast<int>(*cfg->concurrency->max_parallel_steps);
  }
  std::string parent_trace = request.traceparent;
  if (Run* parent = parent_run.empty() ? nullptr : FindRun(parent_run)) {
    if (const Node* n = parent->plan->Find(parent_step)) {
      const StepState& pst = parent->steps[n - parent->plan->nodes.data()];
      parent_trace = pst.span.traceparent().empty() ? parent->traceparent : pst.span.traceparent();
    }
  }
  StartRunSpan(*run, parent_trace);
  Run& ref = *run;
  std::string id = r.id;
  runs_[id] = std::move(run);
  Event(ref, "run_started", -1,
        {{"workflow", request.workflow}, {"trigger", request.trigger}, {"input", ref.input}});
  for (size_t i = 0; i < ref.steps.size(); ++i) Touch(ref, static_cast<int>(i));
  ArmRunTimeout(ref);
  for (size_t i = 0; i < plan->nodes.size(); ++i) {
    if (plan->nodes[i].deps.empty()) Decide(ref, static_cast<int>(i));
  }
  MaybeFinishRun(ref);
  changed_.notify_all();
  return id;
}

// ---- Transitions --------------------------------------------------------------------------

void Engine::Event(Run& run, const std::string& type, int node, Json data) {
  store::RunEvent e;
  e.run_id = run.rec.id;
  e.seq = ++run.rec.last_event_seq;
  e.at_ms = Now();
  e.type = type;
  if (node >= 0) {
    e.step = run.plan->nodes[node].name;
    e.attempt = run.steps[node].attempt;
  }
  if (!data.is_null()) e.data_json = DumpJson(data);
  run.rec.updated_ms = e.at_ms;
  dirty_[run.rec.id].events.push_back(std::move(e));
}

void Engine::Touch(Run& run, int node) {
  run.touched.insert(node);
  dirty_[run.rec.id];  // the run row is written with its steps
}

registry::VariableContext Engine::ContextFor(const Run& run) const {
  registry::VariableContext ctx;
  ctx.env = [this](std::string_view name) { return Env(name); };
  if (registry_.WrittenByApi(run.rec.manifest_path)) {
    ctx.env = registry::AllowListedEnv(std::move(ctx.env), options_.allowed_env);
  }
  ctx.now = std::chrono::system_clock::time_point(std::chrono::milliseconds(Now()));
  ctx.variables["WORKFLOW_NAME"] = run.rec.workflow;
  ctx.variables["WORKFLOW_ID"] = run.rec.id;
  ctx.variables["RUN_ID"] = run.rec.id;
  if (const auto* spec = run.plan->spec) {
    for (const auto& [k, v] : spec->environment.variables) ctx.variables[k] = v;
  }
  ctx.trigger = &run.input;
  ctx.step = [&run](std::string_view name) -> std::optional<registry::StepOutcome> {
    auto it = run.plan->by_name.find(name);
    if (it == run.plan->by_name.end()) return std::nullopt;
    const StepState& st = run.steps[it->second];
    if (st.status == StepStatus::kPending) return std::nullopt;
    return registry::StepOutcome{StatusName(st.status), st.output.is_null() ? nullptr : &st.output};
  };
  return ctx;
}

void Engine::Decide(Run& run, int node) {
  StepState& st = run.steps[node];
  if (st.status != StepStatus::kPending || st.queued || run.finished) return;
  if (run.aborting || run.cancelling) return;  // cancelled when the run ends
  const Node& n = run.plan->nodes[node];
  for (int d : n.deps) {
    if (!Terminal(run.steps[d].status)) return;
  }
  if (run.status == RunStatus::kPaused) return;  // Resume decides again
  if (n.gate >= 0) {
    const StepState& g = run.steps[n.gate];
    bool taken = g.status == StepStatus::kSucceeded && g.output.is_object() &&
                 g.output.value("result", !n.branch) == n.branch;
    if (!taken) {
      return FinishNode(run, node, StepStatus::kSkipped, nullptr,
                        "not run: the branch it is on was not taken");
    }
  }
  if (n.kind == NodeKind::kJoin) {
    bool all_skipped = true;
    bool any = false;
    Json out = Json::object();
    for (int d : n.deps) {
      if (d == n.gate || run.plan->nodes[d].name == n.name + "#if") {
        if (run.steps[d].output.is_object()) {
          out["branch"] = run.steps[d].output.value("result", false) ? "then" : "else";
        }
        continue;
      }
      if (std::find(n.children.begin(), n.children.end(), d) == n.children.end()) {
        continue;  // the structure's own depends_on: not one of its children
      }
      any = true;
      const StepState& c = run.steps[d];
      if (c.status != StepStatus::kSkipped) all_skipped = false;
      if (!c.output.is_null()) out[run.plan->nodes[d].name] = c.output;
    }
    return FinishNode(run, node, any && all_skipped ? StepStatus::kSkipped : StepStatus::kSucceeded,
                      out, "");
  }
  std::string blocker;
  for (int d : n.deps) {
    if (d == n.gate) continue;
    const StepState& ds = run.steps[d];
    const auto* dstep = run.plan->nodes[d].step;
    bool skip_on_failure = dstep && dstep->on_failure == registry::OnFailure::kSkip;
    if (ds.status == StepStatus::kSkipped || ds.status == StepStatus::kCancelled ||
        (ds.status == StepStatus::kFailed && skip_on_failure)) {
      blocker = run.plan->nodes[d].name + " " + std::string(StatusName(ds.status));
      break;
    }
  }
  if (n.condition) {
    auto value = registry::EvaluateExpression(*n.condition, ContextFor(run));
    if (!value.ok()) {
      std::string error = "condition: " + value.status().message();
      BeginAbort(run, "step '" + n.name + "' failed: " + error, false);
      return FinishNode(run, node, StepStatus::kFailed, nullptr, error);
    }
    bool truth = registry::Truthy(value->value);
    if (n.kind == NodeKind::kGate) {
      if (!blocker.empty()) {
        return FinishNode(run, node, StepStatus::kSkipped, nullptr, "not run: " + blocker);
      }
      return FinishNode(run, node, StepStatus::kSucceeded, Json{{"result", truth}}, "");
    }
    if (!truth) {
      return FinishNode(run, node, StepStatus::kSkipped, Json(),
                        "condition is false: " + n.step->condition.value_or(""));
    }
  } else if (!blocker.empty()) {
    return FinishNode(run, node, StepStatus::kSkipped, nullptr, "not run: " + blocker);
  }
  // Ready to run.
  const bool slot = TakesSlot(n);
  if ((run.max_parallel > 0 && run.running >= run.max_parallel) ||
      (slot && inflight_ >= options_.max_inflight)) {
    st.queued = true;
    if (run.max_parallel > 0 && run.running >= run.max_parallel) {
      run.waiting.push_back(node);
    } else {
      ready_.emplace_back(run.rec.id, node);
    }
    return;
  }
  st.attempt += 1;
  st.status = StepStatus::kRunning;
  st.started_ms = Now();
  st.finished_ms = 0;
  st.error.clear();
  st.timed_out = false;
  st.execution_id.clear();
  if (n.step->type == registry::StepType::kTool) st.execution_id = exec::NewExecutionId();
  if (n.step->type == registry::StepType::kWorkflow) st.execution_id = NewRunId();
  run.running += 1;
  if (slot) inflight_ += 1;
  Event(run, "step_running", node,
        st.execution_id.empty() ? Json() : Json{{"execution_id", st.execution_id}});
  Touch(run, node);
  if (n.step->timeout && n.step->timeout->seconds > 0) {
    timers_.push({st.started_ms + Millis(*n.step->timeout), run.rec.id, node, st.attempt,
                  Timer::Kind::kStepTimeout});
  }
  effects_.push_back({Effect::Kind::kDispatch, run.rec.id, node, st.attempt});
}

void Engine::FinishNode(Run& run, int node, StepStatus status, Json output,
                        const std::string& error) {
  StepState& st = run.steps[node];
  st.status = status;
  st.output = std::move(output);
  st.error = error;
  st.queued = false;
  st.finished_ms = Now();
  if (!st.started_ms) st.started_ms = st.finished_ms;
  if (steps_metric_ && run.plan->nodes[node].kind == NodeKind::kAction) {
    const registry::WorkflowStep* step = run.plan->nodes[node].step;
    steps_metric_->Inc({run.rec.workflow, step ? registry::EnumName(step->type) : "internal",
                        std::string(StatusName(status))});
  }
  Json data = Json::object();
  if (!error.empty()) data["error"] = error;
  Event(run, "step_" + std::string(StatusName(status)), node, data.empty() ? Json() : data);
  Touch(run, node);
  AfterTerminal(run, node);
}

void Engine::AfterTerminal(Run& run, int node) {
  for (int d : run.plan->nodes[node].dependents) Decide(run, d);
  MaybeFinishRun(run);
}

void Engine::AbortRun(Run& run, const std::string& reason, bool cancelled) {
  BeginAbort(run, reason, cancelled);
  MaybeFinishRun(run);
}

void Engine::BeginAbort(Run& run, const std::string& reason, bool cancelled) {
  if (run.aborting || run.cancelling || run.finished) return;
  run.aborting = !cancelled;
  run.cancelling = cancelled;
  run.abort_reason = reason;
  Event(run, cancelled ? "run_cancelling" : "run_aborting", -1, {{"reason", reason}});
  for (size_t i = 0; i < run.steps.size(); ++i) {
    StepState& st = run.steps[i];
    if (st.status == StepStatus::kRunning) {
      effects_.push_back({Effect::Kind::kCancelStep, run.rec.id, static_cast<int>(i), st.attempt});
    }
  }
}

void Engine::EndAttempt(Run& run, int node, const Completion& c) {
  StepState& st = run.steps[node];
  if (st.status != StepStatus::kRunning || st.attempt != c.attempt) return;  // stale
  if (!c.success) {
    st.span.SetError(st.timed_out ? "timed out" : c.error.empty() ? "failed" : c.error);
  }
  st.span.End();
  run.running -= 1;
  if (TakesSlot(run.plan->nodes[node])) inflight_ -= 1;
  if (!run.waiting.empty() && !run.aborting && !run.cancelling) {
    int next = run.waiting.front();
    run.waiting.pop_front();
    run.steps[next].queued = false;
    Decide(run, next);
  }
  const Node& n = run.plan->nodes[node];
  if (c.interrupted && !run.aborting && !run.cancelling) {
    // The executor stopped under it: run the same attempt again.
    st.status = StepStatus::kPending;
    st.attempt -= 1;
    Event(run, "step_interrupted", node, {{"error", c.error}});
    Touch(run, node);
    timers_.push({Now() + options_.dispatch_retry.count(), run.rec.id, node, st.attempt,
                  Timer::Kind::kDispatch});
    return;
  }
  if (c.success) {
    Json output = c.output;
    if (!n.step->output_mapping.empty()) {
      Json mapped = output.is_object() ? output : Json{{"result", output}};
      for (const auto& [key, path] : n.step->output_mapping) {
        const Json* at = registry::JsonAtPath(output, path);  // as templates read it
        mapped[key] = at ? *at : Json(nullptr);
      }
      output = std::move(mapped);
    }
    return FinishNode(run, node, StepStatus::kSucceeded, std::move(output), "");
  }
  if (run.aborting || run.cancelling) {
    return FinishNode(run, node, StepStatus::kCancelled, c.output,
                      c.cancelled ? "cancelled: " + run.abort_reason : c.error);
  }
  std::string error = c.error;
  if (st.timed_out) error = "timed out after " + DurationText(Millis(*n.step->timeout));
  // Retry policy: the step's, the workflow's, configuration.default_retry_policy, max_retries.
  const registry::WorkflowSpec& spec = *run.plan->spec;
  std::optional<registry::RetryPolicy> policy = n.step->retry_policy;
  if (!policy) policy = spec.retry_policy;
  if (!policy && spec.configuration) policy = spec.configuration->default_retry_policy;
  if (!policy && spec.configuration && spec.configuration->max_retries) {
    policy = registry::RetryPolicy{};
    policy->max_attempts = *spec.configuration->max_retries + 1;
  }
  if (policy && st.attempt < policy->max_attempts) {
    int64_t base = policy->delay ? Millis(*policy->delay) : 1000;
    int64_t delay = base;
    if (policy->backoff == registry::Backoff::kLinear) delay = base * st.attempt;
    if (policy->backoff == registry::Backoff::kExponential) {
      delay = base << std::min(st.attempt - 1, 20);
    }
    int64_t cap = policy->max_delay ? Millis(*policy->max_delay) : 300000;
    delay = std::min(delay, cap);
    st.status = StepStatus::kRetrying;
    st.error = error;
    st.output = c.output;
    st.next_attempt_ms = Now() + delay;
    Event(run, "step_retrying", node,
          {{"error", error}, {"delay_ms", delay}, {"next_attempt", st.attempt + 1}});
    Touch(run, node);
    timers_.push({st.next_attempt_ms, run.rec.id, node, st.attempt, Timer::Kind::kRetry});
    return;
  }
  registry::OnFailure on_failure = registry::OnFailure::kAbort;
  if (n.step->on_failure) {
    on_failure = *n.step->on_failure;
  } else if (spec.configuration && spec.configuration->error_handling &&
             spec.configuration->error_handling->on_step_failure) {
    const std::string& d = *spec.configuration->error_handling->on_step_failure;
    if (d == "continue") on_failure = registry::OnFailure::kContinue;
    if (d == "skip") on_failure = registry::OnFailure::kSkip;
  }
  // The run stops before the failure is acted on, so nothing after the step is started.
  if (on_failure == registry::OnFailure::kAbort || on_failure == registry::OnFailure::kRetry) {
    BeginAbort(run, "step '" + n.name + "' failed: " + error, false);
  }
  FinishNode(run, node, StepStatus::kFailed, c.output, error);
}

void Engine::MaybeFinishRun(Run& run) {
  if (run.finished || run.running > 0) return;
  bool all_terminal = true;
  for (const StepState& st : run.steps) {
    if (!Terminal(st.status)) all_terminal = false;
  }
  if (!all_terminal && !run.aborting && !run.cancelling) return;
  for (size_t i = 0; i < run.steps.size(); ++i) {
    StepState& st = run.steps[i];
    if (Terminal(st.status)) continue;
    st.status = StepStatus::kCancelled;
    st.queued = false;
    st.error = "not run: " + run.abort_reason;
    st.finished_ms = Now();
    if (!st.started_ms) st.started_ms = st.finished_ms;  // as FinishNode: no epoch-long duration
    Touch(run, static_cast<int>(i));
  }
  store::RunRecord& r = run.rec;
  run.SetStatus(run.cancelling ? RunStatus::kCancelled
                : run.aborting ? RunStatus::kFailed
                               : RunStatus::kSucceeded);
  r.error = run.aborting || run.cancelling ? run.abort_reason : "";
  r.finished_ms = Now();
  if (run.status == RunStatus::kSucceeded && !run.plan->spec->outputs.empty()) {
    registry::VariableContext ctx = ContextFor(run);
    Json out = Json::object();
    for (const auto& [name, o] : run.plan->spec->outputs) {
      std::string src = o.source;
      if (src.find('$') == std::string::npos &&
          (src.starts_with("steps.") || src.starts_with("trigger.") || src.starts_with("input."))) {
        src = "$(" + src + ")";
      }
      auto v = registry::ResolveString(src, ctx);
      out[name] = v.ok() && v->unresolved.empty() ? v->value : Json(nullptr);
    }
    r.output_json = DumpJson(out);
  }
  Event(run, "run_" + r.status, -1, r.error.empty() ? Json() : Json{{"error", r.error}});
  if (runs_metric_) runs_metric_->Inc({r.workflow, r.status});
  {  // One line a run (its journal has the rest).
    std::string line = "workflow " + r.workflow + " " + r.id + " " + r.status;
    if (r.started_ms > 0) line += " in " + std::to_string(r.finished_ms - r.started_ms) + " ms";
    if (!r.error.empty()) line += ": " + r.error;
    if (run.status == RunStatus::kFailed) {
      log::Warn(kComponent, line);
    } else {
      log::Info(kComponent, line);
    }
  }
  run.span.SetAttribute("cortex.status", r.status);
  if (run.status != RunStatus::kSucceeded) run.span.SetError(r.error.empty() ? r.status : r.error);
  run.span.End();
  run.finished = true;
  if (!r.parent_run_id.empty()) {
    effects_.push_back({Effect::Kind::kNotifyParent, r.id, -1, 0});
  }
}

// ---- Completions, timers, dispatch ----------------------------------------------------------

void Engine::ApplyCompletion(const Completion& c) {
  Run* run = FindRun(c.run_id);
  if (!run || run->finished || c.node < 0 || c.node >= static_cast<int>(run->steps.size())) return;
  EndAttempt(*run, c.node, c);
}

void Engine::ArmRunTimeout(Run& run) {
  const auto* spec = run.plan->spec;
  std::optional<registry::Duration> timeout = spec->timeout;
  if (!timeout && spec->configuration) timeout = spec->configuration->timeout;
  run.deadline_ms = 0;
  if (!timeout || timeout->seconds <= 0) return;
  run.deadline_ms = run.rec.started_ms + Millis(*timeout);
  timers_.push({run.deadline_ms, run.rec.id, -1, 0, Timer::Kind::kRunTimeout});
}

void Engine::FireTimer(const Timer& t) {
  Run* run = FindRun(t.run_id);
  if (run && t.kind == Timer::Kind::kWriteRetry) {
    run->write_retry_armed = false;
    dirty_[run->rec.id];  // written again at this Flush
    return;
  }
  if (!run || run->finished) return;
  if (t.kind == Timer::Kind::kRunTimeout) {
    if (run->deadline_ms == 0 || t.due_ms != run->deadline_ms) return;  // an earlier life's
    return AbortRun(
        *run, "the run timed out after " + DurationText(run->deadline_ms - run->rec.started_ms),
        false);
  }
  StepState& st = run->steps[t.node];
  switch (t.kind) {
    case Timer::Kind::kRetry:
      if (st.status != StepStatus::kRetrying || st.attempt != t.attempt) return;
      if (run->aborting || run->cancelling) return;
      st.status = StepStatus::kPending;
      Decide(*run, t.node);
      return;
    case Timer::Kind::kDispatch:
      if (st.status != StepStatus::kPending || st.attempt != t.attempt) return;
      Decide(*run, t.node);
      return;
    case Timer::Kind::kStepTimeout:
      if (st.status != StepStatus::kRunning || st.attempt != t.attempt) return;
      st.timed_out = true;
      Event(*run, "step_timeout", t.node);
      effects_.push_back({Effect::Kind::kCancelStep, run->rec.id, t.node, st.attempt});
      return;
    default:
      return;
  }
}

void Engine::PumpReadyQueue() {
  while (inflight_ < options_.max_inflight && !ready_.empty()) {
    auto [run_id, node] = ready_.front();
    ready_.pop_front();
    Run* run = FindRun(run_id);
    if (!run) continue;
    StepState& st = run->steps[node];
    if (!st.queued || st.status != StepStatus::kPending) continue;
    st.queued = false;
    Decide(*run, node);
  }
}

void Engine::Flush() {
  PumpReadyQueue();
  for (int round = 0; round < 1000 && (!dirty_.empty() || !effects_.empty()); ++round) {
    std::map<std::string, store::RunTransition> dirty;
    dirty.swap(dirty_);
    std::set<std::string> failed;
    for (auto& [id, t] : dirty) {
      Run* run = FindRun(id);
      if (!run) continue;
      if (run->persisted) {
        // Only what changes: the pinned manifest text and the input are written once.
        store::RunRecord light;
        const store::RunRecord& r = run->rec;
        light.id = r.id;
        light.status = r.status;
        light.output_json = r.output_json;
        light.error = r.error;
        light.started_ms = r.started_ms;
        light.finished_ms = r.finished_ms;
        light.updated_ms = r.updated_ms;
        light.last_event_seq = r.last_event_seq;
        t.run = std::move(light);
        t.run_exists = true;
      } else {
        t.run = run->rec;
      }
      if (!run->unwritten_events.empty()) {
        t.events.insert(t.events.begin(), std::make_move_iterator(run->unwritten_events.begin()),
                        std::make_move_iterator(run->unwritten_events.end()));
        run->unwritten_events.clear();
      }
      for (int node : run->touched) {
        const StepState& st = run->steps[node];
        store::StepRecord s;
        s.run_id = id;
        s.step = run->plan->nodes[node].name;
        s.status = StatusName(st.status);
        s.attempt = st.attempt;
        if (!st.output.is_null()) {
          s.output_json = DumpJson(st.output);
        }
        s.error = st.error;
        s.execution_id = st.execution_id;
        s.started_ms = st.started_ms;
        s.finished_ms = st.finished_ms;
        s.next_attempt_ms = st.status == StepStatus::kRetrying ? st.next_attempt_ms : 0;
        t.steps.push_back(std::move(s));
      }
      std::set<int> touched;
      touched.swap(run->touched);
      if (Status st = store_.WriteRun(t); !st.ok()) {
        // Nothing is done that is not recorded: the transition is kept and written again
        // with backoff (its effects wait until then). A restart meanwhile resumes the run from
        // what was recorded last.
        run->write_failures += 1;
        int64_t backoff =
            std::min<int64_t>(kMaxWriteRetryMs, 50LL << std::min(run->write_failures, 7));
        log::Error(kComponent, "cannot record run " + id + " (attempt " +
                                   std::to_string(run->write_failures) + ", again in " +
                                   std::to_string(backoff) + " ms): " + st.message());
        run->last_write_error = st.message();
        run->unwritten_events = std::move(t.events);
        run->touched.insert(touched.begin(), touched.end());
        if (!run->write_retry_armed) {
          run->write_retry_armed = true;
          timers_.push({Now() + backoff, id, -1, 0, Timer::Kind::kWriteRetry});
        }
        failed.insert(id);
      } else {
        run->persisted = true;
        run->write_failures = 0;
      }
    }
    std::deque<Effect> effects;
    effects.swap(effects_);
    // The effects of runs whose write failed wait; a run written now first gets those it held.
    std::deque<Effect> ready;
    std::set<std::string> released;
    for (Effect& e : effects) {
      Run* run = FindRun(e.run_id);
      if (failed.count(e.run_id)) {
        if (run) run->held_effects.push_back(std::move(e));
        continue;
      }
      if (run && !run->held_effects.empty() && released.insert(e.run_id).second) {
        for (Effect& h : run->held_effects) ready.push_back(std::move(h));
        run->held_effects.clear();
      }
      ready.push_back(std::move(e));
    }
    for (auto& [id, t] : dirty) {  // written without new effects of their own
      Run* run = FindRun(id);
      if (!run || failed.count(id) || run->held_effects.empty()) continue;
      for (Effect& h : run->held_effects) ready.push_back(std::move(h));
      run->held_effects.clear();
    }
    for (const Effect& e : ready) PerformEffect(e);
    for (auto it = runs_.begin(); it != runs_.end();) {
      const Run& r = *it->second;
      bool unwritten =
          !r.unwritten_events.empty() || !r.held_effects.empty() || r.write_retry_armed;
      if (r.finished && !unwritten && !dirty_.count(it->first)) {
        it = runs_.erase(it);
      } else {
        ++it;
      }
    }
  }
  changed_.notify_all();
  if (!timers_.empty()) {
    // A timer due before the engine thread means to wake up: wake it now.
    int64_t due = timers_.top().due_ms;
    MutexLock lock(inbox_mu_);
    if (loop_due_ != 0 && due < loop_due_) {
      wake_ = true;
      inbox_cv_.notify_one();
    }
  }
}

void Engine::PerformEffect(const Effect& e) {
  Run* run = FindRun(e.run_id);
  if (!run) return;
  switch (e.kind) {
    case Effect::Kind::kDispatch:
      return DispatchNow(*run, e.node, e.attempt);
    case Effect::Kind::kCancelStep: {
      const StepState& st = run->steps[e.node];
      if (st.status != StepStatus::kRunning || st.attempt != e.attempt) return;
      const auto* step = run->plan->nodes[e.node].step;
      if (step->type == registry::StepType::kTool) {
        dispatcher_.CancelTool(st.execution_id);
      } else if (step->type == registry::StepType::kWorkflow) {
        if (Run* child = FindRun(st.execution_id)) {
          AbortRun(*child, st.timed_out ? "the parent step timed out" : "the parent run stopped",
                   true);
        }
      }
      return;
    }
    case Effect::Kind::kNotifyParent: {
      Run* parent = FindRun(run->rec.parent_run_id);
      if (!parent) return;
      const Node* n = parent->plan->Find(run->rec.parent_step);
      if (!n) return;
      int node = static_cast<int>(n - parent->plan->nodes.data());
      const StepState& st = parent->steps[node];
      if (st.execution_id != run->rec.id) return;
      Completion c;
      c.run_id = parent->rec.id;
      c.node = node;
      c.attempt = st.attempt;
      c.success = run->status == RunStatus::kSucceeded;
      c.output = ParseOr(run->rec.output_json, Json::object());
      c.cancelled = run->status == RunStatus::kCancelled;
      c.error = "sub-workflow run " + run->rec.id + " " + run->rec.status +
                (run->rec.error.empty() ? "" : ": " + run->rec.error);
      EndAttempt(*parent, node, c);
      return;
    }
  }
}

void Engine::StartRunSpan(Run& run, const std::string& parent) {
  run.traceparent = parent;
  if (!options_.tracer) return;
  run.span = options_.tracer->Start("workflow " + run.rec.workflow, parent);
  run.span.SetAttribute("cortex.workflow", run.rec.workflow);
  run.span.SetAttribute("cortex.run_id", run.rec.id);
  run.span.SetAttribute("cortex.trigger", run.rec.trigger);
  run.traceparent = run.span.traceparent();
}

void Engine::DispatchNow(Run& run, int node, int attempt) {
  StepState& st = run.steps[node];
  if (st.status != StepStatus::kRunning || st.attempt != attempt || run.finished) return;
  const Node& n = run.plan->nodes[node];
  const registry::WorkflowStep& step = *n.step;
  Completion fail;
  fail.run_id = run.rec.id;
  fail.node = node;
  fail.attempt = attempt;
  if (options_.tracer) {
    st.span = options_.tracer->Start("step " + n.name, run.traceparent);
    st.span.SetAttribute("cortex.step", n.name);
    st.span.SetAttribute("cortex.attempt", int64_t{attempt});
    if (!step.target.empty()) st.span.SetAttribute("cortex.target", step.target);
  }
  const std::string step_trace =
      st.span.traceparent().empty() ? run.traceparent : st.span.traceparent();
  auto params = registry::ResolveJson(step.parameters.is_null() ? Json::object() : step.parameters,
                                      ContextFor(run));
  if (!params.ok()) {
    fail.error = "parameters: " + params.status().message();
    return EndAttempt(run, node, fail);
  }
  Json values = params->value;
  std::string run_id = run.rec.id;
  auto post = [this](Completion c) {
    {
      MutexLock lock(inbox_mu_);
      inbox_.push_back(std::move(c));
    }
    inbox_cv_.notify_one();
  };
  switch (step.type) {
    case registry::StepType::kTool: {
      StepDispatcher::ToolCall call;
      call.tool = step.target;
      call.parameters = values;
      call.execution_id = st.execution_id;
      call.idempotency_key = run.rec.id + "/" + n.name + "/" + std::to_string(attempt);
      call.traceparent = step_trace;
      if (step.timeout && step.timeout->seconds > 0) {
        // The engine's own timer reports it; the process limit is a backstop slightly later.
        call.timeout = std::chrono::milliseconds(Millis(*step.timeout) + 1000);
      }
      Status started = dispatcher_.StartTool(
          call, [post, run_id, node, attempt](const store::ExecutionRecord& r) {
            Completion c;
            c.run_id = run_id;
            c.node = node;
            c.attempt = attempt;
            c.success = r.status == "succeeded";
            c.output = ParseOr(r.result_json, nullptr);
            if (c.output.is_string() && c.output.get_ref<const std::string&>().empty()) {
              c.output = nullptr;  // it printed nothing
            }
            c.error = r.error.empty() ? r.status : r.error;
            c.cancelled = r.status == "cancelled";
            c.interrupted = r.status == "interrupted";
            post(std::move(c));
          });
      if (started.code() == StatusCode::kResourceExhausted) {
        // The executor's queue is full: this attempt waits and is dispatched again.
        st.span.Discard();
        st.status = StepStatus::kPending;
        st.attempt -= 1;
        run.running -= 1;
        inflight_ -= 1;
        Touch(run, node);
        timers_.push({Now() + options_.dispatch_retry.count(), run.rec.id, node, st.attempt,
                      Timer::Kind::kDispatch});
        return;
      }
      if (!started.ok()) {
        fail.error = started.message();
        return EndAttempt(run, node, fail);
      }
      return;
    }
    case registry::StepType::kWorkflow: {
      StartRequest child;
      child.workflow = step.target == "self" ? run.rec.workflow : step.target;
      child.input = values.is_object() ? values : Json::object();
      child.trigger = "workflow";
      if (run.rec.depth + 1 > options_.max_depth) {
        fail.error = "sub-workflow '" + child.workflow + "' would nest deeper than " +
                     std::to_string(options_.max_depth) + " levels";
        return EndAttempt(run, node, fail);
      }
      std::vector<exec::FieldError> fields;
      auto id = CreateRun(child, run.rec.id, n.name, run.rec.depth + 1, &fields);
      if (!id.ok()) {
        fail.error = "sub-workflow: " + id.status().message();
        return EndAttempt(run, node, fail);
      }
      return;
    }
    case registry::StepType::kRelic: {
      StepDispatcher::RelicCall call;
      call.target = step.target;
      call.action = step.action.value_or("");
      call.parameters = values;
      call.traceparent = step_trace;
      if (step.timeout && step.timeout->seconds > 0) {
        call.timeout = std::chrono::milliseconds(Millis(*step.timeout));
      }
      Status started =
          dispatcher_.StartRelicCall(call, [post, run_id, node, attempt](Result<Json> r) {
            Completion c;
            c.run_id = run_id;
            c.node = node;
            c.attempt = attempt;
            c.success = r.ok();
            if (r.ok()) c.output = std::move(r).value();
            if (!c.success) c.error = r.status().message();
            post(std::move(c));
          });
      if (!started.ok()) {
        fail.error = started.message();
        return EndAttempt(run, node, fail);
      }
      return;
    }
    case registry::StepType::kAgent: {
      StepDispatcher::AgentCall call;
      call.agent = step.target;
      call.input = values;
      call.run_key = run_id + "/" + n.name + "/" + std::to_string(attempt);
      call.traceparent = step_trace;
      if (step.timeout && step.timeout->seconds > 0) {
        call.timeout = std::chrono::milliseconds(Millis(*step.timeout));
      }
      Status started = dispatcher_.StartAgent(call, [post, run_id, node, attempt](Result<Json> r) {
        Completion c;
        c.run_id = run_id;
        c.node = node;
        c.attempt = attempt;
        if (!r.ok()) {
          c.success = false;
          c.error = r.status().message();
        } else {
          // The agent's answer is the step's output; a run that did not succeed fails the step.
          c.success = r->value("status", "") == "succeeded";
          c.output = std::move(r).value();
          if (!c.success) {
            c.error = "agent run " + c.output.value("run_id", "") + " ended " +
                      c.output.value("status", "") + " (" + c.output.value("reason", "") + ")" +
                      (c.output.contains("error") ? ": " + c.output.value("error", "") : "");
          }
        }
        post(std::move(c));
      });
      if (!started.ok()) {
        fail.error = started.message();
        return EndAttempt(run, node, fail);
      }
      return;
    }
    case registry::StepType::kInternal: {
      Completion ok = fail;
      ok.success = true;
      ok.output = values;
      return EndAttempt(run, node, ok);
    }
    default:
      fail.error = "a structural step cannot be dispatched";
      return EndAttempt(run, node, fail);
  }
}

// ---- Control ------------------------------------------------------------------------------

Status Engine::Pause(const std::string& run_id) {
  MutexLock lock(mu_);
  Run* run = FindRun(run_id);
  if (!run) {
    auto rec = store_.GetRun(run_id);
    if (!rec.ok()) return rec.status();
    if (!*rec) return NotFoundError("no workflow run " + run_id);
    return FailedPreconditionError("run " + run_id + " has finished (" + (*rec)->status +
                                   "): there is nothing to pause");
  }
  if (run->status == RunStatus::kPaused)
    return FailedPreconditionError("run " + run_id + " is paused already");
  if (run->aborting || run->cancelling) {
    return FailedPreconditionError("run " + run_id + " is stopping");
  }
  run->SetStatus(RunStatus::kPaused);
  Event(*run, "run_paused", -1);
  Flush();
  return Status::Ok();
}

Status Engine::Resume(const std::string& run_id) {
  MutexLock lock(mu_);
  Run* run = FindRun(run_id);
  if (!run || run->status != RunStatus::kPaused) {
    if (!run) {
      auto rec = store_.GetRun(run_id);
      if (!rec.ok()) return rec.status();
      if (!*rec) return NotFoundError("no workflow run " + run_id);
    }
    return FailedPreconditionError("run " + run_id + " is not paused");
  }
  run->SetStatus(RunStatus::kRunning);
  Event(*run, "run_resumed", -1);
  for (size_t i = 0; i < run->steps.size(); ++i) Decide(*run, static_cast<int>(i));
  MaybeFinishRun(*run);
  Flush();
  return Status::Ok();
}

Status Engine::Cancel(const std::string& run_id) {
  MutexLock lock(mu_);
  Run* run = FindRun(run_id);
  if (!run) {
    auto rec = store_.GetRun(run_id);
    if (!rec.ok()) return rec.status();
    if (!*rec) return NotFoundError("no workflow run " + run_id);
    return FailedPreconditionError("run " + run_id + " has finished (" + (*rec)->status + ")");
  }
  if (run->cancelling) return Status::Ok();
  run->aborting = false;
  AbortRun(*run, "cancelled by request", true);
  Flush();
  return Status::Ok();
}

Result<store::RunRecord> Engine::Wait(const std::string& run_id,
                                      std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  {
    MutexLock lock(mu_);
    for (;;) {
      Run* run = FindRun(run_id);
      if (!run || run->finished) break;  // finished runs are in the Store already
      if (std::chrono::steady_clock::now() >= deadline) return run->rec;
      changed_.wait_until(lock.native(), deadline);
    }
  }
  auto rec = store_.GetRun(run_id);
  if (!rec.ok()) return rec.status();
  if (!*rec) return NotFoundError("no workflow run " + run_id);
  return **rec;
}

void Engine::WaitForEvents(const std::string& run_id, int64_t after_seq,
                           std::chrono::milliseconds timeout) {
  MutexLock lock(mu_);
  changed_.wait_for(lock.native(), timeout, [&]() CORTEX_REQUIRES(mu_) {
    Run* run = FindRun(run_id);
    return !run || run->finished || run->rec.last_event_seq > after_seq;
  });
}

// ---- Retry and recovery --------------------------------------------------------------------

namespace {

Result<std::shared_ptr<const registry::Manifest>> ParsePinned(const store::RunRecord& r) {
  registry::FileFormat format =
      registry::FormatOfPath(r.manifest_path).value_or(registry::FileFormat::kYaml);
  if (!r.manifest_text.empty() && r.manifest_text[0] == '{') format = registry::FileFormat::kYaml;
  registry::ParsedFile parsed = registry::ParseManifest(r.manifest_text, r.manifest_path, format);
  if (!parsed.manifest) {
    return FailedPreconditionError("the workflow manifest the run was pinned to no longer parses");
  }
  return std::make_shared<const registry::Manifest>(std::move(*parsed.manifest));
}

}  // namespace

Status Engine::Retry(const std::string& run_id, const std::string& from) {
  MutexLock lock(mu_);
  if (FindRun(run_id)) {
    return FailedPreconditionError("run " + run_id + " is still running: cancel it first");
  }
  auto rec = store_.GetRun(run_id);
  if (!rec.ok()) return rec.status();
  if (!*rec) return NotFoundError("no workflow run " + run_id);
  if (from.empty() && (*rec)->status == "succeeded") {
    return FailedPreconditionError("run " + run_id +
                                   " succeeded: there is nothing to retry (give \"from\" to "
                                   "run it again from a step)");
  }
  CORTEX_ASSIGN_OR_RETURN(auto manifest, ParsePinned(**rec));
  CORTEX_ASSIGN_OR_RETURN(auto plan, BuildPlan(manifest));
  CORTEX_ASSIGN_OR_RETURN(auto steps, store_.GetSteps(run_id));
  auto run = std::make_unique<Run>();
  run->rec = **rec;
  run->persisted = true;
  run->plan = plan;
  run->input = ParseOr(run->rec.input_json, Json::object());
  run->steps.resize(plan->nodes.size());
  StartRunSpan(*run, "");  // a retry is a trace of its own
  for (const auto& s : steps) {
    const Node* n = plan->Find(s.step);
    if (!n) continue;
    StepState& st = run->steps[n - plan->nodes.data()];
    st.status = StepStatusOf(s.status);
    st.attempt = s.attempt;
    st.output = ParseOr(s.output_json, nullptr);
    st.error = s.error;
    st.execution_id = s.execution_id;
    st.started_ms = s.started_ms;
    st.finished_ms = s.finished_ms;
  }
  std::set<int> reset;
  if (!from.empty()) {
    const Node* start = plan->Find(from);
    if (!start) {
      std::vector<std::string_view> names;
      for (const auto& n : plan->nodes) names.push_back(n.name);
      std::string msg = "run " + run_id + " has no step named '" + from + "'";
      std::string_view hint = registry::ClosestMatch(from, names);
      if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
      return NotFoundError(msg);
    }
    std::vector<int> stack = {static_cast<int>(start - plan->nodes.data())};
    while (!stack.empty()) {
      int i = stack.back();
      stack.pop_back();
      if (!reset.insert(i).second) continue;
      for (int d : plan->nodes[i].dependents) stack.push_back(d);
    }
  } else {
    for (size_t i = 0; i < run->steps.size(); ++i) {
      if (run->steps[i].status != StepStatus::kSucceeded) reset.insert(static_cast<int>(i));
    }
  }
  for (int i : reset) {
    StepState& st = run->steps[i];
    st.status = StepStatus::kPending;
    st.output = nullptr;
    st.error.clear();
    st.execution_id.clear();
    st.started_ms = st.finished_ms = 0;
    run->touched.insert(i);
  }
  run->SetStatus(RunStatus::kRunning);
  run->rec.error.clear();
  run->rec.output_json.clear();
  run->rec.finished_ms = 0;
  run->rec.started_ms = Now();  // the retried run's duration and timeout count from here
  Run& ref = *run;
  runs_[run_id] = std::move(run);
  dirty_[run_id];
  ArmRunTimeout(ref);
  Event(ref, "run_retried", -1,
        {{"from", from.empty() ? Json(nullptr) : Json(from)}, {"steps", reset.size()}});
  for (size_t i = 0; i < ref.steps.size(); ++i) Decide(ref, static_cast<int>(i));
  MaybeFinishRun(ref);
  Flush();
  return Status::Ok();
}

Status Engine::Recover() {
  store::RunFilter filter;
  filter.unfinished_only = true;
  CORTEX_ASSIGN_OR_RETURN(auto recs, store_.ListRuns(filter));
  std::sort(recs.begin(), recs.end(),
            [](const auto& a, const auto& b) { return a.depth < b.depth; });
  std::vector<Run*> recovered;
  for (const store::RunRecord& rec : recs) {
    auto manifest = ParsePinned(rec);
    std::shared_ptr<const Plan> plan;
    if (manifest.ok()) {
      auto built = BuildPlan(*manifest);
      if (built.ok()) plan = *built;
    }
    if (!plan) {
      store::RunRecord failed = rec;
      failed.status = StatusName(RunStatus::kFailed);
      failed.error = "cannot resume after a restart: the pinned workflow manifest is unusable";
      failed.finished_ms = Now();
      store::RunTransition t;
      t.run = failed;
      (void)store_.WriteRun(t);
      continue;
    }
    auto steps = store_.GetSteps(rec.id);
    if (!steps.ok()) return steps.status();
    auto run = std::make_unique<Run>();
    run->rec = rec;
    // Unfinished: paused stays paused; anything else (running, or a state this version does not
    // know) resumes running.
    run->SetStatus(ParseRunStatus(rec.status) == RunStatus::kPaused ? RunStatus::kPaused
                                                                    : RunStatus::kRunning);
    run->persisted = true;
    run->plan = plan;
    run->input = ParseOr(rec.input_json, Json::object());
    run->steps.resize(plan->nodes.size());
    StartRunSpan(*run, "");  // the caller's span ended with the process that had it
    for (const auto& s : *steps) {
      const Node* n = plan->Find(s.step);
      if (!n) continue;
      StepState& st = run->steps[n - plan->nodes.data()];
      st.status = StepStatusOf(s.status);
      st.attempt = s.attempt;
      st.output = ParseOr(s.output_json, nullptr);
      st.error = s.error;
      st.execution_id = s.execution_id;
      st.started_ms = s.started_ms;
      st.finished_ms = s.finished_ms;
      st.next_attempt_ms = s.next_attempt_ms;
    }
    if (const auto& cfg = plan->spec->configuration;
        cfg && cfg->concurrency && cfg->concurrency->max_parallel_steps) {
      run->max_parallel = static_cast<int>(*cfg->concurrency->max_parallel_steps);
    }
    Run* ptr = run.get();
    runs_[rec.id] = std::move(run);
    recovered.push_back(ptr);
  }
  for (Run* run : recovered) {
    Event(*run, "run_recovered", -1);
    for (size_t i = 0; i < run->steps.size(); ++i) {
      StepState& st = run->steps[i];
      const Node& n = run->plan->nodes[i];
      int node = static_cast<int>(i);
      if (st.status == StepStatus::kRetrying) {
        timers_.push({st.next_attempt_ms, run->rec.id, node, st.attempt, Timer::Kind::kRetry});
      }
      if (st.status != StepStatus::kRunning) continue;
      run->running += 1;
      if (TakesSlot(n)) inflight_ += 1;
      // Finished while the engine was down? Adopt the outcome.
      if (n.step && n.step->type == registry::StepType::kTool && !st.execution_id.empty()) {
        auto ex = store_.GetExecution(st.execution_id);
        if (ex.ok() && *ex) {
          const auto& r = **ex;
          if (r.status == "succeeded" || r.status == "failed" || r.status == "timeout") {
            Completion c;
            c.run_id = run->rec.id;
            c.node = node;
            c.attempt = st.attempt;
            c.success = r.status == "succeeded";
            c.output = ParseOr(r.result_json, nullptr);
            c.error = r.error.empty() ? r.status : r.error;
            Event(*run, "step_adopted", node, {{"execution_id", r.id}});
            EndAttempt(*run, node, c);
            continue;
          }
        }
      }
      if (n.step && n.step->type == registry::StepType::kWorkflow) {
        if (FindRun(st.execution_id)) continue;  // the child was recovered: it will report
        auto child = store_.GetRun(st.execution_id);
        if (child.ok() && *child && RunFinishedText((*child)->status)) {
          Completion c;
          c.run_id = run->rec.id;
          c.node = node;
          c.attempt = st.attempt;
          c.success = ParseRunStatus((*child)->status) == RunStatus::kSucceeded;
          c.output = ParseOr((*child)->output_json, Json::object());
          c.error = "sub-workflow run " + (*child)->id + " " + (*child)->status;
          EndAttempt(*run, node, c);
          continue;
        }
      }
      // Dispatch the same attempt again (same idempotency key; a new execution id).
      if (n.step && n.step->type == registry::StepType::kTool) {
        st.execution_id = exec::NewExecutionId();
      }
      Event(*run, "step_redispatched", node,
            st.execution_id.empty() ? Json() : Json{{"execution_id", st.execution_id}});
      Touch(*run, node);
      if (n.step && n.step->timeout && n.step->timeout->seconds > 0) {
        // The attempt starts over: so does its timeout.
        st.started_ms = Now();
        timers_.push({st.started_ms + Millis(*n.step->timeout), run->rec.id, node, st.attempt,
                      Timer::Kind::kStepTimeout});
      }
      effects_.push_back({Effect::Kind::kDispatch, run->rec.id, node, st.attempt});
    }
    if (run->status != RunStatus::kPaused) {
      for (size_t i = 0; i < run->steps.size(); ++i) Decide(*run, static_cast<int>(i));
    }
    ArmRunTimeout(*run);
    MaybeFinishRun(*run);
  }
  if (!recovered.empty()) {
    log::Info(kComponent, "resumed " + std::to_string(recovered.size()) + " unfinished runs");
  }
  return Status::Ok();
}

}  // namespace cortex::workflow
