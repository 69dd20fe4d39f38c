// Unit tests of the workflow engine's logic: the plan's ordering rules, the engine with a fake
// step dispatcher (no processes) over a real SQLite store and a real registry, and the
// scheduler with an injected clock.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "registry/parser.h"
#include "store/faulty_store.h"
#include "store/store.h"
#include "workflow/engine.h"
#include "workflow/plan.h"
#include "workflow/scheduler.h"

namespace cortex::workflow {
namespace {

namespace fs = std::filesystem;

std::shared_ptr<const registry::Manifest> Parse(const std::string& yaml) {
  auto parsed = registry::ParseManifest(yaml, "w.yml", registry::FileFormat::kYaml);
  for (const auto& d : parsed.diagnostics) ADD_FAILURE() << d.ToString();
  if (!parsed.manifest) return nullptr;
  return std::make_shared<const registry::Manifest>(std::move(*parsed.manifest));
}

std::vector<std::string> Deps(const Plan& p, const std::string& name) {
  std::vector<std::string> out;
  for (int d : p.Find(name)->deps) out.push_back(p.nodes[d].name);
  std::sort(out.begin(), out.end());
  return out;
}

using V = std::vector<std::string>;

TEST(PlanTest, DeclarationOrderGroupsAndDependsOn) {
  auto m = Parse(R"y(kind: Workflow
name: w
description: d
steps:
  - {name: a, type: tool, target: t}
  - {name: b, type: tool, target: t}
  - {name: c1, type: tool, target: t, parallel_group: g}
  - {name: c2, type: tool, target: t, parallel_group: g}
  - {name: d, type: tool, target: t}
  - {name: e, type: tool, target: t, depends_on: [a]}
  - {name: f, type: tool, target: t}
)y");
  auto plan = BuildPlan(m);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const Plan& p = **plan;
  EXPECT_EQ(Deps(p, "a"), V{});
  EXPECT_EQ(Deps(p, "b"), V{"a"});
  EXPECT_EQ(Deps(p, "c1"), V{"b"});
  EXPECT_EQ(Deps(p, "c2"), V{"b"});
  EXPECT_EQ(Deps(p, "d"), (V{"c1", "c2"}));
  EXPECT_EQ(Deps(p, "e"), V{"a"});
  EXPECT_EQ(Deps(p, "f"), V{"e"});
}

TEST(PlanTest, ParallelAndConditionalAreFlattened) {
  auto m = Parse(R"y(kind: Workflow
name: w
description: d
steps:
  - {name: a, type: tool, target: t}
  - name: fan
    type: parallel
    parallel:
      - {name: p1, type: tool, target: t}
      - {name: p2, type: tool, target: t}
  - name: choose
    type: conditional
    condition: "$(steps.p1.n) > 1"
    then:
      - {name: t1, type: tool, target: t}
      - {name: t2, type: tool, target: t}
    else:
      - {name: e1, type: tool, target: t}
  - {name: z, type: tool, target: t}
)y");
  auto plan = BuildPlan(m);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const Plan& p = **plan;
  EXPECT_EQ(Deps(p, "p1"), V{"a"});
  EXPECT_EQ(Deps(p, "p2"), V{"a"});
  EXPECT_EQ(Deps(p, "fan"), (V{"p1", "p2"}));
  EXPECT_EQ(Deps(p, "choose#if"), V{"fan"});
  EXPECT_EQ(Deps(p, "t1"), V{"choose#if"});
  EXPECT_EQ(Deps(p, "t2"), V{"t1"});
  EXPECT_EQ(Deps(p, "e1"), V{"choose#if"});
  EXPECT_EQ(Deps(p, "choose"), (V{"choose#if", "e1", "t2"}));
  EXPECT_EQ(Deps(p, "z"), V{"choose"});
  EXPECT_EQ(p.Find("t1")->gate, p.by_name.at("choose#if"));
  EXPECT_FALSE(p.Find("e1")->branch);
}

// ---- The engine with a fake dispatcher ------------------------------------------------------

class FakeDispatcher : public StepDispatcher {
 public:
  Status StartTool(const ToolCall& call,
                   std::function<void(const store::ExecutionRecord&)> done) override {
    std::lock_guard lock(mu);
    calls.push_back(call);
    store::ExecutionRecord r;
    r.id = call.execution_id;
    int attempt = std::stoi(call.idempotency_key.substr(call.idempotency_key.rfind('/') + 1));
    bool fail = fail_until.count(call.tool) && attempt < fail_until[call.tool];
    if (hold.count(call.tool)) {
      held.push_back({r, std::move(done)});
      return Status::Ok();
    }
    r.status = fail ? "failed" : "succeeded";
    r.error = fail ? "boom" : "";
    r.result_json =
        nlohmann::ordered_json{{"tool", call.tool}, {"params", call.parameters}, {"n", 3}}.dump();
    done(r);
    return Status::Ok();
  }
  void CancelTool(const std::string& id) override {
    std::lock_guard lock(mu);
    cancelled.push_back(id);
    for (auto it = held.begin(); it != held.end(); ++it) {
      if (it->first.id == id) {
        it->first.status = "cancelled";
        it->second(it->first);
        held.erase(it);
        return;
      }
    }
  }
  void ReleaseAll() {
    std::lock_guard lock(mu);
    for (auto& [r, done] : held) {
      r.status = "succeeded";
      r.result_json = "{}";
      done(r);
    }
    held.clear();
  }
  std::mutex mu;
  std::vector<ToolCall> calls;
  std::vector<std::string> cancelled;
  std::map<std::string, int> fail_until;  // tool -> first attempt that succeeds
  std::set<std::string> hold;             // tools whose calls stay running until released
  std::vector<std::pair<store::ExecutionRecord, std::function<void(const store::ExecutionRecord&)>>>
      held;
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "cortex-engine-XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
    fs::create_directories(dir_ / "m");
    // The tools the workflows name (the fake dispatcher never runs them).
    for (const char* t : {"t1", "t2", "t3", "t4", "ok", "flaky", "slow"}) {
      fs::create_directories(dir_ / "m" / "tools" / t);
      std::ofstream(dir_ / "m" / "tools" / t / "tool.yml")
          << "kind: Tool\nname: " << t
          << "\ndescription: d\nimplementation: {runtime: bash, entrypoint: ./run.sh}\n";
      std::ofstream(dir_ / "m" / "tools" / t / "run.sh") << "echo '{}'\n";
    }
  }
  void TearDown() override {
    scheduler_.reset();
    engine_.reset();
    registry_.reset();
    faulty_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  void Write(const std::string& name, const std::string& yaml) {
    std::ofstream(dir_ / "m" / (name + ".workflow.yml")) << yaml;
  }
  // The engine over a Store that refuses the writes it is told to (faulty_).
  void OpenFaulty(EngineOptions eo) {
    Open();
    engine_.reset();
    faulty_ = std::make_unique<store::FaultyStore>(*store_);
    engine_ = std::make_unique<Engine>(eo, *registry_, *faulty_, dispatcher_);
    ASSERT_TRUE(engine_->Start().ok());
  }
  void Open() {
    store::SqliteOptions so;
    so.path = (dir_ / "cortex.db").string();
    auto s = store::OpenSqliteStore(so);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
    registry::RegistryOptions ro;
    ro.root = (dir_ / "m").string();
    registry_ = std::make_unique<registry::Registry>(ro);
    ASSERT_TRUE(registry_->LoadAll().ok());
    EngineOptions eo;  // real time: retry delays are a few ms
    engine_ = std::make_unique<Engine>(eo, *registry_, *store_, dispatcher_);
    ASSERT_TRUE(engine_->Start().ok());
  }
  store::RunRecord RunToEnd(const std::string& name, Json input = Json::object()) {
    StartRequest req;
    req.workflow = name;
    req.input = input;
    auto id = engine_->StartRun(req, nullptr);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    if (!id.ok()) return {};
    auto rec = engine_->Wait(*id, std::chrono::seconds(10));
    EXPECT_TRUE(rec.ok());
    return rec.ok() ? *rec : store::RunRecord{};
  }
  std::map<std::string, store::StepRecord> Steps(const std::string& run) {
    std::map<std::string, store::StepRecord> out;
    auto steps = store_->GetSteps(run);
    EXPECT_TRUE(steps.ok());
    if (!steps.ok()) return out;
    for (const store::StepRecord& s : steps.value()) out[s.step] = s;
    return out;
  }

  fs::path dir_;
  FakeDispatcher dispatcher_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<store::FaultyStore> faulty_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Scheduler> scheduler_;
};

constexpr const char* kChain = R"y(kind: Workflow
name: chain
description: d
trigger:
  type: manual
  parameters:
    x: {type: integer, default: 2}
steps:
  - {name: a, type: tool, target: t1, parameters: {v: "$(trigger.x)"}}
  - {name: b, type: tool, target: t2, parameters: {from_a: "$(steps.a.n)"}}
  - {name: c, type: tool, target: t3, condition: "$(steps.b.status) == 'success' and $(trigger.x) > 5"}
  - {name: d, type: tool, target: t4}
outputs:
  n: {source: "steps.b.n"}
)y";

TEST_F(EngineTest, RunsAChainWithTemplatesConditionsAndSkips) {
  Write("chain", kChain);
  Open();
  store::RunRecord r = RunToEnd("chain");
  EXPECT_EQ(r.status, "succeeded") << r.error;
  EXPECT_EQ(r.output_json, R"({"n":3})");
  auto steps = Steps(r.id);
  EXPECT_EQ(steps["a"].status, "succeeded");
  EXPECT_EQ(steps["c"].status, "skipped");
  EXPECT_EQ(steps["d"].status, "skipped") << "a skip propagates to the step that follows";
  ASSERT_EQ(dispatcher_.calls.size(), 2u);
  EXPECT_EQ(dispatcher_.calls[0].parameters, (Json{{"v", 2}}));  // whole value keeps its type
  EXPECT_EQ(dispatcher_.calls[1].parameters, (Json{{"from_a", 3}}));
  EXPECT_EQ(dispatcher_.calls[0].idempotency_key, r.id + "/a/1");
  // The event log tells the same story, in order.
  auto events = *store_->GetRunEvents(r.id, 0, 100);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front().type, "run_started");
  EXPECT_EQ(events.back().type, "run_succeeded");
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, static_cast<int64_t>(i + 1));
}

