// What every verb shares: the server address, the output format, the exit code.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace cortex::cli {

struct Context {
  std::string server = "http://127.0.0.1:8080";
  int exit_code = 0;
};

// One function per verb file; each adds its subcommand to `app`.
void AddValidateCommand(CLI::App& app, Context& ctx);
void AddSchemaCommand(CLI::App& app, Context& ctx);
// get, describe, graph, apply, delete, status, sync, errors, events (registry_commands.cc and
// one verb_*.cc file per verb).
void AddRegistryCommands(CLI::App& app, Context& ctx);

}  // namespace cortex::cli
