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
// runner logs it once. A run is never failed because cgroups are missing.
#include "exec/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "common/fd.h"
#include "common/log.h"

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

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMaxLineBytes = 64 * 1024;   // a longer line is delivered in pieces
constexpr milliseconds kCancelPoll{20};       // CancelToken is a flag: how often it is looked at
constexpr milliseconds kNoPidfdPoll{10};      // exit polling when pidfd_open is unavailable
constexpr milliseconds kDrainAfterExit{500};  // EOF wait once the group is dead (escaped holders)
constexpr milliseconds kGoneDeadline{5000};   // bound on waiting for killed processes to vanish
constexpr size_t kChildStackBytes = 128 * 1024;
constexpr const char* kComponent = "process";

// ---------------------------------------------------------------------------------------------
// Small system helpers.

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) {
    return std::to_string(bytes >> 20) + " MiB";
  }
  if (bytes >= (10ull << 20)) return std::to_string(bytes >> 20) + " MiB";
  return std::to_string(bytes) + " bytes";
}

// Control files kept open (one set per cgroup slot): a kernfs file is re-read by pread at offset
// 0 and rewritten by pwrite, which saves an open/close pair per access (~10 per run). Used by one
// thread at a time, like the slot that holds it.
class ControlFiles {
 public:
  // An open descriptor for `path` (O_RDONLY or O_WRONLY), opened on first use; -1 and errno.
  int Get(const std::string& path, int mode) {
    std::string key = path;
    key += mode == O_RDONLY ? 'r' : 'w';
    auto it = fds_.find(key);
    if (it != fds_.end()) return it->second.get();
    int fd = ::open(path.c_str(), mode | O_CLOEXEC);
    if (fd >= 0) fds_.emplace(std::move(key), Fd(fd));
    return fd;
  }
  void Clear() { fds_.clear(); }

 private:
  std::unordered_map<std::string, Fd> fds_;
};

bool WriteFile(const std::string& path, std::string_view data, int* err = nullptr,
               ControlFiles* files = nullptr) {
  int fd = files ? files->Get(path, O_WRONLY) : ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    if (err) *err = errno;
    return false;
  }
  ssize_t n = ::pwrite(fd, data.data(), data.size(), 0);
  int saved = errno;
  if (!files) ::close(fd);
  if (n != static_cast<ssize_t>(data.size())) {
    if (err) *err = n < 0 ? saved : EIO;
    return false;
  }
  return true;
}

