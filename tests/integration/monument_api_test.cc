// Integration tests of monuments: the real `cortex serve` on a free port, relics that are real
// processes (a small python3 HTTP server written by each test), driven over HTTP and through the
// `cortex` CLI.
//
// Covered: a staged deployment (startup_order with a parallel stage, a workflow and an agent)
// and the order in which the relics start; stages from depends_on (corpus shape); a failing
// relic and the rollback; a relic deployed on its own before the monument is left alone; bad
// input; stop, delete, scale and logs of a monument; the CLI; a restarted server adopting a
// monument's relics.
//
// Every relic's command line carries a marker unique to the test (and to this test process):
// what is left running is found by it and killed by PID at the end of each test, even when it
// failed. Every wait is a condition wait with a deadline.

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_process.h"
#include "free_port.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"
#include "integration/deploy_helpers.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// ---- Processes ----------------------------------------------------------------------------------

// A marker unique to this test process and test, put in the command line of its relics.
std::string Marker(const std::string& what) {
  return "mnt-" + what + "-" + std::to_string(::getpid());
}

// ---- The manifests ------------------------------------------------------------------------------

// The relic: a small HTTP service on $PORT. GET /health answers 503 until HEALTH_DELAY_MS (0 by
// default) have passed since it started, then $HEALTH_STATUS (200 by default); the first 200 it
// answers prints "healthy-at <epoch ms>". GET /ping answers {"pong": <its name>}.
constexpr char kRelicScript[] = R"PY(import json, os, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ["PORT"])
NAME = os.environ["CORTEX_RELIC_NAME"]
HEALTH = int(os.environ.get("HEALTH_STATUS", "200"))
READY_AT = time.time() + int(os.environ.get("HEALTH_DELAY_MS", "0")) / 1000.0
LOCK = threading.Lock()
SAID = [False]


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/health"):
            status = HEALTH if time.time() >= READY_AT else 503
            if status == 200:
                with LOCK:
                    if not SAID[0]:
                        SAID[0] = True
                        print("healthy-at %d" % int(time.time() * 1000), flush=True)
            return self.reply(status, {"status": "ok" if status == 200 else "not yet"})
        if self.path.startswith("/ping"):
            print("ping", flush=True)
            return self.reply(200, {"pong": NAME})
        return self.reply(404, {"error": "not found"})


print("relic %s listening on %d" % (NAME, PORT), flush=True)
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

// A health check that fails the relic 1 s after its start when it never passes.
constexpr char kShortStartPeriod[] =
    "health_check:\n"
    "  type: http\n"
    "  endpoint: /health\n"
    "  interval: 100ms\n"
    "  timeout: 1s\n"
    "  start_period: 1s\n";

void WriteRelicManifest(const fs::path& m, const std::string& name, const std::string& body) {
  WriteFile(m / "relics" / name / "relic.yml",
            "kind: Relic\nversion: \"1.0\"\nname: " + name +
                "\nsummary: a relic of the monument integration tests\n" + body);
}

// The python relic `name` on `port`, its command line carrying `marker`. `env` is the inside of
// its deployment.env map ("HEALTH_DELAY_MS: \"500\""); `health` replaces the fast HTTP check.
void WriteRelic(const fs::path& m, const std::string& name, int port, const std::string& marker,
                const std::string& env = "", const std::string& health = kFastHealth) {
  WriteFile(m / "relics" / name / "relic.py", kRelicScript);
  WriteRelicManifest(m, name,
                     "deployment:\n"
                     "  type: process\n"
                     "  command: [\"python3\", \"-u\", \"./relic.py\", \"--tag\", \"" +
                         marker + "\"]\n" + "  port: " + std::to_string(port) +
                         "\n"
                         "  stop_timeout: 5s\n" +
                         (env.empty() ? "" : "  env: {" + env + "}\n") + health +
                         "interface:\n"
                         "  type: rest_api\n"
                         "  endpoints:\n"
                         "    - {name: ping, method: GET, path: /ping}\n");
}

// A relic whose command does not exist: it cannot be deployed as written.
void WriteBrokenRelic(const fs::path& m, const std::string& name, const std::string& marker) {
  WriteRelicManifest(m, name,
                     "deployment:\n"
                     "  type: process\n"
                     "  command: [\"./no-such-server.sh\", \"" +
                         marker + "\"]\n");
}

void WriteMonument(const fs::path& m, const std::string& name, const std::string& body) {
  WriteFile(m / "monuments" / name / "monument.yml",
            "kind: Monument\nversion: \"1.0\"\nname: " + name +
                "\nsummary: a monument of the integration tests\n" + body);
}

// A workflow that pings relic `relic`, and an agent with nothing but a persona.
void WriteWorkflow(const fs::path& m, const std::string& name, const std::string& relic) {
  WriteFile(m / "workflows" / (name + ".workflow.yml"),
            "kind: Workflow\nversion: \"1.0\"\nname: " + name +
                "\nsummary: pings a relic of the monument\n"
                "steps:\n"
                "  - name: ping\n"
                "    type: relic\n"
                "    target: " +
                relic +
                "\n"
                "    action: ping\n");
}
// `provider`: its model's provider ("" = the server's default).
void WriteAgent(const fs::path& m, const std::string& name, const std::string& provider = "") {
  WriteFile(m / "agents" / name / "agent.md",
            "---\nkind: Agent\nname: " + name + "\nsummary: an agent of a monument\n" +
                (provider.empty()
                     ? ""
                     : "cognitive_engine:\n  primary: {provider: " + provider + ", model: m}\n") +
                "---\nYou help the monument tests.\n");
}

