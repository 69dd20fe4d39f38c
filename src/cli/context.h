// What every verb shares: the server address, the output format, the exit code.
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace cortex::cli {

// Where the verbs send their calls and with which key. Resolved once the command line is parsed
// (ResolveContext in contexts.h): --server, else CORTEX_SERVER, else the current context's
// server, else http://127.0.0.1:8080; CORTEX_TOKEN, else the context's token.
struct Context {
  std::string server;
  std::string token;         // sent as Authorization: Bearer ("" = none)
  std::string ca_file;       // https:// servers: the CA certificates to trust ("" = the system's)
  std::string context_name;  // --context / CORTEX_CONTEXT ("" = the file's current one)
  int exit_code = 0;
};

// One function per verb file; each adds its subcommand to `app`.
void AddValidateCommand(CLI::App& app, Context& ctx);
void AddSchemaCommand(CLI::App& app, Context& ctx);
// get, describe, graph, apply, delete, status, sync, errors, events (registry_commands.cc and
// one verb_*.cc file per verb).
void AddRegistryCommands(CLI::App& app, Context& ctx);
// context (set, use, ls, current, delete) and audit (verb_context.cc).
void AddContextCommand(CLI::App& app, Context& ctx);
void AddAuditCommand(CLI::App& app, Context& ctx);

}  // namespace cortex::cli
