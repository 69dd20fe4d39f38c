// Scheduled triggers: starts a run of every workflow whose `trigger: {type: scheduled,
// schedule: CRON}` is due (common/cron.h, UTC).
//
// Rules (docs/workflows.md#scheduled):
//  - a schedule counts from when Cortex first sees it: no runs for due times before that;
//  - one run per due time, even across restarts: the last due time started is recorded in the
//    Store, and a run's id is derived from (workflow, due time), so starting it twice is
//    refused by the Store;
//  - no pile-up: after downtime, only the latest missed due time gets a run;
//  - the run's input is the trigger's parameter defaults; its trigger is "scheduled".
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "registry/registry.h"
#include "store/store.h"
#include "workflow/engine.h"

namespace cortex::workflow {

class Scheduler {
 public:
  Scheduler(registry::Registry& registry, store::Store& store, Engine& engine,
            std::function<int64_t()> now_ms = nullptr);
  ~Scheduler();  // Stop()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // When set, a scheduled workflow for which it answers false is not started (and its schedule
  // counts again from when it answers true: no catching up). The deployer uses it for the
  // workflows of monuments, which run on schedule only while their monument is deployed.
  void SetEnabled(std::function<bool(const std::string& workflow)> enabled);

  void Start();  // a thread that calls Tick when something is due (at least every second)
  void Stop();

  // Starts what is due at `now_ms`; returns the number of runs started. Public for tests.
  int Tick(int64_t now_ms);

 private:
  registry::Registry& registry_;
  store::Store& store_;
  Engine& engine_;
  std::function<int64_t()> now_ms_;
  std::function<bool(const std::string&)> enabled_;
  std::map<std::string, std::string> warned_;  // workflow -> last problem logged

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

// The id of the scheduled run of `workflow` for `due_ms`: the same on every server.
std::string ScheduledRunId(const std::string& workflow, int64_t due_ms);

}  // namespace cortex::workflow