TEST_F(EngineTest, OutputMappingReadsPathsAsTemplatesDo) {
  // `items.0` and `[0]` reach the same element in an output_mapping as in a template (they used
  // to be two walkers: `items.0` was null in output_mapping).
  Write("map", R"y(kind: Workflow
name: map
description: d
steps:
  - name: a
    type: tool
    target: t1
    parameters: {items: [10, 20]}
    output_mapping:
      dotted: "params.items.0"
      bracketed: "$.params.items[1]"
      missing: "params.nope.0"
  - {name: b, type: tool, target: t2, parameters: {x: "$(steps.a.dotted)", y: "$(steps.a.params.items.1)"}}
)y");
  Open();
  store::RunRecord r = RunToEnd("map");
  ASSERT_EQ(r.status, "succeeded") << r.error;
  auto a = Json::parse(Steps(r.id)["a"].output_json);
  EXPECT_EQ(a["dotted"], 10) << a.dump();
  EXPECT_EQ(a["bracketed"], 20) << a.dump();
  EXPECT_TRUE(a["missing"].is_null()) << a.dump();
  ASSERT_EQ(dispatcher_.calls.size(), 2u);
  EXPECT_EQ(dispatcher_.calls[1].parameters, (Json{{"x", 10}, {"y", 20}}));
}

