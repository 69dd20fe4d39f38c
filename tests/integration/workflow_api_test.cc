// Integration tests of the workflow engine: the real `cortex serve` on a free port, workflows
// whose steps are real (sandboxed) tool processes, driven over HTTP.
//
// Covered: the example workflows (linear, diamond, conditional, retries); bad input (unknown
// workflow, bad input, bad bodies, control of finished / running / unknown runs); on_failure
// (abort, continue, skip propagation); `parallel` and `conditional` steps with depends_on; pause
// and resume; cancel reaching the tool's process (also through a sub-workflow); step and run
// timeouts; the retry endpoint (attempt numbers go on, `from` re-runs a step and what follows
// it); sub-workflows, the depth limit, and sub-workflows under a one-slot dispatch limit;
// durability across SIGKILL and SIGTERM of the server; webhook triggers and their secret; relic
// steps against a URL; the event log (JSON and server-sent events); agent steps (not yet).
//
// Tests that show a known bug end in GTEST_SKIP() << "BUG: ..." once the bug is observed (they
// pass on their own when it is fixed). Every wait is a condition wait with a deadline.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "integration/api_reply.h"
#include "integration/daemon.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr auto kDeadline = std::chrono::seconds(20);

// ---- HTTP helpers -------------------------------------------------------------------------

// Polls `cond` every 10 ms until it holds or `timeout` passes (each poll is an HTTP round trip:
// gentler than a 1 ms loop on a shared machine). True if it became true.
bool Eventually(const std::function<bool()>& cond, std::chrono::milliseconds timeout = kDeadline) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

// POST /execute/workflow {"name", "input"}: 202 with the run id, or (wait) 200 with the run.
Reply StartWorkflow(http::Client& c, const std::string& name, const Json& input = Json::object(),
                    bool wait = false) {
  Json body = {{"name", name}, {"input", input}};
  return Post(c, wait ? "/execute/workflow?wait=true&timeout=60s" : "/execute/workflow",
              body.dump());
}

bool RunFinished(const Json& run) {
  static const std::set<std::string> kFinal = {"succeeded", "failed", "cancelled"};
  return run.is_object() && kFinal.count(run.value("status", "")) > 0;
}

// Runs a workflow to its end (the server waits); the finished run.
Json RunToEnd(http::Client& c, const std::string& name, const Json& input = Json::object()) {
  Reply r = StartWorkflow(c, name, input, /*wait=*/true);
  EXPECT_EQ(r.status, 200) << name << ": " << r.body;
  EXPECT_TRUE(RunFinished(r.json)) << Brief(r.json);
  return r.json;
}

// Starts a workflow without waiting; its run id ("" and a failure when it did not start).
std::string StartAsync(http::Client& c, const std::string& name,
                       const Json& input = Json::object()) {
  Reply r = StartWorkflow(c, name, input);
  EXPECT_EQ(r.status, 202) << name << ": " << r.body;
  std::string id = r.json.is_object() ? r.json.value("run_id", "") : "";
  EXPECT_THAT(id, StartsWith("wf_")) << r.body;
  return id;
}

Json RunStatus(http::Client& c, const std::string& id) {
  auto r = c.Get("/workflows/" + id + "/status");
  if (!r.ok() || r->status != 200) return nullptr;
  return Json::parse(r->body, nullptr, false);
}

// Polls the run until `pred` holds (deadline); the last run seen.
Json WaitForRun(http::Client& c, const std::string& id,
                const std::function<bool(const Json&)>& pred,
                std::chrono::milliseconds timeout = kDeadline) {
  Json last;
  Eventually(
      [&] {
        last = RunStatus(c, id);
        return last.is_object() && pred(last);
      },
      timeout);
  return last;
}

Json WaitForEnd(http::Client& c, const std::string& id,
                std::chrono::milliseconds timeout = kDeadline) {
  return WaitForRun(c, id, RunFinished, timeout);
}

// The step named `name` of a run (null when absent).
Json StepOf(const Json& run, const std::string& name) {
  if (!run.is_object() || !run.contains("steps")) return nullptr;
  for (const Json& s : run["steps"]) {
    if (s.value("name", "") == name) return s;
  }
  return nullptr;
}
std::string StepStatus(const Json& run, const std::string& name) {
  Json s = StepOf(run, name);
  return s.is_object() ? s.value("status", "") : "<no step " + name + ">";
}
std::string StepError(const Json& run, const std::string& name) {
  Json s = StepOf(run, name);
  return s.is_object() ? s.value("error", "") : "";
}

// The run's event log (GET /workflows/{id}/logs).
std::vector<Json> Events(http::Client& c, const std::string& id) {
  Reply r = Get(c, "/workflows/" + id + "/logs");
  EXPECT_EQ(r.status, 200) << r.body;
  std::vector<Json> out;
  if (r.json.is_object() && r.json.contains("events")) {
    for (const Json& e : r.json["events"]) out.push_back(e);
  }
  return out;
}
int CountEvents(const std::vector<Json>& events, const std::string& type,
                const std::string& step = "") {
  return static_cast<int>(std::count_if(events.begin(), events.end(), [&](const Json& e) {
    return e.value("type", "") == type && (step.empty() || e.value("step", "") == step);
  }));
}
std::string EventTypes(const std::vector<Json>& events) {
  std::string out;
  for (const Json& e : events) {
    out += (out.empty() ? "" : " ") + e.value("type", "") +
           (e.contains("step") ? "(" + e.value("step", "") + ")" : "");
  }
  return out;
}

// ---- The manifests ------------------------------------------------------------------------

// A marker unique to this test process, in the command line of the tools that sleep long.
std::string Marker(const std::string& what) {
  return "wft-" + what + "-" + std::to_string(::getpid());
}

void WriteTool(const fs::path& m, const std::string& name, const std::string& impl,
               const std::string& script, const std::string& extra = "") {
  WriteFile(m / "tools" / name / "tool.yml",
            "kind: Tool\nname: " + name + "\nversion: \"1.0\"\nsummary: " + name +
                " (workflow test)\ndescription: A tool of the workflow integration tests.\n"
                "implementation:\n  runtime: bash\n  entrypoint: ./run.sh\n" +
                impl + extra);
  fs::path p = m / "tools" / name / "run.sh";
  WriteFile(p, script);
  fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                         fs::perms::others_read);
}

void WriteWorkflow(const fs::path& m, const std::string& name, const std::string& body) {
  WriteFile(m / "workflows" / (name + ".workflow.yml"),
            "kind: Workflow\nversion: \"1.0\"\nname: " + name + "\nsummary: " + name +
                " (workflow test)\ndescription: A workflow of the workflow integration tests.\n" +
                body);
}

