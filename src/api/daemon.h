// `cortex serve`: every service in one process, until SIGINT/SIGTERM.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "api/settings.h"

namespace cortex::api {

// Runs until a stop signal; returns the process exit code. The bound address is written to
// <data_dir>/serve.json ({"pid", "listen", "port"}) once the API is ready, for scripts and tests
// that start it on port 0.
int RunServe(const Settings& settings);

// `cortex auth`: create-key (name, role, scopes), list-keys, revoke-key (id) on the Store in
// settings.data_dir; prints to out (JSON when `json`), errors to err; the exit code.
struct AuthCommand {
  std::string action;  // create-key | list-keys | revoke-key
  std::string name, role, id;
  std::vector<std::string> scopes;
  bool json = false;
};
int RunAuthCommand(const Settings& settings, const AuthCommand& command, std::ostream& out,
                   std::ostream& err);

// `cortex backup FILE` / `cortex restore FILE [--force]` on settings.data_dir and
// settings.manifests (api/backup.h); a summary to out, errors to err; the exit code.
int RunBackupCommand(const Settings& settings, const std::string& action, const std::string& file,
                     bool force, std::ostream& out, std::ostream& err);

}  // namespace cortex::api
