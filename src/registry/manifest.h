// The five manifest kinds as typed structs. Each struct's Fields() list is the single
// description of its YAML shape: it drives parsing/validation, JSON output and JSON Schema
// (see schema.h). Shapes from both the seed design and the original corpus are accepted;
// where they name the same thing differently, one field takes the other's name as an alias.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "registry/schema.h"

namespace cortex::registry {

enum class Kind { kTool, kAgent, kRelic, kWorkflow, kMonument };
template <>
struct EnumTraits<Kind> {
  static constexpr std::array<std::pair<Kind, std::string_view>, 5> kValues = {{
      {Kind::kTool, "Tool"},
      {Kind::kAgent, "Agent"},
      {Kind::kRelic, "Relic"},
      {Kind::kWorkflow, "Workflow"},
      {Kind::kMonument, "Monument"},
  }};
};
inline constexpr std::array<Kind, 5> kAllKinds = {Kind::kTool, Kind::kAgent, Kind::kRelic,
                                                  Kind::kWorkflow, Kind::kMonument};
// Accepts "Tool", "tool", "tools" (API paths use any of these).
std::optional<Kind> ParseKind(std::string_view text);

// Checks used by several fields; they return "" when fine.
std::string CheckName(std::string_view name);
std::string CheckVersion(std::string_view version);

// --- Shared pieces ------------------------------------------------------------------------

struct ImportSpec {
  std::vector<std::string> agents, tools, relics, workflows, monuments, amulets, metadata;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("agents", s.agents);
    v.Field("tools", s.tools);
    v.Field("relics", s.relics);
    v.Field("workflows", s.workflows);
    v.Field("monuments", s.monuments);
    v.Field("amulets", s.amulets);
    v.Field("metadata", s.metadata);
  }
};

struct EnvironmentSpec {
  std::vector<std::string> env_file;
  OrderedMap<std::string> variables;
  std::vector<std::string> secrets;
  Json resources;
  Json workspace;
  Json config_files;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("env_file", s.env_file);
    v.Field("variables", s.variables);
    v.Field("secrets", s.secrets);
    v.Field("resources", s.resources);
    v.Field("workspace", s.workspace);
    v.Field("config_files", s.config_files);
  }
};

// Validation rules of a parameter's value.
struct ParamValidation {
  std::optional<int64_t> min_length, max_length;
  std::optional<std::string> pattern;
  std::optional<double> min, max;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("min_length", s.min_length, {.aliases = {"minLength"}, .min = 0});
    v.Field("max_length", s.max_length, {.aliases = {"maxLength"}, .min = 0});
    v.Field("pattern", s.pattern);
    v.Field("min", s.min, {.aliases = {"minimum"}});
    v.Field("max", s.max, {.aliases = {"maximum"}});
  }
};

inline constexpr std::array<std::string_view, 7> kParamTypes = {
    "string", "integer", "number", "boolean", "array", "object", "any"};

// A typed input of a tool or a workflow trigger.
struct Parameter {
  std::string name;
  std::string type = "string";
  std::string description;
  std::optional<bool> required;  // unset: required unless a default is given
  Json default_value;
  std::vector<Json> enum_values;
  std::optional<ParamValidation> validation;
  Json items;
  bool keyed = false;  // written as `name: {...}` in a mapping: the name comes from the key

  bool IsRequired() const { return required.value_or(default_value.is_null()); }

  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("name", s.name, {.required = !s.keyed});
    v.Field("type", s.type, {.one_of = kParamTypes});
    v.Field("description", s.description);
    v.Field("required", s.required);
    v.Field("default", s.default_value);
    v.Field("enum", s.enum_values);
    v.Field("validation", s.validation);
    v.Field("items", s.items);
  }
};

// Parameters, written as a list of {name, ...} or as a mapping name -> {type, ...} or
// name -> "type" (the shorthand of the original's trigger parameters).
struct ParameterList {
  std::vector<Parameter> items;
  static bool FromNode(const yaml::Node& node, ParameterList& out, YamlReader& r);
  template <class Self, class V>
  static void Fields(Self&, V&) {}  // read through FromNode; written as a list
  static constexpr bool kSerializeAsShorthand = true;
  static Json ToShorthandJson(const ParameterList& value, Json);
  static Json ShorthandSchema();
};

