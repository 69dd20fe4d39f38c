// The real ProcessRunner against real processes: /bin/sh, /bin/sleep, python3 and small scripts
// in a temp dir. Nothing here sleeps to synchronize: waits are on conditions (output lines, the
// runner returning) with deadlines.
#include "exec/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace cortex::exec {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
namespace fs = std::filesystem;

const std::vector<std::string> kEnv = {"PATH=/usr/bin:/bin", "LC_ALL=C"};

ProcessSpec Sh(const std::string& script) {
  ProcessSpec spec;
  spec.argv = {"/bin/sh", "-c", script};
  spec.env = kEnv;
  return spec;
}

bool GroupGone(pid_t pgid) { return ::kill(-pgid, 0) == -1 && errno == ESRCH; }
bool ProcessGone(pid_t pid) { return ::kill(pid, 0) == -1 && errno == ESRCH; }

int CountOpenFds() {
  int n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Child processes of this test process, from /proc (nothing is reaped by looking).
struct ChildProc {
  pid_t pid = 0;
  char state = '?';
  std::string comm;
};
std::vector<ChildProc> Children() {
  std::vector<ChildProc> out;
  for (auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    // Plain read(2): the process may be gone by now (ESRCH), which is no error here.
    int fd = ::open((e.path() / "stat").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    char buf[1024];
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) continue;
    std::string stat(buf, static_cast<size_t>(n));
    size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2) continue;
    if (ppid != ::getpid()) continue;
    out.push_back({std::stoi(name), state, stat.substr(open + 1, close - open - 1)});
  }
  return out;
}

// No exited child left unreaped (a runner may keep standby children waiting in idle cgroups).
bool NoZombieChildren() {
  auto children = Children();
  return std::none_of(children.begin(), children.end(), [](auto& c) { return c.state == 'Z'; });
}

// The runner's standby children (see process.cc, "Standby children").
std::vector<pid_t> Standbys() {
  std::vector<pid_t> pids;
  for (auto& c : Children()) {
    if (c.comm == "cortex-standby" && c.state != 'Z') pids.push_back(c.pid);
  }
  return pids;
}

std::string Python() {
  const char* path = std::getenv("PATH");
  auto r = ResolveProgram("python3", path ? path : "/usr/bin:/bin");
  return r.ok() ? *r : "/usr/bin/python3";
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "process_test.XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& text, fs::perms perms) const {
    std::string file = path_ + "/" + name;
    fs::create_directories(fs::path(file).parent_path());
    std::ofstream(file) << text;
    fs::permissions(file, perms);
    return file;
  }

 private:
  std::string path_;
};

constexpr fs::perms kExec = fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read;
constexpr fs::perms kNoExec = fs::perms::owner_read | fs::perms::owner_write;

class ProcessTest : public ::testing::Test {
 protected:
  Result<ProcessResult> Run(const ProcessSpec& spec,
                            const std::function<void(const OutputLine&)>& on_line = nullptr,
                            const CancelToken* cancel = nullptr) {
    return runner_->Run(spec, on_line, cancel);
  }
  std::unique_ptr<ProcessRunner> runner_ = MakeProcessRunner();
};

TEST_F(ProcessTest, ExitCodeAndOutput) {
  auto r = Run(Sh("echo out; echo err >&2; exit 3"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kExited);
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->signal, 0);
  EXPECT_EQ(r->stdout_data, "out\n");
  EXPECT_EQ(r->stderr_data, "err\n");
  EXPECT_EQ(r->stdout_bytes, 4u);
  EXPECT_FALSE(r->stdout_truncated);
  EXPECT_EQ(r->reason_text, "exited with code 3");
  EXPECT_GT(r->pid, 0);
  EXPECT_GT(r->wall.count(), 0);
  EXPECT_TRUE(r->limits_note.empty()) << r->limits_note;
  EXPECT_TRUE(GroupGone(r->pid));
}

TEST_F(ProcessTest, StdinIsDeliveredThenClosed) {
  ProcessSpec spec;
  spec.argv = {"/bin/cat"};
  spec.stdin_data = "hello\nworld";
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->stdout_data, "hello\nworld");

  // Larger than a pipe buffer both ways: writing and reading must interleave.
  spec.stdin_data.assign(3 << 20, 'x');
  spec.limits.max_output_bytes = 4 << 20;
  r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stdout_data.size(), spec.stdin_data.size());
  EXPECT_EQ(r->stdout_data, spec.stdin_data);
}

TEST_F(ProcessTest, StdinNotReadIsNotAnError) {
  // The child exits without reading: our writes get EPIPE, and SIGPIPE must not kill us.
  ProcessSpec spec = Sh("exit 0");
  spec.stdin_data.assign(8 << 20, 'y');
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kExited);
  EXPECT_EQ(r->exit_code, 0);
  sigset_t pending;
  sigpending(&pending);
  EXPECT_FALSE(sigismember(&pending, SIGPIPE));
  sigset_t mask;
  pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  EXPECT_FALSE(sigismember(&mask, SIGPIPE)) << "the thread's signal mask was not restored";
}

