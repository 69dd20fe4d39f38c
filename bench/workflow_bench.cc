// workflow_bench: what the workflow engine adds per step, each figure against a baseline measured
// in the same run.
//
//   workflow_bench [--steps N] [--seq N] [--reps N] [--runner-calls N] [--store-seconds S]
//                  [--no-sandbox] [--max-seconds S] [--keep]
//
// 1. Engine overhead per step against ninja on the same graph. --steps (default 1000) steps of a
//    no-op binary tool (a copy of /bin/true, `runtime: binary`) as a chain (each step
//    `depends_on` the one before) and as a fan-out (every step in one `parallel_group`, so all
//    are ready at once), run by the real `cortex serve` of this build tree with exec.workers 2
//    through POST /execute/workflow?wait=true, against `ninja -j2` on a generated build.ninja of
//    the same graph whose edges run /bin/true (their outputs are never created, so ninja runs
//    every edge every time). Durable state is on (the server's SQLite Store, as always). Two
//    servers: unsandboxed (exec.sandbox false + allow_unsandboxed: the like-for-like one) and
//    sandboxed (bubblewrap, the default), the latter also against ninja running the very bwrap
//    command line the executor runs. Then where a chain step's time goes (from the step and
//    execution records), and the engine alone in this process (same Store code, a dispatcher
//    that completes every tool call at once).
// 2. --seq (default 40) sequential steps of a ~10 ms tool (`sleep 0.01` from an sh script):
//    overhead per step above the tool's own time, (run wall - sum of the executions' own
//    durations) / N, and above the same N commands spawned directly one after the other.
// 3. State transitions per second the Store sustains: RunTransitions (the run row, one step row,
//    one event) written by OpenSqliteStore from 1 and 4 threads, synchronous NORMAL (default)
//    and FULL (fsync_every_commit), against the same three statements on a raw sqlite3
//    connection (prepared once, one transaction each, one thread).
//
// All traffic is on 127.0.0.1; every loop is bounded in count and in time (--max-seconds).
// Prints figures; never asserts timing.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "common/log.h"
#include "exec/executor.h"
#include "exec/params.h"
#include "exec/process.h"
#include "exec/sandbox.h"
#include "exec/tool_process.h"
#include "http/http.h"
#include "registry/registry.h"
#include "store/store.h"
#include "workflow/engine.h"

extern char** environ;

namespace {
using cortex::bench::Median;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;
using cortex::bench::LoadAvg;
using cortex::bench::ReadAll;

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double Ratio(double a, double b) { return b > 0 ? a / b : 0; }

bool WriteText(const fs::path& path, const std::string& text, fs::perms perms) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) return false;
  }
  std::error_code ec;
  fs::permissions(path, perms, ec);
  return !ec;
}

// On-CPU time of a process's own threads (/proc/PID/task/*/schedstat; not its children).
double ThreadsCpuMs(pid_t pid) {
  std::error_code ec;
  unsigned long long ns = 0;
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(t.path() / "schedstat");
    unsigned long long run = 0;
    if (in >> run) ns += run;
  }
  return static_cast<double>(ns) / 1e6;
}

// Busy time of all CPUs (/proc/stat: every process on the machine).
double MachineBusyMs() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long v[8] = {};
  in >> cpu;
  for (auto& x : v) in >> x;
  unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  return static_cast<double>(busy) * 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// ---------------------------------------------------------------------------------------------
// The manifests: two tools and the workflows over them.

constexpr const char* kTrueTool = "wf_true";
constexpr const char* kSleepTool = "wf_sleep";

bool WriteTool(const fs::path& manifests, const std::string& name, const std::string& runtime,
               const std::string& file, const std::string& summary) {
  std::string yml = "kind: Tool\nversion: \"1.0\"\nname: " + name + "\nsummary: " + summary +
                    "\nauthor: bench\nstate: stable\ndescription: A tool of the workflow "
                    "benchmark.\nimplementation:\n  runtime: " +
                    runtime + "\n  entrypoint: ./" + file + "\ntags: [bench]\n";
  return WriteText(manifests / "tools" / name / "tool.yml", yml, fs::perms(0644));
}

std::string WorkflowYaml(const std::string& name, const std::string& summary, int steps,
                         const std::string& tool, const std::string& shape) {
  std::string y = "kind: Workflow\nversion: \"1.0\"\nname: " + name + "\nsummary: " + summary +
                  "\nauthor: bench\nstate: stable\ndescription: Generated by workflow_bench.\n"
                  "trigger:\n  type: manual\nsteps:\n";
  for (int i = 0; i < steps; ++i) {
    y += "  - name: s" + std::to_string(i) + "\n    type: tool\n    target: " + tool + "\n";
    if (shape == "chain" && i > 0) y += "    depends_on: [s" + std::to_string(i - 1) + "]\n";
    // An explicit `depends_on: []` reads as "none given" (plan.h: the step would follow the one
    // before it), so the fan-out puts every step in one parallel group: all wait for nothing.
    if (shape == "fanout") y += "    parallel_group: all\n";
  }
  return y;
}

bool WriteManifests(const fs::path& manifests, int steps, int seq) {
  std::error_code ec;
  for (const char* t : {kTrueTool, kSleepTool}) fs::create_directories(manifests / "tools" / t, ec);
  fs::create_directories(manifests / "workflows", ec);
  if (ec) return false;
  // A copy of /bin/true: a binary tool needs an executable entrypoint in its own folder.
  fs::copy_file("/bin/true", manifests / "tools" / kTrueTool / "true",
                fs::copy_options::overwrite_existing, ec);
  if (ec) return false;
  fs::permissions(manifests / "tools" / kTrueTool / "true", fs::perms(0755), ec);
  bool ok = !ec && WriteTool(manifests, kTrueTool, "binary", "true", "Does nothing (/bin/true)");
  ok = ok && WriteTool(manifests, kSleepTool, "sh", "sleep10.sh", "Sleeps 10 ms") &&
       WriteText(manifests / "tools" / kSleepTool / "sleep10.sh", "#!/bin/sh\nexec sleep 0.01\n",
                 fs::perms(0755));
  auto wf = [&](const std::string& name, const std::string& summary, int n, const std::string& tool,
                const std::string& shape) {
    return WriteText(manifests / "workflows" / (name + ".workflow.yml"),
                     WorkflowYaml(name, summary, n, tool, shape), fs::perms(0644));
  };
  ok = ok && wf("wf_chain", "A chain of no-op steps", steps, kTrueTool, "chain");
  ok = ok && wf("wf_fanout", "Independent no-op steps", steps, kTrueTool, "fanout");
  ok = ok && wf("wf_seq", "Sequential 10 ms steps", seq, kSleepTool, "seq");
  ok = ok && wf("wf_warm", "Warm-up", 20, kTrueTool, "chain");
  return ok;
}

// ---------------------------------------------------------------------------------------------
// A tool's command, built by the executor's own code (as execute_bench does).

cortex::exec::ToolDefaults ServerDefaults() {  // exec.default_* of cortex serve
  cortex::exec::ToolDefaults d;
  d.timeout = std::chrono::milliseconds(30000);
  d.memory_bytes = 512ull << 20;
  d.max_processes = 64;
  return d;
}

cortex::exec::ProgramResolver ServerResolver() {
  const char* path_env = std::getenv("PATH");
  std::string search_path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  return [search_path](const std::string& name) {
    return cortex::exec::ResolveProgram(name, search_path, "");
  };
}

