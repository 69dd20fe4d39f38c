// `cortex run tool` and `cortex executions`, end to end: the real `cortex` binary runs as a
// subprocess against a real `cortex serve` (tests/integration/daemon.h) whose manifests folder
// holds the example tools plus a few written here, and the tools run as real processes.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <regex>
#include <thread>

#include "cli/cli_process.h"
#include "cli/output.h"
#include "integration/daemon.h"

namespace cortex::cli {
namespace {

namespace fs = std::filesystem;
using testing::Daemon;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::ReadFile;
using testing::TempDir;
using testing::WaitFor;
using testing::WriteFile;

// --- Running the binary ---------------------------------------------------------------------

using testing::CliProcess;
using testing::CliResult;
using testing::RunCli;

Json ParseJson(const std::string& text) { return Json::parse(text, nullptr, false); }

// --- Tools ----------------------------------------------------------------------------------

// Declares no parameters, so whatever it is given reaches it unchanged; prints it back.
constexpr char kEchoTool[] = R"(kind: Tool
name: echo_params
description: Prints its parameters back.
implementation:
  runtime: sh
  entrypoint: ./echo.sh
)";
constexpr char kEchoScript[] = "printf '%s\\n' \"$1\"\n";

// The same, with declared parameter types: -p values are typed by them.
constexpr char kTypedEchoTool[] = R"(kind: Tool
name: typed_echo
description: Prints its typed parameters back.
implementation:
  runtime: sh
  entrypoint: ./echo.sh
parameters:
  - {name: text, type: string, required: false}
  - {name: count, type: integer, required: false}
  - {name: flag, type: boolean, required: false}
)";

// Output lines on both streams, with a pause in the middle so a test can see them arrive live.
constexpr char kChattyTool[] = R"(kind: Tool
name: chatty
description: Prints lines on stdout and stderr, slowly.
implementation:
  runtime: sh
  entrypoint: ./chatty.sh
parameters:
  - name: pause
    type: number
    default: 0
)";
constexpr char kChattyScript[] = R"sh(echo "line 1"
echo "err 1" >&2
sleep "$(printf '%s' "$1" | sed 's/.*"pause": *\([0-9.]*\).*/\1/')"
echo "line 2"
echo "err 2" >&2
echo '{"success": true, "lines": 2}'
)sh";

constexpr char kSleeperTool[] = R"(kind: Tool
name: sleeper
description: Sleeps for a long time.
implementation:
  runtime: sh
  entrypoint: ./sleep.sh
  resources: {timeout: 120s}
)";
constexpr char kSleeperScript[] = "echo going to sleep\nsleep 100\necho woke up\n";

void WriteTools(const fs::path& m) {
  fs::copy(fs::path(CORTEX_SOURCE_DIR) / "examples/manifests/tools", m / "tools",
           fs::copy_options::recursive);
  WriteFile(m / "tools/echo_params/tool.yml", kEchoTool);
  WriteFile(m / "tools/echo_params/echo.sh", kEchoScript);
  WriteFile(m / "tools/typed_echo/tool.yml", kTypedEchoTool);
  WriteFile(m / "tools/typed_echo/echo.sh", kEchoScript);
  WriteFile(m / "tools/chatty/tool.yml", kChattyTool);
  WriteFile(m / "tools/chatty/chatty.sh", kChattyScript);
  WriteFile(m / "tools/sleeper/tool.yml", kSleeperTool);
  WriteFile(m / "tools/sleeper/sleep.sh", kSleeperScript);
}

