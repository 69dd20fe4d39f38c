// Integration tests of compose relics: the real `cortex serve` on a free port deploying Docker
// Compose projects on the real Docker engine (started when none answers, see
// tests/deploy/docker_env.h), driven over HTTP.
//
// Covered: deploy and wait, the status (project, containers, ports), Cortex's labels on
// containers and networks, a relic call, logs, stop and delete; a base URL discovered from the
// published port; an image that does not exist; a missing and an invalid compose file; a health
// check that never passes; scaling a service (and the refusals); adoption of the running project
// by a restarted server; a container that keeps exiting.
//
// Each test writes its own relic (the test image cortex-test/busybox:1 running httpd on a free
// loopback port) with a name unique to the test and to this test process. Whatever Compose
// created for it is found by the label com.docker.compose.project=cortex_<relic> and removed at
// the end of the test, even when it failed, and then asserted gone. Every wait is a condition
// wait with a deadline.

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "deploy/docker.h"
#include "deploy/docker_env.h"
#include "exec/process.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"
#include "integration/deploy_helpers.h"
#include "store/redis_server.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
namespace dt = deploy::testing;
namespace docker = deploy::docker;
using Json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// ---- Docker -------------------------------------------------------------------------------------

// This process's run id: everything the tests create also carries cortex.test=<it>, so that a
// later run removes what this one leaves behind should it die before its cleanup.
const std::string& RunId() {
  static const std::string id = dt::NewRunId();
  return id;
}

docker::Client Docker() { return docker::Client(dt::SocketPath()); }

// A Docker engine that answers and the test image, once per process.
Status DockerReady() {
  static const Status ready = [] {
    Status s = dt::EnsureDocker();
    if (!s.ok()) return s;
    auto runner = exec::MakeProcessRunner();
    s = dt::EnsureTestImage(*runner);
    if (s.ok()) dt::RemoveStaleTestResources(Docker());
    return s;
  }();
  return ready;
}

#define ASSERT_DOCKER()                                        \
  do {                                                         \
    Status docker_ready = DockerReady();                       \
    ASSERT_TRUE(docker_ready.ok()) << docker_ready.ToString(); \
  } while (0)

// A relic name unique to this test process.
std::string RelicName(const std::string& what) { return what + "_" + std::to_string(::getpid()); }

std::string ProjectOf(const std::string& relic) { return "cortex_" + relic; }

// The project's containers (all states), as "name (state)".
std::vector<std::string> ContainersOf(const std::string& project) {
  std::vector<std::string> out;
  auto list = Docker().ListContainers({{docker::kComposeProjectLabel, project}}, true);
  if (!list.ok()) return {"<cannot list: " + list.status().ToString() + ">"};
  for (const auto& c : *list) out.push_back(c.name + " (" + c.state + ")");
  return out;
}

std::vector<docker::Container> RunningContainersOf(const std::string& project) {
  std::vector<docker::Container> out;
  auto list = Docker().ListContainers({{docker::kComposeProjectLabel, project}}, false);
  if (list.ok()) out = *list;
  return out;
}

std::vector<std::string> NetworksOf(const std::string& project) {
  std::vector<std::string> out;
  auto list = Docker().ListNetworks({{docker::kComposeProjectLabel, project}});
  if (!list.ok()) return {"<cannot list: " + list.status().ToString() + ">"};
  for (const auto& n : *list) out.push_back(n.name);
  return out;
}

// Removes the relic's Compose project (containers, networks, volumes, by its label) when it goes
// out of scope, and checks that nothing is left; also removes what an earlier run left under the
// same name when it is made. Declare it before the Daemon, so that the server is stopped first.
class ProjectCleanup {
 public:
  explicit ProjectCleanup(const std::string& relic) : project_(ProjectOf(relic)) {
    (void)dt::RemoveLabeled(Docker(), docker::kComposeProjectLabel, project_);
  }
  ~ProjectCleanup() {
    Status s = dt::RemoveLabeled(Docker(), docker::kComposeProjectLabel, project_);
    EXPECT_TRUE(s.ok()) << "cleanup of " << project_ << ": " << s.ToString();
    EXPECT_THAT(ContainersOf(project_), IsEmpty()) << "containers of " << project_ << " are left";
    EXPECT_THAT(NetworksOf(project_), IsEmpty()) << "networks of " << project_ << " are left";
  }
  ProjectCleanup(const ProjectCleanup&) = delete;
  ProjectCleanup& operator=(const ProjectCleanup&) = delete;

