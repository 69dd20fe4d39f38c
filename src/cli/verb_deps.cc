// cortex deps KIND NAME: what a manifest needs: every transitive dependency in the order to
// load them (each after its own dependencies), then its direct references and where they point.
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/client.h"
#include "cli/verbs.h"

namespace cortex::cli {

namespace {

struct DepsOptions {
  std::string kind, name;
  std::string output = "text";
};

void PrintDeps(std::ostream& out, const Json& j) {
  out << j.value("root", "") << (j.value("resolved", false) ? "" : " (unresolved)") << "\n";
  const Json order = j.value("order", Json::array());
  out << "Dependency order:";
  if (order.empty()) {
    out << " none\n";
  } else {
    out << "\n";
    Table table({"#", "KIND", "NAME", "RESOLVED", "PATH"});
    int n = 0;
    for (const Json& d : order) {
      table.AddRow({std::to_string(++n), d.value("kind", ""), d.value("name", ""),
                    d.value("resolved", false) ? "yes" : "no", d.value("path", "")});
    }
    PrintIndented(out, table.ToString(), "  ");
  }
  const Json direct = j.value("dependencies", Json::array());
  out << "Direct dependencies:";
  if (direct.empty()) {
    out << " none\n";
    return;
  }
  out << "\n";
  Table table({"VIA", "FIELD", "REFERENCE", "TARGET"});
  for (const Json& d : direct) {
    std::string target = d.value("resolved", false) ? "-> " + d.value("target", "")
                                                    : "error: " + d.value("error", "");
    table.AddRow({d.value("via", ""), d.value("field", ""), d.value("reference", ""), target});
  }
  PrintIndented(out, table.ToString(), "  ");
}

}  // namespace

void AddDepsCommand(CLI::App& app, Context& ctx) {
  auto o = std::make_shared<DepsOptions>();
  auto* cmd = app.add_subcommand("deps", "Show a manifest's dependencies in load order");
  cmd->fallthrough();
  cmd->add_option("kind", o->kind, "Tool, Agent, Relic, Workflow or Monument")->required();
  cmd->add_option("name", o->name, "The manifest's name")->required();
  AddOutputOption(cmd, o->output, {"text", "json", "yaml"}, "text, json or yaml");
  cmd->callback([&ctx, o] {
    ApiClient api(ctx);
    auto j =
        api.GetJson("/registry/dependencies/" + PathSegment(o->kind) + "/" + PathSegment(o->name));
    if (j) {
      if (o->output == "text") {
        PrintDeps(std::cout, *j);
      } else {
        std::cout << Render(*j, o->output);
      }
    }
    ctx.exit_code = api.exit_code();
  });
}

}  // namespace cortex::cli
