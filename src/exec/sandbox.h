// The sandbox every tool runs in: bubblewrap (bwrap) with a read-only, minimal view of the host.
//
// WrapInSandbox turns the ProcessSpec of a tool into the ProcessSpec of `bwrap ... -- tool`; the
// ProcessRunner runs it like any other process (same limits, same process group, same cleanup).
// Nothing here spawns a tool; DetectSandbox spawns bwrap once, at startup, to prove it works.
//
// What a tool sees (docs/sandbox.md has the full list and the reasons):
//   /usr (and /bin, /lib, /lib64, /sbin as on the host: symlinks into /usr on Debian 12),
//   a few /etc files interpreters need (never shadow, gshadow, sudoers, ssl/private),
//   a synthesized /etc/passwd and /etc/group, the interpreter's own prefix when it lives outside
//   /usr (e.g. one pyenv version directory), the tool folder read-only at its own path (the
//   working directory), a private writable /tmp and /dev/shm, a fresh /proc of its own pid
//   namespace, a minimal /dev. Everything else -- /root, /home, Cortex's data folder, the rest of
//   /etc -- does not exist. The root itself is read-only.
//   Tools run as uid/gid 65534 (nobody), in new pid/ipc/uts/cgroup namespaces, with no network
//   (a private net namespace holding only `lo`) unless the policy allows it, in a session of
//   their own (no controlling terminal), and die with their parent.
//
// How the unprivileged uid is obtained depends on who runs Cortex:
//   - as root (kSetprivDrop): bwrap builds the mounts as root, without a user namespace, keeping
//     only CAP_SETUID/SETGID/SETPCAP; `setpriv` then switches to the real uid 65534 and clears
//     every capability before exec'ing the tool. A user namespace cannot be used here: bwrap maps
//     the sandbox uid onto the caller's uid, so "65534 inside" would still be root outside and
//     would own every root-owned file (measured: it reads /etc/shadow under `--ro-bind / /`).
//   - unprivileged (kUserNamespace): `--unshare-user --uid 65534 --gid 65534 --disable-userns`;
//     the tool is then Cortex's own uid outside, which is why Cortex's data folder is never bound.
// In both modes no_new_privs is set (bwrap does it), so setuid binaries cannot raise privileges.
//
// The environment: the wrapped spec's `env` is the inner spec's env, passed through bwrap's own
// environment (bwrap and setpriv forward it untouched; bwrap's argv is world-readable in
// /proc/PID/cmdline, its environment is not, so secrets stay out of argv). The exception is the
// variables that steer the dynamic loader or libc (LD_*, GCONV_PATH, GLIBC_TUNABLES, MALLOC_*,
// ...): those would act on bwrap itself (root, or Cortex's uid outside any sandbox) and on setpriv
// (which holds CAP_SETUID), so they reach only the unprivileged side: `--setenv NAME VALUE` in the
// user-namespace mode, `env -- NAME=VALUE tool...` after setpriv in the root mode (they are then
// visible in argv). The tool sees exactly inner.env, plus PWD: bwrap sets it after --chdir.
//
// The argv is `bwrap <options> -- setsid --wait -- [setpriv ... --] [env -- LD_X=..] <inner.argv>`.
//
// Exit status: bwrap exits with the tool's exit code, or 128+N when the tool was killed by signal
// N.
//
// Killing (what the ProcessRunner must do): signal bwrap's process group, and once bwrap has
// exited, SIGKILL the group again if anything is left in it (kill(-pgid, 0) == 0). Once the tool
// runs, killing bwrap kills the whole sandbox (its pid-namespace init has a parent-death signal;
// the namespace dies with its init). But while bwrap is still setting up (the first ~1-4 ms),
// the init has no parent-death signal yet (bubblewrap issue #633), and as a pid-namespace init it
// ignores SIGTERM. So a SIGTERM to the group at that moment kills bwrap alone, and the sandbox
// goes on without it; measured here, 1 time in 2 for a kill 1 ms after the start and almost
// always at 2-3 ms. Only SIGKILL reaches that init, and only while it is still in the group,
// which is why --new-session is not used (the tool gets its own session from setsid(1) instead).
// With the follow-up SIGKILL: no leftover in 240 kills at 0-5 ms. A cgroup kill is stronger
// still.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "exec/process.h"
#include "exec/tool_network.h"