 private:
  std::string project_;
};

// ---- The manifests ------------------------------------------------------------------------------

// A compose file: one service `web` (the test image, `init: true`) running `command` (a YAML
// flow sequence), publishing `ports` (a YAML flow sequence, may be "[]"), serving ./www, with
// `extra` appended to the service (lines indented by four spaces).
std::string ComposeFile(const std::string& command, const std::string& ports,
                        const std::string& extra = "", const std::string& image = dt::kTestImage) {
  return "version: \"2.4\"\n"
         "services:\n"
         "  web:\n"
         "    image: " +
         image +
         "\n"
         "    init: true\n"
         "    command: " +
         command +
         "\n"
         "    ports: " +
         ports +
         "\n"
         "    volumes: [\"./www:/www:ro\"]\n"
         "    labels: {cortex.test: \"" +
         RunId() + "\"}\n" + extra +
         "networks:\n"
         "  default:\n"
         "    labels: {cortex.test: \"" +
         RunId() + "\"}\n";
}

// httpd in the foreground, logging each request (to stderr), after a line of its own.
constexpr char kHttpd[] = R"(["sh", "-c", "echo started; exec httpd -f -v -p 80 -h /www"])";

std::string Published(int port) { return "[\"127.0.0.1:" + std::to_string(port) + ":80\"]"; }

constexpr char kFastHealth[] =
    "health_check:\n"
    "  type: http\n"
    "  endpoint: /health\n"
    "  interval: 500ms\n"
    "  timeout: 1s\n"
    "  retries: 2\n"
    "  start_period: 20s\n";

// manifests/relics/<name>/: relic.yml (a docker-compose deployment, then `rest`), the compose
// file and www/ (health, index.html).
void WriteComposeRelic(const fs::path& m, const std::string& name, const std::string& compose,
                       const std::string& rest) {
  const fs::path dir = m / "relics" / name;
  WriteFile(dir / "docker-compose.yml", compose);
  WriteFile(dir / "www" / "health", "ok\n");
  WriteFile(dir / "www" / "index.html", "hello from " + name + "\n");
  WriteRelicManifest(m, name,
                     "deployment:\n"
                     "  type: docker-compose\n"
                     "  compose_file: docker-compose.yml\n"
                     "  stop_timeout: 5s\n" +
                         rest);
}

// The interface block: `base_url` (none when "") and the operation `page` (GET /{page}).
std::string Interface(const std::string& base_url) {
  return "interface:\n"
         "  type: rest_api\n" +
         (base_url.empty() ? "" : "  base_url: \"" + base_url + "\"\n") +
         "  endpoints:\n"
         "    - {name: page, method: GET, path: \"/{page}\"}\n";
}

std::string Loopback(int port) { return "http://127.0.0.1:" + std::to_string(port); }

// ---- 1. The whole life of a compose relic -------------------------------------------------------

