// Integration tests of hostile bytes at the edges of the real `cortex serve`: tool output that is
// not UTF-8, tool output and request bodies nested far deeper than any real JSON.
//
// Regression tests of two fixed crashes:
// - A tool printing invalid UTF-8 (`printf '\377\376 hi'`) made the executor throw while writing
//   the result: a synchronous call answered 500, left its record `running` and lost its worker
//   place (after exec.workers such calls, every call hung); an async call aborted the server; as a
//   workflow step it aborted the server, and again on every restart. Now the bytes are replaced
//   with U+FFFD, the execution says so in its `notes`, and it ends `succeeded`.
// - JSON nested 80,000+ levels deep overflowed the stack (parameters of POST /execute/tool, the
//   input of POST /execute/workflow, a manifest posted as JSON, a tool's stdout). Now bodies nested
//   deeper than 128 levels answer 400 invalid_argument, and such stdout is kept as a string.
//
// Every wait is a condition wait with a deadline.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
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
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

constexpr auto kDeadline = std::chrono::seconds(20);

// The server's exec.workers: small, so that a lost place shows after a few calls.
constexpr int kWorkers = 2;

const std::string kFffd = "\xEF\xBF\xBD";  // U+FFFD in UTF-8
// What `printf '\377\376 hi'` becomes.
const std::string kReplaced = kFffd + kFffd + " hi";
const std::string kUtf8Note = "stdout was not valid UTF-8: 2 bytes replaced with U+FFFD";
const std::string kDeepNote = "stdout is JSON nested deeper than 128 levels: kept as text";

// The depths that crashed the server.
constexpr size_t kDeepObjects = 80000;
constexpr size_t kDeepArrays = 200000;

// ---- Helpers ------------------------------------------------------------------------------

