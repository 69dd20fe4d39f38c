// The manifest registry: every manifest file under a root folder, parsed and validated, with
// imports resolved into a dependency graph. Readers hold an immutable Snapshot; every change
// (file event, API apply/delete, sync) builds a new Snapshot and swaps it in atomically, so a
// reader never sees a half-applied reload. A file that stops parsing keeps its last good version
// in service, and its error is listed until it is fixed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "registry/diagnostics.h"
#include "registry/manifest.h"
#include "registry/parser.h"
#include "registry/watcher.h"

namespace cortex::registry {

// "Tool/calculator"
std::string EntryKey(Kind kind, std::string_view name);

enum class DependencyVia { kImport, kStep, kComponent, kFeed, kFile };

// A reference written in a manifest, prepared once when its file is parsed (paths normalised),
// so that rebuilding a snapshot is only lookups.
struct PreparedRef {
  enum class Form {
    kFile,         // a plain file (persona, entrypoint, compose file): `target` is its path
    kPath,         // a manifest imported by path: `target` is the normalised absolute path
    kName,         // a manifest by bare name: `target` is its key "Kind/name"
    kUnsupported,  // an Amulet/Metadata import
  };
  DependencyVia via = DependencyVia::kImport;
  Form form = Form::kName;
  std::string field;
  std::string reference;
  std::optional<Kind> kind;
  std::string target;
  bool outside_root = false;  // a kPath outside the manifests folder
  friend bool operator==(const PreparedRef&, const PreparedRef&) = default;
};

// One manifest file's latest parse. Immutable once published.
struct FileRecord {
  std::string path;         // absolute, normalised
  std::string rel_path;     // relative to the root (or absolute for files outside it)
  bool external = false;    // outside the root: loaded because something imports it
  std::string text;         // as read
  Diagnostics diagnostics;  // of the latest parse
  // The manifest in service: from the latest parse, or the last good one when the latest failed.
  std::shared_ptr<const Manifest> manifest;
  bool stale = false;  // the manifest in service is an older version (the latest parse failed)
  bool not_a_manifest = false;
  std::chrono::system_clock::time_point loaded_at;
  uint64_t revision = 0;          // bumped on every parse of this file
  std::vector<PreparedRef> refs;  // of `manifest`
};

struct Dependency {
  DependencyVia via = DependencyVia::kImport;
  std::string field;         // where it is written: "import.tools[1]", "steps[0].target", ...
  std::string reference;     // as written
  std::optional<Kind> kind;  // expected kind (none for files)
  std::string target;        // resolved: "Tool/calculator", or the absolute file path
  std::string error;         // why it is unresolved ("" when resolved)
  bool resolved() const { return error.empty(); }
};

// Text computed once from an immutable value, on first use, by whichever thread asks first.
class MemoText {
 public:
  template <class Fn>
  const std::string& Get(Fn&& compute) const {
    std::call_once(once_, [&] { text_ = compute(); });
    return text_;
  }

 private:
  mutable std::once_flag once_;
  mutable std::string text_;
};

// A manifest in service.
struct Entry {
  std::shared_ptr<const FileRecord> file;
  const Manifest& manifest() const { return *file->manifest; }
  Kind kind() const { return file->manifest->kind(); }
  const std::string& name() const { return file->manifest->name(); }
  std::string key;
  std::vector<Dependency> dependencies;
  std::vector<std::string> problems;  // unresolved dependencies, cycles
  bool resolved() const { return problems.empty(); }
  // The API's JSON rendering of this entry: entries never change once published, so it is
  // rendered once per entry instead of once per request.
  MemoText rendered;
};

struct Conflict {
  std::string key;
  std::string served_path;   // the file whose manifest is served
  std::string ignored_path;  // the file that declares the same (kind, name) too
};

// A file whose latest parse failed (whether or not an older version is in service).
struct FileError {
  std::shared_ptr<const FileRecord> file;
};

class Snapshot {
 public:
  uint64_t generation() const { return generation_; }
  std::chrono::system_clock::time_point created_at() const { return created_at_; }
  const std::vector<std::shared_ptr<const Entry>>& entries() const { return entries_; }
  const Entry* Find(Kind kind, std::string_view name) const;
  const Entry* FindKey(std::string_view key) const;
  std::vector<const Entry*> List(std::optional<Kind> kind) const;
  const std::vector<FileError>& errors() const { return errors_; }
  const std::vector<Conflict>& conflicts() const { return conflicts_; }
  // Every file considered (manifests, failures, non-manifests), by absolute path.
  const std::map<std::string, std::shared_ptr<const FileRecord>>& files() const { return files_; }