// ---- The API ------------------------------------------------------------------------------------

Reply DeployMonument(http::Client& c, const std::string& name, bool wait = true) {
  Json body = {{"name", name}, {"environment", "dev"}, {"wait", wait}, {"timeout_seconds", 20}};
  return Post(c, "/deploy/monument", body.dump());
}

Reply DeployRelic(http::Client& c, const std::string& name) {
  Json body = {{"name", name}, {"wait", true}, {"timeout_seconds", 20}};
  return Post(c, "/deploy/relic", body.dump());
}

Reply Delete(http::Client& c, const std::string& path) { return ToReply(c.Delete(path)); }

Json RelicStatus(http::Client& c, const std::string& name) {
  auto r = c.Get("/relics/" + name + "/status");
  if (!r.ok() || r->status != 200) return nullptr;
  return Json::parse(r->body, nullptr, false);
}

int64_t PidOf(const Json& status) {
  return status.is_object() && status.contains("pid") ? status["pid"].get<int64_t>() : 0;
}

// GET /relics as name -> status.
std::map<std::string, Json> Relics(http::Client& c) {
  std::map<std::string, Json> out;
  Reply r = Get(c, "/relics");
  EXPECT_EQ(r.status, 200) << r.body;
  if (r.json.is_object() && r.json.contains("relics")) {
    for (const Json& rel : r.json["relics"]) out[rel.value("name", "")] = rel;
  }
  return out;
}

int RelicCount(http::Client& c) { return Get(c, "/relics").json.value("count", -1); }

// The monument's components as "kind/name" -> component.
std::map<std::string, Json> Components(const Json& monument) {
  std::map<std::string, Json> out;
  if (!monument.is_object() || !monument.contains("components")) return out;
  for (const Json& c : monument["components"]) {
    out[c.value("kind", "") + "/" + c.value("name", "")] = c;
  }
  return out;
}

// When relic `name` first answered its health check with 200 (its "healthy-at" line), or 0.
int64_t HealthyAt(http::Client& c, const std::string& name) {
  Reply r = Get(c, "/relics/" + name + "/logs?tail=1000");
  if (!r.json.is_object() || !r.json.contains("lines")) return 0;
  for (const Json& l : r.json["lines"]) {
    const std::string line = l.value("line", "");
    if (line.rfind("healthy-at ", 0) == 0) return std::stoll(line.substr(11));
  }
  return 0;
}

// Polls GET /monuments/{name} until `pred` holds; the last answer.
Json WaitForMonument(http::Client& c, const std::string& name,
                     const std::function<bool(const Json&)>& pred,
                     std::chrono::milliseconds timeout = kDeadline) {
  Json last;
  Eventually(
      [&] {
        Reply r = Get(c, "/monuments/" + name);
        last = r.json;
        return r.status == 200 && pred(last);
      },
      timeout);
  return last;
}

// A second server on `data` (the first one's data folder, through a symlink), with the same
// manifests as `write`.
std::unique_ptr<Daemon> RestartOn(const fs::path& data,
                                  const std::function<void(const fs::path&)>& write) {
  std::error_code ec;
  fs::remove(data / "serve.json", ec);
  return std::make_unique<Daemon>(std::vector<std::string>{}, [&](const fs::path& m) {
    write(m);
    fs::create_directory_symlink(data, m.parent_path() / "data");
  });
}

// ---- 1. A staged deployment ---------------------------------------------------------------------

