#include "mcp/server.h"

#include <sys/random.h>

#include <algorithm>
#include <cstdio>

#include "common/json.h"
#include "common/log.h"

namespace cortex::mcp {

namespace {

constexpr const char* kComponent = "mcp";

// 128 random bits from the kernel, as hex: a session id nobody can guess.
std::string NewSessionId() {
  unsigned char bytes[16];
  size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  std::string id = "mcp_";
  char hex[3];
  for (unsigned char b : bytes) {
    std::snprintf(hex, sizeof hex, "%02x", b);
    id += hex;
  }
  return id;
}

int CodeFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
      return kInvalidParams;
    default:
      return kInternalError;
  }
}

Json ToolJson(const ToolInfo& t) {
  Json j = {{"name", t.name}};
  if (!t.title.empty()) j["title"] = t.title;
  j["description"] = t.description;
  j["inputSchema"] = t.input_schema.is_object() ? t.input_schema : Json{{"type", "object"}};
  if (t.output_schema.is_object()) j["outputSchema"] = t.output_schema;
  if (t.annotations.is_object()) j["annotations"] = t.annotations;
  return j;
}

// A string or an integer (JSON-RPC ids and progress tokens).
bool IsIdValue(const Json& v) { return v.is_string() || v.is_number_integer(); }

}  // namespace

bool SupportedProtocolVersion(std::string_view version) {
  return std::find(std::begin(kProtocolVersions), std::end(kProtocolVersions), version) !=
         std::end(kProtocolVersions);
}

Json TextContent(std::string text) {
  return Json::array({Json{{"type", "text"}, {"text", std::move(text)}}});
}

// ---- Session ------------------------------------------------------------------------------

std::string Session::protocol_version() const {
  MutexLock lock(mu_);
  return protocol_version_;
}

bool Session::initialized() const {
  MutexLock lock(mu_);
  return initialized_;
}

bool Session::closed() const {
  MutexLock lock(mu_);
  return closed_;
}

std::vector<Json> Session::TakeNotifications(std::chrono::milliseconds wait) {
  MutexLock lock(mu_);
  cv_.wait_for(lock.native(), wait,
               [&]() CORTEX_REQUIRES(mu_) { return closed_ || !outbox_.empty(); });
  std::vector<Json> out(std::make_move_iterator(outbox_.begin()),
                        std::make_move_iterator(outbox_.end()));
  outbox_.clear();
  last_used_ = std::chrono::steady_clock::now();
  return out;
}

void CallCancel::Cancel() {
  std::vector<std::function<void()>> hooks;
  {
    MutexLock lock(mu_);
    if (fired_) return;
    fired_ = true;
    token_.Cancel();
    hooks.swap(hooks_);
  }
  for (auto& hook : hooks) hook();
}

void CallCancel::OnCancel(std::function<void()> hook) {
  {
    MutexLock lock(mu_);
    if (!fired_) {
      hooks_.push_back(std::move(hook));
      return;
    }
  }
  hook();
}

void Session::Close() {
  std::vector<std::shared_ptr<CallCancel>> calls;
  {
    MutexLock lock(mu_);
    closed_ = true;
    for (auto& [id, call] : calls_) calls.push_back(call);
  }
  cv_.notify_all();
  for (auto& call : calls) call->Cancel();  // outside the lock: the hooks call out
}

void Session::Push(Json message) {
  {
    MutexLock lock(mu_);
    if (closed_) return;
    outbox_.push_back(std::move(message));
  }
  cv_.notify_all();
}

std::shared_ptr<CallCancel> Session::BeginCall(const std::string& request_id) {
  auto call = std::make_shared<CallCancel>();
  bool closed;
  {
    MutexLock lock(mu_);
    closed = closed_;
    calls_[request_id] = call;
  }
  if (closed) call->Cancel();
  return call;
}

void Session::EndCall(const std::string& request_id) {
  MutexLock lock(mu_);
  calls_.erase(request_id);
}

void Session::CancelCall(const std::string& request_id) {
  std::shared_ptr<CallCancel> call;
  {
    MutexLock lock(mu_);
    if (auto it = calls_.find(request_id); it != calls_.end()) call = it->second;
  }
  if (call) call->Cancel();
}

