// The executor's logic with a fake process runner (no processes): queueing, the queue bound,
// parameter errors, cancel, status mapping, durability of the record before acknowledgement.
#include "exec/executor.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace cortex::exec {
namespace {

ExecuteRequest Req(std::string tool, nlohmann::ordered_json parameters, std::string key) {
  ExecuteRequest r;
  r.tool = std::move(tool);
  r.parameters = std::move(parameters);
  r.idempotency_key = std::move(key);
  return r;
}

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// Runs nothing: answers from a script of results, and can block until released.
class FakeRunner : public ProcessRunner {
 public:
  Result<ProcessResult> Run(const ProcessSpec& spec,
                            const std::function<void(const OutputLine&)>& on_line,
                            const CancelToken* cancel) override {
    {
      std::unique_lock lock(mu_);
      specs_.push_back(spec);
      threads_.push_back(std::this_thread::get_id());
      ++running_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !block_ || (cancel && cancel->cancelled()); });
      --running_;
    }
    ProcessResult r;
    if (cancel && cancel->cancelled()) {
      r.reason = EndReason::kCancelled;
      r.reason_text = "cancelled";
      return r;
    }
    r.exit_code = 0;
    r.stdout_data = R"({"success": true, "echo": )" + spec.argv.back() + "}\n";
    if (on_line) on_line({false, "line one"});
    return r;
  }
  void Block(bool b) {
    std::lock_guard lock(mu_);
    block_ = b;
    cv_.notify_all();
  }
  void Poke() { cv_.notify_all(); }
  bool WaitRunning(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(5), [&] { return running_ >= n; });
  }
  std::vector<ProcessSpec> specs() {
    std::lock_guard lock(mu_);
    return specs_;
  }
  std::vector<std::thread::id> threads() {
    std::lock_guard lock(mu_);
    return threads_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool block_ = false;
  int running_ = 0;
  std::vector<ProcessSpec> specs_;
  std::vector<std::thread::id> threads_;
};

class ExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "cortex-exec-XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
    fs::create_directories(dir_ / "m/tools/echo");
    std::ofstream(dir_ / "m/tools/echo/tool.yml")
        << "kind: Tool\nname: echo\ndescription: d\nimplementation: {runtime: python3, "
           "entrypoint: run.py}\nparameters:\n  - {name: n, type: integer}\n";
    std::ofstream(dir_ / "m/tools/echo/run.py") << "pass\n";
    registry::RegistryOptions ro;
    ro.root = (dir_ / "m").string();
    registry_ = std::make_unique<registry::Registry>(ro);
    ASSERT_TRUE(registry_->LoadAll().ok());
    store::SqliteOptions so;
    so.path = (dir_ / "cortex.db").string();
    auto st = store::OpenSqliteStore(so);
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    store_ = std::move(st).value();
  }
  void TearDown() override {
    executor_.reset();
    fs::remove_all(dir_);
  }
  Executor& Make(int workers, size_t queue) {
    ExecutorOptions o;
    o.workers = workers;
    o.queue_capacity = queue;
    o.allow_unsandboxed = true;
    executor_ = std::make_unique<Executor>(
        o, *registry_, *store_, runner_,
        [](const std::string& n) -> Result<std::string> { return "/usr/bin/" + n; });
    return *executor_;
  }

  fs::path dir_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<store::Store> store_;
  FakeRunner runner_;
  std::unique_ptr<Executor> executor_;
};

TEST_F(ExecutorTest, RunsAndRecords) {
  Executor& ex = Make(2, 8);
  auto id = ex.Submit(Req("echo", Json{{"n", "7"}}, "key-1"), nullptr);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto rec = ex.Wait(*id, std::chrono::seconds(5));
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->status, "succeeded");
  EXPECT_EQ(rec->parameters_json, R"({"n":7})");  // converted before it ran
  EXPECT_EQ(rec->idempotency_key, "key-1");
  EXPECT_FALSE(rec->sandboxed);
  auto stored = store_->GetExecution(*id);
  ASSERT_TRUE(stored.ok() && *stored);
  EXPECT_EQ((*stored)->status, "succeeded");
  auto logs = store_->GetLogs(*id, 0, 10);
  ASSERT_TRUE(logs.ok());
  ASSERT_EQ(logs->size(), 1u);
  EXPECT_EQ((*logs)[0].text, "line one");
  auto specs = runner_.specs();
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].argv[0], "/usr/bin/python3");
}