TEST_F(EngineTest, RetriesWithBackoffThenFailsTheRunAndRetryResumes) {
  Write("r", R"y(kind: Workflow
name: r
description: d
steps:
  - {name: a, type: tool, target: ok}
  - name: b
    type: tool
    target: flaky
    retry_policy: {max_attempts: 2, backoff: exponential, delay: 10ms}
  - {name: c, type: tool, target: ok}
)y");
  Open();
  dispatcher_.fail_until["flaky"] = 3;
  store::RunRecord r = RunToEnd("r");
  EXPECT_EQ(r.status, "failed");
  EXPECT_EQ(r.error, "step 'b' failed: boom");
  auto steps = Steps(r.id);
  EXPECT_EQ(steps["b"].attempt, 2);
  EXPECT_EQ(steps["c"].status, "cancelled");
  // Retry: a is kept, b runs its third attempt (which succeeds), then c.
  ASSERT_TRUE(engine_->Retry(r.id, "").ok());
  auto again = engine_->Wait(r.id, std::chrono::seconds(10));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, "succeeded") << again->error;
  steps = Steps(r.id);
  EXPECT_EQ(steps["b"].attempt, 3);
  size_t a_calls = 0;
  for (auto& c : dispatcher_.calls)
    a_calls += c.tool == "ok" && c.idempotency_key.find("/a/") != std::string::npos;
  EXPECT_EQ(a_calls, 1u) << "a succeeded before: not run again";
  EXPECT_EQ(engine_->Retry(r.id, "").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine_->Retry(r.id, "nope").code(), StatusCode::kNotFound);
}

