// cortex: one binary. `cortex serve` runs every service; every other verb is the CLI.
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "api/daemon.h"
#include "api/settings.h"
#include "cli/cli.h"

namespace {

// cortex.yml (the given one, or ./cortex.yml when present), then the environment.
bool LoadSettings(const std::optional<std::string>& config_flag, cortex::api::Settings* s) {
  std::string config = config_flag.value_or("cortex.yml");
  if (config_flag || std::filesystem::exists(config)) {
    if (auto st = cortex::api::LoadSettingsFile(config, s); !st.ok()) {
      std::cerr << "cortex: " << st.message() << "\n";
      return false;
    }
  }
  auto getenv = [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  if (auto st = cortex::api::ApplyEnvironment(getenv, s); !st.ok()) {
    std::cerr << "cortex: " << st.message() << "\n";
    return false;
  }
  return true;
}

int Auth(const cortex::cli::AuthFlags& f) {
  cortex::api::Settings s;
  if (!LoadSettings(f.config, &s)) return 2;
  if (f.data_dir) s.data_dir = *f.data_dir;
  return cortex::api::RunAuthCommand(
      s, {f.action, f.name, f.role, f.id, f.scopes, f.output == "json"}, std::cout, std::cerr);
}

int Backup(const cortex::cli::BackupFlags& f) {
  cortex::api::Settings s;
  if (!LoadSettings(f.config, &s)) return 2;
  if (f.data_dir) s.data_dir = *f.data_dir;
  if (f.manifests) s.manifests = *f.manifests;
  return cortex::api::RunBackupCommand(s, f.action, f.file, f.force, std::cout, std::cerr);
}

int Serve(const cortex::cli::ServeFlags& f) {
  cortex::api::Settings s;
  if (!LoadSettings(f.config, &s)) return 2;
  if (f.manifests) s.manifests = *f.manifests;
  if (f.data_dir) s.data_dir = *f.data_dir;
  if (f.listen) s.listen = *f.listen;
  if (f.log_level) s.log_level = *f.log_level;
  if (f.log_format) s.log_format = *f.log_format;
  if (f.strict) s.registry.strict = true;
  if (f.no_watch) s.registry.watch = false;
  if (f.service_ports && !s.services.registry) s.services.registry = "127.0.0.1:8082";
  if (f.service_ports && !s.services.executor) s.services.executor = "127.0.0.1:8083";
  if (f.service_ports && !s.services.workflows) s.services.workflows = "127.0.0.1:8085";
  if (f.service_ports && !s.services.deployer) s.services.deployer = "127.0.0.1:8084";
  if (f.registry_listen) s.services.registry = *f.registry_listen;
  return cortex::api::RunServe(s);
}

}  // namespace

int main(int argc, char** argv) { return cortex::cli::Run(argc, argv, Serve, Auth, Backup); }