// Reads a small file (cgroup control files, /proc entries, script headers): at most `limit` bytes.
std::optional<std::string> ReadFile(const std::string& path, size_t limit = 64 * 1024,
                                    ControlFiles* files = nullptr) {
  int fd = files ? files->Get(path, O_RDONLY) : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[4096];
  while (out.size() < limit) {
    ssize_t n =
        ::pread(fd, buf, std::min(sizeof buf, limit - out.size()), static_cast<off_t>(out.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  if (!files) ::close(fd);
  return out;
}

std::optional<uint64_t> ParseU64(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  if (text.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

std::optional<uint64_t> ReadU64File(const std::string& path, ControlFiles* files = nullptr) {
  auto text = ReadFile(path, 64 * 1024, files);
  return text ? ParseU64(*text) : std::nullopt;
}

// The value of `key` in a "key value" per line file (memory.events, pids.events, oom_control).
std::optional<uint64_t> ReadKeyedU64(const std::string& path, std::string_view key,
                                     ControlFiles* files = nullptr) {
  auto text = ReadFile(path, 64 * 1024, files);
  if (!text) return std::nullopt;
  std::string_view rest = *text;
  while (!rest.empty()) {
    size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ' ') {
      return ParseU64(line.substr(key.size() + 1));
    }
  }
  return std::nullopt;
}

bool IsFsType(const std::string& path, unsigned long magic) {
  struct statfs st;
  return ::statfs(path.c_str(), &st) == 0 && static_cast<unsigned long>(st.f_type) == magic;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

int PidfdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

int PidfdSendSignal(int pidfd, int sig) {
#ifdef SYS_pidfd_send_signal
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
#else
  (void)pidfd;
  (void)sig;
  errno = ENOSYS;
  return -1;
#endif
}

std::vector<pid_t> ParsePids(const std::string& text) {
  std::vector<pid_t> pids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    if (auto v = ParseU64(std::string_view(text).substr(pos, eol - pos)); v && *v > 0) {
      pids.push_back(static_cast<pid_t>(*v));
    }
    pos = eol + 1;
  }
  return pids;
}

// A unique name per run within this host: "<server pid>-<sequence>". Process-wide on purpose
// (two runners in one process must not collide); the pid prefix lets a later server remove
// directories left by a crashed one.
std::string NextRunName() {
  static std::atomic<uint64_t> sequence{0};
  return std::to_string(::getpid()) + "-" + std::to_string(sequence.fetch_add(1) + 1);
}

// ---------------------------------------------------------------------------------------------
// The child side of clone(CLONE_VM | CLONE_VFORK). Everything here runs on the child's stack in
// the parent's memory: system calls only, on data prepared by the parent.

struct ChildRlimit {
  int resource;
  struct rlimit value;
};

struct ChildArgs {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cwd = nullptr;  // nullptr: inherit
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
  int gate_fd = -1;  // becomes descriptor 3 (ProcessSpec::start_gate); never 3 itself
  const int* cgroup_fds = nullptr;
  size_t cgroup_fd_count = 0;
  const ChildRlimit* rlimits = nullptr;
  size_t rlimit_count = 0;
  const struct rlimit* memory_fallback = nullptr;  // RLIMIT_AS if joining the cgroup fails
  // Written by the child:
  int err = 0;  // errno of the failed step; 0 when execve succeeded
  const char* failed_step = nullptr;
  int cgroup_join_err = 0;  // joining failed; the fallback rlimit was applied instead
};

[[noreturn]] void ChildFail(ChildArgs* a, const char* step) {
  a->err = errno != 0 ? errno : EINVAL;
  a->failed_step = step;
  _exit(127);
}

// Default dispositions for every signal: the server's handlers point into shared memory and must
// not run here, and an ignored SIGPIPE would otherwise be inherited by the program. glibc refuses
// its two internal signals; they are never sent to this process.
void ResetSignalDispositions() {
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
  }
}

// From the cgroup on: process group, rlimits, stdio, working directory, descriptors, signal
// mask, execve. Shared by a freshly cloned child and a standby taking its run.
[[noreturn]] void ChildExec(ChildArgs* a) {
  if (a->cgroup_join_err != 0 && a->memory_fallback &&
      ::setrlimit(RLIMIT_AS, a->memory_fallback) != 0) {
    ChildFail(a, "setrlimit(RLIMIT_AS)");
  }
  if (::setpgid(0, 0) != 0) ChildFail(a, "setpgid");
  for (size_t i = 0; i < a->rlimit_count; ++i) {
    if (::setrlimit(a->rlimits[i].resource, &a->rlimits[i].value) != 0) {
      ChildFail(a, "setrlimit");
    }
  }
  if (::dup2(a->stdin_fd, 0) < 0 || ::dup2(a->stdout_fd, 1) < 0 || ::dup2(a->stderr_fd, 2) < 0) {
    ChildFail(a, "dup2");
  }
  if (a->cwd && ::chdir(a->cwd) != 0) ChildFail(a, "chdir");
#ifdef SYS_close_range
  // Descriptors other libraries of the server opened without O_CLOEXEC do not leak either.
  ::syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
#endif
  if (a->gate_fd >= 0 && ::dup2(a->gate_fd, 3) < 0) ChildFail(a, "dup2");  // without CLOEXEC
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(a->path, a->argv, a->envp);
  ChildFail(a, "exec");
}

int ChildMain(void* arg) {
  auto* a = static_cast<ChildArgs*>(arg);
  ResetSignalDispositions();
  for (size_t i = 0; i < a->cgroup_fd_count; ++i) {
    if (::write(a->cgroup_fds[i], "0", 1) != 1) {
      a->cgroup_join_err = errno != 0 ? errno : EIO;
      break;
    }
  }
  ChildExec(a);
}

// ---------------------------------------------------------------------------------------------
// Standby children.
//
// Joining a cgroup is a task migration, and a migration takes the kernel's cgroup_threadgroup_rwsem
// for writing, which waits for an RCU grace period whenever no other migration happened in the
// last few milliseconds: measured here, 0.01 ms when migrations come back to back, ~8 ms when
// they are 20 ms apart, i.e. for a tool call that comes alone. So an idle cgroup slot gets a
// child cloned ahead of time that joins the slot's cgroups off the calling path and then waits;
// the run that takes the slot sends it its three stdio descriptors, and it applies the run's
// limits and execs at once, with no migration left to do.
//
// A standby is cloned with CLONE_VM (but not CLONE_VFORK: nobody waits for it) on a stack of its
// own, so it costs no page-table copy, and it lives under ChildMain's discipline for as long as
// it waits: system calls only, on data the parent prepared (StandbyShared). It shares the TLS of
// the thread that cloned it (a failed system call writes that thread's errno), which is why one
// thread of the pool clones them, does nothing else, and ends them before it exits. The first
// thing a standby does is to drop every descriptor but its end of a socketpair (moved to
// kStandbySock), so that it holds none of the server's connections or files while it waits. It
// exits when the parent's end is closed.
constexpr int kStandbySock = 10;  // above what the run's descriptors become (0-3)

struct StandbyShared {
  int sock = -1;                       // the child's end (in the parent's table at clone time)
  const char* const* procs = nullptr;  // cgroup.procs paths to join
  size_t procs_count = 0;
  std::atomic<int> join_err{0};   // joining failed (errno); ChildExec falls back to rlimits
  std::atomic<int> setup_err{0};  // errno of a failed step before it waits
  std::atomic<const char*> setup_step{nullptr};
  std::atomic<int> received{0};  // it took a run (after which it execs or fails)
  ChildArgs args;                // written by the parent before the hand-over
};

// One byte and up to four descriptors over the standby's socket. Plain stack memory, no
// allocation: the standby builds one too.
struct FdMessage {
  char byte = 0;
  struct iovec iov;
  alignas(struct cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
  struct msghdr msg;

  FdMessage() {
    std::memset(control, 0, sizeof control);
    std::memset(&msg, 0, sizeof msg);
    iov = {&byte, 1};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
  FdMessage(const FdMessage&) = delete;
  FdMessage& operator=(const FdMessage&) = delete;
};

int StandbyMain(void* arg) {
  auto* s = static_cast<StandbyShared*>(arg);
  ResetSignalDispositions();
  int sock = s->sock;
  if (sock != kStandbySock) {
    if (::dup3(sock, kStandbySock, O_CLOEXEC) < 0) _exit(0);
    sock = kStandbySock;
  }
#ifdef SYS_close_range
  ::syscall(SYS_close_range, 3U, static_cast<unsigned>(kStandbySock - 1), 0U);
  ::syscall(SYS_close_range, static_cast<unsigned>(kStandbySock + 1), ~0U, 0U);
#else
  for (int fd = 3; fd < 4096; ++fd) {
    if (fd != kStandbySock) ::close(fd);
  }
#endif
  for (size_t i = 0; i < s->procs_count; ++i) {
    int fd = ::open(s->procs[i], O_WRONLY | O_CLOEXEC);
    bool joined = fd >= 0 && ::write(fd, "0", 1) == 1;
    int err = errno != 0 ? errno : EIO;
    if (fd >= 0) ::close(fd);
    if (!joined) {
      s->join_err.store(err);
      break;
    }
  }
  if (::setpgid(0, 0) != 0) {
    s->setup_err.store(errno != 0 ? errno : EINVAL);
    s->setup_step.store("setpgid");
  }

  // Wait for a run: one byte and three or four descriptors (stdin, stdout, stderr, the start
  // gate), or EOF.
  FdMessage m;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &m.msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  char byte = m.byte;
  struct cmsghdr* c = n == 1 ? CMSG_FIRSTHDR(&m.msg) : nullptr;
  size_t count = 0;
  if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
    count = c->cmsg_len == CMSG_LEN(3 * sizeof(int))   ? 3
            : c->cmsg_len == CMSG_LEN(4 * sizeof(int)) ? 4
                                                       : 0;
  }
  if (byte != 'g' || count == 0) _exit(0);
  int fds[4] = {-1, -1, -1, -1};
  std::memcpy(fds, CMSG_DATA(c), count * sizeof(int));
  for (size_t i = 0; i < count; ++i) {
    // Never one that a dup2 onto 0-3 would overwrite before it is used.
    if (fds[i] <= 3) fds[i] = ::fcntl(fds[i], F_DUPFD_CLOEXEC, kStandbySock + 1);
  }
  s->received.store(1);
  ChildArgs* a = &s->args;
  a->stdin_fd = fds[0];
  a->stdout_fd = fds[1];
  a->stderr_fd = fds[2];
  a->gate_fd = fds[3];
  a->cgroup_join_err = s->join_err.load();
  if (int err = s->setup_err.load(); err != 0) {
    errno = err;
    ChildFail(a, s->setup_step.load());
  }
  ChildExec(a);
}

// The parent's side of one standby. Not movable: the child holds a pointer to `shared_`.
class Standby {
 public:
  // Clones a standby that joins the cgroups whose cgroup.procs files are `procs`. Only the
  // pool's standby thread calls this (see above). nullptr and *why when it cannot be cloned.
  static std::unique_ptr<Standby> Start(std::vector<std::string> procs, std::string* why) {
    auto sb = std::unique_ptr<Standby>(new Standby(std::move(procs)));
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      *why = "socketpair: " + ErrnoText(errno);
      return nullptr;
    }
    sb->sock_ = Fd(pair[0]);
    Fd child_end(pair[1]);
    sb->shared_.sock = child_end.get();
    sb->stack_ = ::mmap(nullptr, kChildStackBytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (sb->stack_ == MAP_FAILED) {
      sb->stack_ = nullptr;
      *why = "mmap: " + ErrnoText(errno);
      return nullptr;
    }
    pid_t pid = ::clone(StandbyMain, static_cast<char*>(sb->stack_) + kChildStackBytes,
                        CLONE_VM | SIGCHLD, &sb->shared_);
    if (pid < 0) {
      *why = "clone: " + ErrnoText(errno);
      return nullptr;
    }
    sb->pid_ = pid;
    return sb;
  }

  Standby(const Standby&) = delete;
  Standby& operator=(const Standby&) = delete;
  ~Standby() {
    if (pid_ > 0) {
      sock_.Reset();  // EOF: it exits (after its cgroup join, if that is still under way)
      int status;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
    if (stack_) ::munmap(stack_, kChildStackBytes);
  }

  // Hands it a run: `args` (pointing into the caller's memory) and the three stdio descriptors.
  // Returns once it has exec'd or failed, like a vfork: its pid, with the child-written fields
  // of `args` filled in; the caller then owns the process. 0 when the standby was gone before it
  // took the run (it is reaped here; the caller clones a child instead).
  pid_t Go(ChildArgs* args) {
    shared_.args = *args;
    int fds[4] = {args->stdin_fd, args->stdout_fd, args->stderr_fd, args->gate_fd};
    size_t fds_bytes = (args->gate_fd >= 0 ? 4 : 3) * sizeof(int);
    FdMessage m;
    m.byte = 'g';
    struct msghdr& msg = m.msg;
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(fds_bytes);
    std::memcpy(CMSG_DATA(c), fds, fds_bytes);
    msg.msg_controllen = CMSG_SPACE(fds_bytes);
    ssize_t n;
    do {
      n = ::sendmsg(sock_.get(), &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n == 1) {
      // Its end closes on exec (close-on-exec) or exit: then it no longer runs in our memory.
      char ignored;
      while (::recv(sock_.get(), &ignored, 1, 0) < 0 && errno == EINTR) {
      }
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (n != 1 || shared_.received.load() == 0) return 0;  // ~Standby reaps it
    args->err = shared_.args.err;
    args->failed_step = shared_.args.failed_step;
    args->cgroup_join_err = shared_.args.cgroup_join_err;
    pid_t pid = std::exchange(pid_, -1);
    sock_.Reset();
    ::munmap(stack_, kChildStackBytes);
    stack_ = nullptr;
    return pid;
  }

 private:
  explicit Standby(std::vector<std::string> procs) : procs_(std::move(procs)) {
    for (const auto& p : procs_) procs_ptrs_.push_back(p.c_str());
    shared_.procs = procs_ptrs_.data();
    shared_.procs_count = procs_ptrs_.size();
  }

  std::vector<std::string> procs_;
  std::vector<const char*> procs_ptrs_;
  StandbyShared shared_;
  Fd sock_;  // the parent's end
  void* stack_ = nullptr;
  pid_t pid_ = -1;
};

// ---------------------------------------------------------------------------------------------
// Cgroups.

// Where per-run cgroups are created: one directory per hierarchy (v2: one with both
// controllers; v1: the memory and/or the pids hierarchy). Detected once, immutable afterwards.
struct CgroupParent {
  std::string path;
  bool memory = false;
  bool pids = false;
  bool cpu = false;        // CPU time accounting (v1 cpuacct, v2 cpu.stat)
  bool cpu_quota = false;  // CPU bandwidth (v1 cpu.cfs_quota_us)
};

struct CgroupSetup {
  int version = 0;  // 0: none usable, 1, 2
  std::vector<CgroupParent> parents;
  std::string unavailable;  // why not (version 0)

  bool has_memory() const {
    return std::any_of(parents.begin(), parents.end(), [](auto& p) { return p.memory; });
  }
  bool has_pids() const {
    return std::any_of(parents.begin(), parents.end(), [](auto& p) { return p.pids; });
  }
};

bool ControllersListed(const std::string& file) {
  auto text = ReadFile(file);
  if (!text) return false;
  auto has = [&](std::string_view word) {
    size_t pos = 0;
    while ((pos = text->find(word, pos)) != std::string::npos) {
      bool start = pos == 0 || (*text)[pos - 1] == ' ';
      size_t end = pos + word.size();
      bool stop = end == text->size() || (*text)[end] == ' ' || (*text)[end] == '\n';
      if (start && stop) return true;
      pos = end;
    }
    return false;
  };
  return has("memory") && has("pids");
}

// mkdir that accepts an existing directory; "" on success, else the reason.
std::string EnsureDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return "";
  return "mkdir " + path + ": " + ErrnoText(errno);
}

// Creates and removes a child to prove the parent is usable (permissions, controllers).
std::string ProbeParent(const std::string& parent, const std::string& expected_file) {
  std::string probe = parent + "/probe-" + NextRunName();
  if (::mkdir(probe.c_str(), 0755) != 0) return "mkdir " + probe + ": " + ErrnoText(errno);
  bool ok = Exists(probe + "/" + expected_file);
  ::rmdir(probe.c_str());
  return ok ? "" : parent + " has no " + expected_file;
}

// Removes run directories left by servers that are gone (crashed before their cleanup). Only
// empty directories can be removed, and only those whose owner pid no longer exists are tried.
void SweepStale(const std::string& parent) {
  DIR* dir = ::opendir(parent.c_str());
  if (!dir) return;
  while (struct dirent* e = ::readdir(dir)) {
    std::string_view name = e->d_name;
    if (e->d_type != DT_DIR || name == "." || name == "..") continue;
    std::string_view owner = name;
    if (owner.substr(0, 6) == "probe-") owner.remove_prefix(6);
    owner = owner.substr(0, owner.find('-'));
    auto pid = ParseU64(owner);
    if (!pid || *pid == static_cast<uint64_t>(::getpid())) continue;
    if (::kill(static_cast<pid_t>(*pid), 0) == 0 || errno != ESRCH) continue;
    ::rmdir((parent + "/" + std::string(name)).c_str());
  }
  ::closedir(dir);
}

std::string DetectV2(const std::string& mount, bool is_delegated_root, CgroupSetup* setup) {
  // A delegated root (RunnerOptions::cgroup_root) must already have the controllers available;
  // otherwise a "cortex" child of the mount's root is created and the controllers enabled.
  std::string parent = mount;
  if (!is_delegated_root) {
    if (!ControllersListed(mount + "/cgroup.controllers")) {
      return mount + " (cgroup2) does not offer the memory and pids controllers";
    }
    int err = 0;
    if (!WriteFile(mount + "/cgroup.subtree_control", "+memory +pids", &err)) {
      return "enabling memory,pids in " + mount + ": " + ErrnoText(err);
    }
    parent = mount + "/cortex";
    if (auto e = EnsureDir(parent); !e.empty()) return e;
  }
  if (!ControllersListed(parent + "/cgroup.controllers")) {
    return parent + " does not offer the memory and pids controllers";
  }
  int err = 0;
  if (!WriteFile(parent + "/cgroup.subtree_control", "+memory +pids", &err)) {
    return "enabling memory,pids in " + parent + ": " + ErrnoText(err);
  }
  if (auto e = ProbeParent(parent, "memory.max"); !e.empty()) return e;
  setup->version = 2;
  setup->parents = {{parent, true, true, true}};
  return "";
}

std::string DetectV1(const std::string& root, CgroupSetup* setup) {
  std::vector<std::string> problems;
  std::vector<CgroupParent> parents;
  for (const char* controller : {"memory", "pids", "cpuacct"}) {
    std::string mount = root + "/" + controller;
    bool cpu = std::string(controller) == "cpuacct";
    if (!IsFsType(mount, CGROUP_SUPER_MAGIC)) {
      problems.push_back(mount + " is not a cgroup v1 hierarchy");
      continue;
    }
    std::string parent = mount + "/cortex";
    std::string e = EnsureDir(parent);
    if (e.empty()) {
      e = ProbeParent(parent, std::string(controller) == "memory" ? "memory.limit_in_bytes"
                              : cpu                               ? "cpuacct.usage"
                                                                  : "pids.max");
    }
    if (!e.empty()) {
      problems.push_back(e);
      continue;
    }
    parents.push_back(
        {parent, std::string(controller) == "memory", std::string(controller) == "pids", cpu});
  }
  // CPU bandwidth: the cpu hierarchy, often mounted together with cpuacct ("cpu,cpuacct"): then
  // the cpuacct directory serves both.
  const std::string cpu_mount = root + "/cpu";
  if (IsFsType(cpu_mount, CGROUP_SUPER_MAGIC)) {
    // Co-mounted hierarchies are one directory under two names (symlinks to "cpu,cpuacct").
    auto real = [](const std::string& path) {
      char buf[PATH_MAX];
      return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
    };
    auto joint = std::find_if(parents.begin(), parents.end(), [&](const CgroupParent& p) {
      return p.cpu && real(p.path) == real(cpu_mount + "/cortex");
    });
    if (joint != parents.end()) {
      joint->cpu_quota = Exists(joint->path + "/cpu.cfs_quota_us");
    } else if (EnsureDir(cpu_mount + "/cortex").empty() &&
               ProbeParent(cpu_mount + "/cortex", "cpu.cfs_quota_us").empty()) {
      parents.push_back({cpu_mount + "/cortex", false, false, false, true});
    }
  }
  if (parents.empty()) {
    std::string all;
    for (auto& p : problems) all += (all.empty() ? "" : "; ") + p;
    return all;
  }
  setup->version = 1;
  setup->parents = std::move(parents);
  return "";
}

CgroupSetup DetectCgroups(const RunnerOptions& options) {
  CgroupSetup setup;
  if (!options.use_cgroups) {
    setup.unavailable = "disabled by configuration";
    return setup;
  }
  std::vector<std::string> problems;
  if (!options.cgroup_root.empty()) {
    std::string root = options.cgroup_root;
    std::string e =
        IsFsType(root, CGROUP2_SUPER_MAGIC) ? DetectV2(root, true, &setup) : DetectV1(root, &setup);
    if (!e.empty()) problems.push_back(e);
  } else {
    // Pure v2 (/sys/fs/cgroup is cgroup2), hybrid (v2 at /sys/fs/cgroup/unified, usually
    // without controllers), then v1.
    for (const char* mount : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
      if (setup.version == 0 && IsFsType(mount, CGROUP2_SUPER_MAGIC)) {
        if (auto e = DetectV2(mount, false, &setup); !e.empty()) problems.push_back(e);
      }
    }
    if (setup.version == 0 && !IsFsType("/sys/fs/cgroup", CGROUP2_SUPER_MAGIC)) {
      if (auto e = DetectV1("/sys/fs/cgroup", &setup); !e.empty()) problems.push_back(e);
    }
  }
  if (setup.version == 0) {
    for (auto& p : problems) setup.unavailable += (setup.unavailable.empty() ? "" : "; ") + p;
    if (setup.unavailable.empty()) setup.unavailable = "no cgroup hierarchy found";
  } else {
    for (auto& p : setup.parents) SweepStale(p.path);
  }
  return setup;
}

// A bounded queue drained by its own thread, which runs `work` on each item in order; the
// destructor finishes whatever is still pending. Takes cleanup off a run's path.
template <typename T>
class BackgroundQueue {
 public:
  BackgroundQueue(size_t capacity, std::function<void(T&)> work)
      : capacity_(capacity), work_(std::move(work)), thread_([this] { Loop(); }) {}
  ~BackgroundQueue() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();  // the loop handles everything still pending before it returns
  }
  BackgroundQueue(const BackgroundQueue&) = delete;
  BackgroundQueue& operator=(const BackgroundQueue&) = delete;

  // Takes all the items (moving them out), or none when they do not fit: then false, and the
  // caller does the work itself.
  bool TryPushAll(std::vector<T>& items) {
    {
      std::lock_guard lock(mu_);
      if (pending_.size() + items.size() > capacity_) return false;
      for (auto& item : items) pending_.push_back(std::move(item));
    }
    cv_.notify_one();
    return true;
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (pending_.empty()) return;  // stopping, and nothing left
      T item = std::move(pending_.front());
      pending_.pop_front();
      lock.unlock();
      work_(item);
      lock.lock();
    }
  }

  const size_t capacity_;
  const std::function<void(T&)> work_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> pending_;  // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;     // last: starts once the rest is ready
};

// Removes the (empty) directories of finished runs' cgroups on its own thread, so a run's
// result is not held back by rmdir: a v1 memory cgroup that just lost its last task often
// answers EBUSY for a moment, and waiting for it cost ~0.4 ms per call. Bounded: past
// kMaxPending directories the caller removes its own inline.
class CgroupJanitor {
 public:
  static constexpr size_t kMaxPending = 256;

  // False when the queue is full (then the caller removes the directories itself).
  bool Remove(std::vector<std::string> dirs) { return queue_.TryPushAll(dirs); }

  // Removes one cgroup directory, waiting out a transient EBUSY (bounded).
  static void RemoveNow(const std::string& dir) {
    auto deadline = Clock::now() + kGoneDeadline;
    while (::rmdir(dir.c_str()) != 0 && errno == EBUSY && Clock::now() < deadline) {
      std::this_thread::sleep_for(microseconds(500));
    }
    if (Exists(dir))
      log::Warn(kComponent, "could not remove cgroup " + dir + ": " + ErrnoText(errno));
  }

 private:
  BackgroundQueue<std::string> queue_{kMaxPending, [](std::string& dir) { RemoveNow(dir); }};
};

// Per-run cgroup directories kept for reuse (v1 only): creating and removing a memory cgroup is
// most of a cgroup's cost per call (the kernel allocates and frees per-CPU state, ~0.2 ms). A
// reused set has its counters reset or baselined (peak memory, CPU time, OOM kills, refused
// forks) and its limits rewritten when they differ. A set is only kept when the run left it
// empty and using little memory (left-over page cache is charged to it and would count against
// the next run), at most kMaxIdle of them.
struct CgroupSlot {
  std::vector<CgroupParent> dirs;
  std::vector<Fd> procs_fds;  // cgroup.procs of each, for the child to join (open while in use)
  std::string memory_limit = "unset", pids_limit = "unset", cpu_quota = "unset";  // as written
  uint64_t oom_base = 0, fork_failure_base = 0;  // counters at the run's start
  bool reused = false;
  ControlFiles files;                // its control files, opened once
  std::unique_ptr<Standby> standby;  // a child waiting inside these cgroups (idle slots only)

  std::vector<std::string> procs_paths() const {
    std::vector<std::string> paths;
    for (const auto& d : dirs) paths.push_back(d.path + "/cgroup.procs");
    return paths;
  }
};

class CgroupPool {
 public:
  static constexpr size_t kMaxIdle = 16;
  static constexpr size_t kMaxStandbys = 8;  // idle slots with a child waiting in them
  static constexpr uint64_t kMaxLeftoverBytes = 16ull << 20;

  explicit CgroupPool(int version) : version_(version) {
    if (version_ == 1) standby_thread_ = std::thread([this] { StandbyLoop(); });
  }
  ~CgroupPool() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (standby_thread_.joinable()) standby_thread_.join();  // it ended the idle standbys
    std::vector<std::string> paths;
    for (auto& slot : idle_) {
      slot->standby.reset();  // (none left; a v2 pool has none)
      for (auto& d : slot->dirs) paths.push_back(d.path);
    }
    idle_.clear();  // closes the descriptors first
    for (const auto& p : paths) CgroupJanitor::RemoveNow(p);
  }

  // An idle slot, one with a standby child when there is one.
  std::unique_ptr<CgroupSlot> Take() {
    std::lock_guard lock(mu_);
    if (idle_.empty()) return nullptr;
    auto it = std::find_if(idle_.rbegin(), idle_.rend(),
                           [](const auto& s) { return s->standby != nullptr; });
    auto pick = it == idle_.rend() ? std::prev(idle_.end()) : std::prev(it.base());
    auto slot = std::move(*pick);
    idle_.erase(pick);
    slot->reused = true;
    return slot;
  }

  // Keeps an empty slot for a later run; false when it should be removed instead.
  bool Give(std::unique_ptr<CgroupSlot>& slot) {
    if (version_ != 1) return false;
    for (const auto& d : slot->dirs) {
      if (!d.memory) continue;
      auto usage = ReadU64File(d.path + "/memory.usage_in_bytes", &slot->files);
      if (!usage || *usage > kMaxLeftoverBytes) return false;
    }
    {
      std::lock_guard lock(mu_);
      if (idle_.size() >= kMaxIdle) return false;
      slot->procs_fds.clear();  // an idle slot holds its control files only
      idle_.push_back(std::move(slot));
    }
    cv_.notify_all();  // the standby thread gives it a child
    return true;
  }

  CgroupJanitor& janitor() { return janitor_; }

 private:
  // Clones a standby into idle slots that have none (see "Standby children"). The only thread
  // that clones standbys: they share its TLS. It blocks every signal, so they start with every
  // signal blocked (ChildExec clears the mask before execve).
  void StandbyLoop() {
    ::pthread_setname_np(::pthread_self(), "cortex-standby");
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
    std::unique_lock lock(mu_);
    for (;;) {
      auto wanted = [&] {
        size_t have = static_cast<size_t>(std::count_if(
            idle_.begin(), idle_.end(), [](const auto& s) { return s->standby != nullptr; }));
        if (have >= kMaxStandbys || standby_error_) return idle_.end();
        return std::find_if(idle_.begin(), idle_.end(),
                            [](const auto& s) { return s->standby == nullptr; });
      };
      cv_.wait(lock, [&] { return stopping_ || wanted() != idle_.end(); });
      if (stopping_) {
        // Ended (told to exit and reaped) while this thread, whose TLS they share, still lives:
        // a standby's failed system call writes this thread's errno.
        for (auto& slot : idle_) slot->standby.reset();
        return;
      }
      auto it = wanted();
      auto slot = std::move(*it);
      idle_.erase(it);
      lock.unlock();
      std::string why;
      slot->standby = Standby::Start(slot->procs_paths(), &why);
      lock.lock();
      if (!slot->standby) {
        standby_error_ = true;  // runs clone their child and join the cgroup themselves
        log::Warn(kComponent, "cannot keep a child ready in an idle cgroup (" + why +
                                  "): each run joins its cgroup itself");
      }
      idle_.push_back(std::move(slot));
    }
  }

  const int version_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<CgroupSlot>> idle_;  // guarded by mu_
  bool stopping_ = false;                          // guarded by mu_
  bool standby_error_ = false;                     // guarded by mu_
  CgroupJanitor janitor_;
  std::thread standby_thread_;
};

// The cgroup(s) of one run. Created before the spawn (the child joins them before exec);
// the destructor kills whatever is still inside and hands the directories to the janitor.
class RunCgroup {
 public:
  struct Stats {
    uint64_t oom_kills = 0;        // processes killed by the OOM killer
    uint64_t fork_failures = 0;    // forks refused by pids.max
    std::optional<uint64_t> peak;  // peak memory of the whole tree
    // CPU time of the whole tree: unlike rusage, it counts processes nobody waited for (a
    // sandbox's init exits without reaping into its parent's rusage).
    std::optional<uint64_t> cpu_user_usec, cpu_system_usec;
  };

  // nullptr (and *why) when the directories or limits cannot be set up; the caller falls back.
  static std::unique_ptr<RunCgroup> Create(const CgroupSetup& setup, const Limits& limits,
                                           CgroupPool* pool, std::string* why) {
    auto cg = std::unique_ptr<RunCgroup>(new RunCgroup(setup.version, pool));
    std::unique_ptr<CgroupSlot> slot = pool ? pool->Take() : nullptr;
    if (slot) {
      // The descriptors to join by are only needed when no standby is there to take the run.
      bool opened = slot->standby != nullptr || cg->OpenProcs(*slot);
      if (opened && cg->Configure(*slot, limits, why)) {
        cg->slot_ = std::move(slot);
        return cg;
      }
      // Could not be reset (e.g. the new memory limit is below what it still holds): a new one.
      cg->Discard(*slot);
      slot.reset();
    }
    slot = std::make_unique<CgroupSlot>();
    std::string name = NextRunName();
    for (const auto& parent : setup.parents) {
      std::string dir = parent.path + "/" + name;
      if (::mkdir(dir.c_str(), 0755) != 0) {
        *why = "mkdir " + dir + ": " + ErrnoText(errno);
        cg->Discard(*slot);
        return nullptr;
      }
      CgroupParent d = parent;
      d.path = dir;
      slot->dirs.push_back(std::move(d));
      int fd = ::open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) {
        *why = "opening " + dir + "/cgroup.procs: " + ErrnoText(errno);
        cg->Discard(*slot);
        return nullptr;
      }
      slot->procs_fds.emplace_back(fd);
    }
    if (!cg->Configure(*slot, limits, why)) {
      cg->Discard(*slot);
      return nullptr;
    }
    cg->slot_ = std::move(slot);
    return cg;
  }

  RunCgroup(const RunCgroup&) = delete;
  RunCgroup& operator=(const RunCgroup&) = delete;

  ~RunCgroup() {
    if (!slot_) return;
    slot_->standby.reset();  // an untaken standby exits on its own
    auto deadline = Clock::now() + kGoneDeadline;
    bool empty = false;
    while (!(empty = KillAll()) && Clock::now() < deadline) {
      std::this_thread::sleep_for(microseconds(500));
    }
    if (empty && pool_ && pool_->Give(slot_)) return;
    Discard(*slot_);
  }

  // The child waiting in this slot's cgroups, if any (to take the run).
  std::unique_ptr<Standby> TakeStandby() { return std::move(slot_->standby); }

  // Descriptors of cgroup.procs, one per hierarchy: the child writes "0" into each.
  std::vector<int> procs_fds() {
    if (slot_->procs_fds.empty()) OpenProcs(*slot_);
    std::vector<int> fds;
    for (const auto& fd : slot_->procs_fds) fds.push_back(fd.get());
    return fds;
  }

  bool enforces_memory() const {
    return std::any_of(dirs().begin(), dirs().end(), [](auto& d) { return d.memory; });
  }
  bool enforces_pids() const {
    return std::any_of(dirs().begin(), dirs().end(), [](auto& d) { return d.pids; });
  }
  bool enforces_cpu_quota() const {
    return std::any_of(dirs().begin(), dirs().end(), [](auto& d) { return d.cpu_quota; });
  }

  // SIGKILL to every process in the cgroup. True when it is (now) empty. The pidfds of the
  // processes signalled are appended to `killed` (when given), so that they can be reaped.
  bool KillAll(std::vector<Fd>* killed = nullptr) const {
    if (dirs().empty()) return true;
    const std::string procs = dirs().front().path + "/cgroup.procs";
    ControlFiles* files = &slot_->files;
    // cgroup.procs is opened afresh each time: a v1 pidlist kept open can be read stale.
    auto first = ReadFile(procs, 1 << 20);
    if (!first) return true;  // directory gone
    std::vector<pid_t> pids = ParsePids(*first);
    if (pids.empty()) return true;
    if (version_ == 2 && WriteFile(dirs().front().path + "/cgroup.kill", "1", nullptr, files)) {
      return false;
    }
    // No cgroup.kill (v1): signal pid by pid without ever hitting a recycled pid. A pidfd pins
    // the process that held the pid when it was opened; if the pid is still listed afterwards,
    // the holder is in this cgroup, and if it is not that process any more the signal fails.
    std::vector<Fd> pidfds;
    for (pid_t pid : pids) pidfds.emplace_back(PidfdOpen(pid));
    auto second = ReadFile(procs, 1 << 20);
    std::vector<pid_t> still = second ? ParsePids(*second) : std::vector<pid_t>{};
    for (size_t i = 0; i < pids.size(); ++i) {
      if (std::find(still.begin(), still.end(), pids[i]) == still.end()) continue;
      if (pidfds[i].valid()) {
        PidfdSendSignal(pidfds[i].get(), SIGKILL);
        if (killed) killed->push_back(std::move(pidfds[i]));
      } else if (errno == ENOSYS) {
        ::kill(pids[i], SIGKILL);  // old kernel: the tiny reuse window is accepted
      }
    }
    return false;
  }

  Stats ReadStats() const {
    Stats s;
    ControlFiles* files = &slot_->files;
    for (const auto& d : dirs()) {
      if (d.memory) {
        if (version_ == 2) {
          s.oom_kills = ReadKeyedU64(d.path + "/memory.events", "oom_kill", files).value_or(0);
          s.peak = ReadU64File(d.path + "/memory.peak", files);
        } else {
          auto kills = ReadKeyedU64(d.path + "/memory.oom_control", "oom_kill", files);
          // Kernels before 4.13 have no oom_kill counter: hitting the limit is the best signal
          // (failcnt is reset for a reused cgroup; the oom_kill counter cannot be: baselined).
          s.oom_kills = kills ? *kills - std::min(*kills, slot_->oom_base)
                              : ReadU64File(d.path + "/memory.failcnt", files).value_or(0);
          s.peak = ReadU64File(d.path + "/memory.max_usage_in_bytes", files);
        }
      }
      if (d.pids) {
        uint64_t n = ReadKeyedU64(d.path + "/pids.events", "max", files).value_or(0);
        s.fork_failures = n - std::min(n, slot_->fork_failure_base);
      }
      if (d.cpu) {
        if (version_ == 2) {
          s.cpu_user_usec = ReadKeyedU64(d.path + "/cpu.stat", "user_usec", files);
          s.cpu_system_usec = ReadKeyedU64(d.path + "/cpu.stat", "system_usec", files);
        } else {
          auto user_ns = ReadU64File(d.path + "/cpuacct.usage_user", files);
          auto sys_ns = ReadU64File(d.path + "/cpuacct.usage_sys", files);
          if (user_ns) s.cpu_user_usec = *user_ns / 1000;
          if (sys_ns) s.cpu_system_usec = *sys_ns / 1000;
        }
      }
    }
    return s;
  }

 private:
  RunCgroup(int version, CgroupPool* pool) : version_(version), pool_(pool) {}

  const std::vector<CgroupParent>& dirs() const { return slot_->dirs; }

  bool OpenProcs(CgroupSlot& slot) const {
    bool opened = true;
    slot.procs_fds.clear();
    for (const auto& d : slot.dirs) {
      int fd = ::open((d.path + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) opened = false;
      slot.procs_fds.emplace_back(fd);
    }
    return opened;
  }

  // Writes the run's limits (where they differ from what the slot has) and, for a reused slot,
  // resets its counters or records their baselines.
  bool Configure(CgroupSlot& slot, const Limits& limits, std::string* why) {
    ControlFiles* files = &slot.files;
    for (const auto& d : slot.dirs) {
      const std::string& dir = d.path;
      int err = 0;
      if (d.memory) {
        std::string bytes = limits.memory_bytes ? std::to_string(*limits.memory_bytes) : "";
        if (bytes != slot.memory_limit) {
          if (version_ == 2) {
            if (!WriteFile(dir + "/memory.max", bytes.empty() ? "max" : bytes, &err, files)) {
              *why = "writing memory.max: " + ErrnoText(err);
              return false;
            }
            WriteFile(dir + "/memory.swap.max", "0", nullptr, files);  // no swap beyond the limit
            WriteFile(dir + "/memory.oom.group", "1", nullptr,
                      files);  // an OOM kill takes the whole tree
          } else {
            std::string v = bytes.empty() ? "-1" : bytes;
            // memsw (swap accounting) must stay >= the memory limit: raise it first when
            // raising, lower it after when lowering; it is absent without swap accounting.
            WriteFile(dir + "/memory.memsw.limit_in_bytes", "-1", nullptr, files);
            if (!WriteFile(dir + "/memory.limit_in_bytes", v, &err, files)) {
              *why = "writing memory.limit_in_bytes: " + ErrnoText(err);
              return false;
            }
            WriteFile(dir + "/memory.memsw.limit_in_bytes", v, nullptr, files);
          }
          slot.memory_limit = bytes;
        }
        if (slot.reused && version_ == 1) {
          WriteFile(dir + "/memory.max_usage_in_bytes", "0", nullptr,
                    files);  // the peak starts over
          WriteFile(dir + "/memory.failcnt", "0", nullptr, files);
          slot.oom_base = ReadKeyedU64(dir + "/memory.oom_control", "oom_kill", files).value_or(0);
        }
      }
      if (d.pids) {
        std::string n = limits.max_processes ? std::to_string(*limits.max_processes) : "";
        if (n != slot.pids_limit) {
          if (!WriteFile(dir + "/pids.max", n.empty() ? "max" : n, &err, files)) {
            *why = "writing pids.max: " + ErrnoText(err);
            return false;
          }
          slot.pids_limit = n;
        }
        if (slot.reused) {
          slot.fork_failure_base = ReadKeyedU64(dir + "/pids.events", "max", files).value_or(0);
        }
      }
      if (d.cpu && slot.reused && version_ == 1)
        WriteFile(dir + "/cpuacct.usage", "0", nullptr, files);
      if (d.cpu_quota) {
        // Quota per 100 ms period; -1: unlimited.
        std::string quota =
            limits.cpu_cores
                ? std::to_string(std::max<int64_t>(1000, std::llround(*limits.cpu_cores * 1e5)))
                : "-1";
        if (quota != slot.cpu_quota) {
          if (slot.cpu_quota == "unset")
            WriteFile(dir + "/cpu.cfs_period_us", "100000", nullptr, files);
          if (!WriteFile(dir + "/cpu.cfs_quota_us", quota, &err, files)) {
            *why = "writing cpu.cfs_quota_us: " + ErrnoText(err);
            return false;
          }
          slot.cpu_quota = quota;
        }
      }
    }
    return true;
  }

  // Removes the slot's directories (in the background when the janitor has room).
  void Discard(CgroupSlot& slot) {
    slot.standby.reset();
    slot.procs_fds.clear();
    slot.files.Clear();
    std::vector<std::string> paths;
    for (const auto& d : slot.dirs) paths.push_back(d.path);
    slot.dirs.clear();
    if (pool_ && pool_->janitor().Remove(paths)) return;
    for (const auto& p : paths) CgroupJanitor::RemoveNow(p);
  }

  int version_;
  CgroupPool* pool_;
  std::unique_ptr<CgroupSlot> slot_;
};

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

// ---------------------------------------------------------------------------------------------
// ResolveProgram.

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::vector<std::string> SplitPath(const std::string& path_env) {
  std::vector<std::string> dirs;
  size_t pos = 0;
  while (pos <= path_env.size()) {
    size_t end = path_env.find(':', pos);
    if (end == std::string::npos) end = path_env.size();
    // An empty entry means the server's working directory: never searched (not reproducible).
    if (end > pos) dirs.push_back(path_env.substr(pos, end - pos));
    pos = end + 1;
  }
  return dirs;
}

// "3.11" -> the highest installed "3.11.x" (pyenv's prefix resolution).
std::optional<std::string> PyenvVersionDir(const std::string& versions, const std::string& want) {
  if (Exists(versions + "/" + want)) return versions + "/" + want;
  DIR* dir = ::opendir(versions.c_str());
  if (!dir) return std::nullopt;
  std::optional<std::string> best;
  auto key = [](const std::string& v) {
    std::vector<uint64_t> parts;
    size_t pos = 0;
    while (pos < v.size()) {
      size_t end = v.find('.', pos);
      if (end == std::string::npos) end = v.size();
      parts.push_back(ParseU64(std::string_view(v).substr(pos, end - pos)).value_or(0));
      pos = end + 1;
    }
    return parts;
  };
  while (struct dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name.size() <= want.size() || name.compare(0, want.size(), want) != 0 ||
        name[want.size()] != '.') {
      continue;
    }
    if (name.find_first_not_of("0123456789.") != std::string::npos) continue;
    if (!best || key(name) > key(*best)) best = name;
  }
  ::closedir(dir);
  if (!best) return std::nullopt;
  return versions + "/" + *best;
}

std::vector<std::string> SplitVersions(std::string_view text, std::string_view seps) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find_first_of(seps, pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view v = text.substr(pos, end - pos);
    if (!v.empty() && v[0] != '#') out.emplace_back(v);
    pos = end + 1;
  }
  return out;
}

// A pyenv shim is a small script in a "shims" directory that runs `pyenv exec`. Returns the
// PYENV_ROOT it exports (else the shims directory's parent), or nullopt for anything else.
std::optional<std::string> PyenvShimRoot(const std::string& path, const std::string& dir) {
  if (dir.size() < 6 || dir.compare(dir.size() - 6, 6, "/shims") != 0) return std::nullopt;
  auto head = ReadFile(path, 2048);
  if (!head || head->compare(0, 2, "#!") != 0 || head->find("pyenv") == std::string::npos) {
    return std::nullopt;
  }
  constexpr std::string_view kExport = "export PYENV_ROOT=\"";
  if (size_t pos = head->find(kExport); pos != std::string::npos) {
    size_t begin = pos + kExport.size();
    size_t end = head->find('"', begin);
    if (end != std::string::npos && end > begin && (*head)[begin] == '/') {
      return head->substr(begin, end - begin);
    }
  }
  return dir.substr(0, dir.size() - 6);
}

}  // namespace

