// Integration tests of the deployer: the real `cortex serve` on a free port, relics that are real
// processes (a small python3 HTTP server written by each test, or sh), driven over HTTP.
//
// Covered: deploy and wait, status, relic calls (path parameters, JSON body), discovery, logs
// (JSON and server-sent events), stop and delete; restart after a kill -9 of the relic; a crash
// loop ending failed; a health check that never passes; a port already in use; bad input;
// adoption of a running relic by a restarted server (after SIGKILL and after SIGTERM);
// deploy.stop_relics_on_exit; discovery published to a real redis-server; a workflow relic step
// by name.
//
// Every relic's command line carries a marker unique to the test (and to this test process):
// what is left running is found by it and killed by PID at the end of each test, even when it
// failed. Every wait is a condition wait with a deadline.

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "integration/api_reply.h"
#include "integration/daemon.h"
#include "integration/deploy_helpers.h"
#include "store/redis.h"
#include "store/redis_server.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// ---- Processes ----------------------------------------------------------------------------------

// A marker unique to this test process and test, put in the command line of its relics.
std::string Marker(const std::string& what) {
  return "dpt-" + what + "-" + std::to_string(::getpid());
}

// ---- The manifests ------------------------------------------------------------------------------

// The relic: a small JSON HTTP service on $PORT. GET /health answers $HEALTH_STATUS (200 by
// default); POST /set {key, value}; GET /get/<key>; POST /items/<id> echoes the id and the body.
// Every request but /health prints a line "request <METHOD> <path>".
constexpr char kRelicScript[] = R"PY(import json, os, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ["PORT"])
HEALTH = int(os.environ.get("HEALTH_STATUS", "200"))
DATA = {}


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt, *args):
        if not self.path.startswith("/health"):
            print("request %s %s" % (self.command, self.path), flush=True)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"null")

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health":
            return self.reply(HEALTH, {"status": "ok" if HEALTH == 200 else "sick"})
        if path.startswith("/get/"):
            key = urllib.parse.unquote(path[len("/get/"):])
            if key in DATA:
                return self.reply(200, {"key": key, "value": DATA[key]})
            return self.reply(404, {"error": "no key " + key})
        return self.reply(404, {"error": "not found"})

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        body = self.body()
        if path == "/set":
            DATA[str(body["key"])] = body["value"]
            return self.reply(200, {"success": True, "key": body["key"], "value": body["value"]})
        if path.startswith("/items/"):
            return self.reply(200, {"id": urllib.parse.unquote(path[len("/items/"):]), "body": body})
        return self.reply(404, {"error": "not found"})


print("relic %s listening on %d" % (os.environ["CORTEX_RELIC_NAME"], PORT), flush=True)
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
)PY";

constexpr char kFastHealth[] =
    "health_check:\n"
    "  type: http\n"
    "  endpoint: /health\n"
    "  interval: 200ms\n"
    "  timeout: 1s\n"
    "  retries: 2\n"
    "  start_period: 10s\n";

// The python relic `name` on `port`, its command line carrying `marker`. `extra_deployment` is
// added to the deployment block ("  env: {...}\n"); `health` replaces the fast HTTP check.
void WriteRelic(const fs::path& m, const std::string& name, int port, const std::string& marker,
                const std::string& extra_deployment = "", const std::string& health = kFastHealth) {
  WriteFile(m / "relics" / name / "relic.py", kRelicScript);
  WriteRelicManifest(m, name,
                     "deployment:\n"
                     "  type: process\n"
                     "  command: [\"python3\", \"-u\", \"./relic.py\", \"--tag\", \"" +
                         marker + "\"]\n" + "  port: " + std::to_string(port) +
                         "\n"
                         "  stop_timeout: 5s\n" +
                         extra_deployment + health +
                         "interface:\n"
                         "  type: rest_api\n"
                         "  endpoints:\n"
                         "    - {name: set, method: POST, path: /set}\n"
                         "    - {name: get, method: GET, path: \"/get/{key}\"}\n"
                         "    - {name: update, method: POST, path: \"/items/{id}\"}\n");
}

// ---- The API ------------------------------------------------------------------------------------

int64_t PidOf(const Json& status) {
  return status.is_object() && status.contains("pid") ? status["pid"].get<int64_t>() : 0;
}

int CountLinesWith(const std::vector<std::string>& lines, const std::string& text) {
  int n = 0;
  for (const auto& l : lines) n += l.find(text) != std::string::npos;
  return n;
}

// ---- 1. The whole life of a relic ---------------------------------------------------------------

