// Publishes discovery to Redis, for clients outside Cortex. Keys (docs/deploy.md):
//   cortex:services               a set of the healthy relics' names
//   cortex:service:<name>         a hash: url, state, endpoints (JSON array), owner, updated_ms
// Updates are queued and written by one thread, so a slow or dead Redis never holds up a relic's
// supervisor; a failed write is logged and retried with the next change (the whole set is
// rewritten after a reconnect).
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "common/mutex.h"
#include "deploy/deployer.h"
#include "store/redis.h"

namespace cortex::deploy {

class RedisDiscovery {
 public:
  // Checks the URL and connects once (Unavailable / InvalidArgument when that fails).
  static Result<std::unique_ptr<RedisDiscovery>> Connect(const std::string& url);
  ~RedisDiscovery();  // writes what is queued (bounded by the client's timeouts), then stops

  void Publish(const ServiceRecord& record, bool up);
  // Waits until everything queued so far is written (or `timeout`); true when it was.
  bool Flush(Ms timeout);

 private:
  explicit RedisDiscovery(std::unique_ptr<store::RedisClient> client);
  void Loop();
  Status Write(const ServiceRecord& record, bool up);

  std::unique_ptr<store::RedisClient> client_;
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<ServiceRecord, bool>> queue_ CORTEX_GUARDED_BY(mu_);
  std::map<std::string, ServiceRecord> up_ CORTEX_GUARDED_BY(mu_);  // what should be in Redis now
  bool resync_ CORTEX_GUARDED_BY(mu_) = true;  // rewrite everything (after a failure)
  bool stopping_ CORTEX_GUARDED_BY(mu_) = false;
  uint64_t queued_ CORTEX_GUARDED_BY(mu_) = 0;
  uint64_t written_ CORTEX_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace cortex::deploy
