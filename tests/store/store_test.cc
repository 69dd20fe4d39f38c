// The SQLite store against real database files in temporary folders.
#include "store/sqlite_store.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "store/store.h"

namespace cortex::store {
namespace {

namespace fs = std::filesystem;
using sqlite_internal::RawQuery;

// A fresh folder, removed (with everything in it) at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "cortex-store-XXXXXX").string();
    CORTEX_CHECK(mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, ec);
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

ExecutionRecord MakeRecord(const std::string& id, const std::string& name,
                           const std::string& status, int64_t created_ms) {
  ExecutionRecord r;
  r.id = id;
  r.name = name;
  r.status = status;
  r.created_ms = created_ms;
  return r;
}

std::unique_ptr<Store> MustOpen(const SqliteOptions& options) {
  auto store = OpenSqliteStore(options);
  CORTEX_CHECK_MSG(store.ok(), store.status().ToString());
  return std::move(store).value();
}

std::unique_ptr<Store> MustOpen(const std::string& path) {
  SqliteOptions options;
  options.path = path;
  return MustOpen(options);
}

std::vector<std::string> Ids(const std::vector<ExecutionRecord>& records) {
  std::vector<std::string> ids;
  for (const auto& r : records) ids.push_back(r.id);
  return ids;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs `fn` in a forked child (which ends with _exit, or however `fn` ends it) and returns the
// text it wrote to `out`. For what must happen in another process: a crash, a lower rlimit, a
// dropped uid.
std::string InChild(const std::function<void(int out)>& fn) {
  int fds[2];
  CORTEX_CHECK(pipe(fds) == 0);
  pid_t pid = fork();
  CORTEX_CHECK(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    fn(fds[1]);
    _exit(0);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  return text;
}

void WriteAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

// ---------------------------------------------------------------------------------------------

TEST(SqliteStoreTest, CreateAndGetKeepEveryField) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));

  ExecutionRecord r;
  r.id = "ex_1";
  r.kind = "tool";
  r.name = "calculator";
  r.status = "failed";
  r.parameters_json = R"({"operation":"add","a":5,"b":3,"note":"it's \"quoted\" ✓"})";
  r.result_json = R"({"success":false})";
  r.error = "exit code 2";
  r.exit_code = 2;
  r.signal = std::nullopt;
  r.stderr_tail = std::string("line with a NUL \0 inside\n", 26);
  r.created_ms = 1700000000001;
  r.started_ms = 1700000000002;
  r.finished_ms = 1700000000050;
  r.duration_ms = 48;
  r.cpu_user_ms = 12;
  r.cpu_system_ms = 3;
  r.peak_memory_bytes = int64_t{5} << 33;
  r.sandboxed = false;
  r.idempotency_key = "run_7/step_a/1";
  r.manifest_version = "sha256:abc";
  ASSERT_TRUE(store->CreateExecution(r).ok());

  auto got = store->GetExecution("ex_1");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->has_value());
  const ExecutionRecord& g = **got;
  EXPECT_EQ(g.id, r.id);
  EXPECT_EQ(g.kind, r.kind);
  EXPECT_EQ(g.name, r.name);
  EXPECT_EQ(g.status, r.status);
  EXPECT_EQ(g.parameters_json, r.parameters_json);
  EXPECT_EQ(g.result_json, r.result_json);
  EXPECT_EQ(g.error, r.error);
  EXPECT_EQ(g.exit_code, r.exit_code);
  EXPECT_EQ(g.signal, r.signal);
  EXPECT_EQ(g.stderr_tail, r.stderr_tail);
  EXPECT_EQ(g.created_ms, r.created_ms);
  EXPECT_EQ(g.started_ms, r.started_ms);
  EXPECT_EQ(g.finished_ms, r.finished_ms);
  EXPECT_EQ(g.duration_ms, r.duration_ms);
  EXPECT_EQ(g.cpu_user_ms, r.cpu_user_ms);
  EXPECT_EQ(g.cpu_system_ms, r.cpu_system_ms);
  EXPECT_EQ(g.peak_memory_bytes, r.peak_memory_bytes);
  EXPECT_EQ(g.sandboxed, r.sandboxed);
  EXPECT_EQ(g.idempotency_key, r.idempotency_key);
  EXPECT_EQ(g.manifest_version, r.manifest_version);