std::string Repeat(const std::string& s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

// {"a":{"a":...1...}}, `depth` objects deep (valid JSON).
std::string DeepObjects(size_t depth) {
  return Repeat("{\"a\":", depth) + "1" + std::string(depth, '}');
}

// [[[...]]], `depth` arrays deep (valid JSON).
std::string DeepArrays(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// Polls `cond` every 10 ms until it holds or `timeout` passes. True if it became true.
bool Eventually(const std::function<bool()>& cond, std::chrono::milliseconds timeout = kDeadline) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

// A client whose calls give up after 20 s: a call stuck behind a lost worker place fails the test
// instead of hanging it.
std::unique_ptr<http::Client> PatientClient(const Daemon& d) {
  http::ClientOptions options;
  options.read_timeout = std::chrono::seconds(20);
  return std::make_unique<http::Client>(d.url(), options);
}

// POST /execute/tool {"name", "parameters", ...extra}.
Reply Execute(http::Client& c, const std::string& name, const Json& parameters = Json::object(),
              const Json& extra = Json::object()) {
  Json body = {{"name", name}, {"parameters", parameters}};
  for (const auto& [k, v] : extra.items()) body[k] = v;
  return Post(c, "/execute/tool", body.dump());
}

bool Finished(const Json& record) {
  static const std::set<std::string> kFinal = {"succeeded", "failed", "timeout", "cancelled",
                                               "interrupted"};
  return record.is_object() && kFinal.count(record.value("status", "")) > 0;
}

// Polls GET /executions/{id} until it is finished (deadline); the last record seen.
Json WaitForExecution(http::Client& c, const std::string& id,
                      std::chrono::milliseconds timeout = kDeadline) {
  Json last;
  Eventually(
      [&] {
        auto r = c.Get("/executions/" + id);
        if (!r.ok() || r->status != 200) return false;
        last = Json::parse(r->body, nullptr, false);
        return Finished(last);
      },
      timeout);
  return last;
}

// The server answers GET /healthz (on a connection of its own).
void ExpectAlive(const Daemon& d) {
  http::Client fresh(d.url());
  auto r = fresh.Get("/healthz");
  ASSERT_TRUE(r.ok()) << "the server is gone: " << r.status().ToString() << "\n" << d.log();
  EXPECT_EQ(r->status, 200) << r->body;
  Json j = Json::parse(r->body, nullptr, false);
  EXPECT_EQ(j.value("status", ""), "ok") << r->body;
}

// A normal call: the server still runs tools.
void ExpectStillRunsTools(http::Client& c) {
  Reply r = Execute(c, "calculator", {{"operation", "add"}, {"a", 2}, {"b", 2}});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "succeeded") << r.body;
  if (r.json.is_object() && r.json.contains("result") && r.json["result"].is_object()) {
    EXPECT_EQ(r.json["result"].value("result", -1), 4) << r.body;
  } else {
    ADD_FAILURE() << "no result: " << r.body;
  }
}

// The execution's notes (an empty array when it has none).
Json Notes(const Json& record) {
  return record.is_object() && record.contains("notes") ? record["notes"] : Json::array();
}

// An execution of `bad_bytes` as it must end: succeeded, the bytes replaced, a note saying so.
void ExpectReplacedAndNoted(const Json& record) {
  ASSERT_TRUE(record.is_object()) << Brief(record);
  EXPECT_EQ(record.value("status", ""), "succeeded") << Brief(record);
  EXPECT_EQ(record.value("success", false), true) << Brief(record);
  EXPECT_EQ(record.value("exit_code", -1), 0) << Brief(record);
  ASSERT_TRUE(record.contains("result")) << Brief(record);
  EXPECT_EQ(record["result"], Json(kReplaced)) << Brief(record);
  EXPECT_EQ(Notes(record), Json::array({kUtf8Note})) << Brief(record);
}

// ---- The manifests ------------------------------------------------------------------------

// tools/<name>/tool.yml and tools/<name>/<script> (mode 0644: run through the runtime).
void WriteTool(const fs::path& m, const std::string& name, const std::string& runtime,
               const std::string& script_name, const std::string& script,
               const std::string& resources = "{timeout: 20s}") {
  WriteFile(m / "tools" / name / "tool.yml",
            "kind: Tool\nname: " + name + "\nversion: \"1.0\"\nsummary: " + name +
                " (hostile output test)\ndescription: A tool of the hostile output tests.\n"
                "implementation:\n  runtime: " +
                runtime + "\n  entrypoint: ./" + script_name + "\n  resources: " + resources +
                "\n");
  fs::path p = m / "tools" / name / script_name;
  WriteFile(p, script);
  fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                         fs::perms::others_read);
}

void WriteWorkflow(const fs::path& m, const std::string& name, const std::string& steps) {
  WriteFile(m / "workflows" / (name + ".workflow.yml"),
            "kind: Workflow\nversion: \"1.0\"\nname: " + name + "\nsummary: " + name +
                " (hostile output test)\ndescription: A workflow of the hostile output tests.\n" +
                steps);
}

void WriteManifests(const fs::path& m) {
  fs::copy(fs::path(CORTEX_SOURCE_DIR) / "examples/manifests/tools", m / "tools",
           fs::copy_options::recursive);
  // /bin/sh is dash: its printf knows octal escapes, not \x.
  WriteTool(m, "bad_bytes", "sh", "run.sh", "printf '\\377\\376 hi'\n");
  // The same, late enough to be caught running (the server is killed under it).
  WriteTool(m, "slow_bad_bytes", "sh", "run.sh", "sleep 3\nprintf '\\377\\376 hi'\n");
  // 200,000 '[' then as many ']': valid JSON, far too deep.
  WriteTool(m, "deep_stdout", "python3", "deep.py",
            "print('[' * " + std::to_string(kDeepArrays) + " + ']' * " +
                std::to_string(kDeepArrays) + ")\n");
  WriteWorkflow(m, "bad_bytes_flow",
                "steps:\n"
                "  - {name: raw, type: tool, target: bad_bytes}\n"
                "  - {name: after, type: tool, target: calculator,\n"
                "     parameters: {operation: add, a: 1, b: 2}}\n");
  WriteWorkflow(m, "slow_bad_bytes_flow",
                "steps:\n"
                "  - {name: raw, type: tool, target: slow_bad_bytes}\n"
                "  - {name: after, type: tool, target: calculator,\n"
                "     parameters: {operation: add, a: 1, b: 2}}\n");
}