TEST(ComposeApi, DeployCallLogStopDelete) {
  ASSERT_DOCKER();
  const std::string name = RelicName("life");
  const std::string project = ProjectOf(name);
  const int port = FreeLoopbackPort();
  ProjectCleanup cleanup(name);
  Daemon d({}, [&](const fs::path& m) {
    WriteComposeRelic(m, name, ComposeFile(kHttpd, Published(port)),
                      kFastHealth + Interface(Loopback(port)));
  });
  ASSERT_DAEMON(d);

  Reply dep = Deploy(d.client(), name);
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();
  EXPECT_EQ(dep.json.value("state", ""), "healthy") << dep.body;

  // The status: the driver, the project, its container with its state and ports.
  Json st = StatusOf(d.client(), name);
  ASSERT_TRUE(st.is_object());
  EXPECT_EQ(st.value("driver", ""), "compose") << st.dump();
  EXPECT_EQ(st.value("state", ""), "healthy") << st.dump();
  EXPECT_EQ(st.value("error", "?"), "") << st.dump();
  EXPECT_EQ(st.value("restarts", -1), 0) << st.dump();
  EXPECT_EQ(st.value("project", ""), project) << st.dump();
  EXPECT_EQ(st.value("base_url", ""), Loopback(port)) << st.dump();
  EXPECT_EQ(st["health"].value("status", ""), "passing") << st.dump();
  EXPECT_FALSE(st.contains("pid")) << st.dump();
  // The runtime comes from the supervisor's observation (once a second): wait for it.
  st = WaitForStatus(d.client(), name, [](const Json& s) {
    return s.contains("runtime") && s["runtime"].contains("containers") &&
           !s["runtime"]["containers"].empty();
  });
  ASSERT_TRUE(st.is_object());
  const Json& runtime = st["runtime"];
  EXPECT_EQ(runtime.value("project", ""), project) << st.dump();
  ASSERT_THAT(runtime["containers"], SizeIs(1)) << st.dump();
  const Json& container = runtime["containers"][0];
  EXPECT_EQ(container.value("service", ""), "web") << st.dump();
  EXPECT_EQ(container.value("state", ""), "running") << st.dump();
  EXPECT_THAT(container.value("name", ""), HasSubstr(project)) << st.dump();
  EXPECT_EQ(container["ports"], Json::array({std::to_string(port) + "->80/tcp"})) << st.dump();

  // Cortex's labels, on the container and on the project's network.
  auto containers = Docker().ListContainers({{docker::kComposeProjectLabel, project}}, true);
  ASSERT_TRUE(containers.ok()) << containers.status().ToString();
  ASSERT_THAT(*containers, SizeIs(1));
  const docker::Container& c = containers->front();
  EXPECT_EQ(c.name, container.value("name", "")) << st.dump();
  EXPECT_EQ(c.image, dt::kTestImage);
  std::map<std::string, std::string> labels = c.labels;
  EXPECT_EQ(labels["cortex.managed"], "true") << ::testing::PrintToString(c.labels);
  EXPECT_EQ(labels["cortex.relic"], name) << ::testing::PrintToString(c.labels);
  EXPECT_EQ(labels[docker::kComposeServiceLabel], "web") << ::testing::PrintToString(c.labels);
  auto networks = Docker().ListNetworks({{docker::kComposeProjectLabel, project}});
  ASSERT_TRUE(networks.ok()) << networks.status().ToString();
  ASSERT_THAT(*networks, SizeIs(1));
  std::map<std::string, std::string> net_labels = networks->front().labels;
  EXPECT_EQ(net_labels["cortex.managed"], "true") << ::testing::PrintToString(net_labels);
  EXPECT_EQ(net_labels["cortex.relic"], name) << ::testing::PrintToString(net_labels);

  // A declared operation: GET /{page}, answered by httpd in the container (as text).
  Reply page = Call(d.client(), name, "page", {{"page", "index.html"}});
  ASSERT_EQ(page.status, 200) << page.body;
  EXPECT_EQ(page.json.value("method", ""), "GET") << page.body;
  EXPECT_EQ(page.json.value("url", ""), Loopback(port) + "/index.html") << page.body;
  EXPECT_EQ(page.json["result"], "hello from " + name + "\n") << page.body;
  Reply missing = Call(d.client(), name, "page", {{"page", "no-such-page"}});
  EXPECT_EQ(missing.status, 502) << missing.body;
  EXPECT_EQ(ErrorCode(missing), "relic_error") << missing.body;

  // Discovery.
  Reply disc = Get(d.client(), "/discovery/services");
  ASSERT_EQ(disc.json.value("count", -1), 1) << disc.body;
  EXPECT_EQ(disc.json["services"][0].value("url", ""), Loopback(port)) << disc.body;

  // Logs: the container's own line, and httpd's line per request (on stderr), of service web.
  std::vector<std::string> lines;
  Eventually([&] {
    lines = LogLines(d.client(), name);
    return AnyLineHas(lines, "response:200");
  });
  EXPECT_TRUE(AnyLineHas(lines, "started")) << Joined(lines);
  EXPECT_TRUE(AnyLineHas(lines, "response:200")) << Joined(lines);
  EXPECT_TRUE(AnyLineHas(lines, "response:404")) << Joined(lines);
  Reply logs = Get(d.client(), "/relics/" + name + "/logs?tail=50&service=web");
  ASSERT_EQ(logs.status, 200) << logs.body;
  ASSERT_GT(logs.json.value("count", 0), 0) << logs.body;
  bool stderr_seen = false;
  for (const Json& l : logs.json["lines"]) {
    EXPECT_EQ(l.value("service", ""), "web") << l.dump();
    if (l.value("line", "").find("response:") != std::string::npos) {
      stderr_seen = stderr_seen || l.value("stream", "") == "stderr";
    }
  }
  EXPECT_TRUE(stderr_seen) << logs.body;
  EXPECT_THAT(LogLines(d.client(), name, 1), SizeIs(1));
  Reply no_service = Get(d.client(), "/relics/" + name + "/logs?service=nope");
  EXPECT_EQ(no_service.status, 404) << no_service.body;
  EXPECT_THAT(ErrorMessage(no_service), HasSubstr("'nope'")) << no_service.body;

  // Stop: `down`, so no container (and no network) is left.
  Reply stop = Post(d.client(), "/relics/" + name + "/stop", "");
  ASSERT_EQ(stop.status, 200) << stop.body;
  EXPECT_EQ(stop.json.value("state", ""), "stopped") << stop.body;
  EXPECT_EQ(stop.json.value("desired", ""), "stopped") << stop.body;
  EXPECT_FALSE(stop.json.contains("project")) << stop.body;
  EXPECT_THAT(ContainersOf(project), IsEmpty());
  EXPECT_THAT(NetworksOf(project), IsEmpty());
  EXPECT_EQ(Get(d.client(), "/discovery/services").json.value("count", -1), 0);
  Reply refused = Call(d.client(), name, "page", {{"page", "health"}});
  EXPECT_EQ(refused.status, 503) << refused.body;

  // Delete: forgotten.
  Reply del = ToReply(d.client().Delete("/relics/" + name));
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(del.json.value("deleted", false), true) << del.body;
  Reply gone = Get(d.client(), "/relics/" + name + "/status");
  EXPECT_EQ(gone.status, 404) << gone.body;
  EXPECT_EQ(ErrorCode(gone), "not_found") << gone.body;
  EXPECT_EQ(ToReply(d.client().Delete("/relics/" + name)).status, 404);
  EXPECT_THAT(ContainersOf(project), IsEmpty());
}

