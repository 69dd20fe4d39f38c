// HTTP routes of agents and the LLM gateway: POST /execute/agent (JSON, or server-sent events),
// POST /agent-runs/{id}/cancel, GET /agent-runs, GET /llm/providers,
// POST /llm/providers/{name}/reset.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "agent/runner.h"
#include "http/http.h"
#include "llm/gateway.h"

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

void AddAgentRoutes(http::Server& server, agent::AgentRunner& runner, AgentRuns& runs);
void AddLlmRoutes(http::Server& server, llm::Gateway& gateway);

}  // namespace cortex::api
