#include "api/auth.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "api/errors.h"
#include "api/route_util.h"
#include "api/scopes.h"
#include "common/json.h"
#include "common/log.h"
#include "common/random_id.h"
#include "exec/executor.h"

namespace cortex::api {
namespace {

using Json = nlohmann::ordered_json;

std::string Hex(const unsigned char* data, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 15];
  }
  return out;
}

// `bytes` from the cryptographic source, as hex: for secrets and key ids.
std::string SecretHex(size_t bytes) {
  std::vector<unsigned char> buf(bytes);
  CORTEX_CHECK_MSG(RAND_bytes(buf.data(), static_cast<int>(buf.size())) == 1,
                   "the system's random source failed");
  return Hex(buf.data(), buf.size());
}

bool Mutating(std::string_view method) {
  return method != "GET" && method != "HEAD" && method != "OPTIONS";
}

// The request id: the caller's X-Request-Id when it is a sane token, else a new one.
std::string RequestId(const http::Request& req) {
  if (auto given = req.Header("X-Request-Id");
      given && !given->empty() && given->size() <= 64 &&
      std::all_of(given->begin(), given->end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
      })) {
    return *given;
  }
  return RandomId("req_", 16);
}

// What a call was about: its path's parameters, or the body's "name" (a run of a tool, ...).
std::string TargetOf(const http::Request& req) {
  std::string target;
  for (const auto& [_, v] : req.path_params) target += (target.empty() ? "" : "/") + v;
  if (!target.empty()) return target;
  if (req.body.empty() || req.body.size() > (1u << 20) || req.body[0] != '{') return "";
  auto body = ParseJson(req.body);
  if (!body.ok() || !body->is_object()) return "";
  for (const char* key : {"name", "agent", "model"}) {
    if (auto it = body->find(key); it != body->end() && it->is_string()) {
      return ToValidUtf8(it->get<std::string>().substr(0, 200));
    }
  }
  return "";
}

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kPublic:
      return "public";
    case Role::kViewer:
      return "viewer";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

std::optional<Role> ParseRole(std::string_view name) {
  if (name == "viewer") return Role::kViewer;
  if (name == "operator") return Role::kOperator;
  if (name == "admin") return Role::kAdmin;
  return std::nullopt;
}