TEST(MonumentApi, StagedDeploymentWithWorkflowAndAgent) {
  const std::string marker = Marker("staged");
  const int pa = FreeLoopbackPort(), pb = FreeLoopbackPort(), pc = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) {
    // a and b take a moment to become healthy: were a stage started before the previous one is
    // healthy, or b and c one after the other, the order checks below would see it.
    WriteRelic(m, "a", pa, marker, "HEALTH_DELAY_MS: \"500\"");
    WriteRelic(m, "b", pb, marker, "HEALTH_DELAY_MS: \"600\"");
    WriteRelic(m, "c", pc, marker);
    WriteWorkflow(m, "wf", "a");
    WriteAgent(m, "helper", "ollama");  // a default provider that needs no key
    WriteAgent(m, "lost", "nowhere");   // a provider the server does not have
    WriteMonument(m, "stack",
                  "components:\n"
                  "  relics: [a, b, c]\n"
                  "  workflows: [wf]\n"
                  "  agents: [helper, lost]\n"
                  "startup_order:\n"
                  "  - a\n"
                  "  - [b, c]\n");
  });
  ASSERT_DAEMON(d);
  http::Client& c = d.client();
  Reply errors = Get(c, "/registry/errors");
  EXPECT_EQ(errors.json["errors"], Json::array()) << errors.body;
  EXPECT_EQ(Get(c, "/monuments").json.value("count", -1), 0);

  Reply dep = DeployMonument(c, "stack");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();
  EXPECT_EQ(dep.json.value("state", ""), "healthy") << dep.body;
  EXPECT_EQ(dep.json.value("name", ""), "stack") << dep.body;
  EXPECT_EQ(dep.json.value("environment", ""), "dev") << dep.body;
  EXPECT_EQ(dep.json.value("error", "?"), "") << dep.body;
  EXPECT_FALSE(dep.json.contains("failed_component")) << dep.body;
  EXPECT_EQ(dep.json["stages"], (Json{{"a"}, {"b", "c"}})) << dep.body;

  // Components: the relics healthy in their stages, the workflow enabled, the agent that can run
  // ready, the one whose provider the server does not have failed, with why.
  std::map<std::string, Json> comps = Components(dep.json);
  ASSERT_EQ(comps.size(), 6u) << dep.body;
  for (const auto& [relic, stage] : std::map<std::string, int>{{"a", 1}, {"b", 2}, {"c", 2}}) {
    const Json& comp = comps["relic/" + relic];
    EXPECT_EQ(comp.value("state", ""), "healthy") << relic << ": " << dep.body;
    EXPECT_EQ(comp.value("stage", 0), stage) << relic << ": " << dep.body;
  }
  EXPECT_EQ(comps["workflow/wf"].value("state", ""), "enabled") << dep.body;
  EXPECT_EQ(comps["agent/helper"].value("state", ""), "ready") << dep.body;
  EXPECT_EQ(comps["agent/lost"].value("state", ""), "failed") << dep.body;
  EXPECT_THAT(comps["agent/lost"].value("error", ""), ::testing::HasSubstr("nowhere")) << dep.body;

  // Every relic runs, healthy, owned by the monument (GET /relics and discovery say so).
  std::map<std::string, Json> relics = Relics(c);
  ASSERT_EQ(relics.size(), 3u);
  for (const char* name : {"a", "b", "c"}) {
    const Json& r = relics[name];
    EXPECT_EQ(r.value("state", ""), "healthy") << name << ": " << r.dump();
    EXPECT_EQ(r.value("owner", ""), "stack") << name << ": " << r.dump();
    EXPECT_TRUE(Running(PidOf(r))) << name << ": " << r.dump();
  }
  EXPECT_EQ(PidsMatching(marker).size(), 3u) << ::testing::PrintToString(ProcessesMatching(marker));
  Reply disc = Get(c, "/discovery/services");
  ASSERT_EQ(disc.json.value("count", -1), 3) << disc.body;
  for (const Json& s : disc.json["services"]) {
    EXPECT_EQ(s.value("owner", ""), "stack") << disc.body;
  }

  // The order: b and c started only once a was healthy (a answered its first passing probe
  // before that), and in parallel: c started before b was healthy.
  const int64_t a_healthy = HealthyAt(c, "a"), b_healthy = HealthyAt(c, "b");
  ASSERT_GT(a_healthy, 0) << d.log();
  ASSERT_GT(b_healthy, 0) << d.log();
  const int64_t a_started = relics["a"].value("started_ms", int64_t{0});
  const int64_t b_started = relics["b"].value("started_ms", int64_t{0});
  const int64_t c_started = relics["c"].value("started_ms", int64_t{0});
  EXPECT_LT(a_started, a_healthy);
  EXPECT_GE(b_started, a_healthy) << "b started before a was healthy";
  EXPECT_GE(c_started, a_healthy) << "c started before a was healthy";
  EXPECT_LT(c_started, b_healthy) << "c waited for b: the stage [b, c] did not start in parallel";
  EXPECT_GE(dep.json.value("deployed_ms", int64_t{0}), HealthyAt(c, "c"));

  // The workflow works against the monument's relic.
  Reply run = Post(c, "/execute/workflow?wait=true&timeout=20s", R"({"name": "wf", "input": {}})");
  EXPECT_EQ(run.status, 200) << run.body;
  EXPECT_EQ(run.json.value("status", ""), "succeeded") << run.body;

  // Health and the listing.
  Reply health = Get(c, "/monuments/stack/health");
  EXPECT_EQ(health.status, 200) << health.body;
  EXPECT_EQ(health.json.value("status", ""), "healthy") << health.body;
  EXPECT_EQ(health.json.value("healthy_relics", -1), 3) << health.body;
  EXPECT_EQ(health.json.value("relics", -1), 3) << health.body;
  Reply list = Get(c, "/monuments");
  ASSERT_EQ(list.json.value("count", -1), 1) << list.body;
  EXPECT_EQ(list.json["monuments"][0].value("name", ""), "stack") << list.body;
  EXPECT_EQ(list.json["monuments"][0].value("state", ""), "healthy") << list.body;
  Reply one = Get(c, "/monuments/stack");
  EXPECT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(one.json["stages"], (Json{{"a"}, {"b", "c"}})) << one.body;
}

// ---- 2. Stages from depends_on (corpus shape) ---------------------------------------------------

