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

// How a run's limits are enforced: by its cgroup where there is one, else by rlimits; `notes`
// says what could not be (ProcessResult::limits_note).
struct LimitPlan {
  std::unique_ptr<RunCgroup> cgroup;
  std::vector<ChildRlimit> rlimits;
  struct rlimit memory_rlimit = {};  // RLIMIT_AS, for when joining the cgroup fails
  bool memory_by_cgroup = false, pids_by_cgroup = false, memory_by_rlimit = false;
  std::vector<std::string> notes;

  // The child could not join the cgroup: its memory limit fell back to RLIMIT_AS.
  void CgroupJoinFailed(const Limits& limits, int err) {
    memory_by_cgroup = pids_by_cgroup = false;
    notes.push_back("joining the cgroup failed (" + ErrnoText(err) + ")");
    if (limits.memory_bytes) notes.push_back("memory limited by RLIMIT_AS");
    if (limits.max_processes) notes.push_back("max_processes not enforced");
    memory_by_rlimit = limits.memory_bytes.has_value();
  }
};

// The run's pipes. The parent's ends stay close-on-exec, so no other child inherits them; the
// child's ends are closed in the parent once it has started.
struct Pipes {
  Fd out_read, out_write, err_read, err_write;
  Fd in_read, in_write;      // in_write only when there is stdin data (else /dev/null)
  Fd gate_read, gate_write;  // the child's descriptor 3 (see ProcessSpec::start_gate)

  void CloseChildEnds() {
    in_read.Reset();
    out_write.Reset();
    err_write.Reset();
    gate_read.Reset();
  }
};

Result<Pipes> OpenPipes(const ProcessSpec& spec) {
  const std::string& program = spec.argv[0];
  auto fail = [&](const char* what) {
    return ResourceExhaustedError("cannot run " + program + ": " + what + ErrnoText(errno));
  };
  Pipes p;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail("pipe: ");
  p.out_read = Fd(fds[0]);
  p.out_write = Fd(fds[1]);
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail("pipe: ");
  p.err_read = Fd(fds[0]);
  p.err_write = Fd(fds[1]);
  if (spec.stdin_data.empty()) {
    p.in_read = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  } else if (::pipe2(fds, O_CLOEXEC) == 0) {
    p.in_read = Fd(fds[0]);
    p.in_write = Fd(fds[1]);
    ::fcntl(p.in_write.get(), F_SETFL, O_NONBLOCK);
  }
  p.in_read = AboveStdio(std::move(p.in_read));
  p.out_write = AboveStdio(std::move(p.out_write));
  p.err_write = AboveStdio(std::move(p.err_write));
  if (!p.in_read.valid() || !p.out_write.valid() || !p.err_write.valid()) return fail("");
  if (spec.start_gate) {
    if (::pipe2(fds, O_CLOEXEC) != 0) return fail("pipe: ");
    p.gate_read = Fd(fds[0]);
    p.gate_write = Fd(fds[1]);
    if (p.gate_read.get() <= 3) p.gate_read = Fd(::fcntl(p.gate_read.get(), F_DUPFD_CLOEXEC, 4));
    if (!p.gate_read.valid()) return fail("");
  }
  return p;
}

// A fresh child by clone(CLONE_VM | CLONE_VFORK): returns once it has exec'd or failed (then
// `args` says why). `cgroup_fds` are the cgroup.procs descriptors it joins before exec.
Result<pid_t> CloneChild(ChildArgs& args, const std::vector<int>& cgroup_fds,
                         const std::string& program) {
  args.cgroup_fds = cgroup_fds.data();
  args.cgroup_fd_count = cgroup_fds.size();
  void* stack = ::mmap(nullptr, kChildStackBytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    return ResourceExhaustedError("cannot run " + program + ": mmap: " + ErrnoText(errno));
  }
  sigset_t all, old_mask;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old_mask);
  pid_t pid = ::clone(ChildMain, static_cast<char*>(stack) + kChildStackBytes,
                      CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  int clone_err = errno;
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::munmap(stack, kChildStackBytes);
  if (pid < 0) {
    return (clone_err == EAGAIN || clone_err == ENOMEM ? ResourceExhaustedError : InternalError)(
        "cannot run " + program + ": clone: " + ErrnoText(clone_err));
  }
  return pid;
}

