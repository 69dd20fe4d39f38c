// The registry verbs: clients of the /registry API, one file per verb.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <iostream>
#include <sstream>
#include <thread>

#include "cli/client.h"
#include "cli/context.h"
#include "cli/verbs.h"
#include "common/clock.h"

namespace cortex::cli {

CLI::Option* AddOutputOption(CLI::App* cmd, std::string& output, std::vector<std::string> choices,
                             const std::string& description) {
  return cmd->add_option("-o,--output", output, description)
      ->check(CLI::IsMember(std::move(choices)))
      ->capture_default_str();
}

void AddListFormat(CLI::App* cmd, ListFormat& format, const std::string& description) {
  AddOutputOption(
      cmd, format.output, {"table", "json", "yaml", "name"},
      description.empty() ? "table, json, yaml, or name (one name a line)" : description);
  cmd->add_flag("--no-headers", format.no_headers, "Print the table without its header row");
}

std::optional<int64_t> ParseTimeoutMs(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0 || digits > 7) return std::nullopt;
  int64_t n = std::stoll(std::string(text.substr(0, digits)));
  std::string_view unit = text.substr(digits);
  int64_t scale = unit == "ms"                  ? 1
                  : unit.empty() || unit == "s" ? 1000
                  : unit == "m"                 ? 60 * 1000
                  : unit == "h"                 ? 3600 * 1000
                                                : 0;
  if (scale == 0 || n == 0 || n * scale > kMaxTimeoutMs) return std::nullopt;
  return n * scale;
}

CLI::Option* AddTimeoutOption(CLI::App* cmd, std::string& timeout, const std::string& description) {
  return AddDurationOption(cmd, "--timeout", timeout, description);
}

CLI::Option* AddDurationOption(CLI::App* cmd, const std::string& flag, std::string& value,
                               const std::string& description) {
  return cmd
      ->add_option(flag, value,
                   description + " (a duration: 30s, 500ms, 2m, 1h, or seconds; at most 1h)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            return ParseTimeoutMs(text) ? "" : "expected a duration up to 1h (30s, 500ms, 2m, 1h)";
          },
          "DURATION"))
      ->capture_default_str();
}

void AddWatchOptions(CLI::App* cmd, ListFormat& format) {
  cmd->add_flag("-w,--watch", format.watch,
                "Keep watching: print the list again each time it changes (Ctrl-C ends it)");
  AddDurationOption(cmd, "--interval", format.interval, "With --watch: how often to look");
}

int RunList(const ListFormat& format,
            const std::function<int(std::ostream& out, std::ostream& err)>& list) {
  if (!format.watch) return list(std::cout, std::cerr);
  const auto interval = std::chrono::milliseconds(ParseTimeoutMs(format.interval).value_or(2000));
  // On a terminal a table is redrawn in place, as watch(1) does; else each change is printed
  // after the last (a blank line between tables), for a log or a pipe.
  const bool redraw = !format.structured() && format.output != "name" && ::isatty(STDOUT_FILENO);
  std::string last;
  bool first = true;
  for (;;) {
    std::ostringstream out;
    int code = list(out, out);
    if (code != kExitOk) {
      std::cout << out.str() << std::flush;
      return code;
    }
    if (first || out.str() != last) {
      if (redraw) {
        std::cout << "\x1b[H\x1b[2J"
                  << "Every " << format.interval << "   " << FormatTimestampMs(UnixNowMs())
                  << "\n\n";
      } else if (!first && format.output == "table") {
        std::cout << "\n";
      }
      std::cout << out.str() << std::flush;
      last = out.str();
      first = false;
    }
    std::this_thread::sleep_for(interval);
  }
}

void AddKindNameArgs(CLI::App* cmd, std::string& kind, std::string& name) {
  cmd->add_option("kind", kind,
                  "Tool, Agent, Relic, Workflow or Monument; or KIND/NAME, as `get -o name` "
                  "prints it")
      ->required();
  cmd->add_option("name", name, "The manifest's name");
}

void SplitKindName(std::string& kind, std::string& name) {
  size_t slash = kind.find('/');
  if (slash == std::string::npos || !name.empty()) return;
  name = kind.substr(slash + 1);
  kind.resize(slash);
}

bool KindAndName(Context& ctx, std::string& kind, std::string& name) {
  SplitKindName(kind, name);
  if (!name.empty()) return true;
  std::cerr << "error: give the manifest as KIND NAME or KIND/NAME\n";
  ctx.exit_code = kExitUsage;
  return false;
}

void AddRegistryCommands(CLI::App& app, Context& ctx) {
  AddGetCommand(app, ctx);
  AddDescribeCommand(app, ctx);
  AddApplyCommand(app, ctx);
  AddDeleteCommand(app, ctx);
  AddDepsCommand(app, ctx);
  AddGraphCommand(app, ctx);
  AddStatusCommand(app, ctx);
  AddSyncCommand(app, ctx);
  AddErrorsCommand(app, ctx);
  AddEventsCommand(app, ctx);
  AddRunCommand(app, ctx);
  AddExecutionsCommand(app, ctx);
  AddWorkflowsCommand(app, ctx);
  AddAgentRunsCommand(app, ctx);
  AddDeployCommand(app, ctx);
  AddRelicsCommand(app, ctx);
  AddMonumentsCommand(app, ctx);
  AddScaleCommand(app, ctx);
  AddMcpCommand(app, ctx);
}

}  // namespace cortex::cli
