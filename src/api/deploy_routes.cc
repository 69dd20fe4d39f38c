#include "api/deploy_routes.h"

#include "api/errors.h"
#include "api/route_util.h"
#include "common/json.h"

namespace cortex::api {

namespace {

using Json = nlohmann::ordered_json;

constexpr std::chrono::milliseconds kDefaultDeployWait = std::chrono::minutes(2);

Json Links(const std::string& name) {
  std::string base = "/relics/" + name;
  return {{"status", base + "/status"},
          {"logs", base + "/logs"},
          {"stop", base + "/stop"},
          {"start", base + "/start"},
          {"restart", base + "/restart"}};
}

Json WithLinks(Json status) {
  if (status.contains("name")) status["links"] = Links(status["name"].get<std::string>());
  return status;
}

// The answer to a deploy/start that waited: 200 healthy, 502 failed, 202 still on its way.
http::Response Settled(const Json& status) {
  const std::string state = status.value("state", "");
  if (state == "failed") {
    return http::ErrorResponse(
        502, "deploy_failed",
        "relic " + status.value("name", "") + " failed: " + status.value("error", ""),
        DumpJson(status));
  }
  return Ok(WithLinks(status), state == "healthy" || state == "stopped" ? 200 : 202);
}

// ?wait / body.wait and ?timeout / body.timeout_seconds.
Status WaitOptions(const http::Request& req, const Json& body, bool* wait,
                   std::chrono::milliseconds* timeout) {
  *wait = body.value("wait", false);
  if (auto w = req.Query("wait")) *wait = IsTrue(w);
  *timeout = kDefaultDeployWait;
  if (auto t = body.find("timeout_seconds"); t != body.end()) {
    if (!t->is_number() || t->get<double>() <= 0 || t->get<double>() > 3600) {
      return InvalidArgumentError("timeout_seconds must be a number of seconds in (0, 3600]");
    }
    *timeout = std::chrono::milliseconds(static_cast<int64_t>(t->get<double>() * 1000));
  }
  if (auto t = req.Query("timeout")) {
    auto parsed = ParseWaitTimeout(*t);
    if (!parsed) {
      return InvalidArgumentError("timeout must be a duration up to 1h (e.g. 30s, 500ms, 2m)");
    }
    *timeout = *parsed;
  }
  return Status::Ok();
}

http::Response Deploy(deploy::Deployer& deployer, const http::Request& req, std::string name) {
  auto body = BodyObject(req);
  if (!body.ok()) return ErrorFromStatus(body.status());
  if (name.empty()) {
    auto n = body->find("name");
    if (n == body->end() || !n->is_string() || n->get<std::string>().empty()) {
      if (auto q = req.Query("name")) {
        name = *q;
      } else {
        return ErrorFromStatus(InvalidArgumentError("name: the relic to deploy is required"));
      }
    } else {
      name = n->get<std::string>();
    }
  }
  if (Status st = MayActOn(req, "relic", name); !st.ok()) return ErrorFromStatus(st);
  auto start = body->find("auto_start");
  if (start != body->end() && !start->is_boolean()) {
    return ErrorFromStatus(InvalidArgumentError("auto_start must be true or false"));
  }
  bool wait = false;
  std::chrono::milliseconds timeout{};
  if (Status s = WaitOptions(req, *body, &wait, &timeout); !s.ok()) return ErrorFromStatus(s);
  const bool auto_start = start == body->end() || start->get<bool>();
  auto status = deployer.DeployRelic(name, auto_start);
  if (!status.ok()) return ErrorFromStatus(status.status());
  if (!wait || !auto_start) return Ok(WithLinks(*status), 202);
  auto done = deployer.WaitRelic(name, timeout);
  if (!done.ok()) return ErrorFromStatus(done.status());
  return Settled(*done);
}

// The lines of a log answer.
Json LinesJson(const std::vector<deploy::RelicLogLine>& lines) {
  Json out = Json::array();
  for (const auto& l : lines) {
    Json j = {{"line", l.text}};
    if (!l.service.empty()) j["service"] = l.service;
    if (l.is_stderr) j["stream"] = "stderr";
    out.push_back(std::move(j));
  }
  return out;
}

http::Response Logs(deploy::Deployer& deployer, const http::Request& req) {
  const std::string name = req.PathParam("name");
  const std::string service = req.Query("service").value_or("");
  auto tail_lines = IntParam(req.Query("tail"), "tail", 0, 100000, 100);
  if (!tail_lines.ok()) return ErrorFromStatus(tail_lines.status());
  const auto tail = static_cast<size_t>(*tail_lines);
  if (WantsEvents(req) || IsTrue(req.Query("follow"))) {
    auto status = deployer.RelicStatus(name);  // 404 before the stream starts
    if (!status.ok()) return ErrorFromStatus(status.status());
    http::Response resp;
    resp.sse = [&deployer, name, service, tail](http::SseWriter& out) {
      Status s =
          deployer.FollowRelicLogs(name, service, tail, [&out](const deploy::RelicLogLine* line) {
            if (!line) return out.Comment("keep-alive");
            Json j = {{"line", line->text}};
            if (!line->service.empty()) j["service"] = line->service;
            if (line->is_stderr) j["stream"] = "stderr";
            return out.Send("log", DumpJson(j));
          });
      if (!s.ok()) out.Send("error", DumpJson(Json{{"message", s.message()}}));
    };
    return resp;
  }
  auto lines = deployer.RelicLogs(name, service, tail);
  if (!lines.ok()) return ErrorFromStatus(lines.status());
  Json out = LinesJson(*lines);
  return Ok({{"relic", name}, {"count", out.size()}, {"lines", out}});
}

http::Response DeployMonument(deploy::Monuments& monuments, const http::Request& req,
                              std::string name) {
  auto body = BodyObject(req);
  if (!body.ok()) return ErrorFromStatus(body.status());
  if (name.empty()) {
    auto n = body->find("name");
    if (n != body->end() && n->is_string()) name = n->get<std::string>();
    if (name.empty()) name = req.Query("name").value_or("");
    if (name.empty()) {
      return ErrorFromStatus(InvalidArgumentError("name: the monument to deploy is required"));
    }
  }
  if (Status st = MayActOn(req, "monument", name); !st.ok()) return ErrorFromStatus(st);
  auto env = body->find("environment");
  if (env != body->end() && !env->is_string()) {
    return ErrorFromStatus(InvalidArgumentError("environment must be a string"));
  }
  bool wait = false;
  std::chrono::milliseconds timeout{};
  if (Status s = WaitOptions(req, *body, &wait, &timeout); !s.ok()) return ErrorFromStatus(s);
  auto st = monuments.Deploy(name, env == body->end() ? "default" : env->get<std::string>());
  if (!st.ok()) return ErrorFromStatus(st.status());
  if (!wait) return Ok(*st, 202);
  auto done = monuments.Wait(name, timeout);
  if (!done.ok()) return ErrorFromStatus(done.status());
  const std::string state = done->value("state", "");
  if (state == "failed") {
    return http::ErrorResponse(502, "deploy_failed",
                               "monument " + name + ": " + done->value("error", ""),
                               done->dump(-1, ' ', false, Json::error_handler_t::replace));
  }
  return Ok(*done, state == "healthy" ? 200 : 202);
}

void AddMonumentRoutes(http::Server& server, deploy::Monuments& monuments) {
  server.Handle("POST", "/deploy/monument", [&monuments](const http::Request& req) {
    return DeployMonument(monuments, req, "");
  });
  server.Handle("POST", "/deploy/monument/{name}", [&monuments](const http::Request& req) {
    return DeployMonument(monuments, req, req.PathParam("name"));
  });
  server.Handle("GET", "/monuments", [&monuments](const http::Request&) {
    Json all = monuments.List();
    return Ok({{"count", all.size()}, {"monuments", all}});
  });
  auto status = [&monuments](const http::Request& req) {
    auto s = monuments.Get(req.PathParam("name"));
    if (!s.ok()) return ErrorFromStatus(s.status());
    return Ok(*s);
  };
  server.Handle("GET", "/monuments/{name}", status);
  server.Handle("GET", "/monuments/{name}/status", status);
  server.Handle("GET", "/monuments/{name}/health", [&monuments](const http::Request& req) {
    auto h = monuments.Health(req.PathParam("name"));
    if (!h.ok()) return ErrorFromStatus(h.status());
    return Ok(*h, h->value("status", "") == "healthy" ? 200 : 503);
  });
  server.Handle("POST", "/monuments/{name}/scale", [&monuments](const http::Request& req) {
    auto body = BodyObject(req);
    if (!body.ok()) return ErrorFromStatus(body.status());
    auto replicas = body->find("replicas");
    auto service = body->find("service");
    if (service == body->end() || !service->is_string() || service->get<std::string>().empty()) {
      return ErrorFromStatus(
          InvalidArgumentError("service: the relic (or relic/service) to scale is required"));
    }
    if (replicas == body->end() || !replicas->is_number_integer() || replicas->get<int>() < 0) {
      return ErrorFromStatus(InvalidArgumentError("replicas must be a whole number >= 0"));
    }
    const std::string name = req.PathParam("name");
    if (Status s = monuments.Scale(name, service->get<std::string>(), replicas->get<int>());
        !s.ok()) {
      return ErrorFromStatus(s);
    }
    return Ok({{"name", name}, {"service", *service}, {"replicas", *replicas}});
  });
  server.Handle("GET", "/monuments/{name}/logs", [&monuments](const http::Request& req) {
    auto tail = IntParam(req.Query("tail"), "tail", 0, 100000, 100);
    if (!tail.ok()) return ErrorFromStatus(tail.status());
    auto lines = monuments.Logs(req.PathParam("name"), req.Query("service").value_or(""),
                                static_cast<size_t>(*tail));
    if (!lines.ok()) return ErrorFromStatus(lines.status());
    Json out = LinesJson(*lines);
    return Ok({{"monument", req.PathParam("name")}, {"count", out.size()}, {"lines", out}});
  });
  server.Handle("POST", "/monuments/{name}/stop", [&monuments](const http::Request& req) {
    auto s = monuments.StopAll(req.PathParam("name"), false);
    if (!s.ok()) return ErrorFromStatus(s.status());
    return Ok(*s);
  });
  server.Handle("DELETE", "/monuments/{name}", [&monuments](const http::Request& req) {
    auto s = monuments.StopAll(req.PathParam("name"), true);
    if (!s.ok()) return ErrorFromStatus(s.status());
    return Ok(*s);
  });
}

}  // namespace

void AddDeployRoutes(http::Server& server, deploy::Deployer& deployer,
                     deploy::Monuments& monuments) {
  AddMonumentRoutes(server, monuments);
  server.Handle("POST", "/deploy/relic",
                [&deployer](const http::Request& req) { return Deploy(deployer, req, ""); });
  server.Handle("POST", "/deploy/relic/{name}", [&deployer](const http::Request& req) {
    return Deploy(deployer, req, req.PathParam("name"));
  });
  server.Handle("GET", "/relics", [&deployer](const http::Request& req) {
    Json all = deployer.ListRelics();
    Json out = Json::array();
    auto state = req.Query("state");
    for (auto& r : all) {
      if (!state || r.value("state", "") == *state) out.push_back(WithLinks(r));
    }
    return Ok({{"count", out.size()}, {"relics", out}});
  });
  auto status = [&deployer](const http::Request& req) {
    auto s = deployer.RelicStatus(req.PathParam("name"));
    if (!s.ok()) return ErrorFromStatus(s.status());
    return Ok(WithLinks(*s));
  };
  server.Handle("GET", "/relics/{name}", status);
  server.Handle("GET", "/relics/{name}/status", status);
  server.Handle("POST", "/relics/{name}/stop", [&deployer](const http::Request& req) {
    bool wait = !req.Query("wait") || IsTrue(req.Query("wait"));
    auto s = deployer.StopRelic(req.PathParam("name"), wait);
    if (!s.ok()) return ErrorFromStatus(s.status());
    return Ok(WithLinks(*s), wait ? 200 : 202);
  });
  auto start = [&deployer](bool restart) {
    return [&deployer, restart](const http::Request& req) {
      auto body = BodyObject(req);
      if (!body.ok()) return ErrorFromStatus(body.status());
      bool wait = false;
      std::chrono::milliseconds timeout{};
      if (Status s = WaitOptions(req, *body, &wait, &timeout); !s.ok()) return ErrorFromStatus(s);
      const std::string name = req.PathParam("name");
      auto s = restart ? deployer.RestartRelic(name) : deployer.StartRelic(name);
      if (!s.ok()) return ErrorFromStatus(s.status());
      if (!wait) return Ok(WithLinks(*s), 202);
      auto done = deployer.WaitRelic(name, timeout);
      if (!done.ok()) return ErrorFromStatus(done.status());
      return Settled(*done);
    };
  };
  server.Handle("POST", "/relics/{name}/start", start(false));
  server.Handle("POST", "/relics/{name}/restart", start(true));
  server.Handle("DELETE", "/relics/{name}", [&deployer](const http::Request& req) {
    const std::string name = req.PathParam("name");
    if (Status s = deployer.DeleteRelic(name); !s.ok()) return ErrorFromStatus(s);
    return Ok({{"name", name}, {"deleted", true}});
  });
  server.Handle("GET", "/relics/{name}/stats", [&deployer](const http::Request& req) {
    auto s = deployer.RelicStats(req.PathParam("name"));
    if (!s.ok()) return ErrorFromStatus(s.status());
    return Ok(*s);
  });
  server.Handle("GET", "/relics/{name}/logs",
                [&deployer](const http::Request& req) { return Logs(deployer, req); });
  server.Handle("POST", "/relics/{name}/scale", [&deployer](const http::Request& req) {
    auto body = BodyObject(req);
    if (!body.ok()) return ErrorFromStatus(body.status());
    auto replicas = body->find("replicas");
    if (replicas == body->end() || !replicas->is_number_integer() || replicas->get<int>() < 0) {
      return ErrorFromStatus(InvalidArgumentError("replicas must be a whole number >= 0"));
    }
    std::string service = body->value("service", "");
    const std::string name = req.PathParam("name");
    if (Status s = deployer.ScaleRelic(name, service, replicas->get<int>()); !s.ok()) {
      return ErrorFromStatus(s);
    }
    auto st = deployer.RelicStatus(name);
    if (!st.ok()) return ErrorFromStatus(st.status());
    return Ok(WithLinks(*st));
  });
  server.Handle("POST", "/relics/{name}/call/{operation}", [&deployer](const http::Request& req) {
    auto body = BodyObject(req);
    if (!body.ok()) return ErrorFromStatus(body.status());
    const std::string name = req.PathParam("name"), op = req.PathParam("operation");
    Json params = body->contains("parameters") && (*body)["parameters"].is_object()
                      ? (*body)["parameters"]
                      : *body;
    auto r = deployer.CallRelic(name, op, params, deploy::Ms(30000), req.traceparent);
    if (!r.ok()) return ErrorFromStatus(r.status());
    Json out = {{"relic", name}, {"operation", op},     {"method", r->method},
                {"url", r->url}, {"status", r->status}, {"result", r->body}};
    if (r->status >= 200 && r->status < 300) return Ok(out);
    return http::ErrorResponse(
        502, "relic_error",
        "relic " + name + " answered " + std::to_string(r->status) + " to " + op, DumpJson(out));
  });
  server.Handle("GET", "/discovery/services", [&deployer](const http::Request&) {
    Json out = Json::array();
    for (const auto& s : deployer.Services()) out.push_back(s.ToJson());
    return Ok({{"count", out.size()}, {"services", out}});
  });
}

}  // namespace cortex::api