// CheckParameters + BuildToolProcess, then WrapInSandbox when `sandbox` is given.
cortex::Result<cortex::exec::ProcessSpec> ToolCommand(const cortex::registry::Entry& entry,
                                                      const cortex::exec::SandboxInfo* sandbox,
                                                      const fs::path& data_dir) {
  const auto* tool = entry.manifest().As<cortex::registry::ToolSpec>();
  if (!tool) return cortex::InvalidArgumentError("not a Tool");
  auto check = cortex::exec::CheckParameters(tool->parameters, Json::object());
  if (!check.ok()) return cortex::InvalidArgumentError("parameters rejected");
  cortex::exec::ToolCall call;
  call.tool = entry.file->manifest.get();
  call.tool_dir = entry.file->path.substr(0, entry.file->path.find_last_of('/'));
  call.parameters = check.values;
  call.execution_id = cortex::exec::NewExecutionId();
  call.idempotency_key = call.execution_id;
  CORTEX_ASSIGN_OR_RETURN(cortex::exec::ProcessSpec spec,
                          cortex::exec::BuildToolProcess(call, ServerDefaults(), ServerResolver()));
  if (!sandbox) return spec;
  cortex::exec::SandboxPolicy policy;
  policy.tool_dir = call.tool_dir;
  policy.network = tool->implementation.network.value_or(false);
  policy.hidden_paths = {fs::absolute(data_dir).lexically_normal().string()};
  return cortex::exec::WrapInSandbox(spec, policy, *sandbox);
}

// The direct baseline: posix_spawn with the spec's argv, env and cwd, in a process group of its
// own, the parameters on stdin, stdout and stderr drained, then waitpid. Empty on success.
std::string DirectRun(const cortex::exec::ProcessSpec& spec) {
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return "pipe2";
  if (::pipe2(out, O_CLOEXEC) != 0) {
    ::close(in[0]);
    ::close(in[1]);
    return "pipe2";
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, out[1], 2);
  if (!spec.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, spec.cwd.c_str());
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    return std::string("posix_spawn: ") + std::strerror(rc);
  }
  if (!spec.stdin_data.empty()) {  // a few bytes: fits in the pipe
    [[maybe_unused]] ssize_t n = ::write(in[1], spec.stdin_data.data(), spec.stdin_data.size());
  }
  ::close(in[1]);
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  ::close(out[0]);
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return "waitpid";
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return "exit status " + std::to_string(status);
  }
  return "";
}

