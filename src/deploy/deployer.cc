#include "deploy/deployer.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <unistd.h>

#include "common/enum_names.h"
#include "common/json.h"
#include "common/log.h"
#include "deploy/health.h"
#include "exec/executor.h"
#include "http/http.h"
#include "registry/variables.h"

namespace cortex::deploy {

namespace {

using Steady = std::chrono::steady_clock;
constexpr const char* kComponent = "deploy";

bool Settled(RelicState state) {
  return state != RelicState::kPending && state != RelicState::kStarting &&
         state != RelicState::kStopping;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none" : out;
}

}  // namespace

namespace {
constexpr std::pair<RelicState, std::string_view> kStateNames[] = {
    {RelicState::kPending, "pending"},   {RelicState::kStarting, "starting"},
    {RelicState::kHealthy, "healthy"},   {RelicState::kUnhealthy, "unhealthy"},
    {RelicState::kStopping, "stopping"}, {RelicState::kStopped, "stopped"},
    {RelicState::kFailed, "failed"}};
}  // namespace

std::string_view RelicStateName(RelicState state) { return EnumName(kStateNames, state, "failed"); }

std::optional<RelicState> ParseRelicState(std::string_view text) {
  return ParseEnumName(kStateNames, text);
}

// Something of the relic may still be there: running, or left by a failure (the exited
// containers of a compose project are kept for their logs until a stop or delete).
bool Deployer::NeedsStop(const Supervisor& sv) {
  return sv.launched || sv.rec.pid > 0 || !sv.rec.project.empty() ||
         !(sv.state == RelicState::kStopped || sv.state == RelicState::kFailed);
}

OJson ServiceRecord::ToJson() const {
  return {{"name", name},           {"url", url},     {"state", state},
          {"endpoints", endpoints}, {"owner", owner}, {"updated_ms", updated_ms}};
}

Deployer::Deployer(DeployerOptions options, registry::Registry& registry, store::Store& store,
                   std::unique_ptr<RelicDriver> process, std::unique_ptr<RelicDriver> compose)
    : options_(std::move(options)),
      registry_(registry),
      store_(store),
      clock_(options_.clock ? *options_.clock : SystemClock()),
      process_(std::move(process)),
      compose_(std::move(compose)),
      runner_(exec::MakeProcessRunner()) {}

Deployer::~Deployer() { Stop(); }

void Deployer::SetDiscoveryListener(std::function<void(const ServiceRecord&, bool)> listener) {
  listener_ = std::move(listener);
}

RelicDriver* Deployer::DriverFor(const std::string& driver) const {
  if (driver == "process") return process_.get();
  if (driver == "compose") return compose_.get();
  return nullptr;
}

std::shared_ptr<Deployer::Supervisor> Deployer::Find(const std::string& name) const {
  MutexLock lock(mu_);
  auto it = supervisors_.find(name);
  return it == supervisors_.end() ? nullptr : it->second;
}

Result<RelicPlan> Deployer::Plan(const std::string& name, Status* not_found) const {
  auto snapshot = registry_.snapshot();
  const registry::Entry* entry = snapshot->Find(registry::Kind::kRelic, name);
  if (!entry) {
    Status s = NotFoundError("no relic named '" + name + "' in the registry");
    if (not_found) *not_found = s;
    return s;
  }
  PlanContext ctx;
  ctx.manifest_path = entry->file->path;
  ctx.manifest_version = std::to_string(entry->file->revision);
  ctx.data_dir = options_.data_dir + "/relics/" + name + "/data";
  ctx.path_env = options_.path_env;
  ctx.server_uid = static_cast<uint32_t>(::geteuid());
  ctx.allow_root = options_.allow_root_relics;
  ctx.lookup = LookupFor(entry->file->path);
  auto plan = PlanRelic(entry->manifest(), ctx);
  if (!plan.ok()) {
    return Status(plan.status().code(),
                  "relic " + name + " (" + entry->file->rel_path + "): " + plan.status().message());
  }
  return plan;
}

Status Deployer::Start() {
  CORTEX_ASSIGN_OR_RETURN(auto records, store_.ListDeployments("relic"));
  for (auto& rec : records) {
    auto sv = std::make_shared<Supervisor>();
    sv->name = rec.name;
    auto plan = Plan(rec.name, nullptr);
    MutexLock l(sv->mu);  // (not shared yet)
    if (plan.ok()) {
      sv->plan = *plan;
    } else {
      // The manifest is gone or broken: what runs is still known by its record.
      log::Warn(kComponent, plan.status().message());
      sv->plan.name = rec.name;
      sv->plan.driver = rec.driver;
    }
    sv->has_plan = true;
    sv->driver = DriverFor(rec.driver);
    sv->launched = rec.pid > 0 || !rec.project.empty();
    sv->rec = std::move(rec);
    auto state = ParseRelicState(sv->rec.state);
    if (!state) {
      sv->rec.error = "its record has an unknown state '" + sv->rec.state + "'";
      sv->rec.state = RelicStateName(RelicState::kFailed);
    }
    sv->state = state.value_or(RelicState::kFailed);
    sv->desired = sv->rec.desired == "stopped" ? Desired::kStopped : Desired::kRunning;
    sv->started = clock_.Now();
    if (sv->launched && sv->desired == Desired::kRunning && sv->state != RelicState::kFailed) {
      // Adopted: it is healthy again (and back in discovery) once its first probe passes.
      sv->state = RelicState::kStarting;
      sv->rec.state = RelicStateName(sv->state);
    }
    if (!sv->driver) {
      sv->state = RelicState::kFailed;
      sv->rec.state = RelicStateName(sv->state);
      sv->rec.error = "the " + sv->rec.driver + " driver is not available on this server";
    }
    l.Unlock();
    MutexLock lock(mu_);
    supervisors_[sv->name] = sv;
    sv->thread = std::thread([this, sv] { Run(sv); });
  }
  return Status::Ok();
}

void Deployer::Stop() {
  std::map<std::string, std::shared_ptr<Supervisor>> all;
  {
    MutexLock lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    all = supervisors_;
  }
  if (options_.stop_relics_on_exit) {
    for (auto& [name, sv] : all) (void)StopRelic(name, false);
    for (auto& [name, sv] : all) {
      Ms stop_timeout;
      {
        MutexLock l(sv->mu);
        stop_timeout = sv->plan.stop_timeout;
      }
      (void)WaitRelic(name, stop_timeout + Ms(10000));
    }
  }
  for (auto& [name, sv] : all) {
    {
      MutexLock lock(sv->mu);
      sv->quit = true;
    }
    sv->cv.notify_all();
  }
  for (auto& [name, sv] : all) {
    if (sv->thread.joinable()) sv->thread.join();
  }
}

void Deployer::SetDesired(Supervisor& sv, Desired desired) {
  sv.desired = desired;
  sv.rec.desired = desired == Desired::kRunning ? "running" : "stopped";
}

void Deployer::Transition(Supervisor& sv, RelicState state, const std::string& error) {
  const bool was_healthy = sv.state == RelicState::kHealthy;
  sv.state = state;
  sv.rec.state = RelicStateName(state);
  sv.rec.error = error;
  sv.rec.updated_ms = clock_.UnixMs();
  sv.rec.manifest_version = sv.plan.manifest_version;
  OJson detail = {{"health",
                   {{"type", ProbeTypeName(sv.plan.health.type)},
                    {"status", sv.health},
                    {"last_error", sv.probe_error},
                    {"last_probe_ms", sv.last_probe_ms},
                    {"consecutive_failures", sv.failures}}},
                  {"base_url", sv.base_url.empty() ? sv.plan.base_url : sv.base_url},
                  {"runtime", sv.info}};
  sv.rec.detail_json = DumpJson(detail);
  if (Status s = store_.PutDeployment(sv.rec); !s.ok()) {
    log::Error(kComponent, sv.name + ": cannot record state " + sv.rec.state + ": " + s.ToString());
  }
  if (state == RelicState::kHealthy && !was_healthy) {
    Publish(sv, true);
  } else if (was_healthy && state != RelicState::kHealthy) {
    Publish(sv, false);
  }
  if (state == RelicState::kFailed) {
    log::Warn(kComponent, sv.name + ": failed: " + error);
  } else {
    log::Info(kComponent,
              sv.name + ": " + sv.rec.state + (error.empty() ? "" : " (" + error + ")"));
  }
  sv.cv.notify_all();
}

void Deployer::Publish(const Supervisor& sv, bool up) {
  ServiceRecord r;
  r.name = sv.name;
  r.url = sv.base_url.empty() ? sv.plan.base_url : sv.base_url;
  r.state = sv.rec.state;
  for (const auto& e : sv.plan.endpoints) r.endpoints.push_back(e.name);
  r.owner = sv.rec.owner;
  r.updated_ms = clock_.UnixMs();
  {
    MutexLock lock(mu_);
    if (up) {
      services_[r.name] = r;
    } else {
      services_.erase(r.name);
    }
  }
  if (listener_) listener_(r, up);
}

void Deployer::Run(const std::shared_ptr<Supervisor>& svp) {
  Supervisor& sv = *svp;
  MutexLock l(sv.mu);
  sv.next_probe = clock_.Now();
  auto wait_until = [&](Steady::time_point until) CORTEX_REQUIRES(sv.mu) {
    uint64_t seen = sv.wake;
    clock_.WaitUntil(l.native(), sv.cv, until,
                     [&]() CORTEX_REQUIRES(sv.mu) { return sv.quit || sv.wake != seen; });
  };
  auto stop_workload = [&](RelicState then_state, const std::string& error) CORTEX_REQUIRES(sv.mu) {
    if (sv.state != RelicState::kStopping) Transition(sv, RelicState::kStopping, sv.rec.error);
    RelicPlan plan = sv.plan;
    store::DeploymentRecord rec = sv.rec;
    RelicDriver* driver = sv.driver;
    // Through sv.mu, not l: the analysis of a lambda does not know l holds it. l owns it again
    // once it is relocked.
    sv.mu.Unlock();
    Status st = driver ? driver->Stop(plan, rec) : Status::Ok();
    sv.mu.Lock();
    sv.rec.pid = rec.pid;
    sv.rec.project = rec.project;
    sv.launched = false;
    sv.health = "unknown";
    sv.info = OJson::object();
    Transition(sv, then_state,
               st.ok()
                   ? error
                   : (error.empty() ? "" : error + "; ") + "stopping it failed: " + st.message());
  };

  while (!sv.quit) {
    const auto now = clock_.Now();
    if (sv.desired == Desired::kStopped) {
      if (NeedsStop(sv)) {
        stop_workload(sv.state == RelicState::kFailed ? RelicState::kFailed : RelicState::kStopped,
                      sv.state == RelicState::kFailed ? sv.rec.error : "");
        continue;
      }
      if (sv.removing) {
        if (Status s = store_.DeleteDeployment("relic", sv.name);
            !s.ok() && s.code() != StatusCode::kNotFound) {
          log::Error(kComponent, sv.name + ": cannot delete its record: " + s.ToString());
        }
        sv.removed = true;
        sv.cv.notify_all();
        return;
      }
      wait_until(Steady::time_point::max());
      continue;
    }
    // Desired: running.
    if (sv.state == RelicState::kFailed && !sv.need_restart) {
      if (sv.launched) {  // a failed relic leaves nothing running behind
        stop_workload(RelicState::kFailed, sv.rec.error);
        continue;
      }
      wait_until(Steady::time_point::max());
      continue;
    }
    if (sv.need_restart) {
      sv.need_restart = false;
      if (sv.launched)
        stop_workload(RelicState::kPending, "");
      else
        Transition(sv, RelicState::kPending, "");
      continue;
    }
    if (!sv.launched) {
      if (now < sv.next_start) {
        wait_until(sv.next_start);
        continue;
      }
      const uint64_t seen = sv.wake;
      l.Unlock();
      auto plan = Plan(sv.name, nullptr);
      l.Lock();
      if (sv.quit || sv.wake != seen) continue;
      if (!plan.ok()) {
        Transition(sv, RelicState::kFailed, plan.status().message());
        continue;
      }
      sv.plan = std::move(*plan);
      sv.driver = DriverFor(sv.plan.driver);
      if (!sv.driver) {
        Transition(sv, RelicState::kFailed,
                   "the " + sv.plan.driver +
                       " driver is not available on this server (is Docker "
                       "Compose installed?)");
        continue;
      }
      sv.rec.driver = sv.plan.driver;
      RelicPlan launch = sv.plan;
      store::DeploymentRecord rec = sv.rec;
      RelicDriver* driver = sv.driver;
      l.Unlock();
      Status st = driver->Start(launch, rec);
      l.Lock();
      sv.rec.pid = rec.pid;
      sv.rec.pid_start = rec.pid_start;
      sv.rec.project = rec.project;
      if (!st.ok()) {
        sv.launched = rec.pid > 0 || !rec.project.empty();
        Transition(sv, RelicState::kFailed, "cannot start: " + st.message());
        continue;
      }
      sv.launched = true;
      sv.started = clock_.Now();
      sv.rec.started_ms = clock_.UnixMs();
      sv.failures = 0;
      sv.health = "unknown";
      sv.probe_error.clear();
      sv.next_probe = sv.started;
      if (sv.desired == Desired::kRunning) Transition(sv, RelicState::kStarting, sv.rec.error);
      continue;
    }

    // Launched: is it still up?
    {
      RelicPlan plan = sv.plan;
      store::DeploymentRecord rec = sv.rec;
      RelicDriver* driver = sv.driver;
      const uint64_t seen = sv.wake;
      l.Unlock();
      Observation obs = driver->Observe(plan, rec);
      l.Lock();
      sv.rec.pid = rec.pid;
      sv.rec.pid_start = rec.pid_start;
      sv.info = obs.info;
      if (!obs.base_url.empty()) sv.base_url = obs.base_url;
      if (sv.quit || sv.wake != seen) continue;
      if (!obs.running) {
        sv.launched = false;
        sv.health = "unknown";
        if (clock_.Now() - sv.started > options_.stable_after) sv.crashes = 0;
        {
          // What it said last usually says why ("Address already in use").
          l.Unlock();
          auto last = driver->Logs(plan, rec, "", 1);
          l.Lock();
          if (last.ok() && !last->empty() && !last->back().text.empty() &&
              last->back().text.rfind("--- cortex:", 0) != 0) {
            std::string text = last->back().text;
            if (text.size() > 300) text = text.substr(0, 300) + "...";
            obs.detail += "; its last output: " + text;
          }
          if (sv.quit || sv.wake != seen) continue;
        }
        const RestartPolicy policy = sv.plan.restart;
        if (policy == RestartPolicy::kNever ||
            (policy == RestartPolicy::kOnFailure && obs.exited_cleanly)) {
          if (obs.exited_cleanly) {
            SetDesired(sv, Desired::kStopped);
            Transition(sv, RelicState::kStopped, "it " + obs.detail);
          } else {
            Transition(sv, RelicState::kFailed, obs.detail + " (restart policy: never)");
          }
          continue;
        }
        ++sv.crashes;
        if (sv.crashes > options_.max_restarts) {
          Transition(sv, RelicState::kFailed,
                     "crashed " + std::to_string(sv.crashes) +
                         " times in a row without becoming healthy; last: " + obs.detail);
          continue;
        }
        Ms delay = options_.restart_backoff * (1 << std::min(sv.crashes - 1, 16));
        delay = std::min(delay, options_.max_restart_backoff);
        sv.next_start = clock_.Now() + delay;
        ++sv.rec.restarts;
        Transition(sv, RelicState::kStarting,
                   obs.detail + "; restarting in " + std::to_string(delay.count()) + " ms (" +
                       std::to_string(sv.crashes) + " of " + std::to_string(options_.max_restarts) +
                       ")");
        continue;
      }
    }

    // Up: probe its health when due.
    if (clock_.Now() >= sv.next_probe) {
      ProbeSpec spec = sv.plan.health;
      std::string base = sv.base_url.empty() ? sv.plan.base_url : sv.base_url;
      std::vector<std::string> env = sv.plan.env;
      std::string cwd = sv.plan.cwd;
      const uint64_t seen = sv.wake;
      l.Unlock();
      ProbeResult pr = RunProbe(spec, base, env, cwd, *runner_);
      l.Lock();
      if (sv.quit || sv.wake != seen) continue;
      sv.last_probe_ms = clock_.UnixMs();
      sv.probe_error = pr.error;
      const RelicState state = sv.state;
      if (pr.ok && spec.type == ProbeSpec::Type::kNone &&
          clock_.Now() - sv.started < options_.min_uptime) {
        // No check: healthy once it has stayed up a moment (not when it exits at once).
        sv.next_probe = sv.started + options_.min_uptime;
        wait_until(std::min(clock_.Now() + sv.driver->observe_interval(), sv.next_probe));
        continue;
      }
      if (pr.ok) {
        sv.failures = 0;
        sv.health = "passing";
        if (state != RelicState::kHealthy) Transition(sv, RelicState::kHealthy, "");
      } else {
        ++sv.failures;
        sv.health = "failing";
        if (state == RelicState::kStarting || state == RelicState::kPending) {
          if (clock_.Now() - sv.started > spec.start_period) {
            stop_workload(RelicState::kFailed, "the health check did not pass within " +
                                                   std::to_string(spec.start_period.count()) +
                                                   " ms; last probe: " + pr.error);
            continue;
          }
        } else if (sv.failures >= spec.retries) {
          if (state == RelicState::kHealthy) Transition(sv, RelicState::kUnhealthy, pr.error);
          if (sv.plan.restart != RestartPolicy::kNever) {
            if (clock_.Now() - sv.started > options_.stable_after) sv.crashes = 0;
            ++sv.crashes;
            if (sv.crashes > options_.max_restarts) {
              stop_workload(RelicState::kFailed, "unhealthy " + std::to_string(sv.crashes) +
                                                     " times in a row; last probe: " + pr.error);
              continue;
            }
            ++sv.rec.restarts;
            sv.need_restart = true;
            sv.next_start = clock_.Now() + options_.restart_backoff;
            continue;
          }
        }
      }
      const bool starting = sv.state == RelicState::kStarting || sv.state == RelicState::kPending;
      sv.next_probe = clock_.Now() + (starting ? options_.starting_probe_interval : spec.interval);
    }
    wait_until(std::min(clock_.Now() + sv.driver->observe_interval(), sv.next_probe));
  }
}

OJson Deployer::StatusJson(const Supervisor& sv) const {
  std::vector<std::string> ops;
  for (const auto& e : sv.plan.endpoints) ops.push_back(e.name);
  OJson j = {{"name", sv.name},
             {"driver", sv.rec.driver},
             {"desired", sv.rec.desired},
             {"state", sv.rec.state},
             {"error", sv.rec.error},
             {"owner", sv.rec.owner},
             {"restarts", sv.rec.restarts},
             {"restart_policy", RestartPolicyName(sv.plan.restart)},
             {"base_url", sv.base_url.empty() ? sv.plan.base_url : sv.base_url},
             {"endpoints", ops},
             {"health",
              {{"type", ProbeTypeName(sv.plan.health.type)},
               {"status", sv.health},
               {"last_error", sv.probe_error},
               {"last_probe_ms", sv.last_probe_ms},
               {"consecutive_failures", sv.failures}}},
             {"created_ms", sv.rec.created_ms},
             {"started_ms", sv.rec.started_ms},
             {"updated_ms", sv.rec.updated_ms},
             {"manifest_version", sv.rec.manifest_version}};
  if (sv.rec.pid > 0) j["pid"] = sv.rec.pid;
  if (!sv.rec.project.empty()) j["project"] = sv.rec.project;
  j["runtime"] = sv.info;
  return j;
}

Result<RelicPlan> Deployer::Check(const std::string& name, bool start) const {
  Status not_found;
  auto plan = Plan(name, &not_found);
  if (!not_found.ok()) return not_found;
  if (!plan.ok()) return InvalidArgumentError(plan.status().message());
  RelicDriver* driver = DriverFor(plan->driver);
  if (!driver) {
    return UnavailableError("relic " + name + " needs the " + plan->driver +
                            " driver, which is not available on this server (Docker Compose "
                            "was not found)");
  }
  if (start) {
    if (Status s = driver->Available(); !s.ok()) {
      return Status(s.code(), "relic " + name + ": " + s.message());
    }
  }
  return plan;
}

Result<OJson> Deployer::DeployRelic(const std::string& name, bool start, const std::string& owner) {
  {
    MutexLock lock(mu_);
    if (stopped_) return UnavailableError("the deployer is stopping");
  }
  // Check the manifest first: a relic that cannot be deployed as written records nothing.
  CORTEX_ASSIGN_OR_RETURN(RelicPlan plan_ok, Check(name, start));
  auto plan = Result<RelicPlan>(std::move(plan_ok));
  if (auto sv = Find(name)) {
    MutexLock l(sv->mu);
    if (sv->removing) return ConflictError("relic " + name + " is being deleted");
    // Its owner stays who deployed it first: a monument including a relic deployed on its own
    // does not take it over (and will not stop it).
    if (start && (sv->desired != Desired::kRunning || sv->state == RelicState::kFailed)) {
      SetDesired(*sv, Desired::kRunning);
      sv->crashes = 0;
      sv->need_restart = sv->state == RelicState::kFailed;
      sv->next_start = clock_.Now();
      Transition(*sv, RelicState::kPending, "");
      ++sv->wake;
      sv->cv.notify_all();
    }
    return StatusJson(*sv);
  }
  auto sv = std::make_shared<Supervisor>();
  sv->name = name;
  {
    MutexLock l(sv->mu);
    sv->plan = *plan;
    sv->has_plan = true;
    sv->driver = DriverFor(plan->driver);
    sv->rec.name = name;
    sv->rec.driver = plan->driver;
    SetDesired(*sv, start ? Desired::kRunning : Desired::kStopped);
    sv->rec.owner = owner;
    sv->rec.created_ms = clock_.UnixMs();
    Transition(*sv, start ? RelicState::kPending : RelicState::kStopped, "");
  }
  {
    MutexLock lock(mu_);
    if (stopped_) return UnavailableError("the deployer is stopping");
    auto [it, inserted] = supervisors_.emplace(name, sv);
    if (!inserted) return ConflictError("relic " + name + " is being deployed by another request");
    sv->thread = std::thread([this, sv] { Run(sv); });
  }
  // Not under mu_: a supervisor's mu comes first (its thread may be in Publish already).
  MutexLock l(sv->mu);
  return StatusJson(*sv);
}

Result<OJson> Deployer::WaitRelic(const std::string& name, Ms timeout) {
  auto sv = Find(name);
  if (!sv) return NotFoundError("relic " + name + " is not deployed");
  MutexLock l(sv->mu);
  sv->cv.wait_for(l.native(), timeout, [&]() CORTEX_REQUIRES(sv->mu) {
    if (sv->removed || sv->quit) return true;
    if (!Settled(sv->state) || sv->need_restart) return false;
    if (sv->desired == Desired::kStopped) return !sv->launched;
    return true;
  });
  return StatusJson(*sv);
}

Result<OJson> Deployer::Command(const std::string& name, RelicCommand command, bool wait) {
  auto sv = Find(name);
  if (!sv) return NotFoundError("relic " + name + " is not deployed");
  Ms timeout;
  {
    MutexLock l(sv->mu);
    if (sv->removing) return ConflictError("relic " + name + " is being deleted");
    switch (command) {
      case RelicCommand::kStop:
        SetDesired(*sv, Desired::kStopped);
        if (NeedsStop(*sv)) {
          Transition(*sv, RelicState::kStopping, "");
        }
        break;
      case RelicCommand::kStart:
        if (sv->desired != Desired::kRunning || sv->state == RelicState::kFailed) {
          SetDesired(*sv, Desired::kRunning);
          sv->crashes = 0;
          sv->next_start = clock_.Now();
          sv->need_restart = sv->state == RelicState::kFailed;
          Transition(*sv, RelicState::kPending, "");
        }
        break;
      case RelicCommand::kRestart:
        SetDesired(*sv, Desired::kRunning);
        sv->crashes = 0;
        sv->need_restart = true;
        sv->next_start = clock_.Now();
        Transition(*sv, RelicState::kPending, "");
        break;
    }
    ++sv->wake;
    timeout = sv->plan.stop_timeout + Ms(15000);
  }
  sv->cv.notify_all();
  if (!wait) return RelicStatus(name);
  return WaitRelic(name, timeout);
}

Result<OJson> Deployer::StopRelic(const std::string& name, bool wait) {
  return Command(name, RelicCommand::kStop, wait);
}
Result<OJson> Deployer::StartRelic(const std::string& name) {
  return Command(name, RelicCommand::kStart, false);
}
Result<OJson> Deployer::RestartRelic(const std::string& name) {
  return Command(name, RelicCommand::kRestart, false);
}

Status Deployer::DeleteRelic(const std::string& name) {
  auto sv = Find(name);
  if (!sv) return NotFoundError("relic " + name + " is not deployed");
  {
    MutexLock l(sv->mu);
    SetDesired(*sv, Desired::kStopped);
    sv->removing = true;
    ++sv->wake;
    sv->cv.notify_all();
    sv->cv.wait_for(l.native(), sv->plan.stop_timeout + Ms(30000),
                    [&]() CORTEX_REQUIRES(sv->mu) { return sv->removed || sv->quit; });
    if (!sv->removed) return UnavailableError("relic " + name + " did not stop in time");
  }
  if (sv->thread.joinable()) sv->thread.join();
  MutexLock lock(mu_);
  supervisors_.erase(name);
  return Status::Ok();
}

Status Deployer::ScaleRelic(const std::string& name, const std::string& service, int replicas) {
  if (replicas < 0) return InvalidArgumentError("replicas must be 0 or more");
  CORTEX_ASSIGN_OR_RETURN(Workload w, Copy(name));
  if (!w.launched) {
    return FailedPreconditionError("relic " + name + " is not running (state: " + w.rec.state +
                                   ")");
  }
  return w.driver->Scale(w.plan, w.rec, service, replicas);
}

Result<OJson> Deployer::RelicStatus(const std::string& name) const {
  auto sv = Find(name);
  if (!sv) return NotFoundError("relic " + name + " is not deployed");
  MutexLock l(sv->mu);
  return StatusJson(*sv);
}

std::optional<RelicBrief> Deployer::Brief(const std::string& name) const {
  auto sv = Find(name);
  if (!sv) return std::nullopt;
  MutexLock l(sv->mu);
  return RelicBrief{sv->state, sv->desired, sv->rec.error};
}

bool RelicBrief::settled() const { return Settled(state) && state != RelicState::kPending; }

OJson Deployer::ListRelics() const {
  std::vector<std::shared_ptr<Supervisor>> all;
  {
    MutexLock lock(mu_);
    for (const auto& [name, sv] : supervisors_) all.push_back(sv);
  }
  OJson out = OJson::array();
  for (const auto& sv : all) {
    MutexLock l(sv->mu);
    if (!sv->removed) out.push_back(StatusJson(*sv));
  }
  return out;
}

Result<Deployer::Workload> Deployer::Copy(const std::string& name) const {
  auto sv = Find(name);
  if (!sv) return NotFoundError("relic " + name + " is not deployed");
  MutexLock l(sv->mu);
  if (!sv->driver) {
    return FailedPreconditionError("relic " + name + " has no driver on this server");
  }
  return Workload{sv->plan, sv->rec, sv->driver, sv->launched};
}

Result<OJson> Deployer::RelicStats(const std::string& name) const {
  CORTEX_ASSIGN_OR_RETURN(Workload w, Copy(name));
  if (!w.launched) {
    return FailedPreconditionError("relic " + name + " is not running (state: " + w.rec.state +
                                   ")");
  }
  CORTEX_ASSIGN_OR_RETURN(OJson stats, w.driver->Stats(w.plan, w.rec));
  OJson out = {{"relic", name}, {"driver", w.rec.driver}};
  for (auto& [k, v] : stats.items()) out[k] = v;
  return out;
}

Result<std::vector<RelicLogLine>> Deployer::RelicLogs(const std::string& name,
                                                      const std::string& service,
                                                      size_t tail) const {
  CORTEX_ASSIGN_OR_RETURN(Workload w, Copy(name));
  return w.driver->Logs(w.plan, w.rec, service, tail);
}

Status Deployer::FollowRelicLogs(const std::string& name, const std::string& service, size_t tail,
                                 const std::function<bool(const RelicLogLine*)>& on_line) const {
  CORTEX_ASSIGN_OR_RETURN(Workload w, Copy(name));
  return w.driver->FollowLogs(w.plan, w.rec, service, tail, on_line);
}

std::vector<ServiceRecord> Deployer::Services() const {
  MutexLock lock(mu_);
  std::vector<ServiceRecord> out;
  for (const auto& [name, r] : services_) out.push_back(r);
  return out;
}

std::function<std::optional<std::string>(std::string_view)> Deployer::LookupFor(
    const std::string& manifest_path) const {
  if (!registry_.WrittenByApi(manifest_path)) {
    return [this](std::string_view var) { return Lookup(var); };
  }
  auto env = registry::AllowListedEnv(
      [](std::string_view var) -> std::optional<std::string> {
        if (const char* v = std::getenv(std::string(var).c_str())) return std::string(v);
        return std::nullopt;
      },
      options_.allowed_env);
  return [this, env](std::string_view var) -> std::optional<std::string> {
    if (auto url = DiscoveryUrl(var)) return url;
    return env(var);
  };
}

std::optional<std::string> Deployer::DiscoveryUrl(std::string_view variable) const {
  MutexLock lock(mu_);
  for (const auto& [name, r] : services_) {
    if (variable == VariablePrefix(name) + "_URL") return r.url;
  }
  return std::nullopt;
}

std::optional<std::string> Deployer::Lookup(std::string_view variable) const {
  if (auto url = DiscoveryUrl(variable)) return url;
  if (const char* v = std::getenv(std::string(variable).c_str())) return std::string(v);
  return std::nullopt;
}

Result<CallResult> Deployer::CallRelic(const std::string& name, const std::string& operation,
                                       const OJson& params, Ms timeout,
                                       const std::string& traceparent) const {
  std::string base;
  std::vector<registry::RelicEndpoint> endpoints;
  if (auto sv = Find(name)) {
    MutexLock l(sv->mu);
    if (sv->state != RelicState::kHealthy) {
      return UnavailableError("relic " + name + " is not healthy (state: " + sv->rec.state +
                              (sv->rec.error.empty() ? "" : ": " + sv->rec.error) + ")");
    }
    base = sv->base_url.empty() ? sv->plan.base_url : sv->base_url;
    endpoints = sv->plan.endpoints;
  } else {
    // Not deployed by Cortex: an external service reached at its declared base URL.
    auto snapshot = registry_.snapshot();
    const registry::Entry* entry = snapshot->Find(registry::Kind::kRelic, name);
    if (!entry) return NotFoundError("no relic named '" + name + "' in the registry");
    const auto* spec = entry->manifest().As<registry::RelicSpec>();
    if (spec->interface) endpoints = spec->interface->endpoints;
    if (!spec->interface || !spec->interface->base_url) {
      return UnavailableError("relic " + name +
                              " is not deployed and declares no interface.base_url");
    }
    PlanContext ctx;
    ctx.lookup = LookupFor(entry->file->path);
    CORTEX_ASSIGN_OR_RETURN(base, ResolveText(*spec->interface->base_url, ctx));
  }
  const registry::RelicEndpoint* ep = nullptr;
  std::vector<std::string> known;
  for (const auto& e : endpoints) {
    known.push_back(e.name);
    if (e.name == operation) ep = &e;
  }
  if (!ep) {
    return NotFoundError("relic " + name + " has no operation '" + operation +
                         "' (operations: " + JoinNames(known) + ")");
  }
  if (base.empty() && !ep->path.starts_with("http")) {
    return UnavailableError("relic " + name + " has no base URL");
  }
  while (!base.empty() && base.back() == '/') base.pop_back();
  OJson rest = params.is_object() ? params : OJson::object();
  // Path parameters: {key} from the parameters, percent-encoded.
  std::string path = ep->path;
  for (size_t open = path.find('{'); open != std::string::npos; open = path.find('{', open)) {
    size_t close = path.find('}', open);
    if (close == std::string::npos) break;
    std::string key = path.substr(open + 1, close - open - 1);
    auto it = rest.find(key);
    if (it == rest.end()) {
      return InvalidArgumentError("operation " + operation + " of relic " + name +
                                  " needs the parameter '" + key + "' (path " + ep->path + ")");
    }
    std::string value = it->is_string() ? it->get<std::string>() : it->dump();
    rest.erase(key);
    std::string enc = http::UrlEncode(value);
    path.replace(open, close - open + 1, enc);
    open += enc.size();
  }
  std::string url = path.starts_with("http") ? path : base + path;
  HttpCall call;
  call.method = ep->method;
  call.url = url;
  call.timeout = timeout;
  call.traceparent = traceparent;
  if (call.method == "GET" || call.method == "DELETE" || call.method == "HEAD") {
    call.query = rest;
  } else if (auto b = rest.find("body"); b != rest.end()) {
    call.body = *b;
  } else {
    call.body = rest;
  }
  return SendHttp(call);
}

Result<CallResult> SendHttp(const HttpCall& call) {
  auto [base, path] = http::SplitUrl(call.url);
  if (call.query.is_object() && !call.query.empty()) {
    std::string query;
    for (const auto& [k, v] : call.query.items()) {
      query += (query.empty() ? "" : "&") + http::UrlEncode(k) + "=" +
               http::UrlEncode(v.is_string() ? v.get<std::string>() : DumpJson(v));
    }
    path += (path.find('?') == std::string::npos ? "?" : "&") + query;
  }
  http::ClientOptions opts;
  opts.read_timeout = call.timeout;
  if (!call.traceparent.empty()) opts.headers.emplace("traceparent", call.traceparent);
  http::Client client(base, opts);
  std::string text = call.body.is_null() ? "" : DumpJson(call.body);
  Result<http::ClientResponse> resp =
      InvalidArgumentError("method " + call.method + " is not supported for relic calls yet");
  if (call.method == "GET" || call.method == "HEAD") resp = client.Get(path);
  if (call.method == "POST") resp = client.Post(path, text);
  if (call.method == "PUT") resp = client.Put(path, text);
  if (call.method == "DELETE") resp = client.Delete(path);
  if (!resp.ok()) {
    if (resp.status().code() == StatusCode::kInvalidArgument) return resp.status();
    return UnavailableError(call.method + " " + base + path + ": " + resp.status().message());
  }
  CallResult out;
  out.status = resp->status;
  out.method = call.method;
  out.url = base + path;
  out.body = ParseJsonOrString(resp->body);
  return out;
}

}  // namespace cortex::deploy
