// cortex run agent NAME "question": runs an agent through POST /execute/agent as events, showing
// its thoughts, actions and their results on stderr as they happen and its answer on stdout.
// Exit 0 when the run ended with a final answer, 1 otherwise (or when the API refused it).
//
// cortex chat NAME [--session ID]: an interactive conversation with an agent in a terminal; each
// line is a turn of one session (kept by the server), an empty line or EOF ends it.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli/client.h"
#include "cli/verbs.h"
#include "common/json.h"

namespace cortex::cli {
namespace {

struct AgentOptions {
  std::string agent;
  std::string input;
  std::string session;  // the session to continue ("" = a new one)
  bool record = false;
  int64_t token_budget = 0;
  bool quiet = false;  // only the answer
  std::string output = "text";
};

// An agent run can last minutes, mostly waiting for a model or a tool.
http::ClientOptions LongReads() {
  http::ClientOptions o;
  o.read_timeout = std::chrono::minutes(11);
  return o;
}

std::string Short(const Json& v, size_t max = 160) {
  std::string s = v.is_string() ? v.get<std::string>() : DumpJson(v);
  for (char& c : s) {
    if (c == '\n') c = ' ';
  }
  return s.size() > max ? s.substr(0, max) + "…" : s;
}

// Runs one turn of a conversation, printing as it goes; the run's record, or nullopt (after
// printing why, with *exit_code set).
std::optional<Json> RunOnce(const Context& server, const AgentOptions& o, int* exit_code) {
  ApiClient api(server, std::cerr, LongReads());
  Json body = {{"name", o.agent}, {"input", o.input}};
  if (!o.session.empty()) body["session_id"] = o.session;
  if (o.record) body["record"] = true;
  if (o.token_budget > 0) body["token_budget"] = o.token_budget;
  if (o.output != "text") {
    auto record = api.PostJson("/execute/agent", DumpJson(body));
    if (!record) {
      *exit_code = api.exit_code();
      return std::nullopt;
    }
    return record;
  }
  body["stream"] = true;
  const bool tty = ::isatty(STDERR_FILENO);
  const char* dim = tty ? "\033[2m" : "";
  const char* reset = tty ? "\033[0m" : "";
  std::optional<Json> done;
  bool in_thought = false;
  auto end_thought = [&] {
    if (in_thought) std::cerr << reset << "\n";
    in_thought = false;
  };
  bool ok = api.StreamPost("/execute/agent", DumpJson(body), [&](const http::SseEvent& e) {
    Json data = ParseJsonOrString(e.data);
    if (e.event == "thought") {
      if (o.quiet) return true;
      if (!in_thought) std::cerr << dim << "thinking: ";
      in_thought = true;
      std::cerr << data.value("text", "") << std::flush;
    } else if (e.event == "action") {
      end_thought();
      if (o.quiet) return true;
      std::cerr << "→ " << data.value("type", "tool") << " " << data.value("name", "") << " "
                << Short(data.value("parameters", Json::object())) << "  [" << data.value("id", "")
                << "]\n";
    } else if (e.event == "action_result") {
      if (o.quiet) return true;
      end_thought();
      std::string status = data.value("status", "");
      std::cerr << (status == "succeeded" ? "✓ " : "✗ ") << data.value("id", "") << ": "
                << (status == "succeeded" ? Short(data.value("result", Json()))
                                          : status + ": " + data.value("error", ""))
                << dim << " (" << FormatDurationMs(data.value("duration_ms", int64_t{0})) << ")"
                << reset << "\n";
    } else if (e.event == "response") {
      end_thought();
      std::cout << data.value("text", "") << "\n" << std::flush;
    } else if (e.event == "error") {
      end_thought();
      std::cerr << "error: " << data.value("message", e.data) << "\n";
    } else if (e.event == "done") {
      end_thought();
      done = data;
      return false;
    }
    return true;
  });
  end_thought();
  if (!ok && !done) {
    *exit_code = api.exit_code() != kExitOk ? api.exit_code() : kExitApiError;
    return std::nullopt;
  }
  if (!done) {
    std::cerr << "error: the event stream ended before the run did\n";
    *exit_code = kExitApiError;
    return std::nullopt;
  }
  return done;
}

// The last line on stderr: how the run went.
void Summarise(const Json& r, bool quiet) {
  std::string status = r.value("status", "");
  bool good = status == "succeeded";
  if (quiet && good) return;
  std::cerr << status << " (" << r.value("reason", "") << ") after " << r.value("iterations", 0)
            << (r.value("iterations", 0) == 1 ? " turn" : " turns") << ", "
            << FormatDurationMs(r.value("duration_ms", int64_t{0})) << ", "
            << r["usage"].value("input_tokens", int64_t{0}) << " + "
            << r["usage"].value("output_tokens", int64_t{0}) << " tokens; run "
            << r.value("run_id", "")
            << (r.contains("session_id") ? ", session " + r.value("session_id", "") : "") << "\n";
  if (r.contains("error")) std::cerr << "error: " << r.value("error", "") << "\n";
  if (r.contains("recording")) std::cerr << "recorded to " << r.value("recording", "") << "\n";
}

int RunAgent(const Context& server, const AgentOptions& o) {
  int exit_code = kExitOk;
  auto r = RunOnce(server, o, &exit_code);
  if (!r) return exit_code;
  if (o.output != "text") {
    std::cout << Render(*r, o.output);
  } else {
    Summarise(*r, o.quiet);
  }
  return r->value("status", "") == "succeeded" ? kExitOk : kExitApiError;
}

int Chat(const Context& server, AgentOptions o) {
  const bool tty = ::isatty(STDIN_FILENO);
  if (tty) std::cerr << "Talking to " << o.agent << ". An empty line ends the conversation.\n";
  int exit_code = kExitOk;
  for (;;) {
    if (tty) std::cerr << "you> " << std::flush;
    std::string line;
    if (!std::getline(std::cin, line) || line.empty()) break;
    o.input = line;
    auto r = RunOnce(server, o, &exit_code);
    if (!r) return exit_code;
    if (r->value("status", "") != "succeeded") Summarise(*r, false);
    o.session = r->value("session_id", o.session);  // the next turn continues this session
  }
  if (tty && !o.session.empty()) {
    std::cerr << "session " << o.session << " (continue it with --session " << o.session << ")\n";
  }
  return exit_code;
}

// A run's row in a list: id, agent, status (reason), created.
void AddRunRow(Table& table, const Json& r) {
  std::string status = r.value("status", "?");
  if (r.contains("reason") && r["reason"].is_string() && r.value("reason", "") != "final") {
    status += " (" + r.value("reason", "") + ")";
  }
  table.AddRow({r.value("run_id", ""), r.value("agent", ""), status,
                FormatTimestampMs(r.value("created_ms", int64_t{0}))});
}

struct RunsOptions {
  std::string agent, session, id;
  ListFormat format;
  int limit = 0;
};

int ListRuns(const Context& server, const RunsOptions& o, std::ostream& out, std::ostream& err) {
  ApiClient api(server);
  std::string q = "/agent-runs?limit=" + std::to_string(o.limit > 0 ? o.limit : 50);
  if (!o.agent.empty()) q += "&agent=" + PathSegment(o.agent);
  if (!o.session.empty()) q += "&session_id=" + PathSegment(o.session);
  auto r = api.GetJson(q);
  if (!r) return api.exit_code();
  Table table({"RUN", "AGENT", "STATUS", "CREATED"});
  for (const auto& live : r->value("in_progress", Json::array())) {
    Json row = live;
    row["created_ms"] = live.value("started_ms", int64_t{0});
    AddRunRow(table, row);
  }
  for (const auto& run : r->value("runs", Json::array())) {
    if (run.value("status", "") == "running") continue;  // listed above when it runs here
    AddRunRow(table, run);
  }
  PrintList(out, err, *r, table, o.format, "agent runs");
  return kExitOk;
}

// Prints a run's journal as it grows (GET /agent-runs/{id}/events), then its end.
int FollowRun(const Context& server, const std::string& id) {
  ApiClient api(server, std::cerr, LongReads());
  int exit_code = kExitApiError;
  bool ok = api.Stream("/agent-runs/" + PathSegment(id) + "/events", [&](const http::SseEvent& e) {
    Json d = Json::parse(e.data, nullptr, false);
    if (e.event == "turn") {
      std::cout << "turn " << d.value("turn", 0) << " (" << d.value("model", "")
                << "): " << Short(d.value("content", "")) << "\n";
    } else if (e.event == "action_result") {
      std::cout << "  action " << d.value("id", "") << ": " << d.value("status", "")
                << (d.value("error", "").empty() ? "" : ": " + Short(d.value("error", ""))) << "\n";
    } else if (e.event == "done") {
      std::cout << d.value("status", "") << " (" << d.value("reason", "") << ")";
      if (!d.value("response", "").empty()) std::cout << ": " << d.value("response", "");
      std::cout << "\n";
      exit_code = d.value("status", "") == "succeeded" ? kExitOk : kExitApiError;
      return false;
    }
    std::cout.flush();
    return true;
  });
  return ok ? exit_code : api.exit_code();
}

}  // namespace

void AddAgentRunsCommand(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand(
      "agent-runs", "Agent runs: list them, show one, follow it, cancel it (default: ls)");
  cmd->fallthrough();
  auto ls = std::make_shared<RunsOptions>();
  auto* ls_cmd = cmd->add_subcommand("ls", "List agent runs: those in progress, then the newest");
  ls_cmd->alias("list");
  ls_cmd->fallthrough();
  ls_cmd->add_option("--agent", ls->agent, "Only this agent's runs");
  ls_cmd->add_option("--session", ls->session, "Only the runs of this session");
  ls_cmd->add_option("--limit", ls->limit, "At most this many (default 50)")
      ->check(CLI::Range(1, 1000));
  AddListFormat(ls_cmd, ls->format);
  AddWatchOptions(ls_cmd, ls->format);
  ls_cmd->callback([&ctx, ls] {
    ctx.exit_code = RunList(ls->format, [&](std::ostream& out, std::ostream& err) {
      return ListRuns(ctx, *ls, out, err);
    });
  });
  cmd->callback([&ctx, cmd, ls] {
    if (cmd->get_subcommands().empty()) ctx.exit_code = ListRuns(ctx, *ls, std::cout, std::cerr);
  });

  auto show = std::make_shared<RunsOptions>();
  show->format.output = "json";
  auto* show_cmd = cmd->add_subcommand("show", "One run's record (its progress while it runs)");
  show_cmd->add_option("id", show->id, "The run id (ar_...)")->required();
  AddOutputOption(show_cmd, show->format.output, {"json", "yaml"}, "json or yaml");
  show_cmd->callback([&ctx, show] {
    ApiClient api(ctx);
    auto r = api.GetJson("/agent-runs/" + PathSegment(show->id));
    if (!r) {
      ctx.exit_code = api.exit_code();
      return;
    }
    std::cout << Render(*r, show->format.output);
    ctx.exit_code = kExitOk;
  });

  auto follow_id = std::make_shared<std::string>();
  auto* follow_cmd = cmd->add_subcommand(
      "follow", "Print a run's model turns and action outcomes as they come, then its end");
  follow_cmd->add_option("id", *follow_id, "The run id (ar_...)")->required();
  follow_cmd->callback([&ctx, follow_id] { ctx.exit_code = FollowRun(ctx, *follow_id); });

  auto cancel_id = std::make_shared<std::string>();
  auto* cancel_cmd = cmd->add_subcommand("cancel", "Cancel a run in progress");
  cancel_cmd->add_option("id", *cancel_id, "The run id (ar_...)")->required();
  cancel_cmd->callback([&ctx, cancel_id] {
    ApiClient api(ctx);
    auto r = api.PostJson("/agent-runs/" + PathSegment(*cancel_id) + "/cancel", "{}");
    ctx.exit_code = r ? kExitOk : api.exit_code();
    if (r) std::cout << *cancel_id << " cancelling\n";
  });

  auto sessions = std::make_shared<RunsOptions>();
  auto* sessions_cmd = app.add_subcommand("sessions", "An agent's sessions, most recent first");
  sessions_cmd->add_option("agent", sessions->agent, "The agent's name")->required();
  AddListFormat(sessions_cmd, sessions->format);
  sessions_cmd->callback([&ctx, sessions] {
    ApiClient api(ctx);
    auto r = api.GetJson("/state/agent/" + PathSegment(sessions->agent) + "/sessions");
    if (!r) {
      ctx.exit_code = api.exit_code();
      return;
    }
    Table table({"SESSION", "RUNS", "MESSAGES", "UPDATED"});
    for (const auto& x : r->value("sessions", Json::array())) {
      table.AddRow({x.value("session_id", ""), std::to_string(x.value("runs", int64_t{0})),
                    std::to_string(x.value("messages_count", int64_t{0})),
                    FormatTimestampMs(x.value("updated_ms", int64_t{0}))});
    }
    PrintList(std::cout, std::cerr, *r, table, sessions->format, "sessions of " + sessions->agent);
    ctx.exit_code = kExitOk;
  });
}

void AddAgentCommands(CLI::App& app, CLI::App& run, Context& ctx) {
  auto o = std::make_shared<AgentOptions>();
  auto* cmd = run.add_subcommand(
      "agent",
      "Run an agent: its thoughts and actions on stderr as they happen, its answer on stdout; "
      "exit 1 when it ends without a final answer");
  cmd->fallthrough();
  cmd->add_option("name", o->agent, "The agent's name")->required();
  cmd->add_option("input", o->input, "What to ask it")->required();
  cmd->add_option("--session", o->session, "Continue this session (its id, from an earlier run)");
  cmd->add_flag("--record", o->record,
                "Record the model's turns to a file the replay provider can play back");
  cmd->add_option("--token-budget", o->token_budget,
                  "Stop the run once it has used this many tokens (input + output)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("-q,--quiet", o->quiet, "Print only the answer");
  AddOutputOption(cmd, o->output, {"text", "json", "yaml"},
                  "text (live), or the run's record as json or yaml once it ends");
  cmd->callback([&ctx, o] { ctx.exit_code = RunAgent(ctx, *o); });

  auto c = std::make_shared<AgentOptions>();
  auto* chat = app.add_subcommand(
      "chat", "Talk with an agent: each line you type is a turn; an empty line ends it");
  chat->add_option("name", c->agent, "The agent's name")->required();
  chat->add_flag("-q,--quiet", c->quiet, "Print only the answers");
  chat->add_option("--session", c->session, "Continue this session instead of starting one");
  chat->callback([&ctx, c] { ctx.exit_code = Chat(ctx, *c); });
}

}  // namespace cortex::cli
