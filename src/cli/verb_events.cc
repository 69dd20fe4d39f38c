// cortex events: follows the registry's change stream (GET /registry/events) and prints one line
// per change, "GENERATION TYPE KEY PATH MESSAGE" ("-" for an empty field), until interrupted.
// Lines are flushed as they come, so the output can be piped into other tools.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>

#include "cli/client.h"
#include "cli/verbs.h"
#include "common/json.h"

namespace cortex::cli {

namespace {

std::string OrDash(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  std::string s = it->is_string() ? it->get<std::string>() : it->dump();
  std::replace(s.begin(), s.end(), '\n', ' ');  // one line per event
  return s.empty() ? "-" : s;
}

}  // namespace

void AddEventsCommand(CLI::App& app, Context& ctx) {
  auto output = std::make_shared<std::string>("text");
  auto* cmd = app.add_subcommand("events", "Follow registry changes as they happen (Ctrl-C stops)");
  cmd->fallthrough();
  AddOutputOption(cmd, *output, {"text", "json"}, "text, or json (one JSON object per line)");
  cmd->callback([&ctx, output] {
    // The server sends a keep-alive comment every 15 s; a minute of silence means it is gone.
    http::ClientOptions options;
    options.read_timeout = std::chrono::seconds(60);
    ApiClient api(ctx, std::cerr, options);
    bool ok = api.Stream("/registry/events", [&](const http::SseEvent& ev) {
      Json data = Json::parse(ev.data, nullptr, false);
      if (data.is_discarded()) data = Json::object();
      if (ev.event == "hello") {
        std::cerr << "watching registry events at " << ctx.server << " from generation "
                  << OrDash(data, "generation") << " (Ctrl-C to stop)" << std::endl;
        return true;
      }
      if (*output == "json") {
        std::cout << DumpJson(data) << std::endl;
        return true;
      }
      std::string type = data.contains("type") ? OrDash(data, "type") : ev.event;
      std::cout << OrDash(data, "generation") << " " << type << " " << OrDash(data, "key") << " "
                << OrDash(data, "path") << " " << OrDash(data, "message") << std::endl;
      return true;
    });
    if (ok) {
      std::cerr << "error: the Cortex server at " << ctx.server << " closed the event stream\n";
      ctx.exit_code = kExitUnreachable;
    } else {
      ctx.exit_code = api.exit_code();
    }
  });
}

}  // namespace cortex::cli