TEST_F(ProcessTest, EnvironmentIsExactlyTheSpec) {
  ::setenv("CORTEX_TEST_SECRET", "leaked", 1);
  ProcessSpec spec;
  spec.argv = {"/usr/bin/env"};
  spec.env = {"A=1", "B=two words"};
  auto r = Run(spec);
  ::unsetenv("CORTEX_TEST_SECRET");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stdout_data, "A=1\nB=two words\n");

  spec.env.clear();
  r = Run(spec);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stdout_data, "");
}

TEST_F(ProcessTest, WorkingDirectory) {
  TempDir dir;
  ProcessSpec spec;
  spec.argv = {"/bin/pwd"};
  spec.cwd = dir.path();
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stdout_data, fs::canonical(dir.path()).string() + "\n");

  spec.cwd = dir.path() + "/missing";
  r = Run(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("missing"), std::string::npos);
}

TEST_F(ProcessTest, OnLineIsCalledPerLineAndSplitsLongLines) {
  ProcessSpec spec =
      Sh("printf 'a\\nb\\n'; printf 'e1\\n' >&2; printf 'c'; "
         "head -c 150000 /dev/zero | tr '\\0' z; printf '\\nlast'");
  std::vector<OutputLine> lines;
  auto r = Run(spec, [&](const OutputLine& l) { lines.push_back(l); });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::vector<std::string> out;
  std::vector<std::string> err;
  for (auto& l : lines) (l.is_stderr ? err : out).push_back(l.text);
  ASSERT_EQ(out.size(), 6u);
  EXPECT_EQ(out[0], "a");
  EXPECT_EQ(out[1], "b");
  EXPECT_EQ(out[2].size(), 64u * 1024);  // "c" + 65535 z
  EXPECT_EQ(out[2][0], 'c');
  EXPECT_EQ(out[3].size(), 64u * 1024);
  EXPECT_EQ(out[4].size(), 150001u - 2 * 64 * 1024);
  EXPECT_EQ(out[5], "last");  // the unterminated last line is delivered at EOF
  EXPECT_EQ(err, std::vector<std::string>{"e1"});
}

TEST_F(ProcessTest, TimeoutKillsTheWholeGroup) {
  ProcessSpec spec = Sh("echo $$; /bin/sleep 100 & echo $!; /bin/sleep 100");
  spec.limits.timeout = milliseconds(300);
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kTimeout);
  EXPECT_EQ(r->reason_text, "timed out after 300 ms");
  EXPECT_EQ(r->signal, SIGTERM);
  EXPECT_LT(r->wall, seconds(5));
  int shell = 0, background = 0;
  ASSERT_EQ(std::sscanf(r->stdout_data.c_str(), "%d %d", &shell, &background), 2) << r->stdout_data;
  EXPECT_EQ(shell, r->pid);  // the child leads its own group
  EXPECT_TRUE(GroupGone(r->pid));
  EXPECT_TRUE(ProcessGone(background));
  EXPECT_TRUE(NoZombieChildren());
}

TEST_F(ProcessTest, SigtermIgnoringProcessIsKilledAfterTheGrace) {
  ProcessSpec spec = Sh("trap '' TERM; echo ready; while :; do /bin/sleep 0.05; done");
  spec.limits.timeout = milliseconds(200);
  spec.limits.kill_grace = milliseconds(300);
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stdout_data, "ready\n");
  EXPECT_EQ(r->reason, EndReason::kTimeout);
  EXPECT_EQ(r->signal, SIGKILL);
  EXPECT_NE(r->reason_text.find("SIGKILL after the 300 ms grace"), std::string::npos)
      << r->reason_text;
  EXPECT_GE(r->wall, milliseconds(500));
  EXPECT_LT(r->wall, seconds(5));
  EXPECT_TRUE(GroupGone(r->pid));
}

TEST_F(ProcessTest, CancelFromAnotherThread) {
  CancelToken token;
  std::mutex mu;
  std::condition_variable cv;
  bool started = false;
  std::thread canceller([&] {
    std::unique_lock lock(mu);
    if (cv.wait_for(lock, seconds(10), [&] { return started; })) token.Cancel();
  });
  ProcessSpec spec = Sh("echo started; /bin/sleep 100 & /bin/sleep 100");
  auto r = Run(
      spec,
      [&](const OutputLine& line) {
        if (line.text != "started") return;
        std::lock_guard lock(mu);
        started = true;
        cv.notify_all();
      },
      &token);
  canceller.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kCancelled);
  EXPECT_EQ(r->reason_text, "cancelled");
  EXPECT_LT(r->wall, seconds(5));
  EXPECT_TRUE(GroupGone(r->pid));
}

TEST_F(ProcessTest, OutputFloodIsTruncatedAndKilled) {
  ProcessSpec spec;
  spec.argv = {"/usr/bin/yes"};
  spec.limits.max_output_bytes = 64 * 1024;
  spec.limits.timeout = seconds(20);
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kOutputLimit);
  EXPECT_EQ(r->reason_text, "stdout exceeded the output limit of 65536 bytes");
  EXPECT_TRUE(r->stdout_truncated);
  EXPECT_EQ(r->stdout_data.size(), 64u * 1024);
  EXPECT_GT(r->stdout_bytes, 64u * 1024);
  EXPECT_TRUE(GroupGone(r->pid));
}