// ---- Server -------------------------------------------------------------------------------

Server::Server(Backend& backend, ServerOptions options)
    : backend_(backend), options_(std::move(options)) {}

Json Server::ErrorResponse(const Json& id, int code, std::string_view message) {
  return Json{{"jsonrpc", "2.0"},
              {"id", IsIdValue(id) ? id : Json(nullptr)},
              {"error", {{"code", code}, {"message", std::string(message)}}}};
}

std::optional<Json> Server::CheckMessage(const Json& m) {
  if (!m.is_object()) {
    return ErrorResponse(nullptr, kInvalidRequest, "a JSON-RPC message must be an object");
  }
  Json id = m.contains("id") ? m["id"] : Json(nullptr);
  auto v = m.find("jsonrpc");
  if (v == m.end() || *v != "2.0") {
    return ErrorResponse(id, kInvalidRequest, "\"jsonrpc\" must be \"2.0\"");
  }
  if (m.contains("id") && !IsIdValue(m["id"])) {
    return ErrorResponse(nullptr, kInvalidRequest, "\"id\" must be a string or an integer");
  }
  if (auto method = m.find("method"); method != m.end()) {
    if (!method->is_string())
      return ErrorResponse(id, kInvalidRequest, "\"method\" must be a string");
    if (auto p = m.find("params"); p != m.end() && !p->is_object() && !p->is_null()) {
      return ErrorResponse(id, kInvalidParams, "\"params\" must be an object");
    }
    return std::nullopt;
  }
  if (m.contains("id") && (m.contains("result") || m.contains("error"))) return std::nullopt;
  return ErrorResponse(id, kInvalidRequest,
                       "not a request, a notification or a response (no \"method\")");
}

bool Server::IsRequest(const Json& m) {
  return m.is_object() && m.contains("method") && m.contains("id");
}

bool Server::IsInitialize(const Json& m) { return IsRequest(m) && m["method"] == "initialize"; }

Result<std::shared_ptr<Session>> Server::CreateSession() {
  MutexLock lock(mu_);
  ForgetIdle();
  if (sessions_.size() >= options_.max_sessions) {
    // Full: the session used least recently that has no call in flight makes room (its client
    // gets 404 and initializes again, as after a restart).
    auto victim = sessions_.end();
    auto oldest = std::chrono::steady_clock::time_point::max();
    for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
      Session& s = *it->second;
      MutexLock session_lock(s.mu_);
      if (s.calls_.empty() && s.last_used_ < oldest) {
        oldest = s.last_used_;
        victim = it;
      }
    }
    if (victim == sessions_.end()) {
      return ResourceExhaustedError("too many MCP sessions (" + std::to_string(sessions_.size()) +
                                    "), each with a call in flight; retry later");
    }
    victim->second->Close();
    sessions_.erase(victim);
  }
  auto session = std::make_shared<Session>(NewSessionId());
  sessions_[session->id()] = session;
  return session;
}

std::shared_ptr<Session> Server::FindSession(const std::string& id) {
  MutexLock lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return nullptr;
  {
    MutexLock session_lock(it->second->mu_);
    it->second->last_used_ = std::chrono::steady_clock::now();
  }
  return it->second;
}

bool Server::CloseSession(const std::string& id) {
  std::shared_ptr<Session> session;
  {
    MutexLock lock(mu_);
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return false;
    session = it->second;
    sessions_.erase(it);
  }
  session->Close();
  return true;
}

void Server::CloseAll() {
  std::map<std::string, std::shared_ptr<Session>> sessions;
  {
    MutexLock lock(mu_);
    sessions.swap(sessions_);
  }
  for (auto& [id, s] : sessions) s->Close();
}

size_t Server::session_count() const {
  MutexLock lock(mu_);
  return sessions_.size();
}

