// Private to the store module and its tests: the seams of the SQLite store. Nothing outside
// src/store and tests/store includes this; the rest of Cortex uses store.h only.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "store/store.h"

namespace cortex::store::sqlite_internal {

// One step of the schema. Versions are 1, 2, 3, ... in order; a database records the last one
// applied (PRAGMA user_version). A released migration is never edited: a change is a new one.
struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;  // one or more statements, run in the migration's transaction
};

// Cortex's schema, oldest first.
std::span<const Migration> Migrations();

// OpenSqliteStore with another list of migrations (tests: upgrades, a failing migration, a
// database from a newer version).
Result<std::unique_ptr<Store>> OpenWithMigrations(const SqliteOptions& options,
                                                  std::span<const Migration> migrations);

// Runs `sql` (one or more statements) on a plain connection of its own to `path`, without any of
// Cortex's checks, and returns the rows as text (NULL as "NULL"). For tests and diagnostics.
Result<std::vector<std::vector<std::string>>> RawQuery(const std::string& path,
                                                       const std::string& sql);

// The SELECT that ListExecutions runs for a filter with these parts (tests check its plan).
std::string ListExecutionsSql(bool by_name, bool by_status, bool before);

}  // namespace cortex::store::sqlite_internal
