#include "api/auth.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <map>

#include "api/errors.h"
#include "api/route_util.h"
#include "common/json.h"
#include "common/log.h"
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

std::string RandomHex(size_t bytes) {
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
  return "req_" + RandomHex(8);
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
      {"GET", "/health", kPublic},
      {"GET", "/healthz", kPublic},
      {"GET", "/metrics", kViewer},
      {"POST", "/hooks/{workflow}", kPublic},  // checked by the workflow's webhook secret
      // Registry.
      {"GET", "/registry/", kViewer},
      {"GET", "/registry/status", kViewer},
      {"GET", "/registry/manifests", kViewer},
      {"GET", "/registry/manifest/{kind}/{name}", kViewer},
      {"GET", "/registry/dependencies/{kind}/{name}", kViewer},
      {"GET", "/registry/validate-dependencies/{kind}/{name}", kViewer},
      {"POST", "/registry/validate-dependencies/{kind}/{name}", kViewer},
      {"GET", "/registry/graph", kViewer},
      {"GET", "/registry/errors", kViewer},
      {"GET", "/registry/events", kViewer},
      {"GET", "/registry/schema/{kind}", kViewer},
      {"GET", "/registry/tools", kViewer},
      {"GET", "/registry/agents", kViewer},
      {"GET", "/registry/relics", kViewer},
      {"GET", "/registry/workflows", kViewer},
      {"GET", "/registry/monuments", kViewer},
      {"POST", "/registry/manifests", kAdmin},
      {"DELETE", "/registry/manifest/{kind}/{name}", kAdmin},
      {"POST", "/registry/sync", kAdmin},
      // Tools.
      {"POST", "/execute/tool", kOperator},
      {"POST", "/execute/batch", kOperator},
      {"GET", "/executions", kViewer},
      {"GET", "/executions/{id}", kViewer},
      {"GET", "/executions/{id}/logs", kViewer},
      {"POST", "/executions/{id}/cancel", kOperator},
      {"GET", "/tools/{name}/health", kViewer},
      // Workflows.
      {"POST", "/execute/workflow", kOperator},
      {"POST", "/execute/workflow/{name}", kOperator},
      {"GET", "/workflows", kViewer},
      {"GET", "/workflows/{id}", kViewer},
      {"GET", "/workflows/{id}/status", kViewer},
      {"GET", "/workflows/{id}/logs", kViewer},
      {"POST", "/workflows/{id}/cancel", kOperator},
      {"POST", "/workflows/{id}/pause", kOperator},
      {"POST", "/workflows/{id}/resume", kOperator},
      {"POST", "/workflows/{id}/retry", kOperator},
      // Relics, monuments, discovery.
      {"POST", "/deploy/relic", kOperator},
      {"POST", "/deploy/relic/{name}", kOperator},
      {"POST", "/deploy/monument", kOperator},
      {"POST", "/deploy/monument/{name}", kOperator},
      {"GET", "/relics", kViewer},
      {"GET", "/relics/{name}", kViewer},
      {"GET", "/relics/{name}/status", kViewer},
      {"GET", "/relics/{name}/logs", kViewer},
      {"GET", "/relics/{name}/stats", kViewer},
      {"POST", "/relics/{name}/start", kOperator},
      {"POST", "/relics/{name}/stop", kOperator},
      {"POST", "/relics/{name}/restart", kOperator},
      {"POST", "/relics/{name}/scale", kOperator},
      {"POST", "/relics/{name}/call/{operation}", kOperator},
      {"DELETE", "/relics/{name}", kOperator},
      {"GET", "/monuments", kViewer},
      {"GET", "/monuments/{name}", kViewer},
      {"GET", "/monuments/{name}/status", kViewer},
      {"GET", "/monuments/{name}/health", kViewer},
      {"GET", "/monuments/{name}/logs", kViewer},
      {"POST", "/monuments/{name}/stop", kOperator},
      {"POST", "/monuments/{name}/scale", kOperator},
      {"DELETE", "/monuments/{name}", kOperator},
      {"GET", "/discovery/services", kViewer},
      // Agents and models.
      {"POST", "/execute/agent", kOperator},
      {"GET", "/agent-runs", kViewer},
      {"GET", "/agents/usage", kViewer},
      {"GET", "/agent-runs/{id}", kViewer},
      {"GET", "/agent-runs/{id}/events", kViewer},
      {"POST", "/agent-runs/{id}/cancel", kOperator},
      {"GET", "/state/agent/{agent}/sessions", kViewer},
      {"POST", "/state/agent/{agent}/session", kOperator},
      {"GET", "/agent-sessions/{id}", kViewer},
      {"DELETE", "/agent-sessions/{id}", kOperator},
      {"GET", "/llm/providers", kViewer},
      {"POST", "/llm/providers/{name}/reset", kOperator},
      {"GET", "/v1/models", kViewer},
      {"POST", "/v1/chat/completions", kOperator},
      // Access control itself.
      {"GET", "/auth/whoami", kViewer},
      {"GET", "/auth/routes", kViewer},
      {"GET", "/auth/keys", kAdmin},
      {"POST", "/auth/keys", kAdmin},
      {"DELETE", "/auth/keys/{id}", kAdmin},
      {"GET", "/audit", kAdmin},
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

std::string NewApiKeySecret() { return "ctx_" + RandomHex(32); }

std::string HashApiKey(std::string_view secret) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  CORTEX_CHECK_MSG(EVP_Digest(secret.data(), secret.size(), digest, &n, EVP_sha256(), nullptr) == 1,
                   "SHA-256 failed");
  return Hex(digest, n);
}

