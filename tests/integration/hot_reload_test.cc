// Integration tests of hot reload: the real `cortex serve` watching its manifests folder, changed
// on disk while it runs. Every wait is a condition wait with a deadline.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "integration/api_reply.h"
#include "integration/daemon.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::testing::HasSubstr;

// How long a change on disk may take to be served. The watcher debounces for milliseconds; this
// is generous for loaded CI machines.
constexpr std::chrono::seconds kDeadline{10};

std::string ToolYaml(const std::string& name, const std::string& summary = "a test tool") {
  return "kind: Tool\nname: " + name + "\nversion: \"1.0\"\nsummary: " + summary +
         "\ndescription: A tool for the hot reload tests.\nimplementation:\n  type: api\n";
}

// GET a manifest: its JSON, or null when it is not served (or on any failure).
Json Manifest(Daemon& d, const std::string& kind, const std::string& name) {
  int status = 0;
  Json j = d.GetJson("/registry/manifest/" + kind + "/" + name, &status);
  return status == 200 ? j : Json(nullptr);
}

// The served summary of a tool ("" when not served).
std::string Summary(Daemon& d, const std::string& name) {
  Json j = Manifest(d, "tool", name);
  if (!j.is_object()) return "";
  return j["manifest"].value("summary", "");
}

bool WaitForSummary(Daemon& d, const std::string& name, const std::string& summary) {
  return WaitFor([&] { return Summary(d, name) == summary; }, kDeadline);
}

bool WaitForGone(Daemon& d, const std::string& kind, const std::string& name) {
  return WaitFor(
      [&] {
        int status = 0;
        d.GetJson("/registry/manifest/" + kind + "/" + name, &status);
        return status == 404;
      },
      kDeadline);
}

// The /registry/errors entry of a file, or null.
Json ErrorEntry(Daemon& d, const std::string& rel_path) {
  Json errors = d.GetJson("/registry/errors");
  if (!errors.is_object()) return nullptr;
  for (const Json& e : errors["errors"]) {
    if (e["path"] == rel_path) return e;
  }
  return nullptr;
}

// Writes `text` to a hidden temp file beside `path` and renames it over `path`: how editors and
// atomic writers save.
void AtomicWrite(const fs::path& path, const std::string& text) {
  fs::path tmp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  WriteFile(tmp, text);
  fs::rename(tmp, path);
}

// Reads /registry/events on its own thread and keeps every event.
class EventCollector {
 public:
  explicit EventCollector(Daemon& d) : daemon_(d) {
    thread_ = std::thread([this] {
      http::ClientOptions opts;
      opts.read_timeout = std::chrono::seconds(20);
      http::Client c(daemon_.url(), opts);
      Status st = c.Stream("/registry/events", [this](const http::SseEvent& ev) {
        std::lock_guard l(mu_);
        events_.push_back(ev);
        cv_.notify_all();
        return !stop_;
      });
      std::lock_guard l(mu_);
      status_ = st;
      done_ = true;
      cv_.notify_all();
    });
  }
  // The stream ends when its predicate is met (Until) or the server stops; if neither happened,
  // stop the server so the thread can end.
  ~EventCollector() {
    {
      std::unique_lock l(mu_);
      stop_ = true;
      if (!cv_.wait_for(l, std::chrono::milliseconds(10), [&] { return done_; })) {
        l.unlock();
        daemon_.Stop();
      }
    }
    thread_.join();
  }

  // The number of events received so far: a mark to wait for events after.
  size_t Count() {
    std::lock_guard l(mu_);
    return events_.size();
  }

  // Waits until an event received after the first `since` ones satisfies `pred`.
  bool WaitForEvent(const std::function<bool(const http::SseEvent&)>& pred, size_t since = 0,
                    std::chrono::milliseconds timeout = kDeadline) {
    std::unique_lock l(mu_);
    auto found = [&] {
      return events_.size() > since &&
             std::any_of(events_.begin() + static_cast<long>(since), events_.end(), pred);
    };
    cv_.wait_for(l, timeout, [&] { return found() || done_; });
    return found();
  }