TEST(MonumentApi, StagesFollowDependsOn) {
  const std::string marker = Marker("deps");
  const int px = FreeLoopbackPort(), py = FreeLoopbackPort(), pz = FreeLoopbackPort(),
            pw = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) {
    WriteRelic(m, "x", px, marker, "HEALTH_DELAY_MS: \"400\"");
    WriteRelic(m, "y", py, marker, "HEALTH_DELAY_MS: \"300\"");
    WriteRelic(m, "z", pz, marker);
    WriteRelic(m, "w", pw, marker);
    // Listed against the dependency order: w needs y and z, which need x.
    WriteMonument(m, "diamond",
                  "infrastructure:\n"
                  "  relics:\n"
                  "    - {name: w, path: relics/w/relic.yml, depends_on: [y, z]}\n"
                  "    - {name: y, path: relics/y/relic.yml, depends_on: [x]}\n"
                  "    - {name: z, path: relics/z/relic.yml, depends_on: [x]}\n"
                  "    - {name: x, path: relics/x/relic.yml}\n");
  });
  ASSERT_DAEMON(d);
  http::Client& c = d.client();
  Reply errors = Get(c, "/registry/errors");
  EXPECT_EQ(errors.json["errors"], Json::array()) << errors.body;

  Reply dep = DeployMonument(c, "diamond");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();
  EXPECT_EQ(dep.json.value("state", ""), "healthy") << dep.body;
  EXPECT_EQ(dep.json["stages"], (Json{{"x"}, {"y", "z"}, {"w"}})) << dep.body;
  std::map<std::string, Json> comps = Components(dep.json);
  EXPECT_EQ(comps["relic/x"].value("stage", 0), 1) << dep.body;
  EXPECT_EQ(comps["relic/y"].value("stage", 0), 2) << dep.body;
  EXPECT_EQ(comps["relic/z"].value("stage", 0), 2) << dep.body;
  EXPECT_EQ(comps["relic/w"].value("stage", 0), 3) << dep.body;

  std::map<std::string, Json> relics = Relics(c);
  ASSERT_EQ(relics.size(), 4u);
  auto started = [&](const std::string& n) { return relics[n].value("started_ms", int64_t{0}); };
  const int64_t x_healthy = HealthyAt(c, "x"), y_healthy = HealthyAt(c, "y"),
                z_healthy = HealthyAt(c, "z");
  ASSERT_GT(x_healthy, 0);
  ASSERT_GT(y_healthy, 0);
  ASSERT_GT(z_healthy, 0);
  EXPECT_GE(started("y"), x_healthy) << "y started before x was healthy";
  EXPECT_GE(started("z"), x_healthy) << "z started before x was healthy";
  EXPECT_GE(started("w"), y_healthy) << "w started before y was healthy";
  EXPECT_GE(started("w"), z_healthy) << "w started before z was healthy";
  for (const char* n : {"x", "y", "z", "w"}) {
    EXPECT_EQ(relics[n].value("state", ""), "healthy") << n << ": " << relics[n].dump();
    EXPECT_EQ(relics[n].value("owner", ""), "diamond") << n << ": " << relics[n].dump();
  }
}

// ---- 3. A relic that never becomes healthy: failed and rolled back ------------------------------

TEST(MonumentApi, FailingRelicRollsBackWhatTheDeploymentStarted) {
  const std::string marker = Marker("rollback");
  const int pa = FreeLoopbackPort(), pb = FreeLoopbackPort(), pc = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) {
    WriteRelic(m, "a", pa, marker);
    WriteRelic(m, "b", pb, marker);
    WriteRelic(m, "c", pc, marker, "HEALTH_STATUS: \"500\"", kShortStartPeriod);
    WriteMonument(m, "fragile",
                  "components:\n"
                  "  relics: [a, b, c]\n"
                  "startup_order:\n"
                  "  - a\n"
                  "  - [b, c]\n");
  });
  ASSERT_DAEMON(d);
  http::Client& c = d.client();

  Reply dep = DeployMonument(c, "fragile");
  ASSERT_EQ(dep.status, 502) << dep.body << "\n" << d.log();
  EXPECT_EQ(ErrorCode(dep), "deploy_failed") << dep.body;
  const std::string probe = "GET http://127.0.0.1:" + std::to_string(pc) + "/health: status 500";
  EXPECT_THAT(ErrorMessage(dep), HasSubstr("relic/c")) << dep.body;
  EXPECT_THAT(ErrorMessage(dep), HasSubstr("did not pass within 1000 ms")) << dep.body;
  EXPECT_THAT(ErrorMessage(dep), HasSubstr(probe)) << dep.body;
  const Json details = dep.json["error"]["details"];
  EXPECT_EQ(details.value("state", ""), "failed") << dep.body;
  EXPECT_EQ(details.value("failed_component", ""), "relic/c") << dep.body;
  EXPECT_THAT(details.value("error", ""), HasSubstr(probe)) << dep.body;
  std::map<std::string, Json> comps = Components(details);
  EXPECT_EQ(comps["relic/c"].value("state", ""), "failed") << dep.body;

  // a and b (started by this deployment) are stopped; c is failed; nothing runs.
  EXPECT_TRUE(WaitFor([&] { return PidsMatching(marker).empty(); }))
      << ::testing::PrintToString(ProcessesMatching(marker));
  std::map<std::string, Json> relics = Relics(c);
  EXPECT_EQ(relics["a"].value("state", ""), "stopped") << relics["a"].dump();
  EXPECT_EQ(relics["b"].value("state", ""), "stopped") << relics["b"].dump();
  EXPECT_EQ(relics["c"].value("state", ""), "failed") << relics["c"].dump();
  EXPECT_EQ(Get(c, "/discovery/services").json.value("count", -1), 0);

  Reply st = Get(c, "/monuments/fragile");
  EXPECT_EQ(st.status, 200) << st.body;
  EXPECT_EQ(st.json.value("state", ""), "failed") << st.body;
  EXPECT_EQ(st.json.value("failed_component", ""), "relic/c") << st.body;
  Reply health = Get(c, "/monuments/fragile/health");
  EXPECT_EQ(health.status, 503) << health.body;
  EXPECT_EQ(health.json.value("healthy_relics", -1), 0) << health.body;
  EXPECT_EQ(health.json.value("status", ""), "down") << health.body;
}