// Watches one started child: reads its output, writes its stdin, enforces the deadline, the
// cancel token and the output limit, and reaps it. Run() builds one per run.
class Supervisor {
 public:
  Supervisor(const ProcessSpec& spec, const std::function<void(const OutputLine&)>& on_line,
             const CancelToken* cancel, Child& child, Pipes& pipes, ProcessResult& result,
             Clock::time_point start)
      : spec_(spec), limits_(spec.limits), on_line_(on_line), cancel_(cancel), child_(child) {
    streams_[0].fd = std::move(pipes.out_read);
    streams_[0].data = &result.stdout_data;
    streams_[0].truncated = &result.stdout_truncated;
    streams_[1].fd = std::move(pipes.err_read);
    streams_[1].is_stderr = true;
    streams_[1].data = &result.stderr_data;
    streams_[1].truncated = &result.stderr_truncated;
    in_write_ = std::move(pipes.in_write);
    if (in_write_.valid()) sigpipe_.emplace();
    if (limits_.timeout) deadline_ = start + *limits_.timeout;
    std::memset(&usage_, 0, sizeof usage_);
  }

  // Until the child has exited and its output is drained (or the drain window is over).
  Status Loop() {
    for (;;) {
      auto now = Clock::now();
      if (!child_.reaped()) {
        Enforce(now);
      } else {
        bool open = streams_[0].fd.valid() || streams_[1].fd.valid();
        if (!open || now >= *drain_until_) break;
      }
      if (Status st = PollOnce(now); !st.ok()) return st;
    }
    for (Stream& s : streams_) {
      if (on_line_ && !s.line.empty()) EmitLine(s, s.line);
    }
    return Status::Ok();
  }

  Ending& ending() { return ending_; }
  const struct rusage& usage() const { return usage_; }
  uint64_t total(int stream) const { return streams_[stream].total; }

 private:
  // The deadline, the cancel token and the grace's SIGKILL, while the child runs.
  void Enforce(Clock::time_point now) {
    if (ending_.stop == StopCause::kNone && cancel_ && cancel_->cancelled())
      Terminate(StopCause::kCancel, now);
    if (ending_.stop == StopCause::kNone && deadline_ && now >= *deadline_)
      Terminate(StopCause::kTimeout, now);
    if (kill_at_ && now >= *kill_at_) {
      child_.SignalGroup(SIGKILL);
      ending_.escalated = true;
      kill_at_.reset();
    }
  }

  void Terminate(StopCause why, Clock::time_point now) {
    ending_.stop = why;
    if (limits_.kill_grace.count() <= 0) {
      child_.SignalGroup(SIGKILL);
      ending_.escalated = true;
    } else {
      child_.SignalGroup(SIGTERM);
      kill_at_ = now + limits_.kill_grace;
    }
  }

  // One poll() over the pipes and the pidfd, until the next deadline; handles what is ready.
  Status PollOnce(Clock::time_point now) {
    bool exited = child_.reaped();
    pollfd fds[4];
    int kinds[4];  // 0/1: stream index, 2: stdin, 3: pidfd
    nfds_t nfds = 0;
    for (int i = 0; i < 2; ++i) {
      if (streams_[i].fd.valid()) {
        fds[nfds] = {streams_[i].fd.get(), POLLIN, 0};
        kinds[nfds++] = i;
      }
    }
    if (in_write_.valid()) {
      fds[nfds] = {in_write_.get(), POLLOUT, 0};
      kinds[nfds++] = 2;
    }
    if (!exited && pidfd_.valid()) {
      fds[nfds] = {pidfd_.get(), POLLIN, 0};
      kinds[nfds++] = 3;
    }
    int ready = ::poll(fds, nfds, PollTimeoutMs(now, exited));
    if (ready < 0 && errno != EINTR) {
      return InternalError("poll: " + ErrnoText(errno));  // ~Child kills and reaps
    }
    now = Clock::now();
    for (nfds_t i = 0; ready > 0 && i < nfds; ++i) {
      if (fds[i].revents == 0) continue;
      if (kinds[i] <= 1) {
        ReadReady(streams_[kinds[i]], now);
      } else if (kinds[i] == 2) {
        WriteStdin();
      }
    }
    bool check_exit = !pidfd_.valid() || std::any_of(fds, fds + nfds, [&](const pollfd& p) {
      return p.fd == pidfd_.get() && p.revents != 0;
    });
    if (!child_.reaped() && check_exit && child_.TryReap(&ending_.status, &usage_)) Exited();
    return Status::Ok();
  }

