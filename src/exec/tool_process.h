// From a Tool manifest and a call to the process that runs it, and from the process's result
// to the tool's outcome: the tool process contract (MK1-REFERENCE §1.2.1).
//
//   argv:   <interpreter> <entrypoint> <parameters as one JSON string>   (or the entrypoint
//           itself for a native binary); the parameters are also written to stdin.
//   cwd:    the tool's folder.
//   env:    a clean minimal environment, the tool's declared variables, CORTEX_EXECUTION_ID,
//           TRACEPARENT (W3C trace context) when the call has one.
//   result: stdout parsed as JSON when it is JSON, else kept as text. The call failed when the
//           process did not exit 0, or the JSON says "success": false or "status": "error".
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "exec/process.h"
#include "registry/manifest.h"

namespace cortex::exec {

struct ToolDefaults {
  std::chrono::milliseconds timeout{30000};
  uint64_t memory_bytes = 512ull << 20;
  uint64_t max_processes = 64;
  uint64_t max_open_files = 256;
  size_t max_output_bytes = 1u << 20;
  std::chrono::milliseconds kill_grace{2000};
};

// Finds an interpreter ("python3", "bash", "node") as an absolute path; injected so that tests
// and the server resolve once and cache.
using ProgramResolver = std::function<Result<std::string>(const std::string& name)>;

struct ToolCall {
  const registry::Manifest* tool = nullptr;  // a Tool manifest
  std::string tool_dir;                      // absolute folder of the manifest file
  nlohmann::ordered_json parameters;         // already checked (CheckParameters)
  std::string execution_id;
  std::string idempotency_key;  // "" when none
  std::string traceparent;      // W3C trace context for the tool (TRACEPARENT); "" when none
};

// The wall-clock timeout of a tool's calls: its `resources.timeout`, else the default.
std::chrono::milliseconds ToolTimeout(const registry::ToolResources& resources,
                                      const ToolDefaults& defaults);

// The process to run (not sandboxed yet: the caller wraps it when the sandbox is on).
Result<ProcessSpec> BuildToolProcess(const ToolCall& call, const ToolDefaults& defaults,
                                     const ProgramResolver& resolve);

struct ToolOutcome {
  bool success = false;
  nlohmann::ordered_json result;  // parsed stdout, or the text as a JSON string
  std::string error;              // why it failed; "" on success
  // What Cortex changed in the output to keep it (bytes that were not UTF-8 replaced, JSON
  // nested too deep kept as text); empty when nothing was.
  std::vector<std::string> notes;
};

ToolOutcome InterpretToolResult(const ProcessResult& result);

// The process of a tool's `implementation.health_check` (type script/command): its `command`
// split into words like a shell would (quotes and backslashes; no expansion, no shell), run in
// the tool's folder with the tool's clean environment. The program is resolved like a runtime
// ("python3" -> absolute path); a relative path ("./check.sh") is taken from the tool's folder.
// Limits: the check's `timeout` (default 10 s), output 64 KiB, the tool's memory/process limits.
// NotFound when the tool declares no health check; Unimplemented for http checks.
Result<ProcessSpec> BuildToolHealthProcess(const ToolCall& call, const ToolDefaults& defaults,
                                           const ProgramResolver& resolve);

// Splits a command line into words the way sh does for quoting only: 'single', "double" (with
// \\ \" \$ \` escapes), backslash escapes outside quotes, whitespace separation. Nothing is
// expanded ($VAR, globs, ~ stay literal). InvalidArgument on an unterminated quote.
Result<std::vector<std::string>> SplitCommandLine(std::string_view text);

// "64M", "512Mi", "1G", "1024" (bytes) -> bytes.
Result<uint64_t> ParseByteSize(const std::string& text);
// "0.5", "2", "250m" (millicores) -> cores, 0.01 to 1024; InvalidArgument naming resources.cpu.
Result<double> ParseCpuCores(const std::string& text);

}  // namespace cortex::exec