// ---- 4. A relic deployed on its own is left alone -----------------------------------------------

TEST(MonumentApi, RelicDeployedOnItsOwnIsNotStoppedByTheMonument) {
  const std::string marker = Marker("solo");
  const int ps = FreeLoopbackPort(), pm = FreeLoopbackPort(), pk = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) {
    WriteRelic(m, "solo", ps, marker);
    WriteRelic(m, "mine", pm, marker);
    WriteRelic(m, "sick", pk, marker, "HEALTH_STATUS: \"500\"", kShortStartPeriod);
    WriteMonument(m, "bad_stack",
                  "components:\n"
                  "  relics: [solo, sick]\n"
                  "startup_order: [solo, sick]\n");
    WriteMonument(m, "ok_stack",
                  "components:\n"
                  "  relics: [solo, mine]\n"
                  "startup_order: [solo, mine]\n");
  });
  ASSERT_DAEMON(d);
  http::Client& c = d.client();
  Reply own = DeployRelic(c, "solo");
  ASSERT_EQ(own.status, 200) << own.body << "\n" << d.log();
  const int64_t solo_pid = PidOf(own.json);
  ASSERT_GT(solo_pid, 0) << own.body;

  // The rollback of a failed monument leaves it running.
  Reply bad = DeployMonument(c, "bad_stack");
  ASSERT_EQ(bad.status, 502) << bad.body << "\n" << d.log();
  EXPECT_EQ(bad.json["error"]["details"].value("failed_component", ""), "relic/sick") << bad.body;
  Json solo = RelicStatus(c, "solo");
  EXPECT_EQ(solo.value("state", ""), "healthy") << solo.dump();
  EXPECT_EQ(PidOf(solo), solo_pid) << solo.dump();
  EXPECT_TRUE(Running(solo_pid));

  // Neither does the stop of a monument that included it.
  Reply ok = DeployMonument(c, "ok_stack");
  ASSERT_EQ(ok.status, 200) << ok.body << "\n" << d.log();
  const int64_t mine_pid = PidOf(RelicStatus(c, "mine"));
  ASSERT_GT(mine_pid, 0);
  EXPECT_EQ(PidOf(RelicStatus(c, "solo")), solo_pid) << "the monument restarted solo";
  Reply stop = Post(c, "/monuments/ok_stack/stop", "");
  ASSERT_EQ(stop.status, 200) << stop.body;
  EXPECT_EQ(stop.json.value("state", ""), "stopped") << stop.body;
  EXPECT_EQ(RelicStatus(c, "mine").value("state", ""), "stopped");
  EXPECT_TRUE(WaitFor([&] { return !Running(mine_pid); })) << "mine still runs after the stop";
  // solo keeps its owner (none): the monument's stop leaves it running.
  solo = RelicStatus(c, "solo");
  EXPECT_EQ(solo.value("state", ""), "healthy")
      << "the monument's stop stopped solo: " << solo.dump();
  EXPECT_TRUE(Running(solo_pid)) << "the monument's stop killed solo";

  // Nor does its delete.
  Reply del = Delete(c, "/monuments/ok_stack");
  ASSERT_EQ(del.status, 200) << del.body;
  std::map<std::string, Json> relics = Relics(c);
  EXPECT_EQ(relics.count("mine"), 0u) << "mine was not forgotten";
  EXPECT_EQ(relics.count("solo"), 1u) << "the monument's delete forgot solo";
}

// ---- 5. Bad input -------------------------------------------------------------------------------

