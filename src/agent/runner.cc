#include "agent/runner.h"

#include <algorithm>
#include <condition_variable>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "common/json.h"
#include "common/log.h"
#include "common/random_id.h"
#include "exec/executor.h"
#include "registry/variables.h"

namespace cortex::agent {
namespace {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
namespace fs = std::filesystem;

std::string NewRunId() { return RandomId("ar_"); }

std::string ReadText(const fs::path& p, size_t limit = 256 * 1024) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return "";
  std::string out(limit, '\0');
  in.read(out.data(), static_cast<std::streamsize>(limit));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

bool IsNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
}

// The variable `name` of `vars`, following dots into objects ("$doc.title").
const Json* Lookup(const Json& vars, const std::string& name) {
  if (auto it = vars.find(name); it != vars.end()) return &*it;
  size_t dot = name.find('.');
  if (dot == std::string::npos) return nullptr;
  auto it = vars.find(name.substr(0, dot));
  if (it == vars.end()) return nullptr;
  const Json* cur = &*it;
  std::string rest = name.substr(dot + 1);
  while (!rest.empty()) {
    size_t d = rest.find('.');
    std::string key = rest.substr(0, d);
    if (!cur->is_object() || !cur->contains(key)) return nullptr;
    cur = &(*cur)[key];
    rest = d == std::string::npos ? "" : rest.substr(d + 1);
  }
  return cur;
}

std::string AsText(const Json& v) { return v.is_string() ? v.get<std::string>() : DumpJson(v); }

// The tool's record as an action outcome: {status, result | error}.
void OutcomeOfRecord(const store::ExecutionRecord& r, std::string* status, Json* result,
                     std::string* error) {
  if (r.status == "succeeded") {
    *status = "succeeded";
    *result = ParseJsonOrString(r.result_json);
  } else {
    *status = "failed";
    *error = r.error.empty() ? "the tool ended " + r.status : r.error;
    if (!r.result_json.empty()) *result = ParseJsonOrString(r.result_json);
  }
}

constexpr const char* kProtocolGuide = R"(# How you work

You answer in the streaming protocol. Think in <thought>...</thought>. To use one of your
capabilities, write an action; it starts the moment you close it:

<action type="tool" id="a1">{"name": "<tool>", "parameters": {...}, "output_key": "x"}</action>

- `type`: tool (default); agent (ask another agent: "parameters": {"message": "..."}); relic (a
  service's operation: "name": "<relic>", "parameters": {"operation": "<endpoint>", ...});
  workflow (runs it with "parameters" as its input and waits for its outputs); llm (a sub-prompt:
  "parameters": {"prompt": "...", "system": "..."}); internal (system_clock, set_variable
  {key, value}, delete_variable {key}, add_context_feed {id, type, interval, source{type, name,
  params}}, update_context_feed {id, ...}, remove_context_feed {id}, list_context_feeds,
  clear_context).
- `mode`: sync (default), async (runs alongside the others) or fire_and_forget (nobody waits).
- `id`: your name for the action; `depends_on` (a JSON key, a list of ids) makes it wait for
  those actions, and it is skipped if one of them fails.
- `output_key`: the result is kept as $x; "$x" as a whole parameter value passes the value
  itself, and $x inside text or in your response is replaced by it.

Several independent actions run in parallel. When your message ends, you get one observation per
action (its status and result, or its error) and you continue. Context feeds, when you have
them, come as <context_feed id="..."> blocks below, refreshed before each of your turns.

When you have the answer, write it in <response final="true">...</response>. Use
<response final="false">...</response> for a progress note when you still have work to do.
Only use capabilities listed below.)";

constexpr const char* kNativeGuide = R"(# How you work

Act through the functions you are given: call several at once when they do not depend on each
other, and each call's result comes back to you. Functions named agent__<name> ask another agent
({"message": "..."}), workflow__<name> run a workflow, relic__<name>__<operation> call a
service, internal__<name> manage your variables and context feeds. When you have the answer,
reply with it as plain text, without calling a function.)";

// A function of the native mode, and what a call of it does.
struct Function {
  std::string type, name, operation;
};
using Functions = std::map<std::string, Function>;

// A function name providers accept (letters, digits, _ and -; at most 64).
std::string FunctionName(const std::string& prefix, const std::string& name) {
  std::string out = prefix;
  for (char c : name) {
    out += std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ? c : '_';
  }
  if (out.size() > 64) out.resize(64);
  return out;
}

// The action a native function call asks for; an unknown function or arguments that are not a
// JSON object make an invalid action (the model sees why).
ParsedAction ActionOfCall(const llm::ToolCall& call, const Functions& functions, int n, int turn) {
  ParsedAction a;
  a.id = call.id.empty() ? "call-" + std::to_string(turn) + "-" + std::to_string(n) : call.id;
  a.mode = "async";
  a.raw = call.arguments;
  a.name = call.name;
  auto it = functions.find(call.name);
  if (it == functions.end()) {
    a.error = "no function named '" + call.name + "'";
    return a;
  }
  a.type = it->second.type;
  a.name = it->second.name;
  auto args =
      ParseJson(call.arguments.find_first_not_of(" \t\r\n") == std::string::npos ? std::string("{}")
                                                                                 : call.arguments);
  if (!args.ok() || !args->is_object()) {
    a.error = "the arguments of " + call.name +
              " are not a JSON object: " + ToValidUtf8(call.arguments.substr(0, 200));
    return a;
  }
  a.parameters = *args;
  if (!it->second.operation.empty()) a.parameters["operation"] = it->second.operation;
  return a;
}

}  // namespace

Json AgentRunResult::ToJson() const {
  Json j;
  j["run_id"] = run_id;
  j["agent"] = agent;
  if (!session_id.empty()) j["session_id"] = session_id;
  j["status"] = status;
  j["reason"] = reason;
  j["response"] = ToValidUtf8(response);
  if (!error.empty()) j["error"] = ToValidUtf8(error);
  j["iterations"] = iterations;
  j["usage"] = {{"input_tokens", usage.input_tokens}, {"output_tokens", usage.output_tokens}};
  if (usage.cost > 0) j["usage"]["cost"] = usage.cost;
  j["actions"] = actions;
  if (!recording.empty()) j["recording"] = recording;
  j["duration_ms"] = duration_ms;
  if (resumed) j["resumed"] = true;
  return j;
}

Json SubstituteVariables(const Json& value, const Json& vars) {
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    if (s.size() > 1 && s[0] == '$') {
      bool whole = std::all_of(s.begin() + 1, s.end(), IsNameChar);
      if (whole) {
        if (const Json* v = Lookup(vars, s.substr(1))) return *v;
      }
    }
    return SubstituteVariables(s, vars);
  }
  if (value.is_object()) {
    Json out = Json::object();
    for (auto it = value.begin(); it != value.end(); ++it) {
      out[it.key()] = SubstituteVariables(it.value(), vars);
    }
    return out;
  }
  if (value.is_array()) {
    Json out = Json::array();
    for (const auto& v : value) out.push_back(SubstituteVariables(v, vars));
    return out;
  }
  return value;
}

std::string SubstituteVariables(const std::string& text, const Json& vars) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '$' && i + 1 < text.size() && IsNameChar(text[i + 1])) {
      size_t j = i + 1;
      while (j < text.size() && IsNameChar(text[j])) ++j;
      // A name does not end with a dot ("$sum." at the end of a sentence).
      size_t end = j;
      while (end > i + 1 && text[end - 1] == '.') --end;
      if (const Json* v = Lookup(vars, text.substr(i + 1, end - i - 1))) {
        out += AsText(*v);
        i = end;
        continue;
      }
      out.append(text, i, j - i);
      i = j;
      continue;
    }
    out += text[i++];
  }
  return out;
}

std::string InputText(const Json& input) {
  if (input.is_string()) return input.get<std::string>();
  if (input.is_object()) {
    for (const char* key : {"message", "prompt", "query", "question", "text", "input"}) {
      if (auto it = input.find(key); it != input.end() && it->is_string()) {
        return it->get<std::string>();
      }
    }
  }
  return input.is_null() ? std::string() : DumpJson(input);
}

Json ParametersSchema(const registry::ParameterList& params) {
  Json props = Json::object();
  Json required = Json::array();
  for (const auto& p : params.items) {
    Json s = {{"type", p.type == "float" ? "number" : p.type}};
    if (!p.description.empty()) s["description"] = p.description;
    if (!p.enum_values.empty()) s["enum"] = p.enum_values;
    if (!p.default_value.is_null()) s["default"] = p.default_value;
    if (!p.items.is_null()) s["items"] = p.items;
    props[p.name] = std::move(s);
    if (p.IsRequired()) required.push_back(p.name);
  }
  Json schema = {{"type", "object"}, {"properties", std::move(props)}};
  if (!required.empty()) schema["required"] = std::move(required);
  return schema;
}

AgentRunResult AgentRunResult::FromJson(const Json& j) {
  AgentRunResult r;
  if (!j.is_object()) return r;
  r.run_id = j.value("run_id", "");
  r.agent = j.value("agent", "");
  r.session_id = j.value("session_id", "");
  r.status = j.value("status", "");
  r.reason = j.value("reason", "");
  r.response = j.value("response", "");
  r.error = j.value("error", "");
  r.iterations = j.value("iterations", 0);
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
    r.usage.input_tokens = u->value("input_tokens", int64_t{0});
    r.usage.output_tokens = u->value("output_tokens", int64_t{0});
    r.usage.cost = u->value("cost", 0.0);
  }
  if (auto a = j.find("actions"); a != j.end() && a->is_array()) r.actions = *a;
  r.recording = j.value("recording", "");
  r.duration_ms = j.value("duration_ms", int64_t{0});
  r.resumed = j.value("resumed", false);
  return r;
}

