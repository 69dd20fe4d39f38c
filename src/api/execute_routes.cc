#include "api/execute_routes.h"

#include "api/errors.h"
#include "api/route_util.h"
#include "common/json.h"

namespace cortex::api {

namespace {

using Json = nlohmann::ordered_json;

// Streams an execution's output lines, then its record, as server-sent events.
void StreamExecution(http::SseWriter& w, exec::Executor& executor, const std::string& id) {
  int64_t seq = 0;
  bool done = false;
  http::SseKeepAlive keep_alive(w);  // a quiet tool is not a dead server
  while (w.IsOpen() && !done) {
    auto lines = executor.Follow(id, seq, std::chrono::milliseconds(200), &done);
    if (!lines.ok()) break;
    if (!keep_alive.Tick()) return;
    if (!lines->empty()) keep_alive.Sent();
    for (const auto& l : *lines) {
      Json j = {{"seq", l.seq}, {"stream", l.is_stderr ? "stderr" : "stdout"}, {"text", l.text}};
      if (!w.Send(l.is_stderr ? "stderr" : "stdout", DumpJson(j), std::to_string(l.seq))) {
        return;
      }
      seq = l.seq;
    }
  }
  auto record = executor.Wait(id, std::chrono::milliseconds(0));
  if (record.ok()) {
    w.Send("result", DumpJson(exec::ExecutionJson(*record)));
  }
}

// One call of /execute/tool or /execute/batch: {"name", "parameters", "idempotency_key"}.
Status ParseExecuteRequest(const Json& body, exec::ExecuteRequest* request) {
  auto name = body.find("name");
  if (name == body.end() || !name->is_string() || name->get_ref<const std::string&>().empty()) {
    return InvalidArgumentError("'name' (the tool's name) is required and must be a string");
  }
  request->tool = name->get<std::string>();
  if (auto p = body.find("parameters"); p != body.end() && !p->is_null()) {
    request->parameters = *p;
  }
  if (auto k = body.find("idempotency_key"); k != body.end()) {
    if (!k->is_string()) return InvalidArgumentError("'idempotency_key' must be a string");
    request->idempotency_key = k->get<std::string>();
  }
  return Status::Ok();
}

http::Response QueueFull(const Status& st) {
  http::Response resp = ErrorFromStatus(st);
  if (st.code() == StatusCode::kResourceExhausted) resp.headers.emplace_back("Retry-After", "1");
  return resp;
}

constexpr size_t kMaxBatch = 256;

}  // namespace

void AddExecuteRoutes(http::Server& server, exec::Executor& executor, store::Store& store) {
  server.Handle("POST", "/execute/tool", [&executor](const http::Request& req) {
    auto parsed = req.body.empty() ? Result<Json>(Json::object()) : ParseJson(req.body);
    if (!parsed.ok()) return ErrorFromStatus(parsed.status());
    Json body = std::move(parsed).value();
    if (!body.is_object()) {
      return ErrorFromStatus(
          InvalidArgumentError("the body must be a JSON object: "
                               "{\"name\": ..., \"parameters\": {...}}"));
    }
    exec::ExecuteRequest request;
    if (!body.contains("name")) {
      if (auto q = req.Query("tool_name")) body["name"] = *q;  // the original service's query form
    }
    if (Status st = ParseExecuteRequest(body, &request); !st.ok()) return ErrorFromStatus(st);
    if (Status st = MayActOn(req, "tool", request.tool); !st.ok()) return ErrorFromStatus(st);
    request.traceparent = req.traceparent;
    bool async = body.contains("async") && body["async"].is_boolean() && body["async"].get<bool>();

    std::vector<exec::FieldError> fields;
    // A plain synchronous call may run on this thread (see Executor::Run); streamed and async
    // calls go through the queue.
    auto id = async || WantsEvents(req) ? executor.Submit(request, &fields)
                                        : executor.Run(request, &fields, std::chrono::minutes(10));
    if (!id.ok()) {
      if (!fields.empty()) {
        Json details = {{"fields", exec::FieldErrorsJson(fields)}};
        return ErrorFromStatus(id.status(), DumpJson(details));
      }
      return QueueFull(id.status());
    }
    std::string exec_id = *id;
    if (WantsEvents(req)) {
      http::Response resp;
      resp.sse = [&executor, exec_id](http::SseWriter& w) {
        if (!w.Send("queued", DumpJson(Json{{"execution_id", exec_id}}))) return;
        StreamExecution(w, executor, exec_id);
      };
      return resp;
    }
    Json links = {{"status", "/executions/" + exec_id},
                  {"logs", "/executions/" + exec_id + "/logs"},
                  {"cancel", "/executions/" + exec_id + "/cancel"}};
    if (async) {
      return Ok({{"execution_id", exec_id}, {"status", "queued"}, {"links", links}}, 202);
    }
    // Waits at most 10 minutes; a longer call answers 202 and keeps running.
    auto record = executor.Wait(exec_id, std::chrono::minutes(10));
    if (!record.ok()) return ErrorFromStatus(record.status());
    Json out = exec::ExecutionJson(*record);
    bool finished = record->finished_ms != 0;
    if (!finished) out["links"] = links;
    return Ok(out, finished ? 200 : 202);
  });

  // Several calls at once: {"calls": [{"name", "parameters"}, ...], "async": false,
  // "timeout_seconds": 600}. All are checked before any runs; the answer lists them in order.
  server.Handle("POST", "/execute/batch", [&executor](const http::Request& req) {
    auto parsed = req.body.empty() ? Result<Json>(Json()) : ParseJson(req.body);
    if (!parsed.ok()) return ErrorFromStatus(parsed.status());
    Json body = std::move(parsed).value();
    const Json* calls = nullptr;
    if (body.is_array()) {
      calls = &body;
    } else if (body.is_object()) {
      for (const char* key : {"calls", "executions", "requests"}) {
        if (auto it = body.find(key); it != body.end()) calls = &*it;
      }
    }
    if (!calls || !calls->is_array()) {
      return ErrorFromStatus(InvalidArgumentError(
          "the body must be {\"calls\": [{\"name\": ..., \"parameters\": {...}}, ...]}"));
    }
    if (calls->empty() || calls->size() > kMaxBatch) {
      return ErrorFromStatus(InvalidArgumentError("a batch holds 1 to " +
                                                  std::to_string(kMaxBatch) + " calls, not " +
                                                  std::to_string(calls->size())));
    }
    bool async = body.is_object() && body.value("async", false) == true;
    int64_t timeout_s = 600;
    if (body.is_object() && body.contains("timeout_seconds")) {
      const Json& t = body["timeout_seconds"];
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > 3600) {
        return ErrorFromStatus(
            InvalidArgumentError("'timeout_seconds' must be an integer from 0 to 3600"));
      }
      timeout_s = t.get<int64_t>();
    }
    std::vector<exec::ExecuteRequest> requests(calls->size());
    Json bad = Json::array();
    for (size_t i = 0; i < calls->size(); ++i) {
      const Json& c = (*calls)[i];
      Status st = c.is_object() ? ParseExecuteRequest(c, &requests[i])
                                : InvalidArgumentError("a call must be a JSON object");
      if (st.ok()) st = MayActOn(req, "tool", requests[i].tool);
      if (st.code() == StatusCode::kPermissionDenied) return ErrorFromStatus(st);
      requests[i].traceparent = req.traceparent;
      if (!st.ok()) {
        bad.push_back(
            {{"index", i}, {"code", StatusCodeName(st.code())}, {"message", st.message()}});
      }
    }
    if (!bad.empty()) {
      return ErrorFromStatus(InvalidArgumentError(std::to_string(bad.size()) +
                                                  " calls are malformed, so none was run"),
                             DumpJson(Json{{"calls", bad}}));
    }
    std::vector<exec::Executor::BatchItemError> errors;
    auto ids = executor.SubmitBatch(requests, &errors);
    if (!ids.ok()) {
      if (errors.empty()) return QueueFull(ids.status());
      Json details = Json::array();
      for (const auto& e : errors) {
        Json d = {{"index", e.index},
                  {"name", requests[e.index].tool},
                  {"code", StatusCodeName(e.status.code())},
                  {"message", e.status.message()}};
        if (!e.fields.empty()) d["fields"] = exec::FieldErrorsJson(e.fields);
        details.push_back(std::move(d));
      }
      return ErrorFromStatus(ids.status(), DumpJson(Json{{"calls", details}}));
    }
    Json results = Json::array();
    if (async) {
      for (const auto& id : *ids) {
        results.push_back({{"execution_id", id},
                           {"status", "queued"},
                           {"links", {{"status", "/executions/" + id}}}});
      }
      return Ok({{"count", results.size()}, {"executions", results}}, 202);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    size_t succeeded = 0, failed = 0, unfinished = 0;
    for (const auto& id : *ids) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      auto record = executor.Wait(id, std::max(left, std::chrono::milliseconds(0)));
      if (!record.ok()) {
        results.push_back({{"execution_id", id}, {"error", record.status().message()}});
        ++unfinished;
        continue;
      }
      if (record->finished_ms == 0) {
        ++unfinished;
      } else if (record->status == "succeeded") {
        ++succeeded;
      } else {
        ++failed;
      }
      results.push_back(exec::ExecutionJson(*record));
    }
    return Ok({{"count", results.size()},
               {"succeeded", succeeded},
               {"failed", failed},
               {"running", unfinished},
               {"executions", results}},
              unfinished ? 202 : 200);
  });

