// Who may call what (docs/security.md): API keys sent as `Authorization: Bearer <key>`, three
// roles, and one table that gives every route the role it needs. Every mutating call (and every
// refused one) goes to the audit log in the Store before its answer.
//
// Authentication is on when the server listens on anything but loopback, unless `auth.mode` says
// otherwise; off, every caller acts as an anonymous admin (the loopback default of a developer's
// machine). A route missing from the table is refused with 403, so a new route cannot be left
// open by mistake (and the route-walking test fails).
#pragma once

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "api/jwt.h"
#include "common/mutex.h"
#include "common/status.h"
#include "http/http.h"
#include "store/store.h"

struct evp_md_st;  // OpenSSL's EVP_MD

namespace cortex::api {

enum class Role { kPublic = 0, kViewer = 1, kOperator = 2, kAdmin = 3 };
std::string_view RoleName(Role role);
std::optional<Role> ParseRole(std::string_view name);  // viewer | operator | admin

// One route, the role it needs (kPublic: no key needed; the handler may check its own secret),
// what it acts on (for scoped callers, api/scopes.h), and what it does (the OpenAPI document's
// summary, and `cortex`'s route listing).
//
// `target` is one of:
//   "any"            acts on no one manifest (a listing, a schema...): scoped callers may call it
//   "global"         acts on all of Cortex (keys, the audit log, a reload): scoped callers may not
//   "body"           the manifest is named in the body: the handler asks Request::may_act_on
//   "each"           several manifests, one per message in the body (/mcp): the handler asks
//                    Request::may_act_on for each, and leaves out or refuses what is outside
//   "tool:{name}"    a kind and the path parameter naming the manifest ("{kind}:{name}" takes
//                    the kind from the path too)
//   "execution:{id}", "run:{id}", "agent-run:{id}", "session:{id}": a tool execution, workflow
//                    run, agent run or agent session, whose tool, workflow or agent is the target
struct RouteRule {
  const char* method;
  const char* pattern;
  Role role;
  const char* target;
  const char* summary;
};
const std::vector<RouteRule>& RouteRules();
// The rule of a registered route; nullptr when the table has none.
const RouteRule* FindRule(const http::RouteKey& route);

// A new API key's secret ("ctx_" + 64 hex digits), and the hash that is stored of it.
std::string NewApiKeySecret();
std::string HashApiKey(std::string_view secret);  // SHA-256, hex

// Creates a key (stored by hash); returns the record and, once, the secret. `scopes` (checked by
// CheckScopes) narrow what its role applies to; none: everything.
Result<std::pair<store::ApiKeyRecord, std::string>> CreateApiKey(
    store::Store& store, const std::string& name, Role role,
    const std::vector<std::string>& scopes = {});
Status RevokeApiKey(store::Store& store, const std::string& id);

struct AuthOptions {
  bool enabled = false;
  // Requests per second allowed to each key (a token bucket of `burst`), or to each remote
  // address for calls without a key; 0 = no limit. Past it: 429 with Retry-After.
  double rate_per_second = 0;
  double burst = 0;  // 0 = one second's worth
  // Bearer tokens that are JWTs are checked by this (none: only API keys).
  std::shared_ptr<const JwtKeys> jwt;
};

// SHA-256 with its implementation looked up once. (EVP_Digest with EVP_sha256() looks it up
// again on every call, which costs more than hashing a key: that was most of what
// authentication cost a request.)
class Sha256 {
 public:
  using Digest = std::array<unsigned char, 32>;
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  Digest operator()(std::string_view data) const;

 private:
  evp_md_st* md_;
};

// SipHash-2-4 with a 128-bit output: a keyed hash (a PRF) for remembering credentials that were
// already checked. With a key made at random in this process, no one outside can find a
// credential that hashes like another one, and hashing a 500-byte JWT costs a fraction of SHA-256
// (the store still holds API keys by SHA-256: see HashApiKey).
class SipHash128 {
 public:
  using Digest = std::array<unsigned char, 16>;
  explicit SipHash128(const std::array<uint64_t, 2>& key) : k0_(key[0]), k1_(key[1]) {}
  static SipHash128 WithRandomKey();  // from OpenSSL's RAND_bytes
  Digest operator()(std::string_view data) const;

 private:
  uint64_t k0_, k1_;
};

// The caller of a request, once authenticated.
struct Identity {
  std::string key_id;  // "" when authentication is off
  std::string name;
  Role role = Role::kAdmin;
  std::vector<std::string> scopes;  // what the role applies to (api/scopes.h); none: everything
  // "key_ab12cd34 (ci)"; without a key its name ("unauthenticated", "public") or "anonymous".
  std::string Actor() const;
};

class AccessControl {
 public:
  AccessControl(store::Store& store, AuthOptions options);

  // The server's filter: authenticates, authorizes the route the request reached (by the route
  // table), and audits. `next` (optional) runs first (the request
  // guard); its refusal stands.
  http::Filter MakeFilter(http::Filter next = nullptr);

  // Who is calling (Unauthenticated when a key is required and missing, unknown or revoked).
  // A credential that checked out is remembered for a moment (an API key for 5 s, a JWT for up
  // to 60 s and never past its expiry), so a busy caller costs one Store read, or one signature
  // check, per moment rather than per request.
  Result<Identity> Authenticate(const http::Request& request);
  bool enabled() const { return options_.enabled; }
  // Forgets every remembered credential (a key was revoked through the API).
  void Forget();

 private:
  void Audit(const Identity& who, const http::Request& request, const http::Response& response);
  // Whether `who` (scoped) may call `rule`'s route as `req` addresses it: a 403 answer when not.
  // Sets req.may_act_on for routes whose manifest is named in the body.
  std::optional<http::Response> CheckScope(const Identity& who, const RouteRule& rule,
                                           http::Request& req);
  // Takes a token from `bucket`'s; when there is none, how long until there is one.
  std::optional<std::chrono::milliseconds> Throttle(const std::string& bucket);

  store::Store& store_;
  AuthOptions options_;
  Sha256 sha256_;
  const SipHash128 remember_hash_ = SipHash128::WithRandomKey();
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point at;
  };
  Mutex buckets_mu_;
  std::map<std::string, Bucket> buckets_ CORTEX_GUARDED_BY(buckets_mu_);
  struct Remembered {
    Identity who;
    int64_t until_ms = 0;
  };
  static constexpr size_t kMaxRemembered = 10000;
  struct DigestHash {
    size_t operator()(const SipHash128::Digest& d) const;
  };
  Mutex remembered_mu_;
  // By the credential's keyed hash (remember_hash_).
  std::unordered_map<SipHash128::Digest, Remembered, DigestHash> remembered_
      CORTEX_GUARDED_BY(remembered_mu_);
};

// Admin routes of access control: GET|POST /auth/keys, DELETE /auth/keys/{id}, GET /auth/whoami,
// GET /auth/routes (the table, with each registered route's role), GET /audit.
void AddAccessRoutes(http::Server& server, AccessControl& access, store::Store& store);

}  // namespace cortex::api
