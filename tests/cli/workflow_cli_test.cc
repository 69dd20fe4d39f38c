// `cortex run workflow` and `cortex workflows`, end to end: the real `cortex` binary runs as a
// subprocess against a real `cortex serve` (tests/integration/daemon.h) whose manifests folder
// holds the examples (examples/manifests) plus a slow workflow written here; the steps run as
// real tool processes.
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <regex>

#include "cli/cli_process.h"
#include "cli/output.h"
#include "integration/daemon.h"

namespace cortex::cli {
namespace {

namespace fs = std::filesystem;
using testing::CliProcess;
using testing::CliResult;
using testing::Daemon;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunCli;
using testing::TempDir;
using testing::WaitFor;
using testing::WriteFile;

Json ParseJson(const std::string& text) { return Json::parse(text, nullptr, false); }

bool Contains(const std::string& text, const std::string& pattern) {
  return std::regex_search(text, std::regex(pattern));
}

// A step that sleeps until it is cancelled (or for 60 s), then one that echoes.
constexpr char kNapperTool[] = R"(kind: Tool
name: napper
description: Sleeps for a minute.
implementation:
  runtime: sh
  entrypoint: ./nap.sh
  resources: {timeout: 120s}
)";
constexpr char kNapperScript[] = "sleep 60\necho '{\"success\": true}'\n";
constexpr char kSlowWorkflow[] = R"(kind: Workflow
name: slow
description: A long step, then a short one.
steps:
  - name: nap
    type: tool
    target: napper
  - name: after
    type: tool
    target: shell_echo
    parameters: {message: done}
)";

void WriteManifests(const fs::path& m) {
  fs::copy(fs::path(CORTEX_SOURCE_DIR) / "examples/manifests", m,
           fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  WriteFile(m / "tools/napper/tool.yml", kNapperTool);
  WriteFile(m / "tools/napper/nap.sh", kNapperScript);
  WriteFile(m / "workflows/slow.workflow.yml", kSlowWorkflow);
}

const std::regex kRunId(R"(^wf_[0-9a-f]{20}\n$)");

class WorkflowCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Sandboxed where bubblewrap works; elsewhere the tools still run.
    fs::path config = config_dir_.path() / "cortex.yml";
    WriteFile(config, "exec:\n  allow_unsandboxed: true\n");
    daemon_ = std::make_unique<Daemon>(std::vector<std::string>{"--config", config.string()},
                                       WriteManifests);
    ASSERT_TRUE(daemon_->ok()) << daemon_->log();
  }

  std::vector<std::string> Args(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", daemon_->url()});
    return args;
  }
  CliResult Cli(std::vector<std::string> args, const std::string& stdin_text = "") {
    return RunCli(Args(std::move(args)), stdin_text);
  }

  // Starts a run without waiting; its id.
  std::string Start(std::vector<std::string> args) {
    args.insert(args.begin(), {"run", "workflow"});
    CliResult r = Cli(std::move(args));
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_TRUE(std::regex_match(r.out, kRunId)) << r;
    return r.out.empty() ? "" : r.out.substr(0, r.out.size() - 1);
  }

  // The run JSON straight from the API (to wait on; the CLI is what is tested).
  Json Run(const std::string& id) { return daemon_->GetJson("/workflows/" + id + "/status"); }
  bool WaitForRun(const std::string& id, const std::function<bool(const Json&)>& cond) {
    return WaitFor(
        [&] {
          Json r = Run(id);
          return r.is_object() && cond(r);
        },
        std::chrono::seconds(30));
  }
  bool WaitForStatus(const std::string& id, const std::string& status) {
    return WaitForRun(id, [&](const Json& r) { return r.value("status", "") == status; });
  }

  TempDir config_dir_;
  TempDir user_dir_;
  std::unique_ptr<Daemon> daemon_;
};

// --- run workflow --wait --------------------------------------------------------------------