std::string StableRunId(const std::string& prefix, const std::string& key) {
  // FNV-1a, twice (two seeds) for 20 hex digits: stable across builds and machines.
  auto fnv = [&](uint64_t h) {
    for (unsigned char c : key) {
      h ^= c;
      h *= 1099511628211ull;
    }
    return h;
  };
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%04llx",
                static_cast<unsigned long long>(fnv(14695981039346656037ull)),
                static_cast<unsigned long long>(fnv(0x9e3779b97f4a7c15ull) & 0xffff));
  return prefix + buf;
}

// What a run needs to go: built from the request for a new run, from its record to resume one.
struct AgentRunner::Setup {
  AgentRunRequest request;
  std::vector<llm::Message> initial;  // system prompt, the session's and caller's history, input
  store::AgentSessionRecord session;  // as it was when the run started (a new one: not stored)
  bool keep_session = false;
  Json vars = Json::object();  // the session's variables then
  int64_t created_ms = 0;
};

// What a run's journal says happened before the server stopped.
struct AgentRunner::Restored {
  bool resumed = false;
  std::map<int, Json> turns;             // turn -> {content, usage, provider, model}
  std::map<std::string, Json> outcomes;  // action id -> {status, result, error, fingerprint...}
  int64_t elapsed_ms = 0;                // running time before
  int64_t next_seq = 1;
};

AgentRunner::AgentRunner(registry::Registry& registry, llm::Gateway& gateway,
                         ActionDispatcher& dispatcher, AgentRunOptions options, store::Store* store)
    : registry_(registry),
      gateway_(gateway),
      dispatcher_(dispatcher),
      options_(std::move(options)),
      store_(store) {
  if (metrics::Registry* m = options_.metrics) {
    runs_metric_ = &m->NewCounter("cortex_agent_runs_total",
                                  "Agent runs ended, by agent and status.", {"agent", "status"});
    turns_metric_ = &m->NewCounter("cortex_agent_turns_total",
                                   "Model turns of ended agent runs, by agent.", {"agent"});
    auto& live = m->NewGauge("cortex_agent_live_runs", "Agent runs in progress.", {});
    live_collector_ = m->OnScrape([this, &live]() CORTEX_EXCLUDES(live_mu_) {
      MutexLock lock(live_mu_);
      live.Set({}, static_cast<double>(live_.size()));
    });
  }
}

AgentRunner::~AgentRunner() { Drain(); }

void AgentRunner::Drain() {
  Shutdown();
  MutexLock lock(live_mu_);
  threads_cv_.wait(lock.native(), [&]() CORTEX_REQUIRES(live_mu_) { return threads_ == 0; });
}

std::shared_ptr<CancelToken> AgentRunner::Register(const std::string& run_id,
                                                   const std::string& agent,
                                                   const std::string& parent) {
  MutexLock lock(live_mu_);
  // Launch registers a run before its thread runs it: the run keeps that token.
  if (auto it = live_.find(run_id); it != live_.end()) return it->second.cancel;
  auto token = std::make_shared<CancelToken>();
  if (stopping_) token->Cancel();
  live_[run_id] = LiveRun{agent, parent, exec::NowMs(), token};
  return token;
}

void AgentRunner::Unregister(const std::string& run_id) {
  MutexLock lock(live_mu_);
  live_.erase(run_id);
}

bool AgentRunner::Cancel(const std::string& run_id) {
  MutexLock lock(live_mu_);
  auto it = live_.find(run_id);
  if (it == live_.end()) return false;
  it->second.cancel->Cancel();
  return true;
}

Json AgentRunner::Live() const {
  MutexLock lock(live_mu_);
  Json out = Json::array();
  for (const auto& [id, live] : live_) {
    Json j = {{"run_id", id},
              {"agent", live.agent},
              {"status", live.cancel->cancelled() ? "cancelling" : "running"},
              {"started_ms", live.started_ms}};
    if (!live.parent.empty()) j["parent"] = live.parent;
    out.push_back(std::move(j));
  }
  return out;
}

void AgentRunner::Shutdown() {
  stopping_ = true;
  MutexLock lock(live_mu_);
  for (auto& [_, live] : live_) live.cancel->Cancel();
}

bool AgentRunner::BeginThread() {
  MutexLock lock(live_mu_);
  if (stopping_) return false;
  ++threads_;
  return true;
}

void AgentRunner::EndThread() {
  MutexLock lock(live_mu_);
  --threads_;
  threads_cv_.notify_all();
}

namespace {

// One action of a run, and what became of it.
struct ActionState {
  ParsedAction action;
  int turn = 0;
  std::string status = "pending";  // pending | running | succeeded | failed | skipped
  Json result;
  std::string error;
  std::string execution_id;  // a tool's execution, a workflow's run, a sub-agent's run
  Clock::time_point started;
  int64_t duration_ms = 0;
  bool waited = true;  // its turn waits for it (not fire_and_forget)
  bool restored = false;
  trace::Span span;  // while it runs
};

bool Finished(const std::string& status) {
  return status == "succeeded" || status == "failed" || status == "skipped";
}

// What an action is, to tell whether a re-requested turn asked for the same one.
std::string Fingerprint(const ParsedAction& a) {
  return StableRunId(
      "",
      DumpJson(Json{
          {"type", a.type}, {"name", a.name}, {"parameters", a.parameters}, {"error", a.error}}));
}

// The state shared by the loop and the completions of its actions (which may outlive the run:
// a fire_and_forget tool still running when the run ends).
struct RunState {
  // Recursive: an action that fails to start finishes at once, on the thread that holds it.
  std::recursive_mutex mu;
  std::condition_variable_any changed;
  bool ended = false;  // the run has returned: completions only record their outcome
  std::map<std::string, ActionState> actions;  // by id
  std::vector<std::string> order;
  Json vars = Json::object();
  Json feeds = Json::object();         // id -> {id, type, interval, source}
  Json sub_sessions = Json::object();  // sub-agent -> the session its runs continue
  bool clear_context = false;          // clear_context ran this turn
  llm::Usage extra_usage;              // of llm actions
  int running = 0;
  Mutex sink_mu;
  AgentEventSink sink CORTEX_GUARDED_BY(sink_mu);
  // The journal.
  store::Store* store = nullptr;
  const std::atomic<bool>* stopping = nullptr;
  std::string run_id;
  int64_t next_seq = 1;
  int64_t elapsed_before_ms = 0;
  Clock::time_point started = Clock::now();
  std::string journal_error;  // the first write that failed: the run cannot go on safely
  std::string traceparent;    // what the actions' spans hang under

