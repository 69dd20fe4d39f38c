// cortex run agent NAME "question": runs an agent through POST /execute/agent as events, showing
// its thoughts, actions and their results on stderr as they happen and its answer on stdout.
// Exit 0 when the run ended with a final answer, 1 otherwise (or when the API refused it).
//
// cortex chat NAME [--session ID]: an interactive conversation with an agent in a terminal; each
// line is a turn of one session (kept by the server), an empty line or EOF ends it.
#include <unistd.h>

#include <CLI/CLI.hpp>
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
std::optional<Json> RunOnce(const std::string& server, const AgentOptions& o, int* exit_code) {
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

int RunAgent(const std::string& server, const AgentOptions& o) {
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

int Chat(const std::string& server, AgentOptions o) {
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

}  // namespace

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
  cmd->callback([&ctx, o] { ctx.exit_code = RunAgent(ctx.server, *o); });

  auto c = std::make_shared<AgentOptions>();
  auto* chat = app.add_subcommand(
      "chat", "Talk with an agent: each line you type is a turn; an empty line ends it");
  chat->add_option("name", c->agent, "The agent's name")->required();
  chat->add_flag("-q,--quiet", c->quiet, "Print only the answers");
  chat->add_option("--session", c->session, "Continue this session instead of starting one");
  chat->callback([&ctx, c] { ctx.exit_code = Chat(ctx.server, *c); });
}

}  // namespace cortex::cli
