// Integration tests of the tool executor (issue 3): the real `cortex serve` on a free port,
// real tool processes under the real sandbox (bubblewrap), driven over HTTP.
//
// Covered: the example tools; bad input (unknown tool, bad parameters, malformed bodies, a
// missing or non-executable script); async calls, history, logs and server-sent events; hostile
// tools (endless loop, unbounded memory, fork bomb, gigabytes of output, reading host secrets,
// writing outside /tmp, network without permission, death by a signal, invalid JSON), each
// contained, reported with its reason, and followed by a normal call; cancel; the queue bound
// (429 + Retry-After); the tool's environment; durability across a restart; concurrent calls.
//
// Tests that show a known bug end in GTEST_SKIP() << "BUG: ..." once the bug is observed (they
// pass on their own when it is fixed). Every wait is a condition wait with a deadline.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "exec/outside_network.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

constexpr auto kDeadline = std::chrono::seconds(15);

// ---- HTTP helpers -------------------------------------------------------------------------

// POST /execute/tool {"name", "parameters", ...extra}.
Reply Execute(http::Client& c, const std::string& name, const Json& parameters = Json::object(),
              const Json& extra = Json::object(), const http::Headers& headers = {}) {
  Json body = {{"name", name}, {"parameters", parameters}};
  for (const auto& [k, v] : extra.items()) body[k] = v;
  return Post(c, "/execute/tool", body.dump(), headers);
}

bool Finished(const Json& record) {
  static const std::set<std::string> kFinal = {"succeeded", "failed", "timeout", "cancelled",
                                               "interrupted"};
  return record.is_object() && kFinal.count(record.value("status", "")) > 0;
}

// Polls GET /executions/{id} until `pred` holds (deadline); returns the last record seen.
Json WaitForRecord(http::Client& c, const std::string& id,
                   const std::function<bool(const Json&)>& pred,
                   std::chrono::milliseconds timeout = kDeadline) {
  Json last;
  WaitFor(
      [&] {
        auto r = c.Get("/executions/" + id);
        if (!r.ok() || r->status != 200) return false;
        last = Json::parse(r->body, nullptr, false);
        return pred(last);
      },
      timeout);
  return last;
}

// A synchronous call made on another thread while this one waits until at least `until`
// processes match `marker` (or the call ends): proves the tool's processes were there, so that
// "none left afterwards" means something.
class CallWhileWatching {
 public:
  CallWhileWatching(Daemon& d, const std::string& tool, const std::string& marker, size_t until = 1)
      : client_(d.url()) {
    thread_ = std::thread([this, tool] {
      reply_ = Execute(client_, tool);
      done_ = true;
    });
    WaitFor(
        [&] {
          seen_ = std::max(seen_, ProcessesMatching(marker).size());
          return seen_ >= until || done_;
        },
        kDeadline);
  }
  ~CallWhileWatching() {
    if (thread_.joinable()) thread_.join();
  }
  Reply Finish() {
    thread_.join();
    return reply_;
  }
  size_t seen() const { return seen_; }

 private:
  http::Client client_;
  std::thread thread_;
  std::atomic<bool> done_{false};
  size_t seen_ = 0;
  Reply reply_;
};

// ---- The tools ----------------------------------------------------------------------------

// A Tool manifest; `impl` is the indented body of `implementation:`.
std::string ToolYml(const std::string& name, const std::string& impl,
                    const std::string& extra = "") {
  return "kind: Tool\nname: " + name + "\nversion: \"1.0\"\nsummary: " + name +
         " (executor test)\ndescription: A tool of the executor integration tests.\n"
         "implementation:\n" +
         impl + extra;
}

// tools/<name>/tool.yml and tools/<name>/<script> (mode 0644: run through the runtime).
void WriteTool(const fs::path& m, const std::string& name, const std::string& impl,
               const std::string& script_name, const std::string& script,
               const std::string& extra = "") {
  WriteFile(m / "tools" / name / "tool.yml", ToolYml(name, impl, extra));
  if (!script_name.empty()) {
    fs::path p = m / "tools" / name / script_name;
    WriteFile(p, script);
    fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                           fs::perms::others_read);
  }
}

std::string Bash(const std::string& extra_impl = "") {
  return "  runtime: bash\n  entrypoint: ./run.sh\n" + extra_impl;
}

// The example tools plus every tool the tests use.
void WriteTools(const fs::path& m) {
  fs::copy(fs::path(CORTEX_SOURCE_DIR) / "examples/manifests/tools", m / "tools",
           fs::copy_options::recursive);

  // Bad input.
  WriteTool(m, "missing_script", "  runtime: bash\n  entrypoint: ./nope.sh\n", "", "");
  WriteTool(m, "not_executable", "  runtime: binary\n  entrypoint: ./prog\n", "prog",
            "#!/bin/sh\necho should-not-run\n");

  // Output, logs, async.
  WriteTool(m, "lines", Bash("  resources: {timeout: 10s}\n"), "run.sh",
            "echo one\necho two\necho warn >&2\necho three\n");
  WriteTool(m, "sleeper", Bash("  resources: {timeout: 60s}\n"), "run.sh",
            "echo started\nfor i in $(seq 120); do sleep 0.5; done\necho done\n");
  WriteTool(m, "env_dump", Bash(), "run.sh", "env\n",
            "environment:\n  variables:\n    GREETING: hello-from-the-manifest\n");
  WriteTool(
      m, "cpu_burn", "  runtime: python3\n  entrypoint: ./burn.py\n", "burn.py",
      "import json, os, time\n"
      "t = time.process_time()\n"
      "while time.process_time() - t < 0.4:\n"
      "    pass\n"
      "u = os.times()\n"
      "print(json.dumps({'user_ms': int(u.user * 1000), 'system_ms': int(u.system * 1000)}))\n");

  // Hostile tools.
  WriteTool(m, "loop_forever", Bash("  resources: {timeout: 1s}\n"), "run.sh",
            "while :; do :; done\n");
  WriteTool(
      m, "memory_hog",
      "  runtime: python3\n  entrypoint: ./hog.py\n  resources: {timeout: 20s, memory: 64M}\n",
      "hog.py",
      "chunks = []\n"
      "while True:\n"
      "    chunks.append(bytearray(1 << 20))\n");
  WriteTool(m, "fork_bomb", Bash("  resources: {timeout: 2s, max_processes: 20}\n"), "run.sh",
            "bomb() { bomb & bomb & wait; }\nbomb\n");
  WriteTool(m, "output_flood", Bash("  resources: {timeout: 20s}\n"), "run.sh",
            "exec yes \"$PWD: gigabytes of output, gigabytes of output\"\n");
  WriteTool(m, "read_secrets", Bash(), "run.sh",
            "echo \"SHADOW=$(cat /etc/shadow 2>&1 | head -c 300)\"\n"
            "echo \"ROOT=$(ls -a /root 2>&1 | head -c 300)\"\n"
            "data=\"$(cd ../../.. && pwd)/data\"\n"
            "echo \"DATA=$(ls -a \"$data\" 2>&1 | head -c 300)\"\n"
            "echo \"WHOAMI=$(id -u)\"\n");
  WriteTool(m, "write_outside", Bash(), "run.sh",
            "echo inside > \"/tmp/cortex-exec-test-$CORTEX_EXECUTION_ID\" && echo TMP=ok\n"
            "echo x > ./written-by-tool.txt\n");
  const std::string connect =
      "host=$(printf '%s' \"$1\" | sed -n 's/.*\"host\":\"\\([0-9.]*\\)\".*/\\1/p')\n"
      "port=$(printf '%s' \"$1\" | sed -n 's/.*\"port\":\\([0-9]*\\).*/\\1/p')\n"
      "if exec 3<>\"/dev/tcp/$host/$port\"; then echo connected; exit 0; fi\n"
      "echo 'cannot connect'\nexit 1\n";
  const std::string port_param =
      "parameters:\n  - {name: host, type: string, default: 127.0.0.1}\n"
      "  - {name: port, type: integer}\n";
  WriteTool(m, "net_denied", Bash(), "run.sh", connect, port_param);
  WriteTool(m, "net_allowed", Bash("  network: true\n"), "run.sh", connect, port_param);
  WriteTool(m, "segfault", Bash(), "run.sh", "echo before-the-signal\nkill -SEGV $$\n");
  // Health checks.
  WriteTool(m, "health_exit", Bash("  health_check:\n    command: ./check.sh ok\n"), "run.sh",
            "echo '{}'\n");
  WriteFile(m / "tools/health_exit/check.sh", "#!/bin/sh\necho \"checked $1\"\nexit 0\n");
  fs::permissions(m / "tools/health_exit/check.sh",  // readable by the sandbox's uid
                  fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                      fs::perms::others_read | fs::perms::others_exec);
  WriteTool(m, "health_wrong_code",
            Bash("  health_check:\n    command: bash -c 'echo sick; exit 4'\n"
                 "    expected_exit_code: 0\n"),
            "run.sh", "echo '{}'\n");
  WriteTool(m, "health_wrong_output",
            Bash("  health_check:\n    command: \"echo 'status: degraded'\"\n"
                 "    expected_output_contains: 'status: ok'\n"),
            "run.sh", "echo '{}'\n");
  WriteTool(m, "health_hangs", Bash("  health_check:\n    command: sleep 30\n    timeout: 500ms\n"),
            "run.sh", "echo '{}'\n");
  WriteTool(m, "health_secret", Bash("  health_check:\n    command: cat /etc/shadow\n"), "run.sh",
            "echo '{}'\n");
  WriteTool(m, "bad_json", Bash(), "run.sh",
            "code=$(printf '%s' \"$1\" | sed -n 's/.*\"code\":\\([0-9]*\\).*/\\1/p')\n"
            "echo '{\"unterminated\": '\nexit \"${code:-0}\"\n",
            "parameters:\n  - {name: code, type: integer, default: 0}\n");
}

