// Test helpers for real-Docker tests: a Docker engine that answers (started when it does not,
// once across test binaries running in parallel), the test image, and cleanup by label.
//
// A test that needs Docker calls EnsureDocker() and FAILS (never skips) with its message: CI
// must not pass silently without a daemon. dockerd is started detached, in its own session, with
// its output in /tmp/cortex-dockerd.log, and left running after the tests.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "deploy/docker.h"
#include "exec/process.h"

namespace cortex::deploy::testing {

inline constexpr const char* kDefaultSocket = "/var/run/docker.sock";
inline constexpr const char* kDockerdLog = "/tmp/cortex-dockerd.log";
inline constexpr const char* kDockerdLock = "/tmp/cortex-dockerd.lock";
inline constexpr const char* kImageLock = "/tmp/cortex-test-image.lock";
inline constexpr const char* kTestImage = "cortex-test/busybox:1";
// Bumped when the image's content changes: an image without this label value is rebuilt.
inline constexpr const char* kImageVersionLabel = "cortex.test.image";
inline constexpr const char* kImageVersion = "2";
// Every test resource carries kTestLabel=<run id>; the run id starts with the owning pid.
inline constexpr const char* kTestLabel = "cortex.test";
inline constexpr std::chrono::seconds kDockerdStartTimeout{60};

inline std::string Getenv(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

inline std::string PathEnv() {
  std::string path = Getenv("PATH");
  return path.empty() ? "/usr/local/bin:/usr/bin:/bin" : path;
}

// The socket the tests talk to: DOCKER_HOST when it is unix://..., else the default.
inline std::string SocketPath() {
  std::string host = Getenv("DOCKER_HOST");
  if (host.rfind("unix://", 0) == 0) return host.substr(7);
  return kDefaultSocket;
}

// Polls `done` every 50 ms until it holds or `timeout` passes.
inline bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// An exclusive flock held for the object's lifetime.
class FileLock {
 public:
  explicit FileLock(const char* path) : fd_(::open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666)) {
    if (fd_ >= 0) {
      while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

// The last `lines` lines of a file from byte `offset`.
inline std::string FileTail(const std::string& path, std::streamoff offset, size_t lines) {
  std::ifstream in(path);
  if (!in) return "(no " + path + ")";
  in.seekg(offset);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += all[i] + "\n";
  }
  return out;
}

// Makes sure a Docker engine answers at SocketPath(): starts dockerd (detached, own session)
// when nothing answers at the default socket. An error Status carries the dockerd log's tail.
inline Status EnsureDocker() {
  const std::string socket = SocketPath();
  docker::Client client(socket, std::chrono::seconds(5));
  if (client.Ping().ok()) return Status::Ok();
  if (socket != kDefaultSocket) {
    return UnavailableError("DOCKER_HOST points at " + socket +
                            " where no Docker daemon answers; not starting one there");
  }
  FileLock lock(kDockerdLock);
  if (!lock.ok()) {
    return InternalError(std::string("cannot open ") + kDockerdLock + ": " + std::strerror(errno));
  }
  if (client.Ping().ok()) return Status::Ok();  // another test binary started it meanwhile

  const std::string sbin_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  auto dockerd = exec::ResolveProgram("dockerd", sbin_path);
  if (!dockerd.ok()) {
    return FailedPreconditionError("no Docker daemon answers at " + socket +
                                   " and dockerd is not installed (" + dockerd.status().message() +
                                   "); scripts/install-deps.sh installs docker.io");
  }
  std::streamoff log_start = 0;
  {
    std::ofstream log(kDockerdLog, std::ios::app);
    log_start = log.tellp();
    log << "=== started by a Cortex test (pid " << ::getpid() << ") ===\n";
  }
  // posix_spawn directly, not a ProcessRunner: the daemon must outlive the run and this process,
  // in its own session, with its output in a file.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, kDockerdLog, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  std::string host_arg = "unix://" + socket;
  std::vector<std::string> args = {*dockerd, "--host", host_arg};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string path_var = "PATH=" + sbin_path;
  std::string home_var = "HOME=" + (Getenv("HOME").empty() ? "/root" : Getenv("HOME"));
  std::vector<char*> envp = {path_var.data(), home_var.data(), nullptr};
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, dockerd->c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return InternalError("cannot start " + *dockerd + ": " + std::strerror(rc));
  }
  bool exited = false;
  bool up = WaitFor(
      [&] {
        if (::waitpid(pid, nullptr, WNOHANG) == pid) exited = true;
        return exited || client.Ping().ok();
      },
      kDockerdStartTimeout);
  if (up && !exited) return Status::Ok();
  return UnavailableError("could not start a Docker daemon for the tests (" + *dockerd +
                          " --host " + host_arg +
                          (exited ? " exited" : " did not answer within 60 s") + "); the tail of " +
                          kDockerdLog + ":\n" + FileTail(kDockerdLog, log_start, 30));
}

// Runs a command to completion; an error unless it exits 0.
inline Result<exec::ProcessResult> RunTool(
    exec::ProcessRunner& runner, std::vector<std::string> argv,
    std::chrono::seconds timeout = std::chrono::seconds(60)) {
  exec::ProcessSpec spec;
  CORTEX_ASSIGN_OR_RETURN(argv[0], exec::ResolveProgram(argv[0], PathEnv()));
  spec.argv = std::move(argv);
  spec.env = {"PATH=" + PathEnv(), "HOME=" + Getenv("HOME")};
  if (!Getenv("DOCKER_HOST").empty()) spec.env.push_back("DOCKER_HOST=" + Getenv("DOCKER_HOST"));
  spec.limits.timeout = timeout;
  CORTEX_ASSIGN_OR_RETURN(exec::ProcessResult r, runner.Run(spec, nullptr, nullptr));
  if (r.reason != exec::EndReason::kExited || r.exit_code != 0) {
    std::string cmd;
    for (const auto& a : spec.argv) cmd += (cmd.empty() ? "" : " ") + a;
    return InternalError(cmd + " failed (" + r.reason_text + "): " + r.stderr_data);
  }
  return r;
}

// Builds kTestImage (`docker import` of a folder holding the static busybox, symlinks for the
// applets the tests use, and /www/health) unless the current version of it is present.
inline Status EnsureTestImage(exec::ProcessRunner& runner) {
  namespace fs = std::filesystem;
  FileLock lock(kImageLock);
  auto current = RunTool(
      runner, {"docker", "image", "inspect", "--format",
               std::string("{{index .Config.Labels \"") + kImageVersionLabel + "\"}}", kTestImage});
  if (current.ok() && current->stdout_data == std::string(kImageVersion) + "\n") {
    return Status::Ok();
  }
  std::string busybox;
  for (const char* candidate : {"/bin/busybox", "/usr/bin/busybox"}) {
    if (fs::exists(candidate)) {
      busybox = candidate;
      break;
    }
  }
  if (busybox.empty()) {
    return FailedPreconditionError("busybox-static is not installed (no /bin/busybox)");
  }
  std::string tmpl = (fs::temp_directory_path() / "cortex-image.XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) return InternalError("mkdtemp failed");
  fs::path dir = tmpl;
  fs::path root = dir / "root";
  std::error_code ec;
  for (const char* sub : {"bin", "www", "tmp", "etc"}) fs::create_directories(root / sub);
  fs::copy_file(busybox, root / "bin/busybox", ec);
  if (ec) return InternalError("cannot copy " + busybox + ": " + ec.message());
  for (const char* applet : {"sh", "sleep", "httpd", "nc", "cat", "echo", "ls", "true", "false",
                             "wget", "env", "kill", "ps"}) {
    fs::create_symlink("busybox", root / "bin" / applet, ec);
  }
  std::ofstream(root / "www/health") << "ok\n";
  std::string tar = (dir / "image.tar").string();
  Status st = RunTool(runner, {"tar", "-C", root.string(), "--owner=0", "--group=0",
                               "--numeric-owner", "-cf", tar, "."})
                  .status();
  if (st.ok()) {
    st =
        RunTool(runner,
                {"docker", "import", "--change", "ENV PATH=/bin", "--change",
                 std::string("LABEL ") + kImageVersionLabel + "=" + kImageVersion, tar, kTestImage},
                std::chrono::seconds(120))
            .status();
  }
  fs::remove_all(dir, ec);
  return st;
}

// A run id unique across processes: "<pid>-<ms>". Resources labelled with it are this run's.
inline std::string NewRunId() {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count();
  return std::to_string(::getpid()) + "-" + std::to_string(ms % 100000000);
}

// Removes every container, network and volume labelled key=value; reports the first failure.
inline Status RemoveLabeled(const docker::Client& client, const std::string& key,
                            const std::string& value) {
  docker::LabelFilter filter = {{key, value}};
  Status containers = client.RemoveContainers(filter);
  Status networks = client.RemoveNetworks(filter);
  Status volumes = client.RemoveVolumes(filter);
  if (!containers.ok()) return containers;
  if (!networks.ok()) return networks;
  return volumes;
}

// Removes what earlier test runs left behind when they died before their cleanup: resources
// whose kTestLabel run id names a process that no longer exists.
inline void RemoveStaleTestResources(const docker::Client& client) {
  std::set<std::string> runs;
  if (auto containers = client.ListContainers({{kTestLabel, ""}}, true); containers.ok()) {
    for (const auto& c : *containers) runs.insert(c.labels.at(kTestLabel));
  }
  if (auto networks = client.ListNetworks({{kTestLabel, ""}}); networks.ok()) {
    for (const auto& n : *networks) runs.insert(n.labels.at(kTestLabel));
  }
  for (const std::string& run : runs) {
    pid_t pid = static_cast<pid_t>(std::atoi(run.c_str()));
    if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) {
      (void)RemoveLabeled(client, kTestLabel, run);
    }
  }
}

}  // namespace cortex::deploy::testing