TEST(DeployApi, DeployCallDiscoverLogStopDelete) {
  const std::string marker = Marker("life");
  const int port = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) { WriteRelic(m, "echo", port, marker); });
  ASSERT_DAEMON(d);
  const std::string base = "http://127.0.0.1:" + std::to_string(port);

  Reply empty = Get(d.client(), "/relics");
  ASSERT_EQ(empty.status, 200) << empty.body;
  EXPECT_EQ(empty.json.value("count", -1), 0) << empty.body;

  Reply dep = Deploy(d.client(), "echo");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();
  EXPECT_EQ(dep.json.value("state", ""), "healthy") << dep.body;

  // The status.
  Json st = StatusOf(d.client(), "echo");
  ASSERT_TRUE(st.is_object());
  EXPECT_EQ(st.value("name", ""), "echo");
  EXPECT_EQ(st.value("driver", ""), "process");
  EXPECT_EQ(st.value("desired", ""), "running");
  EXPECT_EQ(st.value("state", ""), "healthy");
  EXPECT_EQ(st.value("error", "?"), "");
  EXPECT_EQ(st.value("restarts", -1), 0);
  EXPECT_EQ(st.value("restart_policy", ""), "on-failure");
  EXPECT_EQ(st.value("base_url", ""), base);
  EXPECT_EQ(st["endpoints"], (Json{"set", "get", "update"}));
  EXPECT_EQ(st["health"].value("type", ""), "http");
  EXPECT_EQ(st["health"].value("status", ""), "passing");
  EXPECT_EQ(st["health"].value("consecutive_failures", -1), 0);
  EXPECT_GT(st["health"].value("last_probe_ms", int64_t{0}), 0);
  EXPECT_GT(st.value("created_ms", int64_t{0}), 0);
  EXPECT_GE(st.value("started_ms", int64_t{0}), st.value("created_ms", int64_t{0}));
  EXPECT_EQ(st["links"].value("logs", ""), "/relics/echo/logs");
  const int64_t pid = PidOf(st);
  ASSERT_GT(pid, 0) << st.dump();
  EXPECT_EQ(st["runtime"].value("pid", int64_t{0}), pid);
  EXPECT_TRUE(Running(pid));
  EXPECT_THAT(PidsMatching(marker), ElementsAre(static_cast<pid_t>(pid)));

  // GET /relics lists it; ?state filters.
  Reply list = Get(d.client(), "/relics");
  EXPECT_EQ(list.json.value("count", -1), 1) << list.body;
  EXPECT_EQ(Get(d.client(), "/relics?state=failed").json.value("count", -1), 0);
  EXPECT_EQ(Get(d.client(), "/relics?state=healthy").json.value("count", -1), 1);

  // Calls: a JSON body, a path parameter (percent-encoded), the query of a GET.
  Reply set = Call(d.client(), "echo", "set", {{"key", "colour"}, {"value", "blue"}});
  ASSERT_EQ(set.status, 200) << set.body;
  EXPECT_EQ(set.json.value("status", 0), 200);
  EXPECT_EQ(set.json.value("method", ""), "POST");
  EXPECT_EQ(set.json.value("url", ""), base + "/set");
  EXPECT_EQ(set.json["result"], (Json{{"success", true}, {"key", "colour"}, {"value", "blue"}}));

  Reply get = Call(d.client(), "echo", "get", {{"parameters", {{"key", "colour"}}}});
  ASSERT_EQ(get.status, 200) << get.body;
  EXPECT_EQ(get.json.value("method", ""), "GET");
  EXPECT_EQ(get.json["result"], (Json{{"key", "colour"}, {"value", "blue"}}));

  Reply upd = Call(d.client(), "echo", "update", {{"id", "a b/c"}, {"size", 3}, {"tags", {"x"}}});
  ASSERT_EQ(upd.status, 200) << upd.body;
  EXPECT_EQ(upd.json.value("url", ""), base + "/items/a%20b%2Fc") << upd.body;
  EXPECT_EQ(upd.json["result"], (Json{{"id", "a b/c"}, {"body", {{"size", 3}, {"tags", {"x"}}}}}));

  // The relic's own error answer is passed on (502 relic_error, with what it said).
  Reply missing = Call(d.client(), "echo", "get", {{"key", "nope"}});
  EXPECT_EQ(missing.status, 502) << missing.body;
  EXPECT_EQ(ErrorCode(missing), "relic_error") << missing.body;
  EXPECT_EQ(missing.json["error"]["details"].value("status", 0), 404) << missing.body;

  // Discovery.
  Reply disc = Get(d.client(), "/discovery/services");
  ASSERT_EQ(disc.status, 200) << disc.body;
  ASSERT_EQ(disc.json.value("count", -1), 1) << disc.body;
  const Json svc = disc.json["services"][0];
  EXPECT_EQ(svc.value("name", ""), "echo");
  EXPECT_EQ(svc.value("url", ""), base);
  EXPECT_EQ(svc.value("state", ""), "healthy");
  EXPECT_EQ(svc["endpoints"], (Json{"set", "get", "update"}));

  // Logs: the process's own output, and a line per request.
  std::vector<std::string> lines = LogLines(d.client(), "echo");
  EXPECT_TRUE(AnyLineHas(lines, "relic echo listening on " + std::to_string(port)))
      << Joined(lines);
  EXPECT_TRUE(AnyLineHas(lines, "request POST /set")) << Joined(lines);
  EXPECT_TRUE(AnyLineHas(lines, "request GET /get/colour")) << Joined(lines);
  EXPECT_THAT(LogLines(d.client(), "echo", 1), SizeIs(1));
  Reply bad_tail = Get(d.client(), "/relics/echo/logs?tail=lots");
  EXPECT_EQ(bad_tail.status, 400) << bad_tail.body;

  // Stop: the process is gone, discovery forgets it, calls are refused.
  Reply stop = Post(d.client(), "/relics/echo/stop", "");
  ASSERT_EQ(stop.status, 200) << stop.body;
  EXPECT_EQ(stop.json.value("state", ""), "stopped") << stop.body;
  EXPECT_EQ(stop.json.value("desired", ""), "stopped") << stop.body;
  EXPECT_FALSE(stop.json.contains("pid")) << stop.body;
  EXPECT_TRUE(WaitFor([&] { return !Running(pid); })) << "the relic still runs after stop";
  EXPECT_THAT(PidsMatching(marker), IsEmpty());
  EXPECT_EQ(Get(d.client(), "/discovery/services").json.value("count", -1), 0);
  Reply refused = Call(d.client(), "echo", "get", {{"key", "colour"}});
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_THAT(ErrorMessage(refused), HasSubstr("not healthy (state: stopped)")) << refused.body;
  // Its logs are still there.
  EXPECT_TRUE(AnyLineHas(LogLines(d.client(), "echo"), "request POST /set"));

  // Delete: forgotten.
  Reply del = ToReply(d.client().Delete("/relics/echo"));
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(del.json.value("deleted", false), true) << del.body;
  Reply gone = Get(d.client(), "/relics/echo/status");
  EXPECT_EQ(gone.status, 404) << gone.body;
  EXPECT_EQ(ErrorCode(gone), "not_found") << gone.body;
  Reply after = Get(d.client(), "/relics");
  EXPECT_EQ(after.json.value("count", -1), 0) << after.body;
  EXPECT_THAT(PidsMatching(marker), IsEmpty());
}

// ---- 2. Restart after a crash -------------------------------------------------------------------