TEST_F(WorkflowCliTest, WaitShowsTheStepsAndTheOutput) {
  CliResult r = Cli({"run", "workflow", "linear_pipeline", "-i", "text=one two three", "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(Contains(r.out, "^Run: +wf_[0-9a-f]{20}\nWorkflow: +linear_pipeline\n")) << r;
  EXPECT_THAT(r.out, HasSubstr("\nStatus:    succeeded\n"));
  EXPECT_THAT(r.out, HasSubstr("\nInput:\n  text: one two three\n"));
  EXPECT_THAT(r.out, HasSubstr("\nSteps:     2/2 finished\n"));
  EXPECT_TRUE(Contains(r.out,
                       "\n  STEP +STATUS +ATTEMPT +DURATION +ERROR\n"
                       "  stats +succeeded +1 +\\d+ ms\n"
                       "  double_words +succeeded +1 +\\d+ ms\n"))
      << r;
  EXPECT_THAT(r.out, HasSubstr("\nOutput:\n  words: 3\n  doubled: 6\n"));
  EXPECT_EQ(r.err, "");

  CliResult json =
      Cli({"run", "workflow", "linear_pipeline", "-i", "text=a b", "--wait", "-o", "json"});
  ASSERT_EQ(json.exit_code, 0) << json;
  Json run = ParseJson(json.out);
  ASSERT_TRUE(run.is_object()) << json;
  EXPECT_EQ(run["status"], "succeeded");
  EXPECT_EQ(run["output"]["doubled"], 4);
  ASSERT_EQ(run["steps"].size(), 2u);
  EXPECT_EQ(run["steps"][0]["name"], "stats");

  // `text` is declared a string: "5" is sent as the text it is, not the number 5.
  CliResult typed =
      Cli({"run", "workflow", "linear_pipeline", "-i", "text=5", "--wait", "-o", "json"});
  ASSERT_EQ(typed.exit_code, 0) << typed;
  EXPECT_EQ(ParseJson(typed.out)["input"]["text"], "5") << typed;

  CliResult yaml =
      Cli({"run", "workflow", "linear_pipeline", "-i", "text=a", "--wait", "-o", "yaml"});
  EXPECT_EQ(yaml.exit_code, 0) << yaml;
  EXPECT_THAT(yaml.out, HasSubstr("\nstatus: succeeded\n"));
}

TEST_F(WorkflowCliTest, InputsParseLikeToolParametersAndComeFromAFile) {
  // succeed_on=1 is JSON (the integer the workflow's input declares), so the step succeeds at
  // once; a string would have been refused.
  CliResult r = Cli({"run", "workflow", "retries", "-i", "succeed_on=1", "--wait", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r;
  Json run = ParseJson(r.out);
  EXPECT_EQ(run["input"]["succeed_on"], 1);
  EXPECT_TRUE(run["input"]["succeed_on"].is_number_integer());
  EXPECT_EQ(run["output"]["attempts"], 1);

  fs::path file = user_dir_.path() / "input.json";
  WriteFile(file, R"({"text": "a b"})");
  CliResult from_file = Cli({"run", "workflow", "linear_pipeline", "--input-json", file.string(),
                             "--wait", "-o", "json"});
  ASSERT_EQ(from_file.exit_code, 0) << from_file;
  EXPECT_EQ(ParseJson(from_file.out)["output"]["doubled"], 4);
  CliResult over = Cli({"run", "workflow", "linear_pipeline", "--input-json", file.string(), "-i",
                        "text=a b c d", "--wait", "-o", "json"});
  EXPECT_EQ(ParseJson(over.out)["output"]["doubled"], 8) << over;
  CliResult from_stdin =
      Cli({"run", "workflow", "linear_pipeline", "--input-json", "-", "--wait", "-o", "json"},
          R"({"text": "x y z"})");
  EXPECT_EQ(ParseJson(from_stdin.out)["output"]["doubled"], 6) << from_stdin;
}

TEST_F(WorkflowCliTest, AFailedRunExitsOne) {
  CliResult r = Cli({"run", "workflow", "retries", "-i", "succeed_on=9", "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.out, HasSubstr("\nStatus:    failed\n"));
  EXPECT_THAT(r.out,
              HasSubstr("\nError:     step 'unreliable' failed: attempt 3 fails on purpose"));
  EXPECT_TRUE(Contains(r.out, "\n  unreliable +failed +3 +\\d+ ms +attempt 3 fails on purpose"))
      << r;
  // Never started: no duration.
  EXPECT_TRUE(Contains(r.out, "\n  after +cancelled +- +- +not run: step 'unreliable' failed"))
      << r;
  EXPECT_THAT(r.out, Not(HasSubstr("Output:")));
}

// --- run workflow --follow ------------------------------------------------------------------

TEST_F(WorkflowCliTest, FollowShowsEachTransitionOfTheRetryingStep) {
  CliResult r = Cli({"run", "workflow", "retries", "--follow"});
  ASSERT_EQ(r.exit_code, 0) << r;
  std::string retrying1 =
      "\n +[0-9.]+s  unreliable  retrying   #1 +\\d+ ms  attempt 1 fails on "
      "purpose[^\n]*; attempt 2 in 200 ms\n";
  std::string retrying2 =
      "\n +[0-9.]+s  unreliable  retrying   #2 +\\d+ ms  attempt 2 fails on "
      "purpose[^\n]*; attempt 3 in 400 ms\n";
  EXPECT_TRUE(Contains(r.out, "^ +0.00s  run wf_[0-9a-f]{20} started: retries, 2 steps\n")) << r;
  EXPECT_TRUE(Contains(r.out, "\n +[0-9.]+s  unreliable  running    #1\n")) << r;
  EXPECT_TRUE(Contains(r.out, retrying1)) << r;
  EXPECT_TRUE(Contains(r.out, "\n +[0-9.]+s  unreliable  running    #2\n")) << r;
  EXPECT_TRUE(Contains(r.out, retrying2)) << r;
  EXPECT_TRUE(Contains(r.out, "\n +[0-9.]+s  unreliable  succeeded  #3 +\\d+ ms\n")) << r;
  EXPECT_TRUE(Contains(r.out, "\n +[0-9.]+s  after       succeeded  #1 +\\d+ ms\n")) << r;
  EXPECT_TRUE(Contains(r.out,
                       "\n +[0-9.]+s  run succeeded in \\d+ ms\n"
                       "Output:\n  attempts: 3\n  message: succeeded on attempt 3\n$"))
      << r;
  EXPECT_LT(r.out.find("retrying   #1"), r.out.find("retrying   #2"));
  EXPECT_LT(r.out.find("retrying   #2"), r.out.find("succeeded  #3"));
  // Not a terminal: plain lines, no progress bar.
  EXPECT_THAT(r.out, Not(HasSubstr("\r")));
  EXPECT_THAT(r.out, Not(HasSubstr("/2 steps")));

  CliResult failed = Cli({"run", "workflow", "retries", "-i", "succeed_on=9", "--follow"});
  EXPECT_EQ(failed.exit_code, 1) << failed;
  EXPECT_TRUE(Contains(failed.out,
                       "\n +[0-9.]+s  unreliable  failed     #3 +\\d+ ms  attempt 3 "
                       "fails on purpose"))
      << failed;
  EXPECT_THAT(failed.out, HasSubstr("  run failed: step 'unreliable' failed: attempt 3"));
  EXPECT_THAT(failed.out, Not(HasSubstr("Output:")));
}

TEST_F(WorkflowCliTest, FollowWithJsonKeepsStdoutForTheRun) {
  CliResult r = Cli({"run", "workflow", "retries", "-i", "succeed_on=2", "--follow", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r;
  Json run = ParseJson(r.out);
  ASSERT_TRUE(run.is_object()) << r;
  EXPECT_EQ(run["status"], "succeeded");
  EXPECT_EQ(run["output"]["attempts"], 2);
  EXPECT_THAT(r.err, HasSubstr("unreliable  retrying   #1"));
  EXPECT_THAT(r.err, HasSubstr("unreliable  succeeded  #2"));
}

// Runs `cortex` with its standard output on a pseudo-terminal: what the terminal received, and
// the exit code (-1 when it did not end within a minute).
std::pair<int, std::string> RunOnTerminal(std::vector<std::string> args) {
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0) return {-1, ""};
  if (grantpt(master) != 0 || unlockpt(master) != 0) {
    ::close(master);
    return {-1, ""};
  }
  std::string slave = ptsname(master);
  // Held open here too, so the terminal does not hang up before the child has opened it.
  int slave_fd = ::open(slave.c_str(), O_RDWR | O_NOCTTY);
  args.insert(args.begin(), testing::CortexBinary());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, slave.c_str(), O_RDWR | O_NOCTTY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclose(&fa, master);
  if (slave_fd >= 0) posix_spawn_file_actions_addclose(&fa, slave_fd);
  pid_t pid = -1;
  int spawned = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  std::string screen;
  int status = 0;
  bool exited = spawned != 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  for (;;) {
    pollfd p{master, POLLIN, 0};
    if (::poll(&p, 1, 100) > 0 && (p.revents & POLLIN)) {
      char buf[4096];
      ssize_t n = ::read(master, buf, sizeof buf);
      if (n > 0) {
        screen.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    if (exited) break;  // and nothing was left to read
    exited = ::waitpid(pid, &status, WNOHANG) == pid;
    if (!exited && std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      status = -1;
      break;
    }
  }
  if (slave_fd >= 0) ::close(slave_fd);
  ::close(master);
  return {spawned == 0 && exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1, screen};
}

TEST_F(WorkflowCliTest, FollowOnATerminalRedrawsAProgressBar) {
  auto [exit_code, screen] =
      RunOnTerminal(Args({"run", "workflow", "retries", "-i", "succeed_on=2", "--follow"}));
  ASSERT_EQ(exit_code, 0) << screen;
  // The bar under the lines, taken away (carriage return, spaces, carriage return) before each
  // new line and redrawn after it.
  std::string empty = "[>" + std::string(29, ' ') + "] 0/2 steps";
  std::string half = "[" + std::string(15, '=') + ">" + std::string(14, ' ') + "] 1/2 steps";
  std::string full = "[" + std::string(30, '=') + "] 2/2 steps";
  EXPECT_THAT(screen, HasSubstr(empty + "\r" + std::string(empty.size(), ' ') + "\r"));
  EXPECT_THAT(screen, HasSubstr(half + "\r"));
  EXPECT_THAT(screen, HasSubstr(full + "\r" + std::string(full.size(), ' ') + "\rOutput:"));
  EXPECT_THAT(screen, HasSubstr("unreliable  retrying   #1"));
  EXPECT_LT(screen.find(empty), screen.find(half));
  EXPECT_LT(screen.find(half), screen.find(full));
}

// --- bad input, usage -----------------------------------------------------------------------

TEST_F(WorkflowCliTest, AMissingRequiredInputIsRefusedAndNothingRuns) {
  CliResult r = Cli({"run", "workflow", "linear_pipeline", "--wait"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err,
            "error: invalid input for Workflow/linear_pipeline\n  text: missing required "
            "parameter\n");
  CliResult wrong_type = Cli({"run", "workflow", "retries", "-i", "succeed_on=soon"});
  EXPECT_EQ(wrong_type.exit_code, 1) << wrong_type;
  EXPECT_THAT(wrong_type.err,
              HasSubstr("error: invalid input for Workflow/retries\n  succeed_on: "));

  CliResult unknown = Cli({"run", "workflow", "retrys"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown;
  EXPECT_THAT(unknown.err,
              HasSubstr("error: no Workflow named 'retrys' (did you mean 'retries'?)"));

  CliResult none = Cli({"workflows", "ls"});
  EXPECT_EQ(none.exit_code, 0) << none;
  EXPECT_EQ(none.out, "");
  EXPECT_THAT(none.err, HasSubstr("no workflow runs found"));
}

TEST_F(WorkflowCliTest, UsageErrorsExitTwo) {
  CliResult no_eq = Cli({"run", "workflow", "linear_pipeline", "-i", "text"});
  EXPECT_EQ(no_eq.exit_code, 2) << no_eq;
  EXPECT_THAT(no_eq.err, HasSubstr("error: -i text: expected key=value"));
  fs::path list = user_dir_.path() / "list.json";
  WriteFile(list, "[1]");
  CliResult not_object = Cli({"run", "workflow", "linear_pipeline", "--input-json", list.string()});
  EXPECT_EQ(not_object.exit_code, 2) << not_object;
  EXPECT_THAT(not_object.err, HasSubstr("error: --input-json " + list.string() +
                                        ": expected a JSON object of input, got array"));
  EXPECT_EQ(Cli({"run", "workflow", "retries", "--wait", "--follow"}).exit_code, 2);
  EXPECT_EQ(Cli({"run", "workflow", "retries", "--timeout", "5s"}).exit_code, 2);
  EXPECT_EQ(Cli({"run", "workflow", "retries", "--wait", "--timeout", "5 minutes"}).exit_code, 2);
  EXPECT_EQ(Cli({"run", "workflow", "retries", "--wait", "--timeout", "2h"}).exit_code, 2);
  EXPECT_EQ(Cli({"run", "workflow"}).exit_code, 2);
  EXPECT_EQ(Cli({"workflows", "ls", "--status", "bogus"}).exit_code, 2);
  EXPECT_EQ(Cli({"workflows", "status"}).exit_code, 2);
  EXPECT_EQ(Cli({"workflows", "logs", "wf_x", "-f", "-o", "json"}).exit_code, 2);

  CliProcess unreachable({"--server", "http://127.0.0.1:1", "run", "workflow", "retries"});
  EXPECT_EQ(unreachable.Wait(), 3) << unreachable.err();
  EXPECT_THAT(unreachable.err(), HasSubstr("error: cannot reach the Cortex server"));
  CliProcess unreachable_ls({"--server", "http://127.0.0.1:1", "workflows", "ls"});
  EXPECT_EQ(unreachable_ls.Wait(), 3) << unreachable_ls.err();
}

// --- workflows ls, status, logs -------------------------------------------------------------

TEST_F(WorkflowCliTest, AsyncRunThenLsStatusAndLogs) {
  std::string id = Start({"linear_pipeline", "-i", "text=to be or not"});
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(WaitForStatus(id, "succeeded")) << Run(id).dump();
  ASSERT_EQ(Cli({"run", "workflow", "retries", "-i", "succeed_on=9", "--wait"}).exit_code, 1);

  CliResult ls = Cli({"workflows", "ls"});
  ASSERT_EQ(ls.exit_code, 0) << ls;
  // Newest first.
  EXPECT_TRUE(
      Contains(ls.out,
               "^ID +WORKFLOW +STATUS +DURATION +STARTED +ERROR\n"
               "wf_[0-9a-f]{20} +retries +failed +\\d+ ms +20\\d\\d-\\d\\d-\\d\\dT[0-9:]+Z +"
               "step 'unreliable' failed: attempt 3 fails on purpose"))
      << ls;
  EXPECT_TRUE(Contains(ls.out, "\n" + id + " +linear_pipeline +succeeded +\\d+ ms +20")) << ls;
  CliResult by_name = Cli({"workflows", "ls", "--name", "linear_pipeline"});
  EXPECT_THAT(by_name.out, HasSubstr(id));
  EXPECT_THAT(by_name.out, Not(HasSubstr("retries")));
  Json failed = ParseJson(Cli({"workflows", "ls", "--status", "failed", "-o", "json"}).out);
  ASSERT_EQ(failed["count"], 1) << failed.dump();
  EXPECT_EQ(failed["runs"][0]["workflow"], "retries");
  EXPECT_EQ(ParseJson(Cli({"workflows", "ls", "--limit", "1", "-o", "json"}).out)["count"], 1);
  EXPECT_THAT(Cli({"workflows"}).out, HasSubstr(id));  // ls is the default

  CliResult status = Cli({"workflows", "status", id});
  ASSERT_EQ(status.exit_code, 0) << status;
  EXPECT_THAT(status.out, HasSubstr("Run:       " + id + "\n"));
  EXPECT_THAT(status.out, HasSubstr("Status:    succeeded\n"));
  EXPECT_TRUE(Contains(status.out, "\nDuration:  \\d+ ms\n")) << status;
  EXPECT_THAT(status.out, HasSubstr("Steps:     2/2 finished\n"));
  EXPECT_TRUE(Contains(status.out, "\n  stats +succeeded +1 +\\d+ ms\n")) << status;
  EXPECT_THAT(status.out, HasSubstr("Output:\n  words: 4\n  doubled: 8\n"));
  EXPECT_EQ(ParseJson(Cli({"workflows", "status", id, "-o", "json"}).out)["run_id"], id);
  EXPECT_THAT(Cli({"workflows", "status", id, "-o", "yaml"}).out, HasSubstr("run_id: " + id));

  CliResult logs = Cli({"workflows", "logs", id});
  ASSERT_EQ(logs.exit_code, 0) << logs;
  // In order; lines of other events in between (engine internals) would not break this.
  std::string lines = "(?:[^\\n]*\\n)*";
  EXPECT_TRUE(Contains(logs.out, "^ +0.00s  run " + id + " started: linear_pipeline, 2 steps\n" +
                                     lines + " +[0-9.]+s  stats         running    #1\n" + lines +
                                     " +[0-9.]+s  stats         succeeded  #1 +\\d+ ms\n" + lines +
                                     " +[0-9.]+s  double_words  running    #1\n" + lines +
                                     " +[0-9.]+s  double_words  succeeded  #1 +\\d+ ms\n" + lines +
                                     " +[0-9.]+s  run succeeded in \\d+ ms\n$"))
      << logs;
  Json logs_json = ParseJson(Cli({"workflows", "logs", id, "-o", "json"}).out);
  ASSERT_TRUE(logs_json.is_object()) << logs_json;
  EXPECT_EQ(logs_json["run_id"], id);
  ASSERT_GE(logs_json["events"].size(), 6u) << logs_json.dump();
  EXPECT_EQ(logs_json["events"].front()["type"], "run_started");
  EXPECT_EQ(logs_json["events"].back()["type"], "run_succeeded");

  // A finished run followed: its events, then its outcome as the exit code.
  CliResult followed = Cli({"workflows", "logs", id, "--follow"});
  EXPECT_EQ(followed.exit_code, 0) << followed;
  EXPECT_EQ(followed.out, logs.out);
  CliResult followed_failed =
      Cli({"workflows", "logs", failed["runs"][0]["run_id"].get<std::string>(), "-f"});
  EXPECT_EQ(followed_failed.exit_code, 1) << followed_failed;
  EXPECT_THAT(followed_failed.out, HasSubstr("run failed: step 'unreliable' failed"));
}

// --- pause, resume, cancel, retry -----------------------------------------------------------

TEST_F(WorkflowCliTest, FinishedAndUnknownRunsCannotBeControlled) {
  CliResult done =
      Cli({"run", "workflow", "linear_pipeline", "-i", "text=a", "--wait", "-o", "json"});
  ASSERT_EQ(done.exit_code, 0) << done;
  std::string id = ParseJson(done.out)["run_id"].get<std::string>();

  CliResult cancel = Cli({"workflows", "cancel", id});
  EXPECT_EQ(cancel.exit_code, 1) << cancel;
  EXPECT_EQ(cancel.out, "");
  EXPECT_EQ(cancel.err, "error: run " + id + " has finished (succeeded)\n");
  CliResult pause = Cli({"workflows", "pause", id});
  EXPECT_EQ(pause.exit_code, 1) << pause;
  EXPECT_THAT(pause.err, HasSubstr("has finished (succeeded)"));
  EXPECT_EQ(Cli({"workflows", "resume", id}).exit_code, 1);
  CliResult retry = Cli({"workflows", "retry", id});
  EXPECT_EQ(retry.exit_code, 1) << retry;
  EXPECT_THAT(retry.err, HasSubstr("there is nothing to retry"));
  CliResult bad_step = Cli({"workflows", "retry", id, "--from", "stat"});
  EXPECT_EQ(bad_step.exit_code, 1) << bad_step;
  EXPECT_THAT(bad_step.err, HasSubstr("no step named 'stat' (did you mean 'stats'?)"));

  // Again from a step, on a succeeded run: that step and the ones after it run again.
  CliResult again = Cli({"workflows", "retry", id, "--from", "double_words"});
  EXPECT_EQ(again.exit_code, 0) << again;
  EXPECT_EQ(again.out, "retrying " + id + " from step double_words\n");
  CliResult followed = Cli({"workflows", "logs", id, "-f"});
  EXPECT_EQ(followed.exit_code, 0) << followed;
  EXPECT_THAT(followed.out, HasSubstr("  run retried from step double_words: 1 step(s) to run"));
  EXPECT_TRUE(Contains(followed.out, "  double_words  succeeded  #2 +\\d+ ms\n")) << followed;

  for (const char* verb : {"status", "logs", "cancel", "pause", "resume", "retry"}) {
    CliResult r = Cli({"workflows", verb, "wf_nope"});
    EXPECT_EQ(r.exit_code, 1) << verb << ": " << r;
    EXPECT_EQ(r.err, "error: no workflow run wf_nope\n") << verb;
  }
  CliResult follow = Cli({"workflows", "logs", "wf_nope", "--follow"});
  EXPECT_EQ(follow.exit_code, 1) << follow;
  EXPECT_EQ(follow.err, "error: no workflow run wf_nope\n");
}

TEST_F(WorkflowCliTest, PauseResumeCancelAndRetryARunningRun) {
  std::string id = Start({"slow"});
  ASSERT_FALSE(id.empty());
  auto nap_running = [](const Json& r) {
    return r["steps"].is_array() && !r["steps"].empty() && r["steps"][0]["name"] == "nap" &&
           r["steps"][0]["status"] == "running";
  };
  ASSERT_TRUE(WaitForRun(id, nap_running)) << Run(id).dump();

  CliResult pause = Cli({"workflows", "pause", id});
  EXPECT_EQ(pause.exit_code, 0) << pause;
  EXPECT_THAT(pause.out, HasSubstr("paused " + id));
  EXPECT_EQ(Run(id)["status"], "paused");
  EXPECT_THAT(Cli({"workflows", "status", id}).out, HasSubstr("Status:    paused\n"));
  CliResult resume = Cli({"workflows", "resume", id});
  EXPECT_EQ(resume.exit_code, 0) << resume;
  EXPECT_EQ(resume.out, "resumed " + id + "\n");
  EXPECT_EQ(Run(id)["status"], "running");

  CliResult cancel = Cli({"workflows", "cancel", id});
  EXPECT_EQ(cancel.exit_code, 0) << cancel;
  EXPECT_EQ(cancel.out, "cancelled " + id + "\n");
  EXPECT_EQ(Run(id)["status"], "cancelled");
  CliResult logs = Cli({"workflows", "logs", id});
  EXPECT_TRUE(Contains(logs.out,
                       "  run paused\n[\\s\\S]*  run resumed\n[\\s\\S]*  run cancelling: cancelled "
                       "by request\n[\\s\\S]*  nap    cancelled  #1 +\\d+ (ms|s)  cancelled"))
      << logs;
  EXPECT_THAT(logs.out, HasSubstr("  run cancelled: cancelled by request\n"));

  // Retry: the steps that did not succeed run again (nap as attempt 2).
  CliResult retry = Cli({"workflows", "retry", id});
  EXPECT_EQ(retry.exit_code, 0) << retry;
  EXPECT_EQ(retry.out, "retrying " + id + " (the steps that did not succeed)\n");
  ASSERT_TRUE(WaitForRun(id, [&](const Json& r) {
    return nap_running(r) && r["steps"][0]["attempt"] == 2;
  })) << Run(id).dump();
  EXPECT_EQ(Cli({"workflows", "cancel", id}).exit_code, 0);

  // --wait --timeout gives up on a run still going: shown as it is, exit 1, and it goes on.
  CliResult waited = Cli({"run", "workflow", "slow", "--wait", "--timeout", "1s"});
  EXPECT_EQ(waited.exit_code, 1) << waited;
  EXPECT_THAT(waited.out, HasSubstr("Status:    running\n"));
  EXPECT_TRUE(Contains(waited.err, "^run wf_[0-9a-f]{20} is still running after 1s")) << waited;
  Json running = ParseJson(Cli({"workflows", "ls", "--status", "running", "-o", "json"}).out);
  ASSERT_EQ(running["count"], 1) << running.dump();
  EXPECT_EQ(Cli({"workflows", "cancel", running["runs"][0]["run_id"].get<std::string>()}).exit_code,
            0);
}

}  // namespace
}  // namespace cortex::cli
