// Running one child process with limits, bounded output capture and reliable cleanup.
// The server never forks itself: children are started with posix_spawn (or clone with
// CLONE_VM|CLONE_VFORK), each in its own process group, so a cancel or timeout reaches the whole
// tree. Tests of logic above this layer use a fake ProcessRunner; this layer is tested with real
// processes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/cancel.h"
#include "common/status.h"

namespace cortex::exec {

struct Limits {
  std::optional<std::chrono::milliseconds> timeout;  // wall clock; then SIGTERM to the group
  std::chrono::milliseconds kill_grace{2000};        // SIGTERM -> SIGKILL
  std::optional<uint64_t> memory_bytes;  // cgroup memory limit where available, else RLIMIT_AS
  std::optional<std::chrono::seconds> cpu_time;  // RLIMIT_CPU
  std::optional<uint64_t> max_processes;   // cgroup pids limit (RLIMIT_NPROC does nothing for root)
  std::optional<uint64_t> max_open_files;  // RLIMIT_NOFILE
  std::optional<uint64_t> max_file_size;   // RLIMIT_FSIZE
  // CPU bandwidth in cores (0.5: half of one CPU), as a cgroup CPU quota where the machine has
  // the cpu controller; the process is throttled, never failed for it.
  std::optional<double> cpu_cores;
  size_t max_output_bytes = 1u << 20;  // per stream; past it the output is truncated...
  bool kill_on_output_limit = true;    // ...and the process group killed
};

struct ProcessSpec {
  std::vector<std::string> argv;  // argv[0] is an absolute path; nothing goes through a shell
  std::vector<std::string> env;   // "KEY=VALUE", the complete environment (nothing inherited)
  std::string cwd;                // working directory ("" = inherit)
  std::string stdin_data;         // written to the child's stdin, then stdin is closed
  Limits limits;
  // A start gate: the child gets descriptor 3, the read end of a pipe that stays empty until
  // `on_spawned` (when set) has returned OK on the calling thread, right after the spawn. A
  // program that waits on it (bwrap --block-fd 3) does not exec the real command before then,
  // so the caller's work (the executor records the call) overlaps the sandbox's setup and is
  // still done before the command runs. When on_spawned fails, the child is killed and Run
  // returns its error. Without start_gate, on_spawned is still called after the spawn.
  // on_spawned gets the child's pid (a sandbox's network is attached to it).
  bool start_gate = false;
  std::function<Status(int pid)> on_spawned;
  // Return as soon as the process has exited and what it wrote is read: what is left of its
  // group and cgroup is then sent SIGKILL, waited for and reaped, and the cgroup released, by
  // the runner's own thread (at once; bounded; nothing is left behind). Off: Run returns only
  // once nothing of the run exists any more.
  bool reap_in_background = false;
};

// Why a process ended. kExited/kSignaled are the process's own doing; the others are Cortex's.
enum class EndReason {
  kExited,        // exit_code is set
  kSignaled,      // killed by a signal it did not get from us (signal is set)
  kTimeout,       // limits.timeout passed
  kCancelled,     // the CancelToken fired
  kOutputLimit,   // wrote more than limits.max_output_bytes
  kMemoryLimit,   // the memory limit was hit (cgroup OOM kill, or an allocation failure death)
  kCpuLimit,      // RLIMIT_CPU (SIGXCPU/SIGKILL)
  kProcessLimit,  // could not fork: the pids limit
};
std::string_view EndReasonName(EndReason reason);

struct ProcessResult {
  EndReason reason = EndReason::kExited;
  int exit_code = -1;       // when kExited
  int signal = 0;           // when killed by a signal
  std::string reason_text;  // human-readable, e.g. "timed out after 5000 ms"
  std::string stdout_data, stderr_data;
  bool stdout_truncated = false, stderr_truncated = false;
  std::chrono::microseconds wall{0};
  std::chrono::microseconds cpu_user{0}, cpu_system{0};
  uint64_t peak_memory_bytes = 0;
  // Added with the real runner:
  int pid = 0;                                  // the child's pid, also its process group id
  uint64_t stdout_bytes = 0, stderr_bytes = 0;  // written in total, including what was dropped
  bool used_cgroup = false;                     // memory/pids limits enforced by a per-run cgroup
  // Set when a requested limit could not be enforced as asked, e.g. "cgroups unavailable (...):
  // memory limited by RLIMIT_AS; max_processes not enforced". Empty when all limits hold.
  std::string limits_note;
};

// Fired from any thread to stop a running process (SIGTERM to its group, SIGKILL after grace).
using ::cortex::CancelToken;

struct OutputLine {
  bool is_stderr = false;
  std::string text;  // one line without its newline (a long line is split at 64 KiB)
};

class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  // Runs to completion. A failure to start (no such file, not executable, fork failure) is an
  // error Status; everything after the start is in the ProcessResult. `on_line` (optional) is
  // called on the calling thread for each output line as it arrives.
  virtual Result<ProcessResult> Run(const ProcessSpec& spec,
                                    const std::function<void(const OutputLine&)>& on_line,
                                    const CancelToken* cancel) = 0;
};

struct RunnerOptions {
  // Where per-process cgroups are created (v2: a delegated subtree; v1: the memory and pids
  // hierarchies). Empty: detect; when cgroups cannot be used, rlimits only.
  // Given explicitly: a cgroup2 directory offering memory and pids (runs are created right
  // inside it), or else a v1 mount root holding memory/ and pids/ (runs go in <c>/cortex/).
  std::string cgroup_root;
  bool use_cgroups = true;
  // Make this process a child subreaper (prctl PR_SET_CHILD_SUBREAPER, process-wide): orphans
  // of a run are re-parented to the server, and the run reaps them before it returns instead of
  // waiting for init (which may reap late or never, e.g. in a container). Only processes that
  // left both the run's process group and its cgroup can then outlive a run unreaped.
  bool child_subreaper = true;
};

std::unique_ptr<ProcessRunner> MakeProcessRunner(RunnerOptions options = {});

// Resolves a program name through PATH to an absolute path, once. A pyenv/asdf shim is resolved
// to the interpreter it would run, when that can be found without running it (pyenv: yes;
// asdf shims are returned as they are). Absolute paths are returned as given once checked.
// `pyenv_version` is the PYENV_VERSION the program would run with ("" when unset; then
// $PYENV_ROOT/version decides). Only reads the filesystem; never runs anything.
Result<std::string> ResolveProgram(const std::string& name, const std::string& path_env,
                                   const std::string& pyenv_version = "");

}  // namespace cortex::exec
