// The agent loop's ActionDispatcher over this server's parts: tools through the workflow
// engine's dispatcher (the executor, sandboxed and recorded like workflow steps), relic
// operations through the relic caller, workflows through the engine (started under the action's
// stable run id, then awaited on a thread of this object's).
#pragma once

#include <condition_variable>
#include <mutex>

#include "agent/actions.h"
#include "common/mutex.h"
#include "workflow/engine.h"

namespace cortex::api {

class AgentActions final : public agent::ActionDispatcher {
 public:
  explicit AgentActions(workflow::StepDispatcher& steps) : steps_(steps) {}
  ~AgentActions() override;  // Stop(), then waits for the threads awaiting workflows
  // The engine is made after the agent runtime (its agent steps use it).
  void SetEngine(workflow::Engine* engine) { engine_ = engine; }
  // Nothing more is awaited: waiting actions end with Unavailable.
  void Stop();

  Status StartTool(const ToolCall& call,
                   std::function<void(const store::ExecutionRecord&)> done) override;
  void CancelTool(const std::string& execution_id) override;
  Status StartRelicCall(const RelicCall& call, std::function<void(Result<Json>)> done) override;
  Status StartWorkflow(const WorkflowCall& call, std::function<void(Result<Json>)> done) override;
  void CancelWorkflow(const std::string& run_id) override;

 private:
  workflow::StepDispatcher& steps_;
  workflow::Engine* engine_ = nullptr;
  Mutex mu_;
  std::condition_variable idle_;
  int waiting_ CORTEX_GUARDED_BY(mu_) = 0;
  bool stopping_ CORTEX_GUARDED_BY(mu_) = false;
};

}  // namespace cortex::api