TEST(DeployApi, KilledRelicIsRestarted) {
  const std::string marker = Marker("kill9");
  const int port = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) { WriteRelic(m, "victim", port, marker); });
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), "victim");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();
  const int64_t pid = PidOf(dep.json);
  ASSERT_GT(pid, 0) << dep.body;

  ASSERT_EQ(::kill(static_cast<pid_t>(pid), SIGKILL), 0);
  Json st = WaitForStatus(d.client(), "victim", [&](const Json& s) {
    return s.value("state", "") == "healthy" && PidOf(s) != pid && PidOf(s) > 0;
  });
  ASSERT_EQ(st.value("state", ""), "healthy") << st.dump() << "\n" << d.log();
  EXPECT_EQ(st.value("restarts", -1), 1) << st.dump();
  EXPECT_NE(PidOf(st), pid);
  EXPECT_TRUE(Running(PidOf(st)));
  EXPECT_FALSE(Running(pid));
  EXPECT_THAT(PidsMatching(marker), ElementsAre(static_cast<pid_t>(PidOf(st))));
  // It serves again.
  Reply set = Call(d.client(), "victim", "set", {{"key", "k"}, {"value", 1}});
  EXPECT_EQ(set.status, 200) << set.body;
  // The log shows both starts.
  std::vector<std::string> lines = LogLines(d.client(), "victim");
  EXPECT_EQ(CountLinesWith(lines, "--- cortex: starting victim"), 2) << Joined(lines);
}

// ---- 3. A crash loop ----------------------------------------------------------------------------

// Deploys a relic that prints a line and exits with code 3 at once (deploy.max_restarts: 2):
// backoff, two restarts, then failed, and nothing left running. `extra` ends its manifest.
void ExpectCrashLoopEndsFailed(const std::string& what, const std::string& extra) {
  const std::string marker = Marker(what);
  KillAtEnd cleanup(marker);
  Config config("deploy:\n  max_restarts: 2\n");
  Daemon d(config.flags(), [&](const fs::path& m) {
    WriteRelicManifest(m, "crasher",
                       "deployment:\n"
                       "  type: process\n"
                       "  command: [\"sh\", \"-c\", \"echo crashing now; exit 3\", \"" +
                           marker + "\"]\n" + extra);
  });
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), "crasher");
  EXPECT_EQ(dep.status, 502) << dep.body << "\n" << d.log();
  // Backoff and restarts until it gives up (well within the deadline: 250 + 500 ms of backoff).
  Json st = WaitForStatus(
      d.client(), "crasher", [](const Json& s) { return s.value("state", "") == "failed"; },
      std::chrono::seconds(8));
  ASSERT_EQ(st.value("state", ""), "failed") << st.dump() << "\n" << d.log();
  EXPECT_THAT(st.value("error", ""), HasSubstr("crashed 3 times in a row")) << st.dump();
  EXPECT_THAT(st.value("error", ""), HasSubstr("exited with code 3")) << st.dump();
  EXPECT_EQ(st.value("restarts", -1), 2) << st.dump();
  EXPECT_EQ(st.value("desired", ""), "running") << st.dump();
  EXPECT_FALSE(st.contains("pid")) << st.dump();
  if (dep.status == 502) {
    EXPECT_EQ(ErrorCode(dep), "deploy_failed") << dep.body;
    EXPECT_THAT(ErrorMessage(dep), HasSubstr("exited with code 3")) << dep.body;
    EXPECT_EQ(dep.json["error"]["details"].value("state", ""), "failed") << dep.body;
  }
  std::vector<std::string> lines = LogLines(d.client(), "crasher");
  EXPECT_EQ(CountLinesWith(lines, "crashing now"), 3) << Joined(lines);
  // Nothing is left running, and it stays failed (no more restarts). A wrong fourth start
  // would come after the next backoff, 250 ms x 4 = 1 s: wait past that before looking.
  EXPECT_THAT(PidsMatching(marker), IsEmpty());
  EXPECT_EQ(Get(d.client(), "/discovery/services").json.value("count", -1), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));
  Json later = StatusOf(d.client(), "crasher");
  EXPECT_EQ(later.value("state", ""), "failed") << later.dump();
  EXPECT_EQ(later.value("restarts", -1), 2) << later.dump();
  EXPECT_EQ(CountLinesWith(LogLines(d.client(), "crasher"), "crashing now"), 3);
  EXPECT_THAT(PidsMatching(marker), IsEmpty());
}

// Without a health check a relic is healthy only once it has stayed up a moment, and only a
// stable uptime resets the count of crashes: a command that exits at once ends failed.
TEST(DeployApi, CrashLoopEndsFailed) { ExpectCrashLoopEndsFailed("crash", ""); }

// The same with a health check that cannot pass (a TCP check on a port nothing listens on).
TEST(DeployApi, CrashLoopWithAHealthCheckEndsFailed) {
  const int port = FreeLoopbackPort();
  ExpectCrashLoopEndsFailed("crash-tcp", "  port: " + std::to_string(port) +
                                             "\n"
                                             "health_check: {type: tcp, interval: 100ms}\n");
}

// ---- 4. A health check that never passes --------------------------------------------------------

TEST(DeployApi, HealthCheckThatNeverPassesFailsTheDeploy) {
  const std::string marker = Marker("sick");
  const int port = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) {
    WriteRelic(m, "sick", port, marker, "  env: {HEALTH_STATUS: \"500\"}\n",
               "health_check:\n"
               "  type: http\n"
               "  endpoint: /health\n"
               "  interval: 100ms\n"
               "  timeout: 1s\n"
               "  start_period: 1s\n");
  });
  ASSERT_DAEMON(d);
  Reply dep = Post(d.client(), "/deploy/relic?wait=true&timeout=30s", R"({"name": "sick"})");
  ASSERT_EQ(dep.status, 502) << dep.body << "\n" << d.log();
  EXPECT_EQ(ErrorCode(dep), "deploy_failed") << dep.body;
  const std::string probe = "GET http://127.0.0.1:" + std::to_string(port) + "/health: status 500";
  EXPECT_THAT(ErrorMessage(dep), HasSubstr("did not pass within 1000 ms")) << dep.body;
  EXPECT_THAT(ErrorMessage(dep), HasSubstr(probe)) << dep.body;
  const Json details = dep.json["error"]["details"];
  EXPECT_EQ(details.value("state", ""), "failed") << dep.body;
  EXPECT_THAT(details["health"].value("last_error", ""), HasSubstr(probe)) << dep.body;
  EXPECT_EQ(details["health"].value("type", ""), "http") << dep.body;
  // The process was stopped.
  EXPECT_FALSE(details.contains("pid")) << dep.body;
  EXPECT_TRUE(WaitFor([&] { return PidsMatching(marker).empty(); })) << "the relic still runs";
  Json st = StatusOf(d.client(), "sick");
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump();
  EXPECT_EQ(st.value("restarts", -1), 0) << st.dump();
  EXPECT_EQ(Get(d.client(), "/discovery/services").json.value("count", -1), 0);
}

