#include "registry/watcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <gtest/gtest.h>

namespace cortex::registry {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kWaitTimeout{5000};

struct Batch {
  Clock::time_point delivered;
  std::vector<FileEvent> events;
};

std::string TypeName(FileEventType type) {
  switch (type) {
    case FileEventType::kChanged:
      return "changed";
    case FileEventType::kRemoved:
      return "removed";
    case FileEventType::kRescanDir:
      return "rescan_dir";
    case FileEventType::kRescanAll:
      return "rescan_all";
  }
  return "?";
}

std::string Describe(const std::vector<Batch>& batches) {
  std::string out;
  for (size_t i = 0; i < batches.size(); ++i) {
    out += "batch " + std::to_string(i) + ":";
    for (const FileEvent& e : batches[i].events) out += " " + TypeName(e.type) + " " + e.path;
    out += "\n";
  }
  return out;
}

bool BatchContains(const Batch& batch, const FileEvent& event) {
  return std::find(batch.events.begin(), batch.events.end(), event) != batch.events.end();
}

// Receives batches on the watcher thread; tests wait on it with a deadline. While held, the
// callback blocks after recording its batch (to let the kernel queue fill up).
class Collector {
 public:
  void Add(std::vector<FileEvent> batch) {
    std::unique_lock lock(mu_);
    batches_.push_back(Batch{Clock::now(), std::move(batch)});
    cv_.notify_all();
    cv_.wait(lock, [this] { return !held_; });
  }

  // Waits until `pred(batches)` holds; false after the deadline.
  bool WaitUntil(const std::function<bool(const std::vector<Batch>&)>& pred,
                 milliseconds timeout = kWaitTimeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return pred(batches_); });
  }

  // Waits for a batch at index >= `from` containing `event`; returns that batch's index.
  std::optional<size_t> WaitForEvent(const FileEvent& event, size_t from = 0) {
    std::optional<size_t> found;
    WaitUntil([&](const std::vector<Batch>& batches) {
      for (size_t i = from; i < batches.size(); ++i) {
        if (BatchContains(batches[i], event)) {
          found = i;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  std::vector<Batch> Snapshot() {
    std::lock_guard lock(mu_);
    return batches_;
  }

  size_t size() {
    std::lock_guard lock(mu_);
    return batches_.size();
  }

  void Hold() {
    std::lock_guard lock(mu_);
    held_ = true;
  }
  void Release() {
    {
      std::lock_guard lock(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Batch> batches_;
  bool held_ = false;
};

void WriteFile(const std::string& path, const std::string& content = "kind: Tool\n") {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ASSERT_EQ(::close(fd), 0);
}

size_t CountOpenFds() {
  size_t count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++count;
  }
  return count;
}

class WatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cortex_watcher_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_ = base_ + "/root";
    ASSERT_EQ(::mkdir(root_.c_str(), 0755), 0);
  }

  void TearDown() override {
    collector_.Release();
    watcher_.reset();
    std::error_code ec;
    std::filesystem::remove_all(base_, ec);
  }

  void StartWatcher(WatcherOptions options = {}) {
    auto result = Watcher::Start(
        root_, options, [this](std::vector<FileEvent> batch) { collector_.Add(std::move(batch)); });
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    watcher_ = std::move(result).value();
  }

  std::string P(const std::string& relative) const { return root_ + "/" + relative; }

  // Writes a fresh file and waits for it: every event queued before it has then been delivered.
  void Sync() {
    const std::string path = P("sentinel-" + std::to_string(sentinel_++) + ".yaml");
    WriteFile(path);
    ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, path}))
        << Describe(collector_.Snapshot());
  }

  // Waits until the most recent event delivered for `path` is `type`.
  bool WaitForLastEvent(const std::string& path, FileEventType type) {
    return collector_.WaitUntil([&](const std::vector<Batch>& batches) {
      std::optional<FileEventType> last;
      for (const Batch& b : batches) {
        for (const FileEvent& e : b.events) {
          if (e.path == path) last = e.type;
        }
      }
      return last == type;
    });
  }

  std::string base_;
  std::string root_;
  int sentinel_ = 0;
  Collector collector_;  // declared before watcher_: outlives the callback's thread
  std::unique_ptr<Watcher> watcher_;
};

TEST_F(WatcherTest, FileWriteReportsChanged) {
  StartWatcher();
  EXPECT_EQ(watcher_->watched_directories(), 1u);
  WriteFile(P("tool.yaml"));
  EXPECT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("tool.yaml")}))
      << Describe(collector_.Snapshot());
}