  // The tool's health check, run now: 200 when healthy, 503 when not (the body says why).
  server.Handle("GET", "/tools/{name}/health", [&executor](const http::Request& req) {
    auto health = executor.CheckHealth(req.PathParam("name"));
    if (!health.ok()) return ErrorFromStatus(health.status());
    return Ok(exec::ToolHealthJson(*health), health->status == "healthy" ? 200 : 503);
  });

  server.Handle("GET", "/executions", [&store](const http::Request& req) {
    store::ExecutionFilter filter;
    if (auto v = req.Query("tool")) filter.name = *v;
    if (auto v = req.Query("status")) filter.status = *v;
    if (auto v = req.Query("before")) filter.before_id = *v;
    auto limit = IntParam(req.Query("limit"), "limit", 1, 1000, 50);
    if (!limit.ok()) return ErrorFromStatus(limit.status());
    filter.limit = static_cast<size_t>(*limit);
    auto list = store.ListExecutions(filter);
    if (!list.ok()) return ErrorFromStatus(list.status());
    Json arr = Json::array();
    for (const auto& r : *list) arr.push_back(exec::ExecutionJson(r));
    return Ok({{"count", arr.size()}, {"executions", arr}});
  });

  server.Handle("GET", "/executions/{id}", [&store](const http::Request& req) {
    auto rec = store.GetExecution(req.PathParam("id"));
    if (!rec.ok()) return ErrorFromStatus(rec.status());
    if (!*rec) return ErrorFromStatus(NotFoundError("no execution " + req.PathParam("id")));
    return Ok(exec::ExecutionJson(**rec));
  });

