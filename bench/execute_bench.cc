// execute_bench: what the executor adds to running a tool, and how many calls per second it
// serves, each against a baseline measured in the same run.
//
//   execute_bench [--calls N] [--throughput-calls N] [--clients N] [--workers 2,8] [--no-python]
//                 [--max-seconds S] [--keep]
//
// 1. Overhead. A no-op tool (an `sh` script, and a `python3` one, each printing
//    {"success": true}) called through POST /execute/tool of the real `cortex serve` of this
//    build tree (sync, one keep-alive connection), against the very same command spawned directly
//    by this process: posix_spawn + waitpid with the same argv, environment, working directory,
//    stdin (the parameters) and piped stdout/stderr. The command is built by the executor's own
//    code (CheckParameters + BuildToolProcess, then WrapInSandbox for the sandboxed server), so
//    the sandboxed baseline is the exact bwrap command line the server runs. Both modes:
//    unsandboxed (exec.sandbox: false, exec.allow_unsandboxed: true) and sandboxed (default).
//    A middle tier, the executor's ProcessRunner::Run called in this process on the same spec,
//    separates the runner's share (cgroup, rlimits, pidfd supervision, cleanup) from the
//    server's (HTTP, parameter check, SQLite writes, queue handoff). The three tiers are
//    interleaved call by call so that a change in the machine's load hits them alike.
// 2. Throughput. --throughput-calls sandboxed sh no-op calls from --clients concurrent clients,
//    with the pool at each --workers size (a fresh server each time, exec.queue 2000): calls/s,
//    p50/p99 latency, and the history rows in SQLite (GET /executions, paged). Baseline: the
//    direct spawn loop of the same sandboxed command with as many threads as workers.
//
// All traffic is on 127.0.0.1; every loop is bounded in count and in time (--max-seconds).
// Prints figures; never asserts timing.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
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

extern char** environ;

namespace {
using cortex::bench::Percentile;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Nearest-rank percentile of an unsorted sample (p in [0, 100]).
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

// CPU time, to tell work from waiting. Machine: busy time of all CPUs from /proc/stat (every
// process, including other work on the machine). Server: on-CPU time of the server's own threads
// from /proc/PID/task/*/schedstat (not its children, the tools). Self: this process's threads
// (the load-generating clients), from getrusage.
struct CpuSample {
  double machine_ms = 0, server_ms = 0, self_ms = 0;
};

CpuSample SampleCpu(pid_t server) {
  CpuSample c;
  {
    std::ifstream in("/proc/stat");
    std::string cpu;
    unsigned long long v[8] = {};
    in >> cpu;
    for (auto& x : v) in >> x;
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    c.machine_ms = static_cast<double>(busy) * 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  if (server > 0) {
    std::error_code ec;
    unsigned long long ns = 0;
    for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(server) + "/task", ec)) {
      std::ifstream in(t.path() / "schedstat");
      unsigned long long run = 0;
      if (in >> run) ns += run;
    }
    c.server_ms = static_cast<double>(ns) / 1e6;
  }
  struct rusage ru;
  if (::getrusage(RUSAGE_SELF, &ru) == 0) {
    c.self_ms = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000.0 +
                static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000.0;
  }
  return c;
}

CpuSample operator-(const CpuSample& a, const CpuSample& b) {
  return {a.machine_ms - b.machine_ms, a.server_ms - b.server_ms, a.self_ms - b.self_ms};
}

// Stores why a call failed; returns false.
bool Failed(std::string* why, std::string text) {
  *why = std::move(text);
  return false;
}

// A sample of latencies, plus the calls that did not succeed.
struct Dist {
  std::vector<double> ms;
  size_t failures = 0;
  std::string first_error;
  void Fail(const std::string& why) {
    if (failures++ == 0) first_error = why;
  }
  double P(double p) const { return Percentile(ms, p); }
};

void PrintDist(const char* label, const Dist& d) {
  std::printf("  %-34s p50 %8.3f ms  p90 %8.3f ms  p99 %8.3f ms  (n=%zu", label, d.P(50), d.P(90),
              d.P(99), d.ms.size());
  if (d.failures) std::printf(", %zu FAILED: %s", d.failures, d.first_error.c_str());
  std::printf(")\n");
}

// ---------------------------------------------------------------------------------------------
// The baseline: the command spawned directly, as any caller that wants the tool's output must:
// posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK), like the runner) with the spec's argv, env
// and cwd, in a process group of its own, the parameters written to stdin, stdout and stderr
// read to EOF, then waitpid.

