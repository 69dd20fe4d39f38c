// Monuments: a whole stack deployed with one call. Every component is checked against the
// registry and every relic planned before anything starts; relics then start stage by stage
// (`startup_order`, where a nested list starts in parallel; relics it does not name follow in
// `depends_on` order), each stage healthy before the next. Then the monument's workflows and
// agents are checked in. If a relic fails, what this deployment started is stopped again (in
// reverse order) and the answer says which component failed and why.
#pragma once

#include <functional>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "common/mutex.h"
#include "deploy/deployer.h"

namespace cortex::deploy {

// The plan of a monument: its stages of relics, and the other components.
// A monument's own state. Text only at the Store and the API: MonumentStateName,
// ParseMonumentState. (Its components' states are the API's JSON of each kind.)
enum class MonumentState { kPending, kDeploying, kHealthy, kFailed, kStopping, kStopped };
std::string_view MonumentStateName(MonumentState state);
std::optional<MonumentState> ParseMonumentState(std::string_view text);

struct MonumentPlan {
  std::string name;
  std::vector<std::vector<std::string>> stages;  // relic names; one stage starts in parallel
  std::vector<std::string> workflows, agents;
};

// InvalidArgument/NotFound listing every problem: components missing from the registry, an
// unknown name in startup_order, a depends_on cycle.
Result<MonumentPlan> PlanMonument(const registry::Snapshot& snapshot, const std::string& name);

class Monuments {
 public:
  Monuments(Deployer& deployer, registry::Registry& registry, store::Store& store);
  ~Monuments();  // Shutdown(), then waits for deployments in progress to end
  // From now on a deployment in progress that fails (as it will once the deployer stops) is
  // recorded as interrupted and not rolled back: the relics keep their desired state.
  void Shutdown();
  Monuments(const Monuments&) = delete;
  Monuments& operator=(const Monuments&) = delete;

  // Loads the recorded monuments (their relics are the deployer's business).
  Status Start();

  // How a deployment checks its agents (the agent runtime's check: resolved imports, a usable
  // model): Ok shows the agent `ready`, an error `failed` with why. Unset: `registered`.
  void SetAgentCheck(std::function<Status(const std::string& agent)> check) {
    agent_check_ = std::move(check);
  }

  // Starts deploying in the background and returns its status at once (state `deploying`).
  // InvalidArgument/NotFound (nothing started) when the monument cannot be planned or one of
  // its relics cannot be deployed as written; Conflict while another deployment of it runs.
  Result<OJson> Deploy(const std::string& name, const std::string& environment);
  // Waits until the deployment in progress (if any) ends, then returns the status.
  Result<OJson> Wait(const std::string& name, Ms timeout);
  Result<OJson> Get(const std::string& name) const;
  // Aggregate health: healthy when every relic is healthy, degraded when some are, down when
  // none is; per component.
  Result<OJson> Health(const std::string& name) const;
  OJson List() const;
  // Stops its relics (reverse stage order); remove: also forgets them and the monument.
  Result<OJson> StopAll(const std::string& name, bool remove);
  // `service` is one of its relics ("relic", or "relic/compose-service").
  Status Scale(const std::string& name, const std::string& service, int replicas);
  Result<std::vector<RelicLogLine>> Logs(const std::string& name, const std::string& service,
                                         size_t tail) const;
  // Whether a workflow's schedule runs: a workflow that is a component of a monument in the
  // registry runs on schedule only while one such monument is deployed (healthy); any other
  // workflow always does.
  bool WorkflowEnabled(const std::string& workflow) const;

 private:
  struct Entry;
  void Run(const std::shared_ptr<Entry>& entry, MonumentPlan plan);
  // Called with mu_ held: it guards the Entry's fields too.
  void Record(Entry& e) CORTEX_REQUIRES(mu_);
  OJson StatusJson(const Entry& e) const CORTEX_REQUIRES(mu_);
  std::shared_ptr<Entry> Find(const std::string& name) const;

  Deployer& deployer_;
  registry::Registry& registry_;
  store::Store& store_;
  // Before the Deployer's locks: StatusJson asks it for its relics' state under mu_.
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> entries_ CORTEX_GUARDED_BY(mu_);
  bool stopping_ CORTEX_GUARDED_BY(mu_) = false;
  std::function<Status(const std::string&)> agent_check_;
};

}  // namespace cortex::deploy
