#include "api/agent_routes.h"

#include <atomic>
#include <thread>

#include <algorithm>

#include "api/errors.h"
#include "api/route_util.h"
#include "common/json.h"
#include "common/mutex.h"
#include "common/random_id.h"
#include "exec/executor.h"

namespace cortex::api {
namespace {

using Json = nlohmann::ordered_json;

std::string NewRunId() { return RandomId("ar_"); }

// The user's message from the seed's body: "input" as a string, or an object with one of
// message, prompt, query, question, text; any other object is passed as its JSON.
Status ParseAgentRequest(const Json& body, agent::AgentRunRequest* r, bool* stream, bool* async) {
  std::string name;
  for (const char* key : {"name", "agent"}) {
    if (auto it = body.find(key); it != body.end()) {
      if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
        return InvalidArgumentError(std::string("'") + key + "' must be the agent's name");
      }
      name = it->get<std::string>();
    }
  }
  if (name.empty()) return InvalidArgumentError("'name' (the agent's name) is required");
  r->agent = name;
  auto input = body.find("input");
  if (input == body.end() || input->is_null()) {
    return InvalidArgumentError(
        "'input' is required: the user's message, as a string or {\"message\": \"...\"}");
  }
  r->input = agent::InputText(*input);
  if (r->input.empty()) return InvalidArgumentError("'input' is empty");
  if (auto it = body.find("history"); it != body.end() && !it->is_null()) {
    if (!it->is_array() || it->size() > 1000) {
      return InvalidArgumentError("'history' must be a list of at most 1000 {role, content}");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& m = (*it)[i];
      std::string where = "history[" + std::to_string(i) + "]";
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
          !m.contains("content") || !m["content"].is_string()) {
        return InvalidArgumentError(where + " must be {\"role\": ..., \"content\": \"...\"}");
      }
      std::string role = m["role"].get<std::string>();
      if (role != "user" && role != "assistant") {
        return InvalidArgumentError(where + ".role must be user or assistant, not '" + role + "'");
      }
      r->history.push_back({role, m["content"].get<std::string>()});
    }
  }
  if (auto it = body.find("session_id"); it != body.end() && !it->is_null()) {
    if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
      return InvalidArgumentError("'session_id' must be a session's id (a string)");
    }
    r->session_id = it->get<std::string>();
  }
  if (auto it = body.find("stream"); it != body.end()) {
    if (!it->is_boolean()) return InvalidArgumentError("'stream' must be true or false");
    *stream = it->get<bool>();
  }
  if (auto it = body.find("async"); it != body.end()) {
    if (!it->is_boolean()) return InvalidArgumentError("'async' must be true or false");
    *async = it->get<bool>();
    if (*async && *stream) {
      return InvalidArgumentError(
          "'async' and 'stream' exclude each other: an async run answers "
          "its id at once (GET /agent-runs/{id} follows it)");
    }
  }
  if (auto it = body.find("record"); it != body.end()) {
    if (!it->is_boolean()) return InvalidArgumentError("'record' must be true or false");
    r->record = it->get<bool>();
  }
  if (auto it = body.find("token_budget"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() <= 0) {
      return InvalidArgumentError("'token_budget' must be a positive integer");
    }
    r->token_budget = it->get<int64_t>();
  }
  return Status::Ok();
}

}  // namespace

