// The HTTP verbs of the CLI, one file each (verb_<name>.cc); registry_commands.cc adds them.
// Each is a client of the API at ctx.server and sets ctx.exit_code (see cli/client.h).
#pragma once

#include <string>
#include <vector>

#include "cli/context.h"

namespace CLI {
class Option;
}

namespace cortex::cli {

// `-o,--output FORMAT` restricted to `choices`, with its default shown in --help.
CLI::Option* AddOutputOption(CLI::App* cmd, std::string& output, std::vector<std::string> choices,
                             const std::string& description);

void AddGetCommand(CLI::App& app, Context& ctx);
void AddDescribeCommand(CLI::App& app, Context& ctx);
void AddGraphCommand(CLI::App& app, Context& ctx);
void AddApplyCommand(CLI::App& app, Context& ctx);
void AddDeleteCommand(CLI::App& app, Context& ctx);
void AddStatusCommand(CLI::App& app, Context& ctx);
void AddSyncCommand(CLI::App& app, Context& ctx);
void AddErrorsCommand(CLI::App& app, Context& ctx);
void AddEventsCommand(CLI::App& app, Context& ctx);
void AddDepsCommand(CLI::App& app, Context& ctx);

}  // namespace cortex::cli
