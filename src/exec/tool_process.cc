#include "exec/tool_process.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>

#include "common/json.h"
#include "registry/variables.h"

namespace cortex::exec {

namespace {

using Json = nlohmann::ordered_json;

bool EndsWith(const std::string& s, const char* suffix) {
  std::string_view sv(suffix);
  return s.size() >= sv.size() && s.compare(s.size() - sv.size(), sv.size(), sv) == 0;
}

// The interpreter a tool asks for, or "" for a native executable.
Result<std::string> InterpreterName(const registry::ToolImplementation& impl) {
  std::string rt = impl.runtime;
  if (rt.empty()) {
    if (impl.type == "python") rt = "python3";
    if (impl.type == "shell" || impl.type == "bash") rt = "bash";
    if (impl.type == "sh") rt = "sh";
    if (impl.type == "node") rt = "node";
    if (impl.type == "binary") return std::string();
  }
  if (rt.empty()) {  // by the entrypoint's extension
    if (EndsWith(impl.entrypoint, ".py")) return std::string("python3");
    if (EndsWith(impl.entrypoint, ".sh")) return std::string("bash");
    if (EndsWith(impl.entrypoint, ".js") || EndsWith(impl.entrypoint, ".mjs")) {
      return std::string("node");
    }
    return std::string();
  }
  if (rt == "python") return std::string("python3");
  if (rt == "shell") return std::string("bash");
  if (rt == "nodejs") return std::string("node");
  if (rt == "binary" || rt == "native" || rt == "exec") return std::string();
  if (rt == "python3" || rt == "bash" || rt == "sh" || rt == "node") return rt;
  return InvalidArgumentError("runtime '" + rt +
                              "' is not supported (python3, bash, sh, node or binary)");
}

std::string FirstString(const Json& j, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    auto it = j.find(k);
    if (it != j.end() && it->is_string() && !it->get_ref<const std::string&>().empty()) {
      return it->get<std::string>();
    }
    if (it != j.end() && it->is_object()) {
      std::string nested = FirstString(*it, {"message", "error"});
      if (!nested.empty()) return nested;
    }
  }
  return "";
}

std::string Tail(const std::string& s, size_t n) {
  std::string t = s.size() > n ? s.substr(s.size() - n) : s;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  return t;
}

// A clean environment: nothing of the server's leaks in; the tool's declared variables and
// Cortex's own on top.
Result<std::vector<std::string>> ToolEnvironment(const ToolCall& call) {
  const auto* tool = call.tool->As<registry::ToolSpec>();
  std::map<std::string, std::string> env = {
      {"PATH", "/usr/local/bin:/usr/bin:/bin"},
      {"HOME", "/tmp"},
      {"TMPDIR", "/tmp"},
      {"LANG", "C.UTF-8"},
      {"PYTHONDONTWRITEBYTECODE", "1"},
      {"PYTHONUNBUFFERED", "1"},
  };
  registry::VariableContext ctx;
  ctx.now = std::chrono::system_clock::now();
  ctx.env = [&env](std::string_view name) -> std::optional<std::string> {
    auto it = env.find(std::string(name));
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  ctx.variables["EXECUTION_ID"] = call.execution_id;
  for (const auto& [key, value] : tool->environment.variables) {
    auto resolved = registry::ResolveString(value, ctx);
    if (!resolved.ok()) {
      return InvalidArgumentError("environment.variables." + key + ": " +
                                  resolved.status().message());
    }
    const Json& v = resolved->value;
    env[key] = v.is_string() ? v.get<std::string>() : DumpJson(v);
  }
  env["CORTEX_EXECUTION_ID"] = call.execution_id;
  env["CORTEX_TOOL_NAME"] = call.tool->name();
  if (!call.idempotency_key.empty()) env["CORTEX_IDEMPOTENCY_KEY"] = call.idempotency_key;
  // OpenTelemetry's name for it: SDKs in the tool pick it up as their parent.
  if (!call.traceparent.empty()) env["TRACEPARENT"] = call.traceparent;
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

Result<Limits> ToolLimits(const registry::ToolResources& res, const ToolDefaults& defaults) {
  Limits limits;
  limits.timeout = ToolTimeout(res, defaults);
  limits.kill_grace = defaults.kill_grace;
  limits.memory_bytes = defaults.memory_bytes;
  if (res.memory) {
    CORTEX_ASSIGN_OR_RETURN(limits.memory_bytes, ParseByteSize(*res.memory));
  }
  limits.max_processes =
      res.max_processes ? static_cast<uint64_t>(*res.max_processes) : defaults.max_processes;
  limits.max_open_files =
      res.max_open_files ? static_cast<uint64_t>(*res.max_open_files) : defaults.max_open_files;
  if (res.cpu) {
    CORTEX_ASSIGN_OR_RETURN(limits.cpu_cores, ParseCpuCores(*res.cpu));
  }
  limits.max_output_bytes = defaults.max_output_bytes;
  if (res.max_output) {
    CORTEX_ASSIGN_OR_RETURN(uint64_t out, ParseByteSize(*res.max_output));
    limits.max_output_bytes = static_cast<size_t>(out);
  }
  return limits;
}

}  // namespace

std::chrono::milliseconds ToolTimeout(const registry::ToolResources& resources,
                                      const ToolDefaults& defaults) {
  const auto& t = resources.timeout;
  return t ? std::chrono::milliseconds(static_cast<int64_t>(t->seconds * 1000.0))
           : defaults.timeout;
}

Result<double> ParseCpuCores(const std::string& text) {
  auto bad = [&] {
    return InvalidArgumentError("resources.cpu: '" + text +
                                "' is not a CPU amount (cores, e.g. 0.5, 2, 250m)");
  };
  std::string number = text;
  double scale = 1.0;
  if (!number.empty() && number.back() == 'm') {  // millicores, as Kubernetes writes them
    number.pop_back();
    scale = 0.001;
  }
  if (number.empty() || number.size() > 12 ||
      number.find_first_not_of("0123456789.") != std::string::npos ||
      std::count(number.begin(), number.end(), '.') > 1 || number == ".") {
    return bad();
  }
  double cores = std::stod(number) * scale;
  if (!(cores >= 0.01 && cores <= 1024)) {
    return InvalidArgumentError("resources.cpu: '" + text +
                                "' is out of range (0.01 to 1024 cores)");
  }
  return cores;
}

Result<uint64_t> ParseByteSize(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 15) return InvalidArgumentError("'" + text + "' is not a size (e.g. 64M, 1G)");
  uint64_t n = std::stoull(text.substr(0, i));
  std::string unit = text.substr(i);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (!unit.empty() && unit.back() == 'B') unit.pop_back();
  if (!unit.empty() && unit.back() == 'I') unit.pop_back();
  uint64_t scale = 1;
  if (unit == "K")
    scale = 1ull << 10;
  else if (unit == "M")
    scale = 1ull << 20;
  else if (unit == "G")
    scale = 1ull << 30;
  else if (!unit.empty())
    return InvalidArgumentError("'" + text + "' is not a size (e.g. 64M, 1G)");
  return n * scale;
}

Result<ProcessSpec> BuildToolProcess(const ToolCall& call, const ToolDefaults& defaults,
                                     const ProgramResolver& resolve) {
  const auto* tool = call.tool ? call.tool->As<registry::ToolSpec>() : nullptr;
  if (!tool) return InvalidArgumentError("not a Tool manifest");
  const registry::ToolImplementation& impl = tool->implementation;
  if (impl.type == "api" || impl.type == "container" || impl.type == "docker") {
    return UnimplementedError("tools of type '" + impl.type + "' cannot be run yet");
  }
  if (impl.entrypoint.empty()) return InvalidArgumentError("the tool has no entrypoint");
  std::string script =
      impl.entrypoint.starts_with("/")
          ? impl.entrypoint
          : call.tool_dir + "/" +
                (impl.entrypoint.starts_with("./") ? impl.entrypoint.substr(2) : impl.entrypoint);
  struct stat st;
  if (::stat(script.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return FailedPreconditionError("the tool's entrypoint " + impl.entrypoint + " is missing (" +
                                   script + ")");
  }
  CORTEX_ASSIGN_OR_RETURN(std::string interpreter, InterpreterName(impl));

  ProcessSpec spec;
  std::string params = DumpJson(call.parameters);
  if (interpreter.empty()) {
    if ((st.st_mode & 0111) == 0) {
      return FailedPreconditionError("the tool's entrypoint " + impl.entrypoint +
                                     " is not executable (chmod +x, or set a runtime)");
    }
    spec.argv = {script};
  } else {
    CORTEX_ASSIGN_OR_RETURN(std::string program, resolve(interpreter));
    spec.argv = {program, script};
  }
  for (const std::string& a : impl.args) spec.argv.push_back(a);
  spec.argv.push_back(params);
  spec.stdin_data = params;
  spec.cwd = call.tool_dir;

  CORTEX_ASSIGN_OR_RETURN(spec.env, ToolEnvironment(call));

  CORTEX_ASSIGN_OR_RETURN(spec.limits, ToolLimits(impl.resources, defaults));
  return spec;
}

ToolOutcome InterpretToolResult(const ProcessResult& r) {
  ToolOutcome out;
  // Output is bytes: what is not UTF-8 is replaced (U+FFFD) and said so, since every answer and
  // record holding it is JSON text.
  size_t replaced = 0;
  std::string text = ToValidUtf8(r.stdout_data, &replaced);
  if (replaced > 0) {
    out.notes.push_back("stdout was not valid UTF-8: " + std::to_string(replaced) +
                        (replaced == 1 ? " byte" : " bytes") + " replaced with U+FFFD");
  }
  if (r.stdout_truncated) out.notes.push_back("stdout was truncated at the output limit");
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  Json parsed;
  if (auto p = ParseJson(text); p.ok()) {
    parsed = std::move(p).value();
    out.result = parsed;
  } else {
    parsed = Json(nlohmann::detail::value_t::discarded);
    out.result = Json(text);
    if (JsonNestingDepth(text) > kMaxJsonDepth) {
      out.notes.push_back("stdout is JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                          " levels: kept as text");
    }
  }
  bool said_failure = false;
  if (parsed.is_object()) {
    auto s = parsed.find("success");
    said_failure = (s != parsed.end() && s->is_boolean() && !s->get<bool>());
    auto status = parsed.find("status");
    said_failure |= status != parsed.end() && *status == "error";
  }
  if (r.reason != EndReason::kExited) {
    out.error = r.reason_text.empty() ? std::string(EndReasonName(r.reason)) : r.reason_text;
  } else if (r.exit_code != 0 || said_failure) {
    std::string why =
        parsed.is_object() ? FirstString(parsed, {"error", "message", "error_message"}) : "";
    if (why.empty()) why = Tail(r.stderr_data, 500);
    std::string code = r.exit_code != 0 ? "exit code " + std::to_string(r.exit_code) : "";
    out.error = why.empty() ? (code.empty() ? "the tool reported a failure" : code)
                            : (code.empty() ? why : why + " (" + code + ")");
  } else {
    out.success = true;
  }
  return out;
}

Result<std::vector<std::string>> SplitCommandLine(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\\') {
      if (i + 1 < text.size()) word += text[++i];
      continue;
    }
    if (c == '\'' || c == '"') {
      size_t start = i++;
      for (;; ++i) {
        if (i >= text.size()) {
          return InvalidArgumentError("unterminated " + std::string(1, c) + " quote at offset " +
                                      std::to_string(start));
        }
        if (text[i] == c) break;
        if (c == '"' && text[i] == '\\' && i + 1 < text.size() &&
            std::string_view("\\\"$`").find(text[i + 1]) != std::string_view::npos) {
          ++i;
        }
        word += text[i];
      }
      continue;
    }
    word += c;
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

Result<ProcessSpec> BuildToolHealthProcess(const ToolCall& call, const ToolDefaults& defaults,
                                           const ProgramResolver& resolve) {
  const auto* tool = call.tool ? call.tool->As<registry::ToolSpec>() : nullptr;
  if (!tool) return InvalidArgumentError("not a Tool manifest");
  const auto& check = tool->implementation.health_check;
  if (!check) return NotFoundError("Tool/" + call.tool->name() + " declares no health_check");
  if (check->type == "http" || check->type == "api_request") {
    return UnimplementedError("health checks of type '" + check->type +
                              "' are not supported for tools yet (use a script/command check)");
  }
  auto words = SplitCommandLine(check->command);
  if (!words.ok()) return InvalidArgumentError("health_check.command: " + words.status().message());
  if (words->empty()) return InvalidArgumentError("health_check.command is empty");
  ProcessSpec spec;
  spec.argv = std::move(words).value();
  std::string& program = spec.argv[0];
  if (program.find('/') == std::string::npos) {
    std::string name = program == "python" ? "python3" : program;
    CORTEX_ASSIGN_OR_RETURN(program, resolve(name));
  } else if (!program.starts_with("/")) {
    program = call.tool_dir + "/" + (program.starts_with("./") ? program.substr(2) : program);
  }
  spec.cwd = call.tool_dir;
  CORTEX_ASSIGN_OR_RETURN(spec.env, ToolEnvironment(call));
  CORTEX_ASSIGN_OR_RETURN(spec.limits, ToolLimits(tool->implementation.resources, defaults));
  spec.limits.timeout =
      check->timeout
          ? std::chrono::milliseconds(static_cast<int64_t>(check->timeout->seconds * 1000.0))
          : std::chrono::milliseconds(10000);
  spec.limits.max_output_bytes = 64 << 10;
  return spec;
}

}  // namespace cortex::exec
