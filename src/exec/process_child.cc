// The child side of clone(CLONE_VM | CLONE_VFORK), and standby children.
//
// The child borrows the parent's memory and the calling thread stays suspended until the exec
// (see process.cc). The price is the vfork discipline: ChildMain only makes raw,
// async-signal-safe system calls on data prepared by the parent (no allocation, no locks), and
// it reports a failure by storing errno in the shared ChildArgs (which the parent reads after
// clone returns), not through a pipe.
#include "exec/process_child.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace cortex::exec::internal {
namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

std::unique_ptr<Standby> Standby::Start(std::vector<std::string> procs, std::string* why) {
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

Standby::~Standby() {
  if (pid_ > 0) {
    sock_.Reset();  // EOF: it exits (after its cgroup join, if that is still under way)
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (stack_) ::munmap(stack_, kChildStackBytes);
}

pid_t Standby::Go(ChildArgs* args) {
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

Standby::Standby(std::vector<std::string> procs) : procs_(std::move(procs)) {
  for (const auto& p : procs_) procs_ptrs_.push_back(p.c_str());
  shared_.procs = procs_ptrs_.data();
  shared_.procs_count = procs_ptrs_.size();
}

}  // namespace cortex::exec::internal