// How a context feed gets its value.
struct FeedSource {
  std::string type;  // internal | tool | relic | agent | workflow | external | llm
  std::string action;
  std::string name;
  Json params;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("type", s.type,
            {.required = true,
             .one_of = {"internal", "tool", "relic", "agent", "workflow", "external", "llm"}});
    v.Field("action", s.action);
    v.Field("name", s.name);
    v.Field("params", s.params, {.aliases = {"parameters"}});
  }
};

struct ContextFeed {
  std::string id;
  std::string type = "on_demand";
  std::optional<Duration> interval;
  FeedSource source;
  Json enabled;  // a boolean, or a "${VAR}" template resolved at run time
  Json cache, transformation, error_handling;
  std::optional<int64_t> max_tokens;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("id", s.id, {.required = true});
    v.Field("type", s.type,
            {.one_of = {"on_demand", "periodic", "streaming", "event_driven", "internal", "relic",
                        "tool", "workflow", "llm"}});
    v.Field("interval", s.interval);
    v.Field("source", s.source, {.required = true});
    v.Field("enabled", s.enabled);
    v.Field("cache", s.cache);
    v.Field("transformation", s.transformation);
    v.Field("error_handling", s.error_handling);
    v.Field("max_tokens", s.max_tokens, {.min = 1});
  }
};

// --- Tool ----------------------------------------------------------------------------------

struct ToolResources {
  std::optional<std::string> memory;  // "128M", "1G"
  std::optional<std::string> cpu;     // "0.5"
  std::optional<Duration> timeout;
  std::optional<int64_t> max_processes;
  std::optional<int64_t> max_open_files;
  std::optional<std::string> max_output;  // "1M"
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("memory", s.memory);
    v.Field("cpu", s.cpu);
    v.Field("timeout", s.timeout);
    v.Field("max_processes", s.max_processes, {.aliases = {"pids"}, .min = 1});
    v.Field("max_open_files", s.max_open_files, {.min = 1});
    v.Field("max_output", s.max_output);
  }
};

struct ToolHealthCheck {
  std::string type = "script";
  std::string command;
  std::optional<int64_t> expected_exit_code;
  std::optional<std::string> expected_output_contains;
  std::optional<std::string> endpoint;
  std::optional<Duration> interval;
  std::optional<Duration> timeout;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("type", s.type, {.one_of = {"script", "command", "api_request", "http"}});
    v.Field("command", s.command);
    v.Field("expected_exit_code", s.expected_exit_code);
    v.Field("expected_output_contains", s.expected_output_contains);
    v.Field("endpoint", s.endpoint);
    v.Field("interval", s.interval);
    v.Field("timeout", s.timeout);
  }
};

// A tool another MCP server provides (implementation.type: mcp, docs/mcp.md): the server, as a
// command Cortex starts (stdio) or a URL (Streamable HTTP), and the tool's name there.
struct McpToolServer {
  std::vector<std::string> command;  // argv; argv[0] a name in PATH or a path in the tool's folder
  std::optional<std::string> url;    // "http://127.0.0.1:9000/mcp"
  std::optional<std::string> relic;  // a deployed relic serving MCP: its address, at `path`
  std::string path = "/mcp";         // with `relic`
  std::string tool;                  // the server's name for it ("" = the manifest's name)
  OrderedMap<std::string> env;       // the command's environment, beside PATH and HOME
  OrderedMap<std::string> headers;   // sent to a URL with every request
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("command", s.command);
    v.Field("url", s.url);
    v.Field("relic", s.relic);
    v.Field("path", s.path);
    v.Field("tool", s.tool);
    v.Field("env", s.env);
    v.Field("headers", s.headers);
  }
};

struct ToolImplementation {
  std::string type = "script";  // script | python | shell | bash | node | binary | api | container
                                // | mcp
  std::string runtime;          // python3 | bash | sh | node | binary ...
  std::string entrypoint;       // relative to the tool's folder
  std::vector<std::string> args;
  ToolResources resources;
  Json build;
  std::optional<ToolHealthCheck> health_check;
  std::optional<bool> network;
  // Host loopback TCP ports a tool with network: true may reach (at 127.0.0.1:PORT inside its
  // own network namespace); no other host loopback service is reachable.
  std::vector<int> host_ports;
  Json sandbox;
  std::optional<McpToolServer> mcp;  // type: mcp
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("type", s.type,
            {.one_of = {"script", "python", "shell", "bash", "sh", "node", "binary", "api",
                        "container", "docker", "mcp"}});
    v.Field("runtime", s.runtime);
    v.Field("entrypoint", s.entrypoint, {.aliases = {"script", "path"}});
    v.Field("args", s.args);
    v.Field("resources", s.resources);
    v.Field("build", s.build);
    v.Field("health_check", s.health_check);
    v.Field("network", s.network);
    v.Field("host_ports", s.host_ports, {.min = 1, .max = 65535});
    v.Field("sandbox", s.sandbox);
    v.Field("mcp", s.mcp);
  }
};

