// The agent loop (docs/agents.md): an Agent manifest run against a model through the LLM
// gateway, speaking the streaming protocol.
//
// Each iteration sends the conversation (system prompt, the user's input, the model's earlier
// turns and the observations of their actions) and reads the model's reply as it streams: thought
// text goes out as events at once, and each action starts the moment its </action> arrives (tool,
// relic and workflow actions through the ActionDispatcher, so they run like workflow steps:
// sandboxed, limited, recorded; sub-agents and sub-prompts in this runner), as soon as the
// actions it depends on have finished. When
// the reply has ended and its actions have finished, their outcomes go back to the model as one
// labelled observation per action, and the response, with `$output_key` references substituted,
// goes to the user. The run ends on a final response, the iteration cap, the wall-clock limit,
// the token budget or cancellation, and says which.
//
// Durable: every model turn received and every action outcome is written to the run's journal in
// the Store before the loop acts on it. A run the server stopped during (a crash included) resumes
// at the next start: recorded turns are not requested again, finished actions not run again, and
// an action that was in flight runs again with the same idempotency key.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/actions.h"
#include "agent/protocol.h"
#include "common/cancel.h"
#include "common/metrics.h"
#include "common/mutex.h"
#include "common/status.h"
#include "common/trace.h"
#include "llm/gateway.h"
#include "registry/registry.h"
#include "store/store.h"

namespace cortex::agent {

struct AgentRunOptions {
  int max_iterations = 50;  // the cap when a manifest's iteration_cap is 0 (unlimited)
  std::chrono::milliseconds max_wall{600000};
  size_t observation_bytes = 16384;  // per action result shown to the model
  int max_parallel = 5;              // actions running at once in one run
  // Start actions only when the model's message has ended, as most agent runtimes do (for
  // comparison: bench/agent_bench). Off: each starts when its </action> arrives.
  bool dispatch_at_message_end = false;
  std::chrono::milliseconds action_timeout{300000};
  std::string default_provider = "openai";  // for an agent without cognitive_engine
  std::string recordings_dir;               // where `record` writes (<data-dir>/recordings)
  int max_depth = 3;                        // sub-agents of sub-agents of ...
  // The environment variables a manifest posted through the API may name as its api_key_env
  // (variables.allow_env: names, or prefixes ending in '*').
  std::vector<std::string> allowed_env;
  // Where runs, model turns and live runs are counted (none when null).
  metrics::Registry* metrics = nullptr;
  // A run is a span "agent <name>", each action a span "action <type> <name>" under it whose
  // context goes on to the tool, relic call, workflow or sub-agent (none when null: the run's
  // traceparent is still passed on).
  const trace::Tracer* tracer = nullptr;
};

struct AgentRunRequest {
  std::string agent;
  std::string input;  // the user's message
  // The conversation so far (user and assistant turns, oldest first), kept by the caller until
  // sessions are stored: it goes between the system prompt and `input`.
  std::vector<llm::Message> history;
  // More instructions from the caller (an OpenAI client's system messages), after the agent's own
  // system prompt.
  std::string extra_system;
  // The session this run continues ("" = a new one, when `keep_session`): its messages come
  // before `history`, and the run's input and answer are added to it at the end.
  std::string session_id;
  bool keep_session = true;
  std::string run_id;                   // "" = a new one ("ar_" + hex)
  std::optional<int64_t> token_budget;  // input + output tokens, all turns together
  bool record = false;                  // write the model's turns to recordings_dir/<run_id>.jsonl
  // Who started it, when not a caller of its own: a workflow step ("workflow:<run>/<step>/<n>") or
  // an agent run ("agent:<run id>"). Such a run is resumed by its parent, which runs it again
  // under the same run_id; the server resumes only runs without one.
  std::string parent;
  int depth = 0;            // 0 for a run of its own, 1 for its sub-agents, ...
  std::string traceparent;  // the caller's W3C trace context
};

// What the loop reports as it goes; `type` is the SSE event name: run (started), thought,
// action, action_result, response, usage, done, error.
struct AgentEvent {
  std::string type;
  nlohmann::ordered_json data;
};
using AgentEventSink = std::function<void(const AgentEvent&)>;

struct AgentRunResult {
  std::string run_id, agent;
  std::string session_id;  // "" when the run keeps no session
  std::string status;      // succeeded | failed | cancelled | interrupted (the server stopped)
  std::string reason;      // final | iteration_cap | time_limit | token_budget | cancelled | error
  std::string response;
  std::string error;
  int iterations = 0;
  llm::Usage usage;
  nlohmann::ordered_json actions = nlohmann::ordered_json::array();  // every action's outcome
  std::string recording;  // the recording's path, when recorded
  int64_t duration_ms = 0;

  bool resumed = false;  // it went on from its journal after a restart

