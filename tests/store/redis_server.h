// Test support: a real redis-server on a free loopback port, with no persistence, in its own
// temporary folder; stopped (SIGKILL) by PID, and killed by the kernel should the test process
// die first (PR_SET_PDEATHSIG). Shared by the Redis client tests and the deployer's discovery
// tests.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "free_port.h"

namespace cortex::testing {

inline constexpr char kNoRedis[] =
    "redis-server is not installed: the Redis tests need a real server "
    "(Debian: apt-get install redis-server; or set CORTEX_REDIS_SERVER to its path)";

// True when something on 127.0.0.1:`port` answers a PING with any RESP reply (+PONG, or
// -NOAUTH).
inline bool RedisPing(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return false;
  }
  timeval tv{0, 500000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const std::string ping = "*1\r\n$4\r\nPING\r\n";
  bool ok = ::send(fd, ping.data(), ping.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(ping.size());
  char c = 0;
  ok = ok && ::recv(fd, &c, 1, 0) == 1 && (c == '+' || c == '-');
  ::close(fd);
  return ok;
}

// $CORTEX_REDIS_SERVER, else redis-server in PATH, else /usr/bin/redis-server; "" when none.
inline std::string RedisServerBinary() {
  if (const char* env = std::getenv("CORTEX_REDIS_SERVER"); env != nullptr && *env != '\0') {
    return ::access(env, X_OK) == 0 ? env : "";
  }
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::stringstream dirs(path);
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
      std::string candidate = dir + "/redis-server";
      if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  return ::access("/usr/bin/redis-server", X_OK) == 0 ? "/usr/bin/redis-server" : "";
}

class RedisServer {
 public:
  explicit RedisServer(std::vector<std::string> extra_args = {}) : extra_(std::move(extra_args)) {
    std::string pattern = (std::filesystem::temp_directory_path() / "cortex-redis-XXXXXX").string();
    CORTEX_CHECK(::mkdtemp(pattern.data()) != nullptr);
    dir_ = pattern;
  }
  ~RedisServer() {
    Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Starts on `port` (0: a free one). An error message when it does not come up ("" when up).
  std::string Start(int port = 0) {
    const std::string binary = RedisServerBinary();
    if (binary.empty()) return "redis-server not found (PATH, /usr/bin, $CORTEX_REDIS_SERVER)";
    std::string error;
    for (int attempt = 0; attempt < 5; ++attempt) {
      const int p = port != 0 ? port : FreeLoopbackPort();
      error = StartOnce(binary, p);
      if (error.empty()) return "";
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return error;
  }

  // SIGKILL (nothing to save, and SIGTERM waits for the server's 100 ms cron), then reaped.
  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string Url(const std::string& suffix = "") const {
    return "redis://127.0.0.1:" + std::to_string(port_) + suffix;
  }

 private:
  std::string StartOnce(const std::string& binary, int port) {
    const std::string log_path = dir_ + "/redis.log";
    std::vector<std::string> args = {binary,   "--port",       std::to_string(port),
                                     "--bind", "127.0.0.1",    "--save",
                                     "",       "--appendonly", "no",
                                     "--dir",  dir_,           "--daemonize",
                                     "no"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    CORTEX_CHECK(pid >= 0);
    if (pid == 0) {  // async-signal-safe calls only until exec
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (log >= 0) {
        ::dup2(log, 1);
        ::dup2(log, 2);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = pid;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid_ = -1;
        std::ifstream in(log_path);
        std::stringstream log;
        log << in.rdbuf();
        return "redis-server exited on port " + std::to_string(port) + ":\n" + log.str();
      }
      if (RedisPing(port)) {
        port_ = port;
        return "";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Stop();
    return "redis-server did not answer PING within 10 s on port " + std::to_string(port);
  }

  std::string dir_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace cortex::testing