// The examples plus every tool and workflow the tests use. `relic_port`: the test's HTTP
// server that relic steps call.
void WriteManifests(const fs::path& m, int relic_port) {
  fs::copy(fs::path(CORTEX_SOURCE_DIR) / "examples/manifests", m, fs::copy_options::recursive);

  // Sleeps `seconds`, then answers {"tag", "slept"}.
  WriteTool(
      m, "slow", "  resources: {timeout: 20s}\n",
      "secs=$(printf '%s' \"$1\" | sed -n 's/.*\"seconds\":\\([0-9.]*\\).*/\\1/p')\n"
      "tag=$(printf '%s' \"$1\" | sed -n 's/.*\"tag\":\"\\([^\"]*\\)\".*/\\1/p')\n"
      "sleep \"${secs:-1}\"\n"
      "echo \"{\\\"success\\\": true, \\\"tag\\\": \\\"$tag\\\", \\\"slept\\\": ${secs:-1}}\"\n",
      "parameters:\n  - {name: seconds, type: number, default: 1}\n"
      "  - {name: tag, type: string, default: none}\n");
  // Sleep far longer than any test: their process carries a marker to look for.
  WriteTool(m, "sleep_cancel", "  resources: {timeout: 120s}\n",
            "exec -a " + Marker("cancel") + " sleep 60\n");
  WriteTool(m, "sleep_timeout", "  resources: {timeout: 60s}\n",
            "exec -a " + Marker("timeout") + " sleep 30\n");

  WriteWorkflow(m, "abort_default",
                "steps:\n"
                "  - {name: a, type: tool, target: shell_echo, parameters: {message: a}}\n"
                "  - {name: b, type: tool, target: always_fails, parameters: {reason: boom-b}}\n"
                "  - {name: c, type: tool, target: shell_echo, parameters: {message: c}}\n"
                "  - {name: d, type: tool, target: shell_echo, parameters: {message: d}}\n");
  WriteWorkflow(m, "continue_on_failure",
                "steps:\n"
                "  - {name: a, type: tool, target: always_fails, on_failure: continue,\n"
                "     parameters: {reason: boom-a}}\n"
                "  - {name: b, type: tool, target: shell_echo, depends_on: [a],\n"
                "     parameters: {message: b ran}}\n");
  WriteWorkflow(m, "skip_propagation",
                "steps:\n"
                "  - {name: gate, type: tool, target: shell_echo, condition: \"1 > 2\",\n"
                "     parameters: {message: never}}\n"
                "  - {name: next, type: tool, target: shell_echo, depends_on: [gate],\n"
                "     parameters: {message: next}}\n"
                "  - {name: last, type: tool, target: shell_echo, depends_on: [next],\n"
                "     parameters: {message: last}}\n");
  WriteWorkflow(m, "skip_on_failure",
                "steps:\n"
                "  - {name: f, type: tool, target: always_fails, on_failure: skip}\n"
                "  - {name: g, type: tool, target: shell_echo, depends_on: [f],\n"
                "     parameters: {message: g}}\n");
  WriteWorkflow(m, "pausable",
                "steps:\n"
                "  - {name: first, type: tool, target: slow, parameters: {seconds: 1, tag: p1}}\n"
                "  - {name: second, type: tool, target: shell_echo,\n"
                "     parameters: {message: \"after $(steps.first.tag)\"}}\n"
                "outputs:\n  message: {source: steps.second.message}\n");
  WriteWorkflow(
      m, "cancellable",
      "steps:\n"
      "  - {name: long, type: tool, target: sleep_cancel}\n"
      "  - {name: after, type: tool, target: shell_echo, parameters: {message: after}}\n");
  WriteWorkflow(m, "step_timeout",
                "steps:\n"
                "  - {name: sleepy, type: tool, target: sleep_timeout, timeout: 1s}\n"
                "  - {name: after, type: tool, target: shell_echo, parameters: {message: x}}\n");
  WriteWorkflow(m, "run_timeout",
                "timeout: 1s\n"
                "steps:\n"
                "  - {name: sleepy, type: tool, target: sleep_timeout}\n"
                "  - {name: after, type: tool, target: shell_echo, parameters: {message: x}}\n");
  WriteWorkflow(m, "retry_flaky",
                "steps:\n"
                "  - {name: a, type: tool, target: shell_echo, parameters: {message: a}}\n"
                "  - {name: b, type: tool, target: flaky, parameters: {succeed_on: 2},\n"
                "     retry_policy: {max_attempts: 1, backoff: none}}\n"
                "  - {name: c, type: tool, target: shell_echo,\n"
                "     parameters: {message: \"b succeeded on attempt $(steps.b.attempt)\"}}\n"
                "outputs:\n  message: {source: steps.c.message}\n");
  WriteWorkflow(m, "chain",
                "steps:\n"
                "  - {name: fetch, type: tool, target: shell_echo, parameters: {message: f}}\n"
                "  - {name: transform, type: tool, target: shell_echo, parameters: {message: t}}\n"
                "  - {name: store, type: tool, target: shell_echo, parameters: {message: s}}\n");
  WriteWorkflow(m, "parent",
                "trigger:\n  type: manual\n  parameters:\n    text: {type: string}\n"
                "steps:\n"
                "  - {name: child, type: workflow, target: linear_pipeline,\n"
                "     parameters: {text: \"$(trigger.text)\"}}\n"
                "  - {name: report, type: tool, target: shell_echo,\n"
                "     parameters: {message: \"doubled: $(steps.child.doubled)\"}}\n"
                "outputs:\n  doubled: {source: steps.child.doubled}\n"
                "  message: {source: steps.report.message}\n");
  WriteWorkflow(m, "parent_of_cancellable",
                "steps:\n"
                "  - {name: kid, type: workflow, target: cancellable}\n");
  WriteWorkflow(
      m, "parallel_depends_on",
      "steps:\n"
      "  - {name: first, type: tool, target: slow, parameters: {seconds: 0.5, tag: f}}\n"
      "  - name: fan\n    type: parallel\n    depends_on: [first]\n    parallel:\n"
      "      - {name: left, type: tool, target: shell_echo, parameters: {message: l}}\n"
      "      - {name: right, type: tool, target: shell_echo, parameters: {message: r}}\n");
  WriteWorkflow(
      m, "conditional_depends_on",
      "trigger:\n  type: manual\n  parameters:\n    text: {type: string}\n"
      "steps:\n"
      "  - {name: measure, type: tool, target: text_stats,\n"
      "     parameters: {text: \"$(trigger.text)\"}}\n"
      "  - name: check\n    type: conditional\n    depends_on: [measure]\n"
      "    condition: \"$(steps.measure.words) > 2\"\n"
      "    then:\n"
      "      - {name: big, type: tool, target: shell_echo, parameters: {message: big}}\n"
      "    else:\n"
      "      - {name: small, type: tool, target: shell_echo, parameters: {message: small}}\n");
  WriteWorkflow(m, "recurse",
                "steps:\n"
                "  - {name: again, type: workflow, target: self}\n");
  WriteWorkflow(m, "three_slow",
                "steps:\n"
                "  - {name: s1, type: tool, target: slow, parameters: {seconds: 1.5, tag: s1}}\n"
                "  - {name: s2, type: tool, target: slow, parameters: {seconds: 1.5, tag: s2}}\n"
                "  - {name: s3, type: tool, target: slow, parameters: {seconds: 1.5, tag: s3}}\n"
                "outputs:\n  last: {source: steps.s3.tag}\n");
  WriteWorkflow(m, "hooked",
                "trigger:\n  type: webhook\n  secret: wft-hook-secret\n  parameters:\n"
                "    message: {type: string, default: from the hook}\n"
                "steps:\n"
                "  - {name: echo, type: tool, target: shell_echo,\n"
                "     parameters: {message: \"$(trigger.message)\"}}\n"
                "outputs:\n  message: {source: steps.echo.message}\n");
  const std::string url = "http://127.0.0.1:" + std::to_string(relic_port);
  WriteWorkflow(m, "relic_echo",
                "trigger:\n  type: manual\n  parameters:\n"
                "    greeting: {type: string, default: hello}\n"
                "steps:\n"
                "  - name: call\n    type: relic\n    target: \"" +
                    url +
                    "\"\n    action: /echo\n"
                    "    parameters:\n      method: POST\n"
                    "      body: {greeting: \"$(trigger.greeting)\", n: 7}\n"
                    "outputs:\n  greeting: {source: steps.call.received.greeting}\n");
  WriteWorkflow(m, "relic_boom",
                "steps:\n"
                "  - name: call\n    type: relic\n    target: \"" +
                    url +
                    "\"\n    action: /boom\n"
                    "    parameters: {method: POST, body: {x: 1}}\n");
  WriteWorkflow(m, "agent_step",
                "steps:\n"
                "  - {name: think, type: agent, target: assistant, parameters: {prompt: hi}}\n");
}

// The HTTP service relic steps call: POST /echo answers what it got; POST /boom answers 500.
std::unique_ptr<http::Server> StartRelicServer() {
  http::ServerOptions opts;
  opts.port = 0;
  opts.threads = 4;
  auto server = std::make_unique<http::Server>(opts);
  server->Handle("POST", "/echo", [](const http::Request& req) {
    Json got = Json::parse(req.body, nullptr, false);
    if (got.is_discarded()) got = req.body;
    Json out = {{"received", got}, {"method", req.method}, {"path", req.path}};
    return http::Response::Json(200, out.dump());
  });
  server->Handle("POST", "/boom", [](const http::Request&) {
    return http::Response::Json(500, R"({"error": "kaboom"})");
  });
  if (!server->Start().ok()) return nullptr;
  return server;
}

// One server for the suite, with every manifest.
class WorkflowApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    relic_ = StartRelicServer();
    int port = relic_ ? relic_->port() : 0;
    daemon_ = std::make_unique<Daemon>(std::vector<std::string>{},
                                       [port](const fs::path& m) { WriteManifests(m, port); });
  }
  static void TearDownTestSuite() {
    daemon_.reset();
    relic_.reset();
  }
  void SetUp() override {
    ASSERT_TRUE(relic_) << "the relic server did not start";
    ASSERT_TRUE(daemon_ && daemon_->ok()) << "cortex serve did not start:\n"
                                          << (daemon_ ? daemon_->log() : "");
  }
  static Daemon& d() { return *daemon_; }
  static http::Client& c() { return daemon_->client(); }

  static inline std::unique_ptr<http::Server> relic_;
  static inline std::unique_ptr<Daemon> daemon_;
};

// ---- The examples -------------------------------------------------------------------------

// Every manifest of the suite loads and resolves (else the tests below fail with 404s).
TEST_F(WorkflowApi, EveryManifestLoads) { ExpectEveryManifestLoads(c()); }

