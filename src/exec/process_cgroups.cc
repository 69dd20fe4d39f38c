// Per-run cgroups: see process_cgroups.h, and "Limits" in process.cc.
#include "exec/process_cgroups.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>

#include "common/log.h"

namespace cortex::exec::internal {
namespace {

bool ControllersListed(const std::string& file) {
  auto text = ReadFile(file);
  if (!text) return false;
  auto has = [&](std::string_view word) {
    size_t pos = 0;
    while ((pos = text->find(word, pos)) != std::string::npos) {
      bool start = pos == 0 || (*text)[pos - 1] == ' ';
      size_t end = pos + word.size();
      bool stop = end == text->size() || (*text)[end] == ' ' || (*text)[end] == '\n';
      if (start && stop) return true;
      pos = end;
    }
    return false;
  };
  return has("memory") && has("pids");
}

// mkdir that accepts an existing directory; "" on success, else the reason.
std::string EnsureDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return "";
  return "mkdir " + path + ": " + ErrnoText(errno);
}

// Creates and removes a child to prove the parent is usable (permissions, controllers).
std::string ProbeParent(const std::string& parent, const std::string& expected_file) {
  std::string probe = parent + "/probe-" + NextRunName();
  if (::mkdir(probe.c_str(), 0755) != 0) return "mkdir " + probe + ": " + ErrnoText(errno);
  bool ok = Exists(probe + "/" + expected_file);
  ::rmdir(probe.c_str());
  return ok ? "" : parent + " has no " + expected_file;
}

// Removes run directories left by servers that are gone (crashed before their cleanup). Only
// empty directories can be removed, and only those whose owner pid no longer exists are tried.
void SweepStale(const std::string& parent) {
  DIR* dir = ::opendir(parent.c_str());
  if (!dir) return;
  while (struct dirent* e = ::readdir(dir)) {
    std::string_view name = e->d_name;
    if (e->d_type != DT_DIR || name == "." || name == "..") continue;
    std::string_view owner = name;
    if (owner.substr(0, 6) == "probe-") owner.remove_prefix(6);
    owner = owner.substr(0, owner.find('-'));
    auto pid = ParseU64(owner);
    if (!pid || *pid == static_cast<uint64_t>(::getpid())) continue;
    if (::kill(static_cast<pid_t>(*pid), 0) == 0 || errno != ESRCH) continue;
    ::rmdir((parent + "/" + std::string(name)).c_str());
  }
  ::closedir(dir);
}

std::string DetectV2(const std::string& mount, bool is_delegated_root, CgroupSetup* setup) {
  // A delegated root (RunnerOptions::cgroup_root) must already have the controllers available;
  // otherwise a "cortex" child of the mount's root is created and the controllers enabled.
  std::string parent = mount;
  if (!is_delegated_root) {
    if (!ControllersListed(mount + "/cgroup.controllers")) {
      return mount + " (cgroup2) does not offer the memory and pids controllers";
    }
    int err = 0;
    if (!WriteFile(mount + "/cgroup.subtree_control", "+memory +pids", &err)) {
      return "enabling memory,pids in " + mount + ": " + ErrnoText(err);
    }
    parent = mount + "/cortex";
    if (auto e = EnsureDir(parent); !e.empty()) return e;
  }
  if (!ControllersListed(parent + "/cgroup.controllers")) {
    return parent + " does not offer the memory and pids controllers";
  }
  int err = 0;
  if (!WriteFile(parent + "/cgroup.subtree_control", "+memory +pids", &err)) {
    return "enabling memory,pids in " + parent + ": " + ErrnoText(err);
  }
  if (auto e = ProbeParent(parent, "memory.max"); !e.empty()) return e;
  setup->version = 2;
  setup->parents = {{parent, true, true, true}};
  return "";
}

std::string DetectV1(const std::string& root, CgroupSetup* setup) {
  std::vector<std::string> problems;
  std::vector<CgroupParent> parents;
  for (const char* controller : {"memory", "pids", "cpuacct"}) {
    std::string mount = root + "/" + controller;
    bool cpu = std::string(controller) == "cpuacct";
    if (!IsFsType(mount, CGROUP_SUPER_MAGIC)) {
      problems.push_back(mount + " is not a cgroup v1 hierarchy");
      continue;
    }
    std::string parent = mount + "/cortex";
    std::string e = EnsureDir(parent);
    if (e.empty()) {
      e = ProbeParent(parent, std::string(controller) == "memory" ? "memory.limit_in_bytes"
                              : cpu                               ? "cpuacct.usage"
                                                                  : "pids.max");
    }
    if (!e.empty()) {
      problems.push_back(e);
      continue;
    }
    parents.push_back(
        {parent, std::string(controller) == "memory", std::string(controller) == "pids", cpu});
  }
  // CPU bandwidth: the cpu hierarchy, often mounted together with cpuacct ("cpu,cpuacct"): then
  // the cpuacct directory serves both.
  const std::string cpu_mount = root + "/cpu";
  if (IsFsType(cpu_mount, CGROUP_SUPER_MAGIC)) {
    // Co-mounted hierarchies are one directory under two names (symlinks to "cpu,cpuacct").
    auto real = [](const std::string& path) {
      char buf[PATH_MAX];
      return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
    };
    auto joint = std::find_if(parents.begin(), parents.end(), [&](const CgroupParent& p) {
      return p.cpu && real(p.path) == real(cpu_mount + "/cortex");
    });
    if (joint != parents.end()) {
      joint->cpu_quota = Exists(joint->path + "/cpu.cfs_quota_us");
    } else if (EnsureDir(cpu_mount + "/cortex").empty() &&
               ProbeParent(cpu_mount + "/cortex", "cpu.cfs_quota_us").empty()) {
      parents.push_back({cpu_mount + "/cortex", false, false, false, true});
    }
  }
  if (parents.empty()) {
    std::string all;
    for (auto& p : problems) all += (all.empty() ? "" : "; ") + p;
    return all;
  }
  setup->version = 1;
  setup->parents = std::move(parents);
  return "";
}

}  // namespace

