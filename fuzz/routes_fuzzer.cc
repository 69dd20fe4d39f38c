// libFuzzer target for the API's route handlers: random methods, paths, query strings and bodies
// through the real router and filters (the request guard, access control with authentication
// off, as `cortex serve` on loopback), reaching the registry, execute, workflow, access, metrics
// OpenAPI, deploy, monument, agent, LLM, /v1 and /mcp routes (/mcp with an initialized session,
// so that bodies reach the protocol's methods) over a real registry (a copy of
// examples/manifests), a real SQLite store, executor, workflow engine, deployer, monuments and
// agent runner. Tools run through a fake process runner that never spawns anything (it answers
// {"success": true}); relics through a fake driver that starts nothing; the model providers are
// the defaults, without keys (their calls fail at once). Waits are not fuzzed: a deploy's
// `wait` is turned off, since a relic whose health check never passes would make the fuzzer wait
// for its start period. An answer that
// is an event stream has its producer run with a writer that reports the client gone soon. Whatever
// the input, the answer must be an HTTP status with a JSON body (or an event stream): never a
// crash, a hang or a throw.
//
// Input: byte 0 picks the method, byte 1 the route; the rest is "<path values>\0<query>\0<body>",
// path values separated by '/', query as "k=v&k=v" (not decoded: the router sees what is given).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/runner.h"
#include "api/agent_actions.h"
#include "api/agent_routes.h"
#include "api/auth.h"
#include "api/deploy_routes.h"
#include "api/execute_routes.h"
#include "api/mcp_routes.h"
#include "api/metrics_routes.h"
#include "api/openapi.h"
#include "api/registry_routes.h"
#include "api/request_guard.h"
#include "api/workflow_routes.h"
#include "common/json.h"
#include "common/metrics.h"
#include "deploy/deployer.h"
#include "deploy/monuments.h"
#include "exec/executor.h"
#include "http/http.h"
#include "llm/gateway.h"
#include "registry/registry.h"
#include "store/store.h"
#include "workflow/engine.h"
#include "workflow/executor_dispatcher.h"

namespace {

namespace fs = std::filesystem;
using namespace cortex;

class FakeRunner final : public exec::ProcessRunner {
 public:
  Result<exec::ProcessResult> Run(const exec::ProcessSpec&,
                                  const std::function<void(const exec::OutputLine&)>& on_line,
                                  const exec::CancelToken*) override {
    exec::ProcessResult r;
    r.exit_code = 0;
    r.stdout_data = "{\"success\": true}\n";
    if (on_line) on_line({false, "a line"});
    return r;
  }
};

// A relic driver that starts nothing: what it "starts" runs until it is stopped.
class FakeDriver final : public deploy::RelicDriver {
 public:
  std::string_view name() const override { return "process"; }
  Status Start(const deploy::RelicPlan&, store::DeploymentRecord& record) override {
    record.pid = 1;
    return Status::Ok();
  }
  Status Stop(const deploy::RelicPlan&, store::DeploymentRecord& record) override {
    record.pid = 0;
    return Status::Ok();
  }
  deploy::Observation Observe(const deploy::RelicPlan&, store::DeploymentRecord& record) override {
    deploy::Observation o;
    o.running = record.pid != 0;
    o.replicas = o.running ? 1 : 0;
    if (!o.running) o.detail = "not started";
    return o;
  }
  Result<std::vector<deploy::RelicLogLine>> Logs(const deploy::RelicPlan&,
                                                 const store::DeploymentRecord&, const std::string&,
                                                 size_t) override {
    return std::vector<deploy::RelicLogLine>{};
  }
  Status FollowLogs(const deploy::RelicPlan&, const store::DeploymentRecord&, const std::string&,
                    size_t, const std::function<bool(const deploy::RelicLogLine*)>&) override {
    return Status::Ok();
  }
  Result<nlohmann::ordered_json> Stats(const deploy::RelicPlan&,
                                       const store::DeploymentRecord&) override {
    return nlohmann::ordered_json::object();
  }
};

// Reports the client gone after a few events, or once the producer has asked twice (a producer
// waiting for events that never come checks IsOpen() between its short waits).
class ShortLivedWriter final : public http::SseWriter {
 public:
  bool Send(std::string_view, std::string_view, std::string_view) override { return Count(); }
  bool Comment(std::string_view) override { return Count(); }
  bool IsOpen() const override { return sent_ < 3 && ++asked_ <= 2; }

