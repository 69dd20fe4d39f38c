#include "agent/runner.h"

#include <algorithm>
#include <condition_variable>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "common/json.h"
#include "common/log.h"
#include "exec/executor.h"

namespace cortex::agent {
namespace {

using Json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
namespace fs = std::filesystem;

std::string NewRunId() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  static const char* hex = "0123456789abcdef";
  std::string id = "ar_";
  for (int i = 0; i < 20; ++i) id += hex[rng() % 16];
  return id;
}

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

- `type`: tool (default), relic (a service's operation: "name": "<relic>", "parameters":
  {"operation": "<endpoint>", ...}) or internal (system_clock, set_variable {key, value},
  delete_variable {key}).
- `mode`: sync (default), async (runs alongside the others) or fire_and_forget (nobody waits).
- `id`: your name for the action; `depends_on` (a JSON key, a list of ids) makes it wait for
  those actions, and it is skipped if one of them fails.
- `output_key`: the result is kept as $x; "$x" as a whole parameter value passes the value
  itself, and $x inside text or in your response is replaced by it.

Several independent actions run in parallel. When your message ends, you get one observation per
action (its status and result, or its error) and you continue.

When you have the answer, write it in <response final="true">...</response>. Use
<response final="false">...</response> for a progress note when you still have work to do.
Only use capabilities listed below.)";

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

AgentRunner::AgentRunner(registry::Registry& registry, llm::Gateway& gateway,
                         workflow::StepDispatcher& dispatcher, AgentRunOptions options,
                         store::Store* store)
    : registry_(registry),
      gateway_(gateway),
      dispatcher_(dispatcher),
      options_(std::move(options)),
      store_(store) {}

