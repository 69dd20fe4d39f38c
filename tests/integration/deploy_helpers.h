// Test support shared by the deployer's integration suites (process relics in deploy_api_test.cc,
// compose relics in compose_api_test.cc): condition waits, relic manifests and cortex.yml files,
// the relic API calls, a restarted server on the same data folder, and cleanup of processes by a
// marker in their command line.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "integration/api_reply.h"
#include "integration/daemon.h"

namespace cortex::testing {

inline constexpr auto kDeadline = std::chrono::seconds(20);

// Polls `cond` every 20 ms until it holds or `timeout` passes. True if it became true.
inline bool Eventually(const std::function<bool()>& cond,
                       std::chrono::milliseconds timeout = kDeadline) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

// ---- Processes ----------------------------------------------------------------------------------

// The PIDs of the processes whose command line contains `marker`.
inline std::vector<pid_t> PidsMatching(const std::string& marker) {
  std::vector<pid_t> out;
  for (const std::string& p : ProcessesMatching(marker)) out.push_back(std::stoi(p));
  return out;
}

// True while `pid` exists and is not a zombie.
inline bool Running(int64_t pid) {
  if (pid <= 0) return false;
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// Kills (SIGKILL, by PID, with its process group) whatever still runs with `marker` in its
// command line when it goes out of scope. Declare it before the Daemon, so that the server is
// stopped first and cannot start a relic again.
class KillAtEnd {
 public:
  explicit KillAtEnd(std::string marker) : marker_(std::move(marker)) {}
  ~KillAtEnd() {
    for (int round = 0; round < 5; ++round) {
      std::vector<pid_t> pids = PidsMatching(marker_);
      if (pids.empty()) return;
      for (pid_t pid : pids) {
        ::kill(-pid, SIGKILL);  // a relic leads its own process group
        ::kill(pid, SIGKILL);
      }
      WaitFor([&] { return PidsMatching(marker_).empty(); }, std::chrono::seconds(2));
    }
  }
  KillAtEnd(const KillAtEnd&) = delete;
  KillAtEnd& operator=(const KillAtEnd&) = delete;

 private:
  std::string marker_;
};

// ---- Manifests and settings ---------------------------------------------------------------------

// manifests/relics/<name>/relic.yml: the header, then `body` (its deployment, health check...).
inline void WriteRelicManifest(const std::filesystem::path& m, const std::string& name,
                               const std::string& body) {
  WriteFile(m / "relics" / name / "relic.yml",
            "kind: Relic\nversion: \"1.0\"\nname: " + name +
                "\nsummary: a relic of the deployer integration tests\n" + body);
}

// A cortex.yml in its own folder; the flags that make `cortex serve` read it.
class Config {
 public:
  explicit Config(const std::string& yaml) { WriteFile(path(), yaml); }
  std::vector<std::string> flags() const { return {"--config", path().string()}; }

 private:
  std::filesystem::path path() const { return dir_.path() / "cortex.yml"; }
  TempDir dir_;
};

// A second server on `data` (the first one's data folder, through a symlink), with the same
// manifests as `write`.
inline std::unique_ptr<Daemon> RestartOn(
    const std::filesystem::path& data,
    const std::function<void(const std::filesystem::path&)>& write,
    const std::vector<std::string>& flags = {}) {
  std::error_code ec;
  std::filesystem::remove(data / "serve.json", ec);  // a killed server leaves it behind
  return std::make_unique<Daemon>(flags, [&](const std::filesystem::path& m) {
    write(m);
    std::filesystem::create_directory_symlink(data, m.parent_path() / "data");
  });
}

// ---- The API ------------------------------------------------------------------------------------

// POST /deploy/relic, waiting for the relic to be healthy (or failed).
inline Reply Deploy(http::Client& c, const std::string& name, bool wait = true) {
  nlohmann::json body = {{"name", name}, {"wait", wait}, {"timeout_seconds", 30}};
  return Post(c, "/deploy/relic", body.dump());
}

// GET /relics/{name}/status; null unless 200.
inline nlohmann::json StatusOf(http::Client& c, const std::string& name) {
  auto r = c.Get("/relics/" + name + "/status");
  if (!r.ok() || r->status != 200) return nullptr;
  return nlohmann::json::parse(r->body, nullptr, false);
}

// Polls the relic's status until `pred` holds (deadline); the last status seen.
inline nlohmann::json WaitForStatus(http::Client& c, const std::string& name,
                                    const std::function<bool(const nlohmann::json&)>& pred,
                                    std::chrono::milliseconds timeout = kDeadline) {
  nlohmann::json last;
  Eventually(
      [&] {
        last = StatusOf(c, name);
        return last.is_object() && pred(last);
      },
      timeout);
  return last;
}

inline Reply Call(http::Client& c, const std::string& name, const std::string& op,
                  const nlohmann::json& params) {
  return Post(c, "/relics/" + name + "/call/" + op, params.dump());
}

// The `line`s of GET /relics/{name}/logs?tail=N.
inline std::vector<std::string> LogLines(http::Client& c, const std::string& name, int tail = 200) {
  Reply r = Get(c, "/relics/" + name + "/logs?tail=" + std::to_string(tail));
  EXPECT_EQ(r.status, 200) << r.body;
  std::vector<std::string> out;
  if (r.json.is_object() && r.json.contains("lines")) {
    for (const nlohmann::json& l : r.json["lines"]) out.push_back(l.value("line", ""));
  }
  return out;
}

inline bool AnyLineHas(const std::vector<std::string>& lines, const std::string& text) {
  for (const auto& l : lines) {
    if (l.find(text) != std::string::npos) return true;
  }
  return false;
}

inline std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

}  // namespace cortex::testing