struct ToolSpec {
  std::string returns;
  ToolImplementation implementation;
  ParameterList parameters;
  Json examples;
  EnvironmentSpec environment;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("returns", s.returns);
    v.Field("implementation", s.implementation,
            {.required = true, .aliases = {"execution", "executor"}});
    v.Field("parameters", s.parameters);
    v.Field("examples", s.examples);
    v.Field("environment", s.environment);
  }
};

// --- Agent ---------------------------------------------------------------------------------

struct Persona {
  std::string agent;  // path to the persona markdown (the system prompt)
  std::optional<std::string> user, system, knowledge;
  std::vector<std::string> examples;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("agent", s.agent);
    v.Field("user", s.user);
    v.Field("system", s.system);
    v.Field("knowledge", s.knowledge);
    v.Field("examples", s.examples);
  }
};

struct ModelRef {
  std::string provider;
  std::string model;
  std::optional<std::string> endpoint;  // base URL of an OpenAI-compatible server
  std::optional<std::string> api_key_env;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    // Any name: the providers are the server's (llm.providers in cortex.yml); the registry warns
    // about a name the server does not know.
    v.Field("provider", s.provider, {.required = true});
    v.Field("model", s.model, {.required = true});
    v.Field("endpoint", s.endpoint, {.aliases = {"base_url"}});
    v.Field("api_key_env", s.api_key_env);
  }
};

struct ModelParameters {
  double temperature = 0.7;
  double top_p = 0.9;
  int64_t max_tokens = 4096;
  bool stream = true;
  std::optional<int64_t> top_k, seed;
  std::vector<std::string> stop_sequences;
  std::optional<double> presence_penalty, frequency_penalty;
  Json extra_params;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("temperature", s.temperature, {.min = 0, .max = 2});
    v.Field("top_p", s.top_p, {.min = 0, .max = 1});
    v.Field("max_tokens", s.max_tokens, {.min = 1});
    v.Field("stream", s.stream);
    v.Field("top_k", s.top_k, {.min = 1});
    v.Field("seed", s.seed);
    v.Field("stop_sequences", s.stop_sequences, {.aliases = {"stop"}});
    v.Field("presence_penalty", s.presence_penalty, {.min = -2, .max = 2});
    v.Field("frequency_penalty", s.frequency_penalty, {.min = -2, .max = 2});
    v.Field("extra_params", s.extra_params);
  }
};

struct CognitiveEngine {
  ModelRef primary;
  std::optional<ModelRef> fallback;
  ModelParameters parameters;
  // How the model acts: the streaming protocol (tags in its text), or the provider's native
  // function calling.
  std::string protocol = "streaming";
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("primary", s.primary, {.required = true});
    v.Field("fallback", s.fallback);
    v.Field("parameters", s.parameters);
    v.Field("protocol", s.protocol, {.one_of = {"streaming", "native"}});
  }
};

struct AgentSpec {
  Persona persona;
  std::string agency_level = "strict";
  std::string grade = "common";
  int64_t iteration_cap = 5;  // 0 = unlimited
  std::optional<CognitiveEngine> cognitive_engine;
  std::vector<ContextFeed> context_feeds;
  EnvironmentSpec environment;
  // Documented sections kept as written (consumed by the agent loop as it grows).
  Json memory, tool_use, delegation, safety, metrics, error_handling, internal_actions, vision,
      function_calling, deployment;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("persona", s.persona);
    v.Field("agency_level", s.agency_level, {.one_of = {"strict", "default", "autonomous"}});
    v.Field("grade", s.grade,
            {.one_of = {"common", "uncommon", "rare", "epic", "legendary", "mythic"}});
    v.Field("iteration_cap", s.iteration_cap, {.aliases = {"max_iterations"}, .min = 0});
    v.Field("cognitive_engine", s.cognitive_engine);
    v.Field("context_feeds", s.context_feeds);
    v.Field("environment", s.environment);
    v.Field("memory", s.memory);
    v.Field("tool_use", s.tool_use);
    v.Field("delegation", s.delegation);
    v.Field("safety", s.safety);
    v.Field("metrics", s.metrics);
    v.Field("error_handling", s.error_handling);
    v.Field("internal_actions", s.internal_actions);
    v.Field("vision", s.vision);
    v.Field("function_calling", s.function_calling);
    v.Field("deployment", s.deployment);
  }
};