// The executor's runner makes this process a child subreaper (PR_SET_CHILD_SUBREAPER), so the
// orphans of the baselines' commands (bwrap leaves one per call) become its children. Reaped
// here after each baseline run: left as zombies they would pile up by the thousand, and every
// wait in this process (the runner's included) would scan them all. `keep` (the server) is
// never reaped here.
void ReapOrphans(pid_t keep) {
  for (int i = 0; i < 100000; ++i) {
    siginfo_t info{};
    if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) return;
    if (info.si_pid == keep) return;  // the server exited: ServeProcess::Stop reaps it
    ::waitpid(info.si_pid, nullptr, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// ninja on the same graph.

// 'text' for sh, with $ doubled for ninja.
std::string NinjaShellWord(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else if (c == '$') {
      out += "$$";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Edge i runs `command`; in the chain it waits for edge i-1 (an implicit input). No output is
// ever created, so every edge is dirty at every run: ninja runs them all, every time.
std::string NinjaFile(int steps, bool chain, const std::string& command) {
  std::string n = "rule r\n  command = " + command + "\n  description = s\n\n";
  for (int i = 0; i < steps; ++i) {
    n += "build s" + std::to_string(i) + ": r";
    if (chain && i > 0) n += " | s" + std::to_string(i - 1);
    n += "\n";
  }
  return n;
}

// `ninja -C dir -f file -j2` with `env`; its output to dir/ninja.log. Wall ms, or -1.
double RunNinja(const fs::path& dir, const std::string& file, const std::vector<std::string>& env,
                std::string* why) {
  std::error_code ec;
  fs::remove(dir / ".ninja_log", ec);  // every run starts like the first
  fs::remove(dir / ".ninja_deps", ec);
  std::vector<std::string> args = {"ninja", "-C", dir.string(), "-f", file, "-j2"};
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_copy = env;
  for (auto& e : env_copy) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string log = (dir / "ninja.log").string();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid = -1;
  auto t0 = Clock::now();
  int rc = posix_spawnp(&pid, "ninja", &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    *why = std::string("cannot start ninja: ") + std::strerror(rc);
    return -1;
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  double ms = MsBetween(t0, Clock::now());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    *why = "ninja failed (status " + std::to_string(status) + "): " + ReadAll(log).substr(0, 500);
    return -1;
  }
  return ms;
}

std::vector<std::string> Environ() {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  return env;
}

// ---------------------------------------------------------------------------------------------
// The server and its records.

struct Server : cortex::bench::ServeProcess {
  Server() : ServeProcess(std::string(CORTEX_BINARY_DIR) + "/cortex") {}
};

std::string ServerConfig(bool sandbox) {
  return std::string("exec:\n  workers: 2\n") + "  sandbox: " + (sandbox ? "true" : "false") +
         "\n  allow_unsandboxed: " + (sandbox ? "false" : "true") + "\n";
}

struct StepTimes {
  std::string name, execution_id;
  int64_t started_ms = 0, finished_ms = 0;
};

// One run through POST /execute/workflow?wait=true.
struct RunResult {
  std::string error;   // "" when the run succeeded with every step succeeded
  double wall_ms = 0;  // client side: request to the answer with the finished run
  int64_t run_ms = 0;  // the run's own duration (finished_ms - started_ms), ms resolution
  int64_t created_ms = 0, started_ms = 0, finished_ms = 0;
  double server_cpu_ms = 0;    // the server's own threads, on CPU, over the call
  double machine_busy_ms = 0;  // every CPU, every process, over the call
  std::string run_id;
  std::vector<StepTimes> steps;
};

RunResult RunWorkflow(cortex::http::Client& client, pid_t server, const std::string& name,
                      size_t expected_steps) {
  RunResult r;
  std::string body = Json{{"name", name}, {"input", Json::object()}}.dump();
  double cpu0 = ThreadsCpuMs(server), busy0 = MachineBusyMs();
  auto t0 = Clock::now();
  auto resp = client.Post("/execute/workflow?wait=true&timeout=10m", body);
  r.wall_ms = MsBetween(t0, Clock::now());
  r.server_cpu_ms = ThreadsCpuMs(server) - cpu0;
  r.machine_busy_ms = MachineBusyMs() - busy0;
  if (!resp.ok()) {
    r.error = resp.status().message();
    return r;
  }
  if (resp->status != 200) {
    r.error = "HTTP " + std::to_string(resp->status) + ": " + resp->body.substr(0, 300);
    return r;
  }
  Json j = Json::parse(resp->body, nullptr, false);
  if (j.is_discarded() || j.value("status", "") != "succeeded" || !j.contains("steps")) {
    r.error = "unexpected answer: " + resp->body.substr(0, 300);
    return r;
  }
  r.run_id = j.value("run_id", "");
  r.created_ms = j.value("created_ms", int64_t{0});
  r.started_ms = j.value("started_ms", int64_t{0});
  r.finished_ms = j.value("finished_ms", int64_t{0});
  r.run_ms = r.finished_ms - r.started_ms;
  for (const Json& s : j["steps"]) {
    if (s.value("status", "") != "succeeded") {
      r.error = "step " + s.value("name", "?") + " " + s.value("status", "?") + ": " +
                s.value("error", "");
      return r;
    }
    r.steps.push_back({s.value("name", ""), s.value("execution_id", ""),
                       s.value("started_ms", int64_t{0}), s.value("finished_ms", int64_t{0})});
  }
  if (r.steps.size() != expected_steps) {
    r.error = std::to_string(r.steps.size()) + " steps, expected " + std::to_string(expected_steps);
  }
  return r;
}

struct ExecTimes {
  int64_t created_ms = 0, started_ms = 0, finished_ms = 0, duration_ms = 0;
};

// The execution records of `ids`, read newest first through GET /executions (paged by 1,000)
// right after the run, so they are on the first pages. Missing ones are left out.
std::map<std::string, ExecTimes> FetchExecutions(cortex::http::Client& client,
                                                 const std::string& tool,
                                                 const std::vector<StepTimes>& steps) {
  std::map<std::string, ExecTimes> want;
  for (const auto& s : steps) want[s.execution_id];
  std::map<std::string, ExecTimes> got;
  std::string before;
  size_t max_pages = steps.size() / 1000 + 3;
  for (size_t page = 0; page < max_pages && got.size() < want.size(); ++page) {
    std::string q = "/executions?limit=1000&tool=" + cortex::http::UrlEncode(tool);
    if (!before.empty()) q += "&before=" + cortex::http::UrlEncode(before);
    auto r = client.Get(q);
    if (!r.ok() || r->status != 200) break;
    Json j = Json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j.contains("executions")) break;
    for (const Json& e : j["executions"]) {
      std::string id = e.value("execution_id", "");
      if (!want.count(id)) continue;
      got[id] = {e.value("created_ms", int64_t{0}), e.value("started_ms", int64_t{0}),
                 e.value("finished_ms", int64_t{0}), e.value("duration_ms", int64_t{0})};
    }
    if (j["executions"].size() < 1000) break;
    before = j["executions"].back().value("execution_id", "");
  }
  return got;
}

// Where a chain step's time goes, per step (ms), from the step and execution records. All
// stamps have ms resolution; averaged over many steps the parts are still telling.
struct Breakdown {
  double engine = 0;      // step started -> execution created: record step_running, dispatch
  double queue = 0;       // execution created -> started: CreateExecution, hand-off to a worker
  double exec_setup = 0;  // execution started -> finished, minus the process: UpdateExecution,
                          // building the command, the runner's setup and cleanup (cgroup)
  double process = 0;     // the runner's wall clock of the process (truncated to ms)
  double completion = 0;  // execution finished -> step finished: final record, callback, engine
  double between = 0;     // step finished -> next step started
  double before_first = 0, after_last = 0;  // run start -> first step; last step -> run end
  size_t steps = 0;
};

std::optional<Breakdown> ChainBreakdown(const RunResult& r,
                                        const std::map<std::string, ExecTimes>& ex) {
  if (r.steps.empty() || ex.size() != r.steps.size()) return std::nullopt;
  std::vector<StepTimes> order = r.steps;
  std::sort(order.begin(), order.end(), [](const StepTimes& a, const StepTimes& b) {
    return std::atoi(a.name.c_str() + 1) < std::atoi(b.name.c_str() + 1);
  });
  Breakdown b;
  b.steps = order.size();
  for (size_t i = 0; i < order.size(); ++i) {
    const StepTimes& s = order[i];
    const ExecTimes& e = ex.at(s.execution_id);
    b.engine += static_cast<double>(e.created_ms - s.started_ms);
    b.queue += static_cast<double>(e.started_ms - e.created_ms);
    b.exec_setup += static_cast<double>(e.finished_ms - e.started_ms - e.duration_ms);
    b.process += static_cast<double>(e.duration_ms);
    b.completion += static_cast<double>(s.finished_ms - e.finished_ms);
    if (i + 1 < order.size()) {
      b.between += static_cast<double>(order[i + 1].started_ms - s.finished_ms);
    }
  }
  double n = static_cast<double>(b.steps);
  for (double* x : {&b.engine, &b.queue, &b.exec_setup, &b.process, &b.completion, &b.between}) {
    *x /= n;
  }
  b.before_first = static_cast<double>(order.front().started_ms - r.started_ms);
  b.after_last = static_cast<double>(r.finished_ms - order.back().finished_ms);
  return b;
}

// CPU time of this process (all its threads; not its children).
double ProcessCpuMs() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// The executor's runner alone, in this process, on the same command: how much of an execution's
// time is the runner (cgroup, rlimits, pidfd supervision, cleanup) above a bare spawn, in wall
// time and in this process's CPU time (the parent's side: the children's own CPU is not in it).
// Three tiers interleaved call by call in a rotating order: direct spawn, ProcessRunner::Run
// (cgroups on, as in the server), ProcessRunner::Run with cgroups off. Called once per repetition
// so that it samples the same stretch of time as the runs.
struct RunnerTier {
  std::vector<double> wall[3], cpu[3];  // direct, runner, runner with cgroups off
  bool warmed = false;
  size_t failures = 0;
  std::string first_error;
};

void MeasureRunner(const cortex::exec::ProcessSpec& spec, cortex::exec::ProcessRunner& runner,
                   cortex::exec::ProcessRunner& runner_nocg, int calls, Clock::time_point deadline,
                   pid_t server, RunnerTier* t) {
  auto run = [](cortex::exec::ProcessRunner& r, const cortex::exec::ProcessSpec& sp) {
    auto res = r.Run(
        sp, [](const cortex::exec::OutputLine&) {}, nullptr);
    if (!res.ok()) return res.status().message();
    if (res->reason != cortex::exec::EndReason::kExited || res->exit_code != 0) {
      return "ended: " + res->reason_text + " exit " + std::to_string(res->exit_code);
    }
    return std::string();
  };
  const int warmup = t->warmed ? 0 : 5;  // the first rounds warm up
  t->warmed = true;
  for (int i = 0; i < calls + warmup && Clock::now() < deadline; ++i) {
    for (int k = 0; k < 3; ++k) {
      int tier = (i + k) % 3;
      double cpu0 = ProcessCpuMs();
      auto t0 = Clock::now();
      std::string err = tier == 0   ? DirectRun(spec)
                        : tier == 1 ? run(runner, spec)
                                    : run(runner_nocg, spec);
      double ms = MsBetween(t0, Clock::now());
      double cpu = ProcessCpuMs() - cpu0;
      if (tier == 0) ReapOrphans(server);  // the runner reaps its own
      if (!err.empty()) {
        if (t->failures++ == 0) t->first_error = err;
      } else if (i >= warmup) {
        t->wall[tier].push_back(ms);
        t->cpu[tier].push_back(cpu);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The engine alone: this process, the same Store code on a temp folder, and a dispatcher that
// completes each tool call at once (no executor, no process, no HTTP).

class InstantDispatcher final : public cortex::workflow::StepDispatcher {
 public:
  cortex::Status StartTool(
      const ToolCall& call,
      std::function<void(const cortex::store::ExecutionRecord&)> done) override {
    cortex::store::ExecutionRecord r;
    r.id = call.execution_id;
    r.name = call.tool;
    r.status = "succeeded";
    r.result_json = "\"\"";
    done(r);  // posts the completion to the engine's inbox
    return cortex::Status::Ok();
  }
  void CancelTool(const std::string&) override {}
};

struct EngineAlone {
  std::vector<double> chain_ms, fanout_ms;
  std::vector<double> chain_cpu_ms, fanout_cpu_ms;  // this process's CPU over each run
  std::string error;
};

EngineAlone MeasureEngineAlone(cortex::registry::Registry& registry, const fs::path& db_dir,
                               int reps, Clock::time_point deadline) {
  EngineAlone out;
  std::error_code ec;
  fs::create_directories(db_dir, ec);
  cortex::store::SqliteOptions sopts;
  sopts.path = (db_dir / "cortex.db").string();
  auto store = cortex::store::OpenSqliteStore(sopts);
  if (!store.ok()) {
    out.error = store.status().message();
    return out;
  }
  InstantDispatcher dispatcher;
  cortex::workflow::EngineOptions eopts;
  eopts.max_inflight = 32;  // what cortex serve uses with the default exec.queue (64) / 2
  cortex::workflow::Engine engine(eopts, registry, **store, dispatcher);
  if (auto st = engine.Start(); !st.ok()) {
    out.error = st.message();
    return out;
  }
  double cpu = 0;  // of the last run
  auto one = [&](const std::string& wf) -> double {
    cortex::workflow::StartRequest req;
    req.workflow = wf;
    double cpu0 = ProcessCpuMs();
    auto t0 = Clock::now();
    auto id = engine.StartRun(req, nullptr);
    if (!id.ok()) {
      out.error = id.status().message();
      return -1;
    }
    auto rec = engine.Wait(*id, std::chrono::minutes(5));
    double ms = MsBetween(t0, Clock::now());
    cpu = ProcessCpuMs() - cpu0;
    if (!rec.ok() || rec->status != "succeeded") {
      out.error = rec.ok() ? "run " + rec->status + ": " + rec->error : rec.status().message();
      return -1;
    }
    return ms;
  };
  one("wf_warm");
  for (int i = 0; i < reps && Clock::now() < deadline && out.error.empty(); ++i) {
    double c = one("wf_chain");
    if (c >= 0) {
      out.chain_ms.push_back(c);
      out.chain_cpu_ms.push_back(cpu);
    }
    double f = one("wf_fanout");
    if (f >= 0) {
      out.fanout_ms.push_back(f);
      out.fanout_cpu_ms.push_back(cpu);
    }
  }
  engine.Stop();
  return out;
}

// ---------------------------------------------------------------------------------------------
// 3. The Store's transition rate.

struct Transitions {
  std::string run_id, manifest_text;
  int64_t seq = 0;
  cortex::store::RunRecord run;
  // The next transition of this run: the run row, one step row, one event (what the engine
  // writes when a step starts or ends).
  cortex::store::RunTransition Next() {
    ++seq;
    int64_t now = cortex::exec::NowMs();
    run.updated_ms = now;
    run.last_event_seq = seq;
    cortex::store::RunTransition t;
    t.run = run;
    cortex::store::StepRecord s;
    s.run_id = run_id;
    s.step = "s" + std::to_string((seq / 2) % 40);
    bool end = seq % 2 == 0;
    s.status = end ? "succeeded" : "running";
    s.attempt = 1;
    s.execution_id = "ex_0123456789abcdef0123";
    s.started_ms = now;
    if (end) {
      s.finished_ms = now;
      s.output_json = "\"\"";
    }
    t.steps.push_back(std::move(s));
    cortex::store::RunEvent e;
    e.run_id = run_id;
    e.seq = seq;
    e.at_ms = now;
    e.type = end ? "step_succeeded" : "step_running";
    e.step = t.steps.back().step;
    e.attempt = 1;
    if (!end) e.data_json = R"({"execution_id":"ex_0123456789abcdef0123"})";
    t.events.push_back(std::move(e));
    return t;
  }
};

cortex::store::RunRecord BenchRun(const std::string& id, const std::string& manifest_text) {
  cortex::store::RunRecord r;
  r.id = id;
  r.workflow = "wf_seq";
  r.status = "running";
  r.manifest_path = "/bench/workflows/wf_seq.workflow.yml";
  r.manifest_text = manifest_text;
  r.manifest_version = "1";
  r.created_ms = r.started_ms = r.updated_ms = cortex::exec::NowMs();
  return r;
}

struct Rate {
  size_t n = 0;
  double seconds = 0;
  std::string error;
  double per_s() const { return seconds > 0 ? static_cast<double>(n) / seconds : 0; }
};

Rate StoreRate(const fs::path& dir, bool fsync, int threads, double seconds,
               const std::string& manifest_text) {
  Rate rate;
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  cortex::store::SqliteOptions sopts;
  sopts.path = (dir / "cortex.db").string();
  sopts.fsync_every_commit = fsync;
  auto opened = cortex::store::OpenSqliteStore(sopts);
  if (!opened.ok()) {
    rate.error = opened.status().message();
    return rate;
  }
  cortex::store::Store& store = **opened;
  std::vector<Transitions> runs(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    Transitions& tr = runs[static_cast<size_t>(t)];
    tr.run_id = "wf_bench" + std::to_string(t);
    tr.run = BenchRun(tr.run_id, manifest_text);
    cortex::store::RunTransition first;
    first.run = tr.run;
    if (auto st = store.WriteRun(first); !st.ok()) {
      rate.error = st.message();
      return rate;
    }
  }
  std::atomic<size_t> total{0};
  std::mutex mu;
  auto t0 = Clock::now();
  auto until =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      Transitions& tr = runs[static_cast<size_t>(t)];
      size_t n = 0;
      while (Clock::now() < until && n < 10'000'000) {
        if (auto st = store.WriteRun(tr.Next()); !st.ok()) {
          std::lock_guard lock(mu);
          if (rate.error.empty()) rate.error = st.message();
          break;
        }
        ++n;
      }
      total += n;
    });
  }
  for (auto& th : pool) th.join();
  rate.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  rate.n = total;
  return rate;
}

// The baseline: the three statements the Store runs for a transition, on a raw connection with
// the same pragmas, prepared once, one transaction per transition, one thread. The schema is the
// Store's own (it creates the file first).
Rate RawSqliteRate(const fs::path& dir, bool fsync, double seconds,
                   const std::string& manifest_text) {
  Rate rate;
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  std::string path = (dir / "cortex.db").string();
  {
    cortex::store::SqliteOptions sopts;
    sopts.path = path;
    auto created = cortex::store::OpenSqliteStore(sopts);
    if (!created.ok()) {
      rate.error = created.status().message();
      return rate;
    }
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    rate.error = std::string("sqlite3_open_v2: ") + sqlite3_errmsg(db);
    sqlite3_close_v2(db);
    return rate;
  }
  std::string pragmas = std::string("PRAGMA journal_mode = WAL; PRAGMA synchronous = ") +
                        (fsync ? "FULL" : "NORMAL") + "; PRAGMA foreign_keys = ON;";
  const char* sql[] = {
      "BEGIN IMMEDIATE",
      "COMMIT",
      "INSERT INTO workflow_runs (id, workflow, status, input_json, output_json, error, trigger, "
      "manifest_path, manifest_text, manifest_version, parent_run_id, parent_step, depth, "
      "created_ms, started_ms, finished_ms, updated_ms, last_event_seq) VALUES (?1, ?2, ?3, ?4, "
      "?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) ON CONFLICT (id) DO "
      "UPDATE SET status = ?3, output_json = ?5, error = ?6, started_ms = ?15, finished_ms = ?16, "
      "updated_ms = ?17, last_event_seq = ?18",
      "INSERT OR REPLACE INTO workflow_steps (run_id, step, status, attempt, output_json, error, "
      "execution_id, started_ms, finished_ms, next_attempt_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
      "?7, ?8, ?9, ?10)",
      "INSERT INTO workflow_events (run_id, seq, at_ms, type, step, attempt, data_json) VALUES "
      "(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
  };
  sqlite3_stmt* st[5] = {};
  bool ok = sqlite3_exec(db, pragmas.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
  for (int i = 0; i < 5 && ok; ++i) {
    ok =
        sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i], nullptr) == SQLITE_OK;
  }
  auto text = [](sqlite3_stmt* s, int i, const std::string& v) {
    sqlite3_bind_text64(s, i, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8);
  };
  auto step = [&](sqlite3_stmt* s) {
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE;
  };
  auto write = [&](const cortex::store::RunTransition& t) {
    if (!step(st[0])) return false;
    const cortex::store::RunRecord& r = *t.run;
    sqlite3_stmt* s = st[2];
    text(s, 1, r.id);
    text(s, 2, r.workflow);
    text(s, 3, r.status);
    text(s, 4, r.input_json);
    text(s, 5, r.output_json);
    text(s, 6, r.error);
    text(s, 7, r.trigger);
    text(s, 8, r.manifest_path);
    text(s, 9, r.manifest_text);
    text(s, 10, r.manifest_version);
    text(s, 11, r.parent_run_id);
    text(s, 12, r.parent_step);
    sqlite3_bind_int64(s, 13, r.depth);
    sqlite3_bind_int64(s, 14, r.created_ms);
    sqlite3_bind_int64(s, 15, r.started_ms);
    sqlite3_bind_int64(s, 16, r.finished_ms);
    sqlite3_bind_int64(s, 17, r.updated_ms);
    sqlite3_bind_int64(s, 18, r.last_event_seq);
    bool good = step(s);
    for (const auto& x : t.steps) {
      s = st[3];
      text(s, 1, x.run_id);
      text(s, 2, x.step);
      text(s, 3, x.status);
      sqlite3_bind_int64(s, 4, x.attempt);
      text(s, 5, x.output_json);
      text(s, 6, x.error);
      text(s, 7, x.execution_id);
      sqlite3_bind_int64(s, 8, x.started_ms);
      sqlite3_bind_int64(s, 9, x.finished_ms);
      sqlite3_bind_int64(s, 10, x.next_attempt_ms);
      good = good && step(s);
    }
    for (const auto& e : t.events) {
      s = st[4];
      text(s, 1, e.run_id);
      sqlite3_bind_int64(s, 2, e.seq);
      sqlite3_bind_int64(s, 3, e.at_ms);
      text(s, 4, e.type);
      text(s, 5, e.step);
      sqlite3_bind_int64(s, 6, e.attempt);
      text(s, 7, e.data_json);
      good = good && step(s);
    }
    return step(st[1]) && good;
  };
  Transitions tr;
  tr.run_id = "wf_bench0";
  tr.run = BenchRun(tr.run_id, manifest_text);
  if (ok) {
    cortex::store::RunTransition first;
    first.run = tr.run;
    ok = write(first);
  }
  if (ok) {
    auto t0 = Clock::now();
    auto until =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    while (Clock::now() < until && rate.n < 10'000'000) {
      if (!write(tr.Next())) {
        ok = false;
        break;
      }
      ++rate.n;
    }
    rate.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  if (!ok) rate.error = std::string("sqlite: ") + sqlite3_errmsg(db);
  for (sqlite3_stmt* s : st) sqlite3_finalize(s);
  sqlite3_close_v2(db);
  return rate;
}

// ---------------------------------------------------------------------------------------------

struct ShapeFigures {
  std::vector<double> cortex_ms, run_ms, ninja_ms, ninja_bwrap_ms, server_cpu_ms, busy_ms;
  std::vector<Breakdown> breakdowns;
  size_t failures = 0;
  std::string first_error;
  void Fail(const std::string& why) {
    if (failures++ == 0) first_error = why;
  }
};

struct SeqFigures {
  std::vector<double> wall_ms, own_ms, direct_ms;
  size_t failures = 0;
  std::string first_error;
  void Fail(const std::string& why) {
    if (failures++ == 0) first_error = why;
  }
};

struct ModeFigures {
  std::string mode;
  bool sandboxed = false;
  bool skipped = false;
  ShapeFigures chain, fanout;
  SeqFigures seq;
  RunnerTier runner;
  std::string command;  // the wf_true command line the executor runs
};

void Usage() {
  std::fprintf(stderr,
               "usage: workflow_bench [--steps N (default 1000)] [--seq N (default 40)] [--reps N "
               "(default 3)]\n"
               "                      [--runner-calls N (default 200)] [--store-seconds S "
               "(default 2)] [--no-sandbox]\n"
               "                      [--max-seconds S (default 600)] [--keep]\n");
}

}  // namespace

int main(int argc, char** argv) {
  // The engine and executor log a line a run and a call at info; they would bury the figures.
  cortex::log::SetLevel(cortex::log::Level::kWarn);
  int steps = 1000, seq = 40, reps = 3, runner_calls = 200;
  double max_seconds = 600, store_seconds = 2;
  bool keep = false, with_sandbox = true;
  cortex::bench::Flags flags(argc, argv, Usage);
  for (std::string a; flags.Next(&a);) {
    if (a == "--steps") {
      steps = std::clamp(std::atoi(flags.Value()), 2, 100000);
    } else if (a == "--seq") {
      seq = std::clamp(std::atoi(flags.Value()), 1, 10000);
    } else if (a == "--reps") {
      reps = std::clamp(std::atoi(flags.Value()), 1, 100);
    } else if (a == "--runner-calls") {
      runner_calls = std::clamp(std::atoi(flags.Value()), 0, 100000);
    } else if (a == "--store-seconds") {
      store_seconds = std::clamp(std::atof(flags.Value()), 0.1, 600.0);
    } else if (a == "--max-seconds") {
      max_seconds = std::atof(flags.Value());
    } else if (a == "--no-sandbox") {
      with_sandbox = false;
    } else if (a == "--keep") {
      keep = true;
    } else {
      Usage();
      return 2;
    }
  }
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(max_seconds));

  cortex::bench::ScratchDir scratch("cortex-workflow-bench", keep);
  if (!scratch.ok()) return 1;
  const fs::path dir = scratch.path();
  std::error_code ec;
  fs::path manifests = dir / "manifests";
  if (!WriteManifests(manifests, steps, seq)) {
    std::fprintf(stderr, "cannot write the manifests under %s\n", manifests.c_str());
    return 1;
  }
  cortex::registry::RegistryOptions ropts;
  ropts.root = manifests.string();
  cortex::registry::Registry registry(ropts);
  if (auto st = registry.LoadAll(); !st.ok()) {
    std::fprintf(stderr, "loading %s: %s\n", manifests.c_str(), st.message().c_str());
    return 1;
  }
  auto snap = registry.snapshot();
  if (!snap->errors().empty()) {
    std::fprintf(stderr, "the generated manifests did not load cleanly from %s\n",
                 manifests.c_str());
    return 1;
  }
  const cortex::registry::Entry* true_entry = snap->Find(cortex::registry::Kind::kTool, kTrueTool);
  const cortex::registry::Entry* sleep_entry =
      snap->Find(cortex::registry::Kind::kTool, kSleepTool);
  for (const char* wf : {"wf_chain", "wf_fanout", "wf_seq"}) {
    const auto* e = snap->Find(cortex::registry::Kind::kWorkflow, wf);
    if (!e || !e->resolved()) {
      std::fprintf(stderr, "Workflow/%s did not load cleanly\n", wf);
      return 1;
    }
  }
  if (!true_entry || !sleep_entry) {
    std::fprintf(stderr, "the benchmark's tools did not load\n");
    return 1;
  }

  // ninja's build files: /bin/true, as the shell runs it.
  fs::path ninja_dir = dir / "ninja";
  fs::create_directories(ninja_dir, ec);
  WriteText(ninja_dir / "chain.ninja", NinjaFile(steps, true, "/bin/true"), fs::perms(0644));
  WriteText(ninja_dir / "fanout.ninja", NinjaFile(steps, false, "/bin/true"), fs::perms(0644));
  std::string why;
  if (RunNinja(ninja_dir, "chain.ninja", Environ(), &why) < 0) {
    std::fprintf(stderr, "the ninja baseline does not run: %s\n", why.c_str());
    return 1;
  }

  std::printf("== workflow_bench ==\n");
  std::printf(
      "%d steps of a no-op binary tool (chain and fan-out), %d sequential 10 ms steps, %d reps "
      "(median), %.1f s per Store figure\n",
      steps, seq, reps, store_seconds);
  std::printf("machine: %u cores, loadavg %s\n", std::thread::hardware_concurrency(),
              LoadAvg().c_str());
  std::fflush(stdout);

  int exit_status = 0;
  bool cut_short = false;

  // ---- The engine alone (in this process), before the servers.
  auto log_level = cortex::log::GetLevel();
  cortex::log::SetLevel(cortex::log::Level::kError);
  EngineAlone alone = MeasureEngineAlone(registry, dir / "engine-db", reps, deadline);
  auto runner = cortex::exec::MakeProcessRunner();
  cortex::exec::RunnerOptions nocg_options;
  nocg_options.use_cgroups = false;
  auto runner_nocg = cortex::exec::MakeProcessRunner(nocg_options);  // warns: cgroups disabled
  cortex::log::SetLevel(log_level);

  // ---- 1 and 2, per mode.
  std::vector<ModeFigures> modes;
  for (bool sandboxed : {false, true}) {
    if (sandboxed && !with_sandbox) continue;
    ModeFigures m;
    m.mode = sandboxed ? "sandboxed" : "unsandboxed";
    m.sandboxed = sandboxed;
    fs::path data = dir / ("data-" + m.mode);
    fs::path config = dir / ("cortex-" + m.mode + ".yml");
    WriteText(config, ServerConfig(sandboxed), fs::perms(0644));
    Server server;
    if (!server.Start(manifests, data, dir / ("serve-" + m.mode + ".log"),
                      {"--config", config.string()})) {
      std::fprintf(stderr, "cortex serve (%s) did not start; its log:\n%s\n", m.mode.c_str(),
                   server.log().c_str());
      return 1;
    }
    std::optional<cortex::exec::SandboxInfo> info;
    if (sandboxed) {
      auto detected = cortex::exec::DetectSandbox("", (data / "sandbox").string());
      if (!detected.ok()) {
        std::printf("\nsandboxed: SKIPPED, bubblewrap is not usable here: %s\n",
                    detected.status().message().c_str());
        exit_status = 1;
        continue;
      }
      info = std::move(detected).value();
    }
    auto true_cmd = ToolCommand(*true_entry, info ? &*info : nullptr, data);
    auto sleep_cmd = ToolCommand(*sleep_entry, info ? &*info : nullptr, data);
    if (!true_cmd.ok() || !sleep_cmd.ok()) {
      std::fprintf(stderr, "cannot build the tools' commands: %s\n",
                   (!true_cmd.ok() ? true_cmd.status() : sleep_cmd.status()).message().c_str());
      return 1;
    }
    for (const auto& a : true_cmd->argv) m.command += (m.command.empty() ? "" : " ") + a;
    // Sandboxed: ninja also runs the very bwrap command line of the executor, with its env.
    if (sandboxed) {
      std::string cmd;
      for (const auto& a : true_cmd->argv) cmd += (cmd.empty() ? "" : " ") + NinjaShellWord(a);
      WriteText(ninja_dir / ("chain-bwrap-" + m.mode + ".ninja"), NinjaFile(steps, true, cmd),
                fs::perms(0644));
      WriteText(ninja_dir / ("fanout-bwrap-" + m.mode + ".ninja"), NinjaFile(steps, false, cmd),
                fs::perms(0644));
    }
    cortex::http::ClientOptions copts;
    copts.read_timeout = std::chrono::minutes(11);
    cortex::http::Client client(server.url(), copts);
    // Warm-up: the server's first-call paths, the page cache, ninja.
    {
      RunResult w = RunWorkflow(client, server.pid(), "wf_warm", 20);
      if (!w.error.empty()) {
        std::fprintf(stderr, "warm-up run (%s) failed: %s\nserver log:\n%s\n", m.mode.c_str(),
                     w.error.c_str(), server.log().c_str());
        return 1;
      }
      (void)DirectRun(*sleep_cmd);
      ReapOrphans(server.pid());
    }
    std::printf("\ncortex serve (pid %d, %s, exec.workers 2) on %s\n",
                static_cast<int>(server.pid()), m.mode.c_str(), server.url().c_str());
    std::fflush(stdout);
    for (int rep = 0; rep < reps; ++rep) {
      if (Clock::now() >= deadline) {
        cut_short = true;
        break;
      }
      for (const char* shape : {"chain", "fanout"}) {
        ShapeFigures& f = std::string(shape) == "chain" ? m.chain : m.fanout;
        // Alternate which goes first so that drift in the machine's load hits both alike.
        auto cortex_run = [&] {
          RunResult r = RunWorkflow(client, server.pid(), std::string("wf_") + shape,
                                    static_cast<size_t>(steps));
          if (!r.error.empty()) return f.Fail("cortex: " + r.error);
          f.cortex_ms.push_back(r.wall_ms);
          f.run_ms.push_back(static_cast<double>(r.run_ms));
          f.server_cpu_ms.push_back(r.server_cpu_ms);
          f.busy_ms.push_back(r.machine_busy_ms);
          if (std::string(shape) == "chain") {
            auto ex = FetchExecutions(client, kTrueTool, r.steps);
            if (auto b = ChainBreakdown(r, ex)) f.breakdowns.push_back(*b);
          }
        };
        auto ninja_run = [&] {
          std::string err;
          double ms = RunNinja(ninja_dir, std::string(shape) + ".ninja", Environ(), &err);
          ReapOrphans(server.pid());
          if (ms < 0) return f.Fail(err);
          f.ninja_ms.push_back(ms);
          if (sandboxed) {
            ms = RunNinja(ninja_dir, std::string(shape) + "-bwrap-" + m.mode + ".ninja",
                          true_cmd->env, &err);
            ReapOrphans(server.pid());
            if (ms < 0) return f.Fail(err);
            f.ninja_bwrap_ms.push_back(ms);
          }
        };
        if (rep % 2 == 0) {
          cortex_run();
          ninja_run();
        } else {
          ninja_run();
          cortex_run();
        }
        std::fflush(stdout);
      }
      // 2. The sequential 10 ms steps, and the same commands spawned directly in sequence.
      auto seq_run = [&] {
        RunResult r = RunWorkflow(client, server.pid(), "wf_seq", static_cast<size_t>(seq));
        if (!r.error.empty()) return m.seq.Fail("cortex: " + r.error);
        auto ex = FetchExecutions(client, kSleepTool, r.steps);
        if (ex.size() != r.steps.size()) return m.seq.Fail("execution records missing");
        double own = 0;
        for (const auto& [id, e] : ex) own += static_cast<double>(e.duration_ms);
        m.seq.wall_ms.push_back(r.wall_ms);
        m.seq.own_ms.push_back(own);
      };
      auto direct_run = [&] {
        auto t0 = Clock::now();
        for (int i = 0; i < seq; ++i) {
          std::string err = DirectRun(*sleep_cmd);
          if (!err.empty()) return m.seq.Fail("direct: " + err);
        }
        m.seq.direct_ms.push_back(MsBetween(t0, Clock::now()));
        ReapOrphans(server.pid());
      };
      if (rep % 2 == 0) {
        seq_run();
        direct_run();
      } else {
        direct_run();
        seq_run();
      }
      // The runner alone on the wf_true command, a share per repetition (the server is idle).
      MeasureRunner(*true_cmd, *runner, *runner_nocg, std::max(1, runner_calls / reps), deadline,
                    server.pid(), &m.runner);
    }
    int code = server.Stop();
    if (code != 0) std::printf("  (server exit code %d)\n", code);
    if (m.runner.failures) exit_status = 1;
    for (const ShapeFigures* f : {&m.chain, &m.fanout}) {
      if (f->failures) exit_status = 1;
    }
    if (m.seq.failures) exit_status = 1;
    modes.push_back(std::move(m));
  }

  // ---- 3. The Store.
  std::string manifest_text = ReadAll(manifests / "workflows" / "wf_seq.workflow.yml");
  struct StoreRow {
    bool fsync;
    Rate raw, one, four;
  };
  std::vector<StoreRow> store_rows;
  for (bool fsync : {false, true}) {
    if (Clock::now() >= deadline) {
      cut_short = true;
      break;
    }
    StoreRow row;
    row.fsync = fsync;
    row.raw = RawSqliteRate(dir / "store-raw", fsync, store_seconds, manifest_text);
    row.one = StoreRate(dir / "store-1", fsync, 1, store_seconds, manifest_text);
    row.four = StoreRate(dir / "store-4", fsync, 4, store_seconds, manifest_text);
    if (!row.raw.error.empty() || !row.one.error.empty() || !row.four.error.empty()) {
      exit_status = 1;
    }
    store_rows.push_back(row);
  }

  // ---- Report.
  const double n = static_cast<double>(steps);
  std::printf(
      "\n-- 1. engine overhead per step against ninja -j2 on the same graph (%d steps of "
      "/bin/true; wall clock, median of %d)\n",
      steps, reps);
  std::printf(
      "   cortex: POST /execute/workflow?wait=true, exec.workers 2, durable state on (SQLite); "
      "ninja: edges `command = /bin/true` via /bin/sh\n");
  struct GoalFigure {
    std::string label;
    double ratio;
  };
  std::vector<GoalFigure> goal1;
  for (const ModeFigures& m : modes) {
    for (const char* shape : {"chain", "fanout"}) {
      const ShapeFigures& f = std::string(shape) == "chain" ? m.chain : m.fanout;
      double c = Median(f.cortex_ms), k = Median(f.ninja_ms), kb = Median(f.ninja_bwrap_ms);
      std::printf("%s, %s:\n", m.mode.c_str(), shape);
      std::printf(
          "  cortex   %9.1f ms  %7.3f ms/step  (run's own duration %.0f ms; server threads "
          "on CPU %.3f ms/step; machine busy %.3f ms/step)\n",
          c, c / n, Median(f.run_ms), Median(f.server_cpu_ms) / n, Median(f.busy_ms) / n);
      std::printf("  ninja    %9.1f ms  %7.3f ms/step\n", k, k / n);
      std::printf("  -> ratio cortex/ninja %.2f; cortex adds %.3f ms/step%s\n", Ratio(c, k),
                  (c - k) / n, m.sandboxed ? " (not like-for-like: sandbox vs none)" : "");
      if (m.sandboxed && !f.ninja_bwrap_ms.empty()) {
        std::printf("  ninja, same bwrap command %9.1f ms  %7.3f ms/step\n", kb, kb / n);
        std::printf("  -> ratio cortex/ninja-with-bwrap %.2f; cortex adds %.3f ms/step\n",
                    Ratio(c, kb), (c - kb) / n);
      }
      if (f.failures) {
        std::printf("  %zu FAILED: %s\n", f.failures, f.first_error.c_str());
      }
      if (!m.sandboxed && !f.cortex_ms.empty() && !f.ninja_ms.empty()) {
        goal1.push_back({std::string(shape), Ratio(c, k)});
      }
    }
    if (m.sandboxed) std::printf("  (sandboxed command: %.300s ...)\n", m.command.c_str());
  }

  std::printf(
      "\nwhere a chain step's time goes (per step, mean over the reps' %d steps; from the step "
      "and execution records, ms resolution):\n",
      steps);
  for (const ModeFigures& m : modes) {
    if (m.chain.breakdowns.empty()) continue;
    Breakdown b;
    for (const Breakdown& x : m.chain.breakdowns) {
      b.engine += x.engine;
      b.queue += x.queue;
      b.exec_setup += x.exec_setup;
      b.process += x.process;
      b.completion += x.completion;
      b.between += x.between;
      b.before_first += x.before_first;
      b.after_last += x.after_last;
    }
    double k = static_cast<double>(m.chain.breakdowns.size());
    std::printf("  %s:\n", m.mode.c_str());
    std::printf("    %-78s %7.3f ms\n",
                "engine: step started -> execution created (record step_running, dispatch)",
                b.engine / k);
    std::printf("    %-78s %7.3f ms\n",
                "executor queue: created -> started (CreateExecution write, worker hand-off)",
                b.queue / k);
    double run_part = (b.exec_setup + b.process) / k;
    std::printf("    %-78s %7.3f ms\n",
                "execution: started -> finished (running write, command, ProcessRunner::Run)",
                run_part);
    const RunnerTier& t = m.runner;
    if (!t.wall[0].empty() && !t.wall[1].empty() && !t.wall[2].empty()) {
      // Split with the same command timed in this process (the records' own process duration
      // is truncated to whole ms, ~0.5 ms low on average, so it cannot split it).
      double d = Median(t.wall[0]), r = Median(t.wall[1]), r0 = Median(t.wall[2]);
      std::printf("    %-78s %7.3f ms\n",
                  "  the process itself: a bare posix_spawn + waitpid of it", d);
      std::printf("    %-78s %7.3f ms\n",
                  "  ProcessRunner above the bare spawn (rlimits, pidfd, pipes, cleanup)", r0 - d);
      std::printf("    %-78s %7.3f ms\n",
                  "  the run's cgroup (mkdir, move, stats, rmdir: runner minus cgroups off)",
                  r - r0);
      std::printf("    %-78s %7.3f ms\n",
                  "  the executor around Run (running write, building the command, result)",
                  run_part - r);
      std::printf("    %-78s %7.3f ms\n", "  (the records' process duration, truncated to ms)",
                  b.process / k);
      if (run_part - r < 0 || r - r0 < 0 || r0 - d < 0) {
        std::printf(
            "      (a negative part: the in-process tiers and the runs met different load)\n");
      }
    } else {
      std::printf("    %-78s %7.3f ms\n", "  of which the process (records, truncated to ms)",
                  b.process / k);
    }
    std::printf("    %-78s %7.3f ms\n",
                "completion: execution finished -> step finished (final write, engine wake-up)",
                b.completion / k);
    std::printf("    %-78s %7.3f ms\n", "between steps: step finished -> next step started",
                b.between / k);
    std::printf("    %-78s %7.1f / %.1f ms\n",
                "once per run: run start -> first step; last step -> run end", b.before_first / k,
                b.after_last / k);
    if (t.failures)
      std::printf("    runner tier: %zu FAILED: %s\n", t.failures, t.first_error.c_str());
  }
  if (!alone.error.empty()) {
    std::printf("  engine alone: FAILED: %s\n", alone.error.c_str());
    exit_status = 1;
  } else {
    std::printf(
        "  engine alone (this process, same Store code, a dispatcher that completes each call at "
        "once; no executor, no process, no HTTP):\n");
    std::printf("    chain  %8.1f ms  %7.3f ms/step  (CPU %.3f ms/step)\n", Median(alone.chain_ms),
                Median(alone.chain_ms) / n, Median(alone.chain_cpu_ms) / n);
    std::printf("    fanout %8.1f ms  %7.3f ms/step  (CPU %.3f ms/step)\n", Median(alone.fanout_ms),
                Median(alone.fanout_ms) / n, Median(alone.fanout_cpu_ms) / n);
  }
  // The fan-out keeps both cores busy, so its time per step follows the CPU spent per step.
  std::printf(
      "\nwhere the server's CPU goes in the fan-out (per step; its threads' on-CPU time, not the "
      "tools'):\n");
  for (const ModeFigures& m : modes) {
    const RunnerTier& t = m.runner;
    if (m.fanout.server_cpu_ms.empty() || t.cpu[1].empty() || alone.chain_cpu_ms.empty()) {
      continue;
    }
    double server = Median(m.fanout.server_cpu_ms) / n;
    // In the server the completions arrive one at a time (each tool takes ~1 ms), so the engine
    // writes one transition per step, as in the chain; the instant fan-out batches them.
    double engine = Median(alone.chain_cpu_ms) / n;
    double run = Median(t.cpu[1]);
    std::printf("  %s: server %.3f ms/step\n", m.mode.c_str(), server);
    std::printf("    %-78s %7.3f ms\n",
                "the engine and its transitions (engine alone, chain: one transition per step)",
                engine);
    std::printf("    %-78s %7.3f ms\n",
                "ProcessRunner::Run of the same command, parent side (CPU of this process)", run);
    std::printf("    %-78s %7.3f ms\n",
                "  of which the cgroup (runner minus runner with cgroups off, CPU)",
                run - Median(t.cpu[2]));
    std::printf("    %-78s %7.3f ms\n",
                "  a bare posix_spawn + waitpid of the same command (parent side, CPU)",
                Median(t.cpu[0]));
    std::printf("    %-78s %7.3f ms\n",
                "the rest: executor records (3 SQLite writes), queue and thread hand-offs",
                server - engine - run);
    if (server - engine - run < 0 || run - Median(t.cpu[2]) < 0) {
      std::printf("    (a negative part: the in-process tiers and the runs met different load)\n");
    }
  }

  std::printf(
      "\n-- 2. %d sequential steps of a 10 ms tool (sh script: exec sleep 0.01), median of %d\n",
      seq, reps);
  std::vector<std::pair<std::string, double>> goal2;
  const double s = static_cast<double>(seq);
  for (const ModeFigures& m : modes) {
    double wall = Median(m.seq.wall_ms), own = Median(m.seq.own_ms),
           direct = Median(m.seq.direct_ms);
    std::printf("%s:\n", m.mode.c_str());
    std::printf("  cortex run wall %8.1f ms; sum of the executions' own durations %8.1f ms\n", wall,
                own);
    std::printf("  the same %d commands spawned directly in sequence %8.1f ms (%.3f ms each)\n",
                seq, direct, direct / s);
    std::printf(
        "  -> overhead per step above the tool's own time %.3f ms (records; durations are "
        "truncated to whole ms: ~0.5 ms high on average)\n",
        (wall - own) / s);
    std::printf("  -> overhead per step above the direct spawn %.3f ms; ratio cortex/direct %.2f\n",
                (wall - direct) / s, Ratio(wall, direct));
    if (m.seq.failures)
      std::printf("  %zu FAILED: %s\n", m.seq.failures, m.seq.first_error.c_str());
    if (!m.seq.wall_ms.empty()) goal2.emplace_back(m.mode, (wall - own) / s);
  }
  std::printf(
      "  published per-step overheads, for context: Hatchet 31 ms, Windmill 52 ms, Temporal "
      "74 ms, Kestra 151 ms\n");

  std::printf(
      "\n-- 3. Store: RunTransitions (run row + 1 step row + 1 event) per second, %.1f s each; "
      "baseline: the same 3 statements on a raw sqlite3 connection, 1 thread\n",
      store_seconds);
  for (const StoreRow& r : store_rows) {
    const char* sync = r.fsync ? "synchronous FULL (fsync_every_commit)" : "synchronous NORMAL";
    std::printf("%s:\n", sync);
    auto line = [&](const char* label, const Rate& x) {
      std::printf("  %-34s %10.0f transitions/s  (%zu in %.2f s)", label, x.per_s(), x.n,
                  x.seconds);
      if (!x.error.empty()) std::printf("  FAILED: %s", x.error.c_str());
      std::printf("\n");
    };
    line("raw sqlite3, 1 thread:", r.raw);
    line("Store, 1 thread:", r.one);
    line("Store, 4 threads:", r.four);
    std::printf("  -> ratio Store/raw: 1 thread %.2f, 4 threads %.2f\n",
                Ratio(r.one.per_s(), r.raw.per_s()), Ratio(r.four.per_s(), r.raw.per_s()));
  }

  // ---- Goals.
  {
    bool met = !goal1.empty();
    std::string detail;
    for (const auto& g : goal1) {
      char buf[80];
      std::snprintf(buf, sizeof buf, "%s%s %.2fx", detail.empty() ? "" : ", ", g.label.c_str(),
                    g.ratio);
      detail += buf;
      met = met && g.ratio <= 1.5;
    }
    std::printf(
        "\ngoal: engine <= 1.5x ninja -j2 per step, unsandboxed, durable state on (%s: %s)\n",
        goal1.empty() ? "not measured"
        : met         ? "met"
                      : "MISSED",
        detail.c_str());
  }
  {
    bool met = !goal2.empty();
    std::string detail;
    for (const auto& [mode, ms] : goal2) {
      char buf[80];
      std::snprintf(buf, sizeof buf, "%s%s %.2f ms", detail.empty() ? "" : ", ", mode.c_str(), ms);
      detail += buf;
      met = met && ms < 5.0;
    }
    std::printf("goal: < 5 ms per step above the tool's own time (%s: %s)\n",
                goal2.empty() ? "not measured"
                : met         ? "met"
                              : "MISSED",
                detail.c_str());
  }
  if (cut_short) std::printf("WARNING: --max-seconds reached: fewer repetitions than asked\n");
  std::printf("loadavg at the end: %s (%.0f s)\n", LoadAvg().c_str(),
              std::chrono::duration<double>(Clock::now() - start).count());
  return exit_status;
}
