#include "deploy/discovery_redis.h"

#include "common/json.h"
#include "common/log.h"

namespace cortex::deploy {

namespace {
constexpr const char* kSetKey = "cortex:services";
std::string HashKey(const std::string& name) { return "cortex:service:" + name; }
}  // namespace

Result<std::unique_ptr<RedisDiscovery>> RedisDiscovery::Connect(const std::string& url) {
  CORTEX_ASSIGN_OR_RETURN(auto client, store::RedisClient::Connect(url));
  return std::unique_ptr<RedisDiscovery>(new RedisDiscovery(std::move(client)));
}

RedisDiscovery::RedisDiscovery(std::unique_ptr<store::RedisClient> client)
    : client_(std::move(client)) {
  thread_ = std::thread([this] { Loop(); });
}

RedisDiscovery::~RedisDiscovery() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void RedisDiscovery::Publish(const ServiceRecord& record, bool up) {
  {
    MutexLock lock(mu_);
    queue_.emplace_back(record, up);
    ++queued_;
  }
  cv_.notify_all();
}

bool RedisDiscovery::Flush(Ms timeout) {
  MutexLock lock(mu_);
  uint64_t target = queued_;
  return cv_.wait_for(lock.native(), timeout,
                      [&]() CORTEX_REQUIRES(mu_) { return written_ >= target && !resync_; });
}

Status RedisDiscovery::Write(const ServiceRecord& r, bool up) {
  std::vector<std::vector<std::string>> cmds;
  if (up) {
    cmds.push_back({"HSET", HashKey(r.name), "url", r.url, "state", r.state, "endpoints",
                    DumpJson(nlohmann::json(r.endpoints)), "owner", r.owner, "updated_ms",
                    std::to_string(r.updated_ms)});
    cmds.push_back({"SADD", kSetKey, r.name});
  } else {
    cmds.push_back({"DEL", HashKey(r.name)});
    cmds.push_back({"SREM", kSetKey, r.name});
  }
  CORTEX_ASSIGN_OR_RETURN(auto replies, client_->Transaction(cmds));
  for (const auto& reply : replies) {
    if (reply.is_error()) return store::RedisReplyStatus(reply);
  }
  return Status::Ok();
}

void RedisDiscovery::Loop() {
  MutexLock lock(mu_);
  for (;;) {
    cv_.wait_for(lock.native(), std::chrono::seconds(resync_ ? 2 : 3600),
                 [&]() CORTEX_REQUIRES(mu_) { return stopping_ || !queue_.empty(); });
    if (stopping_ && queue_.empty()) return;
    if (resync_) {
      // Start from what Cortex knows: drop stale entries, write every healthy relic.
      auto all = up_;
      lock.Unlock();
      Status s = Status::Ok();
      auto members = client_->Command({"SMEMBERS", kSetKey});
      if (!members.ok()) s = members.status();
      if (s.ok()) {
        for (const auto& m : members->elements) {
          if (all.count(m.str)) continue;
          ServiceRecord gone;
          gone.name = m.str;
          s = Write(gone, false);
          if (!s.ok()) break;
        }
      }
      for (auto it = all.begin(); s.ok() && it != all.end(); ++it) s = Write(it->second, true);
      lock.Lock();
      if (!s.ok()) {
        log::Warn("discovery", "Redis: " + s.message() + " (retrying)");
        if (stopping_) return;
        continue;
      }
      resync_ = false;
      cv_.notify_all();
    }
    while (!queue_.empty()) {
      auto [record, up] = queue_.front();
      queue_.pop_front();
      if (up) {
        up_[record.name] = record;
      } else {
        up_.erase(record.name);
      }
      lock.Unlock();
      Status s = Write(record, up);
      lock.Lock();
      ++written_;
      if (!s.ok()) {
        log::Warn("discovery", "Redis: " + s.message() + " (will rewrite everything)");
        resync_ = true;
        break;
      }
    }
    cv_.notify_all();
  }
}

}  // namespace cortex::deploy
