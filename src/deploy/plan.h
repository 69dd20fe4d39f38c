// A relic manifest resolved against this machine: which driver, the command line with absolute
// paths, the environment, the health probe with its defaults, the base URL and operations. Built
// once per deploy (and again at each restart, so a manifest edit takes effect on restart).
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "registry/manifest.h"

namespace cortex::deploy {

using Ms = std::chrono::milliseconds;

// A health probe with every default filled in.
struct ProbeSpec {
  enum class Type { kNone, kHttp, kTcp, kCommand };
  Type type = Type::kNone;
  std::string url;   // kHttp: the full URL ("" = endpoint on the base URL, resolved late)
  std::string path;  // kHttp: the endpoint, used with the base URL when `url` is empty
  std::string method = "GET";
  int expected_status = 200;
  std::string host = "127.0.0.1";  // kTcp
  int port = 0;                    // kTcp (0 = the relic's port)
  std::vector<std::string> argv;   // kCommand (argv[0] absolute)
  Ms interval{5000};               // between probes once healthy
  Ms timeout{2000};                // one probe
  int retries = 3;                 // consecutive failures before a healthy relic is unhealthy
  Ms start_period{30000};          // how long a starting relic may take to pass its first probe
};
std::string_view ProbeTypeName(ProbeSpec::Type type);

enum class RestartPolicy { kAlways, kOnFailure, kNever };
std::string_view RestartPolicyName(RestartPolicy policy);

// The account a process relic runs as.
struct RunAs {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string name;  // as the manifest (or the default) gave it, for messages
};

struct RelicPlan {
  std::string name;
  std::string driver;  // process | compose
  std::string manifest_dir;
  std::string manifest_version;
  // process
  std::vector<std::string> argv;  // argv[0] absolute
  std::string cwd;                // absolute
  std::vector<std::string> env;   // KEY=VALUE: the whole environment of the process
  std::optional<int> port;
  // Set when the process must change account (the server is root): it starts through setpriv.
  std::optional<RunAs> run_as;
  // Runs inside the tool sandbox (deployment.sandbox): see ProcessDriverOptions::sandbox.
  bool sandbox = false;
  // compose
  std::string compose_file;  // absolute
  // both
  RestartPolicy restart = RestartPolicy::kOnFailure;
  Ms stop_timeout{10000};
  int replicas = 1;
  ProbeSpec health;
  std::string base_url;  // "" when the manifest gives none and it cannot be derived
  std::vector<registry::RelicEndpoint> endpoints;
};

struct PlanContext {
  std::string manifest_path;  // absolute path of the relic's manifest file
  std::string manifest_version;
  std::string data_dir;  // the relic's own writable folder (CORTEX_RELIC_DATA)
  std::string path_env;  // PATH for resolving programs and for the process
  // Who the server runs as, and whether a relic may run as root (deploy.allow_root_relics).
  uint32_t server_uid = 0;
  bool allow_root = false;
  // Variables for `${VAR:-default}` in the manifest's URLs and environment: discovery's
  // `<NAME>_URL` values first, then the server's environment.
  std::function<std::optional<std::string>(std::string_view)> lookup;
};

// InvalidArgument with the manifest field at fault ("deployment.command: ...") when the manifest
// cannot be deployed as written (no deployment block, a type Cortex has no driver for, a program
// that does not exist, a compose file that is missing, ...).
// A process relic's account: `user` ("name", "uid" or "uid:gid"; nullopt = the default). A
// server running as root runs relics as `nobody` unless told otherwise, and as root only when
// the manifest says so and allow_root is set; any other server can only run them as itself.
// nullopt when no change of account is needed.
Result<std::optional<RunAs>> ResolveRunAs(const std::optional<std::string>& user,
                                          uint32_t server_uid, bool allow_root);

Result<RelicPlan> PlanRelic(const registry::Manifest& manifest, const PlanContext& context);

// "${KV_URL:-http://127.0.0.1:8004}" -> "http://127.0.0.1:8004" (unresolved references: error).
Result<std::string> ResolveText(const std::string& text, const PlanContext& context);

// "KV_STORE" for "kv-store": the prefix of the variables a healthy relic publishes.
std::string VariablePrefix(std::string_view relic_name);

}  // namespace cortex::deploy
