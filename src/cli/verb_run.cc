// cortex run tool NAME [-p key=value]... [--json FILE|-]: runs a tool through POST /execute/tool
// and prints its result (stdout) and how it went (stderr). Exit 0 when the tool succeeded, 1 when
// it failed, timed out or was cancelled (or the API refused the call). --async only submits;
// --follow submits, then prints the tool's output lines as they come.
#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/client.h"
#include "cli/verbs.h"

namespace cortex::cli {

namespace {

constexpr std::string_view kStdin = "-";

struct RunOptions {
  std::string tool;
  std::vector<std::string> params;  // key=value
  std::string json_file;            // a JSON object of parameters; "-" for stdin
  bool async = false;
  bool follow = false;
  std::string output = "text";
};

// A -p value: JSON when it parses as JSON (5, true, null, [1,2], {"a":1}, "quoted"), else the
// text itself as a string.
Json ParseValue(const std::string& text) {
  Json v = Json::parse(text, nullptr, false);
  return v.is_discarded() ? Json(text) : v;
}

// The parameters from --json, then each -p (a later one replaces an earlier one). False, after
// printing why, on bad usage.
bool BuildParameters(const RunOptions& o, Json* params) {
  *params = Json::object();
  if (!o.json_file.empty()) {
    std::stringstream ss;
    if (o.json_file == kStdin) {
      ss << std::cin.rdbuf();
    } else {
      std::ifstream in(o.json_file, std::ios::binary);
      if (!in) {
        std::cerr << "error: --json " << o.json_file << ": cannot read\n";
        return false;
      }
      ss << in.rdbuf();
    }
    std::string name = o.json_file == kStdin ? "<stdin>" : o.json_file;
    Json j = Json::parse(ss.str(), nullptr, false);
    if (j.is_discarded()) {
      std::cerr << "error: --json " << name << ": not valid JSON\n";
      return false;
    }
    if (!j.is_object()) {
      std::cerr << "error: --json " << name << ": expected a JSON object of parameters, got "
                << j.type_name() << "\n";
      return false;
    }
    *params = std::move(j);
  }
  for (const std::string& p : o.params) {
    size_t eq = p.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "error: -p " << p << ": expected key=value (a value is parsed as JSON when it "
                << "is JSON, else taken as a string)\n";
      return false;
    }
    (*params)[p.substr(0, eq)] = ParseValue(p.substr(eq + 1));
  }
  return true;
}

// POST /execute/tool. On an error answer, prints it (bad parameters one field per line) and
// sets *exit_code; nullopt then.
std::optional<http::ClientResponse> Submit(const std::string& server, const Json& body,
                                           int* exit_code) {
  // A synchronous call waits up to 10 minutes on the server before answering 202.
  http::ClientOptions options;
  options.read_timeout = std::chrono::minutes(11);
  http::Client client(server, options);
  auto r = client.Post("/execute/tool", body.dump(-1, ' ', false, Json::error_handler_t::replace),
                       "application/json");
  if (!r.ok()) {
    // As ApiClient reports it: the client refused the URL itself, or the server is unreachable.
    const std::string& reason = r.status().message();
    if (r.status().code() != StatusCode::kUnavailable) {
      std::cerr << "error: --server: " << reason << "\n";
      *exit_code = kExitUsage;
      return std::nullopt;
    }
    std::cerr << UnreachableMessage(server) << "\n";
    std::string prefix = "cannot reach " + server + ": ";
    std::cerr << "  (transport error: "
              << (reason.starts_with(prefix) ? reason.substr(prefix.size()) : reason) << ")\n";
    *exit_code = kExitUnreachable;
    return std::nullopt;
  }
  if (r->status >= 200 && r->status <= 299) return std::move(r).value();
  *exit_code = kExitApiError;
  Json j = Json::parse(r->body, nullptr, false);
  const Json* fields = nullptr;
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    const Json& details = j["error"].value("details", Json::object());
    if (details.is_object() && details.contains("fields") && details["fields"].is_array()) {
      fields = &j["error"]["details"]["fields"];
    }
  }
  if (!fields || fields->empty()) {
    std::cerr << FormatApiError(r->status, r->body);
    return std::nullopt;
  }
  std::cerr << "error: invalid parameters for Tool/" << body.value("name", "") << "\n";
  for (const Json& f : *fields) {
    std::string field = f.value("field", "");
    std::cerr << "  " << (field.empty() ? "parameters" : field) << ": " << f.value("message", "")
              << "\n";
  }
  return std::nullopt;
}