TEST_F(WorkflowApi, LinearPipeline) {
  Json run = RunToEnd(c(), "linear_pipeline", {{"text", "the cat and the hat"}});
  ASSERT_EQ(run.value("status", ""), "succeeded") << Brief(run);
  EXPECT_EQ(run["output"], (Json{{"words", 5}, {"doubled", 10}})) << Brief(run);
  EXPECT_EQ(run.value("workflow", ""), "linear_pipeline");
  EXPECT_EQ(run.value("trigger", ""), "manual");
  EXPECT_EQ(run["input"], (Json{{"text", "the cat and the hat"}}));
  EXPECT_EQ(run["progress"], (Json{{"steps", 2}, {"finished", 2}})) << Brief(run);
  for (const char* name : {"stats", "double_words"}) {
    Json s = StepOf(run, name);
    EXPECT_EQ(s.value("status", ""), "succeeded") << Brief(s);
    EXPECT_EQ(s.value("attempt", 0), 1) << Brief(s);
    // Each tool step is an ordinary execution in the history.
    std::string ex = s.value("execution_id", "");
    ASSERT_THAT(ex, StartsWith("ex_")) << Brief(s);
    Reply e = Get(c(), "/executions/" + ex);
    EXPECT_EQ(e.status, 200) << e.body;
    EXPECT_EQ(e.json.value("status", ""), "succeeded") << e.body;
  }
  EXPECT_EQ(StepOf(run, "double_words")["output"].value("result", -1), 10) << Brief(run);

  // The same run by id, in the list, and through the seed's route (body = input).
  std::string id = run.value("run_id", "");
  Json again = RunStatus(c(), id);
  EXPECT_EQ(again.value("status", ""), "succeeded");
  EXPECT_EQ(again["output"], run["output"]);
  Reply list = Get(c(), "/workflows?name=linear_pipeline&status=succeeded&limit=1000");
  ASSERT_EQ(list.status, 200) << list.body;
  bool listed = false;
  for (const Json& r : list.json["runs"]) listed = listed || r.value("run_id", "") == id;
  EXPECT_TRUE(listed) << list.body;

  Reply seed =
      Post(c(), "/execute/workflow/linear_pipeline?wait=true&timeout=60s", R"({"text": "a b"})");
  ASSERT_EQ(seed.status, 200) << seed.body;
  EXPECT_EQ(seed.json["output"], (Json{{"words", 2}, {"doubled", 4}})) << seed.body;
  // "wait" in the body works as well as in the query.
  Reply body_wait =
      Post(c(), "/execute/workflow",
           R"({"name": "linear_pipeline", "input": {"text": "x y z"}, "wait": true})");
  ASSERT_EQ(body_wait.status, 200) << body_wait.body;
  EXPECT_EQ(body_wait.json["output"], (Json{{"words", 3}, {"doubled", 6}})) << body_wait.body;
}

TEST_F(WorkflowApi, DiamondFansOutAfterSplitAndJoins) {
  Json run = RunToEnd(c(), "diamond");
  ASSERT_EQ(run.value("status", ""), "succeeded") << Brief(run);
  EXPECT_EQ(run["output"], (Json{{"words", 6}, {"shouted", "to be or not to be!"}, {"total", 7}}))
      << Brief(run);
  Json split = StepOf(run, "split"), count = StepOf(run, "count_words"),
       shout = StepOf(run, "shout"), join = StepOf(run, "join");
  int64_t split_end = split.value("finished_ms", 0LL);
  ASSERT_GT(split_end, 0) << Brief(run);
  // Both branches wait for split only (not for each other).
  EXPECT_GE(count.value("started_ms", 0LL), split_end) << Brief(run);
  EXPECT_GE(shout.value("started_ms", 0LL), split_end) << Brief(run);
  EXPECT_GE(join.value("started_ms", 0LL),
            std::max(count.value("finished_ms", 0LL), shout.value("finished_ms", 0LL)))
      << Brief(run);
  // Both were started by the same reaction to split's end: neither waited for the other.
  std::vector<Json> events = Events(c(), run.value("run_id", ""));
  int64_t split_done = -1, count_start = -1, shout_start = -1, count_done = -1, shout_done = -1;
  for (const Json& e : events) {
    std::string t = e.value("type", ""), s = e.value("step", "");
    int64_t seq = e.value("seq", 0LL);
    if (t == "step_succeeded" && s == "split") split_done = seq;
    if (t == "step_running" && s == "count_words") count_start = seq;
    if (t == "step_running" && s == "shout") shout_start = seq;
    if (t == "step_succeeded" && s == "count_words") count_done = seq;
    if (t == "step_succeeded" && s == "shout") shout_done = seq;
  }
  EXPECT_GT(count_start, split_done) << EventTypes(events);
  EXPECT_GT(shout_start, split_done) << EventTypes(events);
  EXPECT_LT(count_start, shout_done) << "count_words waited for shout: " << EventTypes(events);
  EXPECT_LT(shout_start, count_done) << "shout waited for count_words: " << EventTypes(events);
}

TEST_F(WorkflowApi, ConditionalRunsOnlyTheBranchWhoseConditionHolds) {
  Json short_run = RunToEnd(c(), "conditional", {{"text", "a b c"}});
  ASSERT_EQ(short_run.value("status", ""), "succeeded") << Brief(short_run);
  EXPECT_EQ(StepStatus(short_run, "long_text"), "skipped") << Brief(short_run);
  EXPECT_THAT(StepError(short_run, "long_text"), HasSubstr("condition is false"));
  EXPECT_EQ(StepStatus(short_run, "short_text"), "succeeded") << Brief(short_run);
  EXPECT_EQ(StepOf(short_run, "short_text")["output"].value("message", ""), "short: 3 words");
  EXPECT_EQ(short_run["output"], (Json{{"words", 3}}));

  Json long_run = RunToEnd(c(), "conditional", {{"text", "one two three four five six seven"}});
  ASSERT_EQ(long_run.value("status", ""), "succeeded") << Brief(long_run);
  EXPECT_EQ(StepStatus(long_run, "long_text"), "succeeded") << Brief(long_run);
  EXPECT_EQ(StepOf(long_run, "long_text")["output"].value("message", ""), "long: 7 words");
  EXPECT_EQ(StepStatus(long_run, "short_text"), "skipped") << Brief(long_run);
  EXPECT_THAT(StepError(long_run, "short_text"), HasSubstr("condition is false"));

  // The threshold is an input too.
  Json low = RunToEnd(c(), "conditional", {{"text", "a b c"}, {"threshold", 2}});
  EXPECT_EQ(StepStatus(low, "long_text"), "succeeded") << Brief(low);
  EXPECT_EQ(StepStatus(low, "short_text"), "skipped") << Brief(low);
}

TEST_F(WorkflowApi, RetriesSucceedOnTheThirdAttempt) {
  Json run = RunToEnd(c(), "retries");
  ASSERT_EQ(run.value("status", ""), "succeeded") << Brief(run);
  Json s = StepOf(run, "unreliable");
  EXPECT_EQ(s.value("attempt", 0), 3) << Brief(s);
  EXPECT_EQ(s["output"].value("attempt", 0), 3) << Brief(s);
  EXPECT_EQ(run["output"], (Json{{"attempts", 3}, {"message", "succeeded on attempt 3"}}))
      << Brief(run);
  std::vector<Json> events = Events(c(), run.value("run_id", ""));
  EXPECT_EQ(CountEvents(events, "step_retrying", "unreliable"), 2) << EventTypes(events);
  EXPECT_EQ(CountEvents(events, "step_running", "unreliable"), 3) << EventTypes(events);
  for (const Json& e : events) {
    if (e.value("type", "") != "step_retrying") continue;
    EXPECT_THAT(e["data"].value("error", ""), HasSubstr("fails on purpose")) << e.dump();
    EXPECT_EQ(e["data"].value("next_attempt", 0), e.value("attempt", 0) + 1) << e.dump();
    // Linear backoff: 200 ms, then 400 ms.
    EXPECT_EQ(e["data"].value("delay_ms", 0), 200 * e.value("attempt", 0)) << e.dump();
  }
  // Asking for success on the first attempt: no retries.
  Json once = RunToEnd(c(), "retries", {{"succeed_on", 1}});
  EXPECT_EQ(once.value("status", ""), "succeeded") << Brief(once);
  EXPECT_EQ(StepOf(once, "unreliable").value("attempt", 0), 1) << Brief(once);
}

// ---- Bad input ----------------------------------------------------------------------------

