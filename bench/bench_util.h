// What the benchmarks share: reading files, the machine's load, and running the real
// `cortex serve` (from the same build folder) on 127.0.0.1:0.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

extern char** environ;

namespace cortex::bench {

// The median of a sample (the mean of the middle two when the count is even); 0 when empty.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The nearest-rank percentile `p` (0-100) of a sample; 0 when empty.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

// Walks a benchmark's command line: `for (std::string a; flags.Next(&a);)`, and Value() reads
// the current flag's argument (printing the usage and exiting with 2 when it is missing).
class Flags {
 public:
  Flags(int argc, char** argv, void (*usage)()) : argc_(argc), argv_(argv), usage_(usage) {}
  bool Next(std::string* flag) {
    if (++i_ >= argc_) return false;
    *flag = argv_[i_];
    return true;
  }
  const char* Value() {
    if (i_ + 1 >= argc_) {
      usage_();
      std::exit(2);
    }
    return argv_[++i_];
  }

 private:
  int argc_;
  char** argv_;
  void (*usage_)();
  int i_ = 0;
};

inline std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The first three fields of /proc/loadavg: other work on the machine skews every figure.
// Writes `text` to `path`, making its folder.
inline void WriteText(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

inline std::string LoadAvg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// A fresh folder under the system temp folder (`<prefix>-XXXXXX`, mode 0755 so that sandboxed
// tools running as uid 65534 can read what is put in it), removed at the end unless `keep`.
class ScratchDir {
 public:
  ScratchDir(const std::string& prefix, bool keep) : keep_(keep) {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      return;
    }
    path_ = tmpl;
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms(0755), ec);
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!keep_ && !path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  bool keep_;
};

// `<binary> serve --manifests M --data-dir D --listen 127.0.0.1:0 --log-level warn [extra...]`,
// its stdout and stderr in `log`; Start returns once <data>/serve.json names the port.
class ServeProcess {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ServeProcess(std::string binary) : binary_(std::move(binary)) {}
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  bool Start(const std::filesystem::path& manifests, const std::filesystem::path& data,
             const std::filesystem::path& log, const std::vector<std::string>& extra = {}) {
    log_ = log;
    std::vector<std::string> args = {
        binary_,       "serve",    "--manifests", manifests.string(), "--data-dir",
        data.string(), "--listen", "127.0.0.1:0", "--log-level",      "warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
      std::fprintf(stderr, "cannot start %s: %s\n", argv[0], std::strerror(rc));
      pid_ = -1;
      return false;
    }
    std::filesystem::path ready = data / "serve.json";
    auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;  // exited early
      }
      std::error_code ec;
      if (std::filesystem::exists(ready, ec)) {
        auto j = nlohmann::json::parse(ReadAll(ready), nullptr, false);
        if (!j.is_discarded() && j.contains("port")) {
          port_ = j["port"].get<int>();
          return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  // SIGTERM, then wait up to 15 s (SIGKILL after). Returns the exit code, or -1.
  int Stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    auto deadline = Clock::now() + std::chrono::seconds(15);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  ~ServeProcess() { Stop(); }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string log() const { return ReadAll(log_); }

 private:
  std::string binary_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::filesystem::path log_;
};

}  // namespace cortex::bench