Result<std::pair<store::ApiKeyRecord, std::string>> CreateApiKey(store::Store& store,
                                                                 const std::string& name,
                                                                 Role role) {
  if (name.empty() || name.size() > 100 || !IsValidUtf8(name) ||
      std::any_of(name.begin(), name.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return InvalidArgumentError(
        "a key's name is 1 to 100 bytes of UTF-8 text, no control characters");
  }
  if (role == Role::kPublic)
    return InvalidArgumentError("a key's role is viewer, operator or admin");
  store::ApiKeyRecord r;
  r.id = "key_" + RandomHex(6);
  r.name = name;
  r.role = std::string(RoleName(role));
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
  const std::string digest = HashApiKey(secret);
  const int64_t now = exec::NowMs();
  {
    std::lock_guard lock(remembered_mu_);
    auto it = remembered_.find(digest);
    if (it != remembered_.end() && now < it->second.until_ms) return it->second.who;
  }
  int64_t until = now + 5000;
  if (jwt) {
    CORTEX_ASSIGN_OR_RETURN(JwtIdentity token, options_.jwt->Verify(secret, now / 1000));
    who.key_id = "jwt:" + token.subject;
    who.name = token.subject;
    who.role = *ParseRole(token.role);
    until = std::min(now + 60000, token.expires * 1000);
  } else {
    CORTEX_ASSIGN_OR_RETURN(auto key, store_.FindApiKeyByHash(digest));
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
    who.key_id = key->id;
    who.name = key->name;
    who.role = *role;
  }
  std::lock_guard lock(remembered_mu_);
  if (remembered_.size() >= kMaxRemembered) remembered_.clear();  // bounded: start over
  remembered_[digest] = Remembered{who, until};
  return who;
}

void AccessControl::Forget() {
  std::lock_guard lock(remembered_mu_);
  remembered_.clear();
}

std::optional<std::chrono::milliseconds> AccessControl::Throttle(const std::string& bucket) {
  if (options_.rate_per_second <= 0) return std::nullopt;
  const double capacity =
      options_.burst > 0 ? options_.burst : std::max(1.0, options_.rate_per_second);
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(buckets_mu_);
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

http::Filter AccessControl::MakeFilter(const http::Server& server, http::Filter next) {
  return [this, &server, next](const http::Request& req) {
    http::FilterResult result;
    if (next) result = next(req);
    const std::string request_id = RequestId(req);
    result.headers.emplace_back("X-Request-Id", request_id);
    auto audit_as = [this, &result](Identity who) {
      result.after = [this, who](const http::Request& r, const http::Response& resp) {
        // Writes only, refused ones included: a flood of refused reads must not grow the log.
        if (Mutating(r.method)) Audit(who, r, resp);
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
    auto route = server.Match(req.method, req.path);
    if (!route) return result;  // 404/405 from the router
    const RouteRule* rule = FindRule(*route);
    if (!rule) {
      refuse(http::ErrorResponse(403, "forbidden",
                                 "route " + route->method + " " + route->pattern +
                                     " has no role in the access table; refused"));
      audit_as(Identity{"", "unknown", Role::kPublic});
      return result;
    }
    // Past its rate: 429 with when to come back.
    auto throttled = [&](const std::string& bucket) {
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
        audit_as(Identity{"", "public", Role::kPublic});
      else
        audit_as(Identity{});
      (void)throttled("address " + req.remote_addr);
      return result;
    }
    auto who = Authenticate(req);
    if (!who.ok()) {
      auto r = http::ErrorResponse(401, "unauthenticated", who.status().message());
      r.headers.emplace_back("WWW-Authenticate", "Bearer");
      refuse(std::move(r));
      audit_as(Identity{"", "unauthenticated", Role::kPublic});
      return result;
    }
    if (throttled(who->key_id.empty() ? "address " + req.remote_addr : "key " + who->key_id)) {
      audit_as(*who);
      return result;
    }
    if (who->role < rule->role) {
      refuse(http::ErrorResponse(403, "forbidden",
                                 route->method + " " + route->pattern + " needs the " +
                                     std::string(RoleName(rule->role)) + " role; " + who->Actor() +
                                     " is " + std::string(RoleName(who->role))));
    }
    audit_as(*who);
    return result;
  };
}

void AddAccessRoutes(http::Server& server, AccessControl& access, store::Store& store) {
  auto key_json = [](const store::ApiKeyRecord& k) {
    Json j = {{"id", k.id},
              {"name", k.name},
              {"role", k.role},
              {"created_ms", k.created_ms},
              {"revoked", k.revoked_ms != 0}};
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
    return Ok(j);
  });
  server.Handle("GET", "/auth/routes", [&server](const http::Request&) {
    Json routes = Json::array();
    for (const auto& r : server.Routes()) {
      const RouteRule* rule = FindRule(r);
      routes.push_back({{"method", r.method},
                        {"pattern", r.pattern},
                        {"role", rule ? std::string(RoleName(rule->role)) : "none"}});
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
    auto made = CreateApiKey(store, name, *role);
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