  auto missing = store->GetExecution("ex_nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST(SqliteStoreTest, WorkflowRunsStepsAndEventsAreWrittenTogether) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));
  RunRecord run;
  run.id = "wf_1";
  run.workflow = "w";
  run.status = "running";
  run.manifest_text = "kind: Workflow";
  run.created_ms = 5;
  run.last_event_seq = 2;
  RunTransition t;
  t.run = run;
  t.steps.push_back({"wf_1", "a", "running", 1, "", "", "ex_1", 6, 0, 0});
  t.events.push_back({"wf_1", 1, 5, "run_started", "", 0, "{}"});
  t.events.push_back({"wf_1", 2, 6, "step_running", "a", 1, ""});
  ASSERT_TRUE(store->WriteRun(t).ok());

  // An update of the run keeps its steps and events (an upsert, not a delete + insert).
  run.status = "succeeded";
  run.output_json = R"({"x":1})";
  run.last_event_seq = 3;
  RunTransition done;
  done.run = run;
  done.steps.push_back({"wf_1", "a", "succeeded", 1, R"({"n":1})", "", "ex_1", 6, 9, 0});
  done.events.push_back({"wf_1", 3, 9, "run_succeeded", "", 0, ""});
  ASSERT_TRUE(store->WriteRun(done).ok());
  auto got = store->GetRun("wf_1");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->status, "succeeded");
  EXPECT_EQ((*got)->manifest_text, "kind: Workflow");
  EXPECT_EQ((*got)->output_json, R"({"x":1})");
  auto steps = store->GetSteps("wf_1");
  ASSERT_TRUE(steps.ok());
  ASSERT_EQ(steps->size(), 1u);
  EXPECT_EQ((*steps)[0].status, "succeeded");
  EXPECT_EQ((*steps)[0].output_json, R"({"n":1})");
  auto events = store->GetRunEvents("wf_1", 1, 100);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].type, "step_running");
  EXPECT_EQ((*events)[1].seq, 3);

  // A repeated event seq fails the whole transition: nothing of it is written.
  RunTransition dup;
  run.status = "failed";
  dup.run = run;
  dup.events.push_back({"wf_1", 3, 10, "again", "", 0, ""});
  EXPECT_EQ(store->WriteRun(dup).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*store->GetRun("wf_1"))->status, "succeeded");
  // Steps of an unknown run, a bad status.
  RunTransition orphan;
  orphan.steps.push_back({"wf_none", "a", "running", 1, "", "", "", 0, 0, 0});
  EXPECT_EQ(store->WriteRun(orphan).code(), StatusCode::kNotFound);
  run.status = "bogus";
  RunTransition bad;
  bad.run = run;
  EXPECT_EQ(store->WriteRun(bad).code(), StatusCode::kInvalidArgument);

  RunFilter unfinished;
  unfinished.unfinished_only = true;
  EXPECT_TRUE(store->ListRuns(unfinished)->empty());
  RunFilter by_name;
  by_name.workflow = "w";
  EXPECT_EQ(store->ListRuns(by_name)->size(), 1u);
  EXPECT_FALSE(store->GetScheduleMark("w")->has_value());
  ASSERT_TRUE(store->SetScheduleMark("w", 42).ok());
  EXPECT_EQ(**store->GetScheduleMark("w"), 42);
}

TEST(SqliteStoreTest, FinishExecutionWritesTheLastLinesAndTheOutcomeTogether) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));
  ExecutionRecord r = MakeRecord("ex_f", "t", "running", 1);
  ASSERT_TRUE(store->CreateExecution(r).ok());
  ASSERT_TRUE(store->AppendLogs("ex_f", {{1, false, 2, "one"}}).ok());
  r.status = "succeeded";
  r.finished_ms = 9;
  ASSERT_TRUE(store->FinishExecution(r, {{2, false, 3, "two"}, {3, true, 4, "three"}}).ok());
  EXPECT_EQ((*store->GetExecution("ex_f"))->status, "succeeded");
  auto lines = store->GetLogs("ex_f", 0, 100);
  ASSERT_TRUE(lines.ok());
  ASSERT_EQ(lines->size(), 3u);
  EXPECT_EQ((*lines)[2].text, "three");
  // Bad lines (a seq already stored): neither the lines nor the outcome are written.
  r.status = "failed";
  EXPECT_EQ(store->FinishExecution(r, {{3, false, 5, "again"}}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*store->GetExecution("ex_f"))->status, "succeeded");
  EXPECT_EQ(store->GetLogs("ex_f", 0, 100)->size(), 3u);
  // An unknown execution.
  ExecutionRecord ghost = MakeRecord("ex_ghost", "t", "succeeded", 1);
  EXPECT_EQ(store->FinishExecution(ghost, {}).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->FinishExecution(ghost, {{1, false, 1, "x"}}).code(), StatusCode::kNotFound);
  // Without lines: the outcome only; the lines already stored stay, and so does what was fixed
  // at creation (FinishExecution writes what changes while an execution runs).
  r.status = "failed";
  r.error = "boom";
  r.name = "renamed";
  ASSERT_TRUE(store->FinishExecution(r, {}).ok());
  auto got = *store->GetExecution("ex_f");
  EXPECT_EQ(got->status, "failed");
  EXPECT_EQ(got->error, "boom");
  EXPECT_EQ(got->name, "t");
  EXPECT_EQ(store->GetLogs("ex_f", 0, 100)->size(), 3u);
  ASSERT_TRUE(store->AppendLogs("ex_f", {{4, false, 6, "four"}}).ok());  // counters still right
}