// ---- 5. The port is taken -----------------------------------------------------------------------

// A listening socket on a loopback port that the test holds (and never accepts on).
class HeldPort {
 public:
  HeldPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::listen(fd_, 64) == 0) {
      socklen_t len = sizeof(addr);
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
      port_ = ntohs(addr.sin_port);
    }
  }
  ~HeldPort() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Deploys the python relic on a port the test holds (deploy.max_restarts: 2), `health` being its
// health check: it must end failed, never reported healthy, saying that the port is taken, with
// nothing left running.
void ExpectPortInUseFails(const std::string& what, const std::string& health) {
  const std::string marker = Marker(what);
  HeldPort held;
  ASSERT_GT(held.port(), 0);
  KillAtEnd cleanup(marker);
  Config config("deploy:\n  max_restarts: 2\n");
  Daemon d(config.flags(),
           [&](const fs::path& m) { WriteRelic(m, "busy", held.port(), marker, "", health); });
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), "busy");
  EXPECT_EQ(dep.status, 502) << dep.body << "\n" << d.log();
  bool seen_healthy = dep.json.is_object() && dep.json.value("state", "") == "healthy";
  Json st = WaitForStatus(
      d.client(), "busy",
      [&](const Json& s) {
        seen_healthy = seen_healthy || s.value("state", "") == "healthy";
        return s.value("state", "") == "failed";
      },
      std::chrono::seconds(8));
  EXPECT_FALSE(seen_healthy) << "reported healthy while another process holds its port";
  ASSERT_EQ(st.value("state", ""), "failed") << st.dump() << "\n" << d.log();
  // The relic's status says why: the port is taken (checked before it is launched).
  const std::string error = st.value("error", "");
  EXPECT_THAT(error, HasSubstr(std::to_string(held.port()))) << st.dump();
  EXPECT_THAT(error, HasSubstr("in use")) << st.dump();
  // Nothing is left running.
  EXPECT_TRUE(WaitFor([&] { return PidsMatching(marker).empty(); }))
      << ::testing::PrintToString(ProcessesMatching(marker));
  EXPECT_EQ(Get(d.client(), "/discovery/services").json.value("count", -1), 0);
}

// The port is checked before the launch: the relic fails at once, naming the port.
TEST(DeployApi, PortAlreadyInUseFailsTheRelic) { ExpectPortInUseFails("busy", kFastHealth); }

// With no declared check the default is a TCP check of the port: it must not mistake the program
// holding the port for the relic.
TEST(DeployApi, PortAlreadyInUseIsNeverHealthyWithTheDefaultCheck) {
  ExpectPortInUseFails("busy-tcp", "");
}

// ---- 6. Bad input -------------------------------------------------------------------------------

TEST(DeployApi, BadInput) {
  const std::string marker = Marker("bad");
  const int port = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) {
    WriteRelic(m, "good", port, marker);
    WriteRelicManifest(m, "broken",
                       "deployment:\n"
                       "  type: process\n"
                       "  command: [\"./no-such-server.sh\", \"" +
                           marker + "\"]\n");
  });
  ASSERT_DAEMON(d);
  http::Client& c = d.client();

  // Deploy.
  Reply unknown = Post(c, "/deploy/relic", R"({"name": "no-such-relic"})");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  EXPECT_EQ(ErrorCode(unknown), "not_found") << unknown.body;
  EXPECT_THAT(ErrorMessage(unknown), HasSubstr("no-such-relic")) << unknown.body;
  Reply no_name = Post(c, "/deploy/relic", "{}");
  EXPECT_EQ(no_name.status, 400) << no_name.body;
  EXPECT_THAT(ErrorMessage(no_name), HasSubstr("name")) << no_name.body;
  Reply empty_name = Post(c, "/deploy/relic", R"({"name": ""})");
  EXPECT_EQ(empty_name.status, 400) << empty_name.body;
  Reply not_json = Post(c, "/deploy/relic", "[1, 2]");
  EXPECT_EQ(not_json.status, 400) << not_json.body;
  Reply bad_start = Post(c, "/deploy/relic", R"({"name": "good", "auto_start": "yes"})");
  EXPECT_EQ(bad_start.status, 400) << bad_start.body;
  EXPECT_THAT(ErrorMessage(bad_start), HasSubstr("auto_start")) << bad_start.body;
  Reply bad_timeout = Post(c, "/deploy/relic", R"({"name": "good", "timeout_seconds": -1})");
  EXPECT_EQ(bad_timeout.status, 400) << bad_timeout.body;
  Reply bad_wait = Post(c, "/deploy/relic?wait=true&timeout=forever", R"({"name": "good"})");
  EXPECT_EQ(bad_wait.status, 400) << bad_wait.body;

  Reply broken = Post(c, "/deploy/relic", R"({"name": "broken", "wait": true})");
  EXPECT_EQ(broken.status, 400) << broken.body;
  EXPECT_EQ(ErrorCode(broken), "invalid_argument") << broken.body;
  EXPECT_THAT(ErrorMessage(broken), HasSubstr("deployment.command")) << broken.body;
  EXPECT_THAT(ErrorMessage(broken), HasSubstr("no-such-server.sh")) << broken.body;
  EXPECT_THAT(ErrorMessage(broken), HasSubstr("relics/broken/relic.yml")) << broken.body;
  // Nothing was recorded (none of the refused deploys above either).
  Reply list = Get(c, "/relics");
  EXPECT_EQ(list.json.value("count", -1), 0) << list.body;
  EXPECT_EQ(Get(c, "/relics/broken/status").status, 404);
  EXPECT_THAT(PidsMatching(marker), IsEmpty());

  // Every verb on a relic that is not deployed: 404.
  for (const char* path : {"/relics/ghost/stop", "/relics/ghost/start", "/relics/ghost/restart",
                           "/relics/ghost/call/get"}) {
    Reply r = Post(c, path, "{}");
    EXPECT_EQ(r.status, 404) << path << ": " << r.body;
    EXPECT_EQ(ErrorCode(r), "not_found") << path << ": " << r.body;
  }
  for (const char* path : {"/relics/ghost/status", "/relics/ghost/logs", "/relics/ghost"}) {
    Reply r = Get(c, path);
    EXPECT_EQ(r.status, 404) << path << ": " << r.body;
  }
  Reply sse = Get(c, "/relics/ghost/logs", {{"Accept", "text/event-stream"}});
  EXPECT_EQ(sse.status, 404) << sse.body;
  Reply del = ToReply(c.Delete("/relics/ghost"));
  EXPECT_EQ(del.status, 404) << del.body;

  // Calls on a deployed relic: an unknown operation lists the known ones; a path parameter
  // that is missing is named.
  Reply dep = Deploy(c, "good");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();
  Reply op = Call(c, "good", "explode", Json::object());
  EXPECT_EQ(op.status, 404) << op.body;
  EXPECT_EQ(ErrorCode(op), "not_found") << op.body;
  EXPECT_THAT(ErrorMessage(op), HasSubstr("'explode'")) << op.body;
  EXPECT_THAT(ErrorMessage(op), HasSubstr("operations: set, get, update")) << op.body;
  Reply no_key = Call(c, "good", "get", Json::object());
  EXPECT_EQ(no_key.status, 400) << no_key.body;
  EXPECT_EQ(ErrorCode(no_key), "invalid_argument") << no_key.body;
  EXPECT_THAT(ErrorMessage(no_key), HasSubstr("'key'")) << no_key.body;
  EXPECT_THAT(ErrorMessage(no_key), HasSubstr("/get/{key}")) << no_key.body;
  Reply bad_body = Post(c, "/relics/good/call/set", "not json");
  EXPECT_EQ(bad_body.status, 400) << bad_body.body;
  // The relic was not disturbed by any of it.
  Json st = StatusOf(c, "good");
  EXPECT_EQ(st.value("state", ""), "healthy") << st.dump();
  EXPECT_EQ(st.value("restarts", -1), 0) << st.dump();
}

