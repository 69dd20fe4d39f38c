// The child side of a run (exec/ internal): what runs between clone and execve, and standby
// children cloned ahead of time into a cgroup slot. See process_child.cc for the vfork discipline
// that everything here lives under.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/fd.h"

namespace cortex::exec::internal {

inline constexpr size_t kChildStackBytes = 128 * 1024;

struct ChildRlimit {
  int resource;
  struct rlimit value;
};

// Everything the child needs, prepared by the parent (the child may not allocate).
struct ChildArgs {
  const char* path = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cwd = nullptr;  // nullptr: inherit
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
  int gate_fd = -1;  // becomes descriptor 3 (ProcessSpec::start_gate); never 3 itself
  const int* cgroup_fds = nullptr;
  size_t cgroup_fd_count = 0;
  const ChildRlimit* rlimits = nullptr;
  size_t rlimit_count = 0;
  const struct rlimit* memory_fallback = nullptr;  // RLIMIT_AS if joining the cgroup fails
  // Written by the child:
  int err = 0;  // errno of the failed step; 0 when execve succeeded
  const char* failed_step = nullptr;
  int cgroup_join_err = 0;  // joining failed; the fallback rlimit was applied instead
};

// The entry point of clone(CLONE_VM | CLONE_VFORK); `arg` is a ChildArgs. Joins the cgroups in
// cgroup_fds, then execs (or stores the failure in the ChildArgs and exits 127).
int ChildMain(void* arg);

// What a standby child and its parent share (the child reads it in the parent's memory).
struct StandbyShared {
  int sock = -1;                       // the child's end (in the parent's table at clone time)
  const char* const* procs = nullptr;  // cgroup.procs paths to join
  size_t procs_count = 0;
  std::atomic<int> join_err{0};   // joining failed (errno); ChildExec falls back to rlimits
  std::atomic<int> setup_err{0};  // errno of a failed step before it waits
  std::atomic<const char*> setup_step{nullptr};
  std::atomic<int> received{0};  // it took a run (after which it execs or fails)
  ChildArgs args;                // written by the parent before the hand-over
};

// The parent's side of one standby child. Not movable: the child holds a pointer to `shared_`.
class Standby {
 public:
  // Clones a standby that joins the cgroups whose cgroup.procs files are `procs`. Only the
  // pool's standby thread calls this (see process_child.cc). nullptr and *why when it cannot be
  // cloned.
  static std::unique_ptr<Standby> Start(std::vector<std::string> procs, std::string* why);

  Standby(const Standby&) = delete;
  Standby& operator=(const Standby&) = delete;
  ~Standby();

  // Hands it a run: `args` (pointing into the caller's memory) and the three stdio descriptors.
  // Returns once it has exec'd or failed, like a vfork: its pid, with the child-written fields
  // of `args` filled in; the caller then owns the process. 0 when the standby was gone before it
  // took the run (it is reaped here; the caller clones a child instead).
  pid_t Go(ChildArgs* args);

 private:
  explicit Standby(std::vector<std::string> procs);

  std::vector<std::string> procs_;
  std::vector<const char*> procs_ptrs_;
  StandbyShared shared_;
  Fd sock_;  // the parent's end
  void* stack_ = nullptr;
  pid_t pid_ = -1;
};

}  // namespace cortex::exec::internal