  std::vector<http::SseEvent> events() {
    std::lock_guard l(mu_);
    return events_;
  }

 private:
  Daemon& daemon_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<http::SseEvent> events_;
  bool stop_ = false;
  bool done_ = false;
  Status status_;
};

bool IsEvent(const http::SseEvent& ev, const std::string& type, const std::string& key) {
  if (ev.event != type) return false;
  Json j = Json::parse(ev.data, nullptr, false);
  return j.is_object() && j.value("key", "") == key;
}

// ---- Edits, new files, saves, deletes -----------------------------------------------------

TEST(HotReload, EditedFieldIsServed) {
  Daemon d({}, [](const fs::path& m) { WriteFile(m / "tools/calc/tool.yml", ToolYaml("calc")); });
  ASSERT_DAEMON(d);
  ASSERT_EQ(Summary(d, "calc"), "a test tool");
  int gen = d.GetJson("/registry/status")["generation"].get<int>();
  WriteFile(d.manifests_dir() / "tools/calc/tool.yml", ToolYaml("calc", "edited in place"));
  ASSERT_TRUE(WaitForSummary(d, "calc", "edited in place")) << d.log();
  EXPECT_GT(d.GetJson("/registry/status")["generation"].get<int>(), gen);
  Json j = Manifest(d, "tool", "calc");
  EXPECT_EQ(j["stale"], false);
}

TEST(HotReload, NewFileInABrandNewNestedFolder) {
  Daemon d;
  ASSERT_DAEMON(d);
  // Folders and file created in one go: the watcher must rescan the new folders it had no
  // watch on yet.
  WriteFile(d.manifests_dir() / "team/a/b/c/tools/deep/tool.yml", ToolYaml("deep", "nested"));
  ASSERT_TRUE(WaitForSummary(d, "deep", "nested")) << d.log();
  EXPECT_EQ(Manifest(d, "tool", "deep")["path"], "team/a/b/c/tools/deep/tool.yml");

  // And a later change in that folder (now watched).
  WriteFile(d.manifests_dir() / "team/a/b/c/tools/deep/tool.yml", ToolYaml("deep", "again"));
  EXPECT_TRUE(WaitForSummary(d, "deep", "again")) << d.log();

  // A whole folder prepared elsewhere and moved in.
  TempDir staging;
  WriteFile(staging.path() / "pkg/tools/moved/tool.yml", ToolYaml("moved", "moved in"));
  fs::rename(staging.path() / "pkg", d.manifests_dir() / "pkg");
  EXPECT_TRUE(WaitForSummary(d, "moved", "moved in")) << d.log();
}

TEST(HotReload, EditorStyleSaves) {
  Daemon d({}, [](const fs::path& m) { WriteFile(m / "tools/calc/tool.yml", ToolYaml("calc")); });
  ASSERT_DAEMON(d);
  const fs::path file = d.manifests_dir() / "tools/calc/tool.yml";

  // Write a temp file, rename it over the manifest.
  AtomicWrite(file, ToolYaml("calc", "renamed over"));
  ASSERT_TRUE(WaitForSummary(d, "calc", "renamed over")) << d.log();

  // A temp name that is not hidden but not a manifest name either.
  WriteFile(file.string() + ".new", ToolYaml("calc", "from .new"));
  fs::rename(file.string() + ".new", file);
  ASSERT_TRUE(WaitForSummary(d, "calc", "from .new")) << d.log();

  // Backup by rename, then write a fresh file (vim's default).
  fs::rename(file, file.string() + "~");
  WriteFile(file, ToolYaml("calc", "after backup"));
  ASSERT_TRUE(WaitForSummary(d, "calc", "after backup")) << d.log();
  fs::remove(file.string() + "~");

  // Hidden editor files never become manifests.
  WriteFile(d.manifests_dir() / "tools/calc/.tool.yml.swp", ToolYaml("swap", "hidden"));
  WriteFile(d.manifests_dir() / "tools/calc/tool.yml", ToolYaml("calc", "barrier"));
  ASSERT_TRUE(WaitForSummary(d, "calc", "barrier")) << d.log();
  EXPECT_TRUE(Manifest(d, "tool", "swap").is_null());
  EXPECT_EQ(d.GetJson("/registry/status")["conflicts"], 0);
}

