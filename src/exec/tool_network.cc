#include "exec/tool_network.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/fd.h"
#include "common/log.h"
#include "exec/sandbox.h"

namespace cortex::exec {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// 'R', 'S', 'Z', ... of a process; 0 when it does not exist.
char ProcessState(int pid) {
  std::string stat = ReadSmallFile("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() ? 0 : stat[paren + 2];
}

// bwrap's only child: the sandbox's first process, which holds its namespaces.
Result<int> SandboxProcess(int bwrap_pid, Clock::time_point deadline) {
  const std::string children =
      "/proc/" + std::to_string(bwrap_pid) + "/task/" + std::to_string(bwrap_pid) + "/children";
  auto pause = std::chrono::microseconds(100);
  for (;;) {
    std::istringstream in(ReadSmallFile(children));
    int child = 0;
    if (in >> child && child > 0) return child;
    char state = ProcessState(bwrap_pid);
    if (state == 0 || state == 'Z' || state == 'X') {
      return FailedPreconditionError("the sandbox ended before its network was set up");
    }
    if (Clock::now() >= deadline) {
      return DeadlineExceededError("the sandbox did not start in time to set up its network");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, milliseconds(5));
  }
}

// bwrap sets up the sandbox's loopback itself (its address, then the link up) right after it
// makes the namespace. pasta brings `lo` up too, and the kernel gives a loopback that comes up
// 127.0.0.1 by itself, so pasta must not start before bwrap is done: otherwise bwrap's own
// RTM_NEWADDR finds the address there and fails the run ("loopback: Failed RTM_NEWADDR"). Once
// 127.255.255.255 is a broadcast route of the namespace, lo has its address and is up: bwrap is
// done with it. When the namespace's routes cannot be read at all, there is nothing to wait on.
Status WaitForLoopback(int sandbox_pid, Clock::time_point deadline) {
  const std::string path = "/proc/" + std::to_string(sandbox_pid) + "/net/fib_trie";
  auto pause = std::chrono::microseconds(100);
  for (;;) {
    std::ifstream in(path);
    if (!in.is_open()) {
      if (ProcessState(sandbox_pid) == 0) {
        return FailedPreconditionError("the sandbox ended before its network was set up");
      }
      return Status::Ok();
    }
    std::stringstream trie;
    trie << in.rdbuf();
    if (trie.str().find("127.255.255.255") != std::string::npos) return Status::Ok();
    if (Clock::now() >= deadline) {
      return DeadlineExceededError("the sandbox did not set up its loopback in time");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, milliseconds(5));
  }
}

// Reads what is there on `fd` until EOF, the deadline or a newline when `line` is set; at most
// `limit` bytes.
std::string ReadUntil(int fd, Clock::time_point deadline, size_t limit, bool line = false) {
  std::string out;
  char buf[4096];
  while (out.size() < limit && !(line && !out.empty() && out.back() == '\n')) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    ssize_t got = ::read(fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    out.append(buf, static_cast<size_t>(got));
  }
  return out;
}

// pasta's stderr without its complaints about a missing syslog.
std::string PastaMessage(const std::string& stderr_text) {
  std::string out;
  std::istringstream in(stderr_text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line.find("to syslog") != std::string::npos) continue;
    out += (out.empty() ? "" : "; ") + line;
  }
  return out.empty() ? "no message" : out;
}

// Waits for `pid` (a child) to exit for up to `wait`; true when it was reaped.
bool ReapWithin(int pid, milliseconds wait) {
  auto until = Clock::now() + wait;
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, milliseconds(20));
  }
}

// Moves `fd` to a number of at least 10, so the spawn's dup2 onto 2..5 cannot clobber another
// source descriptor.
Fd High(Fd fd) {
  if (!fd.valid() || fd.get() >= 10) return fd;
  return Fd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 10));
}

}  // namespace

std::string FindPasta(const std::string& hint) {
  if (!hint.empty()) return IsExecutableFile(hint) ? hint : "";
  for (const char* p : {"/usr/bin/pasta", "/usr/local/bin/pasta", "/bin/pasta"}) {
    if (IsExecutableFile(p)) return p;
  }
  return "";
}

std::string PastaHostPortSpec(const std::vector<int>& host_ports) {
  std::string spec;
  for (int port : host_ports) {
    if (port < 1 || port > 65535) continue;
    spec += (spec.empty() ? "" : ",") + std::to_string(port);
  }
  return spec.empty() ? "none" : spec;
}

