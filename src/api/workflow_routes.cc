#include "api/workflow_routes.h"

#include "api/errors.h"
#include "api/route_util.h"
#include "common/json.h"
#include "registry/variables.h"

namespace cortex::api {

namespace {

using Json = nlohmann::ordered_json;

Json Links(const std::string& id) {
  return {{"status", "/workflows/" + id + "/status"}, {"logs", "/workflows/" + id + "/logs"},
          {"pause", "/workflows/" + id + "/pause"},   {"resume", "/workflows/" + id + "/resume"},
          {"cancel", "/workflows/" + id + "/cancel"}, {"retry", "/workflows/" + id + "/retry"}};
}

Json EventJson(const store::RunEvent& e) {
  Json j = {{"seq", e.seq}, {"at_ms", e.at_ms}, {"type", e.type}};
  if (!e.step.empty()) {
    j["step"] = e.step;
    j["attempt"] = e.attempt;
  }
  if (!e.data_json.empty()) {
    j["data"] = ParseJsonOrString(e.data_json);
  }
  return j;
}

http::Response RunStatus(store::Store& store, const std::string& id, int status = 200) {
  auto rec = store.GetRun(id);
  if (!rec.ok()) return ErrorFromStatus(rec.status());
  if (!*rec) return ErrorFromStatus(NotFoundError("no workflow run " + id));
  auto steps = store.GetSteps(id);
  if (!steps.ok()) return ErrorFromStatus(steps.status());
  Json j = workflow::RunJson(**rec, &*steps);
  j["links"] = Links(id);
  return Ok(j, status);
}

// Starts a run and answers: 202 at once, or (wait) the finished run.
http::Response Start(workflow::Engine& engine, store::Store& store, const http::Request& req,
                     workflow::StartRequest start, bool wait) {
  if (auto w = req.Query("wait")) wait = IsTrue(w);
  std::chrono::milliseconds timeout = std::chrono::minutes(10);
  if (auto t = req.Query("timeout")) {
    auto parsed = ParseWaitTimeout(*t);
    if (!parsed) {
      return ErrorFromStatus(
          InvalidArgumentError("timeout must be a duration up to 1h (e.g. 30s, 500ms, 2m)"));
    }
    timeout = *parsed;
  }
  start.traceparent = req.traceparent;
  std::vector<exec::FieldError> fields;
  auto id = engine.StartRun(start, &fields);
  if (!id.ok()) {
    if (!fields.empty()) {
      return ErrorFromStatus(id.status(),
                             DumpJson(Json{{"fields", exec::FieldErrorsJson(fields)}}));
    }
    http::Response resp = ErrorFromStatus(id.status());
    if (id.status().code() == StatusCode::kResourceExhausted) {
      resp.headers.emplace_back("Retry-After", "1");
    }
    return resp;
  }
  if (!wait) {
    return Ok({{"run_id", *id},
               {"workflow", start.workflow},
               {"status", "running"},
               {"links", Links(*id)}},
              202);
  }
  auto rec = engine.Wait(*id, timeout);
  if (!rec.ok()) return ErrorFromStatus(rec.status());
  bool finished =
      rec->status == "succeeded" || rec->status == "failed" || rec->status == "cancelled";
  return RunStatus(store, *id, finished ? 200 : 202);
}

// Constant-time comparison of a presented secret with the expected one.
bool SameSecret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ (i < b.size() ? b[i] : 0);
  return diff == 0;
}

}  // namespace

