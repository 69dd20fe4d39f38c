// JSON Web Tokens from an external identity provider (Keycloak, Auth0, Dex, Google...), sent as
// `Authorization: Bearer <jwt>`: the signature checked against the provider's JSON Web Key Set
// (RS256 or ES256 only, never "none" or HMAC), then issuer, audience, expiry and not-before
// (with a leeway for clock skew), then the role from a claim. OpenSSL does the cryptography.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace cortex::api {

struct JwtOptions {
  std::string issuer;    // the token's "iss" must equal it
  std::string audience;  // one of the token's "aud" (string or array) must equal it
  // The claim naming the caller's role ("viewer", "operator", "admin"); a dotted path reaches
  // into objects ("realm_access.role"). A claim that is an array gives the highest role in it.
  std::string role_claim = "cortex_role";
  int64_t leeway_seconds = 60;
};

struct JwtIdentity {
  std::string subject;  // "sub"
  std::string role;     // viewer | operator | admin
  int64_t expires = 0;  // "exp", Unix seconds
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
  // and audience with a known role. `now` in Unix seconds.
  Result<JwtIdentity> Verify(std::string_view token, int64_t now) const;

  size_t keys() const { return keys_.size(); }

 private:
  struct Key;
  JwtVerifier(JwtOptions options, std::vector<std::unique_ptr<Key>> keys);
  JwtOptions options_;
  std::vector<std::unique_ptr<Key>> keys_;
};

// True when `token` has a JWT's shape (three base64url parts): the caller tries it as one.
bool LooksLikeJwt(std::string_view token);

// Base64url without padding ("-_", RFC 7515); nullopt for anything else.
std::optional<std::string> Base64UrlDecode(std::string_view in);
std::string Base64UrlEncode(std::string_view in);

}  // namespace cortex::api