TEST(HotReload, DeletedFileIsGone) {
  Daemon d({}, [](const fs::path& m) {
    WriteFile(m / "tools/calc/tool.yml", ToolYaml("calc"));
    WriteFile(m / "tools/keep/tool.yml", ToolYaml("keep"));
    WriteFile(m / "gone/folder/tools/x/tool.yml", ToolYaml("infolder"));
  });
  ASSERT_DAEMON(d);
  fs::remove(d.manifests_dir() / "tools/calc/tool.yml");
  ASSERT_TRUE(WaitForGone(d, "tool", "calc")) << d.log();
  Json list = d.GetJson("/registry/manifests");
  EXPECT_EQ(list["count"], 2) << list.dump();

  // A whole folder removed.
  fs::remove_all(d.manifests_dir() / "gone");
  ASSERT_TRUE(WaitForGone(d, "tool", "infolder")) << d.log();
  EXPECT_FALSE(Manifest(d, "tool", "keep").is_null());
}

TEST(HotReload, RenamedFolderMovesTheManifest) {
  Daemon d({},
           [](const fs::path& m) { WriteFile(m / "old/tools/calc/tool.yml", ToolYaml("calc")); });
  ASSERT_DAEMON(d);
  fs::rename(d.manifests_dir() / "old", d.manifests_dir() / "new");
  ASSERT_TRUE(WaitFor(
      [&] {
        Json j = Manifest(d, "tool", "calc");
        return j.is_object() && j["path"] == "new/tools/calc/tool.yml";
      },
      kDeadline))
      << d.GetJson("/registry/manifests").dump();
  EXPECT_EQ(d.GetJson("/registry/status")["conflicts"], 0);
  // The moved folder is watched under its new name.
  WriteFile(d.manifests_dir() / "new/tools/calc/tool.yml", ToolYaml("calc", "in the new folder"));
  EXPECT_TRUE(WaitForSummary(d, "calc", "in the new folder")) << d.log();
}

TEST(HotReload, ChangedNameReplacesTheEntry) {
  Daemon d({}, [](const fs::path& m) { WriteFile(m / "tools/calc/tool.yml", ToolYaml("calc")); });
  ASSERT_DAEMON(d);
  WriteFile(d.manifests_dir() / "tools/calc/tool.yml", ToolYaml("calculator", "renamed"));
  ASSERT_TRUE(WaitForSummary(d, "calculator", "renamed")) << d.log();
  EXPECT_TRUE(Manifest(d, "tool", "calc").is_null());
  EXPECT_EQ(d.GetJson("/registry/status")["total_manifests"], 1);
}