TEST(SqliteStoreTest, FinishExecutionKeepsTheLogCap) {
  TempDir dir;
  SqliteOptions options;
  options.path = dir.File("cortex.db");
  options.max_log_lines_per_execution = 4;
  auto store = MustOpen(options);
  auto seqs_of = [&](const std::string& id) {
    std::vector<int64_t> out;
    auto lines = store->GetLogs(id, 0, 100);
    if (lines.ok()) {
      for (const LogLine& l : *lines) out.push_back(l.seq);
    }
    return out;
  };
  ExecutionRecord r = MakeRecord("ex_c", "t", "running", 1);
  ASSERT_TRUE(store->CreateExecution(r).ok());
  ASSERT_TRUE(store->AppendLogs("ex_c", {{1, false, 0, "a"}, {2, false, 0, "b"}}).ok());
  r.status = "succeeded";
  std::vector<LogLine> last;
  for (int64_t s = 3; s <= 5; ++s) last.push_back({s, false, 0, "x"});
  ASSERT_TRUE(store->FinishExecution(r, last).ok());
  EXPECT_EQ(seqs_of("ex_c"), (std::vector<int64_t>{2, 3, 4, 5}));
  // More than the cap at once: the newest are kept.
  ExecutionRecord r2 = MakeRecord("ex_d", "t", "running", 2);
  ASSERT_TRUE(store->CreateExecution(r2).ok());
  std::vector<LogLine> many;
  for (int64_t s = 1; s <= 9; ++s) many.push_back({s, true, 0, "y"});
  r2.status = "failed";
  ASSERT_TRUE(store->FinishExecution(r2, many).ok());
  EXPECT_EQ(seqs_of("ex_d"), (std::vector<int64_t>{6, 7, 8, 9}));
  EXPECT_EQ((*store->GetExecution("ex_d"))->status, "failed");
  // The counters are right afterwards: the next seq must follow 9, and the cap still holds.
  EXPECT_EQ(store->AppendLogs("ex_d", {{9, false, 0, "dup"}}).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(store->AppendLogs("ex_d", {{10, false, 0, "z"}}).ok());
  EXPECT_EQ(seqs_of("ex_d"), (std::vector<int64_t>{7, 8, 9, 10}));
}

TEST(SqliteStoreTest, DeploymentsArePutReplacedListedAndDeleted) {
  TempDir dir;
  {
    auto store = MustOpen(dir.File("cortex.db"));
    DeploymentRecord r;
    r.name = "kv";
    r.driver = "process";
    r.state = "healthy";
    r.pid = 4242;
    r.pid_start = 777;
    r.restarts = 2;
    r.owner = "stack";
    r.detail_json = R"({"health":{"status":"healthy"}})";
    r.created_ms = 1;
    r.updated_ms = 2;
    r.started_ms = 3;
    ASSERT_TRUE(store->PutDeployment(r).ok());
    DeploymentRecord m;
    m.kind = "monument";
    m.name = "stack";
    m.driver = "monument";
    m.environment = "dev";
    ASSERT_TRUE(store->PutDeployment(m).ok());
    r.state = "stopped";  // replaces the row
    r.desired = "stopped";
    ASSERT_TRUE(store->PutDeployment(r).ok());
  }
  auto store = MustOpen(dir.File("cortex.db"));  // survives a reopen
  auto got = store->GetDeployment("relic", "kv");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->state, "stopped");
  EXPECT_EQ((*got)->desired, "stopped");
  EXPECT_EQ((*got)->pid, 4242);
  EXPECT_EQ((*got)->pid_start, 777);
  EXPECT_EQ((*got)->restarts, 2);
  EXPECT_EQ((*got)->owner, "stack");
  EXPECT_EQ((*got)->detail_json, R"({"health":{"status":"healthy"}})");
  EXPECT_EQ((*got)->started_ms, 3);
  EXPECT_EQ(store->ListDeployments("relic")->size(), 1u);
  ASSERT_EQ(store->ListDeployments("monument")->size(), 1u);
  EXPECT_EQ((*store->ListDeployments("monument"))[0].environment, "dev");
  EXPECT_FALSE(store->GetDeployment("monument", "kv")->has_value());
  ASSERT_TRUE(store->DeleteDeployment("relic", "kv").ok());
  EXPECT_EQ(store->DeleteDeployment("relic", "kv").code(), StatusCode::kNotFound);
  EXPECT_TRUE(store->ListDeployments("relic")->empty());
}

TEST(SqliteStoreTest, DuplicateIdIsAlreadyExists) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));
  ASSERT_TRUE(store->CreateExecution(MakeRecord("ex_1", "a", "queued", 1)).ok());
  Status dup = store->CreateExecution(MakeRecord("ex_1", "b", "running", 2));
  EXPECT_EQ(dup.code(), StatusCode::kAlreadyExists) << dup.ToString();
  EXPECT_NE(dup.message().find("ex_1"), std::string::npos);
  EXPECT_EQ((*store->GetExecution("ex_1"))->name, "a");  // the first one is untouched
}

TEST(SqliteStoreTest, UpdateChangesTheRecordAndMissingIsNotFound) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));
  ExecutionRecord r = MakeRecord("ex_1", "calc", "queued", 10);
  ASSERT_TRUE(store->CreateExecution(r).ok());
  r.status = "succeeded";
  r.started_ms = 11;
  r.finished_ms = 20;
  r.exit_code = 0;
  r.signal = 9;
  r.result_json = "42";
  ASSERT_TRUE(store->UpdateExecution(r).ok());
  const ExecutionRecord g = **store->GetExecution("ex_1");
  EXPECT_EQ(g.status, "succeeded");
  EXPECT_EQ(g.finished_ms, 20);
  EXPECT_EQ(g.exit_code, 0);
  EXPECT_EQ(g.signal, 9);
  EXPECT_EQ(g.result_json, "42");

  Status missing = store->UpdateExecution(MakeRecord("ex_2", "calc", "running", 1));
  EXPECT_EQ(missing.code(), StatusCode::kNotFound) << missing.ToString();
  EXPECT_FALSE(store->GetExecution("ex_2")->has_value());
}

TEST(SqliteStoreTest, InvalidRecordsAreRejected) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));
  EXPECT_EQ(store->CreateExecution(MakeRecord("", "a", "queued", 1)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store->CreateExecution(MakeRecord("ex_1", "a", "runing", 1)).code(),
            StatusCode::kInvalidArgument);
  ExecutionFilter filter;
  filter.status = "bogus";
  EXPECT_EQ(store->ListExecutions(filter).status().code(), StatusCode::kInvalidArgument);
}

