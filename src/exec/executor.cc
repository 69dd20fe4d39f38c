#include "exec/executor.h"

#include <string.h>

#include "common/clock.h"
#include "common/json.h"
#include "common/log.h"
#include "common/random_id.h"

namespace cortex::exec {

using Json = nlohmann::ordered_json;

struct Executor::Job {
  std::string id;
  ExecuteRequest request;
  Json parameters;                                   // checked, with defaults
  std::shared_ptr<const registry::FileRecord> file;  // pins the manifest version it runs with
  CancelToken cancel;

  Mutex mu;
  std::condition_variable cv;
  bool started CORTEX_GUARDED_BY(mu) = false;
  bool done CORTEX_GUARDED_BY(mu) = false;
  store::ExecutionRecord record CORTEX_GUARDED_BY(mu);  // the latest state
  std::deque<LiveLine> lines CORTEX_GUARDED_BY(mu);     // bounded by options.live_lines
  int64_t next_seq CORTEX_GUARDED_BY(mu) = 1;
  trace::Span span;  // from Prepare to Finish
};

std::string NewExecutionId() { return RandomId("ex_"); }

int64_t NowMs() { return UnixNowMs(); }

Json ExecutionJson(const store::ExecutionRecord& r) {
  Json j = {{"execution_id", r.id},
            {"tool", r.name},
            {"status", r.status},
            {"success", r.status == "succeeded"}};
  if (!r.result_json.empty()) {
    j["result"] = ParseJsonOrString(r.result_json);
  }
  if (!r.error.empty()) j["error"] = r.error;
  if (r.exit_code) j["exit_code"] = *r.exit_code;
  if (r.signal) j["signal"] = *r.signal;
  j["parameters"] = ParseJsonOrString(r.parameters_json);
  if (!r.stderr_tail.empty()) j["stderr_tail"] = r.stderr_tail;
  if (!r.notes.empty()) {
    Json notes = Json::array();
    for (size_t b = 0, e; b < r.notes.size(); b = e + 1) {
      e = r.notes.find('\n', b);
      if (e == std::string::npos) e = r.notes.size();
      notes.push_back(r.notes.substr(b, e - b));
    }
    j["notes"] = std::move(notes);
  }
  j["created_ms"] = r.created_ms;
  if (r.started_ms) j["started_ms"] = r.started_ms;
  if (r.finished_ms) j["finished_ms"] = r.finished_ms;
  j["duration_ms"] = r.duration_ms;
  j["cpu_user_ms"] = r.cpu_user_ms;
  j["cpu_system_ms"] = r.cpu_system_ms;
  j["peak_memory_bytes"] = r.peak_memory_bytes;
  j["sandboxed"] = r.sandboxed;
  if (!r.idempotency_key.empty()) j["idempotency_key"] = r.idempotency_key;
  return j;
}

Executor::Executor(ExecutorOptions options, registry::Registry& registry, store::Store& store,
                   ProcessRunner& runner, ProgramResolver resolve)
    : options_(std::move(options)),
      registry_(registry),
      store_(store),
      runner_(runner),
      resolve_(std::move(resolve)) {
  if (metrics::Registry* m = options_.metrics) {
    calls_metric_ =
        &m->NewCounter("cortex_tool_calls_total", "Tool executions finished, by tool and status.",
                       {"tool", "status"});
    duration_metric_ = &m->NewHistogram(
        "cortex_tool_call_duration_seconds",
        "Time from a tool execution's start to its end (queue time excluded).", {"tool"});
    auto& depth = m->NewGauge("cortex_tool_queue_depth",
                              "Tool executions waiting for a worker, and running.", {"state"});
    depth_collector_ = m->OnScrape([this, &depth]() CORTEX_EXCLUDES(mu_) {
      MutexLock lock(mu_);
      depth.Set({"queued"}, static_cast<double>(queue_.size()));
      depth.Set({"running"}, running_);
    });
  }
  int n = std::max(1, options_.workers);
  for (int i = 0; i < n; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

Executor::~Executor() {
  std::vector<std::shared_ptr<Job>> pending;
  {
    MutexLock lock(mu_);
    stopping_ = true;
    for (auto& [id, job] : jobs_) job->cancel.Cancel();
    pending.assign(queue_.begin(), queue_.end());
    queue_.clear();
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  for (auto& job : pending) {
    store::ExecutionRecord r = job->record;
    r.status = "interrupted";
    r.error = "interrupted: the server stopped before it ran";
    r.finished_ms = NowMs();
    Finish(job, std::move(r));
  }
}

size_t Executor::queued() const {
  MutexLock lock(mu_);
  return queue_.size();
}

Result<std::shared_ptr<Executor::Job>> Executor::Prepare(const ExecuteRequest& request,
                                                         std::vector<FieldError>* field_errors) {
  auto snap = registry_.snapshot();
  const registry::Entry* entry = snap->Find(registry::Kind::kTool, request.tool);
  if (!entry) {
    std::string msg = "no Tool named '" + request.tool + "'";
    std::vector<std::string_view> names;
    for (const registry::Entry* e : snap->List(registry::Kind::kTool)) names.push_back(e->name());
    std::string_view hint = registry::ClosestMatch(request.tool, names);
    if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
    return NotFoundError(msg);
  }
  if (!entry->resolved()) {
    return FailedPreconditionError("Tool/" + request.tool +
                                   " cannot run: " + entry->problems.front());
  }
  if (!options_.sandbox && !options_.allow_unsandboxed) {
    return FailedPreconditionError(
        "tools cannot be sandboxed here (bubblewrap is not usable) and unsandboxed runs are not "
        "allowed (set exec.allow_unsandboxed: true to run them anyway)");
  }
  const auto* tool = entry->manifest().As<registry::ToolSpec>();
  ParameterCheck check = CheckParameters(tool->parameters, request.parameters);
  if (!check.ok()) {
    if (field_errors) *field_errors = check.errors;
    std::string msg = "invalid parameters for Tool/" + request.tool + ": ";
    for (size_t i = 0; i < check.errors.size(); ++i) {
      const FieldError& e = check.errors[i];
      msg += (i ? "; " : "") + (e.field.empty() ? e.message : e.field + ": " + e.message);
    }
    return InvalidArgumentError(msg);
  }

  auto job = std::make_shared<Job>();
  job->id = request.execution_id.empty() ? NewExecutionId() : request.execution_id;
  job->request = request;
  if (options_.tracer) {
    job->span = options_.tracer->Start("tool " + request.tool, request.traceparent);
    job->span.SetAttribute("cortex.tool", request.tool);
    job->span.SetAttribute("cortex.execution_id", job->id);
  }
  job->parameters = std::move(check.values);
  job->file = entry->file;
  {
    MutexLock lock(job->mu);  // (no other thread has the job yet)
    store::ExecutionRecord& r = job->record;
    r.id = job->id;
    r.kind = "tool";
    r.name = request.tool;
    r.status = "queued";
    r.parameters_json = DumpJson(job->parameters);
    r.created_ms = NowMs();
    r.sandboxed = options_.sandbox.has_value();
    r.idempotency_key = request.idempotency_key.empty() ? job->id : request.idempotency_key;
    r.manifest_version = std::to_string(entry->file->revision);
  }
  return job;
}

Status Executor::Enqueue(const std::vector<std::shared_ptr<Job>>& jobs) {
  // Refused, a call never ran: its span is not exported (a waiting caller tries again).
  auto refuse = [&jobs](Status why) {
    for (const auto& job : jobs) job->span.Discard();
    return why;
  };
  {
    // Slots are reserved before the records are written, so concurrent calls cannot overfill
    // the queue; a batch gets all its slots or none.
    MutexLock lock(mu_);
    if (stopping_) return refuse(UnavailableError("the executor is stopping"));
    if (queue_.size() + reserved_ + jobs.size() > options_.queue_capacity) {
      return refuse(ResourceExhaustedError(
          "the execution queue is full (" + std::to_string(queue_.size() + reserved_) + " of " +
          std::to_string(options_.queue_capacity) + " places taken" +
          (jobs.size() > 1 ? ", " + std::to_string(jobs.size()) + " needed" : std::string()) +
          "); retry later"));
    }
    reserved_ += jobs.size();
  }
  // Durable before it is acknowledged.
  Status written;
  size_t n_written = 0;
  for (; n_written < jobs.size() && written.ok(); ++n_written) {
    Job& job = *jobs[n_written];
    MutexLock lock(job.mu);  // (no other thread has the job yet)
    written = store_.CreateExecution(job.record);
  }
  if (!written.ok()) --n_written;
  std::vector<std::shared_ptr<Job>> orphans;
  {
    MutexLock lock(mu_);
    reserved_ -= jobs.size();
    if (written.ok()) {
      for (const auto& job : jobs) {
        queue_.push_back(job);
        jobs_[job->id] = job;
      }
    }
  }
  if (!written.ok()) {
    // Records already written for this batch must not stay "queued" forever.
    for (size_t i = 0; i < n_written; ++i) {
      store::ExecutionRecord r;
      {
        MutexLock lock(jobs[i]->mu);
        r = jobs[i]->record;
      }
      r.status = "failed";
      r.error = "not run: the rest of its batch could not be recorded (" + written.message() + ")";
      r.finished_ms = NowMs();
      (void)store_.UpdateExecution(r);
    }
    return written;
  }
  if (jobs.size() == 1) {
    work_cv_.notify_one();
  } else {
    work_cv_.notify_all();
  }
  return Status::Ok();
}

Result<std::string> Executor::Submit(const ExecuteRequest& request,
                                     std::vector<FieldError>* field_errors) {
  CORTEX_ASSIGN_OR_RETURN(std::shared_ptr<Job> job, Prepare(request, field_errors));
  CORTEX_RETURN_IF_ERROR(Enqueue({job}));
  return job->id;
}

Result<std::vector<std::string>> Executor::SubmitBatch(const std::vector<ExecuteRequest>& requests,
                                                       std::vector<BatchItemError>* errors) {
  if (requests.empty()) return InvalidArgumentError("the batch has no calls");
  std::vector<std::shared_ptr<Job>> jobs;
  for (size_t i = 0; i < requests.size(); ++i) {
    BatchItemError item;
    item.index = i;
    auto job = Prepare(requests[i], &item.fields);
    if (job.ok()) {
      jobs.push_back(std::move(job).value());
      continue;
    }
    item.status = job.status();
    if (errors) errors->push_back(std::move(item));
  }
  if (errors && !errors->empty()) {
    const BatchItemError& first = errors->front();
    return InvalidArgumentError(std::to_string(errors->size()) + " of " +
                                std::to_string(requests.size()) +
                                " calls are invalid, so none was run; the first: calls[" +
                                std::to_string(first.index) + "]: " + first.status.message());
  }
  CORTEX_RETURN_IF_ERROR(Enqueue(jobs));
  std::vector<std::string> ids;
  for (const auto& job : jobs) ids.push_back(job->id);
  return ids;
}

Result<ProcessSpec> Executor::Sandboxed(ProcessSpec spec, const ToolCall& call) const {
  if (!options_.sandbox) return spec;
  SandboxPolicy policy;
  policy.tool_dir = call.tool_dir;
  const auto& impl = call.tool->As<registry::ToolSpec>()->implementation;
  policy.network = impl.network.value_or(false);
  policy.host_ports = impl.host_ports;
  policy.host_network = options_.tool_network_host;
  policy.hidden_paths = options_.hidden_paths;
  // The plan (bwrap's options: resolved paths) of this tool's program, reused while the files
  // it resolved are unchanged; a manifest's network flag and host ports are part of the key.
  std::string key = call.tool_dir + '\n' + (spec.argv.empty() ? "" : spec.argv[0]);
  if (policy.network) {
    key += "\nnetwork " + PastaHostPortSpec(policy.host_ports);
  }
  std::shared_ptr<const SandboxPlan> plan;
  {
    MutexLock lock(plans_mu_);
    if (auto it = plans_.find(key); it != plans_.end()) plan = it->second;
  }
  if (!plan || !plan->StillValid()) {
    auto made = PlanSandbox(spec.argv.empty() ? "" : spec.argv[0], policy, *options_.sandbox);
    if (!made.ok()) return InternalError("cannot sandbox the tool: " + made.status().message());
    plan = std::make_shared<const SandboxPlan>(std::move(made).value());
    MutexLock lock(plans_mu_);
    if (plans_.size() >= kMaxSandboxPlans) plans_.clear();
    plans_[key] = plan;
  }
  auto wrapped = WrapInSandbox(spec, *plan, *options_.sandbox);
  if (!wrapped.ok()) return InternalError("cannot sandbox the tool: " + wrapped.status().message());
  return wrapped;
}

Result<ToolHealth> Executor::CheckHealth(const std::string& tool_name) {
  auto snap = registry_.snapshot();
  const registry::Entry* entry = snap->Find(registry::Kind::kTool, tool_name);
  if (!entry) return NotFoundError("no Tool named '" + tool_name + "'");
  ToolHealth h;
  h.tool = tool_name;
  h.checked_ms = NowMs();
  h.sandboxed = options_.sandbox.has_value();
  ToolCall call;
  call.tool = entry->file->manifest.get();
  call.tool_dir = entry->file->path.substr(0, entry->file->path.find_last_of('/'));
  call.execution_id = RandomId("health_");
  const auto* tool = entry->manifest().As<registry::ToolSpec>();
  const auto& declared = tool->implementation.health_check;
  auto unhealthy = [&](std::string why) {
    h.status = "unhealthy";
    h.error = std::move(why);
    return h;
  };
  if (!entry->resolved())
    return unhealthy("the manifest is unresolved: " + entry->problems.front());
  if (!options_.sandbox && !options_.allow_unsandboxed) {
    return unhealthy("tools cannot be sandboxed here and unsandboxed runs are not allowed");
  }
  if (tool->implementation.type == "mcp") {
    // Another MCP server's tool: healthy when the server answers and lists it.
    h.check = "mcp";
    if (!options_.external) return unhealthy("tools of type 'mcp' cannot be run by this server");
    const auto t0 = std::chrono::steady_clock::now();
    Status st = options_.external->Check(
        call, ToolTimeout(tool->implementation.resources, options_.defaults));
    h.duration_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    if (!st.ok()) return unhealthy(st.message());
    h.status = "healthy";
    return h;
  }
  if (!declared) {
    // Nothing declared: what can be known without running the tool.
    h.check = "static";
    auto spec = BuildToolProcess(call, options_.defaults, resolve_);
    if (!spec.ok()) return unhealthy(spec.status().message());
    h.status = "healthy";
    return h;
  }
  h.check = "command";
  h.command = declared->command;
  h.expected_exit_code = static_cast<int>(declared->expected_exit_code.value_or(0));
  h.expected_output = declared->expected_output_contains.value_or("");
  auto spec = BuildToolHealthProcess(call, options_.defaults, resolve_);
  if (!spec.ok()) {
    if (spec.status().code() == StatusCode::kUnimplemented) return spec.status();
    return unhealthy(spec.status().message());
  }
  auto wrapped = Sandboxed(std::move(spec).value(), call);
  if (!wrapped.ok()) return unhealthy(wrapped.status().message());
  {
    MutexLock lock(mu_);
    if (stopping_) return UnavailableError("the executor is stopping");
    if (health_checks_ >= std::max(1, options_.workers)) {
      return ResourceExhaustedError("too many health checks running; retry later");
    }
    ++health_checks_;
  }
  CancelToken cancel;
  auto result = runner_.Run(*wrapped, nullptr, &cancel);
  {
    MutexLock lock(mu_);
    --health_checks_;
  }
  if (!result.ok()) return unhealthy("the check could not start: " + result.status().message());
  const ProcessResult& pr = *result;
  h.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(pr.wall).count();
  std::string output = pr.stdout_data + pr.stderr_data;
  h.output = output.size() > 2048 ? output.substr(output.size() - 2048) : output;
  if (pr.reason != EndReason::kExited) {
    return unhealthy("the check did not finish: " + (pr.reason_text.empty()
                                                         ? std::string(EndReasonName(pr.reason))
                                                         : pr.reason_text));
  }
  h.exit_code = pr.exit_code;
  if (pr.exit_code != h.expected_exit_code) {
    return unhealthy("exit code " + std::to_string(pr.exit_code) + ", expected " +
                     std::to_string(h.expected_exit_code));
  }
  if (!h.expected_output.empty() && output.find(h.expected_output) == std::string::npos) {
    return unhealthy("the output does not contain \"" + h.expected_output + "\"");
  }
  h.status = "healthy";
  return h;
}

Json ToolHealthJson(const ToolHealth& h) {
  Json j = {{"tool", h.tool},
            {"status", h.status},
            {"healthy", h.status == "healthy"},
            {"check", h.check}};
  if (!h.command.empty()) {
    j["command"] = h.command;
    j["expected_exit_code"] = h.expected_exit_code;
    if (h.exit_code) j["exit_code"] = *h.exit_code;
    if (!h.expected_output.empty()) j["expected_output_contains"] = h.expected_output;
    j["output"] = h.output;
    j["duration_ms"] = h.duration_ms;
    j["sandboxed"] = h.sandboxed;
  }
  if (!h.error.empty()) j["error"] = h.error;
  j["checked_ms"] = h.checked_ms;
  return j;
}

void Executor::WorkerLoop() {
  const int slots = std::max(1, options_.workers);
  for (;;) {
    std::shared_ptr<Job> job;
    {
      MutexLock lock(mu_);
      work_cv_.wait(lock.native(), [&]() CORTEX_REQUIRES(mu_) {
        return stopping_ || (!queue_.empty() && running_ < slots);
      });
      if (stopping_) return;
      job = queue_.front();
      queue_.pop_front();
      ++running_;
    }
    (void)RunJobGuarded(job, /*record_at_spawn=*/false);  // OK without record_at_spawn
    {
      MutexLock lock(mu_);
      --running_;
    }
    work_cv_.notify_one();
  }
}

Result<std::string> Executor::Run(const ExecuteRequest& request,
                                  std::vector<FieldError>* field_errors,
                                  std::chrono::milliseconds inline_up_to) {
  CORTEX_ASSIGN_OR_RETURN(std::shared_ptr<Job> job, Prepare(request, field_errors));
  // Inline only when it cannot hold the caller longer than it would wait anyway.
  const auto* tool = job->file->manifest->As<registry::ToolSpec>();
  bool short_enough = ToolTimeout(tool->implementation.resources, options_.defaults) +
                          options_.defaults.kill_grace <
                      inline_up_to;
  bool run_here = false;
  {
    MutexLock lock(mu_);
    if (stopping_) {
      job->span.Discard();
      return UnavailableError("the executor is stopping");
    }
    if (short_enough && queue_.empty() && reserved_ == 0 &&
        running_ < std::max(1, options_.workers)) {
      ++running_;  // a worker's place, taken by this thread
      run_here = true;
    }
  }
  if (!run_here) {
    CORTEX_RETURN_IF_ERROR(Enqueue({job}));
    return job->id;
  }
  // Durable before it runs, as when queued: recorded as running at once (one write less).
  // Sandboxed, the record is written while bwrap sets the sandbox up, and the tool starts only
  // once it is in the Store (ProcessSpec::start_gate); unsandboxed, before the spawn.
  store::ExecutionRecord running;
  {
    MutexLock lock(job->mu);
    job->record.status = "running";
    job->record.started_ms = NowMs();
    if (!options_.sandbox) running = job->record;
  }
  {
    MutexLock lock(mu_);
    jobs_[job->id] = job;
  }
  Status written;
  if (options_.sandbox) {
    written = RunJobGuarded(job, /*record_at_spawn=*/true);
  } else {
    written = store_.CreateExecution(running);
    if (written.ok()) (void)RunJobGuarded(job, /*record_at_spawn=*/false);
  }
  if (!written.ok()) {
    MutexLock lock(mu_);
    jobs_.erase(job->id);
  }
  {
    MutexLock lock(mu_);
    --running_;
  }
  work_cv_.notify_one();  // a queued call may have waited for this place
  if (!written.ok()) return written;
  return job->id;
}

Status Executor::RunJobGuarded(const std::shared_ptr<Job>& job, bool record_at_spawn) {
  std::string why;
  try {
    return RunJob(job, record_at_spawn);
  } catch (const std::exception& e) {
    why = e.what();
  } catch (...) {
    why = "unknown exception";
  }
  log::Error("exec", "bug: running " + job->id + " threw: " + why);
  store::ExecutionRecord r;
  {
    MutexLock lock(job->mu);
    if (job->done) return Status::Ok();
    r = job->record;
  }
  if (r.started_ms == 0) r.started_ms = NowMs();
  if (record_at_spawn) (void)store_.CreateExecution(r);  // AlreadyExists when it was recorded
  r.status = "failed";
  r.error = "internal error while running the tool: " + ToValidUtf8(why);
  r.finished_ms = NowMs();
  r.duration_ms = r.finished_ms - r.started_ms;
  Finish(job, std::move(r));
  return Status::Ok();
}

Status Executor::RunJob(const std::shared_ptr<Job>& job, bool record_at_spawn) {
  store::ExecutionRecord r;
  {
    MutexLock lock(job->mu);
    job->started = true;
    r = job->record;
  }
  // With record_at_spawn the execution is not in the Store yet: it is created (as running) once
  // the sandbox is spawned, or before an outcome is written.
  bool recorded = !record_at_spawn;
  store::ExecutionRecord running = r;
  auto record = [&]() -> Status {
    Status st = store_.CreateExecution(running);
    recorded = st.ok();
    return st;
  };
  if (job->cancel.cancelled()) {
    r.status = "cancelled";
    r.error = "cancelled before it started";
    r.finished_ms = NowMs();
    if (!recorded) CORTEX_RETURN_IF_ERROR(record());
    Finish(job, std::move(r));
    return Status::Ok();
  }
  if (r.status != "running") {  // an inline call was recorded as running from the start
    r.status = "running";
    r.started_ms = NowMs();
    if (Status st = store_.UpdateExecution(r); !st.ok()) {
      log::Warn("exec", "cannot record " + r.id + " as running: " + st.message());
    }
  }
  {
    MutexLock lock(job->mu);
    job->record = r;
  }

  auto fail = [&](const std::string& why) -> Status {
    if (!recorded) CORTEX_RETURN_IF_ERROR(record());
    r.status = "failed";
    r.error = why;
    r.finished_ms = NowMs();
    r.duration_ms = r.finished_ms - r.started_ms;
    Finish(job, std::move(r));
    return Status::Ok();
  };
  ToolCall call;
  call.tool = job->file->manifest.get();
  call.tool_dir = job->file->path.substr(0, job->file->path.find_last_of('/'));
  call.parameters = job->parameters;
  call.execution_id = job->id;
  call.idempotency_key = r.idempotency_key;
  call.traceparent = job->span.traceparent();
  if (call.traceparent.empty()) call.traceparent = job->request.traceparent;
  std::vector<store::LogLine> pending_logs;
  int64_t last_flush_ms = NowMs();
  auto flush_logs = [&] {
    if (pending_logs.empty()) return;
    if (Status st = store_.AppendLogs(job->id, pending_logs); !st.ok()) {
      log::Warn("exec", "cannot record output of " + job->id + ": " + st.message());
    }
    pending_logs.clear();
  };
  auto on_line = [&](const OutputLine& line) {
    LiveLine live;
    {
      MutexLock lock(job->mu);
      live = LiveLine{job->next_seq++, line.is_stderr, line.text};
      job->lines.push_back(live);
      if (job->lines.size() > options_.live_lines) job->lines.pop_front();
    }
    job->cv.notify_all();
    int64_t now = NowMs();
    pending_logs.push_back({live.seq, live.is_stderr, now, live.text});
    // Batched, but never older than half a second: a crash loses little output.
    if (pending_logs.size() >= 256 || now - last_flush_ms >= 500) {
      flush_logs();
      last_flush_ms = now;
    }
  };

  const auto* tool_spec = call.tool->As<registry::ToolSpec>();
  if (tool_spec && tool_spec->implementation.type == "mcp") {
    // Another MCP server's tool: called through the composition root's ExternalTools, recorded
    // and followed like a process (its progress messages are its output lines).
    if (!options_.external) return fail("tools of type 'mcp' cannot be run by this server");
    if (!recorded) CORTEX_RETURN_IF_ERROR(record());
    auto timeout = ToolTimeout(tool_spec->implementation.resources, options_.defaults);
    if (job->request.timeout && *job->request.timeout < timeout) timeout = *job->request.timeout;
    ExternalTools::Call ext;
    ext.tool = &call;
    ext.timeout = timeout;
    ext.cancel = &job->cancel;
    ext.on_line = [&](const std::string& text) { on_line(OutputLine{true, text}); };
    const auto t0 = std::chrono::steady_clock::now();
    auto outcome = options_.external->Run(ext);
    r.finished_ms = NowMs();
    r.duration_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    if (outcome.ok()) {
      r.status = outcome->success ? "succeeded" : "failed";
      r.result_json = DumpJson(outcome->result);
      r.error = outcome->error;
    } else if (job->cancel.cancelled()) {
      MutexLock lock(mu_);
      r.status = stopping_ ? "interrupted" : "cancelled";
      r.error = stopping_ ? "interrupted: the server stopped while it was running" : "cancelled";
    } else {
      r.status = outcome.status().code() == StatusCode::kDeadlineExceeded ? "timeout" : "failed";
      r.error = outcome.status().message();
    }
    Finish(job, std::move(r), std::move(pending_logs));
    return Status::Ok();
  }
  auto spec = BuildToolProcess(call, options_.defaults, resolve_);
  if (!spec.ok()) return fail(spec.status().message());
  if (job->request.timeout && *job->request.timeout < spec->limits.timeout) {
    spec->limits.timeout = *job->request.timeout;
  }
  spec->reap_in_background = true;  // the sandbox's teardown is not the caller's to wait for
  Status record_status;
  if (record_at_spawn) {
    spec->start_gate = true;  // bwrap --block-fd: the tool waits for the record
    spec->on_spawned = [&](int) { return record_status = record(); };
  }
  auto wrapped = Sandboxed(std::move(spec).value(), call);
  if (!wrapped.ok()) return fail(wrapped.status().message());
  ProcessSpec to_run = std::move(wrapped).value();

  auto result = runner_.Run(to_run, on_line, &job->cancel);
  if (result.ok() && record_status.ok() && !recorded) record_status = record();  // no callback
  if (!record_status.ok()) {
    // Not recorded, and killed before the tool ran: the caller answers with the Store's error.
    MutexLock lock(job->mu);
    job->record.status = "failed";
    job->record.error = "not run: " + record_status.message();
    job->done = true;
    return record_status;
  }
  if (!result.ok()) {
    flush_logs();
    return fail(result.status().message());
  }

  const ProcessResult& pr = *result;
  ToolOutcome outcome = InterpretToolResult(pr);
  std::optional<int> bwrap_signal;
  // Under bubblewrap a tool killed by signal N shows as bwrap exiting with 128 + N.
  if (options_.sandbox && pr.reason == EndReason::kExited && pr.exit_code > 128 &&
      pr.exit_code < 128 + 65) {
    bwrap_signal = pr.exit_code - 128;
    const char* name = sigabbrev_np(*bwrap_signal);
    outcome.success = false;
    outcome.error = "killed by signal " + std::to_string(*bwrap_signal) +
                    (name ? std::string(" (SIG") + name + ")" : std::string());
  }
  r.finished_ms = NowMs();
  r.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(pr.wall).count();
  r.cpu_user_ms = std::chrono::duration_cast<std::chrono::milliseconds>(pr.cpu_user).count();
  r.cpu_system_ms = std::chrono::duration_cast<std::chrono::milliseconds>(pr.cpu_system).count();
  r.peak_memory_bytes = static_cast<int64_t>(pr.peak_memory_bytes);
  if (pr.reason == EndReason::kExited && !bwrap_signal) r.exit_code = pr.exit_code;
  if (pr.signal) r.signal = pr.signal;
  if (bwrap_signal) r.signal = *bwrap_signal;
  r.result_json = DumpJson(outcome.result);
  r.error = outcome.error;
  for (const std::string& note : outcome.notes) r.notes += (r.notes.empty() ? "" : "\n") + note;
  if (!r.sandboxed && !outcome.error.empty()) r.error += " (ran without a sandbox)";
  size_t tail = options_.stderr_tail_bytes;
  r.stderr_tail =
      ToValidUtf8(pr.stderr_data.size() > tail ? pr.stderr_data.substr(pr.stderr_data.size() - tail)
                                               : pr.stderr_data);
  switch (pr.reason) {
    case EndReason::kTimeout:
      r.status = "timeout";
      break;
    case EndReason::kCancelled: {
      MutexLock lock(mu_);
      if (stopping_) {
        r.status = "interrupted";
        r.error = "interrupted: the server stopped while it was running";
      } else {
        r.status = "cancelled";
      }
      break;
    }
    default:
      r.status = outcome.success ? "succeeded" : "failed";
  }
  Finish(job, std::move(r), std::move(pending_logs));  // the last lines and the outcome together
  return Status::Ok();
}

void Executor::Finish(const std::shared_ptr<Job>& job, store::ExecutionRecord record,
                      std::vector<store::LogLine> lines) {
  Status finished = store_.FinishExecution(record, lines);
  if (!finished.ok() && !lines.empty()) {
    // The lines could not be stored: the outcome must be, whatever happened to them.
    log::Warn("exec", "cannot record output of " + record.id + ": " + finished.message());
    finished = store_.UpdateExecution(record);
  }
  if (Status st = finished; !st.ok()) {
    log::Error("exec", "cannot record the outcome of " + record.id + ": " + st.message());
  }
  if (calls_metric_) {
    calls_metric_->Inc({record.name, record.status});
    if (record.started_ms > 0) {
      duration_metric_->Observe({record.name}, static_cast<double>(record.duration_ms) / 1000.0);
    }
  }
  // One line a call, whatever became of it (the record has the rest).
  std::string line = "tool " + record.name + " " + record.id + " " + record.status;
  if (record.started_ms > 0) line += " in " + std::to_string(record.duration_ms) + " ms";
  if (record.status != "succeeded" && !record.error.empty()) line += ": " + record.error;
  if (record.status == "succeeded" || record.status == "cancelled") {
    log::Info("exec", line);
  } else {
    log::Warn("exec", line);
  }
  job->span.SetAttribute("cortex.status", record.status);
  if (record.exit_code) job->span.SetAttribute("process.exit.code", int64_t{*record.exit_code});
  if (record.status != "succeeded")
    job->span.SetError(record.error.empty() ? record.status : record.error);
  job->span.End();
  const store::ExecutionRecord* final_record = nullptr;
  {
    MutexLock lock(job->mu);
    job->record = std::move(record);
    job->done = true;
    final_record = &job->record;  // done: no writer any more, so read below without the lock
  }
  job->cv.notify_all();
  if (job->request.on_finish) job->request.on_finish(*final_record);
  MutexLock lock(mu_);
  finished_order_.push_back(job->id);
  while (finished_order_.size() > options_.recent) {
    jobs_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
}

Result<store::ExecutionRecord> Executor::Wait(const std::string& id,
                                              std::chrono::milliseconds timeout) {
  std::shared_ptr<Job> job;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it != jobs_.end()) job = it->second;
  }
  if (!job) {
    CORTEX_ASSIGN_OR_RETURN(auto rec, store_.GetExecution(id));
    if (!rec) return NotFoundError("no execution " + id);
    return *rec;
  }
  MutexLock lock(job->mu);
  job->cv.wait_for(lock.native(), timeout, [&]() CORTEX_REQUIRES(job->mu) { return job->done; });
  return job->record;
}

Result<std::vector<LiveLine>> Executor::Follow(const std::string& id, int64_t after_seq,
                                               std::chrono::milliseconds timeout, bool* done) {
  std::shared_ptr<Job> job;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it != jobs_.end()) job = it->second;
  }
  if (!job) return NotFoundError("execution " + id + " is not live");
  MutexLock lock(job->mu);
  job->cv.wait_for(lock.native(), timeout, [&]() CORTEX_REQUIRES(job->mu) {
    return job->done || job->next_seq - 1 > after_seq;
  });
  std::vector<LiveLine> out;
  for (const LiveLine& l : job->lines) {
    if (l.seq > after_seq) out.push_back(l);
  }
  if (done) *done = job->done;
  return out;
}

Status Executor::Cancel(const std::string& id) {
  std::shared_ptr<Job> job;
  bool was_queued = false;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) {
      return NotFoundError("no running or queued execution " + id);
    }
    job = it->second;
    for (auto q = queue_.begin(); q != queue_.end(); ++q) {
      if ((*q)->id == id) {
        queue_.erase(q);
        was_queued = true;
        break;
      }
    }
  }
  store::ExecutionRecord r;
  {
    MutexLock lock(job->mu);
    if (job->done) return FailedPreconditionError("execution " + id + " has already finished");
    if (was_queued) r = job->record;
  }
  job->cancel.Cancel();
  if (was_queued) {
    r.status = "cancelled";
    r.error = "cancelled before it started";
    r.finished_ms = NowMs();
    Finish(job, std::move(r));
  }
  return Status::Ok();
}

}  // namespace cortex::exec