TEST(HotReload, DependantsFollowTheirDependencies) {
  Daemon d({}, [](const fs::path& m) {
    WriteFile(m / "agents/helper/agent.md",
              "---\nkind: Agent\nname: helper\nimport:\n  tools: [calc]\n---\nHelp.\n");
    WriteFile(m / "tools/script/tool.yml",
              "kind: Tool\nname: script\ndescription: runs a script\nimplementation:\n"
              "  type: python\n  entrypoint: bin/run.py\n");
  });
  ASSERT_DAEMON(d);
  auto resolved = [&](const std::string& kind, const std::string& name) {
    Json j = Manifest(d, kind, name);
    return j.is_object() && j["resolved"] == true;
  };
  ASSERT_FALSE(resolved("agent", "helper"));
  ASSERT_FALSE(resolved("tool", "script"));

  // The imported tool appears: the agent resolves.
  WriteFile(d.manifests_dir() / "tools/calc/tool.yml", ToolYaml("calc"));
  EXPECT_TRUE(WaitFor([&] { return resolved("agent", "helper"); }, kDeadline)) << d.log();
  // ... and disappears again.
  fs::remove(d.manifests_dir() / "tools/calc/tool.yml");
  EXPECT_TRUE(WaitFor([&] { return !resolved("agent", "helper"); }, kDeadline)) << d.log();

  // The script file (not a manifest) appears in a new folder, then goes.
  WriteFile(d.manifests_dir() / "tools/script/bin/run.py", "print('hi')\n");
  EXPECT_TRUE(WaitFor([&] { return resolved("tool", "script"); }, kDeadline))
      << Manifest(d, "tool", "script").dump();
  fs::remove(d.manifests_dir() / "tools/script/bin/run.py");
  EXPECT_TRUE(WaitFor([&] { return !resolved("tool", "script"); }, kDeadline))
      << Manifest(d, "tool", "script").dump();
  // And appears again in the existing folder.
  WriteFile(d.manifests_dir() / "tools/script/bin/run.py", "print('hi again')\n");
  EXPECT_TRUE(WaitFor([&] { return resolved("tool", "script"); }, kDeadline))
      << Manifest(d, "tool", "script").dump();
}

// ---- Broken files keep their last good version --------------------------------------------

TEST(HotReload, InvalidEditKeepsTheLastGoodVersionUntilFixed) {
  Daemon d({}, [](const fs::path& m) { WriteFile(m / "tools/calc/tool.yml", ToolYaml("calc")); });
  ASSERT_DAEMON(d);
  const fs::path file = d.manifests_dir() / "tools/calc/tool.yml";
  const std::string broken = "kind: Tool\nname: calc\nsummary: broken\ndescription: [\n";
  WriteFile(file, broken);
  ASSERT_TRUE(WaitFor(
      [&] {
        Json j = Manifest(d, "tool", "calc");
        return j.is_object() && j["stale"] == true;
      },
      kDeadline))
      << d.log();
  Json j = Manifest(d, "tool", "calc");
  EXPECT_EQ(j["manifest"]["summary"], "a test tool");  // the last good version
  ASSERT_TRUE(j.contains("latest_errors")) << j.dump();
  ASSERT_FALSE(j["latest_errors"].empty());
  EXPECT_EQ(j["latest_errors"][0]["file"], "tools/calc/tool.yml");
  EXPECT_GT(j["latest_errors"][0]["line"].get<int>(), 0);
  EXPECT_THAT(j["latest_errors"][0].value("message", ""), HasSubstr("invalid YAML"));
  // The listing says so too.
  Json list = d.GetJson("/registry/manifests");
  EXPECT_EQ(list["manifests"][0]["stale"], true) << list.dump();

  Json err = ErrorEntry(d, "tools/calc/tool.yml");
  ASSERT_FALSE(err.is_null()) << d.GetJson("/registry/errors").dump();
  EXPECT_EQ(err["serving_last_good"], true);
  EXPECT_FALSE(err["diagnostics"].empty());
  EXPECT_EQ(d.GetJson("/registry/status")["errors"], 1);

  // Fixed: the new version is served and the error is gone.
  WriteFile(file, ToolYaml("calc", "fixed"));
  ASSERT_TRUE(WaitForSummary(d, "calc", "fixed")) << d.log();
  Json fixed = Manifest(d, "tool", "calc");
  EXPECT_EQ(fixed["stale"], false);
  EXPECT_FALSE(fixed.contains("latest_errors"));
  EXPECT_TRUE(ErrorEntry(d, "tools/calc/tool.yml").is_null());
  EXPECT_EQ(d.GetJson("/registry/status")["errors"], 0);
}