TEST(SqliteStoreTest, ListIsNewestFirstWithFiltersAndPages) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));
  // 30 records: names alternate a/b/c, statuses cycle, created_ms has ties (two per ms).
  const std::vector<std::string> statuses = {"queued", "running", "succeeded", "failed"};
  std::vector<ExecutionRecord> all;
  for (int i = 0; i < 30; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "ex_%02d", i);
    all.push_back(MakeRecord(id, std::string(1, static_cast<char>('a' + i % 3)),
                             statuses[static_cast<size_t>(i) % statuses.size()], 1000 + i / 2));
  }
  // Inserted out of order: the order comes from created_ms and id, not from insertion.
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_TRUE(store->CreateExecution(all[(i * 7) % all.size()]).ok());
  }
  std::vector<ExecutionRecord> expected = all;
  std::sort(expected.begin(), expected.end(), [](const auto& x, const auto& y) {
    return x.created_ms != y.created_ms ? x.created_ms > y.created_ms : x.id > y.id;
  });
  auto expect_ids = [&](const std::function<bool(const ExecutionRecord&)>& keep) {
    std::vector<std::string> ids;
    for (const auto& r : expected) {
      if (keep(r)) ids.push_back(r.id);
    }
    return ids;
  };

  ExecutionFilter filter;
  filter.limit = 100;
  auto everything = store->ListExecutions(filter);
  ASSERT_TRUE(everything.ok()) << everything.status().ToString();
  EXPECT_EQ(Ids(*everything), expect_ids([](const auto&) { return true; }));

  filter.name = "b";
  EXPECT_EQ(Ids(*store->ListExecutions(filter)),
            expect_ids([](const auto& r) { return r.name == "b"; }));
  filter.status = "succeeded";
  EXPECT_EQ(Ids(*store->ListExecutions(filter)),
            expect_ids([](const auto& r) { return r.name == "b" && r.status == "succeeded"; }));
  filter.name.reset();
  EXPECT_EQ(Ids(*store->ListExecutions(filter)),
            expect_ids([](const auto& r) { return r.status == "succeeded"; }));
  filter.name = "nobody";
  filter.status.reset();
  EXPECT_TRUE(store->ListExecutions(filter)->empty());

  // Pages of 4, following before_id, walk everything exactly once (ties included).
  for (const std::optional<std::string>& name :
       {std::optional<std::string>(), std::optional<std::string>("a")}) {
    std::vector<std::string> walked;
    ExecutionFilter page;
    page.limit = 4;
    page.name = name;
    for (int guard = 0; guard < 100; ++guard) {
      auto records = store->ListExecutions(page);
      ASSERT_TRUE(records.ok()) << records.status().ToString();
      if (records->empty()) break;
      EXPECT_LE(records->size(), 4u);
      for (const auto& r : *records) walked.push_back(r.id);
      page.before_id = records->back().id;
    }
    EXPECT_EQ(walked, expect_ids([&](const auto& r) { return !name || r.name == *name; }));
  }

  ExecutionFilter unknown;
  unknown.before_id = "ex_gone";
  auto bad = store->ListExecutions(unknown);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("ex_gone"), std::string::npos);

  ExecutionFilter zero;
  zero.limit = 0;  // clamped to 1
  EXPECT_EQ(store->ListExecutions(zero)->size(), 1u);
}

TEST(SqliteStoreTest, ListLimitIsClampedTo1000) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));
  for (int i = 0; i < 1005; ++i) {
    ASSERT_TRUE(
        store->CreateExecution(MakeRecord("ex_" + std::to_string(i), "t", "succeeded", i)).ok());
  }
  ExecutionFilter filter;
  filter.limit = 5000;
  auto records = store->ListExecutions(filter);
  ASSERT_TRUE(records.ok());
  EXPECT_EQ(records->size(), 1000u);
  EXPECT_EQ(records->front().id, "ex_1004");
}

TEST(SqliteStoreTest, ListQueriesUseTheIndexes) {
  TempDir dir;
  const std::string path = dir.File("cortex.db");
  MustOpen(path).reset();
  for (int mask = 0; mask < 8; ++mask) {
    std::string sql = sqlite_internal::ListExecutionsSql(mask & 1, mask & 2, mask & 4);
    auto plan = RawQuery(path, "EXPLAIN QUERY PLAN " + sql);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    std::string details;
    for (const auto& row : *plan) details += row.back() + "; ";
    EXPECT_NE(details.find("USING INDEX executions_by_"), std::string::npos) << sql << "\n"
                                                                             << details;
    EXPECT_EQ(details.find("TEMP B-TREE"), std::string::npos) << sql << "\n" << details;
  }
}