TEST_F(WatcherTest, RenameOnSaveWithHiddenTempReportsTarget) {
  WriteFile(P("tool.yaml"), "old");
  StartWatcher();
  WriteFile(P(".tool.yaml.swp"), "new");
  ASSERT_EQ(::rename(P(".tool.yaml.swp").c_str(), P("tool.yaml").c_str()), 0);
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("tool.yaml")}))
      << Describe(collector_.Snapshot());
  for (const Batch& b : collector_.Snapshot()) {
    for (const FileEvent& e : b.events) EXPECT_EQ(e.path, P("tool.yaml"));
  }
}

TEST_F(WatcherTest, RenameOnSaveWithVisibleTempReportsTargetChangedAndTempRemoved) {
  WriteFile(P("tool.yaml"), "old");
  StartWatcher();
  WriteFile(P("tool.yaml.tmp"), "new");
  ASSERT_EQ(::rename(P("tool.yaml.tmp").c_str(), P("tool.yaml").c_str()), 0);
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("tool.yaml")}));
  EXPECT_TRUE(WaitForLastEvent(P("tool.yaml.tmp"), FileEventType::kRemoved))
      << Describe(collector_.Snapshot());
}

TEST_F(WatcherTest, DeleteReportsRemoved) {
  WriteFile(P("tool.yaml"));
  StartWatcher();
  ASSERT_EQ(::unlink(P("tool.yaml").c_str()), 0);
  EXPECT_TRUE(collector_.WaitForEvent({FileEventType::kRemoved, P("tool.yaml")}))
      << Describe(collector_.Snapshot());
}

TEST_F(WatcherTest, NewFileIsReportedOnlyOnceClosed) {
  StartWatcher();
  const int fd = ::open(P("tool.yaml").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "kind", 4), 4);
  Sync();  // the IN_CREATE has been processed, and must not have produced an event
  for (const Batch& b : collector_.Snapshot()) {
    for (const FileEvent& e : b.events) EXPECT_NE(e.path, P("tool.yaml"));
  }
  ASSERT_EQ(::close(fd), 0);
  EXPECT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("tool.yaml")}))
      << Describe(collector_.Snapshot());
}

TEST_F(WatcherTest, HardLinkIntoTreeIsChanged) {
  const std::string target = base_ + "/target.yaml";
  WriteFile(target);
  StartWatcher();
  ASSERT_EQ(::link(target.c_str(), P("tool.yaml").c_str()), 0);
  EXPECT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("tool.yaml")}))
      << Describe(collector_.Snapshot());
}

TEST_F(WatcherTest, LaterEventForSamePathWins) {
  WriteFile(P("tool.yaml"));
  // A long quiet window so that both events almost surely share one batch.
  StartWatcher({.quiet = milliseconds(100), .max_delay = milliseconds(2000)});
  ASSERT_EQ(::unlink(P("tool.yaml").c_str()), 0);
  WriteFile(P("tool.yaml"));
  ASSERT_TRUE(WaitForLastEvent(P("tool.yaml"), FileEventType::kChanged))
      << Describe(collector_.Snapshot());
  for (const Batch& b : collector_.Snapshot()) {
    EXPECT_LE(std::count_if(b.events.begin(), b.events.end(),
                            [&](const FileEvent& e) { return e.path == P("tool.yaml"); }),
              1);
  }
}

TEST_F(WatcherTest, NewSubdirectoryWithImmediateWriteIsSeenAndWatched) {
  StartWatcher();
  ASSERT_EQ(::mkdir(P("sub").c_str(), 0755), 0);
  WriteFile(P("sub/first.yaml"));  // likely before the watch on sub exists
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kRescanDir, P("sub")}))
      << Describe(collector_.Snapshot());
  EXPECT_EQ(watcher_->watched_directories(), 2u);

  WriteFile(P("sub/second.yaml"));
  EXPECT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("sub/second.yaml")}))
      << Describe(collector_.Snapshot());
}

