// cortex sync: re-reads the whole manifests folder now (for setups running with --no-watch, or
// after files changed where the watcher cannot see them, such as some network file systems).
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/client.h"
#include "cli/verbs.h"

namespace cortex::cli {

void AddSyncCommand(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("sync", "Reload every manifest from the manifests folder now");
  cmd->fallthrough();
  cmd->callback([&ctx] {
    ApiClient api(ctx);
    auto j = api.PostJson("/registry/sync", "");
    if (j) {
      int64_t errors = j->value("errors", int64_t{0});
      int64_t conflicts = j->value("conflicts", int64_t{0});
      std::cout << "synced: generation " << j->value("generation", int64_t{0}) << ", "
                << j->value("total_manifests", int64_t{0}) << " manifests, " << errors
                << " file(s) with errors, " << conflicts << " conflict(s)\n";
      if (errors || conflicts) std::cout << "run `cortex errors` for details\n";
    }
    ctx.exit_code = api.exit_code();
  });
}

}  // namespace cortex::cli
