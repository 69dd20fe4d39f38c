// cortex deploy relic NAME [--wait]: deploy a relic and follow it to healthy (or failed).
// cortex relics ls|status|logs|stop|start|restart|rm|call: deployed relics (GET /relics...).
// cortex deploy monument NAME [--wait], cortex monuments ls|status|health|logs|stop|rm.
// cortex scale RELIC REPLICAS [--service S] [--monument M]: scale a compose relic's service.
#include <CLI/CLI.hpp>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "cli/client.h"
#include "cli/verbs.h"
#include "common/json.h"

namespace cortex::cli {

namespace {

constexpr int kLabelWidth = 13;
constexpr auto kPollInterval = std::chrono::milliseconds(200);
using Clock = std::chrono::steady_clock;

std::string Text(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string RelicPath(const std::string& name) { return "/relics/" + PathSegment(name); }

std::string HealthLine(const Json& relic) {
  const Json& h = relic.contains("health") ? relic["health"] : Json::object();
  std::string type = Text(h, "type"), status = Text(h, "status");
  if (type.empty() || type == "none") return "no health check";
  std::string line = type + " check " + (status.empty() ? "unknown" : status);
  if (status == "failing" && !Text(h, "last_error").empty()) line += ": " + Text(h, "last_error");
  return line;
}

void DescribeRelic(std::ostream& out, const Json& r) {
  PrintField(out, "Name", Text(r, "name"), kLabelWidth);
  PrintField(out, "Driver", Text(r, "driver"), kLabelWidth);
  PrintField(out, "State", Text(r, "state") + " (desired: " + Text(r, "desired") + ")",
             kLabelWidth);
  if (!Text(r, "error").empty()) PrintField(out, "Error", Text(r, "error"), kLabelWidth);
  PrintField(out, "Health", HealthLine(r), kLabelWidth);
  if (r.contains("pid")) PrintField(out, "PID", Text(r, "pid"), kLabelWidth);
  if (r.contains("project")) PrintField(out, "Project", Text(r, "project"), kLabelWidth);
  PrintField(out, "Restarts", Text(r, "restarts") + " (policy: " + Text(r, "restart_policy") + ")",
             kLabelWidth);
  if (!Text(r, "base_url").empty()) PrintField(out, "URL", Text(r, "base_url"), kLabelWidth);
  if (r.contains("endpoints") && !r["endpoints"].empty()) {
    std::string ops;
    for (const auto& e : r["endpoints"]) ops += (ops.empty() ? "" : ", ") + e.get<std::string>();
    PrintField(out, "Operations", ops, kLabelWidth);
  }
  if (!Text(r, "owner").empty()) PrintField(out, "Monument", Text(r, "owner"), kLabelWidth);
  int64_t started = r.value("started_ms", int64_t{0});
  PrintField(out, "Started", FormatTimestampMs(started), kLabelWidth);
}

// Polls the relic's status, printing one line per change of state or health, until it settles
// (healthy, failed, stopped) or `timeout`. Exit 0 when healthy.
int FollowDeploy(ApiClient& api, const std::string& name, std::chrono::milliseconds timeout) {
  const auto start = Clock::now();
  std::string last;
  for (;;) {
    auto r = api.GetJson(RelicPath(name) + "/status");
    if (!r) return api.exit_code();
    std::string state = Text(*r, "state");
    std::string line = state + "  " + HealthLine(*r);
    if (!Text(*r, "error").empty() && state != "healthy") line += "  (" + Text(*r, "error") + ")";
    if (line != last) {
      double secs = std::chrono::duration<double>(Clock::now() - start).count();
      std::ostringstream t;
      t << std::fixed << std::setprecision(1) << secs << "s";
      std::cout << std::setw(7) << t.str() << "  " << name << "  " << line << std::endl;
      last = line;
    }
    if (state == "healthy") return kExitOk;
    if (state == "failed" || state == "stopped" || state == "unhealthy") {
      if (state != "healthy") return kExitApiError;
    }
    if (Clock::now() - start > timeout) {
      std::cerr << "error: " << name << " is still " << state << " after "
                << std::chrono::duration_cast<std::chrono::seconds>(timeout).count() << " s\n";
      return kExitApiError;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

int List(ApiClient& api, const ListFormat& format, std::ostream& out, std::ostream& err) {
  auto r = api.GetJson("/relics");
  if (!r) return api.exit_code();
  Table t({"NAME", "DRIVER", "STATE", "HEALTH", "RESTARTS", "URL", "MONUMENT"});
  for (const auto& rel : (*r)["relics"]) {
    t.AddRow({Text(rel, "name"), Text(rel, "driver"), Text(rel, "state"),
              Truncate(HealthLine(rel), 40), Text(rel, "restarts"), Text(rel, "base_url"),
              Text(rel, "owner")});
  }
  PrintList(out, err, *r, t, format, "deployed relics");
  return kExitOk;
}

int Logs(const Context& ctx, const std::string& name, size_t tail, bool follow,
         const std::string& service) {
  ApiClient api(ctx);
  std::string query = QueryString({{"tail", std::to_string(tail)}, {"service", service}});
  if (follow) {
    bool ok = api.Stream(RelicPath(name) + "/logs" + query, [](const http::SseEvent& e) {
      Json j = Json::parse(e.data, nullptr, false);
      if (e.event == "error") {
        std::cerr << "error: " << (j.is_object() ? Text(j, "message") : e.data) << "\n";
        return false;
      }
      if (!j.is_object()) return true;
      std::string svc = Text(j, "service");
      (Text(j, "stream") == "stderr" ? std::cerr : std::cout)
          << (svc.empty() ? "" : svc + " | ") << Text(j, "line") << std::endl;
      return true;
    });
    return ok ? kExitOk : api.exit_code();
  }
  auto r = api.GetJson(RelicPath(name) + "/logs" + query);
  if (!r) return api.exit_code();
  for (const auto& l : (*r)["lines"]) {
    std::string svc = Text(l, "service");
    std::cout << (svc.empty() ? "" : svc + " | ") << Text(l, "line") << "\n";
  }
  return kExitOk;
}

std::string MonumentPath(const std::string& name) { return "/monuments/" + PathSegment(name); }

// Polls the monument, printing one line per component whose state changes (elapsed, stage,
// component, state, health), until the deployment ends. Exit 0 when it is healthy.
int FollowMonument(ApiClient& api, const std::string& name, std::chrono::milliseconds timeout) {
  const auto start = Clock::now();
  std::map<std::string, std::string> last;
  for (;;) {
    auto m = api.GetJson(MonumentPath(name));
    if (!m) return api.exit_code();
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::ostringstream t;
    t << std::fixed << std::setprecision(1) << secs << "s";
    for (const auto& c : (*m)["components"]) {
      std::string key = Text(c, "kind") + "/" + Text(c, "name");
      std::string line = Text(c, "state");
      if (c.contains("health")) line += "  " + HealthLine(c);
      if (!Text(c, "error").empty() && Text(c, "state") != "healthy") {
        line += "  (" + Text(c, "error") + ")";
      }
      if (last[key] == line) continue;
      last[key] = line;
      std::string stage = c.contains("stage") ? "[" + Text(c, "stage") + "] " : "    ";
      std::cout << std::setw(7) << t.str() << "  " << stage << key << "  " << line << std::endl;
    }
    std::string state = Text(*m, "state");
    if (state == "healthy") {
      std::cout << name << ": deployed\n";
      return kExitOk;
    }
    if (state == "failed" || state == "stopped") {
      std::cerr << "error: " << name << " " << state
                << (Text(*m, "error").empty() ? "" : ": " + Text(*m, "error")) << "\n";
      return kExitApiError;
    }
    if (Clock::now() - start > timeout) {
      std::cerr << "error: " << name << " is still " << state << "\n";
      return kExitApiError;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

// A --timeout the option's check has accepted.
std::chrono::milliseconds Timeout(const std::string& text) {
  return std::chrono::milliseconds(ParseTimeoutMs(text).value_or(kMaxTimeoutMs));
}

}  // namespace

void AddDeployMonumentCommand(CLI::App* deploy, Context& ctx);

void AddDeployCommand(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("deploy", "Deploy a relic (or a monument) from the registry");
  cmd->require_subcommand(1);
  cmd->fallthrough();

  struct Options {
    std::string name;
    bool wait = false, no_start = false;
    std::string timeout = "2m";
  };
  auto o = std::make_shared<Options>();
  auto* relic = cmd->add_subcommand("relic", "Deploy a relic: start it and keep it running");
  relic->fallthrough();
  relic->add_option("name", o->name, "The relic's name")->required();
  relic->add_flag("-w,--wait", o->wait,
                  "Follow it until it is healthy (exit 0) or failed (exit 1), one line per change");
  relic->add_flag("--no-start", o->no_start, "Record it without starting it");
  AddTimeoutOption(relic, o->timeout, "With --wait: give up after this long");
  AddDeployMonumentCommand(cmd, ctx);
  relic->callback([&ctx, o] {
    ApiClient api(ctx);
    Json body = {{"name", o->name}, {"auto_start", !o->no_start}};
    auto r = api.PostJson("/deploy/relic", DumpJson(body));
    if (!r) {
      ctx.exit_code = api.exit_code();
      return;
    }
    if (!o->wait || o->no_start) {
      std::cout << o->name << ": " << Text(*r, "state") << "\n";
      ctx.exit_code = kExitOk;
      return;
    }
    ctx.exit_code = FollowDeploy(api, o->name, Timeout(o->timeout));
    if (ctx.exit_code != kExitOk) {
      if (auto s = api.GetJson(RelicPath(o->name) + "/status"); s && !Text(*s, "error").empty()) {
        std::cerr << "error: " << o->name << " " << Text(*s, "state") << ": " << Text(*s, "error")
                  << "\n";
      }
    }
  });
}

void AddDeployMonumentCommand(CLI::App* deploy, Context& ctx) {
  struct Options {
    std::string name, environment = "default";
    bool wait = false;
    std::string timeout = "10m";
  };
  auto o = std::make_shared<Options>();
  auto* cmd = deploy->add_subcommand(
      "monument", "Deploy a monument: its relics stage by stage, then its workflows and agents");
  cmd->fallthrough();
  cmd->add_option("name", o->name, "The monument's name")->required();
  cmd->add_option("-e,--env", o->environment, "The environment (recorded with the deployment)")
      ->capture_default_str();
  cmd->add_flag("-w,--wait", o->wait,
                "Follow it, one line per component change, until it is deployed (exit 0) or "
                "failed and rolled back (exit 1)");
  AddTimeoutOption(cmd, o->timeout, "With --wait: give up after this long");
  cmd->callback([&ctx, o] {
    ApiClient api(ctx);
    Json body = {{"name", o->name}, {"environment", o->environment}};
    auto r = api.PostJson("/deploy/monument", DumpJson(body));
    if (!r) {
      ctx.exit_code = api.exit_code();
      return;
    }
    if (!o->wait) {
      std::cout << o->name << ": " << Text(*r, "state") << "\n";
      ctx.exit_code = kExitOk;
      return;
    }
    ctx.exit_code = FollowMonument(api, o->name, Timeout(o->timeout));
  });
}

void AddMonumentsCommand(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand(
      "monuments", "Deployed monuments: list, show, health, logs, stop, remove (default: ls)");
  cmd->fallthrough();
  auto list_format = std::make_shared<ListFormat>();
  auto list_into = [&ctx, list_format](std::ostream& out, std::ostream& err) {
    ApiClient api(ctx);
    auto r = api.GetJson("/monuments");
    if (!r) return api.exit_code();
    Table t({"NAME", "ENVIRONMENT", "STATE", "RELICS", "ERROR"});
    for (const auto& m : (*r)["monuments"]) {
      int relics = 0, healthy = 0;
      for (const auto& c : m["components"]) {
        if (Text(c, "kind") != "relic") continue;
        ++relics;
        healthy += Text(c, "state") == "healthy" ? 1 : 0;
      }
      t.AddRow({Text(m, "name"), Text(m, "environment"), Text(m, "state"),
                std::to_string(healthy) + "/" + std::to_string(relics) + " healthy",
                Truncate(Text(m, "error"), 60)});
    }
    PrintList(out, err, *r, t, *list_format, "deployed monuments");
    return kExitOk;
  };
  auto list = [&ctx, list_format, list_into] { ctx.exit_code = RunList(*list_format, list_into); };
  auto* ls = cmd->add_subcommand("ls", "List deployed monuments");
  ls->alias("list");
  AddListFormat(ls, *list_format);
  AddWatchOptions(ls, *list_format);
  ls->callback(list);

  struct Named {
    const char* name;
    const char* help;
  };
  for (const Named& n : {Named{"status", "Show a monument and each component's state"},
                         Named{"health", "A monument's aggregate health (exit 1 unless healthy)"},
                         Named{"stop", "Stop the relics it deployed (newest stage first)"},
                         Named{"rm", "Stop and forget the monument and the relics it deployed"}}) {
    auto name = std::make_shared<std::string>();
    auto* sub = cmd->add_subcommand(n.name, n.help);
    sub->fallthrough();
    sub->add_option("name", *name, "The monument's name")->required();
    std::string verb = n.name;
    sub->callback([&ctx, name, verb] {
      ApiClient api(ctx);
      std::optional<Json> r;
      if (verb == "status") r = api.GetJson(MonumentPath(*name));
      if (verb == "health") {
        auto resp = api.Get(MonumentPath(*name) + "/health");
        // 503 (not healthy) still carries the health: show it.
        if (resp) r = Json::parse(resp->body, nullptr, false);
      }
      if (verb == "stop") r = api.PostJson(MonumentPath(*name) + "/stop", "{}");
      if (verb == "rm") r = api.DeleteJson(MonumentPath(*name));
      if (!r || r->is_discarded()) {
        ctx.exit_code = api.exit_code() == kExitOk ? kExitApiError : api.exit_code();
        return;
      }
      if (verb == "rm") {
        std::cout << *name << ": deleted\n";
      } else if (verb == "health") {
        std::cout << *name << ": " << Text(*r, "status") << " (" << Text(*r, "healthy_relics")
                  << "/" << Text(*r, "relics") << " relics healthy)\n";
        for (const auto& c : (*r)["components"]) {
          std::cout << "  " << Text(c, "kind") << "/" << Text(c, "name") << "  " << Text(c, "state")
                    << (Text(c, "error").empty() ? "" : "  (" + Text(c, "error") + ")") << "\n";
        }
        ctx.exit_code = Text(*r, "status") == "healthy" ? kExitOk : kExitApiError;
        return;
      } else {
        PrintField(std::cout, "Name", Text(*r, "name"), kLabelWidth);
        PrintField(std::cout, "Environment", Text(*r, "environment"), kLabelWidth);
        PrintField(std::cout, "State", Text(*r, "state"), kLabelWidth);
        if (!Text(*r, "error").empty())
          PrintField(std::cout, "Error", Text(*r, "error"), kLabelWidth);
        Table t({"STAGE", "COMPONENT", "STATE", "DETAIL"});
        for (const auto& c : (*r)["components"]) {
          std::string detail = c.contains("health") ? HealthLine(c) : "";
          if (!Text(c, "error").empty()) detail = Text(c, "error");
          t.AddRow({Text(c, "stage"), Text(c, "kind") + "/" + Text(c, "name"), Text(c, "state"),
                    Truncate(detail, 60)});
        }
        std::cout << "\n";
        t.Print(std::cout);
      }
      ctx.exit_code = kExitOk;
    });
  }

  struct LogOptions {
    std::string name, service;
    size_t tail = 100;
  };
  auto lo = std::make_shared<LogOptions>();
  auto* logs = cmd->add_subcommand("logs", "Print the output of a monument's relics");
  logs->fallthrough();
  logs->add_option("name", lo->name, "The monument's name")->required();
  logs->add_option("--service", lo->service, "Only this relic (or relic/compose-service)");
  logs->add_option("-n,--tail", lo->tail, "How many of the last lines per relic")
      ->capture_default_str();
  logs->callback([&ctx, lo] {
    ApiClient api(ctx);
    auto r =
        api.GetJson(MonumentPath(lo->name) + "/logs" +
                    QueryString({{"tail", std::to_string(lo->tail)}, {"service", lo->service}}));
    if (!r) {
      ctx.exit_code = api.exit_code();
      return;
    }
    for (const auto& l : (*r)["lines"]) {
      std::cout << Text(l, "service") << " | " << Text(l, "line") << "\n";
    }
    ctx.exit_code = kExitOk;
  });
  cmd->callback([cmd, list] {
    if (cmd->get_subcommands().empty()) list();
  });
}

void AddRelicsCommand(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand(
      "relics",
      "Deployed relics: list, show, logs, stop, start, restart, remove, call (default: ls)");
  cmd->fallthrough();

  auto ls_format = std::make_shared<ListFormat>();
  auto* ls = cmd->add_subcommand("ls", "List deployed relics");
  ls->alias("list");
  ls->fallthrough();
  AddListFormat(ls, *ls_format);
  AddWatchOptions(ls, *ls_format);
  ls->callback([&ctx, ls_format] {
    ApiClient api(ctx);
    ctx.exit_code = RunList(*ls_format, [&](std::ostream& out, std::ostream& err) {
      return List(api, *ls_format, out, err);
    });
  });

  auto st_name = std::make_shared<std::string>();
  auto st_output = std::make_shared<std::string>("text");
  auto* st = cmd->add_subcommand("status", "Show one relic: state, health, pid, restarts, URL");
  st->fallthrough();
  st->add_option("name", *st_name, "The relic's name")->required();
  AddOutputOption(st, *st_output, {"text", "json", "yaml"}, "text, json or yaml");
  st->callback([&ctx, st_name, st_output] {
    ApiClient api(ctx);
    auto r = api.GetJson(RelicPath(*st_name) + "/status");
    if (!r) {
      ctx.exit_code = api.exit_code();
      return;
    }
    if (*st_output == "text") {
      DescribeRelic(std::cout, *r);
    } else {
      std::cout << Render(*r, *st_output);
    }
    ctx.exit_code = kExitOk;
  });

  struct LogOptions {
    std::string name, service;
    size_t tail = 100;
    bool follow = false;
  };
  auto lo = std::make_shared<LogOptions>();
  auto* logs = cmd->add_subcommand("logs", "Print a relic's output (its last lines)");
  logs->fallthrough();
  logs->add_option("name", lo->name, "The relic's name")->required();
  logs->add_option("-n,--tail", lo->tail, "How many of the last lines")->capture_default_str();
  logs->add_option("--service", lo->service, "Only this compose service");
  logs->add_flag("-f,--follow", lo->follow, "Keep printing new lines as they are written");
  logs->callback(
      [&ctx, lo] { ctx.exit_code = Logs(ctx, lo->name, lo->tail, lo->follow, lo->service); });

  struct Control {
    const char* name;
    const char* help;
    const char* path;
  };
  for (const Control& c :
       {Control{"stop", "Stop a relic (it stays deployed: start brings it back)", "/stop"},
        Control{"start", "Start a stopped or failed relic and wait until it is healthy", "/start"},
        Control{"restart", "Restart a relic and wait until it is healthy", "/restart"}}) {
    auto name = std::make_shared<std::string>();
    auto* sub = cmd->add_subcommand(c.name, c.help);
    sub->fallthrough();
    sub->add_option("name", *name, "The relic's name")->required();
    sub->callback([&ctx, name, c] {
      ApiClient api(ctx);
      auto r = api.PostJson(RelicPath(*name) + c.path, "{}");
      if (!r) {
        ctx.exit_code = api.exit_code();
        return;
      }
      if (std::string_view(c.name) == "stop") {
        std::cout << *name << ": " << Text(*r, "state") << "\n";
        ctx.exit_code = Text(*r, "state") == "stopped" ? kExitOk : kExitApiError;
        return;
      }
      ctx.exit_code = FollowDeploy(api, *name, std::chrono::seconds(120));
    });
  }

  auto rm_name = std::make_shared<std::string>();
  auto* rm = cmd->add_subcommand("rm", "Stop a relic and forget it");
  rm->alias("delete");
  rm->fallthrough();
  rm->add_option("name", *rm_name, "The relic's name")->required();
  rm->callback([&ctx, rm_name] {
    ApiClient api(ctx);
    auto r = api.DeleteJson(RelicPath(*rm_name));
    if (!r) {
      ctx.exit_code = api.exit_code();
      return;
    }
    std::cout << *rm_name << ": deleted\n";
    ctx.exit_code = kExitOk;
  });

  struct CallOptions {
    std::string name, operation;
    std::vector<std::string> params;
  };
  auto co = std::make_shared<CallOptions>();
  auto* call = cmd->add_subcommand("call", "Invoke one of a relic's operations");
  call->fallthrough();
  call->add_option("name", co->name, "The relic's name")->required();
  call->add_option("operation", co->operation, "The operation's name")->required();
  call->add_option("-p,--param", co->params,
                   "A parameter key=value (a value that parses as JSON is sent as JSON)");
  call->callback([&ctx, co] {
    Json params = Json::object();
    for (const auto& kv : co->params) {
      auto eq = kv.find('=');
      if (eq == std::string::npos) {
        std::cerr << "error: --param " << kv << ": expected key=value\n";
        ctx.exit_code = kExitUsage;
        return;
      }
      params[kv.substr(0, eq)] = ParseJsonOrString(kv.substr(eq + 1));
    }
    ApiClient api(ctx);
    auto r =
        api.PostJson(RelicPath(co->name) + "/call/" + PathSegment(co->operation), DumpJson(params));
    if (!r) {
      ctx.exit_code = api.exit_code();
      return;
    }
    std::cout << ToPrettyJson((*r)["result"]);
    ctx.exit_code = kExitOk;
  });

  cmd->callback([&ctx, cmd] {
    if (!cmd->get_subcommands().empty()) return;
    ApiClient api(ctx);
    ctx.exit_code = List(api, ListFormat{}, std::cout, std::cerr);
  });
}

void AddScaleCommand(CLI::App& app, Context& ctx) {
  struct Options {
    std::string relic, service, monument;
    int replicas = 1;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("scale", "Scale a compose relic's service to N containers");
  cmd->add_option("--monument", o->monument,
                  "Scale the relic as a component of this monument (POST /monuments/M/scale)");
  cmd->add_option("relic", o->relic, "The relic's name")->required();
  cmd->add_option("replicas", o->replicas, "How many containers")
      ->required()
      ->check(CLI::Range(0, 1000));
  cmd->add_option("--service", o->service,
                  "The compose service (default: the relic's only service)");
  cmd->callback([&ctx, o] {
    ApiClient api(ctx);
    Json body = {{"replicas", o->replicas}};
    if (!o->service.empty()) body["service"] = o->service;
    std::string path = RelicPath(o->relic) + "/scale";
    if (!o->monument.empty()) {
      body["service"] = o->relic + (o->service.empty() ? "" : "/" + o->service);
      path = MonumentPath(o->monument) + "/scale";
    }
    auto r = api.PostJson(path, DumpJson(body));
    if (!r) {
      ctx.exit_code = api.exit_code();
      return;
    }
    std::cout << o->relic << (o->service.empty() ? "" : "/" + o->service) << ": scaled to "
              << o->replicas << "\n";
    ctx.exit_code = kExitOk;
  });
}

}  // namespace cortex::cli