  int PollTimeoutMs(Clock::time_point now, bool exited) const {
    std::optional<Clock::time_point> wake;
    auto wake_by = [&](Clock::time_point t) { wake = wake ? std::min(*wake, t) : t; };
    if (!exited) {
      if (ending_.stop == StopCause::kNone && deadline_) wake_by(*deadline_);
      if (kill_at_) wake_by(*kill_at_);
      if (ending_.stop == StopCause::kNone && cancel_) wake_by(now + kCancelPoll);
      if (!pidfd_.valid()) wake_by(now + kNoPidfdPoll);
    } else {
      wake_by(*drain_until_);
    }
    if (!wake) return -1;
    auto left = duration_cast<microseconds>(*wake - now).count();
    return left <= 0 ? 0 : static_cast<int>((left + 999) / 1000);
  }

  void ReadReady(Stream& s, Clock::time_point now) {
    ssize_t n = ::read(s.fd.get(), buf_, sizeof buf_);
    if (n > 0) {
      AcceptOutput(s, buf_, static_cast<size_t>(n), now);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      s.fd.Reset();
    }
  }

  void WriteStdin() {
    size_t left = spec_.stdin_data.size() - stdin_offset_;
    ssize_t n = ::write(in_write_.get(), spec_.stdin_data.data() + stdin_offset_,
                        std::min(left, kReadChunk));
    if (n > 0) stdin_offset_ += static_cast<size_t>(n);
    if (n < 0 && errno == EPIPE) sigpipe_->NoteEpipe();
    if ((n < 0 && errno != EAGAIN && errno != EINTR) || stdin_offset_ == spec_.stdin_data.size()) {
      in_write_.Reset();  // all written (EOF for the child), or the child closed its end
    }
  }

  // The main process was reaped: the rest of its group goes, and the pipes then reach EOF.
  void Exited() {
    in_write_.Reset();
    if (spec_.reap_in_background) {
      // What the process wrote is in the pipes by now: take what is there and stop, without
      // waiting for the leftovers' EOF. Killing them, waiting for their exit (e.g. a
      // sandbox's namespaces being torn down) and reaping them is the reaper's work.
      for (Stream& st : streams_) {
        if (!st.fd.valid()) continue;
        ::fcntl(st.fd.get(), F_SETFL, ::fcntl(st.fd.get(), F_GETFL) | O_NONBLOCK);
        for (;;) {
          ssize_t n = ::read(st.fd.get(), buf_, sizeof buf_);
          if (n > 0) {
            AcceptOutput(st, buf_, static_cast<size_t>(n), Clock::now());
          } else if (n < 0 && errno == EINTR) {
            continue;
          } else {
            break;  // EOF, or nothing more (EAGAIN)
          }
        }
        st.fd.Reset();
      }
    } else {
      child_.KillRemaining();
    }
    drain_until_ = Clock::now() + kDrainAfterExit;
  }

  void EmitLine(Stream& s, std::string_view text) {
    OutputLine line;
    line.is_stderr = s.is_stderr;
    line.text.assign(text);
    on_line_(line);
  }

  // Keeps what fits under the output limit, splits lines for on_line, and stops the process
  // when the limit is passed (if the spec says so).
  void AcceptOutput(Stream& s, const char* data, size_t n, Clock::time_point now) {
    s.total += static_cast<uint64_t>(n);
    size_t room = limits_.max_output_bytes - std::min(limits_.max_output_bytes, s.data->size());
    size_t keep = std::min(room, n);
    s.data->append(data, keep);
    if (on_line_) {
      std::string_view chunk(data, keep);
      while (!chunk.empty()) {
        size_t nl = chunk.find('\n');
        size_t take = nl == std::string_view::npos ? chunk.size() : nl;
        size_t fit = std::min(take, kMaxLineBytes - s.line.size());
        s.line.append(chunk.data(), fit);
        chunk.remove_prefix(fit);
        if (s.line.size() == kMaxLineBytes || (fit == take && nl != std::string_view::npos)) {
          EmitLine(s, s.line);
          s.line.clear();
          if (fit == take && nl != std::string_view::npos) chunk.remove_prefix(1);
        }
      }
    }
    if (keep < n) {
      *s.truncated = true;
      if (limits_.kill_on_output_limit && ending_.stop == StopCause::kNone) {
        ending_.output_stream = s.is_stderr ? "stderr" : "stdout";
        Terminate(StopCause::kOutput, now);
      }
    }
  }

