// The registry verbs: clients of the /registry API, one file per verb.
#include <CLI/CLI.hpp>

#include "cli/context.h"
#include "cli/verbs.h"

namespace cortex::cli {

CLI::Option* AddOutputOption(CLI::App* cmd, std::string& output, std::vector<std::string> choices,
                             const std::string& description) {
  return cmd->add_option("-o,--output", output, description)
      ->check(CLI::IsMember(std::move(choices)))
      ->capture_default_str();
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