// A normal call right after a hostile one: the server still serves.
void ExpectStillServes(http::Client& c) {
  Reply r = Execute(c, "calculator", {{"operation", "add"}, {"a", 2}, {"b", 2}});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "succeeded") << r.body;
  ASSERT_TRUE(r.json.contains("result")) << r.body;
  EXPECT_EQ(r.json["result"].value("result", -1), 4) << r.body;
}

constexpr const char* kLeakVar = "EXECUTE_TEST_SERVER_SECRET";
constexpr const char* kLeakValue = "the-server-environment-must-not-leak";

// One server for the suite, started with every tool (and a variable in its environment that
// tools must not see).
class ExecuteApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ::setenv(kLeakVar, kLeakValue, 1);
    daemon_ = std::make_unique<Daemon>(std::vector<std::string>{}, WriteTools);
    ::unsetenv(kLeakVar);
  }
  static void TearDownTestSuite() { daemon_.reset(); }
  void SetUp() override {
    ASSERT_TRUE(daemon_ && daemon_->ok()) << "cortex serve did not start:\n"
                                          << (daemon_ ? daemon_->log() : "");
  }
  static Daemon& d() { return *daemon_; }
  static http::Client& c() { return daemon_->client(); }
  static fs::path ToolDir(const std::string& name) {
    return daemon_->manifests_dir() / "tools" / name;
  }

  static inline std::unique_ptr<Daemon> daemon_;
};

// ---- The examples -------------------------------------------------------------------------

