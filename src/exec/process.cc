// The real ProcessRunner: one child per Run, supervised from the calling thread.
//
// Spawning. The child is started with clone(CLONE_VM | CLONE_VFORK) running ChildMain on a small
// private stack, then execve. posix_spawn cannot set rlimits nor join a cgroup before exec, and
// setting them from the parent afterwards (prlimit, writing the pid into cgroup.procs) races with
// the child's first instructions; fork() copies the page tables of the whole server (~19 ms for
// a 1 GiB parent). With CLONE_VM the child borrows the parent's memory and the calling thread
// stays suspended until the exec, so the cost is that of vfork. The price is the vfork
// discipline: ChildMain only makes raw, async-signal-safe system calls on data prepared by the
// parent (no allocation, no locks), and it reports a failure by storing errno in the shared
// ChildArgs (which the parent reads after clone returns), not through a pipe.
//   ChildMain: resets every signal disposition to default, joins the run's cgroup(s), becomes
//   the leader of its own process group, applies rlimits (RLIMIT_CORE is always 0), wires the
//   pipes to 0/1/2, chdir, marks every other fd close-on-exec, clears the signal mask, execve.
// All signals are blocked in the calling thread around clone, so no handler of the server ever
// runs on the child's stack. When the run's cgroup slot holds a standby child (see "Standby
// children" below: cloned ahead of time, already inside the cgroups), that child takes the run
// instead, and no cgroup migration is left on the calling path.
// A start gate (ProcessSpec::start_gate) is a pipe whose read end the child gets as descriptor 3;
// the runner writes to it once ProcessSpec::on_spawned has returned OK.
//
// Supervision. One poll() loop per Run over stdout, stderr, stdin (while there is data to
// write) and a pidfd of the child (readable when it exits). Deadlines (timeout, SIGKILL after the
// grace) are poll timeouts; a CancelToken is a flag, so it is checked every kCancelPoll while
// the process runs. When the child exits, what is left of its process group (and of its cgroup:
// processes that left the group with setsid) is killed with SIGKILL, the pipes are drained, and
// Run returns only once the group no longer exists and the cgroup is empty; the empty cgroup's
// directory is removed right after by the runner's janitor thread (off the caller's path).
//
// Limits. memory_bytes and max_processes use a per-run cgroup when the machine allows one:
// v2 when a cgroup2 hierarchy with the memory and pids controllers can be delegated (default
// <mount>/cortex/<run>), else v1 (<v1 mount>/{memory,pids}/cortex/<run>). Without a usable cgroup
// memory falls back to RLIMIT_AS and max_processes is not enforced (RLIMIT_NPROC counts every
// process of the uid and does nothing for root); ProcessResult::limits_note says so and the
// runner logs it once. A run is never failed because cgroups are missing.#include "exec/process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <thread>
#include <utility>

#include "common/fd.h"
#include "common/log.h"
#include "exec/process_cgroups.h"
#include "exec/process_child.h"
#include "exec/process_sys.h"

namespace cortex::exec {

std::string_view EndReasonName(EndReason reason) {
  switch (reason) {
    case EndReason::kExited:
      return "exited";
    case EndReason::kSignaled:
      return "signaled";
    case EndReason::kTimeout:
      return "timeout";
    case EndReason::kCancelled:
      return "cancelled";
    case EndReason::kOutputLimit:
      return "output_limit";
    case EndReason::kMemoryLimit:
      return "memory_limit";
    case EndReason::kCpuLimit:
      return "cpu_limit";
    case EndReason::kProcessLimit:
      return "process_limit";
  }
  return "unknown";
}

namespace {

using namespace internal;  // the runner's own parts: process_{sys,child,cgroups}.h
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMaxLineBytes = 64 * 1024;   // a longer line is delivered in pieces
constexpr milliseconds kCancelPoll{20};       // CancelToken is a flag: how often it is looked at
constexpr milliseconds kNoPidfdPoll{10};      // exit polling when pidfd_open is unavailable
constexpr milliseconds kDrainAfterExit{500};  // EOF wait once the group is dead (escaped holders)

Status StartError(const ChildArgs& a, const ProcessSpec& spec) {
  const std::string& program = spec.argv[0];
  std::string step = a.failed_step ? a.failed_step : "start";
  std::string why = ErrnoText(a.err);
  if (step == "exec") {
    switch (a.err) {
      case ENOENT:
        return NotFoundError("cannot run " + program + ": no such file");
      case EACCES:
      case EPERM:
        return Status(StatusCode::kPermissionDenied,
                      "cannot run " + program + ": not executable (" + why + ")");
      case ENOEXEC:
        return FailedPreconditionError("cannot run " + program + ": not an executable format");
      default:
        return FailedPreconditionError("cannot run " + program + ": " + why);
    }
  }
  if (step == "chdir") {
    return (a.err == ENOENT ? NotFoundError : FailedPreconditionError)(
        "cannot run " + program + ": working directory " + spec.cwd + ": " + why);
  }
  if (a.err == EAGAIN || a.err == ENOMEM) {
    return ResourceExhaustedError("cannot run " + program + ": " + step + ": " + why);
  }
  return InternalError("cannot run " + program + ": " + step + ": " + why);
}

// Moves a descriptor above 0/1/2 (only when the server itself has them closed), so that the
// child's dup2 onto 0/1/2 never overwrites another of its pipes.
Fd AboveStdio(Fd fd) {
  if (!fd.valid() || fd.get() > 2) return fd;
  return Fd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3));
}

