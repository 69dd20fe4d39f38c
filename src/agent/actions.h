// What an agent's actions reach outside the loop: tools (the executor), relic operations (the
// deployer) and workflows (the engine). The agent module owns this interface; the composition
// root (api/) implements it over those modules, so the loop depends on none of them.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "store/store.h"

namespace cortex::agent {

class ActionDispatcher {
 public:
  using Json = nlohmann::ordered_json;
  virtual ~ActionDispatcher() = default;

  struct ToolCall {
    std::string tool;
    Json parameters;
    std::string execution_id;     // chosen by the loop, recorded before the call
    std::string idempotency_key;  // the same each time one action runs (CORTEX_IDEMPOTENCY_KEY)
    std::chrono::milliseconds timeout{300000};
    std::string traceparent;  // the action's trace context
  };
  // Starts a tool; `done` is called once, on any thread, with the final record. An error means
  // it did not start (and why: bad parameters are InvalidArgument, naming each field).
  virtual Status StartTool(const ToolCall& call,
                           std::function<void(const store::ExecutionRecord&)> done) = 0;
  virtual void CancelTool(const std::string& execution_id) = 0;

  struct RelicCall {
    std::string relic;
    std::string operation;  // one of the relic's interface endpoints
    Json parameters;
    std::chrono::milliseconds timeout{60000};
    std::string traceparent;
  };
  virtual Status StartRelicCall(const RelicCall& call, std::function<void(Result<Json>)> done) = 0;

  struct WorkflowCall {
    std::string workflow;
    Json input = Json::object();
    // The run's id, the same each time one action runs: a run that exists is awaited, not
    // started again.
    std::string run_id;
    std::chrono::milliseconds timeout{300000};
    std::string traceparent;
  };
  // `done` gets the run's outputs once it succeeded, or why it failed.
  virtual Status StartWorkflow(const WorkflowCall& call,
                               std::function<void(Result<Json>)> done) = 0;
  virtual void CancelWorkflow(const std::string& run_id) = 0;
};

}  // namespace cortex::agent
