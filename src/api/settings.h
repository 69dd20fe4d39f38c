// Settings of `cortex serve`: cortex.yml, then the environment, then flags (each overrides the
// one before).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "registry/schema.h"

namespace cortex::api {

struct HttpSettings {
  int64_t threads = 64;
  int64_t keep_alive_seconds = 5;
  int64_t max_body_bytes = 8 << 20;
  int64_t read_timeout_seconds = 10;
  int64_t max_header_bytes = 64 << 10;
  int64_t max_header_count = 100;
  int64_t max_connections = 10000;
  int64_t max_streams = 4096;
  // Names a request's Host may give besides IP addresses, localhost and the listen host
  // (DNS rebinding is refused); "*" = any. See api/request_guard.h.
  std::vector<std::string> allowed_hosts;
  // Web origins (scheme://host[:port]) whose pages may call the API; "*" = any.
  std::vector<std::string> allowed_origins;
  // HTTPS on every port when both are set (PEM files; env CORTEX_TLS_CERT, CORTEX_TLS_KEY).
  std::string tls_cert, tls_key;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("threads", s.threads, {.min = 2, .max = 4096});
    v.Field("tls_cert", s.tls_cert);
    v.Field("tls_key", s.tls_key);
    v.Field("keep_alive_seconds", s.keep_alive_seconds, {.min = 0, .max = 3600});
    v.Field("max_body_bytes", s.max_body_bytes, {.min = 1024});
    v.Field("read_timeout_seconds", s.read_timeout_seconds, {.min = 1, .max = 3600});
    v.Field("max_header_bytes", s.max_header_bytes, {.min = 1024, .max = 16 << 20});
    v.Field("max_header_count", s.max_header_count, {.min = 8, .max = 100000});
    v.Field("max_connections", s.max_connections, {.min = 16, .max = 1000000});
    v.Field("max_streams", s.max_streams, {.min = 1, .max = 100000});
    v.Field("allowed_hosts", s.allowed_hosts);
    v.Field("allowed_origins", s.allowed_origins);
  }
};

struct RegistrySettings {
  bool strict = false;
  bool watch = true;
  int64_t max_manifest_bytes = 1 << 20;
  int64_t debounce_ms = 2;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("strict", s.strict);
    v.Field("watch", s.watch);
    v.Field("max_manifest_bytes", s.max_manifest_bytes, {.min = 1024});
    v.Field("debounce_ms", s.debounce_ms, {.min = 0, .max = 10000});
  }
};

// The seed design's per-service ports; each serves only its own routes, beside the gateway.
struct ServicePorts {
  std::optional<std::string> registry;   // "127.0.0.1:8082"
  std::optional<std::string> executor;   // "127.0.0.1:8083"
  std::optional<std::string> deployer;   // "127.0.0.1:8084"
  std::optional<std::string> workflows;  // "127.0.0.1:8085"
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("registry", s.registry);
    v.Field("executor", s.executor);
    v.Field("deployer", s.deployer, {.aliases = {"deployment_controller"}});
    v.Field("workflows", s.workflows, {.aliases = {"workflow_engine"}});
  }
};

struct ExecSettings {
  int64_t workers = 4;
  int64_t queue = 64;
  bool sandbox = true;             // bubblewrap
  bool allow_unsandboxed = false;  // when the sandbox is off or unusable
  // How a sandboxed tool with network: true is connected: "isolated" (a network namespace of its
  // own through pasta: no host loopback services) or "host" (the host's namespace, loopback
  // included).
  std::string tool_network = "isolated";
  registry::Duration default_timeout{30};
  std::string default_memory = "512M";
  int64_t default_max_processes = 64;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("workers", s.workers, {.min = 1, .max = 256});
    v.Field("queue", s.queue, {.min = 1, .max = 100000});
    v.Field("sandbox", s.sandbox);
    v.Field("allow_unsandboxed", s.allow_unsandboxed);
    v.Field("tool_network", s.tool_network, {.one_of = {"isolated", "host"}});
    v.Field("default_timeout", s.default_timeout);
    v.Field("default_memory", s.default_memory);
    v.Field("default_max_processes", s.default_max_processes, {.min = 1});
  }
};

