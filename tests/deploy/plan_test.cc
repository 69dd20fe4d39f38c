// Unit tests of the deployer's planning (PlanRelic: a Relic manifest resolved against this
// machine, with every default filled in) and of one health probe (RunProbe: http, tcp, command),
// against real files, a tiny in-test HTTP server, a closed port and real commands.
#include "deploy/plan.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "deploy/health.h"
#include "exec/process.h"
#include "http/http.h"
#include "registry/parser.h"

namespace cortex::deploy {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// ---- Helpers -------------------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "cortex-plan-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void WriteFile(const fs::path& path, const std::string& text, bool executable = false) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  if (executable) {
    fs::permissions(path, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec);
  }
}

// A loopback port nothing listens on (bound, read back, released).
int ClosedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string SystemPath() {
  const char* p = std::getenv("PATH");
  return p && *p ? p : "/usr/local/bin:/usr/bin:/bin";
}

// A relic manifest written to <dir>/relics/<name>/relic.yml, parsed, and planned.
class PlanTest : public ::testing::Test {
 protected:
  fs::path RelicDir(const std::string& name = "demo") const {
    return dir_.path() / "relics" / name;
  }

  // `body` is the YAML after the envelope (kind, version, name, summary).
  Result<RelicPlan> Plan(const std::string& body, const std::string& name = "demo") {
    const fs::path file = RelicDir(name) / "relic.yml";
    const std::string text = "kind: Relic\nversion: \"1.0\"\nname: " + name +
                             "\nsummary: a relic of the plan tests\n" + body;
    WriteFile(file, text);
    registry::ParsedFile parsed =
        registry::ParseManifest(text, "relics/" + name + "/relic.yml", registry::FileFormat::kYaml);
    std::string diags;
    for (const auto& d : parsed.diagnostics) diags += d.ToString() + "\n";
    if (!parsed.manifest)
      return InvalidArgumentError("the test manifest does not parse:\n" + diags);
    manifest_ = std::make_unique<registry::Manifest>(*parsed.manifest);
    PlanContext ctx;
    ctx.manifest_path = file.string();
    ctx.manifest_version = "7";
    ctx.data_dir = (dir_.path() / "data" / name).string();
    ctx.path_env = path_env_;
    ctx.lookup = [this](std::string_view var) -> std::optional<std::string> {
      auto it = vars_.find(std::string(var));
      if (it == vars_.end()) return std::nullopt;
      return it->second;
    };
    return PlanRelic(*manifest_, ctx);
  }

  // Plans `body` and expects it to be refused as InvalidArgument; the message.
  std::string Refused(const std::string& body) {
    auto plan = Plan(body);
    EXPECT_FALSE(plan.ok()) << "planned, but should have been refused:\n" << body;
    if (plan.ok()) return "";
    EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument) << plan.status().ToString();
    return plan.status().message();
  }

  TempDir dir_;
  std::string path_env_ = SystemPath();
  std::map<std::string, std::string> vars_;
  std::unique_ptr<registry::Manifest> manifest_;
};

std::string EnvValue(const RelicPlan& plan, const std::string& key) {
  for (const auto& e : plan.env) {
    if (e.rfind(key + "=", 0) == 0) return e.substr(key.size() + 1);
  }
  return "<unset>";
}

// ---- PlanRelic: defaults and the driver ------------------------------------------------------

