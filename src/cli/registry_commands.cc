// Placeholder until the HTTP verbs land.
#include <CLI/CLI.hpp>

#include "cli/context.h"

namespace cortex::cli {

void AddRegistryCommands(CLI::App&, Context&) {}

}  // namespace cortex::cli
