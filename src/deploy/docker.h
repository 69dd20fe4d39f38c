// A small Docker Engine API client over the daemon's unix socket (libcurl), for what the compose
// driver observes: container state, health, ports, logs and stats, plus networks and cleanup by
// label. Creating and changing services is the Compose CLI's job (deploy/compose.h).
//
// Thread-safe: a Client holds only its configuration; every call uses its own libcurl handle.
// Requests use the daemon's own (unversioned) API; the fields read here are stable from API 1.25
// (Docker 1.13) to today.
//
// Errors: the daemon not answering (no socket, refused, timed out) is Unavailable naming the
// socket; HTTP 400 InvalidArgument, 404 NotFound, 409 FailedPrecondition (AlreadyExists where
// noted), 403 FailedPrecondition, other 5xx Internal; messages carry the daemon's own text.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "exec/process.h"

namespace cortex::deploy::docker {

// Labels Compose puts on what it creates.
inline constexpr const char* kComposeProjectLabel = "com.docker.compose.project";
inline constexpr const char* kComposeServiceLabel = "com.docker.compose.service";

// A label filter: every entry must match. An empty value matches the key with any value.
using LabelFilter = std::map<std::string, std::string>;

struct PortBinding {
  int container_port = 0;
  std::string protocol;  // "tcp" | "udp" | "sctp"
  std::string host_ip;   // "0.0.0.0", "::", "127.0.0.1"... (one entry per address family)
  int host_port = 0;
};

struct Container {
  std::string id;
  std::string name;    // without the leading '/'
  std::string image;   // the reference it was created from
  std::string state;   // created | running | paused | restarting | removing | exited | dead
  std::string status;  // the daemon's text, "Up 5 seconds (healthy)"; "" from Inspect
  std::string health;  // "" (no healthcheck) | starting | healthy | unhealthy
  int exit_code = 0;   // of the last run (meaningful when exited/dead)
  int restart_count = 0;
  bool oom_killed = false;
  std::map<std::string, std::string> labels;
  std::string service;             // label com.docker.compose.service, "" when absent
  std::vector<PortBinding> ports;  // published ports only (none while stopped)
  int64_t started_ms = 0;          // Unix ms of the last start, 0 = never
  int64_t finished_ms = 0;         // Unix ms of the last exit, 0 = never / still running
  std::string error;               // the daemon's error starting it ("" when none)
};

struct LogLine {
  bool is_stderr = false;  // always false for a TTY container (one merged stream)
  int64_t time_ms = 0;     // Unix ms the daemon recorded the line
  std::string text;        // without its newline; "\r" stripped for TTY output
};

struct Stats {
  double cpu_percent = 0;           // as `docker stats`: 100 = one full CPU; 0 when not running
  uint64_t memory_usage_bytes = 0;  // usage minus page cache, as `docker stats`
  uint64_t memory_limit_bytes = 0;  // the container's limit, else the host's memory
  uint64_t pids = 0;
};

struct Network {
  std::string id;
  std::string name;
  std::string driver;
  std::map<std::string, std::string> labels;
};

// `tail` value for every line the daemon has.
inline constexpr size_t kAllLines = std::numeric_limits<size_t>::max();

class Client {
 public:
  explicit Client(std::string socket_path = "/var/run/docker.sock",
                  std::chrono::milliseconds timeout = std::chrono::seconds(10));

  const std::string& socket_path() const { return socket_path_; }

  // OK when the daemon answers /_ping; Unavailable ("the Docker daemon is not answering at
  // <socket>: <why>") otherwise, whatever the failure.
  Status Ping() const;

  // Containers matching every label in `label_filter` (running only unless `all`), each
  // completed by an Inspect (health, exit code, times), sorted by name. A container removed
  // between the list and its inspect is left out.
  Result<std::vector<Container>> ListContainers(const LabelFilter& label_filter, bool all) const;
  // One container by id or name; NotFound when there is none. `status` is left empty.
  Result<Container> Inspect(const std::string& id_or_name) const;

  // The last `tail` lines of stdout and stderr, demultiplexed (or as one stream for a TTY
  // container). At most 16 MiB of log data: past it, ResourceExhausted (ask for a smaller tail).
  Result<std::vector<LogLine>> Logs(const std::string& id, size_t tail) const;
  // The last `tail` lines (0 = only new ones), then new lines as they come, each passed to
  // `on_line` (on the calling thread) until it returns false, `cancel` fires (checked at least
  // once a second), or the container stops: all of which return OK. No overall timeout.
  Status FollowLogs(const std::string& id, size_t tail,
                    const std::function<bool(const LogLine&)>& on_line,
                    const exec::CancelToken* cancel = nullptr) const;

  // One sample from /containers/{id}/stats?stream=false. The daemon takes two CPU readings for
  // the percentage, so this takes about a second (up to two).
  Result<Stats> OneShotStats(const std::string& id) const;

  // Creates a bridge network with these labels; when a network of that name exists, returns its
  // id (its labels are left as they are).
  Result<std::string> CreateNetwork(const std::string& name,
                                    const std::map<std::string, std::string>& labels) const;
  // Removes a network by exact name or id. OK when there is no such network (idempotent);
  // FailedPrecondition while containers are still attached.
  Status RemoveNetwork(const std::string& name_or_id) const;
  Result<std::vector<Network>> ListNetworks(const LabelFilter& label_filter) const;

  // Cleanup by label (an empty filter is refused: it would match everything). Call them in this
  // order: containers (force-removed, running or not, with their anonymous volumes), then the
  // networks and named volumes they used. Things already gone are not errors; the first other
  // failure is returned after trying every match.
  Status RemoveContainers(const LabelFilter& label_filter) const;
  Status RemoveNetworks(const LabelFilter& label_filter) const;
  Status RemoveVolumes(const LabelFilter& label_filter) const;

  // Whether the image (name:tag, name@digest or id) is present locally.
  Result<bool> ImageExists(const std::string& ref) const;

 private:
  std::string socket_path_;
  std::chrono::milliseconds timeout_;
};

}  // namespace cortex::deploy::docker