 private:
  bool Count() { return ++sent_ < 3; }
  int sent_ = 0;
  mutable int asked_ = 0;
};

struct World {
  std::string dir;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<registry::Registry> registry;
  metrics::Registry metrics;
  FakeRunner runner;
  std::unique_ptr<exec::Executor> executor;
  std::unique_ptr<workflow::ExecutorDispatcher> dispatcher;
  std::unique_ptr<workflow::Engine> engine;
  std::unique_ptr<deploy::Deployer> deployer;
  std::unique_ptr<deploy::Monuments> monuments;
  std::unique_ptr<llm::Gateway> gateway;
  std::unique_ptr<api::AgentActions> agent_actions;
  std::unique_ptr<agent::AgentRunner> agents;
  std::unique_ptr<api::AccessControl> access;
  std::unique_ptr<api::McpService> mcp;
  std::string mcp_session;  // an initialized session: /mcp inputs reach the protocol's methods
  std::unique_ptr<http::Server> server;
  std::vector<http::RouteKey> routes;
};

World& TheWorld() {
  static World* world = [] {
    auto* w = new World;
    char tmpl[] = "/tmp/cortex-routes-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl)) std::abort();
    w->dir = tmpl;
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(TheWorld().dir, ec);
    });
    std::error_code ec;
    fs::copy(fs::path(CORTEX_SOURCE_DIR) / "examples/manifests", w->dir + "/manifests",
             fs::copy_options::recursive, ec);
    if (ec) std::abort();
    store::SqliteOptions so;
    so.path = w->dir + "/state.db";
    auto opened = store::OpenSqliteStore(so);
    if (!opened.ok()) std::abort();
    w->store = std::move(*opened);
    registry::RegistryOptions ro;
    ro.root = w->dir + "/manifests";
    ro.applied_index = w->dir + "/applied";
    w->registry = std::make_unique<registry::Registry>(ro);
    (void)w->registry->LoadAll();
    exec::ExecutorOptions eo;
    eo.workers = 2;
    eo.allow_unsandboxed = true;
    eo.hidden_paths = {w->dir};
    w->executor = std::make_unique<exec::Executor>(
        eo, *w->registry, *w->store, w->runner,
        [](const std::string& name) -> Result<std::string> { return "/usr/bin/" + name; });
    w->dispatcher = std::make_unique<workflow::ExecutorDispatcher>(
        *w->executor,
        [](const auto&, auto) { return UnavailableError("no relics in the fuzzer"); });
    w->engine = std::make_unique<workflow::Engine>(workflow::EngineOptions{}, *w->registry,
                                                   *w->store, *w->dispatcher);
    if (!w->engine->Start().ok()) std::abort();
    deploy::DeployerOptions dopts;
    dopts.data_dir = w->dir + "/data";
    dopts.path_env = "/usr/local/bin:/usr/bin:/bin";
    dopts.min_uptime = deploy::Ms(0);
    w->deployer = std::make_unique<deploy::Deployer>(dopts, *w->registry, *w->store,
                                                     std::make_unique<FakeDriver>(), nullptr);
    if (!w->deployer->Start().ok()) std::abort();
    w->monuments = std::make_unique<deploy::Monuments>(*w->deployer, *w->registry, *w->store);
    if (!w->monuments->Start().ok()) std::abort();
    w->gateway = std::make_unique<llm::Gateway>(std::vector<llm::ProviderConfig>{});
    w->agent_actions = std::make_unique<api::AgentActions>(*w->dispatcher);
    w->agents = std::make_unique<agent::AgentRunner>(*w->registry, *w->gateway, *w->agent_actions,
                                                     agent::AgentRunOptions{}, w->store.get());
    w->access = std::make_unique<api::AccessControl>(*w->store, api::AuthOptions{});
    w->server = std::make_unique<http::Server>(http::ServerOptions{});
    w->server->SetFilter(
        w->access->MakeFilter(api::MakeRequestGuard({.listen_host = "127.0.0.1"})));
    api::AddRegistryRoutes(*w->server, *w->registry);
    api::AddExecuteRoutes(*w->server, *w->executor, *w->store);
    api::AddWorkflowRoutes(*w->server, *w->engine, *w->store, *w->registry);
    api::AddAccessRoutes(*w->server, *w->access, *w->store);
    api::AddMetricsRoutes(*w->server, w->metrics);
    api::AddDeployRoutes(*w->server, *w->deployer, *w->monuments);
    api::AddAgentRoutes(*w->server, *w->agents, *w->store, *w->registry);
    api::AddLlmRoutes(*w->server, *w->gateway);
    api::AddOpenAiRoutes(*w->server, *w->agents, *w->registry);
    api::AddOpenApiRoute(*w->server);
    w->mcp = std::make_unique<api::McpService>(
        *w->registry,
        std::make_unique<api::McpBackend>(*w->registry, *w->executor, *w->store, w->engine.get(),
                                          w->agents.get(), api::McpExposure{}),
        mcp::ServerOptions{});
    w->mcp->AddRoutes(*w->server);
    {
      auto session = w->mcp->server().CreateSession();
      if (!session.ok()) std::abort();
      w->mcp_session = (*session)->id();
      (void)w->mcp->server().Handle(
          **session, mcp::Caller{},
          {{"jsonrpc", "2.0"}, {"id", 0}, {"method", "initialize"}, {"params", {}}}, nullptr);
      (void)w->mcp->server().Handle(**session, mcp::Caller{},
                                    {{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}},
                                    nullptr);
    }
    w->routes = w->server->Routes();
    return w;
  }();
  return *world;
}

