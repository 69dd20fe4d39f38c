// MCP over Streamable HTTP at /mcp (docs/mcp.md), on the API port:
//   POST   /mcp  one JSON-RPC message (or a batch); an initialize starts a session, named by the
//                Mcp-Session-Id header of its answer, which every later request must carry. A
//                request is answered with JSON, or with an event stream when it is a tools/call
//                that asked for progress (the notifications, then the answer). Notifications and
//                responses alone get 202.
//   GET    /mcp  the session's event stream of server notifications (notifications/*/list_changed
//                when the registry reloads).
//   DELETE /mcp  ends the session.
// The service also watches the registry and tells every session when its lists changed.
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "api/mcp_backend.h"
#include "http/http.h"
#include "mcp/server.h"
#include "registry/registry.h"

namespace cortex::api {

class McpService {
 public:
  McpService(registry::Registry& registry, std::unique_ptr<McpBackend> backend,
             mcp::ServerOptions options);
  ~McpService();  // stops watching the registry, closes every session
  McpService(const McpService&) = delete;
  McpService& operator=(const McpService&) = delete;

  void AddRoutes(http::Server& server);
  // The server stops: calls in progress are cancelled and every session is closed (their event
  // streams end); nothing new is watched.
  void Shutdown();
  mcp::Server& server() { return server_; }

 private:
  void WatchRegistry();

  registry::Registry& registry_;
  std::unique_ptr<McpBackend> backend_;
  mcp::Server server_;
  std::shared_ptr<registry::Subscription> subscription_;
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
};

// Whether a browser page from `origin` may call /mcp (DNS rebinding protection): no Origin (not a
// browser), a loopback origin, or the host the request was sent to.
bool McpOriginAllowed(std::string_view origin, std::string_view host);

}  // namespace cortex::api