TEST_F(EngineTest, PauseResumeCancelAndBadStates) {
  Write("p", R"y(kind: Workflow
name: p
description: d
steps:
  - {name: slow, type: tool, target: slow}
  - {name: next, type: tool, target: ok}
)y");
  Open();
  dispatcher_.hold.insert("slow");
  StartRequest req;
  req.workflow = "p";
  auto id = engine_->StartRun(req, nullptr);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(engine_->Pause(*id).ok());
  EXPECT_EQ(engine_->Pause(*id).code(), StatusCode::kFailedPrecondition);
  dispatcher_.ReleaseAll();
  // The running step finishes; the next one waits for resume.
  for (int i = 0; i < 1000 && Steps(*id)["slow"].status != "succeeded"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(Steps(*id)["slow"].status, "succeeded");
  EXPECT_EQ(Steps(*id)["next"].status, "pending");
  EXPECT_EQ((*store_->GetRun(*id))->status, "paused");
  ASSERT_TRUE(engine_->Resume(*id).ok());
  auto done = engine_->Wait(*id, std::chrono::seconds(10));
  EXPECT_EQ(done->status, "succeeded");
  EXPECT_EQ(engine_->Cancel(*id).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine_->Resume(*id).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine_->Pause("wf_nope").code(), StatusCode::kNotFound);

  // Cancel reaches the running step.
  auto id2 = engine_->StartRun(req, nullptr);
  ASSERT_TRUE(id2.ok());
  ASSERT_TRUE(engine_->Cancel(*id2).ok());
  auto cancelled = engine_->Wait(*id2, std::chrono::seconds(10));
  EXPECT_EQ(cancelled->status, "cancelled");
  EXPECT_EQ(Steps(*id2)["slow"].status, "cancelled");
  EXPECT_EQ(Steps(*id2)["next"].status, "cancelled");
  EXPECT_EQ(dispatcher_.cancelled.size(), 1u);
}

TEST_F(EngineTest, BadInputIsRefusedBeforeAnythingIsRecorded) {
  Write("chain", kChain);
  Open();
  StartRequest req;
  req.workflow = "chian";
  EXPECT_EQ(engine_->StartRun(req, nullptr).status().code(), StatusCode::kNotFound);
  req.workflow = "chain";
  req.input = {{"x", "many"}};
  std::vector<exec::FieldError> fields;
  EXPECT_EQ(engine_->StartRun(req, &fields).status().code(), StatusCode::kInvalidArgument);
  ASSERT_EQ(fields.size(), 1u);
  EXPECT_EQ(fields[0].field, "x");
  EXPECT_TRUE(store_->ListRuns({})->empty());
}

TEST_F(EngineTest, RecoveryRedispatchesRunningStepsWithTheSameIdempotencyKey) {
  Write("p", R"y(kind: Workflow
name: p
description: d
steps:
  - {name: first, type: tool, target: ok}
  - {name: slow, type: tool, target: slow}
  - {name: last, type: tool, target: ok}
)y");
  Open();
  dispatcher_.hold.insert("slow");
  StartRequest req;
  req.workflow = "p";
  auto id = engine_->StartRun(req, nullptr);
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 1000 && Steps(*id)["slow"].status != "running"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // A crash: the engine goes away without a word; a new one starts on the same store.
  engine_->Stop();
  dispatcher_.held.clear();
  std::string key = dispatcher_.calls.back().idempotency_key;
  dispatcher_.hold.clear();
  engine_.reset();
  EngineOptions eo;
  engine_ = std::make_unique<Engine>(eo, *registry_, *store_, dispatcher_);
  ASSERT_TRUE(engine_->Start().ok());
  auto done = engine_->Wait(*id, std::chrono::seconds(10));
  EXPECT_EQ(done->status, "succeeded") << done->error;
  std::vector<std::string> keys;
  for (auto& c : dispatcher_.calls) keys.push_back(c.idempotency_key);
  EXPECT_EQ(keys, (V{*id + "/first/1", key, key, *id + "/last/1"}));
}

// States are enums in the engine and text in the Store. A record this version cannot read (a
// newer server wrote it) does not stop recovery: an unknown step state runs the step again,
// and the run's own state is taken as it was recorded when known (paused stays paused).
TEST_F(EngineTest, RecoveryReadsRecordedStatesAndRerunsAStepInAnUnknownOne) {
  Write("p", R"y(kind: Workflow
name: p
description: d
steps:
  - {name: first, type: tool, target: ok}
  - {name: slow, type: tool, target: slow}
  - {name: last, type: tool, target: ok}
)y");
  Open();
  dispatcher_.hold.insert("slow");
  StartRequest req;
  req.workflow = "p";
  auto id = engine_->StartRun(req, nullptr);
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 1000 && Steps(*id)["slow"].status != "running"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  engine_->Stop();
  dispatcher_.held.clear();
  dispatcher_.hold.clear();
  engine_.reset();
  // What a newer server might have left: the run paused, the slow step in a state unknown here.
  auto rec = store_->GetRun(*id);
  ASSERT_TRUE(rec.ok() && *rec);
  store::RunTransition t;
  t.run = **rec;
  t.run->status = "paused";
  t.run_exists = true;
  store::StepRecord slow = Steps(*id)["slow"];
  slow.status = "hibernating";
  t.steps.push_back(slow);
  ASSERT_TRUE(store_->WriteRun(t).ok());
  size_t calls_before = dispatcher_.calls.size();

  EngineOptions eo;
  engine_ = std::make_unique<Engine>(eo, *registry_, *store_, dispatcher_);
  ASSERT_TRUE(engine_->Start().ok());
  auto paused = engine_->Wait(*id, std::chrono::milliseconds(0));
  ASSERT_TRUE(paused.ok());
  EXPECT_EQ(paused->status, "paused");
  EXPECT_EQ(dispatcher_.calls.size(), calls_before);  // nothing starts while paused
  EXPECT_EQ(Steps(*id)["slow"].status, "hibernating");
  ASSERT_TRUE(engine_->Resume(*id).ok());
  auto done = engine_->Wait(*id, std::chrono::seconds(10));
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->status, "succeeded") << done->error;
  auto steps = Steps(*id);
  EXPECT_EQ(steps["slow"].status, "succeeded");
  EXPECT_EQ(steps["last"].status, "succeeded");
  ASSERT_EQ(dispatcher_.calls.size(), calls_before + 2);
  EXPECT_EQ(dispatcher_.calls[calls_before].tool, "slow");
}