TEST(SqliteStoreTest, LogsAppendAndReadAfterSeq) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));
  ASSERT_TRUE(store->CreateExecution(MakeRecord("ex_1", "t", "running", 1)).ok());

  auto empty = store->GetLogs("ex_1", 0, 100);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());

  std::vector<LogLine> lines;
  for (int i = 1; i <= 10; ++i)
    lines.push_back({i, i % 2 == 0, 100 + i, "line " + std::to_string(i)});
  ASSERT_TRUE(store->AppendLogs("ex_1", {lines.begin(), lines.begin() + 4}).ok());
  ASSERT_TRUE(store->AppendLogs("ex_1", {lines.begin() + 4, lines.end()}).ok());

  auto all = store->GetLogs("ex_1", 0, 100);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ((*all)[i].seq, lines[i].seq);
    EXPECT_EQ((*all)[i].is_stderr, lines[i].is_stderr);
    EXPECT_EQ((*all)[i].at_ms, lines[i].at_ms);
    EXPECT_EQ((*all)[i].text, lines[i].text);
  }
  auto tail = store->GetLogs("ex_1", 7, 100);
  ASSERT_EQ(tail->size(), 3u);
  EXPECT_EQ(tail->front().seq, 8);
  auto page = store->GetLogs("ex_1", 2, 3);
  ASSERT_EQ(page->size(), 3u);
  EXPECT_EQ(page->front().seq, 3);
  EXPECT_EQ(page->back().seq, 5);
  EXPECT_TRUE(store->GetLogs("ex_1", 10, 100)->empty());

  // Seqs must move forward; a bad batch is refused whole.
  EXPECT_EQ(store->AppendLogs("ex_1", {{10, false, 0, "again"}}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store->AppendLogs("ex_1", {{12, false, 0, "x"}, {11, false, 0, "y"}}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store->AppendLogs("ex_1", {{0, false, 0, "zero"}}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store->GetLogs("ex_1", 0, 100)->size(), 10u);

  // Unknown executions.
  EXPECT_EQ(store->AppendLogs("ex_nope", {{1, false, 0, "x"}}).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->GetLogs("ex_nope", 0, 10).status().code(), StatusCode::kNotFound);
}

TEST(SqliteStoreTest, LogsAreCappedPerExecution) {
  TempDir dir;
  SqliteOptions options;
  options.path = dir.File("cortex.db");
  options.max_log_lines_per_execution = 5;
  auto store = MustOpen(options);
  ASSERT_TRUE(store->CreateExecution(MakeRecord("ex_1", "t", "running", 1)).ok());
  ASSERT_TRUE(store->CreateExecution(MakeRecord("ex_2", "t", "running", 2)).ok());

  auto seqs = [&](const std::string& id) {
    std::vector<int64_t> out;
    auto lines = store->GetLogs(id, 0, 100);
    for (const LogLine& l : *lines) out.push_back(l.seq);
    return out;
  };
  ASSERT_TRUE(
      store->AppendLogs("ex_1", {{1, false, 0, "a"}, {2, false, 0, "b"}, {3, true, 0, "c"}}).ok());
  EXPECT_EQ(seqs("ex_1"), (std::vector<int64_t>{1, 2, 3}));
  ASSERT_TRUE(
      store
          ->AppendLogs(
              "ex_1",
              {{4, false, 0, "d"}, {5, false, 0, "e"}, {6, false, 0, "f"}, {7, false, 0, "g"}})
          .ok());
  EXPECT_EQ(seqs("ex_1"), (std::vector<int64_t>{3, 4, 5, 6, 7}));
  // One line at a time past the cap.
  for (int64_t s = 8; s <= 20; ++s) {
    ASSERT_TRUE(store->AppendLogs("ex_1", {{s, false, 0, "x"}}).ok());
  }
  EXPECT_EQ(seqs("ex_1"), (std::vector<int64_t>{16, 17, 18, 19, 20}));
  // A batch bigger than the cap keeps its newest lines.
  std::vector<LogLine> big;
  for (int64_t s = 100; s < 112; ++s) big.push_back({s, false, 0, "big"});
  ASSERT_TRUE(store->AppendLogs("ex_1", big).ok());
  EXPECT_EQ(seqs("ex_1"), (std::vector<int64_t>{107, 108, 109, 110, 111}));
  // Dropped lines do not make old seqs acceptable again.
  EXPECT_EQ(store->AppendLogs("ex_1", {{50, false, 0, "late"}}).code(),
            StatusCode::kInvalidArgument);
  // The cap is per execution.
  ASSERT_TRUE(store->AppendLogs("ex_2", {{1, false, 0, "other"}}).ok());
  EXPECT_EQ(seqs("ex_2"), (std::vector<int64_t>{1}));
  EXPECT_EQ(seqs("ex_1").size(), 5u);

  auto stored = RawQuery(options.path, "SELECT count(*) FROM execution_logs");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ((*stored)[0][0], "6");
}

TEST(SqliteStoreTest, MarkInterruptedFlipsQueuedAndRunning) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));
  ExecutionRecord running = MakeRecord("ex_run", "t", "running", 100);
  running.started_ms = 150;
  ASSERT_TRUE(store->CreateExecution(running).ok());
  ASSERT_TRUE(store->CreateExecution(MakeRecord("ex_queued", "t", "queued", 110)).ok());
  ExecutionRecord done = MakeRecord("ex_done", "t", "succeeded", 90);
  done.finished_ms = 95;
  ASSERT_TRUE(store->CreateExecution(done).ok());

  auto n = store->MarkInterrupted(1000);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 2);
  for (const std::string id : {"ex_run", "ex_queued"}) {
    const ExecutionRecord r = **store->GetExecution(id);
    EXPECT_EQ(r.status, "interrupted") << id;
    EXPECT_EQ(r.error, "interrupted: the server stopped while it was running") << id;
    EXPECT_EQ(r.finished_ms, 1000) << id;
  }
  EXPECT_EQ((*store->GetExecution("ex_run"))->duration_ms, 850);
  const ExecutionRecord untouched = **store->GetExecution("ex_done");
  EXPECT_EQ(untouched.status, "succeeded");
  EXPECT_EQ(untouched.finished_ms, 95);
  EXPECT_EQ(*store->MarkInterrupted(2000), 0);
}

TEST(SqliteStoreTest, EverythingIsStillThereAfterReopening) {
  TempDir dir;
  const std::string path = dir.File("cortex.db");
  {
    auto store = MustOpen(path);
    ASSERT_TRUE(store->CreateExecution(MakeRecord("ex_1", "t", "running", 1)).ok());
    ASSERT_TRUE(store->AppendLogs("ex_1", {{1, false, 5, "hello"}, {2, true, 6, "oops"}}).ok());
  }
  {
    auto store = MustOpen(path);
    auto r = store->GetExecution("ex_1");
    ASSERT_TRUE(r.ok() && r->has_value());
    EXPECT_EQ((*r)->status, "running");
    auto logs = store->GetLogs("ex_1", 0, 10);
    ASSERT_EQ(logs->size(), 2u);
    EXPECT_EQ((*logs)[1].text, "oops");
    EXPECT_TRUE((*logs)[1].is_stderr);
    // The stored state of the file itself.
    auto pragmas =
        RawQuery(path, "PRAGMA journal_mode; PRAGMA user_version; PRAGMA application_id");
    ASSERT_TRUE(pragmas.ok());
    ASSERT_EQ(pragmas->size(), 3u);
    EXPECT_EQ((*pragmas)[0][0], "wal");
    EXPECT_EQ((*pragmas)[1][0], std::to_string(sqlite_internal::Migrations().back().version));
    EXPECT_EQ((*pragmas)[2][0], std::to_string(0x43525458));
    auto history = RawQuery(path, "SELECT version, name FROM schema_migrations ORDER BY version");
    ASSERT_TRUE(history.ok());
    EXPECT_EQ(history->size(), sqlite_internal::Migrations().size());
  }
}