  const ProcessSpec& spec_;
  const Limits& limits_;
  const std::function<void(const OutputLine&)>& on_line_;
  const CancelToken* cancel_;
  Child& child_;
  Fd pidfd_{PidfdOpen(child_.pid())};  // readable once the child exits
  Stream streams_[2];
  Fd in_write_;
  std::optional<ScopedSigpipeBlock> sigpipe_;  // while there is stdin to write
  size_t stdin_offset_ = 0;
  Ending ending_;  // what happened, for Classify
  std::optional<Clock::time_point> deadline_;
  std::optional<Clock::time_point> kill_at_;  // SIGKILL after SIGTERM + grace
  std::optional<Clock::time_point> drain_until_;
  struct rusage usage_;
  char buf_[kReadChunk];
};

// CPU times (rusage, or the cgroup's when larger: it also counts processes nobody waited for),
// peak memory, output totals and the limits note.
void Account(const Supervisor& sv, const Ending& ending, const LimitPlan& plan,
             ProcessResult* result) {
  auto usec = [](const struct timeval& tv) {
    return microseconds(static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec);
  };
  result->cpu_user = usec(sv.usage().ru_utime);
  result->cpu_system = usec(sv.usage().ru_stime);
  if (ending.cgroup.cpu_user_usec) {
    result->cpu_user = std::max(result->cpu_user,
                                microseconds(static_cast<int64_t>(*ending.cgroup.cpu_user_usec)));
  }
  if (ending.cgroup.cpu_system_usec) {
    result->cpu_system = std::max(
        result->cpu_system, microseconds(static_cast<int64_t>(*ending.cgroup.cpu_system_usec)));
  }
  uint64_t maxrss = static_cast<uint64_t>(sv.usage().ru_maxrss) * 1024;
  result->peak_memory_bytes =
      plan.memory_by_cgroup && ending.cgroup.peak ? *ending.cgroup.peak : maxrss;
  result->stdout_bytes = sv.total(0);
  result->stderr_bytes = sv.total(1);
  for (auto& n : plan.notes) result->limits_note += (result->limits_note.empty() ? "" : "; ") + n;
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

  // The stages: plan the limits, open the pipes, start the child, supervise it, account.
  Result<ProcessResult> Run(const ProcessSpec& spec,
                            const std::function<void(const OutputLine&)>& on_line,
                            const CancelToken* cancel) override;

 private:
  LimitPlan PlanLimits(const Limits& limits);

  const CgroupSetup cgroups_;
  CgroupPool pool_{cgroups_.version};  // destroyed after every run and the reaper
  Reaper reaper_;                      // declared last: destroyed first (it releases cgroups)
};