// Prints a finished (or still running) record: the result on stdout, the status on stderr.
int Report(const Json& record, const RunOptions& o, bool output_shown) {
  if (o.output != "text") {
    std::cout << Render(record, o.output);
    return ExecutionExitCode(record);
  }
  if (record.contains("result")) {
    const Json& result = record["result"];
    if (result.is_string()) {
      const std::string& text = result.get_ref<const std::string&>();
      std::cout << text << (text.ends_with("\n") || text.empty() ? "" : "\n");
    } else {
      std::cout << ToPrettyJson(result);
    }
    std::cout.flush();
  }
  std::cerr << ExecutionStatusLine(record) << "\n";
  std::string tail = record.value("stderr_tail", "");
  if (ExecutionExitCode(record) != kExitOk && !output_shown && !tail.empty()) {
    std::cerr << "stderr:\n";
    PrintIndented(std::cerr, tail, "  ");
  }
  return ExecutionExitCode(record);
}

int Run(const std::string& server, const RunOptions& o) {
  Json params;
  if (!BuildParameters(o, &params)) return kExitUsage;
  Json body = {{"name", o.tool}, {"parameters", params}};
  if (o.async || o.follow) body["async"] = true;

  int exit_code = kExitOk;
  auto answer = Submit(server, body, &exit_code);
  if (!answer) return exit_code;
  Json j = Json::parse(answer->body, nullptr, false);
  if (!j.is_object() || !j.contains("execution_id")) {
    std::cerr << "error: the server at " << server
              << " answered with something that is not an execution: "
              << Truncate(answer->body, 300) << "\n";
    return kExitApiError;
  }
  std::string id = j.value("execution_id", "");

  if (o.async) {
    if (o.output == "text") {
      std::cout << id << "\n";
    } else {
      std::cout << Render(j, o.output);
    }
    return kExitOk;
  }
  std::optional<Json> record;
  if (o.follow) {
    std::cerr << "execution " << id << "\n";
    // With -o json|yaml stdout carries the record alone: the tool's lines all go to stderr.
    record = FollowExecution(server, id, o.output == "text" ? std::cout : std::cerr, &exit_code);
  } else if (j.value("finished_ms", int64_t{0}) != 0) {
    record = std::move(j);
  } else {
    // Still running after the server's 10 minutes (a 202): keep waiting.
    std::cerr << "execution " << id << " is still running; waiting for it\n";
    record = WaitForExecution(server, id, &exit_code);
  }
  if (!record) return exit_code;
  return Report(*record, o, o.follow);
}

}  // namespace

void AddRunCommand(CLI::App& app, Context& ctx) {
  auto* run = app.add_subcommand("run", "Run a tool");
  run->fallthrough();
  run->require_subcommand(1);

  auto o = std::make_shared<RunOptions>();
  auto* cmd = run->add_subcommand(
      "tool", "Run a tool: its result on stdout, how it went on stderr; exit 1 when it failed");
  cmd->fallthrough();
  cmd->add_option("name", o->tool, "The tool's name")->required();
  cmd->add_option("-p,--param", o->params,
                  "A parameter as key=value (repeatable). The value is parsed as JSON when it is "
                  "JSON (5, true, null, [1,2], {\"k\":1}, '\"5\"'), else taken as a string")
      ->allow_extra_args(false);
  cmd->add_option("--json", o->json_file,
                  "A file holding a JSON object of parameters, or - for stdin (-p values are "
                  "applied on top)");
  auto* async = cmd->add_flag("--async", o->async, "Only submit the call: print its execution id");
  cmd->add_flag("-f,--follow", o->follow,
                "Print the tool's output lines as they come (stderr lines to stderr), then the "
                "result")
      ->excludes(async);
  AddOutputOption(cmd, o->output, {"text", "json", "yaml"},
                  "text (the result), or the execution record as json or yaml");
  cmd->callback([&ctx, o] { ctx.exit_code = Run(ctx.server, *o); });
}

}  // namespace cortex::cli