// cortex.yml with exec.workers = kWorkers.
fs::path WriteConfig(const fs::path& dir) {
  fs::path p = dir / "cortex.yml";
  WriteFile(p, "exec:\n  workers: " + std::to_string(kWorkers) + "\n  queue: 16\n");
  return p;
}

// One server for the suite, with kWorkers workers.
class HostileOutput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    config_ = std::make_unique<TempDir>();
    daemon_ = std::make_unique<Daemon>(
        std::vector<std::string>{"--config", WriteConfig(config_->path()).string()},
        WriteManifests);
  }
  static void TearDownTestSuite() {
    daemon_.reset();
    config_.reset();
  }
  void SetUp() override {
    ASSERT_TRUE(daemon_ && daemon_->ok()) << "cortex serve did not start:\n"
                                          << (daemon_ ? daemon_->log() : "");
    client_ = PatientClient(*daemon_);
  }
  static Daemon& d() { return *daemon_; }
  http::Client& c() { return *client_; }

  std::unique_ptr<http::Client> client_;
  static inline std::unique_ptr<TempDir> config_;
  static inline std::unique_ptr<Daemon> daemon_;
};

TEST_F(HostileOutput, EveryManifestLoads) { ExpectEveryManifestLoads(c()); }

// ---- Invalid UTF-8 on stdout --------------------------------------------------------------

// Before the fix: 500, and the record stayed `running`.
TEST_F(HostileOutput, SyncCallWithInvalidUtf8AnswersTheReplacedText) {
  Reply r = Execute(c(), "bad_bytes");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(r.json.is_object()) << "the answer is not JSON (or not UTF-8): " << r.body;
  ExpectReplacedAndNoted(r.json);
  std::string id = r.json.value("execution_id", "");
  ASSERT_THAT(id, StartsWith("ex_")) << r.body;

  // The record is finished, and says the same.
  Reply g = Get(c(), "/executions/" + id);
  ASSERT_EQ(g.status, 200) << g.body;
  ExpectReplacedAndNoted(g.json);
  EXPECT_GT(g.json.value("finished_ms", 0LL), 0) << g.body;

  // The history lists it (every record of the page is written out).
  Reply list = Get(c(), "/executions?tool=bad_bytes");
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_GE(list.json.value("count", 0), 1) << list.body;

  // Its logs too.
  Reply logs = Get(c(), "/executions/" + id + "/logs");
  EXPECT_EQ(logs.status, 200) << logs.body;
  EXPECT_TRUE(logs.json.is_object()) << logs.body;
  ExpectAlive(d());
}