const std::vector<RouteRule>& RouteRules() {
  using enum Role;
  // Reads are for viewers; running, deploying and controlling runs for operators; what changes
  // what Cortex runs (manifests) or who may call it (keys), and the audit log, for admins.
  static const std::vector<RouteRule> rules = {
      {"GET", "/health", kPublic, "any", "Health of the service and its parts"},
      {"GET", "/openapi.json", kPublic, "any", "This API's OpenAPI 3.1 document"},
      {"GET", "/healthz", kPublic, "any", "Liveness probe"},
      {"GET", "/metrics", kViewer, "any", "Prometheus metrics (text format 0.0.4)"},
      {"POST", "/hooks/{workflow}", kPublic, "any",
       "Start a workflow from its webhook trigger (checked by the trigger's secret)"},
      // Registry.
      {"GET", "/registry/", kViewer, "any", "The registry service's summary"},
      {"GET", "/registry/status", kViewer, "any",
       "Registry status: manifests loaded, errors, generation"},
      {"GET", "/registry/manifests", kViewer, "any", "List manifests, filtered by kind"},
      {"GET", "/registry/manifest/{kind}/{name}", kViewer, "{kind}:{name}",
       "One manifest, as loaded"},
      {"GET", "/registry/dependencies/{kind}/{name}", kViewer, "{kind}:{name}",
       "What a manifest depends on, and what depends on it"},
      {"GET", "/registry/validate-dependencies/{kind}/{name}", kViewer, "{kind}:{name}",
       "Check that a manifest's dependencies exist"},
      {"POST", "/registry/validate-dependencies/{kind}/{name}", kViewer, "{kind}:{name}",
       "Check that a manifest's dependencies exist"},
      {"GET", "/registry/graph", kViewer, "any", "The dependency graph of every manifest"},
      {"GET", "/registry/errors", kViewer, "any",
       "Manifests that failed to load, with file and line"},
      {"GET", "/registry/events", kViewer, "any", "Registry changes as server-sent events"},
      {"GET", "/registry/schema/{kind}", kViewer, "any", "The JSON Schema of a manifest kind"},
      {"GET", "/registry/tools", kViewer, "any", "List tools"},
      {"GET", "/registry/agents", kViewer, "any", "List agents"},
      {"GET", "/registry/relics", kViewer, "any", "List relics"},
      {"GET", "/registry/workflows", kViewer, "any", "List workflows"},
      {"GET", "/registry/monuments", kViewer, "any", "List monuments"},
      {"POST", "/registry/manifests", kAdmin, "body",
       "Write a manifest (validated first; nothing is written when it is invalid)"},
      {"DELETE", "/registry/manifest/{kind}/{name}", kAdmin, "{kind}:{name}",
       "Delete a manifest written through the API"},
      {"POST", "/registry/sync", kAdmin, "global", "Reload every manifest from disk now"},
      // Tools.
      {"POST", "/execute/tool", kOperator, "body", "Run a tool in its sandbox"},
      {"POST", "/execute/batch", kOperator, "body", "Run several tools at once"},
      {"GET", "/executions", kViewer, "any", "List tool executions"},
      {"GET", "/executions/{id}", kViewer, "execution:{id}", "One tool execution and its result"},
      {"GET", "/executions/{id}/logs", kViewer, "execution:{id}",
       "A tool execution's output lines (server-sent events with ?follow)"},
      {"POST", "/executions/{id}/cancel", kOperator, "execution:{id}",
       "Cancel a running tool execution"},
      {"GET", "/tools/{name}/health", kViewer, "tool:{name}", "Run a tool's health check"},
      // Workflows.
      {"POST", "/execute/workflow", kOperator, "body", "Start a workflow run"},
      {"POST", "/execute/workflow/{name}", kOperator, "workflow:{name}",
       "Start a run of the named workflow"},
      {"GET", "/workflows", kViewer, "any", "List workflow runs"},
      {"GET", "/workflows/{id}", kViewer, "run:{id}", "One workflow run with its steps"},
      {"GET", "/workflows/{id}/status", kViewer, "run:{id}", "A workflow run's status"},
      {"GET", "/workflows/{id}/logs", kViewer, "run:{id}",
       "A workflow run's journal (server-sent events with ?follow)"},
      {"POST", "/workflows/{id}/cancel", kOperator, "run:{id}", "Cancel a workflow run"},
      {"POST", "/workflows/{id}/pause", kOperator, "run:{id}",
       "Pause a workflow run at its next step boundary"},
      {"POST", "/workflows/{id}/resume", kOperator, "run:{id}", "Resume a paused workflow run"},
      {"POST", "/workflows/{id}/retry", kOperator, "run:{id}",
       "Retry a failed workflow run from its failed steps"},
      // Relics, monuments, discovery.
      {"POST", "/deploy/relic", kOperator, "body", "Deploy a relic"},
      {"POST", "/deploy/relic/{name}", kOperator, "relic:{name}", "Deploy the named relic"},
      {"POST", "/deploy/monument", kOperator, "body",
       "Deploy a monument's relics, agents and workflows in order"},
      {"POST", "/deploy/monument/{name}", kOperator, "monument:{name}",
       "Deploy the named monument"},
      {"GET", "/relics", kViewer, "any", "List deployed relics"},
      {"GET", "/relics/{name}", kViewer, "relic:{name}", "One deployed relic"},
      {"GET", "/relics/{name}/status", kViewer, "relic:{name}", "A relic's state and health"},
      {"GET", "/relics/{name}/logs", kViewer, "relic:{name}", "A relic's logs"},
      {"GET", "/relics/{name}/stats", kViewer, "relic:{name}", "A relic's resource use"},
      {"POST", "/relics/{name}/start", kOperator, "relic:{name}", "Start a stopped relic"},
      {"POST", "/relics/{name}/stop", kOperator, "relic:{name}", "Stop a relic"},
      {"POST", "/relics/{name}/restart", kOperator, "relic:{name}", "Restart a relic"},
      {"POST", "/relics/{name}/scale", kOperator, "relic:{name}", "Change a relic's replica count"},
      {"POST", "/relics/{name}/call/{operation}", kOperator, "relic:{name}",
       "Call one of a relic's declared operations"},
      {"DELETE", "/relics/{name}", kOperator, "relic:{name}",
       "Undeploy a relic (stop it and forget it)"},
      {"GET", "/monuments", kViewer, "any", "List deployed monuments"},
      {"GET", "/monuments/{name}", kViewer, "monument:{name}", "One deployed monument"},
      {"GET", "/monuments/{name}/status", kViewer, "monument:{name}", "A monument's state"},
      {"GET", "/monuments/{name}/health", kViewer, "monument:{name}",
       "The health of a monument's relics"},
      {"GET", "/monuments/{name}/logs", kViewer, "monument:{name}", "A monument's relics' logs"},
      {"POST", "/monuments/{name}/stop", kOperator, "monument:{name}", "Stop a monument's relics"},
      {"POST", "/monuments/{name}/scale", kOperator, "monument:{name}",
       "Scale a monument's relics"},
      {"DELETE", "/monuments/{name}", kOperator, "monument:{name}",
       "Undeploy a monument and its relics"},
      {"GET", "/discovery/services", kViewer, "any", "Endpoints of the running relics"},
      // Agents and models.
      {"POST", "/execute/agent", kOperator, "body",
       "Run an agent (server-sent events of its protocol, or one JSON answer)"},
      {"GET", "/agent-runs", kViewer, "any", "List agent runs"},
      {"GET", "/agents/usage", kViewer, "any", "Token use and cost by agent"},
      {"GET", "/agent-runs/{id}", kViewer, "agent-run:{id}", "One agent run"},
      {"GET", "/agent-runs/{id}/events", kViewer, "agent-run:{id}",
       "An agent run's protocol events (server-sent events, resumable)"},
      {"POST", "/agent-runs/{id}/cancel", kOperator, "agent-run:{id}", "Cancel an agent run"},
      {"GET", "/state/agent/{agent}/sessions", kViewer, "agent:{agent}",
       "An agent's conversation sessions"},
      {"POST", "/state/agent/{agent}/session", kOperator, "agent:{agent}",
       "Start a conversation session with an agent"},
      {"GET", "/agent-sessions/{id}", kViewer, "session:{id}",
       "One conversation session and its turns"},
      {"DELETE", "/agent-sessions/{id}", kOperator, "session:{id}",
       "Delete a conversation session"},
      {"GET", "/llm/providers", kViewer, "any", "LLM providers and their circuit state"},
      {"POST", "/llm/providers/{name}/reset", kOperator, "global",
       "Close an LLM provider's open circuit"},
      {"GET", "/v1/models", kViewer, "any", "Agents as OpenAI-compatible models"},
      // MCP (docs/mcp.md): listing and reading for viewers; tools/call checks the operator role
      // itself, per call.
      {"POST", "/mcp", kViewer, "each",
       "MCP over Streamable HTTP: one JSON-RPC message or a batch (tools/call needs operator)"},
      {"GET", "/mcp", kViewer, "any", "An MCP session's notifications (server-sent events)"},
      {"DELETE", "/mcp", kViewer, "any", "End an MCP session"},
      {"POST", "/v1/chat/completions", kOperator, "body",
       "Run an agent through the OpenAI chat completions API"},
      // Access control itself.
      {"GET", "/auth/whoami", kViewer, "any", "Who the caller is, and their role"},
      {"GET", "/auth/routes", kViewer, "any", "Every route and the role it needs"},
      {"GET", "/auth/keys", kAdmin, "global", "List API keys (never their secrets)"},
      {"POST", "/auth/keys", kAdmin, "global", "Create an API key (its secret is shown once)"},
      {"DELETE", "/auth/keys/{id}", kAdmin, "global", "Revoke an API key"},
      {"GET", "/audit", kAdmin, "global", "The audit log of mutating calls, filtered"},
  };
  return rules;
}