// A write the Store refuses in the middle of a run is retried (with backoff) before anything it
// records is acted on: the run ends as if nothing happened, each step run once, its event log
// gapless. Before, the transition was dropped: the next step was never dispatched, the run hung
// and kept an in-flight slot.
TEST_F(EngineTest, ARefusedWriteMidRunIsRetriedAndTheRunFinishes) {
  Write("three", R"y(kind: Workflow
name: three
description: d
steps:
  - {name: a, type: tool, target: t1}
  - {name: b, type: tool, target: t2}
  - {name: c, type: tool, target: t3}
)y");
  EngineOptions eo;
  eo.max_inflight = 1;  // a lost slot would stop every later run
  OpenFaulty(eo);
  faulty_->FailRunWrites(/*first=*/2, /*count=*/3);  // the run is created, then a's writes fail
  store::RunRecord r = RunToEnd("three");
  EXPECT_EQ(r.status, "succeeded") << r.error;
  EXPECT_EQ(faulty_->refused(), 3);
  ASSERT_EQ(dispatcher_.calls.size(), 3u);
  EXPECT_EQ(dispatcher_.calls[0].tool, "t1");
  EXPECT_EQ(dispatcher_.calls[1].tool, "t2");
  EXPECT_EQ(dispatcher_.calls[2].tool, "t3");
  auto events = *store_->GetRunEvents(r.id, 0, 100);
  ASSERT_FALSE(events.empty());
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, static_cast<int64_t>(i + 1));
  EXPECT_EQ(events.back().type, "run_succeeded");
  // The slot came back: another run gets it.
  EXPECT_EQ(RunToEnd("three").status, "succeeded");
}

