// A network of its own for a sandboxed tool with `network: true`.
//
// The tool's sandbox gets a fresh network namespace (bwrap --unshare-net), as without network;
// pasta (Debian's `passt` package) then gives that namespace an interface, addresses and routes
// copied from the host's, and carries the tool's TCP, UDP and ICMP traffic out through ordinary
// sockets of the host. So the tool reaches what the host reaches over the network, but not the
// host's loopback: 127.0.0.1 inside is the namespace's own, the gateway is not mapped to the host
// (--no-map-gw), and no host port is forwarded into the namespace (-T none) except the ones the
// tool's manifest names (`implementation.host_ports`). Nothing is forwarded from the host into
// the namespace (-t none -u none): the tool cannot serve the host either.
//
// The sequence (docs/sandbox.md): bwrap is spawned with a start gate (--block-fd 3), so it sets
// the namespaces up and waits; NetworkLink::Attach finds the sandbox's first process (bwrap's
// only child), opens its network namespace, and runs `pasta -f ... --netns /proc/self/fd/3`
// with its pid file on a pipe: pasta writes its pid once the namespace's interface is
// configured, which is the signal to open the gate. pasta stays Cortex's child with a
// parent-death signal (setpriv --pdeathsig KILL), and ~NetworkLink stops and reaps it.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace cortex::exec {

struct NetworkLinkOptions {
  std::string pasta_path;            // absolute
  std::string setpriv_path;          // absolute; gives pasta its parent-death signal
  std::vector<int> host_ports;       // host loopback TCP ports reachable from inside, same numbers
  bool join_user_namespace = false;  // the sandbox has its own user namespace (unprivileged)
  std::chrono::milliseconds timeout{10000};  // to find the sandbox and configure its network
};

// pasta's absolute path: `hint` when not empty, else /usr/bin/pasta or /usr/local/bin/pasta;
// "" when none is an executable file.
std::string FindPasta(const std::string& hint);

// The `-T` value pasta gets for the ports: "none", or "8080,5432".
std::string PastaHostPortSpec(const std::vector<int>& host_ports);

class NetworkLink {
 public:
  // Gives the network namespace of `bwrap_pid`'s sandbox (bwrap spawned with --unshare-net and
  // a start gate, still waiting on it) a network through pasta; returns once it is configured.
  // Errors: the sandbox ended or shares the caller's network namespace (FailedPrecondition),
  // pasta failed (Unavailable, with pasta's own message), or the timeout passed
  // (DeadlineExceeded).
  static Result<std::unique_ptr<NetworkLink>> Attach(int bwrap_pid,
                                                     const NetworkLinkOptions& options);
  // Stops pasta (SIGTERM, SIGKILL after a second) and reaps it.
  ~NetworkLink();
  NetworkLink(const NetworkLink&) = delete;
  NetworkLink& operator=(const NetworkLink&) = delete;

  int pasta_pid() const { return pid_; }

 private:
  explicit NetworkLink(int pid) : pid_(pid) {}
  int pid_;
};

}  // namespace cortex::exec