bool DirectRun(const cortex::exec::ProcessSpec& spec, std::string* out, std::string* why) {
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  int in[2], so[2], se[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return Failed(why, "pipe2");
  if (::pipe2(so, O_CLOEXEC) != 0) {
    ::close(in[0]);
    ::close(in[1]);
    return Failed(why, "pipe2");
  }
  if (::pipe2(se, O_CLOEXEC) != 0) {
    for (int fd : {in[0], in[1], so[0], so[1]}) ::close(fd);
    return Failed(why, "pipe2");
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, so[1], 1);
  posix_spawn_file_actions_adddup2(&fa, se[1], 2);
  if (!spec.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, spec.cwd.c_str());
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);  // the HTTP client ignores SIGPIPE; the tool must not inherit it
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
  ::close(so[1]);
  ::close(se[1]);
  if (rc != 0) {
    for (int fd : {in[1], so[0], se[0]}) ::close(fd);
    *why = std::string("posix_spawn: ") + std::strerror(rc);
    return false;
  }
  // The parameters are a few bytes: they fit in the pipe, so one write never blocks.
  if (!spec.stdin_data.empty()) {
    [[maybe_unused]] ssize_t n = ::write(in[1], spec.stdin_data.data(), spec.stdin_data.size());
  }
  ::close(in[1]);
  out->clear();
  struct pollfd fds[2] = {{so[0], POLLIN, 0}, {se[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[4096];
  while (open_fds > 0) {
    if (::poll(fds, 2, 30000) <= 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        if (i == 0) out->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& p : fds) {
    if (p.fd >= 0) ::close(p.fd);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return Failed(why, "waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    *why = "exit status " + std::to_string(status);
    return false;
  }
  if (out->find("\"success\"") == std::string::npos) {
    *why = "unexpected output: " + *out;
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The real server of this build tree.

using cortex::bench::LoadAvg;
using cortex::bench::ReadAll;
// The `cortex` built beside this benchmark.
struct Server : cortex::bench::ServeProcess {
  Server() : ServeProcess(std::string(CORTEX_BINARY_DIR) + "/cortex") {}
};

std::string ServerConfig(bool sandbox, int workers, int queue) {
  std::string y = "exec:\n";
  y += std::string("  sandbox: ") + (sandbox ? "true" : "false") + "\n";
  y += std::string("  allow_unsandboxed: ") + (sandbox ? "false" : "true") + "\n";
  if (workers > 0) y += "  workers: " + std::to_string(workers) + "\n";
  if (queue > 0) y += "  queue: " + std::to_string(queue) + "\n";
  return y;
}

// ---------------------------------------------------------------------------------------------
// The tools and the executor's own view of them.

struct NoopTool {
  std::string name;   // noop_sh, noop_py
  std::string label;  // "sh", "python3"
};

bool WriteTools(const fs::path& manifests, bool python) {
  std::error_code ec;
  auto tool = [&](const std::string& name, const std::string& runtime, const std::string& file,
                  const std::string& script) {
    fs::path dir = manifests / "tools" / name;
    fs::create_directories(dir, ec);
    if (ec) return false;
    std::string yml = "kind: Tool\nversion: \"1.0\"\nname: " + name +
                      "\nsummary: No-op tool of the executor benchmark\nauthor: bench\n"
                      "state: stable\ndescription: 'Prints {\"success\": true} and exits.'\n"
                      "implementation:\n  runtime: " +
                      runtime + "\n  entrypoint: ./" + file + "\ntags: [bench]\n";
    return WriteText(dir / "tool.yml", yml, fs::perms(0644)) &&
           WriteText(dir / file, script, fs::perms(0755));
  };
  bool ok = tool("noop_sh", "sh", "noop.sh", "#!/bin/sh\necho '{\"success\": true}'\n");
  if (python) {
    ok = ok && tool("noop_py", "python3", "noop.py",
                    "#!/usr/bin/env python3\nprint('{\"success\": true}')\n");
  }
  return ok;
}

// What the daemon passes to the executor with the default settings (exec.default_timeout 30s,
// exec.default_memory 512M, exec.default_max_processes 64).
cortex::exec::ToolDefaults ServerDefaults() {
  cortex::exec::ToolDefaults d;
  d.timeout = std::chrono::milliseconds(30000);
  d.memory_bytes = 512ull << 20;
  d.max_processes = 64;
  return d;
}

// The daemon's interpreter resolver: PATH and PYENV_VERSION of the environment the server runs
// with (this process's), resolved once.
cortex::exec::ProgramResolver ServerResolver() {
  const char* path_env = std::getenv("PATH");
  const char* pyenv_version = std::getenv("PYENV_VERSION");
  std::string search_path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  std::string pyenv = pyenv_version ? pyenv_version : "";
  auto cache = std::make_shared<std::map<std::string, std::string>>();
  auto mu = std::make_shared<std::mutex>();
  return [=](const std::string& name) -> cortex::Result<std::string> {
    std::lock_guard lock(*mu);
    auto it = cache->find(name);
    if (it != cache->end()) return it->second;
    auto p = cortex::exec::ResolveProgram(name, search_path, pyenv);
    if (p.ok()) (*cache)[name] = *p;
    return p;
  };
}

// Everything the executor computes for a call before it runs it, done the executor's way:
// CheckParameters, BuildToolProcess, and WrapInSandbox when `sandbox` is given.
struct Prepared {
  cortex::exec::ProcessSpec spec;
  std::string error;
};

Prepared PrepFailed(Prepared* out, std::string why) {
  out->error = std::move(why);
  return std::move(*out);
}

Prepared Prepare(const cortex::registry::Entry& entry, const cortex::exec::ProgramResolver& resolve,
                 const cortex::exec::SandboxInfo* sandbox, const std::string& data_dir) {
  Prepared out;
  const auto* tool = entry.manifest().As<cortex::registry::ToolSpec>();
  if (!tool) return PrepFailed(&out, "not a Tool");
  auto check = cortex::exec::CheckParameters(tool->parameters, Json::object());
  if (!check.ok()) return PrepFailed(&out, "parameters rejected");
  cortex::exec::ToolCall call;
  call.tool = entry.file->manifest.get();
  call.tool_dir = entry.file->path.substr(0, entry.file->path.find_last_of('/'));
  call.parameters = check.values;
  call.execution_id = cortex::exec::NewExecutionId();
  call.idempotency_key = call.execution_id;  // what the executor passes when none is given
  auto spec = cortex::exec::BuildToolProcess(call, ServerDefaults(), resolve);
  if (!spec.ok()) return PrepFailed(&out, spec.status().message());
  out.spec = std::move(spec).value();
  if (sandbox) {
    cortex::exec::SandboxPolicy policy;
    policy.tool_dir = call.tool_dir;
    policy.network = tool->implementation.network.value_or(false);
    policy.hidden_paths = {fs::absolute(data_dir).lexically_normal().string()};
    auto wrapped = cortex::exec::WrapInSandbox(out.spec, policy, *sandbox);
    if (!wrapped.ok()) return PrepFailed(&out, wrapped.status().message());
    out.spec = std::move(wrapped).value();
  }
  return out;
}

std::string ExecuteBody(const std::string& tool) {
  return Json{{"name", tool}, {"parameters", Json::object()}}.dump();
}

// One sync call through the API; true when it answered 200 with a succeeded execution whose
// "sandboxed" flag is the expected one.
bool ApiCall(cortex::http::Client& client, const std::string& body, bool sandboxed,
             std::string* why) {
  auto r = client.Post("/execute/tool", body);
  if (!r.ok()) return Failed(why, r.status().message());
  if (r->status != 200) return Failed(why, "HTTP " + std::to_string(r->status) + ": " + r->body);
  auto j = Json::parse(r->body, nullptr, false);
  if (j.is_discarded() || j.value("status", "") != "succeeded" ||
      j.value("sandboxed", !sandboxed) != sandboxed) {
    return Failed(why, "unexpected answer: " + r->body.substr(0, 300));
  }
  return true;
}

// Runs the spec through the executor's runner. `outside_ms` (when given) receives the part of the
// call outside the runner's own wall clock (which starts at clone and ends once the output is
// drained): creating, reading and removing the run's cgroup, and the setup before the clone.
bool RunnerCall(cortex::exec::ProcessRunner& runner, const cortex::exec::ProcessSpec& spec,
                std::string* why, double* outside_ms = nullptr) {
  auto t0 = Clock::now();
  auto r = runner.Run(
      spec, [](const cortex::exec::OutputLine&) {}, nullptr);
  if (outside_ms && r.ok()) {
    *outside_ms =
        MsBetween(t0, Clock::now()) - std::chrono::duration<double, std::milli>(r->wall).count();
  }
  if (!r.ok()) return Failed(why, r.status().message());
  if (r->reason != cortex::exec::EndReason::kExited || r->exit_code != 0) {
    return Failed(why, "ended: " + r->reason_text + " exit " + std::to_string(r->exit_code));
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// 1. Overhead.

struct Overhead {
  std::string mode, tool;
  Dist direct, runner, runner_nocg, api;
  Dist runner_outside;       // per runner call: Run's time outside the process's own wall clock
  double server_cpu_ms = 0;  // the server's own threads, on CPU, over all the API calls
  bool cut_short = false;
};

// Four tiers per round: the direct spawn, the runner (cgroups on, as in the server), the runner
// with cgroups off (rlimits only), and the API.
Overhead MeasureOverhead(cortex::http::Client& client, const std::string& tool,
                         const cortex::exec::ProcessSpec& spec, cortex::exec::ProcessRunner& runner,
                         cortex::exec::ProcessRunner& runner_nocg, bool sandboxed, int calls,
                         pid_t server, Clock::time_point deadline) {
  Overhead o;
  std::string body = ExecuteBody(tool), out, why;
  // Warm-up (not recorded): page cache, interpreter files, the server's first-call paths.
  for (int i = 0; i < 10; ++i) {
    if (!DirectRun(spec, &out, &why)) o.direct.Fail(why);
    if (!RunnerCall(runner, spec, &why)) o.runner.Fail(why);
    if (!RunnerCall(runner_nocg, spec, &why)) o.runner_nocg.Fail(why);
    if (!ApiCall(client, body, sandboxed, &why)) o.api.Fail(why);
  }
  // Interleaved, in a rotating order, so that drift in the machine's load hits all tiers alike.
  // The server is idle but for the API calls, so its CPU time over the loop is theirs.
  CpuSample cpu0 = SampleCpu(server);
  constexpr int kTiers = 4;
  for (int i = 0; i < calls; ++i) {
    if (Clock::now() >= deadline) {
      o.cut_short = true;
      break;
    }
    for (int k = 0; k < kTiers; ++k) {
      int tier = (i + k) % kTiers;
      double outside = 0;
      auto t0 = Clock::now();
      bool ok = tier == 0   ? DirectRun(spec, &out, &why)
                : tier == 1 ? RunnerCall(runner, spec, &why, &outside)
                : tier == 2 ? RunnerCall(runner_nocg, spec, &why)
                            : ApiCall(client, body, sandboxed, &why);
      double ms = MsBetween(t0, Clock::now());
      Dist& d = tier == 0 ? o.direct : tier == 1 ? o.runner : tier == 2 ? o.runner_nocg : o.api;
      if (ok) {
        d.ms.push_back(ms);
        if (tier == 1) o.runner_outside.ms.push_back(outside);
      } else {
        d.Fail(why);
      }
    }
  }
  o.server_cpu_ms = (SampleCpu(server) - cpu0).server_ms;
  return o;
}

// The parts of a call that can be timed on their own, each by the same code the server runs.
struct Parts {
  Dist http;     // GET of a pre-rendered manifest on the same server and connection
  Dist prepare;  // CheckParameters + BuildToolProcess (+ WrapInSandbox)
  Dist sqlite;   // CreateExecution (running) + FinishExecution (outcome + 1 line)
};

Parts MeasureParts(cortex::http::Client& client, const cortex::registry::Entry& entry,
                   const cortex::exec::ProgramResolver& resolve,
                   const cortex::exec::SandboxInfo* sandbox, const std::string& data_dir,
                   cortex::store::Store& store, int calls, Clock::time_point deadline) {
  Parts p;
  std::string path = "/registry/manifest/Tool/" + cortex::http::UrlEncode(entry.name());
  for (int i = 0; i < calls + 10 && Clock::now() < deadline; ++i) {
    auto t0 = Clock::now();
    auto r = client.Get(path);
    double ms = MsBetween(t0, Clock::now());
    if (!r.ok() || r->status != 200) {
      p.http.Fail(r.ok() ? "HTTP " + std::to_string(r->status) : r.status().message());
    } else if (i >= 10) {
      p.http.ms.push_back(ms);
    }
    t0 = Clock::now();
    Prepared prep = Prepare(entry, resolve, sandbox, data_dir);
    ms = MsBetween(t0, Clock::now());
    if (!prep.error.empty()) {
      p.prepare.Fail(prep.error);
    } else if (i >= 10) {
      p.prepare.ms.push_back(ms);
    }
    // The two writes of one inline sync call, shaped like the executor's records: created as
    // running (sandboxed, while bwrap sets up), then the outcome with its one output line.
    cortex::store::ExecutionRecord rec;
    rec.id = cortex::exec::NewExecutionId();
    rec.name = entry.name();
    rec.status = "running";
    rec.started_ms = cortex::exec::NowMs();
    rec.parameters_json = "{}";
    rec.created_ms = cortex::exec::NowMs();
    rec.sandboxed = sandbox != nullptr;
    rec.idempotency_key = rec.id;
    rec.manifest_version = "1";
    t0 = Clock::now();
    cortex::Status st = store.CreateExecution(rec);
    if (st.ok()) {
      rec.status = "succeeded";
      rec.result_json = R"({"success": true})";
      rec.exit_code = 0;
      rec.finished_ms = cortex::exec::NowMs();
      st = store.FinishExecution(rec, {{1, false, cortex::exec::NowMs(), "{}"}});
    }
    ms = MsBetween(t0, Clock::now());
    if (!st.ok()) {
      p.sqlite.Fail(st.message());
    } else if (i >= 10) {
      p.sqlite.ms.push_back(ms);
    }
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// 2. Throughput.

struct Load {
  double seconds = 0;
  Dist latency;
  CpuSample cpu;  // over the whole load
  size_t done() const { return latency.ms.size() + latency.failures; }
  double rate() const { return seconds > 0 ? static_cast<double>(latency.ms.size()) / seconds : 0; }
};

// `calls` calls shared by `threads` threads, each running `one` (which returns false with a
// reason on failure) until the calls or the deadline run out.
template <class MakeWorker>
Load RunLoad(int calls, int threads, pid_t server, Clock::time_point deadline,
             MakeWorker make_worker) {
  Load load;
  CpuSample cpu0 = SampleCpu(server);
  std::atomic<int> next{0};
  std::mutex mu;
  std::vector<std::thread> pool;
  auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      auto one = make_worker();
      Dist local;
      std::string why;
      while (next.fetch_add(1) < calls && Clock::now() < deadline) {
        auto c0 = Clock::now();
        if (one(&why)) {
          local.ms.push_back(MsBetween(c0, Clock::now()));
        } else {
          local.Fail(why);
        }
      }
      std::lock_guard lock(mu);
      load.latency.ms.insert(load.latency.ms.end(), local.ms.begin(), local.ms.end());
      if (local.failures && load.latency.failures == 0) {
        load.latency.first_error = local.first_error;
      }
      load.latency.failures += local.failures;
    });
  }
  for (auto& th : pool) th.join();
  load.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  load.cpu = SampleCpu(server) - cpu0;
  return load;
}

// Rows of the execution history for `tool` (and `status` when not empty), paged 1,000 at a time
// through GET /executions.
std::optional<size_t> CountHistory(cortex::http::Client& client, const std::string& tool,
                                   const std::string& status) {
  size_t total = 0;
  std::string before;
  for (int page = 0; page < 100; ++page) {
    std::string q = "/executions?limit=1000&tool=" + cortex::http::UrlEncode(tool);
    if (!status.empty()) q += "&status=" + cortex::http::UrlEncode(status);
    if (!before.empty()) q += "&before=" + cortex::http::UrlEncode(before);
    auto r = client.Get(q);
    if (!r.ok() || r->status != 200) return std::nullopt;
    auto j = Json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j.contains("executions")) return std::nullopt;
    const Json& list = j["executions"];
    total += list.size();
    if (list.size() < 1000) return total;
    before = list.back().value("execution_id", "");
  }
  return total;
}

void Usage() {
  std::fprintf(stderr,
               "usage: execute_bench [--calls N (default 300)] [--throughput-calls N (default "
               "1000)]\n"
               "                     [--clients N (default 16)] [--workers LIST (default 2,8)]\n"
               "                     [--no-python] [--max-seconds S (default 900)] [--keep]\n");
}

}  // namespace

int main(int argc, char** argv) {
  // The executor logs a line a call at info; thousands of calls would bury the figures.
  cortex::log::SetLevel(cortex::log::Level::kWarn);
  int calls = 300, tp_calls = 1000, clients = 16;
  std::vector<int> worker_counts = {2, 8};
  bool python = true, keep = false;
  double max_seconds = 900;
  cortex::bench::Flags flags(argc, argv, Usage);
  for (std::string a; flags.Next(&a);) {
    if (a == "--calls") {
      calls = std::clamp(std::atoi(flags.Value()), 1, 100000);
    } else if (a == "--throughput-calls") {
      tp_calls = std::clamp(std::atoi(flags.Value()), 0, 100000);
    } else if (a == "--clients") {
      clients = std::clamp(std::atoi(flags.Value()), 1, 256);
    } else if (a == "--workers") {
      worker_counts.clear();
      std::stringstream ss(flags.Value());
      std::string item;
      while (std::getline(ss, item, ',')) {
        int w = std::atoi(item.c_str());
        if (w >= 1 && w <= 256) worker_counts.push_back(w);
      }
    } else if (a == "--no-python") {
      python = false;
    } else if (a == "--max-seconds") {
      max_seconds = std::atof(flags.Value());
    } else if (a == "--keep") {
      keep = true;
    } else {
      Usage();
      return 2;
    }
  }
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(max_seconds));

  cortex::bench::ScratchDir scratch("cortex-exec-bench", keep);
  if (!scratch.ok()) return 1;
  const fs::path dir = scratch.path();
  std::error_code ec;
  fs::path manifests = dir / "manifests";
  if (!WriteTools(manifests, python)) {
    std::fprintf(stderr, "cannot write the tools under %s\n", manifests.c_str());
    return 1;
  }

  // The executor's view of the tools, from the same registry code the server uses.
  cortex::registry::RegistryOptions ropts;
  ropts.root = manifests.string();
  cortex::registry::Registry registry(ropts);
  if (auto st = registry.LoadAll(); !st.ok()) {
    std::fprintf(stderr, "loading %s: %s\n", manifests.c_str(), st.message().c_str());
    return 1;
  }
  auto snap = registry.snapshot();
  std::vector<NoopTool> tools = {{"noop_sh", "sh"}};
  if (python) tools.push_back({"noop_py", "python3"});
  for (const auto& t : tools) {
    const auto* e = snap->Find(cortex::registry::Kind::kTool, t.name);
    if (!e || !e->resolved() || !snap->errors().empty()) {
      std::fprintf(stderr, "Tool/%s did not load cleanly from %s\n", t.name.c_str(),
                   manifests.c_str());
      return 1;
    }
  }
  auto entry = [&](const std::string& name) -> const cortex::registry::Entry& {
    return *snap->Find(cortex::registry::Kind::kTool, name);
  };
  cortex::exec::ProgramResolver resolve = ServerResolver();
  auto runner = cortex::exec::MakeProcessRunner();
  cortex::exec::RunnerOptions nocg_options;
  nocg_options.use_cgroups = false;
  // Its "cgroups unavailable (disabled by configuration)" warning is expected here.
  auto log_level = cortex::log::GetLevel();
  cortex::log::SetLevel(cortex::log::Level::kError);
  auto runner_nocg = cortex::exec::MakeProcessRunner(nocg_options);
  cortex::log::SetLevel(log_level);

  // A store of its own (same code, same filesystem as the servers' data folders) for timing the
  // SQLite writes of a call apart from everything else.
  fs::create_directories(dir / "parts-db", ec);
  cortex::store::SqliteOptions sopts;
  sopts.path = (dir / "parts-db" / "cortex.db").string();
  auto parts_store = cortex::store::OpenSqliteStore(sopts);
  if (!parts_store.ok()) {
    std::fprintf(stderr, "cannot open %s: %s\n", sopts.path.c_str(),
                 parts_store.status().message().c_str());
    return 1;
  }

  std::printf("== execute_bench ==\n");
  std::printf(
      "tools: %s in %s%s; %d calls per tier, %d throughput calls from %d clients\n",
      python ? "noop_sh (runtime sh) and noop_py (runtime python3)" : "noop_sh (runtime sh)",
      manifests.c_str(), keep ? " (kept)" : "", calls, tp_calls, clients);
  std::printf("machine: %u cores, loadavg %s\n", std::thread::hardware_concurrency(),
              LoadAvg().c_str());
  std::fflush(stdout);

  int exit_status = 0;
  bool cut_short = false;

  // ---- 1. Overhead, unsandboxed then sandboxed.
  std::vector<Overhead> results;
  std::vector<std::pair<std::string, Parts>> parts;  // per mode, for the sh tool
  for (bool sandboxed : {false, true}) {
    const char* mode = sandboxed ? "sandboxed" : "unsandboxed";
    fs::path data = dir / (std::string("data-") + mode);
    fs::path config = dir / (std::string("cortex-") + mode + ".yml");
    WriteText(config, ServerConfig(sandboxed, 0, 0), fs::perms(0644));
    Server server;
    if (!server.Start(manifests, data, dir / (std::string("serve-") + mode + ".log"),
                      {"--config", config.string()})) {
      std::fprintf(stderr, "cortex serve (%s) did not start; its log:\n%s\n", mode,
                   server.log().c_str());
      return 1;
    }
    std::optional<cortex::exec::SandboxInfo> info;
    if (sandboxed) {
      // The same detection the daemon runs, on the same support folder, so the baseline gets
      // the same bwrap command line (uid mode, binds, passwd/group files).
      auto detected = cortex::exec::DetectSandbox("", (data / "sandbox").string());
      if (!detected.ok()) {
        std::printf("\nsandboxed: SKIPPED, bubblewrap is not usable here: %s\n",
                    detected.status().message().c_str());
        exit_status = 1;
        continue;
      }
      info = std::move(detected).value();
      std::printf("\nsandbox: %s\n", info->Describe().c_str());
    }
    cortex::http::Client client(server.url());
    std::printf("%scortex serve (pid %d, %s) on %s\n", sandboxed ? "" : "\n",
                static_cast<int>(server.pid()), mode, server.url().c_str());
    for (const auto& t : tools) {
      Prepared prep = Prepare(entry(t.name), resolve, info ? &*info : nullptr, data.string());
      if (!prep.error.empty()) {
        std::fprintf(stderr, "cannot build the command of %s: %s\n", t.name.c_str(),
                     prep.error.c_str());
        return 1;
      }
      if (t.name == "noop_sh") {
        std::string argv_text;
        for (const auto& a : prep.spec.argv) argv_text += (argv_text.empty() ? "" : " ") + a;
        std::printf("  command (%s, %zu args, %zu env vars, cwd %s): %.400s%s\n", mode,
                    prep.spec.argv.size(), prep.spec.env.size(), prep.spec.cwd.c_str(),
                    argv_text.c_str(), argv_text.size() > 400 ? " ..." : "");
      }
      Overhead o = MeasureOverhead(client, t.name, prep.spec, *runner, *runner_nocg, sandboxed,
                                   calls, server.pid(), deadline);
      o.mode = mode;
      o.tool = t.label;
      cut_short |= o.cut_short;
      results.push_back(std::move(o));
      std::fflush(stdout);
    }
    parts.emplace_back(mode,
                       MeasureParts(client, entry("noop_sh"), resolve, info ? &*info : nullptr,
                                    data.string(), **parts_store, calls, deadline));
    int code = server.Stop();
    if (code != 0) std::printf("  (server exit code %d)\n", code);
  }

  std::printf(
      "\n-- overhead: POST /execute/tool (sync, one keep-alive client) vs the same "
      "command spawned directly\n");
  std::printf(
      "   (tiers interleaved call by call; ProcessRunner::Run = the executor's runner in "
      "this process)\n");
  for (const auto& o : results) {
    std::printf("%s, %s no-op:\n", o.mode.c_str(), o.tool.c_str());
    PrintDist("direct posix_spawn + waitpid:", o.direct);
    PrintDist("ProcessRunner::Run, same spec:", o.runner);
    PrintDist("ProcessRunner::Run, cgroups off:", o.runner_nocg);
    PrintDist("  runner outside the child's wall:", o.runner_outside);
    PrintDist("POST /execute/tool:", o.api);
    double d50 = o.direct.P(50);
    std::printf(
        "  -> Cortex adds %.3f ms (p50) above the direct spawn (p90 %+.3f, p99 %+.3f ms); ratio "
        "api/direct p50 %.2f; of which the runner %+.3f ms, the server %+.3f ms\n",
        o.api.P(50) - d50, o.api.P(90) - o.direct.P(90), o.api.P(99) - o.direct.P(99),
        d50 > 0 ? o.api.P(50) / d50 : 0, o.runner.P(50) - d50, o.api.P(50) - o.runner.P(50));
    if (o.direct.failures || o.runner.failures || o.runner_nocg.failures || o.api.failures) {
      exit_status = 1;
    }
  }

  for (const auto& [mode, p] : parts) {
    const Overhead* sh = nullptr;
    for (const auto& o : results) {
      if (o.mode == mode && o.tool == "sh") sh = &o;
    }
    if (!sh) continue;
    std::printf("\nwhere the time goes (%s sh no-op, p50 of each part timed on its own):\n",
                mode.c_str());
    double added = sh->api.P(50) - sh->direct.P(50);
    double runner_part = sh->runner.P(50) - sh->direct.P(50);
    double http = p.http.P(50), prep = p.prepare.P(50), sql = p.sqlite.P(50);
    std::printf("  %-70s %8.3f ms\n", "total added above the direct spawn", added);
    std::printf("  %-70s %8.3f ms\n",
                "HTTP round trip (GET of a pre-rendered manifest, same connection)", http);
    std::printf("  %-70s %8.3f ms\n",
                mode == "sandboxed"
                    ? "parameter check + command (CheckParameters, BuildToolProcess, WrapInSandbox)"
                    : "parameter check + command (CheckParameters, BuildToolProcess)",
                prep);
    std::printf("  %-70s %8.3f ms\n",
                "SQLite: create (running) + finish with 1 log line (Store, same fs)", sql);
    std::printf("  %-70s %8.3f ms\n",
                "ProcessRunner over posix_spawn (cgroup, rlimits, pidfd, cleanup)", runner_part);
    std::printf("  %-70s %8.3f ms\n",
                "  of which the cgroup (runner minus runner with cgroups off)",
                sh->runner.P(50) - sh->runner_nocg.P(50));
    std::printf("  %-70s %8.3f ms\n",
                "  of which outside the child's wall clock (cgroup mkdir/stats/rmdir)",
                sh->runner_outside.P(50));
    std::printf("  %-70s %8.3f ms\n", "rest (queue handoff, thread wake-ups, JSON, request parse)",
                added - http - prep - sql - runner_part);
    size_t n = sh->api.ms.size() + sh->api.failures;
    std::printf("  %-70s %8.3f ms\n",
                "server CPU per call (its own threads on CPU, whatever the part; not the tool)",
                n ? sh->server_cpu_ms / static_cast<double>(n) : 0.0);
    if (p.http.failures || p.prepare.failures || p.sqlite.failures) {
      std::printf("  WARNING: part failures: http %zu (%s), prepare %zu (%s), sqlite %zu (%s)\n",
                  p.http.failures, p.http.first_error.c_str(), p.prepare.failures,
                  p.prepare.first_error.c_str(), p.sqlite.failures, p.sqlite.first_error.c_str());
    }
  }

  // ---- 2. Throughput: the sandboxed sh no-op through the API, pool at each size, vs the direct
  // spawn loop of the same command with as many threads.
  struct Row {
    int workers;
    Load api, direct, runner;
    std::optional<size_t> rows, succeeded;
    size_t expected_rows;
  };
  std::vector<Row> rows;
  constexpr int kWarmup = 8;
  for (int workers : tp_calls > 0 ? worker_counts : std::vector<int>{}) {
    if (Clock::now() >= deadline) {
      cut_short = true;
      break;
    }
    std::string tag = "w" + std::to_string(workers);
    fs::path data = dir / ("data-throughput-" + tag);
    fs::path config = dir / ("cortex-throughput-" + tag + ".yml");
    WriteText(config, ServerConfig(true, workers, 2000), fs::perms(0644));
    Server server;
    if (!server.Start(manifests, data, dir / ("serve-throughput-" + tag + ".log"),
                      {"--config", config.string()})) {
      std::fprintf(stderr, "cortex serve (workers %d) did not start; its log:\n%s\n", workers,
                   server.log().c_str());
      return 1;
    }
    auto detected = cortex::exec::DetectSandbox("", (data / "sandbox").string());
    if (!detected.ok()) {
      std::printf("\nthroughput: SKIPPED, bubblewrap is not usable here: %s\n",
                  detected.status().message().c_str());
      exit_status = 1;
      break;
    }
    Prepared prep = Prepare(entry("noop_sh"), resolve, &*detected, data.string());
    if (!prep.error.empty()) {
      std::fprintf(stderr, "cannot build the command: %s\n", prep.error.c_str());
      return 1;
    }
    Row row;
    row.workers = workers;
    std::string url = server.url(), body = ExecuteBody("noop_sh");
    {
      cortex::http::Client warm(url);
      std::string why;
      for (int i = 0; i < kWarmup; ++i) ApiCall(warm, body, true, &why);
    }
    row.api = RunLoad(tp_calls, clients, server.pid(), deadline, [&] {
      auto client = std::make_shared<cortex::http::Client>(url);
      return [client, &body](std::string* why) { return ApiCall(*client, body, true, why); };
    });
    row.direct = RunLoad(tp_calls, workers, -1, deadline, [&] {
      return [&prep](std::string* why) {
        std::string out;
        return DirectRun(prep.spec, &out, why);
      };
    });
    // The executor's runner alone, with as many threads as workers: the runner's share.
    row.runner = RunLoad(tp_calls, workers, -1, deadline, [&] {
      return [&prep, &runner](std::string* why) { return RunnerCall(*runner, prep.spec, why); };
    });
    {
      cortex::http::Client client(url);
      row.rows = CountHistory(client, "noop_sh", "");
      row.succeeded = CountHistory(client, "noop_sh", "succeeded");
    }
    row.expected_rows = static_cast<size_t>(kWarmup) + row.api.done();
    int code = server.Stop();
    if (code != 0) std::printf("  (server exit code %d)\n", code);
    rows.push_back(std::move(row));
  }
  if (!rows.empty()) {
    std::printf(
        "\n-- throughput: %d sandboxed sh no-op calls through POST /execute/tool from %d "
        "clients;\n   baseline: the same bwrap command spawned directly by as many "
        "threads as workers\n",
        tp_calls, clients);
  }
  auto print_load = [](const std::string& label, const Load& l, bool server) {
    double n = static_cast<double>(std::max<size_t>(1, l.done()));
    std::printf(
        "  %-34s %8.1f calls/s  p50 %8.3f ms  p99 %8.3f ms  (%zu calls in %.2f s; CPU "
        "per call: machine %.2f ms",
        label.c_str(), l.rate(), l.latency.P(50), l.latency.P(99), l.latency.ms.size(), l.seconds,
        l.cpu.machine_ms / n);
    if (server) {
      std::printf(", server threads %.2f ms, clients %.2f ms", l.cpu.server_ms / n,
                  l.cpu.self_ms / n);
    }
    if (l.latency.failures) {
      std::printf("; %zu FAILED: %s", l.latency.failures, l.latency.first_error.c_str());
    }
    std::printf(")\n");
  };
  for (const Row& r : rows) {
    std::printf("workers %d:\n", r.workers);
    print_load("cortex API:", r.api, true);
    print_load("direct spawn, " + std::to_string(r.workers) + " threads:", r.direct, false);
    print_load("ProcessRunner, " + std::to_string(r.workers) + " threads:", r.runner, false);
    double ratio = r.direct.rate() > 0 ? r.api.rate() / r.direct.rate() : 0;
    std::printf("  -> throughput ratio cortex/direct %.2f (ProcessRunner/direct %.2f)\n", ratio,
                r.direct.rate() > 0 ? r.runner.rate() / r.direct.rate() : 0);
    std::printf(
        "  history (SQLite, GET /executions paged): %s rows for noop_sh, %s succeeded; "
        "expected %zu (%d warm-up + %zu measured)%s\n",
        r.rows ? std::to_string(*r.rows).c_str() : "?",
        r.succeeded ? std::to_string(*r.succeeded).c_str() : "?", r.expected_rows, kWarmup,
        r.api.done(),
        r.rows && *r.rows == r.expected_rows ? "" : "  WARNING: history does not match");
    if (r.api.latency.failures || r.direct.latency.failures || r.runner.latency.failures ||
        !r.rows || *r.rows != r.expected_rows) {
      exit_status = 1;
    }
  }

  // ---- Goal: the sandboxed runs.
  std::string goal_detail;
  bool met = true, any = false;
  for (const auto& o : results) {
    if (o.mode != "sandboxed") continue;
    double added = o.api.P(50) - o.direct.P(50);
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s +%.3f ms", goal_detail.empty() ? "" : ", ", o.tool.c_str(),
                  added);
    goal_detail += buf;
    met = met && added <= 1.0 && o.api.failures == 0 && !o.api.ms.empty();
    any = true;
  }
  std::printf(
      "\ngoal: Cortex adds <= 1 ms (p50) above the direct spawn of the same sandboxed "
      "command (%s: %s)\n",
      any ? (met ? "met" : "MISSED") : "not measured", goal_detail.c_str());
  if (cut_short) std::printf("WARNING: --max-seconds reached: fewer calls than asked\n");
  std::printf("loadavg at the end: %s\n", LoadAvg().c_str());
  return exit_status;
}
