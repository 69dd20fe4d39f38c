#include "deploy/process_driver.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/fd.h"
#include "common/log.h"

namespace cortex::deploy {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

std::string WaitStatusText(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* name = ::sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) +
           (name ? std::string(" (SIG") + name + ")" : "");
  }
  return "ended (status " + std::to_string(status) + ")";
}

// The last `n` lines of a file (reading at most the last 4 MiB).
std::vector<std::string> TailLines(const std::string& path, size_t n) {
  std::vector<std::string> lines;
  std::ifstream in(path, std::ios::binary);
  if (!in || n == 0) return lines;
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  std::streamoff from = std::max<std::streamoff>(0, size - (4 << 20));
  in.seekg(from);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream ss(data);
  std::string line;
  bool first = from > 0;  // a partial first line is dropped
  while (std::getline(ss, line)) {
    if (first) {
      first = false;
      continue;
    }
    lines.push_back(std::move(line));
  }
  if (lines.size() > n) lines.erase(lines.begin(), lines.end() - static_cast<std::ptrdiff_t>(n));
  return lines;
}

}  // namespace

int64_t ProcessStartTime(int64_t pid) {
  if (pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return 0;
  auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  for (int i = 0; i < 20 && fields >> field; ++i) {
    if (i == 0 && (field == "Z" || field == "X")) return 0;  // a zombie is not running
    if (i == 19) {
      try {
        return std::stoll(field);
      } catch (...) {
        return 0;
      }
    }
  }
  return 0;
}

namespace {

// Reaps the zombies of process group `pgid` that are this server's children: a relic's own
// children, orphaned when it ended, are adopted by the server (a child subreaper) and nobody else
// waits for them. Returns how many members of the group are still running.
int ReapOrphansOfGroup(pid_t pgid) {
  const pid_t self = ::getpid();
  int running = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream in("/proc/" + name + "/stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    auto close = stat.rfind(')');
    if (close == std::string::npos || close + 2 >= stat.size()) continue;
    std::istringstream fields(stat.substr(close + 2));
    std::string state;
    long ppid = 0, pgrp = 0;
    if (!(fields >> state >> ppid >> pgrp) || pgrp != pgid) continue;
    if (state != "Z" && state != "X") {
      ++running;
    } else if (ppid == self) {
      pid_t pid = static_cast<pid_t>(std::atol(name.c_str()));
      (void)::waitpid(pid, nullptr, WNOHANG);
    }
  }
  return running;
}

// The first folder on the way to `path` that the account (uid, gid) may not enter, or "" when
// it can reach `path`. Supplementary groups are not counted (setpriv clears them).
std::string BlockingFolder(const std::string& path, uint32_t uid, uint32_t gid) {
  fs::path p = fs::path(path).lexically_normal();
  fs::path at = "/";
  for (auto it = std::next(p.begin()); it != p.end(); ++it) {
    struct stat st {};
    if (::stat(at.c_str(), &st) != 0) return "";  // reported by whoever opens it
    bool x = st.st_uid == uid   ? (st.st_mode & S_IXUSR) != 0
             : st.st_gid == gid ? (st.st_mode & S_IXGRP) != 0
                                : (st.st_mode & S_IXOTH) != 0;
    if (!x) return at.string();
    at /= *it;
  }
  return "";
}

}  // namespace

ProcessDriver::ProcessDriver(ProcessDriverOptions options) : options_(std::move(options)) {}

std::string ProcessDriver::LogPath(const std::string& relic) const {
  return options_.relics_dir + "/" + relic + "/output.log";
}

namespace {

// FailedPrecondition when something already listens on the port (any address): the relic
// could not bind it, and a health check would talk to the other program.
Status CheckPortFree(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Ok();
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err == EADDRINUSE) {
    return FailedPreconditionError("deployment.port: port " + std::to_string(port) +
                                   " is already in use by another program");
  }
  return Status::Ok();
}

}  // namespace