TEST_F(ExecutorTest, RejectsBadCallsBeforeRecordingThem) {
  Executor& ex = Make(1, 8);
  std::vector<FieldError> fields;
  auto bad = ex.Submit(Req("echo", Json{{"n", "seven"}, {"m", 1}}, ""), &fields);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(fields.size(), 2u);
  EXPECT_EQ(ex.Submit(Req("ech", Json::object(), ""), nullptr).status().code(),
            StatusCode::kNotFound);
  auto list = store_->ListExecutions({});
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

TEST_F(ExecutorTest, TheQueueIsBoundedAndQueuedCallsCanBeCancelled) {
  runner_.Block(true);
  Executor& ex = Make(1, 2);
  auto first = ex.Submit(Req("echo", Json{{"n", 1}}, ""), nullptr);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(runner_.WaitRunning(1));  // the worker is busy with the first call
  auto second = ex.Submit(Req("echo", Json{{"n", 2}}, ""), nullptr);
  auto third = ex.Submit(Req("echo", Json{{"n", 3}}, ""), nullptr);
  ASSERT_TRUE(second.ok() && third.ok());
  auto fourth = ex.Submit(Req("echo", Json{{"n", 4}}, ""), nullptr);
  ASSERT_FALSE(fourth.ok());
  EXPECT_EQ(fourth.status().code(), StatusCode::kResourceExhausted);

  ASSERT_TRUE(ex.Cancel(*second).ok());
  auto rec = ex.Wait(*second, std::chrono::seconds(1));
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->status, "cancelled");

  ASSERT_TRUE(ex.Cancel(*first).ok());  // a running call: the runner sees the token
  runner_.Poke();
  EXPECT_EQ(ex.Wait(*first, std::chrono::seconds(5))->status, "cancelled");
  runner_.Block(false);
  EXPECT_EQ(ex.Wait(*third, std::chrono::seconds(5))->status, "succeeded");
  EXPECT_EQ(ex.Cancel(*third).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(ex.Cancel("ex_nope").code(), StatusCode::kNotFound);
}

TEST_F(ExecutorTest, RunGoesInlineOnlyWhenAWorkerPlaceIsFree) {
  Executor& ex = Make(1, 8);
  // Idle: the call runs on the calling thread, and is recorded like any other.
  auto here = ex.Run(Req("echo", Json{{"n", 1}}, ""), nullptr, std::chrono::minutes(10));
  ASSERT_TRUE(here.ok()) << here.status().ToString();
  ASSERT_EQ(runner_.threads().size(), 1u);
  EXPECT_EQ(runner_.threads()[0], std::this_thread::get_id());
  auto rec = ex.Wait(*here, std::chrono::seconds(5));
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->status, "succeeded");
  EXPECT_TRUE((*store_->GetExecution(*here))->finished_ms > 0);

  // The only worker busy: Run queues instead of exceeding the bound.
  runner_.Block(true);
  auto busy = ex.Submit(Req("echo", Json{{"n", 2}}, ""), nullptr);
  ASSERT_TRUE(busy.ok());
  ASSERT_TRUE(runner_.WaitRunning(1));
  auto queued = ex.Run(Req("echo", Json{{"n", 3}}, ""), nullptr, std::chrono::minutes(10));
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(ex.queued(), 1u);
  runner_.Block(false);
  EXPECT_EQ(ex.Wait(*queued, std::chrono::seconds(5))->status, "succeeded");
  auto threads = runner_.threads();
  ASSERT_EQ(threads.size(), 3u);
  EXPECT_NE(threads[2], std::this_thread::get_id());

  // A tool whose timeout is longer than the caller would wait is queued, never inline.
  auto long_wait = ex.Run(Req("echo", Json{{"n", 4}}, ""), nullptr, std::chrono::seconds(1));
  ASSERT_TRUE(long_wait.ok());
  EXPECT_EQ(ex.Wait(*long_wait, std::chrono::seconds(5))->status, "succeeded");
  EXPECT_NE(runner_.threads().back(), std::this_thread::get_id());
}

}  // namespace
}  // namespace cortex::exec