TEST(HotReload, InvalidNewFileIsOnlyAnError) {
  Daemon d;
  ASSERT_DAEMON(d);
  WriteFile(d.manifests_dir() / "tools/bad/tool.yml", "kind: Tool\nname: bad\n");
  ASSERT_TRUE(WaitFor([&] { return !ErrorEntry(d, "tools/bad/tool.yml").is_null(); }, kDeadline));
  Json err = ErrorEntry(d, "tools/bad/tool.yml");
  EXPECT_EQ(err["serving_last_good"], false);
  EXPECT_TRUE(Manifest(d, "tool", "bad").is_null());
}

TEST(HotReload, BurstOfRapidEditsEndsWithTheLastContent) {
  Daemon d({}, [](const fs::path& m) { WriteFile(m / "tools/calc/tool.yml", ToolYaml("calc")); });
  ASSERT_DAEMON(d);
  const fs::path file = d.manifests_dir() / "tools/calc/tool.yml";
  for (int i = 0; i < 100; ++i) WriteFile(file, ToolYaml("calc", "edit " + std::to_string(i)));
  ASSERT_TRUE(WaitForSummary(d, "calc", "edit 99")) << "served: " << Summary(d, "calc");
  // Settled on the final text, with no error left from a half-written read.
  ASSERT_TRUE(WaitFor(
      [&] {
        Json j = Manifest(d, "tool", "calc");
        return j.is_object() && j["stale"] == false &&
               ErrorEntry(d, "tools/calc/tool.yml").is_null();
      },
      kDeadline));
  int status = 0;
  Json raw = d.GetJson("/registry/manifest/tool/calc?raw=true", &status);
  EXPECT_EQ(raw.value("raw", ""), ToolYaml("calc", "edit 99"));

  // Atomic saves in a burst too.
  for (int i = 0; i < 100; ++i) AtomicWrite(file, ToolYaml("calc", "atomic " + std::to_string(i)));
  EXPECT_TRUE(WaitForSummary(d, "calc", "atomic 99")) << "served: " << Summary(d, "calc");
}

// ---- The event stream ---------------------------------------------------------------------

TEST(HotReload, EventStreamReportsChangesInOrder) {
  // The folder exists before: the file is only read once it is complete (no rescan of a new
  // folder racing with the write).
  Daemon d({}, [](const fs::path& m) { fs::create_directories(m / "tools/evt"); });
  ASSERT_DAEMON(d);
  const fs::path file = d.manifests_dir() / "tools/evt/tool.yml";
  {
    EventCollector events(d);
    ASSERT_TRUE(events.WaitForEvent([](const auto& ev) { return ev.event == "hello"; }));

    size_t mark = events.Count();
    WriteFile(file, ToolYaml("evt", "one"));
    ASSERT_TRUE(
        events.WaitForEvent([](const auto& ev) { return IsEvent(ev, "added", "Tool/evt"); }, mark));
    mark = events.Count();
    WriteFile(file, ToolYaml("evt", "two"));
    ASSERT_TRUE(events.WaitForEvent(
        [](const auto& ev) { return IsEvent(ev, "updated", "Tool/evt"); }, mark));
    mark = events.Count();
    WriteFile(file, "kind: Tool\nname: evt\ndescription: [\n");
    ASSERT_TRUE(events.WaitForEvent(
        [](const auto& ev) {
          return ev.event == "error" && ev.data.find("tools/evt/tool.yml") != std::string::npos;
        },
        mark));
    mark = events.Count();
    WriteFile(file, ToolYaml("evt", "three"));
    ASSERT_TRUE(
        events.WaitForEvent([](const auto& ev) { return ev.event == "error_cleared"; }, mark));
    mark = events.Count();
    fs::remove(file);
    ASSERT_TRUE(events.WaitForEvent(
        [](const auto& ev) { return IsEvent(ev, "removed", "Tool/evt"); }, mark));

    std::vector<http::SseEvent> all = events.events();
    ASSERT_FALSE(all.empty());
    EXPECT_EQ(all[0].event, "hello");
    Json hello = Json::parse(all[0].data, nullptr, false);
    ASSERT_TRUE(hello.contains("generation")) << all[0].data;
    int64_t last = hello["generation"].get<int64_t>();
    std::vector<std::string> types;
    for (size_t i = 1; i < all.size(); ++i) {
      Json j = Json::parse(all[i].data, nullptr, false);
      ASSERT_TRUE(j.is_object()) << all[i].data;
      EXPECT_EQ(j.value("type", ""), all[i].event);
      int64_t gen = j["generation"].get<int64_t>();
      // Several events of one publish share a generation; generations never go back.
      EXPECT_GE(gen, last) << all[i].event << " " << all[i].data;
      EXPECT_EQ(all[i].id, std::to_string(gen));
      last = gen;
      types.push_back(all[i].event);
    }
    EXPECT_THAT(types,
                ::testing::IsSupersetOf({"added", "updated", "error", "error_cleared", "removed"}));
    // added < updated < removed, strictly increasing generations.
    auto gen_of = [&](const std::string& type) -> int64_t {
      for (const auto& ev : all) {
        if (IsEvent(ev, type, "Tool/evt")) return Json::parse(ev.data)["generation"];
      }
      return -1;
    };
    EXPECT_LT(hello["generation"].get<int64_t>(), gen_of("added"));
    EXPECT_LT(gen_of("added"), gen_of("updated"));
    EXPECT_LT(gen_of("updated"), gen_of("removed"));
  }
}