// --- Relic ---------------------------------------------------------------------------------

inline constexpr std::array<std::string_view, 6> kHttpMethods = {"GET",    "POST",  "PUT",
                                                                 "DELETE", "PATCH", "HEAD"};

struct RelicEndpoint {
  std::string name;
  std::string method = "GET";
  std::string path;
  std::string description;
  Json parameters;
  Json request_body;
  Json response;
  std::optional<bool> auth_required;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("name", s.name, {.required = true});
    v.Field("method", s.method, {.one_of = kHttpMethods});
    v.Field("path", s.path, {.required = true, .aliases = {"endpoint"}});
    v.Field("description", s.description);
    v.Field("parameters", s.parameters, {.aliases = {"parameters_schema"}});
    v.Field("request_body", s.request_body);
    v.Field("response", s.response);
    v.Field("auth_required", s.auth_required);
  }
};

struct RelicInterface {
  std::string type = "rest_api";
  std::optional<std::string> base_url;
  std::optional<std::string> protocol;
  std::vector<RelicEndpoint> endpoints;
  Json connection;
  Json authentication;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("type", s.type,
            {.one_of = {"rest_api", "grpc", "graphql", "websocket", "database", "cli", "web_ui"}});
    v.Field("base_url", s.base_url);
    v.Field("protocol", s.protocol);
    v.Field("endpoints", s.endpoints, {.aliases = {"operations"}});
    v.Field("connection", s.connection);
    v.Field("authentication", s.authentication);
  }
};

// A health probe: HTTP (url, or endpoint on the relic's base URL), TCP, or a command.
struct HealthCheck {
  std::string type = "http";  // http | api_request | tcp | tcp_socket | command | script | none
  std::optional<std::string> url;
  std::optional<std::string> endpoint;
  std::string method = "GET";
  int64_t expected_status = 200;
  std::optional<std::string> host;
  std::optional<int64_t> port;
  std::vector<std::string> command;
  std::optional<Duration> interval, timeout, start_period;
  std::optional<int64_t> retries;
  std::optional<bool> enabled;
  static bool FromShorthand(const yaml::Node& node, HealthCheck& out, YamlReader& r);
  static Json ShorthandSchema() { return {{"type", "string"}, {"description", "A URL to GET."}}; }
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("type", s.type,
            {.one_of = {"http", "api_request", "tcp", "tcp_socket", "command", "script", "none"}});
    v.Field("url", s.url);
    v.Field("endpoint", s.endpoint, {.aliases = {"path"}});
    v.Field("method", s.method, {.one_of = kHttpMethods});
    v.Field("expected_status", s.expected_status, {.min = 100, .max = 599});
    v.Field("host", s.host);
    v.Field("port", s.port, {.min = 1, .max = 65535});
    v.Field("command", s.command);
    v.Field("interval", s.interval, {.aliases = {"interval_seconds"}});
    v.Field("timeout", s.timeout, {.aliases = {"timeout_seconds"}});
    v.Field("start_period", s.start_period);
    v.Field("retries", s.retries, {.aliases = {"failure_threshold"}, .min = 0});
    v.Field("enabled", s.enabled);
  }
};

// A command line: a list of arguments, or one string split into words like a shell would
// (quotes group words; no variables, globs or pipes: nothing is run through a shell).
struct Argv {
  std::vector<std::string> args;
  static bool FromShorthand(const yaml::Node& node, Argv& out, YamlReader& r);
  template <class Self, class V>
  static void Fields(Self&, V&) {}
  static constexpr bool kSerializeAsShorthand = true;
  static Json ToShorthandJson(const Argv& value, Json) { return value.args; }
  static Json ShorthandSchema() {
    return {{"type", {"string", "array"}}, {"items", {{"type", "string"}}}};
  }
};