TEST_F(ExecuteApi, CalculatorAddsInTheSandbox) {
  Reply r = Execute(c(), "calculator", {{"operation", "add"}, {"a", 5}, {"b", 3}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "succeeded") << r.body;
  EXPECT_EQ(r.json.value("success", false), true) << r.body;
  ASSERT_TRUE(r.json.contains("result") && r.json["result"].is_object()) << r.body;
  EXPECT_EQ(r.json["result"].value("result", -1), 8) << r.body;
  EXPECT_EQ(r.json.value("sandboxed", false), true) << r.body;
  EXPECT_EQ(r.json.value("exit_code", -1), 0) << r.body;
  EXPECT_EQ(r.json.value("tool", ""), "calculator");
  std::string id = r.json.value("execution_id", "");
  EXPECT_TRUE(id.starts_with("ex_")) << r.body;
  EXPECT_GT(r.json.value("finished_ms", 0LL), 0) << r.body;
  EXPECT_GE(r.json.value("finished_ms", 0LL), r.json.value("started_ms", 0LL)) << r.body;

  // The same record is in the history.
  Reply g = Get(c(), "/executions/" + id);
  ASSERT_EQ(g.status, 200) << g.body;
  EXPECT_EQ(g.json.value("status", ""), "succeeded");
  EXPECT_EQ(g.json["result"], r.json["result"]);
  EXPECT_EQ(g.json["parameters"], (Json{{"operation", "add"}, {"a", 5}, {"b", 3}}));
}

TEST_F(ExecuteApi, TextStatsAppliesDefaults) {
  Reply r = Execute(c(), "text_stats", {{"text", "the cat and the hat"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "succeeded") << r.body;
  ASSERT_TRUE(r.json.contains("parameters")) << r.body;
  EXPECT_EQ(r.json["parameters"].value("top", -1), 3) << "the default was not applied: " << r.body;
  ASSERT_TRUE(r.json["result"].is_object()) << r.body;
  EXPECT_EQ(r.json["result"].value("words", -1), 5) << r.body;
  EXPECT_EQ(r.json["result"]["top_words"][0], (Json{"the", 2})) << r.body;
}

TEST_F(ExecuteApi, ShellEcho) {
  Reply r = Execute(c(), "shell_echo", {{"message", "hello from the test"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "succeeded") << r.body;
  EXPECT_EQ(r.json["result"], (Json{{"success", true}, {"message", "hello from the test"}}))
      << r.body;
}

TEST_F(ExecuteApi, AlwaysFailsIsReportedWithReasonAndExitCode) {
  Reply r = Execute(c(), "always_fails", {{"reason", "boom-42"}});
  ASSERT_EQ(r.status, 200) << "a failing tool is still a 200 with the record: " << r.body;
  EXPECT_EQ(r.json.value("success", true), false) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "failed") << r.body;
  EXPECT_EQ(r.json.value("exit_code", -1), 3) << r.body;
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("boom-42")) << r.body;
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("exit code 3")) << r.body;
  EXPECT_THAT(r.json.value("stderr_tail", ""), HasSubstr("always_fails: boom-42")) << r.body;
  const std::string id = r.json.value("execution_id", "");
  EXPECT_TRUE(WaitFor([&] {
    const std::string log = d().log();
    return log.find("WARN  exec: tool always_fails " + id + " failed in ") != std::string::npos;
  })) << d().log();

  // With its default reason.
  Reply d2 = Execute(c(), "always_fails");
  ASSERT_EQ(d2.status, 200) << d2.body;
  EXPECT_THAT(d2.json.value("error", ""), HasSubstr("failed on purpose")) << d2.body;
}

// ---- Batches and health checks ------------------------------------------------------------

TEST_F(ExecuteApi, BatchRunsCallsInParallelAndAnswersInOrder) {
  Json body = {
      {"calls",
       {{{"name", "calculator"}, {"parameters", {{"operation", "add"}, {"a", 1}, {"b", 2}}}},
        {{"name", "shell_echo"}, {"parameters", {{"message", "batched"}}}},
        {{"name", "always_fails"}, {"parameters", {{"reason", "third"}}}},
        {{"name", "sleeper"}}}},
      {"timeout_seconds", 3}};
  // The sleeper keeps running past the batch's timeout: the batch answers 202 with it running.
  Reply r = Post(c(), "/execute/batch", body.dump());
  ASSERT_EQ(r.status, 202) << r.body;
  ASSERT_EQ(r.json.value("count", 0), 4) << r.body;
  const Json& ex = r.json["executions"];
  EXPECT_EQ(ex[0].value("tool", ""), "calculator");
  EXPECT_EQ(ex[0]["result"].value("result", -1), 3) << Brief(ex[0]);
  EXPECT_EQ(ex[1]["result"].value("message", ""), "batched") << Brief(ex[1]);
  EXPECT_EQ(ex[2].value("status", ""), "failed") << Brief(ex[2]);
  EXPECT_THAT(ex[2].value("error", ""), HasSubstr("third"));
  EXPECT_EQ(ex[3].value("status", ""), "running") << Brief(ex[3]);
  EXPECT_EQ(r.json.value("succeeded", 0), 2);
  EXPECT_EQ(r.json.value("failed", 0), 1);
  EXPECT_EQ(r.json.value("running", 0), 1);
  std::string sleeper = ex[3].value("execution_id", "");
  ASSERT_EQ(Post(c(), "/executions/" + sleeper + "/cancel", "").status, 200);
  EXPECT_EQ(WaitForRecord(c(), sleeper, Finished).value("status", ""), "cancelled");

  // Two sleepers in one batch run at the same time (the pool has more than one worker).
  Json two = {{"calls", {{{"name", "lines"}}, {{"name", "lines"}}}}, {"async", true}};
  Reply a = Post(c(), "/execute/batch", two.dump());
  ASSERT_EQ(a.status, 202) << a.body;
  ASSERT_EQ(a.json["executions"].size(), 2u) << a.body;
  for (const Json& e : a.json["executions"]) {
    EXPECT_EQ(e.value("status", ""), "queued");
    Json rec = WaitForRecord(c(), e.value("execution_id", ""), Finished);
    EXPECT_EQ(rec.value("status", ""), "succeeded") << Brief(rec);
  }
}

TEST_F(ExecuteApi, BatchWithABadCallRunsNothing) {
  std::string marker = "batch-marker-" + std::to_string(::getpid());
  Json body = {{"calls",
                {{{"name", "shell_echo"}, {"parameters", {{"message", marker}}}},
                 {{"name", "calculator"}, {"parameters", {{"operation", "pow"}}}},
                 {{"name", "no_such_tool"}}}}};
  Reply r = Post(c(), "/execute/batch", body.dump());
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(ErrorCode(r), "invalid_argument");
  EXPECT_THAT(ErrorMessage(r), HasSubstr("2 of 3 calls are invalid, so none was run"));
  const Json& calls = r.json["error"]["details"]["calls"];
  ASSERT_EQ(calls.size(), 2u) << r.body;
  EXPECT_EQ(calls[0].value("index", -1), 1);
  EXPECT_FALSE(calls[0]["fields"].empty()) << r.body;
  EXPECT_EQ(calls[1].value("index", -1), 2);
  EXPECT_EQ(calls[1].value("code", ""), "not_found");
  // The valid call did not run.
  Reply list = Get(c(), "/executions?tool=shell_echo&limit=1000");
  for (const Json& e : list.json["executions"]) {
    EXPECT_NE(e["parameters"].value("message", ""), marker) << Brief(e);
  }

  for (const char* bad : {"", "{}", "{\"calls\": []}", "{\"calls\": {}}", "[1]",
                          "{\"calls\": [{\"parameters\": {}}]}",
                          "{\"calls\": [{\"name\": \"calculator\"}], \"timeout_seconds\": -1}"}) {
    Reply b = Post(c(), "/execute/batch", bad);
    EXPECT_EQ(b.status, 400) << bad << " -> " << b.body;
    EXPECT_EQ(ErrorCode(b), "invalid_argument") << bad;
  }
  Json big = {{"calls", Json::array()}};
  for (int i = 0; i < 300; ++i) big["calls"].push_back({{"name", "shell_echo"}});
  Reply too_big = Post(c(), "/execute/batch", big.dump());
  EXPECT_EQ(too_big.status, 400) << too_big.body;
  EXPECT_THAT(ErrorMessage(too_big), HasSubstr("1 to 256"));
}

TEST_F(ExecuteApi, ToolHealthChecks) {
  Reply calc = Get(c(), "/tools/calculator/health");
  ASSERT_EQ(calc.status, 200) << calc.body;
  EXPECT_EQ(calc.json.value("status", ""), "healthy") << calc.body;
  EXPECT_EQ(calc.json.value("check", ""), "command");
  EXPECT_EQ(calc.json.value("exit_code", -1), 0);
  EXPECT_EQ(calc.json.value("sandboxed", false), true);
  EXPECT_THAT(calc.json.value("output", ""), HasSubstr("\"result\": 2"));

  // No declared check: static readiness.
  Reply stats = Get(c(), "/tools/text_stats/health");
  ASSERT_EQ(stats.status, 200) << stats.body;
  EXPECT_EQ(stats.json.value("check", ""), "static");

  // A relative program from the tool's folder, with a quoted argument.
  Reply own = Get(c(), "/tools/health_exit/health");
  ASSERT_EQ(own.status, 200) << own.body;
  EXPECT_THAT(own.json.value("output", ""), HasSubstr("checked ok"));

  Reply code = Get(c(), "/tools/health_wrong_code/health");
  EXPECT_EQ(code.status, 503) << code.body;
  EXPECT_EQ(code.json.value("status", ""), "unhealthy");
  EXPECT_EQ(code.json.value("error", ""), "exit code 4, expected 0");
  EXPECT_THAT(code.json.value("output", ""), HasSubstr("sick"));

  Reply out = Get(c(), "/tools/health_wrong_output/health");
  EXPECT_EQ(out.status, 503) << out.body;
  EXPECT_THAT(out.json.value("error", ""), HasSubstr("does not contain \"status: ok\""));

  Reply hangs = Get(c(), "/tools/health_hangs/health");
  EXPECT_EQ(hangs.status, 503) << hangs.body;
  EXPECT_THAT(hangs.json.value("error", ""), HasSubstr("timed out")) << hangs.body;

  // The check runs in the sandbox like the tool: host secrets stay hidden.
  Reply secret = Get(c(), "/tools/health_secret/health");
  EXPECT_EQ(secret.status, 503) << secret.body;
  EXPECT_THAT(secret.json.value("output", ""), Not(HasSubstr("root:"))) << secret.body;

  Reply missing = Get(c(), "/tools/missing_script/health");
  EXPECT_EQ(missing.status, 503) << missing.body;
  EXPECT_THAT(missing.json.value("error", ""), HasSubstr("unresolved"));

  Reply unknown = Get(c(), "/tools/no_such_tool/health");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  EXPECT_EQ(ErrorCode(unknown), "not_found");
}

// ---- Bad input ----------------------------------------------------------------------------

TEST_F(ExecuteApi, UnknownToolIs404WithDidYouMean) {
  Reply r = Execute(c(), "calculater", {{"operation", "add"}, {"a", 1}, {"b", 1}});
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(ErrorCode(r), "not_found");
  EXPECT_THAT(ErrorMessage(r), HasSubstr("did you mean 'calculator'")) << r.body;
}

TEST_F(ExecuteApi, BadParametersAre400WithEachField) {
  Reply r = Execute(c(), "calculator", {{"operation", "pow"}, {"a", "x"}, {"c", 1}});
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(ErrorCode(r), "invalid_argument");
  ASSERT_TRUE(r.json["error"].contains("details")) << r.body;
  const Json& fields = r.json["error"]["details"]["fields"];
  ASSERT_TRUE(fields.is_array()) << r.body;
  std::map<std::string, std::string> by_field;
  for (const Json& f : fields) by_field[f.value("field", "")] = f.value("message", "");
  EXPECT_THAT(by_field["operation"], HasSubstr("not one of")) << r.body;
  EXPECT_THAT(by_field["a"], HasSubstr("number")) << r.body;
  EXPECT_THAT(by_field["b"], HasSubstr("missing")) << r.body;
  EXPECT_THAT(by_field["c"], HasSubstr("unknown")) << r.body;
  EXPECT_EQ(by_field.size(), 4u) << r.body;

  // Nothing ran: no execution of calculator with these parameters.
  Reply list = Get(c(), "/executions?tool=calculator&limit=1000");
  ASSERT_EQ(list.status, 200) << list.body;
  for (const Json& e : list.json["executions"]) {
    EXPECT_NE(e["parameters"].value("operation", ""), "pow") << Brief(e);
  }

  Reply not_object = Execute(c(), "calculator", Json::array({1, 2}));
  EXPECT_EQ(not_object.status, 400) << not_object.body;
}

TEST_F(ExecuteApi, MalformedBodiesAre400) {
  for (const char* body : {"[1, 2]", "\"calculator\"", "42", "not json", "{\"name\": "}) {
    Reply r = Post(c(), "/execute/tool", body);
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
    EXPECT_EQ(ErrorCode(r), "invalid_argument") << body;
  }
  Reply missing = Post(c(), "/execute/tool", R"({"parameters": {"a": 1}})");
  EXPECT_EQ(missing.status, 400) << missing.body;
  EXPECT_THAT(ErrorMessage(missing), HasSubstr("'name'")) << missing.body;
  Reply not_string = Post(c(), "/execute/tool", R"({"name": 42})");
  EXPECT_EQ(not_string.status, 400) << not_string.body;
  Reply bad_key = Post(c(), "/execute/tool", R"({"name": "shell_echo", "idempotency_key": 7})");
  EXPECT_EQ(bad_key.status, 400) << bad_key.body;
  Reply bad_limit = Get(c(), "/executions?limit=abc");
  EXPECT_EQ(bad_limit.status, 400) << bad_limit.body;
  Reply unknown = Get(c(), "/executions/ex_00000000000000000000");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
}

TEST_F(ExecuteApi, MissingScriptIsUnresolvedAndRefused) {
  Reply list = Get(c(), "/registry/manifests?kind=Tool");
  ASSERT_EQ(list.status, 200) << list.body;
  Json entry;
  for (const Json& e : list.json["manifests"]) {
    if (e.value("name", "") == "missing_script") entry = e;
  }
  ASSERT_TRUE(entry.is_object()) << list.body;
  EXPECT_EQ(entry.value("resolved", true), false) << entry.dump();
  EXPECT_THAT(entry["problems"].dump(), HasSubstr("nope.sh")) << entry.dump();

  Reply r = Execute(c(), "missing_script");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(ErrorCode(r), "failed_precondition");
  EXPECT_THAT(ErrorMessage(r), HasSubstr("nope.sh")) << r.body;
  EXPECT_THAT(ErrorMessage(r), HasSubstr("not found")) << r.body;
}

TEST_F(ExecuteApi, NonExecutableBinaryFailsWithAClearError) {
  Reply r = Execute(c(), "not_executable");
  if (r.status == 409) {  // refused up front: acceptable too
    EXPECT_THAT(ErrorMessage(r), HasSubstr("not executable")) << r.body;
    return;
  }
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "failed") << r.body;
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("not executable")) << r.body;
  EXPECT_THAT(r.body, Not(HasSubstr("should-not-run")));
  ExpectStillServes(c());
}

