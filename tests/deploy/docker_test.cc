// The Docker layer against a real Docker engine (started by docker_env.h when none answers):
// the Engine API client (deploy/docker.h) and the Compose CLI wrapper (deploy/compose.h).
// One compose project per test process is brought up once for the read-only tests; the tests
// that change or break things use projects of their own. Everything carries the label
// cortex.test=<run id> and is removed by it at the end, even when a test fails.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "deploy/compose.h"
#include "deploy/docker.h"
#include "deploy/docker_env.h"
#include "free_port.h"

namespace cortex::deploy {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::kTestImage;
using testing::kTestLabel;
using testing::WaitFor;

constexpr seconds kStopTimeout{1};  // every service runs under `init: true`: SIGTERM works

// The shared project: an HTTP server on a fixed (free) host port, a chatty worker on an
// ephemeral port (scalable), a TTY service, and one that exits 3.
constexpr const char* kComposeYaml = R"(services:
  web:
    image: ${TEST_IMAGE}
    init: true
    command: ["httpd", "-f", "-vv", "-p", "80", "-h", "/www"]
    ports: ["127.0.0.1:${WEB_PORT}:80"]
  worker:
    image: ${TEST_IMAGE}
    init: true
    command: ["sh", "-c", "echo started; echo warning-on-stderr >&2; i=0; while true; do i=$$((i+1)); echo tick $$i; sleep 0.2; done"]
    ports: ["80"]
  console:
    image: ${TEST_IMAGE}
    init: true
    tty: true
    command: ["sh", "-c", "echo tty-one; echo tty-two; exec sleep 3600"]
  oneshot:
    image: ${TEST_IMAGE}
    init: true
    restart: "no"
    command: ["sh", "-c", "echo one; echo two >&2; exit 3"]
)";

// GET http://127.0.0.1:<port><path> with HTTP/1.0; the whole reply, or nullopt.
std::optional<std::string> HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv = {2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) reply.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  if (reply.empty()) return std::nullopt;
  return reply;
}

bool HasLine(const std::vector<docker::LogLine>& lines, const std::string& text, bool is_stderr) {
  return std::any_of(lines.begin(), lines.end(), [&](const docker::LogLine& l) {
    return l.text == text && l.is_stderr == is_stderr;
  });
}

class DockerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_ = new Shared;
    Status st = testing::EnsureDocker();
    if (!st.ok()) {
      shared_->setup_error = st.ToString();
      return;
    }
    shared_->client = std::make_unique<docker::Client>(testing::SocketPath());
    testing::RemoveStaleTestResources(*shared_->client);
    auto runner = std::shared_ptr<exec::ProcessRunner>(exec::MakeProcessRunner());
    st = testing::EnsureTestImage(*runner);
    if (!st.ok()) {
      shared_->setup_error = "building " + std::string(kTestImage) + ": " + st.ToString();
      return;
    }
    ComposeOptions options;
    options.path_env = testing::PathEnv();
    options.home = testing::Getenv("HOME");
    options.docker_host = testing::Getenv("DOCKER_HOST");
    options.runner = runner;
    auto cli = ComposeCli::Detect(options);
    if (!cli.ok()) {
      shared_->setup_error = cli.status().ToString();
      return;
    }
    shared_->cli = std::make_unique<ComposeCli>(std::move(cli).value());

    shared_->run_id = testing::NewRunId();
    std::string tmpl = (fs::temp_directory_path() / "docker_test.XXXXXX").string();
    shared_->dir = ::mkdtemp(tmpl.data());
    shared_->web_port = cortex::testing::FreeLoopbackPort();
  }

  // Everything goes by label, through the Engine API (faster than `down`, which has a test).
  static void TearDownTestSuite() {
    if (shared_->client && !shared_->run_id.empty()) {
      Status st = testing::RemoveLabeled(*shared_->client, kTestLabel, shared_->run_id);
      if (!st.ok()) ADD_FAILURE() << "cleanup: " << st.ToString();
      auto left = shared_->client->ListContainers({{kTestLabel, shared_->run_id}}, true);
      EXPECT_TRUE(left.ok() && left->empty()) << "containers left behind";
      auto nets = shared_->client->ListNetworks({{kTestLabel, shared_->run_id}});
      EXPECT_TRUE(nets.ok() && nets->empty()) << "networks left behind";
    }
    std::error_code ec;
    if (!shared_->dir.empty()) fs::remove_all(shared_->dir, ec);
    delete shared_;
    shared_ = nullptr;
  }

  void SetUp() override { ASSERT_TRUE(shared_->setup_error.empty()) << shared_->setup_error; }

  // A project named cortex_t<run>_<suffix> with its compose file written under the temp dir.
  static ComposeProject MakeProject(const std::string& suffix, const std::string& yaml) {
    ComposeProject p;
    p.name = ComposeProjectName("t" + shared_->run_id + "_" + suffix);
    fs::path dir = fs::path(shared_->dir) / suffix;
    fs::create_directories(dir);
    p.compose_file = (dir / "compose.yml").string();
    std::ofstream(p.compose_file) << yaml;
    p.project_dir = dir.string();
    p.labels = {
        {kTestLabel, shared_->run_id}, {"cortex.managed", "true"}, {"cortex.relic", suffix}};
    p.env = {"TEST_IMAGE=" + std::string(kTestImage),
             "WEB_PORT=" + std::to_string(shared_->web_port)};
    p.override_dir = (fs::path(shared_->dir) / "overrides").string();
    return p;
  }

  static docker::Client& client() { return *shared_->client; }
  static const ComposeCli& cli() { return *shared_->cli; }
  static const ComposeProject& project() { return shared_->project; }

  // Brings these services of the shared project up, on first use: ctest runs each test in its
  // own process, so a test starts only what it needs. The services not asked for yet are kept
  // at 0 replicas (and an `up` only ever adds services, so earlier tests' containers stay).
  static Status UpShared(const std::vector<std::string>& services) {
    if (!shared_->project_status.ok()) return shared_->project_status;
    if (shared_->project.name.empty()) shared_->project = MakeProject("main", kComposeYaml);
    bool new_service = false;
    for (const auto& s : services) new_service |= shared_->started.insert(s).second;
    if (!new_service) return Status::Ok();
    std::map<std::string, int> scale;
    for (const char* s : {"web", "worker", "console", "oneshot"}) {
      if (!shared_->started.count(s)) scale[s] = 0;
    }
    auto up = cli().Up(shared_->project, scale);
    if (!up.ok()) shared_->project_status = up.status().WithPrefix("shared project up");
    return shared_->project_status;
  }

  // The project's containers of one service (all states).
  static std::vector<docker::Container> ServiceContainers(const ComposeProject& p,
                                                          const std::string& service) {
    auto list = client().ListContainers(
        {{docker::kComposeProjectLabel, p.name}, {docker::kComposeServiceLabel, service}}, true);
    EXPECT_TRUE(list.ok()) << list.status().ToString();
    return list.ok() ? *list : std::vector<docker::Container>{};
  }

  static std::string OneId(const std::string& service) {
    auto containers = ServiceContainers(project(), service);
    return containers.empty() ? "" : containers[0].id;
  }

  struct Shared {
    std::string setup_error;
    std::unique_ptr<docker::Client> client;
    std::unique_ptr<ComposeCli> cli;
    std::string run_id, dir;
    int web_port = 0;
    ComposeProject project;  // the shared one, once UpShared ran
    Status project_status;
    std::set<std::string> started;  // its services brought up so far
  };
  static Shared* shared_;
};

DockerTest::Shared* DockerTest::shared_ = nullptr;

TEST_F(DockerTest, PingAnswers) { EXPECT_TRUE(client().Ping().ok()); }

