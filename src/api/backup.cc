#include "api/backup.h"

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/json.h"
#include "common/random_id.h"
#include "common/tar.h"
#include "cortex/version.h"
#include "exec/executor.h"
#include "store/store.h"

namespace cortex::api {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

constexpr int kFormat = 1;

// Removes a folder it made, whatever happens.
struct ScratchDir {
  fs::path path;
  ~ScratchDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

fs::path Canonical(const std::string& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  fs::path canon = fs::weakly_canonical(abs, ec);
  return ec ? abs : canon;
}

// Adds the regular files under `dir` as `prefix/<relative path>`; symbolic links and special
// files are skipped (and counted in `*skipped`), and so is the folder `scratch` (the backup's own
// working folder, when the archive is written inside `dir`).
Status AddTree(tar::Writer& w, const fs::path& dir, const std::string& prefix,
               const fs::path& scratch, int64_t* files, int64_t* skipped) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status::Ok();
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) return UnavailableError("cannot read " + dir.string() + ": " + ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return UnavailableError("cannot read " + dir.string() + ": " + ec.message());
    const fs::path rel = fs::relative(it->path(), dir, ec);
    const std::string name = prefix + "/" + rel.generic_string();
    auto st = it->symlink_status(ec);
    if (it->path() == scratch) {
      it.disable_recursion_pending();
      continue;
    }
    if (fs::is_directory(st)) {
      CORTEX_RETURN_IF_ERROR(w.AddDirectory(name));
    } else if (fs::is_regular_file(st)) {
      const int mode = static_cast<int>(st.permissions() & fs::perms::all);
      CORTEX_RETURN_IF_ERROR(w.AddFileFrom(name, it->path(), mode));
      ++*files;
    } else {
      ++*skipped;
    }
  }
  return Status::Ok();
}

// A `cortex serve` on this data dir, when its serve.json names a live process.
std::optional<int> RunningServer(const fs::path& data_dir) {
  std::ifstream in(data_dir / "serve.json");
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  Json j = ParseJsonOrString(text.str());
  if (!j.is_object() || !j.contains("pid") || !j["pid"].is_number_integer()) return std::nullopt;
  int pid = j["pid"].get<int>();
  if (pid <= 0 || (::kill(pid, 0) != 0 && errno == ESRCH)) return std::nullopt;
  return pid;
}

bool HasFiles(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && !fs::is_empty(dir, ec);
}

// Moves `from` to `to` (a rename; a copy and delete across file systems).
Status Move(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (!ec) return Status::Ok();
  fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
  if (ec) {
    return UnavailableError("cannot move " + from.string() + " to " + to.string() + ": " +
                            ec.message());
  }
  fs::remove_all(from, ec);
  return Status::Ok();
}

}  // namespace