// Before the fix each such call kept a worker's place: after exec.workers of them, every call
// (of any tool) hung.
TEST_F(HostileOutput, InvalidUtf8CallsDoNotLoseWorkerPlaces) {
  constexpr int kCalls = 3 * kWorkers + 1;
  for (int i = 0; i < kCalls; ++i) {
    Reply r = Execute(c(), "bad_bytes");
    ASSERT_EQ(r.status, 200) << "call " << i + 1 << " of " << kCalls << " (exec.workers "
                             << kWorkers << "): " << r.body;
    ExpectReplacedAndNoted(r.json);
  }

  // More at once than there are workers: all answer.
  constexpr int kThreads = kWorkers + 2;
  std::mutex mu;
  std::vector<std::string> problems;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto client = PatientClient(d());
      auto r = client->Post("/execute/tool", R"({"name": "bad_bytes"})");
      Json j = r.ok() ? Json::parse(r->body, nullptr, false) : Json();
      bool good = r.ok() && r->status == 200 && j.is_object() &&
                  j.value("status", "") == "succeeded" && j["result"] == Json(kReplaced);
      if (!good) {
        std::lock_guard lock(mu);
        problems.push_back(r.ok() ? std::to_string(r->status) + " " + r->body
                                  : r.status().ToString());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(problems, IsEmpty());

  // None is left running, and other tools still run.
  Reply running = Get(c(), "/executions?status=running");
  ASSERT_EQ(running.status, 200) << running.body;
  EXPECT_EQ(running.json.value("count", -1), 0) << running.body;
  ExpectStillRunsTools(c());
}

// Before the fix the server aborted.
TEST_F(HostileOutput, AsyncCallWithInvalidUtf8Finishes) {
  Reply r = Execute(c(), "bad_bytes", Json::object(), {{"async", true}});
  ASSERT_EQ(r.status, 202) << r.body;
  std::string id = r.json.value("execution_id", "");
  ASSERT_THAT(id, StartsWith("ex_")) << r.body;
  Json rec = WaitForExecution(c(), id);
  ExpectAlive(d());
  ASSERT_TRUE(Finished(rec)) << "never finished: " << Brief(rec) << "\n" << d().log();
  ExpectReplacedAndNoted(rec);

  // Its logs, as JSON and as server-sent events ending with the record.
  Reply logs = Get(c(), "/executions/" + id + "/logs");
  EXPECT_EQ(logs.status, 200) << logs.body;
  EXPECT_TRUE(logs.json.is_object()) << logs.body;
  std::vector<http::SseEvent> events;
  Status st = c().Stream("/executions/" + id + "/logs", [&](const http::SseEvent& e) {
    events.push_back(e);
    return true;
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().event, "result");
  ExpectReplacedAndNoted(Json::parse(events.back().data, nullptr, false));

  // Twice as many as there are workers, all at once: all finish.
  std::vector<std::string> ids;
  for (int i = 0; i < 2 * kWorkers; ++i) {
    Reply more = Execute(c(), "bad_bytes", Json::object(), {{"async", true}});
    ASSERT_EQ(more.status, 202) << more.body;
    ids.push_back(more.json.value("execution_id", ""));
  }
  for (const std::string& more : ids) ExpectReplacedAndNoted(WaitForExecution(c(), more));
  ExpectAlive(d());
  ExpectStillRunsTools(c());
}

// The same through the event stream of POST /execute/tool (a queued call, its lines, then its
// record).
TEST_F(HostileOutput, StreamedCallWithInvalidUtf8EndsWithItsResult) {
  Json body = {{"name", "bad_bytes"}, {"parameters", Json::object()}};
  Reply r = Post(c(), "/execute/tool", body.dump(), {{"Accept", "text/event-stream"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.header("Content-Type"), HasSubstr("text/event-stream"));
  std::vector<http::SseEvent> events = ParseSse(r.body);
  ASSERT_GE(events.size(), 2u) << r.body;
  EXPECT_EQ(events.front().event, "queued") << r.body;
  EXPECT_EQ(events.back().event, "result") << r.body;
  ExpectReplacedAndNoted(Json::parse(events.back().data, nullptr, false));
  for (const auto& e : events) {
    EXPECT_FALSE(Json::parse(e.data, nullptr, false).is_discarded())
        << "an event that is not JSON (or not UTF-8): " << e.event;
  }
  ExpectAlive(d());
}

// ---- Deeply nested JSON in ----------------------------------------------------------------

// 400 invalid_argument, saying why, and the server lives on.
void ExpectTooDeep(const Daemon& d, const Reply& r, const std::string& what) {
  EXPECT_EQ(r.status, 400) << what << ": " << r.body.substr(0, 2000);
  EXPECT_EQ(ErrorCode(r), "invalid_argument") << what << ": " << r.body.substr(0, 2000);
  EXPECT_THAT(ErrorMessage(r), HasSubstr("nested deeper than 128 levels")) << what;
  ExpectAlive(d);
}

// Before the fix the server died of a stack overflow.
TEST_F(HostileOutput, DeepToolParametersAre400) {
  std::string body = R"({"name": "calculator", "parameters": )" + DeepObjects(kDeepObjects) + "}";
  ExpectTooDeep(d(), Post(c(), "/execute/tool", body), "POST /execute/tool, deep parameters");
  std::string async =
      R"({"name": "calculator", "async": true, "parameters": )" + DeepObjects(kDeepObjects) + "}";
  ExpectTooDeep(d(), Post(c(), "/execute/tool", async), "POST /execute/tool async");
  std::string batch =
      R"({"calls": [{"name": "calculator", "parameters": )" + DeepObjects(kDeepObjects) + "}]}";
  ExpectTooDeep(d(), Post(c(), "/execute/batch", batch), "POST /execute/batch");
  // Nothing was recorded for them.
  Reply list = Get(c(), "/executions?tool=calculator");
  ASSERT_EQ(list.status, 200) << list.body;
  for (const Json& e : list.json["executions"]) {
    EXPECT_NE(e.value("status", ""), "running") << Brief(e);
  }
  ExpectStillRunsTools(c());
}

TEST_F(HostileOutput, DeepWorkflowInputIs400) {
  std::string body = R"({"name": "bad_bytes_flow", "input": )" + DeepArrays(kDeepArrays) + "}";
  ExpectTooDeep(d(), Post(c(), "/execute/workflow", body), "POST /execute/workflow, deep input");
  std::string objects =
      R"({"name": "bad_bytes_flow", "input": {"x": )" + DeepObjects(kDeepObjects) + "}}";
  ExpectTooDeep(d(), Post(c(), "/execute/workflow", objects), "POST /execute/workflow, objects");
  // The older route, whose body is the input itself.
  ExpectTooDeep(d(), Post(c(), "/execute/workflow/bad_bytes_flow", DeepArrays(kDeepArrays)),
                "POST /execute/workflow/{name}, deep body");
  ExpectTooDeep(
      d(),
      Post(c(), "/execute/workflow/bad_bytes_flow", R"({"x": )" + DeepObjects(kDeepObjects) + "}"),
      "POST /execute/workflow/{name}, deep field");
  Reply runs = Get(c(), "/workflows?name=bad_bytes_flow");
  ASSERT_EQ(runs.status, 200) << runs.body;
  EXPECT_EQ(runs.json.value("count", -1), 0) << "a refused body started a run: " << runs.body;
}

TEST_F(HostileOutput, DeepManifestPostedAsJsonIs400) {
  std::string body = R"({"kind": "Tool", "name": "deep_manifest", "version": "1.0", "extra": )" +
                     DeepObjects(kDeepObjects) + "}";
  Reply r = ToReply(c().Post("/registry/manifests", body, "application/json"));
  ExpectTooDeep(d(), r, "POST /registry/manifests (application/json)");
  Reply arrays =
      ToReply(c().Post("/registry/manifests", R"({"content": )" + DeepArrays(kDeepArrays) + "}",
                       "application/json"));
  ExpectTooDeep(d(), arrays, "POST /registry/manifests, deep content");
}

// The bound is 128 levels: a body exactly that deep is not refused for its depth; one level
// more is.
TEST_F(HostileOutput, BodiesUpTo128LevelsAreNotRefusedForTheirDepth) {
  // The body is level 1, the parameters level 2, then 126 arrays: 128.
  auto body = [](size_t arrays) {
    return R"({"name": "calculator", "parameters": {"operation": "add", "a": 1, "b": 2, "x": )" +
           DeepArrays(arrays) + "}}";
  };
  // Parsed, then refused for what it says (the calculator has no parameter x).
  Reply at = Post(c(), "/execute/tool", body(126));
  EXPECT_EQ(at.status, 400) << at.body;
  EXPECT_THAT(ErrorMessage(at), Not(HasSubstr("nested deeper"))) << at.body;
  EXPECT_THAT(ErrorMessage(at), HasSubstr("unknown parameter")) << at.body;
  Reply past = Post(c(), "/execute/tool", body(127));
  ExpectTooDeep(d(), past, "POST /execute/tool, 129 levels");
}

// ---- Deeply nested JSON out ---------------------------------------------------------------

// Before the fix the server died of a stack overflow.
TEST_F(HostileOutput, DeepStdoutIsKeptAsText) {
  const std::string expected = DeepArrays(kDeepArrays);
  auto check = [&](const Json& rec) {
    ASSERT_TRUE(rec.is_object()) << Brief(rec);
    EXPECT_EQ(rec.value("status", ""), "succeeded") << Brief(rec);
    ASSERT_TRUE(rec.contains("result")) << Brief(rec);
    ASSERT_TRUE(rec["result"].is_string()) << Brief(rec);
    EXPECT_EQ(rec["result"].get<std::string>().size(), expected.size());
    EXPECT_TRUE(rec["result"].get<std::string>() == expected) << "not the text printed";
    EXPECT_EQ(Notes(rec), Json::array({kDeepNote})) << Brief(rec);
  };

  Reply r = Execute(c(), "deep_stdout");
  ASSERT_EQ(r.status, 200) << Brief(r.json);
  check(r.json);
  std::string id = r.json.value("execution_id", "");
  ASSERT_THAT(id, StartsWith("ex_")) << Brief(r.json);
  Reply g = Get(c(), "/executions/" + id);
  ASSERT_EQ(g.status, 200) << Brief(g.json);
  check(g.json);
  ExpectAlive(d());

  // Asynchronously, on a worker thread.
  Reply a = Execute(c(), "deep_stdout", Json::object(), {{"async", true}});
  ASSERT_EQ(a.status, 202) << a.body;
  Json rec = WaitForExecution(c(), a.json.value("execution_id", ""));
  check(rec);
  ExpectAlive(d());
  ExpectStillRunsTools(c());
}

// ---- As a workflow step -------------------------------------------------------------------

// A second server on the first one's data folder (its data/ is a symlink to it).
std::unique_ptr<Daemon> RestartOn(const Daemon& first) {
  fs::path data = first.data_dir();
  std::error_code ec;
  fs::remove(data / "serve.json", ec);  // a killed server leaves it behind
  return std::make_unique<Daemon>(std::vector<std::string>{}, [data](const fs::path& m) {
    WriteManifests(m);
    fs::create_directory_symlink(data, m.parent_path() / "data");
  });
}

Json RunStatus(http::Client& c, const std::string& id) {
  auto r = c.Get("/workflows/" + id + "/status");
  if (!r.ok() || r->status != 200) return nullptr;
  return Json::parse(r->body, nullptr, false);
}

bool RunFinished(const Json& run) {
  static const std::set<std::string> kFinal = {"succeeded", "failed", "cancelled"};
  return run.is_object() && kFinal.count(run.value("status", "")) > 0;
}

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

Json StepOf(const Json& run, const std::string& name) {
  if (!run.is_object() || !run.contains("steps")) return nullptr;
  for (const Json& s : run["steps"]) {
    if (s.value("name", "") == name) return s;
  }
  return nullptr;
}

// A finished run of bad_bytes_flow / slow_bad_bytes_flow as it must be.
void ExpectFlowSucceeded(http::Client& c, const Json& run) {
  ASSERT_EQ(run.value("status", ""), "succeeded") << Brief(run);
  Json raw = StepOf(run, "raw");
  EXPECT_EQ(raw.value("status", ""), "succeeded") << Brief(run);
  EXPECT_EQ(raw["output"], Json(kReplaced)) << Brief(run);
  EXPECT_EQ(StepOf(run, "after").value("status", ""), "succeeded") << Brief(run);
  std::string ex = raw.value("execution_id", "");
  ASSERT_THAT(ex, StartsWith("ex_")) << Brief(run);
  Reply e = Get(c, "/executions/" + ex);
  ASSERT_EQ(e.status, 200) << e.body;
  ExpectReplacedAndNoted(e.json);
}

// Before the fix the server aborted at the step, and again at every start after (the run was
// resumed and the step ran again).
TEST(HostileOutputWorkflow, StepWithInvalidUtf8SucceedsAndTheServerRestarts) {
  Daemon first({}, WriteManifests);
  ASSERT_DAEMON(first);
  auto c1 = PatientClient(first);
  Reply r = Post(*c1, "/execute/workflow?wait=true&timeout=60s", R"({"name": "bad_bytes_flow"})");
  ASSERT_EQ(r.status, 200) << r.body << "\n" << first.log();
  ExpectFlowSucceeded(*c1, r.json);
  std::string id = r.json.value("run_id", "");
  ASSERT_THAT(id, StartsWith("wf_")) << r.body;
  ExpectAlive(first);
  EXPECT_EQ(first.Stop(), 0) << first.log();

  auto second = RestartOn(first);
  ASSERT_DAEMON(*second);
  ExpectAlive(*second);
  auto c2 = PatientClient(*second);
  // The run and its step's record (notes included) were kept as they were.
  Json run = RunStatus(*c2, id);
  ExpectFlowSucceeded(*c2, run);
  // And it runs again.
  Reply again =
      Post(*c2, "/execute/workflow?wait=true&timeout=60s", R"({"name": "bad_bytes_flow"})");
  ASSERT_EQ(again.status, 200) << again.body;
  ExpectFlowSucceeded(*c2, again.json);
  ExpectAlive(*second);
}

// The server is killed while the step runs: the next server resumes the run, runs the step again,
// and lives.
TEST(HostileOutputWorkflow, StepWithInvalidUtf8ResumedAfterAKillSucceeds) {
  Daemon first({}, WriteManifests);
  ASSERT_DAEMON(first);
  auto c1 = PatientClient(first);
  Reply start = Post(*c1, "/execute/workflow", R"({"name": "slow_bad_bytes_flow"})");
  ASSERT_EQ(start.status, 202) << start.body;
  std::string id = start.json.value("run_id", "");
  ASSERT_THAT(id, StartsWith("wf_")) << start.body;
  // The step's tool is running (its execution, not only the step's record).
  Json at_raw = WaitForRun(*c1, id, [&](const Json& run) {
    if (RunFinished(run)) return true;
    std::string ex = StepOf(run, "raw").value("execution_id", "");
    if (ex.empty()) return false;
    Reply e = Get(*c1, "/executions/" + ex);
    return e.status == 200 && e.json.value("status", "") == "running";
  });
  ASSERT_FALSE(RunFinished(at_raw)) << "finished before the kill: " << Brief(at_raw);
  ASSERT_EQ(StepOf(at_raw, "raw").value("status", ""), "running") << Brief(at_raw);
  ASSERT_EQ(::kill(first.pid(), SIGKILL), 0);
  first.Stop();

  auto second = RestartOn(first);
  ASSERT_DAEMON(*second);
  auto c2 = PatientClient(*second);
  Json done = WaitForRun(*c2, id, RunFinished, std::chrono::seconds(30));
  ASSERT_TRUE(RunFinished(done)) << Brief(done) << "\n" << second->log();
  ExpectFlowSucceeded(*c2, done);
  ExpectAlive(*second);

  // A third start on the same data: nothing left to resume, nothing to abort on.
  EXPECT_EQ(second->Stop(), 0) << second->log();
  auto third = RestartOn(*second);
  ASSERT_DAEMON(*third);
  ExpectAlive(*third);
  auto c3 = PatientClient(*third);
  ExpectFlowSucceeded(*c3, RunStatus(*c3, id));
}

}  // namespace
}  // namespace cortex::testing