TEST_F(WorkflowApi, UnknownWorkflowIs404WithDidYouMean) {
  Reply r = StartWorkflow(c(), "linear_pipelin", {{"text", "x"}});
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(ErrorCode(r), "not_found");
  EXPECT_THAT(ErrorMessage(r), HasSubstr("did you mean 'linear_pipeline'")) << r.body;
  Reply seed = Post(c(), "/execute/workflow/linear_pipelin", R"({"text": "x"})");
  EXPECT_EQ(seed.status, 404) << seed.body;
  EXPECT_THAT(ErrorMessage(seed), HasSubstr("did you mean 'linear_pipeline'")) << seed.body;
}

TEST_F(WorkflowApi, BadInputIs400WithTheFields) {
  Reply missing = StartWorkflow(c(), "linear_pipeline", Json::object());
  EXPECT_EQ(missing.status, 400) << missing.body;
  EXPECT_EQ(ErrorCode(missing), "invalid_argument");
  ASSERT_TRUE(missing.json["error"]["details"]["fields"].is_array()) << missing.body;
  ASSERT_FALSE(missing.json["error"]["details"]["fields"].empty()) << missing.body;
  EXPECT_EQ(missing.json["error"]["details"]["fields"][0].value("field", ""), "text")
      << missing.body;

  Reply wrong = StartWorkflow(c(), "linear_pipeline", {{"text", 42}});
  EXPECT_EQ(wrong.status, 400) << wrong.body;
  ASSERT_FALSE(wrong.json["error"]["details"]["fields"].empty()) << wrong.body;
  EXPECT_EQ(wrong.json["error"]["details"]["fields"][0].value("field", ""), "text") << wrong.body;

  Reply bad_int = StartWorkflow(c(), "conditional", {{"text", "x"}, {"threshold", "many"}});
  EXPECT_EQ(bad_int.status, 400) << bad_int.body;
  EXPECT_EQ(bad_int.json["error"]["details"]["fields"][0].value("field", ""), "threshold")
      << bad_int.body;

  Reply seed = Post(c(), "/execute/workflow/linear_pipeline", "{}");
  EXPECT_EQ(seed.status, 400) << seed.body;
  EXPECT_FALSE(seed.json["error"]["details"]["fields"].empty()) << seed.body;

  for (const char* body :
       {"[1]", "not json", "\"linear_pipeline\"", "{}", R"({"input": {"text": "x"}})",
        R"({"name": 5})", R"({"name": "linear_pipeline", "input": "the cat"})",
        R"({"name": "linear_pipeline", "input": [1]})"}) {
    Reply r = Post(c(), "/execute/workflow", body);
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
    EXPECT_EQ(ErrorCode(r), "invalid_argument") << body;
  }
  for (const char* body : {"[1]", "not json", "42"}) {
    Reply r = Post(c(), "/execute/workflow/linear_pipeline", body);
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
  }
  Reply timeout = Post(c(), "/execute/workflow?wait=true&timeout=soon",
                       R"({"name": "linear_pipeline", "input": {"text": "x"}})");
  EXPECT_EQ(timeout.status, 400) << timeout.body;
  Reply limit = Get(c(), "/workflows?limit=0");
  EXPECT_EQ(limit.status, 400) << limit.body;

  // None of the refused requests left a run behind.
  Reply list = Get(c(), "/workflows?name=linear_pipeline&status=failed");
  EXPECT_EQ(list.json.value("count", -1), 0) << list.body;
}

TEST_F(WorkflowApi, ControlOfFinishedAndUnknownRuns) {
  Json run = RunToEnd(c(), "linear_pipeline", {{"text", "a"}});
  ASSERT_EQ(run.value("status", ""), "succeeded") << Brief(run);
  std::string id = run.value("run_id", "");
  for (const char* verb : {"pause", "resume", "cancel"}) {
    Reply r = Post(c(), "/workflows/" + id + "/" + verb, "");
    EXPECT_EQ(r.status, 409) << verb << ": " << r.body;
    EXPECT_EQ(ErrorCode(r), "failed_precondition") << verb;
  }
  // Nothing changed.
  EXPECT_EQ(RunStatus(c(), id).value("status", ""), "succeeded");

  // A succeeded run has nothing to retry unless told where from.
  Reply retry = Post(c(), "/workflows/" + id + "/retry", "");
  EXPECT_EQ(retry.status, 409) << retry.body;
  EXPECT_THAT(ErrorMessage(retry), HasSubstr("from")) << retry.body;
  Reply from = Post(c(), "/workflows/" + id + "/retry", R"({"from": "double_word"})");
  EXPECT_EQ(from.status, 404) << from.body;
  EXPECT_EQ(ErrorCode(from), "not_found");
  EXPECT_THAT(ErrorMessage(from), HasSubstr("did you mean 'double_words'")) << from.body;
  Reply bad_from = Post(c(), "/workflows/" + id + "/retry", R"({"from": 3})");
  EXPECT_EQ(bad_from.status, 400) << bad_from.body;
  Reply bad_body = Post(c(), "/workflows/" + id + "/retry", "[1]");
  EXPECT_EQ(bad_body.status, 400) << bad_body.body;
  EXPECT_EQ(RunStatus(c(), id).value("status", ""), "succeeded");

  const std::string unknown = "wf_00000000000000000000";
  for (const char* path : {"", "/status", "/logs"}) {
    Reply r = Get(c(), "/workflows/" + unknown + path);
    EXPECT_EQ(r.status, 404) << path << ": " << r.body;
    EXPECT_EQ(ErrorCode(r), "not_found") << path;
  }
  for (const char* verb : {"pause", "resume", "cancel", "retry"}) {
    Reply r = Post(c(), "/workflows/" + unknown + "/" + verb, "");
    EXPECT_EQ(r.status, 404) << verb << ": " << r.body;
    EXPECT_EQ(ErrorCode(r), "not_found") << verb;
  }
}

// ---- on_failure ---------------------------------------------------------------------------

TEST_F(WorkflowApi, AFailedStepAbortsTheRunByDefault) {
  Json run = RunToEnd(c(), "abort_default");
  ASSERT_EQ(run.value("status", ""), "failed") << Brief(run);
  EXPECT_THAT(run.value("error", ""), StartsWith("step 'b' failed")) << Brief(run);
  EXPECT_THAT(run.value("error", ""), HasSubstr("boom-b")) << Brief(run);
  EXPECT_EQ(StepStatus(run, "a"), "succeeded");
  EXPECT_EQ(StepStatus(run, "b"), "failed");
  EXPECT_THAT(StepError(run, "b"), HasSubstr("boom-b"));
  for (const char* later : {"c", "d"}) {
    EXPECT_EQ(StepStatus(run, later), "cancelled") << Brief(run);
    EXPECT_THAT(StepError(run, later), HasSubstr("step 'b' failed")) << Brief(run);
    EXPECT_FALSE(StepOf(run, later).contains("execution_id")) << "it ran: " << Brief(run);
  }
  EXPECT_FALSE(run.contains("output")) << Brief(run);
  // One line in the server's log for the run, on one line however many lines its error has.
  EXPECT_TRUE(WaitFor([&] {
    return d().log().find("workflow abort_default " + run.value("run_id", "") + " failed in ") !=
           std::string::npos;
  })) << d().log();
}

TEST_F(WorkflowApi, OnFailureContinueLetsDependentsRun) {
  Json run = RunToEnd(c(), "continue_on_failure");
  EXPECT_EQ(StepStatus(run, "a"), "failed") << Brief(run);
  EXPECT_THAT(StepError(run, "a"), HasSubstr("boom-a"));
  EXPECT_EQ(StepStatus(run, "b"), "succeeded") << Brief(run);
  EXPECT_EQ(StepOf(run, "b")["output"].value("message", ""), "b ran") << Brief(run);
  // The failure was tolerated: the run is not failed because of it.
  EXPECT_EQ(run.value("status", ""), "succeeded") << Brief(run);
}

TEST_F(WorkflowApi, ASkippedDependencySkipsItsDependents) {
  Json run = RunToEnd(c(), "skip_propagation");
  ASSERT_EQ(run.value("status", ""), "succeeded") << Brief(run);
  EXPECT_EQ(StepStatus(run, "gate"), "skipped");
  EXPECT_THAT(StepError(run, "gate"), HasSubstr("condition is false"));
  EXPECT_EQ(StepStatus(run, "next"), "skipped") << Brief(run);
  EXPECT_THAT(StepError(run, "next"), HasSubstr("gate skipped")) << Brief(run);
  EXPECT_EQ(StepStatus(run, "last"), "skipped") << Brief(run);
  EXPECT_THAT(StepError(run, "last"), HasSubstr("next skipped")) << Brief(run);
  for (const char* s : {"gate", "next", "last"}) {
    EXPECT_FALSE(StepOf(run, s).contains("execution_id")) << s << " ran: " << Brief(run);
  }

  // on_failure: skip: the failed step's dependents are skipped, the run goes on.
  Json skip = RunToEnd(c(), "skip_on_failure");
  EXPECT_EQ(StepStatus(skip, "f"), "failed") << Brief(skip);
  EXPECT_EQ(StepStatus(skip, "g"), "skipped") << Brief(skip);
  EXPECT_THAT(StepError(skip, "g"), HasSubstr("f failed")) << Brief(skip);
  EXPECT_NE(skip.value("status", ""), "failed") << Brief(skip);
}

