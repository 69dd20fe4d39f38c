// The deployer's supervisor, on a fake driver and a fake clock: restarts, their backoff, the
// crash loop that ends `failed`, a stable uptime that forgives earlier crashes, restart policies,
// and adoption of a workload a previous server started. The test says when time passes and when
// the workload dies, and FakeClock::WaitForIdle says when the supervisor has seen it, so each
// "nothing happens before the backoff ends" is checked at the exact millisecond, without a sleep.
// (tests/integration/deploy_api_test.cc runs the same supervisor on real processes.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include <unistd.h>

#include "common/clock.h"
#include "deploy/deployer.h"
#include "deploy/monuments.h"
#include "registry/registry.h"
#include "store/store.h"

namespace cortex::deploy {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

// Workloads that exist only in memory: each runs from Start until the test kills them (Crash,
// Exit) or the deployer stops it. Observe says so, as the process driver would.
class FakeDriver : public RelicDriver {
 public:
  explicit FakeDriver(const FakeClock& clock) : clock_(clock) {}

  std::string_view name() const override { return "process"; }
  Status Start(const RelicPlan&, store::DeploymentRecord& record) override {
    std::lock_guard lock(mu_);
    starts_.push_back(clock_.Now());
    record.pid = ++last_pid_;
    running_.insert(record.pid);
    clean_exit_ = false;
    return Status::Ok();
  }
  Status Stop(const RelicPlan&, store::DeploymentRecord& record) override {
    std::lock_guard lock(mu_);
    ++stops_;
    running_.erase(record.pid);
    record.pid = 0;
    return Status::Ok();
  }
  Observation Observe(const RelicPlan&, store::DeploymentRecord& record) override {
    std::lock_guard lock(mu_);
    Observation o;
    o.running = running_.count(record.pid) > 0;
    o.replicas = o.running ? 1 : 0;
    o.exited_cleanly = !o.running && clean_exit_;
    if (!o.running) o.detail = clean_exit_ ? "exited with code 0" : "exited with code 3";
    return o;
  }
  Result<std::vector<RelicLogLine>> Logs(const RelicPlan&, const store::DeploymentRecord&,
                                         const std::string&, size_t) override {
    return std::vector<RelicLogLine>{};
  }
  Status FollowLogs(const RelicPlan&, const store::DeploymentRecord&, const std::string&, size_t,
                    const std::function<bool(const RelicLogLine*)>&) override {
    return Status::Ok();
  }
  Result<nlohmann::ordered_json> Stats(const RelicPlan&, const store::DeploymentRecord&) override {
    return nlohmann::ordered_json::object();
  }

  // Every workload dies: with code 3 (Crash), or 0 (Exit).
  void Crash() {
    std::lock_guard lock(mu_);
    running_.clear();
    clean_exit_ = false;
  }
  void Exit() {
    std::lock_guard lock(mu_);
    running_.clear();
    clean_exit_ = true;
  }
  // A workload some earlier server started, still running as `pid`.
  void Adopt(int64_t pid) {
    std::lock_guard lock(mu_);
    running_.insert(pid);
    last_pid_ = std::max(last_pid_, pid);
  }
  std::vector<Clock::Steady::time_point> starts() const {
    std::lock_guard lock(mu_);
    return starts_;
  }
  int stops() const {
    std::lock_guard lock(mu_);
    return stops_;
  }