// ---- Async, history, logs, events ---------------------------------------------------------

TEST_F(ExecuteApi, AsyncCallThenStatusListAndLogs) {
  Reply r = Execute(c(), "calculator", {{"operation", "multiply"}, {"a", 6}, {"b", 7}},
                    {{"async", true}});
  ASSERT_EQ(r.status, 202) << r.body;
  std::string id = r.json.value("execution_id", "");
  ASSERT_TRUE(id.starts_with("ex_")) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "queued") << r.body;
  EXPECT_EQ(r.json["links"].value("status", ""), "/executions/" + id) << r.body;

  Json rec = WaitForRecord(c(), id, Finished);
  ASSERT_TRUE(Finished(rec)) << "not finished in time: " << Brief(rec);
  EXPECT_EQ(rec.value("status", ""), "succeeded") << Brief(rec);
  EXPECT_EQ(rec["result"].value("result", -1), 42) << Brief(rec);

  Reply list = Get(c(), "/executions?tool=calculator");
  ASSERT_EQ(list.status, 200) << list.body;
  bool listed = false;
  for (const Json& e : list.json["executions"]) {
    EXPECT_EQ(e.value("tool", ""), "calculator");
    listed |= e.value("execution_id", "") == id;
  }
  EXPECT_TRUE(listed) << list.body;
  Reply by_status = Get(c(), "/executions?tool=calculator&status=succeeded&limit=1");
  ASSERT_EQ(by_status.status, 200) << by_status.body;
  ASSERT_EQ(by_status.json["executions"].size(), 1u) << by_status.body;
  EXPECT_EQ(by_status.json["executions"][0].value("execution_id", ""), id)
      << "newest first: " << by_status.body;

  Reply logs = Get(c(), "/executions/" + id + "/logs");
  ASSERT_EQ(logs.status, 200) << logs.body;
  ASSERT_EQ(logs.json["lines"].size(), 1u) << logs.body;
  EXPECT_EQ(logs.json["lines"][0].value("stream", ""), "stdout");
  EXPECT_THAT(logs.json["lines"][0].value("text", ""), HasSubstr("\"result\": 42")) << logs.body;
}

TEST_F(ExecuteApi, LogsKeepStdoutAndStderrLines) {
  Reply r = Execute(c(), "lines");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "succeeded") << r.body;
  EXPECT_EQ(r.json.value("result", ""), "one\ntwo\nthree") << r.body;
  std::string id = r.json.value("execution_id", "");
  Reply logs = Get(c(), "/executions/" + id + "/logs");
  ASSERT_EQ(logs.status, 200) << logs.body;
  std::vector<std::string> out, err;
  int64_t last_seq = 0;
  for (const Json& l : logs.json["lines"]) {
    EXPECT_GT(l.value("seq", 0LL), last_seq) << logs.body;
    last_seq = l.value("seq", 0LL);
    (l.value("stream", "") == "stderr" ? err : out).push_back(l.value("text", ""));
  }
  EXPECT_EQ(out, (std::vector<std::string>{"one", "two", "three"})) << logs.body;
  EXPECT_EQ(err, (std::vector<std::string>{"warn"})) << logs.body;

  // ?after=SEQ skips the first lines.
  Reply after = Get(c(), "/executions/" + id + "/logs?after=2");
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(after.json["lines"].size(), 2u) << after.body;

  // The same lines as server-sent events, then the record.
  http::Client sc(d().url());
  std::vector<http::SseEvent> events;
  Status st = sc.Stream("/executions/" + id + "/logs", [&](const http::SseEvent& ev) {
    events.push_back(ev);
    return ev.event != "result";
  });
  ASSERT_FALSE(events.empty()) << st.ToString();
  EXPECT_EQ(events.back().event, "result");
  EXPECT_EQ(std::count_if(events.begin(), events.end(),
                          [](const http::SseEvent& e) { return e.event == "stdout"; }),
            3);
}

