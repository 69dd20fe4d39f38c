#include "deploy/monuments.h"

#include <algorithm>
#include <set>

#include "common/enum_names.h"
#include "common/json.h"
#include "common/log.h"
#include "exec/executor.h"

namespace cortex::deploy {

namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kComponent = "monument";
constexpr Ms kStageTimeout{300000};  // a stage that is not healthy by then fails the deployment

}  // namespace

Result<MonumentPlan> PlanMonument(const registry::Snapshot& snapshot, const std::string& name) {
  const registry::Entry* entry = snapshot.Find(registry::Kind::kMonument, name);
  if (!entry) {
    return NotFoundError("no monument named '" + name + "' in the registry" +
                         (snapshot.errors().empty()
                              ? std::string()
                              : " (" + std::to_string(snapshot.errors().size()) +
                                    " manifest files have errors: GET /registry/errors)"));
  }
  const auto* spec = entry->manifest().As<registry::MonumentSpec>();
  MonumentPlan plan;
  plan.name = name;
  std::vector<std::string> problems;
  std::map<std::string, const registry::ComponentRef*> relics;
  std::vector<std::string> relic_order;
  for (const auto* c : spec->Relics()) {
    if (!snapshot.Find(registry::Kind::kRelic, c->name)) {
      problems.push_back("relic " + c->name + " is not in the registry");
    }
    if (relics.emplace(c->name, c).second) relic_order.push_back(c->name);
  }
  for (const auto* c : spec->Workflows()) {
    if (c->enabled == false) continue;
    if (!snapshot.Find(registry::Kind::kWorkflow, c->name)) {
      problems.push_back("workflow " + c->name + " is not in the registry");
    }
    plan.workflows.push_back(c->name);
  }
  for (const auto* c : spec->Agents()) {
    if (!snapshot.Find(registry::Kind::kAgent, c->name)) {
      problems.push_back("agent " + c->name + " is not in the registry");
    }
    plan.agents.push_back(c->name);
  }
  // startup_order first: only relics are started; agents and workflows named there are checked.
  std::set<std::string> placed;
  for (const auto& stage : spec->startup_order) {
    std::vector<std::string> names;
    for (const auto& n : stage.names) {
      if (relics.count(n)) {
        if (placed.insert(n).second) names.push_back(n);
      } else if (std::find(plan.workflows.begin(), plan.workflows.end(), n) ==
                     plan.workflows.end() &&
                 std::find(plan.agents.begin(), plan.agents.end(), n) == plan.agents.end()) {
        problems.push_back("startup_order names '" + n + "', which is not a component");
      }
    }
    if (!names.empty()) plan.stages.push_back(std::move(names));
  }
  // The rest by depends_on: each stage holds the relics whose dependencies are all placed.
  std::vector<std::string> rest;
  for (const auto& n : relic_order) {
    if (!placed.count(n)) rest.push_back(n);
  }
  for (const auto& n : rest) {
    for (const auto& d : relics[n]->depends_on) {
      if (!relics.count(d))
        problems.push_back("relic " + n + " depends on " + d +
                           ", which is not one of the monument's relics");
    }
  }
  while (!rest.empty() && problems.empty()) {
    std::vector<std::string> stage, left;
    for (const auto& n : rest) {
      bool ready = std::all_of(relics[n]->depends_on.begin(), relics[n]->depends_on.end(),
                               [&](const std::string& d) { return placed.count(d) > 0; });
      (ready ? stage : left).push_back(n);
    }
    if (stage.empty()) {
      std::string cycle;
      for (const auto& n : left) cycle += (cycle.empty() ? "" : ", ") + n;
      problems.push_back("depends_on has a cycle among: " + cycle);
      break;
    }
    for (const auto& n : stage) placed.insert(n);
    plan.stages.push_back(std::move(stage));
    rest = std::move(left);
  }
  if (!problems.empty()) {
    std::string msg = "monument " + name + " cannot be deployed: ";
    for (size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
    return InvalidArgumentError(msg);
  }
  return plan;
}

namespace {

constexpr std::pair<MonumentState, std::string_view> kMonumentStateNames[] = {
    {MonumentState::kPending, "pending"},   {MonumentState::kDeploying, "deploying"},
    {MonumentState::kHealthy, "healthy"},   {MonumentState::kFailed, "failed"},
    {MonumentState::kStopping, "stopping"}, {MonumentState::kStopped, "stopped"},
};

}  // namespace

std::string_view MonumentStateName(MonumentState state) {
  return EnumName(kMonumentStateNames, state, "failed");
}

std::optional<MonumentState> ParseMonumentState(std::string_view text) {
  return ParseEnumName(kMonumentStateNames, text);
}

// Its fields are guarded by Monuments::mu_ (which the analysis cannot be told: it is another
// object's), but for thread and cv.
struct Monuments::Entry {
  std::string name;
  std::string environment;
  MonumentState state = MonumentState::kPending;
  std::string error;
  std::string failed_component;
  MonumentPlan plan;
  std::vector<std::string> started;         // relics this deployment started (for a rollback)
  std::map<std::string, OJson> components;  // "relic/x" -> {kind, name, state, error, stage}
  int64_t created_ms = 0, updated_ms = 0, deployed_ms = 0;
  bool busy = false;
  std::thread thread;
  std::condition_variable cv;
};

Monuments::Monuments(Deployer& deployer, registry::Registry& registry, store::Store& store)
    : deployer_(deployer), registry_(registry), store_(store) {}

void Monuments::Shutdown() {
  MutexLock lock(mu_);
  stopping_ = true;
}

Monuments::~Monuments() {
  Shutdown();
  std::map<std::string, std::shared_ptr<Entry>> all;
  {
    MutexLock lock(mu_);
    all = entries_;
  }
  for (auto& [n, e] : all) {
    if (e->thread.joinable()) e->thread.join();
  }
}

std::shared_ptr<Monuments::Entry> Monuments::Find(const std::string& name) const {
  MutexLock lock(mu_);
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second;
}

Status Monuments::Start() {
  CORTEX_ASSIGN_OR_RETURN(auto records, store_.ListDeployments("monument"));
  MutexLock lock(mu_);
  for (auto& r : records) {
    auto e = std::make_shared<Entry>();
    e->name = r.name;
    e->environment = r.environment;
    const std::optional<MonumentState> recorded = ParseMonumentState(r.state);
    e->state = recorded.value_or(MonumentState::kFailed);
    e->error = r.error;
    if (!recorded) {
      e->error = "its record has an unknown state '" + r.state + "'";
    } else if (*recorded == MonumentState::kDeploying) {
      e->state = MonumentState::kFailed;
      e->error = "the server stopped during the deployment";
    }
    e->created_ms = r.created_ms;
    e->updated_ms = r.updated_ms;
    e->deployed_ms = r.started_ms;
    OJson detail = ParseJsonOrString(r.detail_json);
    if (detail.is_object()) {
      for (const auto& stage : detail.value("stages", OJson::array())) {
        e->plan.stages.push_back(stage.get<std::vector<std::string>>());
      }
      e->plan.workflows = detail.value("workflows", std::vector<std::string>{});
      e->plan.agents = detail.value("agents", std::vector<std::string>{});
      e->failed_component = detail.value("failed_component", "");
      for (const auto& c : detail.value("components", OJson::array())) {
        e->components[c.value("kind", "") + "/" + c.value("name", "")] = c;
      }
    }
    e->plan.name = r.name;
    entries_[r.name] = e;
  }
  return Status::Ok();
}

void Monuments::Record(Entry& e) {
  e.updated_ms = exec::NowMs();
  store::DeploymentRecord r;
  r.kind = "monument";
  r.name = e.name;
  r.driver = "monument";
  r.desired = e.state == MonumentState::kStopped || e.state == MonumentState::kStopping ? "stopped"
                                                                                        : "running";
  r.state = MonumentStateName(e.state);
  r.error = e.error;
  r.environment = e.environment;
  r.created_ms = e.created_ms;
  r.updated_ms = e.updated_ms;
  r.started_ms = e.deployed_ms;
  OJson comps = OJson::array();
  for (const auto& [k, c] : e.components) comps.push_back(c);
  r.detail_json = DumpJson(OJson{{"stages", e.plan.stages},
                                 {"workflows", e.plan.workflows},
                                 {"agents", e.plan.agents},
                                 {"failed_component", e.failed_component},
                                 {"components", comps}});
  if (Status s = store_.PutDeployment(r); !s.ok()) {
    log::Error(kComponent, e.name + ": cannot record state " + r.state + ": " + s.ToString());
  }
  e.cv.notify_all();
}

OJson Monuments::StatusJson(const Entry& e) const {
  OJson comps = OJson::array();
  // Relics in stage order, then workflows and agents.
  for (size_t i = 0; i < e.plan.stages.size(); ++i) {
    for (const auto& n : e.plan.stages[i]) {
      auto it = e.components.find("relic/" + n);
      OJson c = it != e.components.end()
                    ? it->second
                    : OJson{{"kind", "relic"}, {"name", n}, {"state", "pending"}};
      // Live state from the deployer when it has the relic.
      if (auto live = deployer_.RelicStatus(n); live.ok()) {
        c["state"] = (*live)["state"];
        c["error"] = (*live)["error"];
        c["health"] = (*live)["health"];
        c["base_url"] = (*live)["base_url"];
      }
      c["stage"] = i + 1;
      comps.push_back(std::move(c));
    }
  }
  for (const auto& kind : {"workflow", "agent"}) {
    const auto& names = std::string(kind) == "workflow" ? e.plan.workflows : e.plan.agents;
    for (const auto& n : names) {
      auto it = e.components.find(std::string(kind) + "/" + n);
      comps.push_back(it != e.components.end()
                          ? it->second
                          : OJson{{"kind", kind}, {"name", n}, {"state", "pending"}});
    }
  }
  OJson stages = e.plan.stages;
  OJson j = {{"name", e.name},
             {"environment", e.environment},
             {"state", std::string(MonumentStateName(e.state))},
             {"error", e.error},
             {"stages", stages},
             {"components", comps},
             {"created_ms", e.created_ms},
             {"deployed_ms", e.deployed_ms},
             {"updated_ms", e.updated_ms}};
  if (!e.failed_component.empty()) j["failed_component"] = e.failed_component;
  return j;
}

Result<OJson> Monuments::Deploy(const std::string& name, const std::string& environment) {
  CORTEX_ASSIGN_OR_RETURN(MonumentPlan plan, PlanMonument(*registry_.snapshot(), name));
  // Every relic must be deployable as written before the first one starts.
  std::string problems;
  StatusCode code = StatusCode::kInvalidArgument;
  for (const auto& stage : plan.stages) {
    for (const auto& relic : stage) {
      auto checked = deployer_.Check(relic);
      if (checked.ok()) continue;
      if (checked.status().code() == StatusCode::kUnavailable) code = StatusCode::kUnavailable;
      problems += (problems.empty() ? "" : "; ") + checked.status().message();
    }
  }
  if (!problems.empty()) {
    return Status(code, "monument " + name + " cannot be deployed: " + problems);
  }
  std::shared_ptr<Entry> e;
  {
    MutexLock lock(mu_);
    if (stopping_) return UnavailableError("the server is stopping");
    auto& slot = entries_[name];
    if (!slot) {
      slot = std::make_shared<Entry>();
      slot->name = name;
      slot->created_ms = exec::NowMs();
    }
    e = slot;
    if (e->busy) return ConflictError("monument " + name + " is already being deployed or stopped");
    e->busy = true;
  }
  if (e->thread.joinable()) e->thread.join();  // the previous (finished) deployment's thread
  {
    MutexLock lock(mu_);
    e->environment = environment;
    e->plan = plan;
    e->state = MonumentState::kDeploying;
    e->error.clear();
    e->failed_component.clear();
    e->started.clear();
    e->components.clear();
    for (const auto& wf : plan.workflows) {
      e->components["workflow/" + wf] = {{"kind", "workflow"}, {"name", wf}, {"state", "pending"}};
    }
    for (const auto& a : plan.agents) {
      e->components["agent/" + a] = {{"kind", "agent"}, {"name", a}, {"state", "pending"}};
    }
    Record(*e);
    e->thread = std::thread([this, e, plan] { Run(e, plan); });
    return StatusJson(*e);
  }
}

void Monuments::Run(const std::shared_ptr<Entry>& ep, MonumentPlan plan) {
  Entry& e = *ep;
  auto fail = [&](const std::string& component, const std::string& why) {
    // Roll back what this deployment started, newest first.
    std::vector<std::string> started;
    {
      MutexLock lock(mu_);
      if (stopping_) {  // the server is stopping: nothing failed, nothing is rolled back
        e.state = MonumentState::kFailed;
        e.error = "interrupted: the server stopped during the deployment";
        e.busy = false;
        Record(e);
        return;
      }
      e.failed_component = component;
      e.error = component + " failed: " + why;
      e.state = MonumentState::kFailed;
      started = e.started;
      Record(e);
    }
    log::Warn(kComponent, e.name + ": " + e.error + " (stopping the " +
                              std::to_string(started.size()) + " relics it started)");
    for (auto it = started.rbegin(); it != started.rend(); ++it) (void)deployer_.StopRelic(*it);
    MutexLock lock(mu_);
    e.busy = false;
    Record(e);
  };
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const auto& stage = plan.stages[i];
    // Start the whole stage, then wait for each: the stage runs in parallel.
    for (const auto& n : stage) {
      const auto before = deployer_.Brief(n);
      const bool was_running =
          before && before->desired == Desired::kRunning && before->state != RelicState::kFailed;
      auto r = deployer_.DeployRelic(n, true, e.name);
      if (!r.ok()) {
        {
          MutexLock lock(mu_);
          e.components["relic/" + n] = {
              {"kind", "relic"}, {"name", n}, {"state", "failed"}, {"error", r.status().message()}};
        }
        fail("relic/" + n, r.status().message());
        return;
      }
      MutexLock lock(mu_);
      if (!was_running) e.started.push_back(n);
      e.components["relic/" + n] = {{"kind", "relic"}, {"name", n}, {"state", (*r)["state"]}};
      Record(e);
    }
    const auto deadline = Clock::now() + kStageTimeout;
    for (const auto& n : stage) {
      RelicBrief st;
      for (;;) {
        auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now());
        auto w = deployer_.WaitRelic(n, std::max(left, Ms(0)));
        auto brief = deployer_.Brief(n);
        if (!w.ok() || !brief) {
          fail("relic/" + n, w.ok() ? "relic " + n + " is not deployed" : w.status().message());
          return;
        }
        st = *brief;
        if (st.settled() || Clock::now() >= deadline) break;
      }
      {
        MutexLock lock(mu_);
        e.components["relic/" + n] = {{"kind", "relic"},
                                      {"name", n},
                                      {"state", std::string(RelicStateName(st.state))},
                                      {"error", st.error}};
        Record(e);
      }
      if (st.state != RelicState::kHealthy) {
        std::string why = st.error;
        if (why.empty()) why = "it is " + std::string(RelicStateName(st.state));
        if (!st.settled()) {
          why = "not healthy within " + std::to_string(kStageTimeout.count() / 1000) + " s";
        }
        fail("relic/" + n, why);
        return;
      }
    }
  }
  // Relics are up: check in the workflows and agents (they run on demand and on their own
  // schedules); an agent is ready when the agent runtime says it can run.
  std::map<std::string, Status> agent_checks;
  for (const auto& a : plan.agents) {
    agent_checks[a] = agent_check_ ? agent_check_(a) : Status::Ok();
  }
  auto snapshot = registry_.snapshot();
  MutexLock lock(mu_);
  for (const auto& wf : plan.workflows) {
    bool ok = snapshot->Find(registry::Kind::kWorkflow, wf) != nullptr;
    e.components["workflow/" + wf] = {
        {"kind", "workflow"}, {"name", wf}, {"state", ok ? "enabled" : "failed"}};
  }
  for (const auto& a : plan.agents) {
    bool found = snapshot->Find(registry::Kind::kAgent, a) != nullptr;
    const Status& check = agent_checks[a];
    OJson c = {{"kind", "agent"}, {"name", a}};
    if (!found) {
      c["state"] = "failed";
      c["error"] = "agent " + a + " is not in the registry";
    } else if (!check.ok()) {
      c["state"] = "failed";
      c["error"] = check.message();
    } else {
      c["state"] = agent_check_ ? "ready" : "registered";
    }
    e.components["agent/" + a] = std::move(c);
  }
  e.state = MonumentState::kHealthy;
  e.deployed_ms = exec::NowMs();
  e.busy = false;
  Record(e);
  log::Info(kComponent, e.name + ": deployed (" + std::to_string(plan.stages.size()) + " stages)");
}

