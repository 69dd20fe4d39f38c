// The `cortex` command line. Verbs talk to a running server over HTTP (--server), except
// `serve` (handed to the daemon through a callback, so this module never links services),
// `validate` and `schema` (local, so they work in CI and editors without a server).
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace cortex::cli {

struct ServeFlags {
  std::optional<std::string> config;  // cortex.yml path
  std::optional<std::string> manifests, data_dir, listen, log_level, registry_listen;
  bool strict = false;
  bool no_watch = false;
  bool service_ports = false;  // open the seed's per-service ports (registry 8082)
};

using ServeFn = std::function<int(const ServeFlags&)>;

// Parses argv and runs the verb; returns the process exit code.
int Run(int argc, char** argv, const ServeFn& serve);

}  // namespace cortex::cli