struct DeploySettings {
  // Publish discovery to Redis ("redis://[:password@]host:port/db"); "" = off.
  std::string redis_url;
  bool stop_relics_on_exit = false;  // else relics keep running and are adopted at next start
  bool allow_root_relics = false;    // a process relic may run as root (its `user: root`)
  int64_t max_restarts = 5;          // consecutive crashes before a relic is failed
  std::string docker_socket = "/var/run/docker.sock";  // the Docker Engine API (compose relics)
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("redis_url", s.redis_url);
    v.Field("docker_socket", s.docker_socket);
    v.Field("stop_relics_on_exit", s.stop_relics_on_exit);
    v.Field("allow_root_relics", s.allow_root_relics);
    v.Field("max_restarts", s.max_restarts, {.min = 0, .max = 1000});
  }
};

// ${VAR} in manifests: files on disk read the server's environment; manifests posted through the
// API only the names listed here (exact, or a prefix ending in '*').
struct VariablesSettings {
  std::vector<std::string> allow_env;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("allow_env", s.allow_env);
  }
};

// A model provider (docs/llm.md). The names google, openai, anthropic, ollama and groq have
// documented defaults; declaring one overrides what it sets.
struct LlmProviderSettings {
  std::string name;
  std::string type;  // openai | anthropic | replay ("" = the default name's, else openai)
  std::string base_url;
  std::string api_key_env;
  std::string model;
  std::string replay_file;
  std::string ca_bundle;
  int64_t max_concurrency = 8;
  int64_t max_retries = 2;
  int64_t breaker_failures = 5;
  registry::Duration breaker_recovery{30};
  registry::Duration connect_timeout{10};
  registry::Duration first_token_timeout{60};
  registry::Duration total_timeout{300};
  double input_price_per_mtok = 0, output_price_per_mtok = 0;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("name", s.name, {.required = true});
    v.Field("type", s.type, {.one_of = {"openai", "anthropic", "replay"}});
    v.Field("base_url", s.base_url);
    v.Field("api_key_env", s.api_key_env);
    v.Field("model", s.model);
    v.Field("replay_file", s.replay_file);
    v.Field("ca_bundle", s.ca_bundle);
    v.Field("max_concurrency", s.max_concurrency, {.min = 1, .max = 10000});
    v.Field("max_retries", s.max_retries, {.min = 0, .max = 10});
    v.Field("breaker_failures", s.breaker_failures, {.min = 1});
    v.Field("breaker_recovery", s.breaker_recovery);
    v.Field("connect_timeout", s.connect_timeout);
    v.Field("first_token_timeout", s.first_token_timeout);
    v.Field("total_timeout", s.total_timeout);
    v.Field("input_price_per_mtok", s.input_price_per_mtok, {.min = 0});
    v.Field("output_price_per_mtok", s.output_price_per_mtok, {.min = 0});
  }
};

struct LlmSettings {
  std::string default_provider = "openai";  // for agents without cognitive_engine
  std::vector<LlmProviderSettings> providers;
  int64_t max_iterations = 50;      // an agent's iteration_cap 0 (unlimited) stops here
  registry::Duration max_run{600};  // wall-clock limit of one agent run
  int64_t observation_bytes = 16384;
  int64_t max_parallel_actions = 5;
  int64_t max_agent_depth = 3;           // sub-agents of sub-agents of ...
  bool dispatch_at_message_end = false;  // for comparison only (bench/agent_bench)
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("default_provider", s.default_provider);
    v.Field("providers", s.providers);
    v.Field("max_iterations", s.max_iterations, {.min = 1, .max = 10000});
    v.Field("max_run", s.max_run);
    v.Field("observation_bytes", s.observation_bytes, {.min = 256});
    v.Field("max_parallel_actions", s.max_parallel_actions, {.min = 1, .max = 256});
    v.Field("max_agent_depth", s.max_agent_depth, {.min = 0, .max = 16});
    v.Field("dispatch_at_message_end", s.dispatch_at_message_end);
  }
};

// JWTs from an external identity provider (api/jwt.h).
struct JwtSettings {
  std::string issuer, audience;
  std::string jwks_file;  // the provider's JSON Web Key Set, saved to a file, or
  std::string jwks_url;   // where the provider serves it (fetched again to follow rotations)
  int64_t jwks_refresh_seconds = 300;
  std::string jwks_ca_file;  // https:// JWKS URLs: the CA certificates to trust ("" = system's)
  std::string role_claim = "cortex_role";
  std::string scope_claim = "cortex_scopes";
  int64_t leeway_seconds = 60;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("issuer", s.issuer);
    v.Field("audience", s.audience);
    v.Field("jwks_file", s.jwks_file);
    v.Field("jwks_url", s.jwks_url);
    v.Field("jwks_refresh_seconds", s.jwks_refresh_seconds, {.min = 1, .max = 86400});
    v.Field("jwks_ca_file", s.jwks_ca_file);
    v.Field("role_claim", s.role_claim);
    v.Field("scope_claim", s.scope_claim);
    v.Field("leeway_seconds", s.leeway_seconds, {.min = 0, .max = 3600});
  }
};