TEST_F(ProcessTest, OutputLimitWithoutKillCountsTheRest) {
  ProcessSpec spec = Sh("head -c 200000 /dev/zero >&2");
  spec.limits.max_output_bytes = 1000;
  spec.limits.kill_on_output_limit = false;
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kExited);
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_TRUE(r->stderr_truncated);
  EXPECT_FALSE(r->stdout_truncated);
  EXPECT_EQ(r->stderr_data.size(), 1000u);
  EXPECT_EQ(r->stderr_bytes, 200000u);
}

TEST_F(ProcessTest, MemoryHogHitsTheMemoryLimit) {
  ProcessSpec spec;
  spec.argv = {Python(), "-c", "b = b'x' * (1 << 30); print(len(b))"};
  spec.limits.memory_bytes = 64ull << 20;
  spec.limits.timeout = seconds(30);
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kMemoryLimit) << r->reason_text << "\n" << r->stderr_data;
  EXPECT_NE(r->reason_text.find("memory limit of 64 MiB"), std::string::npos) << r->reason_text;
  std::printf("[ memory ] used_cgroup=%d peak=%llu bytes: %s\n", r->used_cgroup,
              static_cast<unsigned long long>(r->peak_memory_bytes), r->reason_text.c_str());
  if (r->used_cgroup) {
    EXPECT_EQ(r->signal, SIGKILL);
    EXPECT_LE(r->peak_memory_bytes, 64ull << 20);
    EXPECT_GT(r->peak_memory_bytes, 1ull << 20);
  }
  EXPECT_TRUE(GroupGone(r->pid));
}

// The runner reuses per-run cgroups (v1): a run must not inherit the previous run's peak
// memory, OOM kill, refused forks, CPU time or limits.
TEST_F(ProcessTest, AReusedCgroupStartsClean) {
  ProcessSpec hog;
  hog.argv = {Python(), "-c", "b = b'x' * (1 << 30)"};
  hog.limits.memory_bytes = 64ull << 20;
  hog.limits.timeout = seconds(30);
  auto first = Run(hog);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  if (!first->used_cgroup) GTEST_SKIP() << "no cgroups here: " << first->limits_note;
  ASSERT_EQ(first->reason, EndReason::kMemoryLimit) << first->reason_text;

  ProcessSpec bomb = Sh("for i in 1 2 3 4 5 6 7 8; do /bin/sleep 1 & done; wait");
  bomb.limits.max_processes = 4;
  bomb.limits.memory_bytes = 128ull << 20;
  auto second = Run(bomb);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->reason, EndReason::kProcessLimit) << second->reason_text;

  // Plain runs after them, with a larger and with no memory limit: nothing carried over.
  for (std::optional<uint64_t> limit :
       {std::optional<uint64_t>(512ull << 20), std::optional<uint64_t>()}) {
    ProcessSpec plain;
    plain.argv = {Python(), "-c", "b = b'x' * (100 << 20); print(len(b))"};
    plain.limits.memory_bytes = limit;
    plain.limits.max_processes = 8;
    plain.limits.timeout = seconds(30);
    auto r = Run(plain);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->reason, EndReason::kExited) << r->reason_text;
    EXPECT_EQ(r->exit_code, 0) << r->stderr_data;
    EXPECT_EQ(r->stdout_data, "104857600\n");
    if (!r->used_cgroup) continue;
    EXPECT_GT(r->peak_memory_bytes, 100ull << 20);
    EXPECT_LT(r->peak_memory_bytes, 200ull << 20);
  }
  ProcessSpec small;
  small.argv = {"/bin/true"};
  small.limits.memory_bytes = 64ull << 20;
  auto r = Run(small);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->reason, EndReason::kExited) << r->reason_text;
  if (r->used_cgroup) {
    EXPECT_LT(r->peak_memory_bytes, 32ull << 20) << "the 100 MB run's peak";
  }
  EXPECT_LT(r->cpu_user + r->cpu_system, milliseconds(200)) << "an earlier run's CPU time";
}

// The descriptors a process holds beyond 0-2, as "N -> target".
std::vector<std::string> FdsAboveStdio(pid_t pid) {
  std::vector<std::string> fds;
  std::error_code ec;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  for (auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (std::stoi(name) <= 2) continue;
    fds.push_back(name + " -> " + fs::read_symlink(e.path(), ec).string());
  }
  return fds;
}

// A standby that has settled: it dropped every inherited descriptor but its one socket (it does
// that right after it is cloned, asynchronously).
bool Settled(pid_t pid) {
  auto fds = FdsAboveStdio(pid);
  return fds.size() == 1 && fds[0].find("socket:") != std::string::npos;
}

// Waits (bounded) until the runner has a settled standby child; 0 when none came.
pid_t WaitForStandby() {
  auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    for (pid_t pid : Standbys()) {
      if (Settled(pid)) return pid;
    }
    std::this_thread::sleep_for(milliseconds(2));
  }
  return 0;
}

