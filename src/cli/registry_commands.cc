// The registry verbs: clients of the /registry API, one file per verb.
#include <CLI/CLI.hpp>
#include <cctype>
#include <iostream>

#include "cli/client.h"
#include "cli/context.h"
#include "cli/verbs.h"

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
  return cmd
      ->add_option("--timeout", timeout,
                   description + " (a duration: 30s, 500ms, 2m, 1h, or seconds; at most 1h)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            return ParseTimeoutMs(text) ? "" : "expected a duration up to 1h (30s, 500ms, 2m, 1h)";
          },
          "DURATION"))
      ->capture_default_str();
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
}

}  // namespace cortex::cli
