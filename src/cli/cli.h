// The `cortex` command line. Verbs talk to a running server over HTTP (--server), except
// `serve` (handed to the daemon through a callback, so this module never links services),
// `validate` and `schema` (local, so they work in CI and editors without a server).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace cortex::cli {

struct ServeFlags {
  std::optional<std::string> config;  // cortex.yml path
  std::optional<std::string> manifests, data_dir, listen, log_level, log_format, registry_listen;
  bool strict = false;
  bool no_watch = false;
  bool service_ports = false;  // open the seed's per-service ports (registry 8082)
};

using ServeFn = std::function<int(const ServeFlags&)>;

// `cortex auth create-key|list-keys|revoke-key`: API keys, kept in the data dir's Store (so
// the first key can be made before a server that needs one starts).
struct AuthFlags {
  std::string action;  // create-key | list-keys | revoke-key
  std::string name;    // create-key: the key's name
  std::string role = "viewer";
  std::vector<std::string> scopes;  // create-key: "kind:pattern" each
  std::string id;                   // revoke-key
  std::optional<std::string> config, data_dir;
  std::string output = "text";  // text | json
};
using AuthFn = std::function<int(const AuthFlags&)>;

// `cortex backup FILE` and `cortex restore FILE`: the data dir's state and the manifests folder
// in one archive (on this machine's files: the server may run during a backup, not a restore).
struct BackupFlags {
  std::string action;  // backup | restore
  std::string file;
  std::optional<std::string> config, data_dir, manifests;
  bool force = false;  // restore over an existing state
};
using BackupFn = std::function<int(const BackupFlags&)>;

// Parses argv and runs the verb; returns the process exit code.
int Run(int argc, char** argv, const ServeFn& serve, const AuthFn& auth = nullptr,
        const BackupFn& backup = nullptr);

}  // namespace cortex::cli
