// Per-run cgroups (exec/ internal): detection of a usable hierarchy, the pool of reusable v1
// slots with their standby children, the janitor that removes finished runs' directories, and
// the cgroup(s) of one run.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/mutex.h"
#include "exec/process.h"
#include "exec/process_child.h"
#include "exec/process_sys.h"

namespace cortex::exec::internal {

// Where per-run cgroups are created: one directory per hierarchy (v2: one with both
// controllers; v1: the memory and/or the pids hierarchy). Detected once, immutable afterwards.
struct CgroupParent {
  std::string path;
  bool memory = false;
  bool pids = false;
  bool cpu = false;        // CPU time accounting (v1 cpuacct, v2 cpu.stat)
  bool cpu_quota = false;  // CPU bandwidth (v1 cpu.cfs_quota_us)
};

struct CgroupSetup {
  int version = 0;  // 0: none usable, 1, 2
  std::vector<CgroupParent> parents;
  std::string unavailable;  // why not (version 0)
};

// Finds (and prepares) the hierarchy per-run cgroups go in, and sweeps directories left by
// servers that are gone. Never fails: version 0 and `unavailable` say why there is none.
CgroupSetup DetectCgroups(const RunnerOptions& options);

// Removes the (empty) directories of finished runs' cgroups on its own thread, so a run's
// result is not held back by rmdir: a v1 memory cgroup that just lost its last task often
// answers EBUSY for a moment, and waiting for it cost ~0.4 ms per call. Bounded: past
// kMaxPending directories the caller removes its own inline.
class CgroupJanitor {
 public:
  static constexpr size_t kMaxPending = 256;

  // False when the queue is full (then the caller removes the directories itself).
  bool Remove(std::vector<std::string> dirs) { return queue_.TryPushAll(dirs); }

  // Removes one cgroup directory, waiting out a transient EBUSY (bounded).
  static void RemoveNow(const std::string& dir);

 private:
  BackgroundQueue<std::string> queue_{kMaxPending, [](std::string& dir) { RemoveNow(dir); }};
};

// Per-run cgroup directories kept for reuse (v1 only): creating and removing a memory cgroup is
// most of a cgroup's cost per call (the kernel allocates and frees per-CPU state, ~0.2 ms). A
// reused set has its counters reset or baselined (peak memory, CPU time, OOM kills, refused
// forks) and its limits rewritten when they differ. A set is only kept when the run left it
// empty and using little memory (left-over page cache is charged to it and would count against
// the next run), at most kMaxIdle of them.
struct CgroupSlot {
  std::vector<CgroupParent> dirs;
  std::vector<Fd> procs_fds;  // cgroup.procs of each, for the child to join (open while in use)
  std::string memory_limit = "unset", pids_limit = "unset", cpu_quota = "unset";  // as written
  uint64_t oom_base = 0, fork_failure_base = 0;  // counters at the run's start
  bool reused = false;
  ControlFiles files;                // its control files, opened once
  std::unique_ptr<Standby> standby;  // a child waiting inside these cgroups (idle slots only)

  std::vector<std::string> procs_paths() const;
};

class CgroupPool {
 public:
  static constexpr size_t kMaxIdle = 16;
  static constexpr size_t kMaxStandbys = 8;  // idle slots with a child waiting in them
  static constexpr uint64_t kMaxLeftoverBytes = 16ull << 20;

  explicit CgroupPool(int version);
  ~CgroupPool();

  // An idle slot, one with a standby child when there is one.
  std::unique_ptr<CgroupSlot> Take();

  // Keeps an empty slot for a later run; false when it should be removed instead.
  bool Give(std::unique_ptr<CgroupSlot>& slot);

  CgroupJanitor& janitor() { return janitor_; }

 private:
  void StandbyLoop();

  const int version_;
  Mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<CgroupSlot>> idle_ CORTEX_GUARDED_BY(mu_);
  bool stopping_ CORTEX_GUARDED_BY(mu_) = false;
  bool standby_error_ CORTEX_GUARDED_BY(mu_) = false;
  CgroupJanitor janitor_;
  std::thread standby_thread_;
};

// The cgroup(s) of one run. Created before the spawn (the child joins them before exec);
// the destructor kills whatever is still inside and hands the directories back to the pool or
// to the janitor.
class RunCgroup {
 public:
  struct Stats {
    uint64_t oom_kills = 0;        // processes killed by the OOM killer
    uint64_t fork_failures = 0;    // forks refused by pids.max
    std::optional<uint64_t> peak;  // peak memory of the whole tree
    // CPU time of the whole tree: unlike rusage, it counts processes nobody waited for (a
    // sandbox's init exits without reaping into its parent's rusage).
    std::optional<uint64_t> cpu_user_usec, cpu_system_usec;
  };

  // nullptr (and *why) when the directories or limits cannot be set up; the caller falls back.
  static std::unique_ptr<RunCgroup> Create(const CgroupSetup& setup, const Limits& limits,
                                           CgroupPool* pool, std::string* why);

  RunCgroup(const RunCgroup&) = delete;
  RunCgroup& operator=(const RunCgroup&) = delete;
  ~RunCgroup();

  // The child waiting in this slot's cgroups, if any (to take the run).
  std::unique_ptr<Standby> TakeStandby() { return std::move(slot_->standby); }

  // Descriptors of cgroup.procs, one per hierarchy: the child writes "0" into each.
  std::vector<int> procs_fds();

  bool enforces_memory() const;
  bool enforces_pids() const;
  bool enforces_cpu_quota() const;

  // SIGKILL to every process in the cgroup. True when it is (now) empty. The pidfds of the
  // processes signalled are appended to `killed` (when given), so that they can be reaped.
  bool KillAll(std::vector<Fd>* killed = nullptr) const;

  Stats ReadStats() const;

 private:
  RunCgroup(int version, CgroupPool* pool) : version_(version), pool_(pool) {}

  const std::vector<CgroupParent>& dirs() const { return slot_->dirs; }
  bool OpenProcs(CgroupSlot& slot) const;
  // Writes the run's limits (where they differ from what the slot has) and, for a reused slot,
  // resets its counters or records their baselines.
  bool Configure(CgroupSlot& slot, const Limits& limits, std::string* why);
  // Removes the slot's directories (in the background when the janitor has room).
  void Discard(CgroupSlot& slot);

  int version_;
  CgroupPool* pool_;
  std::unique_ptr<CgroupSlot> slot_;
};

}  // namespace cortex::exec::internal
