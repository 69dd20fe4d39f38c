// deploy_bench: the deployer's figures, each as a ratio against a baseline measured in the same
// run, iterations interleaved (the tiers' order rotates each iteration) so that drift in the
// machine's load hits every tier alike.
//
//   deploy_bench [--iterations N] [--stop-timeout S] [--delay S] [--compose-monument]
//                [--max-seconds S] [--keep]
//
// 1. Deploy-to-healthy of a one-service compose relic (busybox httpd, `init: true`, a published
//    port; the shape of examples/manifests/relics/static_site) through the real `cortex serve`
//    of this build tree: POST /deploy/relic {"wait": true}, timed on the client until the 200.
//    Baseline: `<compose> -p <project> -f <same file> up -d` run here, then GET <health URL>
//    at once and every 100 ms after a failed probe (the cadence of a starting relic in Cortex,
//    DeployerOptions::starting_probe_interval) until it answers 200.
// 2. Stop of the same: POST /relics/{name}/stop (waits for `down`), against
//    `<compose> -p <project> -f <file> down -t <the relic's stop timeout>` run here.
//    A third tier, "replay", runs by hand the very CLI sequence the compose driver runs
//    (`up -d --remove-orphans` with a label override file; `down --remove-orphans -v -t N` with
//    it), to split Cortex's time into the CLI's and its own. (Until 2026-11-25 the driver also
//    ran `config -q` and `config` before `up`: ~0.28 s each, which made a deploy 1.88x.)
// 3. A monument of three process relics (`sh` sleeping --delay s, then busybox httpd; the default
//    0.55 s keeps the moment they listen off Cortex's 100 ms probe grid, so that each relic's
//    time to healthy does not flip between two grid points from run to run), with
//    startup_order [a, [b, c]]: POST /deploy/monument {"wait": true} until the 200, against the
//    serial sum of deploying each relic alone (POST /deploy/relic wait=true, one after the
//    other, deleted in between). With --compose-monument, also with three compose relics.
//
// Every iteration cleans up: relics are deleted through the API, then whatever their compose
// projects left is removed by the projects' label and the relics' ports are checked closed. At
// the end any process still running this run's scripts (found by the scratch folder in their
// command line) is killed and reported. Needs dockerd and the image of scripts/busybox-image.sh
// (built when missing). Prints figures; never asserts timing.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "http/http.h"

extern char** environ;

namespace {
using cortex::bench::Median;
using cortex::bench::Percentile;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;
using Json = nlohmann::json;
using cortex::bench::LoadAvg;
using cortex::bench::ReadAll;

constexpr const char* kImage = "cortex-example/busybox:1";
constexpr const char* kSite = "dbench_site";  // the compose relic of figures 1 and 2
constexpr Ms kStartingProbeInterval{100};     // Cortex's, for a starting relic
constexpr Ms kProbeTimeout{1000};             // the relics' health_check.timeout
constexpr Ms kSettle{300};                    // pause before each timed operation

std::atomic<bool> g_interrupted{false};

void OnSignal(int) { g_interrupted = true; }

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

int64_t WallMs() {
  return std::chrono::duration_cast<Ms>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Nearest-rank percentile (p in [0, 100]).
double Ratio(double a, double b) { return b > 0 ? a / b : 0; }

bool WriteText(const fs::path& path, const std::string& text, fs::perms perms) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) return false;
  }
  fs::permissions(path, perms, ec);
  return !ec;
}

// The last `n` characters of `s`, on one line.
std::string Tail(const std::string& s, size_t n = 400) {
  std::string t = s.size() > n ? "..." + s.substr(s.size() - n) : s;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  for (char& c : t) {
    if (c == '\n' || c == '\r') c = '|';
  }
  return t;
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t nl = s.find('\n', pos);
    if (nl == std::string::npos) nl = s.size();
    std::string line = s.substr(pos, nl - pos);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    if (!line.empty()) out.push_back(line);
    pos = nl + 1;
  }
  return out;
}

// A free TCP port on 127.0.0.1 (bound to 0, then released).
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

// Whether something accepts connections on 127.0.0.1:port.
bool PortOpen(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool open = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return open;
}

// ---------------------------------------------------------------------------------------------
// Commands run by the benchmark: posix_spawnp in a process group of its own, stdin /dev/null,
// stdout + stderr to `out`, waited for with a pidfd (no polling delay), killed at `timeout`.

struct CmdResult {
  int exit_code = -1;
  double ms = 0;
  std::string output;
  std::string error;  // could not run / timed out
  bool ok() const { return error.empty() && exit_code == 0; }
  std::string Why() const { return !error.empty() ? error : "exit " + std::to_string(exit_code); }
};