TEST_F(ProcessTest, AStandbyInTheIdleCgroupTakesTheNextRun) {
  ProcessSpec spec = Sh("echo $$");
  spec.limits.memory_bytes = 64ull << 20;
  spec.limits.max_processes = 8;
  int stray[2];  // a descriptor of the server's without close-on-exec: no standby may hold it
  ASSERT_EQ(::pipe(stray), 0);
  auto first = Run(spec);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  if (!first->used_cgroup) GTEST_SKIP() << "no cgroups here: " << first->limits_note;
  pid_t standby = WaitForStandby();
  if (standby == 0) GTEST_SKIP() << "no standby (cgroup v2 slots are not reused)";
  // It waits inside the slot's cgroups, holding nothing of ours but stdio and its one socket
  // (WaitForStandby waited for that): not `stray`, nor anything else of this process.
  auto held = FdsAboveStdio(standby);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_NE(held[0].find("socket:"), std::string::npos) << held[0];
  std::ifstream cg("/proc/" + std::to_string(standby) + "/cgroup");
  std::string cgroups((std::istreambuf_iterator<char>(cg)), std::istreambuf_iterator<char>());
  EXPECT_NE(cgroups.find("/cortex/"), std::string::npos) << cgroups;
  ::close(stray[0]);
  ::close(stray[1]);

  auto second = Run(spec);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->pid, standby);  // the standby became the run's process
  EXPECT_EQ(second->stdout_data, std::to_string(standby) + "\n");
  EXPECT_EQ(second->reason, EndReason::kExited);
  EXPECT_TRUE(second->used_cgroup);
  EXPECT_TRUE(second->limits_note.empty()) << second->limits_note;

  // A start failure on a standby is reported like any other, and the runner carries on.
  ASSERT_NE(WaitForStandby(), 0);
  ProcessSpec missing = spec;
  missing.argv = {"/nonexistent/tool"};
  auto bad = Run(missing);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kNotFound) << bad.status().ToString();
  ProcessSpec in_dir = spec;
  in_dir.cwd = "/nonexistent-dir";
  bad = Run(in_dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("working directory"), std::string::npos);
  auto third = Run(spec);
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_EQ(third->stdout_data, std::to_string(third->pid) + "\n");
  EXPECT_TRUE(NoZombieChildren());
}

TEST_F(ProcessTest, AStartGateHoldsTheChildUntilOnSpawnedHasReturned) {
  TempDir dir;
  // Without limits (a fresh clone), then with a cgroup (a fresh clone, then the slot's standby).
  for (int i = 0; i < 4; ++i) {
    std::string flag = dir.path() + "/recorded-" + std::to_string(i);
    ProcessSpec spec = Sh("head -c1 <&3 >/dev/null; cat " + flag + "; exec 3<&-; echo done");
    if (i > 0) spec.limits.memory_bytes = 64ull << 20;
    spec.start_gate = true;
    int calls = 0;
    spec.on_spawned = [&](int) {
      ++calls;
      std::this_thread::sleep_for(milliseconds(30));  // the child would be done by now
      std::ofstream(flag) << "recorded\n";
      return Status::Ok();
    };
    if (i == 3) WaitForStandby();
    auto r = Run(spec);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(r->stdout_data, "recorded\ndone\n") << r->stderr_data;
    EXPECT_EQ(r->exit_code, 0);
  }
  // A failing callback: the child is killed before it got past the gate, Run returns the error.
  for (int i = 0; i < 2; ++i) {
    ProcessSpec spec = Sh("head -c1 <&3 >/dev/null; echo ran; /bin/sleep 100");
    if (i > 0) spec.limits.memory_bytes = 64ull << 20;
    spec.start_gate = true;
    spec.on_spawned = [&](int) { return UnavailableError("the store is down"); };
    auto r = Run(spec);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
    EXPECT_EQ(r.status().message(), "the store is down");
  }
  EXPECT_TRUE(NoZombieChildren());
  // on_spawned without a gate is called too (after the spawn); the child gets no descriptor 3.
  ProcessSpec plain = Sh("if [ -e /proc/self/fd/3 ]; then echo fd3; else echo none; fi");
  int calls = 0;
  plain.on_spawned = [&](int) {
    ++calls;
    return Status::Ok();
  };
  auto r = Run(plain);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(r->stdout_data, "none\n");
}

TEST_F(ProcessTest, ReapInBackgroundReturnsAtExitAndStillLeavesNothing) {
  auto gone_within = [](auto condition) {
    auto deadline = std::chrono::steady_clock::now() + seconds(5);
    while (!condition() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(1));
    }
    return condition();
  };
  for (int i = 0; i < 4; ++i) {
    // A leftover in the group, and one that left it for a session of its own (cgroup only).
    ProcessSpec spec = Sh("/bin/sleep 100 & echo $!; /usr/bin/setsid /bin/sleep 100 & echo $!");
    if (i % 2) spec.limits.memory_bytes = 64ull << 20;
    spec.reap_in_background = true;
    auto r = Run(spec);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->exit_code, 0);
    int in_group = 0, escaped = 0;
    ASSERT_EQ(std::sscanf(r->stdout_data.c_str(), "%d %d", &in_group, &escaped), 2);
    EXPECT_TRUE(gone_within([&] { return ProcessGone(in_group) && GroupGone(r->pid); }));
    if (r->used_cgroup) {
      EXPECT_TRUE(gone_within([&] { return ProcessGone(escaped); }));
    } else {
      ::kill(escaped, SIGKILL);  // rlimits only: nothing tracks it; reparented to us
      ::waitpid(escaped, nullptr, 0);
    }
  }
  EXPECT_TRUE(gone_within([] { return NoZombieChildren(); }));
  runner_.reset();  // waits for whatever its reaper still had
  EXPECT_TRUE(NoZombieChildren());
}