// ---- 2. The base URL from the published port ----------------------------------------------------

TEST(ComposeApi, BaseUrlIsDiscoveredFromThePublishedPort) {
  ASSERT_DOCKER();
  const std::string name = RelicName("discovered");
  const int port = FreeLoopbackPort();
  ProjectCleanup cleanup(name);
  // No interface.base_url, no deployment.port: the health check has only its endpoint.
  Daemon d({}, [&](const fs::path& m) {
    WriteComposeRelic(m, name, ComposeFile(kHttpd, Published(port)), kFastHealth);
  });
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), name);
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();
  EXPECT_EQ(dep.json.value("state", ""), "healthy") << dep.body;
  EXPECT_EQ(dep.json.value("base_url", ""), Loopback(port)) << dep.body;
  EXPECT_EQ(dep.json["health"].value("last_error", "?"), "") << dep.body;
  Reply disc = Get(d.client(), "/discovery/services");
  ASSERT_EQ(disc.json.value("count", -1), 1) << disc.body;
  EXPECT_EQ(disc.json["services"][0].value("url", ""), Loopback(port)) << disc.body;
}

// ---- 3. An image that does not exist ------------------------------------------------------------

TEST(ComposeApi, MissingImageFailsTheDeployAndLeavesNothing) {
  ASSERT_DOCKER();
  const std::string name = RelicName("noimage");
  const std::string project = ProjectOf(name);
  const std::string image = "cortex-test/no-such-image:" + std::to_string(::getpid());
  const int port = FreeLoopbackPort();
  ProjectCleanup cleanup(name);
  Daemon d({}, [&](const fs::path& m) {
    WriteComposeRelic(m, name, ComposeFile(kHttpd, Published(port), "", image),
                      kFastHealth + Interface(Loopback(port)));
  });
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), name);
  ASSERT_EQ(dep.status, 502) << dep.body << "\n" << d.log();
  EXPECT_EQ(ErrorCode(dep), "deploy_failed") << dep.body;
  EXPECT_THAT(ErrorMessage(dep), HasSubstr(image)) << dep.body;
  EXPECT_THAT(ErrorMessage(dep), HasSubstr("cannot start")) << dep.body;
  EXPECT_EQ(dep.json["error"]["details"].value("state", ""), "failed") << dep.body;
  // The failed `up` created the project's network: it is removed again.
  Json st = WaitForStatus(d.client(), name, [](const Json& s) {
    return s.value("state", "") == "failed" && !s.contains("project");
  });
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump();
  EXPECT_THAT(st.value("error", ""), HasSubstr(image)) << st.dump();
  EXPECT_TRUE(Eventually([&] { return ContainersOf(project).empty(); }))
      << ::testing::PrintToString(ContainersOf(project));
  EXPECT_TRUE(Eventually([&] { return NetworksOf(project).empty(); }))
      << ::testing::PrintToString(NetworksOf(project));
  EXPECT_EQ(Get(d.client(), "/discovery/services").json.value("count", -1), 0);
}