Result<std::unique_ptr<NetworkLink>> NetworkLink::Attach(int bwrap_pid,
                                                         const NetworkLinkOptions& options) {
  const auto deadline = Clock::now() + options.timeout;
  CORTEX_ASSIGN_OR_RETURN(int sandbox_pid, SandboxProcess(bwrap_pid, deadline));
  CORTEX_RETURN_IF_ERROR(WaitForLoopback(sandbox_pid, deadline));
  const std::string ns_dir = "/proc/" + std::to_string(sandbox_pid) + "/ns/";

  Fd netns(::open((ns_dir + "net").c_str(), O_RDONLY | O_CLOEXEC));
  if (!netns.valid()) {
    return FailedPreconditionError("cannot open the sandbox's network namespace: " +
                                   ErrnoText(errno));
  }
  // Never give the host's own namespace a second interface: the sandbox must have its own.
  struct stat theirs, ours;
  if (::fstat(netns.get(), &theirs) != 0 || ::stat("/proc/self/ns/net", &ours) != 0 ||
      (theirs.st_dev == ours.st_dev && theirs.st_ino == ours.st_ino)) {
    return FailedPreconditionError("the sandbox shares the host's network namespace");
  }
  Fd userns;
  if (options.join_user_namespace) {
    userns = Fd(::open((ns_dir + "user").c_str(), O_RDONLY | O_CLOEXEC));
    if (!userns.valid()) {
      return FailedPreconditionError("cannot open the sandbox's user namespace: " +
                                     ErrnoText(errno));
    }
  }
  int pid_pipe[2], err_pipe[2];
  if (::pipe2(pid_pipe, O_CLOEXEC) != 0) return InternalError("pipe2: " + ErrnoText(errno));
  Fd pid_read(pid_pipe[0]), pid_write(pid_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return InternalError("pipe2: " + ErrnoText(errno));
  Fd err_read(err_pipe[0]), err_write(err_pipe[1]);
  netns = High(std::move(netns));
  userns = High(std::move(userns));
  pid_write = High(std::move(pid_write));
  err_write = High(std::move(err_write));
  if (!netns.valid() || !pid_write.valid() || !err_write.valid() ||
      (options.join_user_namespace && !userns.valid())) {
    return InternalError("fcntl: " + ErrnoText(errno));
  }

  // In the child: 0 and 1 are /dev/null, 2 is the error pipe, 3 the network namespace, 4 the
  // pid pipe, 5 the user namespace; nothing else stays open.
  std::vector<std::string> args = {options.setpriv_path, "--pdeathsig", "KILL", "--",
                                   options.pasta_path,   "-f",          "-q"};
  if (::geteuid() == 0) {
    for (const char* a : {"--runas", "0"}) args.push_back(a);  // it must enter the namespace
  }
  for (const char* a : {"--config-net", "--no-map-gw", "-t", "none", "-u", "none", "-U", "none"}) {
    args.push_back(a);
  }
  args.push_back("-T");
  args.push_back(PastaHostPortSpec(options.host_ports));
  if (options.join_user_namespace) {
    args.push_back("--userns");
    args.push_back("/proc/self/fd/5");
  }
  for (const char* a : {"--netns", "/proc/self/fd/3", "-P", "/proc/self/fd/4"}) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  char* envp[] = {const_cast<char*>("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), nullptr};

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, err_write.get(), 2);
  posix_spawn_file_actions_adddup2(&actions, netns.get(), 3);
  posix_spawn_file_actions_adddup2(&actions, pid_write.get(), 4);
  if (userns.valid()) posix_spawn_file_actions_adddup2(&actions, userns.get(), 5);
  posix_spawn_file_actions_addclosefrom_np(&actions, userns.valid() ? 6 : 5);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return UnavailableError("cannot run " + options.setpriv_path + ": " + ErrnoText(rc));
  }
  pid_write.Reset();
  err_write.Reset();
  netns.Reset();
  userns.Reset();
  std::unique_ptr<NetworkLink> link(new NetworkLink(pid));  // from here on, stopped when dropped

  // pasta writes its pid once the namespace's interface, addresses and routes are configured.
  std::string written = ReadUntil(pid_read.get(), deadline, 64, /*line=*/true);
  if (written.empty() || written.back() != '\n') {
    bool timed_out = Clock::now() >= deadline;
    std::string message =
        PastaMessage(ReadUntil(err_read.get(), Clock::now() + milliseconds(200), 8192));
    if (timed_out) {
      return DeadlineExceededError("pasta did not set up the tool's network within " +
                                   std::to_string(options.timeout.count()) + " ms (" + message +
                                   ")");
    }
    return UnavailableError("pasta could not set up the tool's network: " + message);
  }
  return link;
}

NetworkLink::~NetworkLink() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  if (ReapWithin(pid_, milliseconds(1000))) return;
  log::Warn("exec", "pasta " + std::to_string(pid_) + " ignored SIGTERM; killing it");
  ::kill(pid_, SIGKILL);
  (void)ReapWithin(pid_, milliseconds(5000));
}

}  // namespace cortex::exec