  // The transitive dependencies of an entry, each after its own dependencies (the order to
  // load/deploy them in), without the entry itself. Unresolved references are skipped here;
  // they are listed on the entries.
  std::vector<const Entry*> DependencyOrder(const Entry& root) const;

 private:
  friend class Registry;
  friend class SnapshotBuilder;
  uint64_t generation_ = 0;
  std::chrono::system_clock::time_point created_at_;
  std::vector<std::shared_ptr<const Entry>> entries_;  // sorted by kind, then name
  // Key -> index in entries_. Shared with the next snapshot when an edit keeps the key set.
  std::shared_ptr<const std::unordered_map<std::string, size_t>> by_key_;
  std::vector<FileError> errors_;
  std::vector<Conflict> conflicts_;
  std::map<std::string, std::shared_ptr<const FileRecord>> files_;
};

// What changed between two snapshots, for subscribers (the API's event stream, the log).
struct RegistryEvent {
  enum class Type { kAdded, kUpdated, kRemoved, kError, kErrorCleared, kResync };
  Type type;
  uint64_t generation = 0;
  std::string key;   // "Tool/calculator" (empty for file-level events)
  std::string path;  // the file
  std::string message;
};
std::string_view EventTypeName(RegistryEvent::Type type);

struct RegistryOptions {
  std::string root;  // the manifests folder
  ParserOptions parser;
  int load_threads = 0;  // 0: one per core
  size_t max_files = 100'000;
  size_t subscriber_queue = 1024;  // events buffered per subscriber before it is resynced
  // A file listing the manifests written by Apply (posted through the API), one absolute path a
  // line, kept across restarts; "" = not tracked. See WrittenByApi.
  std::string applied_index;
};

// A subscriber's bounded queue. When it overflows, the queued events are replaced by one
// kResync (the subscriber should re-read the registry).
class Subscription {
 public:
  // Waits up to `timeout` for events; returns what is queued (possibly nothing).
  std::vector<RegistryEvent> Wait(std::chrono::milliseconds timeout);

 private:
  friend class Registry;
  Mutex mu_;  // after the Registry's subs_mu_
  std::condition_variable cv_;
  std::deque<RegistryEvent> queue_ CORTEX_GUARDED_BY(mu_);
  size_t capacity_ = 1024;  // set before it is shared
  bool closed_ CORTEX_GUARDED_BY(mu_) = false;
};

struct ApplyResult {
  std::string key;
  std::string path;
  bool created = false;
  Diagnostics diagnostics;  // warnings
};

class Registry {
 public:
  explicit Registry(RegistryOptions options);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Scans the whole root (in parallel) and publishes a fresh snapshot. Also what
  // POST /registry/sync does.
  Status LoadAll();
  // Applies watcher events: re-reads changed files, drops removed ones, publishes.
  void ApplyEvents(const std::vector<FileEvent>& events);
  // Starts / stops watching the root; events are applied as they arrive.
  Status StartWatching(WatcherOptions options = {});
  void StopWatching();

  std::shared_ptr<const Snapshot> snapshot() const;