CmdResult RunCommand(const std::vector<std::string>& args, Ms timeout, const fs::path& out,
                     const fs::path& cwd = {}) {
  CmdResult r;
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  const auto t0 = Clock::now();
  int rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    r.error = "cannot run " + args[0] + ": " + std::strerror(rc);
    return r;
  }
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  const auto deadline = t0 + timeout;
  int status = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      r.error = std::string("waitpid: ") + std::strerror(errno);
      break;
    }
    auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now()).count();
    if (left <= 0) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      r.error = args[0] + " timed out after " + std::to_string(timeout.count()) + " ms";
      break;
    }
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    } else {
      std::this_thread::sleep_for(Ms(1));
    }
  }
  r.ms = MsBetween(t0, Clock::now());
  if (pidfd >= 0) ::close(pidfd);
  r.output = ReadAll(out);
  if (r.error.empty()) {
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Docker and Compose.

struct Docker {
  std::vector<std::string> compose;  // {"docker", "compose"} or {"docker-compose"}
  fs::path out;                      // scratch file for command output

  // Removes the containers (with their anonymous volumes) and networks of a compose project,
  // by its label. Returns how many there were.
  size_t CleanProject(const std::string& project) const {
    return CleanLabel("com.docker.compose.project=" + project);
  }
  // The same for everything carrying the label `key=value`.
  size_t CleanLabel(const std::string& key_value) const {
    const std::string label = "label=" + key_value;
    size_t n = 0;
    auto ps = RunCommand({"docker", "ps", "-aq", "--filter", label}, Ms(60000), out);
    auto ids = Lines(ps.output);
    if (ps.ok() && !ids.empty()) {
      std::vector<std::string> rm = {"docker", "rm", "-f", "-v"};
      rm.insert(rm.end(), ids.begin(), ids.end());
      RunCommand(rm, Ms(60000), out);
      n += ids.size();
    }
    auto nets = RunCommand({"docker", "network", "ls", "-q", "--filter", label}, Ms(60000), out);
    auto net_ids = Lines(nets.output);
    if (nets.ok() && !net_ids.empty()) {
      std::vector<std::string> rm = {"docker", "network", "rm"};
      rm.insert(rm.end(), net_ids.begin(), net_ids.end());
      RunCommand(rm, Ms(60000), out);
      n += net_ids.size();
    }
    return n;
  }

  // <compose> -p project -f file [-f override] [--project-directory dir] args...
  std::vector<std::string> Args(const std::string& project, const fs::path& file,
                                const fs::path& override_file, const fs::path& project_dir,
                                const std::vector<std::string>& args) const {
    std::vector<std::string> a = compose;
    a.insert(a.end(), {"-p", project, "-f", file.string()});
    if (!override_file.empty()) a.insert(a.end(), {"-f", override_file.string()});
    if (!project_dir.empty()) a.insert(a.end(), {"--project-directory", project_dir.string()});
    a.insert(a.end(), args.begin(), args.end());
    return a;
  }
};

// GET url at once, then every `interval` after each failed probe (a new client per probe, as
// Cortex's HttpProbe), until it answers 200 or `timeout`. Returns the probes made (0: timeout).
int PollHealthy(const std::string& base, const std::string& path, Ms interval, Ms timeout) {
  const auto deadline = Clock::now() + timeout;
  int probes = 0;
  while (Clock::now() < deadline && !g_interrupted) {
    ++probes;
    cortex::http::ClientOptions o;
    o.connect_timeout = kProbeTimeout;
    o.read_timeout = kProbeTimeout;
    cortex::http::Client client(base, o);
    auto r = client.Get(path);
    if (r.ok() && r->status == 200) return probes;
    std::this_thread::sleep_for(interval);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The manifests.

std::string ComposeFile(int port, const std::string& command) {
  return "# One service: busybox httpd serving ./www (the shape of relics/static_site).\n"
         "version: \"2.4\"\n"
         "services:\n"
         "  web:\n"
         "    image: " +
         std::string(kImage) +
         "\n"
         "    init: true\n"
         "    command: " +
         command +
         "\n"
         "    ports:\n"
         "      - \"127.0.0.1:" +
         std::to_string(port) +
         ":80\"\n"
         "    volumes:\n"
         "      - ./www:/www:ro\n";
}

std::string RelicHeader(const std::string& name, const std::string& summary) {
  return "kind: Relic\nversion: \"1.0\"\nname: " + name + "\nsummary: " + summary +
         "\nauthor: bench\nstate: stable\ndescription: Generated by deploy_bench.\n"
         "service_type: api\n";
}

std::string HealthAndInterface(int port) {
  return "health_check:\n  type: http\n  endpoint: /health\n  interval: 2s\n  timeout: 1s\n"
         "  retries: 3\n  start_period: 60s\n"
         "interface:\n  type: rest_api\n  base_url: \"http://127.0.0.1:" +
         std::to_string(port) +
         "\"\n  endpoints:\n    - {name: health, method: GET, path: /health, description: "
         "Liveness}\ntags: [bench]\n";
}

bool WriteWww(const fs::path& dir) {
  return WriteText(dir / "www" / "health", "ok\n", fs::perms(0644)) &&
         WriteText(dir / "www" / "index.html", "<p>deploy_bench</p>\n", fs::perms(0644));
}

// A compose relic: `command` is the service's command (YAML flow sequence).
bool WriteComposeRelic(const fs::path& manifests, const std::string& name, int port,
                       int stop_timeout_s, const std::string& command) {
  fs::path dir = manifests / "relics" / name;
  std::string yml = RelicHeader(name, "A busybox httpd container (deploy_bench)") +
                    "deployment:\n  type: docker-compose\n  compose_file: docker-compose.yml\n"
                    "  stop_timeout: " +
                    std::to_string(stop_timeout_s) + "s\n" + HealthAndInterface(port);
  return WriteWww(dir) && WriteText(dir / "relic.yml", yml, fs::perms(0644)) &&
         WriteText(dir / "docker-compose.yml", ComposeFile(port, command), fs::perms(0644));
}

// A process relic: sh sleeps `delay`, then execs busybox httpd on the port (so it becomes
// healthy `delay` after it starts). The script's absolute path names this run's scratch folder
// in the command line, which is how leftovers are found at the end.
bool WriteProcessRelic(const fs::path& manifests, const std::string& name, int port,
                       int stop_timeout_s, double delay) {
  fs::path dir = manifests / "relics" / name;
  char d[32];
  std::snprintf(d, sizeof d, "%.3f", delay);
  std::string script =
      "#!/bin/sh\n# deploy_bench: healthy " + std::string(d) + " s after it starts.\nsleep " + d +
      "\nexec /bin/busybox httpd -f -p 127.0.0.1:\"$PORT\" -h " + (dir / "www").string() + "\n";
  std::string yml =
      RelicHeader(name, "A slow-starting busybox httpd process (deploy_bench)") +
      "deployment:\n  type: process\n  command: [\"/bin/sh\", \"" + (dir / "server.sh").string() +
      "\"]\n  cwd: .\n  port: " + std::to_string(port) +
      "\n  stop_timeout: " + std::to_string(stop_timeout_s) + "s\n" + HealthAndInterface(port);
  return WriteWww(dir) && WriteText(dir / "server.sh", script, fs::perms(0755)) &&
         WriteText(dir / "relic.yml", yml, fs::perms(0644));
}

bool WriteMonument(const fs::path& manifests, const std::string& name,
                   const std::vector<std::string>& relics) {
  std::string yml = "kind: Monument\nversion: \"1.0\"\nname: " + name +
                    "\nsummary: Three relics, the last two started in parallel "
                    "(deploy_bench)\nauthor: bench\nstate: stable\ndescription: Generated by "
                    "deploy_bench.\ncomponents:\n  relics: [" +
                    relics[0] + ", " + relics[1] + ", " + relics[2] + "]\nstartup_order:\n  - " +
                    relics[0] + "\n  - [" + relics[1] + ", " + relics[2] + "]\n";
  return WriteText(manifests / "monuments" / name / "monument.yml", yml, fs::perms(0644));
}

// ---------------------------------------------------------------------------------------------
// The Cortex API.

struct ApiResult {
  int status = 0;
  Json body;
  double ms = 0;
  int64_t sent_wall_ms = 0, got_wall_ms = 0;
  std::string error;  // transport error
  std::string Describe() const {
    if (!error.empty()) return error;
    return "HTTP " + std::to_string(status) + ": " + Tail(body.dump(), 500);
  }
};

ApiResult Call(cortex::http::Client& c, const std::string& method, const std::string& path,
               const std::string& body = "") {
  ApiResult r;
  r.sent_wall_ms = WallMs();
  auto t0 = Clock::now();
  auto resp = method == "POST"     ? c.Post(path, body)
              : method == "DELETE" ? c.Delete(path)
                                   : c.Get(path);
  r.ms = MsBetween(t0, Clock::now());
  r.got_wall_ms = WallMs();
  if (!resp.ok()) {
    r.error = method + " " + path + ": " + resp.status().message();
    return r;
  }
  r.status = resp->status;
  r.body = Json::parse(resp->body, nullptr, false);
  if (r.body.is_discarded()) r.body = resp->body;
  return r;
}

std::string StateOf(const ApiResult& r) {
  return r.body.is_object() ? r.body.value("state", std::string()) : std::string();
}

int64_t Field(const Json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
}

// ---------------------------------------------------------------------------------------------
// Figures.

struct Series {
  std::vector<double> v;
  void Add(double x) { v.push_back(x); }
  double median() const { return Median(v); }
  double p90() const { return Percentile(v, 90); }
  bool empty() const { return v.empty(); }
};

struct Failures {
  size_t count = 0;
  std::string first;
  void Fail(const std::string& why) {
    if (count++ == 0) first = why;
    std::printf("    FAILED: %s\n", why.c_str());
    std::fflush(stdout);
  }
};

struct SiteFigures {
  // 1. deploy-to-healthy
  Series cortex_deploy, base_deploy, replay_deploy;
  // Cortex's records: request -> record created -> launched (driver Start returned) -> healthy
  // -> the client has the answer.
  Series c_to_created, c_created_to_started, c_started_to_healthy, c_healthy_to_answer;
  // The baseline's and the replay's parts.
  Series base_up, base_poll, base_probes;
  Series rep_up, rep_poll;
  // 2. stop
  Series cortex_stop, base_stop, replay_stop;
  Series c_stop_to_stopped, c_stopped_to_answer;
  Failures fail;
  size_t leftovers = 0;
};

struct MonumentFigures {
  std::string name;
  std::vector<std::string> relics;
  bool compose = false;
  Series monument, serial, alone[3];
  Failures fail;
  size_t leftovers = 0;
};

void PrintRow(const char* label, const Series& s, const char* note = "") {
  if (s.empty()) {
    std::printf("  %-58s %9s\n", label, "-");
    return;
  }
  std::printf("  %-58s %9.1f %9.1f ms%s\n", label, s.median(), s.p90(), note);
}

void Usage() {
  std::fprintf(stderr,
               "usage: deploy_bench [--iterations N (default 10)] [--stop-timeout S (default 5)]\n"
               "                    [--delay S (default 0.55)] [--compose-monument]\n"
               "                    [--max-seconds S (default 3600)] [--keep]\n");
}

// Processes whose command line contains `marker` (this run's scratch folder), other than this
// one and `except`: SIGKILLed; returns how many.
size_t KillLeftoverProcesses(const std::string& marker, pid_t except) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    pid_t pid = static_cast<pid_t>(std::atoi(name.c_str()));
    if (pid == ::getpid() || pid == except) continue;
    std::string cmd = ReadAll(e.path() / "cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find(marker) == std::string::npos) continue;
    std::printf("  leftover process %d: %s\n", static_cast<int>(pid), Tail(cmd, 200).c_str());
    ::kill(pid, SIGKILL);
    ++n;
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  int iterations = 10, stop_timeout_s = 5;
  double delay = 0.55, max_seconds = 3600;
  bool keep = false, compose_monument = false;
  cortex::bench::Flags flags(argc, argv, Usage);
  for (std::string a; flags.Next(&a);) {
    if (a == "--iterations") {
      iterations = std::clamp(std::atoi(flags.Value()), 1, 1000);
    } else if (a == "--stop-timeout") {
      stop_timeout_s = std::clamp(std::atoi(flags.Value()), 0, 300);
    } else if (a == "--delay") {
      delay = std::clamp(std::atof(flags.Value()), 0.0, 60.0);
    } else if (a == "--compose-monument") {
      compose_monument = true;
    } else if (a == "--max-seconds") {
      max_seconds = std::atof(flags.Value());
    } else if (a == "--keep") {
      keep = true;
    } else {
      Usage();
      return 2;
    }
  }
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(max_seconds));
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::printf("== deploy_bench ==\n");
  std::printf("machine: %u cores, loadavg at the start %s\n", std::thread::hardware_concurrency(),
              LoadAvg().c_str());
  std::fflush(stdout);

  cortex::bench::ScratchDir scratch("cortex-deploy-bench", keep);
  if (!scratch.ok()) return 1;
  const fs::path dir = scratch.path();
  Docker docker;
  docker.out = dir / "cmd.out";

  // ---- Docker, Compose and the image.
  {
    auto v =
        RunCommand({"docker", "version", "--format", "{{.Server.Version}}"}, Ms(30000), docker.out);
    if (!v.ok()) {
      std::printf(
          "dockerd is not running (or not reachable): `docker version` failed (%s): %s\n"
          "start it, e.g. `dockerd --host unix:///var/run/docker.sock &`, and run again\n",
          v.Why().c_str(), Tail(v.output).c_str());
      return 1;
    }
    std::printf("docker engine %s\n", Tail(v.output).c_str());
  }
  // The CLI Cortex picks (ComposeCli::Detect): the v2 plugin when it works, else docker-compose.
  if (RunCommand({"docker", "compose", "version"}, Ms(20000), docker.out).ok()) {
    docker.compose = {"docker", "compose"};
  } else if (auto v1 = RunCommand({"docker-compose", "version", "--short"}, Ms(20000), docker.out);
             v1.ok()) {
    docker.compose = {"docker-compose"};
  } else {
    std::printf("no Docker Compose CLI (neither `docker compose` nor `docker-compose`)\n");
    return 1;
  }
  {
    auto v = RunCommand(
        [&] {
          auto a = docker.compose;
          a.push_back("version");
          return a;
        }(),
        Ms(20000), docker.out);
    std::printf("compose CLI: %s (%s)\n",
                docker.compose.size() == 2 ? "docker compose" : "docker-compose",
                Tail(Lines(v.output).empty() ? "" : Lines(v.output)[0], 120).c_str());
  }
  if (!RunCommand({"docker", "image", "inspect", kImage}, Ms(30000), docker.out).ok()) {
    std::string script = std::string(CORTEX_SOURCE_DIR) + "/scripts/busybox-image.sh";
    std::printf("image %s is missing: running %s\n", kImage, script.c_str());
    auto b = RunCommand({"bash", script, kImage}, Ms(300000), docker.out);
    if (!b.ok()) {
      std::printf("building the image failed (%s): %s\n", b.Why().c_str(), Tail(b.output).c_str());
      return 1;
    }
  }

  // ---- The manifests.
  const fs::path manifests = dir / "manifests";
  const int site_port = FreePort();
  int proc_ports[3], comp_ports[3];
  for (int& p : proc_ports) p = FreePort();
  for (int& p : comp_ports) p = FreePort();
  const std::vector<std::string> proc_relics = {"dbench_a", "dbench_b", "dbench_c"};
  const std::vector<std::string> comp_relics = {"dbench_ca", "dbench_cb", "dbench_cc"};
  char delay_text[32];
  std::snprintf(delay_text, sizeof delay_text, "%.3f", delay);
  const std::string slow_httpd = std::string("[\"/bin/sh\", \"-c\", \"sleep ") + delay_text +
                                 "; exec /bin/httpd -f -p 80 -h /www\"]";
  bool ok = site_port > 0 &&
            WriteComposeRelic(manifests, kSite, site_port, stop_timeout_s,
                              "[\"/bin/httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]");
  for (int i = 0; i < 3 && ok; ++i) {
    ok = WriteProcessRelic(manifests, proc_relics[i], proc_ports[i], stop_timeout_s, delay) &&
         WriteComposeRelic(manifests, comp_relics[i], comp_ports[i], stop_timeout_s, slow_httpd);
  }
  ok = ok && WriteMonument(manifests, "dbench_stack", proc_relics) &&
       WriteMonument(manifests, "dbench_cstack", comp_relics);
  if (!ok) {
    std::fprintf(stderr, "cannot write the manifests under %s\n", manifests.c_str());
    return 1;
  }
  const fs::path site_dir = manifests / "relics" / kSite;
  const fs::path site_file = site_dir / "docker-compose.yml";
  const std::string health_base = "http://127.0.0.1:" + std::to_string(site_port);
  const std::string cortex_project = std::string("cortex_") + kSite;
  const std::string base_project = "dbench_base_" + std::to_string(::getpid());
  const std::string replay_project = "dbench_replay_" + std::to_string(::getpid());
  // The replay's override file: what ComposeCli::WriteOverrideFrom writes for this file (the
  // version, the service and the default network, two labels each; other label names, so that
  // nothing takes these containers for Cortex's).
  const fs::path replay_override = dir / "compose" / (replay_project + ".override.yml");
  {
    Json labels = {{"cortex.bench.managed", "true"}, {"cortex.bench.relic", "replay"}};
    nlohmann::ordered_json doc = nlohmann::ordered_json::object();
    doc["version"] = "2.4";
    doc["services"] = {{"web", {{"labels", labels}}}};
    doc["networks"] = {{"default", {{"labels", labels}}}};
    WriteText(replay_override,
              "# deploy_bench: the replay's label override.\n" + doc.dump(2) + "\n",
              fs::perms(0644));
  }
  const std::string stop_arg = std::to_string(stop_timeout_s);
  // Anything an earlier, interrupted run left.
  std::vector<std::string> all_projects = {cortex_project, base_project, replay_project};
  for (const auto& r : comp_relics) all_projects.push_back("cortex_" + r);
  for (const auto& p : all_projects) docker.CleanProject(p);

  // ---- The server.
  cortex::bench::ServeProcess server(std::string(CORTEX_BINARY_DIR) + "/cortex");
  if (!server.Start(manifests, dir / "data", dir / "serve.log")) {
    std::fprintf(stderr, "cortex serve did not start; its log:\n%s\n", server.log().c_str());
    return 1;
  }
  cortex::http::ClientOptions copts;
  copts.read_timeout = std::chrono::minutes(6);
  cortex::http::Client client(server.url(), copts);
  std::printf("cortex serve (pid %d) on %s; scratch folder %s\n", static_cast<int>(server.pid()),
              server.url().c_str(), dir.c_str());
  std::printf(
      "%d iterations, tiers interleaved (order rotating); stop timeout %d s; %.0f ms pause "
      "before each timed operation\n",
      iterations, stop_timeout_s, static_cast<double>(kSettle.count()));
  std::fflush(stdout);

  int exit_status = 0;
  bool cut_short = false;
  auto settle = [] { std::this_thread::sleep_for(kSettle); };
  const std::string deploy_site =
      Json{{"name", kSite}, {"wait", true}, {"timeout_seconds", 180}}.dump();

  // ---- 1 and 2: the compose relic.
  SiteFigures site;
  // Each returns "" or why it failed; `record` false for the warm-up.
  auto cortex_tier = [&](bool record) -> std::string {
    settle();
    ApiResult d = Call(client, "POST", "/deploy/relic", deploy_site);
    std::string why;
    if (d.status != 200 || StateOf(d) != "healthy") {
      why = "cortex deploy: " + d.Describe();
    } else {
      int64_t created = Field(d.body, "created_ms"), started = Field(d.body, "started_ms"),
              healthy = Field(d.body, "updated_ms");
      if (record) {
        site.cortex_deploy.Add(d.ms);
        site.c_to_created.Add(static_cast<double>(created - d.sent_wall_ms));
        site.c_created_to_started.Add(static_cast<double>(started - created));
        site.c_started_to_healthy.Add(static_cast<double>(healthy - started));
        site.c_healthy_to_answer.Add(static_cast<double>(d.got_wall_ms - healthy));
      }
      settle();
      ApiResult s = Call(client, "POST", std::string("/relics/") + kSite + "/stop");
      if (s.status != 200 || StateOf(s) != "stopped") {
        why = "cortex stop: " + s.Describe();
      } else if (record) {
        site.cortex_stop.Add(s.ms);
        int64_t stopped = Field(s.body, "updated_ms");
        site.c_stop_to_stopped.Add(static_cast<double>(stopped - s.sent_wall_ms));
        site.c_stopped_to_answer.Add(static_cast<double>(s.got_wall_ms - stopped));
      }
      if (record) {
        std::printf("    cortex  deploy %7.1f ms  stop %7.1f ms\n", d.ms, s.ms);
      }
    }
    ApiResult del = Call(client, "DELETE", std::string("/relics/") + kSite);
    if (del.status != 200 && del.status != 404 && why.empty()) {
      why = "cortex delete: " + del.Describe();
    }
    size_t left = docker.CleanProject(cortex_project);
    if (left) {
      site.leftovers += left;
      if (why.empty()) why = "cortex left " + std::to_string(left) + " containers/networks";
    }
    return why;
  };
  auto baseline_tier = [&](bool record) -> std::string {
    std::string why;
    settle();
    auto t0 = Clock::now();
    CmdResult up = RunCommand(docker.Args(base_project, site_file, {}, {}, {"up", "-d"}),
                              Ms(300000), docker.out, site_dir);
    int probes = 0;
    double poll_ms = 0;
    if (!up.ok()) {
      why = "baseline up: " + up.Why() + ": " + Tail(up.output);
    } else {
      auto p0 = Clock::now();
      probes = PollHealthy(health_base, "/health", kStartingProbeInterval, Ms(60000));
      poll_ms = MsBetween(p0, Clock::now());
      if (probes == 0) why = "baseline: " + health_base + "/health did not answer 200 in 60 s";
    }
    double total = MsBetween(t0, Clock::now());
    if (why.empty()) {
      settle();
      CmdResult down =
          RunCommand(docker.Args(base_project, site_file, {}, {}, {"down", "-t", stop_arg}),
                     Ms(300000), docker.out, site_dir);
      if (!down.ok()) {
        why = "baseline down: " + down.Why() + ": " + Tail(down.output);
      } else if (record) {
        site.base_deploy.Add(total);
        site.base_up.Add(up.ms);
        site.base_poll.Add(poll_ms);
        site.base_probes.Add(probes);
        site.base_stop.Add(down.ms);
        std::printf(
            "    compose deploy %7.1f ms  stop %7.1f ms  (up %.1f, poll %.1f ms, %d probes)\n",
            total, down.ms, up.ms, poll_ms, probes);
      }
    }
    size_t left = docker.CleanProject(base_project);
    if (left && why.empty()) {
      site.leftovers += left;
      why = "the baseline's down left " + std::to_string(left) + " containers/networks";
    }
    return why;
  };
  auto replay_tier = [&](bool record) -> std::string {
    std::string why;
    settle();
    auto t0 = Clock::now();
    CmdResult up = RunCommand(docker.Args(replay_project, site_file, replay_override, site_dir,
                                          {"up", "-d", "--remove-orphans"}),
                              Ms(300000), docker.out, site_dir);
    int probes = 0;
    double poll_ms = 0;
    if (!up.ok()) {
      why = "replay: up " + up.Why() + ": " + Tail(up.output);
    } else {
      auto p0 = Clock::now();
      probes = PollHealthy(health_base, "/health", kStartingProbeInterval, Ms(60000));
      poll_ms = MsBetween(p0, Clock::now());
      if (probes == 0) why = "replay: " + health_base + "/health did not answer 200 in 60 s";
    }
    double total = MsBetween(t0, Clock::now());
    if (why.empty()) {
      settle();
      CmdResult down = RunCommand(docker.Args(replay_project, site_file, replay_override, site_dir,
                                              {"down", "--remove-orphans", "-v", "-t", stop_arg}),
                                  Ms(300000), docker.out, site_dir);
      if (!down.ok()) {
        why = "replay down: " + down.Why() + ": " + Tail(down.output);
      } else if (record) {
        site.replay_deploy.Add(total);
        site.rep_up.Add(up.ms);
        site.rep_poll.Add(poll_ms);
        site.replay_stop.Add(down.ms);
        std::printf("    replay  deploy %7.1f ms  stop %7.1f ms  (up %.1f, poll %.1f ms)\n", total,
                    down.ms, up.ms, poll_ms);
      }
    }
    size_t left = docker.CleanProject(replay_project);
    if (left && why.empty()) {
      site.leftovers += left;
      why = "the replay's down left " + std::to_string(left) + " containers/networks";
    }
    return why;
  };

  std::printf("\n-- 1, 2: compose relic %s (port %d)\n", kSite, site_port);
  std::printf("  warm-up (not counted)...\n");
  std::fflush(stdout);
  using Tier = std::function<std::string(bool)>;
  const std::vector<std::pair<const char*, Tier>> site_tiers = {
      {"cortex", cortex_tier}, {"compose", baseline_tier}, {"replay", replay_tier}};
  for (const auto& [name, tier] : site_tiers) {
    std::string why = tier(false);
    if (!why.empty()) {
      std::printf("warm-up (%s) failed: %s\nserver log (tail):\n%s\n", name, why.c_str(),
                  Tail(server.log(), 3000).c_str());
      exit_status = 1;
    }
  }
  for (int it = 0; it < iterations && exit_status == 0; ++it) {
    if (Clock::now() >= deadline || g_interrupted) {
      cut_short = true;
      break;
    }
    std::printf("  iteration %d (loadavg %s)\n", it + 1, LoadAvg().c_str());
    for (size_t k = 0; k < site_tiers.size(); ++k) {
      const auto& [name, tier] = site_tiers[(static_cast<size_t>(it) + k) % site_tiers.size()];
      std::string why = tier(true);
      if (!why.empty()) site.fail.Fail(std::string(name) + ": " + why);
    }
    std::fflush(stdout);
  }
  if (site.fail.count) exit_status = 1;

  // ---- 3: monuments.
  std::vector<MonumentFigures> monuments;
  {
    MonumentFigures m;
    m.name = "dbench_stack";
    m.relics = proc_relics;
    monuments.push_back(m);
  }
  if (compose_monument) {
    MonumentFigures m;
    m.name = "dbench_cstack";
    m.relics = comp_relics;
    m.compose = true;
    monuments.push_back(m);
  }
  for (MonumentFigures& m : monuments) {
    const int* ports = m.compose ? comp_ports : proc_ports;
    auto check_clean = [&]() -> std::string {
      size_t left = 0;
      if (m.compose) {
        for (const auto& r : m.relics) left += docker.CleanProject("cortex_" + r);
        // The monument's own network (cortex_<monument>_net), removed with its last relic.
        left += docker.CleanLabel("cortex.monument=" + m.name);
      }
      for (int i = 0; i < 3; ++i) {
        if (PortOpen(ports[i])) ++left;
      }
      m.leftovers += left;
      return left ? std::to_string(left) + " things left running after the delete" : "";
    };
    auto monument_tier = [&](bool record) -> std::string {
      settle();
      ApiResult d = Call(client, "POST", "/deploy/monument",
                         Json{{"name", m.name}, {"wait", true}, {"timeout_seconds", 300}}.dump());
      std::string why;
      if (d.status != 200 || StateOf(d) != "healthy") {
        why = "monument deploy: " + d.Describe();
      } else if (record) {
        m.monument.Add(d.ms);
        std::printf("    monument %7.1f ms\n", d.ms);
      }
      ApiResult del = Call(client, "DELETE", "/monuments/" + m.name);
      if (del.status != 200 && del.status != 404 && why.empty()) {
        why = "monument delete: " + del.Describe();
      }
      // A failed deployment may leave relics deployed: delete them too.
      for (const auto& r : m.relics) Call(client, "DELETE", "/relics/" + r);
      std::string left = check_clean();
      return why.empty() ? left : why;
    };
    auto serial_tier = [&](bool record) -> std::string {
      double sum = 0;
      double each[3] = {0, 0, 0};
      std::string why;
      for (int i = 0; i < 3 && why.empty(); ++i) {
        settle();
        ApiResult d = Call(client, "POST", "/deploy/relic",
                           Json{{"name", m.relics[static_cast<size_t>(i)]},
                                {"wait", true},
                                {"timeout_seconds", 180}}
                               .dump());
        if (d.status != 200 || StateOf(d) != "healthy") {
          why = "deploy " + m.relics[static_cast<size_t>(i)] + ": " + d.Describe();
        }
        each[i] = d.ms;
        sum += d.ms;
        ApiResult del = Call(client, "DELETE", "/relics/" + m.relics[static_cast<size_t>(i)]);
        if (del.status != 200 && why.empty()) why = "delete: " + del.Describe();
      }
      if (why.empty() && record) {
        m.serial.Add(sum);
        for (int i = 0; i < 3; ++i) m.alone[i].Add(each[i]);
        std::printf("    serial   %7.1f ms  (%.1f + %.1f + %.1f)\n", sum, each[0], each[1],
                    each[2]);
      }
      std::string left = check_clean();
      return why.empty() ? left : why;
    };
    std::printf("\n-- 3: monument %s: startup_order [%s, [%s, %s]], %s relics\n", m.name.c_str(),
                m.relics[0].c_str(), m.relics[1].c_str(), m.relics[2].c_str(),
                m.compose ? "compose" : "process");
    std::printf("  warm-up (not counted)...\n");
    std::fflush(stdout);
    for (const Tier& tier : {Tier(monument_tier), Tier(serial_tier)}) {
      std::string why = tier(false);
      if (!why.empty()) {
        m.fail.Fail("warm-up: " + why);
        std::printf("server log (tail):\n%s\n", Tail(server.log(), 3000).c_str());
      }
    }
    for (int it = 0; it < iterations && m.fail.count == 0; ++it) {
      if (Clock::now() >= deadline || g_interrupted) {
        cut_short = true;
        break;
      }
      std::printf("  iteration %d (loadavg %s)\n", it + 1, LoadAvg().c_str());
      bool monument_first = it % 2 == 0;
      for (int k = 0; k < 2; ++k) {
        bool monument = (k == 0) == monument_first;
        std::string why = monument ? monument_tier(true) : serial_tier(true);
        if (!why.empty()) m.fail.Fail(std::string(monument ? "monument: " : "serial: ") + why);
      }
      std::fflush(stdout);
    }
    if (m.fail.count) exit_status = 1;
  }

  // ---- Cleanup: the server, then anything left.
  int code = server.Stop();
  if (code != 0) std::printf("(server exit code %d)\n", code);
  size_t left_projects = 0;
  for (const auto& p : all_projects) left_projects += docker.CleanProject(p);
  for (const auto& m : monuments) left_projects += docker.CleanLabel("cortex.monument=" + m.name);
  size_t left_processes = KillLeftoverProcesses(dir.string(), -1);
  if (left_projects || left_processes) {
    std::printf("cleanup at the end: removed %zu containers/networks, killed %zu processes\n",
                left_projects, left_processes);
    exit_status = 1;
  }

  // ---- Report.
  std::printf("\n== results (%d iterations; median and p90) ==\n", iterations);
  std::printf("\n-- 1. deploy-to-healthy, one-service compose relic (%s up -d; busybox httpd)\n",
              docker.compose.size() == 2 ? "docker compose" : "docker-compose");
  std::printf("  %-58s %9s %9s\n", "", "median", "p90");
  PrintRow("cortex: POST /deploy/relic wait=true -> 200", site.cortex_deploy);
  PrintRow("baseline: compose up -d + GET /health every 100 ms", site.base_deploy);
  PrintRow("replay: Cortex's CLI sequence by hand + the same polling", site.replay_deploy);
  const double r_deploy = Ratio(site.cortex_deploy.median(), site.base_deploy.median());
  std::printf("  -> ratio cortex/baseline %.2fx (p90 %.2fx); cortex/replay %.2fx\n", r_deploy,
              Ratio(site.cortex_deploy.p90(), site.base_deploy.p90()),
              Ratio(site.cortex_deploy.median(), site.replay_deploy.median()));
  std::printf("\n  where Cortex's deploy time goes (medians of its own records, ms resolution):\n");
  PrintRow("request -> record created (HTTP, Plan, docker ping)", site.c_to_created);
  PrintRow("record created -> launched (driver Start: the CLI calls)", site.c_created_to_started);
  PrintRow("launched -> healthy (observe + probes, 100 ms cadence)", site.c_started_to_healthy);
  PrintRow("healthy -> the client has the 200", site.c_healthy_to_answer);
  std::printf("  the same CLI calls by hand (replay):\n");
  PrintRow("  up -d --remove-orphans -f <override>", site.rep_up);
  PrintRow("  polling until 200", site.rep_poll);
  std::printf("  the baseline's parts:\n");
  PrintRow("  up -d", site.base_up);
  PrintRow("  polling until 200", site.base_poll);
  std::printf("  %-58s %9.1f\n", "  probes until 200 (count)", site.base_probes.median());
  {
    double cli = site.rep_up.median();
    double launched = site.c_created_to_started.median();
    const double gap = site.cortex_deploy.median() - site.base_deploy.median();
    std::printf("  => Cortex's extra %.0f ms over the baseline, by part (medians):\n", gap);
    auto part = [&](const char* label, double ms) {
      std::printf("     %-72s %8.0f ms  (%4.0f%% of the baseline)\n", label, ms,
                  100.0 * Ratio(ms, site.base_deploy.median()));
    };
    part("up's own extra: -f <override> --remove-orphans (replay up - baseline up)",
         site.rep_up.median() - site.base_up.median());
    part("Cortex's launch beyond the same CLI calls by hand (negative: faster)", launched - cli);
    part("health wait beyond the baseline's polling (observe, Store write, probes)",
         site.c_started_to_healthy.median() - site.base_poll.median());
    part("HTTP in and out, Plan, docker ping, waking the waiter",
         site.c_to_created.median() + site.c_healthy_to_answer.median());
  }

  std::printf("\n-- 2. stop of the same relic (stop timeout %d s)\n", stop_timeout_s);
  std::printf("  %-58s %9s %9s\n", "", "median", "p90");
  PrintRow("cortex: POST /relics/{name}/stop -> 200", site.cortex_stop);
  PrintRow("baseline: compose down -t N", site.base_stop);
  PrintRow("replay: down --remove-orphans -v -t N -f <override>", site.replay_stop);
  const double r_stop = Ratio(site.cortex_stop.median(), site.base_stop.median());
  std::printf("  -> ratio cortex/baseline %.2fx (p90 %.2fx); cortex/replay %.2fx\n", r_stop,
              Ratio(site.cortex_stop.p90(), site.base_stop.p90()),
              Ratio(site.cortex_stop.median(), site.replay_stop.median()));
  PrintRow("cortex: request -> recorded stopped (wake-up + down)", site.c_stop_to_stopped);
  PrintRow("cortex: recorded stopped -> the client has the 200", site.c_stopped_to_answer);
  if (site.fail.count) {
    std::printf("  %zu FAILED; first: %s\n", site.fail.count, site.fail.first.c_str());
  }
  if (site.leftovers) std::printf("  %zu containers/networks were left behind\n", site.leftovers);

  for (const MonumentFigures& m : monuments) {
    std::printf(
        "\n-- 3. monument %s: %s relics, startup_order [%s, [%s, %s]] (each healthy %.2f s "
        "after it starts)\n",
        m.name.c_str(), m.compose ? "three compose" : "three process", m.relics[0].c_str(),
        m.relics[1].c_str(), m.relics[2].c_str(), delay);
    std::printf("  %-58s %9s %9s\n", "", "median", "p90");
    PrintRow("monument: POST /deploy/monument wait=true -> 200", m.monument);
    for (int i = 0; i < 3; ++i) {
      std::string label = m.relics[static_cast<size_t>(i)] + " alone: POST /deploy/relic wait=true";
      PrintRow(label.c_str(), m.alone[i]);
    }
    PrintRow("serial sum of the three alone (per iteration)", m.serial);
    double a = m.alone[0].median(), b = m.alone[1].median(), c = m.alone[2].median();
    std::printf(
        "  -> ratio monument/serial %.2f (p90 %.2f); ideal from the medians (a + max(b, c)) / "
        "(a + b + c) = %.2f\n",
        Ratio(m.monument.median(), m.serial.median()), Ratio(m.monument.p90(), m.serial.p90()),
        Ratio(a + std::max(b, c), a + b + c));
    if (m.fail.count) std::printf("  %zu FAILED; first: %s\n", m.fail.count, m.fail.first.c_str());
    if (m.leftovers) std::printf("  %zu things were left running after deletes\n", m.leftovers);
  }

  std::printf("\ngoal: deploy-to-healthy <= 1.15x the compose baseline (%s: %.2fx)\n",
              site.cortex_deploy.empty() ? "not measured"
              : r_deploy <= 1.15         ? "met"
                                         : "MISSED",
              r_deploy);
  std::printf("goal: stop <= 1.15x the compose baseline (%s: %.2fx)\n",
              site.cortex_stop.empty() ? "not measured"
              : r_stop <= 1.15         ? "met"
                                       : "MISSED",
              r_stop);
  if (!monuments.empty() && !monuments[0].monument.empty()) {
    const MonumentFigures& m = monuments[0];
    std::printf(
        "expected: monument/serial about 0.67 with two of three relics in parallel (%.2f)\n",
        Ratio(m.monument.median(), m.serial.median()));
  }
  if (cut_short) {
    std::printf(
        "WARNING: stopped early (--max-seconds or a signal): fewer iterations than asked\n");
  }
  std::printf("loadavg at the end: %s (%.0f s)\n", LoadAvg().c_str(),
              std::chrono::duration<double>(Clock::now() - start).count());
  return exit_status;
}
