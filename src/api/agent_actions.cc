#include "api/agent_actions.h"

#include <thread>

#include "common/json.h"

namespace cortex::api {

AgentActions::~AgentActions() {
  Stop();
  MutexLock lock(mu_);
  idle_.wait(lock.native(), [&]() CORTEX_REQUIRES(mu_) { return waiting_ == 0; });
}

void AgentActions::Stop() {
  MutexLock lock(mu_);
  stopping_ = true;
}

Status AgentActions::StartTool(const ToolCall& call,
                               std::function<void(const store::ExecutionRecord&)> done) {
  workflow::StepDispatcher::ToolCall step;
  step.tool = call.tool;
  step.parameters = call.parameters;
  step.execution_id = call.execution_id;
  step.idempotency_key = call.idempotency_key;
  step.timeout = call.timeout;
  step.traceparent = call.traceparent;
  return steps_.StartTool(step, std::move(done));
}

void AgentActions::CancelTool(const std::string& execution_id) { steps_.CancelTool(execution_id); }

Status AgentActions::StartRelicCall(const RelicCall& call, std::function<void(Result<Json>)> done) {
  workflow::StepDispatcher::RelicCall step;
  step.target = call.relic;
  step.action = call.operation;
  step.parameters = call.parameters;
  step.timeout = call.timeout;
  step.traceparent = call.traceparent;
  return steps_.StartRelicCall(step, std::move(done));
}

Status AgentActions::StartWorkflow(const WorkflowCall& call,
                                   std::function<void(Result<Json>)> done) {
  if (!engine_) return UnavailableError("workflows are not available in this server");
  workflow::StartRequest start;
  start.workflow = call.workflow;
  start.input = call.input;
  start.trigger = "agent";
  start.run_id = call.run_id;
  start.traceparent = call.traceparent;
  std::vector<exec::FieldError> fields;
  auto id = engine_->StartRun(start, &fields);
  // The action ran before (the agent run resumed): its run goes on, and is awaited.
  if (!id.ok() && id.status().code() != StatusCode::kAlreadyExists) {
    std::string why = id.status().message();
    for (const auto& f : fields) why += "; " + f.field + ": " + f.message;
    return Status(id.status().code(), why);
  }
  {
    MutexLock lock(mu_);
    if (stopping_) return UnavailableError("the server is stopping");
    ++waiting_;
  }
  std::thread([this, run_id = call.run_id, timeout = call.timeout, done = std::move(done)] {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    Result<Json> out =
        UnavailableError("the server stopped while workflow run " + run_id + " was awaited");
    for (;;) {
      {
        MutexLock lock(mu_);
        if (stopping_) break;
      }
      auto run = engine_->Wait(run_id, std::chrono::milliseconds(200));
      if (!run.ok()) {
        out = run.status();
        break;
      }
      if (run->status == "succeeded") {
        Json outputs = ParseJsonOrString(run->output_json);
        out = outputs.is_null() ? Json::object() : outputs;
        break;
      }
      if (run->status == "failed" || run->status == "cancelled") {
        out = FailedPreconditionError("workflow run " + run_id + " " + run->status +
                                      (run->error.empty() ? "" : ": " + run->error));
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        (void)engine_->Cancel(run_id);
        out =
            DeadlineExceededError("workflow run " + run_id + " did not finish in " +
                                  std::to_string(timeout.count() / 1000) + " s; it was cancelled");
        break;
      }
    }
    done(std::move(out));
    MutexLock lock(mu_);
    --waiting_;
    idle_.notify_all();
  }).detach();
  return Status::Ok();
}

void AgentActions::CancelWorkflow(const std::string& run_id) {
  if (engine_) (void)engine_->Cancel(run_id);
}

}  // namespace cortex::api