// ---- Structural steps ---------------------------------------------------------------------

// plan.h: the children of a `parallel` step wait for what it waits for, and a `conditional`
// step's condition is evaluated once what it depends on has finished.
TEST_F(WorkflowApi, StructuralStepsWaitForTheirDependsOn) {
  Json par = RunToEnd(c(), "parallel_depends_on");
  ASSERT_EQ(par.value("status", ""), "succeeded") << Brief(par);
  int64_t first_end = StepOf(par, "first").value("finished_ms", 0LL);
  ASSERT_GT(first_end, 0) << Brief(par);
  int64_t children_end = 0;
  for (const char* s : {"left", "right"}) {
    EXPECT_EQ(StepStatus(par, s), "succeeded") << Brief(par);
    EXPECT_GE(StepOf(par, s).value("started_ms", 0LL), first_end)
        << s << " started before 'first' (its parallel step's depends_on) ended: " << Brief(par);
    children_end = std::max(children_end, StepOf(par, s).value("finished_ms", int64_t{0}));
  }
  EXPECT_EQ(StepStatus(par, "fan"), "succeeded") << Brief(par);
  EXPECT_GE(StepOf(par, "fan").value("finished_ms", 0LL), children_end) << Brief(par);

  Json big = RunToEnd(c(), "conditional_depends_on", {{"text", "a b c d"}});
  ASSERT_EQ(big.value("status", ""), "succeeded") << Brief(big);
  EXPECT_EQ(StepStatus(big, "big"), "succeeded") << Brief(big);
  EXPECT_EQ(StepStatus(big, "small"), "skipped") << Brief(big);
  Json small = RunToEnd(c(), "conditional_depends_on", {{"text", "a"}});
  ASSERT_EQ(small.value("status", ""), "succeeded") << Brief(small);
  EXPECT_EQ(StepStatus(small, "big"), "skipped") << Brief(small);
  EXPECT_EQ(StepStatus(small, "small"), "succeeded") << Brief(small);
}

// ---- Pause, resume, cancel ----------------------------------------------------------------

TEST_F(WorkflowApi, PauseHoldsTheNextStepUntilResume) {
  std::string id = StartAsync(c(), "pausable");
  ASSERT_FALSE(id.empty());
  Json running = WaitForRun(
      c(), id, [](const Json& r) { return StepStatus(r, "first") == "running" || RunFinished(r); });
  ASSERT_EQ(StepStatus(running, "first"), "running") << Brief(running);

  Reply pause = Post(c(), "/workflows/" + id + "/pause", "");
  ASSERT_EQ(pause.status, 200) << pause.body;
  EXPECT_EQ(pause.json.value("status", ""), "paused") << pause.body;
  ASSERT_EQ(StepStatus(pause.json, "first"), "running")
      << "the slow step ended before the pause: " << pause.body;
  Reply twice = Post(c(), "/workflows/" + id + "/pause", "");
  EXPECT_EQ(twice.status, 409) << twice.body;

  // The running step finishes; the next one is held.
  Json held = WaitForRun(
      c(), id, [](const Json& r) { return StepStatus(r, "first") != "running" || RunFinished(r); });
  EXPECT_EQ(StepStatus(held, "first"), "succeeded") << Brief(held);
  EXPECT_EQ(held.value("status", ""), "paused") << Brief(held);
  EXPECT_EQ(StepStatus(held, "second"), "pending") << Brief(held);
  Reply retry_paused = Post(c(), "/workflows/" + id + "/retry", "");
  EXPECT_EQ(retry_paused.status, 409) << retry_paused.body;

  Reply resume = Post(c(), "/workflows/" + id + "/resume", "");
  ASSERT_EQ(resume.status, 200) << resume.body;
  EXPECT_NE(resume.json.value("status", ""), "paused") << resume.body;
  Json done = WaitForEnd(c(), id);
  EXPECT_EQ(done.value("status", ""), "succeeded") << Brief(done);
  EXPECT_EQ(done["output"], (Json{{"message", "after p1"}})) << Brief(done);
  Reply again = Post(c(), "/workflows/" + id + "/resume", "");
  EXPECT_EQ(again.status, 409) << again.body;

  std::vector<Json> events = Events(c(), id);
  EXPECT_EQ(CountEvents(events, "run_paused"), 1) << EventTypes(events);
  EXPECT_EQ(CountEvents(events, "run_resumed"), 1) << EventTypes(events);
}

TEST_F(WorkflowApi, CancelStopsTheRunningToolProcess) {
  const std::string marker = Marker("cancel");
  std::string id = StartAsync(c(), "cancellable");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(Eventually([&] { return !ProcessesMatching(marker).empty(); }, kDeadline))
      << "the tool never started: " << Brief(RunStatus(c(), id));
  Json running = RunStatus(c(), id);
  ASSERT_EQ(StepStatus(running, "long"), "running") << Brief(running);

  // A running run cannot be retried.
  Reply retry = Post(c(), "/workflows/" + id + "/retry", "");
  EXPECT_EQ(retry.status, 409) << retry.body;
  EXPECT_EQ(ErrorCode(retry), "failed_precondition") << retry.body;

  auto asked = std::chrono::steady_clock::now();
  Reply cancel = Post(c(), "/workflows/" + id + "/cancel", "");
  ASSERT_EQ(cancel.status, 200) << cancel.body;
  Json done = WaitForEnd(c(), id, std::chrono::seconds(5));
  EXPECT_EQ(done.value("status", ""), "cancelled") << Brief(done);
  EXPECT_LT(std::chrono::steady_clock::now() - asked, std::chrono::seconds(5));
  EXPECT_THAT(done.value("error", ""), HasSubstr("cancelled")) << Brief(done);
  EXPECT_EQ(StepStatus(done, "long"), "cancelled") << Brief(done);
  EXPECT_EQ(StepStatus(done, "after"), "cancelled") << Brief(done);
  EXPECT_FALSE(StepOf(done, "after").contains("execution_id")) << Brief(done);
  EXPECT_TRUE(
      Eventually([&] { return ProcessesMatching(marker).empty(); }, std::chrono::seconds(5)))
      << ::testing::PrintToString(ProcessesMatching(marker));
  std::string ex = StepOf(done, "long").value("execution_id", "");
  Json rec = nullptr;
  Eventually([&] {
    Reply e = Get(c(), "/executions/" + ex);
    rec = e.json;
    return e.status == 200 && rec.value("status", "") != "running";
  });
  EXPECT_EQ(rec.value("status", ""), "cancelled") << Brief(rec);

  Reply twice = Post(c(), "/workflows/" + id + "/cancel", "");
  EXPECT_EQ(twice.status, 409) << twice.body;
}

// ---- Timeouts -----------------------------------------------------------------------------

TEST_F(WorkflowApi, StepTimeoutFailsTheStep) {
  const std::string marker = Marker("timeout");
  auto start = std::chrono::steady_clock::now();
  Json run = RunToEnd(c(), "step_timeout");
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(run.value("status", ""), "failed") << Brief(run);
  EXPECT_EQ(StepStatus(run, "sleepy"), "failed") << Brief(run);
  EXPECT_THAT(StepError(run, "sleepy"), HasSubstr("timed out after 1s")) << Brief(run);
  EXPECT_THAT(run.value("error", ""), HasSubstr("step 'sleepy' failed: timed out after 1s"));
  EXPECT_EQ(StepStatus(run, "after"), "cancelled") << Brief(run);
  EXPECT_GE(StepOf(run, "sleepy").value("duration_ms", 0), 1000) << Brief(run);
  EXPECT_LT(took, std::chrono::seconds(10));
  EXPECT_TRUE(
      Eventually([&] { return ProcessesMatching(marker).empty(); }, std::chrono::seconds(5)))
      << ::testing::PrintToString(ProcessesMatching(marker));
}