// ---- 7. Adoption by a restarted server ----------------------------------------------------------

TEST(DeployApi, RestartedServerAdoptsTheRunningRelic) {
  const std::string marker = Marker("adopt");
  const int port = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  auto write = [&](const fs::path& m) { WriteRelic(m, "keeper", port, marker); };
  Daemon first({}, write);
  ASSERT_DAEMON(first);
  Reply dep = Deploy(first.client(), "keeper");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << first.log();
  const int64_t pid = PidOf(dep.json);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(Call(first.client(), "keeper", "set", {{"key", "a"}, {"value", 1}}).status, 200);

  // kill -9 of the server: the relic runs on, and the next server adopts it.
  ASSERT_EQ(::kill(first.pid(), SIGKILL), 0);
  first.Stop();
  EXPECT_TRUE(Running(pid));
  auto second = RestartOn(first.data_dir(), write);
  ASSERT_DAEMON(*second);
  Json st = WaitForStatus(second->client(), "keeper",
                          [](const Json& s) { return s.value("state", "") == "healthy"; });
  ASSERT_EQ(st.value("state", ""), "healthy") << st.dump() << "\n" << second->log();
  EXPECT_EQ(PidOf(st), pid) << st.dump();
  EXPECT_EQ(st.value("restarts", -1), 0) << st.dump();
  EXPECT_THAT(PidsMatching(marker), ElementsAre(static_cast<pid_t>(pid)));
  // The same process: it still has what the first server's call stored.
  Reply get = Call(second->client(), "keeper", "get", {{"key", "a"}});
  EXPECT_EQ(get.status, 200) << get.body;
  EXPECT_EQ(get.json["result"].value("value", 0), 1) << get.body;
  // An adopted relic is back in discovery once its first probe passes.
  Reply disc = Get(second->client(), "/discovery/services");
  EXPECT_EQ(disc.json.value("count", -1), 1) << disc.body;
  // Deploying it again leaves it as it is.
  Reply again = Deploy(second->client(), "keeper");
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(PidOf(again.json), pid) << again.body;

  // SIGTERM of the server (relics keep running by default): the same again.
  EXPECT_EQ(second->Stop(), 0) << second->log();
  EXPECT_TRUE(Running(pid));
  auto third = RestartOn(first.data_dir(), write);
  ASSERT_DAEMON(*third);
  st = WaitForStatus(third->client(), "keeper",
                     [](const Json& s) { return s.value("state", "") == "healthy"; });
  ASSERT_EQ(st.value("state", ""), "healthy") << st.dump() << "\n" << third->log();
  EXPECT_EQ(PidOf(st), pid) << st.dump();
  EXPECT_THAT(PidsMatching(marker), ElementsAre(static_cast<pid_t>(pid)));
  get = Call(third->client(), "keeper", "get", {{"key", "a"}});
  EXPECT_EQ(get.status, 200) << get.body;

  // An adopted relic (not this server's child) still stops.
  Reply stop = Post(third->client(), "/relics/keeper/stop", "");
  EXPECT_EQ(stop.status, 200) << stop.body;
  EXPECT_EQ(stop.json.value("state", ""), "stopped") << stop.body;
  EXPECT_TRUE(WaitFor([&] { return !Running(pid); })) << "the adopted relic still runs";
}

// ---- 8. stop_relics_on_exit ---------------------------------------------------------------------