TEST_F(DockerTest, PingOfAMissingSocketIsUnavailable) {
  docker::Client missing("/tmp/cortex-no-such-dir/docker.sock", seconds(2));
  Status st = missing.Ping();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("the Docker daemon is not answering at "
                              "/tmp/cortex-no-such-dir/docker.sock"),
            std::string::npos)
      << st.message();
  auto list = missing.ListContainers({}, true);
  EXPECT_EQ(list.status().code(), StatusCode::kUnavailable);
}

TEST_F(DockerTest, DetectFindsACli) {
  ASSERT_FALSE(cli().command().empty());
  EXPECT_TRUE(fs::path(cli().command()[0]).is_absolute());
  auto none = ComposeCli::Detect("/nonexistent-dir");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("docker compose"), std::string::npos);
  EXPECT_NE(none.status().message().find("docker-compose"), std::string::npos);
}

TEST_F(DockerTest, UpListsTheContainerWithItsPortAndItServesHttp) {
  Status up = UpShared({"web"});
  ASSERT_TRUE(up.ok()) << up.ToString();
  auto list = client().ListContainers(
      {{kTestLabel, shared_->run_id}, {docker::kComposeProjectLabel, project().name}}, false);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  auto web = std::find_if(list->begin(), list->end(),
                          [](const docker::Container& c) { return c.service == "web"; });
  ASSERT_NE(web, list->end());
  EXPECT_EQ(web->state, "running");
  EXPECT_EQ(web->image, kTestImage);
  EXPECT_EQ(web->labels.at("cortex.relic"), "main");
  EXPECT_EQ(web->labels.at("cortex.managed"), "true");
  EXPECT_NE(web->status.find("Up"), std::string::npos) << web->status;
  EXPECT_EQ(web->health, "");
  EXPECT_GT(web->started_ms, 0);
  EXPECT_EQ(web->finished_ms, 0);
  ASSERT_EQ(web->ports.size(), 1u);
  EXPECT_EQ(web->ports[0].container_port, 80);
  EXPECT_EQ(web->ports[0].protocol, "tcp");
  EXPECT_EQ(web->ports[0].host_ip, "127.0.0.1");
  EXPECT_EQ(web->ports[0].host_port, shared_->web_port);

  std::optional<std::string> reply;
  EXPECT_TRUE(WaitFor(
      [&] {
        reply = HttpGet(shared_->web_port, "/health");
        return reply.has_value();
      },
      seconds(10)));
  ASSERT_TRUE(reply.has_value());
  EXPECT_NE(reply->find("200 OK"), std::string::npos) << *reply;
  EXPECT_NE(reply->find("\r\n\r\nok\n"), std::string::npos) << *reply;

  // The override file labelled the default network too.
  auto networks = client().ListNetworks({{kTestLabel, shared_->run_id}});
  ASSERT_TRUE(networks.ok()) << networks.status().ToString();
  auto net = std::find_if(networks->begin(), networks->end(), [](const docker::Network& n) {
    return n.labels.count(docker::kComposeProjectLabel) &&
           n.labels.at(docker::kComposeProjectLabel) == project().name;
  });
  ASSERT_NE(net, networks->end());
  EXPECT_EQ(net->driver, "bridge");
  EXPECT_EQ(net->labels.at("cortex.relic"), "main");

  auto services = cli().Services(project());
  ASSERT_TRUE(services.ok()) << services.status().ToString();
  std::vector<std::string> sorted = *services;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<std::string>{"console", "oneshot", "web", "worker"}));
}

TEST_F(DockerTest, InspectOfAnUnknownContainerIsNotFound) {
  auto c = client().Inspect("cortex-no-such-container");
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("No such container"), std::string::npos)
      << c.status().message();
  EXPECT_EQ(client().Logs("cortex-no-such-container", 10).status().code(), StatusCode::kNotFound);
}