// Blocks SIGPIPE in this thread while it writes to a child's stdin, so a child that exits
// without reading makes write() fail with EPIPE instead of killing the server; a SIGPIPE raised
// by those writes is consumed before the old mask comes back. The process-wide disposition is
// never touched.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~ScopedSigpipeBlock() {
    if (raised_ && !was_pending_) {
      struct timespec zero = {0, 0};
      while (sigtimedwait(&pipe_, nullptr, &zero) == SIGPIPE) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;
  void NoteEpipe() { raised_ = true; }

 private:
  sigset_t pipe_, old_;
  bool was_pending_ = false, raised_ = false;
};

// ---------------------------------------------------------------------------------------------
// The parent side.

// One captured stream: bounded text, totals, line splitting for on_line.
struct Stream {
  Fd fd;
  bool is_stderr = false;
  std::string* data = nullptr;
  bool* truncated = nullptr;
  uint64_t total = 0;
  std::string line;  // the current partial line (only when on_line is set)
};

// The started child: its pid/group and cgroup. The destructor is the backstop that makes
// "nothing left behind" hold on every path, including an exception thrown by on_line.
class Child {
 public:
  Child(pid_t pid, std::unique_ptr<RunCgroup> cgroup) : pid_(pid), cgroup_(std::move(cgroup)) {}
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (!reaped_) {
      ::kill(-pid_, SIGKILL);
      int status;
      while (::wait4(pid_, &status, 0, nullptr) < 0 && errno == EINTR) {
      }
      reaped_ = true;
    }
    KillRemaining();
  }

  pid_t pid() const { return pid_; }
  bool reaped() const { return reaped_; }
  RunCgroup* cgroup() const { return cgroup_.get(); }

  // Signals the process group (while the leader is unreaped its pgid cannot be reused).
  void SignalGroup(int sig) const { ::kill(-pid_, sig); }

  // Reaps the main process if it has exited. True once reaped.
  bool TryReap(int* status, struct rusage* usage) {
    if (reaped_) return true;
    pid_t r;
    while ((r = ::wait4(pid_, status, WNOHANG, usage)) < 0 && errno == EINTR) {
    }
    if (r == pid_) reaped_ = true;
    return reaped_;
  }

  // After the main process is reaped: SIGKILL what is left of its group and cgroup, then wait
  // (bounded) until none of it exists any more, zombies included. The runner is a child
  // subreaper, so the orphans of this run are our children: those of the group are reaped with
  // waitpid(-pgid) (which only touches this run's group), those that left the group but not the
  // cgroup through their pidfds (exact, no pid reuse). Without the subreaper, init reaps them.
  void KillRemaining() {
    if (done_) return;
    done_ = true;
    SignalRemaining();
    std::vector<Fd>& killed = killed_;
    bool group_alive = group_alive_;
    bool cgroup_empty = cgroup_empty_;
    auto deadline = Clock::now() + kGoneDeadline;
    auto pause = microseconds(20);
    while (group_alive || !cgroup_empty || !killed.empty()) {
      while (::waitpid(-pid_, nullptr, WNOHANG) > 0) {
      }
      std::erase_if(killed, [](const Fd& fd) {
        siginfo_t info;
        info.si_pid = 0;
        ::waitid(P_PIDFD, static_cast<id_t>(fd.get()), &info, WEXITED | WNOHANG);
        // Gone once reaped, by us or by whoever its parent is.
        return info.si_pid != 0 || (PidfdSendSignal(fd.get(), 0) != 0 && errno == ESRCH);
      });
      group_alive = ::kill(-pid_, 0) == 0;
      if (!cgroup_empty) cgroup_empty = cgroup_->KillAll(&killed);
      if (!group_alive && cgroup_empty && killed.empty()) break;
      if (Clock::now() >= deadline) {
        log::Warn(kComponent, "processes of group " + std::to_string(pid_) +
                                  " still exist after SIGKILL; giving up waiting");
        break;
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, microseconds(5000));
    }
  }

  // The first half of KillRemaining: SIGKILL to what is left of the group and the cgroup,
  // without waiting for it to be gone.
  void SignalRemaining() {
    if (signalled_) return;
    signalled_ = true;
    group_alive_ = ::kill(-pid_, SIGKILL) == 0;
    cgroup_empty_ = !cgroup_ || cgroup_->KillAll(&killed_);
  }

  RunCgroup::Stats ReadCgroupStats() const {
    return cgroup_ ? cgroup_->ReadStats() : RunCgroup::Stats{};
  }

  // Removes the cgroup (after its stats were read).
  void ReleaseCgroup() { cgroup_.reset(); }

 private:
  pid_t pid_;
  std::unique_ptr<RunCgroup> cgroup_;
  bool reaped_ = false;
  bool done_ = false;
  bool signalled_ = false;
  bool group_alive_ = false, cgroup_empty_ = true;  // as SignalRemaining found them
  std::vector<Fd> killed_;  // pidfds of cgroup members signalled, until they are gone
};