// Acknowledged writes survive the process dying without closing anything (kill -9).
TEST(SqliteStoreTest, AcknowledgedWritesSurviveAKill) {
  TempDir dir;
  const std::string path = dir.File("cortex.db");
  std::string said = InChild([&](int out) {
    auto store = OpenSqliteStore(SqliteOptions{path});
    if (!store.ok()) {
      WriteAll(out, store.status().ToString());
      _exit(1);
    }
    for (int i = 0; i < 50; ++i) {
      Status s =
          (*store)->CreateExecution(MakeRecord("ex_" + std::to_string(i), "t", "running", i));
      if (!s.ok()) WriteAll(out, s.ToString());
    }
    Status s = (*store)->AppendLogs("ex_49", {{1, false, 1, "last words"}});
    WriteAll(out, s.ok() ? "acknowledged" : s.ToString());
    close(out);
    kill(getpid(), SIGKILL);
  });
  ASSERT_EQ(said, "acknowledged");
  // The WAL was never checkpointed into the database file: the data is only in the WAL.
  ASSERT_TRUE(fs::exists(path + "-wal"));
  EXPECT_GT(fs::file_size(path + "-wal"), 0u);

  auto store = MustOpen(path);
  for (int i = 0; i < 50; ++i) {
    EXPECT_TRUE(store->GetExecution("ex_" + std::to_string(i))->has_value()) << i;
  }
  EXPECT_EQ(store->GetLogs("ex_49", 0, 10)->at(0).text, "last words");
  EXPECT_EQ(*store->MarkInterrupted(99), 50);
}

TEST(SqliteStoreTest, ConcurrentWritersAndReaders) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));
  constexpr int kThreads = 8, kPerThread = 200;
  std::atomic<int> failures{0};
  std::atomic<bool> writing{true};
  std::vector<std::thread> writers, readers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string id = "ex_" + std::to_string(t) + "_" + std::to_string(i);
        ExecutionRecord r = MakeRecord(id, "tool" + std::to_string(t), "running", t * 1000 + i);
        if (!store->CreateExecution(r).ok()) ++failures;
        if (!store->AppendLogs(id, {{1, false, 0, "out"}}).ok()) ++failures;
        r.status = "succeeded";
        if (!store->UpdateExecution(r).ok()) ++failures;
      }
    });
  }
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (writing.load()) {
        auto page = store->ListExecutions(ExecutionFilter{});
        if (!page.ok()) {
          ++failures;
          continue;
        }
        for (size_t i = 1; i < page->size(); ++i) {
          if ((*page)[i - 1].created_ms < (*page)[i].created_ms) ++failures;
        }
      }
    });
  }
  for (auto& w : writers) w.join();
  writing = false;
  for (auto& r : readers) r.join();
  EXPECT_EQ(failures.load(), 0);

  std::set<std::string> seen;
  ExecutionFilter page;
  page.limit = 1000;
  for (;;) {
    auto records = store->ListExecutions(page);
    ASSERT_TRUE(records.ok());
    if (records->empty()) break;
    for (const auto& r : *records) {
      EXPECT_EQ(r.status, "succeeded");
      seen.insert(r.id);
    }
    page.before_id = records->back().id;
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kThreads * kPerThread));
  for (int t = 0; t < kThreads; ++t) {
    ExecutionFilter by_name;
    by_name.name = "tool" + std::to_string(t);
    by_name.limit = 1000;
    EXPECT_EQ(store->ListExecutions(by_name)->size(), static_cast<size_t>(kPerThread));
  }
}

// Writes committed together still succeed or fail one by one.
TEST(SqliteStoreTest, ConcurrentDuplicatesFailAlone) {
  TempDir dir;
  auto store = MustOpen(dir.File("cortex.db"));
  constexpr int kThreads = 8, kIds = 100;
  std::vector<std::vector<StatusCode>> codes(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIds; ++i) {
        ExecutionRecord r = MakeRecord("ex_" + std::to_string(i), "t", "queued", i);
        r.error = "by thread " + std::to_string(t);
        codes[static_cast<size_t>(t)].push_back(store->CreateExecution(r).code());
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int i = 0; i < kIds; ++i) {
    int created = 0, duplicates = 0;
    for (const auto& per_thread : codes) {
      created += per_thread[static_cast<size_t>(i)] == StatusCode::kOk;
      duplicates += per_thread[static_cast<size_t>(i)] == StatusCode::kAlreadyExists;
    }
    EXPECT_EQ(created, 1) << i;
    EXPECT_EQ(duplicates, kThreads - 1) << i;
  }
  ExecutionFilter all;
  all.limit = 1000;
  EXPECT_EQ(store->ListExecutions(all)->size(), static_cast<size_t>(kIds));
}

