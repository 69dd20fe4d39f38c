#include "cli/cli.h"

#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/context.h"
#include "cli/contexts.h"
#include "cli/verbs.h"
#include "cortex/version.h"

namespace cortex::cli {

int Run(int argc, char** argv, const ServeFn& serve, const AuthFn& auth, const BackupFn& backup) {
  CLI::App app{"Cortex: manifest-driven orchestration of agents, tools, services and workflows",
               "cortex"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("cortex ") + kVersion);
  Context ctx;
  app.add_option("--server", ctx.server,
                 "Cortex API address (env CORTEX_SERVER; else the current context's; else "
                 "http://127.0.0.1:8080)");
  app.add_option("--context", ctx.context_name,
                 "Use this context of the contexts file (env CORTEX_CONTEXT; cortex context)");

  ServeFlags flags;
  auto* s = app.add_subcommand("serve", "Run every Cortex service in this process");
  s->add_option("--config", flags.config, "Settings file (default ./cortex.yml when present)");
  s->add_option("--manifests", flags.manifests, "Manifests folder (default ./manifests)");
  s->add_option("--data-dir", flags.data_dir, "State folder (default ./.cortex)");
  s->add_option("--listen", flags.listen, "Gateway address HOST:PORT (default 127.0.0.1:8080)");
  s->add_option("--log-level", flags.log_level, "debug, info, warn or error");
  s->add_option("--log-format", flags.log_format, "text, or json (one object a line)")
      ->check(CLI::IsMember({"text", "json"}));
  s->add_flag("--strict", flags.strict, "Unknown manifest fields are errors, not warnings");
  s->add_flag("--no-watch", flags.no_watch, "Do not watch the manifests folder (no hot reload)");
  s->add_flag("--service-ports", flags.service_ports,
              "Also open the seed's per-service ports (registry 8082, executor 8083, "
              "deployer 8084, workflow engine 8085 on 127.0.0.1)");
  s->add_option("--registry-listen", flags.registry_listen,
                "Address of the registry service's own port");
  s->callback([&] { ctx.exit_code = serve(flags); });

  AuthFlags auth_flags;
  if (auth) {
    auto* a =
        app.add_subcommand("auth", "API keys (in the data dir's Store; send one as CORTEX_TOKEN)");
    a->require_subcommand(1);
    a->add_option("--config", auth_flags.config,
                  "Settings file (default ./cortex.yml when present)");
    a->add_option("--data-dir", auth_flags.data_dir, "State folder (default ./.cortex)");
    a->add_option("-o,--output", auth_flags.output, "text or json")
        ->check(CLI::IsMember({"text", "json"}));
    auto* create = a->add_subcommand("create-key", "Make a key; its secret is shown once");
    create->add_option("name", auth_flags.name, "What the key is for (ci, alice, ...)")->required();
    create->add_option("--role", auth_flags.role, "viewer, operator or admin")
        ->check(CLI::IsMember({"viewer", "operator", "admin"}))
        ->capture_default_str();
    create->add_option("--scope", auth_flags.scopes,
                       "Limit the role to manifests: kind:pattern, e.g. workflow:nightly-* "
                       "(repeat for more; kind is tool, agent, relic, workflow, monument or *)");
    create->callback([&] {
      auth_flags.action = "create-key";
      ctx.exit_code = auth(auth_flags);
    });
    auto* list = a->add_subcommand("list-keys", "The keys (never their secrets)");
    list->callback([&] {
      auth_flags.action = "list-keys";
      ctx.exit_code = auth(auth_flags);
    });
    auto* revoke = a->add_subcommand("revoke-key", "A revoked key is refused from then on");
    revoke->add_option("id", auth_flags.id, "The key's id (key_...)")->required();
    revoke->callback([&] {
      auth_flags.action = "revoke-key";
      ctx.exit_code = auth(auth_flags);
    });
  }

  BackupFlags backup_flags;
  if (backup) {
    auto* b = app.add_subcommand(
        "backup", "Write the state and the manifests to FILE (the server may keep running)");
    b->add_option("file", backup_flags.file, "The archive to write (a new file)")->required();
    auto* r = app.add_subcommand(
        "restore", "Restore a backup into a data dir and manifests folder (server stopped)");
    r->add_option("file", backup_flags.file, "The archive written by cortex backup")->required();
    r->add_flag("--force", backup_flags.force,
                "Replace an existing state (the old manifests folder is kept beside it)");
    for (auto* cmd : {b, r}) {
      cmd->add_option("--config", backup_flags.config,
                      "Settings file (default ./cortex.yml when present)");
      cmd->add_option("--data-dir", backup_flags.data_dir, "State folder (default ./.cortex)");
      cmd->add_option("--manifests", backup_flags.manifests,
                      "Manifests folder (default ./manifests)");
      cmd->callback([&, cmd] {
        backup_flags.action = cmd->get_name();
        ctx.exit_code = backup(backup_flags);
      });
    }
  }

  AddValidateCommand(app, ctx);
  AddSchemaCommand(app, ctx);
  AddRegistryCommands(app, ctx);
  AddContextCommand(app, ctx);
  AddAuditCommand(app, ctx);
  AddHelpCommands(app, ctx);

  // Once the command line is parsed and before any verb runs: which server, with which key.
  // Verbs that call no server (serve, auth, backup, restore, validate, schema) do not read the
  // contexts file.
  app.parse_complete_callback([&] {
    for (const char* local : {"serve", "auth", "validate", "schema", "backup", "restore", "version",
                              "completion", "man"}) {
      if (app.got_subcommand(local)) return;
    }
    if (Status st = ResolveContext(ctx); !st.ok()) {
      throw CLI::ValidationError("--context", st.message());
    }
  });

  if (argc <= 1) {  // `cortex` alone: what it can do
    std::cout << app.help();
    return 0;
  }
  if (auto unknown = UnknownVerb(app, argc, argv)) {
    std::cerr << *unknown << "\n";
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help, the version, or the usage error
    return code == 0 ? 0 : 2;
  }
  return ctx.exit_code;
}

}  // namespace cortex::cli
