// Test support: runs the real `cortex serve` binary on 127.0.0.1:0 in a fresh temp folder
// (manifests/ and data/ inside it), waits until it is ready, and stops it (SIGTERM) at the end.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/http.h"

extern char** environ;

namespace cortex::testing {

inline std::string CortexBinary() { return std::string(CORTEX_BINARY_DIR) + "/cortex"; }

// Waits for `cond` up to `timeout`, polling every millisecond. True if it became true.
inline bool WaitFor(const std::function<bool()>& cond,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return cond();
}

inline void WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A temp folder removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cortex-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
    // As a manifests folder usually is: readable by the account relics run as (nobody).
    std::filesystem::permissions(path_, std::filesystem::perms(0755));
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

class Daemon {
 public:
  // `setup` may write manifests into manifests_dir() before the server starts.
  explicit Daemon(std::vector<std::string> extra_args = {},
                  const std::function<void(const std::filesystem::path&)>& setup = {}) {
    manifests_ = dir_.path() / "manifests";
    data_ = dir_.path() / "data";
    std::filesystem::create_directories(manifests_);
    if (setup) setup(manifests_);
    std::vector<std::string> args = {
        CortexBinary(), "serve",    "--manifests", manifests_.string(), "--data-dir",
        data_.string(), "--listen", "127.0.0.1:0", "--log-level",       "warn"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    log_ = (dir_.path() / "serve.log").string();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    std::filesystem::path ready = data_ / "serve.json";
    // Stops waiting early when the server exits instead of becoming ready (bad flags, a busy
    // port): Stop() then returns its exit status.
    ok_ = pid_ > 0 && WaitFor([&] {
            if (Reap(/*block=*/false)) return true;
            if (!std::filesystem::exists(ready)) return false;
            auto j = nlohmann::json::parse(ReadFile(ready), nullptr, false);
            if (j.is_discarded() || !j.contains("port")) return false;
            port_ = j["port"].get<int>();
            return true;
          });
    ok_ = ok_ && pid_ > 0;
    if (ok_) client_ = std::make_unique<http::Client>(url());
  }
  ~Daemon() { Stop(); }

  bool ok() const { return ok_; }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::filesystem::path& manifests_dir() const { return manifests_; }
  const std::filesystem::path& data_dir() const { return data_; }
  std::string log() const { return ReadFile(log_); }
  http::Client& client() { return *client_; }
  pid_t pid() const { return pid_; }

  // SIGTERM and wait; returns the exit status (or -1). A server still running after `timeout`
  // is killed (SIGKILL) and -1 returned, so a hung server fails the test instead of hanging it.
  int Stop(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    if (pid_ <= 0) return exit_status_;
    // The fixture's client may hold an idle keep-alive connection, which the server only
    // notices when its keep-alive timeout runs out: drop it (a fresh client has no connection).
    if (client_) client_ = std::make_unique<http::Client>(url());
    ::kill(pid_, SIGTERM);
    if (!WaitFor([&] { return Reap(/*block=*/false); }, timeout)) {
      ::kill(pid_, SIGKILL);
      Reap(/*block=*/true);
      exit_status_ = -1;
    }
    return exit_status_;
  }

  // GET path and parse JSON (null on transport failure).
  nlohmann::json GetJson(const std::string& path, int* status = nullptr) {
    auto r = client_->Get(path);
    if (!r.ok()) return nullptr;
    if (status) *status = r->status;
    return nlohmann::json::parse(r->body, nullptr, false);
  }

 private:
  // Collects the exit status once the process has ended. True when it has (or was reaped).
  bool Reap(bool block) {
    if (pid_ <= 0) return true;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (r == 0) return false;
    if (r == pid_) exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    pid_ = -1;
    return true;
  }

  TempDir dir_;
  std::filesystem::path manifests_, data_;
  std::string log_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool ok_ = false;
  int exit_status_ = -1;
  std::unique_ptr<http::Client> client_;
};

}  // namespace cortex::testing