CgroupSetup DetectCgroups(const RunnerOptions& options) {
  CgroupSetup setup;
  if (!options.use_cgroups) {
    setup.unavailable = "disabled by configuration";
    return setup;
  }
  std::vector<std::string> problems;
  if (!options.cgroup_root.empty()) {
    std::string root = options.cgroup_root;
    std::string e =
        IsFsType(root, CGROUP2_SUPER_MAGIC) ? DetectV2(root, true, &setup) : DetectV1(root, &setup);
    if (!e.empty()) problems.push_back(e);
  } else {
    // Pure v2 (/sys/fs/cgroup is cgroup2), hybrid (v2 at /sys/fs/cgroup/unified, usually
    // without controllers), then v1.
    for (const char* mount : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
      if (setup.version == 0 && IsFsType(mount, CGROUP2_SUPER_MAGIC)) {
        if (auto e = DetectV2(mount, false, &setup); !e.empty()) problems.push_back(e);
      }
    }
    if (setup.version == 0 && !IsFsType("/sys/fs/cgroup", CGROUP2_SUPER_MAGIC)) {
      if (auto e = DetectV1("/sys/fs/cgroup", &setup); !e.empty()) problems.push_back(e);
    }
  }
  if (setup.version == 0) {
    for (auto& p : problems) setup.unavailable += (setup.unavailable.empty() ? "" : "; ") + p;
    if (setup.unavailable.empty()) setup.unavailable = "no cgroup hierarchy found";
  } else {
    for (auto& p : setup.parents) SweepStale(p.path);
  }
  return setup;
}

void CgroupJanitor::RemoveNow(const std::string& dir) {
  auto deadline = Clock::now() + kGoneDeadline;
  while (::rmdir(dir.c_str()) != 0 && errno == EBUSY && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  if (Exists(dir))
    log::Warn(kComponent, "could not remove cgroup " + dir + ": " + ErrnoText(errno));
}

std::vector<std::string> CgroupSlot::procs_paths() const {
  std::vector<std::string> paths;
  for (const auto& d : dirs) paths.push_back(d.path + "/cgroup.procs");
  return paths;
}

CgroupPool::CgroupPool(int version) : version_(version) {
  if (version_ == 1) standby_thread_ = std::thread([this] { StandbyLoop(); });
}

CgroupPool::~CgroupPool() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (standby_thread_.joinable()) standby_thread_.join();  // it ended the idle standbys
  std::vector<std::string> paths;
  for (auto& slot : idle_) {
    slot->standby.reset();  // (none left; a v2 pool has none)
    for (auto& d : slot->dirs) paths.push_back(d.path);
  }
  idle_.clear();  // closes the descriptors first
  for (const auto& p : paths) CgroupJanitor::RemoveNow(p);
}