// Finishes runs in the background (ProcessSpec::reap_in_background): once a run's main process
// has exited and its output is drained, what is left of its group and cgroup is sent SIGKILL,
// waited for and reaped here, and the cgroup released, off the caller's path. Under
// bubblewrap that is the sandbox's pid-namespace init, whose exit tears the sandbox's namespaces
// down: ~0.3 ms here that a caller need not wait for. Bounded: past kMaxPending runs, the caller
// finishes its own run.
class Reaper {
 public:
  static constexpr size_t kMaxPending = 64;

  // Takes the child (and returns true), or leaves it to the caller when the queue is full.
  bool Adopt(std::unique_ptr<Child>& child) {
    std::vector<std::unique_ptr<Child>> one;
    one.push_back(std::move(child));
    if (queue_.TryPushAll(one)) return true;
    child = std::move(one.front());
    return false;
  }

 private:
  BackgroundQueue<std::unique_ptr<Child>> queue_{kMaxPending, [](std::unique_ptr<Child>& child) {
                                                   child->KillRemaining();
                                                   // Releases the cgroup (back to the pool, or
                                                   // to the janitor).
                                                   child.reset();
                                                 }};
};

bool MemoryErrorText(const std::string& err) {
  for (const char* needle : {"MemoryError", "bad_alloc", "out of memory", "Out of memory",
                             "Cannot allocate memory", "memory exhausted"}) {
    if (err.find(needle) != std::string::npos) return true;
  }
  return false;
}

// Why the supervisor stopped the process, if it did.
enum class StopCause { kNone, kTimeout, kCancel, kOutput };

// What the supervisor saw; Classify turns it into the result's reason.
struct Ending {
  int status = 0;                     // from wait4
  StopCause stop = StopCause::kNone;  // why we signalled the group
  bool escalated = false;             // we sent SIGKILL while the process ran
  const char* output_stream = "";     // kOutput: "stdout" or "stderr"
  RunCgroup::Stats cgroup;            // zeros without a cgroup
  bool memory_by_cgroup = false, pids_by_cgroup = false, memory_by_rlimit = false;
};