std::unique_ptr<ProcessRunner> MakeProcessRunner(RunnerOptions options) {
  return std::make_unique<RealProcessRunner>(std::move(options));
}

Result<std::string> ResolveProgram(const std::string& name, const std::string& path_env,
                                   const std::string& pyenv_version) {
  if (name.empty()) return InvalidArgumentError("empty program name");
  if (name.find('/') != std::string::npos) {
    if (name[0] != '/') {
      return InvalidArgumentError("program '" + name +
                                  "' is a relative path; give an absolute "
                                  "path or a bare name to look up in PATH");
    }
    if (!Exists(name)) return NotFoundError("program " + name + " does not exist");
    if (!IsExecutableFile(name)) {
      return Status(StatusCode::kPermissionDenied, "program " + name + " is not executable");
    }
    return name;
  }
  std::optional<std::string> shim;  // pyenv selected "system": the PATH without the shims
  for (const std::string& dir : SplitPath(path_env)) {
    std::string candidate = dir + "/" + name;
    if (!IsExecutableFile(candidate)) continue;
    auto root_dir = PyenvShimRoot(candidate, dir);
    if (!root_dir) return candidate;
    if (shim) continue;
    // pyenv: PYENV_VERSION, else $PYENV_ROOT/version; each may list several versions.
    const std::string& root = *root_dir;
    std::vector<std::string> versions;
    if (!pyenv_version.empty()) {
      versions = SplitVersions(pyenv_version, ":");
    } else if (auto file = ReadFile(root + "/version", 4096)) {
      versions = SplitVersions(*file, " \t\r\n");
    }
    bool system = versions.empty();  // pyenv's default when nothing is selected
    for (const auto& v : versions) {
      if (v == "system") {
        system = true;
        break;
      }
      auto vdir = PyenvVersionDir(root + "/versions", v);
      if (vdir && IsExecutableFile(*vdir + "/bin/" + name)) return *vdir + "/bin/" + name;
    }
    if (!system) return candidate;  // cannot tell without running it: keep the shim
    shim = candidate;
  }
  if (shim) return *shim;
  return NotFoundError("program '" + name + "' not found in PATH");
}

}  // namespace cortex::exec