struct AuthSettings {
  // auto: on unless every port listens on loopback; on; off (only allowed on loopback, or with
  // `allow_open: true` for a network that is trusted by other means).
  std::string mode = "auto";
  bool allow_open = false;
  double rate_limit = 0;  // requests a second per key (or remote address); 0 = none
  double rate_burst = 0;  // the bucket's size; 0 = one second's worth
  JwtSettings jwt;        // off unless jwt.issuer is set
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("mode", s.mode, {.one_of = {"auto", "on", "off"}});
    v.Field("jwt", s.jwt);
    v.Field("allow_open", s.allow_open);
    v.Field("rate_limit", s.rate_limit, {.min = 0});
    v.Field("rate_burst", s.rate_burst, {.min = 0});
  }
};

// Spans of requests, tool calls, workflow runs and steps, agent runs and actions, sent over
// OTLP/HTTP JSON (docs/metrics.md#tracing). Env: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the full
// URL), OTEL_EXPORTER_OTLP_ENDPOINT (the base), OTEL_SERVICE_NAME.
struct TracingSettings {
  std::string otlp_endpoint;  // "" = spans are not exported (contexts are still carried)
  // The traces URL itself, used as given (no /v1/traces added); wins over otlp_endpoint.
  std::string otlp_traces_endpoint;
  std::string service_name = "cortex";
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("otlp_endpoint", s.otlp_endpoint);
    v.Field("otlp_traces_endpoint", s.otlp_traces_endpoint);
    v.Field("service_name", s.service_name);
  }
};

// The MCP server at /mcp and `cortex mcp` (docs/mcp.md): whether workflows and agents are listed
// as tools beside the tools.
struct McpSettings {
  bool expose_workflows = true;
  bool expose_agents = true;
  std::string instructions;  // shown to the client's model at the handshake
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("expose_workflows", s.expose_workflows);
    v.Field("expose_agents", s.expose_agents);
    v.Field("instructions", s.instructions);
  }
};

struct Settings {
  std::string manifests = "./manifests";
  std::string data_dir = "./.cortex";
  std::string listen = "127.0.0.1:8080";
  std::string log_level = "info";
  std::string log_format = "text";  // text | json (one JSON object a line)
  ServicePorts services;
  HttpSettings http;
  RegistrySettings registry;
  ExecSettings exec;
  DeploySettings deploy;
  VariablesSettings variables;
  LlmSettings llm;
  AuthSettings auth;
  TracingSettings tracing;
  McpSettings mcp;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("manifests", s.manifests);
    v.Field("data_dir", s.data_dir);
    v.Field("listen", s.listen);
    v.Field("log_level", s.log_level, {.one_of = {"debug", "info", "warn", "error"}});
    v.Field("log_format", s.log_format, {.one_of = {"text", "json"}});
    v.Field("services", s.services);
    v.Field("http", s.http);
    v.Field("registry", s.registry);
    v.Field("exec", s.exec);
    v.Field("deploy", s.deploy);
    v.Field("variables", s.variables);
    v.Field("llm", s.llm);
    v.Field("auth", s.auth);
    v.Field("tracing", s.tracing);
    v.Field("mcp", s.mcp);
  }
};

// Reads a cortex.yml into `settings` (fields it sets override). Errors carry file:line:col.
Status LoadSettingsFile(const std::string& path, Settings* settings);

// Applies CORTEX_MANIFESTS, CORTEX_DATA_DIR, CORTEX_LISTEN, CORTEX_LOG_LEVEL, CORTEX_STRICT,
// CORTEX_REDIS_URL.
// `getenv` is injected.
Status ApplyEnvironment(const std::function<std::optional<std::string>(const char*)>& getenv,
                        Settings* settings);

// Splits "host:port" (port 0..65535). "[::1]:80" works too.
Status ParseHostPort(const std::string& text, std::string* host, int* port);

}  // namespace cortex::api