const RouteRule* FindRule(const http::RouteKey& route) {
  static const std::map<http::RouteKey, const RouteRule*> index = [] {
    std::map<http::RouteKey, const RouteRule*> m;
    for (const auto& r : RouteRules()) m[{r.method, r.pattern}] = &r;
    return m;
  }();
  auto it = index.find(route);
  return it == index.end() ? nullptr : it->second;
}

std::string NewApiKeySecret() { return "ctx_" + SecretHex(32); }

Sha256::Sha256() : md_(EVP_MD_fetch(nullptr, "SHA256", nullptr)) {
  CORTEX_CHECK_MSG(md_ != nullptr, "OpenSSL has no SHA-256");
}

Sha256::~Sha256() { EVP_MD_free(md_); }

Sha256::Digest Sha256::operator()(std::string_view data) const {
  Digest digest{};
  unsigned int n = 0;
  CORTEX_CHECK_MSG(EVP_Digest(data.data(), data.size(), digest.data(), &n, md_, nullptr) == 1 &&
                       n == digest.size(),
                   "SHA-256 failed");
  return digest;
}

std::string HashApiKey(std::string_view secret) {
  auto digest = Sha256()(secret);
  return Hex(digest.data(), digest.size());
}

namespace {

uint64_t Rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

void SipRound(uint64_t& v0, uint64_t& v1, uint64_t& v2, uint64_t& v3) {
  v0 += v1;
  v1 = Rotl(v1, 13);
  v1 ^= v0;
  v0 = Rotl(v0, 32);
  v2 += v3;
  v3 = Rotl(v3, 16);
  v3 ^= v2;
  v0 += v3;
  v3 = Rotl(v3, 21);
  v3 ^= v0;
  v2 += v1;
  v1 = Rotl(v1, 17);
  v1 ^= v2;
  v2 = Rotl(v2, 32);
}

uint64_t LoadLittleEndian64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void StoreLittleEndian64(uint64_t v, unsigned char* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

}  // namespace

SipHash128 SipHash128::WithRandomKey() {
  std::array<unsigned char, 16> bytes{};
  CORTEX_CHECK_MSG(RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) == 1,
                   "OpenSSL could not make a random key");
  return SipHash128({LoadLittleEndian64(bytes.data()), LoadLittleEndian64(bytes.data() + 8)});
}

