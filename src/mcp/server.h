// The Model Context Protocol server (docs/mcp.md): JSON-RPC 2.0 messages in, answers and
// notifications out, over whatever transport carries them (Streamable HTTP at /mcp, stdio through
// `cortex mcp`). This module knows the protocol (the handshake and version negotiation, sessions,
// tools, resources, prompts, progress, cancellation, list_changed); what a tool, resource or
// prompt is comes from a Backend, which the composition root (api/) builds over the registry,
// the executor, the workflow engine and the agent runner.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/cancel.h"
#include "common/mutex.h"
#include "common/status.h"

namespace cortex::mcp {

using Json = nlohmann::ordered_json;

// The versions this server speaks, newest first. A client asking for one of them gets it; any
// other gets the newest, and may disconnect if it cannot speak it (the specification's rule).
inline constexpr std::string_view kProtocolVersions[] = {"2025-06-18", "2025-03-26", "2024-11-05"};
bool SupportedProtocolVersion(std::string_view version);

// JSON-RPC error codes.
inline constexpr int kParseError = -32700;
inline constexpr int kInvalidRequest = -32600;
inline constexpr int kMethodNotFound = -32601;
inline constexpr int kInvalidParams = -32602;
inline constexpr int kInternalError = -32603;
inline constexpr int kResourceNotFound = -32002;  // MCP's code for resources/read

// Who sends the messages: the transport fills it from the authenticated request.
struct Caller {
  // "viewer", "operator" or "admin"; "" when authentication is off (everything is allowed).
  std::string role;
  // Whether the caller may act on a manifest (a scoped key); null: on any.
  std::function<Status(std::string_view kind, std::string_view name)> may_act_on;
  std::string traceparent;  // the request's trace context, for the work a call starts

  // Calling tools runs things: it needs the operator role, like POST /execute/tool.
  bool may_run() const { return role.empty() || role == "operator" || role == "admin"; }
  bool may_see(std::string_view kind, std::string_view name) const {
    return !may_act_on || may_act_on(kind, name).ok();
  }
};

struct ToolInfo {
  std::string name;
  std::string title;
  std::string description;
  Json input_schema;   // a JSON Schema object
  Json output_schema;  // null when none is declared
  Json annotations;    // null, or {readOnlyHint, destructiveHint, ...}
};

// A tool's outcome. A tool that failed (its exit, its limits, bad arguments) is a result with
// is_error set and the reason in its content, so that the model reading it can act on it; a
// Status error from CallTool is a protocol error instead (an unknown tool, say).
struct ToolResult {
  Json content = Json::array();  // [{"type": "text", "text": ...}, ...]
  Json structured;               // structuredContent, null when none
  bool is_error = false;
};

struct ResourceInfo {
  std::string uri, name, title, description, mime_type;
};

struct ResourceContents {
  std::string uri, mime_type, text;
};

struct PromptArgument {
  std::string name, description;
  bool required = false;
};

struct PromptInfo {
  std::string name, title, description;
  std::vector<PromptArgument> arguments;
};

struct PromptResult {
  std::string description;
  Json messages = Json::array();  // [{"role": "user", "content": {"type": "text", "text": ...}}]
};

// A call's cancellation (notifications/cancelled, the client gone, the session closed): a flag
// the work polls, and hooks that run once, when it is cancelled, on the cancelling thread.
class CallCancel {
 public:
  void Cancel();
  // Runs `hook` when the call is cancelled (at once when it already is).
  void OnCancel(std::function<void()> hook);
  const CancelToken* token() const { return &token_; }

 private:
  Mutex mu_;
  CancelToken token_;
  std::vector<std::function<void()>> hooks_ CORTEX_GUARDED_BY(mu_);
  bool fired_ CORTEX_GUARDED_BY(mu_) = false;
};

// What a running call may use: progress notifications (when the client asked for them) and the
// cancellation the client sent (notifications/cancelled) or its going away.
struct CallContext {
  // Reports progress: `progress` only grows; `total` when known. Does nothing when the client
  // gave no progress token.
  std::function<void(double progress, std::optional<double> total, const std::string& message)>
      progress;
  bool progress_requested = false;  // the client gave a progress token
  const CancelToken* cancel = nullptr;
  // Registers what stops the work when the call is cancelled (e.g. the executor's Cancel of a
  // call running on this very thread); runs at once when it already is.
  std::function<void(std::function<void()>)> on_cancel;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::vector<ToolInfo> ListTools(const Caller& caller) = 0;
  virtual Result<ToolResult> CallTool(const Caller& caller, const std::string& name,
                                      const Json& arguments, CallContext& context) = 0;
  virtual std::vector<ResourceInfo> ListResources(const Caller& caller) = 0;
  // NotFound for an unknown URI.
  virtual Result<std::vector<ResourceContents>> ReadResource(const Caller& caller,
                                                             const std::string& uri) = 0;
  virtual std::vector<PromptInfo> ListPrompts(const Caller& caller) = 0;
  virtual Result<PromptResult> GetPrompt(const Caller& caller, const std::string& name,
                                         const Json& arguments) = 0;
};

// One client's session: created by its initialize request, named by Mcp-Session-Id on HTTP.
class Session {
 public:
  explicit Session(std::string id) : id_(std::move(id)) {}
  const std::string& id() const { return id_; }
  std::string protocol_version() const;
  bool initialized() const;

