// cortex context: named servers and their keys, like kubectl's contexts (see cli/contexts.h).
//   cortex context set NAME --server URL [--token KEY | --token-file FILE] [--use]
//   cortex context use NAME      cortex context ls      cortex context current
//   cortex context delete NAME
// cortex audit: the server's audit log (GET /audit), newest first, with filters.
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>

#include "cli/client.h"
#include "cli/contexts.h"
#include "cli/verbs.h"

namespace cortex::cli {

namespace {

// Loads the file, lets `change` edit it, saves it; prints errors. The exit code.
int EditContexts(const std::function<Status(ContextsFile&)>& change) {
  const auto path = ContextsPath();
  auto file = LoadContexts(path);
  if (!file.ok()) {
    std::cerr << "error: " << file.status().message() << "\n";
    return kExitUsage;
  }
  if (Status st = change(*file); !st.ok()) {
    std::cerr << "error: " << st.message() << "\n";
    return kExitUsage;
  }
  if (Status st = SaveContexts(path, *file); !st.ok()) {
    std::cerr << "error: " << st.message() << "\n";
    return kExitApiError;
  }
  return kExitOk;
}

struct SetOptions {
  std::string name, server, token, token_file, ca_file;
  bool use = false;
};

struct AuditOptions {
  std::string actor, path;
  ListFormat format;
  int64_t since_ms = -1;
  int limit = 50;
};

}  // namespace

void AddContextCommand(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand(
      "context",
      "Named servers and their API keys ($CORTEX_CONTEXTS, else ~/.cortex/contexts.yml)");
  cmd->require_subcommand(1);

  auto set = std::make_shared<SetOptions>();
  auto* set_cmd = cmd->add_subcommand("set", "Add or change a context");
  set_cmd->add_option("name", set->name, "The context's name")->required();
  set_cmd->add_option("--server", set->server, "Its Cortex API address")->required();
  auto* token = set_cmd->add_option("--token", set->token, "Its API key (stored in the file)");
  set_cmd->add_option("--token-file", set->token_file, "A file holding its API key")
      ->excludes(token);
  set_cmd->add_option("--ca-file", set->ca_file,
                      "https:// servers: the CA certificates (PEM) to trust");
  set_cmd->add_flag("--use", set->use, "Make it the current context");
  set_cmd->callback([&ctx, set] {
    ctx.exit_code = EditContexts([&](ContextsFile& f) {
      if (set->name.empty() || set->name.size() > 100) {
        return InvalidArgumentError("a context's name is 1 to 100 characters");
      }
      if (set->server.rfind("http://", 0) != 0 && set->server.rfind("https://", 0) != 0) {
        return InvalidArgumentError("--server must be an http:// or https:// URL");
      }
      f.contexts[set->name] = {set->server, set->token, set->token_file, set->ca_file};
      if (set->use || f.current.empty()) f.current = set->name;
      return Status::Ok();
    });
    if (ctx.exit_code == kExitOk) std::cout << "context " << set->name << " saved\n";
  });

  auto use_name = std::make_shared<std::string>();
  auto* use_cmd = cmd->add_subcommand("use", "Make a context the current one");
  use_cmd->add_option("name", *use_name, "The context's name")->required();
  use_cmd->callback([&ctx, use_name] {
    ctx.exit_code = EditContexts([&](ContextsFile& f) {
      if (!f.contexts.count(*use_name)) {
        return NotFoundError("no context named '" + *use_name + "' (cortex context ls)");
      }
      f.current = *use_name;
      return Status::Ok();
    });
    if (ctx.exit_code == kExitOk) std::cout << "now using context " << *use_name << "\n";
  });

  auto delete_name = std::make_shared<std::string>();
  auto* delete_cmd = cmd->add_subcommand("delete", "Remove a context");
  delete_cmd->add_option("name", *delete_name, "The context's name")->required();
  delete_cmd->callback([&ctx, delete_name] {
    ctx.exit_code = EditContexts([&](ContextsFile& f) {
      if (!f.contexts.erase(*delete_name)) {
        return NotFoundError("no context named '" + *delete_name + "'");
      }
      if (f.current == *delete_name) f.current.clear();
      return Status::Ok();
    });
  });

  auto* ls_cmd = cmd->add_subcommand("ls", "The contexts (never their keys); * marks the current");
  ls_cmd->alias("list");
  auto ls_format = std::make_shared<ListFormat>();
  AddListFormat(ls_cmd, *ls_format);
  ls_cmd->callback([&ctx, ls_format] {
    auto file = LoadContexts(ContextsPath());
    if (!file.ok()) {
      std::cerr << "error: " << file.status().message() << "\n";
      ctx.exit_code = kExitUsage;
      return;
    }
    Table t({"CURRENT", "NAME", "SERVER", "KEY"});
    Json list = Json::array();
    for (const auto& [name, e] : file->contexts) {
      std::string key = !e.token.empty()        ? "stored"
                        : !e.token_file.empty() ? "file " + e.token_file
                                                : "none";
      t.AddRow({name == file->current ? "*" : "", name, e.server, key}, name);
      list.push_back(
          {{"name", name}, {"current", name == file->current}, {"server", e.server}, {"key", key}});
    }
    PrintList(std::cout, std::cerr, Json{{"contexts", list}}, t, *ls_format, "contexts");
    ctx.exit_code = kExitOk;
  });

  auto* current_cmd = cmd->add_subcommand("current", "The server and context the verbs use now");
  current_cmd->callback([&ctx] {
    std::cout << "server: " << ctx.server << "\n"
              << "context: " << (ctx.context_name.empty() ? "-" : ctx.context_name) << "\n"
              << "key: " << (ctx.token.empty() ? "none" : "set") << "\n";
    ctx.exit_code = kExitOk;
  });
}

void AddAuditCommand(CLI::App& app, Context& ctx) {
  auto o = std::make_shared<AuditOptions>();
  auto* cmd = app.add_subcommand("audit", "The audit log of mutating calls, newest first (admin)");
  cmd->fallthrough();
  cmd->add_option("--actor", o->actor, "Only calls by this key id (key_...) or name");
  cmd->add_option("--path", o->path, "Only calls whose path starts with this");
  cmd->add_option("--since-ms", o->since_ms, "Only calls at or after this Unix time (ms)");
  cmd->add_option("--limit", o->limit, "At most this many (1 to 1000)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  AddListFormat(cmd, o->format, "table, json, yaml, or name (each call's request id)");
  cmd->callback([&ctx, o] {
    std::string query = "/audit?limit=" + std::to_string(o->limit);
    if (!o->actor.empty()) query += "&actor=" + PathSegment(o->actor);
    if (!o->path.empty()) query += "&path=" + PathSegment(o->path);
    if (o->since_ms >= 0) query += "&since_ms=" + std::to_string(o->since_ms);
    ApiClient api(ctx);
    auto j = api.GetJson(query);
    if (!j) {
      ctx.exit_code = api.exit_code();
      return;
    }
    const Json entries = j->contains("entries") ? (*j)["entries"] : Json::array();
    Table t({"TIME", "ACTOR", "METHOD", "PATH", "STATUS", "TARGET", "REQUEST"});
    for (const auto& e : entries) {
      t.AddRow(
          {FormatTimestampMs(e.value("at_ms", int64_t{0})), e.value("actor", ""),
           e.value("method", ""), Truncate(e.value("path", ""), 60),
           std::to_string(e.value("status", 0)), e.value("target", ""), e.value("request_id", "")},
          e.value("request_id", ""));
    }
    PrintList(std::cout, std::cerr, entries, t, o->format, "audited calls");
    ctx.exit_code = kExitOk;
  });
}

}  // namespace cortex::cli