TEST(DeployApi, StopRelicsOnExitStopsThemWithTheServer) {
  const std::string marker = Marker("onexit");
  const int port = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Config config("deploy:\n  stop_relics_on_exit: true\n");
  Daemon d(config.flags(), [&](const fs::path& m) { WriteRelic(m, "brief", port, marker); });
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), "brief");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();
  const int64_t pid = PidOf(dep.json);
  ASSERT_GT(pid, 0);
  EXPECT_EQ(d.Stop(), 0) << d.log();
  EXPECT_TRUE(WaitFor([&] { return !Running(pid); })) << "the relic outlived the server";
  EXPECT_THAT(PidsMatching(marker), IsEmpty());
}

// ---- 9. Discovery in Redis ----------------------------------------------------------------------

std::vector<std::string> Members(store::RedisClient& redis, const std::string& key) {
  std::vector<std::string> out;
  auto r = redis.Command({"SMEMBERS", key});
  if (r.ok()) {
    for (const auto& e : r->elements) out.push_back(e.str);
  }
  return out;
}

std::map<std::string, std::string> Hash(store::RedisClient& redis, const std::string& key) {
  std::map<std::string, std::string> out;
  auto r = redis.Command({"HGETALL", key});
  if (r.ok()) {
    for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
      out[r->elements[i].str] = r->elements[i + 1].str;
    }
  }
  return out;
}

TEST(DeployApi, DiscoveryIsPublishedToRedis) {
  ASSERT_FALSE(RedisServerBinary().empty()) << kNoRedis;
  RedisServer redis_server;
  const std::string error = redis_server.Start();
  ASSERT_EQ(error, "");
  auto connected = store::RedisClient::Connect(redis_server.Url());
  ASSERT_TRUE(connected.ok()) << connected.status().ToString();
  store::RedisClient& redis = **connected;

  const std::string marker = Marker("redis");
  const int port = FreeLoopbackPort(), other_port = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Config config("deploy:\n  redis_url: \"" + redis_server.Url() + "\"\n");
  auto write = [&](const fs::path& m) {
    WriteRelic(m, "listed", port, marker);
    WriteRelic(m, "other", other_port, marker);
  };
  Daemon d(config.flags(), write);
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), "listed");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();

  auto listed = [&](const std::string& name) {
    std::vector<std::string> m = Members(redis, "cortex:services");
    return std::find(m.begin(), m.end(), name) != m.end() &&
           Hash(redis, "cortex:service:" + name)["state"] == "healthy";
  };
  auto unlisted = [&](const std::string& name) {
    std::vector<std::string> m = Members(redis, "cortex:services");
    return std::find(m.begin(), m.end(), name) == m.end() &&
           Hash(redis, "cortex:service:" + name).empty();
  };
  const std::string key = "cortex:service:listed";
  EXPECT_TRUE(Eventually([&] { return listed("listed"); }))
      << ::testing::PrintToString(Members(redis, "cortex:services")) << "\n"
      << d.log();
  std::map<std::string, std::string> h = Hash(redis, key);
  EXPECT_EQ(h["url"], "http://127.0.0.1:" + std::to_string(port)) << ::testing::PrintToString(h);
  EXPECT_EQ(h["state"], "healthy") << ::testing::PrintToString(h);
  EXPECT_EQ(Json::parse(h["endpoints"], nullptr, false), (Json{"set", "get", "update"}))
      << ::testing::PrintToString(h);

  Reply stop = Post(d.client(), "/relics/listed/stop", "");
  ASSERT_EQ(stop.status, 200) << stop.body;
  EXPECT_TRUE(Eventually([&] { return unlisted("listed"); }))
      << ::testing::PrintToString(Members(redis, "cortex:services"))
      << ::testing::PrintToString(Hash(redis, key));

  // Started again: back in Redis.
  Reply start = Post(d.client(), "/relics/listed/start?wait=true&timeout=30s", "");
  ASSERT_EQ(start.status, 200) << start.body;
  EXPECT_TRUE(Eventually([&] { return listed("listed"); }))
      << ::testing::PrintToString(Hash(redis, key));

  // A restarted server (the relic runs on and is adopted) keeps it in Redis. Once another relic
  // deployed by the new server is in Redis, the new server's first rewrite of Redis is done.
  // (An adopted relic is published again once its first probe passes.)
  EXPECT_EQ(d.Stop(), 0) << d.log();
  auto second = RestartOn(d.data_dir(), write, config.flags());
  ASSERT_DAEMON(*second);
  Json adopted = WaitForStatus(second->client(), "listed",
                               [](const Json& s) { return s.value("state", "") == "healthy"; });
  EXPECT_EQ(adopted.value("state", ""), "healthy") << adopted.dump();
  Reply other = Deploy(second->client(), "other");
  ASSERT_EQ(other.status, 200) << other.body << "\n" << second->log();
  EXPECT_TRUE(Eventually([&] { return listed("other"); }))
      << ::testing::PrintToString(Members(redis, "cortex:services"));
  EXPECT_TRUE(listed("listed")) << ::testing::PrintToString(Members(redis, "cortex:services"));
}

// ---- 10. A workflow's relic step by name --------------------------------------------------------

TEST(DeployApi, WorkflowRelicStepCallsTheDeployedRelic) {
  const std::string marker = Marker("wf");
  const int port = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) {
    WriteRelic(m, "kv", port, marker);
    WriteFile(m / "workflows" / "remember.workflow.yml",
              "kind: Workflow\nversion: \"1.0\"\nname: remember\n"
              "summary: stores a value in the kv relic\n"
              "steps:\n"
              "  - name: store\n"
              "    type: relic\n"
              "    target: kv\n"
              "    action: set\n"
              "    parameters: {key: colour, value: green}\n");
  });
  ASSERT_DAEMON(d);
  Reply errors = Get(d.client(), "/registry/errors");
  EXPECT_EQ(errors.json["errors"], Json::array()) << errors.body;
  Reply dep = Deploy(d.client(), "kv");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();

  const std::string run = R"({"name": "remember", "input": {}})";
  Reply ok = Post(d.client(), "/execute/workflow?wait=true&timeout=60s", run);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.json.value("status", ""), "succeeded") << ok.body;
  Json step;
  for (const Json& s : ok.json["steps"]) {
    if (s.value("name", "") == "store") step = s;
  }
  ASSERT_TRUE(step.is_object()) << ok.body;
  EXPECT_EQ(step.value("status", ""), "succeeded") << ok.body;
  EXPECT_EQ(step["output"], (Json{{"success", true}, {"key", "colour"}, {"value", "green"}}))
      << ok.body;
  // The relic has it.
  Reply get = Call(d.client(), "kv", "get", {{"key", "colour"}});
  EXPECT_EQ(get.status, 200) << get.body;
  EXPECT_EQ(get.json["result"].value("value", ""), "green") << get.body;

  // Stopped: the step fails, saying why.
  ASSERT_EQ(Post(d.client(), "/relics/kv/stop", "").status, 200);
  Reply failed = Post(d.client(), "/execute/workflow?wait=true&timeout=60s", run);
  ASSERT_EQ(failed.status, 200) << failed.body;
  EXPECT_EQ(failed.json.value("status", ""), "failed") << failed.body;
  std::string step_error;
  for (const Json& s : failed.json["steps"]) {
    if (s.value("name", "") == "store") step_error = s.value("error", "");
  }
  EXPECT_THAT(step_error, HasSubstr("relic kv is not healthy (state: stopped)")) << failed.body;
}

