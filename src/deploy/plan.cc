#include "deploy/plan.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>

#include "common/json.h"
#include "exec/process.h"
#include "registry/variables.h"

namespace cortex::deploy {

namespace fs = std::filesystem;

namespace {

constexpr Ms kDefaultInterval{5000};
constexpr Ms kDefaultTimeout{2000};
constexpr int kDefaultRetries = 3;
constexpr Ms kDefaultStartPeriod{30000};
constexpr Ms kDefaultStopTimeout{10000};

Ms ToMs(const std::optional<registry::Duration>& d, Ms fallback) {
  if (!d) return fallback;
  return Ms(static_cast<int64_t>(d->seconds * 1000.0 + 0.5));
}

std::string Absolute(const std::string& base_dir, const std::string& path) {
  fs::path p(path);
  if (p.is_relative()) p = fs::path(base_dir) / p;
  std::string out = p.lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// argv[0] as an absolute path: a path (with '/') relative to `cwd`, else looked up in PATH.
Result<std::string> ResolveArgv0(const std::string& program, const std::string& cwd,
                                 const std::string& path_env, const std::string& field) {
  if (program.empty()) return InvalidArgumentError(field + ": the command is empty");
  if (program.find('/') != std::string::npos) {
    std::string abs = Absolute(cwd, program);
    std::error_code ec;
    if (!fs::exists(abs, ec)) return InvalidArgumentError(field + ": " + abs + ": no such file");
    if (::access(abs.c_str(), X_OK) != 0) {
      return InvalidArgumentError(field + ": " + abs + " is not executable");
    }
    return abs;
  }
  auto resolved = exec::ResolveProgram(program, path_env);
  if (!resolved.ok()) return InvalidArgumentError(field + ": " + resolved.status().message());
  return *resolved;
}

// The port of an http://host:port URL, if it has one.
std::optional<int> UrlPort(const std::string& url) {
  auto scheme = url.find("://");
  size_t host_start = scheme == std::string::npos ? 0 : scheme + 3;
  size_t host_end = url.find('/', host_start);
  std::string host = url.substr(
      host_start, host_end == std::string::npos ? std::string::npos : host_end - host_start);
  auto colon = host.rfind(':');
  if (colon == std::string::npos || host.find(']', colon) != std::string::npos) {
    if (url.rfind("https://", 0) == 0) return 443;
    if (url.rfind("http://", 0) == 0) return 80;
    return std::nullopt;
  }
  try {
    return std::stoi(host.substr(colon + 1));
  } catch (...) {
    return std::nullopt;
  }
}

Result<ProbeSpec> PlanProbe(const registry::HealthCheck* hc, const RelicPlan& plan,
                            const PlanContext& ctx) {
  ProbeSpec p;
  if (!hc) {
    // No declared check: a relic with a known port is healthy when the port accepts connections.
    if (plan.port && *plan.port > 0) {
      p.type = ProbeSpec::Type::kTcp;
      p.port = *plan.port;
    }
    p.interval = kDefaultInterval;
    p.timeout = kDefaultTimeout;
    p.retries = kDefaultRetries;
    p.start_period = kDefaultStartPeriod;
    return p;
  }
  p.interval = ToMs(hc->interval, kDefaultInterval);
  p.timeout = ToMs(hc->timeout, kDefaultTimeout);
  p.retries = static_cast<int>(hc->retries.value_or(kDefaultRetries));
  p.start_period = ToMs(hc->start_period, kDefaultStartPeriod);
  if (p.interval.count() <= 0) p.interval = Ms(100);
  if (p.timeout.count() <= 0) p.timeout = Ms(100);
  if (p.retries < 1) p.retries = 1;
  if (hc->enabled == false || hc->type == "none") return p;
  if (hc->type == "http" || hc->type == "api_request") {
    p.type = ProbeSpec::Type::kHttp;
    p.method = hc->method;
    p.expected_status = static_cast<int>(hc->expected_status);
    if (hc->url) {
      auto url = ResolveText(*hc->url, ctx);
      if (!url.ok()) return InvalidArgumentError("health_check.url: " + url.status().message());
      p.url = *url;
    } else {
      p.path = hc->endpoint.value_or("/health");
      if (p.path.empty() || p.path[0] != '/') p.path = "/" + p.path;
    }
  } else if (hc->type == "tcp" || hc->type == "tcp_socket") {
    p.type = ProbeSpec::Type::kTcp;
    if (hc->host) p.host = *hc->host;
    if (hc->port) {
      p.port = static_cast<int>(*hc->port);
    } else if (plan.port) {
      p.port = *plan.port;
    } else if (auto port = UrlPort(plan.base_url)) {
      p.port = *port;
    } else {
      return InvalidArgumentError(
          "health_check: a tcp check needs a port (health_check.port or deployment.port)");
    }
  } else {  // command | script
    p.type = ProbeSpec::Type::kCommand;
    if (hc->command.empty()) return InvalidArgumentError("health_check.command: empty");
    p.argv = hc->command;
    std::string cwd = plan.cwd.empty() ? plan.manifest_dir : plan.cwd;
    CORTEX_ASSIGN_OR_RETURN(p.argv[0],
                            ResolveArgv0(p.argv[0], cwd, ctx.path_env, "health_check.command"));
  }
  return p;
}

}  // namespace

std::string_view ProbeTypeName(ProbeSpec::Type type) {
  switch (type) {
    case ProbeSpec::Type::kNone:
      return "none";
    case ProbeSpec::Type::kHttp:
      return "http";
    case ProbeSpec::Type::kTcp:
      return "tcp";
    case ProbeSpec::Type::kCommand:
      return "command";
  }
  return "none";
}

std::string_view RestartPolicyName(RestartPolicy policy) {
  switch (policy) {
    case RestartPolicy::kAlways:
      return "always";
    case RestartPolicy::kOnFailure:
      return "on-failure";
    case RestartPolicy::kNever:
      return "never";
  }
  return "on-failure";
}

std::string VariablePrefix(std::string_view relic_name) {
  std::string out;
  for (char c : relic_name) {
    out += std::isalnum(static_cast<unsigned char>(c))
               ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
               : '_';
  }
  return out;
}

Result<std::string> ResolveText(const std::string& text, const PlanContext& context) {
  registry::VariableContext vc;
  vc.env = context.lookup;
  vc.now = std::chrono::system_clock::now();
  CORTEX_ASSIGN_OR_RETURN(registry::Resolution r, registry::ResolveString(text, vc));
  if (!r.unresolved.empty()) {
    return InvalidArgumentError("\"" + text + "\": " + r.unresolved.front() +
                                " is not set and has no default");
  }
  return r.value.is_string() ? r.value.get<std::string>() : DumpJson(r.value);
}

namespace {

std::optional<uint32_t> ParseId(std::string_view text) {
  if (text.empty() || text.size() > 9) return std::nullopt;
  uint32_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  return v;
}

}  // namespace

Result<std::optional<RunAs>> ResolveRunAs(const std::optional<std::string>& user,
                                          uint32_t server_uid, bool allow_root) {
  RunAs as;
  as.name = user.value_or("nobody");
  std::string_view text = as.name;
  std::string_view group;
  if (size_t colon = text.find(':'); colon != std::string_view::npos) {
    group = text.substr(colon + 1);
    text = text.substr(0, colon);
  }
  if (auto uid = ParseId(text)) {
    as.uid = *uid;
    as.gid = *uid;
    std::vector<char> buf(16384);
    struct passwd pw, *found = nullptr;
    if (::getpwuid_r(as.uid, &pw, buf.data(), buf.size(), &found) == 0 && found) {
      as.gid = pw.pw_gid;
    }
  } else {
    std::vector<char> buf(16384);
    struct passwd pw, *found = nullptr;
    std::string name(text);
    if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found) {
      return InvalidArgumentError("deployment.user: no user '" + name + "' on this machine");
    }
    as.uid = pw.pw_uid;
    as.gid = pw.pw_gid;
  }
  if (!group.empty()) {
    if (auto gid = ParseId(group)) {
      as.gid = *gid;
    } else {
      std::vector<char> buf(16384);
      struct group gr, *found = nullptr;
      std::string name(group);
      if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || !found) {
        return InvalidArgumentError("deployment.user: no group '" + name + "' on this machine");
      }
      as.gid = gr.gr_gid;
    }
  }
  if (server_uid != 0) {
    // Without root nothing can change account: the relic runs as the server.
    if (user && as.uid != server_uid) {
      return InvalidArgumentError("deployment.user: '" + *user +
                                  "' needs a server running as root (this one runs as uid " +
                                  std::to_string(server_uid) + ")");
    }
    return std::optional<RunAs>();
  }
  if (as.uid == 0) {
    if (!user) return InternalError("the default relic user resolved to root");
    if (!allow_root) {
      return InvalidArgumentError(
          "deployment.user: running a relic as root must also be allowed by the server's "
          "configuration (deploy.allow_root_relics: true)");
    }
    return std::optional<RunAs>();  // the server's own account
  }
  return std::optional<RunAs>(as);
}

