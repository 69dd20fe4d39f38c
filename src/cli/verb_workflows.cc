// cortex workflows ls|status|logs|pause|resume|cancel|retry: workflow runs (GET /workflows...),
// one run and its steps, its event log (live with --follow), and controlling a run. Also the
// pieces `cortex run workflow` shares: a run for people, its exit code, following its events.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "cli/client.h"
#include "cli/verbs.h"
#include "common/json.h"

namespace cortex::cli {

namespace {

constexpr size_t kErrorWidth = 60;
constexpr int kLabelWidth = 10;
// The server answers at most this many events per call; a full page means there may be more.
constexpr size_t kEventPage = 10000;
constexpr auto kPollInterval = std::chrono::milliseconds(500);
// How long `cancel` waits for the run to stop before saying it is still stopping.
constexpr auto kCancelWait = std::chrono::seconds(10);
// The server sends a keep-alive comment every 15 s on a quiet event stream: a stream silent
// for this long comes from a server that is gone.
constexpr auto kStreamReadTimeout = std::chrono::seconds(60);
constexpr size_t kBarWidth = 30;  // the inside of "[=====>    ]"

std::string Text(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

int64_t Int(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<int64_t>() : 0;
}

bool IsFinished(const Json& run) {
  std::string status = Text(run, "status");
  return status == "succeeded" || status == "failed" || status == "cancelled";
}

bool IsTerminalStep(const std::string& status) {
  return status == "succeeded" || status == "failed" || status == "skipped" ||
         status == "cancelled";
}

std::string RunPath(const std::string& id) { return "/workflows/" + PathSegment(id); }

std::string PadRight(std::string s, size_t width) {
  size_t w = DisplayWidth(s);
  if (w < width) s.append(width - w, ' ');
  return s;
}

std::string PadLeft(const std::string& s, size_t width) {
  size_t w = DisplayWidth(s);
  return w < width ? std::string(width - w, ' ') + s : s;
}

// A finished step's duration; "-" for one not finished, or that never ran (skipped, or cancelled
// by the run's end: those have a finish time but no attempt).
std::string StepDuration(const Json& step) {
  if (!step.contains("duration_ms") || Int(step, "attempt") == 0) return "-";
  return FormatDurationMs(Int(step, "duration_ms"));
}

// --- Events as lines ------------------------------------------------------------------------

// Prints a run's events one line each, the time since the run started first, then the step,
// its new state, the attempt, how long the attempt took, and what happened:
//
//     0.04s  unreliable  retrying   #1     44 ms  attempt 1 fails on purpose; attempt 2 in 200 ms
//     0.76s  run succeeded in 755 ms
//
// and, with a progress bar, keeps "[=====>    ] 3/7 steps" under the last line, redrawn in place
// (a carriage return and spaces: no terminal escapes).
class EventPrinter {
 public:
  // `run` is the run JSON with its steps (their names set the width of the step column).
  EventPrinter(std::ostream& out, const Json& run, bool progress_bar)
      : out_(out), progress_bar_(progress_bar), run_id_(Text(run, "run_id")) {
    for (const Json& s : run.value("steps", Json::array())) {
      std::string name = Text(s, "name");
      step_width_ = std::max(step_width_, DisplayWidth(name));
      state_[name] = "pending";  // the events replayed from the start bring each up to date
    }
    total_ = state_.size();
    workflow_ = Text(run, "workflow");
  }

  void Print(const Json& event) {
    std::string type = Text(event, "type");
    std::string step = Text(event, "step");
    int64_t at = Int(event, "at_ms");
    if (first_at_ == 0) first_at_ = at;
    if (type == "run_started") run_started_at_ = at;
    Json data =
        event.contains("data") && event["data"].is_object() ? event["data"] : Json::object();
    std::string line;
    if (!step.empty() && type.starts_with("step_")) {
      line = StepLine(type.substr(5), step, Int(event, "attempt"), at, data);
    } else {
      line = "run " + RunText(type.starts_with("run_") ? type.substr(4) : type, at, data);
    }
    int64_t base = run_started_at_ ? run_started_at_ : first_at_;
    char elapsed[32];
    std::snprintf(elapsed, sizeof elapsed, "%.2fs", static_cast<double>(at - base) / 1000);
    line = PadLeft(elapsed, 7) + "  " + line;
    while (!line.empty() && line.back() == ' ') line.pop_back();
    ClearBar();
    out_ << line << "\n";
    DrawBar();
    out_.flush();  // live, also through a pipe
  }

  // Takes the progress bar off the screen (before anything else is printed there).
  void ClearBar() {
    if (bar_shown_ == 0) return;
    out_ << '\r' << std::string(bar_shown_, ' ') << '\r';
    out_.flush();
    bar_shown_ = 0;
  }

 private:
  // One step transition: "unreliable  retrying    #1     71 ms  <detail>".
  std::string StepLine(const std::string& state, const std::string& step, int64_t attempt,
                       int64_t at, const Json& data) {
    if (!state_.contains(step)) {
      // A step the run's status did not list (a newer manifest): widen the column.
      step_width_ = std::max(step_width_, DisplayWidth(step));
      ++total_;
    }
    std::string was = state_[step];
    std::string duration;
    if (was == "running" && state != "running" && started_at_.contains(step)) {
      duration = FormatDurationMs(at - started_at_[step]);
    }
    std::string detail = Text(data, "error");
    if (state == "running") {
      started_at_[step] = at;
    } else if (state == "retrying") {
      detail += "; attempt " + Text(data, "next_attempt") + " in " +
                FormatDurationMs(Int(data, "delay_ms"));
    } else if (state == "timeout") {
      detail = "timed out: stopping it";
    } else if (state == "adopted") {
      detail = "still running after a restart";
    }
    // What the progress bar counts: a timed-out attempt is running until it has stopped; an
    // interrupted one waits to run again.
    if (state == "running" || state == "retrying" || IsTerminalStep(state)) {
      state_[step] = state;
    } else if (state == "interrupted") {
      state_[step] = "pending";
    }
    return PadRight(step, step_width_) + "  " + PadRight(state, 9) + "  " +
           PadRight(attempt > 0 ? "#" + std::to_string(attempt) : "", 3) + "  " +
           PadLeft(duration, 7) + "  " + detail;
  }

  std::string RunText(const std::string& what, int64_t at, const Json& data) {
    std::string reason = Text(data, "reason");
    if (reason.empty()) reason = Text(data, "error");
    if (what == "started") {
      return run_id_ + " started: " + (workflow_.empty() ? Text(data, "workflow") : workflow_) +
             ", " + std::to_string(total_) + (total_ == 1 ? " step" : " steps");
    }
    if (what == "succeeded" && run_started_at_) {
      return "succeeded in " + FormatDurationMs(at - run_started_at_);
    }
    if (what == "aborting") return "stopping: " + reason;
    if (what == "recovered") return "recovered after a restart of the server";
    if (what == "retried") {
      // A retry without "from" runs again every step that did not succeed; with it, that step
      // and the ones after it (they are counted again as they start).
      std::string from = Text(data, "from");
      for (auto& [name, state] : state_) {
        if ((from.empty() && state != "succeeded") || name == from) state = "pending";
      }
      std::string steps = Text(data, "steps");
      return "retried" + (from.empty() ? std::string() : " from step " + from) +
             (steps.empty() ? std::string() : ": " + steps + " step(s) to run again");
    }
    return what + (reason.empty() ? "" : ": " + reason);
  }

  void DrawBar() {
    if (!progress_bar_ || total_ == 0) return;
    size_t finished = static_cast<size_t>(std::count_if(
        state_.begin(), state_.end(), [](const auto& kv) { return IsTerminalStep(kv.second); }));
    size_t filled = std::min(kBarWidth, finished * kBarWidth / total_);
    std::string bar = "[" + std::string(filled, '=');
    if (filled < kBarWidth) bar += ">" + std::string(kBarWidth - filled - 1, ' ');
    bar += "] " + std::to_string(finished) + "/" + std::to_string(total_) + " steps";
    out_ << bar;
    bar_shown_ = bar.size();
  }

  std::ostream& out_;
  bool progress_bar_;
  std::string run_id_, workflow_;
  size_t step_width_ = 0;
  size_t total_ = 0;
  std::map<std::string, std::string> state_;   // step -> its latest status (as far as seen)
  std::map<std::string, int64_t> started_at_;  // step -> when its current attempt started
  int64_t run_started_at_ = 0, first_at_ = 0;
  size_t bar_shown_ = 0;  // the width of the bar on the screen; 0 when none is
};

// --- ls -------------------------------------------------------------------------------------

struct LsOptions {
  std::string name;
  std::string status;
  int limit = 0;  // 0: the server's default
  ListFormat format;
};

int List(ApiClient& api, const LsOptions& o, std::ostream& out, std::ostream& err) {
  std::string query = QueryString({{"name", o.name},
                                   {"status", o.status},
                                   {"limit", o.limit > 0 ? std::to_string(o.limit) : ""}});
  auto j = api.GetJson("/workflows" + query);
  if (!j) return api.exit_code();
  Table table({"ID", "WORKFLOW", "STATUS", "DURATION", "STARTED", "ERROR"});
  for (const Json& r : j->value("runs", Json::array())) {
    table.AddRow({Text(r, "run_id"), Text(r, "workflow"), Text(r, "status"),
                  r.contains("duration_ms") ? FormatDurationMs(Int(r, "duration_ms")) : "-",
                  FormatTimestampMs(Int(r, "started_ms")),
                  Truncate(Text(r, "error"), kErrorWidth)});
  }
  PrintList(out, err, *j, table, o.format, "workflow runs");
  return kExitOk;
}

// --- status ---------------------------------------------------------------------------------

void Field(std::ostream& out, std::string_view label, const std::string& value) {
  PrintField(out, label, value, kLabelWidth);
}

// --- logs -----------------------------------------------------------------------------------

int Logs(ApiClient& api, const std::string& id, const std::string& output) {
  auto run = api.GetJson(RunPath(id) + "/status");
  if (!run) return api.exit_code();
  Json all = Json::array();
  Json last;
  int64_t after = 0;
  for (;;) {
    std::string path = RunPath(id) + "/logs";
    if (after > 0) path += "?after=" + std::to_string(after);
    auto j = api.GetJson(path);
    if (!j) return api.exit_code();
    Json events = j->value("events", Json::array());
    for (Json& e : events) {
      after = std::max(after, Int(e, "seq"));
      all.push_back(std::move(e));
    }
    last = std::move(*j);
    if (events.size() < kEventPage) break;
  }
  if (output == "json") {
    last["events"] = std::move(all);
    std::cout << ToPrettyJson(last);
    return kExitOk;
  }
  EventPrinter printer(std::cout, *run, /*progress_bar=*/false);
  for (const Json& e : all) printer.Print(e);
  return kExitOk;
}

int FollowLogs(const Context& server, const std::string& id) {
  int exit_code = kExitOk;
  auto run = FollowRun(server, id, std::cout, isatty(STDOUT_FILENO) != 0, &exit_code);
  if (!run) return exit_code;
  return RunExitCode(*run);
}

// --- pause, resume, cancel, retry -----------------------------------------------------------

int Pause(ApiClient& api, const std::string& id) {
  if (!api.PostJson(RunPath(id) + "/pause", "{}")) return api.exit_code();
  std::cout << "paused " << id << " (steps already running finish; no new step starts)\n";
  return kExitOk;
}

int Resume(ApiClient& api, const std::string& id) {
  if (!api.PostJson(RunPath(id) + "/resume", "{}")) return api.exit_code();
  std::cout << "resumed " << id << "\n";
  return kExitOk;
}

int Cancel(ApiClient& api, const std::string& id) {
  auto r = api.PostJson(RunPath(id) + "/cancel", "{}");
  auto deadline = std::chrono::steady_clock::now() + kCancelWait;
  while (r && !IsFinished(*r) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(kPollInterval);
    r = api.GetJson(RunPath(id) + "/status");
  }
  if (!r) return api.exit_code();
  std::string status = Text(*r, "status");
  if (status == "cancelled") {
    std::cout << "cancelled " << id << "\n";
  } else if (IsFinished(*r)) {
    std::cout << id << " finished before it could be cancelled: " << status << "\n";
  } else {
    std::cout << "cancelling " << id << " (steps still stopping)\n";
  }
  return kExitOk;
}

int Retry(ApiClient& api, const std::string& id, const std::string& from) {
  Json body = Json::object();
  if (!from.empty()) body["from"] = from;
  if (!api.PostJson(RunPath(id) + "/retry", DumpJson(body))) return api.exit_code();
  std::cout << "retrying " << id
            << (from.empty() ? " (the steps that did not succeed)" : " from step " + from) << "\n";
  return kExitOk;
}

}  // namespace

void DescribeRun(std::ostream& out, const Json& run) {
  Field(out, "Run", Text(run, "run_id"));
  Field(out, "Workflow", Text(run, "workflow"));
  Field(out, "Status", Text(run, "status"));
  if (!Text(run, "error").empty()) Field(out, "Error", Text(run, "error"));
  if (!Text(run, "parent_run_id").empty()) {
    Field(out, "Parent", Text(run, "parent_run_id") + " (step " + Text(run, "parent_step") + ")");
  }
  Field(out, "Started", FormatTimestampMs(Int(run, "started_ms")));
  if (run.contains("finished_ms")) {
    Field(out, "Finished", FormatTimestampMs(Int(run, "finished_ms")));
    Field(out, "Duration", FormatDurationMs(Int(run, "duration_ms")));
  }
  if (run.contains("input") && run["input"].is_object() && !run["input"].empty()) {
    out << "Input:\n";
    PrintIndented(out, ToYaml(run["input"]), "  ");
  }
  if (run.contains("steps") && run["steps"].is_array()) {
    const Json& progress = run.value("progress", Json::object());
    Field(out, "Steps", Text(progress, "finished") + "/" + Text(progress, "steps") + " finished");
    Table table({"STEP", "STATUS", "ATTEMPT", "DURATION", "ERROR"});
    for (const Json& s : run["steps"]) {
      table.AddRow({Text(s, "name"), Text(s, "status"),
                    Int(s, "attempt") > 0 ? Text(s, "attempt") : "-", StepDuration(s),
                    Truncate(Text(s, "error"), kErrorWidth)});
    }
    PrintIndented(out, table.ToString(), "  ");
  }
  if (run.contains("output") && !run["output"].is_null()) {
    out << "Output:\n";
    PrintIndented(out, ToYaml(run["output"]), "  ");
  }
}

int RunExitCode(const Json& run) {
  return Text(run, "status") == "succeeded" ? kExitOk : kExitApiError;
}

std::optional<Json> WaitForRun(const Context& server, const std::string& id, int* exit_code) {
  ApiClient api(server);
  for (;;) {
    auto r = api.GetJson(RunPath(id) + "/status");
    if (!r) *exit_code = api.exit_code();
    if (!r || IsFinished(*r)) return r;
    std::this_thread::sleep_for(kPollInterval);
  }
}

std::optional<Json> FollowRun(const Context& server, const std::string& id, std::ostream& out,
                              bool progress_bar, int* exit_code) {
  // The run's steps first: their names and number (for the columns and the bar), and a plain
  // "no workflow run ID" when there is none.
  ApiClient api(server);
  auto run = api.GetJson(RunPath(id) + "/status");
  if (!run) {
    *exit_code = api.exit_code();
    return std::nullopt;
  }
  EventPrinter printer(out, *run, progress_bar);
  http::ClientOptions options;
  options.read_timeout = kStreamReadTimeout;
  // A failure is printed once the bar is off the screen.
  std::ostringstream stream_error;
  ApiClient stream(server, stream_error, options);
  std::optional<Json> finished;
  bool ok = stream.Stream(RunPath(id) + "/logs", [&](const http::SseEvent& ev) {
    Json data = Json::parse(ev.data, nullptr, false);
    if (ev.event == "result") {
      if (data.is_object()) finished = std::move(data);
      return false;
    }
    if (data.is_object()) printer.Print(data);
    return true;
  });
  printer.ClearBar();
  std::cerr << stream_error.str();
  if (finished) return finished;
  if (!ok) {
    *exit_code = stream.exit_code();
    return std::nullopt;
  }
  // The stream ended without the run (the server dropped it): read the run instead.
  return WaitForRun(server, id, exit_code);
}

void AddWorkflowsCommand(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand(
      "workflows",
      "Workflow runs: list them, show one, its events, pause, resume, cancel or retry it "
      "(default: ls)");
  cmd->fallthrough();

  auto ls = std::make_shared<LsOptions>();
  auto* ls_cmd = cmd->add_subcommand("ls", "List workflow runs, newest first");
  ls_cmd->alias("list");
  ls_cmd->fallthrough();
  ls_cmd->add_option("--name", ls->name, "Only the runs of this workflow");
  ls_cmd->add_option("--status", ls->status, "Only runs with this status")
      ->check(CLI::IsMember({"running", "paused", "succeeded", "failed", "cancelled"}));
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

  auto status_id = std::make_shared<std::string>();
  auto status_output = std::make_shared<std::string>("text");
  auto* status_cmd = cmd->add_subcommand("status", "Show one run and its steps");
  status_cmd->fallthrough();
  status_cmd->add_option("id", *status_id, "The run id (wf_...)")->required();
  AddOutputOption(status_cmd, *status_output, {"text", "json", "yaml"},
                  "text, or the API's run as json or yaml");
  status_cmd->callback([&ctx, status_id, status_output] {
    ApiClient api(ctx);
    auto r = api.GetJson(RunPath(*status_id) + "/status");
    if (!r) {
      ctx.exit_code = api.exit_code();
      return;
    }
    if (*status_output == "text") {
      DescribeRun(std::cout, *r);
    } else {
      std::cout << Render(*r, *status_output);
    }
    ctx.exit_code = kExitOk;
  });

  auto logs_id = std::make_shared<std::string>();
  auto logs_follow = std::make_shared<bool>(false);
  auto logs_output = std::make_shared<std::string>("text");
  auto* logs_cmd =
      cmd->add_subcommand("logs", "Print a run's events: one line per step (and run) transition");
  logs_cmd->fallthrough();
  logs_cmd->add_option("id", *logs_id, "The run id (wf_...)")->required();
  auto* follow_flag = logs_cmd->add_flag(
      "-f,--follow", *logs_follow,
      "Follow the run until it ends (with a progress bar on a terminal); exit 1 unless it "
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

  // pause, resume and cancel take a run id and nothing else.
  struct Control {
    const char* name;
    const char* help;
    int (*act)(ApiClient&, const std::string&);
  };
  for (const Control& c :
       {Control{"pause", "Pause a run: no new step starts (running steps finish)", Pause},
        Control{"resume", "Resume a paused run", Resume},
        Control{"cancel", "Cancel a run: its running steps are stopped, the others not run",
                Cancel}}) {
    auto id = std::make_shared<std::string>();
    auto* sub = cmd->add_subcommand(c.name, c.help);
    sub->fallthrough();
    sub->add_option("id", *id, "The run id (wf_...)")->required();
    sub->callback([&ctx, id, act = c.act] {
      ApiClient api(ctx);
      ctx.exit_code = act(api, *id);
    });
  }

  auto retry_id = std::make_shared<std::string>();
  auto retry_from = std::make_shared<std::string>();
  auto* retry_cmd = cmd->add_subcommand(
      "retry",
      "Run a failed or cancelled run again: the steps that did not succeed, or --from a step on");
  retry_cmd->fallthrough();
  retry_cmd->add_option("id", *retry_id, "The run id (wf_...)")->required();
  retry_cmd->add_option("--from", *retry_from,
                        "Run this step and every step after it again (also on a succeeded run)");
  retry_cmd->callback([&ctx, retry_id, retry_from] {
    ApiClient api(ctx);
    ctx.exit_code = Retry(api, *retry_id, *retry_from);
  });

  // `cortex workflows` alone lists.
  cmd->callback([&ctx, cmd] {
    if (!cmd->get_subcommands().empty()) return;
    ApiClient api(ctx);
    ctx.exit_code = List(api, LsOptions{}, std::cout, std::cerr);
  });
}

}  // namespace cortex::cli
