// The `compose` driver: a relic is one Compose project (`cortex_<relic>`), brought up and down
// with the Compose CLI; its containers are observed through the Docker Engine API by the
// project's label, which is also how a restarted server adopts them.
#pragma once

#include <map>
#include <mutex>

#include "common/mutex.h"
#include "deploy/compose.h"
#include "deploy/docker.h"
#include "deploy/driver.h"

namespace cortex::deploy {

struct ComposeDriverOptions {
  std::string path_env;
  std::string home;  // HOME for the CLI
  std::string docker_socket = "/var/run/docker.sock";
  std::string override_dir;  // where Cortex writes each project's label override file
};

// The network a monument's compose relics share: "cortex_<monument>_net".
std::string MonumentNetwork(const std::string& monument);

class ComposeDriver final : public RelicDriver {
 public:
  // FailedPrecondition when no Compose CLI is installed.
  static Result<std::unique_ptr<ComposeDriver>> Create(ComposeDriverOptions options);

  std::string_view name() const override { return "compose"; }
  Status Available() const override;
  Status Start(const RelicPlan& plan, store::DeploymentRecord& record) override;
  Status Stop(const RelicPlan& plan, store::DeploymentRecord& record) override;
  Observation Observe(const RelicPlan& plan, store::DeploymentRecord& record) override;
  Status Scale(const RelicPlan& plan, store::DeploymentRecord& record, const std::string& service,
               int replicas) override;
  Result<std::vector<RelicLogLine>> Logs(const RelicPlan& plan,
                                         const store::DeploymentRecord& record,
                                         const std::string& service, size_t tail) override;
  Status FollowLogs(const RelicPlan& plan, const store::DeploymentRecord& record,
                    const std::string& service, size_t tail,
                    const std::function<bool(const RelicLogLine*)>& on_line) override;
  Result<nlohmann::ordered_json> Stats(const RelicPlan& plan,
                                       const store::DeploymentRecord& record) override;
  Ms observe_interval() const override { return Ms(1000); }

 private:
  ComposeDriver(ComposeDriverOptions options, ComposeCli cli);
  ComposeProject Project(const RelicPlan& plan, const store::DeploymentRecord& record) const;
  Result<std::vector<docker::Container>> Containers(const std::string& project,
                                                    const std::string& service) const;

  ComposeDriverOptions options_;
  ComposeCli cli_;
  docker::Client docker_;
  Mutex mu_;
  // Project -> service -> replicas.
  std::map<std::string, std::map<std::string, int>> scale_ CORTEX_GUARDED_BY(mu_);
};

}  // namespace cortex::deploy
