#include "workflow/scheduler.h"

#include "common/cron.h"
#include "common/log.h"

namespace cortex::workflow {

namespace {

constexpr const char* kComponent = "scheduler";
constexpr int kMaxCatchUpSteps = 100000;  // Next() calls to find the latest missed due time

}  // namespace

std::string ScheduledRunId(const std::string& workflow, int64_t due_ms) {
  // FNV-1a over the name and due time, twice with different seeds: 80 bits shown.
  auto fnv = [&](uint64_t h) {
    std::string key = workflow + "@" + std::to_string(due_ms);
    for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
    return h;
  };
  uint64_t a = fnv(14695981039346656037ull), b = fnv(1469598103934665603ull);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "wf_";
  for (int i = 0; i < 16; ++i) id += kHex[(a >> (i * 4)) & 0xF];
  for (int i = 0; i < 4; ++i) id += kHex[(b >> (i * 4)) & 0xF];
  return id;
}

Scheduler::Scheduler(registry::Registry& registry, store::Store& store, Engine& engine,
                     std::function<int64_t()> now_ms)
    : registry_(registry), store_(store), engine_(engine), now_ms_(std::move(now_ms)) {
  if (!now_ms_) {
    now_ms_ = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
          .count();
    };
  }
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::SetEnabled(std::function<bool(const std::string&)> enabled) {
  enabled_ = std::move(enabled);
}

void Scheduler::Start() {
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      lock.unlock();
      Tick(now_ms_());
      lock.lock();
      // Due times are whole seconds at least: wake just after the next second starts.
      int64_t now = now_ms_();
      cv_.wait_for(lock, std::chrono::milliseconds(1000 - now % 1000 + 5),
                   [&] { return stopping_; });
    }
  });
}

void Scheduler::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int Scheduler::Tick(int64_t now_ms) {
  using TimePoint = CronSchedule::TimePoint;
  auto at = [](int64_t ms) { return TimePoint(std::chrono::milliseconds(ms)); };
  auto ms_of = [](TimePoint t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  };
  int started = 0;
  auto snap = registry_.snapshot();
  for (const registry::Entry* e : snap->List(registry::Kind::kWorkflow)) {
    const auto* spec = e->manifest().As<registry::WorkflowSpec>();
    if (!spec || spec->trigger.type != registry::TriggerType::kScheduled ||
        !spec->trigger.schedule || !e->resolved()) {
      continue;
    }
    std::string name(e->name());
    auto cron = ParseCron(*spec->trigger.schedule);
    if (!cron.ok()) continue;  // reported at load time
    if (enabled_ && !enabled_(name)) {
      // Not enabled now: when it is, it counts from then (the mark follows the clock).
      if (Status st = store_.SetScheduleMark(name, now_ms); !st.ok()) {
        log::Warn(kComponent, name + ": " + st.message());
      }
      continue;
    }
    auto mark = store_.GetScheduleMark(name);
    if (!mark.ok()) {
      log::Warn(kComponent, name + ": " + mark.status().message());
      continue;
    }
    if (!*mark) {
      // First sight: count from now.
      if (Status st = store_.SetScheduleMark(name, now_ms); !st.ok()) {
        log::Warn(kComponent, name + ": " + st.message());
      }
      continue;
    }
    // The latest due time in (mark, now].
    std::optional<TimePoint> due;
    TimePoint cursor = at(**mark);
    for (int i = 0; i < kMaxCatchUpSteps; ++i) {
      auto next = cron->Next(cursor);
      if (!next || *next > at(now_ms)) break;
      due = next;
      cursor = *next;
      if (cron->interval().count() > 0) {  // @every: jump straight to the latest
        int64_t step = cron->interval().count() * 1000;
        int64_t latest = now_ms - ((now_ms % step) + step) % step;
        if (latest > ms_of(*due)) due = at(latest);
        break;
      }
    }
    if (!due) continue;
    int64_t due_ms = ms_of(*due);
    StartRequest request;
    request.workflow = name;
    request.trigger = "scheduled";
    request.run_id = ScheduledRunId(name, due_ms);
    std::vector<exec::FieldError> fields;
    auto id = engine_.StartRun(request, &fields);
    if (id.ok() || id.status().code() == StatusCode::kAlreadyExists) {
      if (id.ok()) {
        ++started;
        log::Info(kComponent, name + ": started " + *id + " (" + cron->ToString() + ")");
      }
      warned_.erase(name);
      if (Status st = store_.SetScheduleMark(name, due_ms); !st.ok()) {
        log::Warn(kComponent, name + ": " + st.message());
      }
    } else if (warned_[name] != id.status().message()) {
      // E.g. a required input without a default: said once, not every second.
      warned_[name] = id.status().message();
      log::Warn(kComponent, name + ": the scheduled run cannot start: " + id.status().message());
      (void)store_.SetScheduleMark(name, due_ms);  // no pile-up of failed attempts either
    }
  }
  return started;
}

}  // namespace cortex::workflow
