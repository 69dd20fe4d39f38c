// The process runner's small system helpers (exec/ internal): control and /proc files, pidfds,
// run names, and a bounded background queue. Used by process.cc, process_child.cc and
// process_cgroups.cc; nothing outside exec/ includes this.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/fd.h"
#include "common/mutex.h"

namespace cortex::exec::internal {

using Clock = std::chrono::steady_clock;

inline constexpr std::chrono::milliseconds kGoneDeadline{5000};  // bound on waiting for killed
                                                                 // processes to vanish
inline constexpr const char* kComponent = "process";             // the log's component

// "SIGKILL", or "signal 77".
std::string SignalName(int sig);
// "64 MiB", or "1000 bytes".
std::string FormatBytes(uint64_t bytes);

// Control files kept open (one set per cgroup slot): a kernfs file is re-read by pread at offset
// 0 and rewritten by pwrite, which saves an open/close pair per access (~10 per run). Used by one
// thread at a time, like the slot that holds it.
class ControlFiles {
 public:
  // An open descriptor for `path` (O_RDONLY or O_WRONLY), opened on first use; -1 and errno.
  int Get(const std::string& path, int mode);
  void Clear() { fds_.clear(); }

 private:
  std::unordered_map<std::string, Fd> fds_;
};

// Writes `data` at offset 0 (a control file); false and *err on failure.
bool WriteFile(const std::string& path, std::string_view data, int* err = nullptr,
               ControlFiles* files = nullptr);
// Reads a small file (cgroup control files, /proc entries, script headers): at most `limit` bytes.
std::optional<std::string> ReadFile(const std::string& path, size_t limit = 64 * 1024,
                                    ControlFiles* files = nullptr);
// Decimal digits (trailing blanks and newlines allowed).
std::optional<uint64_t> ParseU64(std::string_view text);
std::optional<uint64_t> ReadU64File(const std::string& path, ControlFiles* files = nullptr);
// The value of `key` in a "key value" per line file (memory.events, pids.events, oom_control).
std::optional<uint64_t> ReadKeyedU64(const std::string& path, std::string_view key,
                                     ControlFiles* files = nullptr);
bool IsFsType(const std::string& path, unsigned long magic);
bool Exists(const std::string& path);
// pidfd_open and pidfd_send_signal; -1 and ENOSYS where the kernel headers lack them.
int PidfdOpen(pid_t pid);
int PidfdSendSignal(int pidfd, int sig);
// The pids of a cgroup.procs listing.
std::vector<pid_t> ParsePids(const std::string& text);
// A unique name per run within this host: "<server pid>-<sequence>".
std::string NextRunName();

// A bounded queue drained by its own thread, which runs `work` on each item in order; the
// destructor finishes whatever is still pending. Takes cleanup off a run's path.
template <typename T>
class BackgroundQueue {
 public:
  BackgroundQueue(size_t capacity, std::function<void(T&)> work)
      : capacity_(capacity), work_(std::move(work)), thread_([this] { Loop(); }) {}
  ~BackgroundQueue() {
    {
      MutexLock lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();  // the loop handles everything still pending before it returns
  }
  BackgroundQueue(const BackgroundQueue&) = delete;
  BackgroundQueue& operator=(const BackgroundQueue&) = delete;

  // Takes all the items (moving them out), or none when they do not fit: then false, and the
  // caller does the work itself.
  bool TryPushAll(std::vector<T>& items) {
    {
      MutexLock lock(mu_);
      if (pending_.size() + items.size() > capacity_) return false;
      for (auto& item : items) pending_.push_back(std::move(item));
    }
    cv_.notify_one();
    return true;
  }

 private:
  void Loop() {
    MutexLock lock(mu_);
    for (;;) {
      cv_.wait(lock.native(),
               [&]() CORTEX_REQUIRES(mu_) { return stopping_ || !pending_.empty(); });
      if (pending_.empty()) return;  // stopping, and nothing left
      T item = std::move(pending_.front());
      pending_.pop_front();
      lock.Unlock();
      work_(item);
      lock.Lock();
    }
  }

  const size_t capacity_;
  const std::function<void(T&)> work_;
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<T> pending_ CORTEX_GUARDED_BY(mu_);
  bool stopping_ CORTEX_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once the rest is ready
};

}  // namespace cortex::exec::internal