// ---- 4. A missing or invalid compose file -------------------------------------------------------

TEST(ComposeApi, MissingOrInvalidComposeFile) {
  ASSERT_DOCKER();
  const std::string nofile = RelicName("nofile");
  const std::string badyaml = RelicName("badyaml");
  const int port = FreeLoopbackPort();
  ProjectCleanup cleanup_nofile(nofile);
  ProjectCleanup cleanup_badyaml(badyaml);
  Daemon d({}, [&](const fs::path& m) {
    WriteRelicManifest(m, nofile,
                       "deployment:\n"
                       "  type: docker-compose\n"
                       "  compose_file: missing-compose.yml\n" +
                           Interface(Loopback(port)));
    // Line 5 is indented deeper than the mapping it is in.
    WriteComposeRelic(m, badyaml,
                      "version: \"2.4\"\n"
                      "services:\n"
                      "  web:\n"
                      "    image: cortex-test/busybox:1\n"
                      "      command: [\"httpd\", \"-f\"\n",
                      kFastHealth + Interface(Loopback(port)));
  });
  ASSERT_DAEMON(d);

  // No compose file: refused before anything is recorded.
  Reply missing = Deploy(d.client(), nofile);
  EXPECT_EQ(missing.status, 400) << missing.body;
  EXPECT_EQ(ErrorCode(missing), "invalid_argument") << missing.body;
  EXPECT_THAT(ErrorMessage(missing), HasSubstr("deployment.compose_file")) << missing.body;
  EXPECT_THAT(ErrorMessage(missing), HasSubstr("missing-compose.yml")) << missing.body;
  EXPECT_EQ(Get(d.client(), "/relics/" + nofile + "/status").status, 404);

  // An invalid one: the deploy fails with the CLI's explanation, naming the file and the line.
  Reply invalid = Deploy(d.client(), badyaml);
  ASSERT_EQ(invalid.status, 502) << invalid.body << "\n" << d.log();
  EXPECT_EQ(ErrorCode(invalid), "deploy_failed") << invalid.body;
  const std::string message = ErrorMessage(invalid);
  EXPECT_THAT(message, HasSubstr("relics/" + badyaml + "/docker-compose.yml is invalid"))
      << invalid.body;
  EXPECT_THAT(message, HasSubstr("line 5")) << invalid.body;
  Json st = StatusOf(d.client(), badyaml);
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump();
  EXPECT_FALSE(st.contains("project")) << st.dump();
  EXPECT_THAT(ContainersOf(ProjectOf(badyaml)), IsEmpty());
  EXPECT_THAT(NetworksOf(ProjectOf(badyaml)), IsEmpty());
}

// ---- 5. A health check that never passes --------------------------------------------------------

TEST(ComposeApi, HealthCheckThatNeverPassesFailsAndRemovesTheContainers) {
  ASSERT_DOCKER();
  const std::string name = RelicName("sick");
  const std::string project = ProjectOf(name);
  const int port = FreeLoopbackPort();
  ProjectCleanup cleanup(name);
  Daemon d({}, [&](const fs::path& m) {
    WriteComposeRelic(m, name, ComposeFile(kHttpd, Published(port)),
                      "health_check:\n"
                      "  type: http\n"
                      "  endpoint: /nope\n"
                      "  interval: 100ms\n"
                      "  timeout: 1s\n"
                      "  start_period: 1s\n" +
                          Interface(Loopback(port)));
  });
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), name);
  ASSERT_EQ(dep.status, 502) << dep.body << "\n" << d.log();
  EXPECT_EQ(ErrorCode(dep), "deploy_failed") << dep.body;
  const std::string probe = "GET " + Loopback(port) + "/nope: status 404";
  EXPECT_THAT(ErrorMessage(dep), HasSubstr("did not pass within 1000 ms")) << dep.body;
  EXPECT_THAT(ErrorMessage(dep), HasSubstr(probe)) << dep.body;
  const Json details = dep.json["error"]["details"];
  EXPECT_EQ(details.value("state", ""), "failed") << dep.body;
  EXPECT_THAT(details["health"].value("last_error", ""), HasSubstr(probe)) << dep.body;
  // The project was taken down before the relic was reported failed.
  EXPECT_FALSE(details.contains("project")) << dep.body;
  EXPECT_THAT(ContainersOf(project), IsEmpty());
  EXPECT_THAT(NetworksOf(project), IsEmpty());
  Json st = StatusOf(d.client(), name);
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump();
  EXPECT_EQ(st.value("restarts", -1), 0) << st.dump();
}