TEST_F(WatcherTest, NewNestedDirectoriesAreAllWatched) {
  StartWatcher();
  std::filesystem::create_directories(P("a/b/c"));
  WriteFile(P("a/b/c/early.yaml"));
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kRescanDir, P("a")}))
      << Describe(collector_.Snapshot());
  WriteFile(P("a/b/c/late.yaml"));
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("a/b/c/late.yaml")}))
      << Describe(collector_.Snapshot());
  EXPECT_EQ(watcher_->watched_directories(), 4u);
}

TEST_F(WatcherTest, DirectoryMovedOutOfTreeIsDropped) {
  std::filesystem::create_directories(P("sub/deeper"));
  WriteFile(P("sub/tool.yaml"));
  StartWatcher();
  ASSERT_EQ(watcher_->watched_directories(), 3u);

  const std::string outside = base_ + "/outside";
  ASSERT_EQ(::rename(P("sub").c_str(), outside.c_str()), 0);
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kRescanDir, P("sub")}))
      << Describe(collector_.Snapshot());
  EXPECT_EQ(watcher_->watched_directories(), 1u);

  // Writes in the moved-away tree are no longer reported.
  WriteFile(outside + "/tool.yaml");
  WriteFile(outside + "/deeper/tool.yaml");
  Sync();
  for (const Batch& b : collector_.Snapshot()) {
    for (const FileEvent& e : b.events) {
      EXPECT_FALSE(e.path.starts_with(outside)) << e.path;
      EXPECT_NE(e.path, P("sub/tool.yaml"));
      EXPECT_NE(e.path, P("sub/deeper/tool.yaml"));
    }
  }
}

TEST_F(WatcherTest, DirectoryRenamedInsideTreeIsWatchedUnderNewName) {
  std::filesystem::create_directories(P("old/inner"));
  StartWatcher();
  ASSERT_EQ(watcher_->watched_directories(), 3u);

  ASSERT_EQ(::rename(P("old").c_str(), P("new").c_str()), 0);
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kRescanDir, P("old")}));
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kRescanDir, P("new")}));
  WriteFile(P("new/inner/tool.yaml"));
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("new/inner/tool.yaml")}))
      << Describe(collector_.Snapshot());
  EXPECT_EQ(watcher_->watched_directories(), 3u);
  for (const Batch& b : collector_.Snapshot()) {
    for (const FileEvent& e : b.events) EXPECT_FALSE(e.path.starts_with(P("old/"))) << e.path;
  }
}

TEST_F(WatcherTest, DirectoryDeletedIsDropped) {
  std::filesystem::create_directories(P("sub/deeper"));
  WriteFile(P("sub/deeper/tool.yaml"));
  StartWatcher();
  ASSERT_EQ(watcher_->watched_directories(), 3u);
  std::filesystem::remove_all(P("sub"));
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kRescanDir, P("sub")}))
      << Describe(collector_.Snapshot());
  Sync();
  EXPECT_EQ(watcher_->watched_directories(), 1u);
}

TEST_F(WatcherTest, BurstOfWritesIsCoalesced) {
  StartWatcher({.quiet = milliseconds(100), .max_delay = milliseconds(2000)});
  const auto start = Clock::now();
  for (int i = 0; i < 50; ++i) WriteFile(P("tool.yaml"), "version " + std::to_string(i));
  const auto burst = Clock::now() - start;
  Sync();
  const std::vector<Batch> batches = collector_.Snapshot();
  std::printf("[ latency  ] 50 writes in %.2f ms -> %zu batch(es)\n",
              std::chrono::duration<double, std::milli>(burst).count(), batches.size());
  EXPECT_LE(batches.size(), 3u) << Describe(batches);
  ASSERT_FALSE(batches.empty());
  EXPECT_TRUE(BatchContains(batches.back(), {FileEventType::kChanged, P("tool.yaml")}))
      << Describe(batches);
  for (const Batch& b : batches) {
    EXPECT_LE(std::count_if(b.events.begin(), b.events.end(),
                            [&](const FileEvent& e) { return e.path == P("tool.yaml"); }),
              1);
  }
}