TEST_F(ExecuteApi, EventStreamOnPostGivesQueuedLinesAndResult) {
  Reply r =
      Execute(c(), "lines", Json::object(), Json::object(), {{"Accept", "text/event-stream"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.header("Content-Type"), HasSubstr("text/event-stream"));
  std::vector<http::SseEvent> events = ParseSse(r.body);
  ASSERT_GE(events.size(), 3u) << r.body;
  EXPECT_EQ(events.front().event, "queued") << r.body;
  std::string id = Json::parse(events.front().data, nullptr, false).value("execution_id", "");
  EXPECT_TRUE(id.starts_with("ex_")) << r.body;
  EXPECT_EQ(events.back().event, "result") << r.body;
  Json result = Json::parse(events.back().data, nullptr, false);
  EXPECT_EQ(result.value("status", ""), "succeeded") << r.body;
  EXPECT_EQ(result.value("execution_id", ""), id) << r.body;
  std::vector<std::string> out, err;
  for (const auto& ev : events) {
    if (ev.event != "stdout" && ev.event != "stderr") continue;
    Json line = Json::parse(ev.data, nullptr, false);
    EXPECT_EQ(line.value("stream", ""), ev.event);
    EXPECT_EQ(std::to_string(line.value("seq", 0LL)), ev.id);
    (ev.event == "stdout" ? out : err).push_back(line.value("text", ""));
  }
  EXPECT_EQ(out, (std::vector<std::string>{"one", "two", "three"})) << r.body;
  EXPECT_EQ(err, (std::vector<std::string>{"warn"})) << r.body;

  // The calculator too: queued, its one stdout line, the result.
  Reply calc = Execute(c(), "calculator", {{"operation", "add"}, {"a", 5}, {"b", 3}},
                       Json::object(), {{"Accept", "text/event-stream"}});
  ASSERT_EQ(calc.status, 200) << calc.body;
  std::vector<http::SseEvent> ce = ParseSse(calc.body);
  std::vector<std::string> names;
  for (const auto& e : ce) names.push_back(e.event);
  EXPECT_EQ(names, (std::vector<std::string>{"queued", "stdout", "result"})) << calc.body;
  ASSERT_FALSE(ce.empty());
  EXPECT_EQ(Json::parse(ce.back().data, nullptr, false)["result"].value("result", -1), 8);
}

// GET /executions/{id}/logs (JSON) of a running execution shows the lines it has printed.
TEST_F(ExecuteApi, JsonLogsOfARunningExecutionShowItsLines) {
  Reply r = Execute(c(), "sleeper", Json::object(), {{"async", true}});
  ASSERT_EQ(r.status, 202) << r.body;
  std::string id = r.json.value("execution_id", "");
  // The live stream proves the line was printed.
  http::Client sc(d().url());
  bool saw_started = false;
  (void)sc.Stream("/executions/" + id + "/logs", [&](const http::SseEvent& ev) {
    if (ev.event == "stdout" && ev.data.find("started") != std::string::npos) saw_started = true;
    return !saw_started && ev.event != "result";
  });
  ASSERT_TRUE(saw_started) << "the sleeper never printed 'started'";
  Reply logs;
  bool shown = WaitFor(
      [&] {
        logs = Get(c(), "/executions/" + id + "/logs");
        return logs.body.find("started") != std::string::npos;
      },
      std::chrono::seconds(3));
  Json status = Get(c(), "/executions/" + id).json;
  Reply cancel = Post(c(), "/executions/" + id + "/cancel", "");
  EXPECT_EQ(cancel.status, 200) << cancel.body;
  Json done = WaitForRecord(c(), id, Finished);
  EXPECT_EQ(done.value("status", ""), "cancelled") << Brief(done);
  if (!shown) {
    GTEST_SKIP() << "BUG: GET /executions/" << id << "/logs (JSON) while the execution is "
                 << status.value("status", "?")
                 << " and has printed 'started' (seen on the SSE stream): expected a line "
                    "'started', got "
                 << logs.body
                 << " -- output lines are written to the Store only in batches of 256 or when "
                    "the run ends (Executor::RunJob flush_logs), and the JSON route reads only "
                    "the Store";
  }
}

// ---- Hostile tools ------------------------------------------------------------------------

TEST_F(ExecuteApi, EndlessLoopTimesOut) {
  std::string marker = ToolDir("loop_forever").string();
  auto t0 = Clock::now();
  CallWhileWatching call(d(), "loop_forever", marker);
  Reply r = call.Finish();
  auto elapsed = Clock::now() - t0;
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "timeout") << r.body;
  EXPECT_EQ(r.json.value("success", true), false);
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("timed out after 1000 ms")) << r.body;
  EXPECT_LT(elapsed, std::chrono::seconds(5)) << "timeout 1s took too long";
  EXPECT_GE(elapsed, std::chrono::milliseconds(900));
  EXPECT_GE(call.seen(), 1u) << "the loop was never seen running";
  // Killed before the answer; reaped in the background (it may still be dying).
  EXPECT_TRUE(WaitFor([&] { return ProcessesMatching(marker).empty(); }, std::chrono::seconds(5)))
      << ::testing::PrintToString(ProcessesMatching(marker));
  ExpectStillServes(c());
}

TEST_F(ExecuteApi, UnboundedAllocationHitsTheMemoryLimit) {
  auto t0 = Clock::now();
  Reply r = Execute(c(), "memory_hog");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "failed") << r.body;
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("memory limit")) << r.body;
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("64 MiB")) << r.body;
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));
  EXPECT_LE(r.json.value("peak_memory_bytes", 0LL), 80LL << 20) << r.body;
  ExpectStillServes(c());
}

TEST_F(ExecuteApi, ForkBombIsContained) {
  std::string marker = ToolDir("fork_bomb").string();
  auto t0 = Clock::now();
  CallWhileWatching call(d(), "fork_bomb", marker, /*until=*/10);
  Reply r = call.Finish();
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "failed") << r.body;
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("process limit of 20 reached")) << r.body;
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));
  EXPECT_GE(call.seen(), 10u) << "the bomb never got going";
  // Nothing of it is left once the call has answered.
  // Killed before the answer; reaped in the background (it may still be dying).
  EXPECT_TRUE(WaitFor([&] { return ProcessesMatching(marker).empty(); }, std::chrono::seconds(5)))
      << ::testing::PrintToString(ProcessesMatching(marker));
  ExpectStillServes(c());
}

TEST_F(ExecuteApi, OutputFloodIsTruncated) {
  auto t0 = Clock::now();
  Reply r = Execute(c(), "output_flood");
  ASSERT_EQ(r.status, 200) << Brief(r.json);
  EXPECT_EQ(r.json.value("status", ""), "failed") << Brief(r.json);
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("output limit")) << Brief(r.json);
  EXPECT_LE(r.json.value("result", "").size(), (1u << 20) + 4096) << "the result is not bounded";
  EXPECT_LE(r.body.size(), 4u << 20);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(10));
  // Killed before the answer; reaped in the background (it may still be dying).
  EXPECT_TRUE(WaitFor([&] { return ProcessesMatching(ToolDir("output_flood").string()).empty(); },
                      std::chrono::seconds(5)))
      << ::testing::PrintToString(ProcessesMatching(ToolDir("output_flood").string()));
  ExpectStillServes(c());
}