TEST(SqliteStoreTest, MigrationsUpgradeAnOlderDatabase) {
  TempDir dir;
  SqliteOptions options;
  options.path = dir.File("cortex.db");
  {
    auto store = MustOpen(options);
    ASSERT_TRUE(store->CreateExecution(MakeRecord("ex_1", "t", "succeeded", 1)).ok());
  }
  std::vector<sqlite_internal::Migration> next(sqlite_internal::Migrations().begin(),
                                               sqlite_internal::Migrations().end());
  const int v2 = static_cast<int>(next.size()) + 1;
  next.push_back({v2, "a future table (test)",
                  "CREATE TABLE future_things (id TEXT PRIMARY KEY NOT NULL, status TEXT NOT NULL);"
                  "CREATE INDEX future_things_by_status ON future_things (status);"});
  {
    auto store = sqlite_internal::OpenWithMigrations(options, next);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_TRUE((*store)->GetExecution("ex_1")->has_value());
  }
  auto version = RawQuery(options.path, "PRAGMA user_version");
  EXPECT_EQ((*version)[0][0], std::to_string(v2));
  EXPECT_TRUE(RawQuery(options.path, "SELECT count(*) FROM future_things").ok());

  // The database is now newer than this build's schema: refused, naming both versions.
  auto refused = OpenSqliteStore(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  const std::string& message = refused.status().message();
  EXPECT_NE(message.find("schema version " + std::to_string(v2)), std::string::npos) << message;
  EXPECT_NE(message.find("(" + std::to_string(v2 - 1) + ")"), std::string::npos) << message;
}

TEST(SqliteStoreTest, AFailingMigrationChangesNothing) {
  TempDir dir;
  SqliteOptions options;
  options.path = dir.File("cortex.db");
  MustOpen(options).reset();
  std::vector<sqlite_internal::Migration> next(sqlite_internal::Migrations().begin(),
                                               sqlite_internal::Migrations().end());
  const int v2 = static_cast<int>(next.size()) + 1;
  next.push_back({v2, "broken", "CREATE TABLE half_done (x); CREATE TABLE executions (x);"});
  auto store = sqlite_internal::OpenWithMigrations(options, next);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("broken"), std::string::npos)
      << store.status().ToString();
  EXPECT_EQ((*RawQuery(options.path, "PRAGMA user_version"))[0][0], std::to_string(v2 - 1));
  EXPECT_FALSE(RawQuery(options.path, "SELECT * FROM half_done").ok());
  MustOpen(options).reset();  // still fine for this build
}

TEST(SqliteStoreTest, AHandEditedNewerVersionIsRefused) {
  TempDir dir;
  const std::string path = dir.File("cortex.db");
  MustOpen(path).reset();
  // A version this build does not know: one past its last migration.
  const std::string newer = std::to_string(sqlite_internal::Migrations().back().version + 1);
  ASSERT_TRUE(RawQuery(path, "PRAGMA user_version = " + newer).ok());
  auto refused = OpenSqliteStore(SqliteOptions{path});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("version " + newer), std::string::npos)
      << refused.status().message();
}

TEST(SqliteStoreTest, AFileThatIsNotSqliteIsRefusedAndLeftAlone) {
  TempDir dir;
  const std::string path = dir.File("cortex.db");
  std::string content = "these are my notes, not a database\n";
  for (int i = 0; i < 200; ++i) content += "line " + std::to_string(i) + "\n";
  std::ofstream(path, std::ios::binary) << content;

  auto store = OpenSqliteStore(SqliteOptions{path});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("not a SQLite database"), std::string::npos)
      << store.status().message();
  EXPECT_NE(store.status().message().find(path), std::string::npos);
  EXPECT_EQ(ReadBytes(path), content);
  EXPECT_FALSE(fs::exists(path + "-wal"));
  EXPECT_FALSE(fs::exists(path + "-shm"));
  EXPECT_FALSE(fs::exists(path + "-journal"));
}

TEST(SqliteStoreTest, AnotherApplicationsDatabaseIsRefusedAndLeftAlone) {
  TempDir dir;
  const std::string path = dir.File("other.db");
  ASSERT_TRUE(
      RawQuery(path, "CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('hi')").ok());
  const std::string before = ReadBytes(path);

  auto store = OpenSqliteStore(SqliteOptions{path});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("not Cortex's"), std::string::npos)
      << store.status().message();
  EXPECT_EQ(ReadBytes(path), before);
  EXPECT_EQ((*RawQuery(path, "PRAGMA journal_mode"))[0][0], "delete");

  // A database marked by another application (application_id) as well.
  const std::string marked = dir.File("marked.db");
  ASSERT_TRUE(RawQuery(marked, "PRAGMA application_id = 1234; CREATE TABLE t (x)").ok());
  auto refused = OpenSqliteStore(SqliteOptions{marked});
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("0x000004d2"), std::string::npos)
      << refused.status().message();
}