struct RelicDeployment {
  std::string type;  // process | docker-compose | compose | docker | kubernetes | systemd
  std::optional<std::string> compose_file;
  std::optional<std::string> dockerfile;
  std::optional<std::string> image;
  std::optional<Argv> command;
  std::optional<std::string> cwd;
  OrderedMap<std::string> env;
  std::optional<int64_t> port;
  int64_t replicas = 1;
  std::optional<std::string> restart;  // always | on-failure | never
  std::optional<Duration> stop_timeout;
  // process relics: the account it runs as ("nobody", "1000", "1000:1000"); see docs/deploy.md.
  std::optional<std::string> user;
  // process relics: run inside the tool sandbox (bubblewrap), its data folder writable.
  bool sandbox = false;
  Json ports, volumes, resources, scaling;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("type", s.type,
            {.required = true,
             .aliases = {"engine"},
             .one_of = {"process", "native", "docker-compose", "compose", "docker", "kubernetes",
                        "systemd", "swarm"}});
    v.Field("compose_file", s.compose_file, {.aliases = {"docker_compose_file"}});
    v.Field("dockerfile", s.dockerfile);
    v.Field("image", s.image);
    v.Field("command", s.command);
    v.Field("cwd", s.cwd, {.aliases = {"working_dir"}});
    v.Field("env", s.env);
    v.Field("port", s.port, {.min = 0, .max = 65535});
    v.Field("replicas", s.replicas, {.min = 0});
    v.Field("restart", s.restart, {.one_of = {"always", "on-failure", "unless-stopped", "never"}});
    v.Field("stop_timeout", s.stop_timeout);
    v.Field("user", s.user);
    v.Field("sandbox", s.sandbox);
    v.Field("ports", s.ports);
    v.Field("volumes", s.volumes);
    v.Field("resources", s.resources);
    v.Field("scaling", s.scaling);
  }
};

// The seed design's `service:` block (type, compose_file, health_check).
struct ServiceSpec {
  std::string type;
  std::optional<std::string> compose_file;
  std::optional<HealthCheck> health_check;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("type", s.type, {.required = true});
    v.Field("compose_file", s.compose_file, {.aliases = {"docker_compose_file"}});
    v.Field("health_check", s.health_check);
  }
};

struct ScheduledWorkflow {
  std::string workflow;
  std::string schedule;
  std::string description;
  Json parameters;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("workflow", s.workflow, {.required = true});
    v.Field("schedule", s.schedule, {.required = true});
    v.Field("description", s.description);
    v.Field("parameters", s.parameters);
  }
};

struct RelicAutomation {
  std::vector<ScheduledWorkflow> scheduled_workflows;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("scheduled_workflows", s.scheduled_workflows);
  }
};

struct RelicSpec {
  std::string service_type;
  std::optional<RelicInterface> interface;
  std::optional<HealthCheck> health_check;
  std::optional<RelicDeployment> deployment;
  std::optional<ServiceSpec> service;
  OrderedMap<std::string> endpoints;  // seed: name -> URL
  Json persistence;
  EnvironmentSpec environment;
  Json monitoring;
  RelicAutomation automation;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("service_type", s.service_type);
    v.Field("interface", s.interface);
    v.Field("health_check", s.health_check);
    v.Field("deployment", s.deployment);
    v.Field("service", s.service);
    v.Field("endpoints", s.endpoints);
    v.Field("persistence", s.persistence);
    v.Field("environment", s.environment);
    v.Field("monitoring", s.monitoring);
    v.Field("automation", s.automation);
  }
};

// --- Workflow ------------------------------------------------------------------------------

enum class Backoff { kNone, kLinear, kExponential };
template <>
struct EnumTraits<Backoff> {
  static constexpr std::array<std::pair<Backoff, std::string_view>, 3> kValues = {{
      {Backoff::kNone, "none"},
      {Backoff::kLinear, "linear"},
      {Backoff::kExponential, "exponential"},
  }};
};

struct RetryPolicy {
  int64_t max_attempts = 1;
  Backoff backoff = Backoff::kExponential;
  std::optional<Duration> delay;
  std::optional<Duration> max_delay;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("max_attempts", s.max_attempts, {.required = true, .min = 1, .max = 100});
    v.Field("backoff", s.backoff, {.required = true});
    v.Field("delay", s.delay, {.aliases = {"initial_delay"}});
    v.Field("max_delay", s.max_delay);
  }
};

enum class StepType { kTool, kAgent, kRelic, kWorkflow, kInternal, kParallel, kConditional };
template <>
struct EnumTraits<StepType> {
  static constexpr std::array<std::pair<StepType, std::string_view>, 7> kValues = {{
      {StepType::kTool, "tool"},
      {StepType::kAgent, "agent"},
      {StepType::kRelic, "relic"},
      {StepType::kWorkflow, "workflow"},
      {StepType::kInternal, "internal"},
      {StepType::kParallel, "parallel"},
      {StepType::kConditional, "conditional"},
  }};
};