bool Monuments::WorkflowEnabled(const std::string& workflow) const {
  auto snapshot = registry_.snapshot();
  bool in_a_monument = false;
  for (const registry::Entry* m : snapshot->List(registry::Kind::kMonument)) {
    const auto* spec = m->manifest().As<registry::MonumentSpec>();
    for (const auto* c : spec->Workflows()) {
      if (c->name != workflow) continue;
      in_a_monument = true;
      MutexLock lock(mu_);
      auto it = entries_.find(m->name());
      if (it != entries_.end() && it->second->state == MonumentState::kHealthy) return true;
    }
  }
  return !in_a_monument;
}

Result<OJson> Monuments::Wait(const std::string& name, Ms timeout) {
  auto e = Find(name);
  if (!e) return NotFoundError("monument " + name + " is not deployed");
  MutexLock lock(mu_);
  e->cv.wait_for(lock.native(), timeout, [&]() CORTEX_REQUIRES(mu_) { return !e->busy; });
  return StatusJson(*e);
}

Result<OJson> Monuments::Get(const std::string& name) const {
  auto e = Find(name);
  if (!e) return NotFoundError("monument " + name + " is not deployed");
  MutexLock lock(mu_);
  return StatusJson(*e);
}

OJson Monuments::List() const {
  MutexLock lock(mu_);
  OJson out = OJson::array();
  for (const auto& [n, e] : entries_) out.push_back(StatusJson(*e));
  return out;
}