// ---- 6. Scale -----------------------------------------------------------------------------------

// The number of running containers the relic's status shows.
int RuntimeRunning(const Json& status) {
  int n = 0;
  if (status.contains("runtime") && status["runtime"].contains("containers")) {
    for (const Json& c : status["runtime"]["containers"]) n += c.value("state", "") == "running";
  }
  return n;
}

TEST(ComposeApi, ScaleAServiceUpAndDown) {
  ASSERT_DOCKER();
  const std::string name = RelicName("scaled");
  const std::string project = ProjectOf(name);
  const std::string proc = RelicName("proc");
  const std::string marker = "cpt-scale-" + std::to_string(::getpid());
  KillAtEnd kill_proc(marker);
  ProjectCleanup cleanup(name);
  Daemon d({}, [&](const fs::path& m) {
    // No fixed host port (Docker picks one per container): the service can have replicas.
    WriteComposeRelic(m, name, ComposeFile(kHttpd, R"(["127.0.0.1::80"])"), kFastHealth);
    WriteRelicManifest(m, proc,
                       "deployment:\n"
                       "  type: process\n"
                       "  command: [\"sh\", \"-c\", \"sleep 300; true\", \"" +
                           marker + "\"]\n");
  });
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), name);
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();
  ASSERT_THAT(RunningContainersOf(project), SizeIs(1));

  // Up to 2 (the only service: no need to name it).
  Reply up = Post(d.client(), "/relics/" + name + "/scale", R"({"replicas": 2})");
  ASSERT_EQ(up.status, 200) << up.body << "\n" << d.log();
  EXPECT_EQ(up.json.value("name", ""), name) << up.body;
  EXPECT_THAT(RunningContainersOf(project), SizeIs(2));
  Json st = WaitForStatus(d.client(), name, [](const Json& s) { return RuntimeRunning(s) == 2; });
  EXPECT_EQ(RuntimeRunning(st), 2) << st.dump();
  EXPECT_EQ(st.value("state", ""), "healthy") << st.dump();
  std::set<std::string> host_ports;
  for (const auto& c : RunningContainersOf(project)) {
    EXPECT_EQ(c.labels.count("cortex.relic") ? c.labels.at("cortex.relic") : "", name) << c.name;
    for (const auto& p : c.ports) host_ports.insert(std::to_string(p.host_port));
  }
  EXPECT_THAT(host_ports, SizeIs(2)) << "each replica publishes its own host port";

  // Back to 1, naming the service.
  Reply down =
      Post(d.client(), "/relics/" + name + "/scale", R"({"service": "web", "replicas": 1})");
  ASSERT_EQ(down.status, 200) << down.body << "\n" << d.log();
  EXPECT_TRUE(Eventually([&] { return RunningContainersOf(project).size() == 1; }))
      << ::testing::PrintToString(ContainersOf(project));
  st = WaitForStatus(d.client(), name, [](const Json& s) {
    return RuntimeRunning(s) == 1 && s["runtime"]["containers"].size() == 1;
  });
  EXPECT_EQ(RuntimeRunning(st), 1) << st.dump();
  EXPECT_EQ(st.value("state", ""), "healthy") << st.dump();

  // A service the compose file does not have: 400 listing the ones it has.
  Reply unknown =
      Post(d.client(), "/relics/" + name + "/scale", R"({"service": "nope", "replicas": 2})");
  EXPECT_EQ(unknown.status, 400) << unknown.body;
  EXPECT_EQ(ErrorCode(unknown), "invalid_argument") << unknown.body;
  EXPECT_THAT(ErrorMessage(unknown), HasSubstr("'nope'")) << unknown.body;
  EXPECT_THAT(ErrorMessage(unknown), HasSubstr("its services: web")) << unknown.body;
  EXPECT_THAT(RunningContainersOf(project), SizeIs(1));
  Reply bad = Post(d.client(), "/relics/" + name + "/scale", R"({"replicas": -1})");
  EXPECT_EQ(bad.status, 400) << bad.body;
  Reply ghost = Post(d.client(), "/relics/ghost/scale", R"({"replicas": 1})");
  EXPECT_EQ(ghost.status, 404) << ghost.body;

  // A process relic cannot be scaled.
  Reply proc_dep = Deploy(d.client(), proc);
  ASSERT_EQ(proc_dep.status, 200) << proc_dep.body << "\n" << d.log();
  Reply proc_scale = Post(d.client(), "/relics/" + proc + "/scale", R"({"replicas": 2})");
  EXPECT_EQ(proc_scale.status, 409) << proc_scale.body;
  EXPECT_EQ(ErrorCode(proc_scale), "failed_precondition") << proc_scale.body;
  EXPECT_THAT(ErrorMessage(proc_scale), HasSubstr("process relics cannot be scaled"))
      << proc_scale.body;
  EXPECT_THAT(PidsMatching(marker), SizeIs(1));
  EXPECT_EQ(Post(d.client(), "/relics/" + proc + "/stop", "").status, 200);
}

