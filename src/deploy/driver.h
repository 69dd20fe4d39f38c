// One interface for every runtime a relic can run on. A driver starts, stops and observes one
// relic's workload; the Deployer's supervisors decide when (desired state, restarts, health).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "deploy/plan.h"
#include "store/store.h"

namespace cortex::deploy {

struct RelicLogLine {
  std::string service;  // compose service ("" for a process relic)
  bool is_stderr = false;
  std::string text;
};

// What a driver sees of a relic's workload at one moment.
struct Observation {
  bool running = false;  // its process / at least one container is up
  // When not running: why ("exited with code 3", "killed by signal 9", "not started").
  std::string detail;
  bool exited_cleanly = false;  // it ended on its own with exit code 0
  int replicas = 0;             // processes / containers running
  nlohmann::ordered_json info = nlohmann::ordered_json::object();  // pid, containers, ports, ...
  std::string base_url;  // discovered at runtime (a published port); "" = the plan's
};

class RelicDriver {
 public:
  virtual ~RelicDriver() = default;
  virtual std::string_view name() const = 0;
  // Launches the workload and records how to find it again (pid, project) in `record`. Returns
  // once it is launched; health is the supervisor's business.
  virtual Status Start(const RelicPlan& plan, store::DeploymentRecord& record) = 0;
  // Stops everything the relic runs, within plan.stop_timeout (then kills). Idempotent.
  virtual Status Stop(const RelicPlan& plan, store::DeploymentRecord& record) = 0;
  // Also how a restarted server adopts a workload it did not start: by the record's pid (and
  // its start time) or the compose project's labels.
  virtual Observation Observe(const RelicPlan& plan, store::DeploymentRecord& record) = 0;
  virtual Status Scale(const RelicPlan& plan, store::DeploymentRecord& record,
                       const std::string& service, int replicas) {
    (void)plan, (void)record, (void)service, (void)replicas;
    return FailedPreconditionError(std::string(name()) + " relics cannot be scaled");
  }
  // The last `tail` lines of output (of one compose service, or all when `service` is "").
  virtual Result<std::vector<RelicLogLine>> Logs(const RelicPlan& plan,
                                                 const store::DeploymentRecord& record,
                                                 const std::string& service, size_t tail) = 0;
  // Streams the last `tail` lines, then new output, until `on_line` returns false. `on_line` is
  // also called with nullptr about once a second while nothing is written, so a caller whose
  // client went away can stop.
  virtual Status FollowLogs(const RelicPlan& plan, const store::DeploymentRecord& record,
                            const std::string& service, size_t tail,
                            const std::function<bool(const RelicLogLine*)>& on_line) = 0;
  // Resource use now: {"processes"|"containers": [{cpu..., memory_bytes...}]}.
  virtual Result<nlohmann::ordered_json> Stats(const RelicPlan& plan,
                                               const store::DeploymentRecord& record) = 0;
  // Whether the runtime can take a deployment now (Unavailable with why, e.g. Docker is down).
  virtual Status Available() const { return Status::Ok(); }
  // How often the supervisor checks that the workload is still up.
  virtual Ms observe_interval() const { return Ms(200); }
};

}  // namespace cortex::deploy