TEST_F(WorkflowApi, RunTimeoutFailsTheRun) {
  const std::string marker = Marker("timeout");
  auto start = std::chrono::steady_clock::now();
  Json run = RunToEnd(c(), "run_timeout");
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(run.value("status", ""), "failed") << Brief(run);
  EXPECT_THAT(run.value("error", ""), HasSubstr("timed out after 1s")) << Brief(run);
  EXPECT_EQ(StepStatus(run, "sleepy"), "cancelled") << Brief(run);
  EXPECT_EQ(StepStatus(run, "after"), "cancelled") << Brief(run);
  EXPECT_GE(run.value("duration_ms", 0), 1000) << Brief(run);
  EXPECT_LT(took, std::chrono::seconds(10));
  EXPECT_TRUE(
      Eventually([&] { return ProcessesMatching(marker).empty(); }, std::chrono::seconds(5)))
      << ::testing::PrintToString(ProcessesMatching(marker));
}

// A retried run is bounded by the workflow's timeout like the first time.
TEST_F(WorkflowApi, RetriedRunKeepsTheRunTimeout) {
  Json run = RunToEnd(c(), "run_timeout");
  ASSERT_EQ(run.value("status", ""), "failed") << Brief(run);
  std::string id = run.value("run_id", "");
  Reply retry = Post(c(), "/workflows/" + id + "/retry", "");
  ASSERT_EQ(retry.status, 200) << retry.body;
  Json done = WaitForEnd(c(), id, std::chrono::seconds(4));
  if (!RunFinished(done)) Post(c(), "/workflows/" + id + "/cancel", "");
  ASSERT_TRUE(RunFinished(done)) << "still running 4 s after the retry: " << Brief(done);
  EXPECT_EQ(done.value("status", ""), "failed") << Brief(done);
  EXPECT_THAT(done.value("error", ""), HasSubstr("timed out after 1s")) << Brief(done);
}

// ---- Retry --------------------------------------------------------------------------------

TEST_F(WorkflowApi, RetryRerunsTheFailedStepWithTheNextAttempt) {
  Json failed = RunToEnd(c(), "retry_flaky");
  ASSERT_EQ(failed.value("status", ""), "failed") << Brief(failed);
  std::string id = failed.value("run_id", "");
  Json b1 = StepOf(failed, "b");
  EXPECT_EQ(b1.value("status", ""), "failed") << Brief(failed);
  EXPECT_EQ(b1.value("attempt", 0), 1) << Brief(failed);
  EXPECT_THAT(b1.value("error", ""), HasSubstr("attempt 1 fails on purpose")) << Brief(failed);
  EXPECT_EQ(StepStatus(failed, "c"), "cancelled") << Brief(failed);
  std::string a_ex = StepOf(failed, "a").value("execution_id", "");

  Reply retry = Post(c(), "/workflows/" + id + "/retry", "");
  ASSERT_EQ(retry.status, 200) << retry.body;
  Json done = WaitForEnd(c(), id);
  ASSERT_EQ(done.value("status", ""), "succeeded") << Brief(done);
  Json b2 = StepOf(done, "b");
  // The attempt number goes on from the failed one (flaky succeeds on attempt 2).
  EXPECT_EQ(b2.value("attempt", 0), 2) << Brief(done);
  EXPECT_EQ(b2["output"].value("attempt", 0), 2) << Brief(done);
  EXPECT_NE(b2.value("execution_id", ""), b1.value("execution_id", ""));
  EXPECT_EQ(done["output"], (Json{{"message", "b succeeded on attempt 2"}})) << Brief(done);
  // What had succeeded is kept.
  EXPECT_EQ(StepOf(done, "a").value("execution_id", ""), a_ex) << Brief(done);
  EXPECT_EQ(StepOf(done, "a").value("attempt", 0), 1) << Brief(done);
  std::vector<Json> events = Events(c(), id);
  EXPECT_EQ(CountEvents(events, "run_retried"), 1) << EventTypes(events);
  EXPECT_EQ(CountEvents(events, "step_running", "a"), 1) << EventTypes(events);
  EXPECT_EQ(events.back().value("type", ""), "run_succeeded") << EventTypes(events);
}

TEST_F(WorkflowApi, RetryFromAStepRerunsItAndWhatFollows) {
  Json run = RunToEnd(c(), "chain");
  ASSERT_EQ(run.value("status", ""), "succeeded") << Brief(run);
  std::string id = run.value("run_id", "");
  auto exec_of = [](const Json& r, const char* s) {
    return StepOf(r, s).value("execution_id", "");
  };

  Reply from_t = Post(c(), "/workflows/" + id + "/retry", R"({"from": "transform"})");
  ASSERT_EQ(from_t.status, 200) << from_t.body;
  Json second = WaitForEnd(c(), id);
  ASSERT_EQ(second.value("status", ""), "succeeded") << Brief(second);
  EXPECT_EQ(exec_of(second, "fetch"), exec_of(run, "fetch")) << "fetch ran again";
  EXPECT_EQ(StepOf(second, "fetch").value("attempt", 0), 1);
  for (const char* s : {"transform", "store"}) {
    EXPECT_NE(exec_of(second, s), exec_of(run, s)) << s << " did not run again";
    EXPECT_EQ(StepOf(second, s).value("attempt", 0), 2) << Brief(second);
    EXPECT_EQ(StepStatus(second, s), "succeeded");
  }

  // From the first step: everything runs again, nothing is kept.
  Reply from_f = Post(c(), "/workflows/" + id + "/retry", R"({"from": "fetch"})");
  ASSERT_EQ(from_f.status, 200) << from_f.body;
  Json third = WaitForEnd(c(), id);
  ASSERT_EQ(third.value("status", ""), "succeeded") << Brief(third);
  for (const char* s : {"fetch", "transform", "store"}) {
    EXPECT_NE(exec_of(third, s), exec_of(second, s)) << s << " did not run again";
    EXPECT_EQ(StepStatus(third, s), "succeeded");
  }
  EXPECT_EQ(StepOf(third, "fetch").value("attempt", 0), 2) << Brief(third);
  EXPECT_EQ(StepOf(third, "store").value("attempt", 0), 3) << Brief(third);
  std::vector<Json> events = Events(c(), id);
  EXPECT_EQ(CountEvents(events, "run_retried"), 2) << EventTypes(events);
  EXPECT_EQ(CountEvents(events, "step_running", "fetch"), 2) << EventTypes(events);
  EXPECT_EQ(CountEvents(events, "step_running", "store"), 3) << EventTypes(events);
}

// ---- Sub-workflows ------------------------------------------------------------------------

TEST_F(WorkflowApi, SubWorkflowStepGetsTheChildOutputs) {
  Json run = RunToEnd(c(), "parent", {{"text", "the cat and the hat"}});
  ASSERT_EQ(run.value("status", ""), "succeeded") << Brief(run);
  Json child_step = StepOf(run, "child");
  EXPECT_EQ(child_step["output"], (Json{{"words", 5}, {"doubled", 10}})) << Brief(run);
  EXPECT_EQ(run["output"], (Json{{"doubled", 10}, {"message", "doubled: 10"}})) << Brief(run);

  // The child is a run of its own, linked to its parent.
  std::string child_id = child_step.value("execution_id", "");
  ASSERT_THAT(child_id, StartsWith("wf_")) << Brief(run);
  Json child = RunStatus(c(), child_id);
  EXPECT_EQ(child.value("workflow", ""), "linear_pipeline") << Brief(child);
  EXPECT_EQ(child.value("status", ""), "succeeded") << Brief(child);
  EXPECT_EQ(child.value("parent_run_id", ""), run.value("run_id", "")) << Brief(child);
  EXPECT_EQ(child.value("parent_step", ""), "child") << Brief(child);
  EXPECT_EQ(child.value("trigger", ""), "workflow") << Brief(child);
  EXPECT_EQ(child.value("depth", -1), 1) << Brief(child);
  EXPECT_EQ(child["input"], (Json{{"text", "the cat and the hat"}})) << Brief(child);
}

TEST_F(WorkflowApi, CancellingAParentCancelsItsChildRun) {
  const std::string marker = Marker("cancel");
  std::string id = StartAsync(c(), "parent_of_cancellable");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(Eventually([&] { return !ProcessesMatching(marker).empty(); }, kDeadline))
      << "the child's tool never started: " << Brief(RunStatus(c(), id));
  Reply cancel = Post(c(), "/workflows/" + id + "/cancel", "");
  ASSERT_EQ(cancel.status, 200) << cancel.body;
  Json done = WaitForEnd(c(), id, std::chrono::seconds(5));
  EXPECT_EQ(done.value("status", ""), "cancelled") << Brief(done);
  EXPECT_EQ(StepStatus(done, "kid"), "cancelled") << Brief(done);
  std::string child_id = StepOf(done, "kid").value("execution_id", "");
  Json child = WaitForEnd(c(), child_id, std::chrono::seconds(5));
  EXPECT_EQ(child.value("status", ""), "cancelled") << Brief(child);
  EXPECT_EQ(StepStatus(child, "long"), "cancelled") << Brief(child);
  EXPECT_EQ(StepStatus(child, "after"), "cancelled") << Brief(child);
  // A step that never started has no duration (not "now minus 1970").
  EXPECT_LT(StepOf(child, "after").value("duration_ms", 0LL), 60000) << Brief(child);
  EXPECT_TRUE(
      Eventually([&] { return ProcessesMatching(marker).empty(); }, std::chrono::seconds(5)))
      << ::testing::PrintToString(ProcessesMatching(marker));
}