// ---- 7. Adoption by a restarted server ----------------------------------------------------------

TEST(ComposeApi, RestartedServerAdoptsTheRunningProject) {
  ASSERT_DOCKER();
  const std::string name = RelicName("adopted");
  const std::string project = ProjectOf(name);
  const int port = FreeLoopbackPort();
  ProjectCleanup cleanup(name);
  auto write = [&](const fs::path& m) {
    WriteComposeRelic(m, name, ComposeFile(kHttpd, Published(port)),
                      kFastHealth + Interface(Loopback(port)));
  };
  Daemon first({}, write);
  ASSERT_DAEMON(first);
  Reply dep = Deploy(first.client(), name);
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << first.log();
  std::vector<docker::Container> before = RunningContainersOf(project);
  ASSERT_THAT(before, SizeIs(1));

  // kill -9 of the server: the project runs on, and the next server adopts it.
  ASSERT_EQ(::kill(first.pid(), SIGKILL), 0);
  first.Stop();
  auto second = RestartOn(first.data_dir(), write);
  ASSERT_DAEMON(*second);
  Json st = WaitForStatus(second->client(), name,
                          [](const Json& s) { return s.value("state", "") == "healthy"; });
  ASSERT_EQ(st.value("state", ""), "healthy") << st.dump() << "\n" << second->log();
  EXPECT_EQ(st.value("project", ""), project) << st.dump();
  EXPECT_EQ(st.value("restarts", -1), 0) << st.dump();
  // The same container, not recreated nor restarted, and only it.
  std::vector<docker::Container> after = RunningContainersOf(project);
  ASSERT_THAT(after, SizeIs(1));
  EXPECT_EQ(after[0].id, before[0].id);
  EXPECT_EQ(after[0].started_ms, before[0].started_ms);
  EXPECT_THAT(ContainersOf(project), SizeIs(1));
  Reply page = Call(second->client(), name, "page", {{"page", "health"}});
  EXPECT_EQ(page.status, 200) << page.body;
  // Deploying it again leaves it as it is.
  Reply again = Deploy(second->client(), name);
  EXPECT_EQ(again.status, 200) << again.body;
  after = RunningContainersOf(project);
  ASSERT_THAT(after, SizeIs(1));
  EXPECT_EQ(after[0].id, before[0].id);

  // The adopted project still stops.
  Reply stop = Post(second->client(), "/relics/" + name + "/stop", "");
  EXPECT_EQ(stop.status, 200) << stop.body;
  EXPECT_EQ(stop.json.value("state", ""), "stopped") << stop.body;
  EXPECT_THAT(ContainersOf(project), IsEmpty());
}

// ---- 8. Docker down -----------------------------------------------------------------------------