  void Emit(const std::string& type, Json data) {
    MutexLock lock(sink_mu);
    if (!sink) return;  // (under the lock: the run's end may just have cleared it)
    sink(AgentEvent{type, std::move(data)});
  }
  // Appends to the journal (mu held). While the server stops nothing is written: what was in
  // flight then is run again when the run resumes.
  void Journal(const std::string& kind, const Json& data) {
    if (!store || (stopping && stopping->load())) return;
    store::AgentJournalEntry e;
    e.run_id = run_id;
    e.seq = next_seq++;
    e.at_ms = elapsed_before_ms +
              std::chrono::duration_cast<milliseconds>(Clock::now() - started).count();
    e.kind = kind;
    e.data_json = DumpJson(data);
    if (Status st = store->AppendAgentJournal(e); !st.ok() && journal_error.empty()) {
      journal_error = "cannot record the run's journal: " + st.message();
    }
  }
};

Json ActionJson(const ActionState& s) {
  Json j = {{"id", s.action.id},     {"type", s.action.type}, {"mode", s.action.mode},
            {"name", s.action.name}, {"status", s.status},    {"turn", s.turn}};
  if (!s.execution_id.empty()) j["execution_id"] = s.execution_id;
  if (Finished(s.status)) {
    if (s.status == "succeeded" || !s.result.is_null()) j["result"] = s.result;
    if (!s.error.empty()) j["error"] = ToValidUtf8(s.error);
    j["duration_ms"] = s.duration_ms;
  }
  if (s.restored) j["restored"] = true;
  return j;
}

Json ClockNow() {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  char iso[32];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return {{"iso8601", iso},
          {"unix_ms", std::chrono::duration_cast<milliseconds>(now.time_since_epoch()).count()}};
}

bool IsClockAction(const std::string& name) {
  return name == "system_clock" || name == "get_datetime" || name == "get_system_time";
}

const std::set<std::string>& InternalActions() {
  static const std::set<std::string> names = {
      "system_clock",       "get_datetime",     "get_system_time",     "set_variable",
      "delete_variable",    "add_context_feed", "update_context_feed", "remove_context_feed",
      "list_context_feeds", "clear_context"};
  return names;
}

// The agent's internal_actions policy: {enabled (true), allowed_actions (all),
// blocked_actions (wins)}. "" when `name` may run, else why not.
std::string InternalPolicy(const Json& policy, const std::string& name) {
  if (!policy.is_object()) return "";
  if (auto e = policy.find("enabled"); e != policy.end() && e->is_boolean() && !e->get<bool>()) {
    return "internal actions are disabled for this agent (internal_actions.enabled: false)";
  }
  auto listed = [&](const char* key) {
    auto it = policy.find(key);
    if (it == policy.end() || !it->is_array()) return std::optional<bool>();
    for (const auto& v : *it) {
      if (v.is_string() && v.get<std::string>() == name) return std::optional<bool>(true);
    }
    return std::optional<bool>(false);
  };
  if (listed("blocked_actions").value_or(false)) {
    return "'" + name + "' is blocked by this agent's internal_actions.blocked_actions";
  }
  if (auto allowed = listed("allowed_actions"); allowed && !*allowed) {
    return "'" + name + "' is not in this agent's internal_actions.allowed_actions";
  }
  return "";
}

// A feed as the run keeps it: {id, type, interval (seconds), source{type, name, action, params}}.
Status NormalizeFeed(const Json& in, Json* out) {
  if (!in.is_object()) return InvalidArgumentError("a context feed is a JSON object");
  Json f = *out;
  if (!f.is_object()) f = Json::object();
  for (auto it = in.begin(); it != in.end(); ++it) f[it.key()] = it.value();
  if (!f.contains("id") || !f["id"].is_string() || f["id"].get<std::string>().empty()) {
    return InvalidArgumentError("a context feed needs an 'id' (a string)");
  }
  if (!f.contains("type")) f["type"] = "on_demand";
  if (!f["type"].is_string()) return InvalidArgumentError("a context feed's 'type' is a string");
  if (f.contains("interval") && !f["interval"].is_null() && !f["interval"].is_number()) {
    return InvalidArgumentError("a context feed's 'interval' is a number of seconds");
  }
  if (!f.contains("source") || !f["source"].is_object() || !f["source"].contains("type") ||
      !f["source"]["type"].is_string()) {
    return InvalidArgumentError(
        "a context feed needs a 'source' {type: internal|tool|relic|workflow, name, params}");
  }
  *out = std::move(f);
  return Status::Ok();
}

// What an internal action does, as its result; ApplyInternal makes it so (also when its outcome
// is replayed from the journal).
Result<Json> InternalResult(const std::string& name, const Json& params, const RunState& st) {
  const Json p = params.is_object() ? params : Json::object();
  auto key = [&](const char* k) -> Result<std::string> {
    auto it = p.find(k);
    if (it == p.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
      return InvalidArgumentError(name + " needs '" + k + "' (a string)");
    }
    return it->get<std::string>();
  };
  if (IsClockAction(name)) return ClockNow();
  if (name == "set_variable") {
    CORTEX_ASSIGN_OR_RETURN(auto k, key("key"));
    return Json{{"key", k}, {"value", p.value("value", Json())}};
  }
  if (name == "delete_variable") {
    CORTEX_ASSIGN_OR_RETURN(auto k, key("key"));
    return Json{{"key", k}, {"deleted", st.vars.contains(k)}};
  }
  if (name == "add_context_feed" || name == "update_context_feed") {
    CORTEX_ASSIGN_OR_RETURN(auto id, key("id"));
    Json feed;
    bool exists = st.feeds.contains(id);
    if (name == "add_context_feed" && exists) {
      return AlreadyExistsError("a context feed '" + id +
                                "' exists (update_context_feed changes it)");
    }
    if (name == "update_context_feed") {
      if (!exists) return NotFoundError("no context feed '" + id + "'");
      feed = st.feeds[id];
    }
    CORTEX_RETURN_IF_ERROR(NormalizeFeed(p, &feed));
    return Json{{"feed", feed}};
  }
  if (name == "remove_context_feed") {
    CORTEX_ASSIGN_OR_RETURN(auto id, key("id"));
    if (!st.feeds.contains(id)) return NotFoundError("no context feed '" + id + "'");
    return Json{{"removed", id}};
  }
  if (name == "list_context_feeds") {
    Json list = Json::array();
    for (const auto& [_, f] : st.feeds.items()) list.push_back(f);
    return Json{{"feeds", list}};
  }
  if (name == "clear_context") return Json{{"cleared", true}};
  std::string known;
  for (const auto& n : InternalActions()) known += (known.empty() ? "" : ", ") + n;
  return NotFoundError("unknown internal action '" + name + "' (" + known + ")");
}

void ApplyInternal(const std::string& name, const Json& r, RunState& st) {
  if (!r.is_object()) return;
  if (name == "set_variable" && r.contains("key"))
    st.vars[r["key"].get<std::string>()] = r["value"];
  if (name == "delete_variable" && r.contains("key")) st.vars.erase(r["key"].get<std::string>());
  if ((name == "add_context_feed" || name == "update_context_feed") && r.contains("feed")) {
    st.feeds[r["feed"].value("id", "")] = r["feed"];
  }
  if (name == "remove_context_feed" && r.contains("removed")) {
    st.feeds.erase(r["removed"].get<std::string>());
  }
  if (name == "clear_context") st.clear_context = true;
}

// Waits for a callback-style call (on the calling thread; mu not held).
template <class T>
class Awaited {
 public:
  std::function<void(T)> Callback() {
    auto s = shared_;
    return [s](T v) {
      MutexLock lock(s->mu);
      s->value.emplace(std::move(v));
      s->cv.notify_all();
    };
  }
  std::optional<T> Wait(milliseconds timeout) {
    MutexLock lock(shared_->mu);
    shared_->cv.wait_for(lock.native(), timeout,
                         [&]() CORTEX_REQUIRES(shared_->mu) { return shared_->value.has_value(); });
    return shared_->value;
  }

 private:
  struct Shared {
    Mutex mu;
    std::condition_variable cv;
    std::optional<T> value CORTEX_GUARDED_BY(mu);
  };
  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
};

// What an agent imported that the registry resolves, by kind and name (sorted, so the
// catalogue and the function list read the same on every run).
using Imports = std::map<registry::Kind, std::map<std::string, const registry::Entry*>>;
Imports ResolvedImports(const registry::Snapshot& snap, const registry::Entry& agent) {
  Imports imported;
  for (const auto& dep : agent.dependencies) {
    if (!dep.resolved() || !dep.kind) continue;
    if (const registry::Entry* target = snap.FindKey(dep.target)) {
      imported[*dep.kind][target->name()] = target;
    }
  }
  return imported;
}

// How the model is told what an import does: its description, else its summary.
std::string Describe(const registry::Entry* e) {
  const std::string& d = e->manifest().header.description;
  return d.empty() ? e->manifest().header.summary : d;
}

}  // namespace

std::string PersonaText(const registry::Entry& agent) {
  const registry::Manifest& manifest = agent.manifest();
  const auto& spec = *manifest.As<registry::AgentSpec>();
  const fs::path dir = fs::path(agent.file->path).parent_path();
  std::string persona = spec.persona.agent.empty() ? "" : ReadText(dir / spec.persona.agent);
  if (persona.empty()) persona = manifest.body;
  if (persona.empty()) persona = "You are " + manifest.name() + ". " + manifest.header.description;
  for (const auto& extra : {spec.persona.system, spec.persona.user, spec.persona.knowledge}) {
    if (extra && !extra->empty()) {
      std::string text = ReadText(dir / *extra);
      if (!text.empty()) persona += "\n\n" + text;
    }
  }
  return persona;
}

Result<std::vector<std::pair<std::string, std::string>>> AgentRunner::ChainOf(
    const registry::Entry& entry) const {
  const auto& spec = *entry.manifest().As<registry::AgentSpec>();
  std::vector<std::pair<std::string, std::string>> chain;
  if (!spec.cognitive_engine) {
    chain.emplace_back(options_.default_provider, "");
    return chain;
  }
  std::vector<const registry::ModelRef*> refs = {&spec.cognitive_engine->primary};
  if (spec.cognitive_engine->fallback) refs.push_back(&*spec.cognitive_engine->fallback);
  for (const registry::ModelRef* ref : refs) {
    if (!ref->endpoint && !ref->api_key_env) {
      chain.emplace_back(ref->provider, ref->model);
      continue;
    }
    // A manifest posted through the API names only allow-listed variables for its key: it
    // could otherwise send any of the server's secrets to a host of its choosing.
    if (ref->api_key_env && entry.file && registry_.WrittenByApi(entry.file->path) &&
        !registry::AllowListedEnv([](std::string_view) { return std::string(); },
                                  options_.allowed_env)(*ref->api_key_env)) {
      return FailedPreconditionError("agent '" + entry.name() +
                                     "' was posted through the API and names api_key_env '" +
                                     *ref->api_key_env + "', which is not in variables.allow_env");
    }
    CORTEX_ASSIGN_OR_RETURN(
        std::string derived,
        gateway_.Derive(ref->provider, ref->endpoint.value_or(""), ref->api_key_env));
    chain.emplace_back(std::move(derived), ref->model);
  }
  return chain;
}

Status AgentRunner::Check(const std::string& agent) const {
  auto snap = registry_.snapshot();
  const registry::Entry* entry = snap->Find(registry::Kind::kAgent, agent);
  if (!entry) return NotFoundError("no agent named '" + agent + "'");
  if (!entry->resolved()) {
    std::string problems;
    for (const auto& p : entry->problems) problems += (problems.empty() ? "" : "; ") + p;
    return FailedPreconditionError("agent '" + agent + "' cannot run: " + problems);
  }
  std::string why;
  CORTEX_ASSIGN_OR_RETURN(auto chain, ChainOf(*entry));
  for (const auto& [provider, model] : chain) {
    std::string bad = gateway_.Unusable(provider);
    if (bad.empty()) return Status::Ok();
    why += (why.empty() ? "" : "; ") + bad;
  }
  return FailedPreconditionError("agent '" + agent + "' has no usable model: " + why);
}

Result<std::string> AgentRunner::Launch(AgentRunRequest request,
                                        std::function<void(Result<AgentRunResult>)> done) {
  CORTEX_RETURN_IF_ERROR(Check(request.agent));
  if (request.run_id.empty()) request.run_id = NewRunId();
  if (!BeginThread()) return UnavailableError("the server is stopping");
  // Registered before the thread starts, so that the run can be cancelled (and is listed) at once.
  auto token = Register(request.run_id, request.agent, request.parent);
  std::string id = request.run_id;
  std::thread([this, request = std::move(request), done = std::move(done), token] {
    auto result = Run(request, nullptr, nullptr);
    Unregister(request.run_id);  // when it did not start
    if (done) done(std::move(result));
    EndThread();
  }).detach();
  return id;
}

