#include "api/mcp_routes.h"

#include "common/json.h"
#include "common/log.h"

namespace cortex::api {

namespace {

using mcp::Json;

constexpr const char* kSessionHeader = "Mcp-Session-Id";
constexpr const char* kVersionHeader = "MCP-Protocol-Version";

// Transport-level refusals carry a JSON-RPC error body, as MCP clients expect.
http::Response RpcError(int status, int code, std::string_view message) {
  return http::Response::Json(status, DumpJson(mcp::Server::ErrorResponse(nullptr, code, message)));
}

bool Accepts(const http::Request& req, std::string_view type) {
  auto accept = req.Header("Accept");
  if (!accept) return false;
  return accept->find(type) != std::string::npos || accept->find("*/*") != std::string::npos;
}

mcp::Caller CallerOf(const http::Request& req) {
  mcp::Caller caller;
  caller.role = req.role;
  caller.may_act_on = req.may_act_on;
  caller.traceparent = req.traceparent;
  return caller;
}

bool WantsProgress(const Json& m) {
  if (!mcp::Server::IsRequest(m) || m["method"] != "tools/call") return false;
  const Json* params = m.contains("params") ? &m["params"] : nullptr;
  return params && params->is_object() && params->contains("_meta") &&
         (*params)["_meta"].is_object() && (*params)["_meta"].contains("progressToken");
}

std::string_view HostOnly(std::string_view hostport) {
  if (hostport.starts_with("[")) {
    size_t end = hostport.find(']');
    return end == std::string_view::npos ? hostport : hostport.substr(1, end - 1);
  }
  return hostport.substr(0, hostport.find(':'));
}

}  // namespace

bool McpOriginAllowed(std::string_view origin, std::string_view host) {
  if (origin.empty()) return true;
  size_t scheme = origin.find("://");
  if (scheme == std::string_view::npos) return false;  // "null" (a sandboxed page) included
  std::string_view authority = origin.substr(scheme + 3);
  authority = authority.substr(0, authority.find('/'));
  std::string_view origin_host = HostOnly(authority);
  if (origin_host == "localhost" || origin_host == "127.0.0.1" || origin_host == "::1") {
    return true;
  }
  return !host.empty() && authority == host;
}

McpService::McpService(registry::Registry& registry, std::unique_ptr<McpBackend> backend,
                       mcp::ServerOptions options)
    : registry_(registry),
      backend_(std::move(backend)),
      server_(*backend_, std::move(options)),
      subscription_(registry.Subscribe()) {
  watcher_ = std::thread([this] { WatchRegistry(); });
}

McpService::~McpService() {
  Shutdown();
  registry_.Unsubscribe(subscription_);
}

void McpService::Shutdown() {
  stopping_ = true;
  if (watcher_.joinable()) watcher_.join();
  server_.CloseAll();
}

void McpService::WatchRegistry() {
  while (!stopping_) {
    auto events = subscription_->Wait(std::chrono::milliseconds(200));
    bool changed = false;
    for (const auto& e : events) {
      using T = registry::RegistryEvent::Type;
      if (e.type == T::kAdded || e.type == T::kUpdated || e.type == T::kRemoved ||
          e.type == T::kResync) {
        changed = true;
      }
    }
    if (!changed) continue;
    // Any manifest can be a tool (tools, workflows, agents), a resource, and a prompt (agents).
    server_.Broadcast("notifications/tools/list_changed");
    server_.Broadcast("notifications/resources/list_changed");
    server_.Broadcast("notifications/prompts/list_changed");
  }
}

void McpService::AddRoutes(http::Server& http) {
  http.Handle("POST", "/mcp", [this](const http::Request& req) -> http::Response {
    if (!McpOriginAllowed(req.Header("Origin").value_or(""), req.Header("Host").value_or(""))) {
      return RpcError(403, -32000, "Forbidden: this Origin may not call /mcp");
    }
    if (auto v = req.Header(kVersionHeader); v && !mcp::SupportedProtocolVersion(*v)) {
      return RpcError(400, -32000, "Bad Request: unsupported MCP-Protocol-Version " + *v);
    }
    auto parsed = ParseJson(req.body);
    if (!parsed.ok())
      return RpcError(400, mcp::kParseError, "Parse error: " + parsed.status().message());
    std::vector<Json> messages;
    const bool batch = parsed->is_array();
    if (batch) {
      for (auto& m : *parsed) messages.push_back(std::move(m));
      if (messages.empty()) return RpcError(400, mcp::kInvalidRequest, "an empty batch");
    } else {
      messages.push_back(std::move(parsed).value());
    }
    mcp::Caller caller = CallerOf(req);

    // The handshake: a new session.
    if (std::any_of(messages.begin(), messages.end(), mcp::Server::IsInitialize)) {
      if (messages.size() != 1) {
        return RpcError(400, mcp::kInvalidRequest, "initialize must be sent alone");
      }
      if (auto bad = mcp::Server::CheckMessage(messages[0])) {
        return http::Response::Json(400, DumpJson(*bad));
      }
      auto session = server_.CreateSession();
      if (!session.ok()) return RpcError(503, -32000, session.status().message());
      auto answer = server_.Handle(**session, caller, messages[0], nullptr);
      http::Response resp = http::Response::Json(200, DumpJson(*answer));
      resp.headers.emplace_back(kSessionHeader, (*session)->id());
      return resp;
    }
    auto id = req.Header(kSessionHeader);
    if (!id) {
      return RpcError(400, -32000,
                      "Bad Request: Mcp-Session-Id header is required (send initialize first)");
    }
    std::shared_ptr<mcp::Session> session = server_.FindSession(*id);
    if (!session) return RpcError(404, -32001, "Session not found: initialize again");

    for (const Json& m : messages) {
      if (auto bad = mcp::Server::CheckMessage(m); bad && !batch) {
        return http::Response::Json(400, DumpJson(*bad));
      }
    }
    const bool any_request = std::any_of(messages.begin(), messages.end(), mcp::Server::IsRequest);
    if (!any_request) {
      for (const Json& m : messages) (void)server_.Handle(*session, caller, m, nullptr);
      http::Response resp;
      resp.status = 202;
      resp.content_type = "application/json";
      return resp;
    }
    if (Accepts(req, "text/event-stream") &&
        std::any_of(messages.begin(), messages.end(), WantsProgress)) {
      // Progress goes out as it happens, then the answer; a client that goes away cancels.
      http::Response resp;
      resp.sse = [this, session, caller, messages](http::SseWriter& w) {
        mcp::Notify notify = [&w](const Json& n) { return w.Send("message", DumpJson(n)); };
        for (const Json& m : messages) {
          if (auto answer = server_.Handle(*session, caller, m, notify)) {
            if (!w.Send("message", DumpJson(*answer))) return;
          }
        }
      };
      return resp;
    }
    Json answers = Json::array();
    for (const Json& m : messages) {
      if (auto answer = server_.Handle(*session, caller, m, nullptr)) {
        answers.push_back(std::move(*answer));
      }
    }
    return http::Response::Json(200, DumpJson(batch ? answers : answers[0]));
  });

  http.Handle("GET", "/mcp", [this](const http::Request& req) -> http::Response {
    if (!McpOriginAllowed(req.Header("Origin").value_or(""), req.Header("Host").value_or(""))) {
      return RpcError(403, -32000, "Forbidden: this Origin may not call /mcp");
    }
    if (!Accepts(req, "text/event-stream")) {
      http::Response resp =
          RpcError(405, -32000, "GET /mcp is an event stream: Accept: text/event-stream");
      resp.headers.emplace_back("Allow", "GET, POST, DELETE");
      return resp;
    }
    auto id = req.Header(kSessionHeader);
    if (!id) return RpcError(400, -32000, "Bad Request: Mcp-Session-Id header is required");
    std::shared_ptr<mcp::Session> session = server_.FindSession(*id);
    if (!session) return RpcError(404, -32001, "Session not found: initialize again");
    http::Response resp;
    resp.sse = [session](http::SseWriter& w) {
      http::SseKeepAlive keep_alive(w);
      while (w.IsOpen() && !session->closed()) {
        for (const Json& note : session->TakeNotifications(std::chrono::milliseconds(200))) {
          if (!w.Send("message", DumpJson(note))) return;
          keep_alive.Sent();
        }
        if (!keep_alive.Tick()) return;
      }
    };
    return resp;
  });

  http.Handle("DELETE", "/mcp", [this](const http::Request& req) -> http::Response {
    auto id = req.Header(kSessionHeader);
    if (!id) return RpcError(400, -32000, "Bad Request: Mcp-Session-Id header is required");
    if (!server_.CloseSession(*id)) return RpcError(404, -32001, "Session not found");
    return http::Response::Json(200, "{}");
  });
}

}  // namespace cortex::api