std::unique_ptr<CgroupSlot> CgroupPool::Take() {
  MutexLock lock(mu_);
  if (idle_.empty()) return nullptr;
  auto it = std::find_if(idle_.rbegin(), idle_.rend(),
                         [](const auto& s) { return s->standby != nullptr; });
  auto pick = it == idle_.rend() ? std::prev(idle_.end()) : std::prev(it.base());
  auto slot = std::move(*pick);
  idle_.erase(pick);
  slot->reused = true;
  return slot;
}

bool CgroupPool::Give(std::unique_ptr<CgroupSlot>& slot) {
  if (version_ != 1) return false;
  for (const auto& d : slot->dirs) {
    if (!d.memory) continue;
    auto usage = ReadU64File(d.path + "/memory.usage_in_bytes", &slot->files);
    if (!usage || *usage > kMaxLeftoverBytes) return false;
  }
  {
    MutexLock lock(mu_);
    if (idle_.size() >= kMaxIdle) return false;
    slot->procs_fds.clear();  // an idle slot holds its control files only
    idle_.push_back(std::move(slot));
  }
  cv_.notify_all();  // the standby thread gives it a child
  return true;
}

// Clones a standby into idle slots that have none (see "Standby children" in process_child.cc).
// The only thread that clones standbys: they share its TLS. It blocks every signal, so they start
// with every signal blocked (ChildExec clears the mask before execve).
void CgroupPool::StandbyLoop() {
  ::pthread_setname_np(::pthread_self(), "cortex-standby");
  sigset_t all;
  sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
  MutexLock lock(mu_);
  for (;;) {
    auto wanted = [&]() CORTEX_REQUIRES(mu_) {
      size_t have = static_cast<size_t>(std::count_if(
          idle_.begin(), idle_.end(), [](const auto& s) { return s->standby != nullptr; }));
      if (have >= kMaxStandbys || standby_error_) return idle_.end();
      return std::find_if(idle_.begin(), idle_.end(),
                          [](const auto& s) { return s->standby == nullptr; });
    };
    cv_.wait(lock.native(),
             [&]() CORTEX_REQUIRES(mu_) { return stopping_ || wanted() != idle_.end(); });
    if (stopping_) {
      // Ended (told to exit and reaped) while this thread, whose TLS they share, still lives:
      // a standby's failed system call writes this thread's errno.
      for (auto& slot : idle_) slot->standby.reset();
      return;
    }
    auto it = wanted();
    auto slot = std::move(*it);
    idle_.erase(it);
    lock.Unlock();
    std::string why;
    slot->standby = Standby::Start(slot->procs_paths(), &why);
    lock.Lock();
    if (!slot->standby) {
      standby_error_ = true;  // runs clone their child and join the cgroup themselves
      log::Warn(kComponent, "cannot keep a child ready in an idle cgroup (" + why +
                                "): each run joins its cgroup itself");
    }
    idle_.push_back(std::move(slot));
  }
}

std::unique_ptr<RunCgroup> RunCgroup::Create(const CgroupSetup& setup, const Limits& limits,
                                             CgroupPool* pool, std::string* why) {
  auto cg = std::unique_ptr<RunCgroup>(new RunCgroup(setup.version, pool));
  std::unique_ptr<CgroupSlot> slot = pool ? pool->Take() : nullptr;
  if (slot) {
    // The descriptors to join by are only needed when no standby is there to take the run.
    bool opened = slot->standby != nullptr || cg->OpenProcs(*slot);
    if (opened && cg->Configure(*slot, limits, why)) {
      cg->slot_ = std::move(slot);
      return cg;
    }
    // Could not be reset (e.g. the new memory limit is below what it still holds): a new one.
    cg->Discard(*slot);
    slot.reset();
  }
  slot = std::make_unique<CgroupSlot>();
  std::string name = NextRunName();
  for (const auto& parent : setup.parents) {
    std::string dir = parent.path + "/" + name;
    if (::mkdir(dir.c_str(), 0755) != 0) {
      *why = "mkdir " + dir + ": " + ErrnoText(errno);
      cg->Discard(*slot);
      return nullptr;
    }
    CgroupParent d = parent;
    d.path = dir;
    slot->dirs.push_back(std::move(d));
    int fd = ::open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      *why = "opening " + dir + "/cgroup.procs: " + ErrnoText(errno);
      cg->Discard(*slot);
      return nullptr;
    }
    slot->procs_fds.emplace_back(fd);
  }
  if (!cg->Configure(*slot, limits, why)) {
    cg->Discard(*slot);
    return nullptr;
  }
  cg->slot_ = std::move(slot);
  return cg;
}