void AddWorkflowRoutes(http::Server& server, workflow::Engine& engine, store::Store& store,
                       registry::Registry& registry, WorkflowRouteOptions options) {
  // {"name", "input", "wait"}
  server.Handle("POST", "/execute/workflow", [&engine, &store](const http::Request& req) {
    auto body = BodyObject(req);
    if (!body.ok()) {
      return ErrorFromStatus(InvalidArgumentError(body.status().message() +
                                                  " (expected {\"name\": ..., \"input\": {...}})"));
    }
    auto name = body->find("name");
    if (name == body->end() || !name->is_string() || name->get<std::string>().empty()) {
      return ErrorFromStatus(InvalidArgumentError("'name' (the workflow's name) is required"));
    }
    workflow::StartRequest start;
    start.workflow = name->get<std::string>();
    if (Status st = MayActOn(req, "workflow", start.workflow); !st.ok()) {
      return ErrorFromStatus(st);
    }
    for (const char* key : {"input", "inputs", "parameters"}) {
      if (auto it = body->find(key); it != body->end() && !it->is_null()) {
        if (!it->is_object()) {
          return ErrorFromStatus(
              InvalidArgumentError(std::string("'") + key + "' must be a JSON object"));
        }
        start.input = *it;
      }
    }
    bool wait = body->value("wait", false) == true;
    return Start(engine, store, req, std::move(start), wait);
  });

  // The seed's form: the body is the input (or {"input": {...}}).
  server.Handle("POST", "/execute/workflow/{name}", [&engine, &store](const http::Request& req) {
    auto body = BodyObject(req);
    if (!body.ok()) return ErrorFromStatus(body.status());
    workflow::StartRequest start;
    start.workflow = req.PathParam("name");
    bool wait = false;
    Json input = *body;
    if (auto it = body->find("input"); it != body->end() && it->is_object()) {
      input = *it;
      wait = body->value("wait", false) == true;
    }
    start.input = std::move(input);
    return Start(engine, store, req, std::move(start), wait);
  });

  server.Handle("GET", "/workflows", [&store](const http::Request& req) {
    store::RunFilter filter;
    if (auto v = req.Query("name")) filter.workflow = *v;
    if (auto v = req.Query("workflow")) filter.workflow = *v;
    if (auto v = req.Query("status")) filter.status = *v;
    if (auto v = req.Query("before")) filter.before_id = *v;
    auto limit = IntParam(req.Query("limit"), "limit", 1, 1000, 50);
    if (!limit.ok()) return ErrorFromStatus(limit.status());
    filter.limit = static_cast<size_t>(*limit);
    auto runs = store.ListRuns(filter);
    if (!runs.ok()) return ErrorFromStatus(runs.status());
    Json arr = Json::array();
    for (const auto& r : *runs) arr.push_back(workflow::RunJson(r, nullptr));
    return Ok({{"count", arr.size()}, {"runs", arr}});
  });

  auto status = [&store](const http::Request& req) {
    return RunStatus(store, req.PathParam("id"));
  };
  server.Handle("GET", "/workflows/{id}", status);
  server.Handle("GET", "/workflows/{id}/status", status);

  auto control = [&engine, &store](const char* verb, auto act) {
    return [&engine, &store, verb, act](const http::Request& req) {
      std::string id = req.PathParam("id");
      Status st = act(engine, id, req);
      if (!st.ok()) return ErrorFromStatus(st);
      (void)verb;
      return RunStatus(store, id);
    };
  };
  server.Handle("POST", "/workflows/{id}/pause",
                control("pause", [](workflow::Engine& e, const std::string& id,
                                    const http::Request&) { return e.Pause(id); }));
  server.Handle("POST", "/workflows/{id}/resume",
                control("resume", [](workflow::Engine& e, const std::string& id,
                                     const http::Request&) { return e.Resume(id); }));
  server.Handle("POST", "/workflows/{id}/cancel",
                control("cancel", [](workflow::Engine& e, const std::string& id,
                                     const http::Request&) { return e.Cancel(id); }));
  server.Handle(
      "POST", "/workflows/{id}/retry",
      control("retry",
              [](workflow::Engine& e, const std::string& id, const http::Request& req) -> Status {
                auto body = BodyObject(req);
                if (!body.ok()) return body.status();
                std::string from;
                if (auto it = body->find("from"); it != body->end()) {
                  if (!it->is_string()) return InvalidArgumentError("'from' must be a step name");
                  from = it->get<std::string>();
                }
                return e.Retry(id, from);
              }));

  // The run's event log: JSON (?after=SEQ), or server-sent events that follow a live run.
  server.Handle("GET", "/workflows/{id}/logs", [&engine, &store](const http::Request& req) {
    std::string id = req.PathParam("id");
    auto rec = store.GetRun(id);
    if (!rec.ok()) return ErrorFromStatus(rec.status());
    if (!*rec) return ErrorFromStatus(NotFoundError("no workflow run " + id));
    auto after_seq = IntParam(req.Query("after"), "after", 0, INT64_MAX, 0);
    if (!after_seq.ok()) return ErrorFromStatus(after_seq.status());
    const int64_t after = *after_seq;
    if (!WantsEvents(req)) {
      auto events = store.GetRunEvents(id, after, 10000);
      if (!events.ok()) return ErrorFromStatus(events.status());
      Json arr = Json::array();
      for (const auto& e : *events) arr.push_back(EventJson(e));
      return Ok({{"run_id", id}, {"status", (*rec)->status}, {"events", arr}});
    }
    http::Response resp;
    resp.sse = [&engine, &store, id, after](http::SseWriter& w) {
      int64_t seq = after;
      http::SseKeepAlive keep_alive(w);  // a paused or slow run is not a dead server
      while (w.IsOpen()) {
        auto events = store.GetRunEvents(id, seq, 1000);
        if (!events.ok()) return;
        for (const auto& e : *events) {
          if (!w.Send(e.type, DumpJson(EventJson(e)), std::to_string(e.seq))) {
            return;
          }
          seq = e.seq;
          keep_alive.Sent();
        }
        if (!events->empty()) continue;
        auto run = store.GetRun(id);
        if (!run.ok() || !*run) return;
        const std::string& s = (*run)->status;
        if ((s == "succeeded" || s == "failed" || s == "cancelled") &&
            (*run)->last_event_seq <= seq) {
          auto steps = store.GetSteps(id);
          w.Send("result", DumpJson(workflow::RunJson(**run, steps.ok() ? &*steps : nullptr)));
          return;
        }
        if (!keep_alive.Tick()) return;
        engine.WaitForEvents(id, seq, std::chrono::milliseconds(500));
      }
    };
    return resp;
  });

  // Webhook trigger: POST /hooks/{workflow} with the input as the JSON body.
  server.Handle(
      "POST", "/hooks/{workflow}", [&engine, &store, &registry, options](const http::Request& req) {
        std::string name = req.PathParam("workflow");
        auto snap = registry.snapshot();
        const registry::Entry* entry = snap->Find(registry::Kind::kWorkflow, name);
        const auto* spec = entry ? entry->manifest().As<registry::WorkflowSpec>() : nullptr;
        if (!spec) return ErrorFromStatus(NotFoundError("no Workflow named '" + name + "'"));
        if (spec->trigger.type != registry::TriggerType::kWebhook) {
          return ErrorFromStatus(FailedPreconditionError(
              "Workflow/" + name + " has no webhook trigger (trigger.type: webhook)"));
        }
        if (spec->trigger.secret && !spec->trigger.secret->empty()) {
          registry::VariableContext ctx;
          ctx.env = registry.WrittenByApi(entry->file->path)
                        ? registry::AllowListedEnv(options.env, options.allowed_env)
                        : options.env;
          auto expected = registry::ResolveString(*spec->trigger.secret, ctx);
          std::string want = expected.ok() && expected->value.is_string()
                                 ? expected->value.get<std::string>()
                                 : "";
          if (want.empty() || (expected.ok() && !expected->unresolved.empty())) {
            return ErrorFromStatus(FailedPreconditionError("Workflow/" + name +
                                                           ": the webhook secret is not set (" +
                                                           *spec->trigger.secret + ")"));
          }
          std::string given;
          if (auto h = req.Header("X-Cortex-Secret")) given = *h;
          if (auto h = req.Header("Authorization"); h && h->starts_with("Bearer ")) {
            given = h->substr(7);
          }
          if (given.empty()) {
            return ErrorFromStatus({StatusCode::kUnauthenticated,
                                    "this webhook needs its secret (X-Cortex-Secret header or "
                                    "Authorization: Bearer)"});
          }
          if (!SameSecret(given, want)) {
            return ErrorFromStatus({StatusCode::kPermissionDenied, "wrong webhook secret"});
          }
        }
        auto body = BodyObject(req);
        if (!body.ok()) return ErrorFromStatus(body.status());
        workflow::StartRequest start;
        start.workflow = name;
        start.input = *body;
        start.trigger = "webhook";
        return Start(engine, store, req, std::move(start), false);
      });
}

}  // namespace cortex::api