namespace cortex::exec {

inline constexpr uint32_t kSandboxUid = 65534;  // nobody
inline constexpr uint32_t kSandboxGid = 65534;  // nogroup

struct SandboxPolicy {
  // Network for the tool, and the DNS files (resolv.conf, hosts, nsswitch.conf, ...) bound.
  // The tool gets a network namespace of its own that pasta connects to the outside
  // (tool_network.h): it reaches what the host reaches over the network, but none of the host's
  // loopback services except `host_ports`. Off: the tool has only a loopback interface of its
  // own.
  bool network = false;
  std::vector<int> host_ports;  // host loopback TCP ports reachable at 127.0.0.1 inside
  // With network: share the host's network namespace instead (--share-net): the tool reaches
  // every loopback service, Cortex's API included. Only by configuration (exec.tool_network).
  bool host_network = false;
  // The tool's folder, absolute: bound read-only at the same path; the working directory.
  std::string tool_dir;
  // More host paths (absolute, existing) bound read-only at the same path.
  std::vector<std::string> extra_ro_binds;
  // Host paths (absolute, existing) bound writable at the same path (a relic's data folder). As
  // with the read-only binds, one strictly inside a hidden path is allowed.
  std::vector<std::string> rw_binds;
  // A long-running service (a process relic), not a tool: it outlives Cortex (no
  // --die-with-parent: a restarted server adopts it), and its command is not put in a session of
  // its own (its supervisor already gave it one, without a terminal), so it stays in bwrap's
  // process group and a SIGTERM to the group reaches it for a clean shutdown. It keeps the
  // host's network when `network` and `host_network` are set (it serves a port on loopback).
  bool service = false;
  // The account the command runs as (kSetprivDrop); nobody when unset.
  std::optional<std::pair<uint32_t, uint32_t>> run_as;
  // Host paths that must stay unreachable (e.g. Cortex's data folder). Nothing is bound for
  // them; when a bound tree contains one, it is masked (an empty read-only tmpfs for a
  // directory, /dev/null for a file). A bind strictly inside a hidden path stays allowed (it
  // exposes only itself); a bind equal to a hidden path is an error. /root, /home,
  // /etc/shadow, /etc/gshadow, /etc/sudoers(.d) and /etc/ssl/private are always hidden.
  std::vector<std::string> hidden_paths;
  // Size of the private /tmp (and of /dev/shm), a tmpfs charged to the tool's memory.
  uint64_t tmp_size_bytes = 64ull << 20;
  // Hostname inside the private uts namespace (the host's name is not shown).
  std::string hostname = "cortex-sandbox";
};

enum class SandboxUidMode {
  kSetprivDrop,    // Cortex runs as root: mounts by bwrap as root, then setpriv to uid 65534
  kUserNamespace,  // Cortex is unprivileged: a user namespace mapping 65534 to Cortex's uid
};
std::string_view SandboxUidModeName(SandboxUidMode mode);

// A regular file this process may execute (bwrap, pasta, a tool's entrypoint).
bool IsExecutableFile(const std::string& path);

// What DetectSandbox found; immutable afterwards, shared by every call.
struct SandboxInfo {
  std::string bwrap_path;     // absolute
  std::string bwrap_version;  // e.g. "bubblewrap 0.8.0"
  SandboxUidMode uid_mode = SandboxUidMode::kSetprivDrop;
  // Absolute paths under /usr (so visible in the sandbox) of setsid, which gives the tool its own
  // session, and (kSetprivDrop only) setpriv and env, which sets the loader variables after the
  // uid drop.
  std::string setsid_path, setpriv_path, env_path;
  // pasta (tool_network.h), for tools with network: "" when it is not installed. setpriv_path is
  // also found in the user-namespace mode, for pasta's parent-death signal.
  std::string pasta_path;
  // Synthesized passwd/group (root and nobody only), bound at /etc/passwd and /etc/group.
  std::string passwd_file, group_file;
  // The host's layout, read once: top-level entries that are symlinks (on Debian 12, /bin ->
  // usr/bin, /lib, /lib64, /sbin) are recreated as (target, path) symlinks; the rest are bound.
  std::vector<std::pair<std::string, std::string>> system_symlinks;
  std::vector<std::string> system_binds;   // read-only at the same path, always
  std::vector<std::string> network_binds;  // read-only at the same path, when policy.network
  // Where the system binds, the network binds and the always-hidden paths lead (realpath), and
  // whether they are directories, read with the rest of the layout: each call would otherwise
  // resolve the same dozens of paths again. Paths not listed are resolved per call.
  struct HostPath {
    std::optional<std::string> real;  // nullopt: does not exist
    bool is_dir = false;
  };
  std::map<std::string, HostPath> host_paths;
  std::chrono::microseconds probe_wall{0};  // wall time of the `bwrap ... true` probe