RunCgroup::~RunCgroup() {
  if (!slot_) return;
  slot_->standby.reset();  // an untaken standby exits on its own
  auto deadline = Clock::now() + kGoneDeadline;
  bool empty = false;
  while (!(empty = KillAll()) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  if (empty && pool_ && pool_->Give(slot_)) return;
  Discard(*slot_);
}

std::vector<int> RunCgroup::procs_fds() {
  if (slot_->procs_fds.empty()) OpenProcs(*slot_);
  std::vector<int> fds;
  for (const auto& fd : slot_->procs_fds) fds.push_back(fd.get());
  return fds;
}

bool RunCgroup::enforces_memory() const {
  return std::any_of(dirs().begin(), dirs().end(), [](auto& d) { return d.memory; });
}

bool RunCgroup::enforces_pids() const {
  return std::any_of(dirs().begin(), dirs().end(), [](auto& d) { return d.pids; });
}

bool RunCgroup::enforces_cpu_quota() const {
  return std::any_of(dirs().begin(), dirs().end(), [](auto& d) { return d.cpu_quota; });
}

bool RunCgroup::KillAll(std::vector<Fd>* killed) const {
  if (dirs().empty()) return true;
  const std::string procs = dirs().front().path + "/cgroup.procs";
  ControlFiles* files = &slot_->files;
  // cgroup.procs is opened afresh each time: a v1 pidlist kept open can be read stale.
  auto first = ReadFile(procs, 1 << 20);
  if (!first) return true;  // directory gone
  std::vector<pid_t> pids = ParsePids(*first);
  if (pids.empty()) return true;
  if (version_ == 2 && WriteFile(dirs().front().path + "/cgroup.kill", "1", nullptr, files)) {
    return false;
  }
  // No cgroup.kill (v1): signal pid by pid without ever hitting a recycled pid. A pidfd pins
  // the process that held the pid when it was opened; if the pid is still listed afterwards,
  // the holder is in this cgroup, and if it is not that process any more the signal fails.
  std::vector<Fd> pidfds;
  for (pid_t pid : pids) pidfds.emplace_back(PidfdOpen(pid));
  auto second = ReadFile(procs, 1 << 20);
  std::vector<pid_t> still = second ? ParsePids(*second) : std::vector<pid_t>{};
  for (size_t i = 0; i < pids.size(); ++i) {
    if (std::find(still.begin(), still.end(), pids[i]) == still.end()) continue;
    if (pidfds[i].valid()) {
      PidfdSendSignal(pidfds[i].get(), SIGKILL);
      if (killed) killed->push_back(std::move(pidfds[i]));
    } else if (errno == ENOSYS) {
      ::kill(pids[i], SIGKILL);  // old kernel: the tiny reuse window is accepted
    }
  }
  return false;
}

RunCgroup::Stats RunCgroup::ReadStats() const {
  Stats s;
  ControlFiles* files = &slot_->files;
  for (const auto& d : dirs()) {
    if (d.memory) {
      if (version_ == 2) {
        s.oom_kills = ReadKeyedU64(d.path + "/memory.events", "oom_kill", files).value_or(0);
        s.peak = ReadU64File(d.path + "/memory.peak", files);
      } else {
        auto kills = ReadKeyedU64(d.path + "/memory.oom_control", "oom_kill", files);
        // Kernels before 4.13 have no oom_kill counter: hitting the limit is the best signal
        // (failcnt is reset for a reused cgroup; the oom_kill counter cannot be: baselined).
        s.oom_kills = kills ? *kills - std::min(*kills, slot_->oom_base)
                            : ReadU64File(d.path + "/memory.failcnt", files).value_or(0);
        s.peak = ReadU64File(d.path + "/memory.max_usage_in_bytes", files);
      }
    }
    if (d.pids) {
      uint64_t n = ReadKeyedU64(d.path + "/pids.events", "max", files).value_or(0);
      s.fork_failures = n - std::min(n, slot_->fork_failure_base);
    }
    if (d.cpu) {
      if (version_ == 2) {
        s.cpu_user_usec = ReadKeyedU64(d.path + "/cpu.stat", "user_usec", files);
        s.cpu_system_usec = ReadKeyedU64(d.path + "/cpu.stat", "system_usec", files);
      } else {
        auto user_ns = ReadU64File(d.path + "/cpuacct.usage_user", files);
        auto sys_ns = ReadU64File(d.path + "/cpuacct.usage_sys", files);
        if (user_ns) s.cpu_user_usec = *user_ns / 1000;
        if (sys_ns) s.cpu_system_usec = *sys_ns / 1000;
      }
    }
  }
  return s;
}

bool RunCgroup::OpenProcs(CgroupSlot& slot) const {
  bool opened = true;
  slot.procs_fds.clear();
  for (const auto& d : slot.dirs) {
    int fd = ::open((d.path + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) opened = false;
    slot.procs_fds.emplace_back(fd);
  }
  return opened;
}

bool RunCgroup::Configure(CgroupSlot& slot, const Limits& limits, std::string* why) {
  ControlFiles* files = &slot.files;
  for (const auto& d : slot.dirs) {
    const std::string& dir = d.path;
    int err = 0;
    if (d.memory) {
      std::string bytes = limits.memory_bytes ? std::to_string(*limits.memory_bytes) : "";
      if (bytes != slot.memory_limit) {
        if (version_ == 2) {
          if (!WriteFile(dir + "/memory.max", bytes.empty() ? "max" : bytes, &err, files)) {
            *why = "writing memory.max: " + ErrnoText(err);
            return false;
          }
          WriteFile(dir + "/memory.swap.max", "0", nullptr, files);  // no swap beyond the limit
          WriteFile(dir + "/memory.oom.group", "1", nullptr,
                    files);  // an OOM kill takes the whole tree
        } else {
          std::string v = bytes.empty() ? "-1" : bytes;
          // memsw (swap accounting) must stay >= the memory limit: raise it first when
          // raising, lower it after when lowering; it is absent without swap accounting.
          WriteFile(dir + "/memory.memsw.limit_in_bytes", "-1", nullptr, files);
          if (!WriteFile(dir + "/memory.limit_in_bytes", v, &err, files)) {
            *why = "writing memory.limit_in_bytes: " + ErrnoText(err);
            return false;
          }
          WriteFile(dir + "/memory.memsw.limit_in_bytes", v, nullptr, files);
        }
        slot.memory_limit = bytes;
      }
      if (slot.reused && version_ == 1) {
        WriteFile(dir + "/memory.max_usage_in_bytes", "0", nullptr,
                  files);  // the peak starts over
        WriteFile(dir + "/memory.failcnt", "0", nullptr, files);
        slot.oom_base = ReadKeyedU64(dir + "/memory.oom_control", "oom_kill", files).value_or(0);
      }
    }
    if (d.pids) {
      std::string n = limits.max_processes ? std::to_string(*limits.max_processes) : "";
      if (n != slot.pids_limit) {
        if (!WriteFile(dir + "/pids.max", n.empty() ? "max" : n, &err, files)) {
          *why = "writing pids.max: " + ErrnoText(err);
          return false;
        }
        slot.pids_limit = n;
      }
      if (slot.reused) {
        slot.fork_failure_base = ReadKeyedU64(dir + "/pids.events", "max", files).value_or(0);
      }
    }
    if (d.cpu && slot.reused && version_ == 1)
      WriteFile(dir + "/cpuacct.usage", "0", nullptr, files);
    if (d.cpu_quota) {
      // Quota per 100 ms period; -1: unlimited.
      std::string quota =
          limits.cpu_cores
              ? std::to_string(std::max<int64_t>(1000, std::llround(*limits.cpu_cores * 1e5)))
              : "-1";
      if (quota != slot.cpu_quota) {
        if (slot.cpu_quota == "unset")
          WriteFile(dir + "/cpu.cfs_period_us", "100000", nullptr, files);
        if (!WriteFile(dir + "/cpu.cfs_quota_us", quota, &err, files)) {
          *why = "writing cpu.cfs_quota_us: " + ErrnoText(err);
          return false;
        }
        slot.cpu_quota = quota;
      }
    }
  }
  return true;
}

void RunCgroup::Discard(CgroupSlot& slot) {
  slot.standby.reset();
  slot.procs_fds.clear();
  slot.files.Clear();
  std::vector<std::string> paths;
  for (const auto& d : slot.dirs) paths.push_back(d.path);
  slot.dirs.clear();
  if (pool_ && pool_->janitor().Remove(paths)) return;
  for (const auto& p : paths) CgroupJanitor::RemoveNow(p);
}

}  // namespace cortex::exec::internal
