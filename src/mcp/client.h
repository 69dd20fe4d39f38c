// The Model Context Protocol client (docs/mcp.md#using-other-mcp-servers): Cortex calling the
// tools of another MCP server, over stdio (a command it starts and keeps) or Streamable HTTP (a
// URL). A Tool manifest with `implementation.type: mcp` names the server and the tool; the
// executor reaches it through a ClientPool, which keeps one connection per server, starts it on
// first use and again after it died.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/cancel.h"
#include "common/mutex.h"
#include "common/status.h"

namespace cortex::mcp {

using Json = nlohmann::ordered_json;

// Which server: a command (stdio) or a URL (Streamable HTTP).
struct ServerSpec {
  std::vector<std::string> argv;  // argv[0] an absolute path; empty for a URL
  std::string cwd;                // the command's folder
  std::vector<std::string> env;   // "NAME=value": the command's whole environment
  std::string url;                // "http://host:port/mcp"
  std::vector<std::pair<std::string, std::string>> headers;  // sent with every HTTP request
  std::string Key() const;                                   // equal specs share a connection
  std::string Describe() const;  // for messages: the command line, or the URL
};

struct ToolCallResult {
  Json content = Json::array();
  Json structured;  // null when none
  bool is_error = false;
};

// One live session with a server. Requests may come from several threads at once.
class Connection {
 public:
  virtual ~Connection() = default;
  // A JSON-RPC request; its result, or why not: the server's error (its message), Unavailable
  // when the server is gone, DeadlineExceeded, Cancelled. Notifications the server sends about
  // this request (progress) go to `on_notification`.
  virtual Result<Json> Request(const std::string& method, const Json& params,
                               std::chrono::milliseconds timeout, const CancelToken* cancel,
                               const std::function<void(const Json&)>& on_notification) = 0;
  virtual bool alive() const = 0;
};

struct ClientOptions {
  std::string client_name = "cortex";
  std::string client_version;
  std::chrono::milliseconds connect_timeout{30000};  // start + initialize
};

// Starts (or reaches) the server and completes the handshake.
Result<std::unique_ptr<Connection>> Connect(const ServerSpec& spec, const ClientOptions& options);

class ClientPool {
 public:
  explicit ClientPool(ClientOptions options) : options_(std::move(options)) {}
  ~ClientPool();  // ends every connection (stdio servers are stopped)

  // tools/call on the server; `on_progress` gets each progress notification's message (or
  // "progress N/T"). A server that died is started again once, for calls that had not reached it.
  Result<ToolCallResult> CallTool(const ServerSpec& spec, const std::string& tool,
                                  const Json& arguments, std::chrono::milliseconds timeout,
                                  const CancelToken* cancel,
                                  const std::function<void(const std::string&)>& on_progress);
  // tools/list on the server (every page).
  Result<std::vector<Json>> ListTools(const ServerSpec& spec, std::chrono::milliseconds timeout);
  size_t connections() const;

 private:
  Result<std::shared_ptr<Connection>> Get(const ServerSpec& spec);
  void Drop(const ServerSpec& spec, const std::shared_ptr<Connection>& dead);

  const ClientOptions options_;
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<Connection>> connections_ CORTEX_GUARDED_BY(mu_);
  // One connect at a time per server: concurrent first calls share it.
  std::map<std::string, std::shared_ptr<Mutex>> connecting_ CORTEX_GUARDED_BY(mu_);
};

}  // namespace cortex::mcp
