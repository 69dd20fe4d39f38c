// The registry verbs: clients of the /registry API, one file per verb.
#include <CLI/CLI.hpp>

#include "cli/context.h"
#include "cli/verbs.h"

namespace cortex::cli {

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
}

}  // namespace cortex::cli