TEST_F(WorkflowApi, RecursionBeyondTheDepthLimitFails) {
  Json run = RunToEnd(c(), "recurse");
  ASSERT_EQ(run.value("status", ""), "failed") << Brief(run);
  EXPECT_THAT(run.value("error", ""), HasSubstr("deeper than 8 levels")) << Brief(run);
  // Depth 0 to 8: nine runs, each failed.
  Reply list = Get(c(), "/workflows?name=recurse&limit=100");
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_EQ(list.json.value("count", 0), 9) << list.body;
  int deepest = -1;
  for (const Json& r : list.json["runs"]) {
    EXPECT_EQ(r.value("status", ""), "failed") << Brief(r);
    deepest = std::max(deepest, r.value("depth", -1));
  }
  EXPECT_EQ(deepest, 8) << list.body;
}

// ---- Webhooks -----------------------------------------------------------------------------

TEST_F(WorkflowApi, WebhookNeedsItsSecret) {
  const std::string body = R"({"message": "hooked!"})";
  Reply none = Post(c(), "/hooks/hooked", body);
  EXPECT_EQ(none.status, 401) << none.body;
  EXPECT_EQ(ErrorCode(none), "unauthenticated");
  Reply wrong = Post(c(), "/hooks/hooked", body, {{"X-Cortex-Secret", "wft-hook-secreT"}});
  EXPECT_EQ(wrong.status, 403) << wrong.body;
  EXPECT_EQ(ErrorCode(wrong), "forbidden");
  Reply wrong_bearer =
      Post(c(), "/hooks/hooked", body, {{"Authorization", "Bearer wft-hook-secret-and-more"}});
  EXPECT_EQ(wrong_bearer.status, 403) << wrong_bearer.body;
  Reply list = Get(c(), "/workflows?name=hooked");
  EXPECT_EQ(list.json.value("count", -1), 0) << "a refused hook started a run: " << list.body;

  Reply right = Post(c(), "/hooks/hooked", body, {{"X-Cortex-Secret", "wft-hook-secret"}});
  ASSERT_EQ(right.status, 202) << right.body;
  std::string id = right.json.value("run_id", "");
  Json run = WaitForEnd(c(), id);
  EXPECT_EQ(run.value("status", ""), "succeeded") << Brief(run);
  EXPECT_EQ(run.value("trigger", ""), "webhook") << Brief(run);
  EXPECT_EQ(run["output"], (Json{{"message", "hooked!"}})) << Brief(run);

  Reply bearer = Post(c(), "/hooks/hooked", "", {{"Authorization", "Bearer wft-hook-secret"}});
  ASSERT_EQ(bearer.status, 202) << bearer.body;
  Json defaulted = WaitForEnd(c(), bearer.json.value("run_id", ""));
  EXPECT_EQ(defaulted["output"], (Json{{"message", "from the hook"}})) << Brief(defaulted);

  Reply manual = Post(c(), "/hooks/linear_pipeline", R"({"text": "x"})");
  EXPECT_EQ(manual.status, 409) << manual.body;
  EXPECT_EQ(ErrorCode(manual), "failed_precondition");
  Reply unknown = Post(c(), "/hooks/no_such_workflow", "{}");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
}

// ---- Relic steps --------------------------------------------------------------------------

TEST_F(WorkflowApi, RelicStepCallsTheUrl) {
  Json run = RunToEnd(c(), "relic_echo", {{"greeting", "bonjour"}});
  ASSERT_EQ(run.value("status", ""), "succeeded") << Brief(run);
  EXPECT_EQ(StepOf(run, "call")["output"], (Json{{"received", {{"greeting", "bonjour"}, {"n", 7}}},
                                                 {"method", "POST"},
                                                 {"path", "/echo"}}))
      << Brief(run);
  EXPECT_EQ(run["output"], (Json{{"greeting", "bonjour"}})) << Brief(run);

  Json boom = RunToEnd(c(), "relic_boom");
  ASSERT_EQ(boom.value("status", ""), "failed") << Brief(boom);
  EXPECT_EQ(StepStatus(boom, "call"), "failed") << Brief(boom);
  EXPECT_THAT(StepError(boom, "call"), HasSubstr("500")) << Brief(boom);
  EXPECT_THAT(StepError(boom, "call"), HasSubstr("kaboom")) << Brief(boom);
}

// ---- Logs ---------------------------------------------------------------------------------

TEST_F(WorkflowApi, LogsListTheEventsInOrder) {
  Json run = RunToEnd(c(), "linear_pipeline", {{"text", "the cat"}});
  ASSERT_EQ(run.value("status", ""), "succeeded") << Brief(run);
  std::string id = run.value("run_id", "");
  std::vector<Json> events = Events(c(), id);
  ASSERT_GE(events.size(), 6u) << EventTypes(events);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].value("seq", 0), static_cast<int>(i) + 1) << EventTypes(events);
  }
  EXPECT_EQ(events.front().value("type", ""), "run_started") << EventTypes(events);
  EXPECT_EQ(events.back().value("type", ""), "run_succeeded") << EventTypes(events);
  std::vector<std::string> steps;
  for (const Json& e : events) {
    if (e.contains("step")) steps.push_back(e.value("type", "") + "(" + e.value("step", "") + ")");
  }
  EXPECT_EQ(steps, (std::vector<std::string>{"step_running(stats)", "step_succeeded(stats)",
                                             "step_running(double_words)",
                                             "step_succeeded(double_words)"}))
      << EventTypes(events);
  Reply after = Get(c(), "/workflows/" + id + "/logs?after=2");
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(after.json["events"].size(), events.size() - 2) << after.body;

  // The same log as server-sent events, ending with the run.
  http::Client sse(d().url());
  std::vector<http::SseEvent> got;
  Status st = sse.Stream("/workflows/" + id + "/logs", [&](const http::SseEvent& e) {
    got.push_back(e);
    return true;
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  ASSERT_EQ(got.size(), events.size() + 1);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(got[i].event, events[i].value("type", ""));
  }
  EXPECT_EQ(got.back().event, "result");
  Json result = Json::parse(got.back().data, nullptr, false);
  EXPECT_EQ(result.value("status", ""), "succeeded") << got.back().data;
  EXPECT_EQ(result["output"], run["output"]) << got.back().data;
}

