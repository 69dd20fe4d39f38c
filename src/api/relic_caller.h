// Relic steps of workflows over HTTP: `target` is a URL for now (by relic name once the deployer
// registers relics' endpoints). Calls run on a small bounded pool of threads.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "workflow/engine.h"

namespace cortex::api {

class RelicCaller {
 public:
  explicit RelicCaller(int threads = 4, size_t queue = 256);
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

  size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace cortex::api