int AgentRunner::ResumeInterrupted() {
  if (!store_) return 0;
  auto rows = store_->ListRunningAgentRuns();
  if (!rows.ok()) {
    log::Warn("agent", "cannot list the agent runs to resume: " + rows.status().message());
    return 0;
  }
  // A run that cannot go on ends here, with a record that says why.
  auto end_run = [this](const store::AgentRunRecord& row, const std::string& status,
                        const std::string& error) {
    store::AgentRunRecord r = row;
    r.status = status;
    r.reason = status == "failed" ? "error" : "interrupted";
    r.finished_ms = exec::NowMs();
    r.record_json = DumpJson(Json{{"run_id", row.id},
                                  {"agent", row.agent},
                                  {"session_id", row.session_id},
                                  {"status", r.status},
                                  {"reason", r.reason},
                                  {"error", error}});
    (void)store_->PutAgentRun(r);
  };
  int resumed = 0, lost = 0;
  for (const auto& row : *rows) {
    if (!row.parent.empty()) continue;  // its workflow step or agent run resumes it
    Json req = ParseJsonOrString(row.request_json);
    if (!req.is_object() || !req.contains("messages")) {
      end_run(row, "interrupted",
              "the server stopped during this run, which has no journal to resume from");
      ++lost;
      continue;
    }
    AgentRunRequest request;
    request.agent = row.agent;
    request.run_id = row.id;
    auto launched = Launch(request, [id = row.id](Result<AgentRunResult> r) {
      if (!r.ok()) log::Warn("agent", "run " + id + " could not resume: " + r.status().message());
    });
    if (launched.ok()) {
      ++resumed;
    } else {
      end_run(row, "failed", "could not resume: " + launched.status().message());
    }
  }
  // A sub-agent run resumes when its parent asks for it again; a parent that has ended never
  // will, so its children end too (after the pass above, which may have ended parents).
  for (const auto& row : *rows) {
    if (row.parent.empty()) continue;
    bool parent_goes_on = true;
    if (row.parent.rfind("agent:", 0) == 0) {
      auto parent = store_->GetAgentRun(row.parent.substr(6));
      parent_goes_on = !parent.ok() || (*parent && (*parent)->status == "running");
    } else if (row.parent.rfind("workflow:", 0) == 0) {
      std::string key = row.parent.substr(9);
      auto parent = store_->GetRun(key.substr(0, key.find('/')));
      parent_goes_on = !parent.ok() || (*parent && ((*parent)->status == "running" ||
                                                    (*parent)->status == "queued" ||
                                                    (*parent)->status == "paused"));
    }
    if (!parent_goes_on) {
      end_run(row, "interrupted", "its parent (" + row.parent + ") ended while it ran");
      ++lost;
    }
  }
  if (lost > 0) {
    log::Warn("agent", std::to_string(lost) +
                           " agent runs were running when the server stopped and cannot resume: "
                           "marked interrupted");
  }
  return resumed;
}

Result<AgentRunResult> AgentRunner::Run(const AgentRunRequest& request, const AgentEventSink& sink,
                                        const CancelToken* cancel) {
  // A run recorded already: its record, or it resumes.
  if (store_ && !request.run_id.empty()) {
    CORTEX_ASSIGN_OR_RETURN(auto row, store_->GetAgentRun(request.run_id));
    if (row) {
      if (row->agent != request.agent) {
        return AlreadyExistsError("agent run '" + request.run_id + "' is a run of '" + row->agent +
                                  "'");
      }
      if (row->status != "running")
        return AgentRunResult::FromJson(ParseJsonOrString(row->record_json));
      Json req = ParseJsonOrString(row->request_json);
      if (!req.is_object() || !req.contains("messages")) {
        return FailedPreconditionError("agent run '" + row->id + "' has no journal to resume from");
      }
      CORTEX_RETURN_IF_ERROR(Check(row->agent));
      Setup setup;
      setup.request.agent = row->agent;
      setup.request.run_id = row->id;
      setup.request.input = row->input;
      setup.request.parent = row->parent;
      setup.request.session_id = req.value("session_id", "");
      setup.request.extra_system = req.value("extra_system", "");
      setup.request.record = req.value("record", false);
      setup.request.depth = req.value("depth", 0);
      if (req.contains("token_budget") && req["token_budget"].is_number_integer()) {
        setup.request.token_budget = req["token_budget"].get<int64_t>();
      }
      setup.keep_session = req.value("keep_session", false);
      setup.session.id = row->session_id;
      setup.session.agent = row->agent;
      setup.session.created_ms = row->created_ms;
      setup.created_ms = row->created_ms;
      for (const auto& m : req["messages"]) {
        setup.initial.push_back({m.value("role", "user"), m.value("content", "")});
      }
      if (req.contains("variables") && req["variables"].is_object()) setup.vars = req["variables"];
      Restored restored;
      restored.resumed = true;
      CORTEX_ASSIGN_OR_RETURN(auto journal, store_->GetAgentJournal(row->id));
      for (const auto& e : journal) {
        Json data = ParseJsonOrString(e.data_json);
        restored.next_seq = e.seq + 1;
        restored.elapsed_ms = std::max(restored.elapsed_ms, e.at_ms);
        if (!data.is_object()) continue;
        if (e.kind == "turn") restored.turns[data.value("turn", 0)] = data;
        if (e.kind == "action") restored.outcomes[data.value("id", "")] = data;
      }
      return Execute(setup, restored, sink, cancel);
    }
  }
  CORTEX_RETURN_IF_ERROR(Check(request.agent));
  Setup setup;
  setup.request = request;
  if (setup.request.run_id.empty()) setup.request.run_id = NewRunId();
  // The session it continues (or a new one), read before anything is recorded.
  setup.keep_session = store_ && (request.keep_session || !request.session_id.empty());
  if (!request.session_id.empty()) {
    if (!store_) return FailedPreconditionError("sessions are not kept by this server");
    CORTEX_ASSIGN_OR_RETURN(auto found, store_->GetAgentSession(request.session_id));
    if (!found) return NotFoundError("no agent session '" + request.session_id + "'");
    if (found->agent != request.agent) {
      return FailedPreconditionError("session '" + request.session_id + "' belongs to agent '" +
                                     found->agent + "', not '" + request.agent + "'");
    }
    setup.session = std::move(*found);
  } else if (setup.keep_session) {
    setup.session.id = RandomId("as_");
    setup.session.agent = request.agent;
    setup.session.created_ms = exec::NowMs();
  }
  setup.created_ms = exec::NowMs();
  if (auto vars = ParseJson(setup.session.variables_json); vars.ok() && vars->is_object()) {
    setup.vars = *vars;
  }

  // --- The system prompt: persona, protocol, catalogue. ---
  auto snap = registry_.snapshot();
  const registry::Entry* entry = snap->Find(registry::Kind::kAgent, request.agent);
  const registry::Manifest& manifest = entry->manifest();
  const auto& spec = *manifest.As<registry::AgentSpec>();
  std::string system = PersonaText(*entry) + "\n\n";
  const bool native = spec.cognitive_engine && spec.cognitive_engine->protocol == "native";
  system += native ? kNativeGuide : kProtocolGuide;
  Imports imported = ResolvedImports(*snap, *entry);
  std::string catalogue = "\n\n# Your capabilities\n";
  if (imported.empty()) catalogue += "\nNone: answer from what you know.\n";
  auto section = [&](registry::Kind kind, const char* title) -> const auto& {
    const auto& list = imported[kind];
    if (!list.empty()) catalogue += std::string("\n## ") + title + "\n";
    return list;
  };
  for (const auto& [name, t] : section(registry::Kind::kTool, "Tools (type=\"tool\")")) {
    const auto* ts = t->manifest().As<registry::ToolSpec>();
    catalogue += "- " + name + ": " + Describe(t) +
                 "\n  parameters: " + DumpJson(ParametersSchema(ts->parameters)) + "\n";
  }
  for (const auto& [name, a] : section(registry::Kind::kAgent, "Agents (type=\"agent\")")) {
    catalogue += "- " + name + ": " + Describe(a) + "\n  parameters: {\"message\": \"...\"}\n";
  }
  for (const auto& [name, r] : section(registry::Kind::kRelic, "Relics (type=\"relic\")")) {
    const auto* rs = r->manifest().As<registry::RelicSpec>();
    catalogue += "- " + name + ": " + Describe(r) + "\n";
    if (rs->interface) {
      for (const auto& ep : rs->interface->endpoints) {
        catalogue += "  - operation " + ep.name + " (" + ep.method + " " + ep.path + ")" +
                     (ep.description.empty() ? "" : ": " + ep.description) + "\n";
      }
    }
  }
  for (const auto& [name, w] :
       section(registry::Kind::kWorkflow, "Workflows (type=\"workflow\")")) {
    const auto* ws = w->manifest().As<registry::WorkflowSpec>();
    catalogue += "- " + name + ": " + Describe(w) +
                 "\n  parameters: " + DumpJson(ParametersSchema(ws->trigger.parameters)) + "\n";
  }
  system += catalogue;
  if (!request.extra_system.empty()) {
    system += "\n\n# From the caller\n\n" + request.extra_system;
  }
  setup.initial = {{"system", system}};
  if (auto prior = ParseJson(setup.session.messages_json); prior.ok() && prior->is_array()) {
    for (const auto& m : *prior) {
      if (m.is_object() && m.contains("role") && m["role"].is_string() && m.contains("content") &&
          m["content"].is_string()) {
        setup.initial.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
      }
    }
  }
  for (const auto& m : request.history) setup.initial.push_back(m);
  setup.initial.push_back({"user", request.input});
  Restored fresh;
  return Execute(setup, fresh, sink, cancel);
}