LimitPlan RealProcessRunner::PlanLimits(const Limits& limits) {
  LimitPlan plan;
  // A cgroup for the limits that need one.
  bool want_cgroup = limits.memory_bytes.has_value() || limits.max_processes.has_value() ||
                     limits.cpu_cores.has_value();
  if (want_cgroup && cgroups_.version != 0) {
    std::string why;
    plan.cgroup = RunCgroup::Create(cgroups_, limits, &pool_, &why);
    if (!plan.cgroup) plan.notes.push_back("cgroup setup failed (" + why + ")");
  } else if (want_cgroup) {
    plan.notes.push_back("cgroups unavailable (" + cgroups_.unavailable + ")");
  }
  plan.memory_by_cgroup = plan.cgroup && plan.cgroup->enforces_memory();
  plan.pids_by_cgroup = plan.cgroup && plan.cgroup->enforces_pids();
  if (limits.cpu_cores && !(plan.cgroup && plan.cgroup->enforces_cpu_quota())) {
    plan.notes.push_back("cpu not limited (no cgroup cpu controller)");
  }

  plan.rlimits.push_back({RLIMIT_CORE, {0, 0}});  // no core files in tool folders
  if (limits.cpu_time) {
    rlim_t s = static_cast<rlim_t>(std::max<int64_t>(1, limits.cpu_time->count()));
    plan.rlimits.push_back({RLIMIT_CPU, {s, s + 1}});  // SIGXCPU at the limit, SIGKILL 1 s later
  }
  if (limits.max_open_files) {
    rlim_t n = static_cast<rlim_t>(*limits.max_open_files);
    plan.rlimits.push_back({RLIMIT_NOFILE, {n, n}});
  }
  if (limits.max_file_size) {
    rlim_t n = static_cast<rlim_t>(*limits.max_file_size);
    plan.rlimits.push_back({RLIMIT_FSIZE, {n, n}});
  }
  if (limits.memory_bytes) {
    plan.memory_rlimit = {static_cast<rlim_t>(*limits.memory_bytes),
                          static_cast<rlim_t>(*limits.memory_bytes)};
    if (!plan.memory_by_cgroup) {
      plan.rlimits.push_back({RLIMIT_AS, plan.memory_rlimit});
      plan.memory_by_rlimit = true;
      plan.notes.push_back("memory limited by RLIMIT_AS (address space, not resident memory)");
    }
  }
  if (limits.max_processes && !plan.pids_by_cgroup) {
    plan.notes.push_back("max_processes not enforced");
  }
  return plan;
}

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
  LimitPlan plan = PlanLimits(limits);
  auto pipes = OpenPipes(spec);
  if (!pipes.ok()) return pipes.status();

  // Everything the child needs, prepared here (the child may not allocate).
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  ChildArgs args;
  args.path = program.c_str();
  args.argv = argv.data();
  args.envp = envp.data();
  args.cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  args.stdin_fd = pipes->in_read.get();
  args.stdout_fd = pipes->out_write.get();
  args.stderr_fd = pipes->err_write.get();
  args.gate_fd = pipes->gate_read.get();
  args.rlimits = plan.rlimits.data();
  args.rlimit_count = plan.rlimits.size();
  args.memory_fallback =
      limits.memory_bytes && plan.memory_by_cgroup ? &plan.memory_rlimit : nullptr;

  // The child: the slot's standby when it has one (already in the cgroups), else a fresh clone.
  std::unique_ptr<Standby> standby = plan.cgroup ? plan.cgroup->TakeStandby() : nullptr;
  auto start = Clock::now();
  pid_t pid = standby ? standby->Go(&args) : 0;
  standby.reset();
  if (pid <= 0) {
    start = Clock::now();
    auto cloned =
        CloneChild(args, plan.cgroup ? plan.cgroup->procs_fds() : std::vector<int>{}, program);
    if (!cloned.ok()) return cloned.status();
    pid = *cloned;
  }
  pipes->CloseChildEnds();
  auto owned_child = std::make_unique<Child>(pid, std::move(plan.cgroup));
  Child& child = *owned_child;
  if (args.err != 0) return StartError(args, spec);  // ~Child reaps the exited child
  if (args.cgroup_join_err != 0) plan.CgroupJoinFailed(limits, args.cgroup_join_err);
  ProcessResult result;
  result.pid = pid;
  result.used_cgroup = plan.memory_by_cgroup || plan.pids_by_cgroup;
  if (spec.on_spawned) {
    if (Status st = spec.on_spawned(pid); !st.ok()) return st;  // ~Child kills and reaps it
  }
  if (pipes->gate_write.valid()) {
    // Open the gate. A child that exited already (or closed its end) is no error: EPIPE,
    // reported in the result like any other early exit (SIGPIPE is blocked for the write).
    ScopedSigpipeBlock block;
    if (::write(pipes->gate_write.get(), "g", 1) < 0 && errno == EPIPE) block.NoteEpipe();
    pipes->gate_write.Reset();
  }

  Supervisor supervisor(spec, on_line, cancel, child, *pipes, result, start);
  if (Status st = supervisor.Loop(); !st.ok()) return st;  // ~Child kills and reaps
  result.wall = duration_cast<microseconds>(Clock::now() - start);
  Ending& ending = supervisor.ending();
  ending.cgroup = child.ReadCgroupStats();
  if (!spec.reap_in_background || !reaper_.Adopt(owned_child)) {
    child.KillRemaining();
    child.ReleaseCgroup();
  }

  Account(supervisor, ending, plan, &result);
  ending.memory_by_cgroup = plan.memory_by_cgroup;
  ending.pids_by_cgroup = plan.pids_by_cgroup;
  ending.memory_by_rlimit = plan.memory_by_rlimit;
  Classify(limits, ending, &result);
  return result;
}

}  // namespace

std::unique_ptr<ProcessRunner> MakeProcessRunner(RunnerOptions options) {
  return std::make_unique<RealProcessRunner>(std::move(options));
}

}  // namespace cortex::exec
