// The `process` driver: a native command supervised by Cortex, the embedded default (no Docker).
// The process runs in its own session (so it outlives a restart of the server and is adopted by
// its recorded pid and start time), with a clean environment, stdin from /dev/null and stdout +
// stderr appended to <relics_dir>/<relic>/output.log, which is kept under a size bound (the
// older half moves to output.log.1).
#pragma once

#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "deploy/driver.h"

namespace cortex::deploy {

// A sandboxed relic's command line and environment, as the server's sandbox wraps them.
struct SandboxedCommand {
  std::vector<std::string> argv;
  std::vector<std::string> env;
};
// Wraps a relic's command (RelicPlan::sandbox) in the tool sandbox, with `data_dir` writable.
using RelicSandbox =
    std::function<Result<SandboxedCommand>(const RelicPlan& plan, const std::string& data_dir)>;

struct ProcessDriverOptions {
  std::string relics_dir;               // per-relic folders: logs, data
  uint64_t max_log_bytes = 8ull << 20;  // output.log is rotated past this
  // Changes account for relics with a RelicPlan::run_as (util-linux; as the tool sandbox does).
  std::string setpriv_path = "/usr/bin/setpriv";
  // Set by the server (api/ owns the sandbox, exec/); unset, or where bubblewrap does not work,
  // a relic with deployment.sandbox is refused when it starts.
  RelicSandbox sandbox;
};

class ProcessDriver final : public RelicDriver {
 public:
  explicit ProcessDriver(ProcessDriverOptions options);
  std::string_view name() const override { return "process"; }
  Status Start(const RelicPlan& plan, store::DeploymentRecord& record) override;
  Status Stop(const RelicPlan& plan, store::DeploymentRecord& record) override;
  Observation Observe(const RelicPlan& plan, store::DeploymentRecord& record) override;
  Result<std::vector<RelicLogLine>> Logs(const RelicPlan& plan,
                                         const store::DeploymentRecord& record,
                                         const std::string& service, size_t tail) override;
  Status FollowLogs(const RelicPlan& plan, const store::DeploymentRecord& record,
                    const std::string& service, size_t tail,
                    const std::function<bool(const RelicLogLine*)>& on_line) override;

  Result<nlohmann::ordered_json> Stats(const RelicPlan& plan,
                                       const store::DeploymentRecord& record) override;

  std::string LogPath(const std::string& relic) const;

 private:
  // Reaps our own child if it ended; returns its wait status, or nullopt while it runs (or
  // when it is not our child).
  std::optional<int> Reap(int64_t pid);
  void RotateIfNeeded(const std::string& relic);

  ProcessDriverOptions options_;
  Mutex mu_;
  std::set<int64_t> children_ CORTEX_GUARDED_BY(mu_);  // pids this server started (and must reap)
};

// The start time of a process (clock ticks since boot, /proc/<pid>/stat field 22), or 0 when it
// does not exist or is a zombie.
int64_t ProcessStartTime(int64_t pid);

}  // namespace cortex::deploy