  server.Handle("GET", "/executions/{id}/logs", [&executor, &store](const http::Request& req) {
    std::string id = req.PathParam("id");
    if (WantsEvents(req)) {
      bool done = false;
      if (!executor.Follow(id, 0, std::chrono::milliseconds(0), &done).ok()) {
        // Not live: the stored lines, then the record.
        auto rec = store.GetExecution(id);
        if (!rec.ok() || !*rec) return ErrorFromStatus(NotFoundError("no execution " + id));
      }
      http::Response resp;
      resp.sse = [&executor, &store, id](http::SseWriter& w) {
        bool done = false;
        if (executor.Follow(id, 0, std::chrono::milliseconds(0), &done).ok()) {
          StreamExecution(w, executor, id);
          return;
        }
        auto lines = store.GetLogs(id, 0, 10000);
        if (lines.ok()) {
          for (const auto& l : *lines) {
            Json j = {
                {"seq", l.seq}, {"stream", l.is_stderr ? "stderr" : "stdout"}, {"text", l.text}};
            if (!w.Send(l.is_stderr ? "stderr" : "stdout", DumpJson(j), std::to_string(l.seq))) {
              return;
            }
          }
        }
        auto rec = store.GetExecution(id);
        if (rec.ok() && *rec) w.Send("result", DumpJson(exec::ExecutionJson(**rec)));
      };
      return resp;
    }
    auto after_seq = IntParam(req.Query("after"), "after", 0, INT64_MAX, 0);
    if (!after_seq.ok()) return ErrorFromStatus(after_seq.status());
    const int64_t after = *after_seq;
    bool done = false;
    if (auto live = executor.Follow(id, after, std::chrono::milliseconds(0), &done);
        live.ok() && !done) {
      // Still running: the executor's in-memory lines are the freshest.
      Json arr = Json::array();
      for (const auto& l : *live) {
        arr.push_back(
            {{"seq", l.seq}, {"stream", l.is_stderr ? "stderr" : "stdout"}, {"text", l.text}});
      }
      return Ok({{"execution_id", id}, {"running", true}, {"lines", arr}});
    }
    auto lines = store.GetLogs(id, after, 10000);
    if (!lines.ok()) return ErrorFromStatus(lines.status());
    Json arr = Json::array();
    for (const auto& l : *lines) {
      arr.push_back({{"seq", l.seq},
                     {"stream", l.is_stderr ? "stderr" : "stdout"},
                     {"at_ms", l.at_ms},
                     {"text", l.text}});
    }
    return Ok({{"execution_id", id}, {"lines", arr}});
  });

  server.Handle("POST", "/executions/{id}/cancel", [&executor](const http::Request& req) {
    std::string id = req.PathParam("id");
    Status st = executor.Cancel(id);
    if (!st.ok()) return ErrorFromStatus(st);
    return Ok({{"execution_id", id}, {"status", "cancelling"}});
  });
}

}  // namespace cortex::api
