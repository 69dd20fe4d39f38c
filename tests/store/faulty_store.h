// A Store that passes every call to a real one, except the workflow-run writes it is told to
// refuse: a fault-injecting Store in the spirit of LevelDB's fault-injecting Env, for testing
// what the engine does when a write fails (a full disk, a dead database).
#pragma once

#include <mutex>

#include "store/store.h"

namespace cortex::store {

class FaultyStore final : public Store {
 public:
  explicit FaultyStore(Store& real) : real_(real) {}

  // Refuse `count` WriteRun calls, starting with the `first`-th one from now (1 = the next).
  void FailRunWrites(int first, int count) {
    std::lock_guard lock(mu_);
    skip_ = first - 1;
    fail_ = count;
  }
  int refused() const {
    std::lock_guard lock(mu_);
    return refused_;
  }

  Status WriteRun(const RunTransition& t) override {
    {
      std::lock_guard lock(mu_);
      if (skip_ > 0) {
        --skip_;
      } else if (fail_ > 0) {
        --fail_;
        ++refused_;
        return UnavailableError("injected fault: the disk is full");
      }
    }
    return real_.WriteRun(t);
  }

  Status CreateExecution(const ExecutionRecord& r) override { return real_.CreateExecution(r); }
  Status UpdateExecution(const ExecutionRecord& r) override { return real_.UpdateExecution(r); }
  Status FinishExecution(const ExecutionRecord& r, const std::vector<LogLine>& lines) override {
    return real_.FinishExecution(r, lines);
  }
  Result<std::optional<ExecutionRecord>> GetExecution(const std::string& id) override {
    return real_.GetExecution(id);
  }
  Result<std::vector<ExecutionRecord>> ListExecutions(const ExecutionFilter& f) override {
    return real_.ListExecutions(f);
  }
  Result<int> MarkInterrupted(int64_t now_ms) override { return real_.MarkInterrupted(now_ms); }
  Status AppendLogs(const std::string& id, const std::vector<LogLine>& lines) override {
    return real_.AppendLogs(id, lines);
  }
  Result<std::vector<LogLine>> GetLogs(const std::string& id, int64_t after,
                                       size_t limit) override {
    return real_.GetLogs(id, after, limit);
  }
  Result<std::optional<RunRecord>> GetRun(const std::string& id) override {
    return real_.GetRun(id);
  }
  Result<std::vector<StepRecord>> GetSteps(const std::string& id) override {
    return real_.GetSteps(id);
  }
  Result<std::vector<RunRecord>> ListRuns(const RunFilter& f) override { return real_.ListRuns(f); }
  Result<std::vector<RunEvent>> GetRunEvents(const std::string& id, int64_t after,
                                             size_t limit) override {
    return real_.GetRunEvents(id, after, limit);
  }
  Result<std::optional<int64_t>> GetScheduleMark(const std::string& w) override {
    return real_.GetScheduleMark(w);
  }
  Status SetScheduleMark(const std::string& w, int64_t due_ms) override {
    return real_.SetScheduleMark(w, due_ms);
  }
  Status PutDeployment(const DeploymentRecord& r) override { return real_.PutDeployment(r); }
  Result<std::optional<DeploymentRecord>> GetDeployment(const std::string& kind,
                                                        const std::string& name) override {
    return real_.GetDeployment(kind, name);
  }
  Result<std::vector<DeploymentRecord>> ListDeployments(const std::string& kind) override {
    return real_.ListDeployments(kind);
  }
  Status DeleteDeployment(const std::string& kind, const std::string& name) override {
    return real_.DeleteDeployment(kind, name);
  }
  Status PutAgentSession(const AgentSessionRecord& r) override { return real_.PutAgentSession(r); }
  Result<std::optional<AgentSessionRecord>> GetAgentSession(const std::string& id) override {
    return real_.GetAgentSession(id);
  }
  Result<std::vector<AgentSessionRecord>> ListAgentSessions(const std::string& agent,
                                                            size_t limit) override {
    return real_.ListAgentSessions(agent, limit);
  }
  Status DeleteAgentSession(const std::string& id) override { return real_.DeleteAgentSession(id); }
  Status PutAgentRun(const AgentRunRecord& r) override { return real_.PutAgentRun(r); }
  Result<std::optional<AgentRunRecord>> GetAgentRun(const std::string& id) override {
    return real_.GetAgentRun(id);
  }
  Result<std::vector<AgentRunRecord>> ListAgentRuns(const std::string& agent,
                                                    const std::string& session_id,
                                                    size_t limit) override {
    return real_.ListAgentRuns(agent, session_id, limit);
  }
  Result<std::vector<AgentUsage>> AgentUsageTotals(const std::string& agent) override {
    return real_.AgentUsageTotals(agent);
  }
  Result<std::vector<AgentRunRecord>> ListRunningAgentRuns() override {
    return real_.ListRunningAgentRuns();
  }
  Status AppendAgentJournal(const AgentJournalEntry& e) override {
    return real_.AppendAgentJournal(e);
  }
  Result<std::vector<AgentJournalEntry>> GetAgentJournal(const std::string& run_id) override {
    return real_.GetAgentJournal(run_id);
  }
  Status PutApiKey(const ApiKeyRecord& r) override { return real_.PutApiKey(r); }
  Result<std::optional<ApiKeyRecord>> FindApiKeyByHash(const std::string& h) override {
    return real_.FindApiKeyByHash(h);
  }
  Result<std::optional<ApiKeyRecord>> GetApiKey(const std::string& id) override {
    return real_.GetApiKey(id);
  }
  Result<std::vector<ApiKeyRecord>> ListApiKeys() override { return real_.ListApiKeys(); }
  Result<int64_t> AppendAudit(const AuditEntry& e) override { return real_.AppendAudit(e); }
  Result<std::vector<AuditEntry>> ListAudit(const AuditFilter& f) override {
    return real_.ListAudit(f);
  }
  Result<int> MarkAgentRunsInterrupted(int64_t now_ms) override {
    return real_.MarkAgentRunsInterrupted(now_ms);
  }

 private:
  Store& real_;
  mutable std::mutex mu_;
  int skip_ = 0, fail_ = 0, refused_ = 0;
};

}  // namespace cortex::store