enum class OnFailure { kAbort, kContinue, kSkip, kRetry };
template <>
struct EnumTraits<OnFailure> {
  static constexpr std::array<std::pair<OnFailure, std::string_view>, 4> kValues = {{
      {OnFailure::kAbort, "abort"},
      {OnFailure::kContinue, "continue"},
      {OnFailure::kSkip, "skip"},
      {OnFailure::kRetry, "retry"},
  }};
};

struct WorkflowStep {
  std::string name;
  StepType type = StepType::kTool;
  std::string target;                 // tool/agent/relic/workflow name (or a relic URL)
  std::optional<std::string> action;  // relic operation
  Json parameters;                    // templates, resolved when the step is dispatched
  std::optional<std::string> condition;
  std::vector<std::string> depends_on;
  std::optional<Duration> timeout;
  std::optional<OnFailure> on_failure;
  std::optional<RetryPolicy> retry_policy;
  OrderedMap<std::string> output_mapping;
  std::optional<std::string> parallel_group;
  std::vector<WorkflowStep> then_steps, else_steps, parallel;
  std::optional<int64_t> max_concurrency;
  std::optional<bool> fail_fast;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("name", s.name, {.required = true, .check = CheckName});
    v.Field("type", s.type, {.required = true});
    v.Field("target", s.target);
    v.Field("action", s.action, {.aliases = {"operation"}});
    v.Field("parameters", s.parameters, {.aliases = {"input", "inputs"}});
    v.Field("condition", s.condition, {.aliases = {"if", "when"}});
    v.Field("depends_on", s.depends_on);
    v.Field("timeout", s.timeout);
    v.Field("on_failure", s.on_failure);
    v.Field("retry_policy", s.retry_policy, {.aliases = {"retry"}});
    v.Field("output_mapping", s.output_mapping);
    v.Field("parallel_group", s.parallel_group);
    v.Field("then", s.then_steps);
    v.Field("else", s.else_steps);
    v.Field("parallel", s.parallel, {.aliases = {"steps"}});
    v.Field("max_concurrency", s.max_concurrency, {.min = 1});
    v.Field("fail_fast", s.fail_fast);
  }
};

enum class TriggerType { kManual, kScheduled, kEvent, kWebhook, kMetadataMatch };
template <>
struct EnumTraits<TriggerType> {
  static constexpr std::array<std::pair<TriggerType, std::string_view>, 5> kValues = {{
      {TriggerType::kManual, "manual"},
      {TriggerType::kScheduled, "scheduled"},
      {TriggerType::kEvent, "event"},
      {TriggerType::kWebhook, "webhook"},
      {TriggerType::kMetadataMatch, "metadata_match"},
  }};
};

struct Trigger {
  TriggerType type = TriggerType::kManual;
  std::optional<std::string> schedule;  // cron, UTC unless timezone
  std::optional<std::string> timezone;
  std::optional<std::string> event;
  std::optional<std::string> event_source;
  std::optional<std::string> event_type;
  Json filter;
  ParameterList parameters;
  std::optional<std::string> webhook_path;
  std::optional<std::string> method;
  std::optional<std::string> secret;
  Json authentication;
  Json conditions;
  std::optional<bool> match_all;
  static bool FromShorthand(const yaml::Node& node, Trigger& out, YamlReader& r);
  static Json ShorthandSchema() {
    return {{"type", "string"}, {"description", "The trigger type alone."}};
  }
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("type", s.type, {.required = true});
    v.Field("schedule", s.schedule, {.aliases = {"cron"}});
    v.Field("timezone", s.timezone);
    v.Field("event", s.event);
    v.Field("event_source", s.event_source);
    v.Field("event_type", s.event_type);
    v.Field("filter", s.filter);
    v.Field("parameters", s.parameters, {.aliases = {"inputs"}});
    v.Field("webhook_path", s.webhook_path, {.aliases = {"path"}});
    v.Field("method", s.method);
    v.Field("secret", s.secret);
    v.Field("authentication", s.authentication);
    v.Field("conditions", s.conditions);
    v.Field("match_all", s.match_all);
  }
};

struct ErrorHandling {
  std::optional<std::string> on_step_failure;
  std::optional<bool> rollback_on_failure;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("on_step_failure", s.on_step_failure,
            {.one_of = {"abort", "continue", "skip", "rollback"}});
    v.Field("rollback_on_failure", s.rollback_on_failure);
  }
};