Status ProcessDriver::Start(const RelicPlan& plan, store::DeploymentRecord& record) {
  if (plan.port) CORTEX_RETURN_IF_ERROR(CheckPortFree(*plan.port));
  std::error_code ec;
  fs::create_directories(options_.relics_dir + "/" + plan.name + "/data", ec);
  if (ec) return UnavailableError("cannot create the relic's folder: " + ec.message());
  std::vector<std::string> argv_text = plan.argv;
  std::vector<std::string> env = plan.env;
  const std::string data = options_.relics_dir + "/" + plan.name + "/data";
  if (plan.sandbox) {
    if (!options_.sandbox) {
      return FailedPreconditionError(
          plan.name +
          " has deployment.sandbox: true, but this server cannot sandbox (bubblewrap is "
          "missing or does not work here: see the server's log)");
    }
    // Its data folder is its own (the sandbox makes the way to it; nothing else of Cortex's
    // data folder is visible); the sandbox drops to its account.
    if (plan.run_as && ::chown(data.c_str(), plan.run_as->uid, plan.run_as->gid) != 0) {
      return UnavailableError("cannot give " + data + " to " + plan.run_as->name + ": " +
                              ErrnoText(errno));
    }
    CORTEX_ASSIGN_OR_RETURN(SandboxedCommand wrapped, options_.sandbox(plan, data));
    argv_text = std::move(wrapped.argv);
    env = std::move(wrapped.env);
  } else if (plan.run_as) {
    // Its data folder is its own; the process starts as root only long enough for setpriv to
    // drop every privilege (uid, gid, groups, capabilities), then execs the command: same pid.
    // The account must reach its data folder once the privileges are dropped: a clear refusal
    // here rather than a relic failing later on EACCES. (Its program is left to exec, which
    // reports its own failure in the relic's log.)
    if (std::string blocked = BlockingFolder(data, plan.run_as->uid, plan.run_as->gid);
        !blocked.empty()) {
      return FailedPreconditionError(
          plan.name + " runs as " + plan.run_as->name + ", who cannot reach its data folder " +
          data + " (" + blocked +
          " is closed to that account): move Cortex's data folder (--data-dir) to a folder "
          "others may enter, or set deployment.user");
    }
    if (::chown(data.c_str(), plan.run_as->uid, plan.run_as->gid) != 0) {
      return UnavailableError("cannot give " + data + " to " + plan.run_as->name + ": " +
                              ErrnoText(errno));
    }
    if (::access(options_.setpriv_path.c_str(), X_OK) != 0) {
      return FailedPreconditionError("cannot run " + plan.name + " as " + plan.run_as->name + ": " +
                                     options_.setpriv_path + " (util-linux) is missing");
    }
    argv_text = {options_.setpriv_path,
                 "--reuid=" + std::to_string(plan.run_as->uid),
                 "--regid=" + std::to_string(plan.run_as->gid),
                 "--clear-groups",
                 "--inh-caps=-all",
                 "--bounding-set=-all",
                 "--"};
    argv_text.insert(argv_text.end(), plan.argv.begin(), plan.argv.end());
  }
  const std::string log_path = LogPath(plan.name);
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (log_fd < 0) return UnavailableError("cannot open " + log_path + ": " + ErrnoText(errno));
  {
    std::string banner = "--- cortex: starting " + plan.name + " (" + plan.argv[0] +
                         (plan.run_as ? ", as " + plan.run_as->name : std::string()) +
                         (plan.sandbox ? ", sandboxed" : "") + ") ---\n";
    (void)!::write(log_fd, banner.data(), banner.size());
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 2);
  posix_spawn_file_actions_addchdir_np(&actions, plan.cwd.c_str());
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own session and process group (pgid = pid): it outlives the server and a stop reaches
  // its whole group. The server blocks and ignores some signals; the relic starts clean.
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> argv, envp;
  for (const auto& a : argv_text) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  pid_t pid = 0;
  int rc;
  {
    // Reap() runs under the same lock: the child is in children_ before anyone can wait for it.
    MutexLock lock(mu_);
    rc = ::posix_spawn(&pid, argv_text[0].c_str(), &actions, &attr, argv.data(), envp.data());
    if (rc == 0) children_.insert(pid);
  }
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(log_fd);
  if (rc != 0) {
    return FailedPreconditionError("cannot start " + plan.argv[0] + ": " + ErrnoText(rc));
  }
  record.pid = pid;
  record.pid_start = ProcessStartTime(pid);
  return Status::Ok();
}