TEST_F(DockerTest, LogsDemultiplexStdoutAndStderr) {
  Status up = UpShared({"worker"});
  ASSERT_TRUE(up.ok()) << up.ToString();
  std::string id = OneId("worker");
  ASSERT_FALSE(id.empty());
  std::vector<docker::LogLine> lines;
  EXPECT_TRUE(WaitFor(
      [&] {
        auto r = client().Logs(id, docker::kAllLines);
        if (r.ok()) lines = *r;
        return HasLine(lines, "started", false) && HasLine(lines, "warning-on-stderr", true) &&
               HasLine(lines, "tick 2", false);
      },
      seconds(10)));
  ASSERT_FALSE(lines.empty());
  EXPECT_GT(lines[0].time_ms, 0);
  auto tail = client().Logs(id, 2);
  ASSERT_TRUE(tail.ok()) << tail.status().ToString();
  EXPECT_EQ(tail->size(), 2u);
}

TEST_F(DockerTest, LogsOfATtyContainerHaveNoHeaders) {
  Status up = UpShared({"console"});
  ASSERT_TRUE(up.ok()) << up.ToString();
  std::string id = OneId("console");
  ASSERT_FALSE(id.empty());
  std::vector<docker::LogLine> lines;
  EXPECT_TRUE(WaitFor(
      [&] {
        auto r = client().Logs(id, docker::kAllLines);
        if (r.ok()) lines = *r;
        return lines.size() >= 2;
      },
      seconds(10)));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].text, "tty-one");  // no "\r", no frame header bytes
  EXPECT_EQ(lines[1].text, "tty-two");
  EXPECT_FALSE(lines[0].is_stderr);
}