TEST_F(WatcherTest, BurstWithDefaultOptions) {
  StartWatcher();
  for (int i = 0; i < 50; ++i) WriteFile(P("tool.yaml"), "version " + std::to_string(i));
  Sync();
  std::printf("[ latency  ] 50 writes with default options -> %zu batch(es)\n", collector_.size());
  EXPECT_TRUE(WaitForLastEvent(P("tool.yaml"), FileEventType::kChanged));
}

TEST_F(WatcherTest, TooManyPathsCollapseToRescanAll) {
  StartWatcher({.quiet = milliseconds(100), .max_delay = milliseconds(2000), .max_batch_paths = 5});
  for (int i = 0; i < 20; ++i) WriteFile(P("tool" + std::to_string(i) + ".yaml"));
  const auto index = collector_.WaitForEvent({FileEventType::kRescanAll, root_});
  ASSERT_TRUE(index.has_value()) << Describe(collector_.Snapshot());
  EXPECT_EQ(collector_.Snapshot()[*index].events.size(), 1u);
}

TEST_F(WatcherTest, KernelQueueOverflowReportsRescanAllAndResyncs) {
  long max_queued = 0;
  {
    std::ifstream in("/proc/sys/fs/inotify/max_queued_events");
    in >> max_queued;
  }
  if (max_queued <= 0 || max_queued > 200000) GTEST_SKIP() << "max_queued_events=" << max_queued;
  WriteFile(P("a.yaml"));
  WriteFile(P("b.yaml"));
  StartWatcher();

  // Block the watcher thread inside its callback so the kernel queue fills up.
  collector_.Hold();
  WriteFile(P("block.yaml"));
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("block.yaml")}));
  // Alternate two files: identical consecutive events would be merged by the kernel.
  for (long i = 0; i <= max_queued + 10; ++i) {
    const int fd = ::open(P(i % 2 == 0 ? "a.yaml" : "b.yaml").c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ::close(fd);
  }
  // Created while events are being lost: only the resync after the overflow can find it.
  ASSERT_EQ(::mkdir(P("late").c_str(), 0755), 0);
  const size_t before = collector_.size();
  collector_.Release();

  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kRescanAll, root_}, before))
      << "batches: " << collector_.size();
  EXPECT_EQ(watcher_->watched_directories(), 2u);
  WriteFile(P("late/tool.yaml"));
  EXPECT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("late/tool.yaml")}));
}

TEST_F(WatcherTest, HiddenPathsAreIgnored) {
  std::filesystem::create_directories(P(".git/objects"));
  StartWatcher();
  EXPECT_EQ(watcher_->watched_directories(), 1u);
  WriteFile(P(".hidden.yaml"));
  WriteFile(P(".git/config"));
  WriteFile(P(".git/objects/ab"));
  ASSERT_EQ(::mkdir(P(".cache").c_str(), 0755), 0);
  WriteFile(P(".cache/tool.yaml"));
  ASSERT_EQ(::rename(P(".hidden.yaml").c_str(), P(".other.yaml").c_str()), 0);
  Sync();
  for (const Batch& b : collector_.Snapshot()) {
    for (const FileEvent& e : b.events) {
      EXPECT_EQ(e.path.find("/."), std::string::npos) << e.path;
    }
  }
  EXPECT_EQ(watcher_->watched_directories(), 1u);
}

TEST_F(WatcherTest, SymlinkLoopDoesNotHangStart) {
  ASSERT_EQ(::mkdir(P("dir").c_str(), 0755), 0);
  ASSERT_EQ(::symlink("..", P("dir/up").c_str()), 0);
  ASSERT_EQ(::symlink(root_.c_str(), P("dir/abs").c_str()), 0);
  ASSERT_EQ(::symlink(".", P("self").c_str()), 0);
  StartWatcher();
  EXPECT_EQ(watcher_->watched_directories(), 2u);
}

TEST_F(WatcherTest, SymlinkToFileIsChangedAndSymlinkToDirectoryIsNotFollowed) {
  const std::string target = base_ + "/target.yaml";
  WriteFile(target);
  ASSERT_EQ(::mkdir((base_ + "/elsewhere").c_str(), 0755), 0);
  StartWatcher();
  ASSERT_EQ(::symlink(target.c_str(), P("link.yaml").c_str()), 0);
  ASSERT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("link.yaml")}))
      << Describe(collector_.Snapshot());
  ASSERT_EQ(::symlink((base_ + "/elsewhere").c_str(), P("dirlink").c_str()), 0);
  WriteFile(base_ + "/elsewhere/tool.yaml");
  Sync();
  for (const Batch& b : collector_.Snapshot()) {
    for (const FileEvent& e : b.events) EXPECT_FALSE(e.path.starts_with(P("dirlink"))) << e.path;
  }
  EXPECT_EQ(watcher_->watched_directories(), 1u);
}