std::optional<int> ProcessDriver::Reap(int64_t pid) {
  MutexLock lock(mu_);
  if (!children_.count(pid)) return std::nullopt;
  int status = 0;
  pid_t r = ::waitpid(static_cast<pid_t>(pid), &status, WNOHANG);
  if (r == static_cast<pid_t>(pid)) {
    children_.erase(pid);
    return status;
  }
  if (r < 0 && errno == ECHILD) children_.erase(pid);
  return std::nullopt;
}

Observation ProcessDriver::Observe(const RelicPlan& plan, store::DeploymentRecord& record) {
  Observation o;
  if (record.pid <= 0) {
    o.detail = "not started";
    return o;
  }
  RotateIfNeeded(plan.name);
  if (auto status = Reap(record.pid)) {
    o.detail = WaitStatusText(*status);
    o.exited_cleanly = WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
    (void)ReapOrphansOfGroup(static_cast<pid_t>(record.pid));
    record.pid = 0;
    return o;
  }
  int64_t start = ProcessStartTime(record.pid);
  if (start == 0 || (record.pid_start != 0 && start != record.pid_start)) {
    // Gone (or the pid now belongs to another process). Not our child: its status is unknown.
    o.detail = "exited (exit status unknown: it was started by an earlier server)";
    record.pid = 0;
    return o;
  }
  o.running = true;
  o.replicas = 1;
  o.info = {{"pid", record.pid}, {"log", LogPath(plan.name)}};
  return o;
}

Status ProcessDriver::Stop(const RelicPlan& plan, store::DeploymentRecord& record) {
  if (record.pid <= 0) return Status::Ok();
  const pid_t pid = static_cast<pid_t>(record.pid);
  auto alive = [&] {
    if (Reap(pid)) return false;
    int64_t start = ProcessStartTime(pid);
    return start != 0 && (record.pid_start == 0 || start == record.pid_start);
  };
  if (!alive()) {
    record.pid = 0;
    return Status::Ok();
  }
  ::kill(-pid, SIGTERM);
  // The whole group gets its stop_timeout to end cleanly, not just its first process: a sandboxed
  // relic's bwrap dies at once, while the command it runs shuts down.
  auto group_alive = [&] { return alive() || ReapOrphansOfGroup(pid) > 0; };
  auto deadline = Clock::now() + plan.stop_timeout;
  while (group_alive() && Clock::now() < deadline) std::this_thread::sleep_for(Ms(10));
  if (group_alive()) {
    log::Warn("deploy", plan.name + ": did not stop within " +
                            std::to_string(plan.stop_timeout.count()) + " ms of SIGTERM: SIGKILL");
    ::kill(-pid, SIGKILL);
    auto kill_deadline = Clock::now() + Ms(5000);
    while (alive() && Clock::now() < kill_deadline) std::this_thread::sleep_for(Ms(10));
    if (alive()) return UnavailableError("process " + std::to_string(pid) + " survived SIGKILL");
  }
  ::kill(-pid, SIGKILL);  // anything left in its group
  // What was left is dead or dying; its members that the server adopted are reaped here (bounded:
  // a process in uninterruptible sleep is left to the next Observe).
  auto reap_deadline = Clock::now() + Ms(2000);
  while (ReapOrphansOfGroup(pid) > 0 && Clock::now() < reap_deadline) {
    std::this_thread::sleep_for(Ms(5));
  }
  (void)ReapOrphansOfGroup(pid);
  record.pid = 0;
  return Status::Ok();
}

