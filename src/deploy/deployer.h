// The deployer: relics on their drivers, kept in their desired state.
//
// Each deployed relic has a supervisor (one thread) that drives its workload toward the desired
// state recorded in the Store: it launches it, checks it is still up, probes its health, restarts
// it per its policy (with backoff, until a crash loop makes it `failed`) and stops it. Every state
// change is written to the Store before anyone is told. States:
//   pending -> starting -> healthy <-> unhealthy;  stopping -> stopped;  failed
// A healthy relic's endpoints are registered in discovery (and published through the discovery
// listener, e.g. to Redis); `${<NAME>_URL:-...}` references resolve from there.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/mutex.h"
#include "common/status.h"
#include "deploy/driver.h"
#include "exec/process.h"
#include "registry/registry.h"
#include "store/store.h"

namespace cortex::deploy {

using OJson = nlohmann::ordered_json;

// A relic's state (the transitions are in the comment at the top). Text only at the Store and
// the API: RelicStateName, ParseRelicState.
enum class RelicState { kPending, kStarting, kHealthy, kUnhealthy, kStopping, kStopped, kFailed };
std::string_view RelicStateName(RelicState state);
std::optional<RelicState> ParseRelicState(std::string_view text);
// What the user wants of it.
enum class Desired { kRunning, kStopped };

// A relic's state as code in deploy/ reads it (monuments); the API gets StatusJson's JSON.
struct RelicBrief {
  RelicState state = RelicState::kPending;
  Desired desired = Desired::kRunning;
  std::string error;
  // Done changing on its own: healthy, unhealthy, stopped or failed.
  bool settled() const;
};

struct DeployerOptions {
  std::string data_dir;          // relics' folders go in <data_dir>/relics/<name>
  std::string path_env;          // PATH for relic processes and for resolving their programs
  int max_restarts = 5;          // consecutive crashes (without becoming healthy) before `failed`
  Ms restart_backoff{250};       // first delay before a restart, doubled each time...
  Ms max_restart_backoff{8000};  // ...up to this
  Ms starting_probe_interval{100};  // how often a starting relic is probed
  // A relic up this long is past its start-up: the count of crashes in a row starts again.
  Ms stable_after{10000};
  // A relic without a health check counts as healthy once it has been up this long.
  Ms min_uptime{500};
  bool stop_relics_on_exit = false;  // else relics keep running and are adopted at next start
  bool allow_root_relics = false;    // a process relic may ask for `user: root`
  // What relics posted through the API may read of the server's environment.
  std::vector<std::string> allowed_env;
  // The supervisors' time: backoff, probe schedule, uptime (null: SystemClock()). The waits of
  // API calls (WaitRelic, a stop's wait) are real time.
  const Clock* clock = nullptr;
};

// One healthy relic as discovery serves it.
struct ServiceRecord {
  std::string name;
  std::string url;  // base URL
  std::string state;
  std::vector<std::string> endpoints;  // operation names
  std::string owner;
  int64_t updated_ms = 0;
  OJson ToJson() const;
};

// The answer of a relic operation.
struct CallResult {
  int status = 0;
  OJson body;  // JSON, or the text as a JSON string
  std::string method, url;
};

// One HTTP request to a relic (or any URL): the query from `query` (object), the body is `body`
// as JSON (null: none). Transport failures are Unavailable; any HTTP status is a CallResult.
struct HttpCall {
  std::string method = "GET";
  std::string url;
  OJson query;
  OJson body;
  Ms timeout{30000};
  std::string traceparent;  // sent as the W3C traceparent header when set
};
Result<CallResult> SendHttp(const HttpCall& call);

class Deployer {
 public:
  // `compose` may be null (Docker tooling missing): compose relics then fail with a clear error.
  Deployer(DeployerOptions options, registry::Registry& registry, store::Store& store,
           std::unique_ptr<RelicDriver> process, std::unique_ptr<RelicDriver> compose);
  ~Deployer();  // Stop()
  Deployer(const Deployer&) = delete;
  Deployer& operator=(const Deployer&) = delete;