TEST_F(ProcessTest, AKilledStandbyIsReplacedByAFreshChild) {
  ProcessSpec spec = Sh("echo $$");
  spec.limits.memory_bytes = 64ull << 20;
  auto first = Run(spec);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  if (!first->used_cgroup) GTEST_SKIP() << "no cgroups here: " << first->limits_note;
  pid_t standby = WaitForStandby();
  if (standby == 0) GTEST_SKIP() << "no standby (cgroup v2 slots are not reused)";
  ASSERT_EQ(::kill(standby, SIGKILL), 0);
  auto deadline = std::chrono::steady_clock::now() + seconds(5);
  while (!ProcessGone(standby) && std::chrono::steady_clock::now() < deadline) {
    auto children = Children();
    bool zombie = std::any_of(children.begin(), children.end(),
                              [&](auto& c) { return c.pid == standby && c.state == 'Z'; });
    if (zombie) break;
    std::this_thread::sleep_for(milliseconds(1));
  }
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kExited) << r->reason_text;
  EXPECT_NE(r->pid, standby);
  EXPECT_EQ(r->stdout_data, std::to_string(r->pid) + "\n");
  EXPECT_TRUE(r->used_cgroup);
  EXPECT_TRUE(ProcessGone(standby));  // reaped
}

TEST_F(ProcessTest, WithoutCgroupsMemoryFallsBackToRlimitAs) {
  auto runner = MakeProcessRunner({.cgroup_root = "", .use_cgroups = false});
  ProcessSpec spec;
  spec.argv = {Python(), "-c", "b = b'x' * (1 << 30)"};
  spec.limits.memory_bytes = 256ull << 20;
  spec.limits.max_processes = 10;
  spec.limits.timeout = seconds(30);
  auto r = runner->Run(spec, nullptr, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->used_cgroup);
  EXPECT_EQ(r->reason, EndReason::kMemoryLimit) << r->reason_text << "\n" << r->stderr_data;
  EXPECT_NE(r->reason_text.find("RLIMIT_AS"), std::string::npos) << r->reason_text;
  EXPECT_NE(r->limits_note.find("cgroups unavailable (disabled by configuration)"),
            std::string::npos)
      << r->limits_note;
  EXPECT_NE(r->limits_note.find("max_processes not enforced"), std::string::npos);
}

TEST_F(ProcessTest, CpuSpinHitsTheCpuLimit) {
  ProcessSpec spec = Sh("while :; do :; done");
  spec.limits.cpu_time = seconds(1);
  spec.limits.timeout = seconds(30);
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kCpuLimit) << r->reason_text;
  EXPECT_EQ(r->signal, SIGXCPU);
  EXPECT_EQ(r->reason_text, "CPU time limit of 1 s exceeded (killed by SIGXCPU)");
  // Recorded, roughly: rusage splits the precise total by sampled ticks, and on a loaded
  // machine the two drift apart.
  EXPECT_GE(r->cpu_user + r->cpu_system, milliseconds(500));
  EXPECT_TRUE(GroupGone(r->pid));
}

TEST_F(ProcessTest, CpuCoresThrottleTheProcess) {
  // One second of wall clock spinning: with 0.2 cores it gets about 0.2 s of CPU.
  ProcessSpec spec;
  spec.argv = {Python(), "-c",
               "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1: pass\n"
               "print('done')"};
  spec.limits.cpu_cores = 0.2;
  spec.limits.timeout = seconds(30);
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0) << r->stderr_data;
  EXPECT_EQ(r->stdout_data, "done\n");
  if (!r->limits_note.empty()) GTEST_SKIP() << "no cgroup cpu controller: " << r->limits_note;
  EXPECT_TRUE(r->used_cgroup);
  EXPECT_LT(r->cpu_user + r->cpu_system, milliseconds(600)) << "not throttled";
  EXPECT_GE(r->wall, milliseconds(1000));
  // The same (reused) cgroup without a quota afterwards: not throttled any more. Twice the
  // throttled CPU time is a wide margin on a loaded machine.
  auto throttled = r->cpu_user + r->cpu_system;
  spec.limits.cpu_cores.reset();
  spec.limits.memory_bytes = 256ull << 20;  // still in a cgroup
  auto free = Run(spec);
  ASSERT_TRUE(free.ok());
  EXPECT_GT(free->cpu_user + free->cpu_system, 2 * throttled) << "still throttled";
}

TEST_F(ProcessTest, CpuLimitIgnoringSigxcpuIsKilledAtTheHardLimit) {
  ProcessSpec spec = Sh("trap '' XCPU; while :; do :; done");
  spec.limits.cpu_time = seconds(1);
  spec.limits.timeout = seconds(30);
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kCpuLimit) << r->reason_text;
  EXPECT_EQ(r->signal, SIGKILL);
  EXPECT_EQ(r->reason_text, "CPU time limit of 1 s exceeded (killed by SIGKILL)");
}