TEST_F(WatcherTest, StartOnMissingRootFails) {
  const std::string missing = base_ + "/missing";
  auto result = Watcher::Start(missing, {}, [](std::vector<FileEvent>) {});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find(missing), std::string::npos)
      << result.status().message();
}

TEST_F(WatcherTest, StartOnFileFails) {
  WriteFile(P("file.yaml"));
  auto result = Watcher::Start(P("file.yaml"), {}, [](std::vector<FileEvent>) {});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find(P("file.yaml")), std::string::npos);
}

TEST_F(WatcherTest, StartWithoutCallbackFails) {
  auto result = Watcher::Start(root_, {}, nullptr);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(WatcherTest, RootIsNormalized) {
  auto result = Watcher::Start(
      root_ + "//", {}, [this](std::vector<FileEvent> batch) { collector_.Add(std::move(batch)); });
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  watcher_ = std::move(result).value();
  WriteFile(P("tool.yaml"));
  EXPECT_TRUE(collector_.WaitForEvent({FileEventType::kChanged, P("tool.yaml")}))
      << Describe(collector_.Snapshot());
}

TEST_F(WatcherTest, DestructorReturnsPromptly) {
  StartWatcher({.quiet = milliseconds(1000), .max_delay = milliseconds(5000)});
  WriteFile(P("tool.yaml"));  // leaves a batch pending, with a long timeout
  const auto start = Clock::now();
  watcher_.reset();
  const auto elapsed = Clock::now() - start;
  EXPECT_LT(elapsed, milliseconds(500));
  std::printf("[ latency  ] destructor took %.3f ms\n",
              std::chrono::duration<double, std::milli>(elapsed).count());
}

TEST_F(WatcherTest, DescriptorsAreCloseOnExecAndReleased) {
  const size_t before = CountOpenFds();
  std::filesystem::create_directories(P("a/b"));
  StartWatcher();
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::atoi(entry.path().filename().c_str());
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (target.find("inotify") != std::string::npos ||
        target.find("eventfd") != std::string::npos) {
      const int flags = ::fcntl(fd, F_GETFD);
      EXPECT_TRUE(flags >= 0 && (flags & FD_CLOEXEC) != 0) << target;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2);  // the inotify descriptor and the wake-up eventfd
  watcher_.reset();
  for (int i = 0; i < 3; ++i) {
    StartWatcher();
    watcher_.reset();
  }
  EXPECT_EQ(CountOpenFds(), before);
}

// Not an assertion: prints the write-to-callback latency with the default options
// (quiet = 2 ms). Measured from the return of close() to the start of the callback.
TEST_F(WatcherTest, ReportsWriteToCallbackLatency) {
  StartWatcher();
  constexpr int kSamples = 100;
  std::vector<double> latencies_ms;
  for (int i = 0; i < kSamples; ++i) {
    const std::string path = P("tool" + std::to_string(i % 5) + ".yaml");
    const size_t from = collector_.size();
    WriteFile(path, "version " + std::to_string(i));
    const auto written = Clock::now();
    const auto index = collector_.WaitForEvent({FileEventType::kChanged, path}, from);
    ASSERT_TRUE(index.has_value());
    const auto delivered = collector_.Snapshot()[*index].delivered;
    latencies_ms.push_back(std::chrono::duration<double, std::milli>(delivered - written).count());
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto at = [&](double q) {
    return latencies_ms[std::min(
        latencies_ms.size() - 1,
        static_cast<size_t>(q * static_cast<double>(latencies_ms.size())))];
  };
  std::printf(
      "[ latency  ] write->callback over %d writes (quiet=2ms): min %.3f p50 %.3f p90 %.3f "
      "p99 %.3f max %.3f ms\n",
      kSamples, latencies_ms.front(), at(0.5), at(0.9), at(0.99), latencies_ms.back());
}

}  // namespace
}  // namespace cortex::registry