class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Sandboxed where bubblewrap works; elsewhere the tools still run (and say so).
    fs::path config = config_dir_.path() / "cortex.yml";
    WriteFile(config, "exec:\n  allow_unsandboxed: true\n");
    daemon_ =
        std::make_unique<Daemon>(std::vector<std::string>{"--config", config.string()}, WriteTools);
    ASSERT_TRUE(daemon_->ok()) << daemon_->log();
  }

  // `cortex --server URL args...` (the server flag before the verb; after it in some tests).
  std::vector<std::string> Args(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", daemon_->url()});
    return args;
  }
  CliResult Cli(std::vector<std::string> args, const std::string& stdin_text = "") {
    return RunCli(Args(std::move(args)), stdin_text);
  }

  // The record of an execution, through `executions get -o json`.
  Json Record(const std::string& id) {
    return ParseJson(Cli({"executions", "get", id, "-o", "json"}).out);
  }
  // Waits until the execution's status is `status`.
  bool WaitForStatus(const std::string& id, const std::string& status) {
    return WaitFor(
        [&] {
          Json r = Record(id);
          return r.is_object() && r.value("status", "") == status;
        },
        std::chrono::seconds(30));
  }

  // Waits until the execution has printed `text` on stdout (the tool is past its start-up).
  bool WaitForOutput(const std::string& id, const std::string& text) {
    return WaitFor(
        [&] {
          return Cli({"executions", "logs", id}).out.find(text) != std::string::npos;
        },
        std::chrono::seconds(30));
  }

  TempDir config_dir_;
  TempDir user_dir_;
  std::unique_ptr<Daemon> daemon_;
};

const std::regex kSucceededLine(R"((^|\n)succeeded in \d+ ms \((sandboxed|not sandboxed)\)\n)");
const std::regex kExecutionId(R"(^ex_[0-9a-f]{20}\n$)");

// --- run tool -------------------------------------------------------------------------------

TEST_F(RunTest, RunsTheCalculatorWithParameters) {
  CliResult r = Cli({"run", "tool", "calculator", "-p", "operation=add", "-p", "a=5", "-p", "b=3"});
  ASSERT_EQ(r.exit_code, 0) << r;
  Json result = ParseJson(r.out);
  ASSERT_TRUE(result.is_object()) << r;
  EXPECT_EQ(result["result"], 8);
  EXPECT_EQ(result["success"], true);
  EXPECT_THAT(r.out, HasSubstr("\n  \"result\": 8\n"));  // pretty
  EXPECT_TRUE(std::regex_search(r.err, kSucceededLine)) << r;
}