TEST(ComposeApi, DockerDownIsA503) {
  // A server whose Docker socket answers nothing (deploy.docker_socket): compose relics are
  // refused with a 503 naming the socket, process relics still deploy.
  const std::string name = RelicName("nodocker");
  const int port = FreeLoopbackPort();
  const std::string marker = "cortex-nodocker-" + std::to_string(::getpid());
  KillAtEnd kill(marker);
  Config config("deploy:\n  docker_socket: /nonexistent/docker.sock\n");
  Daemon d(config.flags(), [&](const fs::path& m) {
    WriteComposeRelic(m, name, ComposeFile(kHttpd, Published(port)), kFastHealth);
    WriteRelicManifest(m, "plain",
                       "deployment:\n"
                       "  type: process\n"
                       "  command: [\"python3\", \"-c\", \"import time; time.sleep(600)\", \"" +
                           marker + "\"]\n");
  });
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), name);
  EXPECT_EQ(dep.status, 503) << dep.body;
  EXPECT_EQ(ErrorCode(dep), "unavailable") << dep.body;
  EXPECT_THAT(ErrorMessage(dep), HasSubstr("/nonexistent/docker.sock")) << dep.body;
  EXPECT_EQ(Get(d.client(), "/relics/" + name + "/status").status, 404)
      << "a refused deploy was recorded";
  Reply plain = Deploy(d.client(), "plain");
  EXPECT_EQ(plain.status, 200) << plain.body << "\n" << d.log();
  EXPECT_EQ(Post(d.client(), "/relics/plain/stop", "").status, 200);
}

// ---- 9. A container that keeps exiting ----------------------------------------------------------

TEST(ComposeApi, ExitingContainerIsRestartedThenFailed) {
  ASSERT_DOCKER();
  const std::string name = RelicName("exits");
  const std::string project = ProjectOf(name);
  const int never = FreeLoopbackPort();
  ProjectCleanup cleanup(name);
  Config config("deploy:\n  max_restarts: 1\n");
  Daemon d(config.flags(), [&](const fs::path& m) {
    // Docker does not restart it (restart: "no"): Cortex does, per its own policy. The check
    // (a port nothing listens on) cannot pass, so only the exits decide.
    WriteComposeRelic(
        m, name,
        ComposeFile(R"(["sh", "-c", "echo exiting now; exit 3"])", "[]", "    restart: \"no\"\n"),
        "health_check: {type: tcp, port: " + std::to_string(never) +
            ", interval: 100ms, start_period: 30s}\n");
  });
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), name);
  EXPECT_EQ(dep.status, 502) << dep.body << "\n" << d.log();
  Json st = WaitForStatus(d.client(), name,
                          [](const Json& s) { return s.value("state", "") == "failed"; });
  ASSERT_EQ(st.value("state", ""), "failed") << st.dump() << "\n" << d.log();
  const std::string error = st.value("error", "");
  EXPECT_THAT(error, HasSubstr("crashed 2 times in a row")) << st.dump();
  EXPECT_THAT(error, HasSubstr("exit code 3")) << st.dump();
  EXPECT_THAT(error, HasSubstr("exiting now")) << st.dump();  // its last output
  EXPECT_EQ(st.value("restarts", -1), 1) << st.dump();
  EXPECT_EQ(st.value("desired", ""), "running") << st.dump();
  if (dep.status == 502) {
    EXPECT_EQ(ErrorCode(dep), "deploy_failed") << dep.body;
    EXPECT_THAT(ErrorMessage(dep), HasSubstr("exit code 3")) << dep.body;
  }
  // Both runs are in its logs.
  std::vector<std::string> lines = LogLines(d.client(), name);
  int runs = 0;
  for (const auto& l : lines) runs += l.find("exiting now") != std::string::npos;
  EXPECT_EQ(runs, 2) << Joined(lines);
  // Nothing runs, and it stays failed (no more restarts).
  EXPECT_THAT(RunningContainersOf(project), IsEmpty());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  Json later = StatusOf(d.client(), name);
  EXPECT_EQ(later.value("state", ""), "failed") << later.dump();
  EXPECT_EQ(later.value("restarts", -1), 1) << later.dump();

  // The failed relic keeps its exited container (so its logs above can still be read) and
  // still names its project.
  EXPECT_EQ(later.value("project", ""), project) << later.dump();

  // Deleted: what Compose created for it is removed.
  Reply del = ToReply(d.client().Delete("/relics/" + name));
  EXPECT_EQ(del.status, 200) << del.body;
  EXPECT_THAT(ContainersOf(project), IsEmpty());
  EXPECT_THAT(NetworksOf(project), IsEmpty());
}

}  // namespace
}  // namespace cortex::testing