SipHash128::Digest SipHash128::operator()(std::string_view data) const {
  uint64_t v0 = 0x736f6d6570736575ULL ^ k0_;
  uint64_t v1 = 0x646f72616e646f6dULL ^ k1_ ^ 0xee;  // 0xee: the 128-bit variant
  uint64_t v2 = 0x6c7967656e657261ULL ^ k0_;
  uint64_t v3 = 0x7465646279746573ULL ^ k1_;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const size_t n = data.size();
  const size_t whole = n - n % 8;
  for (size_t i = 0; i < whole; i += 8) {
    const uint64_t m = LoadLittleEndian64(p + i);
    v3 ^= m;
    SipRound(v0, v1, v2, v3);
    SipRound(v0, v1, v2, v3);
    v0 ^= m;
  }
  uint64_t last = static_cast<uint64_t>(n) << 56;
  for (size_t i = 0; i < n % 8; ++i) last |= static_cast<uint64_t>(p[whole + i]) << (8 * i);
  v3 ^= last;
  SipRound(v0, v1, v2, v3);
  SipRound(v0, v1, v2, v3);
  v0 ^= last;
  v2 ^= 0xee;
  for (int i = 0; i < 4; ++i) SipRound(v0, v1, v2, v3);
  Digest out{};
  StoreLittleEndian64(v0 ^ v1 ^ v2 ^ v3, out.data());
  v1 ^= 0xdd;
  for (int i = 0; i < 4; ++i) SipRound(v0, v1, v2, v3);
  StoreLittleEndian64(v0 ^ v1 ^ v2 ^ v3, out.data() + 8);
  return out;
}

size_t AccessControl::DigestHash::operator()(const SipHash128::Digest& d) const {
  size_t h;  // the digest is uniformly spread already: its first bytes are a fine hash
  std::memcpy(&h, d.data(), sizeof h);
  return h;
}

