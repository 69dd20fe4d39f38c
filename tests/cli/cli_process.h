// Test support: runs the built `cortex` binary as a subprocess with stdout and stderr captured
// into files and stdin read from a file. The destructor kills it if it is still running.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "integration/daemon.h"

namespace cortex::testing {

class CliProcess {
 public:
  static constexpr std::chrono::seconds kDefaultTimeout{60};

  // `env` entries ("K=V") are added to this process's environment, without CORTEX_SERVER,
  // CORTEX_TOKEN and CORTEX_CONTEXT, and with CORTEX_CONTEXTS pointing at a file in the process's
  // own folder (so a developer's own settings and contexts do not leak into the tests).
  explicit CliProcess(std::vector<std::string> args, const std::string& stdin_text = "",
                      const std::vector<std::string>& env = {}) {
    out_path_ = dir_.path() / "stdout";
    err_path_ = dir_.path() / "stderr";
    std::filesystem::path in_path = dir_.path() / "stdin";
    WriteFile(in_path, stdin_text);
    // `cortex` unless the first argument is a program's absolute path (another real client).
    if (args.empty() || args[0].empty() || args[0][0] != '/') {
      args.insert(args.begin(), CortexBinary());
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) {
      bool own = false;
      for (const char* name : {"CORTEX_SERVER=", "CORTEX_TOKEN=", "CORTEX_CONTEXT=",
                               "CORTEX_CONTEXTS=", "CORTEX_CA_CERT="}) {
        own = own || std::strncmp(*e, name, std::strlen(name)) == 0;
      }
      if (!own) env_strings.emplace_back(*e);
    }
    env_strings.insert(env_strings.end(), env.begin(), env.end());
    if (std::none_of(env.begin(), env.end(),
                     [](const std::string& e) { return e.starts_with("CORTEX_CONTEXTS="); })) {
      env_strings.push_back("CORTEX_CONTEXTS=" + (dir_.path() / "contexts.yml").string());
    }
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, in_path.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data()) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  ~CliProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  CliProcess(const CliProcess&) = delete;
  CliProcess& operator=(const CliProcess&) = delete;

  std::string out() const { return ReadFile(out_path_); }
  std::string err() const { return ReadFile(err_path_); }

  // True while the process has not exited.
  bool Running() { return pid_ > 0 && !Reap(WNOHANG); }

  void Signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }

  // Waits for the exit and returns its code; -1 when killed by a signal or still running at the
  // deadline (then it is killed).
  int Wait(std::chrono::milliseconds timeout = kDefaultTimeout) {
    if (pid_ <= 0) return exit_code_;
    if (!WaitFor([&] { return Reap(WNOHANG); }, timeout)) {
      ::kill(pid_, SIGKILL);
      Reap(0);
      exit_code_ = -1;
    }
    return exit_code_;
  }

 private:
  bool Reap(int flags) {
    if (pid_ <= 0) return true;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, flags);
    if (r == 0) return false;
    exit_code_ = r == pid_ && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    pid_ = -1;
    return true;
  }

  TempDir dir_;
  std::filesystem::path out_path_, err_path_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// A finished run of the binary: exit code and what it printed.
struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

inline std::ostream& operator<<(std::ostream& os, const CliResult& r) {
  return os << "exit " << r.exit_code << "\n--- stdout:\n" << r.out << "--- stderr:\n" << r.err;
}

// Runs `cortex args...` to its end (CliProcess::kDefaultTimeout at most).
inline CliResult RunCli(std::vector<std::string> args, const std::string& stdin_text = "",
                        const std::vector<std::string>& env = {}) {
  CliProcess p(std::move(args), stdin_text, env);
  CliResult r;
  r.exit_code = p.Wait();
  r.out = p.out();
  r.err = p.err();
  return r;
}

}  // namespace cortex::testing