 private:
  const FakeClock& clock_;
  mutable std::mutex mu_;
  std::vector<Clock::Steady::time_point> starts_;
  std::set<int64_t> running_;  // the pids of the workloads up
  int64_t last_pid_ = 1000;
  int stops_ = 0;
  bool clean_exit_ = false;
};

class DeployerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("cortex-deployer-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "m");
    store::SqliteOptions so;
    so.path = (dir_ / "cortex.db").string();
    auto s = store::OpenSqliteStore(so);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  void TearDown() override {
    deployer_.reset();
    registry_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }

  // A process relic named `name` (the fake driver stands in for the process driver).
  void WriteRelic(const std::string& name, const std::string& extra = "") {
    fs::create_directories(dir_ / "m" / name);
    std::ofstream(dir_ / "m" / name / "relic.yml")
        << "kind: Relic\nversion: \"1.0\"\nname: " << name
        << "\nsummary: a relic of the deployer's unit tests\n"
           "deployment:\n  type: process\n  command: [\"sh\", \"-c\", \"sleep 100\"]\n"
        << extra;
  }

  // The deployer over the manifests written so far; its supervisors on clock_, its process
  // relics on a FakeDriver (driver()).
  void Open(int max_restarts = 2, const std::function<void(FakeDriver&)>& before_start = {}) {
    registry::RegistryOptions ro;
    ro.root = (dir_ / "m").string();
    registry_ = std::make_unique<registry::Registry>(ro);
    ASSERT_TRUE(registry_->LoadAll().ok());
    DeployerOptions o;
    o.data_dir = (dir_ / "data").string();
    o.path_env = "/usr/local/bin:/usr/bin:/bin";
    o.max_restarts = max_restarts;
    o.restart_backoff = milliseconds(250);
    o.max_restart_backoff = milliseconds(1000);
    o.min_uptime = milliseconds(500);
    o.stable_after = milliseconds(10000);
    o.clock = &clock_;
    auto driver = std::make_unique<FakeDriver>(clock_);
    driver_ = driver.get();
    if (before_start) before_start(*driver_);
    deployer_ = std::make_unique<Deployer>(o, *registry_, *store_, std::move(driver), nullptr);
    ASSERT_TRUE(deployer_->Start().ok());
  }

  // Moves time on by `by`, then waits until every supervisor has seen it and waits again.
  void Advance(milliseconds by) {
    clock_.Advance(by);
    ASSERT_TRUE(clock_.WaitForIdle(supervisors_)) << "a supervisor did not come back to a wait";
  }
  // Time passes in steps of the supervisor's observe interval (200 ms), so it looks at the
  // workload as often as it would in real time.
  void Pass(milliseconds total) {
    for (milliseconds left = total; left.count() > 0; left -= milliseconds(200)) {
      Advance(std::min(left, milliseconds(200)));
    }
  }
  OJson StatusOf(const std::string& name) {
    auto st = deployer_->RelicStatus(name);
    EXPECT_TRUE(st.ok()) << st.status().ToString();
    return st.ok() ? *st : OJson::object();
  }
  std::string State(const std::string& name) { return StatusOf(name).value("state", ""); }
  size_t Starts() { return driver_->starts().size(); }
  // Milliseconds (of the fake clock) from the first start to start number `i` (0-based).
  int64_t StartAt(size_t i) {
    auto s = driver_->starts();
    if (i >= s.size()) return -1;
    return std::chrono::duration_cast<milliseconds>(s[i] - s[0]).count();
  }
  void Deploy(const std::string& name) {
    auto r = deployer_->DeployRelic(name);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_TRUE(clock_.WaitForIdle(supervisors_));
  }

  fs::path dir_;
  FakeClock clock_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<Deployer> deployer_;
  FakeDriver* driver_ = nullptr;
  size_t supervisors_ = 1;  // how many relics are deployed: Advance waits for each
};

TEST_F(DeployerTest, WithoutAHealthCheckHealthyOnceUpForTheMinimumUptime) {
  WriteRelic("web");
  Open();
  Deploy("web");
  EXPECT_EQ(Starts(), 1u);
  EXPECT_EQ(State("web"), "starting");
  Pass(milliseconds(400));
  EXPECT_EQ(State("web"), "starting");  // up 400 ms of the 500 it must stay up
  Pass(milliseconds(200));
  EXPECT_EQ(State("web"), "healthy");
  EXPECT_EQ(Starts(), 1u);
}

TEST_F(DeployerTest, ACrashLoopBacksOffDoublingThenEndsFailedAndStartsNoMore) {
  WriteRelic("web");
  Open(/*max_restarts=*/2);
  Deploy("web");
  ASSERT_EQ(Starts(), 1u);

  // First crash: seen at the next look (200 ms), restarted 250 ms later, not a millisecond sooner.
  driver_->Crash();
  Advance(milliseconds(200));
  EXPECT_EQ(State("web"), "starting");
  EXPECT_NE(StatusOf("web").value("error", "").find("restarting in 250 ms (1 of 2)"),
            std::string::npos)
      << StatusOf("web").dump();
  Advance(milliseconds(249));
  EXPECT_EQ(Starts(), 1u) << "restarted before its backoff ended";
  Advance(milliseconds(1));
  ASSERT_EQ(Starts(), 2u);
  EXPECT_EQ(StartAt(1), 200 + 250);

  // Second crash: twice the backoff.
  driver_->Crash();
  Advance(milliseconds(200));
  Advance(milliseconds(499));
  EXPECT_EQ(Starts(), 2u) << "restarted before its backoff ended";
  Advance(milliseconds(1));
  ASSERT_EQ(Starts(), 3u);
  EXPECT_EQ(StartAt(2), 450 + 200 + 500);
  EXPECT_EQ(StatusOf("web").value("restarts", -1), 2);

  // Third crash: past max_restarts, failed, and nothing left to stop.
  driver_->Crash();
  Advance(milliseconds(200));
  OJson st = StatusOf("web");
  EXPECT_EQ(st.value("state", ""), "failed") << st.dump();
  EXPECT_NE(st.value("error", "").find("crashed 3 times in a row"), std::string::npos) << st.dump();
  EXPECT_NE(st.value("error", "").find("exited with code 3"), std::string::npos) << st.dump();
  auto brief = deployer_->Brief("web");  // the same, typed, as monuments read it
  ASSERT_TRUE(brief.has_value());
  EXPECT_EQ(brief->state, RelicState::kFailed);
  EXPECT_EQ(brief->desired, Desired::kRunning);
  EXPECT_TRUE(brief->settled());
  EXPECT_FALSE(deployer_->Brief("nothing").has_value());

  // A wrong fourth start would come after 1,000 ms (the next backoff): look well past it.
  Pass(milliseconds(5000));
  EXPECT_EQ(Starts(), 3u) << "a failed relic was started again";
  EXPECT_EQ(State("web"), "failed");
  EXPECT_EQ(StatusOf("web").value("restarts", -1), 2);

  // A new deploy starts it again, with the count of crashes forgotten.
  Deploy("web");
  Advance(milliseconds(1));
  EXPECT_EQ(Starts(), 4u);
}

TEST_F(DeployerTest, TheBackoffStopsGrowingAtItsCeiling) {
  WriteRelic("web");
  Open(/*max_restarts=*/6);
  Deploy("web");
  // 250, 500, 1000, then 1000 again (max_restart_backoff), not 2000.
  const int64_t backoffs[] = {250, 500, 1000, 1000};
  int64_t at = 0;
  for (size_t i = 0; i < 4; ++i) {
    driver_->Crash();
    Advance(milliseconds(200));
    Advance(milliseconds(backoffs[i] - 1));
    EXPECT_EQ(Starts(), i + 1) << "restart " << i + 1 << " came before its backoff ended";
    Advance(milliseconds(1));
    ASSERT_EQ(Starts(), i + 2) << "restart " << i + 1;
    at += 200 + backoffs[i];
    EXPECT_EQ(StartAt(i + 1), at) << "restart " << i + 1;
  }
}

TEST_F(DeployerTest, AStableUptimeForgivesEarlierCrashes) {
  WriteRelic("web");
  Open(/*max_restarts=*/1);
  Deploy("web");
  driver_->Crash();
  Pass(milliseconds(200 + 250));
  ASSERT_EQ(Starts(), 2u);
  // Up past stable_after (10 s): the crash before is forgotten, so this one is a first crash
  // (restarted after 250 ms), not the second that max_restarts 1 would end in failed.
  Pass(milliseconds(10200));
  EXPECT_EQ(State("web"), "healthy");
  driver_->Crash();
  Advance(milliseconds(200));
  EXPECT_EQ(State("web"), "starting") << StatusOf("web").dump();
  Advance(milliseconds(250));
  EXPECT_EQ(Starts(), 3u);
}

TEST_F(DeployerTest, RestartPolicies) {
  WriteRelic("job", "  restart: on-failure\n");
  WriteRelic("once", "  restart: never\n");
  Open();
  // on-failure: a clean exit is the end (stopped, wanted stopped), not a crash.
  Deploy("job");
  driver_->Exit();
  Advance(milliseconds(200));
  OJson job = StatusOf("job");
  EXPECT_EQ(job.value("state", ""), "stopped") << job.dump();
  EXPECT_EQ(job.value("desired", ""), "stopped") << job.dump();
  Pass(milliseconds(2000));
  EXPECT_EQ(Starts(), 1u);

  // never: a crash is failed at once, never restarted.
  supervisors_ = 2;
  Deploy("once");
  ASSERT_EQ(Starts(), 2u);
  driver_->Crash();
  Advance(milliseconds(200));
  OJson once = StatusOf("once");
  EXPECT_EQ(once.value("state", ""), "failed") << once.dump();
  EXPECT_NE(once.value("error", "").find("restart policy: never"), std::string::npos)
      << once.dump();
  Pass(milliseconds(2000));
  EXPECT_EQ(Starts(), 2u);
}

TEST_F(DeployerTest, AdoptsAWorkloadThatStillRunsAndRestartsOneThatDoesNot) {
  WriteRelic("alive");
  WriteRelic("dead");
  // What an earlier server recorded: both healthy, wanted running, with their pids.
  for (auto [name, pid] : {std::pair{"alive", 4242}, std::pair{"dead", 4343}}) {
    store::DeploymentRecord r;
    r.kind = "relic";
    r.name = name;
    r.driver = "process";
    r.desired = "running";
    r.state = "healthy";
    r.pid = pid;
    ASSERT_TRUE(store_->PutDeployment(r).ok());
  }
  Open(2, [](FakeDriver& d) { d.Adopt(4242); });  // only "alive" still runs
  supervisors_ = 2;
  ASSERT_TRUE(clock_.WaitForIdle(2));
  Pass(milliseconds(600));
  OJson alive = StatusOf("alive");
  EXPECT_EQ(alive.value("state", ""), "healthy") << alive.dump();
  EXPECT_EQ(alive.value("pid", 0), 4242) << alive.dump();
  // "dead" was seen gone and started again (after the first backoff); "alive" was not started.
  ASSERT_EQ(Starts(), 1u);
  EXPECT_EQ(State("dead"), "starting");
  EXPECT_NE(StatusOf("dead").value("pid", 0), 4343);
  EXPECT_EQ(driver_->stops(), 0);
}

// A monument's state is typed: its text is read once, when its record loads. A deployment the
// server was in the middle of, or a state this server does not know, loads as failed with why.
TEST_F(DeployerTest, MonumentRecordsLoadTypedAndUnknownOrInterruptedStatesAsFailed) {
  for (auto state : {MonumentState::kPending, MonumentState::kDeploying, MonumentState::kHealthy,
                     MonumentState::kFailed, MonumentState::kStopping, MonumentState::kStopped}) {
    EXPECT_EQ(ParseMonumentState(MonumentStateName(state)), state);
  }
  EXPECT_EQ(ParseMonumentState("Healthy"), std::nullopt);
  auto put = [&](const std::string& name, const std::string& state) {
    store::DeploymentRecord r;
    r.kind = "monument";
    r.name = name;
    r.driver = "monument";
    r.desired = "running";
    r.state = state;
    ASSERT_TRUE(store_->PutDeployment(r).ok());
  };
  put("steady", "healthy");
  put("interrupted", "deploying");
  put("odd", "half-built");
  Open();
  Monuments monuments(*deployer_, *registry_, *store_);
  ASSERT_TRUE(monuments.Start().ok());
  auto steady = monuments.Get("steady");
  ASSERT_TRUE(steady.ok()) << steady.status().ToString();
  EXPECT_EQ((*steady)["state"], "healthy");
  auto interrupted = monuments.Get("interrupted");
  ASSERT_TRUE(interrupted.ok());
  EXPECT_EQ((*interrupted)["state"], "failed");
  EXPECT_EQ((*interrupted)["error"], "the server stopped during the deployment");
  auto odd = monuments.Get("odd");
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ((*odd)["state"], "failed");
  EXPECT_EQ((*odd)["error"], "its record has an unknown state 'half-built'");
}

}  // namespace
}  // namespace cortex::deploy