TEST_F(DockerTest, FollowLogsStopsWhenTheCallbackSaysSo) {
  Status up = UpShared({"worker"});
  ASSERT_TRUE(up.ok()) << up.ToString();
  std::string id = OneId("worker");
  ASSERT_FALSE(id.empty());
  std::vector<std::string> seen;
  auto start = std::chrono::steady_clock::now();
  Status st = client().FollowLogs(id, 1, [&](const docker::LogLine& line) {
    seen.push_back(line.text);
    return seen.size() < 4;  // the tail line, then 3 new ones (5 a second)
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(seen.size(), 4u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
  // The tail line may be an earlier one ("warning-on-stderr") when the follow starts before the
  // first tick; the new lines are ticks.
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_EQ(seen[i].rfind("tick ", 0), 0u) << seen[i];
}

TEST_F(DockerTest, FollowLogsReturnsWhenCancelled) {
  Status up = UpShared({"console"});
  ASSERT_TRUE(up.ok()) << up.ToString();
  std::string id = OneId("console");  // silent after its two lines
  ASSERT_FALSE(id.empty());
  exec::CancelToken cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(milliseconds(300));  // the follow must be blocked by then
    cancel.Cancel();
  });
  auto start = std::chrono::steady_clock::now();
  int lines = 0;
  Status st = client().FollowLogs(
      id, 0,
      [&](const docker::LogLine&) {
        ++lines;
        return true;
      },
      &cancel);
  canceller.join();
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(lines, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(3));
}

TEST_F(DockerTest, FollowLogsEndsWithTheContainerAndItsExitCodeIsKept) {
  Status up = UpShared({"oneshot"});
  ASSERT_TRUE(up.ok()) << up.ToString();
  std::vector<docker::Container> oneshot;
  ASSERT_TRUE(WaitFor(
      [&] {
        oneshot = ServiceContainers(project(), "oneshot");
        return oneshot.size() == 1 && oneshot[0].state == "exited";
      },
      seconds(10)));
  EXPECT_EQ(oneshot[0].exit_code, 3);
  EXPECT_GT(oneshot[0].started_ms, 0);
  // Not compared with started_ms: for a container this short-lived the daemon records its exit
  // before it records the start (FinishedAt < StartedAt by a few ms).
  EXPECT_GT(oneshot[0].finished_ms, 0);
  std::vector<docker::LogLine> lines;
  Status st = client().FollowLogs(oneshot[0].id, docker::kAllLines, [&](const docker::LogLine& l) {
    lines.push_back(l);
    return true;
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(HasLine(lines, "one", false));
  EXPECT_TRUE(HasLine(lines, "two", true));
  // Only running containers are listed without `all`.
  auto running = client().ListContainers({{docker::kComposeProjectLabel, project().name}}, false);
  ASSERT_TRUE(running.ok());
  for (const auto& c : *running) EXPECT_NE(c.service, "oneshot");
}

TEST_F(DockerTest, OneShotStats) {
  Status up = UpShared({"web"});
  ASSERT_TRUE(up.ok()) << up.ToString();
  std::string id = OneId("web");
  ASSERT_FALSE(id.empty());
  auto stats = client().OneShotStats(id);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_GT(stats->memory_usage_bytes, 0u);
  EXPECT_GT(stats->memory_limit_bytes, stats->memory_usage_bytes);
  EXPECT_GE(stats->cpu_percent, 0.0);
  EXPECT_GE(stats->pids, 1u);
}

TEST_F(DockerTest, ScaleToTwoReplicasAndBack) {
  Status up = UpShared({"web", "worker"});
  ASSERT_TRUE(up.ok()) << up.ToString();
  auto scaled = cli().Scale(project(), "worker", 2);
  ASSERT_TRUE(scaled.ok()) << scaled.status().ToString();
  auto workers = ServiceContainers(project(), "worker");
  ASSERT_EQ(workers.size(), 2u);
  for (const auto& w : workers) {
    EXPECT_EQ(w.state, "running");
    ASSERT_EQ(w.ports.size() >= 1, true);
    EXPECT_GT(w.ports[0].host_port, 0);
    EXPECT_EQ(w.labels.at(kTestLabel), shared_->run_id);
  }
  EXPECT_NE(workers[0].ports[0].host_port, workers[1].ports[0].host_port);
  EXPECT_EQ(ServiceContainers(project(), "web").size(), 1u);  // other services left alone

  auto back = cli().Scale(project(), "worker", 1);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(ServiceContainers(project(), "worker").size(), 1u);

  auto unknown = cli().Scale(project(), "wrokre", 2);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("'wrokre'"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("console, oneshot, web, worker"), std::string::npos)
      << unknown.status().message();
}

TEST_F(DockerTest, StopStartRestartAndDownRemoveEverything) {
  ComposeProject p = MakeProject("down", R"(services:
  app:
    image: ${TEST_IMAGE}
    init: true
    command: ["sleep", "3600"]
    volumes: ["data:/data"]
volumes:
  data: {}
)");
  auto up = cli().Up(p);
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  EXPECT_GT(up->duration.count(), 0);
  docker::LabelFilter mine = {{docker::kComposeProjectLabel, p.name}};
  auto app = ServiceContainers(p, "app");
  ASSERT_EQ(app.size(), 1u);
  EXPECT_EQ(app[0].state, "running");
  auto networks = client().ListNetworks(mine);
  ASSERT_TRUE(networks.ok());
  ASSERT_EQ(networks->size(), 1u);
  EXPECT_EQ(networks->at(0).labels.at("cortex.relic"), "down");

  ASSERT_TRUE(cli().Stop(p, kStopTimeout).ok());
  app = ServiceContainers(p, "app");
  ASSERT_EQ(app.size(), 1u);
  EXPECT_EQ(app[0].state, "exited");
  ASSERT_TRUE(cli().Start(p).ok());
  EXPECT_EQ(ServiceContainers(p, "app").at(0).state, "running");
  int64_t started = ServiceContainers(p, "app").at(0).started_ms;
  ASSERT_TRUE(cli().Restart(p, kStopTimeout).ok());
  app = ServiceContainers(p, "app");
  ASSERT_EQ(app.size(), 1u);
  EXPECT_EQ(app[0].state, "running");
  EXPECT_GE(app[0].started_ms, started);

  auto start = std::chrono::steady_clock::now();
  auto down = cli().Down(p, kStopTimeout);
  ASSERT_TRUE(down.ok()) << down.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(8));
  EXPECT_TRUE(ServiceContainers(p, "app").empty());
  networks = client().ListNetworks(mine);
  ASSERT_TRUE(networks.ok());
  EXPECT_TRUE(networks->empty());
  // The named volume went too (-v); nothing of this project is left under the test label.
  EXPECT_TRUE(
      client().RemoveVolumes({{"cortex.relic", "down"}, {kTestLabel, shared_->run_id}}).ok());
}

TEST_F(DockerTest, UpWithAnImageNoOneBuiltSaysHowToBuildIt) {
  // No registry is reachable here (as on many machines that run Cortex): the pull fails, and
  // the error says which image and how to make it, not only the CLI's pull error.
  ComposeProject p = MakeProject("unbuilt", R"(services:
  app:
    image: cortex-test/never-built:1
    command: ["sleep", "60"]
)");
  auto r = cli().Up(p, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status().message();
  EXPECT_NE(r.status().message().find("hint: the image cortex-test/never-built"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("docker build -t cortex-test/never-built"), std::string::npos)
      << r.status().message();
  (void)cli().Down(p, std::chrono::seconds(1));
}

TEST_F(DockerTest, ValidateNamesAMissingFile) {
  ComposeProject p = MakeProject("missing", "services: {}\n");
  p.compose_file = shared_->dir + "/missing/nope.yml";
  auto r = cli().Validate(p);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(p.compose_file), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("does not exist"), std::string::npos);
}

TEST_F(DockerTest, ValidateExplainsInvalidYaml) {
  ComposeProject p = MakeProject("invalid", "services:\n  web: [\n");
  auto r = cli().Validate(p);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("compose file " + p.compose_file + " is invalid"),
            std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("line 3"), std::string::npos) << r.status().message();

  ComposeProject ok = MakeProject("valid", kComposeYaml);
  auto valid = cli().Validate(ok);
  EXPECT_TRUE(valid.ok()) << valid.status().ToString();
}

TEST_F(DockerTest, UpOfAMissingImageFailsNamingIt) {
  ComposeProject p = MakeProject("noimage", R"(services:
  app:
    image: cortex-test/does-not-exist:404
    init: true
)");
  auto up = cli().Up(p);
  ASSERT_FALSE(up.ok());
  EXPECT_NE(up.status().message().find("cortex-test/does-not-exist"), std::string::npos)
      << up.status().message();
  EXPECT_NE(up.status().message().find("up (project " + p.name + ") failed"), std::string::npos)
      << up.status().message();
  // The network it created before failing carries the labels: cleanup by label finds it.
  EXPECT_TRUE(testing::RemoveLabeled(client(), "cortex.relic", "noimage").ok());
}

TEST_F(DockerTest, CreateNetworkTwiceReturnsTheSameId) {
  std::string name = "cortex_t" + shared_->run_id + "_net";
  std::map<std::string, std::string> labels = {{kTestLabel, shared_->run_id}};
  auto first = client().CreateNetwork(name, labels);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = client().CreateNetwork(name, labels);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(*first, *second);
  auto listed = client().ListNetworks({{kTestLabel, shared_->run_id}});
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(std::count_if(listed->begin(), listed->end(),
                          [&](const docker::Network& n) { return n.name == name; }),
            1);
  EXPECT_TRUE(client().RemoveNetwork(name).ok());
  EXPECT_TRUE(client().RemoveNetwork(name).ok());  // already gone: fine
}

TEST_F(DockerTest, ImageExists) {
  auto yes = client().ImageExists(kTestImage);
  ASSERT_TRUE(yes.ok()) << yes.status().ToString();
  EXPECT_TRUE(*yes);
  auto no = client().ImageExists("cortex-test/does-not-exist:404");
  ASSERT_TRUE(no.ok()) << no.status().ToString();
  EXPECT_FALSE(*no);
}

TEST_F(DockerTest, ComposeProjectNameIsWhatComposeAccepts) {
  EXPECT_EQ(ComposeProjectName("web"), "cortex_web");
  EXPECT_EQ(ComposeProjectName("My.App v2"), "cortex_my_app_v2");
}

}  // namespace
}  // namespace cortex::deploy
