// What Cortex offers over MCP (docs/mcp.md): every resolved Tool as an MCP tool (run by the
// executor: sandboxed, limited, recorded in the history like POST /execute/tool), each Workflow
// as a tool "workflow_<name>" (a run of the engine) and each Agent as a tool "agent_<name>" (a
// run of the agent loop) unless the configuration hides them; every manifest as a resource, and
// every agent's persona as a prompt. What a caller sees and may call follows its role and scopes.
#pragma once

#include "agent/runner.h"
#include "exec/executor.h"
#include "mcp/server.h"
#include "registry/registry.h"
#include "store/store.h"
#include "workflow/engine.h"

namespace cortex::api {

struct McpExposure {
  bool workflows = true;  // list workflows as tools (settings: mcp.expose_workflows)
  bool agents = true;     // list agents as tools (settings: mcp.expose_agents)
  // A call whose tool's timeout is below this may run on the request's own thread (no hand-off
  // to a worker), as POST /execute/tool does; a cancellation reaches it there too.
  std::chrono::milliseconds inline_up_to{600000};
  std::chrono::milliseconds call_timeout{600000};  // how long tools/call waits for a result
};

class McpBackend final : public mcp::Backend {
 public:
  // `engine` and `agents` may be null (then no workflow or agent tools).
  McpBackend(registry::Registry& registry, exec::Executor& executor, store::Store& store,
             workflow::Engine* engine, agent::AgentRunner* agents, McpExposure exposure);

  std::vector<mcp::ToolInfo> ListTools(const mcp::Caller& caller) override;
  Result<mcp::ToolResult> CallTool(const mcp::Caller& caller, const std::string& name,
                                   const mcp::Json& arguments, mcp::CallContext& context) override;
  std::vector<mcp::ResourceInfo> ListResources(const mcp::Caller& caller) override;
  Result<std::vector<mcp::ResourceContents>> ReadResource(const mcp::Caller& caller,
                                                          const std::string& uri) override;
  std::vector<mcp::PromptInfo> ListPrompts(const mcp::Caller& caller) override;
  Result<mcp::PromptResult> GetPrompt(const mcp::Caller& caller, const std::string& name,
                                      const mcp::Json& arguments) override;

 private:
  Result<mcp::ToolResult> CallCortexTool(const mcp::Caller& caller, const std::string& name,
                                         const mcp::Json& arguments, mcp::CallContext& context);
  Result<mcp::ToolResult> CallWorkflow(const mcp::Caller& caller, const std::string& name,
                                       const mcp::Json& arguments, mcp::CallContext& context);
  Result<mcp::ToolResult> CallAgent(const mcp::Caller& caller, const std::string& name,
                                    const mcp::Json& arguments, mcp::CallContext& context);

  registry::Registry& registry_;
  exec::Executor& executor_;
  store::Store& store_;
  workflow::Engine* engine_;
  agent::AgentRunner* agents_;
  const McpExposure exposure_;
};

}  // namespace cortex::api
