// The StepDispatcher of `cortex serve`: tool steps go to the Executor (so they are sandboxed,
// limited and in the execution history like any call), relic calls to an injected caller.
#pragma once

#include "exec/executor.h"
#include "workflow/engine.h"

namespace cortex::workflow {

class ExecutorDispatcher final : public StepDispatcher {
 public:
  using RelicCaller =
      std::function<Status(const RelicCall&, std::function<void(Result<Json>)> done)>;
  using AgentCaller =
      std::function<Status(const AgentCall&, std::function<void(Result<Json>)> done)>;

  ExecutorDispatcher(exec::Executor& executor, RelicCaller relic, AgentCaller agent = nullptr)
      : executor_(executor), relic_(std::move(relic)), agent_(std::move(agent)) {}

  // The agent runtime is made after the dispatcher it uses for its own actions.
  void SetAgentCaller(AgentCaller agent) { agent_ = std::move(agent); }

  Status StartTool(const ToolCall& call,
                   std::function<void(const store::ExecutionRecord&)> done) override {
    exec::ExecuteRequest request;
    request.tool = call.tool;
    request.parameters = call.parameters;
    request.idempotency_key = call.idempotency_key;
    request.execution_id = call.execution_id;
    request.timeout = call.timeout;
    request.traceparent = call.traceparent;
    request.on_finish = std::move(done);
    std::vector<exec::FieldError> fields;
    auto id = executor_.Submit(request, &fields);
    if (id.ok()) return Status::Ok();
    if (fields.empty()) return id.status();
    std::string why = id.status().message();
    for (const auto& f : fields) why += "; " + f.field + ": " + f.message;
    return Status(id.status().code(), why);
  }

  void CancelTool(const std::string& execution_id) override {
    (void)executor_.Cancel(execution_id);  // already finished: its completion is on its way
  }

  Status StartRelicCall(const RelicCall& call, std::function<void(Result<Json>)> done) override {
    if (!relic_) return StepDispatcher::StartRelicCall(call, std::move(done));
    return relic_(call, std::move(done));
  }

  Status StartAgent(const AgentCall& call, std::function<void(Result<Json>)> done) override {
    if (!agent_) return StepDispatcher::StartAgent(call, std::move(done));
    return agent_(call, std::move(done));
  }

 private:
  exec::Executor& executor_;
  RelicCaller relic_;
  AgentCaller agent_;
};

}  // namespace cortex::workflow