TEST(HotReload, EventStreamSeesApiChangesToo) {
  Daemon d;
  ASSERT_DAEMON(d);
  EventCollector events(d);
  ASSERT_TRUE(events.WaitForEvent([](const auto& ev) { return ev.event == "hello"; }));
  auto r = d.client().Post("/registry/manifests", ToolYaml("api"), "application/yaml");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->status, 201) << r->body;
  EXPECT_TRUE(events.WaitForEvent([](const auto& ev) { return IsEvent(ev, "added", "Tool/api"); }));
  auto del = d.client().Delete("/registry/manifest/tool/api");
  ASSERT_TRUE(del.ok());
  EXPECT_TRUE(
      events.WaitForEvent([](const auto& ev) { return IsEvent(ev, "removed", "Tool/api"); }));
  // The watcher then sees the same files change: no duplicate events for them.
  size_t added = 0;
  for (const auto& ev : events.events()) added += IsEvent(ev, "added", "Tool/api") ? 1 : 0;
  EXPECT_EQ(added, 1u);
}

// ---- Hostile folders ----------------------------------------------------------------------

TEST(HotReload, SymlinkLoopsDoNotHangOrCrash) {
  // A loop present at startup.
  Daemon d({}, [](const fs::path& m) {
    WriteFile(m / "tools/calc/tool.yml", ToolYaml("calc"));
    fs::create_directory_symlink(m, m / "tools/calc/loop-to-root");
    fs::create_directory_symlink("..", m / "tools/up");
  });
  ASSERT_DAEMON(d);
  Json status = d.GetJson("/registry/status");
  EXPECT_EQ(status["total_manifests"], 1) << status.dump();
  EXPECT_EQ(status["conflicts"], 0) << d.GetJson("/registry/errors").dump();

  // Loops created while watching: a directory loop and a file symlink loop.
  fs::create_directory_symlink(d.manifests_dir(), d.manifests_dir() / "root-again");
  fs::create_symlink("b.yml", d.manifests_dir() / "tools/a.yml");
  fs::create_symlink("a.yml", d.manifests_dir() / "tools/b.yml");
  fs::create_directories(d.manifests_dir() / "fresh");
  fs::create_directory_symlink("../fresh", d.manifests_dir() / "fresh/self");
  WriteFile(d.manifests_dir() / "tools/after/tool.yml", ToolYaml("after", "after the loops"));
  ASSERT_TRUE(WaitForSummary(d, "after", "after the loops")) << d.log();
  EXPECT_EQ(d.GetJson("/healthz")["status"], "ok");

  // A full rescan walks the loops too, and terminates.
  auto sync = d.client().Post("/registry/sync", "", "application/json");
  ASSERT_TRUE(sync.ok());
  EXPECT_EQ(sync->status, 200) << sync->body;
  status = d.GetJson("/registry/status");
  EXPECT_EQ(status["total_manifests"], 2) << status.dump();
  EXPECT_EQ(status["conflicts"], 0) << d.GetJson("/registry/errors").dump();
  EXPECT_EQ(d.Stop(), 0) << d.log();
}

