// cortex executions ls|get|logs|cancel: the history of tool executions (GET /executions...),
// one execution's record and output, and cancelling a running one. Also the pieces `cortex run`
// shares: the status line, the exit code of a record, following an execution's output.
#include <time.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <thread>

#include "cli/client.h"
#include "cli/verbs.h"

namespace cortex::cli {

namespace {

constexpr size_t kErrorWidth = 60;
constexpr int kLabelWidth = 12;
// The server answers at most this many log lines per call; a full page means there may be more.
constexpr size_t kLogPage = 10000;
constexpr auto kPollInterval = std::chrono::milliseconds(200);
// How long `cancel` waits for the execution to stop before saying it is still stopping.
constexpr auto kCancelWait = std::chrono::seconds(10);

std::string Text(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

int64_t Int(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<int64_t>() : 0;
}

std::string Bytes(int64_t n) {
  if (n < 1024) return std::to_string(n) + " B";
  char buf[32];
  double v = static_cast<double>(n) / 1024;
  const char* unit = "KiB";
  if (v >= 1024) {
    v /= 1024;
    unit = "MiB";
  }
  if (v >= 1024) {
    v /= 1024;
    unit = "GiB";
  }
  std::snprintf(buf, sizeof buf, "%.1f %s", v, unit);
  return buf;
}

bool Finished(const Json& record) { return Int(record, "finished_ms") != 0; }

std::string ExecutionPath(const std::string& id) { return "/executions/" + PathSegment(id); }

// --- ls -------------------------------------------------------------------------------------

struct LsOptions {
  std::string tool;
  std::string status;
  int limit = 0;  // 0: the server's default
  ListFormat format;
};

int List(ApiClient& api, const LsOptions& o, std::ostream& out, std::ostream& err) {
  std::string query = QueryString({{"tool", o.tool},
                                   {"status", o.status},
                                   {"limit", o.limit > 0 ? std::to_string(o.limit) : ""}});
  auto j = api.GetJson("/executions" + query);
  if (!j) return api.exit_code();
  Table table({"ID", "TOOL", "STATUS", "DURATION", "STARTED", "ERROR"});
  for (const Json& r : j->value("executions", Json::array())) {
    table.AddRow(
        {Text(r, "execution_id"), Text(r, "tool"), Text(r, "status"),
         Finished(r) && Int(r, "started_ms") ? FormatDurationMs(Int(r, "duration_ms")) : "-",
         FormatTimestampMs(Int(r, "started_ms")), Truncate(Text(r, "error"), kErrorWidth)});
  }
  PrintList(out, err, *j, table, o.format, "executions");
  return kExitOk;
}

// --- get ------------------------------------------------------------------------------------

void Field(std::ostream& out, std::string_view label, const std::string& value) {
  PrintField(out, label, value, kLabelWidth);
}

void Describe(std::ostream& out, const Json& r) {
  Field(out, "ID", Text(r, "execution_id"));
  Field(out, "Tool", Text(r, "tool"));
  Field(out, "Status", Text(r, "status"));
  if (!Text(r, "error").empty()) Field(out, "Error", Text(r, "error"));
  if (r.contains("exit_code")) Field(out, "Exit code", Text(r, "exit_code"));
  if (r.contains("signal")) Field(out, "Signal", Text(r, "signal"));
  Field(out, "Sandboxed", r.value("sandboxed", false) ? "yes" : "no");
  Field(out, "Created", FormatTimestampMs(Int(r, "created_ms")));
  Field(out, "Started", FormatTimestampMs(Int(r, "started_ms")));
  Field(out, "Finished", FormatTimestampMs(Int(r, "finished_ms")));
  if (Finished(r) && Int(r, "started_ms")) {
    Field(out, "Duration", FormatDurationMs(Int(r, "duration_ms")));
    Field(out, "CPU",
          std::to_string(Int(r, "cpu_user_ms")) + " ms user, " +
              std::to_string(Int(r, "cpu_system_ms")) + " ms system");
    Field(out, "Peak memory", Bytes(Int(r, "peak_memory_bytes")));
  }
  if (!Text(r, "idempotency_key").empty() &&
      Text(r, "idempotency_key") != Text(r, "execution_id")) {
    Field(out, "Idem. key", Text(r, "idempotency_key"));
  }
  if (r.contains("parameters") && r["parameters"].is_object() && !r["parameters"].empty()) {
    out << "Parameters:\n";
    PrintIndented(out, ToYaml(r["parameters"]), "  ");
  }
  if (r.contains("result")) {
    out << "Result:\n";
    const Json& result = r["result"];
    // PrintIndented ends every line, the last one too.
    PrintIndented(out, result.is_string() ? result.get<std::string>() : ToPrettyJson(result), "  ");
  }
  if (!Text(r, "stderr_tail").empty()) {
    out << "Stderr (end):\n";
    PrintIndented(out, Text(r, "stderr_tail"), "  ");
  }
}

// --- logs -----------------------------------------------------------------------------------

void PrintLine(const Json& line, std::ostream& out) {
  bool is_stderr = Text(line, "stream") == "stderr";
  (is_stderr ? std::cerr : out) << Text(line, "text") << "\n";
}

int Logs(ApiClient& api, const std::string& id, const std::string& output) {
  Json all = Json::array();
  int64_t after = 0;
  for (;;) {
    std::string path = ExecutionPath(id) + "/logs";
    if (after > 0) path += "?after=" + std::to_string(after);
    auto j = api.GetJson(path);
    if (!j) return api.exit_code();
    Json lines = j->value("lines", Json::array());
    for (Json& l : lines) {
      after = std::max(after, Int(l, "seq"));
      all.push_back(std::move(l));
    }
    if (lines.size() < kLogPage) break;
  }
  if (output == "json") {
    std::cout << ToPrettyJson(Json{{"execution_id", id}, {"lines", all}});
    return kExitOk;
  }
  for (const Json& l : all) PrintLine(l, std::cout);
  std::cout.flush();
  return kExitOk;
}

int FollowLogs(const Context& server, const std::string& id) {
  int exit_code = kExitOk;
  auto record = FollowExecution(server, id, std::cout, &exit_code);
  if (!record) return exit_code;
  std::cerr << ExecutionStatusLine(*record) << "\n";
  return ExecutionExitCode(*record);
}

// --- cancel ---------------------------------------------------------------------------------

int Cancel(ApiClient& api, const std::string& id) {
  if (!api.PostJson(ExecutionPath(id) + "/cancel", "{}")) return api.exit_code();
  auto deadline = std::chrono::steady_clock::now() + kCancelWait;
  for (;;) {
    auto r = api.GetJson(ExecutionPath(id));
    if (!r) return api.exit_code();
    if (Finished(*r)) {
      std::string status = Text(*r, "status");
      if (status == "cancelled") {
        std::cout << "cancelled " << id << "\n";
      } else {
        std::cout << id << " finished before it could be cancelled: " << ExecutionStatusLine(*r)
                  << "\n";
      }
      return kExitOk;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(kPollInterval);
  }
  std::cout << "cancelling " << id << " (still stopping)\n";
  return kExitOk;
}

}  // namespace

std::string FormatDurationMs(int64_t ms) {
  if (ms < 10000) return std::to_string(ms) + " ms";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ms) / 1000);
  return buf;
}

std::string FormatTimestampMs(int64_t ms) {
  if (ms <= 0) return "-";
  time_t seconds = static_cast<time_t>(ms / 1000);
  struct tm tm {};
  if (!gmtime_r(&seconds, &tm)) return "-";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string ExecutionStatusLine(const Json& record) {
  std::string status = Text(record, "status");
  if (status == "succeeded") {
    return "succeeded in " + FormatDurationMs(Int(record, "duration_ms")) +
           (record.value("sandboxed", false) ? " (sandboxed)" : " (not sandboxed)");
  }
  std::string error = Text(record, "error");
  if (status.empty()) status = "unknown";
  if (error.empty()) return status;
  // "cancelled", "cancelled before it started", "interrupted: ...": the error already says it
  // (a failed tool's own message may start with "failed" too: that one keeps the prefix).
  return status != "failed" && error.starts_with(status) ? error : status + ": " + error;
}

int ExecutionExitCode(const Json& record) {
  return Text(record, "status") == "succeeded" ? kExitOk : kExitApiError;
}

std::optional<Json> WaitForExecution(const Context& server, const std::string& id, int* exit_code) {
  ApiClient api(server);
  for (;;) {
    auto r = api.GetJson(ExecutionPath(id));
    if (!r) *exit_code = api.exit_code();
    if (!r || Finished(*r)) return r;
    std::this_thread::sleep_for(kPollInterval);
  }
}

std::optional<Json> FollowExecution(const Context& server, const std::string& id, std::ostream& out,
                                    int* exit_code) {
  // The execution streams send nothing while the tool is silent, so a read timeout cannot tell
  // a quiet tool from a dead server; a closed connection still ends the stream at once.
  http::ClientOptions options;
  options.read_timeout = std::chrono::hours(24);
  ApiClient api(server, std::cerr, options);
  std::optional<Json> record;
  bool ok = api.Stream(ExecutionPath(id) + "/logs", [&](const http::SseEvent& ev) {
    Json data = Json::parse(ev.data, nullptr, false);
    if (ev.event == "result") {
      if (data.is_object()) record = std::move(data);
      return false;
    }
    if (ev.event == "stdout" || ev.event == "stderr") {
      if (!data.is_object()) data = Json{{"stream", ev.event}, {"text", ev.data}};
      PrintLine(data, out);
      out.flush();  // live, also through a pipe
    }
    return true;
  });
  if (record) return record;
  if (!ok) {
    *exit_code = api.exit_code();
    return std::nullopt;
  }
  // The stream ended without the record (the server dropped it): read the record instead.
  return WaitForExecution(server, id, exit_code);
}

void AddExecutionsCommand(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand(
      "executions", "Tool executions: list them, show one, its output, or cancel it (default: ls)");
  cmd->fallthrough();

  auto ls = std::make_shared<LsOptions>();
  auto* ls_cmd = cmd->add_subcommand("ls", "List executions, newest first");
  ls_cmd->alias("list");
  ls_cmd->fallthrough();
  ls_cmd->add_option("--tool", ls->tool, "Only the executions of this tool");
  ls_cmd->add_option("--status", ls->status, "Only executions with this status")
      ->check(CLI::IsMember(
          {"queued", "running", "succeeded", "failed", "timeout", "cancelled", "interrupted"}));
  ls_cmd
      ->add_option("--limit", ls->limit, "At most this many (1 to 1000; default: the server's, 50)")
      ->check(CLI::Range(1, 1000));
  AddListFormat(ls_cmd, ls->format);
  AddWatchOptions(ls_cmd, ls->format);
  ls_cmd->callback([&ctx, ls] {
    ApiClient api(ctx);
    ctx.exit_code = RunList(
        ls->format, [&](std::ostream& out, std::ostream& err) { return List(api, *ls, out, err); });
  });

  auto get_id = std::make_shared<std::string>();
  auto get_output = std::make_shared<std::string>("text");
  auto* get_cmd = cmd->add_subcommand("get", "Show one execution's record");
  get_cmd->fallthrough();
  get_cmd->add_option("id", *get_id, "The execution id (ex_...)")->required();
  AddOutputOption(get_cmd, *get_output, {"text", "json", "yaml"},
                  "text, or the API's record as json or yaml");
  get_cmd->callback([&ctx, get_id, get_output] {
    ApiClient api(ctx);
    auto r = api.GetJson(ExecutionPath(*get_id));
    if (!r) {
      ctx.exit_code = api.exit_code();
      return;
    }
    if (*get_output == "text") {
      Describe(std::cout, *r);
    } else {
      std::cout << Render(*r, *get_output);
    }
    ctx.exit_code = kExitOk;
  });

  auto logs_id = std::make_shared<std::string>();
  auto logs_follow = std::make_shared<bool>(false);
  auto logs_output = std::make_shared<std::string>("text");
  auto* logs_cmd = cmd->add_subcommand(
      "logs", "Print an execution's output lines (stdout lines to stdout, stderr to stderr)");
  logs_cmd->fallthrough();
  logs_cmd->add_option("id", *logs_id, "The execution id (ex_...)")->required();
  auto* follow_flag = logs_cmd->add_flag(
      "-f,--follow", *logs_follow,
      "Follow a running execution until it ends; then print its status and exit 1 unless it "
      "succeeded");
  AddOutputOption(logs_cmd, *logs_output, {"text", "json"},
                  "text, or json (the API's answer; not with --follow)")
      ->excludes(follow_flag);
  logs_cmd->callback([&ctx, logs_id, logs_follow, logs_output] {
    if (*logs_follow) {
      ctx.exit_code = FollowLogs(ctx, *logs_id);
      return;
    }
    ApiClient api(ctx);
    ctx.exit_code = Logs(api, *logs_id, *logs_output);
  });

  auto cancel_id = std::make_shared<std::string>();
  auto* cancel_cmd = cmd->add_subcommand("cancel", "Cancel a queued or running execution");
  cancel_cmd->fallthrough();
  cancel_cmd->add_option("id", *cancel_id, "The execution id (ex_...)")->required();
  cancel_cmd->callback([&ctx, cancel_id] {
    ApiClient api(ctx);
    ctx.exit_code = Cancel(api, *cancel_id);
  });

  // `cortex executions` alone lists.
  cmd->callback([&ctx, cmd] {
    if (!cmd->get_subcommands().empty()) return;
    ApiClient api(ctx);
    ctx.exit_code = List(api, LsOptions{}, std::cout, std::cerr);
  });
}

}  // namespace cortex::cli