TEST(MonumentApi, BadInput) {
  const std::string marker = Marker("bad");
  const int pg = FreeLoopbackPort(), p1 = FreeLoopbackPort(), p2 = FreeLoopbackPort(),
            ps = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) {
    WriteRelic(m, "good", pg, marker);
    WriteRelic(m, "loop1", p1, marker);
    WriteRelic(m, "loop2", p2, marker);
    WriteRelic(m, "slow", ps, marker, "HEALTH_DELAY_MS: \"1500\"");
    WriteBrokenRelic(m, "broken", marker);
    WriteMonument(m, "incomplete",
                  "components:\n"
                  "  relics: [good, ghost_relic]\n"
                  "  workflows: [ghost_flow]\n");
    WriteMonument(m, "misordered",
                  "components:\n"
                  "  relics: [good]\n"
                  "startup_order: [good, stranger]\n");
    WriteMonument(m, "cyclic",
                  "infrastructure:\n"
                  "  relics:\n"
                  "    - {name: good}\n"
                  "    - {name: loop1, depends_on: [loop2]}\n"
                  "    - {name: loop2, depends_on: [loop1]}\n");
    WriteMonument(m, "broken_stack",
                  "components:\n"
                  "  relics: [good, broken]\n"
                  "startup_order: [good, broken]\n");
    WriteMonument(m, "slow_stack", "components:\n  relics: [slow]\n");
  });
  ASSERT_DAEMON(d);
  http::Client& c = d.client();
  auto nothing_left = [&](const std::string& what) {
    EXPECT_TRUE(WaitFor([&] { return PidsMatching(marker).empty(); }))
        << what << ": " << ::testing::PrintToString(ProcessesMatching(marker));
    Reply list = Get(c, "/relics");
    EXPECT_EQ(list.json.value("count", -1), 0) << what << ": " << list.body;
  };

  // An unknown monument: 404 everywhere.
  Reply unknown = DeployMonument(c, "ghost");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  EXPECT_EQ(ErrorCode(unknown), "not_found") << unknown.body;
  EXPECT_THAT(ErrorMessage(unknown), HasSubstr("ghost")) << unknown.body;
  for (const char* path :
       {"/monuments/ghost", "/monuments/ghost/health", "/monuments/ghost/logs"}) {
    Reply r = Get(c, path);
    EXPECT_EQ(r.status, 404) << path << ": " << r.body;
  }
  EXPECT_EQ(Post(c, "/monuments/ghost/stop", "").status, 404);
  EXPECT_EQ(Post(c, "/monuments/ghost/scale", R"({"service": "a", "replicas": 1})").status, 404);
  EXPECT_EQ(Delete(c, "/monuments/ghost").status, 404);
  Reply no_name = Post(c, "/deploy/monument", "{}");
  EXPECT_EQ(no_name.status, 400) << no_name.body;

  // Components missing from the registry: both named.
  Reply missing = DeployMonument(c, "incomplete");
  EXPECT_EQ(missing.status, 400) << missing.body;
  EXPECT_EQ(ErrorCode(missing), "invalid_argument") << missing.body;
  EXPECT_THAT(ErrorMessage(missing), HasSubstr("ghost_relic")) << missing.body;
  EXPECT_THAT(ErrorMessage(missing), HasSubstr("ghost_flow")) << missing.body;
  EXPECT_THAT(ErrorMessage(missing), Not(HasSubstr("relic good"))) << missing.body;
  EXPECT_EQ(Get(c, "/monuments/incomplete").status, 404) << "a refused deployment was recorded";
  nothing_left("missing components");

  // startup_order naming something that is not a component: the registry refuses the manifest
  // when it is loaded (GET /registry/errors says why), so the deploy is a 404 pointing there.
  Reply reg = Get(c, "/registry/errors");
  EXPECT_THAT(reg.body, HasSubstr("'stranger' is not a component of this monument")) << reg.body;
  Reply order = DeployMonument(c, "misordered");
  EXPECT_EQ(order.status, 404) << order.body;
  EXPECT_THAT(ErrorMessage(order), HasSubstr("/registry/errors")) << order.body;
  nothing_left("startup_order");

  // A depends_on cycle: the relics in it are named.
  Reply cycle = DeployMonument(c, "cyclic");
  EXPECT_EQ(cycle.status, 400) << cycle.body;
  EXPECT_THAT(ErrorMessage(cycle), HasSubstr("cycle")) << cycle.body;
  EXPECT_THAT(ErrorMessage(cycle), HasSubstr("loop1")) << cycle.body;
  EXPECT_THAT(ErrorMessage(cycle), HasSubstr("loop2")) << cycle.body;
  nothing_left("depends_on cycle");

  // A relic that cannot be deployed as written (its command does not exist), in stage 2.
  // Every relic is checked before the first starts: a 400 naming it, nothing started.
  Reply broken = DeployMonument(c, "broken_stack");
  EXPECT_EQ(broken.status, 400) << broken.body;
  EXPECT_THAT(ErrorMessage(broken), HasSubstr("broken")) << broken.body;
  EXPECT_THAT(ErrorMessage(broken), HasSubstr("deployment.command")) << broken.body;
  if (broken.status == 502) {
    EXPECT_EQ(broken.json["error"]["details"].value("failed_component", ""), "relic/broken")
        << broken.body;
  }
  nothing_left("broken relic");
  if (RelicCount(c) != 0) (void)Delete(c, "/relics/good");  // so the next checks start clean

  // A second deployment while one is in progress: 409 (so is a stop).
  Reply first = DeployMonument(c, "slow_stack", /*wait=*/false);
  ASSERT_EQ(first.status, 202) << first.body;
  EXPECT_EQ(first.json.value("state", ""), "deploying") << first.body;
  Reply second = DeployMonument(c, "slow_stack", /*wait=*/false);
  EXPECT_EQ(second.status, 409) << second.body;
  EXPECT_EQ(ErrorCode(second), "conflict") << second.body;
  Reply stop_busy = Post(c, "/monuments/slow_stack/stop", "");
  EXPECT_EQ(stop_busy.status, 409) << stop_busy.body;
  Reply deploying = Get(c, "/monuments/slow_stack/health");
  EXPECT_EQ(deploying.status, 503) << deploying.body;
  EXPECT_EQ(deploying.json.value("status", ""), "deploying") << deploying.body;
  Json done = WaitForMonument(c, "slow_stack",
                              [](const Json& m) { return m.value("state", "") != "deploying"; });
  EXPECT_EQ(done.value("state", ""), "healthy") << done.dump() << "\n" << d.log();
  Reply del = Delete(c, "/monuments/slow_stack");
  EXPECT_EQ(del.status, 200) << del.body;
  nothing_left("after the slow deployment");
}

// ---- 6. Stop, delete, scale, logs ---------------------------------------------------------------