TEST_F(ProcessTest, UnusableCgroupRootDegradesToRlimits) {
  auto runner = MakeProcessRunner({.cgroup_root = "/nonexistent-cgroup-root"});
  ProcessSpec spec = Sh("echo ok");
  spec.limits.memory_bytes = 256ull << 20;
  spec.limits.max_processes = 10;
  auto r = runner->Run(spec, nullptr, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stdout_data, "ok\n");
  EXPECT_FALSE(r->used_cgroup);
  EXPECT_NE(r->limits_note.find("cgroups unavailable (/nonexistent-cgroup-root/memory is not"),
            std::string::npos)
      << r->limits_note;
}

TEST_F(ProcessTest, ForkBombIsContained) {
  ProcessSpec spec = Sh("while :; do /bin/sleep 100 & done");
  spec.limits.max_processes = 20;
  spec.limits.memory_bytes = 256ull << 20;
  spec.limits.timeout = seconds(10);
  spec.limits.kill_grace = milliseconds(200);
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::printf("[ fork bomb ] %s: %s, %s\n", std::string(EndReasonName(r->reason)).c_str(),
              r->reason_text.c_str(), r->stderr_data.substr(0, 200).c_str());
  if (r->used_cgroup) {
    EXPECT_EQ(r->reason, EndReason::kProcessLimit) << r->reason_text;
    EXPECT_NE(r->reason_text.find("process limit of 20 reached"), std::string::npos);
  } else {
    EXPECT_TRUE(r->reason == EndReason::kTimeout || r->reason == EndReason::kExited);
  }
  EXPECT_TRUE(GroupGone(r->pid));
  EXPECT_TRUE(NoZombieChildren());
}

TEST_F(ProcessTest, ProcessesThatLeftTheGroupAreKilledThroughTheCgroup) {
  ProcessSpec spec = Sh("/usr/bin/setsid /bin/sleep 100 & echo $!");
  spec.limits.memory_bytes = 256ull << 20;
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  if (!r->used_cgroup) GTEST_SKIP() << "no cgroups here: " << r->limits_note;
  EXPECT_EQ(r->exit_code, 0);
  int escaped = std::atoi(r->stdout_data.c_str());
  ASSERT_GT(escaped, 0);
  EXPECT_TRUE(ProcessGone(escaped));
  EXPECT_LT(r->wall, seconds(5));
}

TEST_F(ProcessTest, BackgroundLeftoversAreKilledWhenTheMainProcessExits) {
  auto r = Run(Sh("/bin/sleep 100 & echo $!"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kExited);
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_LT(r->wall, seconds(5));  // not held by the sleep's copy of stdout
  EXPECT_TRUE(ProcessGone(std::atoi(r->stdout_data.c_str())));
  EXPECT_TRUE(GroupGone(r->pid));
}

TEST_F(ProcessTest, SignalExit) {
  auto r = Run(Sh("kill -SEGV $$"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reason, EndReason::kSignaled);
  EXPECT_EQ(r->signal, SIGSEGV);
  EXPECT_EQ(r->exit_code, -1);
  EXPECT_EQ(r->reason_text, "killed by SIGSEGV");
}

TEST_F(ProcessTest, FileLimits) {
  TempDir dir;
  ProcessSpec spec = Sh("ulimit -n; head -c 100000 /dev/zero > big");
  spec.cwd = dir.path();
  spec.limits.max_open_files = 16;
  spec.limits.max_file_size = 1000;
  auto r = Run(spec);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->stdout_data, "16\n");
  // `head` dies of SIGXFSZ; the shell reports it as exit code 128 + 25.
  EXPECT_EQ(r->exit_code, 128 + SIGXFSZ);
  EXPECT_EQ(fs::file_size(dir.path() + "/big"), 1000u);
}

TEST_F(ProcessTest, NoCoreFiles) {
  TempDir dir;
  ProcessSpec spec = Sh("ulimit -c");
  spec.cwd = dir.path();
  auto r = Run(spec);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stdout_data, "0\n");
}

TEST_F(ProcessTest, StartFailuresAreErrorsNamingTheProgram) {
  TempDir dir;
  auto started = std::chrono::steady_clock::now();
  ProcessSpec spec;
  spec.argv = {dir.path() + "/no-such-program"};
  auto r = Run(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(spec.argv[0]), std::string::npos) << r.status().ToString();

  spec.argv = {dir.Write("not-executable.sh", "#!/bin/sh\necho hi\n", kNoExec)};
  r = Run(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find(spec.argv[0]), std::string::npos) << r.status().ToString();

  spec.argv = {dir.path()};  // a directory
  r = Run(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);

  spec.argv = {dir.Write("garbage", "\x7f\x45\x4c\x46garbage", kExec)};
  r = Run(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("garbage"), std::string::npos) << r.status().ToString();

  spec.argv = {"sh", "-c", "true"};
  r = Run(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);

  spec.argv.clear();
  EXPECT_FALSE(Run(spec).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(2));
  EXPECT_TRUE(NoZombieChildren());
}