TEST_F(ExecuteApi, HostSecretsCannotBeRead) {
  Reply r = Execute(c(), "read_secrets");
  ASSERT_EQ(r.status, 200) << r.body;
  std::string out = r.json.value("result", "");
  std::cout << "[ read_secrets ] what the tool got:\n" << out << "\n";
  std::map<std::string, std::string> got;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    size_t eq = line.find('=');
    if (eq != std::string::npos) got[line.substr(0, eq)] = line.substr(eq + 1);
  }
  EXPECT_THAT(got["SHADOW"], AnyOf(HasSubstr("Permission denied"), HasSubstr("No such file")))
      << out;
  std::string shadow = ReadFile("/etc/shadow");
  std::string first = shadow.substr(0, shadow.find('\n'));
  if (!first.empty()) {
    EXPECT_THAT(out, Not(HasSubstr(first)));
  }
  EXPECT_THAT(got["ROOT"], AnyOf(HasSubstr("Permission denied"), HasSubstr("No such file"))) << out;
  EXPECT_THAT(got["DATA"], Not(HasSubstr("cortex.db")))
      << "Cortex's data folder is visible: " << out;
  EXPECT_EQ(got["WHOAMI"], "65534") << out;
  ExpectStillServes(c());
}

TEST_F(ExecuteApi, WritingOutsideTmpFails) {
  Reply r = Execute(c(), "write_outside");
  ASSERT_EQ(r.status, 200) << r.body;
  std::string id = r.json.value("execution_id", "");
  EXPECT_EQ(r.json.value("status", ""), "failed") << r.body;
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("Read-only file system")) << r.body;
  EXPECT_THAT(r.json.value("result", ""), HasSubstr("TMP=ok")) << "its own /tmp is writable";
  EXPECT_FALSE(fs::exists(ToolDir("write_outside") / "written-by-tool.txt"));
  EXPECT_FALSE(fs::exists("/tmp/cortex-exec-test-" + id)) << "the tool's /tmp is the host's";
  ExpectStillServes(c());
}

// Issue 12, defect 1: a tool with network: true reached Cortex's own API (and every other
// service on the host's loopback) from inside its sandbox. Now it reaches the outside network
// only.
TEST_F(ExecuteApi, NetworkOnlyWhenTheManifestAllowsItAndNeverTheHostsLoopback) {
  cortex::testing::OutsideServer outside;
  ASSERT_TRUE(outside.ok()) << outside.why();
  cortex::testing::LoopbackListener listener;
  ASSERT_GT(listener.port(), 0);
  const int before = listener.Accepted();
  Reply denied =
      Execute(c(), "net_denied", {{"host", outside.address()}, {"port", outside.port()}});
  ASSERT_EQ(denied.status, 200) << denied.body;
  EXPECT_EQ(denied.json.value("status", ""), "failed") << denied.body;
  EXPECT_EQ(denied.json.value("result", ""), "cannot connect") << denied.body;

  Reply allowed =
      Execute(c(), "net_allowed", {{"host", outside.address()}, {"port", outside.port()}});
  ASSERT_EQ(allowed.status, 200) << allowed.body;
  EXPECT_EQ(allowed.json.value("status", ""), "succeeded") << allowed.body;
  EXPECT_EQ(allowed.json.value("result", ""), "connected") << allowed.body;
  EXPECT_TRUE(WaitFor([&] { return outside.accepted() == 1; }, std::chrono::seconds(2)));

  for (int port : {listener.port(), d().port()}) {
    Reply loopback = Execute(c(), "net_allowed", {{"port", port}});
    ASSERT_EQ(loopback.status, 200) << loopback.body;
    EXPECT_EQ(loopback.json.value("result", ""), "cannot connect")
        << "port " << port << ": " << loopback.body;
  }
  EXPECT_EQ(listener.Accepted(), before) << "a connection reached the host's listener";
  ExpectStillServes(c());
}

TEST_F(ExecuteApi, DeathBySignalIsReported) {
  Reply r = Execute(c(), "segfault");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "failed") << r.body;
  EXPECT_EQ(r.json.value("success", true), false) << r.body;
  EXPECT_EQ(r.json.value("result", ""), "before-the-signal") << r.body;
  ExpectStillServes(c());
  bool signal_reported = r.json.value("signal", 0) == 11 ||
                         r.json.value("error", "").find("SIGSEGV") != std::string::npos ||
                         r.json.value("error", "").find("signal 11") != std::string::npos;
  if (!signal_reported) {
    GTEST_SKIP() << "BUG: a sandboxed tool killed by SIGSEGV (bash `kill -SEGV $$`) is "
                    "reported as an ordinary exit: expected \"signal\": 11 and an error naming "
                    "the signal, got exit_code "
                 << r.json.value("exit_code", -1) << ", signal "
                 << (r.json.contains("signal") ? r.json["signal"].dump() : "<absent>")
                 << ", error \"" << r.json.value("error", "")
                 << "\" (bwrap exits with 128+N when the tool dies of signal N; the executor "
                    "does not map it back)";
  }
  EXPECT_EQ(r.json.value("signal", 0), 11) << r.body;
}

TEST_F(ExecuteApi, InvalidJsonIsKeptAsText) {
  Reply ok = Execute(c(), "bad_json");
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.json.value("status", ""), "succeeded") << ok.body;
  EXPECT_EQ(ok.json["result"], Json("{\"unterminated\":")) << ok.body;

  Reply bad = Execute(c(), "bad_json", {{"code", 1}});
  ASSERT_EQ(bad.status, 200) << bad.body;
  EXPECT_EQ(bad.json.value("status", ""), "failed") << bad.body;
  EXPECT_EQ(bad.json["result"], Json("{\"unterminated\":")) << bad.body;
  EXPECT_THAT(bad.json.value("error", ""), HasSubstr("exit code 1")) << bad.body;
  ExpectStillServes(c());
}

// ---- Cancel -------------------------------------------------------------------------------

TEST_F(ExecuteApi, CancelARunningCall) {
  Reply r = Execute(c(), "sleeper", Json::object(), {{"async", true}});
  ASSERT_EQ(r.status, 202) << r.body;
  std::string id = r.json.value("execution_id", "");
  Json running =
      WaitForRecord(c(), id, [](const Json& j) { return j.value("status", "") == "running"; });
  ASSERT_EQ(running.value("status", ""), "running") << Brief(running);

  std::string marker = ToolDir("sleeper").string();
  ASSERT_TRUE(WaitFor([&] { return !ProcessesMatching(marker).empty(); }));

  auto t0 = Clock::now();
  Reply cancel = Post(c(), "/executions/" + id + "/cancel", "");
  EXPECT_EQ(cancel.status, 200) << cancel.body;
  EXPECT_EQ(cancel.json.value("execution_id", ""), id) << cancel.body;
  Json done = WaitForRecord(c(), id, Finished, std::chrono::seconds(5));
  EXPECT_EQ(done.value("status", ""), "cancelled") << Brief(done);
  EXPECT_THAT(done.value("error", ""), HasSubstr("cancelled")) << Brief(done);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  // Killed before the answer; reaped in the background (it may still be dying).
  EXPECT_TRUE(WaitFor([&] { return ProcessesMatching(marker).empty(); }, std::chrono::seconds(5)))
      << ::testing::PrintToString(ProcessesMatching(marker));

  Reply again = Post(c(), "/executions/" + id + "/cancel", "");
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_THAT(ErrorMessage(again), HasSubstr("already finished")) << again.body;

  // A finished synchronous call cannot be cancelled either.
  Reply calc = Execute(c(), "calculator", {{"operation", "add"}, {"a", 1}, {"b", 1}});
  ASSERT_EQ(calc.status, 200) << calc.body;
  Reply late = Post(c(), "/executions/" + calc.json.value("execution_id", "") + "/cancel", "");
  EXPECT_EQ(late.status, 409) << late.body;

  Reply unknown = Post(c(), "/executions/ex_ffffffffffffffffffff/cancel", "");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  ExpectStillServes(c());
}