Result<std::pair<store::ApiKeyRecord, std::string>> CreateApiKey(
    store::Store& store, const std::string& name, Role role,
    const std::vector<std::string>& scopes) {
  if (name.empty() || name.size() > 100 || !IsValidUtf8(name) ||
      std::any_of(name.begin(), name.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return InvalidArgumentError(
        "a key's name is 1 to 100 bytes of UTF-8 text, no control characters");
  }
  if (role == Role::kPublic)
    return InvalidArgumentError("a key's role is viewer, operator or admin");
  CORTEX_RETURN_IF_ERROR(CheckScopes(scopes));
  store::ApiKeyRecord r;
  r.id = "key_" + SecretHex(6);
  r.name = name;
  r.role = std::string(RoleName(role));
  r.scopes = scopes;
  std::string secret = NewApiKeySecret();
  r.hash = HashApiKey(secret);
  r.created_ms = exec::NowMs();
  CORTEX_RETURN_IF_ERROR(store.PutApiKey(r));
  return std::make_pair(r, secret);
}

Status RevokeApiKey(store::Store& store, const std::string& id) {
  CORTEX_ASSIGN_OR_RETURN(auto key, store.GetApiKey(id));
  if (!key) return NotFoundError("no API key '" + id + "'");
  if (key->revoked_ms != 0) return Status::Ok();
  key->revoked_ms = exec::NowMs();
  return store.PutApiKey(*key);
}

std::string Identity::Actor() const {
  if (key_id.empty()) return name.empty() ? "anonymous" : name;
  return key_id + " (" + name + ")";
}

AccessControl::AccessControl(store::Store& store, AuthOptions options)
    : store_(store), options_(options) {}

Result<Identity> AccessControl::Authenticate(const http::Request& request) {
  Identity who;
  if (!options_.enabled) return who;  // anonymous admin
  auto header = request.Header("Authorization");
  if (!header) {
    return UnauthenticatedError("this server needs an API key: Authorization: Bearer <key>");
  }
  std::string_view value = *header;
  if (value.size() < 7 ||
      !std::equal(value.begin(), value.begin() + 7, "Bearer ",
                  [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
    return UnauthenticatedError("the Authorization header must be 'Bearer <key>'");
  }
  std::string_view secret = value.substr(7);
  while (!secret.empty() && secret.front() == ' ') secret.remove_prefix(1);
  const bool jwt = options_.jwt && LooksLikeJwt(secret);
  if (secret.empty() || secret.size() > (jwt ? 16384u : 512u)) {
    return UnauthenticatedError("the API key is not valid");
  }
  // Credentials checked in the last few seconds are remembered by a keyed hash, so a client
  // that sends the same one again costs a short hash and a lookup.
  const SipHash128::Digest remembered = remember_hash_(secret);
  const int64_t now = exec::NowMs();
  {
    MutexLock lock(remembered_mu_);
    auto it = remembered_.find(remembered);
    if (it != remembered_.end() && now < it->second.until_ms) return it->second.who;
  }
  int64_t until = now + 5000;
  if (jwt) {
    CORTEX_ASSIGN_OR_RETURN(JwtIdentity token, options_.jwt->Verify(secret, now / 1000));
    who.key_id = "jwt:" + token.subject;
    who.name = token.subject;
    who.role = *ParseRole(token.role);
    who.scopes = std::move(token.scopes);
    until = std::min(now + 60000, token.expires * 1000);
  } else {
    const Sha256::Digest digest = sha256_(secret);  // how the store keeps keys
    CORTEX_ASSIGN_OR_RETURN(auto key, store_.FindApiKeyByHash(Hex(digest.data(), digest.size())));
    if (!key) return UnauthenticatedError("the API key is not valid");
    if (key->revoked_ms != 0) {
      return UnauthenticatedError("the API key " + key->id + " was revoked");
    }
    auto role = ParseRole(key->role);
    if (!role) return UnauthenticatedError("the API key " + key->id + " has no valid role");
    if (now - key->last_used_ms > 60000) {  // at most one write a minute a key
      key->last_used_ms = now;
      (void)store_.PutApiKey(*key);
    }
    if (!CheckScopes(key->scopes).ok()) {
      return UnauthenticatedError("the API key " + key->id + " has an invalid scope");
    }
    who.key_id = key->id;
    who.name = key->name;
    who.role = *role;
    who.scopes = std::move(key->scopes);
  }
  MutexLock lock(remembered_mu_);
  if (remembered_.size() >= kMaxRemembered) remembered_.clear();  // bounded: start over
  remembered_[remembered] = Remembered{who, until};
  return who;
}

void AccessControl::Forget() {
  MutexLock lock(remembered_mu_);
  remembered_.clear();
}

std::optional<std::chrono::milliseconds> AccessControl::Throttle(const std::string& bucket) {
  if (options_.rate_per_second <= 0) return std::nullopt;
  const double capacity =
      options_.burst > 0 ? options_.burst : std::max(1.0, options_.rate_per_second);
  const auto now = std::chrono::steady_clock::now();
  MutexLock lock(buckets_mu_);
  if (buckets_.size() > 100000) buckets_.clear();  // many addresses: start over, never grow on
  auto [it, fresh] = buckets_.try_emplace(bucket, Bucket{capacity, now});
  Bucket& b = it->second;
  if (!fresh) {
    double elapsed = std::chrono::duration<double>(now - b.at).count();
    b.tokens = std::min(capacity, b.tokens + elapsed * options_.rate_per_second);
    b.at = now;
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return std::nullopt;
  }
  double wait_s = (1 - b.tokens) / options_.rate_per_second;
  return std::chrono::milliseconds(static_cast<int64_t>(wait_s * 1000) + 1);
}

void AccessControl::Audit(const Identity& who, const http::Request& request,
                          const http::Response& response) {
  store::AuditEntry e;
  e.at_ms = exec::NowMs();
  e.actor = who.Actor();
  e.role = std::string(RoleName(who.role));
  e.method = request.method;
  e.path = ToValidUtf8(request.path.substr(0, 1000));
  e.target = TargetOf(request);
  e.status = response.status;
  for (const auto& [k, v] : response.headers) {
    if (k == "X-Request-Id") e.request_id = v;
  }
  if (response.status >= 400 && !response.sse) {
    auto body = ParseJson(response.body);
    if (body.ok() && body->is_object() && body->contains("error") && (*body)["error"].is_object()) {
      e.detail = ToValidUtf8((*body)["error"].value("message", "").substr(0, 1000));
    }
  }
  if (auto seq = store_.AppendAudit(e); !seq.ok()) {
    log::Error("audit", "cannot record " + e.method + " " + e.path + " by " + e.actor + ": " +
                            seq.status().message());
  }
}

http::Filter AccessControl::MakeFilter(http::Filter next) {
  return [this, next](http::Request& req) {
    http::FilterResult result;
    if (next) result = next(req);
    const std::string request_id = RequestId(req);
    result.headers.emplace_back("X-Request-Id", request_id);
    // Writes only, refused ones included: a flood of refused reads must not grow the log.
    const bool audited = Mutating(req.method);
    auto audit_as = [this, &result, audited](Identity who) {
      if (!audited) return;
      result.after = [this, who = std::move(who)](const http::Request& r,
                                                  const http::Response& resp) {
        Audit(who, r, resp);
      };
    };
    auto refuse = [&](http::Response r) {
      r.headers.emplace_back("X-Request-Id", request_id);
      result.refusal = std::move(r);
    };
    if (result.refusal) {
      result.refusal->headers.emplace_back("X-Request-Id", request_id);
      return result;  // the guard's refusal (CORS preflight, Host...) stands
    }
    const auto& route = req.route;
    if (!route) return result;  // 404/405 from the router
    const RouteRule* rule = FindRule(*route);
    if (!rule) {
      refuse(http::ErrorResponse(403, "forbidden",
                                 "route " + route->method + " " + route->pattern +
                                     " has no role in the access table; refused"));
      audit_as(Identity{"", "unknown", Role::kPublic, {}});
      return result;
    }
    // Past its rate: 429 with when to come back.
    auto throttled = [&](std::string_view kind, const std::string& id) {
      if (options_.rate_per_second <= 0) return false;
      const std::string bucket = std::string(kind) + " " + id;
      auto wait = Throttle(bucket);
      if (!wait) return false;
      auto r = http::ErrorResponse(
          429, "rate_limited",
          "too many requests from " + bucket + ": " + std::to_string(options_.rate_per_second) +
              " a second are allowed; retry after " + std::to_string(wait->count()) + " ms");
      r.headers.emplace_back("Retry-After", std::to_string((wait->count() + 999) / 1000));
      refuse(std::move(r));
      return true;
    };
    if (rule->role == Role::kPublic) {
      if (options_.enabled)
        audit_as(Identity{"", "public", Role::kPublic, {}});
      else
        audit_as(Identity{});
      (void)throttled("address", req.remote_addr);
      return result;
    }
    auto who = Authenticate(req);
    if (!who.ok()) {
      auto r = http::ErrorResponse(401, "unauthenticated", who.status().message());
      r.headers.emplace_back("WWW-Authenticate", "Bearer");
      refuse(std::move(r));
      audit_as(Identity{"", "unauthenticated", Role::kPublic, {}});
      return result;
    }
    if (who->key_id.empty() ? throttled("address", req.remote_addr)
                            : throttled("key", who->key_id)) {
      audit_as(*who);
      return result;
    }
    if (who->role < rule->role) {
      refuse(http::ErrorResponse(403, "forbidden",
                                 route->method + " " + route->pattern + " needs the " +
                                     std::string(RoleName(rule->role)) + " role; " + who->Actor() +
                                     " is " + std::string(RoleName(who->role))));
    } else if (auto refused = CheckScope(*who, *rule, req)) {
      refuse(std::move(*refused));
    } else if (options_.enabled) {
      req.role = std::string(RoleName(who->role));  // for a route that decides per action (/mcp)
    }
    audit_as(*who);
    return result;
  };
}

std::optional<http::Response> AccessControl::CheckScope(const Identity& who, const RouteRule& rule,
                                                        http::Request& req) {
  if (who.scopes.empty()) return std::nullopt;
  std::string scopes_text;
  for (const auto& s : who.scopes) scopes_text += (scopes_text.empty() ? "" : ", ") + s;
  auto forbidden = [&](const std::string& what) {
    return http::ErrorResponse(403, "forbidden",
                               who.Actor() + " is scoped to " + scopes_text + ": " + what);
  };
  const std::string_view target = rule.target;
  if (target == "any") return std::nullopt;
  if (target == "global") {
    return forbidden(std::string(rule.method) + " " + rule.pattern +
                     " acts on all of Cortex, which needs a key without scopes");
  }
  if (target == "body" || target == "each") {
    // Runs later, in the handler: it owns copies of what it reads.
    req.may_act_on = [scopes = who.scopes, actor = who.Actor(), scopes_text](
                         std::string_view kind, std::string_view name) -> Status {
      if (InScope(scopes, kind, name)) return Status::Ok();
      return PermissionDeniedError(actor + " is scoped to " + scopes_text + ", not " +
                                   std::string(kind) + " '" + std::string(name) + "'");
    };
    return std::nullopt;
  }
  // "kind:{param}": the manifest's kind (or "{kind}" from the path) and its name's parameter.
  const size_t colon = target.find(':');
  CORTEX_CHECK_MSG(colon != std::string_view::npos && target.size() > colon + 2,
                   "bad target in the route table");
  std::string kind(target.substr(0, colon));
  const std::string param(target.substr(colon + 2, target.size() - colon - 3));
  std::string name = req.PathParam(param);
  if (kind == "{kind}") {
    auto k = registry::ParseKind(req.PathParam("kind"));
    if (!k) return std::nullopt;  // no such kind: the handler answers it
    kind = ScopeKind(*k);
  } else if (kind == "execution" || kind == "run" || kind == "agent-run" || kind == "session") {
    // A run: what it runs is the target. One not found is the handler's 404.
    std::optional<std::string> owner;
    Status st = Status::Ok();
    if (kind == "execution") {
      auto r = store_.GetExecution(name);
      st = r.status();
      if (r.ok() && *r) owner = (*r)->name;
      kind = "tool";
    } else if (kind == "run") {
      auto r = store_.GetRun(name);
      st = r.status();
      if (r.ok() && *r) owner = (*r)->workflow;
      kind = "workflow";
    } else if (kind == "agent-run") {
      auto r = store_.GetAgentRun(name);
      st = r.status();
      if (r.ok() && *r) owner = (*r)->agent;
      kind = "agent";
    } else {
      auto r = store_.GetAgentSession(name);
      st = r.status();
      if (r.ok() && *r) owner = (*r)->agent;
      kind = "agent";
    }
    if (!st.ok()) {
      return http::ErrorResponse(503, "unavailable",
                                 "cannot check the caller's scope: " + st.message());
    }
    if (!owner) return std::nullopt;
    if (InScope(who.scopes, kind, *owner)) return std::nullopt;
    return forbidden("not " + kind + " '" + *owner + "', whose run " + name + " this is");
  }
  if (InScope(who.scopes, kind, name)) return std::nullopt;
  return forbidden("not " + kind + " '" + name + "'");
}

void AddAccessRoutes(http::Server& server, AccessControl& access, store::Store& store) {
  auto key_json = [](const store::ApiKeyRecord& k) {
    Json j = {{"id", k.id},
              {"name", k.name},
              {"role", k.role},
              {"created_ms", k.created_ms},
              {"revoked", k.revoked_ms != 0}};
    if (!k.scopes.empty()) j["scopes"] = k.scopes;
    if (k.revoked_ms) j["revoked_ms"] = k.revoked_ms;
    if (k.last_used_ms) j["last_used_ms"] = k.last_used_ms;
    return j;
  };
  server.Handle("GET", "/auth/whoami", [&access](const http::Request& req) {
    auto who = access.Authenticate(req);
    if (!who.ok()) return ErrorFromStatus(who.status());
    Json j = {{"actor", who->Actor()},
              {"role", std::string(RoleName(who->role))},
              {"authentication", access.enabled()}};
    if (!who->key_id.empty()) j["key_id"] = who->key_id;
    if (!who->scopes.empty()) j["scopes"] = who->scopes;
    return Ok(j);
  });
  server.Handle("GET", "/auth/routes", [&server](const http::Request&) {
    Json routes = Json::array();
    for (const auto& r : server.Routes()) {
      const RouteRule* rule = FindRule(r);
      routes.push_back({{"method", r.method},
                        {"pattern", r.pattern},
                        {"role", rule ? std::string(RoleName(rule->role)) : "none"},
                        {"target", rule ? rule->target : "none"}});
    }
    return Ok(Json{{"routes", std::move(routes)}});
  });
  server.Handle("GET", "/auth/keys", [&store, key_json](const http::Request&) {
    auto keys = store.ListApiKeys();
    if (!keys.ok()) return ErrorFromStatus(keys.status());
    Json out = Json::array();
    for (const auto& k : *keys) out.push_back(key_json(k));
    return Ok(Json{{"keys", std::move(out)}});
  });
  server.Handle("POST", "/auth/keys", [&store, key_json](const http::Request& req) {
    auto body = BodyObject(req);
    if (!body.ok()) return ErrorFromStatus(body.status());
    std::string name = body->value("name", "");
    auto role = ParseRole(body->value("role", ""));
    if (!role) {
      return ErrorFromStatus(InvalidArgumentError("'role' must be viewer, operator or admin"));
    }
    std::vector<std::string> scopes;
    if (auto it = body->find("scopes"); it != body->end() && !it->is_null()) {
      bool strings = it->is_array();
      for (const auto& sc : strings ? *it : Json::array()) {
        strings = strings && sc.is_string();
        if (strings) scopes.push_back(sc.get<std::string>());
      }
      if (!strings) {
        return ErrorFromStatus(InvalidArgumentError(
            "'scopes' must be an array of strings such as \"workflow:nightly-*\""));
      }
    }
    auto made = CreateApiKey(store, name, *role, scopes);
    if (!made.ok()) return ErrorFromStatus(made.status());
    Json j = key_json(made->first);
    j["secret"] = made->second;  // shown once
    return Ok(j, 201);
  });
  server.Handle("DELETE", "/auth/keys/{id}", [&store, &access](const http::Request& req) {
    if (Status st = RevokeApiKey(store, req.PathParam("id")); !st.ok()) {
      return ErrorFromStatus(st);
    }
    access.Forget();  // refused from the next call on, not in a few seconds
    return Ok(Json{{"id", req.PathParam("id")}, {"revoked", true}});
  });
  server.Handle("GET", "/audit", [&store](const http::Request& req) {
    store::AuditFilter f;
    if (auto v = req.Query("actor")) f.actor = *v;
    if (auto v = req.Query("path")) f.path_prefix = *v;
    auto since = IntParam(req.Query("since_ms"), "since_ms", 0, INT64_MAX, -1);
    auto before = IntParam(req.Query("before"), "before", 0, INT64_MAX, -1);
    auto limit = IntParam(req.Query("limit"), "limit", 1, 1000, static_cast<int64_t>(f.limit));
    for (const auto* r : {&since, &before, &limit}) {
      if (!r->ok()) return ErrorFromStatus(r->status());
    }
    if (*since >= 0) f.since_ms = *since;
    if (*before >= 0) f.before_seq = *before;
    f.limit = static_cast<size_t>(*limit);
    auto entries = store.ListAudit(f);
    if (!entries.ok()) return ErrorFromStatus(entries.status());
    Json out = Json::array();
    for (const auto& e : *entries) {
      Json j = {{"seq", e.seq},       {"at_ms", e.at_ms},   {"actor", e.actor},
                {"role", e.role},     {"method", e.method}, {"path", e.path},
                {"target", e.target}, {"status", e.status}, {"request_id", e.request_id}};
      if (!e.detail.empty()) j["detail"] = e.detail;
      out.push_back(std::move(j));
    }
    return Ok(Json{{"entries", std::move(out)}});
  });
}

}  // namespace cortex::api
