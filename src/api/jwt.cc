#include "api/jwt.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <algorithm>
#include <sstream>

#include "api/scopes.h"
#include "common/json.h"
#include "common/log.h"
#include "http/http.h"

namespace cortex::api {

namespace {

using Json = nlohmann::ordered_json;

constexpr size_t kMaxTokenBytes = 16384;

// Outside bytes as JSON with the project's depth-bounded parser; null when they are not.
Json ParsedOrNull(std::string_view text) {
  auto parsed = ParseJson(text);
  return parsed.ok() ? std::move(parsed).value() : Json();
}

int RoleRank(std::string_view role) {
  return role == "viewer" ? 1 : role == "operator" ? 2 : role == "admin" ? 3 : 0;
}

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

// An EVP_PKEY from parameters built by `fill`.
Pkey FromData(const char* type, const std::function<bool(OSSL_PARAM_BLD*)>& fill) {
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM* params = nullptr;
  EVP_PKEY_CTX* ctx = nullptr;
  EVP_PKEY* key = nullptr;
  if (bld && fill(bld) && (params = OSSL_PARAM_BLD_to_param(bld)) &&
      (ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr)) &&
      EVP_PKEY_fromdata_init(ctx) == 1) {
    if (EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1) key = nullptr;
  }
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  return Pkey(key);
}

// The claim at a dotted path ("realm_access.role"); nullptr when there is none.
const Json* ClaimAt(const Json& claims, std::string_view path) {
  const Json* at = &claims;
  while (at && !path.empty()) {
    size_t dot = path.find('.');
    std::string part(path.substr(0, dot));
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
    auto it = at->is_object() ? at->find(part) : at->end();
    at = at->is_object() && it != at->end() ? &*it : nullptr;
  }
  return at;
}

std::string Field(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

struct JwtVerifier::Key {
  std::string kid;
  std::string alg;  // RS256 | ES256
  Pkey pkey;
};

std::optional<std::string> Base64UrlDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = c >= 'A' && c <= 'Z'   ? c - 'A'
            : c >= 'a' && c <= 'z' ? c - 'a' + 26
            : c >= '0' && c <= '9' ? c - '0' + 52
            : c == '-'             ? 62
            : c == '_'             ? 63
                                   : -1;
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if (bits >= 6) return std::nullopt;  // a lone last character
  return out;
}

std::string Base64UrlEncode(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  return out;
}

bool LooksLikeJwt(std::string_view token) {
  // On every request that carries a token: the prefix first (an API key stops there), then the
  // dots by find (memchr), not a count of every byte.
  if (token.size() <= 10 || token.size() > kMaxTokenBytes || token.substr(0, 3) != "eyJ") {
    return false;
  }
  size_t first = token.find('.');
  size_t second = first == std::string_view::npos ? first : token.find('.', first + 1);
  return second != std::string_view::npos && token.find('.', second + 1) == std::string_view::npos;
}

JwtVerifier::JwtVerifier(JwtOptions options, std::vector<std::unique_ptr<Key>> keys)
    : options_(std::move(options)), keys_(std::move(keys)) {}
JwtVerifier::~JwtVerifier() = default;

Result<std::unique_ptr<JwtVerifier>> JwtVerifier::Create(JwtOptions options,
                                                         std::string_view jwks_json) {
  if (options.issuer.empty() || options.audience.empty()) {
    return InvalidArgumentError("auth.jwt needs an issuer and an audience");
  }
  auto parsed = ParseJson(jwks_json);
  if (!parsed.ok())
    return InvalidArgumentError("the JWKS is not JSON: " + parsed.status().message());
  Json jwks = std::move(parsed).value();
  if (!jwks.is_object() || !jwks.contains("keys") || !jwks["keys"].is_array()) {
    return InvalidArgumentError("the JWKS must be a JSON object with a \"keys\" array");
  }
  std::vector<std::unique_ptr<Key>> keys;
  for (const Json& k : jwks["keys"]) {
    if (!k.is_object()) continue;
    const std::string use = Field(k, "use");
    if (!use.empty() && use != "sig") continue;
    auto key = std::make_unique<Key>();
    key->kid = Field(k, "kid");
    const std::string kty = Field(k, "kty");
    if (kty == "RSA") {
      auto n = Base64UrlDecode(Field(k, "n"));
      auto e = Base64UrlDecode(Field(k, "e"));
      if (!n || !e || n->empty() || e->empty() || n->size() < 256) continue;  // >= 2048 bits
      key->alg = "RS256";
      BIGNUM* bn_n = BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()),
                               static_cast<int>(n->size()), nullptr);
      BIGNUM* bn_e = BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()),
                               static_cast<int>(e->size()), nullptr);
      key->pkey = FromData("RSA", [&](OSSL_PARAM_BLD* b) {
        return bn_n && bn_e && OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, bn_n) &&
               OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, bn_e);
      });
      BN_free(bn_n);
      BN_free(bn_e);
    } else if (kty == "EC" && Field(k, "crv") == "P-256") {
      auto x = Base64UrlDecode(Field(k, "x"));
      auto y = Base64UrlDecode(Field(k, "y"));
      if (!x || !y || x->size() != 32 || y->size() != 32) continue;
      key->alg = "ES256";
      std::string point = "\x04" + *x + *y;
      key->pkey = FromData("EC", [&](OSSL_PARAM_BLD* b) {
        return OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
               OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                                point.size());
      });
    }
    const std::string alg = Field(k, "alg");
    if (key->pkey && (alg.empty() || alg == key->alg)) keys.push_back(std::move(key));
  }
  if (keys.empty()) {
    return InvalidArgumentError(
        "the JWKS has no usable key (RSA of 2048 bits or more for RS256, or EC P-256 for ES256)");
  }
  return std::unique_ptr<JwtVerifier>(new JwtVerifier(std::move(options), std::move(keys)));
}