Result<OJson> Monuments::Health(const std::string& name) const {
  CORTEX_ASSIGN_OR_RETURN(OJson st, Get(name));
  int relics = 0, healthy = 0;
  OJson comps = OJson::array();
  for (const auto& c : st["components"]) {
    OJson h = {{"kind", c["kind"]}, {"name", c["name"]}, {"state", c["state"]}};
    if (c["kind"] == "relic") {
      ++relics;
      bool ok = c["state"] == "healthy";
      healthy += ok ? 1 : 0;
      h["healthy"] = ok;
      if (c.contains("health")) h["health"] = c["health"];
      if (c.contains("error") && !c["error"].get<std::string>().empty()) h["error"] = c["error"];
    }
    comps.push_back(std::move(h));
  }
  std::string overall = relics == 0 || healthy == relics ? "healthy"
                        : healthy == 0                   ? "down"
                                                         : "degraded";
  if (st["state"] == "deploying") overall = "deploying";
  if (st["state"] == "stopped") overall = "stopped";
  return OJson{{"name", name},         {"status", overall},
               {"state", st["state"]}, {"healthy_relics", healthy},
               {"relics", relics},     {"components", comps}};
}

Result<OJson> Monuments::StopAll(const std::string& name, bool remove) {
  auto e = Find(name);
  if (!e) return NotFoundError("monument " + name + " is not deployed");
  std::vector<std::string> order;
  {
    MutexLock lock(mu_);
    if (e->busy) return ConflictError("monument " + name + " is being deployed or stopped");
    e->busy = true;
    e->state = MonumentState::kStopping;
    Record(*e);
    for (const auto& stage : e->plan.stages) order.insert(order.end(), stage.begin(), stage.end());
  }
  std::string errors;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    auto live = deployer_.RelicStatus(*it);
    if (!live.ok()) continue;  // not deployed (any more)
    // A relic deployed on its own, or by another monument, is left alone.
    if ((*live).value("owner", "") != name) continue;
    if (remove) {
      if (Status s = deployer_.DeleteRelic(*it); !s.ok()) {
        errors += (errors.empty() ? "" : "; ") + *it + ": " + s.message();
      }
    } else if (auto s = deployer_.StopRelic(*it); !s.ok()) {
      errors += (errors.empty() ? "" : "; ") + *it + ": " + s.status().message();
    }
  }
  MutexLock lock(mu_);
  e->busy = false;
  e->state = errors.empty() ? MonumentState::kStopped : MonumentState::kFailed;
  e->error = errors.empty() ? "" : "stopping: " + errors;
  if (remove && errors.empty()) {
    (void)store_.DeleteDeployment("monument", name);
    e->cv.notify_all();
    OJson out = {{"name", name}, {"deleted", true}};
    if (e->thread.joinable()) e->thread.detach();
    entries_.erase(name);
    return out;
  }
  Record(*e);
  return StatusJson(*e);
}