  // Server-to-client messages not tied to a request (notifications/tools/list_changed): queued
  // here until the session's stream takes them. Waits up to `wait` for one.
  std::vector<Json> TakeNotifications(std::chrono::milliseconds wait);
  // Wakes a TakeNotifications and makes it return (the session is closing).
  void Close();
  bool closed() const;

 private:
  friend class Server;
  void Push(Json message);
  // A call in flight, by its request id (as JSON text), for notifications/cancelled.
  std::shared_ptr<CallCancel> BeginCall(const std::string& request_id);
  void EndCall(const std::string& request_id);
  void CancelCall(const std::string& request_id);

  const std::string id_;
  mutable Mutex mu_;
  std::condition_variable cv_;
  std::string protocol_version_ CORTEX_GUARDED_BY(mu_);
  bool initialized_ CORTEX_GUARDED_BY(mu_) = false;
  bool closed_ CORTEX_GUARDED_BY(mu_) = false;
  Json client_info_ CORTEX_GUARDED_BY(mu_);
  std::deque<Json> outbox_ CORTEX_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<CallCancel>> calls_ CORTEX_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point last_used_ CORTEX_GUARDED_BY(mu_) =
      std::chrono::steady_clock::now();
};

struct ServerOptions {
  std::string name = "cortex";
  std::string version;
  std::string instructions;  // shown to the client's model at the handshake ("" = none)
  size_t max_sessions = 1024;
  // A session nobody used for this long is forgotten (its client must initialize again).
  std::chrono::seconds session_idle{3600};
  size_t max_queued_notifications = 256;  // per session; older ones are dropped past this
};

// Sends one message to the client (a progress notification while a call runs). False once the
// client is gone.
using Notify = std::function<bool(const Json& message)>;

class Server {
 public:
  Server(Backend& backend, ServerOptions options);

  // A JSON-RPC message, checked: an object with "jsonrpc": "2.0" and a request, notification or
  // response shape. Answers the error response to send (with the id when one could be read).
  static std::optional<Json> CheckMessage(const Json& message);
  static bool IsRequest(const Json& message);     // has a method and an id
  static bool IsInitialize(const Json& message);  // the initialize request
  static Json ErrorResponse(const Json& id, int code, std::string_view message);

  // Sessions. Create refuses (ResourceExhausted) past max_sessions once idle ones are gone.
  Result<std::shared_ptr<Session>> CreateSession();
  std::shared_ptr<Session> FindSession(const std::string& id);
  bool CloseSession(const std::string& id);
  void CloseAll();  // every session (the server stops): their calls are cancelled
  size_t session_count() const;

  // Handles one message of `session` (checked with CheckMessage first). A request gets its
  // response; a notification or a response gets nullopt. Notifications the handling produces
  // (progress) go to `notify` before the response is returned.
  std::optional<Json> Handle(Session& session, const Caller& caller, const Json& message,
                             const Notify& notify);

  // Queues a notification (e.g. "notifications/tools/list_changed") to every initialized
  // session.
  void Broadcast(const std::string& method);

 private:
  Json Initialize(Session& session, const Json& params);
  Result<Json> Dispatch(Session& session, const Caller& caller, const std::string& method,
                        const Json& params, const Json& id, const Notify& notify);
  Result<Json> CallTool(Session& session, const Caller& caller, const Json& params, const Json& id,
                        const Notify& notify);
  void ForgetIdle() CORTEX_REQUIRES(mu_);

  Backend& backend_;
  const ServerOptions options_;
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_ CORTEX_GUARDED_BY(mu_);
};

// The text content of a tool result: [{"type": "text", "text": text}].
Json TextContent(std::string text);

}  // namespace cortex::mcp
