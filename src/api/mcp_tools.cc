#include "api/mcp_tools.h"

#include <filesystem>

#include "common/json.h"

namespace cortex::api {

Result<mcp::ServerSpec> McpTools::SpecFor(const exec::ToolCall& tool) const {
  const auto* spec = tool.tool ? tool.tool->As<registry::ToolSpec>() : nullptr;
  if (!spec || !spec->implementation.mcp) {
    return FailedPreconditionError("the tool names no MCP server (implementation.mcp)");
  }
  const registry::McpToolServer& m = *spec->implementation.mcp;
  mcp::ServerSpec s;
  if (m.relic) {
    std::optional<std::string> base = relic_address_ ? relic_address_(*m.relic) : std::nullopt;
    if (!base) {
      return UnavailableError("relic " + *m.relic +
                              ", the MCP server of this tool, is not running (deploy it, or "
                              "its monument)");
    }
    std::string path = m.path.empty() || m.path[0] != '/' ? "/" + m.path : m.path;
    while (!base->empty() && base->back() == '/') base->pop_back();
    s.url = *base + path;
    for (const auto& [k, v] : m.headers) s.headers.emplace_back(k, v);
    return s;
  }
  if (m.url) {
    s.url = *m.url;
    for (const auto& [k, v] : m.headers) s.headers.emplace_back(k, v);
    return s;
  }
  if (m.command.empty()) return FailedPreconditionError("implementation.mcp.command is empty");
  std::string program = m.command.front();
  if (program.find('/') != std::string::npos) {
    std::filesystem::path p(program);
    if (p.is_relative()) p = std::filesystem::path(tool.tool_dir) / p;
    program = p.lexically_normal().string();
  } else {
    CORTEX_ASSIGN_OR_RETURN(program, resolve_(program));
  }
  s.argv = m.command;
  s.argv.front() = program;
  s.cwd = tool.tool_dir;
  s.env = {"PATH=" + path_env_, "HOME=" + home_};
  for (const auto& [k, v] : m.env) s.env.push_back(k + "=" + v);
  return s;
}

Result<exec::ToolOutcome> McpTools::Run(const Call& call) {
  CORTEX_ASSIGN_OR_RETURN(mcp::ServerSpec spec, SpecFor(*call.tool));
  const auto& impl = *call.tool->tool->As<registry::ToolSpec>()->implementation.mcp;
  const std::string name = impl.tool.empty() ? call.tool->tool->name() : impl.tool;
  CORTEX_ASSIGN_OR_RETURN(mcp::ToolCallResult r,
                          pool_.CallTool(spec, name, call.tool->parameters, call.timeout,
                                         call.cancel, [&](const std::string& message) {
                                           if (call.on_line) call.on_line(message);
                                         }));
  // The text the server gave, joined; its structured content when there is some, else the text
  // as JSON when it is JSON (as a process tool's stdout is read).
  std::string text;
  for (const auto& item : r.content) {
    if (item.is_object() && item.value("type", "") == "text") {
      text += (text.empty() ? "" : "\n") + item.value("text", "");
    }
  }
  exec::ToolOutcome out;
  out.success = !r.is_error;
  out.result = !r.structured.is_null() ? r.structured : ParseJsonOrString(text);
  if (r.is_error) out.error = text.empty() ? "the MCP server reported an error" : text;
  return out;
}

Status McpTools::Check(const exec::ToolCall& tool, std::chrono::milliseconds timeout) {
  CORTEX_ASSIGN_OR_RETURN(mcp::ServerSpec spec, SpecFor(tool));
  const auto& impl = *tool.tool->As<registry::ToolSpec>()->implementation.mcp;
  const std::string name = impl.tool.empty() ? tool.tool->name() : impl.tool;
  CORTEX_ASSIGN_OR_RETURN(std::vector<mcp::Json> tools, pool_.ListTools(spec, timeout));
  std::vector<std::string> names;
  for (const auto& t : tools) {
    if (t.is_object() && t.value("name", "") == name) return Status::Ok();
    if (t.is_object()) names.push_back(t.value("name", ""));
  }
  std::string listed;
  for (const auto& n : names) listed += (listed.empty() ? "" : ", ") + n;
  return NotFoundError("the MCP server " + spec.Describe() + " has no tool '" + name +
                       "' (it lists: " + (listed.empty() ? "none" : listed) + ")");
}

}  // namespace cortex::api