Result<JwtIdentity> JwtVerifier::Verify(std::string_view token, int64_t now,
                                        bool* unknown_key) const {
  auto bad = [](const std::string& why) { return UnauthenticatedError("the JWT " + why); };
  if (token.size() > kMaxTokenBytes) return bad("is too long");
  size_t d1 = token.find('.'), d2 = token.find('.', d1 + 1);
  if (d1 == std::string_view::npos || d2 == std::string_view::npos ||
      token.find('.', d2 + 1) != std::string_view::npos) {
    return bad("is not three base64url parts");
  }
  auto header_text = Base64UrlDecode(token.substr(0, d1));
  auto payload_text = Base64UrlDecode(token.substr(d1 + 1, d2 - d1 - 1));
  auto sig = Base64UrlDecode(token.substr(d2 + 1));
  if (!header_text || !payload_text || !sig) return bad("is not base64url");
  Json header = ParsedOrNull(*header_text);
  Json claims = ParsedOrNull(*payload_text);
  if (!header.is_object() || !claims.is_object()) return bad("header or claims are not JSON");
  const std::string alg = Field(header, "alg");
  if (alg != "RS256" && alg != "ES256") {
    return bad("is signed with '" + ToValidUtf8(alg.substr(0, 20)) +
               "'; only RS256 and ES256 are accepted");
  }
  const std::string kid = Field(header, "kid");
  // The signature: with the key named by kid, else any key of that algorithm.
  std::string der;
  std::string_view signature = *sig;
  if (alg == "ES256") {
    if (sig->size() != 64) return bad("has an ES256 signature of the wrong size");
    ECDSA_SIG* es = ECDSA_SIG_new();
    BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(sig->data()), 32, nullptr);
    BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(sig->data()) + 32, 32, nullptr);
    if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
      BN_free(r);
      BN_free(s);
      ECDSA_SIG_free(es);
      return bad("has a malformed ES256 signature");
    }
    unsigned char* out = nullptr;
    int n = i2d_ECDSA_SIG(es, &out);
    if (n > 0) der.assign(reinterpret_cast<char*>(out), static_cast<size_t>(n));
    OPENSSL_free(out);
    ECDSA_SIG_free(es);
    signature = der;
  }
  const std::string_view signed_part = token.substr(0, d2);
  bool verified = false, any_key = false;
  for (const auto& key : keys_) {
    if (key->alg != alg || (!kid.empty() && !key->kid.empty() && key->kid != kid)) continue;
    any_key = true;
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    verified =
        md && EVP_DigestVerifyInit(md, nullptr, EVP_sha256(), nullptr, key->pkey.get()) == 1 &&
        EVP_DigestVerify(
            md, reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
            reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size()) == 1;
    EVP_MD_CTX_free(md);
    if (verified) break;
  }
  if (!any_key && unknown_key != nullptr) *unknown_key = true;
  if (!any_key)
    return bad("names a key (kid '" + ToValidUtf8(kid.substr(0, 64)) + "') not in the JWKS");
  if (!verified) return bad("signature does not verify");
  // The claims.
  if (Field(claims, "iss") != options_.issuer) return bad("is from another issuer");
  bool audience = false;
  if (auto aud = claims.find("aud"); aud != claims.end()) {
    if (aud->is_string()) audience = *aud == options_.audience;
    if (aud->is_array()) {
      for (const auto& a : *aud) audience = audience || (a.is_string() && a == options_.audience);
    }
  }
  if (!audience) return bad("is for another audience");
  auto number = [&](const char* key) -> std::optional<int64_t> {
    auto it = claims.find(key);
    if (it == claims.end() || !it->is_number()) return std::nullopt;
    return static_cast<int64_t>(it->get<double>());
  };
  auto exp = number("exp");
  if (!exp) return bad("has no expiry (exp)");
  if (now > *exp + options_.leeway_seconds) return bad("has expired");
  if (auto nbf = number("nbf"); nbf && now + options_.leeway_seconds < *nbf) {
    return bad("is not valid yet (nbf)");
  }
  // The role: the claim at the dotted path; an array gives its highest role.
  const Json* at = ClaimAt(claims, options_.role_claim);
  std::string role;
  if (at && at->is_string()) role = at->get<std::string>();
  if (at && at->is_array()) {
    for (const auto& r : *at) {
      if (r.is_string() && RoleRank(r.get<std::string>()) > RoleRank(role)) role = r;
    }
  }
  if (RoleRank(role) == 0) {
    return UnauthenticatedError("the JWT's " + options_.role_claim +
                                " claim gives no Cortex role (viewer, operator or admin)");
  }
  JwtIdentity id;
  if (const Json* scopes = ClaimAt(claims, options_.scope_claim)) {
    if (scopes->is_string()) {
      std::istringstream words(scopes->get<std::string>());
      for (std::string w; words >> w && id.scopes.size() <= kMaxScopes;) id.scopes.push_back(w);
    } else if (scopes->is_array()) {
      for (const auto& sc : *scopes) {
        if (!sc.is_string())
          return bad("has a " + options_.scope_claim + " claim that is not strings");
        if (id.scopes.size() > kMaxScopes) break;  // CheckScopes refuses that many
        id.scopes.push_back(sc.get<std::string>());
      }
    } else {
      return bad("has a " + options_.scope_claim + " claim that is neither a string nor an array");
    }
    if (Status st = CheckScopes(id.scopes); !st.ok()) {
      return UnauthenticatedError("the JWT's " + options_.scope_claim + " claim: " + st.message());
    }
  }
  id.subject = ToValidUtf8(Field(claims, "sub").substr(0, 200));
  id.role = role;
  id.expires = *exp;
  return id;
}

