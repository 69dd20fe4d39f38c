#include "api/agent_routes.h"

#include <atomic>
#include <thread>

#include "api/errors.h"
#include "api/route_util.h"
#include "common/json.h"
#include "exec/executor.h"

namespace cortex::api {
namespace {

using Json = nlohmann::ordered_json;

std::string NewRunId() {
  // The executor's ids are random hex; an agent run's carry their own prefix.
  std::string id = exec::NewExecutionId();
  return "ar_" + id.substr(id.find('_') + 1);
}

// The user's message from the seed's body: "input" as a string, or an object with one of
// message, prompt, query, question, text; any other object is passed as its JSON.
Status ParseAgentRequest(const Json& body, agent::AgentRunRequest* r, bool* stream) {
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
    return UnimplementedError(
        "sessions are not stored yet: each run starts a new conversation (omit session_id)");
  }
  if (auto it = body.find("stream"); it != body.end()) {
    if (!it->is_boolean()) return InvalidArgumentError("'stream' must be true or false");
    *stream = it->get<bool>();
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

std::shared_ptr<CancelToken> AgentRuns::Add(const std::string& run_id, const std::string& agent) {
  auto token = std::make_shared<CancelToken>();
  std::lock_guard lock(mu_);
  if (stopping_) token->Cancel();
  live_[run_id] = {agent, exec::NowMs(), token};
  return token;
}

void AgentRuns::Remove(const std::string& run_id) {
  std::lock_guard lock(mu_);
  live_.erase(run_id);
}

bool AgentRuns::Cancel(const std::string& run_id) {
  std::lock_guard lock(mu_);
  auto it = live_.find(run_id);
  if (it == live_.end()) return false;
  it->second.cancel->Cancel();
  return true;
}

void AgentRuns::CancelAll() {
  std::lock_guard lock(mu_);
  stopping_ = true;
  for (auto& [_, live] : live_) live.cancel->Cancel();
}

Json AgentRuns::List() const {
  std::lock_guard lock(mu_);
  Json out = Json::array();
  for (const auto& [id, live] : live_) {
    out.push_back({{"run_id", id},
                   {"agent", live.agent},
                   {"status", live.cancel->cancelled() ? "cancelling" : "running"},
                   {"started_ms", live.started_ms}});
  }
  return out;
}

AgentSteps::~AgentSteps() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [&] { return running_ == 0; });
}

Status AgentSteps::Start(const workflow::StepDispatcher::AgentCall& call,
                         std::function<void(Result<Json>)> done) {
  CORTEX_RETURN_IF_ERROR(runner_.Check(call.agent));
  agent::AgentRunRequest request;
  request.agent = call.agent;
  request.input = agent::InputText(call.input);
  if (request.input.empty()) {
    return InvalidArgumentError("the agent step has no input (parameters: {message: ...})");
  }
  request.run_id = NewRunId();
  {
    std::lock_guard lock(mu_);
    ++running_;
  }
  auto cancel = runs_.Add(request.run_id, request.agent);
  std::thread([this, request, cancel, done = std::move(done), timeout = call.timeout] {
    // A step's timeout cancels its run.
    std::atomic<bool> finished{false};
    std::thread watchdog;
    if (timeout) {
      watchdog =
          std::thread([&finished, cancel, until = std::chrono::steady_clock::now() + *timeout] {
            while (!finished && std::chrono::steady_clock::now() < until) {
              std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
            if (!finished) cancel->Cancel();
          });
    }
    auto result = runner_.Run(request, nullptr, cancel.get());
    finished = true;
    if (watchdog.joinable()) watchdog.join();
    runs_.Remove(request.run_id);
    if (result.ok()) {
      done(result->ToJson());
    } else {
      done(result.status());
    }
    std::lock_guard lock(mu_);
    --running_;
    idle_.notify_all();
  }).detach();
  return Status::Ok();
}

void AddAgentRoutes(http::Server& server, agent::AgentRunner& runner, AgentRuns& runs) {
  server.Handle("POST", "/execute/agent", [&runner, &runs](const http::Request& req) {
    auto body = BodyObject(req);
    if (!body.ok()) return ErrorFromStatus(body.status());
    agent::AgentRunRequest request;
    bool stream = WantsEvents(req);
    if (Status st = ParseAgentRequest(*body, &request, &stream); !st.ok()) {
      return ErrorFromStatus(st);
    }
    // What would stop the run from starting is answered with its status code, before any event.
    if (Status st = runner.Check(request.agent); !st.ok()) return ErrorFromStatus(st);
    request.run_id = NewRunId();
    if (!stream) {
      auto cancel = runs.Add(request.run_id, request.agent);
      auto result = runner.Run(request, nullptr, cancel.get());
      runs.Remove(request.run_id);
      if (!result.ok()) return ErrorFromStatus(result.status());
      return Ok(result->ToJson());
    }
    http::Response resp;
    resp.sse = [&runner, &runs, request](http::SseWriter& w) {
      auto cancel = runs.Add(request.run_id, request.agent);
      // A client that goes away cancels its run.
      auto sink = [&w, &cancel](const agent::AgentEvent& e) {
        if (!w.Send(e.type, DumpJson(e.data))) cancel->Cancel();
      };
      auto result = runner.Run(request, sink, cancel.get());
      runs.Remove(request.run_id);
      if (!result.ok()) {
        w.Send("error",
               DumpJson(Json{{"code", "not_started"}, {"message", result.status().message()}}));
      }
    };
    return resp;
  });
  server.Handle("GET", "/agent-runs", [&runs](const http::Request&) {
    return Ok(Json{{"runs", runs.List()}});
  });
  server.Handle("POST", "/agent-runs/{id}/cancel", [&runs](const http::Request& req) {
    std::string id = req.PathParam("id");
    if (!runs.Cancel(id)) {
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

}  // namespace cortex::api