  nlohmann::ordered_json ToJson() const;
  static AgentRunResult FromJson(const nlohmann::ordered_json& j);
};

class AgentRunner {
 public:
  // `store` (optional) keeps sessions, run records and their journals.
  AgentRunner(registry::Registry& registry, llm::Gateway& gateway, ActionDispatcher& dispatcher,
              AgentRunOptions options, store::Store* store = nullptr);
  ~AgentRunner();  // Shutdown(), then waits for the runs on threads of their own
  AgentRunner(const AgentRunner&) = delete;
  AgentRunner& operator=(const AgentRunner&) = delete;

  // Checks that the run can start: the agent exists (NotFound), its manifest is resolved and its
  // model's provider usable (FailedPrecondition). Called by Run; the API calls it first to answer
  // with a status code before it starts streaming.
  Status Check(const std::string& agent) const;
  // The providers an agent's model is tried with, in order (name, model): its primary, then its
  // fallback; one with its own endpoint or api_key_env is made by Gateway::Derive.
  Result<std::vector<std::pair<std::string, std::string>>> ChainOf(
      const registry::Entry& entry) const;

  // Runs to the end. An error Status means it did not start (see Check); everything after the
  // start is in the result (and the events). `cancel` (optional) is the caller's: a client that
  // went away. A run_id that is recorded already is not started again: a finished run answers
  // its record, an unfinished one resumes from its journal.
  Result<AgentRunResult> Run(const AgentRunRequest& request, const AgentEventSink& sink,
                             const CancelToken* cancel);

  // Runs on a thread of its own; `done` (optional) gets the result. Answers the run id once the
  // run is recorded (or why it cannot start).
  Result<std::string> Launch(AgentRunRequest request,
                             std::function<void(Result<AgentRunResult>)> done = nullptr);

  // At the server's start: resumes, each on a thread of its own, the runs the last server left
  // running (those without a parent); a run without a journal to resume from is marked
  // interrupted. Returns how many resume.
  int ResumeInterrupted();

  bool Cancel(const std::string& run_id);  // false: not in progress here
  // The runs in progress here: [{run_id, agent, status, started_ms, parent}].
  nlohmann::ordered_json Live() const;
  // The server stops: runs in progress end where they are and stay recorded as running, to
  // resume at the next start; nothing starts after this.
  void Shutdown();
  // Shutdown(), then waits until the runs on this runner's threads have ended.
  void Drain();
  bool stopping() const { return stopping_.load(); }

 private:
  struct Setup;
  struct Restored;
  Result<AgentRunResult> Execute(Setup& setup, Restored& restored, const AgentEventSink& sink,
                                 const CancelToken* caller_cancel);
  struct LiveRun {
    std::string agent, parent;
    int64_t started_ms = 0;
    std::shared_ptr<CancelToken> cancel;
  };
  std::shared_ptr<CancelToken> Register(const std::string& run_id, const std::string& agent,
                                        const std::string& parent);
  void Unregister(const std::string& run_id);
  // Counts a thread of this runner's (a launched run, a sub-prompt); the destructor waits for
  // them. False when stopping.
  bool BeginThread();
  void EndThread();

  registry::Registry& registry_;
  llm::Gateway& gateway_;
  ActionDispatcher& dispatcher_;
  AgentRunOptions options_;
  store::Store* store_;
  Mutex sessions_mu_;  // a session's read-modify-write at the end of a run
  std::atomic<bool> stopping_{false};
  mutable Mutex live_mu_;
  std::condition_variable threads_cv_;
  std::map<std::string, LiveRun> live_ CORTEX_GUARDED_BY(live_mu_);
  metrics::Counter* runs_metric_ = nullptr;
  metrics::Counter* turns_metric_ = nullptr;
  metrics::Registry::CollectorHandle live_collector_;
  int threads_ CORTEX_GUARDED_BY(live_mu_) = 0;
};

// A run id that is the same for the same key ("ar_" + 20 hex digits): a sub-agent's or a
// workflow step's run, found again when its parent runs it again.
std::string StableRunId(const std::string& prefix, const std::string& key);

// `$name` references in a JSON value: a string that is exactly "$name" becomes the variable's
// value with its JSON type; a reference inside a longer string becomes its text. Unknown names
// stay as written.
nlohmann::ordered_json SubstituteVariables(const nlohmann::ordered_json& value,
                                           const nlohmann::ordered_json& vars);
std::string SubstituteVariables(const std::string& text, const nlohmann::ordered_json& vars);

// The user's message in an agent's input: the string itself, or an object's message, prompt,
// query, question or text (a string); anything else as its JSON text.
std::string InputText(const nlohmann::ordered_json& input);

// An agent's persona: its persona.agent file (else its Markdown body, else "You are <name>.
// <description>"), then its persona.system, persona.user and persona.knowledge files. The start
// of its system prompt, and what MCP offers as its prompt.
std::string PersonaText(const registry::Entry& agent);

// The JSON Schema of a tool's parameters, for the model's catalogue.
nlohmann::ordered_json ParametersSchema(const registry::ParameterList& params);

}  // namespace cortex::agent
