// cortex delete KIND NAME: removes a manifest's file from the manifests folder (through the API,
// so the registry reloads at once).
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/client.h"
#include "cli/verbs.h"

namespace cortex::cli {

void AddDeleteCommand(CLI::App& app, Context& ctx) {
  struct DeleteOptions {
    std::string kind, name;
  };
  auto o = std::make_shared<DeleteOptions>();
  auto* cmd = app.add_subcommand("delete", "Delete a manifest (its file) from the registry");
  cmd->fallthrough();
  AddKindNameArgs(cmd, o->kind, o->name);
  cmd->callback([&ctx, o] {
    if (!KindAndName(ctx, o->kind, o->name)) return;
    ApiClient api(ctx);
    auto j =
        api.DeleteJson("/registry/manifest/" + PathSegment(o->kind) + "/" + PathSegment(o->name));
    if (j) std::cout << "deleted " << j->value("deleted", o->kind + "/" + o->name) << "\n";
    ctx.exit_code = api.exit_code();
  });
}

}  // namespace cortex::cli