Status StartAgentStep(agent::AgentRunner& runner, const workflow::StepDispatcher::AgentCall& call,
                      std::function<void(Result<Json>)> done) {
  CORTEX_RETURN_IF_ERROR(runner.Check(call.agent));
  agent::AgentRunRequest request;
  request.agent = call.agent;
  request.input = agent::InputText(call.input);
  if (request.input.empty()) {
    return InvalidArgumentError("the agent step has no input (parameters: {message: ...})");
  }
  request.run_id = agent::StableRunId("ar_", "workflow:" + call.run_key);
  request.parent = "workflow:" + call.run_key;
  request.keep_session = false;  // a step's run is one question, its record the step's output
  request.traceparent = call.traceparent;
  // A step's timeout cancels its run.
  struct Watch {
    Mutex mu;
    std::condition_variable cv;
    bool finished CORTEX_GUARDED_BY(mu) = false;
  };
  auto watch = std::make_shared<Watch>();
  auto launched = runner.Launch(request, [done = std::move(done), watch](auto result) {
    {
      MutexLock lock(watch->mu);
      watch->finished = true;
      watch->cv.notify_all();
    }
    if (result.ok()) {
      done(result->ToJson());
    } else {
      done(result.status());
    }
  });
  if (!launched.ok()) return launched.status();
  if (call.timeout) {
    std::thread([&runner, watch, id = *launched, timeout = *call.timeout] {
      MutexLock lock(watch->mu);
      if (!watch->cv.wait_for(lock.native(), timeout,
                              [&]() CORTEX_REQUIRES(watch->mu) { return watch->finished; })) {
        runner.Cancel(id);
      }
    }).detach();
  }
  return Status::Ok();
}

namespace {

Json SessionJson(const store::AgentSessionRecord& s, bool with_messages) {
  Json messages = ParseJsonOrString(s.messages_json);
  Json j = {{"session_id", s.id},
            {"agent", s.agent},
            {"runs", s.runs},
            {"messages_count", messages.is_array() ? messages.size() : 0},
            {"usage", {{"input_tokens", s.input_tokens}, {"output_tokens", s.output_tokens}}},
            {"created_ms", s.created_ms},
            {"updated_ms", s.updated_ms}};
  if (with_messages) {
    j["messages"] = messages;
    j["variables"] = ParseJsonOrString(s.variables_json);
  }
  return j;
}

Json RunRowJson(const store::AgentRunRecord& r) {
  if (r.status != "running") {
    Json record = ParseJsonOrString(r.record_json);
    if (record.is_object() && !record.empty()) return record;
  }
  Json j = {{"run_id", r.id},
            {"agent", r.agent},
            {"status", r.status},
            {"input", r.input},
            {"created_ms", r.created_ms}};
  if (!r.session_id.empty()) j["session_id"] = r.session_id;
  if (!r.reason.empty()) j["reason"] = r.reason;
  if (r.status == "interrupted") {
    j["error"] = "interrupted: the server stopped during the run";
  }
  return j;
}

Result<size_t> LimitOf(const http::Request& req) {
  CORTEX_ASSIGN_OR_RETURN(int64_t n, IntParam(req.Query("limit"), "limit", 1, 1000, 50));
  return static_cast<size_t>(n);
}

}  // namespace