TEST(SqliteStoreTest, AMissingFolderIsAClearError) {
  TempDir dir;
  const std::string path = dir.File("no/such/folder/cortex.db");
  auto store = OpenSqliteStore(SqliteOptions{path});
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("does not exist"), std::string::npos)
      << store.status().message();
  EXPECT_NE(store.status().message().find(dir.File("no/such/folder")), std::string::npos);
  EXPECT_FALSE(fs::exists(dir.File("no")));

  EXPECT_EQ(OpenSqliteStore(SqliteOptions{""}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenSqliteStore(SqliteOptions{":memory:"}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(SqliteStoreTest, AReadOnlyFolderIsAClearError) {
  TempDir dir;
  fs::permissions(dir.path(), fs::perms::others_exec, fs::perm_options::add);
  const std::string folder = dir.File("ro");
  fs::create_directory(folder);
  fs::permissions(folder, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                              fs::perms::group_exec | fs::perms::others_read |
                              fs::perms::others_exec);
  const std::string path = folder + "/cortex.db";
  // Root ignores folder permissions: the child drops to "nobody" first.
  std::string said = InChild([&](int out) {
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) {
      WriteAll(out, "cannot drop privileges");
      return;
    }
    auto store = OpenSqliteStore(SqliteOptions{path});
    WriteAll(out, store.ok() ? std::string("opened") : store.status().ToString());
  });
  EXPECT_EQ(said.rfind("failed_precondition: ", 0), 0u) << said;
  EXPECT_NE(said.find(path), std::string::npos) << said;
  EXPECT_NE(said.find("not writable"), std::string::npos) << said;
  EXPECT_NE(said.find("Permission denied"), std::string::npos) << said;
  EXPECT_FALSE(fs::exists(path));

  // A database file that cannot be written, in a folder that can.
  const std::string open_folder = dir.File("rw");
  fs::create_directory(open_folder);
  fs::permissions(open_folder, fs::perms::all);
  const std::string locked = open_folder + "/cortex.db";
  MustOpen(locked).reset();
  fs::permissions(locked, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  said = InChild([&](int out) {
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) {
      WriteAll(out, "cannot drop privileges");
      return;
    }
    auto store = OpenSqliteStore(SqliteOptions{locked});
    WriteAll(out, store.ok() ? std::string("opened") : store.status().ToString());
  });
  EXPECT_EQ(said.rfind("failed_precondition: ", 0), 0u) << said;
  EXPECT_NE(said.find("not writable"), std::string::npos) << said;
}

// A full disk (here: RLIMIT_FSIZE, which fails writes the same way) fails the write that hit it
// with sqlite's message; the store keeps serving and what was acknowledged before is intact.
TEST(SqliteStoreTest, AFullDiskIsUnavailableNotACrash) {
  TempDir dir;
  const std::string path = dir.File("cortex.db");
  std::string said = InChild([&](int out) {
    signal(SIGXFSZ, SIG_IGN);
    rlimit limit{1 << 20, 1 << 20};
    setrlimit(RLIMIT_FSIZE, &limit);
    auto store = OpenSqliteStore(SqliteOptions{path});
    if (!store.ok()) return WriteAll(out, "open: " + store.status().ToString());
    ExecutionRecord r = MakeRecord("", "t", "succeeded", 1);
    r.result_json = std::string(100 * 1024, 'x');
    Status failed;
    int written = 0;
    for (; written < 100; ++written) {
      r.id = "ex_" + std::to_string(written);
      failed = (*store)->CreateExecution(r);
      if (!failed.ok()) break;
    }
    auto first = (*store)->GetExecution("ex_0");
    bool readable = first.ok() && first->has_value();
    WriteAll(out, std::to_string(written) + "|" + (readable ? "readable" : "unreadable") + "|" +
                      failed.ToString());
  });
  SCOPED_TRACE(said);
  size_t bar1 = said.find('|'), bar2 = said.find('|', bar1 + 1);
  ASSERT_NE(bar2, std::string::npos);
  const int written = std::stoi(said.substr(0, bar1));
  EXPECT_GT(written, 0);
  EXPECT_LT(written, 100);
  EXPECT_EQ(said.substr(bar1 + 1, bar2 - bar1 - 1), "readable");
  EXPECT_EQ(said.substr(bar2 + 1, 13), "unavailable: ");
  EXPECT_NE(said.find("sqlite"), std::string::npos);

  auto store = MustOpen(path);
  for (int i = 0; i < written; ++i) {
    EXPECT_TRUE(store->GetExecution("ex_" + std::to_string(i))->has_value()) << i;
  }
}

TEST(SqliteStoreTest, ACorruptFileIsAnErrorNotACrash) {
  TempDir dir;
  const std::string path = dir.File("cortex.db");
  {
    auto store = MustOpen(path);
    for (int i = 0; i < 300; ++i) {
      ExecutionRecord r = MakeRecord("ex_" + std::to_string(i), "t", "succeeded", i);
      r.result_json = std::string(500, 'r');
      ASSERT_TRUE(store->CreateExecution(r).ok());
    }
  }
  ASSERT_FALSE(fs::exists(path + "-wal"));  // checkpointed on close
  const auto size = fs::file_size(path);
  ASSERT_GT(size, 3 * 4096u);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2 * 4096);
    std::string junk(static_cast<size_t>(size) - 2 * 4096, '\xA5');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto store = OpenSqliteStore(SqliteOptions{path});
  Status status = store.status();
  if (store.ok()) {
    ExecutionFilter filter;
    filter.limit = 1000;
    status = (*store)->ListExecutions(filter).status();
  }
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kInternal) << status.ToString();
  EXPECT_NE(status.message().find("malformed"), std::string::npos) << status.ToString();
}

// Not a check: the figures for the report. Every create is a committed transaction.
TEST(SqliteStoreTest, Throughput) {
  for (bool fsync : {false, true}) {
    TempDir dir;
    SqliteOptions options;
    options.path = dir.File("cortex.db");
    options.fsync_every_commit = fsync;
    auto store = MustOpen(options);
    const int single = fsync ? 300 : 3000;
    const int per_thread = fsync ? 150 : 1000;
    using Clock = std::chrono::steady_clock;
    auto seconds = [](Clock::time_point since) {
      return std::chrono::duration<double>(Clock::now() - since).count();
    };
    auto make = [](const std::string& id) {
      ExecutionRecord r = MakeRecord(id, "calculator", "succeeded", 1700000000000);
      r.parameters_json = R"({"operation":"add","a":5,"b":3})";
      r.result_json = R"({"result":8})";
      return r;
    };

    auto start = Clock::now();
    for (int i = 0; i < single; ++i) {
      ASSERT_TRUE(store->CreateExecution(make("s_" + std::to_string(i))).ok());
    }
    const double single_rate = single / seconds(start);

    constexpr int kThreads = 8;
    std::atomic<int> failures{0};
    start = Clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < per_thread; ++i) {
          std::string id = "m_" + std::to_string(t) + "_" + std::to_string(i);
          if (!store->CreateExecution(make(id)).ok()) ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    const double multi_rate = kThreads * per_thread / seconds(start);
    EXPECT_EQ(failures.load(), 0);
    std::printf(
        "[ throughput ] synchronous=%s: %.0f creates/s on 1 thread, %.0f creates/s on %d "
        "threads (%.1fx)\n",
        fsync ? "FULL  " : "NORMAL", single_rate, multi_rate, kThreads, multi_rate / single_rate);
  }
}

}  // namespace
}  // namespace cortex::store