Result<BackupSummary> WriteBackup(const BackupPaths& paths, const std::string& archive) {
  const fs::path data = paths.data_dir;
  const fs::path manifests = Canonical(paths.manifests_dir);
  std::error_code ec;
  if (fs::exists(archive, ec)) return AlreadyExistsError(archive + " already exists");
  const fs::path out_dir = fs::absolute(archive, ec).parent_path();
  if (!fs::is_directory(out_dir, ec)) {
    return NotFoundError("the folder of " + archive + " does not exist");
  }
  ScratchDir scratch{Canonical(out_dir) / RandomId(".cortex-backup-", 16)};
  fs::create_directories(scratch.path, ec);
  if (ec) return UnavailableError("cannot write in " + out_dir.string() + ": " + ec.message());
  const fs::path db_copy = scratch.path / "cortex.db";
  CORTEX_RETURN_IF_ERROR(store::BackupSqlite((data / "cortex.db").string(), db_copy.string()));
  BackupSummary summary;
  summary.db_bytes = static_cast<int64_t>(fs::file_size(db_copy, ec));

  // The posted manifests' list, relative to the manifests folder.
  std::string applied;
  {
    std::ifstream in(data / "api-manifests.txt");
    const std::string root = manifests.string() + "/";
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(root, 0) == 0) applied += line.substr(root.size()) + "\n";
    }
  }
  const fs::path tmp = scratch.path / "archive.tar";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return UnavailableError("cannot write " + tmp.string());
    tar::Writer w(out);
    int64_t files = 0, skipped = 0;
    CORTEX_RETURN_IF_ERROR(w.AddFileFrom("state/cortex.db", db_copy, 0600));
    CORTEX_RETURN_IF_ERROR(w.AddFile("state/api-manifests.txt", applied, 0600));
    CORTEX_RETURN_IF_ERROR(
        AddTree(w, data / "recordings", "state/recordings", scratch.path, &files, &skipped));
    CORTEX_RETURN_IF_ERROR(AddTree(w, manifests, "manifests", scratch.path, &files, &skipped));
    // Last, once the counts are known.
    Json meta = {{"format", kFormat},
                 {"cortex", kVersion},
                 {"created_ms", exec::NowMs()},
                 {"files", files},
                 {"skipped_links_and_special_files", skipped}};
    CORTEX_RETURN_IF_ERROR(w.AddFile("cortex-backup.json", DumpJson(meta) + "\n"));
    CORTEX_RETURN_IF_ERROR(w.Finish());
    out.close();
    if (!out) return UnavailableError("cannot write " + tmp.string());
    summary.files = files;
  }
  summary.archive_bytes = static_cast<int64_t>(fs::file_size(tmp, ec));
  fs::rename(tmp, archive, ec);
  if (ec) return UnavailableError("cannot write " + archive + ": " + ec.message());
  return summary;
}

