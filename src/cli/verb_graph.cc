// cortex graph: the dependency graph of every manifest, as Graphviz DOT (default) or JSON.
//   cortex graph | dot -Tsvg > graph.svg
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/client.h"
#include "cli/verbs.h"

namespace cortex::cli {

void AddGraphCommand(CLI::App& app, Context& ctx) {
  auto output = std::make_shared<std::string>("dot");
  auto* cmd = app.add_subcommand("graph", "Print the dependency graph (Graphviz DOT or JSON)");
  cmd->fallthrough();
  AddOutputOption(cmd, *output, {"dot", "json"}, "dot or json");
  cmd->callback([&ctx, output] {
    ApiClient api(ctx);
    std::string path = "/registry/graph?format=" + *output;
    if (*output == "json") {
      auto j = api.GetJson(path);
      if (j) std::cout << ToPrettyJson(*j);
    } else if (auto r = api.Get(path)) {
      std::cout << r->body;
      if (!r->body.empty() && r->body.back() != '\n') std::cout << "\n";
    }
    ctx.exit_code = api.exit_code();
  });
}

}  // namespace cortex::cli