// Sets exit_code, signal, reason and reason_text (cpu times and stderr are already set). The
// order is the precedence: the caller's cancel, then the limits the kernel enforced or we did
// (a process killed by the OOM killer or refused forks is reported as such even when it then
// ran into the timeout), then the process's own doing.
void Classify(const Limits& limits, const Ending& e, ProcessResult* result) {
  bool exited_normally = WIFEXITED(e.status);
  if (exited_normally) result->exit_code = WEXITSTATUS(e.status);
  if (WIFSIGNALED(e.status)) result->signal = WTERMSIG(e.status);
  bool failed = !exited_normally || result->exit_code != 0;
  std::string how = exited_normally ? "exited with code " + std::to_string(result->exit_code)
                                    : "killed by " + SignalName(result->signal);
  std::string grace_text = e.escalated ? "; killed with SIGKILL after the " +
                                             std::to_string(limits.kill_grace.count()) + " ms grace"
                                       : "";
  auto cpu_used = result->cpu_user + result->cpu_system;
  bool cpu_over = limits.cpu_time && cpu_used >= *limits.cpu_time;
  bool killed_by_kernel = result->signal == SIGKILL && !e.escalated && e.stop != StopCause::kOutput;
  bool cpu_signal =
      result->signal == SIGXCPU ||
      (exited_normally && result->exit_code == 128 + SIGXCPU) ||  // via a wrapper
      (cpu_over && (killed_by_kernel || (exited_normally && result->exit_code == 128 + SIGKILL)));
  if (e.stop == StopCause::kCancel) {
    result->reason = EndReason::kCancelled;
    result->reason_text = "cancelled" + grace_text;
  } else if (e.memory_by_cgroup && e.cgroup.oom_kills > 0 && failed) {
    result->reason = EndReason::kMemoryLimit;
    result->reason_text = "memory limit of " + FormatBytes(*limits.memory_bytes) +
                          " reached: killed by the OOM killer (" + how + ")";
  } else if (e.stop == StopCause::kOutput) {
    result->reason = EndReason::kOutputLimit;
    result->reason_text = std::string(e.output_stream) + " exceeded the output limit of " +
                          FormatBytes(limits.max_output_bytes) + grace_text;
  } else if (limits.cpu_time && cpu_signal && e.stop != StopCause::kTimeout) {
    result->reason = EndReason::kCpuLimit;
    result->reason_text = "CPU time limit of " + std::to_string(limits.cpu_time->count()) +
                          " s exceeded (" + how + ")";
  } else if (e.pids_by_cgroup && e.cgroup.fork_failures > 0 && failed) {
    result->reason = EndReason::kProcessLimit;
    result->reason_text = "process limit of " + std::to_string(*limits.max_processes) +
                          " reached: " + std::to_string(e.cgroup.fork_failures) +
                          " fork(s) refused";
    if (e.stop == StopCause::kTimeout) {
      result->reason_text +=
          "; then timed out after " + std::to_string(limits.timeout->count()) + " ms";
    } else {
      result->reason_text += " (" + how + ")";
    }
  } else if (e.stop == StopCause::kTimeout) {
    result->reason = EndReason::kTimeout;
    result->reason_text =
        "timed out after " + std::to_string(limits.timeout->count()) + " ms" + grace_text;
  } else if (e.memory_by_rlimit && failed && MemoryErrorText(result->stderr_data)) {
    result->reason = EndReason::kMemoryLimit;
    result->reason_text = "memory limit of " + FormatBytes(*limits.memory_bytes) +
                          " (RLIMIT_AS) reached: an allocation failed (" + how + ")";
  } else if (WIFSIGNALED(e.status)) {
    result->reason = EndReason::kSignaled;
    result->reason_text =
        result->signal == SIGXFSZ ? "file size limit exceeded (killed by SIGXFSZ)" : how;
  } else {
    result->reason = EndReason::kExited;
    result->reason_text = how;
  }
}

class RealProcessRunner final : public ProcessRunner {
 public:
  explicit RealProcessRunner(RunnerOptions options) : cgroups_(DetectCgroups(options)) {
    if (options.child_subreaper && ::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
      log::Warn(kComponent, "PR_SET_CHILD_SUBREAPER: " + ErrnoText(errno) +
                                "; orphans of tools are left to init to reap");
    }
    if (cgroups_.version == 0) {
      log::Warn(kComponent, "cgroups unavailable (" + cgroups_.unavailable +
                                "): memory is limited with RLIMIT_AS, max_processes is not "
                                "enforced");
    } else {
      std::string where;
      for (auto& p : cgroups_.parents) where += (where.empty() ? "" : ", ") + p.path;
      log::Debug(kComponent,
                 "per-run cgroups (v" + std::to_string(cgroups_.version) + ") under " + where);
      if (std::none_of(cgroups_.parents.begin(), cgroups_.parents.end(),
                       [](const CgroupParent& p) { return p.cpu_quota; })) {
        log::Info(kComponent,
                  "no cgroup cpu controller for per-run cgroups: resources.cpu "
                  "(a CPU quota) is not applied");
      }
    }
  }

  Result<ProcessResult> Run(const ProcessSpec& spec,
                            const std::function<void(const OutputLine&)>& on_line,
                            const CancelToken* cancel) override;