void AddAgentRoutes(http::Server& server, agent::AgentRunner& runner, store::Store& store,
                    registry::Registry& registry) {
  server.Handle("POST", "/execute/agent", [&runner](const http::Request& req) {
    auto body = BodyObject(req);
    if (!body.ok()) return ErrorFromStatus(body.status());
    agent::AgentRunRequest request;
    bool stream = WantsEvents(req), async = false;
    if (Status st = ParseAgentRequest(*body, &request, &stream, &async); !st.ok()) {
      return ErrorFromStatus(st);
    }
    if (Status st = MayActOn(req, "agent", request.agent); !st.ok()) return ErrorFromStatus(st);
    // What would stop the run from starting is answered with its status code, before any event.
    if (Status st = runner.Check(request.agent); !st.ok()) return ErrorFromStatus(st);
    request.run_id = NewRunId();
    request.traceparent = req.traceparent;
    if (async) {
      auto id = runner.Launch(request);
      if (!id.ok()) return ErrorFromStatus(id.status());
      return Ok(Json{{"run_id", *id}, {"agent", request.agent}, {"status", "running"}}, 202);
    }
    if (!stream) {
      auto result = runner.Run(request, nullptr, nullptr);
      if (!result.ok()) return ErrorFromStatus(result.status());
      return Ok(result->ToJson());
    }
    http::Response resp;
    resp.sse = [&runner, request](http::SseWriter& w) {
      // A client that goes away cancels its run.
      CancelToken gone;
      auto sink = [&w, &gone](const agent::AgentEvent& e) {
        if (!w.Send(e.type, DumpJson(e.data))) gone.Cancel();
      };
      auto result = runner.Run(request, sink, &gone);
      if (!result.ok()) {
        w.Send("error",
               DumpJson(Json{{"code", "not_started"}, {"message", result.status().message()}}));
      }
    };
    return resp;
  });
  // Runs: those in progress here, then the recorded ones, newest first.
  server.Handle("GET", "/agent-runs", [&runner, &store](const http::Request& req) {
    auto limit = LimitOf(req);
    if (!limit.ok()) return ErrorFromStatus(limit.status());
    auto rows = store.ListAgentRuns(req.Query("agent").value_or(""),
                                    req.Query("session_id").value_or(""), *limit);
    if (!rows.ok()) return ErrorFromStatus(rows.status());
    Json recorded = Json::array();
    for (const auto& r : *rows) {
      Json j = RunRowJson(r);
      j.erase("actions");  // the list stays small; GET /agent-runs/{id} has them
      recorded.push_back(std::move(j));
    }
    return Ok(Json{{"in_progress", runner.Live()}, {"runs", std::move(recorded)}});
  });
  // What each agent's finished runs used: runs, tokens, cost (?agent= for one).
  server.Handle("GET", "/agents/usage", [&store](const http::Request& req) {
    auto totals = store.AgentUsageTotals(req.Query("agent").value_or(""));
    if (!totals.ok()) return ErrorFromStatus(totals.status());
    Json out = Json::array();
    for (const auto& u : *totals) {
      Json j = {{"agent", u.agent},
                {"runs", u.runs},
                {"input_tokens", u.input_tokens},
                {"output_tokens", u.output_tokens}};
      if (u.cost > 0) j["cost"] = u.cost;
      out.push_back(std::move(j));
    }
    return Ok(Json{{"agents", std::move(out)}});
  });
  // Follows a run as its journal grows, wherever it was started (another client, a workflow
  // step, a resume after a restart): each model turn ("turn") and action outcome
  // ("action_result") as an event with its journal seq as the SSE id, then "done" with the
  // record. ?after=SEQ (or Last-Event-ID) resumes after an event already seen.
  server.Handle("GET", "/agent-runs/{id}/events", [&store](const http::Request& req) {
    const std::string id = req.PathParam("id");
    auto row = store.GetAgentRun(id);
    if (!row.ok()) return ErrorFromStatus(row.status());
    if (!*row) return ErrorFromStatus(NotFoundError("no agent run '" + id + "'"));
    std::optional<std::string> from = req.Query("after");
    if (!from) from = req.Header("Last-Event-ID");
    auto after_seq = IntParam(from, "after", 0, INT64_MAX, 0);
    if (!after_seq.ok()) return ErrorFromStatus(after_seq.status());
    int64_t after = *after_seq;
    http::Response resp;
    resp.sse = [&store, id, after](http::SseWriter& w) mutable {
      http::SseKeepAlive keep_alive(w);  // a model that thinks long is not a dead server
      while (w.IsOpen()) {
        // The row first: entries written before it finished are all in the journal then.
        auto now = store.GetAgentRun(id);
        auto journal = store.GetAgentJournal(id);
        if (!now.ok() || !*now || !journal.ok()) {
          w.Send("error", DumpJson(Json{{"message", "the run's records cannot be read"}}));
          return;
        }
        for (const auto& e : *journal) {
          if (e.seq <= after) continue;
          Json data = ParseJsonOrString(e.data_json);
          if (data.is_object()) data.erase("fingerprint");
          if (!w.Send(e.kind == "turn" ? "turn" : "action_result", DumpJson(data),
                      std::to_string(e.seq))) {
            return;
          }
          after = e.seq;
          keep_alive.Sent();
        }
        if ((*now)->status != "running") {
          w.Send("done", DumpJson(RunRowJson(**now)));
          return;
        }
        if (!keep_alive.Tick()) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    };
    return resp;
  });
  server.Handle("GET", "/agent-runs/{id}", [&store](const http::Request& req) {
    auto row = store.GetAgentRun(req.PathParam("id"));
    if (!row.ok()) return ErrorFromStatus(row.status());
    if (!*row) return ErrorFromStatus(NotFoundError("no agent run '" + req.PathParam("id") + "'"));
    Json j = RunRowJson(**row);
    if ((*row)->status == "running") {
      // Its progress, from its journal: the turns received and the actions' outcomes so far.
      auto journal = store.GetAgentJournal((*row)->id);
      if (!journal.ok()) return ErrorFromStatus(journal.status());
      int turns = 0;
      Json actions = Json::array();
      for (const auto& e : *journal) {
        if (e.kind == "turn") ++turns;
        if (e.kind != "action") continue;
        Json a = ParseJsonOrString(e.data_json);
        if (a.is_object()) a.erase("fingerprint");
        actions.push_back(std::move(a));
      }
      j["turns"] = turns;
      j["actions"] = std::move(actions);
    }
    return Ok(j);
  });
  // Sessions (the seed's /state/agent routes, and one by id).
  server.Handle("GET", "/state/agent/{agent}/sessions", [&store](const http::Request& req) {
    auto limit = LimitOf(req);
    if (!limit.ok()) return ErrorFromStatus(limit.status());
    auto rows = store.ListAgentSessions(req.PathParam("agent"), *limit);
    if (!rows.ok()) return ErrorFromStatus(rows.status());
    Json out = Json::array();
    for (const auto& s : *rows) out.push_back(SessionJson(s, false));
    return Ok(Json{{"agent", req.PathParam("agent")}, {"sessions", std::move(out)}});
  });
  server.Handle(
      "POST", "/state/agent/{agent}/session", [&store, &registry](const http::Request& req) {
        std::string agent = req.PathParam("agent");
        if (!registry.snapshot()->Find(registry::Kind::kAgent, agent)) {
          return ErrorFromStatus(NotFoundError("no agent named '" + agent + "'"));
        }
        auto body = BodyObject(req);
        if (!body.ok()) return ErrorFromStatus(body.status());
        store::AgentSessionRecord s;
        s.id = RandomId("as_");
        s.agent = agent;
        s.created_ms = s.updated_ms = exec::NowMs();
        if (auto v = body->find("variables"); v != body->end() && !v->is_null()) {
          if (!v->is_object()) {
            return ErrorFromStatus(InvalidArgumentError("'variables' must be a JSON object"));
          }
          s.variables_json = DumpJson(*v);
        }
        if (Status st = store.PutAgentSession(s); !st.ok()) return ErrorFromStatus(st);
        return Ok(SessionJson(s, true), 201);
      });
  server.Handle("GET", "/agent-sessions/{id}", [&store](const http::Request& req) {
    auto s = store.GetAgentSession(req.PathParam("id"));
    if (!s.ok()) return ErrorFromStatus(s.status());
    if (!*s) {
      return ErrorFromStatus(NotFoundError("no agent session '" + req.PathParam("id") + "'"));
    }
    return Ok(SessionJson(**s, true));
  });
  server.Handle("DELETE", "/agent-sessions/{id}", [&store](const http::Request& req) {
    if (Status st = store.DeleteAgentSession(req.PathParam("id")); !st.ok()) {
      return ErrorFromStatus(st);
    }
    return Ok(Json{{"session_id", req.PathParam("id")}, {"deleted", true}});
  });
  server.Handle("POST", "/agent-runs/{id}/cancel", [&runner](const http::Request& req) {
    std::string id = req.PathParam("id");
    if (!runner.Cancel(id)) {
      return ErrorFromStatus(NotFoundError("no agent run '" + id + "' is in progress"));
    }
    return Ok(Json{{"run_id", id}, {"status", "cancelling"}}, 202);
  });
}

void AddLlmRoutes(http::Server& server, llm::Gateway& gateway) {
  server.Handle("GET", "/llm/providers", [&gateway](const http::Request&) {
    return Ok(Json{{"providers", gateway.Describe()}});
  });
  server.Handle("POST", "/llm/providers/{name}/reset", [&gateway](const http::Request& req) {
    std::string name = req.PathParam("name");
    if (Status st = gateway.ResetBreaker(name); !st.ok()) return ErrorFromStatus(st);
    return Ok(Json{{"name", name}, {"breaker", "closed"}});
  });
}

// ---- The OpenAI-compatible endpoint. ----

namespace {

// An OpenAI error answer: {"error": {"message", "type", "code"}}.
http::Response OpenAiError(int status, const std::string& type, const std::string& message) {
  return http::Response::Json(
      status, DumpJson(Json{{"error", {{"message", message}, {"type", type}, {"code", type}}}}));
}

http::Response OpenAiError(const Status& st) {
  int status = HttpStatusFor(st.code());
  std::string type = status == 404   ? "model_not_found"
                     : status == 400 ? "invalid_request_error"
                     : status == 409 ? "model_unavailable"
                     : status == 403 ? "permission_error"
                                     : "server_error";
  return OpenAiError(status, type, st.message());
}

// A message's text: a string, or the text parts of a list of parts.
std::optional<std::string> ContentText(const Json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_null()) return std::string();
  if (!content.is_array()) return std::nullopt;
  std::string out;
  for (const auto& part : content) {
    if (!part.is_object()) return std::nullopt;
    if (part.value("type", "") == "text" && part.contains("text") && part["text"].is_string()) {
      out += (out.empty() ? "" : "\n") + part["text"].get<std::string>();
    }
  }
  return out;
}

// {model, messages, stream}: the agent, its history, the last user message as its input.
Status ParseChatCompletion(const Json& body, agent::AgentRunRequest* r, bool* stream,
                           bool* include_usage) {
  auto model = body.find("model");
  if (model == body.end() || !model->is_string() || model->get_ref<const std::string&>().empty()) {
    return InvalidArgumentError("'model' is required: the name of the agent to talk to");
  }
  r->agent = model->get<std::string>();
  auto messages = body.find("messages");
  if (messages == body.end() || !messages->is_array() || messages->empty()) {
    return InvalidArgumentError("'messages' must be a non-empty list");
  }
  if (messages->size() > 1000) return InvalidArgumentError("at most 1000 messages");
  std::vector<llm::Message> turns;
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& m = (*messages)[i];
    std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return InvalidArgumentError(where + " must be {\"role\", \"content\"}");
    }
    std::string role = m["role"].get<std::string>();
    auto text = ContentText(m.value("content", Json()));
    if (!text) return InvalidArgumentError(where + ".content must be a string or text parts");
    if (role == "system" || role == "developer") {
      r->extra_system += (r->extra_system.empty() ? "" : "\n\n") + *text;
    } else if (role == "user" || role == "assistant") {
      turns.push_back({role, *text});
    } else if (role != "tool" && role != "function") {
      return InvalidArgumentError(where + ".role '" + role +
                                  "' is not one of system, user, "
                                  "assistant");
    }
  }
  if (turns.empty() || turns.back().role != "user" || turns.back().content.empty()) {
    return InvalidArgumentError("the last message must be the user's, with text");
  }
  r->input = turns.back().content;
  turns.pop_back();
  r->history = std::move(turns);
  if (auto it = body.find("stream"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) return InvalidArgumentError("'stream' must be true or false");
    *stream = it->get<bool>();
  }
  if (auto it = body.find("stream_options"); it != body.end() && it->is_object()) {
    *include_usage = it->value("include_usage", false);
  }
  return Status::Ok();
}

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Json UsageJson(const Json& record) {
  int64_t in = record["usage"].value("input_tokens", int64_t{0});
  int64_t out = record["usage"].value("output_tokens", int64_t{0});
  return {{"prompt_tokens", in}, {"completion_tokens", out}, {"total_tokens", in + out}};
}

}  // namespace