  // Validates `text` as a manifest and, when it is valid, writes it into the root (atomically:
  // temp file + rename) and publishes. Replaces the file of the same (kind, name) if there is
  // one, else writes <root>/<kind>s/<name>/<kind>.yml (or .md for Markdown). Invalid text
  // changes nothing and returns the diagnostics as an InvalidArgument error. `admit` (optional)
  // is asked with the valid manifest's kind and name before anything is written; its error is
  // returned and nothing is written (the caller's scope, say).
  Result<ApplyResult> Apply(std::string_view text, FileFormat format, Diagnostics* diagnostics,
                            const std::function<Status(Kind, std::string_view)>& admit = nullptr);
  // Deletes the file that declares (kind, name) and publishes.
  Status Delete(Kind kind, std::string_view name);
  // True when the manifest file at `path` was written by Apply (posted through the API) rather
  // than put on disk by its owner: such manifests read only the environment variables on an
  // allow-list (EnvAllowList). Stays true if the file is edited on disk afterwards.
  bool WrittenByApi(const std::string& path) const;

  std::shared_ptr<Subscription> Subscribe();
  void Unsubscribe(const std::shared_ptr<Subscription>& subscription);

  const RegistryOptions& options() const { return options_; }

 private:
  // Reads and parses one file. Returns `previous` itself when the text is unchanged.
  std::shared_ptr<const FileRecord> ParseFile(
      const std::string& path, bool external,
      const std::shared_ptr<const FileRecord>& previous) const;
  struct FileChange {
    std::string path;
    std::shared_ptr<const FileRecord> before, after;  // either may be null (added, removed)
  };
  // Rebuilds the whole snapshot from files_ and publishes it.
  void Publish(std::vector<RegistryEvent>* extra_events) CORTEX_REQUIRES(write_mu_);
  // Publishes content-only edits (same kind, name and references in files whose manifests are
  // served) by replacing just those entries; false when the changes need a full rebuild.
  bool PublishEdits(const std::vector<FileChange>& changes) CORTEX_REQUIRES(write_mu_);
  void Notify(const std::vector<RegistryEvent>& events);
  void RescanDir(const std::string& dir, std::vector<std::string>* changed,
                 std::vector<std::string>* removed) CORTEX_REQUIRES(write_mu_);
  // Re-reads `changed` and drops `removed`; returns what actually changed.
  std::vector<FileChange> ReloadPaths(const std::vector<std::string>& changed,
                                      const std::vector<std::string>& removed)
      CORTEX_REQUIRES(write_mu_);
  std::vector<std::string> ListManifestFiles(const std::string& dir) const;
  std::string RelPath(const std::string& abs) const;

  RegistryOptions options_;
  std::string root_;  // absolute, normalised, no trailing slash

  // Lock order: write_mu_ first; applied_mu_, snapshot_mu_ and subs_mu_ are taken under it.
  mutable Mutex write_mu_;  // serialises writers: loads, events, apply, delete
  // Paths written by Apply (options_.applied_index), bounded by the manifests' count.
  mutable Mutex applied_mu_ CORTEX_ACQUIRED_AFTER(write_mu_);
  std::set<std::string> applied_ CORTEX_GUARDED_BY(applied_mu_);
  Status SaveApplied() const CORTEX_REQUIRES(applied_mu_);
  std::map<std::string, std::shared_ptr<const FileRecord>> files_ CORTEX_GUARDED_BY(write_mu_);
  std::unordered_map<std::string, bool> exists_cache_ CORTEX_GUARDED_BY(write_mu_);
  uint64_t generation_ CORTEX_GUARDED_BY(write_mu_) = 0;

  mutable Mutex snapshot_mu_ CORTEX_ACQUIRED_AFTER(write_mu_);
  std::shared_ptr<const Snapshot> snapshot_ CORTEX_GUARDED_BY(snapshot_mu_);

  Mutex subs_mu_ CORTEX_ACQUIRED_AFTER(write_mu_);
  std::vector<std::shared_ptr<Subscription>> subscribers_ CORTEX_GUARDED_BY(subs_mu_);

  std::unique_ptr<Watcher> watcher_ CORTEX_GUARDED_BY(write_mu_);
};

}  // namespace cortex::registry