TEST_F(PlanTest, MinimalProcessRelicGetsEveryDefault) {
  auto plan = Plan(
      "deployment:\n"
      "  type: process\n"
      "  command: [\"sh\", \"-c\", \"sleep 1\"]\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->name, "demo");
  EXPECT_EQ(plan->driver, "process");
  EXPECT_EQ(plan->manifest_dir, RelicDir().string());
  EXPECT_EQ(plan->manifest_version, "7");
  ASSERT_EQ(plan->argv.size(), 3u);
  EXPECT_TRUE(fs::path(plan->argv[0]).is_absolute()) << plan->argv[0];
  EXPECT_EQ(fs::path(plan->argv[0]).filename(), "sh");
  EXPECT_EQ(plan->argv[1], "-c");
  EXPECT_EQ(plan->argv[2], "sleep 1");
  EXPECT_TRUE(fs::path(plan->cwd).is_absolute()) << plan->cwd;
  EXPECT_TRUE(fs::equivalent(plan->cwd, RelicDir())) << plan->cwd;  // the manifest's folder
  EXPECT_FALSE(plan->port.has_value());
  EXPECT_EQ(plan->restart, RestartPolicy::kOnFailure);
  EXPECT_EQ(plan->stop_timeout, Ms(10000));
  EXPECT_EQ(plan->replicas, 1);
  EXPECT_EQ(plan->base_url, "");  // no port, no interface
  EXPECT_TRUE(plan->endpoints.empty());
  // No health check and no port: nothing to probe.
  EXPECT_EQ(plan->health.type, ProbeSpec::Type::kNone);
  EXPECT_EQ(plan->health.interval, Ms(5000));
  EXPECT_EQ(plan->health.timeout, Ms(2000));
  EXPECT_EQ(plan->health.retries, 3);
  EXPECT_EQ(plan->health.start_period, Ms(30000));
  // A clean environment: what Cortex gives every relic, nothing from this process.
  const std::string data = (dir_.path() / "data" / "demo").string();
  EXPECT_EQ(EnvValue(*plan, "PATH"), path_env_);
  EXPECT_EQ(EnvValue(*plan, "HOME"), data);
  EXPECT_EQ(EnvValue(*plan, "CORTEX_RELIC_NAME"), "demo");
  EXPECT_EQ(EnvValue(*plan, "CORTEX_RELIC_DATA"), data);
  EXPECT_EQ(EnvValue(*plan, "PORT"), "<unset>");
  EXPECT_EQ(plan->env.size(), 5u) << ::testing::PrintToString(plan->env);
}

TEST_F(PlanTest, APortGivesTheBaseUrlThePortVariableAndATcpProbe) {
  auto plan = Plan(
      "deployment:\n"
      "  type: native\n"
      "  command: \"sh -c 'sleep 1'\"\n"
      "  port: 8123\n"
      "  restart: always\n"
      "  stop_timeout: 3s\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->driver, "process");  // native is the process driver
  ASSERT_TRUE(plan->port.has_value());
  EXPECT_EQ(*plan->port, 8123);
  EXPECT_EQ(plan->base_url, "http://127.0.0.1:8123");
  EXPECT_EQ(EnvValue(*plan, "PORT"), "8123");
  EXPECT_EQ(plan->restart, RestartPolicy::kAlways);
  EXPECT_EQ(plan->stop_timeout, Ms(3000));
  EXPECT_EQ(plan->argv.back(), "sleep 1");  // a string command is split like a shell would
  // No declared check: healthy when the port accepts connections.
  EXPECT_EQ(plan->health.type, ProbeSpec::Type::kTcp);
  EXPECT_EQ(plan->health.host, "127.0.0.1");
  EXPECT_EQ(plan->health.port, 8123);
  EXPECT_EQ(plan->health.start_period, Ms(30000));
}

TEST_F(PlanTest, RestartPolicies) {
  for (const auto& [written, want] : std::vector<std::pair<std::string, RestartPolicy>>{
           {"always", RestartPolicy::kAlways},
           {"unless-stopped", RestartPolicy::kAlways},
           {"on-failure", RestartPolicy::kOnFailure},
           {"never", RestartPolicy::kNever}}) {
    auto plan = Plan("deployment: {type: process, command: [sh], restart: " + written + "}\n");
    ASSERT_TRUE(plan.ok()) << written << ": " << plan.status().ToString();
    EXPECT_EQ(plan->restart, want) << written;
    EXPECT_EQ(RestartPolicyName(want), written == "unless-stopped" ? "always" : written);
  }
}

TEST_F(PlanTest, HttpHealthCheckWithItsFieldsAndTheEndpointOnTheBaseUrl) {
  auto plan = Plan(
      "deployment: {type: process, command: [sh], port: 9000}\n"
      "health_check:\n"
      "  type: http\n"
      "  endpoint: ready\n"  // no leading slash: one is added
      "  method: POST\n"
      "  expected_status: 204\n"
      "  interval: 250ms\n"
      "  timeout: 1.5s\n"
      "  retries: 5\n"
      "  start_period: 2s\n"
      "interface:\n"
      "  endpoints:\n"
      "    - {name: get, method: GET, path: \"/get/{key}\"}\n"
      "    - {name: set, method: POST, path: /set}\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ProbeSpec& h = plan->health;
  EXPECT_EQ(h.type, ProbeSpec::Type::kHttp);
  EXPECT_EQ(ProbeTypeName(h.type), "http");
  EXPECT_EQ(h.url, "");
  EXPECT_EQ(h.path, "/ready");
  EXPECT_EQ(h.method, "POST");
  EXPECT_EQ(h.expected_status, 204);
  EXPECT_EQ(h.interval, Ms(250));
  EXPECT_EQ(h.timeout, Ms(1500));
  EXPECT_EQ(h.retries, 5);
  EXPECT_EQ(h.start_period, Ms(2000));
  ASSERT_EQ(plan->endpoints.size(), 2u);
  EXPECT_EQ(plan->endpoints[0].name, "get");
  EXPECT_EQ(plan->endpoints[0].path, "/get/{key}");
  EXPECT_EQ(plan->endpoints[1].method, "POST");

  // Without an endpoint: /health.
  auto plain = Plan(
      "deployment: {type: process, command: [sh], port: 9000}\n"
      "health_check: {type: http}\n");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->health.path, "/health");
}

TEST_F(PlanTest, AnHttpCheckWithOnlyAnEndpointNeedsABaseUrl) {
  std::string m = Refused(
      "deployment: {type: process, command: [sh]}\n"
      "health_check: {type: http, endpoint: /health}\n");
  EXPECT_THAT(m, StartsWith("health_check:"));
  EXPECT_THAT(m, HasSubstr("base URL"));
}

TEST_F(PlanTest, TcpProbePortDefaultsToTheDeploymentPort) {
  auto plan = Plan(
      "deployment: {type: process, command: [sh], port: 7001}\n"
      "health_check: {type: tcp, interval: 100ms}\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->health.type, ProbeSpec::Type::kTcp);
  EXPECT_EQ(plan->health.port, 7001);
  EXPECT_EQ(plan->health.interval, Ms(100));

  // Its own port wins.
  auto own = Plan(
      "deployment: {type: process, command: [sh], port: 7001}\n"
      "health_check: {type: tcp_socket, host: localhost, port: 7002}\n");
  ASSERT_TRUE(own.ok()) << own.status().ToString();
  EXPECT_EQ(own->health.port, 7002);
  EXPECT_EQ(own->health.host, "localhost");

  // No deployment.port: the base URL's.
  auto from_url = Plan(
      "deployment: {type: process, command: [sh]}\n"
      "health_check: {type: tcp}\n"
      "interface: {base_url: \"http://127.0.0.1:7003/api/\"}\n");
  ASSERT_TRUE(from_url.ok()) << from_url.status().ToString();
  EXPECT_EQ(from_url->health.port, 7003);
  EXPECT_EQ(from_url->base_url, "http://127.0.0.1:7003/api");  // trailing slash dropped

  // Nothing to take a port from.
  std::string m = Refused(
      "deployment: {type: process, command: [sh]}\n"
      "health_check: {type: tcp}\n");
  EXPECT_THAT(m, StartsWith("health_check"));
  EXPECT_THAT(m, HasSubstr("port"));
}

TEST_F(PlanTest, CommandProbeResolvesItsProgram) {
  auto plan = Plan(
      "deployment: {type: process, command: [sh]}\n"
      "health_check: {type: command, command: [\"sh\", \"-c\", \"exit 0\"]}\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->health.type, ProbeSpec::Type::kCommand);
  ASSERT_EQ(plan->health.argv.size(), 3u);
  EXPECT_TRUE(fs::path(plan->health.argv[0]).is_absolute()) << plan->health.argv[0];

  std::string m = Refused(
      "deployment: {type: process, command: [sh]}\n"
      "health_check: {type: command, command: [\"./check-it.sh\"]}\n");
  EXPECT_THAT(m, StartsWith("health_check.command: "));
  EXPECT_THAT(m, HasSubstr((RelicDir() / "check-it.sh").string()));
  EXPECT_THAT(m, HasSubstr("no such file"));
}

TEST_F(PlanTest, DisabledHealthCheckProbesNothing) {
  auto plan = Plan(
      "deployment: {type: process, command: [sh], port: 7001}\n"
      "health_check: {type: http, enabled: false}\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->health.type, ProbeSpec::Type::kNone);
  auto none = Plan(
      "deployment: {type: process, command: [sh], port: 7001}\n"
      "health_check: {type: none}\n");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(none->health.type, ProbeSpec::Type::kNone);
}

// ---- PlanRelic: the program, the folder, the type --------------------------------------------

TEST_F(PlanTest, RelativeProgramIsResolvedAgainstTheCwd) {
  WriteFile(RelicDir() / "app" / "bin" / "serve.sh", "#!/bin/sh\nexit 0\n", /*executable=*/true);
  auto plan = Plan(
      "deployment:\n"
      "  type: process\n"
      "  cwd: app\n"
      "  command: [\"./bin/serve.sh\", \"--flag\"]\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->cwd, (RelicDir() / "app").string());
  EXPECT_EQ(plan->argv[0], (RelicDir() / "app" / "bin" / "serve.sh").string());
  EXPECT_EQ(plan->argv[1], "--flag");
}

TEST_F(PlanTest, BareProgramIsLookedUpInPath) {
  const fs::path bin = dir_.path() / "bin";
  WriteFile(bin / "my-relic-server", "#!/bin/sh\nexit 0\n", /*executable=*/true);
  path_env_ = "/nonexistent-dir:" + bin.string() + ":" + SystemPath();
  auto plan = Plan("deployment: {type: process, command: [my-relic-server, --port, \"1\"]}\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->argv[0], (bin / "my-relic-server").string());
  EXPECT_EQ(EnvValue(*plan, "PATH"), path_env_);  // the process gets the same PATH
}

TEST_F(PlanTest, MissingProgramNamesDeploymentCommand) {
  std::string m = Refused("deployment: {type: process, command: [\"./missing-server.sh\"]}\n");
  EXPECT_THAT(m, StartsWith("deployment.command: "));
  EXPECT_THAT(m, HasSubstr((RelicDir() / "missing-server.sh").string()));
  EXPECT_THAT(m, HasSubstr("no such file"));

  std::string in_path =
      Refused("deployment: {type: process, command: [no-such-program-cortex-test]}\n");
  EXPECT_THAT(in_path, StartsWith("deployment.command: "));
  EXPECT_THAT(in_path, HasSubstr("no-such-program-cortex-test"));

  WriteFile(RelicDir() / "not-exec.sh", "#!/bin/sh\n", /*executable=*/false);
  std::string not_exec = Refused("deployment: {type: process, command: [\"./not-exec.sh\"]}\n");
  EXPECT_THAT(not_exec, StartsWith("deployment.command: "));
  EXPECT_THAT(not_exec, HasSubstr("not executable"));
}

TEST_F(PlanTest, ProcessRelicNeedsACommand) {
  // The manifest is refused as soon as it is read, before any planning.
  std::string m = Refused("deployment: {type: process}\n");
  EXPECT_THAT(m, HasSubstr("needs 'command'"));
}

TEST_F(PlanTest, MissingCwdIsRefused) {
  std::string m = Refused("deployment: {type: process, cwd: ./nowhere, command: [sh]}\n");
  EXPECT_THAT(m, StartsWith("deployment.cwd: "));
  EXPECT_THAT(m, HasSubstr((RelicDir() / "nowhere").string()));
  EXPECT_THAT(m, HasSubstr("is not a folder"));
}

TEST_F(PlanTest, UnsupportedTypeSaysSo) {
  std::string m = Refused("deployment: {type: kubernetes}\n");
  EXPECT_THAT(m, StartsWith("deployment.type: "));
  EXPECT_THAT(m, HasSubstr("\"kubernetes\" is not supported yet"));
  EXPECT_THAT(m, HasSubstr("process"));
  EXPECT_THAT(m, HasSubstr("docker-compose"));
  // docker without a compose file is not a compose relic either.
  EXPECT_THAT(Refused("deployment: {type: docker, image: nginx}\n"),
              HasSubstr("\"docker\" is not supported yet"));
}

TEST_F(PlanTest, NoDeploymentBlockIsRefused) {
  std::string m = Refused("service_type: storage\n");
  EXPECT_THAT(m, StartsWith("deployment: "));
  EXPECT_THAT(m, HasSubstr("nothing to run"));
}

TEST_F(PlanTest, ComposeFileMustExist) {
  std::string m = Refused("deployment: {type: docker-compose, compose_file: stack/app.yml}\n");
  EXPECT_THAT(m, StartsWith("deployment.compose_file: "));
  EXPECT_THAT(m, HasSubstr((RelicDir() / "stack" / "app.yml").string()));
  EXPECT_THAT(m, HasSubstr("no such file"));
  // A folder is not a compose file.
  fs::create_directories(RelicDir() / "stack" / "dir.yml");
  EXPECT_THAT(Refused("deployment: {type: compose, compose_file: stack/dir.yml}\n"),
              HasSubstr("no such file"));

  WriteFile(RelicDir() / "stack" / "app.yml", "services: {}\n");
  auto plan = Plan("deployment: {type: docker, compose_file: stack/app.yml}\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->driver, "compose");
  EXPECT_EQ(plan->compose_file, (RelicDir() / "stack" / "app.yml").string());
  EXPECT_EQ(plan->cwd, RelicDir().string());
  EXPECT_TRUE(plan->argv.empty());
}

// ---- PlanRelic: variables ----------------------------------------------------------------------

TEST_F(PlanTest, BaseUrlResolvesThroughTheLookup) {
  const std::string body =
      "deployment: {type: process, command: [sh]}\n"
      "interface:\n"
      "  base_url: \"${X_URL:-http://127.0.0.1:8004}\"\n";
  auto fallback = Plan(body);
  ASSERT_TRUE(fallback.ok()) << fallback.status().ToString();
  EXPECT_EQ(fallback->base_url, "http://127.0.0.1:8004");

  vars_["X_URL"] = "http://10.1.2.3:9999/";
  auto found = Plan(body);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->base_url, "http://10.1.2.3:9999");

  // No default and nothing to look up: refused, naming the field and the variable.
  std::string m = Refused(
      "deployment: {type: process, command: [sh]}\n"
      "interface: {base_url: \"${NOT_SET_ANYWHERE_URL}\"}\n");
  EXPECT_THAT(m, StartsWith("interface.base_url: "));
  EXPECT_THAT(m, HasSubstr("NOT_SET_ANYWHERE_URL"));
}

TEST_F(PlanTest, EnvironmentIsResolvedAndDeploymentEnvWins) {
  vars_["UPSTREAM_URL"] = "http://127.0.0.1:7777";
  auto plan = Plan(
      "deployment:\n"
      "  type: process\n"
      "  command: [sh]\n"
      "  port: 8100\n"
      "  env:\n"
      "    MODE: deploy\n"
      "    PORT: \"9100\"\n"
      "environment:\n"
      "  variables:\n"
      "    MODE: env\n"
      "    UPSTREAM: \"${UPSTREAM_URL:-none}\"\n"
      "    OTHER: \"${OTHER_UNSET:-fallback}\"\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(EnvValue(*plan, "MODE"), "deploy");
  EXPECT_EQ(EnvValue(*plan, "UPSTREAM"), "http://127.0.0.1:7777");
  EXPECT_EQ(EnvValue(*plan, "OTHER"), "fallback");
  EXPECT_EQ(EnvValue(*plan, "PORT"), "9100");  // overridden, once
  EXPECT_EQ(std::count_if(plan->env.begin(), plan->env.end(),
                          [](const std::string& e) { return e.rfind("PORT=", 0) == 0; }),
            1);
  std::string m =
      Refused("deployment: {type: process, command: [sh], env: {TOKEN: \"${NO_TOKEN_HERE}\"}}\n");
  EXPECT_THAT(m, StartsWith("deployment.env.TOKEN: "));
}

TEST(VariablePrefixTest, UpperCaseWithUnderscores) {
  EXPECT_EQ(VariablePrefix("kv-store"), "KV_STORE");
  EXPECT_EQ(VariablePrefix("kv_store"), "KV_STORE");
  EXPECT_EQ(VariablePrefix("api.v2"), "API_V2");
}

TEST(SplitUrlTest, BaseAndPath) {
  EXPECT_EQ(http::SplitUrl("http://h:1/a/b?q=1"),
            std::make_pair(std::string("http://h:1"), std::string("/a/b?q=1")));
  EXPECT_EQ(http::SplitUrl("http://h:1"),
            std::make_pair(std::string("http://h:1"), std::string("/")));
  EXPECT_EQ(http::SplitUrl("http://h:1?x"),
            std::make_pair(std::string("http://h:1"), std::string("/?x")));
}

// ---- RunProbe --------------------------------------------------------------------------------

class ProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    http::ServerOptions opts;
    opts.port = 0;
    opts.threads = 4;
    server_ = std::make_unique<http::Server>(opts);
    server_->Handle("GET", "/health", [](const http::Request&) {
      return http::Response::Json(200, R"({"status": "ok"})");
    });
    server_->Handle("GET", "/sick", [](const http::Request&) {
      return http::Response::Json(500, R"({"status": "sick"})");
    });
    server_->Handle("POST", "/created",
                    [](const http::Request&) { return http::Response::Json(201, "{}"); });
    ASSERT_TRUE(server_->Start().ok());
    base_ = "http://127.0.0.1:" + std::to_string(server_->port());
    runner_ = exec::MakeProcessRunner();
  }

  ProbeResult Run(const ProbeSpec& spec, const std::string& base = "") {
    return RunProbe(spec, base, {"PATH=" + SystemPath()}, dir_.path().string(), *runner_);
  }

  static ProbeSpec Http(const std::string& path, int expected = 200) {
    ProbeSpec s;
    s.type = ProbeSpec::Type::kHttp;
    s.path = path;
    s.expected_status = expected;
    s.timeout = Ms(2000);
    return s;
  }

  TempDir dir_;
  std::unique_ptr<http::Server> server_;
  std::string base_;
  std::unique_ptr<exec::ProcessRunner> runner_;
};

TEST_F(ProbeTest, NoneAlwaysPasses) {
  ProbeSpec s;
  EXPECT_TRUE(Run(s).ok);
}

TEST_F(ProbeTest, HttpPassesOnTheExpectedStatus) {
  ProbeResult r = Run(Http("/health"), base_);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.error, "");
  EXPECT_GE(r.took.count(), 0);

  // A full URL needs no base URL.
  ProbeSpec full = Http("");
  full.url = base_ + "/health";
  EXPECT_TRUE(Run(full).ok) << Run(full).error;

  ProbeSpec post = Http("/created", 201);
  post.method = "POST";
  EXPECT_TRUE(Run(post, base_).ok) << Run(post, base_).error;
}

TEST_F(ProbeTest, HttpFailsOnAnotherStatusWithItInTheError) {
  ProbeResult r = Run(Http("/sick"), base_);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.error, StartsWith("GET " + base_ + "/sick: status 500 (expected 200)"));
  EXPECT_THAT(r.error, HasSubstr("sick"));  // the start of the body

  ProbeResult missing = Run(Http("/nothing-here"), base_);
  EXPECT_FALSE(missing.ok);
  EXPECT_THAT(missing.error, HasSubstr("status 404"));
}

TEST_F(ProbeTest, HttpAgainstAClosedPortFailsWithTheUrl) {
  const std::string closed = "http://127.0.0.1:" + std::to_string(ClosedPort());
  ProbeResult r = Run(Http("/health"), closed);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.error, StartsWith("GET " + closed + "/health: "));
  EXPECT_GT(r.error.size(), ("GET " + closed + "/health: ").size()) << r.error;
  EXPECT_THAT(r.error, Not(HasSubstr("status"))) << r.error;
}

TEST_F(ProbeTest, HttpWithoutAnyUrlFails) {
  ProbeResult r = Run(Http("/health"), "");
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.error, HasSubstr("no URL to probe"));
}

TEST_F(ProbeTest, TcpConnects) {
  ProbeSpec s;
  s.type = ProbeSpec::Type::kTcp;
  s.port = server_->port();
  ProbeResult r = Run(s);
  EXPECT_TRUE(r.ok) << r.error;

  s.port = ClosedPort();
  ProbeResult closed = Run(s);
  EXPECT_FALSE(closed.ok);
  EXPECT_EQ(closed.error, "tcp 127.0.0.1:" + std::to_string(s.port) + ": Connection refused");
}

TEST_F(ProbeTest, CommandPassesOnExitCodeZero) {
  const std::string sh = *exec::ResolveProgram("sh", SystemPath());
  ProbeSpec s;
  s.type = ProbeSpec::Type::kCommand;
  s.argv = {sh, "-c", "exit 0"};
  ProbeResult ok = Run(s);
  EXPECT_TRUE(ok.ok) << ok.error;

  s.argv = {sh, "-c", "echo not ready yet >&2; exit 3"};
  ProbeResult bad = Run(s);
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.error, "command " + sh + ": exit code 3: not ready yet");

  // It runs in the relic's folder, with the relic's environment.
  WriteFile(dir_.path() / "ready", "");
  s.argv = {sh, "-c", "test -f ready && test \"$PATH\" = \"" + SystemPath() + "\""};
  ProbeResult in_cwd = Run(s);
  EXPECT_TRUE(in_cwd.ok) << in_cwd.error;
}

TEST_F(ProbeTest, CommandIsBoundedByTheTimeout) {
  const std::string sh = *exec::ResolveProgram("sh", SystemPath());
  ProbeSpec s;
  s.type = ProbeSpec::Type::kCommand;
  s.argv = {sh, "-c", "sleep 30"};
  s.timeout = Ms(200);
  ProbeResult r = Run(s);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.error, StartsWith("command " + sh + ": "));
  EXPECT_LT(r.took, Ms(10000)) << r.error;
}

}  // namespace
}  // namespace cortex::deploy