Result<BackupSummary> RestoreBackup(const std::string& archive, const BackupPaths& paths,
                                    bool force) {
  const fs::path data = fs::absolute(paths.data_dir);
  const fs::path manifests = Canonical(paths.manifests_dir);
  if (auto pid = RunningServer(data)) {
    return FailedPreconditionError("a server (pid " + std::to_string(*pid) + ") runs on " +
                                   data.string() +
                                   ": stop it first (or remove its serve.json if it is gone)");
  }
  std::error_code ec;
  if (!force && fs::exists(data / "cortex.db", ec)) {
    return FailedPreconditionError(data.string() +
                                   " already has a database: restore into a fresh data dir, "
                                   "or pass --force to replace it");
  }
  if (!force && HasFiles(manifests)) {
    return FailedPreconditionError(manifests.string() +
                                   " is not empty: restore into a fresh folder, or pass --force "
                                   "(the old one is kept beside it)");
  }
  std::ifstream in(archive, std::ios::binary);
  if (!in) return NotFoundError("cannot read " + archive);

  // 1. Everything into a staging folder beside the data dir, checked.
  fs::create_directories(data.parent_path(), ec);
  ScratchDir staging{data.parent_path() / (RandomId(".cortex-restore-", 16))};
  fs::create_directories(staging.path, ec);
  if (ec) return UnavailableError("cannot write in " + data.parent_path().string());
  std::ofstream file;
  bool has_meta = false, has_db = false;
  std::string meta_text;
  BackupSummary summary;
  Status read = tar::Read(
      in, tar::Limits{},
      [&](const tar::Entry& e) -> Status {
        if (file.is_open()) file.close();
        const bool known = e.name == "cortex-backup.json" || e.name == "state" ||
                           e.name.rfind("state/", 0) == 0 || e.name == "manifests" ||
                           e.name.rfind("manifests/", 0) == 0;
        if (!known) return InvalidArgumentError("unexpected entry '" + e.name + "'");
        if (e.name == "cortex-backup.json") {
          if (e.size > 65536) return InvalidArgumentError("cortex-backup.json is too large");
          has_meta = true;
          return Status::Ok();
        }
        const fs::path target = staging.path / e.name;
        if (e.directory) {
          fs::create_directories(target, ec);
          return ec ? UnavailableError("cannot write " + target.string()) : Status::Ok();
        }
        fs::create_directories(target.parent_path(), ec);
        file.open(target, std::ios::binary | std::ios::trunc);
        if (!file) return UnavailableError("cannot write " + target.string());
        // The archived mode, without setuid/setgid/sticky and without write for others: tools
        // run as the sandbox's own user, which must still read (and execute) them.
        fs::permissions(
            target,
            static_cast<fs::perms>(e.mode & 0755) | fs::perms::owner_read | fs::perms::owner_write,
            ec);
        if (e.name == "state/cortex.db") has_db = true;
        if (e.name.rfind("manifests/", 0) == 0 || e.name.rfind("state/recordings/", 0) == 0) {
          ++summary.files;
        }
        return Status::Ok();
      },
      [&](const tar::Entry& e, std::string_view bytes) -> Status {
        if (e.name == "cortex-backup.json") {
          meta_text.append(bytes);
          return Status::Ok();
        }
        file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        return file ? Status::Ok() : UnavailableError("cannot write " + e.name);
      });
  if (file.is_open()) file.close();
  if (!read.ok()) return InvalidArgumentError(archive + ": " + read.message());
  if (!has_meta || !has_db) {
    return InvalidArgumentError(archive +
                                ": not a Cortex backup (no cortex-backup.json or "
                                "state/cortex.db)");
  }
  Json meta = ParseJsonOrString(meta_text);
  if (!meta.is_object() || meta.value("format", 0) != kFormat) {
    return InvalidArgumentError(archive + ": backup format " +
                                (meta.is_object() ? DumpJson(meta.value("format", Json())) : "?") +
                                " is not one this version reads (" + std::to_string(kFormat) + ")");
  }
  {
    // The database opens (and is migrated when it comes from an older version).
    store::SqliteOptions o;
    o.path = (staging.path / "state/cortex.db").string();
    auto db = store::OpenSqliteStore(o);
    if (!db.ok()) return InvalidArgumentError(archive + ": its database: " + db.status().message());
    summary.db_bytes = static_cast<int64_t>(fs::file_size(o.path, ec));
  }

  // 2. Into place.
  fs::create_directories(data, ec);
  for (const char* name : {"cortex.db", "cortex.db-wal", "cortex.db-shm", "api-manifests.txt"}) {
    fs::remove(data / name, ec);
  }
  CORTEX_RETURN_IF_ERROR(Move(staging.path / "state/cortex.db", data / "cortex.db"));
  {
    std::ifstream list(staging.path / "state/api-manifests.txt");
    std::ofstream out(data / "api-manifests.txt", std::ios::trunc);
    for (std::string line; std::getline(list, line);) {
      if (!line.empty() && tar::CheckName(line).ok()) out << (manifests / line).string() << "\n";
    }
  }
  if (fs::exists(staging.path / "state/recordings", ec)) {
    fs::remove_all(data / "recordings", ec);
    CORTEX_RETURN_IF_ERROR(Move(staging.path / "state/recordings", data / "recordings"));
  }
  if (HasFiles(manifests)) {
    fs::path kept = manifests.string() + ".before-restore-" + std::to_string(exec::NowMs());
    CORTEX_RETURN_IF_ERROR(Move(manifests, kept));
  } else {
    fs::remove(manifests, ec);  // an empty folder
  }
  fs::create_directories(manifests.parent_path(), ec);
  if (fs::exists(staging.path / "manifests", ec)) {
    CORTEX_RETURN_IF_ERROR(Move(staging.path / "manifests", manifests));
  } else {
    fs::create_directories(manifests, ec);
  }
  summary.archive_bytes = static_cast<int64_t>(fs::file_size(archive, ec));
  return summary;
}

}  // namespace cortex::api
