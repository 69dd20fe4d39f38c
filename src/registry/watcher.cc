// WatcherImpl: the Watcher interface over Linux inotify.
//
// One thread owns everything after Start(): it polls the inotify descriptor and an eventfd (the
// shutdown signal), turns kernel events into FileEvents, keeps the wd <-> directory bookkeeping
// as directories appear, vanish and move, and delivers debounced batches to the callback.
// Start() builds the initial set of watches on the caller's thread before that thread exists,
// so the bookkeeping is only ever touched by one thread at a time and needs no lock; the one
// value read from outside (the watch count) is an atomic.
//
// Bounds: one read buffer of kReadBufferBytes; the pending batch holds at most
// options.max_batch_paths paths before it collapses to one kRescanAll; the number of watches is
// bounded by the kernel (fs.inotify.max_user_watches), which Start reports when hit.

#include "registry/watcher.h"
#include "common/fd.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace cortex::registry {
namespace {

using Clock = std::chrono::steady_clock;

// Events asked for on every watched directory. The directory is watched rather than its files so
// that write-to-temp-then-rename saves show up as IN_MOVED_TO of the target name. IN_ONLYDIR
// makes the kernel refuse a path that was swapped for a non-directory after we looked at it;
// IN_EXCL_UNLINK drops events for files that are already unlinked. IN_Q_OVERFLOW, IN_IGNORED
// and IN_UNMOUNT are always reported and need no bit here.
constexpr uint32_t kDirMask = IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                              IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK;

// One read(2) worth of events: room for hundreds of events (each at most
// sizeof(inotify_event) + NAME_MAX + 1 bytes). Larger bursts are read over several loop turns.
constexpr size_t kReadBufferBytes = 64 * 1024;

bool IsHidden(std::string_view name) { return !name.empty() && name.front() == '.'; }

std::string JoinPath(const std::string& dir, std::string_view name) {
  std::string out = dir;
  if (out.empty() || out.back() != '/') out += '/';
  out += name;
  return out;
}

// Absolute, lexically normal, without a trailing slash (except for "/" itself).
std::string NormalizeRoot(const std::string& root) {
  std::error_code ec;
  std::filesystem::path path = std::filesystem::absolute(root, ec);
  if (ec) path = root;
  std::string out = path.lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// A symlink whose target is a directory: symlinked directories are not followed, so such a
// name is not a file either and produces no event.
bool IsSymlinkToDirectory(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return false;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Whether IN_CREATE of a non-directory is already a complete file. A new regular file is still
// being written (its IN_CLOSE_WRITE follows), but a symlink or a hard link appears complete and
// gets no IN_CLOSE_WRITE at all.
bool CreateIsComplete(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return false;  // already gone: its IN_DELETE follows
  if (S_ISLNK(st.st_mode)) return !IsSymlinkToDirectory(path);
  return S_ISREG(st.st_mode) && st.st_nlink > 1;
}

Status WatchLimitError(const std::string& path, size_t watched) {
  return ResourceExhaustedError(
      "inotify watch limit reached while watching '" + path + "' (" + std::to_string(watched) +
      " directories watched); raise fs.inotify.max_user_watches (sysctl -w "
      "fs.inotify.max_user_watches=N)");
}

class WatcherImpl final : public Watcher {
 public:
  WatcherImpl(std::string root, WatcherOptions options, WatchCallback callback)
      : root_(std::move(root)), options_(options), callback_(std::move(callback)) {}

  ~WatcherImpl() override {
    if (thread_.joinable()) {
      CORTEX_CHECK_MSG(std::this_thread::get_id() != thread_.get_id(),
                       "a Watcher must not be destroyed from its own callback");
      const uint64_t one = 1;
      while (::write(wake_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
      }
      thread_.join();
    }
    if (inotify_fd_ >= 0) ::close(inotify_fd_);  // also drops every watch
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

  WatcherImpl(const WatcherImpl&) = delete;
  WatcherImpl& operator=(const WatcherImpl&) = delete;

  // Creates the descriptors and watches the tree. Runs before the thread exists.
  Status Init() {
    inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd_ < 0) {
      const int err = errno;
      if (err == EMFILE) {
        return ResourceExhaustedError(
            "inotify_init1: too many inotify instances; raise fs.inotify.max_user_instances");
      }
      if (err == ENFILE || err == ENOMEM) {
        return ResourceExhaustedError("inotify_init1: " + ErrnoText(err));
      }
      return UnavailableError("inotify_init1: " + ErrnoText(err));
    }
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) {
      const int err = errno;
      return ResourceExhaustedError("eventfd: " + ErrnoText(err));
    }
    CORTEX_RETURN_IF_ERROR(WatchTree(root_, /*follow_top=*/true, /*visited=*/nullptr));
    auto it = wd_by_path_.find(root_);
    CORTEX_CHECK_MSG(it != wd_by_path_.end(), "watch root missing after WatchTree: " + root_);
    root_wd_ = it->second;
    return Status::Ok();
  }

  void StartThread() {
    thread_ = std::thread([this] { Run(); });
  }

  size_t watched_directories() const override {
    return watched_count_.load(std::memory_order_relaxed);
  }

 private:
  struct WatchedDir {
    std::string path;
    dev_t dev = 0;
    ino_t ino = 0;
  };
  struct InodeKey {
    dev_t dev;
    ino_t ino;
    friend bool operator<(const InodeKey& a, const InodeKey& b) {
      return a.dev != b.dev ? a.dev < b.dev : a.ino < b.ino;
    }
  };
  struct WatchOutcome {
    int wd = -1;  // -1: not watched (gone, not a directory, or the same directory seen twice)
    bool is_new = false;
  };

  // ---- Bookkeeping: three maps kept as consistent bijections between wd, path and inode. ----

  void Remember(int wd, const std::string& path, dev_t dev, ino_t ino) {
    if (auto it = wd_by_path_.find(path); it != wd_by_path_.end() && it->second != wd) {
      ::inotify_rm_watch(inotify_fd_, it->second);
      Forget(it->second);
    }
    if (auto it = wd_by_inode_.find({dev, ino}); it != wd_by_inode_.end() && it->second != wd) {
      ::inotify_rm_watch(inotify_fd_, it->second);
      Forget(it->second);
    }
    Forget(wd);
    dirs_by_wd_[wd] = WatchedDir{path, dev, ino};
    wd_by_path_[path] = wd;
    wd_by_inode_[{dev, ino}] = wd;
    watched_count_.store(dirs_by_wd_.size(), std::memory_order_relaxed);
  }

  void Forget(int wd) {
    auto it = dirs_by_wd_.find(wd);
    if (it == dirs_by_wd_.end()) return;
    wd_by_path_.erase(it->second.path);
    wd_by_inode_.erase({it->second.dev, it->second.ino});
    dirs_by_wd_.erase(it);
    watched_count_.store(dirs_by_wd_.size(), std::memory_order_relaxed);
  }

  // Removes the watches on `top` and every directory recorded below it.
  void UnwatchTree(const std::string& top) {
    std::vector<int> wds;
    if (auto it = wd_by_path_.find(top); it != wd_by_path_.end()) wds.push_back(it->second);
    const std::string prefix = JoinPath(top, "");
    for (auto it = wd_by_path_.lower_bound(prefix);
         it != wd_by_path_.end() && it->first.starts_with(prefix); ++it) {
      wds.push_back(it->second);
    }
    for (int wd : wds) {
      ::inotify_rm_watch(inotify_fd_, wd);  // fails harmlessly if the kernel already dropped it
      Forget(wd);
    }
  }

  // Watches one directory. Fails only when the kernel refuses watches (or for the root, on any
  // error); a directory that vanished, is not a directory, or cannot be read is skipped, since
  // the events of its parent report whatever happens to it.
  Result<WatchOutcome> WatchOne(const std::string& path, bool follow) {
    const bool is_root = path == root_;
    struct stat st;
    if ((follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) != 0 ||
        !S_ISDIR(st.st_mode)) {
      if (is_root) return InvalidArgumentError("watch root '" + path + "' is not a directory");
      return WatchOutcome{};
    }
    // Loop guard by (dev, inode). Symlinks are never followed, so the same directory is only
    // reached twice through bind mounts, or when our record is stale (it moved or was deleted
    // and its inode reused, and that event is still queued).
    if (auto it = wd_by_inode_.find({st.st_dev, st.st_ino}); it != wd_by_inode_.end()) {
      const WatchedDir& known = dirs_by_wd_.at(it->second);
      if (known.path == path) return WatchOutcome{it->second, false};
      struct stat known_st;
      if (::lstat(known.path.c_str(), &known_st) == 0 && known_st.st_dev == st.st_dev &&
          known_st.st_ino == st.st_ino) {
        return WatchOutcome{};
      }
      UnwatchTree(std::string(known.path));
    }
    const int wd = ::inotify_add_watch(inotify_fd_, path.c_str(),
                                       kDirMask | (follow ? 0u : uint32_t{IN_DONT_FOLLOW}));
    if (wd < 0) {
      const int err = errno;
      if (err == ENOSPC) return WatchLimitError(path, dirs_by_wd_.size());
      if (err == ENOMEM) return ResourceExhaustedError("inotify_add_watch: out of kernel memory");
      if (is_root) {
        if (err == EACCES) {
          return Status(StatusCode::kPermissionDenied,
                        "cannot watch '" + path + "': " + ErrnoText(err));
        }
        return UnavailableError("cannot watch '" + path + "': " + ErrnoText(err));
      }
      return WatchOutcome{};
    }
    // The kernel returns the existing wd for an inode it already watches: the path was swapped
    // for another watched directory since the lstat above. That rename's events are queued.
    if (auto it = dirs_by_wd_.find(wd); it != dirs_by_wd_.end() && it->second.path != path) {
      return WatchOutcome{};
    }
    Remember(wd, path, st.st_dev, st.st_ino);
    return WatchOutcome{wd, true};
  }

  // Pushes the non-hidden subdirectories of `path` (symlinks excluded) onto `out`.
  static void ListSubdirectories(const std::string& path, bool follow,
                                 std::vector<std::string>* out) {
    const int fd =
        ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
    if (fd < 0) return;
    DIR* dir = ::fdopendir(fd);
    if (dir == nullptr) {
      ::close(fd);
      return;
    }
    while (const dirent* entry = ::readdir(dir)) {
      if (IsHidden(entry->d_name)) continue;  // also skips "." and ".."
      bool is_dir = entry->d_type == DT_DIR;
      if (entry->d_type == DT_UNKNOWN) {
        struct stat st;
        is_dir = ::fstatat(::dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                 S_ISDIR(st.st_mode);
      }
      if (is_dir) out->push_back(JoinPath(path, entry->d_name));
    }
    ::closedir(dir);
  }

  // Watches `top` and every non-hidden directory below it, depth first with an explicit stack.
  // Directories already watched are not walked again, unless `visited` is given (a resync after
  // a queue overflow): then every directory is walked and the wds reached are collected.
  Status WatchTree(const std::string& top, bool follow_top, std::unordered_set<int>* visited) {
    std::vector<std::string> stack{top};
    bool first = true;
    while (!stack.empty()) {
      std::string path = std::move(stack.back());
      stack.pop_back();
      const bool follow = first && follow_top;
      first = false;
      CORTEX_ASSIGN_OR_RETURN(WatchOutcome outcome, WatchOne(path, follow));
      if (outcome.wd < 0) continue;
      if (visited != nullptr) {
        if (!visited->insert(outcome.wd).second) continue;
      } else if (!outcome.is_new) {
        continue;
      }
      ListSubdirectories(path, follow, &stack);
    }
    return Status::Ok();
  }

  // After IN_Q_OVERFLOW the bookkeeping may have missed directories that appeared or vanished:
  // walk the whole tree again, then drop every watch the walk did not reach.
  void Resync() {
    std::unordered_set<int> visited;
    Status status = WatchTree(root_, /*follow_top=*/true, &visited);
    if (!status.ok()) {
      Warn(status);
      return;  // a partial walk must not decide which watches are stale
    }
    std::vector<int> stale;
    for (const auto& [wd, dir] : dirs_by_wd_) {
      if (!visited.contains(wd)) stale.push_back(wd);
    }
    for (int wd : stale) {
      ::inotify_rm_watch(inotify_fd_, wd);
      Forget(wd);
    }
  }

  void WatchNewDirectory(const std::string& path) {
    Status status = WatchTree(path, /*follow_top=*/false, /*visited=*/nullptr);
    if (!status.ok()) Warn(status);
  }

  // The callback is the only channel to the owner, so a failure after Start (for instance the
  // watch limit hit by a new directory) can only be logged.
  void Warn(const Status& status) {
    if (status.code() == StatusCode::kResourceExhausted) {
      if (warned_limit_) return;
      warned_limit_ = true;
    }
    std::fprintf(stderr, "cortex: watcher: %s\n", status.ToString().c_str());
  }

  // ---- The thread. ----

  void Run() {
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    for (;;) {
      timespec timeout{};
      timespec* timeout_ptr = nullptr;
      if (batch_open_) {
        const Clock::time_point deadline =
            std::min(last_event_ + options_.quiet, first_event_ + options_.max_delay);
        const Clock::time_point now = Clock::now();
        if (now >= deadline) {
          Deliver();
          continue;
        }
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now);
        timeout.tv_sec = static_cast<time_t>(ns.count() / 1'000'000'000);
        timeout.tv_nsec = static_cast<long>(ns.count() % 1'000'000'000);
        timeout_ptr = &timeout;
      }
      const int ready = ::ppoll(fds, 2, timeout_ptr, nullptr);
      if (ready < 0) {
        const int err = errno;
        if (err == EINTR || err == ENOMEM) continue;
        CORTEX_CHECK_MSG(false, "ppoll: " + ErrnoText(err));
      }
      if (fds[1].revents != 0) return;  // shutdown; a pending batch is dropped
      CORTEX_CHECK_MSG((fds[0].revents & POLLNVAL) == 0, "inotify descriptor closed under us");
      if ((fds[0].revents & POLLIN) != 0) ReadEvents();
    }
  }

  // One read per loop turn, so a constant stream of events cannot hold back a due batch.
  void ReadEvents() {
    alignas(inotify_event) char buffer[kReadBufferBytes];
    const ssize_t n = ::read(inotify_fd_, buffer, sizeof(buffer));
    if (n <= 0) return;  // EAGAIN / EINTR: poll again
    const Clock::time_point now = Clock::now();
    for (size_t offset = 0; offset + sizeof(inotify_event) <= static_cast<size_t>(n);) {
      inotify_event event;
      std::memcpy(&event, buffer + offset, sizeof(event));
      const char* name_start = buffer + offset + sizeof(inotify_event);
      // The name is NUL-padded to `len` bytes.
      const std::string_view name(name_start, ::strnlen(name_start, event.len));
      HandleEvent(event.wd, event.mask, name, now);
      offset += sizeof(inotify_event) + event.len;
    }
  }

  void HandleEvent(int wd, uint32_t mask, std::string_view name, Clock::time_point now) {
    if ((mask & IN_Q_OVERFLOW) != 0) {
      Resync();
      RecordRescanAll(now);
      return;
    }
    auto it = dirs_by_wd_.find(wd);
    if (it == dirs_by_wd_.end()) return;      // a watch we already dropped
    const std::string dir = it->second.path;  // a copy: the handlers below may erase the record

    if ((mask & IN_IGNORED) != 0) {  // the kernel dropped the watch (deleted, unmounted)
      Forget(wd);
      if (wd == root_wd_) {
        RecordRescanAll(now);
      } else {
        Record(dir, FileEventType::kRescanDir, now);
      }
      return;
    }
    if ((mask & (IN_DELETE_SELF | IN_MOVE_SELF)) != 0) {
      // Normally the parent's IN_DELETE / IN_MOVED_FROM has already dropped the watch and this
      // event is stale; the root has no watched parent, and its paths are now all in question.
      if (wd == root_wd_) {
        RecordRescanAll(now);
      } else {
        UnwatchTree(dir);
        Record(dir, FileEventType::kRescanDir, now);
      }
      return;
    }
    if (name.empty() || IsHidden(name)) return;
    std::string path = JoinPath(dir, name);

    if ((mask & IN_ISDIR) != 0) {
      if ((mask & (IN_CREATE | IN_MOVED_TO)) != 0) {
        // Files may have been written before this watch existed: the consumer rescans the
        // directory after the batch, by which time the watch is in place.
        WatchNewDirectory(path);
        Record(std::move(path), FileEventType::kRescanDir, now);
      } else if ((mask & (IN_DELETE | IN_MOVED_FROM)) != 0) {
        UnwatchTree(path);  // a rename within the tree is re-watched by its IN_MOVED_TO
        Record(std::move(path), FileEventType::kRescanDir, now);
      }
      return;
    }
    if ((mask & IN_CLOSE_WRITE) != 0) {
      Record(std::move(path), FileEventType::kChanged, now);
    } else if ((mask & IN_MOVED_TO) != 0) {
      if (!IsSymlinkToDirectory(path)) Record(std::move(path), FileEventType::kChanged, now);
    } else if ((mask & IN_CREATE) != 0) {
      if (CreateIsComplete(path)) Record(std::move(path), FileEventType::kChanged, now);
    } else if ((mask & (IN_DELETE | IN_MOVED_FROM)) != 0) {
      Record(std::move(path), FileEventType::kRemoved, now);
    }
  }

  // ---- Debouncing. ----

  void Touch(Clock::time_point now) {
    if (!batch_open_) first_event_ = now;
    batch_open_ = true;
    last_event_ = now;
  }

  // The later event for a path replaces the earlier one.
  void Record(std::string path, FileEventType type, Clock::time_point now) {
    Touch(now);
    if (rescan_all_) return;
    pending_[std::move(path)] = type;
    if (pending_.size() > options_.max_batch_paths) RecordRescanAll(now);
  }

  void RecordRescanAll(Clock::time_point now) {
    Touch(now);
    rescan_all_ = true;
    pending_.clear();
  }

  void Deliver() {
    std::vector<FileEvent> batch;
    if (rescan_all_) {
      batch.push_back(FileEvent{FileEventType::kRescanAll, root_});
    } else {
      batch.reserve(pending_.size());
      for (auto& [path, type] : pending_) batch.push_back(FileEvent{type, path});  // path order
    }
    pending_.clear();
    rescan_all_ = false;
    batch_open_ = false;
    // Nothing may throw across the thread boundary; a throwing callback is a bug in the owner.
    try {
      callback_(std::move(batch));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "cortex: watcher: callback threw: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "cortex: watcher: callback threw a non-std exception\n");
    }
  }

  const std::string root_;
  const WatcherOptions options_;
  const WatchCallback callback_;

  int inotify_fd_ = -1;
  int wake_fd_ = -1;  // eventfd; written once by the destructor
  int root_wd_ = -1;
  std::thread thread_;
  std::atomic<size_t> watched_count_{0};

  // Owned by Init(), then by the thread.
  std::unordered_map<int, WatchedDir> dirs_by_wd_;
  std::map<std::string, int> wd_by_path_;  // ordered: a subtree is one contiguous range
  std::map<InodeKey, int> wd_by_inode_;
  bool warned_limit_ = false;

  std::map<std::string, FileEventType> pending_;  // at most max_batch_paths entries
  bool rescan_all_ = false;
  bool batch_open_ = false;
  Clock::time_point first_event_;
  Clock::time_point last_event_;
};

}  // namespace

Result<std::unique_ptr<Watcher>> Watcher::Start(std::string root, WatcherOptions options,
                                                WatchCallback callback) {
  if (root.empty()) return InvalidArgumentError("watch root is empty");
  if (!callback) return InvalidArgumentError("watcher callback is empty");
  if (options.quiet.count() < 0 || options.max_delay.count() < 0) {
    return InvalidArgumentError("watcher quiet and max_delay must not be negative");
  }
  std::string normalized = NormalizeRoot(root);
  struct stat st;
  if (::stat(normalized.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return InvalidArgumentError("watch root '" + root + "' does not exist");
    return InvalidArgumentError("watch root '" + root + "': " + ErrnoText(err));
  }
  if (!S_ISDIR(st.st_mode)) {
    return InvalidArgumentError("watch root '" + root + "' is not a directory");
  }
  auto impl = std::make_unique<WatcherImpl>(std::move(normalized), options, std::move(callback));
  CORTEX_RETURN_IF_ERROR(impl->Init());
  impl->StartThread();
  return std::unique_ptr<Watcher>(std::move(impl));
}

}  // namespace cortex::registry