void Server::ForgetIdle() {
  const auto now = std::chrono::steady_clock::now();
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    bool idle;
    {
      Session& s = *it->second;
      MutexLock lock(s.mu_);
      idle = s.calls_.empty() && now - s.last_used_ > options_.session_idle;
    }
    if (idle) {
      it->second->Close();
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
}

void Server::Broadcast(const std::string& method) {
  std::vector<std::shared_ptr<Session>> sessions;
  {
    MutexLock lock(mu_);
    for (auto& [id, s] : sessions_) sessions.push_back(s);
  }
  Json note = {{"jsonrpc", "2.0"}, {"method", method}};
  for (auto& s : sessions) {
    if (!s->initialized()) continue;
    {
      MutexLock lock(s->mu_);
      // A client that never reads its stream must not grow it without bound; a list_changed
      // already queued says the same as a new one.
      bool queued = std::any_of(s->outbox_.begin(), s->outbox_.end(),
                                [&](const Json& m) { return m.value("method", "") == method; });
      if (queued) continue;
      if (s->outbox_.size() >= options_.max_queued_notifications) s->outbox_.pop_front();
    }
    s->Push(note);
  }
}

Json Server::Initialize(Session& session, const Json& params) {
  std::string asked = params.is_object() ? params.value("protocolVersion", "") : "";
  std::string version = SupportedProtocolVersion(asked) ? asked : std::string(kProtocolVersions[0]);
  {
    MutexLock lock(session.mu_);
    session.protocol_version_ = version;
    if (params.is_object() && params.contains("clientInfo")) {
      session.client_info_ = params["clientInfo"];
    }
  }
  Json result = {{"protocolVersion", version},
                 {"capabilities",
                  {{"tools", {{"listChanged", true}}},
                   {"resources", {{"listChanged", true}}},
                   {"prompts", {{"listChanged", true}}}}},
                 {"serverInfo", {{"name", options_.name}, {"version", options_.version}}}};
  if (!options_.instructions.empty()) result["instructions"] = options_.instructions;
  return result;
}

std::optional<Json> Server::Handle(Session& session, const Caller& caller, const Json& message,
                                   const Notify& notify) {
  if (auto bad = CheckMessage(message)) return IsRequest(message) ? bad : std::nullopt;
  if (!message.contains("method")) return std::nullopt;  // a response: this server asks nothing
  const std::string method = message["method"].get<std::string>();
  const Json params = message.contains("params") && message["params"].is_object()
                          ? message["params"]
                          : Json::object();
  if (!message.contains("id")) {
    // Notifications.
    if (method == "notifications/initialized") {
      MutexLock lock(session.mu_);
      session.initialized_ = true;
    } else if (method == "notifications/cancelled" && params.contains("requestId")) {
      session.CancelCall(DumpJson(params["requestId"]));
    }
    return std::nullopt;
  }
  const Json& id = message["id"];
  Result<Json> result = Dispatch(session, caller, method, params, id, notify);
  if (!result.ok()) {
    const Status& st = result.status();
    int code = st.code() == StatusCode::kUnimplemented ? kMethodNotFound : CodeFor(st);
    if (method == "resources/read" && st.code() == StatusCode::kNotFound) code = kResourceNotFound;
    return ErrorResponse(id, code, st.message());
  }
  return Json{{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result).value()}};
}