TEST(HotReload, SymlinkedFilesAreReadSymlinkedFoldersAreNot) {
  TempDir outside;
  WriteFile(outside.path() / "folder/tools/hidden/tool.yml", ToolYaml("behind-link"));
  WriteFile(outside.path() / "linked.yml", ToolYaml("linked-file", "through a file link"));
  Daemon d({}, [&](const fs::path& m) {
    fs::create_directory_symlink(outside.path() / "folder", m / "linked-folder");
    fs::create_directories(m / "tools");
    fs::create_symlink(outside.path() / "linked.yml", m / "tools/linked.yml");
  });
  ASSERT_DAEMON(d);
  EXPECT_EQ(Summary(d, "linked-file"), "through a file link");
  EXPECT_TRUE(Manifest(d, "tool", "behind-link").is_null());

  // The same for links that appear while watching.
  WriteFile(outside.path() / "later.yml", ToolYaml("later-file", "linked later"));
  fs::create_symlink(outside.path() / "later.yml", d.manifests_dir() / "tools/later.yml");
  EXPECT_TRUE(WaitForSummary(d, "later-file", "linked later")) << d.log();
  fs::create_directory_symlink(outside.path() / "folder", d.manifests_dir() / "tools/folder-link");
  WriteFile(d.manifests_dir() / "tools/barrier.yml", ToolYaml("barrier", "after the link"));
  ASSERT_TRUE(WaitForSummary(d, "barrier", "after the link")) << d.log();
  EXPECT_TRUE(Manifest(d, "tool", "behind-link").is_null());
  EXPECT_EQ(d.GetJson("/registry/status")["total_manifests"], 3);
}

TEST(HotReload, FolderMovedInWithASymlinkToTheRootAddsNoDuplicates) {
  Daemon d({}, [](const fs::path& m) { WriteFile(m / "tools/calc/tool.yml", ToolYaml("calc")); });
  ASSERT_DAEMON(d);
  // A folder prepared elsewhere holding a manifest and a link back to the manifests root.
  TempDir staging;
  WriteFile(staging.path() / "pkg/tools/pkgtool/tool.yml", ToolYaml("pkgtool", "packaged"));
  fs::create_directory_symlink(d.manifests_dir(), staging.path() / "pkg/link-to-root");
  fs::rename(staging.path() / "pkg", d.manifests_dir() / "pkg");
  ASSERT_TRUE(WaitForSummary(d, "pkgtool", "packaged")) << d.log();

  // Regression: the rescan of the new folder followed the link and listed every manifest a
  // second time under pkg/link-to-root/... (spurious conflicts until the next full sync).
  Json status = d.GetJson("/registry/status");
  EXPECT_TRUE(d.GetJson("/registry/errors")["conflicts"].empty())
      << d.GetJson("/registry/errors").dump();
  EXPECT_EQ(status["total_manifests"], 2) << status.dump();
  EXPECT_EQ(status["conflicts"], 0);
}

