// `cortex backup FILE` and `cortex restore FILE`: the whole state of a server in one archive
// (a ustar file): the Store's database (SQLite online backup, so the server may keep running),
// the list of manifests posted through the API, the agent recordings, and the manifests folder.
//
//   state/cortex.db
//   state/api-manifests.txt     paths relative to the manifests folder
//   state/recordings/...
//   manifests/...
//   cortex-backup.json          {"format": 1, "cortex": version, "created_ms", "files": n}
//
// Not in it: process relics' working folders (<data-dir>/relics) and what Docker keeps for
// compose relics (their volumes): back those up with the services' own tools.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace cortex::api {

struct BackupPaths {
  std::string data_dir;
  std::string manifests_dir;
};

struct BackupSummary {
  int64_t files = 0;     // manifests and recordings
  int64_t db_bytes = 0;  // the database copy
  int64_t archive_bytes = 0;
};

// Writes the archive to `archive` (a new file; it is written next to it and renamed into place,
// so a failed backup leaves nothing half-written).
Result<BackupSummary> WriteBackup(const BackupPaths& paths, const std::string& archive);

// Restores `archive` into `paths`. Refused while a server runs on the data dir, and, unless
// `force`, when the data dir already has a database or the manifests folder has files. The
// archive is read and checked whole into a staging folder first (names, sizes, the database
// opens and migrates): a damaged or hostile archive changes nothing. With `force`, the
// manifests folder that was there is kept beside it as <manifests>.before-restore-<time>.
Result<BackupSummary> RestoreBackup(const std::string& archive, const BackupPaths& paths,
                                    bool force);

}  // namespace cortex::api
