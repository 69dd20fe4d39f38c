#include "deploy/compose.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "common/yaml.h"

namespace cortex::deploy {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr milliseconds kProbeTimeout = seconds(20);   // `docker compose version`
constexpr milliseconds kConfigTimeout = seconds(60);  // `config`: no daemon involved
constexpr milliseconds kUpTimeout = seconds(300);     // may pull images
constexpr milliseconds kStartTimeout = seconds(120);  // `start`
constexpr seconds kStopSlack = seconds(30);           // on top of the stop timeout
constexpr size_t kMaxOutputBytes = 4u << 20;          // per stream, per command
constexpr size_t kStderrTailLines = 20;               // in error messages...
constexpr size_t kStderrTailBytes = 4000;             // ...at most this much

// The last lines of `text`, trimmed, for error messages.
std::string Tail(const std::string& text) {
  std::string t = text;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  size_t start = t.size();
  for (size_t lines = 0; start > 0 && lines < kStderrTailLines; ++lines) {
    size_t nl = t.rfind('\n', start - 1);
    start = nl == std::string::npos ? 0 : nl;
    if (nl == std::string::npos) break;
  }
  if (start > 0) ++start;  // skip the newline itself
  if (t.size() - start > kStderrTailBytes) start = t.size() - kStderrTailBytes;
  return t.substr(start);
}

// When `output` (a failed command's) says an image could not be pulled, a hint on how to get
// it: a machine without a registry builds or imports its images. Empty otherwise.
std::string MissingImageHint(const std::string& output) {
  static constexpr std::string_view kSigns[] = {
      "pull access denied", "repository does not exist",   "manifest unknown",
      "No such image",      "failed to resolve reference", "registry-1.docker.io",
      "not found: manifest"};
  if (std::none_of(std::begin(kSigns), std::end(kSigns),
                   [&](std::string_view sign) { return output.find(sign) != std::string::npos; })) {
    return "";
  }
  // The image's name, where the CLI printed one: "pull access denied for NAME," (compose v1),
  // "No such image: NAME", "Pulling SERVICE (NAME)...".
  std::string image;
  for (std::string_view lead : {"pull access denied for ",
                                "No such image: ", "Error response from daemon: manifest for "}) {
    size_t at = output.find(lead);
    if (at == std::string::npos) continue;
    size_t start = at + lead.size();
    size_t end = output.find_first_of(", \n", start);
    image = output.substr(start, (end == std::string::npos ? output.size() : end) - start);
    break;
  }
  if (image.empty()) {
    if (size_t at = output.find("Pulling "); at != std::string::npos) {
      size_t open = output.find('(', at), close = output.find(')', at);
      size_t nl = output.find('\n', at);
      if (open != std::string::npos && close != std::string::npos && open < close && close < nl) {
        image = output.substr(open + 1, close - open - 1);
      }
    }
  }
  const std::string name = image.empty() ? "IMAGE" : image;
  return "; hint: the image" + (image.empty() ? std::string() : " " + image) +
         " is not on this machine and could not be pulled. Build it first (docker build -t " +
         name + " DIR, or docker import of a root folder as " + name +
         "), or give the service a build: section, then deploy again";
}

std::string Join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

bool Contains(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

// Compose interpolates ${VAR} in every file, ours included: "$" is written "$$".
std::string EscapeDollars(const std::string& text) {
  std::string out;
  for (char c : text) {
    out += c;
    if (c == '$') out += '$';
  }
  return out;
}

std::string SecondsArg(seconds s) { return std::to_string(std::max<int64_t>(0, s.count())); }

bool IsExternal(const yaml::Node* node) {
  if (!node || !node->IsMapping()) return false;
  const yaml::Node* external = node->Find("external");
  if (!external || external->IsNull()) return false;
  if (external->IsMapping()) return true;  // legacy `external: {name: x}`
  return external->AsBool().value_or(false);
}

}  // namespace

std::string ComposeProjectName(std::string_view relic) {
  std::string name = "cortex_";
  for (char c : relic) {
    char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bool ok = (l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '_' || l == '-';
    name += ok ? l : '_';
  }
  return name;
}

// ---------------------------------------------------------------------------------------------

struct ComposeCli::Config {
  std::string version;                // "" when the CLI does not print one (v2)
  std::vector<std::string> services;  // as `config` prints them (v1: sorted)
  std::vector<std::string> networks;  // declared and not external, "default" included
  std::vector<std::string> volumes;   // declared and not external
};

Result<ComposeCli> ComposeCli::Detect(const std::string& path_env) {
  ComposeOptions options;
  options.path_env = path_env;
  return Detect(std::move(options));
}

Result<ComposeCli> ComposeCli::Detect(ComposeOptions options) {
  if (!options.runner) options.runner = exec::MakeProcessRunner();
  std::string plugin_note = "the docker CLI was not found";
  auto docker = exec::ResolveProgram("docker", options.path_env);
  if (docker.ok()) {
    exec::ProcessSpec spec;
    spec.argv = {*docker, "compose", "version"};
    spec.env = {"PATH=" + options.path_env};
    if (!options.home.empty()) spec.env.push_back("HOME=" + options.home);
    spec.limits.timeout = kProbeTimeout;
    spec.limits.max_output_bytes = 64u << 10;
    auto probe = options.runner->Run(spec, nullptr, nullptr);
    if (probe.ok() && probe->reason == exec::EndReason::kExited && probe->exit_code == 0) {
      return ComposeCli({*docker, "compose"}, std::move(options));
    }
    std::string why = probe.ok() ? Tail(probe->stderr_data) : probe.status().message();
    if (probe.ok() && why.empty()) why = probe->reason_text;
    plugin_note = *docker + " has no compose plugin (" + why.substr(0, why.find('\n')) + ")";
  }
  auto v1 = exec::ResolveProgram("docker-compose", options.path_env);
  if (v1.ok()) return ComposeCli({*v1}, std::move(options));
  return FailedPreconditionError(
      "no Docker Compose CLI: neither `docker compose` (" + plugin_note +
      ") nor `docker-compose` (not found) is available in PATH=" + options.path_env +
      "; install the Compose plugin or docker-compose to use the compose driver");
}

std::string ComposeCli::OverridePath(const ComposeProject& project) const {
  return (fs::path(project.override_dir) / (project.name + ".override.yml")).string();
}

Result<CommandResult> ComposeCli::Run(const ComposeProject& project, bool with_override,
                                      const std::vector<std::string>& args, milliseconds timeout,
                                      bool check_exit) const {
  if (project.name.empty()) return InvalidArgumentError("a compose project needs a name");
  if (project.compose_file.empty() || !fs::path(project.compose_file).is_absolute()) {
    return InvalidArgumentError("the compose file must be an absolute path, got '" +
                                project.compose_file + "'");
  }
  std::string dir = project.project_dir.empty()
                        ? fs::path(project.compose_file).parent_path().string()
                        : project.project_dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return InvalidArgumentError("the project folder " + dir + " of compose project " +
                                project.name + " does not exist");
  }

  exec::ProcessSpec spec;
  spec.argv = command_;
  for (const char* a : {"-p", project.name.c_str(), "-f", project.compose_file.c_str()}) {
    spec.argv.push_back(a);
  }
  if (with_override && !project.override_dir.empty() && fs::exists(OverridePath(project), ec)) {
    spec.argv.push_back("-f");
    spec.argv.push_back(OverridePath(project));
  }
  spec.argv.push_back("--project-directory");
  spec.argv.push_back(dir);
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.cwd = dir;

  // The environment: ours first; the project's may not redirect the CLI (PATH, HOME,
  // DOCKER_HOST) and the first value of a key wins.
  std::set<std::string> keys = {"PATH", "HOME", "DOCKER_HOST"};
  spec.env.push_back("PATH=" + options_.path_env);
  if (!options_.home.empty()) spec.env.push_back("HOME=" + options_.home);
  if (!options_.docker_host.empty()) spec.env.push_back("DOCKER_HOST=" + options_.docker_host);
  for (const std::string& kv : project.env) {
    size_t eq = kv.find('=');
    if (eq == 0 || eq == std::string::npos) {
      return InvalidArgumentError("compose project " + project.name + ": environment entry '" + kv +
                                  "' is not KEY=VALUE");
    }
    if (keys.insert(kv.substr(0, eq)).second) spec.env.push_back(kv);
  }
  spec.limits.timeout = timeout;
  spec.limits.max_output_bytes = kMaxOutputBytes;
  spec.limits.kill_on_output_limit = false;

  std::string what = display_name() + " " + args.at(0) + " (project " + project.name + ")";
  auto run = options_.runner->Run(spec, nullptr, nullptr);
  if (!run.ok()) return run.status().WithPrefix("could not run " + what);
  const exec::ProcessResult& r = *run;
  CommandResult result;
  result.exit_code = r.exit_code;
  result.stdout_data = r.stdout_data;
  result.stderr_data = r.stderr_data;
  result.duration = std::chrono::duration_cast<milliseconds>(r.wall);
  std::string tail = Tail(r.stderr_data);
  if (tail.empty()) tail = Tail(r.stdout_data);
  if (r.reason == exec::EndReason::kTimeout) {
    return DeadlineExceededError(what + " " + r.reason_text + (tail.empty() ? "" : ": " + tail));
  }
  if (r.reason != exec::EndReason::kExited) {
    return InternalError(what + " did not finish: " + r.reason_text +
                         (tail.empty() ? "" : ": " + tail));
  }
  if (r.exit_code != 0 && check_exit) {
    std::string message = what + " failed (exit " + std::to_string(r.exit_code) + ")" +
                          (tail.empty() ? "" : ": " + tail);
    bool no_daemon = tail.find("connect to Docker daemon") != std::string::npos ||
                     tail.find("connect to the Docker daemon") != std::string::npos;
    if (no_daemon) return UnavailableError(message);
    return FailedPreconditionError(message + MissingImageHint(r.stderr_data + r.stdout_data));
  }
  if (r.stdout_truncated) {
    return ResourceExhaustedError(what + " printed more than " +
                                  std::to_string(kMaxOutputBytes >> 20) + " MiB");
  }
  return result;
}

Result<CommandResult> ComposeCli::Validate(const ComposeProject& project) const {
  const std::string& file = project.compose_file;
  std::error_code ec;
  if (!file.empty() && fs::path(file).is_absolute()) {
    if (!fs::exists(file, ec)) {
      return NotFoundError("compose file " + file + " of project " + project.name +
                           " does not exist");
    }
    if (!fs::is_regular_file(file, ec)) {
      return InvalidArgumentError("compose file " + file + " is not a regular file");
    }
  }
  CORTEX_ASSIGN_OR_RETURN(CommandResult result,
                          Run(project, /*with_override=*/false, {"config", "-q"}, kConfigTimeout,
                              /*check_exit=*/false));
  if (result.exit_code != 0) {
    std::string why = Tail(result.stderr_data);
    if (why.find("connect to Docker daemon") != std::string::npos ||
        why.find("connect to the Docker daemon") != std::string::npos) {
      return UnavailableError(display_name() + " config failed: " + why);
    }
    return InvalidArgumentError("compose file " + file + " is invalid: " +
                                (why.empty() ? "exit " + std::to_string(result.exit_code) : why));
  }
  return result;
}

Result<std::vector<std::string>> ComposeCli::Services(const ComposeProject& project) const {
  CORTEX_ASSIGN_OR_RETURN(CommandResult r, Run(project, /*with_override=*/false,
                                               {"config", "--services"}, kConfigTimeout));
  std::vector<std::string> services;
  size_t pos = 0;
  while (pos < r.stdout_data.size()) {
    size_t nl = r.stdout_data.find('\n', pos);
    if (nl == std::string::npos) nl = r.stdout_data.size();
    std::string line = r.stdout_data.substr(pos, nl - pos);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    if (!line.empty()) services.push_back(line);
    pos = nl + 1;
  }
  return services;
}

namespace {

// What the override file needs, from a compose document (the user's file, or `config`'s output).
// False when the document has no `services` mapping (then only the CLI can tell).
bool ReadConfig(const yaml::Node& root, std::string* version, std::vector<std::string>* services,
                std::vector<std::string>* networks, std::vector<std::string>* volumes) {
  const yaml::Node* svc = root.Find("services");
  if (!svc || !svc->IsMapping()) return false;
  if (const yaml::Node* v = root.Find("version"); v && v->IsScalar()) *version = v->scalar();
  for (const yaml::Entry& e : svc->entries()) services->push_back(e.key->scalar());
  std::sort(services->begin(), services->end());  // as `config` lists them
  bool default_declared = false;
  if (const yaml::Node* nets = root.Find("networks"); nets && nets->IsMapping()) {
    for (const yaml::Entry& e : nets->entries()) {
      if (e.key->scalar() == "default") default_declared = true;
      if (!IsExternal(e.value)) networks->push_back(e.key->scalar());
    }
  }
  if (!default_declared) networks->push_back("default");
  if (const yaml::Node* vols = root.Find("volumes"); vols && vols->IsMapping()) {
    for (const yaml::Entry& e : vols->entries()) {
      if (!IsExternal(e.value)) volumes->push_back(e.key->scalar());
    }
  }
  return true;
}

}  // namespace

// Read from the user's file itself: running `config` costs a Python start (~0.3 s) per call,
// about half of a deploy. The CLI is asked only for a file whose services it alone can list.
Result<ComposeCli::Config> ComposeCli::LoadConfig(const ComposeProject& project) const {
  Config config;
  const std::string& file = project.compose_file;
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return NotFoundError("compose file " + file + " of project " + project.name +
                         " cannot be read");
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto doc = yaml::Parse(text);
  if (!doc.ok()) {
    // "5:14: mapping values ..." -> "line 5, column 14: mapping values ..."
    std::string why = doc.status().message();
    size_t c1 = why.find(':'), c2 = c1 == std::string::npos ? c1 : why.find(':', c1 + 1);
    if (c2 != std::string::npos && c1 > 0 &&
        std::all_of(why.begin(), why.begin() + static_cast<long>(c1), ::isdigit)) {
      why = "line " + why.substr(0, c1) + ", column " + why.substr(c1 + 1, c2 - c1 - 1) + ":" +
            why.substr(c2 + 1);
    }
    return InvalidArgumentError("compose file " + file + " is invalid: " + why);
  }
  if (!doc->documents().empty() && doc->documents()[0]->IsMapping() &&
      ReadConfig(*doc->documents()[0], &config.version, &config.services, &config.networks,
                 &config.volumes)) {
    return config;
  }
  CORTEX_ASSIGN_OR_RETURN(CommandResult r,
                          Run(project, /*with_override=*/false, {"config"}, kConfigTimeout));
  auto stream = yaml::Parse(r.stdout_data);
  if (!stream.ok() || stream->documents().empty() || !stream->documents()[0]->IsMapping() ||
      !ReadConfig(*stream->documents()[0], &config.version, &config.services, &config.networks,
                  &config.volumes)) {
    return InternalError(display_name() + " config printed something unreadable for project " +
                         project.name +
                         (stream.ok() ? std::string() : ": " + stream.status().message()));
  }
  return config;
}

Result<std::string> ComposeCli::WriteOverride(const ComposeProject& project) const {
  CORTEX_ASSIGN_OR_RETURN(Config config, LoadConfig(project));
  return WriteOverrideFrom(project, config);
}

Result<std::string> ComposeCli::WriteOverrideFrom(const ComposeProject& project,
                                                  const Config& config) const {
  if (project.override_dir.empty()) {
    return InvalidArgumentError("compose project " + project.name + " has no override folder");
  }
  // JSON is YAML: written with nlohmann, every name and label is quoted correctly.
  nlohmann::ordered_json labels = nlohmann::ordered_json::object();
  for (const auto& [k, v] : project.labels) labels[EscapeDollars(k)] = EscapeDollars(v);
  nlohmann::ordered_json doc = nlohmann::ordered_json::object();
  if (!config.version.empty()) doc["version"] = config.version;
  auto section = [&](const char* key, const std::vector<std::string>& names) {
    if (names.empty()) return;
    nlohmann::ordered_json s = nlohmann::ordered_json::object();
    for (const auto& name : names) s[EscapeDollars(name)] = {{"labels", labels}};
    doc[key] = std::move(s);
  };
  section("services", config.services);
  section("networks", config.networks);
  section("volumes", config.volumes);
  if (!project.external_networks.empty()) {
    for (const auto& service : config.services) {
      nlohmann::ordered_json nets = {{"default", nlohmann::ordered_json::object()}};
      for (const auto& n : project.external_networks) {
        nets[EscapeDollars(n)] = nlohmann::ordered_json::object();
      }
      doc["services"][EscapeDollars(service)]["networks"] = std::move(nets);
    }
    for (const auto& n : project.external_networks) {
      doc["networks"][EscapeDollars(n)] = {{"external", true}};
    }
  }

  std::string path = OverridePath(project);
  std::error_code ec;
  fs::create_directories(project.override_dir, ec);
  if (ec) {
    return InternalError("cannot create the folder " + project.override_dir +
                         " for compose override files: " + ec.message());
  }
  static std::atomic<uint64_t> counter{0};
  std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "# Generated by Cortex for compose project " << project.name
        << ": the labels Cortex puts on what Compose creates. Rewritten on every up.\n"
        << DumpJson(doc, 2) << "\n";
    out.close();
    if (!out) {
      fs::remove(tmp, ec);
      return InternalError("cannot write the compose override file " + tmp);
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return InternalError("cannot write the compose override file " + path + ": " + ec.message());
  }
  return path;
}

Result<CommandResult> ComposeCli::Up(const ComposeProject& project,
                                     const std::map<std::string, int>& scale) const {
  CORTEX_ASSIGN_OR_RETURN(Config config, LoadConfig(project));
  std::vector<std::string> args = {"up", "-d", "--remove-orphans"};
  for (const auto& [service, replicas] : scale) {
    if (!Contains(config.services, service)) {
      return InvalidArgumentError("compose project " + project.name + " has no service '" +
                                  service + "' (its services: " + Join(config.services, ", ") +
                                  ")");
    }
    if (replicas < 0) {
      return InvalidArgumentError("service " + service + ": replicas must be >= 0");
    }
    args.push_back("--scale");
    args.push_back(service + "=" + std::to_string(replicas));
  }
  bool with_override = !project.override_dir.empty();
  if (with_override) CORTEX_RETURN_IF_ERROR(WriteOverrideFrom(project, config).status());
  return Run(project, with_override, args, kUpTimeout);
}

Result<CommandResult> ComposeCli::Scale(const ComposeProject& project, const std::string& service,
                                        int replicas) const {
  if (replicas < 0) return InvalidArgumentError("service " + service + ": replicas must be >= 0");
  CORTEX_ASSIGN_OR_RETURN(Config config, LoadConfig(project));
  if (!Contains(config.services, service)) {
    return InvalidArgumentError("compose project " + project.name + " has no service '" + service +
                                "' (its services: " + Join(config.services, ", ") + ")");
  }
  bool with_override = !project.override_dir.empty();
  if (with_override) CORTEX_RETURN_IF_ERROR(WriteOverrideFrom(project, config).status());
  return Run(
      project, with_override,
      {"up", "-d", "--no-recreate", "--scale", service + "=" + std::to_string(replicas), service},
      kUpTimeout);
}

Result<CommandResult> ComposeCli::Down(const ComposeProject& project, seconds stop_timeout) const {
  return Run(project, true, {"down", "--remove-orphans", "-v", "-t", SecondsArg(stop_timeout)},
             stop_timeout + kStopSlack);
}

Result<CommandResult> ComposeCli::Stop(const ComposeProject& project, seconds stop_timeout) const {
  return Run(project, true, {"stop", "-t", SecondsArg(stop_timeout)}, stop_timeout + kStopSlack);
}

Result<CommandResult> ComposeCli::Start(const ComposeProject& project) const {
  return Run(project, true, {"start"}, kStartTimeout);
}

Result<CommandResult> ComposeCli::Restart(const ComposeProject& project,
                                          seconds stop_timeout) const {
  return Run(project, true, {"restart", "-t", SecondsArg(stop_timeout)}, stop_timeout + kStopSlack);
}

}  // namespace cortex::deploy