TEST_F(ProcessTest, ConcurrentRunsFromSeveralThreads) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 5;
  std::vector<std::string> outputs(kThreads * kPerThread);
  std::vector<std::string> failures(kThreads * kPerThread);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        int n = t * kPerThread + i;
        ProcessSpec spec;
        spec.argv = {"/bin/sh",
                     "-c",
                     "echo \"$N:$1\"; /bin/sleep 0.0$2",
                     "sh",
                     std::to_string(n * 7),
                     std::to_string(n % 5)};
        spec.env = {"N=" + std::to_string(n)};
        spec.stdin_data = "ignored";
        if (n % 2) spec.limits.memory_bytes = 128ull << 20;  // half of them with a cgroup
        spec.limits.max_processes = 10;
        auto r = runner_->Run(spec, nullptr, nullptr);
        if (!r.ok()) {
          failures[n] = r.status().ToString();
        } else {
          outputs[n] = r->stdout_data;
          if (r->exit_code != 0) failures[n] = r->reason_text;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int n = 0; n < kThreads * kPerThread; ++n) {
    EXPECT_EQ(failures[n], "") << n;
    EXPECT_EQ(outputs[n], std::to_string(n) + ":" + std::to_string(n * 7) + "\n") << n;
  }
}

TEST_F(ProcessTest, NothingLeaks) {
  int before = CountOpenFds();
  for (int i = 0; i < 5; ++i) {
    ProcessSpec spec = Sh("echo x; echo y >&2; /bin/sleep 100 &");
    spec.stdin_data = "data";
    spec.limits.memory_bytes = 64ull << 20;
    spec.limits.max_processes = 5;
    ASSERT_TRUE(Run(spec).ok());
    spec.argv = {"/nonexistent"};
    ASSERT_FALSE(Run(spec).ok());
  }
  ProcessSpec timeout = Sh("/bin/sleep 100");
  timeout.limits.timeout = milliseconds(50);
  ASSERT_TRUE(Run(timeout).ok());
  EXPECT_TRUE(NoZombieChildren());
  // The standbys, and the runner's per-run cgroups, are gone when the runner is (its janitor
  // removes the cgroups in the background).
  runner_.reset();
  EXPECT_EQ(CountOpenFds(), before);
  EXPECT_TRUE(Children().empty());
  for (const char* parent :
       {"/sys/fs/cgroup/memory/cortex", "/sys/fs/cgroup/pids/cortex", "/sys/fs/cgroup/cortex"}) {
    if (!fs::exists(parent)) continue;
    std::string mine = std::to_string(::getpid()) + "-";
    for (auto& e : fs::directory_iterator(parent)) {
      if (e.is_directory()) {
        EXPECT_NE(e.path().filename().string().rfind(mine, 0), 0u) << e.path();
      }
    }
  }
}

TEST_F(ProcessTest, AnExceptionFromOnLineLeavesNothingBehind) {
  int before = CountOpenFds();
  pid_t pgid = 0;
  ProcessSpec spec = Sh("echo $$; exec /bin/sleep 100");
  spec.limits.memory_bytes = 64ull << 20;
  EXPECT_THROW(static_cast<void>(Run(spec,
                                     [&](const OutputLine& line) {
                                       pgid = std::atoi(line.text.c_str());
                                       throw std::runtime_error("boom");
                                     })),
               std::runtime_error);
  ASSERT_GT(pgid, 0);
  EXPECT_TRUE(GroupGone(pgid));
  EXPECT_TRUE(NoZombieChildren());
  runner_.reset();  // and its standby children, each holding a socket of ours
  EXPECT_EQ(CountOpenFds(), before);
}

TEST(EndReasonNameTest, Names) {
  EXPECT_EQ(EndReasonName(EndReason::kExited), "exited");
  EXPECT_EQ(EndReasonName(EndReason::kMemoryLimit), "memory_limit");
  EXPECT_EQ(EndReasonName(EndReason::kProcessLimit), "process_limit");
}

// ---------------------------------------------------------------------------------------------
// ResolveProgram