// ---- Environment --------------------------------------------------------------------------

TEST_F(ExecuteApi, ToolSeesACleanEnvironment) {
  Reply r = Execute(c(), "env_dump", Json::object(), {{"idempotency_key", "key-123"}});
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.json.value("status", ""), "succeeded") << r.body;
  std::string id = r.json.value("execution_id", "");
  EXPECT_EQ(r.json.value("idempotency_key", ""), "key-123") << r.body;
  std::map<std::string, std::string> env;
  std::istringstream in(r.json.value("result", ""));
  for (std::string line; std::getline(in, line);) {
    size_t eq = line.find('=');
    if (eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  EXPECT_EQ(env["CORTEX_EXECUTION_ID"], id);
  EXPECT_EQ(env["CORTEX_TOOL_NAME"], "env_dump");
  EXPECT_EQ(env["CORTEX_IDEMPOTENCY_KEY"], "key-123");
  EXPECT_EQ(env["GREETING"], "hello-from-the-manifest");
  EXPECT_EQ(env["HOME"], "/tmp");
  EXPECT_EQ(env["PATH"], "/usr/local/bin:/usr/bin:/bin");
  EXPECT_EQ(env.count(kLeakVar), 0u) << "the server's environment leaked: " << r.body;
  EXPECT_THAT(r.body, Not(HasSubstr(kLeakValue)));
  // Nothing beyond the documented set (bash adds PWD, SHLVL and _).
  static const std::set<std::string> kAllowed = {"PATH",
                                                 "HOME",
                                                 "TMPDIR",
                                                 "LANG",
                                                 "PYTHONDONTWRITEBYTECODE",
                                                 "PYTHONUNBUFFERED",
                                                 "PWD",
                                                 "SHLVL",
                                                 "_",
                                                 "GREETING",
                                                 "CORTEX_EXECUTION_ID",
                                                 "CORTEX_TOOL_NAME",
                                                 "CORTEX_IDEMPOTENCY_KEY",
                                                 "TRACEPARENT"};
  EXPECT_EQ(env["TRACEPARENT"].size(), 55u) << "the call's W3C trace context";
  for (const auto& [k, v] : env) EXPECT_TRUE(kAllowed.count(k)) << "unexpected variable " << k;
}

// ---- Concurrency --------------------------------------------------------------------------

TEST_F(ExecuteApi, TwentyConcurrentCallsFromFourThreads) {
  std::mutex mu;
  std::vector<std::string> problems;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      http::Client client(d().url());
      for (int i = 0; i < 5; ++i) {
        int a = t * 10 + i;
        Json body = {{"name", "calculator"},
                     {"parameters", {{"operation", "add"}, {"a", a}, {"b", 1}}}};
        auto r = client.Post("/execute/tool", body.dump());
        Json j = r.ok() ? Json::parse(r->body, nullptr, false) : Json();
        bool good = r.ok() && r->status == 200 && j.value("status", "") == "succeeded" &&
                    j["result"].value("result", -1) == a + 1;
        std::lock_guard lock(mu);
        if (good) {
          ++ok;
        } else {
          problems.push_back(r.ok() ? std::to_string(r->status) + " " + r->body
                                    : r.status().ToString());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 20);
  EXPECT_THAT(problems, ::testing::IsEmpty());
  ExpectStillServes(c());
}

// ---- CPU accounting -----------------------------------------------------------------------

TEST_F(ExecuteApi, CpuTimeOfTheToolIsRecorded) {
  Reply r = Execute(c(), "cpu_burn");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.json.value("status", ""), "succeeded") << r.body;
  int64_t tool_ms =
      r.json["result"].value("user_ms", 0LL) + r.json["result"].value("system_ms", 0LL);
  int64_t recorded = r.json.value("cpu_user_ms", 0LL) + r.json.value("cpu_system_ms", 0LL);
  ASSERT_GE(tool_ms, 300) << "the tool did not burn CPU: " << r.body;
  if (recorded < tool_ms / 2) {
    GTEST_SKIP() << "BUG: a sandboxed tool that used " << tool_ms
                 << " ms of CPU (its own os.times()) is recorded with cpu_user_ms "
                 << r.json.value("cpu_user_ms", 0LL) << " + cpu_system_ms "
                 << r.json.value("cpu_system_ms", 0LL)
                 << ": the rusage is bwrap's, not the tool's (expected >= " << tool_ms / 2 << ")";
  }
  EXPECT_GE(recorded, tool_ms / 2);
}

// ---- The queue bound ----------------------------------------------------------------------

TEST(ExecuteQueue, FullQueueAnswers429WithRetryAfter) {
  TempDir cfg;
  WriteFile(cfg.path() / "cortex.yml", "exec:\n  workers: 1\n  queue: 2\n");
  Daemon d({"--config", (cfg.path() / "cortex.yml").string()}, WriteTools);
  ASSERT_DAEMON(d);
  std::vector<std::string> accepted;
  int refused = 0;
  for (int i = 0; i < 6; ++i) {
    Reply r = Execute(d.client(), "sleeper", Json::object(), {{"async", true}});
    if (r.status == 202) {
      accepted.push_back(r.json.value("execution_id", ""));
    } else {
      EXPECT_EQ(r.status, 429) << r.body;
      EXPECT_EQ(r.header("Retry-After"), "1") << r.body;
      EXPECT_EQ(ErrorCode(r), "resource_exhausted") << r.body;
      EXPECT_THAT(ErrorMessage(r), HasSubstr("queue is full")) << r.body;
      ++refused;
    }
  }
  // One worker and two places: at most three accepted; the rest refused, never queued.
  EXPECT_GE(refused, 3);
  EXPECT_LE(accepted.size(), 3u);
  EXPECT_GE(accepted.size(), 2u);
  Reply list = Get(d.client(), "/executions?tool=sleeper");
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_EQ(list.json.value("count", 0u), accepted.size()) << "refused calls left records";
  Reply running = Get(d.client(), "/executions?status=running");
  EXPECT_LE(running.json.value("count", 0u), 1u) << "one worker: " << running.body;

  // Cancelling frees the queue (queued ones end at once, without running).
  for (const std::string& id : accepted) {
    Reply cancel = Post(d.client(), "/executions/" + id + "/cancel", "");
    EXPECT_EQ(cancel.status, 200) << cancel.body;
  }
  for (const std::string& id : accepted) {
    Json rec = WaitForRecord(d.client(), id, Finished, std::chrono::seconds(5));
    EXPECT_EQ(rec.value("status", ""), "cancelled") << Brief(rec);
  }
  Reply after = Execute(d.client(), "calculator", {{"operation", "add"}, {"a", 1}, {"b", 2}});
  EXPECT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(after.json.value("status", ""), "succeeded") << after.body;
}

// Concurrent submissions respect the bound too: with one worker and two places, at most three
// calls are accepted however many arrive at once.
TEST(ExecuteQueue, ConcurrentSubmissionsRespectTheBound) {
  TempDir cfg;
  WriteFile(cfg.path() / "cortex.yml", "exec:\n  workers: 1\n  queue: 2\n");
  Daemon d({"--config", (cfg.path() / "cortex.yml").string()}, WriteTools);
  ASSERT_DAEMON(d);
  constexpr int kThreads = 16;
  std::mutex mu;
  std::vector<std::string> accepted;
  std::vector<std::string> unexpected;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      http::Client client(d.url());
      (void)client.Get("/healthz");  // connected before the start signal
      ++ready;
      while (!go) std::this_thread::yield();
      auto r = client.Post("/execute/tool", R"({"name": "sleeper", "async": true})");
      std::lock_guard lock(mu);
      if (r.ok() && r->status == 202) {
        accepted.push_back(Json::parse(r->body, nullptr, false).value("execution_id", ""));
      } else if (!r.ok() || r->status != 429) {
        unexpected.push_back(r.ok() ? std::to_string(r->status) + " " + r->body
                                    : r.status().ToString());
      }
    });
  }
  WaitFor([&] { return ready == kThreads; });
  go = true;
  for (auto& th : threads) th.join();
  EXPECT_THAT(unexpected, ::testing::IsEmpty());
  size_t n = accepted.size();
  for (const std::string& id : accepted) {
    Post(d.client(), "/executions/" + id + "/cancel", "");
  }
  for (const std::string& id : accepted) {
    Json rec = WaitForRecord(d.client(), id, Finished, std::chrono::seconds(5));
    EXPECT_EQ(rec.value("status", ""), "cancelled") << Brief(rec);
  }
  EXPECT_GE(n, 1u);
  if (n > 3) {
    GTEST_SKIP() << "BUG: exec {workers: 1, queue: 2}; " << kThreads
                 << " concurrent POST /execute/tool {\"name\": \"sleeper\", \"async\": true}: "
                    "expected at most 3 accepted (1 running + 2 queued), got "
                 << n
                 << " (Executor::Submit checks the queue size under the lock, releases it for "
                    "the Store write, then pushes without checking again)";
  }
}