TEST_F(WorkflowApi, EventStreamFollowsALiveRunToItsResult) {
  std::string id = StartAsync(c(), "pausable");
  ASSERT_FALSE(id.empty());
  http::Client sse(d().url());
  std::vector<http::SseEvent> got;
  Status st = sse.Stream("/workflows/" + id + "/logs", [&](const http::SseEvent& e) {
    got.push_back(e);
    return true;
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  ASSERT_GE(got.size(), 2u);
  std::string types;
  for (const auto& e : got) types += e.event + " ";
  EXPECT_EQ(got.front().event, "run_started") << types;
  EXPECT_EQ(got[got.size() - 2].event, "run_succeeded") << types;
  EXPECT_EQ(got.back().event, "result") << types;
  Json result = Json::parse(got.back().data, nullptr, false);
  EXPECT_EQ(result.value("status", ""), "succeeded") << got.back().data;
  EXPECT_EQ(result["output"], (Json{{"message", "after p1"}})) << got.back().data;
}

// ---- Agent steps --------------------------------------------------------------------------

// Agent steps run (agent_api_test.cc); one whose agent cannot reach a model fails clearly (the
// example assistant's provider is not configured here).
TEST_F(WorkflowApi, AgentStepWithoutAModelFailsClearly) {
  Json run = RunToEnd(c(), "agent_step");
  ASSERT_EQ(run.value("status", ""), "failed") << Brief(run);
  EXPECT_EQ(StepStatus(run, "think"), "failed") << Brief(run);
  EXPECT_THAT(StepError(run, "think"),
              HasSubstr("agent 'assistant' has no usable model: llm provider 'openai_compatible' "
                        "is not configured"))
      << Brief(run);
}

// ---- Limits -------------------------------------------------------------------------------

// With one dispatch slot (exec.queue 2 gives max_inflight 1), a sub-workflow step must not hold
// the slot its child run's steps need.
TEST(WorkflowLimits, SubWorkflowsDoNotStarveTheirChildren) {
  TempDir cfg;
  WriteFile(cfg.path() / "cortex.yml", "exec:\n  workers: 2\n  queue: 2\n");
  Daemon d({"--config", (cfg.path() / "cortex.yml").string()},
           [](const fs::path& m) { WriteManifests(m, 0); });
  ASSERT_DAEMON(d);
  std::vector<std::string> ids;
  for (const char* text : {"a b", "a b c", "a b c d"}) {
    ids.push_back(StartAsync(d.client(), "parent", {{"text", text}}));
  }
  int doubled = 4;
  for (const std::string& id : ids) {
    Json run = WaitForEnd(d.client(), id, std::chrono::seconds(15));
    EXPECT_EQ(run.value("status", ""), "succeeded") << Brief(run);
    EXPECT_EQ(run["output"].value("doubled", 0), doubled) << Brief(run);
    doubled += 2;
    if (!RunFinished(run)) Post(d.client(), "/workflows/" + id + "/cancel", "");
  }
}

// ---- Durability ---------------------------------------------------------------------------

// A second server on the first one's data folder (its data/ is a symlink to it).
std::unique_ptr<Daemon> RestartOn(const Daemon& first) {
  fs::path data = first.data_dir();
  std::error_code ec;
  fs::remove(data / "serve.json", ec);  // a killed server leaves it behind
  return std::make_unique<Daemon>(std::vector<std::string>{}, [data](const fs::path& m) {
    WriteManifests(m, 0);
    fs::create_directory_symlink(data, m.parent_path() / "data");
  });
}

// Starts three_slow and waits until its second step's tool runs; the run as it was then.
Json StartThreeSlowAndWaitForS2(Daemon& d) {
  std::string id = StartAsync(d.client(), "three_slow");
  if (id.empty()) return nullptr;
  Json at_s2 = WaitForRun(d.client(), id, [](const Json& r) {
    return StepStatus(r, "s2") == "running" || RunFinished(r);
  });
  EXPECT_EQ(StepStatus(at_s2, "s1"), "succeeded") << Brief(at_s2);
  EXPECT_EQ(StepStatus(at_s2, "s2"), "running") << Brief(at_s2);
  std::string ex = StepOf(at_s2, "s2").value("execution_id", "");
  // The tool process is there (its execution runs), not only the step's record.
  EXPECT_TRUE(Eventually([&] {
    Reply e = Get(d.client(), "/executions/" + ex);
    return e.status == 200 && e.json.value("status", "") == "running";
  })) << "s2's execution never ran";
  return at_s2;
}

// After the restart: the run ends well, s1 did not run again, s2 was dispatched again.
void ExpectResumed(Daemon& d, const Json& before) {
  std::string id = before.value("run_id", "");
  Json done = WaitForEnd(d.client(), id, std::chrono::seconds(30));
  ASSERT_EQ(done.value("status", ""), "succeeded") << Brief(done) << "\n" << d.log();
  EXPECT_EQ(done["output"], (Json{{"last", "s3"}})) << Brief(done);
  Json s1 = StepOf(done, "s1"), s2 = StepOf(done, "s2");
  EXPECT_EQ(s1.value("execution_id", ""), StepOf(before, "s1").value("execution_id", ""))
      << "s1 ran again: " << Brief(done);
  EXPECT_EQ(s1.value("attempt", 0), 1) << Brief(done);
  EXPECT_EQ(s2.value("attempt", 0), 1) << "the same attempt is dispatched again: " << Brief(done);
  std::vector<Json> events = Events(d.client(), id);
  EXPECT_EQ(CountEvents(events, "run_recovered"), 1) << EventTypes(events);
  EXPECT_EQ(
      CountEvents(events, "step_redispatched", "s2") + CountEvents(events, "step_adopted", "s2"), 1)
      << EventTypes(events);
  EXPECT_EQ(CountEvents(events, "step_running", "s1"), 1) << EventTypes(events);
  EXPECT_EQ(CountEvents(events, "run_succeeded"), 1) << EventTypes(events);
  // The execution history: s1 ran once.
  Reply list = Get(d.client(), "/executions?tool=slow&limit=100");
  ASSERT_EQ(list.status, 200) << list.body;
  int s1_runs = 0, s3_runs = 0;
  for (const Json& e : list.json["executions"]) {
    std::string tag = e["parameters"].value("tag", "");
    s1_runs += tag == "s1";
    s3_runs += tag == "s3";
  }
  EXPECT_EQ(s1_runs, 1) << list.body;
  EXPECT_EQ(s3_runs, 1) << list.body;
}

TEST(WorkflowDurability, RunResumesAfterTheServerIsKilled) {
  Daemon first({}, [](const fs::path& m) { WriteManifests(m, 0); });
  ASSERT_DAEMON(first);
  Json before = StartThreeSlowAndWaitForS2(first);
  ASSERT_TRUE(before.is_object());
  ASSERT_EQ(::kill(first.pid(), SIGKILL), 0);
  first.Stop();

  auto second = RestartOn(first);
  ASSERT_DAEMON(*second);
  ExpectResumed(*second, before);
  // The execution that the kill interrupted is recorded so, and was not reused.
  Json done = RunStatus(second->client(), before.value("run_id", ""));
  std::string old_ex = StepOf(before, "s2").value("execution_id", "");
  Reply old = Get(second->client(), "/executions/" + old_ex);
  EXPECT_EQ(old.json.value("status", ""), "interrupted") << old.body;
  EXPECT_NE(StepOf(done, "s2").value("execution_id", ""), old_ex) << Brief(done);
}

TEST(WorkflowDurability, RunResumesAfterAGracefulStop) {
  Daemon first({}, [](const fs::path& m) { WriteManifests(m, 0); });
  ASSERT_DAEMON(first);
  Json before = StartThreeSlowAndWaitForS2(first);
  ASSERT_TRUE(before.is_object());
  EXPECT_EQ(first.Stop(), 0) << first.log();

  auto second = RestartOn(first);
  ASSERT_DAEMON(*second);
  ExpectResumed(*second, before);
}

}  // namespace
}  // namespace cortex::testing

namespace cortex::testing {
namespace {

// ${VAR} in a workflow posted through the API reads only the variables on variables.allow_env;
// the same workflow as a file on disk reads the server's environment as before. Before, anyone
// who could post a workflow read ${PATH}, ${HOME} or any secret the server was started with.
TEST(WorkflowEnvironment, PostedManifestsReadOnlyAllowListedVariables) {
  const std::string secret = "CORTEX_T_SECRET_" + std::to_string(::getpid());
  const std::string shared = "CORTEX_T_SHARED_" + std::to_string(::getpid());
  ::setenv(secret.c_str(), "s3cret", 1);
  ::setenv(shared.c_str(), "visible", 1);
  auto workflow = [&](const std::string& name) {
    return "kind: Workflow\nname: " + name +
           "\ndescription: reads the environment\nsteps:\n"
           "  - name: s\n    type: tool\n    target: shell_echo\n"
           "    parameters: {message: \"secret=${" +
           secret + ":-none} shared=${" + shared +
           ":-none} home=${HOME:-none}\"}\n"
           "outputs:\n  message: {source: steps.s.message}\n";
  };
  TempDir config_dir;
  const fs::path config = config_dir.path() / "cortex.yml";
  WriteFile(config, "variables:\n  allow_env: [\"CORTEX_T_SHARED_*\"]\n");
  Daemon d({"--config", config.string()}, [&](const fs::path& m) {
    fs::create_directories(m / "tools");
    fs::copy(fs::path(CORTEX_SOURCE_DIR) / "examples/manifests/tools/shell_echo",
             m / "tools/shell_echo", fs::copy_options::recursive);
    WriteFile(m / "workflows/on_disk.workflow.yml", workflow("on_disk"));
  });
  ASSERT_DAEMON(d);
  ::unsetenv(secret.c_str());
  ::unsetenv(shared.c_str());

  Reply posted =
      ToReply(d.client().Post("/registry/manifests", workflow("posted"), "application/yaml"));
  ASSERT_EQ(posted.status / 100, 2) << posted.body;

  Json disk = RunToEnd(d.client(), "on_disk");
  EXPECT_EQ(disk.value("status", ""), "succeeded") << Brief(disk);
  std::string disk_message = disk["output"].value("message", "");
  EXPECT_THAT(disk_message, HasSubstr("secret=s3cret shared=visible"));

  Json api = RunToEnd(d.client(), "posted");
  EXPECT_EQ(api.value("status", ""), "succeeded") << Brief(api);
  EXPECT_EQ(api["output"].value("message", ""), "secret=none shared=visible home=none");
  // The origin is kept with the server's state.
  EXPECT_THAT(ReadFile(d.data_dir() / "api-manifests.txt"), HasSubstr("posted"));
}

}  // namespace
}  // namespace cortex::testing