void ProcessDriver::RotateIfNeeded(const std::string& relic) {
  const std::string path = LogPath(relic);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 ||
      static_cast<uint64_t>(st.st_size) <= options_.max_log_bytes) {
    return;
  }
  // The process keeps its O_APPEND descriptor: copy, then truncate in place.
  std::error_code ec;
  fs::copy_file(path, path + ".1", fs::copy_options::overwrite_existing, ec);
  if (!ec) ::truncate(path.c_str(), 0);
}

Result<nlohmann::ordered_json> ProcessDriver::Stats(const RelicPlan& plan,
                                                    const store::DeploymentRecord& record) {
  if (record.pid <= 0 || ProcessStartTime(record.pid) == 0) {
    return FailedPreconditionError("relic " + plan.name + " is not running");
  }
  const std::string proc = "/proc/" + std::to_string(record.pid);
  nlohmann::ordered_json p = {{"pid", record.pid}};
  {
    std::ifstream in(proc + "/stat");
    std::string stat;
    std::getline(in, stat);
    auto close = stat.rfind(')');
    if (close != std::string::npos) {
      std::istringstream fields(stat.substr(close + 2));
      std::string f;
      int64_t utime = 0, stime = 0;
      for (int i = 0; i < 13 && fields >> f; ++i) {
        if (i == 11) utime = std::atoll(f.c_str());  // field 14
        if (i == 12) stime = std::atoll(f.c_str());  // field 15
      }
      const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
      p["cpu_user_seconds"] = static_cast<double>(utime) / hz;
      p["cpu_system_seconds"] = static_cast<double>(stime) / hz;
    }
  }
  {
    std::ifstream in(proc + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("VmRSS:", 0) == 0) {
        p["memory_bytes"] = std::atoll(line.c_str() + 6) * 1024;
      } else if (line.rfind("Threads:", 0) == 0) {
        p["threads"] = std::atoll(line.c_str() + 8);
      }
    }
  }
  return nlohmann::ordered_json{{"processes", nlohmann::ordered_json::array({p})}};
}

Result<std::vector<RelicLogLine>> ProcessDriver::Logs(const RelicPlan& plan,
                                                      const store::DeploymentRecord&,
                                                      const std::string&, size_t tail) {
  std::vector<RelicLogLine> out;
  const std::string path = LogPath(plan.name);
  auto lines = TailLines(path, tail);
  if (lines.size() < tail) {
    auto older = TailLines(path + ".1", tail - lines.size());
    lines.insert(lines.begin(), older.begin(), older.end());
  }
  for (auto& l : lines) out.push_back({"", false, std::move(l)});
  return out;
}

Status ProcessDriver::FollowLogs(const RelicPlan& plan, const store::DeploymentRecord& record,
                                 const std::string& service, size_t tail,
                                 const std::function<bool(const RelicLogLine*)>& on_line) {
  const std::string path = LogPath(plan.name);
  struct stat st {};
  off_t offset = ::stat(path.c_str(), &st) == 0 ? st.st_size : 0;
  CORTEX_ASSIGN_OR_RETURN(auto first, Logs(plan, record, service, tail));
  for (const auto& l : first) {
    if (!on_line(&l)) return Status::Ok();
  }
  std::string partial;
  auto last_beat = Clock::now();
  for (;;) {
    if (::stat(path.c_str(), &st) == 0 && st.st_size < offset) offset = 0;  // rotated
    if (::stat(path.c_str(), &st) == 0 && st.st_size > offset) {
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        char buf[65536];
        ssize_t n;
        while ((n = ::pread(fd, buf, sizeof buf, offset)) > 0) {
          offset += n;
          partial.append(buf, static_cast<size_t>(n));
        }
        ::close(fd);
      }
      size_t pos;
      while ((pos = partial.find('\n')) != std::string::npos) {
        RelicLogLine line{"", false, partial.substr(0, pos)};
        partial.erase(0, pos + 1);
        if (!on_line(&line)) return Status::Ok();
      }
      last_beat = Clock::now();
    } else if (Clock::now() - last_beat > Ms(1000)) {
      if (!on_line(nullptr)) return Status::Ok();
      last_beat = Clock::now();
    }
    std::this_thread::sleep_for(Ms(100));
  }
}

}  // namespace cortex::deploy