// ---- Durability ---------------------------------------------------------------------------

// A second server on the first one's data folder (its data/ is a symlink to it).
std::unique_ptr<Daemon> RestartOn(const Daemon& first) {
  fs::path data = first.data_dir();
  std::error_code ec;
  fs::remove(data / "serve.json", ec);  // a killed server leaves it behind
  return std::make_unique<Daemon>(std::vector<std::string>{}, [data](const fs::path& m) {
    WriteTools(m);
    fs::create_directory_symlink(data, m.parent_path() / "data");
  });
}

// Starts a sleeper asynchronously and waits until it runs; returns its id.
std::string StartSleeper(Daemon& d) {
  Reply r = Execute(d.client(), "sleeper", Json::object(), {{"async", true}});
  EXPECT_EQ(r.status, 202) << r.body;
  std::string id = r.json.value("execution_id", "");
  Json rec = WaitForRecord(d.client(), id,
                           [](const Json& j) { return j.value("status", "") == "running"; });
  EXPECT_EQ(rec.value("status", ""), "running") << Brief(rec);
  return id;
}

TEST(ExecuteDurability, CallsRunningWhenTheServerDiesAreInterrupted) {
  Daemon first({}, WriteTools);
  ASSERT_DAEMON(first);
  std::string id = StartSleeper(first);
  std::string marker = (first.manifests_dir() / "tools/sleeper").string();
  ASSERT_TRUE(WaitFor([&] { return !ProcessesMatching(marker).empty(); }));
  ASSERT_EQ(::kill(first.pid(), SIGKILL), 0);
  first.Stop();
  // The sandbox dies with its parent.
  EXPECT_TRUE(WaitFor([&] { return ProcessesMatching(marker).empty(); }, std::chrono::seconds(5)))
      << ::testing::PrintToString(ProcessesMatching(marker));

  auto second = RestartOn(first);
  ASSERT_DAEMON(*second);
  Reply r = Get(second->client(), "/executions/" + id);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "interrupted") << r.body;
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("interrupted")) << r.body;
  EXPECT_GT(r.json.value("finished_ms", 0LL), 0) << r.body;
  Reply list = Get(second->client(), "/executions?status=interrupted");
  EXPECT_EQ(list.json.value("count", 0), 1) << list.body;
  ExpectStillServes(second->client());
}

TEST(ExecuteDurability, CallsRunningAtAGracefulStopAreInterrupted) {
  Daemon first({}, WriteTools);
  ASSERT_DAEMON(first);
  std::string id = StartSleeper(first);
  // A finished call survives the restart as it was.
  Reply calc = Execute(first.client(), "calculator", {{"operation", "add"}, {"a", 5}, {"b", 3}});
  ASSERT_EQ(calc.status, 200) << calc.body;
  EXPECT_EQ(first.Stop(), 0) << first.log();
  EXPECT_THAT(ProcessesMatching((first.manifests_dir() / "tools/sleeper").string()),
              ::testing::IsEmpty());

  auto second = RestartOn(first);
  ASSERT_DAEMON(*second);
  Reply old = Get(second->client(), "/executions/" + calc.json.value("execution_id", ""));
  ASSERT_EQ(old.status, 200) << old.body;
  EXPECT_EQ(old.json.value("status", ""), "succeeded") << old.body;
  EXPECT_EQ(old.json["result"], calc.json["result"]);
  ExpectStillServes(second->client());

  Reply r = Get(second->client(), "/executions/" + id);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(Finished(r.json)) << r.body;
  if (r.json.value("status", "") != "interrupted") {
    GTEST_SKIP() << "BUG: a call running when the server stops (SIGTERM) is recorded as \""
                 << r.json.value("status", "") << "\" with error \"" << r.json.value("error", "")
                 << "\" (like a user's cancel); docs/api.md says executions still running when "
                    "the server stops are marked `interrupted` at the next start";
  }
}

// ---- Defaults -----------------------------------------------------------------------------

// `cortex serve` with the default (relative) data folder runs tools.
TEST(ExecuteDefaults, RelativeDataDirStillSandboxes) {
  TempDir dir;
  fs::path manifests = dir.path() / "manifests";
  fs::create_directories(manifests);
  WriteTools(manifests);
  std::vector<std::string> args = {CortexBinary(), "serve",       "--manifests", manifests.string(),
                                   "--listen",     "127.0.0.1:0", "--log-level", "warn"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string log = (dir.path() / "serve.log").string();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addchdir_np(&fa, dir.path().c_str());
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ASSERT_EQ(rc, 0);
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      ::kill(pid, SIGTERM);
      if (!WaitFor([&] { return ::waitpid(pid, nullptr, WNOHANG) == pid; },
                   std::chrono::seconds(10))) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } reaper{pid};
  fs::path ready = dir.path() / ".cortex/serve.json";
  int port = 0;
  ASSERT_TRUE(WaitFor([&] {
    auto j = Json::parse(ReadFile(ready), nullptr, false);
    if (j.is_discarded() || !j.contains("port")) return false;
    port = j["port"].get<int>();
    return true;
  })) << ReadFile(log);
  http::Client client("http://127.0.0.1:" + std::to_string(port));
  Reply r = Execute(client, "calculator", {{"operation", "add"}, {"a", 5}, {"b", 3}});
  if (r.status == 409) {
    GTEST_SKIP() << "BUG: `cortex serve` with the default data folder (./.cortex, relative) "
                    "refuses every tool call: POST /execute/tool calculator 5+3 -> expected 200 "
                    "succeeded, got 409 "
                 << r.body << "; the server log says: " << ReadFile(log)
                 << "(DetectSandbox is given the relative s.data_dir + \"/sandbox\")";
  }
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "succeeded") << r.body;
  EXPECT_EQ(r.json.value("sandboxed", false), true) << r.body;
}

}  // namespace
}  // namespace cortex::testing
