// cortex run tool NAME [-p key=value]... [--json FILE|-]: runs a tool through POST /execute/tool
// and prints its result (stdout) and how it went (stderr). Exit 0 when the tool succeeded, 1 when
// it failed, timed out or was cancelled (or the API refused the call). --async only submits;
// --follow submits, then prints the tool's output lines as they come.
//
// cortex run workflow NAME [-i key=value]... [--input-json FILE|-]: starts a workflow run through
// POST /execute/workflow and prints its id. --wait waits for the run and shows it; --follow shows
// its steps' transitions as they happen. Exit 0 then only when the run succeeded.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include "cli/client.h"
#include "cli/verbs.h"
#include "common/json.h"

namespace cortex::cli {

namespace {

constexpr std::string_view kStdin = "-";

// The server waits this long for a synchronous call (a tool, or a workflow run with wait=true)
// before answering 202 with the call still running; the client waits a minute more.
constexpr auto kServerWait = std::chrono::minutes(10);
constexpr auto kAnswerMargin = std::chrono::minutes(1);

struct RunOptions {
  std::string tool;
  std::vector<std::string> params;  // key=value
  std::string json_file;            // a JSON object of parameters; "-" for stdin
  bool async = false;
  bool follow = false;
  std::string output = "text";
};

struct WorkflowOptions {
  std::string workflow;
  std::vector<std::string> inputs;  // key=value
  std::string json_file;            // a JSON object of inputs; "-" for stdin
  bool wait = false;
  bool follow = false;
  std::string timeout;  // with --wait: how long to wait ("30s"); empty: until the run ends
  std::string output = "table";
};

// The flags a verb takes its named values from, for the messages: `run tool` has -p and --json
// (parameters), `run workflow` -i and --input-json (input).
struct ValueFlags {
  std::string_view pair_flag;
  std::string_view file_flag;
  std::string_view noun;
};
constexpr ValueFlags kToolFlags{"-p", "--json", "parameters"};
constexpr ValueFlags kWorkflowFlags{"-i", "--input-json", "input"};

// The declared type of each named value of `kind`/`name`, from its manifest on the server: a
// Tool's parameters, a Workflow's trigger parameters (a list of {name, type}, or a map of
// name: {type}). Empty when the manifest cannot be had: the server then judges what is sent.
std::map<std::string, std::string> DeclaredTypes(const Context& server, const std::string& kind,
                                                 const std::string& name) {
  std::ostringstream quiet;  // a failure here is reported by the call that follows
  ApiClient api(server, quiet);
  auto e = api.GetJson("/registry/manifest/" + PathSegment(kind) + "/" + PathSegment(name));
  std::map<std::string, std::string> types;
  if (!e || !e->is_object() || !e->contains("manifest") || !(*e)["manifest"].is_object()) {
    return types;
  }
  auto add = [&types](const Json& params) {
    if (params.is_array()) {
      for (const Json& p : params) {
        if (p.is_object() && p.contains("name") && p["name"].is_string()) {
          types[p["name"].get<std::string>()] = p.value("type", "");
        }
      }
    } else if (params.is_object()) {
      for (const auto& [key, p] : params.items()) {
        if (p.is_object()) types[key] = p.value("type", "");
      }
    }
  };
  const Json& m = (*e)["manifest"];
  if (auto it = m.find("parameters"); it != m.end()) add(*it);
  if (auto t = m.find("trigger"); t != m.end() && t->is_object()) {
    if (auto it = t->find("parameters"); it != t->end()) add(*it);
  }
  return types;
}

// A -p or -i value: the text as it is for a parameter declared a string; else JSON when it
// parses as JSON (5, true, null, [1,2], {"a":1}, "quoted"), else the text as a string.
Json ParseValue(const std::string& text, std::string_view declared_type) {
  if (declared_type == "string") return text;
  return ParseJsonOrString(text);
}

// The values from `json_file` (a JSON object; "-" for stdin), then each key=value pair (a later
// one replaces an earlier one). False, after printing why, on bad usage.
bool BuildValues(const std::vector<std::string>& pairs, const std::string& json_file,
                 const ValueFlags& flags, const std::map<std::string, std::string>& types,
                 Json* values) {
  *values = Json::object();
  if (!json_file.empty()) {
    std::stringstream ss;
    if (json_file == kStdin) {
      ss << std::cin.rdbuf();
    } else {
      std::ifstream in(json_file, std::ios::binary);
      if (!in) {
        std::cerr << "error: " << flags.file_flag << " " << json_file << ": cannot read\n";
        return false;
      }
      ss << in.rdbuf();
    }
    std::string name = json_file == kStdin ? "<stdin>" : json_file;
    auto parsed = ParseJson(ss.str());
    if (!parsed.ok()) {
      std::cerr << "error: " << flags.file_flag << " " << name << ": " << parsed.status().message()
                << "\n";
      return false;
    }
    Json j = std::move(parsed).value();
    if (!j.is_object()) {
      std::cerr << "error: " << flags.file_flag << " " << name << ": expected a JSON object of "
                << flags.noun << ", got " << j.type_name() << "\n";
      return false;
    }
    *values = std::move(j);
  }
  for (const std::string& p : pairs) {
    size_t eq = p.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "error: " << flags.pair_flag << " " << p
                << ": expected key=value (a value is parsed as JSON when it is JSON, else taken "
                << "as a string)\n";
      return false;
    }
    const std::string key = p.substr(0, eq);
    auto type = types.find(key);
    (*values)[key] = ParseValue(p.substr(eq + 1), type == types.end() ? "" : type->second);
  }
  return true;
}

// POSTs `body` to `path` (/execute/tool, /execute/workflow). On an error answer, prints it (bad
// values one field per line, under "error: invalid <what>") and sets *exit_code; nullopt then.
std::optional<http::ClientResponse> Submit(const Context& server, const std::string& path,
                                           const Json& body, const std::string& what,
                                           std::string_view noun,
                                           std::chrono::milliseconds read_timeout, int* exit_code) {
  http::ClientOptions options;
  options.read_timeout = read_timeout;
  http::Client client(server.server, ClientOptionsWithToken(server, options));
  auto r = client.Post(path, DumpJson(body), "application/json");
  if (!r.ok()) {
    // As ApiClient reports it: the client refused the URL itself, or the server is unreachable.
    const std::string& reason = r.status().message();
    if (r.status().code() != StatusCode::kUnavailable) {
      std::cerr << "error: --server: " << reason << "\n";
      *exit_code = kExitUsage;
      return std::nullopt;
    }
    std::cerr << UnreachableMessage(server.server) << "\n";
    std::string prefix = "cannot reach " + server.server + ": ";
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
  std::cerr << "error: invalid " << what << "\n";
  for (const Json& f : *fields) {
    std::string field = f.value("field", "");
    std::cerr << "  " << (field.empty() ? std::string(noun) : field) << ": "
              << f.value("message", "") << "\n";
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

int Run(const Context& server, const RunOptions& o) {
  Json params;
  const auto types = o.params.empty() ? std::map<std::string, std::string>()
                                      : DeclaredTypes(server, "tool", o.tool);
  if (!BuildValues(o.params, o.json_file, kToolFlags, types, &params)) return kExitUsage;
  Json body = {{"name", o.tool}, {"parameters", params}};
  if (o.async || o.follow) body["async"] = true;

  int exit_code = kExitOk;
  auto answer = Submit(server, "/execute/tool", body, "parameters for Tool/" + o.tool, "parameters",
                       kServerWait + kAnswerMargin, &exit_code);
  if (!answer) return exit_code;
  Json j = Json::parse(answer->body, nullptr, false);
  if (!j.is_object() || !j.contains("execution_id")) {
    std::cerr << "error: the server at " << server.server
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

// --- run workflow ---------------------------------------------------------------------------

bool RunFinished(const Json& run) {
  std::string status = run.value("status", "");
  return status == "succeeded" || status == "failed" || status == "cancelled";
}

// Shows a run that has finished (or that --timeout gave up on): json/yaml, or for people.
// `followed`: its steps were shown as they went, so only the output is left to show.
int ReportRun(const Json& run, const WorkflowOptions& o, bool followed) {
  if (o.output != "table") {
    std::cout << Render(run, o.output);
  } else if (!followed) {
    DescribeRun(std::cout, run);
  } else if (run.contains("output") && !run["output"].is_null()) {
    std::cout << "Output:\n";
    PrintIndented(std::cout, ToYaml(run["output"]), "  ");
  }
  return RunExitCode(run);
}

int RunWorkflow(const Context& server, const WorkflowOptions& o) {
  Json input;
  const auto types = o.inputs.empty() ? std::map<std::string, std::string>()
                                      : DeclaredTypes(server, "workflow", o.workflow);
  if (!BuildValues(o.inputs, o.json_file, kWorkflowFlags, types, &input)) return kExitUsage;
  Json body = {{"name", o.workflow}, {"input", input}};
  std::string path = "/execute/workflow";
  std::chrono::milliseconds read_timeout = http::ClientOptions{}.read_timeout;
  if (o.wait) {
    body["wait"] = true;
    std::chrono::milliseconds wait = kServerWait;
    if (!o.timeout.empty()) wait = std::chrono::milliseconds(ParseTimeoutMs(o.timeout).value_or(0));
    path += "?timeout=" + std::to_string(wait.count()) + "ms";
    read_timeout = wait + kAnswerMargin;
  }

  int exit_code = kExitOk;
  auto answer = Submit(server, path, body, "input for Workflow/" + o.workflow, "input",
                       read_timeout, &exit_code);
  if (!answer) return exit_code;
  Json j = Json::parse(answer->body, nullptr, false);
  if (!j.is_object() || !j.contains("run_id")) {
    std::cerr << "error: the server at " << server.server
              << " answered with something that is not a workflow run: "
              << Truncate(answer->body, 300) << "\n";
    return kExitApiError;
  }
  std::string id = j.value("run_id", "");

  if (!o.wait && !o.follow) {
    if (o.output == "table") {
      std::cout << id << "\n";
    } else {
      std::cout << Render(j, o.output);
    }
    return kExitOk;
  }
  if (o.follow) {
    // With -o json|yaml stdout carries the run alone: the live lines go to stderr.
    bool structured = o.output != "table";
    std::ostream& live = structured ? std::cerr : std::cout;
    bool tty = isatty(structured ? STDERR_FILENO : STDOUT_FILENO) != 0;
    auto run = FollowRun(server, id, live, tty, &exit_code);
    if (!run) return exit_code;
    return ReportRun(*run, o, /*followed=*/true);
  }
  if (RunFinished(j)) return ReportRun(j, o, /*followed=*/false);
  if (!o.timeout.empty()) {
    // The run goes on; show where it is (exit 1: it has not succeeded).
    std::cerr << "run " << id << " is still " << j.value("status", "running") << " after "
              << o.timeout << " (cortex workflows logs " << id << " --follow)\n";
    return ReportRun(j, o, /*followed=*/false);
  }
  // Still running after the server's 10 minutes (a 202): keep waiting.
  std::cerr << "run " << id << " is still running; waiting for it\n";
  auto run = WaitForRun(server, id, &exit_code);
  if (!run) return exit_code;
  return ReportRun(*run, o, /*followed=*/false);
}

}  // namespace

void AddRunCommand(CLI::App& app, Context& ctx) {
  auto* run = app.add_subcommand("run", "Run a tool, a workflow or an agent");
  run->fallthrough();
  run->require_subcommand(1);

  auto o = std::make_shared<RunOptions>();
  auto* cmd = run->add_subcommand(
      "tool", "Run a tool: its result on stdout, how it went on stderr; exit 1 when it failed");
  cmd->fallthrough();
  cmd->add_option("name", o->tool, "The tool's name")->required();
  cmd->add_option(
         "-p,--param", o->params,
         "A parameter as key=value (repeatable). For a parameter declared a string the value is "
         "taken as it is; else it is parsed as JSON when it is "
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
  cmd->callback([&ctx, o] { ctx.exit_code = Run(ctx, *o); });

  auto w = std::make_shared<WorkflowOptions>();
  auto* wf = run->add_subcommand(
      "workflow",
      "Start a workflow run and print its id; --wait or --follow for its outcome (exit 1 when it "
      "failed or was cancelled)");
  wf->fallthrough();
  wf->add_option("name", w->workflow, "The workflow's name")->required();
  wf->add_option("-i,--input", w->inputs,
                 "An input as key=value (repeatable). For an input the workflow declares a string "
                 "the value is taken as it is; else it is parsed as JSON when it is JSON (5, "
                 "true, null, [1,2], {\"k\":1}, '\"5\"'), else taken as a string")
      ->allow_extra_args(false);
  wf->add_option("--input-json", w->json_file,
                 "A file holding a JSON object of inputs, or - for stdin (-i values are applied "
                 "on top)");
  auto* wait = wf->add_flag("--wait", w->wait, "Wait for the run to end, then show it");
  wf->add_flag("-f,--follow", w->follow,
               "Show each step's transitions as they happen (a progress bar on a terminal), then "
               "the output")
      ->excludes(wait);
  AddTimeoutOption(wf, w->timeout,
                   "With --wait: wait at most this long. A run still going is shown as it is "
                   "(exit 1) and goes on")
      ->needs(wait);
  AddOutputOption(wf, w->output, {"table", "json", "yaml"},
                  "table (the run for people), or the run as json or yaml (without --wait or "
                  "--follow: the API's 202 answer)");
  wf->callback([&ctx, w] { ctx.exit_code = RunWorkflow(ctx, *w); });
  AddAgentCommands(app, *run, ctx);
}

}  // namespace cortex::cli
