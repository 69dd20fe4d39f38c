// HTTP routes of agents and the LLM gateway: POST /execute/agent (JSON, or server-sent events),
// POST /agent-runs/{id}/cancel, GET /agent-runs, GET /llm/providers,
// POST /llm/providers/{name}/reset.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "agent/runner.h"
#include "http/http.h"
#include "llm/gateway.h"
#include "registry/registry.h"
#include "store/store.h"
#include "workflow/engine.h"

namespace cortex::api {

// The agent runs in progress on this server, to list and cancel them (and to cancel them all
// when the server stops).
class AgentRuns {
 public:
  std::shared_ptr<CancelToken> Add(const std::string& run_id, const std::string& agent);
  void Remove(const std::string& run_id);
  bool Cancel(const std::string& run_id);
  void CancelAll();
  nlohmann::ordered_json List() const;

 private:
  struct Live {
    std::string agent;
    int64_t started_ms = 0;
    std::shared_ptr<CancelToken> cancel;
  };
  mutable std::mutex mu_;
  std::map<std::string, Live> live_;
  bool stopping_ = false;
};

// Agent steps of workflows: each runs on a thread of its own (a run is long and mostly waits),
// counted among the runs in progress so that stopping the server cancels it; the destructor
// waits for them.
class AgentSteps {
 public:
  AgentSteps(agent::AgentRunner& runner, AgentRuns& runs) : runner_(runner), runs_(runs) {}
  ~AgentSteps();
  Status Start(const workflow::StepDispatcher::AgentCall& call,
               std::function<void(Result<nlohmann::ordered_json>)> done);

 private:
  agent::AgentRunner& runner_;
  AgentRuns& runs_;
  std::mutex mu_;
  std::condition_variable idle_;
  int running_ = 0;
};

void AddAgentRoutes(http::Server& server, agent::AgentRunner& runner, AgentRuns& runs,
                    store::Store& store, registry::Registry& registry);
void AddLlmRoutes(http::Server& server, llm::Gateway& gateway);

// The OpenAI-compatible face of agents (docs/agents.md#openai-compatible-endpoint):
// POST /v1/chat/completions (model = the agent's name; streamed or not) and GET /v1/models.
void AddOpenAiRoutes(http::Server& server, agent::AgentRunner& runner, AgentRuns& runs,
                     registry::Registry& registry);

}  // namespace cortex::api