struct Concurrency {
  std::optional<int64_t> max_parallel_steps;
  Json resource_limits;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("max_parallel_steps", s.max_parallel_steps, {.min = 1});
    v.Field("resource_limits", s.resource_limits);
  }
};

struct WorkflowConfiguration {
  std::optional<Duration> timeout;
  std::optional<int64_t> max_retries;
  std::optional<RetryPolicy> default_retry_policy;
  std::optional<ErrorHandling> error_handling;
  std::optional<Concurrency> concurrency;
  Json observability;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("timeout", s.timeout);
    v.Field("max_retries", s.max_retries, {.min = 0});
    v.Field("default_retry_policy", s.default_retry_policy);
    v.Field("error_handling", s.error_handling);
    v.Field("concurrency", s.concurrency);
    v.Field("observability", s.observability);
  }
};

struct WorkflowOutput {
  std::string source;  // "steps.s.field", "$(steps.s.field)" or "$TIMESTAMP"
  std::string description;
  std::optional<std::string> type;
  std::optional<bool> optional;
  std::optional<bool> required;
  static bool FromShorthand(const yaml::Node& node, WorkflowOutput& out, YamlReader& r);
  static Json ShorthandSchema() {
    return {{"type", "string"}, {"description", "The source expression alone."}};
  }
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("source", s.source, {.required = true, .aliases = {"value", "from"}});
    v.Field("description", s.description);
    v.Field("type", s.type);
    v.Field("optional", s.optional);
    v.Field("required", s.required);
  }
};

struct WorkflowSpec {
  Trigger trigger;
  std::vector<WorkflowStep> steps;
  std::optional<Duration> timeout;
  std::optional<RetryPolicy> retry_policy;
  std::optional<WorkflowConfiguration> configuration;
  OrderedMap<WorkflowOutput> outputs;
  Json variables, error_handlers, notifications;
  EnvironmentSpec environment;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("trigger", s.trigger);
    v.Field("steps", s.steps, {.required = true});
    v.Field("timeout", s.timeout);
    v.Field("retry_policy", s.retry_policy);
    v.Field("configuration", s.configuration);
    v.Field("outputs", s.outputs);
    v.Field("variables", s.variables);
    v.Field("error_handlers", s.error_handlers);
    v.Field("notifications", s.notifications);
    v.Field("environment", s.environment);
  }
};

// --- Monument ------------------------------------------------------------------------------

// A component of a monument: a name (looked up in the registry) or an import path.
struct ComponentRef {
  std::string name;
  std::optional<std::string> path;  // import path ("import" in the seed, "path" in the corpus)
  std::optional<std::string> type;
  std::optional<std::string> role;
  std::optional<bool> required;
  std::optional<bool> auto_start;
  std::optional<bool> enabled;
  std::optional<int64_t> instances;
  std::vector<std::string> depends_on;
  std::optional<std::string> trigger;
  std::optional<std::string> schedule;
  std::optional<std::string> purpose;
  std::optional<bool> shared;
  Json config, scaling, health_check, delegation, resource_limits, dependencies;
  static bool FromShorthand(const yaml::Node& node, ComponentRef& out, YamlReader& r);
  static Json ShorthandSchema() { return {{"type", "string"}, {"description", "A name."}}; }
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("name", s.name, {.required = true});
    v.Field("path", s.path, {.aliases = {"import"}});
    v.Field("type", s.type);
    v.Field("role", s.role);
    v.Field("required", s.required);
    v.Field("auto_start", s.auto_start);
    v.Field("enabled", s.enabled);
    v.Field("instances", s.instances, {.aliases = {"replicas"}, .min = 0});
    v.Field("depends_on", s.depends_on);
    v.Field("trigger", s.trigger);
    v.Field("schedule", s.schedule);
    v.Field("purpose", s.purpose);
    v.Field("shared", s.shared);
    v.Field("config", s.config);
    v.Field("scaling", s.scaling);
    v.Field("health_check", s.health_check);
    v.Field("delegation", s.delegation);
    v.Field("resource_limits", s.resource_limits);
    v.Field("dependencies", s.dependencies);
  }
};

struct MonumentComponents {
  std::vector<ComponentRef> relics, agents, workflows, tools;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("relics", s.relics);
    v.Field("agents", s.agents);
    v.Field("workflows", s.workflows);
    v.Field("tools", s.tools);
  }
};