TEST(ResolveProgramTest, AbsolutePathsAndPathSearch) {
  TempDir dir;
  EXPECT_EQ(*ResolveProgram("/bin/sh", ""), "/bin/sh");
  EXPECT_EQ(ResolveProgram(dir.path() + "/nope", "").status().code(), StatusCode::kNotFound);
  std::string plain = dir.Write("bin/plain", "#!/bin/sh\n", kNoExec);
  EXPECT_EQ(ResolveProgram(plain, "").status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveProgram("bin/plain", "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveProgram("", "/bin").status().code(), StatusCode::kInvalidArgument);

  // Not executable or a directory: skipped; first match wins; empty entries are ignored.
  std::string tool = dir.Write("b/tool", "#!/bin/sh\n", kExec);
  dir.Write("a/tool", "#!/bin/sh\n", kNoExec);
  fs::create_directories(dir.path() + "/c/tool");
  EXPECT_EQ(*ResolveProgram(
                "tool", "::" + dir.path() + "/c:" + dir.path() + "/a:" + dir.path() + "/b:/bin"),
            tool);
  EXPECT_EQ(*ResolveProgram("sh", "/nonexistent:/bin"), "/bin/sh");
  auto missing = ResolveProgram("no-such-tool-xyz", "/bin:/usr/bin");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no-such-tool-xyz"), std::string::npos);
}

TEST(ResolveProgramTest, PyenvShimsResolveToTheInterpreter) {
  TempDir dir;
  std::string root = dir.path() + "/.pyenv";
  std::string shim = dir.Write(".pyenv/shims/python3",
                               "#!/usr/bin/env bash\nset -e\nexport PYENV_ROOT=\"" + root +
                                   "\"\nexec \"" + root + "/libexec/pyenv\" exec \"$0\" \"$@\"\n",
                               kExec);
  std::string v3912 = dir.Write(".pyenv/versions/3.9.12/bin/python3", "", kExec);
  std::string v392 = dir.Write(".pyenv/versions/3.9.2/bin/python3", "", kExec);
  std::string v311 = dir.Write(".pyenv/versions/3.11.1/bin/python3", "", kExec);
  std::string system = dir.Write("usr/bin/python3", "", kExec);
  std::string path = root + "/shims:" + dir.path() + "/usr/bin";

  dir.Write(".pyenv/version", "3.11.1\n", kNoExec);
  EXPECT_EQ(*ResolveProgram("python3", path), v311);
  EXPECT_EQ(*ResolveProgram("python3", path, "3.9.2"), v392);
  EXPECT_EQ(*ResolveProgram("python3", path, "3.9"), v3912);  // prefix: the highest 3.9.x
  EXPECT_EQ(*ResolveProgram("python3", path, "3.7.0:3.9.2"), v392);
  EXPECT_EQ(*ResolveProgram("python3", path, "system"), system);
  EXPECT_EQ(*ResolveProgram("python3", path, "3.7.0"), shim);  // unknown: keep the shim
  EXPECT_EQ(*ResolveProgram("python3", root + "/shims", "system"), shim);
  dir.Write(".pyenv/version", "# comment\n3.9.2\n", kNoExec);
  EXPECT_EQ(*ResolveProgram("python3", path), v392);

  // This machine's own pyenv, when there is one.
  const char* env_path = std::getenv("PATH");
  auto real = ResolveProgram("python3", env_path ? env_path : "");
  if (real.ok()) {
    std::printf("[ resolve ] python3 -> %s\n", real->c_str());
    if (fs::exists("/root/.pyenv/versions") && !std::getenv("PYENV_VERSION")) {
      EXPECT_EQ(real->find("/shims/"), std::string::npos) << *real;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Overhead (printed, not asserted).

template <typename F>
double MedianMicros(int runs, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    auto start = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                    .count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

TEST_F(ProcessTest, OverheadAgainstBarePosixSpawn) {
  constexpr int kRuns = 200;
  char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
  char* envp[] = {nullptr};
  double bare = MedianMicros(kRuns, [&] {
    pid_t pid;
    ASSERT_EQ(::posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, envp), 0);
    int status;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  });
  ProcessSpec plain;
  plain.argv = {"/bin/true"};
  double runner = MedianMicros(kRuns, [&] { ASSERT_TRUE(Run(plain).ok()); });
  ProcessSpec limited = plain;
  limited.limits.memory_bytes = 256ull << 20;
  limited.limits.max_processes = 64;
  limited.limits.cpu_time = seconds(10);
  limited.limits.max_open_files = 256;
  limited.limits.timeout = seconds(10);
  bool used_cgroup = false;
  double with_cgroup = MedianMicros(kRuns, [&] {
    auto r = Run(limited);
    ASSERT_TRUE(r.ok());
    used_cgroup = r->used_cgroup;
  });
  std::printf(
      "[ overhead ] /bin/true median over %d back-to-back runs: posix_spawn+waitpid %.0f us; "
      "runner %.0f us (+%.0f us); runner with limits%s %.0f us (+%.0f us)\n",
      kRuns, bare, runner, runner - bare, used_cgroup ? " and a cgroup" : " (no cgroup)",
      with_cgroup, with_cgroup - bare);

  // The same after an idle gap (not synchronization: the machine is left idle on purpose). A
  // cgroup migration waits for an RCU grace period unless another one happened just before.
  auto idle = [&](auto&& f) {
    std::vector<double> t;
    for (int i = 0; i < 9; ++i) {
      std::this_thread::sleep_for(milliseconds(50));
      auto begin = std::chrono::steady_clock::now();
      f();
      t.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - begin)
              .count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  double idle_bare = idle([&] {
    pid_t pid;
    ASSERT_EQ(::posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, envp), 0);
    int status;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  });
  double idle_plain = idle([&] { ASSERT_TRUE(Run(plain).ok()); });
  double idle_limited = idle([&] { ASSERT_TRUE(Run(limited).ok()); });
  std::printf(
      "[ overhead ] each run after 50 ms idle (median of 9): posix_spawn+waitpid %.0f us; "
      "runner %.0f us (+%.0f us); runner with limits%s %.0f us (+%.0f us)\n",
      idle_bare, idle_plain, idle_plain - idle_bare, used_cgroup ? " and a cgroup" : "",
      idle_limited, idle_limited - idle_bare);
}

}  // namespace
}  // namespace cortex::exec