void AddOpenAiRoutes(http::Server& server, agent::AgentRunner& runner,
                     registry::Registry& registry) {
  server.Handle("GET", "/v1/models", [&registry](const http::Request&) {
    Json data = Json::array();
    auto snap = registry.snapshot();
    for (const auto* e : snap->List(registry::Kind::kAgent)) {
      data.push_back(
          {{"id", e->name()}, {"object", "model"}, {"created", 0}, {"owned_by", "cortex"}});
    }
    return Ok(Json{{"object", "list"}, {"data", std::move(data)}});
  });
  server.Handle("POST", "/v1/chat/completions", [&runner](const http::Request& req) {
    auto body = BodyObject(req);
    if (!body.ok()) return OpenAiError(body.status());
    agent::AgentRunRequest request;
    bool stream = false, include_usage = false;
    if (Status st = ParseChatCompletion(*body, &request, &stream, &include_usage); !st.ok()) {
      return OpenAiError(st);
    }
    if (Status st = MayActOn(req, "agent", request.agent); !st.ok()) return OpenAiError(st);
    if (Status st = runner.Check(request.agent); !st.ok()) return OpenAiError(st);
    request.run_id = NewRunId();
    request.traceparent = req.traceparent;
    request.keep_session = false;  // the client sends the whole conversation every time
    const std::string id = "chatcmpl-" + request.run_id;
    const int64_t created = NowSeconds();
    if (!stream) {
      auto result = runner.Run(request, nullptr, nullptr);
      if (!result.ok()) return OpenAiError(result.status());
      Json record = result->ToJson();
      if (result->reason == "error" || result->status == "cancelled") {
        return OpenAiError(
            502, "upstream_error",
            "agent run " + result->run_id + " ended " + result->status + ": " + result->error);
      }
      return Ok(Json{{"id", id},
                     {"object", "chat.completion"},
                     {"created", created},
                     {"model", request.agent},
                     {"choices",
                      {{{"index", 0},
                        {"message", {{"role", "assistant"}, {"content", result->response}}},
                        {"finish_reason", result->status == "succeeded" ? "stop" : "length"}}}},
                     {"usage", UsageJson(record)},
                     {"cortex", {{"run_id", result->run_id}, {"reason", result->reason}}}});
    }
    http::Response resp;
    resp.sse = [&runner, request, id, created, include_usage](http::SseWriter& w) {
      auto cancel = std::make_shared<CancelToken>();  // a client that goes away cancels its run
      auto chunk = [&](Json delta, Json finish) {
        return Json{
            {"id", id},
            {"object", "chat.completion.chunk"},
            {"created", created},
            {"model", request.agent},
            {"choices", {{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", finish}}}}};
      };
      bool open = w.Send("", DumpJson(chunk({{"role", "assistant"}, {"content", ""}}, nullptr)));
      bool first = true;
      // The answer streams as the agent gives it: each response block once its actions are done.
      auto sink = [&](const agent::AgentEvent& e) {
        if (!open) return;
        if (e.type == "response") {
          std::string text = (first ? "" : "\n\n") + e.data.value("text", "");
          first = false;
          open = w.Send("", DumpJson(chunk({{"content", text}}, nullptr)));
        }
        if (!open) cancel->Cancel();
      };
      auto result = runner.Run(request, sink, cancel.get());
      if (!open) return;
      if (!result.ok() || result->reason == "error") {
        std::string why = result.ok() ? result->error : result.status().message();
        w.Send("", DumpJson(Json{{"error", {{"message", why}, {"type", "upstream_error"}}}}));
        return;
      }
      w.Send("",
             DumpJson(chunk(Json::object(), result->status == "succeeded" ? "stop" : "length")));
      if (include_usage) {
        Json usage = {{"id", id},
                      {"object", "chat.completion.chunk"},
                      {"created", created},
                      {"model", request.agent},
                      {"choices", Json::array()},
                      {"usage", UsageJson(result->ToJson())}};
        w.Send("", DumpJson(usage));
      }
      w.Send("", "[DONE]");
    };
    return resp;
  });
}

}  // namespace cortex::api