// ---- 11. Logs as server-sent events -------------------------------------------------------------

TEST(DeployApi, LogStreamSendsNewLines) {
  const std::string marker = Marker("sse");
  const int port = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) { WriteRelic(m, "chatty", port, marker); });
  ASSERT_DAEMON(d);
  Reply dep = Deploy(d.client(), "chatty");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();

  std::atomic<bool> started{false}, found{false};
  std::vector<http::SseEvent> events;
  std::mutex mu;
  std::thread reader([&] {
    http::Client sse(d.url());
    // tail=1: the stream opens with the last line written so far, then follows.
    Status s = sse.Stream("/relics/chatty/logs?tail=1", [&](const http::SseEvent& e) {
      std::lock_guard lock(mu);
      events.push_back(e);
      started = true;
      if (e.event == "log" && e.data.find("request GET /get/streamed-line") != std::string::npos) {
        found = true;
        return false;
      }
      return true;
    });
    (void)s;
  });
  EXPECT_TRUE(WaitFor([&] { return started.load(); })) << "the stream sent nothing";
  // A request to the relic makes it print a line, after the stream started.
  http::Client relic("http://127.0.0.1:" + std::to_string(port));
  auto r = relic.Get("/get/streamed-line");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(WaitFor([&] { return found.load(); }));
  if (!found) d.Stop();  // ends the stream, so the reader returns
  reader.join();
  std::lock_guard lock(mu);
  ASSERT_FALSE(events.empty());
  const http::SseEvent& last = events.back();
  EXPECT_EQ(last.event, "log");
  Json line = Json::parse(last.data, nullptr, false);
  EXPECT_EQ(line.value("line", ""), "request GET /get/streamed-line") << last.data;
}

// ---- Accounts and orphans -----------------------------------------------------------------------

// The effective uid of a running process, from /proc (-1 when it is gone).
int UidOf(int64_t pid) {
  std::string status = ReadFile("/proc/" + std::to_string(pid) + "/status");
  auto at = status.find("\nUid:");
  if (at == std::string::npos) return -1;
  std::istringstream fields(status.substr(at + 5));
  int real = -1, effective = -1;
  fields >> real >> effective;
  return effective;
}

// A shell relic that keeps a child of its own (a shell that does not exec its last command).
void WriteShellRelic(const fs::path& m, const std::string& name, const std::string& marker,
                     const std::string& extra_deployment = "") {
  WriteRelicManifest(m, name,
                     "deployment:\n"
                     "  type: process\n"
                     "  command: [\"/bin/sh\", \"-c\", \"sleep 300 & sleep 301; : " +
                         marker +
                         "\"]\n"
                         "  stop_timeout: 5s\n" +
                         extra_deployment);
}

// The server's zombie children.
std::vector<std::string> ZombieChildren(pid_t server) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string stat = ReadFile(e.path() / "stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos || close + 2 >= stat.size()) continue;
    std::istringstream fields(stat.substr(close + 2));
    std::string state;
    long ppid = 0;
    if (fields >> state >> ppid && state == "Z" && ppid == server) {
      out.push_back(e.path().filename().string());
    }
  }
  return out;
}