struct MonumentNetworking {
  std::optional<std::string> internal_network;
  Json exposed_services;
  std::vector<std::string> exposed_ports;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("internal_network", s.internal_network, {.aliases = {"internal"}});
    v.Field("exposed_services", s.exposed_services);
    v.Field("exposed_ports", s.exposed_ports);
  }
};

// One stage of a monument's startup order: one name, or a list of names started in parallel.
struct StartupStage {
  std::vector<std::string> names;
  static bool FromShorthand(const yaml::Node& node, StartupStage& out, YamlReader& r);
  template <class Self, class V>
  static void Fields(Self&, V&) {}
  static constexpr bool kSerializeAsShorthand = true;
  static Json ToShorthandJson(const StartupStage& value, Json) {
    return value.names.size() == 1 ? Json(value.names[0]) : Json(value.names);
  }
  static Json ShorthandSchema() {
    return {{"type", {"string", "array"}}, {"items", {{"type", "string"}}}};
  }
};

struct MonumentLayer {  // infrastructure / intelligence / automation
  std::vector<ComponentRef> relics, agents, workflows;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("relics", s.relics);
    v.Field("agents", s.agents);
    v.Field("workflows", s.workflows);
  }
};

struct MonumentSpec {
  std::optional<MonumentComponents> components;                           // seed shape
  std::optional<MonumentLayer> infrastructure, intelligence, automation;  // corpus shape
  std::vector<ComponentRef> tools;
  std::optional<MonumentNetworking> networking;
  std::vector<StartupStage> startup_order;
  Json deployment, interface, config, observability, data, disaster_recovery, specialization;
  std::vector<ContextFeed> context_feeds;
  EnvironmentSpec environment;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("components", s.components);
    v.Field("infrastructure", s.infrastructure);
    v.Field("intelligence", s.intelligence);
    v.Field("automation", s.automation);
    v.Field("tools", s.tools);
    v.Field("networking", s.networking);
    v.Field("startup_order", s.startup_order);
    v.Field("deployment", s.deployment);
    v.Field("interface", s.interface);
    v.Field("config", s.config);
    v.Field("observability", s.observability);
    v.Field("data", s.data);
    v.Field("disaster_recovery", s.disaster_recovery);
    v.Field("specialization", s.specialization);
    v.Field("context_feeds", s.context_feeds);
    v.Field("environment", s.environment);
  }
  // All relics / agents / workflows of both shapes.
  std::vector<const ComponentRef*> Relics() const;
  std::vector<const ComponentRef*> Agents() const;
  std::vector<const ComponentRef*> Workflows() const;
};

// --- The envelope --------------------------------------------------------------------------

struct ManifestHeader {
  Kind kind = Kind::kTool;
  std::string version = "1.0";
  std::string name;
  std::string summary;
  std::string author;
  std::string state = "unstable";
  std::string description;
  std::vector<std::string> tags;
  Json metadata;
  ImportSpec imports;
  Json dependencies;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("kind", s.kind, {.required = true});
    v.Field("version", s.version, {.check = CheckVersion});
    v.Field("name", s.name, {.required = true, .check = CheckName});
    v.Field("summary", s.summary);
    v.Field("author", s.author);
    v.Field("state", s.state,
            {.one_of = {"stable", "nightly", "unstable", "experimental", "deprecated"}});
    v.Field("description", s.description);
    v.Field("tags", s.tags);
    v.Field("metadata", s.metadata);
    v.Field("import", s.imports, {.aliases = {"imports"}});
    v.Field("dependencies", s.dependencies);
  }
};

using ManifestSpec = std::variant<ToolSpec, AgentSpec, RelicSpec, WorkflowSpec, MonumentSpec>;

// A validated manifest: what the registry serves.
struct Manifest {
  ManifestHeader header;
  ManifestSpec spec;
  std::string body;     // Markdown body of a front-matter file ("" for YAML files)
  Json unknown_fields;  // keys the schema does not know, kept as written: dotted path -> value

  Kind kind() const { return header.kind; }
  const std::string& name() const { return header.name; }
  template <class T>
  const T* As() const {
    return std::get_if<T>(&spec);
  }
};

// The typed manifest as JSON (envelope and spec fields, canonical names).
Json ManifestToJson(const Manifest& manifest);
// JSON Schema (draft 2020-12) of a kind, for editors.
Json KindSchema(Kind kind);

}  // namespace cortex::registry