// A run whose first write is refused is not acknowledged: StartRun answers Unavailable, nothing
// was dispatched, and its slot is free for the next run.
TEST_F(EngineTest, ARunThatCannotBeRecordedIsRefusedAndHoldsNoSlot) {
  Write("one", R"y(kind: Workflow
name: one
description: d
steps:
  - {name: a, type: tool, target: t1}
)y");
  EngineOptions eo;
  eo.max_inflight = 1;
  OpenFaulty(eo);
  faulty_->FailRunWrites(1, 1);
  StartRequest req;
  req.workflow = "one";
  auto id = engine_->StartRun(req, nullptr);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(id.status().message().find("injected fault"), std::string::npos)
      << id.status().message();
  EXPECT_TRUE(dispatcher_.calls.empty());
  EXPECT_TRUE(store_->ListRuns({})->empty());
  EXPECT_EQ(RunToEnd("one").status, "succeeded");
}

TEST_F(EngineTest, SchedulerStartsOneRunPerDueTimeWithoutPileUp) {
  Write("s", R"y(kind: Workflow
name: s
description: d
trigger: {type: scheduled, schedule: "*/5 * * * *"}
steps:
  - {name: a, type: tool, target: ok}
)y");
  Open();
  const int64_t t0 = 1'800'000'000'000;  // 2027-01-15T08:00:00Z: a multiple of 5 minutes
  Scheduler sched(*registry_, *store_, *engine_, [] { return int64_t{0}; });
  EXPECT_EQ(sched.Tick(t0), 0) << "first sight: counts from now";
  EXPECT_EQ(sched.Tick(t0 + 60'000), 0);
  EXPECT_EQ(sched.Tick(t0 + 300'000), 1);
  EXPECT_EQ(sched.Tick(t0 + 301'000), 0) << "one run per due time";
  // Down for an hour: only the latest missed due time runs.
  EXPECT_EQ(sched.Tick(t0 + 3'900'000), 1);
  auto runs = *store_->ListRuns({});
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].id, ScheduledRunId("s", t0 + 3'900'000));
  EXPECT_EQ(runs[0].trigger, "scheduled");
  // A second scheduler (a restart) with an older mark cannot start the same due time again.
  ASSERT_TRUE(store_->SetScheduleMark("s", t0 + 3'800'000).ok());
  EXPECT_EQ(sched.Tick(t0 + 3'900'000), 0);
}

TEST_F(EngineTest, SchedulerSkipsWorkflowsThatAreNotEnabledWithoutCatchingUp) {
  Write("s", R"y(kind: Workflow
name: s
description: d
trigger: {type: scheduled, schedule: "*/5 * * * *"}
steps:
  - {name: a, type: tool, target: ok}
)y");
  Open();
  const int64_t t0 = 1'800'000'000'000;
  bool enabled = false;
  Scheduler sched(*registry_, *store_, *engine_, [] { return int64_t{0}; });
  sched.SetEnabled([&](const std::string& wf) { return wf == "s" && enabled; });
  EXPECT_EQ(sched.Tick(t0), 0);
  EXPECT_EQ(sched.Tick(t0 + 300'000), 0) << "due, but not enabled";
  EXPECT_EQ(sched.Tick(t0 + 900'000), 0);
  enabled = true;  // e.g. its monument was deployed: it counts from now, no catching up
  EXPECT_EQ(sched.Tick(t0 + 960'000), 0);
  EXPECT_EQ(sched.Tick(t0 + 1'200'000), 1);
  EXPECT_EQ(store_->ListRuns({})->size(), 1u);
}

}  // namespace
}  // namespace cortex::workflow