TEST(MonumentApi, StopDeleteScaleAndLogs) {
  const std::string marker = Marker("ops");
  const int pa = FreeLoopbackPort(), pb = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) {
    WriteRelic(m, "a", pa, marker);
    WriteRelic(m, "b", pb, marker);
    WriteMonument(m, "ops", "components:\n  relics: [a, b]\nstartup_order: [a, b]\n");
  });
  ASSERT_DAEMON(d);
  http::Client& c = d.client();
  Reply dep = DeployMonument(c, "ops");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << d.log();
  const int64_t pid_a = PidOf(RelicStatus(c, "a")), pid_b = PidOf(RelicStatus(c, "b"));
  ASSERT_GT(pid_a, 0);
  ASSERT_GT(pid_b, 0);

  // Scale: a process relic cannot be scaled; a service that is not one of its relics is 404.
  Reply scale = Post(c, "/monuments/ops/scale", R"({"service": "a", "replicas": 2})");
  EXPECT_EQ(scale.status, 409) << scale.body;
  EXPECT_THAT(ErrorMessage(scale), HasSubstr("cannot be scaled")) << scale.body;
  Reply unknown = Post(c, "/monuments/ops/scale", R"({"service": "zed", "replicas": 2})");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  EXPECT_THAT(ErrorMessage(unknown), HasSubstr("zed")) << unknown.body;
  Reply bad = Post(c, "/monuments/ops/scale", R"({"service": "a", "replicas": -1})");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(PidOf(RelicStatus(c, "a")), pid_a) << "the refused scale disturbed a";

  // Logs: every relic's lines, tagged with the relic.
  Reply logs = Get(c, "/monuments/ops/logs?tail=50");
  ASSERT_EQ(logs.status, 200) << logs.body;
  EXPECT_EQ(logs.json.value("monument", ""), "ops") << logs.body;
  std::map<std::string, bool> listening;
  for (const Json& l : logs.json["lines"]) {
    const std::string svc = l.value("service", "");
    EXPECT_TRUE(svc == "a" || svc == "b") << l.dump();
    if (l.value("line", "").find("relic " + svc + " listening") != std::string::npos) {
      listening[svc] = true;
    }
  }
  EXPECT_TRUE(listening["a"]) << logs.body;
  EXPECT_TRUE(listening["b"]) << logs.body;
  Reply only_b = Get(c, "/monuments/ops/logs?service=b");
  ASSERT_EQ(only_b.status, 200) << only_b.body;
  EXPECT_GT(only_b.json.value("count", 0), 0) << only_b.body;
  for (const Json& l : only_b.json["lines"]) EXPECT_EQ(l.value("service", ""), "b") << l.dump();
  EXPECT_EQ(Get(c, "/monuments/ops/logs?service=zed").status, 404);

  // Stop: every relic stopped, processes gone; the monument is stopped, not healthy.
  Reply stop = Post(c, "/monuments/ops/stop", "");
  ASSERT_EQ(stop.status, 200) << stop.body;
  EXPECT_EQ(stop.json.value("state", ""), "stopped") << stop.body;
  for (const char* n : {"a", "b"}) {
    EXPECT_EQ(RelicStatus(c, n).value("state", ""), "stopped") << n;
  }
  EXPECT_TRUE(WaitFor([&] { return PidsMatching(marker).empty(); }))
      << ::testing::PrintToString(ProcessesMatching(marker));
  EXPECT_FALSE(Running(pid_a));
  EXPECT_FALSE(Running(pid_b));
  Reply health = Get(c, "/monuments/ops/health");
  EXPECT_EQ(health.status, 503) << health.body;
  EXPECT_EQ(health.json.value("status", ""), "stopped") << health.body;
  EXPECT_EQ(Get(c, "/discovery/services").json.value("count", -1), 0);

  // Delete: its relics are forgotten, then the monument.
  Reply del = Delete(c, "/monuments/ops");
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(del.json.value("deleted", false), true) << del.body;
  EXPECT_EQ(RelicCount(c), 0);
  EXPECT_EQ(Get(c, "/relics/a").status, 404);
  EXPECT_EQ(Get(c, "/monuments/ops").status, 404);
  EXPECT_EQ(Get(c, "/monuments").json.value("count", -1), 0);
  EXPECT_EQ(Delete(c, "/monuments/ops").status, 404);
}

// ---- 7. The CLI ---------------------------------------------------------------------------------