constexpr size_t kMaxJwksBytes = 1 << 20;

JwtKeys::JwtKeys(JwtOptions options, std::shared_ptr<const JwtVerifier> verifier)
    : options_(std::move(options)), verifier_(std::move(verifier)) {}

Result<std::shared_ptr<JwtKeys>> JwtKeys::FromDocument(JwtOptions options, std::string_view jwks) {
  if (jwks.size() > kMaxJwksBytes) {
    return InvalidArgumentError("the JWKS is larger than 1 MiB");
  }
  CORTEX_ASSIGN_OR_RETURN(std::unique_ptr<JwtVerifier> v, JwtVerifier::Create(options, jwks));
  return std::shared_ptr<JwtKeys>(new JwtKeys(std::move(options), std::move(v)));
}

Result<std::shared_ptr<JwtKeys>> JwtKeys::FromUrl(JwtOptions options, std::string url,
                                                  std::chrono::seconds refresh,
                                                  std::string ca_file) {
  if (!url.starts_with("https://") && !url.starts_with("http://")) {
    return InvalidArgumentError("the JWKS URL must be http:// or https://, not '" + url + "'");
  }
  if (url.starts_with("http://")) {
    // Keys fetched in the clear could be swapped on the way: whoever did could sign tokens.
    std::string host = http::SplitUrl(url).first.substr(7);
    if (host.starts_with("[::1]")) host = "::1";
    if (size_t colon = host.rfind(':'); colon != std::string::npos && host != "::1") {
      host.resize(colon);
    }
    const bool loopback =
        host == "localhost" || host == "::1" ||
        (host.starts_with("127.") && host.find_first_not_of("0123456789.") == std::string::npos);
    if (!loopback) {
      return InvalidArgumentError("the JWKS URL " + url +
                                  " must be https:// (plain http:// only on loopback): keys "
                                  "fetched in the clear could be replaced on the way");
    }
  }
  std::shared_ptr<JwtKeys> keys(new JwtKeys(std::move(options), nullptr));
  keys->url_ = std::move(url);
  keys->ca_file_ = std::move(ca_file);
  keys->refresh_ = std::max(refresh, std::chrono::seconds(1));
  CORTEX_ASSIGN_OR_RETURN(std::shared_ptr<const JwtVerifier> verifier, keys->Fetch());
  {
    MutexLock lock(keys->mu_);
    keys->verifier_ = std::move(verifier);
  }
  keys->thread_ = std::thread([k = keys.get()] { k->Loop(); });
  return keys;
}

