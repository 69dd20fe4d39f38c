#include "deploy/compose_driver.h"

#include <condition_variable>
#include <deque>
#include <thread>

namespace cortex::deploy {

namespace {

using OJson = nlohmann::ordered_json;

std::string ContainerDetail(const docker::Container& c) {
  std::string d = "container " + c.name + " is " + c.state;
  if (c.state == "exited" || c.state == "dead") {
    d += " (exit code " + std::to_string(c.exit_code) + (c.oom_killed ? ", out of memory" : "") +
         ")";
  }
  if (!c.error.empty()) d += ": " + c.error;
  return d;
}

}  // namespace

Result<std::unique_ptr<ComposeDriver>> ComposeDriver::Create(ComposeDriverOptions options) {
  ComposeOptions co;
  co.path_env = options.path_env;
  co.home = options.home;
  if (options.docker_socket != "/var/run/docker.sock") {
    co.docker_host = "unix://" + options.docker_socket;
  }
  CORTEX_ASSIGN_OR_RETURN(ComposeCli cli, ComposeCli::Detect(co));
  return std::unique_ptr<ComposeDriver>(new ComposeDriver(std::move(options), std::move(cli)));
}

ComposeDriver::ComposeDriver(ComposeDriverOptions options, ComposeCli cli)
    : options_(std::move(options)), cli_(std::move(cli)), docker_(options_.docker_socket) {}

Status ComposeDriver::Available() const { return docker_.Ping(); }

std::string MonumentNetwork(const std::string& monument) {
  return ComposeProjectName(monument) + "_net";
}

ComposeProject ComposeDriver::Project(const RelicPlan& plan,
                                      const store::DeploymentRecord& record) const {
  ComposeProject p;
  if (!record.owner.empty()) p.external_networks.push_back(MonumentNetwork(record.owner));
  p.name = ComposeProjectName(plan.name);
  p.compose_file = plan.compose_file;
  p.project_dir = plan.cwd;
  p.labels = {{"cortex.managed", "true"}, {"cortex.relic", plan.name}};
  for (const auto& e : plan.env) {
    if (e.rfind("PATH=", 0) != 0 && e.rfind("HOME=", 0) != 0) p.env.push_back(e);
  }
  p.override_dir = options_.override_dir;
  return p;
}

Status ComposeDriver::Start(const RelicPlan& plan, store::DeploymentRecord& record) {
  CORTEX_RETURN_IF_ERROR(docker_.Ping());
  ComposeProject project = Project(plan, record);
  if (!record.owner.empty()) {
    // The monument's network: its compose relics reach each other by service name on it.
    auto net =
        docker_.CreateNetwork(MonumentNetwork(record.owner),
                              {{"cortex.managed", "true"}, {"cortex.monument", record.owner}});
    if (!net.ok()) return net.status();
  }
  std::map<std::string, int> scale;
  {
    MutexLock lock(mu_);
    scale = scale_[project.name];
  }
  // No `config -q` (a Python start, ~0.3 s): Up reads the file itself and `up` rejects what
  // Compose does not accept. Set first: a failed `up` can leave containers to clean up...
  record.project = project.name;
  auto up = cli_.Up(project, scale);
  if (!up.ok()) {
    // ...but a file Cortex could not read (NotFound, InvalidArgument with its line) or a bad
    // scale was refused before the CLI ran: nothing was created.
    StatusCode code = up.status().code();
    if (code == StatusCode::kNotFound || code == StatusCode::kInvalidArgument) {
      record.project.clear();
    }
    return up.status();
  }
  return Status::Ok();
}

Status ComposeDriver::Stop(const RelicPlan& plan, store::DeploymentRecord& record) {
  if (record.project.empty()) return Status::Ok();
  ComposeProject project = Project(plan, record);
  project.name = record.project;
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(plan.stop_timeout + Ms(999));
  Status down = plan.compose_file.empty() ? NotFoundError("no compose file")
                                          : cli_.Down(project, secs).status();
  if (!down.ok()) {
    // The compose file may be gone: remove what the project left, by its label.
    docker::LabelFilter f = {{docker::kComposeProjectLabel, record.project}};
    Status c = docker_.RemoveContainers(f);
    Status n = docker_.RemoveNetworks(f);
    if (!c.ok()) return c;
    if (!n.ok()) return n;
  }
  record.project.clear();
  if (!record.owner.empty()) {
    // Removed with the monument's last compose relic (in use by another: it stays).
    (void)docker_.RemoveNetwork(MonumentNetwork(record.owner));
  }
  return Status::Ok();
}

Result<std::vector<docker::Container>> ComposeDriver::Containers(const std::string& project,
                                                                 const std::string& service) const {
  docker::LabelFilter f = {{docker::kComposeProjectLabel, project}};
  if (!service.empty()) f[docker::kComposeServiceLabel] = service;
  return docker_.ListContainers(f, true);
}

Observation ComposeDriver::Observe(const RelicPlan& plan, store::DeploymentRecord& record) {
  Observation o;
  if (record.project.empty()) {
    o.detail = "not started";
    return o;
  }
  auto list = Containers(record.project, "");
  if (!list.ok()) {
    // Docker is not answering: nothing is known to have ended. Health probes tell the rest.
    o.running = true;
    o.info = {{"project", record.project}, {"error", list.status().message()}};
    return o;
  }
  OJson containers = OJson::array();
  std::string down;
  for (const auto& c : *list) {
    OJson ports = OJson::array();
    for (const auto& p : c.ports) {
      if (p.host_port > 0) {
        ports.push_back(std::to_string(p.host_port) + "->" + std::to_string(p.container_port) +
                        "/" + p.protocol);
        if (o.base_url.empty() && plan.base_url.empty() && p.protocol == "tcp") {
          std::string host = p.host_ip.empty() || p.host_ip == "0.0.0.0" || p.host_ip == "::"
                                 ? "127.0.0.1"
                                 : p.host_ip;
          o.base_url = "http://" + host + ":" + std::to_string(p.host_port);
        }
      }
    }
    containers.push_back({{"name", c.name},
                          {"service", c.service},
                          {"state", c.state},
                          {"health", c.health},
                          {"ports", ports}});
    if (c.state == "running") {
      ++o.replicas;
    } else if (down.empty()) {
      down = ContainerDetail(c);
    }
  }
  o.info = {{"project", record.project}, {"containers", containers}};
  o.running = o.replicas > 0;
  if (!o.running) o.detail = list->empty() ? "no containers" : down;
  return o;
}

Status ComposeDriver::Scale(const RelicPlan& plan, store::DeploymentRecord& record,
                            const std::string& service, int replicas) {
  ComposeProject project = Project(plan, record);
  project.name = record.project;
  std::string svc = service;
  if (svc.empty()) {
    CORTEX_ASSIGN_OR_RETURN(auto services, cli_.Services(project));
    if (services.size() != 1) {
      std::string names;
      for (const auto& s : services) names += (names.empty() ? "" : ", ") + s;
      return InvalidArgumentError("relic " + plan.name + " has several services (" + names +
                                  "): say which one to scale");
    }
    svc = services.front();
  }
  CORTEX_RETURN_IF_ERROR(cli_.Scale(project, svc, replicas).status());
  MutexLock lock(mu_);
  scale_[project.name][svc] = replicas;  // the next `up` keeps it
  return Status::Ok();
}

Result<OJson> ComposeDriver::Stats(const RelicPlan& plan, const store::DeploymentRecord& record) {
  if (record.project.empty())
    return FailedPreconditionError("relic " + plan.name + " is not running");
  CORTEX_ASSIGN_OR_RETURN(auto list, Containers(record.project, ""));
  // One-shot stats take about a second each (two samples): ask for them all at once.
  std::vector<std::pair<const docker::Container*, Result<docker::Stats>>> got;
  std::vector<std::thread> threads;
  got.reserve(list.size());
  for (const auto& c : list) {
    if (c.state == "running") got.emplace_back(&c, UnavailableError("no answer"));
  }
  for (auto& g : got) {
    threads.emplace_back([this, &g] { g.second = docker_.OneShotStats(g.first->id); });
  }
  for (auto& t : threads) t.join();
  OJson out = OJson::array();
  for (const auto& [c, st] : got) {
    OJson j = {{"name", c->name}, {"service", c->service}};
    if (st.ok()) {
      j["cpu_percent"] = st->cpu_percent;
      j["memory_bytes"] = st->memory_usage_bytes;
      j["memory_limit_bytes"] = st->memory_limit_bytes;
      j["pids"] = st->pids;
    } else {
      j["error"] = st.status().message();
    }
    out.push_back(std::move(j));
  }
  return OJson{{"containers", out}};
}

Result<std::vector<RelicLogLine>> ComposeDriver::Logs(const RelicPlan&,
                                                      const store::DeploymentRecord& record,
                                                      const std::string& service, size_t tail) {
  if (record.project.empty()) return std::vector<RelicLogLine>{};
  CORTEX_ASSIGN_OR_RETURN(auto list, Containers(record.project, service));
  if (list.empty() && !service.empty()) {
    return NotFoundError("relic " + record.name + " has no containers of service '" + service +
                         "'");
  }
  std::vector<std::pair<int64_t, RelicLogLine>> lines;
  for (const auto& c : list) {
    CORTEX_ASSIGN_OR_RETURN(auto got, docker_.Logs(c.id, tail));
    std::string label = list.size() > 1 && !c.service.empty() ? c.name : c.service;
    for (auto& l : got) lines.push_back({l.time_ms, {label, l.is_stderr, std::move(l.text)}});
  }
  std::stable_sort(lines.begin(), lines.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  if (lines.size() > tail) lines.erase(lines.begin(), lines.end() - static_cast<long>(tail));
  std::vector<RelicLogLine> out;
  for (auto& [t, l] : lines) out.push_back(std::move(l));
  return out;
}

Status ComposeDriver::FollowLogs(const RelicPlan&, const store::DeploymentRecord& record,
                                 const std::string& service, size_t tail,
                                 const std::function<bool(const RelicLogLine*)>& on_line) {
  if (record.project.empty())
    return FailedPreconditionError("relic " + record.name + " is not running");
  CORTEX_ASSIGN_OR_RETURN(auto list, Containers(record.project, service));
  const docker::Container* target = nullptr;
  for (const auto& c : list) {
    if (c.state == "running") {
      target = &c;
      break;
    }
  }
  if (!target) return FailedPreconditionError("relic " + record.name + " has no running container");
  // The follow runs on its own thread; this one hands its lines to on_line (and heartbeats).
  Mutex mu;
  std::condition_variable cv;
  std::deque<RelicLogLine> queue;
  bool ended = false;
  Status result = Status::Ok();
  exec::CancelToken cancel;
  std::string id = target->id, label = target->service;
  std::thread follower([&] {
    Status s = docker_.FollowLogs(
        id, tail,
        [&](const docker::LogLine& l) {
          MutexLock lock(mu);
          queue.push_back({label, l.is_stderr, l.text});
          cv.notify_all();
          return true;
        },
        &cancel);
    MutexLock lock(mu);
    ended = true;
    result = s;
    cv.notify_all();
  });
  MutexLock lock(mu);
  for (;;) {
    cv.wait_for(lock.native(), Ms(1000), [&] { return ended || !queue.empty(); });
    bool keep = true;
    if (queue.empty() && !ended) {
      lock.Unlock();
      keep = on_line(nullptr);
      lock.Lock();
    }
    while (keep && !queue.empty()) {
      RelicLogLine l = std::move(queue.front());
      queue.pop_front();
      lock.Unlock();
      keep = on_line(&l);
      lock.Lock();
    }
    if (!keep || (ended && queue.empty())) {
      cancel.Cancel();
      break;
    }
  }
  lock.Unlock();
  follower.join();
  return result;
}

}  // namespace cortex::deploy