std::vector<std::string_view> Split(std::string_view s, char by) {
  std::vector<std::string_view> out;
  while (true) {
    size_t at = s.find(by);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const char* const kMethods[] = {"GET",   "POST", "PUT",    "DELETE",
                                         "PATCH", "HEAD", "OPTIONS"};
  World& w = TheWorld();
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const http::RouteKey& route = w.routes[static_cast<unsigned char>(in[1]) % w.routes.size()];
  auto parts = Split(in.substr(2), '\0');
  auto values = Split(parts[0], '/');

  http::Request request;
  request.method = kMethods[static_cast<unsigned char>(in[0]) % std::size(kMethods)];
  // The route's pattern with its {captures} filled from the input.
  size_t next = 0;
  for (std::string_view segment : Split(route.pattern, '/')) {
    if (segment.empty() && request.path.empty()) continue;
    request.path += '/';
    if (segment.size() >= 2 && segment.front() == '{') {
      request.path += next < values.size() ? std::string(values[next++]) : std::string("x");
    } else {
      request.path += segment;
    }
  }
  if (request.path.empty()) request.path = "/";
  if (parts.size() > 1) {
    for (std::string_view pair : Split(parts[1], '&')) {
      if (pair.empty()) continue;
      size_t eq = pair.find('=');
      request.query.emplace(std::string(pair.substr(0, eq)),
                            eq == std::string_view::npos ? "" : std::string(pair.substr(eq + 1)));
    }
  }
  if (parts.size() > 2) request.body = std::string(parts[2]);
  // No waiting for relics or monuments (see the top).
  if (request.path.starts_with("/deploy") || request.path.starts_with("/relics") ||
      request.path.starts_with("/monuments")) {
    request.query.erase("wait");
    request.query.erase("timeout");
    request.query.emplace("wait", "false");
    auto body = nlohmann::ordered_json::parse(request.body, nullptr, false);
    if (body.is_object()) {
      body["wait"] = false;
      body.erase("timeout_seconds");
      request.body = body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    }
  }
  if (request.path == "/mcp") {
    request.headers.emplace("Mcp-Session-Id", w.mcp_session);
    request.headers.emplace("Accept", "application/json, text/event-stream");
  }
  request.headers.emplace("Host", "127.0.0.1:8080");
  request.headers.emplace("Content-Type", "application/json");
  request.remote_addr = "127.0.0.1";

  http::Response response = w.server->Serve(std::move(request));
  if (response.status < 100 || response.status > 599) std::abort();
  if (response.sse) {
    ShortLivedWriter writer;
    response.sse(writer);
  } else if (response.content_type == "application/json" && !response.body.empty() &&
             !IsValidUtf8(response.body)) {
    std::abort();  // JSON answers are valid UTF-8, whatever the input held
  }
  return 0;
}