Result<AgentRunResult> AgentRunner::Execute(Setup& setup, Restored& restored,
                                            const AgentEventSink& sink,
                                            const CancelToken* caller_cancel) {
  const AgentRunRequest& request = setup.request;
  auto snap = registry_.snapshot();
  const registry::Entry* entry = snap->Find(registry::Kind::kAgent, request.agent);
  if (!entry) return NotFoundError("no agent named '" + request.agent + "'");
  const auto& spec = *entry->manifest().As<registry::AgentSpec>();
  const Imports imported = ResolvedImports(*snap, *entry);
  // Read-only from here on (actions start on other threads).
  auto has = [&imported](registry::Kind kind, const std::string& name) {
    auto it = imported.find(kind);
    return it != imported.end() && it->second.count(name) > 0;
  };
  auto count = [&imported](registry::Kind kind) {
    auto it = imported.find(kind);
    return it == imported.end() ? size_t{0} : it->second.size();
  };
  const auto start = Clock::now();
  AgentRunResult result;
  result.run_id = request.run_id;
  result.agent = request.agent;
  result.session_id = setup.session.id;
  result.resumed = restored.resumed;
  trace::Span run_span;
  if (options_.tracer) {
    run_span = options_.tracer->Start("agent " + request.agent, request.traceparent);
    run_span.SetAttribute("cortex.agent", request.agent);
    run_span.SetAttribute("cortex.run_id", request.run_id);
  }
  auto state = std::make_shared<RunState>();
  state->traceparent =
      run_span.traceparent().empty() ? request.traceparent : run_span.traceparent();
  {
    MutexLock lock(state->sink_mu);
    state->sink = sink;
  }
  state->vars = setup.vars;
  state->store = store_;
  state->stopping = &stopping_;
  state->run_id = request.run_id;
  state->next_seq = restored.next_seq;
  state->elapsed_before_ms = restored.elapsed_ms;
  state->started = start;
  for (const auto& f : spec.context_feeds) {
    if (f.enabled.is_boolean() && !f.enabled.get<bool>()) continue;
    Json source = {{"type", f.source.type}, {"name", f.source.name}};
    if (!f.source.action.empty()) source["action"] = f.source.action;
    if (!f.source.params.is_null()) source["params"] = f.source.params;
    Json feed = {{"id", f.id}, {"type", f.type}, {"source", source}};
    if (f.interval) feed["interval"] = f.interval->seconds;
    state->feeds[f.id] = std::move(feed);
  }
  // Recorded before anything runs (a run that resumes is recorded already).
  store::AgentRunRecord run_row;
  run_row.id = result.run_id;
  run_row.agent = request.agent;
  run_row.session_id = setup.session.id;
  run_row.input = request.input;
  run_row.created_ms = setup.created_ms;
  run_row.parent = request.parent;
  {
    Json messages = Json::array();
    for (const auto& m : setup.initial) {
      messages.push_back({{"role", m.role}, {"content", ToValidUtf8(m.content)}});
    }
    Json req = {{"messages", std::move(messages)},
                {"variables", setup.vars},
                {"session_id", request.session_id},
                {"keep_session", setup.keep_session},
                {"extra_system", ToValidUtf8(request.extra_system)},
                {"record", request.record},
                {"depth", request.depth}};
    if (request.token_budget) req["token_budget"] = *request.token_budget;
    run_row.request_json = DumpJson(req);
  }
  if (store_ && !restored.resumed) {
    if (Status st = store_->PutAgentRun(run_row); !st.ok()) {
      return UnavailableError("cannot record the agent run: " + st.message());
    }
  }
  // Listed and cancellable while it runs; `cancel` is this run's own token.
  auto token = Register(result.run_id, request.agent, request.parent);
  struct Unlist {
    AgentRunner* runner;
    std::string id;
    ~Unlist() { runner->Unregister(id); }
  } unlist{this, result.run_id};
  CancelToken* cancel = token.get();
  auto cancelled = [&] {
    if (caller_cancel && caller_cancel->cancelled()) cancel->Cancel();
    return cancel->cancelled();
  };

  std::vector<llm::Message> messages = setup.initial;
  const size_t initial_count = messages.size();
  const std::string base_system = messages.empty() ? "" : messages.front().content;
  CORTEX_ASSIGN_OR_RETURN(const auto chain, ChainOf(*entry));
  llm::ChatRequest chat;
  chat.run_id = result.run_id;
  if (spec.cognitive_engine) {
    const auto& p = spec.cognitive_engine->parameters;
    chat.temperature = p.temperature;
    chat.top_p = p.top_p;
    chat.max_tokens = p.max_tokens;
    if (p.extra_params.is_object()) chat.extra = p.extra_params;
  }
  // Native function calling: the catalogue as function definitions.
  const bool native = spec.cognitive_engine && spec.cognitive_engine->protocol == "native";
  Functions functions;
  if (native) {
    auto add = [&](const std::string& fname, Function f, std::string desc, Json params) {
      functions[fname] = std::move(f);
      chat.tools.push_back({fname, std::move(desc), std::move(params)});
    };
    const Json free_object = {{"type", "object"}, {"additionalProperties", true}};
    for (const auto& [kind, entries] : imported) {
      for (const auto& [name, t] : entries) {
        switch (kind) {
          case registry::Kind::kTool:
            add(FunctionName("", name), {"tool", name, ""}, Describe(t),
                ParametersSchema(t->manifest().As<registry::ToolSpec>()->parameters));
            break;
          case registry::Kind::kAgent:
            add(FunctionName("agent__", name), {"agent", name, ""},
                "Ask the agent " + name + ": " + Describe(t),
                {{"type", "object"},
                 {"properties", {{"message", {{"type", "string"}}}}},
                 {"required", {"message"}}});
            break;
          case registry::Kind::kWorkflow:
            add(FunctionName("workflow__", name), {"workflow", name, ""}, Describe(t),
                ParametersSchema(t->manifest().As<registry::WorkflowSpec>()->trigger.parameters));
            break;
          case registry::Kind::kRelic:
            if (const auto& iface = t->manifest().As<registry::RelicSpec>()->interface) {
              for (const auto& ep : iface->endpoints) {
                add(FunctionName("relic__", name + "__" + ep.name), {"relic", name, ep.name},
                    name + ": " +
                        (ep.description.empty() ? ep.method + " " + ep.path : ep.description),
                    free_object);
              }
            }
            break;
          default:
            break;
        }
      }
    }
    const Json key = {{"type", "string"}};
    const std::vector<std::pair<std::string, Json>> internal = {
        {"system_clock", Json::object()},
        {"set_variable", {{"key", key}, {"value", Json::object()}}},
        {"delete_variable", {{"key", key}}},
        {"add_context_feed",
         {{"id", key}, {"type", key}, {"interval", {{"type", "number"}}}, {"source", free_object}}},
        {"update_context_feed", {{"id", key}}},
        {"remove_context_feed", {{"id", key}}},
        {"list_context_feeds", Json::object()},
        {"clear_context", Json::object()},
    };
    for (const auto& [name, props] : internal) {
      if (!InternalPolicy(spec.internal_actions, name).empty()) continue;
      add(FunctionName("internal__", name), {"internal", name, ""}, "internal action " + name,
          {{"type", "object"}, {"properties", props}});
    }
  }
  const int cap = spec.iteration_cap > 0
                      ? static_cast<int>(std::min<int64_t>(spec.iteration_cap, 1000))
                      : options_.max_iterations;
  const auto deadline =
      start + std::max(milliseconds(1), options_.max_wall - milliseconds(restored.elapsed_ms));
  std::ofstream recording;
  if (request.record && !options_.recordings_dir.empty()) {
    std::error_code ec;
    fs::create_directories(options_.recordings_dir, ec);
    result.recording = options_.recordings_dir + "/" + result.run_id + ".jsonl";
    recording.open(result.recording,
                   std::ios::binary | (restored.resumed ? std::ios::app : std::ios::trunc));
  }
  state->Emit("run",
              {{"run_id", result.run_id}, {"agent", request.agent}, {"resumed", restored.resumed}});

  // Records an action's outcome (journal first), then acts on it.
  auto finish = [state](const std::string& id, const std::string& status, Json out,
                        const std::string& error) {
    ActionState& s = state->actions[id];
    s.status = status;
    s.result = std::move(out);
    s.error = error;
    if (status != "succeeded") s.span.SetError(error.empty() ? status : error);
    s.span.End();
    s.duration_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - s.started).count();
    if (!s.restored) {
      Json entry = {{"id", id},
                    {"turn", s.turn},
                    {"status", status},
                    {"result", s.result},
                    {"error", ToValidUtf8(error)},
                    {"execution_id", s.execution_id},
                    {"duration_ms", s.duration_ms},
                    {"fingerprint", Fingerprint(s.action)}};
      state->Journal("action", entry);
    }
    if (status == "succeeded") {
      if (!s.action.output_key.empty()) state->vars[s.action.output_key] = s.result;
      state->vars[s.action.id] = s.result;
      if (s.action.type == "internal") ApplyInternal(s.action.name, s.result, *state);
      if (s.action.type == "agent" && s.result.is_object() && s.result.contains("session_id")) {
        state->sub_sessions[s.action.name] = s.result["session_id"];
      }
    }
    state->Emit("action_result", ActionJson(s));
  };
  // A completion from another thread: record it, and wake the starter.
  auto complete = [state, finish](const std::string& id, const std::string& status, Json out,
                                  const std::string& error) {
    std::lock_guard lock(state->mu);
    --state->running;
    if (state->stopping && state->stopping->load() && !state->ended) {
      // The server stops: the outcome is not recorded, and the action runs again on resume.
      ActionState& s = state->actions[id];
      s.status = "interrupted";
      s.span.SetError("interrupted: the server stopped");
      s.span.End();
    } else {
      finish(id, status, std::move(out), error);
    }
    state->changed.notify_all();
  };
  // The completion of a call that answers a value or why it failed.
  auto complete_with = [complete](const std::string& id) {
    return [complete, id](Result<Json> r) {
      if (r.ok()) {
        complete(id, "succeeded", *r, "");
      } else {
        complete(id, "failed", Json(), r.status().message());
      }
    };
  };
  const milliseconds action_timeout = options_.action_timeout;
  // Starts an action whose dependencies have finished (state->mu held).
  auto start_action = [&, state](const std::string& id) {
    ActionState& s = state->actions[id];
    s.started = Clock::now();
    ParsedAction& a = s.action;
    if (!a.error.empty()) {
      finish(id, "failed", Json(), a.error);
      return;
    }
    Json params = SubstituteVariables(a.parameters, state->vars);
    const std::string key = result.run_id + ":" + std::to_string(s.turn) + ":" + a.id;
    if (options_.tracer) {
      s.span = options_.tracer->Start("action " + a.type + " " + a.name, state->traceparent);
      s.span.SetAttribute("cortex.action_id", a.id);
      s.span.SetAttribute("cortex.turn", int64_t{s.turn});
    }
    const std::string action_trace =
        s.span.traceparent().empty() ? state->traceparent : s.span.traceparent();
    auto not_imported = [&](const char* what, size_t n) {
      return NotFoundError("'" + a.name + "' is not one of this agent's " + what + " (" +
                           std::to_string(n) + " imported)");
    };
    Status started;
    s.status = "running";
    ++state->running;
    if (a.type == "tool") {
      if (!has(registry::Kind::kTool, a.name)) {
        started = not_imported("tools", count(registry::Kind::kTool));
      } else {
        ActionDispatcher::ToolCall call;
        call.tool = a.name;
        call.parameters = params;
        call.execution_id = exec::NewExecutionId();
        call.idempotency_key = key;
        call.timeout = action_timeout;
        call.traceparent = action_trace;
        s.execution_id = call.execution_id;
        started = dispatcher_.StartTool(call, [complete, id](const store::ExecutionRecord& r) {
          std::string status, error;
          Json out;
          OutcomeOfRecord(r, &status, &out, &error);
          complete(id, status, std::move(out), error);
        });
      }
    } else if (a.type == "relic") {
      std::string relic = a.name, operation;
      if (size_t dot = relic.find('.'); dot != std::string::npos) {
        operation = relic.substr(dot + 1);
        relic = relic.substr(0, dot);
      }
      if (params.is_object() && params.contains("operation") && params["operation"].is_string()) {
        operation = params["operation"].get<std::string>();
        params.erase("operation");
      }
      if (!has(registry::Kind::kRelic, relic)) {
        started = NotFoundError("'" + relic + "' is not one of this agent's relics");
      } else {
        ActionDispatcher::RelicCall call;
        call.relic = relic;
        call.operation = operation;
        call.parameters = params;
        call.timeout = std::min(action_timeout, milliseconds(60000));
        call.traceparent = action_trace;
        started = dispatcher_.StartRelicCall(call, complete_with(id));
      }
    } else if (a.type == "workflow") {
      if (!has(registry::Kind::kWorkflow, a.name)) {
        started = not_imported("workflows", count(registry::Kind::kWorkflow));
      } else {
        ActionDispatcher::WorkflowCall call;
        call.workflow = a.name;
        call.input = params.is_object() ? params : Json::object();
        call.run_id = StableRunId("wf_", key);
        call.timeout = action_timeout;
        call.traceparent = action_trace;
        s.execution_id = call.run_id;
        started = dispatcher_.StartWorkflow(call, complete_with(id));
      }
    } else if (a.type == "agent") {
      if (!has(registry::Kind::kAgent, a.name)) {
        started = not_imported("agents", count(registry::Kind::kAgent));
      } else if (request.depth + 1 > options_.max_depth) {
        started = FailedPreconditionError(
            "sub-agents may nest " + std::to_string(options_.max_depth) +
            " deep (llm.max_agent_depth); this one would be " + std::to_string(request.depth + 1));
      } else {
        AgentRunRequest sub;
        sub.agent = a.name;
        sub.input =
            InputText(params.is_object() && params.size() == 1 && params.begin().value().is_string()
                          ? params.begin().value()
                          : params);
        sub.run_id = StableRunId("ar_", key);
        sub.parent = "agent:" + result.run_id;
        sub.depth = request.depth + 1;
        sub.keep_session = true;
        sub.traceparent = action_trace;
        if (auto it = state->sub_sessions.find(a.name); it != state->sub_sessions.end()) {
          sub.session_id = it->get<std::string>();
        }
        s.execution_id = sub.run_id;
        if (sub.input.empty()) {
          started = InvalidArgumentError("an agent action needs a message: {\"message\": \"...\"}");
        } else {
          auto launched = Launch(sub, [complete, id](Result<AgentRunResult> r) {
            if (!r.ok()) {
              complete(id, "failed", Json(), r.status().message());
              return;
            }
            Json out = {{"response", r->response}, {"run_id", r->run_id}};
            if (!r->session_id.empty()) out["session_id"] = r->session_id;
            if (r->status == "succeeded") {
              complete(id, "succeeded", std::move(out), "");
            } else {
              complete(id, "failed", std::move(out),
                       "the agent's run ended " + r->status + " (" + r->reason + ")" +
                           (r->error.empty() ? "" : ": " + r->error));
            }
          });
          started = launched.ok() ? Status::Ok() : launched.status();
        }
      }
    } else if (a.type == "llm") {
      std::string prompt;
      if (params.is_object()) {
        for (const char* k : {"prompt", "message", "input", "text"}) {
          if (params.contains(k) && params[k].is_string()) {
            prompt = params[k].get<std::string>();
            break;
          }
        }
      } else if (params.is_string()) {
        prompt = params.get<std::string>();
      }
      if (prompt.empty()) {
        started = InvalidArgumentError("an llm action needs a prompt: {\"prompt\": \"...\"}");
      } else if (!BeginThread()) {
        started = UnavailableError("the server is stopping");
      } else {
        llm::ChatRequest sub = chat;
        sub.messages.clear();
        if (params.is_object() && params.contains("system") && params["system"].is_string()) {
          sub.messages.push_back({"system", params["system"].get<std::string>()});
        }
        sub.messages.push_back({"user", prompt});
        sub.turn = 0;
        std::thread([this, sub, chain, complete, id, state, token] {
          auto reply = gateway_.Chat(chain, sub, nullptr, token.get());
          if (reply.ok()) {
            {
              std::lock_guard lock(state->mu);
              state->extra_usage += reply->usage;
            }
            complete(id, "succeeded", Json{{"text", reply->content}, {"model", reply->model}}, "");
          } else {
            complete(id, "failed", Json(), reply.status().message());
          }
          EndThread();
        }).detach();
      }
    } else if (a.type == "internal") {
      --state->running;
      if (std::string why = InternalPolicy(spec.internal_actions, a.name); !why.empty()) {
        finish(id, "failed", Json(), why);
      } else if (auto r = InternalResult(a.name, params, *state); r.ok()) {
        finish(id, "succeeded", *r, "");
      } else {
        finish(id, "failed", Json(), r.status().message());
      }
      return;
    } else {
      started = InvalidArgumentError("unknown action type '" + a.type +
                                     "' (tool, agent, relic, workflow, llm, internal)");
    }
    if (!started.ok()) {
      --state->running;
      finish(id, "failed", Json(), started.message());
    }
  };
  // Starts every pending action whose dependencies have finished, within max_parallel; skips
  // those whose dependencies failed.
  auto pump = [&, state]() {
    if (stopping_) return;  // what has not started runs when the run resumes
    bool progress = true;
    while (progress) {
      progress = false;
      for (const auto& id : state->order) {
        ActionState& s = state->actions[id];
        if (s.status != "pending") continue;
        std::string blocked_by;
        bool ready = true;
        for (const auto& dep : s.action.depends_on) {
          auto it = state->actions.find(dep);
          if (it == state->actions.end() || !Finished(it->second.status)) {
            ready = false;
            break;
          }
          if (it->second.status != "succeeded") blocked_by = dep;
        }
        if (!ready) continue;
        if (!blocked_by.empty()) {
          s.started = Clock::now();
          finish(id, "skipped", Json(),
                 "skipped: the action it depends on, '" + blocked_by + "', did not succeed");
          progress = true;
          continue;
        }
        if (state->running >= std::max(1, options_.max_parallel)) return;
        start_action(id);
        progress = true;
      }
    }
  };
  // Cancels what runs (once): tools, workflows, sub-agents.
  bool stopped_actions = false;
  auto stop_actions = [&] {
    if (stopped_actions) return;
    stopped_actions = true;
    std::lock_guard lock(state->mu);
    for (const auto& id : state->order) {
      const ActionState& s = state->actions[id];
      if (s.status != "running" || s.execution_id.empty()) continue;
      if (s.action.type == "tool") dispatcher_.CancelTool(s.execution_id);
      if (s.action.type == "workflow") dispatcher_.CancelWorkflow(s.execution_id);
      if (s.action.type == "agent") Cancel(s.execution_id);
    }
  };
  // Completions arrive on other threads, which must not call back into the dispatcher: this
  // thread starts the actions that were waiting for them, while the loop's own thread reads the
  // model's stream.
  bool stream_open = false;  // with dispatch_at_message_end: hold actions while it is
  std::thread starter([&, state] {
    std::unique_lock lock(state->mu);
    while (!state->ended) {
      if (!(options_.dispatch_at_message_end && stream_open)) pump();
      state->changed.wait_for(lock, milliseconds(200));
    }
  });
  // However this ends (an exception included), the starter stops before the locals it uses go.
  struct StopStarter {
    std::shared_ptr<RunState> state;
    std::thread& thread;
    ~StopStarter() {
      {
        std::lock_guard lock(state->mu);
        state->ended = true;
        state->changed.notify_all();
      }
      if (thread.joinable()) thread.join();
    }
  } stop_starter{state, starter};

  // The context feeds' values, refreshed before each model call when due.
  std::map<std::string, std::pair<std::string, Clock::time_point>> feed_values;
  auto refresh_feeds = [&](int turn) {
    Json feeds;
    {
      std::lock_guard lock(state->mu);
      feeds = state->feeds;
    }
    std::string block;
    for (const auto& [id, f] : feeds.items()) {
      auto known = feed_values.find(id);
      double interval = f.value("interval", 0.0);
      bool due = known == feed_values.end() || f.value("type", "") != "periodic" ||
                 Clock::now() - known->second.second >= milliseconds(int64_t(interval * 1000));
      if (due) {
        const Json& src = f["source"];
        std::string type = src.value("type", ""), name = src.value("name", "");
        if (name.empty()) name = src.value("action", "");
        Json params =
            src.contains("params") && src["params"].is_object() ? src["params"] : Json::object();
        std::string value;
        const milliseconds wait = std::min(action_timeout, milliseconds(30000));
        if (type == "internal") {
          value = IsClockAction(name) ? DumpJson(ClockNow())
                                      : "unavailable: no internal feed '" + name +
                                            "' (system_clock, get_datetime, get_system_time)";
        } else if (type == "tool" && has(registry::Kind::kTool, name)) {
          Awaited<store::ExecutionRecord> got;
          ActionDispatcher::ToolCall call;
          call.tool = name;
          call.parameters = params;
          call.execution_id = exec::NewExecutionId();
          call.idempotency_key = result.run_id + ":feed:" + id + ":" + std::to_string(turn);
          call.timeout = wait;
          Status st = dispatcher_.StartTool(call, got.Callback());
          auto r = st.ok() ? got.Wait(wait + milliseconds(5000)) : std::nullopt;
          if (!st.ok()) {
            value = "unavailable: " + st.message();
          } else if (!r) {
            value = "unavailable: the tool did not answer in time";
          } else {
            std::string status, error;
            Json out;
            OutcomeOfRecord(*r, &status, &out, &error);
            value = status == "succeeded" ? AsText(out) : "unavailable: " + error;
          }
        } else if (type == "relic" && has(registry::Kind::kRelic, name)) {
          Awaited<Result<Json>> got;
          ActionDispatcher::RelicCall call;
          call.relic = name;
          call.operation = src.value("action", "");
          call.parameters = params;
          call.timeout = wait;
          Status st = dispatcher_.StartRelicCall(call, got.Callback());
          auto r = st.ok() ? got.Wait(wait + milliseconds(5000)) : std::nullopt;
          value = !st.ok()  ? "unavailable: " + st.message()
                  : !r      ? "unavailable: the relic did not answer in time"
                  : r->ok() ? AsText(**r)
                            : "unavailable: " + r->status().message();
        } else if (type == "tool" || type == "relic") {
          value = "unavailable: '" + name + "' is not one of this agent's " + type + "s";
        } else {
          value = "unavailable: feeds from '" + type +
                  "' sources are not supported (internal, tool, relic)";
        }
        if (value.size() > options_.observation_bytes) {
          value.resize(options_.observation_bytes);
          value = ToValidUtf8(value) + "\n[truncated]";
        }
        feed_values[id] = {ToValidUtf8(value), Clock::now()};
        state->Emit("context_feed", {{"id", id}, {"value", feed_values[id].first}});
      }
      block += "<context_feed id=\"" + id + "\">" + feed_values[id].first + "</context_feed>\n";
    }
    for (auto it = feed_values.begin(); it != feed_values.end();) {
      it = feeds.contains(it->first) ? std::next(it) : feed_values.erase(it);
    }
    if (!messages.empty()) {
      messages.front().content =
          block.empty() ? base_system : base_system + "\n\n# Context feeds\n\n" + block;
    }
  };

  std::string last_response;
  result.status = "failed";
  result.reason = "iteration_cap";
  bool interrupted = false;
  for (int turn = 1; turn <= cap; ++turn) {
    if (cancelled()) {
      result.status = "cancelled";
      result.reason = "cancelled";
      break;
    }
    if (Clock::now() >= deadline) {
      result.reason = "time_limit";
      result.error = "the run reached its time limit (" +
                     std::to_string(options_.max_wall.count() / 1000) + " s)";
      break;
    }
    {
      std::lock_guard lock(state->mu);
      if (!state->journal_error.empty()) {
        result.reason = "error";
        result.error = state->journal_error;
        break;
      }
    }
    result.iterations = turn;
    ProtocolParser parser;
    std::vector<std::string> turn_actions;
    std::vector<std::pair<std::string, bool>> responses;  // text, final
    std::string response_text, outside_text;
    // An action the model asked for (a protocol <action>, or a native function call): announced,
    // restored from the journal when its outcome is there, else started when it may.
    auto add_action = [&](const ProtocolEvent& e) {
      std::lock_guard lock(state->mu);
      ParsedAction a = *e.action;  // e is announced below as parsed
      if (state->actions.count(a.id) && a.id.starts_with("action-")) {
        a.id = "t" + std::to_string(turn) + "-" + a.id;  // default ids, unique per run
      }
      if (state->actions.count(a.id)) {
        a.error = "an action with id '" + a.id + "' ran already in this run: ids are unique";
        a.id = "t" + std::to_string(turn) + "-" + a.id;
      }
      ActionState s;
      s.action = a;
      s.turn = turn;
      s.waited = a.mode != "fire_and_forget";
      Json announced = e.ToJson();
      announced["id"] = a.id;
      announced.erase("event");
      announced["turn"] = turn;
      state->Emit("action", std::move(announced));
      // Its outcome is in the journal: it is not run again.
      auto done = restored.outcomes.find(a.id);
      bool restore = done != restored.outcomes.end() &&
                     done->second.value("fingerprint", "") == Fingerprint(a) &&
                     Finished(done->second.value("status", ""));
      state->actions[a.id] = std::move(s);
      state->order.push_back(a.id);
      turn_actions.push_back(a.id);
      if (restore) {
        ActionState& r = state->actions[a.id];
        r.restored = true;
        r.started = Clock::now();
        r.execution_id = done->second.value("execution_id", "");
        finish(a.id, done->second.value("status", ""), done->second.value("result", Json()),
               done->second.value("error", ""));
        state->actions[a.id].duration_ms = done->second.value("duration_ms", int64_t{0});
      }
      if (!options_.dispatch_at_message_end) pump();
    };
    // Native function calling: a call becomes an action; `call_ids` keeps the model's ids.
    std::vector<std::pair<std::string, std::string>> call_ids;  // call id, action id
    auto add_call = [&](const llm::ToolCall& call) {
      ProtocolEvent e;
      e.kind = EventKind::kAction;
      e.action = ActionOfCall(call, functions, static_cast<int>(call_ids.size()) + 1, turn);
      call_ids.emplace_back(call.id, e.action->id);
      size_t before = turn_actions.size();
      add_action(e);
      if (turn_actions.size() > before) call_ids.back().second = turn_actions.back();
    };
    auto handle = [&](std::vector<ProtocolEvent>& events) {
      for (auto& e : events) {
        switch (e.kind) {
          case EventKind::kThought:
            state->Emit("thought", {{"text", ToValidUtf8(e.text)}});
            break;
          case EventKind::kText:
            outside_text += e.text;
            break;
          case EventKind::kResponse:
            response_text += e.text;
            break;
          case EventKind::kResponseEnd:
            responses.emplace_back(response_text, e.final);
            response_text.clear();
            break;
          case EventKind::kContextFeed:
            break;
          case EventKind::kAction:
            add_action(e);
            break;
        }
      }
      events.clear();
    };
    std::vector<ProtocolEvent> events;
    {
      std::lock_guard lock(state->mu);
      stream_open = true;
    }
    auto recorded = restored.turns.find(turn);
    auto reply = [&]() -> Result<llm::ChatResult> {
      if (recorded != restored.turns.end()) {
        // Received before the restart: not requested again.
        const Json& t = recorded->second;
        llm::ChatResult r;
        r.content = t.value("content", "");
        r.provider = t.value("provider", "");
        r.model = t.value("model", "");
        if (t.contains("usage") && t["usage"].is_object()) {
          r.usage.input_tokens = t["usage"].value("input_tokens", int64_t{0});
          r.usage.output_tokens = t["usage"].value("output_tokens", int64_t{0});
          r.usage.cost = t["usage"].value("cost", 0.0);
        }
        if (auto calls = t.find("tool_calls"); calls != t.end() && calls->is_array()) {
          for (const auto& c : *calls) {
            r.tool_calls.push_back(
                {c.value("id", ""), c.value("name", ""), c.value("arguments", "")});
          }
        }
        if (native) {
          for (const auto& c : r.tool_calls) add_call(c);
        } else {
          parser.Feed(r.content, &events);
          handle(events);
        }
        return r;
      }
      refresh_feeds(turn);
      chat.messages = messages;
      chat.turn = turn - 1;
      if (native) chat.on_tool_call = add_call;
      return gateway_.Chat(
          chain, chat,
          [&](std::string_view text) {
            if (!native) {
              parser.Feed(text, &events);
              handle(events);
            }
            return !cancelled();
          },
          cancel);
    }();
    chat.on_tool_call = nullptr;
    if (!reply.ok()) {
      if (stopping_) {
        interrupted = true;
      } else if (cancelled()) {
        result.status = "cancelled";
        result.reason = "cancelled";
      } else {
        result.reason = "error";
        result.error = reply.status().message();
        state->Emit("error", {{"message", ToValidUtf8(result.error)}});
      }
      // What this turn started still ends in the records: the run waits for it (not while the
      // server stops: then it runs again when the run resumes).
      if (cancelled()) stop_actions();
      std::unique_lock lock(state->mu);
      state->changed.wait_until(lock, deadline,
                                [&] { return state->running == 0 || stopping_.load(); });
      break;
    }
    Json calls_json = Json::array();
    for (const auto& c : reply->tool_calls) {
      calls_json.push_back({{"id", ToValidUtf8(c.id)},
                            {"name", ToValidUtf8(c.name)},
                            {"arguments", ToValidUtf8(c.arguments)}});
    }
    if (native) {
      // The reply's text: the answer when it calls nothing, else what it said on the way.
      if (reply->tool_calls.empty()) {
        responses.emplace_back(reply->content, true);
      } else if (!reply->content.empty()) {
        state->Emit("thought", {{"text", ToValidUtf8(reply->content)}});
      }
    } else {
      parser.Finish(&events);
      handle(events);
    }
    {
      std::lock_guard lock(state->mu);
      stream_open = false;
      if (recorded == restored.turns.end()) {
        // Recorded before the loop acts on the end of the turn.
        Json entry = {{"turn", turn},
                      {"content", ToValidUtf8(reply->content)},
                      {"provider", reply->provider},
                      {"model", reply->model},
                      {"usage",
                       {{"input_tokens", reply->usage.input_tokens},
                        {"output_tokens", reply->usage.output_tokens},
                        {"cost", reply->usage.cost}}}};
        if (!calls_json.empty()) entry["tool_calls"] = calls_json;
        state->Journal("turn", entry);
      }
    }
    if (!response_text.empty()) responses.emplace_back(response_text, true);
    result.usage += reply->usage;
    if (recording.is_open() && recorded == restored.turns.end()) {
      Json line = {{"turn", turn},
                   {"model", reply->model},
                   {"content", ToValidUtf8(reply->content)},
                   {"usage",
                    {{"input_tokens", reply->usage.input_tokens},
                     {"output_tokens", reply->usage.output_tokens}}}};
      if (!calls_json.empty()) line["tool_calls"] = calls_json;
      recording << DumpJson(line) << "\n";
      recording.flush();
    }
    state->Emit("usage", {{"turn", turn},
                          {"provider", reply->provider},
                          {"model", reply->model},
                          {"input_tokens", reply->usage.input_tokens},
                          {"output_tokens", reply->usage.output_tokens},
                          {"latency_ms", reply->latency_ms},
                          {"restored", recorded != restored.turns.end()}});

    // The reply has ended: wait for this turn's actions (not fire_and_forget), starting the
    // ones that wait for others as those finish; what can never start is skipped.
    {
      std::unique_lock lock(state->mu);
      for (;;) {
        pump();
        bool waiting = false;
        for (const auto& id : turn_actions) {
          const ActionState& s = state->actions[id];
          if (s.waited && !Finished(s.status)) waiting = true;
        }
        if (!waiting || cancelled()) break;
        if (state->running == 0) {
          // Nothing runs and something still waits: its dependencies never come.
          for (const auto& id : turn_actions) {
            ActionState& s = state->actions[id];
            if (s.status != "pending") continue;
            s.started = Clock::now();
            finish(id, "skipped", Json(),
                   "skipped: it depends on an action that never ran (an unknown id, or a "
                   "cycle)");
          }
          continue;
        }
        if (state->changed.wait_until(lock, std::min(deadline, Clock::now() + milliseconds(100))) ==
                std::cv_status::timeout &&
            Clock::now() >= deadline) {
          break;
        }
      }
    }
    if (cancelled()) {
      if (stopping_) {
        interrupted = true;
      } else {
        result.status = "cancelled";
        result.reason = "cancelled";
      }
      stop_actions();
      break;
    }

    bool final = false;
    std::string shown;
    {
      std::lock_guard lock(state->mu);
      if (state->clear_context) {
        // clear_context: the conversation starts again from the system prompt and the input.
        messages.resize(std::min(messages.size(), initial_count));
        state->clear_context = false;
      }
      for (const auto& [text, is_final] : responses) {
        std::string substituted = SubstituteVariables(text, state->vars);
        state->Emit("response", {{"text", ToValidUtf8(substituted)}, {"final", is_final}});
        shown += (shown.empty() ? "" : "\n\n") + substituted;
        final = final || is_final;
      }
    }
    {
      llm::Message said{"assistant", reply->content, {}, ""};
      if (native) said.tool_calls = reply->tool_calls;
      messages.push_back(std::move(said));
    }
    if (!shown.empty()) last_response = shown;
    if (!native && responses.empty() && turn_actions.empty()) {
      // Plain prose, no protocol: that is the answer.
      std::string text = outside_text;
      text.erase(0, text.find_first_not_of(" \t\r\n"));
      while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
        text.pop_back();
      }
      last_response = text;
      state->Emit("response", {{"text", ToValidUtf8(text)}, {"final", true}});
      final = true;
    }
    if (final) {
      result.status = "succeeded";
      result.reason = "final";
      break;
    }
    int64_t used = result.usage.input_tokens + result.usage.output_tokens;
    {
      std::lock_guard lock(state->mu);
      used += state->extra_usage.input_tokens + state->extra_usage.output_tokens;
    }
    if (request.token_budget && used >= *request.token_budget) {
      result.reason = "token_budget";
      result.error =
          "the run used its token budget (" + std::to_string(*request.token_budget) + " tokens)";
      break;
    }
    // The observations: one labelled block per action of this turn (native: one tool message
    // per call).
    std::string obs;
    {
      std::lock_guard lock(state->mu);
      std::map<std::string, std::string> bodies;
      for (const auto& id : turn_actions) {
        const ActionState& s = state->actions[id];
        std::string body;
        if (s.status == "succeeded") {
          body = DumpJson(s.result);
        } else if (Finished(s.status)) {
          body = "error: " + s.error;
        } else if (!s.waited) {
          body = "started (fire_and_forget: its result is not awaited)";
        } else {
          body = "still running when the turn ended";
        }
        if (body.size() > options_.observation_bytes) {
          size_t total = body.size();
          body.resize(options_.observation_bytes);
          body = ToValidUtf8(body) + "\n[truncated: " + std::to_string(options_.observation_bytes) +
                 " of " + std::to_string(total) + " bytes shown]";
        }
        obs += "<observation id=\"" + s.action.id + "\" name=\"" + s.action.name + "\" status=\"" +
               (Finished(s.status) ? s.status : std::string("running")) + "\">\n" +
               ToValidUtf8(body) + "\n</observation>\n";
        bodies[id] =
            (Finished(s.status) ? s.status : std::string("running")) + ": " + ToValidUtf8(body);
      }
      if (native) {
        for (const auto& [call_id, action_id] : call_ids) {
          messages.push_back({"tool", bodies[action_id], {}, call_id});
        }
      }
    }
    if (!native) messages.push_back({"user", obs.empty() ? std::string("Continue.") : obs});
  }
  if (result.reason == "iteration_cap" && result.status != "succeeded" && !interrupted) {
    result.error =
        "the run reached its iteration cap (" + std::to_string(cap) + ") without a final response";
  }
  result.response = last_response;
  Json vars_after;
  {
    std::lock_guard lock(state->mu);
    for (const auto& id : state->order) result.actions.push_back(ActionJson(state->actions[id]));
    result.usage += state->extra_usage;
    state->ended = true;  // nothing more starts
    vars_after = state->vars;
  }
  result.duration_ms =
      restored.elapsed_ms + std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
  if (interrupted || (stopping_ && result.status == "cancelled")) {
    // The server stops: the run stays recorded as running, and resumes at the next start.
    result.status = "interrupted";
    result.reason = "interrupted";
    result.error = "the server stopped during the run; it resumes when the server starts again";
    run_span.SetAttribute("cortex.status", result.status);
    run_span.SetError(result.error);
    state->Emit("done", result.ToJson());
    MutexLock lock(state->sink_mu);
    state->sink = nullptr;
    return result;
  }
  run_span.SetAttribute("cortex.status", result.status);
  if (result.status != "succeeded") {
    run_span.SetError(result.error.empty() ? result.reason : result.error);
  }
  if (runs_metric_) {
    runs_metric_->Inc({request.agent, result.status});
    turns_metric_->Inc({request.agent}, result.iterations);
  }
  if (store_) {
    run_row.status = result.status;
    run_row.reason = result.reason;
    run_row.finished_ms = exec::NowMs();
    run_row.record_json = DumpJson(result.ToJson());
    if (Status st = store_->PutAgentRun(run_row); !st.ok()) {
      log::Warn("agent", "cannot record the end of run " + result.run_id + ": " + st.message());
    }
  }
  if (setup.keep_session && store_) {
    // The conversation goes on from the input and the answer (re-read: another run of the same
    // session may have ended meanwhile).
    MutexLock lock(sessions_mu_);
    store::AgentSessionRecord s = setup.session;
    if (auto again = store_->GetAgentSession(s.id); again.ok() && *again) s = **again;
    Json messages_json = ParseJsonOrString(s.messages_json);
    if (!messages_json.is_array()) messages_json = Json::array();
    messages_json.push_back({{"role", "user"}, {"content", ToValidUtf8(request.input)}});
    if (!result.response.empty()) {
      messages_json.push_back({{"role", "assistant"}, {"content", ToValidUtf8(result.response)}});
    }
    s.messages_json = DumpJson(messages_json);
    s.variables_json = DumpJson(vars_after);
    s.runs += 1;
    s.input_tokens += result.usage.input_tokens;
    s.output_tokens += result.usage.output_tokens;
    s.updated_ms = exec::NowMs();
    if (Status st = store_->PutAgentSession(s); !st.ok()) {
      log::Warn("agent", "cannot record session " + s.id + ": " + st.message());
    }
  }
  state->Emit("done", result.ToJson());
  // Completions of actions still running (fire_and_forget) must not reach the caller's sink.
  {
    MutexLock lock(state->sink_mu);
    state->sink = nullptr;
  }
  return result;
}

}  // namespace cortex::agent
