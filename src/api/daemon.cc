#include "api/daemon.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "api/agent_actions.h"
#include "api/agent_routes.h"
#include "api/auth.h"
#include "api/backup.h"
#include "api/deploy_routes.h"
#include "api/execute_routes.h"
#include "api/mcp_routes.h"
#include "api/mcp_tools.h"
#include "api/metrics_routes.h"
#include "api/openapi.h"
#include "api/registry_routes.h"
#include "api/relic_caller.h"
#include "api/request_guard.h"
#include "api/scopes.h"
#include "api/tracing.h"
#include "api/workflow_routes.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mutex.h"
#include "cortex/version.h"
#include "deploy/compose_driver.h"
#include "deploy/discovery_redis.h"
#include "deploy/process_driver.h"
#include "exec/executor.h"
#include "exec/sandbox.h"
#include "registry/registry.h"
#include "store/store.h"
#include "workflow/engine.h"
#include "workflow/executor_dispatcher.h"
#include "workflow/scheduler.h"

namespace cortex::api {

namespace {

void AddHealthRoutes(http::Server& server, const char* service) {
  server.Handle("GET", "/healthz", [](const http::Request&) {
    return http::Response::Json(200, R"({"status":"ok"})");
  });
  server.Handle("GET", "/health", [service](const http::Request&) {
    nlohmann::ordered_json j = {{"status", "healthy"}, {"service", service}, {"version", kVersion}};
    return http::Response::Json(200, DumpJson(j));
  });
}

bool IsLoopbackHost(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// Whether calls need a key: auth.mode, and every address the server listens on. Refuses to
// start open on a network, and on with no key to call it with.
Result<AuthOptions> DecideAuth(const Settings& s, store::Store& state) {
  std::vector<std::string> open;
  for (const auto& listen : {std::optional<std::string>(s.listen), s.services.registry,
                             s.services.executor, s.services.deployer, s.services.workflows}) {
    if (!listen) continue;
    std::string host;
    int port = 0;
    if (ParseHostPort(*listen, &host, &port).ok() && !IsLoopbackHost(host)) open.push_back(*listen);
  }
  AuthOptions o;
  o.enabled = s.auth.mode == "on" || (s.auth.mode == "auto" && !open.empty());
  o.rate_per_second = s.auth.rate_limit;
  o.burst = s.auth.rate_burst;
  if (!s.auth.jwt.issuer.empty()) {
    const auto& js = s.auth.jwt;
    JwtOptions jo{js.issuer, js.audience, js.role_claim, js.scope_claim, js.leeway_seconds};
    if (js.jwks_file.empty() == js.jwks_url.empty()) {
      return FailedPreconditionError(
          "auth.jwt: give the provider's keys as jwks_file or as jwks_url (one of them)");
    }
    Result<std::shared_ptr<JwtKeys>> keys = InvalidArgumentError("no keys");
    if (!js.jwks_url.empty()) {
      keys = JwtKeys::FromUrl(jo, js.jwks_url, std::chrono::seconds(js.jwks_refresh_seconds),
                              js.jwks_ca_file);
    } else {
      std::error_code ec;
      const auto size = std::filesystem::file_size(js.jwks_file, ec);
      std::ifstream in(js.jwks_file, std::ios::binary);
      if (ec || !in) {
        return FailedPreconditionError("auth.jwt.jwks_file: cannot read '" + js.jwks_file + "'");
      }
      if (size > (1u << 20)) {
        return FailedPreconditionError("auth.jwt.jwks_file: '" + js.jwks_file +
                                       "' is larger than 1 MiB; not a key set");
      }
      std::string text(static_cast<size_t>(size), '\0');
      in.read(text.data(), static_cast<std::streamsize>(text.size()));
      text.resize(static_cast<size_t>(in.gcount()));
      keys = JwtKeys::FromDocument(jo, text);
    }
    if (!keys.ok()) return FailedPreconditionError("auth.jwt: " + keys.status().message());
    o.jwt = std::move(keys).value();
  }
  if (!o.enabled && !open.empty() && !s.auth.allow_open) {
    return FailedPreconditionError(
        "auth.mode is off and the server listens on " + open.front() +
        ": anyone who reaches it could run code. Listen on 127.0.0.1, turn authentication on, "
        "or set auth.allow_open: true for a network protected by other means");
  }
  if (o.enabled) {
    CORTEX_ASSIGN_OR_RETURN(auto keys, state.ListApiKeys());
    bool usable = o.jwt != nullptr ||
                  std::any_of(keys.begin(), keys.end(),
                              [](const store::ApiKeyRecord& k) { return k.revoked_ms == 0; });
    if (!usable) {
      return FailedPreconditionError(
          "authentication is on" +
          (open.empty() ? std::string(" (auth.mode: on)")
                        : " (the server listens on " + open.front() + ")") +
          " but there is no API key to call it with: create one with `cortex auth create-key "
          "admin --role admin --data-dir " +
          s.data_dir + "` and send it as CORTEX_TOKEN");
    }
  }
  return o;
}

// Process relics with deployment.sandbox run in the tools' sandbox as a service: they keep the
// host's network (they serve a port on loopback) and outlive the server, their manifest folder is
// read-only and their data folder the one writable place; the rest of Cortex's data folder does
// not exist for them.
deploy::RelicSandbox MakeRelicSandbox(exec::SandboxInfo info, std::string data_dir) {
  return [info = std::move(info), data_dir = std::move(data_dir)](
             const deploy::RelicPlan& plan,
             const std::string& relic_data) -> Result<deploy::SandboxedCommand> {
    exec::SandboxPolicy policy;
    policy.service = true;
    policy.network = true;
    policy.host_network = true;
    policy.tool_dir = plan.cwd;
    policy.rw_binds = {relic_data};
    policy.hidden_paths = {data_dir};
    policy.hostname = plan.name;
    if (plan.run_as) policy.run_as = std::make_pair(plan.run_as->uid, plan.run_as->gid);
    exec::ProcessSpec inner;
    inner.argv = plan.argv;
    inner.env = plan.env;
    auto wrapped = exec::WrapInSandbox(inner, policy, info);
    if (!wrapped.ok()) {
      return Status(wrapped.status().code(),
                    "deployment.sandbox: " + plan.name + ": " + wrapped.status().message());
    }
    return deploy::SandboxedCommand{std::move(wrapped->argv), std::move(wrapped->env)};
  };
}

Result<std::unique_ptr<http::Server>> StartServer(
    const std::string& listen, const Settings& s, const char* service, AccessControl& access,
    ApiMetrics& api_metrics, const trace::Tracer& tracer,
    const std::function<void(http::Server&)>& add_routes) {
  http::ServerOptions opts;
  CORTEX_RETURN_IF_ERROR(ParseHostPort(listen, &opts.host, &opts.port));
  opts.threads = static_cast<int>(s.http.threads);
  opts.keep_alive_timeout = std::chrono::seconds(s.http.keep_alive_seconds);
  opts.max_body_bytes = static_cast<size_t>(s.http.max_body_bytes);
  opts.read_timeout = std::chrono::seconds(s.http.read_timeout_seconds);
  opts.max_header_bytes = static_cast<size_t>(s.http.max_header_bytes);
  opts.max_header_count = static_cast<size_t>(s.http.max_header_count);
  opts.max_connections = static_cast<int>(s.http.max_connections);
  opts.max_streams = static_cast<int>(s.http.max_streams);
  opts.tls_cert_file = s.http.tls_cert;
  opts.tls_key_file = s.http.tls_key;
  auto server = std::make_unique<http::Server>(opts);
  // The request guard first, then who is calling and whether their role allows the route; every
  // request, refused or not, is counted once answered.
  server->SetFilter(api_metrics.Wrap(TraceRequests(
      tracer, access.MakeFilter(MakeRequestGuard({.listen_host = opts.host,
                                                  .allowed_hosts = s.http.allowed_hosts,
                                                  .allowed_origins = s.http.allowed_origins})))));
  AddHealthRoutes(*server, service);
  add_routes(*server);
  AddOpenApiRoute(*server);  // describes the routes of this port
  CORTEX_RETURN_IF_ERROR(server->Start());
  return server;
}

// Everything `cortex serve` runs, as members in dependency order: each may use those declared
// before it. Teardown is structural, in two passes, on every way out of RunServe:
//  1. stop: the steps recorded by Started(), in the reverse order of the starts. The servers
//     start last, so every port stops taking requests before anything a handler uses stops.
//  2. destroy: members in reverse declaration order, once nothing runs any more.
// An object whose destructor is its stop (the executor: it cancels tools and joins its workers,
// whose completions reach the engine) is reset at its place in pass 1, while what it calls into
// is still alive.
struct Services {
  std::unique_ptr<metrics::Registry> metrics = std::make_unique<metrics::Registry>();
  std::unique_ptr<OtlpExporter> otlp;  // outlives the tracer that feeds it
  std::unique_ptr<trace::Tracer> tracer = std::make_unique<trace::Tracer>();
  std::unique_ptr<store::Store> state;
  std::unique_ptr<AccessControl> access;
  std::unique_ptr<exec::ProcessRunner> runner;
  std::unique_ptr<mcp::ClientPool> mcp_clients;  // other MCP servers: stopped after the executor
  std::unique_ptr<McpTools> mcp_tools;
  std::unique_ptr<exec::Executor> executor;
  std::unique_ptr<deploy::RedisDiscovery> redis;
  std::unique_ptr<deploy::Deployer> deployer;
  std::unique_ptr<deploy::Monuments> monuments;
  std::unique_ptr<RelicCaller> relic_caller;
  std::unique_ptr<workflow::ExecutorDispatcher> dispatcher;
  std::unique_ptr<workflow::Engine> engine;
  std::unique_ptr<workflow::Scheduler> scheduler;
  std::unique_ptr<llm::Gateway> gateway;
  std::unique_ptr<AgentActions> agent_actions;         // waits for the workflows it awaits
  std::unique_ptr<agent::AgentRunner> agents;          // waits for its runs' threads when destroyed
  std::unique_ptr<McpService> mcp;                     // /mcp: calls into all of the above
  std::unique_ptr<ApiMetrics> api_metrics;             // reads the deployer at each scrape
  std::vector<std::unique_ptr<http::Server>> servers;  // the gateway first

  // Records how to stop what was just started.
  void Started(std::function<void()> stop) { stops_.push_back(std::move(stop)); }
  // Pass 1; idempotent.
  void StopAll() {
    while (!stops_.empty()) {
      auto stop = std::move(stops_.back());
      stops_.pop_back();
      stop();
    }
  }
  Services() = default;
  Services(const Services&) = delete;
  Services& operator=(const Services&) = delete;
  ~Services() { StopAll(); }

 private:
  std::vector<std::function<void()>> stops_;
};

}  // namespace

int RunServe(const Settings& settings) {
  // Folders are made absolute once: tools run elsewhere, and the sandbox needs absolute paths.
  Settings s = settings;
  s.data_dir = std::filesystem::absolute(s.data_dir).lexically_normal().string();
  while (s.data_dir.size() > 1 && s.data_dir.back() == '/') s.data_dir.pop_back();
  log::Level level = log::Level::kInfo;
  log::ParseLevel(s.log_level, &level);
  log::SetLevel(level);
  log::Format format = log::Format::kText;
  log::ParseFormat(s.log_format, &format);
  log::SetFormat(format);

  // Stop signals are taken by this thread only: block them before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::error_code ec;
  std::filesystem::create_directories(s.data_dir, ec);
  if (ec) {
    log::Error("serve", "cannot create the data folder " + s.data_dir + ": " + ec.message());
    return 1;
  }
  if (!std::filesystem::exists(s.manifests)) {
    std::filesystem::create_directories(s.manifests, ec);
    if (ec) {
      log::Error("serve",
                 "cannot create the manifests folder " + s.manifests + ": " + ec.message());
      return 1;
    }
    log::Info("serve", "created an empty manifests folder " + s.manifests);
  }

  registry::RegistryOptions ropts;
  ropts.root = s.manifests;
  ropts.parser.strict = s.registry.strict;
  ropts.parser.max_bytes = static_cast<size_t>(s.registry.max_manifest_bytes);
  ropts.applied_index = s.data_dir + "/api-manifests.txt";
  // Agents naming a provider this server does not know get a warning at load.
  ropts.parser.llm_providers = llm::DefaultProviderNames();
  for (const auto& p : s.llm.providers) ropts.parser.llm_providers.push_back(p.name);
  registry::Registry reg(ropts);
  auto t0 = std::chrono::steady_clock::now();
  if (Status st = reg.LoadAll(); !st.ok()) {
    log::Error("registry", st.message());
    return 1;
  }
  auto snap = reg.snapshot();
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  size_t unresolved = 0;
  for (const auto& e : snap->entries()) unresolved += e->resolved() ? 0 : 1;
  log::Info("registry", "loaded " + std::to_string(snap->entries().size()) + " manifests from " +
                            ropts.root + " in " + std::to_string(ms.count()) + " ms (" +
                            std::to_string(snap->errors().size()) + " files with errors, " +
                            std::to_string(unresolved) + " unresolved, " +
                            std::to_string(snap->conflicts().size()) + " conflicts)");
  for (const auto& fe : snap->errors()) {
    for (const auto& d : fe.file->diagnostics) {
      if (d.severity == registry::Severity::kError) log::Warn("registry", d.ToString());
    }
  }
  auto log_sub = reg.Subscribe();

  if (s.registry.watch) {
    registry::WatcherOptions wopts;
    wopts.quiet = std::chrono::milliseconds(s.registry.debounce_ms);
    if (Status st = reg.StartWatching(wopts); !st.ok()) {
      log::Warn("registry", "hot reload is off: " + st.message());
    }
  }

  Services svc;  // after the registry: stopped and destroyed before it
  if (!s.tracing.otlp_endpoint.empty() || !s.tracing.otlp_traces_endpoint.empty()) {
    OtlpOptions oo;
    oo.endpoint_is_traces_url = !s.tracing.otlp_traces_endpoint.empty();
    oo.endpoint =
        oo.endpoint_is_traces_url ? s.tracing.otlp_traces_endpoint : s.tracing.otlp_endpoint;
    oo.service_name = s.tracing.service_name;
    log::Info("serve", "spans are exported to " + oo.endpoint);
    svc.otlp = std::make_unique<OtlpExporter>(std::move(oo), svc.metrics.get());
    svc.tracer = std::make_unique<trace::Tracer>(svc.otlp->AsExporter());
  }
  // State: the Store, then the executor on top of it.
  store::SqliteOptions sopts;
  sopts.path = s.data_dir + "/cortex.db";
  auto db = store::OpenSqliteStore(sopts);
  if (!db.ok()) {
    log::Error("store", db.status().message());
    return 1;
  }
  auto& state = svc.state;
  state = std::move(db).value();
  // Access control: on unless every port is on loopback (auth.mode).
  {
    auto decided = DecideAuth(s, *state);
    if (!decided.ok()) {
      log::Error("auth", decided.status().message());
      return 1;
    }
    svc.access = std::make_unique<AccessControl>(*state, *decided);
    if (decided->enabled) log::Info("auth", "authentication is on: every call needs an API key");
  }
  if (auto n = state->MarkInterrupted(exec::NowMs()); n.ok() && *n > 0) {
    log::Warn("exec", std::to_string(*n) + " executions were running when the server last " +
                          "stopped: marked interrupted");
  }
  exec::ExecutorOptions eopts;
  eopts.workers = static_cast<int>(s.exec.workers);
  eopts.queue_capacity = static_cast<size_t>(s.exec.queue);
  eopts.allow_unsandboxed = s.exec.allow_unsandboxed;
  eopts.tool_network_host = s.exec.tool_network == "host";
  if (eopts.tool_network_host) {
    log::Warn("exec",
              "exec.tool_network: host: tools with network: true share the host's "
              "network, and reach every service on 127.0.0.1, Cortex's API included");
  }
  eopts.defaults.timeout =
      std::chrono::milliseconds(static_cast<int64_t>(s.exec.default_timeout.seconds * 1000));
  eopts.defaults.max_processes = static_cast<uint64_t>(s.exec.default_max_processes);
  if (auto mem = exec::ParseByteSize(s.exec.default_memory); mem.ok()) {
    eopts.defaults.memory_bytes = *mem;
  } else {
    log::Error("exec", "exec.default_memory: " + mem.status().message());
    return 1;
  }
  eopts.hidden_paths = {s.data_dir};
  std::optional<exec::SandboxInfo> sandbox_info;  // also for relics with deployment.sandbox
  eopts.metrics = svc.metrics.get();
  eopts.tracer = svc.tracer.get();
  if (s.exec.sandbox) {
    auto sandbox = exec::DetectSandbox("", s.data_dir + "/sandbox");
    if (sandbox.ok()) {
      log::Info("exec", "sandbox: " + sandbox->Describe());
      eopts.sandbox = std::move(sandbox).value();
      sandbox_info = eopts.sandbox;
    } else {
      log::Warn("exec", "tools cannot be sandboxed: " + sandbox.status().message() +
                            (s.exec.allow_unsandboxed ? " (running them unsandboxed, as allowed)"
                                                      : " (tool calls will be refused)"));
    }
  } else {
    log::Warn("exec", "the sandbox is off (exec.sandbox: false)");
  }
  const char* path_env = std::getenv("PATH");
  const char* pyenv_version = std::getenv("PYENV_VERSION");
  std::string search_path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  std::string pyenv = pyenv_version ? pyenv_version : "";
  struct Resolved {
    Mutex mu;
    std::map<std::string, std::string> paths CORTEX_GUARDED_BY(mu);
  };
  auto resolved = std::make_shared<Resolved>();
  exec::ProgramResolver resolver = [=](const std::string& name) -> Result<std::string> {
    MutexLock lock(resolved->mu);
    auto it = resolved->paths.find(name);
    if (it != resolved->paths.end()) return it->second;
    CORTEX_ASSIGN_OR_RETURN(std::string p, exec::ResolveProgram(name, search_path, pyenv));
    resolved->paths[name] = p;
    return p;
  };
  svc.runner = exec::MakeProcessRunner();
  // Tools of other MCP servers: their connections are kept here, for every call.
  mcp::ClientOptions mcp_client;
  mcp_client.client_version = kVersion;
  svc.mcp_clients = std::make_unique<mcp::ClientPool>(mcp_client);
  const char* home_env = std::getenv("HOME");
  svc.mcp_tools = std::make_unique<McpTools>(*svc.mcp_clients, resolver, search_path,
                                             home_env ? home_env : s.data_dir);
  eopts.external = svc.mcp_tools.get();
  auto& executor = svc.executor;
  executor = std::make_unique<exec::Executor>(eopts, reg, *state, *svc.runner, resolver);
  svc.Started([&executor] { executor.reset(); });  // cancels running tools, joins the workers

  // The workflow engine on top of the executor; unfinished runs resume now.
  auto environment = [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  // The deployer: relics recorded as running are adopted (or started again) now.
  auto& redis = svc.redis;
  if (!s.deploy.redis_url.empty()) {
    auto r = deploy::RedisDiscovery::Connect(s.deploy.redis_url);
    if (!r.ok()) {
      log::Error("discovery", "deploy.redis_url: " + r.status().message());
      return 1;
    }
    redis = std::move(r).value();
    log::Info("discovery", "publishing services to Redis at " + s.deploy.redis_url);
  }
  deploy::DeployerOptions dopts;
  dopts.data_dir = s.data_dir;
  dopts.path_env = search_path;
  dopts.max_restarts = static_cast<int>(s.deploy.max_restarts);
  dopts.stop_relics_on_exit = s.deploy.stop_relics_on_exit;
  dopts.allow_root_relics = s.deploy.allow_root_relics;
  dopts.allowed_env = s.variables.allow_env;
  std::unique_ptr<deploy::RelicDriver> compose_driver;
  {
    deploy::ComposeDriverOptions copts;
    copts.path_env = search_path;
    const char* home = std::getenv("HOME");
    copts.home = home ? home : s.data_dir;
    copts.override_dir = s.data_dir + "/compose";
    copts.docker_socket = s.deploy.docker_socket;
    std::filesystem::create_directories(copts.override_dir, ec);
    auto d = deploy::ComposeDriver::Create(copts);
    if (d.ok()) {
      compose_driver = std::move(d).value();
    } else {
      log::Warn("deploy", "compose relics cannot be deployed: " + d.status().message());
    }
  }
  auto& deployer = svc.deployer;
  deployer = std::make_unique<deploy::Deployer>(
      dopts, reg, *state,
      std::make_unique<deploy::ProcessDriver>(deploy::ProcessDriverOptions{
          .relics_dir = s.data_dir + "/relics",
          .sandbox =
              sandbox_info ? MakeRelicSandbox(*sandbox_info, s.data_dir) : deploy::RelicSandbox()}),
      std::move(compose_driver));
  if (redis) {
    deployer->SetDiscoveryListener(
        [&redis](const deploy::ServiceRecord& r, bool up) { redis->Publish(r, up); });
  }
  if (Status st = deployer->Start(); !st.ok()) {
    log::Error("deploy", "cannot load the recorded deployments: " + st.message());
    return 1;
  }
  // Relics keep running unless deploy.stop_relics_on_exit.
  svc.Started([&deployer] { deployer->Stop(); });
  // A tool's `mcp.relic`: the address the relic is running at (set before any call can come).
  svc.mcp_tools->SetRelicAddress(
      [d = deployer.get()](const std::string& name) -> std::optional<std::string> {
        for (const deploy::ServiceRecord& r : d->Services()) {
          if (r.name == name && !r.url.empty()) return r.url;
        }
        return std::nullopt;
      });
  auto& monuments = svc.monuments;
  monuments = std::make_unique<deploy::Monuments>(*deployer, reg, *state);
  if (Status st = monuments->Start(); !st.ok()) {
    log::Error("deploy", "cannot load the recorded monuments: " + st.message());
    return 1;
  }
  // Destroyed after the deployer stopped: a deployment in progress then ends at once.
  svc.Started([&monuments] { monuments->Shutdown(); });

  auto& relic_caller = svc.relic_caller;
  relic_caller = std::make_unique<RelicCaller>(deployer.get());
  svc.Started([&relic_caller] { relic_caller.reset(); });
  svc.dispatcher = std::make_unique<workflow::ExecutorDispatcher>(
      *executor, [&relic_caller](const auto& call, auto done) {
        return relic_caller->Call(call, std::move(done));
      });
  // Agents: the LLM gateway, and the loop on top of it (tool and relic actions through the same
  // dispatcher as workflow steps).
  std::vector<llm::ProviderConfig> providers;
  for (const auto& p : s.llm.providers) {
    llm::ProviderConfig c;
    c.name = p.name;
    c.type = p.type;
    c.base_url = p.base_url;
    c.api_key_env = p.api_key_env;
    c.model = p.model;
    c.replay_file = p.replay_file;
    c.ca_bundle = p.ca_bundle;
    c.max_concurrency = static_cast<int>(p.max_concurrency);
    c.max_retries = static_cast<int>(p.max_retries);
    c.breaker_failures = static_cast<int>(p.breaker_failures);
    auto ms = [](const registry::Duration& d) {
      return std::chrono::milliseconds(static_cast<int64_t>(d.seconds * 1000));
    };
    c.breaker_recovery = ms(p.breaker_recovery);
    c.limits.connect_timeout = ms(p.connect_timeout);
    c.limits.first_token_timeout = ms(p.first_token_timeout);
    c.limits.total_timeout = ms(p.total_timeout);
    c.input_price_per_mtok = p.input_price_per_mtok;
    c.output_price_per_mtok = p.output_price_per_mtok;
    providers.push_back(std::move(c));
  }
  svc.gateway = std::make_unique<llm::Gateway>(std::move(providers), svc.metrics.get());
  agent::AgentRunOptions aopts;
  aopts.max_iterations = static_cast<int>(s.llm.max_iterations);
  aopts.max_wall = std::chrono::milliseconds(static_cast<int64_t>(s.llm.max_run.seconds * 1000));
  aopts.observation_bytes = static_cast<size_t>(s.llm.observation_bytes);
  aopts.max_parallel = static_cast<int>(s.llm.max_parallel_actions);
  aopts.dispatch_at_message_end = s.llm.dispatch_at_message_end;
  aopts.max_depth = static_cast<int>(s.llm.max_agent_depth);
  aopts.default_provider = s.llm.default_provider;
  aopts.recordings_dir = s.data_dir + "/recordings";
  aopts.allowed_env = s.variables.allow_env;
  aopts.metrics = svc.metrics.get();
  aopts.tracer = svc.tracer.get();
  svc.agent_actions = std::make_unique<AgentActions>(*svc.dispatcher);
  svc.agents = std::make_unique<agent::AgentRunner>(reg, *svc.gateway, *svc.agent_actions,
                                                    std::move(aopts), state.get());
  svc.dispatcher->SetAgentCaller([&svc](const auto& call, auto done) {
    return StartAgentStep(*svc.agents, call, std::move(done));
  });
  // A monument's agents are checked as it deploys. Monuments outlive the runner: the check
  // answers Unavailable once the runner is going (a deployment may still be ending then).
  struct AgentGate {
    Mutex mu;
    agent::AgentRunner* runner CORTEX_GUARDED_BY(mu) = nullptr;
  };
  auto gate = std::make_shared<AgentGate>();
  {
    MutexLock lock(gate->mu);
    gate->runner = svc.agents.get();
  }
  monuments->SetAgentCheck([gate](const std::string& name) {
    MutexLock lock(gate->mu);
    return gate->runner ? gate->runner->Check(name) : UnavailableError("the server is stopping");
  });
  svc.Started([gate] {
    MutexLock lock(gate->mu);
    gate->runner = nullptr;
  });

  workflow::EngineOptions wopts_engine;
  wopts_engine.env = environment;
  wopts_engine.allowed_env = s.variables.allow_env;
  wopts_engine.metrics = svc.metrics.get();
  wopts_engine.tracer = svc.tracer.get();
  wopts_engine.max_inflight = static_cast<size_t>(std::max<int64_t>(1, s.exec.queue / 2));
  auto& engine = svc.engine;
  engine = std::make_unique<workflow::Engine>(wopts_engine, reg, *state, *svc.dispatcher);
  if (Status st = engine->Start(); !st.ok()) {
    log::Error("workflow", "cannot resume workflow runs: " + st.message());
    return 1;
  }
  // Runs stay as recorded: they resume at the next start.
  svc.Started([&engine] { engine->Stop(); });
  // Agent runs the last server left running go on from their journals (those of workflow steps
  // when the engine dispatches their steps again).
  svc.agent_actions->SetEngine(engine.get());
  if (int n = svc.agents->ResumeInterrupted(); n > 0) {
    log::Info("agent", "resuming " + std::to_string(n) + " agent runs from their journals");
  }
  svc.scheduler = std::make_unique<workflow::Scheduler>(reg, *state, *engine);
  svc.scheduler->SetEnabled(
      [&monuments](const std::string& wf) { return monuments->WorkflowEnabled(wf); });
  svc.scheduler->Start();
  svc.Started([&svc] { svc.scheduler->Stop(); });
  WorkflowRouteOptions wroutes;
  wroutes.env = environment;
  wroutes.allowed_env = s.variables.allow_env;

  {
    McpExposure exposure;
    exposure.workflows = s.mcp.expose_workflows;
    exposure.agents = s.mcp.expose_agents;
    mcp::ServerOptions mopts;
    mopts.version = kVersion;
    mopts.instructions = s.mcp.instructions;
    svc.mcp = std::make_unique<McpService>(
        reg,
        std::make_unique<McpBackend>(reg, *executor, *state, engine.get(), svc.agents.get(),
                                     exposure),
        std::move(mopts));
  }
  svc.api_metrics = std::make_unique<ApiMetrics>(*svc.metrics, *deployer);
  // Every port, the gateway first; all stop before anything their handlers use.
  struct Port {
    std::optional<std::string> listen;
    const char* service;
    std::function<void(http::Server&)> routes;
  };
  const std::vector<Port> ports = {
      {s.listen, "cortex",
       [&](http::Server& srv) {
         AddRegistryRoutes(srv, reg);
         AddExecuteRoutes(srv, *executor, *state);
         AddWorkflowRoutes(srv, *engine, *state, reg, wroutes);
         AddDeployRoutes(srv, *deployer, *monuments);
         AddAgentRoutes(srv, *svc.agents, *state, reg);
         AddLlmRoutes(srv, *svc.gateway);
         AddOpenAiRoutes(srv, *svc.agents, reg);
         svc.mcp->AddRoutes(srv);
         AddAccessRoutes(srv, *svc.access, *state);
         AddMetricsRoutes(srv, *svc.metrics);
       }},
      {s.services.registry, "manifest-ingestion",
       [&](http::Server& srv) { AddRegistryRoutes(srv, reg); }},
      {s.services.executor, "runtime-executor",
       [&](http::Server& srv) {
         AddExecuteRoutes(srv, *executor, *state);
         AddAgentRoutes(srv, *svc.agents, *state, reg);
       }},
      {s.services.deployer, "deployment-controller",
       [&](http::Server& srv) { AddDeployRoutes(srv, *deployer, *monuments); }},
      {s.services.workflows, "workflow-engine",
       [&](http::Server& srv) { AddWorkflowRoutes(srv, *engine, *state, reg, wroutes); }},
  };
  for (const Port& p : ports) {
    if (!p.listen) continue;
    auto server =
        StartServer(*p.listen, s, p.service, *svc.access, *svc.api_metrics, *svc.tracer, p.routes);
    if (!server.ok()) {
      log::Error("serve", server.status().message());
      return 1;
    }
    http::Server* started = server->get();
    svc.servers.push_back(std::move(server).value());
    svc.Started([started] { started->Stop(); });
  }
  // Before the ports stop (they wait for their requests): agent runs in progress end where they
  // are, recorded to resume at the next start, and their threads end before the executor stops.
  svc.Started([&svc] {
    svc.agent_actions->Stop();
    svc.agents->Drain();
  });
  // MCP calls in progress are cancelled and their sessions closed, so that the ports' waits for
  // their requests end.
  svc.Started([&svc] { svc.mcp->Shutdown(); });

  std::string host;
  int port = 0;
  (void)ParseHostPort(s.listen, &host, &port);
  port = svc.servers.front()->port();
  {
    nlohmann::ordered_json j = {{"pid", ::getpid()},
                                {"listen", host + ":" + std::to_string(port)},
                                {"port", port},
                                {"scheme", s.http.tls_cert.empty() ? "http" : "https"}};
    std::string path = s.data_dir + "/serve.json";
    std::string tmp = path + ".tmp";
    std::ofstream(tmp) << DumpJson(j) << "\n";
    std::filesystem::rename(tmp, path, ec);
  }
  log::Info("serve",
            "Cortex " + std::string(kVersion) + " serving on http://" + host + ":" +
                std::to_string(port) +
                (s.services.registry ? " (registry also on " + *s.services.registry + ")" : ""));

  // Log registry changes while waiting for a stop signal.
  std::atomic<bool> stopping{false};
  std::thread logger([&] {
    while (!stopping) {
      for (const auto& ev : log_sub->Wait(std::chrono::milliseconds(200))) {
        std::string what = std::string(registry::EventTypeName(ev.type)) + " " +
                           (ev.key.empty() ? ev.path : ev.key + " (" + ev.path + ")");
        if (!ev.message.empty()) what += ": " + ev.message;
        if (ev.type == registry::RegistryEvent::Type::kError) {
          log::Warn("registry", what);
        } else {
          log::Info("registry", what);
        }
      }
    }
  });

  int sig = 0;
  sigwait(&stop_signals, &sig);
  log::Info("serve", std::string("stopping (") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ")");
  stopping = true;
  reg.Unsubscribe(log_sub);  // wakes the logger's wait at once
  logger.join();
  reg.StopWatching();
  svc.StopAll();
  std::filesystem::remove(s.data_dir + "/serve.json", ec);
  log::Info("serve", "stopped");
  return 0;
}

int RunBackupCommand(const Settings& s, const std::string& action, const std::string& file,
                     bool force, std::ostream& out, std::ostream& err) {
  const BackupPaths paths{s.data_dir, s.manifests};
  auto done = action == "restore" ? RestoreBackup(file, paths, force) : WriteBackup(paths, file);
  if (!done.ok()) {
    err << "cortex " << action << ": " << done.status().message() << "\n";
    return done.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  out << (action == "restore" ? "restored " : "backed up ") << file << ": database "
      << done->db_bytes << " bytes, " << done->files << " files (manifests and recordings), "
      << "archive " << done->archive_bytes << " bytes\n";
  if (action == "restore") {
    out << "data dir " << s.data_dir << ", manifests " << s.manifests
        << ": start the server on them (cortex serve)\n";
  }
  return 0;
}

int RunAuthCommand(const Settings& s, const AuthCommand& command, std::ostream& out,
                   std::ostream& err) {
  const std::string& action = command.action;
  const bool json = command.json;
  store::SqliteOptions sopts;
  std::error_code ec;
  std::filesystem::create_directories(s.data_dir, ec);
  sopts.path = s.data_dir + "/cortex.db";
  auto db = store::OpenSqliteStore(sopts);
  if (!db.ok()) {
    err << "cortex auth: " << db.status().message() << "\n";
    return 1;
  }
  store::Store& state = **db;
  auto key_line = [](const store::ApiKeyRecord& k) {
    std::string line = k.id + "  " + k.role + "  " + k.name;
    for (const auto& sc : k.scopes) line += "  " + sc;
    return line + (k.revoked_ms ? "  (revoked)" : "");
  };
  if (action == "create-key") {
    auto parsed = ParseRole(command.role);
    if (!parsed) {
      err << "cortex auth: --role must be viewer, operator or admin\n";
      return 2;
    }
    if (Status st = CheckScopes(command.scopes); !st.ok()) {
      err << "cortex auth: --scope: " << st.message() << "\n";
      return 2;
    }
    auto made = CreateApiKey(state, command.name, *parsed, command.scopes);
    if (!made.ok()) {
      err << "cortex auth: " << made.status().message() << "\n";
      return 1;
    }
    const auto& [key, secret] = *made;
    if (json) {
      out << DumpJson(nlohmann::ordered_json{{"id", key.id},
                                             {"name", key.name},
                                             {"role", key.role},
                                             {"scopes", key.scopes},
                                             {"secret", secret}})
          << "\n";
    } else {
      out << key_line(key) << "\nsecret: " << secret
          << "\n(shown once: keep it now, and send it as CORTEX_TOKEN or Authorization: Bearer)\n";
    }
    return 0;
  }
  if (action == "list-keys") {
    auto keys = state.ListApiKeys();
    if (!keys.ok()) {
      err << "cortex auth: " << keys.status().message() << "\n";
      return 1;
    }
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& k : *keys) {
      if (json) {
        list.push_back({{"id", k.id},
                        {"name", k.name},
                        {"role", k.role},
                        {"scopes", k.scopes},
                        {"created_ms", k.created_ms},
                        {"revoked", k.revoked_ms != 0}});
      } else {
        out << key_line(k) << "\n";
      }
    }
    if (json) out << DumpJson(list) << "\n";
    if (!json && keys->empty()) out << "no keys\n";
    return 0;
  }
  if (action == "revoke-key") {
    if (Status st = RevokeApiKey(state, command.id); !st.ok()) {
      err << "cortex auth: " << st.message() << "\n";
      return 1;
    }
    out << command.id << " revoked\n";
    return 0;
  }
  err << "cortex auth: unknown action '" << action << "'\n";
  return 2;
}

}  // namespace cortex::api
