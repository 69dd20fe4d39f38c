// Watches a manifests folder recursively (inotify) and reports debounced batches of changes.
// It watches directories, not files, so editors' write-to-temp-then-rename saves are seen as a
// change of the target name. New subfolders are watched as they appear.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace cortex::registry {

enum class FileEventType {
  kChanged,    // a file was written (closed after write), created, or renamed into place
  kRemoved,    // a file was deleted or renamed away
  kRescanDir,  // a directory appeared, vanished or was moved: rescan `path` (and below)
  kRescanAll,  // the kernel queue overflowed: rescan the whole root
};

struct FileEvent {
  FileEventType type;
  std::string path;  // absolute
  friend bool operator==(const FileEvent&, const FileEvent&) = default;
};

struct WatcherOptions {
  // A batch is delivered once no new event arrived for `quiet`, or `max_delay` after its first
  // event, whichever comes first.
  std::chrono::milliseconds quiet{2};
  std::chrono::milliseconds max_delay{50};
  // Bound on the number of distinct paths held in one pending batch; past it the batch collapses
  // to a single kRescanAll.
  size_t max_batch_paths = 4096;
};

using WatchCallback = std::function<void(std::vector<FileEvent>)>;

class Watcher {
 public:
  // Starts watching `root` (which must be an existing directory) on a background thread. The
  // callback runs on that thread, one batch at a time. Paths whose any component starts with '.'
  // (hidden files, editor swap files, .git) are ignored. Symlinked directories are not followed.
  static Result<std::unique_ptr<Watcher>> Start(std::string root, WatcherOptions options,
                                                WatchCallback callback);
  virtual ~Watcher() = default;  // Stops the thread and closes the inotify descriptor.

  // Number of directories currently watched.
  virtual size_t watched_directories() const = 0;
};

}  // namespace cortex::registry
