// Relic steps of workflows over HTTP: `target` is a relic's name (its operation is the step's
// `action`, or parameters.operation; called through the deployer) or a URL. Calls run on a small
// bounded pool of threads.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "deploy/deployer.h"
#include "workflow/engine.h"

namespace cortex::api {

class RelicCaller {
 public:
  // `deployer` (may be null: then only URL targets work) resolves relic names.
  explicit RelicCaller(const deploy::Deployer* deployer, int threads = 4, size_t queue = 256);
  ~RelicCaller();  // waits for calls in progress; queued ones fail with "the server stopped"
  RelicCaller(const RelicCaller&) = delete;
  RelicCaller& operator=(const RelicCaller&) = delete;

  // The request: GET/POST/PUT/DELETE from parameters.method (default POST when there is a body,
  // else GET); the path from `action` when it starts with '/', else parameters.path; the query
  // from parameters.query (object); the body from parameters.body, or else the other parameters.
  // 2xx answers are the step's output (JSON, or the text); others fail with the status.
  Status Call(const workflow::StepDispatcher::RelicCall& call,
              std::function<void(Result<nlohmann::ordered_json>)> done);

 private:
  struct Job {
    workflow::StepDispatcher::RelicCall call;
    std::function<void(Result<nlohmann::ordered_json>)> done;
  };
  void Loop();

  Result<nlohmann::ordered_json> Perform(const workflow::StepDispatcher::RelicCall& call) const;

  const deploy::Deployer* deployer_;
  size_t capacity_;
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_ CORTEX_GUARDED_BY(mu_);
  bool stopping_ CORTEX_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace cortex::api
