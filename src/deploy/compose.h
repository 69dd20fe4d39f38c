// The Compose CLI wrapper of the compose driver: `docker compose` (v2 plugin) when the docker CLI
// has it, else `docker-compose` (v1). Every command runs through an exec::ProcessRunner with an
// argv (no shell), a minimal environment, the project folder as working directory and a
// timeout. Cortex's labels reach everything Compose creates through a generated override file
// (see docs/deploy-docker.md).
//
// Thread-safe when the runner is (the real one is): a ComposeCli is immutable after Detect.
//
// Errors of every operation: InvalidArgument for a bad project (relative compose file, missing
// folder, malformed env entry, unknown service); a CLI exiting non-zero is FailedPrecondition
// (Unavailable when it could not reach the daemon) whose message is
// "<cli> <verb> (project <name>) failed (exit N): <last 20 lines of its stderr>"; a timeout is
// DeadlineExceeded. Down/Stop/Start/Restart need the compose file to be readable (v1 loads it);
// when it is gone, remove by label with docker::Client::RemoveContainers/RemoveNetworks.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "exec/process.h"

namespace cortex::deploy {

struct ComposeProject {
  std::string name;          // the Compose project name, e.g. ComposeProjectName(relic)
  std::string compose_file;  // absolute path of the user's compose file
  std::string project_dir;   // working directory of the CLI; "" = the compose file's folder
  // Added to every service (so to every container), to the networks and volumes the file
  // declares, and to the default network, e.g. {"cortex.managed","true"},{"cortex.relic",name}.
  std::map<std::string, std::string> labels;
  // "KEY=VALUE" for ${VAR} interpolation in the compose file, added to the CLI's environment
  // (PATH, HOME and DOCKER_HOST are Cortex's and cannot be overridden from here).
  std::vector<std::string> env;
  std::string override_dir;  // where <name>.override.yml is written ("" = no labels added)
  // Networks created outside the project (e.g. a monument's) that every service joins, beside
  // the project's own default network. Written in the override file (so needs override_dir).
  std::vector<std::string> external_networks;
};

struct CommandResult {
  int exit_code = 0;
  std::string stdout_data, stderr_data;
  std::chrono::milliseconds duration{0};
};

struct ComposeOptions {
  std::string path_env;     // PATH: finds the CLI, and is passed to it
  std::string home;         // HOME for the CLI (its ~/.docker config); "" = not set
  std::string docker_host;  // DOCKER_HOST for the CLI; "" = the default socket
  std::shared_ptr<exec::ProcessRunner> runner;  // null = exec::MakeProcessRunner()
};

// "cortex_" + the relic name lowercased, characters Compose rejects replaced by '_'.
std::string ComposeProjectName(std::string_view relic);

class ComposeCli {
 public:
  // Prefers `docker compose` (probed once with `docker compose version`), else `docker-compose`;
  // FailedPrecondition naming both when neither is usable. Programs are resolved to absolute
  // paths through options.path_env.
  static Result<ComposeCli> Detect(ComposeOptions options);
  static Result<ComposeCli> Detect(const std::string& path_env);

  // argv prefix: {"/usr/bin/docker", "compose"} or {"/usr/bin/docker-compose"}.
  const std::vector<std::string>& command() const { return command_; }
  bool is_plugin() const { return command_.size() == 2; }
  // "docker compose" or "docker-compose", for messages.
  std::string display_name() const { return is_plugin() ? "docker compose" : "docker-compose"; }

  // `config -q`. NotFound when the compose file is missing, InvalidArgument naming it (and the
  // CLI's explanation) when it is invalid.
  Result<CommandResult> Validate(const ComposeProject& project) const;
  // `config --services`, in the CLI's order (v1 sorts them).
  Result<std::vector<std::string>> Services(const ComposeProject& project) const;

  // Writes <override_dir>/<name>.override.yml (atomically) adding project.labels to every
  // service, declared network and volume, and the default network; returns its path.
  Result<std::string> WriteOverride(const ComposeProject& project) const;

  // `up -d --remove-orphans [--scale svc=n]...` after (re)writing the override. A service in
  // `scale` that the file does not have is InvalidArgument. Timeout 300 s (image pulls).
  Result<CommandResult> Up(const ComposeProject& project,
                           const std::map<std::string, int>& scale = {}) const;
  // `down --remove-orphans -v -t N`: containers, networks and volumes of the project.
  Result<CommandResult> Down(const ComposeProject& project,
                             std::chrono::seconds stop_timeout) const;
  Result<CommandResult> Stop(const ComposeProject& project,
                             std::chrono::seconds stop_timeout) const;
  Result<CommandResult> Start(const ComposeProject& project) const;
  Result<CommandResult> Restart(const ComposeProject& project,
                                std::chrono::seconds stop_timeout) const;
  // `up -d --no-recreate --scale svc=N svc`. An unknown service is InvalidArgument naming it and
  // the known ones. Other services are left alone.
  Result<CommandResult> Scale(const ComposeProject& project, const std::string& service,
                              int replicas) const;

 private:
  struct Config;  // what WriteOverride and the scale checks need from `config`

  ComposeCli(std::vector<std::string> command, ComposeOptions options)
      : command_(std::move(command)), options_(std::move(options)) {}

  // Runs the CLI with the project's files and `args`. With `check_exit`, an exit code other
  // than 0 is an error carrying the tail of stderr.
  Result<CommandResult> Run(const ComposeProject& project, bool with_override,
                            const std::vector<std::string>& args, std::chrono::milliseconds timeout,
                            bool check_exit = true) const;
  Result<Config> LoadConfig(const ComposeProject& project) const;
  Result<std::string> WriteOverrideFrom(const ComposeProject& project, const Config& config) const;
  std::string OverridePath(const ComposeProject& project) const;

  std::vector<std::string> command_;
  ComposeOptions options_;
};

}  // namespace cortex::deploy