Result<Json> Server::Dispatch(Session& session, const Caller& caller, const std::string& method,
                              const Json& params, const Json& id, const Notify& notify) {
  if (method == "initialize") return Initialize(session, params);
  if (method == "ping") return Json::object();
  if (method == "tools/list") {
    Json tools = Json::array();
    for (const ToolInfo& t : backend_.ListTools(caller)) tools.push_back(ToolJson(t));
    return Json{{"tools", std::move(tools)}};
  }
  if (method == "tools/call") return CallTool(session, caller, params, id, notify);
  if (method == "resources/list") {
    Json list = Json::array();
    for (const ResourceInfo& r : backend_.ListResources(caller)) {
      Json j = {{"uri", r.uri}, {"name", r.name}};
      if (!r.title.empty()) j["title"] = r.title;
      if (!r.description.empty()) j["description"] = r.description;
      if (!r.mime_type.empty()) j["mimeType"] = r.mime_type;
      list.push_back(std::move(j));
    }
    return Json{{"resources", std::move(list)}};
  }
  if (method == "resources/templates/list") return Json{{"resourceTemplates", Json::array()}};
  if (method == "resources/read") {
    auto uri = params.find("uri");
    if (uri == params.end() || !uri->is_string()) {
      return InvalidArgumentError("resources/read needs \"uri\" (a string)");
    }
    CORTEX_ASSIGN_OR_RETURN(auto contents, backend_.ReadResource(caller, uri->get<std::string>()));
    Json list = Json::array();
    for (const ResourceContents& c : contents) {
      list.push_back({{"uri", c.uri}, {"mimeType", c.mime_type}, {"text", c.text}});
    }
    return Json{{"contents", std::move(list)}};
  }
  if (method == "prompts/list") {
    Json list = Json::array();
    for (const PromptInfo& p : backend_.ListPrompts(caller)) {
      Json j = {{"name", p.name}};
      if (!p.title.empty()) j["title"] = p.title;
      if (!p.description.empty()) j["description"] = p.description;
      Json args = Json::array();
      for (const PromptArgument& a : p.arguments) {
        args.push_back(
            {{"name", a.name}, {"description", a.description}, {"required", a.required}});
      }
      if (!args.empty()) j["arguments"] = std::move(args);
      list.push_back(std::move(j));
    }
    return Json{{"prompts", std::move(list)}};
  }
  if (method == "prompts/get") {
    auto name = params.find("name");
    if (name == params.end() || !name->is_string()) {
      return InvalidArgumentError("prompts/get needs \"name\" (a string)");
    }
    Json args = params.contains("arguments") && params["arguments"].is_object()
                    ? params["arguments"]
                    : Json::object();
    CORTEX_ASSIGN_OR_RETURN(PromptResult p,
                            backend_.GetPrompt(caller, name->get<std::string>(), args));
    Json j = {{"messages", std::move(p.messages)}};
    if (!p.description.empty()) j["description"] = p.description;
    return j;
  }
  return Status(StatusCode::kUnimplemented, "method not found: " + method);
}

Result<Json> Server::CallTool(Session& session, const Caller& caller, const Json& params,
                              const Json& id, const Notify& notify) {
  auto name = params.find("name");
  if (name == params.end() || !name->is_string()) {
    return InvalidArgumentError("tools/call needs \"name\" (a string)");
  }
  Json arguments = Json::object();
  if (auto a = params.find("arguments"); a != params.end() && !a->is_null()) {
    if (!a->is_object()) return InvalidArgumentError("\"arguments\" must be an object");
    arguments = *a;
  }
  Json token;
  if (auto meta = params.find("_meta"); meta != params.end() && meta->is_object()) {
    if (auto t = meta->find("progressToken"); t != meta->end() && IsIdValue(*t)) token = *t;
  }
  const std::string request_key = DumpJson(id);
  std::shared_ptr<CallCancel> cancel = session.BeginCall(request_key);
  CallContext context;
  context.cancel = cancel->token();
  context.on_cancel = [cancel](std::function<void()> hook) { cancel->OnCancel(std::move(hook)); };
  context.progress_requested = !token.is_null() && notify != nullptr;
  double last_progress = -1;
  context.progress = [&](double progress, std::optional<double> total, const std::string& message) {
    if (token.is_null() || !notify || progress <= last_progress) return;
    last_progress = progress;
    Json p = {{"progressToken", token}, {"progress", progress}};
    if (total) p["total"] = *total;
    if (!message.empty()) p["message"] = message;
    if (!notify(Json{{"jsonrpc", "2.0"}, {"method", "notifications/progress"}, {"params", p}})) {
      cancel->Cancel();  // the client went away
    }
  };
  Result<ToolResult> result = InvalidArgumentError("");
  try {
    result = backend_.CallTool(caller, name->get<std::string>(), arguments, context);
  } catch (const std::exception& e) {
    log::Error(kComponent, std::string("bug: tools/call threw: ") + e.what());
    result = InternalError(std::string("internal error: ") + e.what());
  }
  session.EndCall(request_key);
  if (!result.ok()) return result.status();
  Json j = {{"content", std::move(result->content)}, {"isError", result->is_error}};
  if (!result->structured.is_null() && session.protocol_version() >= "2025-06-18") {
    j["structuredContent"] = std::move(result->structured);
  }
  return j;
}

}  // namespace cortex::mcp