JwtKeys::~JwtKeys() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Result<std::shared_ptr<const JwtVerifier>> JwtKeys::Fetch() const {
  const auto [base, path] = http::SplitUrl(url_);
  http::ClientOptions co;
  co.connect_timeout = std::chrono::milliseconds(3000);
  co.read_timeout = std::chrono::milliseconds(10000);
  co.ca_file = ca_file_;
  co.max_response_bytes = kMaxJwksBytes;
  co.total_timeout = std::chrono::milliseconds(15000);  // a provider that drips bytes
  http::Client client(base, co);
  auto r = client.Get(path);
  if (!r.ok())
    return UnavailableError("cannot fetch the JWKS from " + url_ + ": " + r.status().message());
  if (r->status != 200) {
    return UnavailableError("cannot fetch the JWKS from " + url_ + ": HTTP " +
                            std::to_string(r->status));
  }
  if (r->body.size() > kMaxJwksBytes) {
    return InvalidArgumentError("the JWKS at " + url_ + " is larger than 1 MiB");
  }
  auto v = JwtVerifier::Create(options_, r->body);
  if (!v.ok())
    return Status(v.status().code(), "the JWKS at " + url_ + ": " + v.status().message());
  return std::shared_ptr<const JwtVerifier>(std::move(v).value());
}

void JwtKeys::Loop() {
  using Clock = std::chrono::steady_clock;
  constexpr auto kMinGap = std::chrono::seconds(5);  // between fetches that tokens ask for
  auto last = Clock::now();
  MutexLock lock(mu_);
  // The next fetch: at the refresh, or sooner once the gap has passed when a token asked.
  auto due = [&]() CORTEX_REQUIRES(mu_) {
    return wanted_ ? last + std::min(refresh_, kMinGap) : last + refresh_;
  };
  while (true) {
    const bool was_wanted = wanted_;
    cv_.wait_until(lock.native(), due(), [&]() CORTEX_REQUIRES(mu_) {
      return stop_ || wanted_ != was_wanted || Clock::now() >= due();
    });
    if (stop_) return;
    if (Clock::now() < due()) continue;  // asked for: wait for the new time
    wanted_ = false;
    lock.Unlock();
    auto fetched = Fetch();
    lock.Lock();
    last = Clock::now();
    if (fetched.ok()) {
      verifier_ = std::move(fetched).value();
    } else {
      log::Warn("auth", fetched.status().message() + "; the keys fetched before stay in use");
    }
  }
}

Result<JwtIdentity> JwtKeys::Verify(std::string_view token, int64_t now) const {
  std::shared_ptr<const JwtVerifier> v;
  {
    MutexLock lock(mu_);
    v = verifier_;
  }
  bool unknown_key = false;
  auto r = v->Verify(token, now, &unknown_key);
  if (unknown_key && !url_.empty()) {
    {
      MutexLock lock(mu_);
      wanted_ = true;
    }
    cv_.notify_all();
  }
  return r;
}

size_t JwtKeys::keys() const {
  MutexLock lock(mu_);
  return verifier_->keys();
}

}  // namespace cortex::api