TEST(HotReload, SymlinkedAliasFolderDoesNotHideEdits) {
  // Several names for the same folder: which one the startup scan keeps depends on the
  // directory order of the file system, so several aliases make it likely one comes first.
  const std::vector<std::string> aliases = {"a", "alias", "k", "m1", "p", "r", "x", "zz"};
  Daemon d({}, [&](const fs::path& m) {
    WriteFile(m / "tools/calc/tool.yml", ToolYaml("calc"));
    for (const auto& a : aliases) fs::create_directory_symlink("tools", m / a);
  });
  ASSERT_DAEMON(d);
  Json status = d.GetJson("/registry/status");
  ASSERT_EQ(status["total_manifests"], 1);
  EXPECT_EQ(status["conflicts"], 0);
  const std::string served_path = Manifest(d, "tool", "calc")["path"];
  const int gen = status["generation"].get<int>();

  WriteFile(d.manifests_dir() / "tools/calc/tool.yml", ToolYaml("calc", "edited"));
  ASSERT_TRUE(WaitFor([&] { return d.GetJson("/registry/status")["generation"].get<int>() > gen; },
                      kDeadline));
  // One publish per batch: the edit's publish is the one that bumped the generation.
  const std::string summary = Summary(d, "calc");
  Json errors = d.GetJson("/registry/errors");
  // Regression: the startup scan could register the file under an alias path (whichever the
  // directory order gave first); an edit of the real file then was not served and showed up
  // as a conflict. Symlinked folders are not followed now.
  EXPECT_EQ(served_path, "tools/calc/tool.yml");
  EXPECT_EQ(summary, "edited");
  EXPECT_TRUE(errors["conflicts"].empty());
}

TEST(HotReload, HugeAndBinaryFilesAreErrorsAndTheServerStaysUp) {
  Daemon d({}, [](const fs::path& m) { WriteFile(m / "tools/calc/tool.yml", ToolYaml("calc")); });
  ASSERT_DAEMON(d);
  // Written into a folder that is already watched, so each file is read once complete.
  std::string huge = ToolYaml("huge") + "# " + std::string((1u << 20) + 100, 'x') + "\n";
  WriteFile(d.manifests_dir() / "tools/huge.yml", huge);
  std::string binary("kind: Tool\nname: bin\n\0\x01\x02\xff\xfe garbage", 34);
  for (int i = 0; i < 256; ++i) binary.push_back(static_cast<char>(i));
  WriteFile(d.manifests_dir() / "tools/bin.yml", binary);
  WriteFile(d.manifests_dir() / "tools/deep.yml", std::string(10000, '['));

  auto message = [&](const std::string& path) -> std::string {
    Json e = ErrorEntry(d, path);
    if (!e.is_object() || e["diagnostics"].empty()) return "";
    return e["diagnostics"][0].value("message", "");
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        return message("tools/huge.yml").find("over the limit of 1048576 bytes") !=
                   std::string::npos &&
               message("tools/bin.yml").find("binary file") != std::string::npos &&
               message("tools/deep.yml").find("nesting deeper than") != std::string::npos;
      },
      kDeadline))
      << d.GetJson("/registry/errors").dump();
  EXPECT_EQ(ErrorEntry(d, "tools/huge.yml")["serving_last_good"], false);
  EXPECT_TRUE(Manifest(d, "tool", "huge").is_null());
  EXPECT_TRUE(Manifest(d, "tool", "bin").is_null());
  EXPECT_EQ(d.GetJson("/healthz")["status"], "ok");
  EXPECT_EQ(Summary(d, "calc"), "a test tool");
  EXPECT_EQ(d.GetJson("/registry/status")["errors"], 3);

  // A served manifest that grows past the limit keeps its last good version.
  WriteFile(d.manifests_dir() / "tools/calc/tool.yml", huge);
  EXPECT_TRUE(WaitFor(
      [&] {
        Json j = Manifest(d, "tool", "calc");
        return j.is_object() && j["stale"] == true;
      },
      kDeadline));
  EXPECT_EQ(Summary(d, "calc"), "a test tool");
  EXPECT_EQ(d.Stop(), 0) << d.log();
}

}  // namespace
}  // namespace cortex::testing