TEST_F(RunTest, AFailingToolExitsOneWithItsErrorOnStderr) {
  CliResult r = Cli({"run", "tool", "always_fails"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_EQ(ParseJson(r.out)["success"], false) << r;  // the tool's own answer, still shown
  EXPECT_THAT(r.err, HasSubstr("failed: failed on purpose (exit code 3)"));
  EXPECT_THAT(r.err, HasSubstr("stderr:\n  always_fails: failed on purpose\n"));

  CliResult why = Cli({"run", "tool", "always_fails", "-p", "reason=disk on fire"});
  EXPECT_EQ(why.exit_code, 1) << why;
  EXPECT_THAT(why.err, HasSubstr("failed: disk on fire (exit code 3)"));
}

TEST_F(RunTest, ParameterValuesAreJsonWhenTheyParseElseStrings) {
  CliResult r = Cli({"run",
                     "tool",
                     "echo_params",
                     "-p",
                     "n=5",
                     "-p",
                     "x=2.5",
                     "-p",
                     "yes=true",
                     "-p",
                     "nothing=null",
                     "-p",
                     "list=[1,\"two\"]",
                     "-p",
                     "obj={\"k\":1}",
                     "-p",
                     "quoted=\"5\"",
                     "-p",
                     "name=bob",
                     "-p",
                     "words=hello world",
                     "-p",
                     "empty=",
                     "-p",
                     "eq=a=b",
                     "-p",
                     "n=6"});
  ASSERT_EQ(r.exit_code, 0) << r;
  Json got = ParseJson(r.out);
  ASSERT_TRUE(got.is_object()) << r;
  EXPECT_EQ(got["n"], 6);  // the last -p of a key wins
  EXPECT_TRUE(got["n"].is_number_integer());
  EXPECT_EQ(got["x"], 2.5);
  EXPECT_EQ(got["yes"], true);
  EXPECT_TRUE(got.contains("nothing") && got["nothing"].is_null());
  EXPECT_EQ(got["list"], Json::parse(R"([1, "two"])"));
  EXPECT_EQ(got["obj"], Json::parse(R"({"k": 1})"));
  EXPECT_EQ(got["quoted"], "5");
  EXPECT_EQ(got["name"], "bob");
  EXPECT_EQ(got["words"], "hello world");
  EXPECT_EQ(got["empty"], "");
  EXPECT_EQ(got["eq"], "a=b");  // split at the first '='
}

TEST_F(RunTest, ParameterValuesAreTypedByTheToolsDeclaredTypes) {
  // A string parameter takes the text as it is, even when it would parse as JSON.
  CliResult r =
      Cli({"run", "tool", "typed_echo", "-p", "text=5", "-p", "count=5", "-p", "flag=true"});
  ASSERT_EQ(r.exit_code, 0) << r;
  Json got = ParseJson(r.out);
  EXPECT_EQ(got["text"], "5") << r;
  EXPECT_EQ(got["count"], 5) << r;
  EXPECT_EQ(got["flag"], true) << r;
  CliResult list = Cli({"run", "tool", "typed_echo", "-p", "text=[1, 2]"});
  ASSERT_EQ(list.exit_code, 0) << list;
  EXPECT_EQ(ParseJson(list.out)["text"], "[1, 2]") << list;
}

TEST_F(RunTest, ParametersFromAJsonFileThenP) {
  fs::path file = user_dir_.path() / "params.json";
  WriteFile(file, R"({"operation": "multiply", "a": 6, "b": 2})");
  CliResult r = Cli({"run", "tool", "calculator", "--json", file.string()});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(ParseJson(r.out)["result"], 12);

  CliResult over = Cli({"run", "tool", "calculator", "--json", file.string(), "-p", "b=7"});
  ASSERT_EQ(over.exit_code, 0) << over;
  EXPECT_EQ(ParseJson(over.out)["result"], 42);

  CliResult in = Cli({"run", "tool", "calculator", "--json", "-"},
                     R"({"operation": "subtract", "a": 10, "b": 4})");
  ASSERT_EQ(in.exit_code, 0) << in;
  EXPECT_EQ(ParseJson(in.out)["result"], 6);
}

TEST_F(RunTest, UsageErrorsExitTwoAndRunNothing) {
  CliResult no_eq = Cli({"run", "tool", "calculator", "-p", "operation"});
  EXPECT_EQ(no_eq.exit_code, 2) << no_eq;
  EXPECT_THAT(no_eq.err, HasSubstr("error: -p operation: expected key=value"));
  EXPECT_EQ(Cli({"run", "tool", "calculator", "-p", "=5"}).exit_code, 2);

  fs::path list = user_dir_.path() / "list.json";
  WriteFile(list, "[1, 2]");
  CliResult not_object = Cli({"run", "tool", "calculator", "--json", list.string()});
  EXPECT_EQ(not_object.exit_code, 2) << not_object;
  EXPECT_THAT(not_object.err, HasSubstr("expected a JSON object of parameters, got array"));
  fs::path bad = user_dir_.path() / "bad.json";
  WriteFile(bad, "{oops");
  EXPECT_THAT(Cli({"run", "tool", "calculator", "--json", bad.string()}).err,
              HasSubstr("not valid JSON"));
  CliResult missing = Cli({"run", "tool", "calculator", "--json", "/nonexistent/p.json"});
  EXPECT_EQ(missing.exit_code, 2) << missing;
  EXPECT_THAT(missing.err, HasSubstr("cannot read"));

  EXPECT_NE(Cli({"run", "tool", "calculator", "--async", "--follow"}).exit_code, 0);
  EXPECT_NE(Cli({"run", "tool"}).exit_code, 0);
  EXPECT_NE(Cli({"run"}).exit_code, 0);

  CliResult none = Cli({"executions", "ls"});
  EXPECT_EQ(none.exit_code, 0) << none;
  EXPECT_THAT(none.err, HasSubstr("no executions found"));
}

TEST_F(RunTest, BadParametersListEachField) {
  CliResult r = Cli({"run", "tool", "calculator", "-p", "operation=pow", "-p", "a=x", "-p", "c=1"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr("error: invalid parameters for Tool/calculator\n"));
  EXPECT_THAT(r.err, HasSubstr("\n  operation: \"pow\" is not one of \"add\", \"subtract\""));
  EXPECT_THAT(r.err, HasSubstr("\n  a: expected a number, got string \"x\"\n"));
  EXPECT_THAT(r.err, HasSubstr("\n  b: missing required parameter\n"));
  EXPECT_THAT(r.err, HasSubstr("\n  c: unknown parameter"));
  // Nothing ran.
  EXPECT_THAT(Cli({"executions", "ls"}).err, HasSubstr("no executions found"));
}

TEST_F(RunTest, UnknownToolSuggestsTheClosestName) {
  CliResult r = Cli({"run", "tool", "calculater", "-p", "a=1"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("error: no Tool named 'calculater' (did you mean 'calculator'?)"));
}

TEST_F(RunTest, OutputJsonIsTheExecutionRecord) {
  CliResult r = Cli({"run", "tool", "calculator", "-p", "operation=divide", "-p", "a=1", "-p",
                     "b=0", "-o", "json"});
  EXPECT_EQ(r.exit_code, 1) << r;  // division by zero: the tool failed
  Json j = ParseJson(r.out);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_EQ(j["tool"], "calculator");
  EXPECT_EQ(j["status"], "failed");
  EXPECT_THAT(j.value("error", ""), HasSubstr("division by zero"));
  EXPECT_EQ(j["parameters"]["b"], 0);

  CliResult yaml = Cli({"run", "tool", "echo_params", "-p", "k=v", "-o", "yaml"});
  EXPECT_EQ(yaml.exit_code, 0) << yaml;
  EXPECT_THAT(yaml.out, HasSubstr("status: succeeded\n"));
  EXPECT_THAT(yaml.out, HasSubstr("result:\n  k: v\n"));
}

TEST_F(RunTest, AServerThatIsNotThereExitsThree) {
  // Nothing listens on port 1 of the loopback (it is privileged and unused).
  CliProcess p({"--server", "http://127.0.0.1:1", "run", "tool", "calculator"});
  EXPECT_EQ(p.Wait(), 3) << p.err();
  EXPECT_THAT(p.err(), HasSubstr("error: cannot reach the Cortex server at http://127.0.0.1:1"));
}

// --- async, executions ls/get/logs ----------------------------------------------------------

TEST_F(RunTest, AsyncThenExecutionsGetListAndLogs) {
  CliResult submitted = Cli({"run", "tool", "chatty", "--async"});
  ASSERT_EQ(submitted.exit_code, 0) << submitted;
  ASSERT_TRUE(std::regex_match(submitted.out, kExecutionId)) << submitted;
  std::string id = submitted.out.substr(0, submitted.out.size() - 1);
  ASSERT_TRUE(WaitForStatus(id, "succeeded")) << Record(id).dump();
  ASSERT_EQ(Cli({"run", "tool", "always_fails"}).exit_code, 1);

  CliResult get = Cli({"executions", "get", id});
  ASSERT_EQ(get.exit_code, 0) << get;
  EXPECT_THAT(get.out, HasSubstr("ID:          " + id + "\n"));
  EXPECT_THAT(get.out, HasSubstr("Tool:        chatty\n"));
  EXPECT_THAT(get.out, HasSubstr("Status:      succeeded\n"));
  EXPECT_THAT(get.out, HasSubstr("Exit code:   0\n"));
  EXPECT_TRUE(std::regex_search(get.out, std::regex(R"(\nDuration: +\d+ ms\n)"))) << get;
  EXPECT_THAT(get.out, HasSubstr("Parameters:\n  pause: 0\n"));
  EXPECT_THAT(get.out, HasSubstr("Result:\n  line 1\n  line 2\n"));
  EXPECT_THAT(get.out, HasSubstr("Stderr (end):\n  err 1\n  err 2\n"));
  EXPECT_EQ(Record(id)["execution_id"], id);
  CliResult yaml_get = Cli({"executions", "get", id, "-o", "yaml"});
  EXPECT_THAT(yaml_get.out, HasSubstr("execution_id: " + id + "\n"));

  CliResult ls = Cli({"executions", "ls"});
  ASSERT_EQ(ls.exit_code, 0) << ls;
  EXPECT_TRUE(std::regex_search(
      ls.out,
      std::regex("^ID +TOOL +STATUS +DURATION +STARTED +ERROR\nex_[0-9a-f]+ +always_fails "
                 "+failed +\\d+ ms +20\\d\\d-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ +failed on "
                 "purpose \\(exit code 3\\)\n")))
      << ls;  // newest first
  EXPECT_TRUE(std::regex_search(ls.out, std::regex(id + " +chatty +succeeded +\\d+ ms"))) << ls;

  CliResult only_chatty = Cli({"executions", "ls", "--tool", "chatty"});
  EXPECT_THAT(only_chatty.out, HasSubstr(id));
  EXPECT_THAT(only_chatty.out, Not(HasSubstr("always_fails")));
  CliResult failed = Cli({"executions", "ls", "--status", "failed", "-o", "json"});
  ASSERT_EQ(failed.exit_code, 0) << failed;
  Json list = ParseJson(failed.out);
  ASSERT_EQ(list["count"], 1) << failed;
  EXPECT_EQ(list["executions"][0]["tool"], "always_fails");
  EXPECT_EQ(ParseJson(Cli({"executions", "ls", "--limit", "1", "-o", "json"}).out)["count"], 1);
  EXPECT_NE(Cli({"executions", "ls", "--status", "bogus"}).exit_code, 0);
  EXPECT_THAT(Cli({"executions"}).out, HasSubstr(id));  // ls is the default

  CliResult logs = Cli({"executions", "logs", id});
  ASSERT_EQ(logs.exit_code, 0) << logs;
  EXPECT_EQ(logs.out, "line 1\nline 2\n{\"success\": true, \"lines\": 2}\n");
  EXPECT_EQ(logs.err, "err 1\nerr 2\n");
  Json logs_json = ParseJson(Cli({"executions", "logs", id, "-o", "json"}).out);
  ASSERT_EQ(logs_json["lines"].size(), 5u) << logs_json.dump();
  int stderr_lines = 0;
  for (const Json& l : logs_json["lines"]) stderr_lines += l["stream"] == "stderr" ? 1 : 0;
  EXPECT_EQ(stderr_lines, 2);

  // A finished execution followed: its stored lines, then its outcome.
  CliResult followed = Cli({"executions", "logs", id, "--follow"});
  EXPECT_EQ(followed.exit_code, 0) << followed;
  EXPECT_EQ(followed.out, logs.out);
  EXPECT_TRUE(std::regex_search(followed.err, kSucceededLine)) << followed;
}

TEST_F(RunTest, UnknownExecutions) {
  for (const char* verb : {"get", "logs", "cancel"}) {
    CliResult r = Cli({"executions", verb, "ex_00000000000000000000"});
    EXPECT_EQ(r.exit_code, 1) << verb << ": " << r;
    EXPECT_THAT(r.err, HasSubstr("ex_00000000000000000000")) << verb;
  }
  CliResult follow = Cli({"executions", "logs", "ex_nope", "--follow"});
  EXPECT_EQ(follow.exit_code, 1) << follow;
  EXPECT_THAT(follow.err, HasSubstr("error: no execution ex_nope"));
}

// --- cancel ---------------------------------------------------------------------------------

TEST_F(RunTest, CancelStopsASleepingTool) {
  CliResult submitted = Cli({"run", "tool", "sleeper", "--async"});
  ASSERT_EQ(submitted.exit_code, 0) << submitted;
  std::string id = submitted.out.substr(0, submitted.out.size() - 1);
  ASSERT_TRUE(WaitForOutput(id, "going to sleep\n")) << Record(id).dump();
  CliResult running = Cli({"executions", "ls", "--status", "running"});
  EXPECT_TRUE(std::regex_search(running.out, std::regex(id + " +sleeper +running +- "))) << running;

  auto start = std::chrono::steady_clock::now();
  CliResult cancel = Cli({"executions", "cancel", id});
  EXPECT_EQ(cancel.exit_code, 0) << cancel;
  EXPECT_EQ(cancel.out, "cancelled " + id + "\n");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  Json r = Record(id);
  EXPECT_EQ(r["status"], "cancelled") << r.dump();

  CliResult again = Cli({"executions", "cancel", id});
  EXPECT_EQ(again.exit_code, 1) << again;
  EXPECT_THAT(again.err, HasSubstr("has already finished"));
  // A cancelled call that was being waited for exits 1.
  CliResult logs = Cli({"executions", "logs", id, "--follow"});
  EXPECT_EQ(logs.exit_code, 1) << logs;
  EXPECT_THAT(logs.out, HasSubstr("going to sleep\n"));
  EXPECT_THAT(logs.err, HasSubstr("cancelled"));
}

TEST_F(RunTest, ARunWaitingForACancelledToolExitsOne) {
  CliProcess run(Args({"run", "tool", "sleeper"}));
  std::string id;
  ASSERT_TRUE(WaitFor(
      [&] {
        Json list = ParseJson(Cli({"executions", "ls", "--status", "running", "-o", "json"}).out);
        if (!list.is_object() || list.value("count", 0) == 0) return false;
        id = list["executions"][0]["execution_id"];
        return true;
      },
      std::chrono::seconds(30)));
  ASSERT_TRUE(WaitForOutput(id, "going to sleep\n")) << Record(id).dump();
  EXPECT_EQ(Cli({"executions", "cancel", id}).exit_code, 0);
  EXPECT_EQ(run.Wait(), 1) << run.err();
  EXPECT_THAT(run.out(), HasSubstr("going to sleep"));
  EXPECT_THAT(run.err(), HasSubstr("cancelled"));
}

// --- follow ---------------------------------------------------------------------------------

TEST_F(RunTest, FollowPrintsLinesAsTheyComeThenTheResult) {
  CliProcess p(Args({"run", "tool", "chatty", "-p", "pause=3", "--follow"}));
  // "line 1" and "err 1" arrive while the tool is still sleeping.
  ASSERT_TRUE(WaitFor(
      [&] {
        return p.out().find("line 1\n") != std::string::npos &&
               p.err().find("err 1\n") != std::string::npos;
      },
      std::chrono::seconds(20)))
      << p.out() << p.err();
  EXPECT_THAT(p.out(), Not(HasSubstr("line 2")));
  EXPECT_TRUE(p.Running());

  ASSERT_EQ(p.Wait(), 0) << p.err();
  std::string out = p.out();
  EXPECT_EQ(out.find("line 1\nline 2\n{\"success\": true, \"lines\": 2}\n"), 0u) << out;
  // The result last, as text (the tool printed more than one JSON document).
  EXPECT_THAT(out, HasSubstr("}\nline 1\nline 2\n"));
  std::string err = p.err();
  EXPECT_TRUE(std::regex_search(err, std::regex(R"(^execution ex_[0-9a-f]{20}\n)"))) << err;
  EXPECT_THAT(err, HasSubstr("err 1\nerr 2\n"));
  EXPECT_TRUE(std::regex_search(err, kSucceededLine)) << err;
}

TEST_F(RunTest, FollowWithJsonOutputKeepsStdoutForTheRecord) {
  CliResult r = Cli({"run", "tool", "chatty", "--follow", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r;
  Json j = ParseJson(r.out);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_EQ(j["status"], "succeeded");
  // Both streams' lines, interleaved as the server read its two pipes.
  for (const char* line : {"line 1\n", "line 2\n", "err 1\n", "err 2\n"}) {
    EXPECT_THAT(r.err, HasSubstr(line));
  }
}

TEST_F(RunTest, ExecutionsLogsFollowsARunningExecution) {
  CliResult submitted = Cli({"run", "tool", "chatty", "-p", "pause=3", "--async"});
  ASSERT_EQ(submitted.exit_code, 0) << submitted;
  std::string id = submitted.out.substr(0, submitted.out.size() - 1);
  CliProcess logs(Args({"executions", "logs", id, "-f"}));
  ASSERT_TRUE(WaitFor([&] { return logs.out().find("line 1\n") != std::string::npos; },
                      std::chrono::seconds(20)))
      << logs.err();
  EXPECT_TRUE(logs.Running());
  ASSERT_EQ(logs.Wait(), 0) << logs.err();
  EXPECT_EQ(logs.out(), "line 1\nline 2\n{\"success\": true, \"lines\": 2}\n");
  EXPECT_THAT(logs.err(), HasSubstr("err 1\nerr 2\nsucceeded in "));
}

TEST_F(RunTest, ExecutionsLsWatchPrintsTheListAgainWhenItChanges) {
  // Not a terminal: each change is printed after the last; -o name for a plain list of ids.
  CliProcess watch(Args({"executions", "ls", "--watch", "--interval", "100ms", "-o", "name"}));
  CliProcess table(Args({"executions", "ls", "-w", "--interval", "100ms", "--no-headers"}));
  // The empty list first (nothing on stdout for names; "no executions found" in the table's).
  ASSERT_TRUE(WaitFor([&] { return table.out().find("no executions found") != std::string::npos; },
                      std::chrono::seconds(20)))
      << table.out() << table.err();
  EXPECT_TRUE(watch.Running()) << watch.err();
  CliResult first = Cli(
      {"run", "tool", "calculator", "-p", "operation=add", "-p", "a=1", "-p", "b=2", "--async"});
  ASSERT_EQ(first.exit_code, 0) << first;
  const std::string id = first.out.substr(0, first.out.size() - 1);
  ASSERT_TRUE(WaitFor([&] { return watch.out().find(id + "\n") != std::string::npos; },
                      std::chrono::seconds(20)))
      << watch.out() << watch.err();
  ASSERT_TRUE(
      WaitFor([&] { return table.out().find(id) != std::string::npos; }, std::chrono::seconds(20)))
      << table.out();
  EXPECT_TRUE(watch.Running());
  // Unchanged lists are not printed again: the id once, until the execution's row changes.
  ASSERT_TRUE(WaitForStatus(id, "succeeded"));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // five looks at 100 ms
  std::string names = watch.out();
  size_t count = 0;
  for (size_t at = names.find(id); at != std::string::npos; at = names.find(id, at + 1)) ++count;
  EXPECT_EQ(count, 1u) << names;
  EXPECT_THAT(table.out(), Not(HasSubstr("STATUS")));  // --no-headers
  watch.Signal(SIGINT);
  table.Signal(SIGINT);
  EXPECT_EQ(watch.Wait(), -1);  // ended by the signal
  // A watch whose server goes away ends with the error, not a loop.
  CliResult gone = RunCli({"--server", "http://127.0.0.1:1", "executions", "ls", "--watch"});
  EXPECT_NE(gone.exit_code, 0) << gone;
}

TEST_F(RunTest, FollowOfAFailingTool) {
  CliResult r = Cli({"run", "tool", "always_fails", "--follow"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("always_fails: failed on purpose\n"));  // the live stderr line
  EXPECT_THAT(r.err, HasSubstr("failed: failed on purpose (exit code 3)"));
  EXPECT_THAT(r.err, Not(HasSubstr("stderr:\n")));  // already shown live
}

}  // namespace
}  // namespace cortex::cli