Status Monuments::Scale(const std::string& name, const std::string& service, int replicas) {
  CORTEX_ASSIGN_OR_RETURN(OJson st, Get(name));
  std::string relic = service, sub;
  if (auto slash = service.find('/'); slash != std::string::npos) {
    relic = service.substr(0, slash);
    sub = service.substr(slash + 1);
  }
  std::vector<std::string> names;
  for (const auto& c : st["components"]) {
    if (c["kind"] == "relic") names.push_back(c["name"]);
  }
  if (std::find(names.begin(), names.end(), relic) == names.end()) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    return NotFoundError("monument " + name + " has no service '" + service +
                         "' (its relics: " + (known.empty() ? "none" : known) + ")");
  }
  return deployer_.ScaleRelic(relic, sub, replicas);
}

Result<std::vector<RelicLogLine>> Monuments::Logs(const std::string& name,
                                                  const std::string& service, size_t tail) const {
  CORTEX_ASSIGN_OR_RETURN(OJson st, Get(name));
  std::vector<RelicLogLine> out;
  for (const auto& c : st["components"]) {
    if (c["kind"] != "relic") continue;
    std::string relic = c["name"];
    std::string sub;
    if (!service.empty()) {
      std::string want = service.substr(0, service.find('/'));
      if (want != relic) continue;
      if (service.find('/') != std::string::npos) sub = service.substr(service.find('/') + 1);
    }
    auto lines = deployer_.RelicLogs(relic, sub, tail);
    if (!lines.ok()) continue;
    for (auto& l : *lines) {
      l.service = l.service.empty() ? relic : relic + "/" + l.service;
      out.push_back(std::move(l));
    }
  }
  if (!service.empty() && out.empty()) {
    bool known = false;
    for (const auto& c : st["components"]) {
      known |= c["kind"] == "relic" && c["name"] == service.substr(0, service.find('/'));
    }
    if (!known) return NotFoundError("monument " + name + " has no service '" + service + "'");
  }
  return out;
}

}  // namespace cortex::deploy