  // One line for the logs: "bubblewrap 0.8.0 at /usr/bin/bwrap, tools run as uid 65534 (...)".
  std::string Describe() const;
};

// Finds bwrap (`bwrap_path_hint` when not empty, else /usr/bin/bwrap, /bin/bwrap,
// /usr/local/bin/bwrap), writes the sandbox's passwd/group into `support_dir` (created 0755 if
// missing; files 0644, replaced atomically), then runs one real sandbox (`true` under the default
// policy, no network) and checks it exits 0. Run once at startup. Errors (FailedPrecondition)
// say why tools cannot be sandboxed here: bwrap missing or not executable, setpriv missing, user
// namespaces disabled, an unsupported bwrap option, ... with bwrap's own message.
Result<SandboxInfo> DetectSandbox(const std::string& bwrap_path_hint,
                                  const std::string& support_dir);

// The spec that runs `inner` under bwrap with `policy`: argv = [bwrap, options..., "--", setsid,
// "--wait", "--", (setpriv ... "--",) inner.argv...]; env = inner.env (see above); cwd = "/" for
// bwrap, while the
// tool starts in inner.cwd when set (it must be the tool folder, below it, or below /tmp),
// else in policy.tool_dir; stdin_data, limits, start_gate, on_spawned and reap_in_background are
// copied (with a
// start gate, bwrap sets the sandbox up and waits on descriptor 3 before it runs the tool:
// --block-fd 3). The interpreter (inner.argv[0],
// absolute) is bound with its prefix when it lives outside /usr: the directory above its `bin/`
// (e.g. /root/.pyenv/versions/3.11.7), for both the path as given and its resolved target (so a
// venv and its base interpreter both work); never a whole home directory. Only reads the
// filesystem (realpath/stat); runs nothing.
// Errors: InvalidArgument (relative paths, a bind equal to a hidden path, binding "/", a cwd
// outside the sandbox's view, a malformed env entry), NotFound (tool_dir, an extra bind or the
// interpreter missing).
Result<ProcessSpec> WrapInSandbox(const ProcessSpec& inner, const SandboxPolicy& policy,
                                  const SandboxInfo& info);

// WrapInSandbox in two steps, for callers that run the same program under the same policy again
// and again (the executor, per tool): PlanSandbox resolves the paths (realpath/stat) and builds
// bwrap's options; WrapInSandbox(inner, plan, info) adds what is per call (start gate, working
// directory, environment, command) without touching the filesystem. A plan stays right while
// StillValid(): the tool folder, the program and what it resolves to (and the extra binds) are
// still the same files (device, inode, ctime); the host layout is SandboxInfo's, read once.
struct SandboxPlan {
  struct Identity {
    std::string path;
    bool follow = true;  // stat, or lstat
    bool exists = false;
    uint64_t dev = 0, ino = 0;
    uint32_t mode = 0;
    int64_t ctime_sec = 0, ctime_nsec = 0;
    bool operator==(const Identity&) const = default;
  };
  std::string program;               // inner.argv[0] it was planned for
  std::string tool_dir;              // normalized
  std::vector<std::string> options;  // bwrap and its options, up to (not including) --chdir
  // Set for a tool with a network of its own: each run is spawned with a start gate, and pasta
  // is attached to its namespace before the gate opens (and stopped when the run's spec goes).
  std::optional<NetworkLinkOptions> network_link;
  bool service = false;  // SandboxPolicy::service
  std::pair<uint32_t, uint32_t> run_as{kSandboxUid, kSandboxGid};
  std::vector<Identity> identities;
  bool StillValid() const;  // a few stat calls
};
Result<SandboxPlan> PlanSandbox(const std::string& program, const SandboxPolicy& policy,
                                const SandboxInfo& info);
Result<ProcessSpec> WrapInSandbox(const ProcessSpec& inner, const SandboxPlan& plan,
                                  const SandboxInfo& info);

}  // namespace cortex::exec