 private:
  const CgroupSetup cgroups_;
  CgroupPool pool_{cgroups_.version};  // destroyed after every run and the reaper
  Reaper reaper_;                      // declared last: destroyed first (it releases cgroups)
};

Result<ProcessResult> RealProcessRunner::Run(const ProcessSpec& spec,
                                             const std::function<void(const OutputLine&)>& on_line,
                                             const CancelToken* cancel) {
  if (spec.argv.empty()) return InvalidArgumentError("empty argv");
  const std::string& program = spec.argv[0];
  if (program.empty() || program[0] != '/') {
    return InvalidArgumentError("program '" + program +
                                "' is not an absolute path (resolve it with ResolveProgram)");
  }
  const Limits& limits = spec.limits;
  ProcessResult result;
  std::vector<std::string> notes;

  // Cgroup for the limits that need one.
  std::unique_ptr<RunCgroup> cgroup;
  bool want_cgroup = limits.memory_bytes.has_value() || limits.max_processes.has_value() ||
                     limits.cpu_cores.has_value();
  if (want_cgroup && cgroups_.version != 0) {
    std::string why;
    cgroup = RunCgroup::Create(cgroups_, limits, &pool_, &why);
    if (!cgroup) notes.push_back("cgroup setup failed (" + why + ")");
  } else if (want_cgroup) {
    notes.push_back("cgroups unavailable (" + cgroups_.unavailable + ")");
  }
  bool memory_by_cgroup = cgroup && cgroup->enforces_memory();
  bool pids_by_cgroup = cgroup && cgroup->enforces_pids();
  if (limits.cpu_cores && !(cgroup && cgroup->enforces_cpu_quota())) {
    notes.push_back("cpu not limited (no cgroup cpu controller)");
  }

  std::vector<ChildRlimit> rlimits;
  rlimits.push_back({RLIMIT_CORE, {0, 0}});  // no core files in tool folders
  if (limits.cpu_time) {
    rlim_t s = static_cast<rlim_t>(std::max<int64_t>(1, limits.cpu_time->count()));
    rlimits.push_back({RLIMIT_CPU, {s, s + 1}});  // SIGXCPU at the limit, SIGKILL a second later
  }
  if (limits.max_open_files) {
    rlim_t n = static_cast<rlim_t>(*limits.max_open_files);
    rlimits.push_back({RLIMIT_NOFILE, {n, n}});
  }
  if (limits.max_file_size) {
    rlim_t n = static_cast<rlim_t>(*limits.max_file_size);
    rlimits.push_back({RLIMIT_FSIZE, {n, n}});
  }
  struct rlimit memory_rlimit = {};
  bool memory_by_rlimit = false;
  if (limits.memory_bytes) {
    memory_rlimit = {static_cast<rlim_t>(*limits.memory_bytes),
                     static_cast<rlim_t>(*limits.memory_bytes)};
    if (!memory_by_cgroup) {
      rlimits.push_back({RLIMIT_AS, memory_rlimit});
      memory_by_rlimit = true;
      notes.push_back("memory limited by RLIMIT_AS (address space, not resident memory)");
    }
  }
  if (limits.max_processes && !pids_by_cgroup) notes.push_back("max_processes not enforced");

  // Pipes. The parent's ends stay close-on-exec, so no other child inherits them.
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return ResourceExhaustedError("cannot run " + program + ": pipe: " + ErrnoText(errno));
  }
  Fd out_read(out_pipe[0]), out_write(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return ResourceExhaustedError("cannot run " + program + ": pipe: " + ErrnoText(errno));
  }
  Fd err_read(err_pipe[0]), err_write(err_pipe[1]);
  Fd in_read, in_write;
  if (spec.stdin_data.empty()) {
    in_read = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  } else {
    int in_pipe[2];
    if (::pipe2(in_pipe, O_CLOEXEC) == 0) {
      in_read = Fd(in_pipe[0]);
      in_write = Fd(in_pipe[1]);
      ::fcntl(in_write.get(), F_SETFL, O_NONBLOCK);
    }
  }
  in_read = AboveStdio(std::move(in_read));
  out_write = AboveStdio(std::move(out_write));
  err_write = AboveStdio(std::move(err_write));
  if (!in_read.valid() || !out_write.valid() || !err_write.valid()) {
    return ResourceExhaustedError("cannot run " + program + ": " + ErrnoText(errno));
  }
  Fd gate_read, gate_write;  // the child's descriptor 3 (see ProcessSpec::start_gate)
  if (spec.start_gate) {
    int gate[2];
    if (::pipe2(gate, O_CLOEXEC) != 0) {
      return ResourceExhaustedError("cannot run " + program + ": pipe: " + ErrnoText(errno));
    }
    gate_read = Fd(gate[0]);
    gate_write = Fd(gate[1]);
    if (gate_read.get() <= 3) gate_read = Fd(::fcntl(gate_read.get(), F_DUPFD_CLOEXEC, 4));
    if (!gate_read.valid()) {
      return ResourceExhaustedError("cannot run " + program + ": " + ErrnoText(errno));
    }
  }

  // Everything the child needs, prepared here (the child may not allocate).
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  std::vector<int> cgroup_fds;  // only for a fresh clone, which joins the cgroup itself
  ChildArgs args;
  args.path = program.c_str();
  args.argv = argv.data();
  args.envp = envp.data();
  args.cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  args.stdin_fd = in_read.get();
  args.stdout_fd = out_write.get();
  args.stderr_fd = err_write.get();
  args.gate_fd = gate_read.get();
  args.rlimits = rlimits.data();
  args.rlimit_count = rlimits.size();
  args.memory_fallback = limits.memory_bytes && memory_by_cgroup ? &memory_rlimit : nullptr;

  // The child: the slot's standby when it has one (already in the cgroups), else a fresh clone.
  std::unique_ptr<Standby> standby = cgroup ? cgroup->TakeStandby() : nullptr;
  auto start = Clock::now();
  pid_t pid = standby ? standby->Go(&args) : 0;
  standby.reset();
  if (pid <= 0) {
    if (cgroup) cgroup_fds = cgroup->procs_fds();
    args.cgroup_fds = cgroup_fds.data();
    args.cgroup_fd_count = cgroup_fds.size();
    void* stack = ::mmap(nullptr, kChildStackBytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
      return ResourceExhaustedError("cannot run " + program + ": mmap: " + ErrnoText(errno));
    }
    start = Clock::now();
    sigset_t all, old_mask;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old_mask);
    pid = ::clone(ChildMain, static_cast<char*>(stack) + kChildStackBytes,
                  CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
    int clone_err = errno;
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    ::munmap(stack, kChildStackBytes);
    if (pid < 0) {
      return (clone_err == EAGAIN || clone_err == ENOMEM ? ResourceExhaustedError : InternalError)(
          "cannot run " + program + ": clone: " + ErrnoText(clone_err));
    }
  }
  in_read.Reset();
  out_write.Reset();
  err_write.Reset();
  gate_read.Reset();
  auto owned_child = std::make_unique<Child>(pid, std::move(cgroup));
  Child& child = *owned_child;
  if (args.err != 0) return StartError(args, spec);  // ~Child reaps the exited child
  if (args.cgroup_join_err != 0) {
    memory_by_cgroup = pids_by_cgroup = false;
    notes.push_back("joining the cgroup failed (" + ErrnoText(args.cgroup_join_err) + ")");
    if (limits.memory_bytes) notes.push_back("memory limited by RLIMIT_AS");
    if (limits.max_processes) notes.push_back("max_processes not enforced");
    memory_by_rlimit = limits.memory_bytes.has_value();
  }
  result.pid = pid;
  result.used_cgroup = memory_by_cgroup || pids_by_cgroup;
  Fd pidfd(PidfdOpen(pid));  // readable once the child exits
  if (spec.on_spawned) {
    if (Status st = spec.on_spawned(pid); !st.ok()) return st;  // ~Child kills and reaps it
  }
  if (gate_write.valid()) {
    // Open the gate. A child that exited already (or closed its end) is no error: EPIPE,
    // reported in the result like any other early exit (SIGPIPE is blocked for the write).
    ScopedSigpipeBlock block;
    if (::write(gate_write.get(), "g", 1) < 0 && errno == EPIPE) block.NoteEpipe();
    gate_write.Reset();
  }

  // Supervise.
  Stream streams[2];
  streams[0].fd = std::move(out_read);
  streams[0].data = &result.stdout_data;
  streams[0].truncated = &result.stdout_truncated;
  streams[1].fd = std::move(err_read);
  streams[1].is_stderr = true;
  streams[1].data = &result.stderr_data;
  streams[1].truncated = &result.stderr_truncated;
  std::optional<ScopedSigpipeBlock> sigpipe;
  if (in_write.valid()) sigpipe.emplace();
  size_t stdin_offset = 0;

  Ending ending;  // what happened, for Classify
  std::optional<Clock::time_point> deadline;
  if (limits.timeout) deadline = start + *limits.timeout;
  std::optional<Clock::time_point> kill_at;  // SIGKILL after SIGTERM + grace
  std::optional<Clock::time_point> drain_until;
  struct rusage usage;
  std::memset(&usage, 0, sizeof usage);

  auto emit_line = [&](Stream& s, std::string_view text) {
    OutputLine line;
    line.is_stderr = s.is_stderr;
    line.text.assign(text);
    on_line(line);
  };
  auto terminate = [&](StopCause why, Clock::time_point now) {
    ending.stop = why;
    if (limits.kill_grace.count() <= 0) {
      child.SignalGroup(SIGKILL);
      ending.escalated = true;
    } else {
      child.SignalGroup(SIGTERM);
      kill_at = now + limits.kill_grace;
    }
  };
  auto accept_output = [&](Stream& s, const char* data, size_t n, Clock::time_point now) {
    s.total += static_cast<uint64_t>(n);
    size_t room = limits.max_output_bytes - std::min(limits.max_output_bytes, s.data->size());
    size_t keep = std::min(room, n);
    s.data->append(data, keep);
    if (on_line) {
      std::string_view chunk(data, keep);
      while (!chunk.empty()) {
        size_t nl = chunk.find('\n');
        size_t take = nl == std::string_view::npos ? chunk.size() : nl;
        size_t fit = std::min(take, kMaxLineBytes - s.line.size());
        s.line.append(chunk.data(), fit);
        chunk.remove_prefix(fit);
        if (s.line.size() == kMaxLineBytes || (fit == take && nl != std::string_view::npos)) {
          emit_line(s, s.line);
          s.line.clear();
          if (fit == take && nl != std::string_view::npos) chunk.remove_prefix(1);
        }
      }
    }
    if (keep < n) {
      *s.truncated = true;
      if (limits.kill_on_output_limit && ending.stop == StopCause::kNone) {
        ending.output_stream = s.is_stderr ? "stderr" : "stdout";
        terminate(StopCause::kOutput, now);
      }
    }
  };

  char buf[kReadChunk];
  for (;;) {
    auto now = Clock::now();
    bool exited = child.reaped();
    if (!exited) {
      if (ending.stop == StopCause::kNone && cancel && cancel->cancelled())
        terminate(StopCause::kCancel, now);
      if (ending.stop == StopCause::kNone && deadline && now >= *deadline)
        terminate(StopCause::kTimeout, now);
      if (kill_at && now >= *kill_at) {
        child.SignalGroup(SIGKILL);
        ending.escalated = true;
        kill_at.reset();
      }
    } else {
      bool open = streams[0].fd.valid() || streams[1].fd.valid();
      if (!open || now >= *drain_until) break;
    }

    pollfd fds[4];
    int kinds[4];  // 0/1: stream index, 2: stdin, 3: pidfd
    nfds_t nfds = 0;
    for (int i = 0; i < 2; ++i) {
      if (streams[i].fd.valid()) {
        fds[nfds] = {streams[i].fd.get(), POLLIN, 0};
        kinds[nfds++] = i;
      }
    }
    if (in_write.valid()) {
      fds[nfds] = {in_write.get(), POLLOUT, 0};
      kinds[nfds++] = 2;
    }
    if (!exited && pidfd.valid()) {
      fds[nfds] = {pidfd.get(), POLLIN, 0};
      kinds[nfds++] = 3;
    }
    std::optional<Clock::time_point> wake;
    auto wake_by = [&](Clock::time_point t) { wake = wake ? std::min(*wake, t) : t; };
    if (!exited) {
      if (ending.stop == StopCause::kNone && deadline) wake_by(*deadline);
      if (kill_at) wake_by(*kill_at);
      if (ending.stop == StopCause::kNone && cancel) wake_by(now + kCancelPoll);
      if (!pidfd.valid()) wake_by(now + kNoPidfdPoll);
    } else {
      wake_by(*drain_until);
    }
    int timeout_ms = -1;
    if (wake) {
      auto left = duration_cast<microseconds>(*wake - now).count();
      timeout_ms = left <= 0 ? 0 : static_cast<int>((left + 999) / 1000);
    }
    int ready = ::poll(fds, nfds, timeout_ms);
    if (ready < 0 && errno != EINTR) {
      return InternalError("poll: " + ErrnoText(errno));  // ~Child kills and reaps
    }
    now = Clock::now();
    for (nfds_t i = 0; ready > 0 && i < nfds; ++i) {
      if (fds[i].revents == 0) continue;
      if (kinds[i] <= 1) {
        Stream& s = streams[kinds[i]];
        ssize_t n = ::read(s.fd.get(), buf, sizeof buf);
        if (n > 0) {
          accept_output(s, buf, static_cast<size_t>(n), now);
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          s.fd.Reset();
        }
      } else if (kinds[i] == 2) {
        size_t left = spec.stdin_data.size() - stdin_offset;
        ssize_t n = ::write(in_write.get(), spec.stdin_data.data() + stdin_offset,
                            std::min(left, kReadChunk));
        if (n > 0) stdin_offset += static_cast<size_t>(n);
        if (n < 0 && errno == EPIPE) sigpipe->NoteEpipe();
        if ((n < 0 && errno != EAGAIN && errno != EINTR) ||
            stdin_offset == spec.stdin_data.size()) {
          in_write.Reset();  // all written (EOF for the child), or the child closed its end
        }
      }
    }
    bool check_exit = !pidfd.valid() || std::any_of(fds, fds + nfds, [&](const pollfd& p) {
      return p.fd == pidfd.get() && p.revents != 0;
    });
    if (!child.reaped() && check_exit && child.TryReap(&ending.status, &usage)) {
      in_write.Reset();
      // The rest of the group; the pipes then reach EOF.
      if (spec.reap_in_background) {
        // What the process wrote is in the pipes by now: take what is there and stop, without
        // waiting for the leftovers' EOF. Killing them, waiting for their exit (e.g. a
        // sandbox's namespaces being torn down) and reaping them is the reaper's work.
        for (Stream& st : streams) {
          if (!st.fd.valid()) continue;
          ::fcntl(st.fd.get(), F_SETFL, ::fcntl(st.fd.get(), F_GETFL) | O_NONBLOCK);
          for (;;) {
            ssize_t n = ::read(st.fd.get(), buf, sizeof buf);
            if (n > 0) {
              accept_output(st, buf, static_cast<size_t>(n), Clock::now());
            } else if (n < 0 && errno == EINTR) {
              continue;
            } else {
              break;  // EOF, or nothing more (EAGAIN)
            }
          }
          st.fd.Reset();
        }
      } else {
        child.KillRemaining();
      }
      drain_until = Clock::now() + kDrainAfterExit;
    }
  }
  const auto end = Clock::now();
  for (Stream& s : streams) {
    if (on_line && !s.line.empty()) emit_line(s, s.line);
  }
  ending.cgroup = child.ReadCgroupStats();
  if (!spec.reap_in_background || !reaper_.Adopt(owned_child)) {
    child.KillRemaining();
    child.ReleaseCgroup();
  }

  // Account.
  result.wall = duration_cast<microseconds>(end - start);
  result.cpu_user =
      microseconds(static_cast<int64_t>(usage.ru_utime.tv_sec) * 1000000 + usage.ru_utime.tv_usec);
  result.cpu_system =
      microseconds(static_cast<int64_t>(usage.ru_stime.tv_sec) * 1000000 + usage.ru_stime.tv_usec);
  if (ending.cgroup.cpu_user_usec) {
    result.cpu_user =
        std::max(result.cpu_user, microseconds(static_cast<int64_t>(*ending.cgroup.cpu_user_usec)));
  }
  if (ending.cgroup.cpu_system_usec) {
    result.cpu_system = std::max(
        result.cpu_system, microseconds(static_cast<int64_t>(*ending.cgroup.cpu_system_usec)));
  }
  uint64_t maxrss = static_cast<uint64_t>(usage.ru_maxrss) * 1024;
  result.peak_memory_bytes = memory_by_cgroup && ending.cgroup.peak ? *ending.cgroup.peak : maxrss;
  result.stdout_bytes = streams[0].total;
  result.stderr_bytes = streams[1].total;
  if (!notes.empty()) {
    for (auto& n : notes) result.limits_note += (result.limits_note.empty() ? "" : "; ") + n;
  }

  ending.memory_by_cgroup = memory_by_cgroup;
  ending.pids_by_cgroup = pids_by_cgroup;
  ending.memory_by_rlimit = memory_by_rlimit;
  Classify(limits, ending, &result);
  return result;
}

}  // namespace

std::unique_ptr<ProcessRunner> MakeProcessRunner(RunnerOptions options) {
  return std::make_unique<RealProcessRunner>(std::move(options));
}

}  // namespace cortex::exec