  // Loads the recorded deployments: adopts what still runs, restarts what should run.
  Status Start();
  // Ends the supervisors. Relics keep running (adopted at the next Start) unless
  // options.stop_relics_on_exit. Idempotent.
  void Stop();

  // Called on each discovery change (a relic became healthy: up=true; else up=false), from the
  // relic's supervisor thread. Set before Start().
  void SetDiscoveryListener(std::function<void(const ServiceRecord&, bool up)> listener);

  // Records the relic's desired state (running unless !start) and starts its supervisor.
  // InvalidArgument when the manifest cannot be deployed as written (nothing is recorded),
  // NotFound for an unknown relic, Unavailable when its runtime is down. An already running
  // relic is left as it is. Returns its status.
  Result<OJson> DeployRelic(const std::string& name, bool start = true,
                            const std::string& owner = "");
  // What DeployRelic checks before it records anything: the relic's plan, or why it cannot be
  // deployed (NotFound, InvalidArgument naming the field, Unavailable when its runtime is down).
  Result<RelicPlan> Check(const std::string& name, bool start = true) const;
  // Waits until the relic is healthy, failed or stopped (or `timeout`), then returns its status.
  Result<OJson> WaitRelic(const std::string& name, Ms timeout);
  Result<OJson> StopRelic(const std::string& name, bool wait = true);
  Result<OJson> StartRelic(const std::string& name);
  Result<OJson> RestartRelic(const std::string& name);
  // Stops it and forgets it (NotFound when it was never deployed).
  Status DeleteRelic(const std::string& name);
  Status ScaleRelic(const std::string& name, const std::string& service, int replicas);

  Result<OJson> RelicStatus(const std::string& name) const;
  // The same, typed: nullopt when the relic is not deployed.
  std::optional<RelicBrief> Brief(const std::string& name) const;
  // What its processes or containers use now (CPU, memory, pids).
  Result<OJson> RelicStats(const std::string& name) const;
  OJson ListRelics() const;
  Result<std::vector<RelicLogLine>> RelicLogs(const std::string& name, const std::string& service,
                                              size_t tail) const;
  Status FollowRelicLogs(const std::string& name, const std::string& service, size_t tail,
                         const std::function<bool(const RelicLogLine*)>& on_line) const;

  // Discovery: the healthy relics.
  std::vector<ServiceRecord> Services() const;
  // `<NAME>_URL` of a healthy relic (for `${KV_STORE_URL:-...}`), else the server's environment.
  std::optional<std::string> Lookup(std::string_view variable) const;
  std::optional<std::string> DiscoveryUrl(std::string_view variable) const;  // <NAME>_URL
  // Lookup as the relic at `manifest_path` may use it: discovery's <NAME>_URL values, and the
  // environment (allow-listed for manifests posted through the API).
  std::function<std::optional<std::string>(std::string_view)> LookupFor(
      const std::string& manifest_path) const;

  // Invokes a declared operation of a relic: `{key}` path parameters come from `params`, the
  // rest go to the query (GET/DELETE/HEAD) or the JSON body (others; `params.body` when given).
  // NotFound for an unknown relic or operation (listing the known ones), Unavailable when the
  // relic is deployed but not healthy or cannot be reached.
  Result<CallResult> CallRelic(const std::string& name, const std::string& operation,
                               const OJson& params, Ms timeout = Ms(30000),
                               const std::string& traceparent = "") const;