Result<RelicPlan> PlanRelic(const registry::Manifest& manifest, const PlanContext& ctx) {
  const auto* spec = manifest.As<registry::RelicSpec>();
  if (!spec) return InvalidArgumentError(manifest.name() + " is not a Relic");
  RelicPlan plan;
  plan.name = manifest.name();
  plan.manifest_dir = fs::path(ctx.manifest_path).parent_path().string();
  plan.manifest_version = ctx.manifest_version;

  std::string type;
  std::optional<std::string> compose_file;
  if (spec->deployment) {
    type = spec->deployment->type;
    compose_file = spec->deployment->compose_file;
  } else if (spec->service) {
    type = spec->service->type;
    compose_file = spec->service->compose_file;
  } else {
    return InvalidArgumentError(
        "deployment: the relic has no deployment block, so there is nothing to run (declare "
        "deployment.type: process with a command, or docker-compose with a compose_file)");
  }
  if (type == "process" || type == "native") {
    plan.driver = "process";
  } else if (type == "docker-compose" || type == "compose" || (type == "docker" && compose_file)) {
    plan.driver = "compose";
  } else {
    return InvalidArgumentError(
        "deployment.type: Cortex deploys process and docker-compose "
        "relics; \"" +
        type + "\" is not supported yet");
  }

  const registry::RelicDeployment* d = spec->deployment ? &*spec->deployment : nullptr;
  if (d) {
    if (d->port && *d->port > 0) plan.port = static_cast<int>(*d->port);
    plan.replicas = static_cast<int>(d->replicas);
    plan.stop_timeout = ToMs(d->stop_timeout, kDefaultStopTimeout);
    if (d->restart) {
      if (*d->restart == "always" || *d->restart == "unless-stopped") {
        plan.restart = RestartPolicy::kAlways;
      } else if (*d->restart == "never") {
        plan.restart = RestartPolicy::kNever;
      }
    }
  }

  // Base URL and operations.
  if (spec->interface && spec->interface->base_url) {
    auto url = ResolveText(*spec->interface->base_url, ctx);
    if (!url.ok()) return InvalidArgumentError("interface.base_url: " + url.status().message());
    plan.base_url = *url;
  } else if (plan.port) {
    plan.base_url = "http://127.0.0.1:" + std::to_string(*plan.port);
  }
  while (!plan.base_url.empty() && plan.base_url.back() == '/') plan.base_url.pop_back();
  if (spec->interface) plan.endpoints = spec->interface->endpoints;
  for (const auto& [name, url] : spec->endpoints) {
    registry::RelicEndpoint e;
    e.name = name;
    e.path = url;
    plan.endpoints.push_back(std::move(e));
  }

  // The environment: a clean one, with what the manifest declares.
  plan.env = {"PATH=" + ctx.path_env, "LANG=C.UTF-8", "HOME=" + ctx.data_dir,
              "CORTEX_RELIC_NAME=" + plan.name, "CORTEX_RELIC_DATA=" + ctx.data_dir};
  if (plan.port) plan.env.push_back("PORT=" + std::to_string(*plan.port));
  auto add_vars = [&](const registry::OrderedMap<std::string>& vars,
                      const std::string& field) -> Status {
    for (const auto& [key, value] : vars) {
      auto v = ResolveText(value, ctx);
      if (!v.ok()) return InvalidArgumentError(field + "." + key + ": " + v.status().message());
      std::string prefix = key + "=";
      std::erase_if(plan.env, [&](const std::string& e) { return e.rfind(prefix, 0) == 0; });
      plan.env.push_back(prefix + *v);
    }
    return Status::Ok();
  };
  CORTEX_RETURN_IF_ERROR(add_vars(spec->environment.variables, "environment.variables"));
  if (d) CORTEX_RETURN_IF_ERROR(add_vars(d->env, "deployment.env"));

  if (plan.driver == "process") {
    if (!d || !d->command || d->command->args.empty()) {
      return InvalidArgumentError("deployment.command: a process relic needs a command to run");
    }
    plan.cwd = Absolute(plan.manifest_dir, d->cwd.value_or("."));
    std::error_code ec;
    if (!fs::is_directory(plan.cwd, ec)) {
      return InvalidArgumentError("deployment.cwd: " + plan.cwd + " is not a folder");
    }
    plan.argv = d->command->args;
    CORTEX_ASSIGN_OR_RETURN(
        plan.argv[0], ResolveArgv0(plan.argv[0], plan.cwd, ctx.path_env, "deployment.command"));
    CORTEX_ASSIGN_OR_RETURN(plan.run_as, ResolveRunAs(d->user, ctx.server_uid, ctx.allow_root));
    plan.sandbox = d->sandbox;
  } else {
    if (d && d->sandbox) {
      return InvalidArgumentError(
          "deployment.sandbox: only process relics run in Cortex's sandbox (a compose relic's "
          "containers are isolated by Docker)");
    }
    std::string file = Absolute(plan.manifest_dir, compose_file.value_or("docker-compose.yml"));
    std::error_code ec;
    if (!fs::is_regular_file(file, ec)) {
      return InvalidArgumentError("deployment.compose_file: " + file + ": no such file");
    }
    plan.compose_file = file;
    plan.cwd = plan.manifest_dir;
  }

  const registry::HealthCheck* hc = spec->health_check ? &*spec->health_check : nullptr;
  if (!hc && spec->service && spec->service->health_check) hc = &*spec->service->health_check;
  auto probe = PlanProbe(hc, plan, ctx);
  if (!probe.ok()) {
    const std::string& m = probe.status().message();
    return InvalidArgumentError(m.rfind("health_check", 0) == 0 ? m : "health_check: " + m);
  }
  plan.health = std::move(*probe);
  if (plan.health.type == ProbeSpec::Type::kHttp && plan.health.url.empty() &&
      plan.base_url.empty() && plan.driver == "process") {
    return InvalidArgumentError(
        "health_check: an http check with only an endpoint needs a base URL (interface.base_url "
        "or deployment.port)");
  }
  return plan;
}

}  // namespace cortex::deploy
