// HTTP routes of agents and the LLM gateway: POST /execute/agent (JSON, server-sent events, or
// started in the background), the runs (GET /agent-runs, GET /agent-runs/{id},
// POST /agent-runs/{id}/cancel), sessions, GET /llm/providers, POST /llm/providers/{name}/reset.
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

// Agent steps of workflows: each is an agent run on a thread of its own (the runner's), under a
// run id that is the same each time the engine dispatches the same attempt, so that a step the
// engine dispatches again after a restart resumes its run instead of starting another. A step's
// timeout cancels its run.
Status StartAgentStep(agent::AgentRunner& runner, const workflow::StepDispatcher::AgentCall& call,
                      std::function<void(Result<nlohmann::ordered_json>)> done);

void AddAgentRoutes(http::Server& server, agent::AgentRunner& runner, store::Store& store,
                    registry::Registry& registry);
void AddLlmRoutes(http::Server& server, llm::Gateway& gateway);

// The OpenAI-compatible face of agents (docs/agents.md#openai-compatible-endpoint):
// POST /v1/chat/completions (model = the agent's name; streamed or not) and GET /v1/models.
void AddOpenAiRoutes(http::Server& server, agent::AgentRunner& runner,
                     registry::Registry& registry);

}  // namespace cortex::api
