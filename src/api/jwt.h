// JSON Web Tokens from an external identity provider (Keycloak, Auth0, Dex, Google...), sent as
// `Authorization: Bearer <jwt>`: the signature checked against the provider's JSON Web Key Set
// (RS256 or ES256 only, never "none" or HMAC), then issuer, audience, expiry and not-before
// (with a leeway for clock skew), then the role from a claim. OpenSSL does the cryptography.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"

namespace cortex::api {

struct JwtOptions {
  std::string issuer;    // the token's "iss" must equal it
  std::string audience;  // one of the token's "aud" (string or array) must equal it
  // The claim naming the caller's role ("viewer", "operator", "admin"); a dotted path reaches
  // into objects ("realm_access.role"). A claim that is an array gives the highest role in it.
  std::string role_claim = "cortex_role";
  // The claim (a dotted path too) listing the caller's scopes (api/scopes.h), as an array of
  // strings or one space-separated string; absent: no scopes, the whole role.
  std::string scope_claim = "cortex_scopes";
  int64_t leeway_seconds = 60;
};

struct JwtIdentity {
  std::string subject;              // "sub"
  std::string role;                 // viewer | operator | admin
  std::vector<std::string> scopes;  // checked by CheckScopes
  int64_t expires = 0;              // "exp", Unix seconds
};

class JwtVerifier {
 public:
  // `jwks_json`: {"keys": [{"kty": "RSA", "kid", "n", "e"} | {"kty": "EC", "crv": "P-256",
  // "kid", "x", "y"}, ...]}. Keys of other types or uses are skipped; none usable is an error.
  static Result<std::unique_ptr<JwtVerifier>> Create(JwtOptions options,
                                                     std::string_view jwks_json);
  ~JwtVerifier();
  JwtVerifier(const JwtVerifier&) = delete;
  JwtVerifier& operator=(const JwtVerifier&) = delete;

  // Unauthenticated (with the reason) for anything but a valid, current token of this issuer
  // and audience with a known role (and valid scopes, when it has any). `now` in Unix seconds.
  // `*unknown_key` (optional) is set when the token names a key the set does not have (the provider
  // may have rotated its keys).
  Result<JwtIdentity> Verify(std::string_view token, int64_t now,
                             bool* unknown_key = nullptr) const;

  size_t keys() const { return keys_.size(); }

 private:
  struct Key;
  JwtVerifier(JwtOptions options, std::vector<std::unique_ptr<Key>> keys);
  JwtOptions options_;
  std::vector<std::unique_ptr<Key>> keys_;
};

// The key set tokens are checked against, from a JWKS document, or from the provider's JWKS URL
// (fetched at the start, again every `refresh`, and soon after a token names a key the set does
// not have: at most once every 5 s). A fetch that fails keeps the keys there are. A JWKS is at
// most 1 MiB.
class JwtKeys {
 public:
  static Result<std::shared_ptr<JwtKeys>> FromDocument(JwtOptions options, std::string_view jwks);
  // An error when the first fetch fails: the server does not start without keys.
  static Result<std::shared_ptr<JwtKeys>> FromUrl(JwtOptions options, std::string url,
                                                  std::chrono::seconds refresh,
                                                  std::string ca_file = "");
  ~JwtKeys();  // stops the fetcher
  JwtKeys(const JwtKeys&) = delete;
  JwtKeys& operator=(const JwtKeys&) = delete;

  Result<JwtIdentity> Verify(std::string_view token, int64_t now) const;
  size_t keys() const;

 private:
  JwtKeys(JwtOptions options, std::shared_ptr<const JwtVerifier> verifier);
  Result<std::shared_ptr<const JwtVerifier>> Fetch() const;
  void Loop();

  JwtOptions options_;
  std::string url_, ca_file_;
  std::chrono::seconds refresh_{300};
  mutable Mutex mu_;
  mutable std::condition_variable cv_;
  std::shared_ptr<const JwtVerifier> verifier_ CORTEX_GUARDED_BY(mu_);
  mutable bool wanted_ CORTEX_GUARDED_BY(mu_) = false;  // a token named an unknown key
  bool stop_ CORTEX_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// True when `token` has a JWT's shape (three base64url parts): the caller tries it as one.
bool LooksLikeJwt(std::string_view token);

// Base64url without padding ("-_", RFC 7515); nullopt for anything else.
std::optional<std::string> Base64UrlDecode(std::string_view in);
std::string Base64UrlEncode(std::string_view in);

}  // namespace cortex::api
