// cortex schema KIND: the JSON Schema of a manifest kind, for editors (local, no server).
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/context.h"
#include "common/json.h"
#include "registry/manifest.h"

namespace cortex::cli {

void AddSchemaCommand(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("schema", "Print the JSON Schema of a manifest kind");
  auto kind = std::make_shared<std::string>();
  cmd->add_option("kind", *kind, "Tool, Agent, Relic, Workflow or Monument")->required();
  cmd->callback([&ctx, kind] {
    auto k = registry::ParseKind(*kind);
    if (!k) {
      std::cerr << "error: unknown kind '" << *kind
                << "' (one of Tool, Agent, Relic, Workflow, Monument)\n";
      ctx.exit_code = 2;
      return;
    }
    std::cout << DumpJson(registry::KindSchema(*k), 2) << "\n";
  });
}

}  // namespace cortex::cli