TEST(DeployApi, ProcessRelicsRunAsNobodyUnlessToldAndRootMustBeAllowed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs a server running as root";
  const std::string marker = Marker("user");
  KillAtEnd cleanup(marker);
  auto setup = [&](const fs::path& m) {
    WriteShellRelic(m, "plain", marker + "-plain");
    WriteShellRelic(m, "closed", marker + "-closed");
    WriteShellRelic(m, "numbered", marker + "-numbered", "  user: \"1234:1234\"\n");
    WriteShellRelic(m, "rooted", marker + "-rooted", "  user: root\n");
    WriteShellRelic(m, "ghostuser", marker + "-ghost", "  user: no-such-user-here\n");
  };
  {
    Daemon d({}, setup);
    ASSERT_DAEMON(d);
    ASSERT_EQ(Deploy(d.client(), "plain").status, 200) << d.log();
    int64_t pid = PidOf(StatusOf(d.client(), "plain"));
    ASSERT_GT(pid, 0);
    EXPECT_EQ(UidOf(pid), 65534);  // nobody
    // Its data folder is its own.
    struct stat st {};
    ASSERT_EQ(::stat((d.data_dir() / "relics/plain/data").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 65534u);

    ASSERT_EQ(Deploy(d.client(), "numbered").status, 200) << d.log();
    EXPECT_EQ(UidOf(PidOf(StatusOf(d.client(), "numbered"))), 1234);

    // root is refused while the configuration does not allow it, naming the setting.
    Reply rooted = Deploy(d.client(), "rooted");
    EXPECT_EQ(rooted.status, 400) << rooted.body;
    EXPECT_THAT(rooted.body, HasSubstr("deploy.allow_root_relics"));
    EXPECT_THAT(PidsMatching(marker + "-rooted"), IsEmpty());
    Reply ghost = Deploy(d.client(), "ghostuser");
    EXPECT_EQ(ghost.status, 400) << ghost.body;
    EXPECT_THAT(ghost.body, HasSubstr("no user 'no-such-user-here'"));
  }
  {
    // An account that cannot reach its data folder is refused at deploy, naming the folder.
    Daemon d({}, setup);
    ASSERT_DAEMON(d);
    fs::permissions(d.data_dir(), fs::perms(0700));
    Reply closed = Deploy(d.client(), "closed");
    EXPECT_NE(closed.status, 200) << closed.body;
    EXPECT_THAT(closed.body, HasSubstr("nobody, who cannot reach its data folder"));
    EXPECT_THAT(closed.body, HasSubstr(d.data_dir().string() + " is closed"));
    EXPECT_THAT(PidsMatching(marker + "-closed"), IsEmpty());
    fs::permissions(d.data_dir(), fs::perms(0755));
  }
  Config allow("deploy:\n  allow_root_relics: true\n");
  Daemon d(allow.flags(), setup);
  ASSERT_DAEMON(d);
  ASSERT_EQ(Deploy(d.client(), "rooted").status, 200) << d.log();
  EXPECT_EQ(UidOf(PidOf(StatusOf(d.client(), "rooted"))), 0);
}

TEST(DeployApi, StoppingAShellRelicLeavesNoZombies) {
  const std::string marker = Marker("zombie");
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) { WriteShellRelic(m, "shell", marker); });
  ASSERT_DAEMON(d);
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(Deploy(d.client(), "shell").status, 200) << d.log();
    // The shell has its own child (sleep 300), adopted by the server once the shell is killed.
    const int64_t pid = PidOf(StatusOf(d.client(), "shell"));
    ASSERT_GT(pid, 0);
    const std::string children =
        "/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children";
    ASSERT_TRUE(Eventually([&] { return !ReadFile(children).empty(); }));
    Reply stop = Post(d.client(), "/relics/shell/stop", "");
    ASSERT_EQ(stop.status, 200) << stop.body;
    EXPECT_TRUE(Eventually([&] { return !Running(pid); }));
  }
  // Every child the server adopted from the relics' groups was reaped.
  EXPECT_TRUE(Eventually([&] { return ZombieChildren(d.pid()).empty(); }, std::chrono::seconds(5)))
      << ZombieChildren(d.pid()).size() << " zombies";
}

// deployment.sandbox: the relic runs in the tools' sandbox as a service. It serves its port on
// the host's loopback, writes its own data folder, and sees nothing else of Cortex's data folder
// nor the host's secrets; a stop reaches its command with SIGTERM (a clean shutdown).
TEST(DeployApi, ASandboxedRelicServesItsPortSeesOnlyItsFoldersAndStopsCleanly) {
  if (::access("/usr/bin/bwrap", X_OK) != 0) GTEST_SKIP() << "bubblewrap is not installed";
  const std::string marker = Marker("sandboxed");
  KillAtEnd cleanup(marker);
  const int port = FreeLoopbackPort();
  Daemon d({}, [&](const fs::path& m) {
    const fs::path data = m.parent_path() / "data";
    WriteFile(
        m / "relics" / "boxed" / "serve.py",
        "import http.server, json, os, signal, sys\n"
        "data = os.environ['CORTEX_RELIC_DATA']\n"
        "def readable(p):\n"
        "    try:\n"
        "        open(p, 'rb').read(1)\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
        "report = {'uid': os.getuid(), 'serve_json': readable('" +
            (data / "serve.json").string() +
            "'),\n"
            "          'shadow': readable('/etc/shadow'), 'etc_writable': os.access('/etc', "
            "os.W_OK),\n"
            "          'manifest_writable': os.access(os.getcwd(), os.W_OK)}\n"
            "open(os.path.join(data, 'report.json'), 'w').write(json.dumps(report))\n"
            "def stop(*_):\n"
            "    open(os.path.join(data, 'stopped-cleanly'), 'w').write('yes')\n"
            "    os._exit(0)\n"
            "signal.signal(signal.SIGTERM, stop)\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        self.send_response(200); self.end_headers(); self.wfile.write(b'boxed')\n"
            "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H)"
            ".serve_forever()\n");
    WriteRelicManifest(m, "boxed",
                       "deployment:\n"
                       "  type: process\n"
                       "  command: [\"python3\", \"serve.py\", \"" +
                           marker +
                           "\"]\n"
                           "  port: " +
                           std::to_string(port) +
                           "\n"
                           "  sandbox: true\n"
                           "  stop_timeout: 5s\n");
  });
  ASSERT_DAEMON(d);
  Reply deployed = Deploy(d.client(), "boxed");
  ASSERT_EQ(deployed.status, 200) << deployed.body << d.log();
  EXPECT_THAT(ReadFile(d.data_dir() / "relics/boxed/output.log"), HasSubstr("sandboxed"));

  // Its port answers on the host's loopback.
  http::Client relic("http://127.0.0.1:" + std::to_string(port));
  auto answer = relic.Get("/");
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->body, "boxed");

  const fs::path report_file = d.data_dir() / "relics/boxed/data/report.json";
  ASSERT_TRUE(Eventually([&] { return fs::exists(report_file); }));
  Json report = Json::parse(ReadFile(report_file));
  EXPECT_EQ(report["serve_json"], false) << report;  // Cortex's data folder is not there
  EXPECT_EQ(report["shadow"], false) << report;
  EXPECT_EQ(report["etc_writable"], false) << report;
  EXPECT_EQ(report["manifest_writable"], false) << report;  // its folder is read-only
  if (::geteuid() == 0) {
    EXPECT_EQ(report["uid"], 65534) << report;
  }

  // A stop reaches the command itself: it shuts down through its SIGTERM handler.
  Reply stop = Post(d.client(), "/relics/boxed/stop", "");
  ASSERT_EQ(stop.status, 200) << stop.body;
  EXPECT_EQ(ReadFile(d.data_dir() / "relics/boxed/data/stopped-cleanly"), "yes");
  EXPECT_TRUE(Eventually([&] { return PidsMatching(marker).empty(); }));
}

}  // namespace
}  // namespace cortex::testing
