// Tools of other MCP servers (implementation.type: mcp, docs/mcp.md#using-other-mcp-servers):
// the executor's ExternalTools over an mcp::ClientPool. A stdio server's command is found in
// the tool's folder or on PATH and started there with a minimal environment (PATH, HOME and the
// manifest's `env`); it is kept for later calls (tools naming the same command and env share
// it) and started again when it died.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "exec/executor.h"
#include "mcp/client.h"

namespace cortex::api {

class McpTools final : public exec::ExternalTools {
 public:
  McpTools(mcp::ClientPool& pool, exec::ProgramResolver resolve, std::string path_env,
           std::string home)
      : pool_(pool),
        resolve_(std::move(resolve)),
        path_env_(std::move(path_env)),
        home_(std::move(home)) {}

  // How `mcp.relic` finds its relic: the base URL of a running relic by name, or nullopt when
  // it is not running (set once the deployer exists).
  void SetRelicAddress(std::function<std::optional<std::string>(const std::string&)> address) {
    relic_address_ = std::move(address);
  }

  Result<exec::ToolOutcome> Run(const Call& call) override;
  Status Check(const exec::ToolCall& tool, std::chrono::milliseconds timeout) override;

  // The server a tool manifest names.
  Result<mcp::ServerSpec> SpecFor(const exec::ToolCall& tool) const;

 private:
  mcp::ClientPool& pool_;
  exec::ProgramResolver resolve_;
  std::string path_env_;
  std::string home_;
  std::function<std::optional<std::string>(const std::string&)> relic_address_;
};

}  // namespace cortex::api