 private:
  // A deployed relic: its thread (Run) and what it and the API calls share, under its mu.
  struct Supervisor {
    std::string name;
    mutable Mutex mu;
    std::condition_variable cv;  // commands in, state changes out
    // Its record, as the Store keeps it. Its state and desired state are the enums below; the
    // record's text of them is written by Transition and SetDesired, never read back.
    store::DeploymentRecord rec CORTEX_GUARDED_BY(mu);
    RelicState state CORTEX_GUARDED_BY(mu) = RelicState::kPending;
    Desired desired CORTEX_GUARDED_BY(mu) = Desired::kRunning;
    RelicPlan plan CORTEX_GUARDED_BY(mu);
    bool has_plan CORTEX_GUARDED_BY(mu) = false;
    RelicDriver* driver CORTEX_GUARDED_BY(mu) = nullptr;
    // Its workload was started (or adopted) and not seen ended since.
    bool launched CORTEX_GUARDED_BY(mu) = false;
    // Restart requested (by the user, or after failing health checks).
    bool need_restart CORTEX_GUARDED_BY(mu) = false;
    bool removing CORTEX_GUARDED_BY(mu) = false;
    bool removed CORTEX_GUARDED_BY(mu) = false;
    bool quit CORTEX_GUARDED_BY(mu) = false;
    uint64_t wake CORTEX_GUARDED_BY(mu) = 0;  // bumped by every command: the loop re-checks
    // Health.
    std::string health CORTEX_GUARDED_BY(mu) = "unknown";  // unknown | passing | failing
    std::string probe_error CORTEX_GUARDED_BY(mu);
    int64_t last_probe_ms CORTEX_GUARDED_BY(mu) = 0;
    int failures CORTEX_GUARDED_BY(mu) = 0;  // consecutive failed probes
    int crashes CORTEX_GUARDED_BY(mu) = 0;   // consecutive crashes/restarts, never healthy
    Clock::Steady::time_point next_start CORTEX_GUARDED_BY(mu);
    Clock::Steady::time_point started CORTEX_GUARDED_BY(mu);
    Clock::Steady::time_point next_probe CORTEX_GUARDED_BY(mu);
    std::string base_url CORTEX_GUARDED_BY(mu);  // discovered at runtime, else the plan's
    OJson info CORTEX_GUARDED_BY(mu) = OJson::object();
    std::thread thread;
  };
  static bool NeedsStop(const Supervisor& sv) CORTEX_REQUIRES(sv.mu);
  // A copy of what a relic's supervisor holds, for calls into its driver outside its lock.
  struct Workload {
    RelicPlan plan;
    store::DeploymentRecord rec;
    RelicDriver* driver = nullptr;
    bool launched = false;
  };
  Result<Workload> Copy(const std::string& name) const;
  Result<RelicPlan> Plan(const std::string& name, Status* not_found) const;
  RelicDriver* DriverFor(const std::string& driver) const;
  std::shared_ptr<Supervisor> Find(const std::string& name) const;
  void Run(const std::shared_ptr<Supervisor>& sv);
  void Transition(Supervisor& sv, RelicState state, const std::string& error)
      CORTEX_REQUIRES(sv.mu);
  void SetDesired(Supervisor& sv, Desired desired) CORTEX_REQUIRES(sv.mu);
  OJson StatusJson(const Supervisor& sv) const CORTEX_REQUIRES(sv.mu);
  void Publish(const Supervisor& sv, bool up) CORTEX_REQUIRES(sv.mu);
  enum class RelicCommand { kStop, kStart, kRestart };
  Result<OJson> Command(const std::string& name, RelicCommand command, bool wait);

  DeployerOptions options_;
  registry::Registry& registry_;
  store::Store& store_;
  const Clock& clock_;
  std::unique_ptr<RelicDriver> process_, compose_;
  std::unique_ptr<exec::ProcessRunner> runner_;  // command health probes
  std::function<void(const ServiceRecord&, bool)> listener_;

  // Lock order: a supervisor's mu before mu_ (Publish takes mu_ with the supervisor's held), so
  // mu_ is never held while taking a supervisor's mu.
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<Supervisor>> supervisors_ CORTEX_GUARDED_BY(mu_);
  std::map<std::string, ServiceRecord> services_ CORTEX_GUARDED_BY(mu_);
  bool stopped_ CORTEX_GUARDED_BY(mu_) = false;
};

}  // namespace cortex::deploy