TEST(MonumentCli, DeployWaitStatusHealth) {
  const std::string marker = Marker("cli");
  const int pa = FreeLoopbackPort(), pb = FreeLoopbackPort(), pc = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  Daemon d({}, [&](const fs::path& m) {
    WriteRelic(m, "a", pa, marker);
    WriteRelic(m, "b", pb, marker);
    WriteRelic(m, "c", pc, marker, "HEALTH_STATUS: \"500\"", kShortStartPeriod);
    WriteWorkflow(m, "wf", "a");
    WriteMonument(m, "cli_stack",
                  "components:\n"
                  "  relics: [a, b]\n"
                  "  workflows: [wf]\n"
                  "startup_order: [a, b]\n");
    WriteMonument(m, "cli_bad",
                  "components:\n"
                  "  relics: [c]\n");
  });
  ASSERT_DAEMON(d);
  const std::string server = d.url();

  CliResult dep = RunCli({"--server", server, "deploy", "monument", "cli_stack", "--wait"});
  ASSERT_EQ(dep.exit_code, 0) << dep << "\n" << d.log();
  EXPECT_THAT(dep.out, HasSubstr("[1] relic/a")) << dep;
  EXPECT_THAT(dep.out, HasSubstr("[2] relic/b")) << dep;
  EXPECT_THAT(dep.out, HasSubstr("relic/a  healthy")) << dep;
  EXPECT_THAT(dep.out, HasSubstr("relic/b  healthy")) << dep;
  EXPECT_THAT(dep.out, HasSubstr("workflow/wf  enabled")) << dep;
  EXPECT_THAT(dep.out, HasSubstr("cli_stack: deployed")) << dep;

  CliResult status = RunCli({"--server", server, "monuments", "status", "cli_stack"});
  EXPECT_EQ(status.exit_code, 0) << status;
  EXPECT_THAT(status.out, HasSubstr("cli_stack")) << status;
  EXPECT_THAT(status.out, HasSubstr("healthy")) << status;
  EXPECT_THAT(status.out, HasSubstr("relic/a")) << status;
  EXPECT_THAT(status.out, HasSubstr("relic/b")) << status;
  EXPECT_THAT(status.out, HasSubstr("workflow/wf")) << status;

  CliResult health = RunCli({"--server", server, "monuments", "health", "cli_stack"});
  EXPECT_EQ(health.exit_code, 0) << health;
  EXPECT_THAT(health.out, HasSubstr("cli_stack: healthy (2/2 relics healthy)")) << health;

  CliResult list = RunCli({"--server", server, "monuments"});
  EXPECT_EQ(list.exit_code, 0) << list;
  EXPECT_THAT(list.out, HasSubstr("2/2 healthy")) << list;

  // A failing monument: exit 1, the failed component in stderr.
  CliResult fail = RunCli({"--server", server, "deploy", "monument", "cli_bad", "--wait"});
  EXPECT_EQ(fail.exit_code, 1) << fail;
  EXPECT_THAT(fail.err, HasSubstr("relic/c")) << fail;
  EXPECT_THAT(fail.err, HasSubstr("status 500")) << fail;
  Json settled = WaitForMonument(d.client(), "cli_bad",
                                 [](const Json& m) { return m.value("state", "") == "failed"; });
  EXPECT_EQ(settled.value("failed_component", ""), "relic/c") << settled.dump();
  CliResult bad_health = RunCli({"--server", server, "monuments", "health", "cli_bad"});
  EXPECT_EQ(bad_health.exit_code, 1) << bad_health;
  CliResult ghost = RunCli({"--server", server, "deploy", "monument", "ghost", "--wait"});
  EXPECT_NE(ghost.exit_code, 0) << ghost;
  EXPECT_THAT(ghost.err, HasSubstr("ghost")) << ghost;
}

// ---- 8. A restarted server ----------------------------------------------------------------------

TEST(MonumentApi, RestartedServerStillListsTheMonumentHealthy) {
  const std::string marker = Marker("restart");
  const int pa = FreeLoopbackPort(), pb = FreeLoopbackPort();
  KillAtEnd cleanup(marker);
  auto write = [&](const fs::path& m) {
    WriteRelic(m, "a", pa, marker);
    WriteRelic(m, "b", pb, marker);
    WriteMonument(m, "durable", "components:\n  relics: [a, b]\nstartup_order: [a, b]\n");
  };
  Daemon first({}, write);
  ASSERT_DAEMON(first);
  Reply dep = DeployMonument(first.client(), "durable");
  ASSERT_EQ(dep.status, 200) << dep.body << "\n" << first.log();
  const int64_t pid_a = PidOf(RelicStatus(first.client(), "a"));
  const int64_t pid_b = PidOf(RelicStatus(first.client(), "b"));
  ASSERT_GT(pid_a, 0);
  ASSERT_GT(pid_b, 0);

  EXPECT_EQ(first.Stop(), 0) << first.log();
  EXPECT_TRUE(Running(pid_a));
  EXPECT_TRUE(Running(pid_b));
  auto second = RestartOn(first.data_dir(), write);
  ASSERT_DAEMON(*second);
  http::Client& c = second->client();

  // Listed and healthy, once the adopted relics' first probes pass.
  Reply health;
  EXPECT_TRUE(Eventually([&] {
    health = Get(c, "/monuments/durable/health");
    return health.status == 200;
  })) << health.body
      << "\n"
      << second->log();
  EXPECT_EQ(health.json.value("status", ""), "healthy") << health.body;
  EXPECT_EQ(health.json.value("healthy_relics", -1), 2) << health.body;
  Reply list = Get(c, "/monuments");
  ASSERT_EQ(list.json.value("count", -1), 1) << list.body;
  const Json& m = list.json["monuments"][0];
  EXPECT_EQ(m.value("name", ""), "durable") << list.body;
  EXPECT_EQ(m.value("state", ""), "healthy") << list.body;
  EXPECT_EQ(m.value("environment", ""), "dev") << list.body;
  EXPECT_EQ(m["stages"], (Json{{"a"}, {"b"}})) << list.body;
  // The same processes (adopted, not started again), still owned by the monument.
  std::map<std::string, Json> relics = Relics(c);
  EXPECT_EQ(PidOf(relics["a"]), pid_a) << relics["a"].dump();
  EXPECT_EQ(PidOf(relics["b"]), pid_b) << relics["b"].dump();
  EXPECT_EQ(relics["a"].value("owner", ""), "durable") << relics["a"].dump();
  EXPECT_EQ(PidsMatching(marker).size(), 2u);

  // It can still be stopped by the new server.
  Reply stop = Post(c, "/monuments/durable/stop", "");
  EXPECT_EQ(stop.status, 200) << stop.body;
  EXPECT_TRUE(WaitFor([&] { return PidsMatching(marker).empty(); }))
      << ::testing::PrintToString(ProcessesMatching(marker));
}

}  // namespace
}  // namespace cortex::testing
