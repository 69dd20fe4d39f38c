#include "exec/sandbox.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <string_view>

#include "common/fd.h"

namespace cortex::exec {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Never bound, and masked when a bound tree contains them.
constexpr std::array<std::string_view, 9> kAlwaysHidden = {
    "/root",         "/home",        "/etc/shadow",    "/etc/shadow-",     "/etc/gshadow",
    "/etc/gshadow-", "/etc/sudoers", "/etc/sudoers.d", "/etc/ssl/private",
};

// The /etc an interpreter needs: the loader cache (the loader reads only ld.so.cache, not
// ld.so.conf), alternatives (/usr/bin/awk etc. point there), CA certificates and the OpenSSL
// config (not /etc/ssl: it holds private/), the time zone, os-release. Deliberately not: pip.conf,
// npmrc, gitconfig (may hold credentials), machine-id, hostname, anything about users other than
// the synthesized passwd/group. Each entry is one more mount (~0.1 ms per call).
constexpr std::array<std::string_view, 6> kEtcFiles = {
    "/etc/ld.so.cache",     "/etc/alternatives", "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf", "/etc/localtime",    "/etc/os-release",
};

// Only with network: name resolution and the service/protocol tables.
constexpr std::array<std::string_view, 7> kEtcNetworkFiles = {
    "/etc/resolv.conf", "/etc/hosts",    "/etc/nsswitch.conf", "/etc/host.conf",
    "/etc/gai.conf",    "/etc/services", "/etc/protocols",
};

// Top-level system entries: recreated as symlinks when they are symlinks on the host (merged
// /usr), bound read-only when they are directories.
constexpr std::array<std::string_view, 6> kTopLevel = {"/bin",   "/sbin",  "/lib",
                                                       "/lib64", "/lib32", "/libx32"};

// Variables glibc refuses to honour in setuid programs (UNSECURE_ENVVARS) plus the LD_* and
// MALLOC_* families: they would steer bwrap itself, which may run as root, so they are handed
// to the sandboxed side only, through --setenv.
bool IsLoaderVariable(std::string_view name) {
  static constexpr std::array<std::string_view, 12> kNames = {
      "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES",   "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
      "NIS_PATH",   "NLSPATH",     "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR",      "TZDIR",
  };
  if (name.starts_with("LD_") || name.starts_with("MALLOC_")) return true;
  return std::find(kNames.begin(), kNames.end(), name) != kNames.end();
}

// "/a/b/../c/" -> "/a/c". Callers check that the path is absolute.
std::string Normalize(const std::string& path) {
  std::string out = fs::path(path).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// `path` equals `dir` or lies below it.
bool IsUnder(std::string_view path, std::string_view dir) {
  if (dir == "/") return true;
  if (!path.starts_with(dir)) return false;
  return path.size() == dir.size() || path[dir.size()] == '/';
}

bool IsStrictlyUnder(std::string_view path, std::string_view dir) {
  return path != dir && IsUnder(path, dir);
}

std::optional<std::string> RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return std::nullopt;
  return std::string(buf);
}

SandboxInfo::HostPath ResolveHostPath(const std::string& path) {
  SandboxInfo::HostPath h;
  h.real = RealPath(path);
  struct stat st {};
  h.is_dir = h.real && ::stat(h.real->c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  return h;
}

// Where `path` leads: from the layout read at detection when it is there, else now.
SandboxInfo::HostPath HostPathOf(const SandboxInfo& info, const std::string& path) {
  auto it = info.host_paths.find(path);
  return it != info.host_paths.end() ? it->second : ResolveHostPath(path);
}

std::string Parent(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

std::string_view Basename(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

int Depth(std::string_view path) {
  return path == "/" ? 0 : static_cast<int>(std::count(path.begin(), path.end(), '/'));
}

// ---- A minimal spawn for DetectSandbox (runs twice per server start; never for tools). ----

struct Captured {
  int wait_status = 0;
  std::string output;  // stdout and stderr together, first 64 KiB
  bool timed_out = false;
};

Result<Captured> RunCaptured(const std::vector<std::string>& argv,
                             const std::vector<std::string>& env,
                             std::chrono::milliseconds timeout) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return InternalError("pipe2: " + ErrnoText(errno));
  Fd read_end(pipe_fds[0]), write_end(pipe_fds[1]);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 2);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

  std::vector<char*> c_argv, c_env;
  for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  for (const auto& e : env) c_env.push_back(const_cast<char*>(e.c_str()));
  c_env.push_back(nullptr);

  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, c_argv[0], &actions, &attr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  write_end.Reset();
  if (rc != 0) return FailedPreconditionError("cannot start " + argv[0] + ": " + ErrnoText(rc));

  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  Captured result;
  const auto deadline = Clock::now() + timeout;
  bool eof = false, exited = false;
  while (!(eof && exited)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd fds[2] = {{read_end.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
    nfds_t count = 2;
    if (eof) fds[0].fd = -1;  // ignored by poll
    if (pidfd.get() < 0 || exited) fds[1].fd = -1;
    int n = ::poll(fds, count, static_cast<int>(std::min<int64_t>(left.count(), 100)));
    if (n < 0 && errno != EINTR) break;
    if (!eof && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      char buf[4096];
      ssize_t got = ::read(read_end.get(), buf, sizeof buf);
      if (got > 0) {
        if (result.output.size() < (64u << 10)) result.output.append(buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        eof = true;
      }
    }
    if (!exited) {
      int status = 0;
      pid_t w = ::waitpid(pid, &status, WNOHANG);
      if (w == pid) {
        exited = true;
        result.wait_status = status;
      }
    }
  }
  if (!exited) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    result.wait_status = status;
  }
  return result;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string DescribeWait(const Captured& c) {
  if (c.timed_out) return "timed out";
  if (WIFEXITED(c.wait_status)) return "exit code " + std::to_string(WEXITSTATUS(c.wait_status));
  if (WIFSIGNALED(c.wait_status))
    return "killed by signal " + std::to_string(WTERMSIG(c.wait_status));
  return "ended abnormally";
}

Status WriteFileAtomically(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return FailedPreconditionError("cannot write " + tmp + ": " + ErrnoText(errno));
  bool ok = ::fchmod(fd, 0644) == 0 &&
            ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  int err = errno;
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) err = errno;
    ::unlink(tmp.c_str());
    return FailedPreconditionError("cannot write " + path + ": " + ErrnoText(err));
  }
  return Status::Ok();
}

// ---- The mount plan. ----

struct Bind {
  std::string source;     // host path as configured
  std::string dest;       // path in the sandbox (normalized)
  std::string real;       // realpath(source), "" when it does not exist (optional binds only)
  bool system = false;    // part of the base view: dropped (not an error) when hidden
  bool optional = false;  // --ro-bind-try
  bool dropped = false;
  bool writable = false;  // --bind
};

enum class OpKind { kBind, kSymlink, kTmpfs, kSpecial, kDir };

struct Op {
  std::string dest;
  OpKind kind;
  std::vector<std::string> args;
};

// Where a tool's interpreter lives, to bind with it: the directory above `bin/` (a pyenv
// version, a venv, /opt/node), else the interpreter's directory, else the file alone; never "/",
// a top-level directory or a home directory as a whole.
std::string InterpreterRoot(const std::string& exe) {
  auto too_broad = [](const std::string& p) {
    return Depth(p) < 2 || (IsUnder(p, "/home") && Depth(p) <= 2);
  };
  std::string dir = Parent(exe);
  if (Basename(dir) == "bin" || Basename(dir) == "sbin") {
    std::string prefix = Parent(dir);
    if (!too_broad(prefix)) return prefix;
  }
  if (!too_broad(dir)) return dir;
  return exe;
}

}  // namespace

std::string_view SandboxUidModeName(SandboxUidMode mode) {
  switch (mode) {
    case SandboxUidMode::kSetprivDrop:
      return "setpriv";
    case SandboxUidMode::kUserNamespace:
      return "user-namespace";
  }
  return "unknown";
}

std::string SandboxInfo::Describe() const {
  std::string out =
      bwrap_version + " at " + bwrap_path + ", tools run as uid " + std::to_string(kSandboxUid);
  out += uid_mode == SandboxUidMode::kSetprivDrop
             ? " (Cortex runs as root: mounts by bwrap, then " + setpriv_path + ")"
             : " (user namespace)";
  out += pasta_path.empty() ? ", no pasta (tools with network: true cannot run)"
                            : ", network through " + pasta_path;
  char ms[32];
  std::snprintf(ms, sizeof ms, "%.1f", static_cast<double>(probe_wall.count()) / 1000.0);
  return out + ", probe " + ms + " ms";
}

Result<SandboxInfo> DetectSandbox(const std::string& bwrap_path_hint,
                                  const std::string& support_dir) {
  SandboxInfo info;
  // 1. bwrap itself.
  std::vector<std::string> candidates;
  if (!bwrap_path_hint.empty()) {
    if (bwrap_path_hint[0] != '/') {
      return FailedPreconditionError("bwrap path must be absolute: " + bwrap_path_hint);
    }
    candidates.push_back(bwrap_path_hint);
  } else {
    candidates = {"/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"};
  }
  for (const auto& c : candidates) {
    if (IsExecutableFile(c)) {
      info.bwrap_path = c;
      break;
    }
  }
  if (info.bwrap_path.empty()) {
    std::string looked;
    for (const auto& c : candidates) looked += (looked.empty() ? "" : ", ") + c;
    return FailedPreconditionError("bubblewrap not found or not executable (looked at " + looked +
                                   "); install the `bubblewrap` package");
  }
  CORTEX_ASSIGN_OR_RETURN(Captured version, RunCaptured({info.bwrap_path, "--version"}, {},
                                                        std::chrono::milliseconds(10000)));
  if (!WIFEXITED(version.wait_status) || WEXITSTATUS(version.wait_status) != 0) {
    return FailedPreconditionError(info.bwrap_path + " --version failed (" + DescribeWait(version) +
                                   "): " + Trim(version.output));
  }
  info.bwrap_version = Trim(version.output);

  // 2. How the tool gets an unprivileged uid, and the helpers that run inside (from /usr, so
  // they are visible there).
  auto find_in_usr = [](const char* name) -> std::string {
    for (const std::string dir : {"/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/"}) {
      auto real = RealPath(dir + name);
      if (real && IsUnder(*real, "/usr") && IsExecutableFile(*real)) return *real;
    }
    return "";
  };
  info.setsid_path = find_in_usr("setsid");
  if (info.setsid_path.empty()) {
    return FailedPreconditionError("setsid (util-linux) was not found under /usr");
  }
  if (::geteuid() == 0) {
    info.uid_mode = SandboxUidMode::kSetprivDrop;
    info.setpriv_path = find_in_usr("setpriv");
    info.env_path = find_in_usr("env");
    if (info.setpriv_path.empty() || info.env_path.empty()) {
      return FailedPreconditionError(
          "Cortex runs as root and needs setpriv (util-linux) and env (coreutils) under /usr to "
          "drop tools to uid 65534; not found");
    }
  } else {
    info.uid_mode = SandboxUidMode::kUserNamespace;
    info.setpriv_path = find_in_usr("setpriv");  // pasta's parent-death signal
  }
  // The network of a tool with `network: true` (tool_network.h); without pasta such a tool is
  // refused, unless the configuration shares the host's network instead.
  info.pasta_path = FindPasta("");

  // 3. The host layout.
  struct stat st {};
  if (::stat("/usr", &st) != 0 || !S_ISDIR(st.st_mode)) {
    return FailedPreconditionError("/usr is not a directory; cannot build the sandbox's view");
  }
  info.system_binds.push_back("/usr");
  for (std::string_view top : kTopLevel) {
    std::string path(top);
    if (::lstat(path.c_str(), &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      info.system_symlinks.emplace_back(std::string(target, static_cast<size_t>(n)), path);
    } else if (S_ISDIR(st.st_mode)) {
      info.system_binds.push_back(path);
    }
  }
  auto add_etc = [&](const std::string& path, std::vector<std::string>* binds) {
    if (::lstat(path.c_str(), &st) != 0) return;
    if (S_ISLNK(st.st_mode)) {
      // A symlink into /usr (localtime, os-release) stays a symlink: readers see its target.
      auto real = RealPath(path);
      char target[PATH_MAX];
      ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
      if (real && IsUnder(*real, "/usr") && n > 0) {
        info.system_symlinks.emplace_back(std::string(target, static_cast<size_t>(n)), path);
        return;
      }
    }
    binds->push_back(path);
  };
  for (std::string_view p : kEtcFiles) add_etc(std::string(p), &info.system_binds);
  // Debian's python reads /etc/python3.X (sitecustomize.py, debian_config).
  std::error_code ec;
  std::vector<std::string> etc_interpreters;
  for (const auto& entry : fs::directory_iterator("/etc", ec)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with("python3")) etc_interpreters.push_back("/etc/" + name);
  }
  std::sort(etc_interpreters.begin(), etc_interpreters.end());
  for (const auto& p : etc_interpreters) add_etc(p, &info.system_binds);
  for (std::string_view p : kEtcNetworkFiles) add_etc(std::string(p), &info.network_binds);
  std::vector<std::string> resolved = info.system_binds;
  resolved.insert(resolved.end(), info.network_binds.begin(), info.network_binds.end());
  resolved.insert(resolved.end(), kAlwaysHidden.begin(), kAlwaysHidden.end());
  for (const auto& path : resolved) info.host_paths[path] = ResolveHostPath(path);

  // 4. passwd and group: root and nobody only.
  if (support_dir.empty() || support_dir[0] != '/') {
    return FailedPreconditionError("the sandbox support directory must be an absolute path: '" +
                                   support_dir + "'");
  }
  // 0755: the probe uses it as a tool folder, entered by uid 65534; it holds only these files.
  fs::create_directories(support_dir, ec);
  if (!ec) fs::permissions(support_dir, fs::perms(0755), ec);
  if (ec) {
    return FailedPreconditionError("cannot create " + support_dir + ": " + ec.message());
  }
  info.passwd_file = Normalize(support_dir) + "/passwd";
  info.group_file = Normalize(support_dir) + "/group";
  CORTEX_RETURN_IF_ERROR(
      WriteFileAtomically(info.passwd_file,
                          "root:x:0:0:root:/root:/usr/sbin/nologin\n"
                          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"));
  CORTEX_RETURN_IF_ERROR(WriteFileAtomically(info.group_file, "root:x:0:\nnogroup:x:65534:\n"));

  // 5. One real sandbox, with every feature a tool call uses.
  ProcessSpec probe;
  probe.argv = {IsExecutableFile("/usr/bin/true") ? "/usr/bin/true" : "/bin/true"};
  probe.env = {"PATH=/usr/bin:/bin"};
  SandboxPolicy policy;
  policy.tool_dir = Normalize(support_dir);
  CORTEX_ASSIGN_OR_RETURN(ProcessSpec wrapped, WrapInSandbox(probe, policy, info));
  auto start = Clock::now();
  CORTEX_ASSIGN_OR_RETURN(Captured run,
                          RunCaptured(wrapped.argv, wrapped.env, std::chrono::milliseconds(10000)));
  info.probe_wall = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  if (!WIFEXITED(run.wait_status) || WEXITSTATUS(run.wait_status) != 0) {
    std::string why = Trim(run.output);
    std::string hint;
    if (why.find("namespace") != std::string::npos || why.find("ermission") != std::string::npos) {
      hint =
          " (user namespaces may be disabled: see sysctl user.max_user_namespaces and "
          "kernel.unprivileged_userns_clone, or an AppArmor/SELinux policy on bwrap)";
    }
    return FailedPreconditionError("bubblewrap (" + info.bwrap_path +
                                   ") cannot create a sandbox here: " + DescribeWait(run) +
                                   (why.empty() ? "" : ": " + why) + hint);
  }
  return info;
}

namespace {

// What a path is now (lstat when `follow` is false): a plan is reused only while the paths it
// resolved still are what they were.
SandboxPlan::Identity IdentityOf(const std::string& path, bool follow) {
  struct stat st {};
  SandboxPlan::Identity id;
  id.path = path;
  id.follow = follow;
  if ((follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) == 0) {
    id.exists = true;
    id.dev = st.st_dev;
    id.ino = st.st_ino;
    id.mode = st.st_mode;
    id.ctime_sec = st.st_ctim.tv_sec;
    id.ctime_nsec = st.st_ctim.tv_nsec;
  }
  return id;
}

}  // namespace

bool SandboxPlan::StillValid() const {
  for (const auto& id : identities) {
    if (!(IdentityOf(id.path, id.follow) == id)) return false;
  }
  return true;
}

Result<SandboxPlan> PlanSandbox(const std::string& program, const SandboxPolicy& policy,
                                const SandboxInfo& info) {
  if (info.bwrap_path.empty()) return FailedPreconditionError("no sandbox detected");
  if (program.empty() || program[0] != '/') {
    return InvalidArgumentError("the sandboxed program must be an absolute path: '" + program +
                                "'");
  }
  if (policy.tool_dir.empty() || policy.tool_dir[0] != '/') {
    return InvalidArgumentError("tool_dir must be an absolute path: '" + policy.tool_dir + "'");
  }
  struct stat st {};
  const std::string tool_dir = Normalize(policy.tool_dir);
  if (::stat(tool_dir.c_str(), &st) != 0) {
    return NotFoundError("tool folder " + tool_dir + ": " + ErrnoText(errno));
  }
  if (!S_ISDIR(st.st_mode))
    return InvalidArgumentError("tool folder " + tool_dir + " is not a directory");

  // --- Everything bound, system first. ---
  std::vector<Bind> binds;
  auto add_system = [&](const std::string& path) {
    Bind b{path, Normalize(path), HostPathOf(info, path).real.value_or(""),
           true, path != "/usr",  false};
    binds.push_back(std::move(b));
  };
  for (const auto& p : info.system_binds) add_system(p);
  if (policy.network) {
    for (const auto& p : info.network_binds) add_system(p);
  }
  auto add_explicit = [&](const std::string& path, const char* what,
                          bool writable = false) -> Status {
    if (path.empty() || path[0] != '/') {
      return InvalidArgumentError(std::string(what) + " must be an absolute path: '" + path + "'");
    }
    std::string dest = Normalize(path);
    auto real = RealPath(dest);
    if (!real) return NotFoundError(std::string(what) + " " + dest + ": " + ErrnoText(errno));
    if (*real == "/" || dest == "/") {
      return InvalidArgumentError(std::string(what) + " " + dest +
                                  " would expose the whole host filesystem");
    }
    for (auto& b : binds) {
      if (b.dest == dest) {  // already bound
        b.writable = b.writable || writable;
        return Status::Ok();
      }
    }
    binds.push_back(Bind{dest, dest, *real, false, false, false, writable});
    return Status::Ok();
  };

  // The interpreter's prefix, for the path as given and for its target.
  const std::string exe = Normalize(program);
  auto exe_real = RealPath(exe);
  if (!exe_real) return NotFoundError("program " + exe + ": " + ErrnoText(errno));
  auto visible_already = [&](const std::string& path) {
    if (IsUnder(path, tool_dir)) return true;
    for (const auto& b : binds) {
      if (IsUnder(path, b.dest)) return true;
    }
    for (const auto& [target, link] : info.system_symlinks) {
      if (IsUnder(path, link)) return true;
    }
    for (const auto& extra : policy.extra_ro_binds) {
      if (!extra.empty() && IsUnder(path, Normalize(extra))) return true;
    }
    return false;
  };
  for (const std::string& path : {exe, *exe_real}) {
    if (!visible_already(path)) {
      CORTEX_RETURN_IF_ERROR(add_explicit(InterpreterRoot(path), "interpreter prefix"));
    }
  }
  CORTEX_RETURN_IF_ERROR(add_explicit(tool_dir, "tool folder"));
  for (const auto& extra : policy.extra_ro_binds) {
    CORTEX_RETURN_IF_ERROR(add_explicit(extra, "extra bind"));
  }
  for (const auto& rw : policy.rw_binds) {
    CORTEX_RETURN_IF_ERROR(add_explicit(rw, "writable bind", true));
  }

  // --- Hidden paths: drop or mask. ---
  std::vector<std::string> hidden(kAlwaysHidden.begin(), kAlwaysHidden.end());
  for (const auto& h : policy.hidden_paths) {
    if (h.empty() || h[0] != '/') {
      return InvalidArgumentError("hidden path must be absolute: '" + h + "'");
    }
    hidden.push_back(Normalize(h));
  }
  struct Mask {
    std::string dest;
    bool is_dir;
  };
  std::vector<Mask> masks;
  for (const auto& h : hidden) {
    const SandboxInfo::HostPath where = HostPathOf(info, h);
    const std::optional<std::string>& real = where.real;
    if (!real) continue;  // does not exist: nothing to see
    const bool is_dir = where.is_dir;
    for (auto& b : binds) {
      if (b.real.empty()) continue;
      if (b.real == *real || b.dest == h) {
        if (b.system) {
          b.dropped = true;
          continue;
        }
        return InvalidArgumentError("cannot bind " + b.dest + ": it is a hidden path (" + h + ")");
      }
      if (IsStrictlyUnder(*real, b.real)) {
        masks.push_back({b.dest + real->substr(b.real == "/" ? 0 : b.real.size()), is_dir});
      }
    }
  }

  // --- The mount operations, parents before children. ---
  // A system entry inside an explicit bind (extra_ro_binds = {"/etc"}) is already there, as on
  // the host; recreating it would fail (a symlink over an existing file).
  auto inside_explicit = [&](const std::string& dest) {
    for (const auto& b : binds) {
      if (!b.system && IsUnder(dest, b.dest)) return true;
    }
    return false;
  };
  std::vector<Op> ops;
  for (const auto& [target, link] : info.system_symlinks) {
    if (inside_explicit(link)) continue;
    ops.push_back({link, OpKind::kSymlink, {"--symlink", target, link}});
  }
  for (const auto& b : binds) {
    if (b.dropped || (b.system && inside_explicit(b.dest))) continue;
    ops.push_back(
        {b.dest,
         OpKind::kBind,
         {b.writable ? "--bind" : (b.optional ? "--ro-bind-try" : "--ro-bind"), b.source, b.dest}});
  }
  if (!info.passwd_file.empty()) {
    ops.push_back({"/etc/passwd", OpKind::kBind, {"--ro-bind", info.passwd_file, "/etc/passwd"}});
  }
  if (!info.group_file.empty()) {
    ops.push_back({"/etc/group", OpKind::kBind, {"--ro-bind", info.group_file, "/etc/group"}});
  }
  const std::string tmp_size = std::to_string(policy.tmp_size_bytes);
  ops.push_back({"/proc", OpKind::kSpecial, {"--proc", "/proc"}});
  ops.push_back({"/dev", OpKind::kSpecial, {"--dev", "/dev"}});
  ops.push_back(
      {"/tmp", OpKind::kTmpfs, {"--perms", "1777", "--size", tmp_size, "--tmpfs", "/tmp"}});
  ops.push_back(
      {"/dev/shm", OpKind::kTmpfs, {"--perms", "1777", "--size", tmp_size, "--tmpfs", "/dev/shm"}});
  std::vector<std::string> remounts;
  for (const auto& m : masks) {
    if (m.is_dir) {
      ops.push_back(
          {m.dest, OpKind::kTmpfs, {"--perms", "0711", "--size", "4096", "--tmpfs", m.dest}});
      remounts.push_back(m.dest);
    } else {
      ops.push_back({m.dest, OpKind::kBind, {"--ro-bind", "/dev/null", m.dest}});
    }
  }
  // Parent directories bwrap would otherwise create 0700 (unreachable for uid 65534): /etc and
  // /etc/ssl are listable (they hold only what is bound), the way to a custom bind is not (0711).
  std::vector<Op> dirs;
  std::set<std::string> known;
  for (const auto& op : ops) known.insert(op.dest);
  for (const auto& op : ops) {
    const bool system = op.dest.starts_with("/etc/");
    std::vector<std::string> ancestors;
    for (std::string a = Parent(op.dest); a != "/"; a = Parent(a)) ancestors.push_back(a);
    std::reverse(ancestors.begin(), ancestors.end());
    for (const auto& a : ancestors) {
      // The deepest operation at or above `a` decides whether `a` must be created.
      const Op* cover = nullptr;
      for (const auto& other : ops) {
        if (IsUnder(a, other.dest) &&
            (cover == nullptr || other.dest.size() > cover->dest.size())) {
          cover = &other;
        }
      }
      if (cover != nullptr && cover->kind != OpKind::kTmpfs) break;  // exists, or bwrap reports it
      if (cover != nullptr && cover->dest == a) continue;
      if (!known.insert(a).second) continue;
      dirs.push_back({a, OpKind::kDir, {"--perms", system ? "0755" : "0711", "--dir", a}});
    }
  }
  ops.insert(ops.end(), dirs.begin(), dirs.end());
  std::stable_sort(ops.begin(), ops.end(),
                   [](const Op& a, const Op& b) { return a.dest < b.dest; });
  ops.erase(std::unique(ops.begin(), ops.end(),
                        [](const Op& a, const Op& b) { return a.dest == b.dest; }),
            ops.end());

  // --- bwrap's options. ---
  SandboxPlan plan;
  plan.program = program;
  plan.tool_dir = tool_dir;
  if (policy.network && !policy.host_network) {
    if (info.pasta_path.empty() || info.setpriv_path.empty()) {
      return FailedPreconditionError(
          "the tool has network: true, which needs pasta (Debian package `passt`) and setpriv "
          "to give it a network of its own; install passt, or set exec.tool_network: host to "
          "share the host's network (the tool then reaches every service on 127.0.0.1, "
          "Cortex's API included)");
    }
    NetworkLinkOptions link;
    link.pasta_path = info.pasta_path;
    link.setpriv_path = info.setpriv_path;
    link.host_ports = policy.host_ports;
    link.join_user_namespace = info.uid_mode == SandboxUidMode::kUserNamespace;
    plan.network_link = std::move(link);
  }
  plan.identities = {IdentityOf(tool_dir, true), IdentityOf(exe, false),
                     IdentityOf(*exe_real, true)};
  for (const auto& extra : policy.extra_ro_binds)
    plan.identities.push_back(IdentityOf(extra, false));
  for (const auto& rw : policy.rw_binds) plan.identities.push_back(IdentityOf(rw, false));
  plan.service = policy.service;
  if (policy.run_as) plan.run_as = *policy.run_as;
  std::vector<std::string>& argv = plan.options;
  argv.push_back(info.bwrap_path);
  if (info.uid_mode == SandboxUidMode::kSetprivDrop) {
    for (const char* ns :
         {"--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"}) {
      argv.push_back(ns);
    }
    if (!policy.network || !policy.host_network) argv.push_back("--unshare-net");
    for (const char* a : {"--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                          "--cap-add", "CAP_SETPCAP"}) {
      argv.push_back(a);
    }
  } else {
    argv.push_back("--unshare-all");
    if (policy.network && policy.host_network) argv.push_back("--share-net");
    for (const char* a : {"--unshare-user", "--disable-userns", "--uid"}) argv.push_back(a);
    argv.push_back(std::to_string(kSandboxUid));
    argv.push_back("--gid");
    argv.push_back(std::to_string(kSandboxGid));
  }
  // Not --new-session: bwrap's init would leave the caller's process group and, while bwrap
  // sets up the sandbox (no parent-death signal yet, and SIGTERM cannot reach a pid-namespace
  // init), a group signal that kills bwrap would leave the sandbox running. The tool gets its own
  // session (no controlling terminal: no TIOCSTI) from setsid(1) instead, below.
  // A service outlives Cortex; a tool dies with it.
  if (!policy.service) argv.push_back("--die-with-parent");
  argv.push_back("--hostname");
  argv.push_back(policy.hostname.empty() ? "cortex-sandbox" : policy.hostname);
  for (const auto& op : ops) argv.insert(argv.end(), op.args.begin(), op.args.end());
  for (const auto& r : remounts) {
    argv.push_back("--remount-ro");
    argv.push_back(r);
  }
  argv.push_back("--remount-ro");
  argv.push_back("/");
  return plan;
}

Result<ProcessSpec> WrapInSandbox(const ProcessSpec& inner, const SandboxPlan& plan,
                                  const SandboxInfo& info) {
  if (inner.argv.empty() || inner.argv[0] != plan.program) {
    return InvalidArgumentError("the sandbox was planned for " + plan.program + ", not '" +
                                (inner.argv.empty() ? std::string() : inner.argv[0]) + "'");
  }
  const std::string& exe = plan.program;
  const std::string& tool_dir = plan.tool_dir;
  // --- The working directory. ---
  std::string cwd = tool_dir;
  if (!inner.cwd.empty()) {
    cwd = Normalize(inner.cwd);
    if (inner.cwd[0] != '/' || !(IsUnder(cwd, tool_dir) || IsUnder(cwd, "/tmp"))) {
      return InvalidArgumentError("working directory " + inner.cwd +
                                  " is outside the tool folder and /tmp");
    }
  }

  ProcessSpec out;
  std::vector<std::string>& argv = out.argv;
  argv = plan.options;
  const bool gate = inner.start_gate || plan.network_link.has_value();
  if (gate) {
    // bwrap sets the sandbox up, then waits for the gate before it runs anything of the tool's
    // (and closes it: the tool does not see descriptor 3). A tool with a network of its own
    // waits for it to be configured.
    argv.push_back("--block-fd");
    argv.push_back("3");
  }
  argv.push_back("--chdir");
  argv.push_back(cwd);

  // --- The environment (see sandbox.h). ---
  std::vector<std::string> loader_vars;
  for (const auto& kv : inner.env) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgumentError("environment entry is not NAME=VALUE: '" + kv + "'");
    }
    std::string_view name(kv.data(), eq);
    if (!IsLoaderVariable(name)) {
      out.env.push_back(kv);
    } else if (info.uid_mode == SandboxUidMode::kUserNamespace) {
      // bwrap sets it for the tool only; the tool is bwrap's direct child.
      argv.push_back("--setenv");
      argv.emplace_back(name);
      argv.push_back(kv.substr(eq + 1));
    } else {
      // setpriv still holds CAP_SETUID: the variable is set by env(1), after the uid drop.
      loader_vars.push_back(kv);
    }
  }

  argv.push_back("--");
  if (!plan.service) {  // a service has a session of its own already (see SandboxPolicy)
    for (const std::string& a : {info.setsid_path, std::string("--wait"), std::string("--")}) {
      argv.push_back(a);
    }
  }
  if (info.uid_mode == SandboxUidMode::kSetprivDrop) {
    const std::string uid = std::to_string(plan.run_as.first),
                      gid = std::to_string(plan.run_as.second);
    for (std::string a :
         {info.setpriv_path, "--reuid=" + uid, "--regid=" + gid, std::string("--clear-groups"),
          std::string("--inh-caps=-all"), std::string("--bounding-set=-all"), std::string("--")}) {
      argv.push_back(std::move(a));
    }
    if (!loader_vars.empty()) {
      if (exe.find('=') != std::string::npos) {
        return InvalidArgumentError("program path contains '=': " + exe);
      }
      argv.push_back(info.env_path);
      argv.push_back("--");
      argv.insert(argv.end(), loader_vars.begin(), loader_vars.end());
    }
  }
  argv.insert(argv.end(), inner.argv.begin(), inner.argv.end());

  out.cwd = "/";
  out.stdin_data = inner.stdin_data;
  out.limits = inner.limits;
  out.start_gate = gate;
  out.on_spawned = inner.on_spawned;
  if (plan.network_link) {
    // The link (pasta) lives as long as this spec, which outlives the run: the runner calls
    // on_spawned and holds the spec until the process has ended.
    auto link = std::make_shared<std::unique_ptr<NetworkLink>>();
    out.on_spawned = [link, options = *plan.network_link,
                      then = inner.on_spawned](int pid) -> Status {
      if (then) CORTEX_RETURN_IF_ERROR(then(pid));
      CORTEX_ASSIGN_OR_RETURN(*link, NetworkLink::Attach(pid, options));
      return Status::Ok();
    };
  }
  out.reap_in_background = inner.reap_in_background;
  return out;
}

Result<ProcessSpec> WrapInSandbox(const ProcessSpec& inner, const SandboxPolicy& policy,
                                  const SandboxInfo& info) {
  if (inner.argv.empty()) return InvalidArgumentError("the sandboxed program is missing");
  CORTEX_ASSIGN_OR_RETURN(SandboxPlan plan, PlanSandbox(inner.argv[0], policy, info));
  return WrapInSandbox(inner, plan, info);
}

bool IsExecutableFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

}  // namespace cortex::exec