namespace {

// The provider chain of an agent: primary, then fallback.
std::vector<std::pair<std::string, std::string>> ChainOf(const registry::AgentSpec& spec,
                                                         const std::string& default_provider) {
  std::vector<std::pair<std::string, std::string>> chain;
  if (spec.cognitive_engine) {
    chain.emplace_back(spec.cognitive_engine->primary.provider,
                       spec.cognitive_engine->primary.model);
    if (spec.cognitive_engine->fallback) {
      chain.emplace_back(spec.cognitive_engine->fallback->provider,
                         spec.cognitive_engine->fallback->model);
    }
  } else {
    chain.emplace_back(default_provider, "");
  }
  return chain;
}

// One action of a run, and what became of it.
struct ActionState {
  ParsedAction action;
  int turn = 0;
  std::string status = "pending";  // pending | running | succeeded | failed | skipped | started
  Json result;
  std::string error;
  std::string execution_id;
  Clock::time_point started;
  int64_t duration_ms = 0;
  bool waited = true;  // its turn waits for it (not fire_and_forget)
};

bool Finished(const std::string& status) {
  return status == "succeeded" || status == "failed" || status == "skipped";
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
  int running = 0;
  AgentEventSink sink;
  std::mutex sink_mu;

  void Emit(const std::string& type, Json data) {
    if (!sink) return;
    std::lock_guard lock(sink_mu);
    sink(AgentEvent{type, std::move(data)});
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
  return j;
}

}  // namespace

Status AgentRunner::Check(const std::string& agent) const {
  auto snap = registry_.snapshot();
  const registry::Entry* entry = snap->Find(registry::Kind::kAgent, agent);
  if (!entry) return NotFoundError("no agent named '" + agent + "'");
  if (!entry->resolved()) {
    std::string problems;
    for (const auto& p : entry->problems) problems += (problems.empty() ? "" : "; ") + p;
    return FailedPreconditionError("agent '" + agent + "' cannot run: " + problems);
  }
  const auto* spec = entry->manifest().As<registry::AgentSpec>();
  std::string why;
  for (const auto& [provider, model] : ChainOf(*spec, options_.default_provider)) {
    std::string bad = gateway_.Unusable(provider);
    if (bad.empty()) return Status::Ok();
    why += (why.empty() ? "" : "; ") + bad;
  }
  return FailedPreconditionError("agent '" + agent + "' has no usable model: " + why);
}

Result<AgentRunResult> AgentRunner::Run(const AgentRunRequest& request, const AgentEventSink& sink,
                                        const CancelToken* cancel) {
  CORTEX_RETURN_IF_ERROR(Check(request.agent));
  // The session it continues (or a new one), read before anything is recorded.
  store::AgentSessionRecord session;
  const bool keep_session = store_ && (request.keep_session || !request.session_id.empty());
  if (!request.session_id.empty()) {
    if (!store_) return FailedPreconditionError("sessions are not kept by this server");
    CORTEX_ASSIGN_OR_RETURN(auto found, store_->GetAgentSession(request.session_id));
    if (!found) return NotFoundError("no agent session '" + request.session_id + "'");
    if (found->agent != request.agent) {
      return FailedPreconditionError("session '" + request.session_id + "' belongs to agent '" +
                                     found->agent + "', not '" + request.agent + "'");
    }
    session = std::move(*found);
  } else if (keep_session) {
    session.id = "as_" + NewRunId().substr(3);
    session.agent = request.agent;
    session.created_ms = exec::NowMs();
  }
  const auto start = Clock::now();
  auto snap = registry_.snapshot();
  const registry::Entry* entry = snap->Find(registry::Kind::kAgent, request.agent);
  const registry::Manifest& manifest = entry->manifest();
  const auto& spec = *manifest.As<registry::AgentSpec>();
  const fs::path dir = fs::path(entry->file->path).parent_path();

  AgentRunResult result;
  result.run_id = request.run_id.empty() ? NewRunId() : request.run_id;
  result.agent = request.agent;
  result.session_id = session.id;
  auto state = std::make_shared<RunState>();
  state->sink = sink;
  // Recorded before anything runs: a server that stops mid-run leaves it `interrupted`, not lost.
  store::AgentRunRecord run_row;
  run_row.id = result.run_id;
  run_row.agent = request.agent;
  run_row.session_id = session.id;
  run_row.input = request.input;
  run_row.created_ms = exec::NowMs();
  if (store_) {
    if (Status st = store_->PutAgentRun(run_row); !st.ok()) {
      return UnavailableError("cannot record the agent run: " + st.message());
    }
  }
  std::vector<llm::Message> session_messages;
  if (auto prior = ParseJson(session.messages_json); prior.ok() && prior->is_array()) {
    for (const auto& m : *prior) {
      if (m.is_object() && m.contains("role") && m["role"].is_string() && m.contains("content") &&
          m["content"].is_string()) {
        session_messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
      }
    }
  }
  if (auto vars = ParseJson(session.variables_json); vars.ok() && vars->is_object()) {
    state->vars = *vars;
  }

  // --- The system prompt: persona, protocol, catalogue. ---
  std::string system;
  std::string persona = spec.persona.agent.empty() ? "" : ReadText(dir / spec.persona.agent);
  if (persona.empty()) persona = manifest.body;
  if (persona.empty()) persona = "You are " + manifest.name() + ". " + manifest.header.description;
  system += persona;
  for (const auto& extra : {spec.persona.system, spec.persona.user, spec.persona.knowledge}) {
    if (extra && !extra->empty()) {
      std::string text = ReadText(dir / *extra);
      if (!text.empty()) system += "\n\n" + text;
    }
  }
  system += "\n\n";
  system += kProtocolGuide;
  std::map<std::string, const registry::Entry*> tools, relics;
  for (const auto& dep : entry->dependencies) {
    if (!dep.resolved() || !dep.kind) continue;
    const registry::Entry* target = snap->FindKey(dep.target);
    if (!target) continue;
    if (*dep.kind == registry::Kind::kTool) tools[target->name()] = target;
    if (*dep.kind == registry::Kind::kRelic) relics[target->name()] = target;
  }
  std::string catalogue = "\n\n# Your capabilities\n";
  if (tools.empty() && relics.empty()) catalogue += "\nNone: answer from what you know.\n";
  if (!tools.empty()) catalogue += "\n## Tools (type=\"tool\")\n";
  for (const auto& [name, t] : tools) {
    const auto* ts = t->manifest().As<registry::ToolSpec>();
    std::string desc = t->manifest().header.description;
    if (desc.empty()) desc = t->manifest().header.summary;
    catalogue += "- " + name + ": " + desc +
                 "\n  parameters: " + DumpJson(ParametersSchema(ts->parameters)) + "\n";
  }
  if (!relics.empty()) catalogue += "\n## Relics (type=\"relic\")\n";
  for (const auto& [name, r] : relics) {
    const auto* rs = r->manifest().As<registry::RelicSpec>();
    catalogue += "- " + name + ": " + r->manifest().header.description + "\n";
    if (rs->interface) {
      for (const auto& ep : rs->interface->endpoints) {
        catalogue += "  - operation " + ep.name + " (" + ep.method + " " + ep.path + ")" +
                     (ep.description.empty() ? "" : ": " + ep.description) + "\n";
      }
    }
  }
  system += catalogue;
  if (!request.extra_system.empty()) {
    system += "\n\n# From the caller\n\n" + request.extra_system;
  }

  std::vector<llm::Message> messages = {{"system", system}};
  for (const auto& m : session_messages) messages.push_back(m);
  for (const auto& m : request.history) messages.push_back(m);
  messages.push_back({"user", request.input});
  const auto chain = ChainOf(spec, options_.default_provider);
  llm::ChatRequest chat;
  chat.run_id = result.run_id;
  if (spec.cognitive_engine) {
    const auto& p = spec.cognitive_engine->parameters;
    chat.temperature = p.temperature;
    chat.top_p = p.top_p;
    chat.max_tokens = p.max_tokens;
    if (p.extra_params.is_object()) chat.extra = p.extra_params;
  }
  const int cap = spec.iteration_cap > 0
                      ? static_cast<int>(std::min<int64_t>(spec.iteration_cap, 1000))
                      : options_.max_iterations;
  const auto deadline = start + options_.max_wall;
  std::ofstream recording;
  if (request.record && !options_.recordings_dir.empty()) {
    std::error_code ec;
    fs::create_directories(options_.recordings_dir, ec);
    result.recording = options_.recordings_dir + "/" + result.run_id + ".jsonl";
    recording.open(result.recording, std::ios::binary | std::ios::trunc);
  }
  state->Emit("run", {{"run_id", result.run_id}, {"agent", request.agent}});

  // Starts an action whose dependencies have finished (state->mu held).
  std::function<void(const std::string&)> start_action;
  auto finish = [state](const std::string& id, const std::string& status, Json out,
                        const std::string& error) {
    ActionState& s = state->actions[id];
    s.status = status;
    s.result = std::move(out);
    s.error = error;
    s.duration_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - s.started).count();
    if (status == "succeeded") {
      if (!s.action.output_key.empty()) state->vars[s.action.output_key] = s.result;
      state->vars[s.action.id] = s.result;
    }
    state->Emit("action_result", ActionJson(s));
  };
  start_action = [&, state](const std::string& id) {
    ActionState& s = state->actions[id];
    s.started = Clock::now();
    ParsedAction& a = s.action;
    if (!a.error.empty()) {
      finish(id, "failed", Json(), a.error);
      return;
    }
    Json params = SubstituteVariables(a.parameters, state->vars);
    s.status = "running";
    ++state->running;
    auto done_record = [state, id, finish](const store::ExecutionRecord& r) {
      std::lock_guard lock(state->mu);
      std::string status, error;
      Json out;
      OutcomeOfRecord(r, &status, &out, &error);
      --state->running;
      finish(id, status, std::move(out), error);
      state->changed.notify_all();  // the run's starter thread starts what waited for it
    };
    Status started;
    if (a.type == "tool") {
      if (!tools.count(a.name)) {
        started = NotFoundError("'" + a.name + "' is not one of this agent's tools (" +
                                std::to_string(tools.size()) + " imported)");
      } else {
        workflow::StepDispatcher::ToolCall call;
        call.tool = a.name;
        call.parameters = params;
        call.execution_id = exec::NewExecutionId();
        call.idempotency_key = result.run_id + ":" + std::to_string(s.turn) + ":" + a.id;
        call.timeout = options_.action_timeout;
        s.execution_id = call.execution_id;
        started = dispatcher_.StartTool(call, done_record);
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
      if (!relics.count(relic)) {
        started = NotFoundError("'" + relic + "' is not one of this agent's relics");
      } else {
        workflow::StepDispatcher::RelicCall call;
        call.target = relic;
        call.action = operation;
        call.parameters = params;
        call.timeout = std::min(options_.action_timeout, milliseconds(60000));
        started = dispatcher_.StartRelicCall(call, [state, id, finish](Result<Json> r) {
          std::lock_guard lock(state->mu);
          --state->running;
          if (r.ok()) {
            finish(id, "succeeded", *r, "");
          } else {
            finish(id, "failed", Json(), r.status().message());
          }
          state->changed.notify_all();
        });
      }
    } else if (a.type == "internal") {
      --state->running;
      if (a.name == "system_clock") {
        auto now = std::chrono::system_clock::now();
        std::time_t t = std::chrono::system_clock::to_time_t(now);
        char iso[32];
        std::tm tm{};
        gmtime_r(&t, &tm);
        std::strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
        finish(
            id, "succeeded",
            {{"iso8601", iso},
             {"unix_ms", std::chrono::duration_cast<milliseconds>(now.time_since_epoch()).count()}},
            "");
      } else if (a.name == "set_variable" && params.is_object() && params.contains("key") &&
                 params["key"].is_string()) {
        state->vars[params["key"].get<std::string>()] = params.value("value", Json());
        finish(id, "succeeded", {{"set", params["key"]}}, "");
      } else if (a.name == "delete_variable" && params.is_object() && params.contains("key") &&
                 params["key"].is_string()) {
        state->vars.erase(params["key"].get<std::string>());
        finish(id, "succeeded", {{"deleted", params["key"]}}, "");
      } else {
        finish(id, "failed", Json(),
               "unknown internal action '" + a.name +
                   "' (system_clock, set_variable {key, value}, delete_variable {key})");
      }
      return;
    } else {
      started = UnimplementedError("actions of type '" + a.type +
                                   "' are not available yet (tool, relic and internal are)");
    }
    if (!started.ok()) {
      --state->running;
      finish(id, "failed", Json(), started.message());
    }
  };
  // Starts every pending action whose dependencies have finished, within max_parallel; skips
  // those whose dependencies failed.
  auto pump = [&, state]() {
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
  // Completions arrive on the executor's threads, which must not call back into it: this thread
  // starts the actions that were waiting for them, while the loop's own thread reads the
  // model's stream.
  bool stream_open = false;  // with dispatch_at_message_end: hold actions while it is
  std::thread starter([&, state] {
    std::unique_lock lock(state->mu);
    while (!state->ended) {
      if (!(options_.dispatch_at_message_end && stream_open)) pump();
      state->changed.wait_for(lock, milliseconds(200));
    }
  });
  // However Run ends (an exception included), the starter stops before the locals it uses go.
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

  std::string last_response;
  result.status = "failed";
  result.reason = "iteration_cap";
  for (int turn = 1; turn <= cap; ++turn) {
    if (cancel && cancel->cancelled()) {
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
    result.iterations = turn;
    ProtocolParser parser;
    std::vector<std::string> turn_actions;
    std::vector<std::pair<std::string, bool>> responses;  // text, final
    std::string response_text, outside_text;
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
          case EventKind::kAction: {
            std::lock_guard lock(state->mu);
            ParsedAction a = *e.action;  // e is announced below as parsed
            if (state->actions.count(a.id) && a.id.starts_with("action-")) {
              a.id = "t" + std::to_string(turn) + "-" + a.id;  // default ids, unique per run
            }
            ActionState s;
            s.action = a;
            s.turn = turn;
            s.waited = a.mode != "fire_and_forget";
            state->actions[a.id] = s;
            state->order.push_back(a.id);
            turn_actions.push_back(a.id);
            Json announced = e.ToJson();
            announced["id"] = a.id;
            announced.erase("event");
            announced["turn"] = turn;
            state->Emit("action", std::move(announced));
            if (!options_.dispatch_at_message_end) pump();
            break;
          }
        }
      }
      events.clear();
    };
    std::vector<ProtocolEvent> events;
    {
      std::lock_guard lock(state->mu);
      stream_open = true;
    }
    chat.messages = messages;
    chat.turn = turn - 1;
    auto reply = gateway_.Chat(
        chain, chat,
        [&](std::string_view text) {
          parser.Feed(text, &events);
          handle(events);
          return !(cancel && cancel->cancelled());
        },
        cancel);
    if (!reply.ok()) {
      if (cancel && cancel->cancelled()) {
        result.status = "cancelled";
        result.reason = "cancelled";
      } else {
        result.reason = "error";
        result.error = reply.status().message();
        state->Emit("error", {{"message", ToValidUtf8(result.error)}});
      }
      // What this turn started still ends in the records; the run waits for it below.
      std::unique_lock lock(state->mu);
      state->changed.wait_until(lock, deadline, [&] { return state->running == 0; });
      break;
    }
    parser.Finish(&events);
    handle(events);
    {
      std::lock_guard lock(state->mu);
      stream_open = false;
    }
    if (!response_text.empty()) responses.emplace_back(response_text, true);
    result.usage += reply->usage;
    if (recording.is_open()) {
      recording << DumpJson(Json{{"turn", turn},
                                 {"model", reply->model},
                                 {"content", ToValidUtf8(reply->content)},
                                 {"usage",
                                  {{"input_tokens", reply->usage.input_tokens},
                                   {"output_tokens", reply->usage.output_tokens}}}})
                << "\n";
      recording.flush();
    }
    state->Emit("usage", {{"turn", turn},
                          {"provider", reply->provider},
                          {"model", reply->model},
                          {"input_tokens", reply->usage.input_tokens},
                          {"output_tokens", reply->usage.output_tokens},
                          {"latency_ms", reply->latency_ms}});

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
        if (!waiting) break;
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
        if (cancel && cancel->cancelled()) break;
        if (state->changed.wait_until(lock, std::min(deadline, Clock::now() + milliseconds(100))) ==
                std::cv_status::timeout &&
            Clock::now() >= deadline) {
          break;
        }
      }
    }

    messages.push_back({"assistant", reply->content});
    bool final = false;
    std::string shown;
    {
      std::lock_guard lock(state->mu);
      for (const auto& [text, is_final] : responses) {
        std::string substituted = SubstituteVariables(text, state->vars);
        state->Emit("response", {{"text", ToValidUtf8(substituted)}, {"final", is_final}});
        shown += (shown.empty() ? "" : "\n\n") + substituted;
        final = final || is_final;
      }
    }
    if (!shown.empty()) last_response = shown;
    if (responses.empty() && turn_actions.empty()) {
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
    if (request.token_budget &&
        result.usage.input_tokens + result.usage.output_tokens >= *request.token_budget) {
      result.reason = "token_budget";
      result.error =
          "the run used its token budget (" + std::to_string(*request.token_budget) + " tokens)";
      break;
    }
    // The observations: one labelled block per action of this turn.
    std::string obs;
    {
      std::lock_guard lock(state->mu);
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
      }
    }
    if (obs.empty()) obs = "Continue.";
    messages.push_back({"user", obs});
  }
  if (result.reason == "iteration_cap" && result.status != "succeeded") {
    result.error =
        "the run reached its iteration cap (" + std::to_string(cap) + ") without a final response";
  }
  result.response = last_response;
  {
    std::lock_guard lock(state->mu);
    for (const auto& id : state->order) result.actions.push_back(ActionJson(state->actions[id]));
  }
  result.duration_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
  Json vars_after;
  {
    std::lock_guard lock(state->mu);
    state->ended = true;  // nothing more starts
    vars_after = state->vars;
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
  if (keep_session) {
    // The conversation goes on from the input and the answer (re-read: another run of the same
    // session may have ended meanwhile).
    std::lock_guard lock(sessions_mu_);
    store::AgentSessionRecord s = session;
    if (!request.session_id.empty()) {
      if (auto again = store_->GetAgentSession(session.id); again.ok() && *again) s = **again;
    }
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
    std::lock_guard lock(state->sink_mu);
    state->sink = nullptr;
  }
  return result;
}

}  // namespace cortex::agent
