// JWTs from an identity provider, end to end: keys made with OpenSSL (RSA 2048 and EC P-256),
// their JWKS in a file the server reads, tokens signed here (RS256, ES256) and sent as
// `Authorization: Bearer`. Valid tokens get their claim's role; expired, early, foreign,
// tampered, unsigned or HMAC tokens, unknown keys and tokens without a role get 401.
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <mutex>

#include "api/jwt.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

std::string Bn(EVP_PKEY* key, const char* name, int pad = 0) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(key, name, &bn);
  std::string out(static_cast<size_t>(std::max(pad, BN_num_bytes(bn))), '\0');
  BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(out.size()));
  BN_free(bn);
  return out;
}

// A signing key of the test's own identity provider.
struct Signer {
  EVP_PKEY* key;
  std::string alg, kid;
  ~Signer() { EVP_PKEY_free(key); }
  json Jwk() const {
    if (alg == "RS256") {
      return {{"kty", "RSA"},
              {"kid", kid},
              {"use", "sig"},
              {"alg", alg},
              {"n", api::Base64UrlEncode(Bn(key, OSSL_PKEY_PARAM_RSA_N))},
              {"e", api::Base64UrlEncode(Bn(key, OSSL_PKEY_PARAM_RSA_E))}};
    }
    return {{"kty", "EC"},
            {"crv", "P-256"},
            {"kid", kid},
            {"x", api::Base64UrlEncode(Bn(key, OSSL_PKEY_PARAM_EC_PUB_X, 32))},
            {"y", api::Base64UrlEncode(Bn(key, OSSL_PKEY_PARAM_EC_PUB_Y, 32))}};
  }
  std::string Sign(const json& claims, json header = json::object()) const {
    if (!header.contains("alg")) header["alg"] = alg;
    if (!header.contains("kid")) header["kid"] = kid;
    header["typ"] = "JWT";
    std::string input =
        api::Base64UrlEncode(header.dump()) + "." + api::Base64UrlEncode(claims.dump());
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    size_t n = 0;
    EVP_DigestSignInit(md, nullptr, EVP_sha256(), nullptr, key);
    EVP_DigestSign(md, nullptr, &n, reinterpret_cast<const unsigned char*>(input.data()),
                   input.size());
    std::string sig(n, '\0');
    EVP_DigestSign(md, reinterpret_cast<unsigned char*>(sig.data()), &n,
                   reinterpret_cast<const unsigned char*>(input.data()), input.size());
    sig.resize(n);
    EVP_MD_CTX_free(md);
    if (alg == "ES256") {  // DER -> r || s, 32 bytes each
      const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
      ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
      std::string raw(64, '\0');
      BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(raw.data()), 32);
      BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
      ECDSA_SIG_free(es);
      sig = raw;
    }
    return input + "." + api::Base64UrlEncode(sig);
  }
};

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

json Claims(const std::string& role, int64_t exp_in = 300) {
  return {{"iss", "https://idp.example.com"},
          {"aud", "cortex"},
          {"sub", "alice"},
          {"exp", Now() + exp_in},
          {"cortex_role", role}};
}

TEST(Jwt, TokensFromTheProviderGetTheirRoleAndBadOnesGet401) {
  Signer rsa{EVP_RSA_gen(2048), "RS256", "rsa-1"};
  Signer ec{EVP_EC_gen("P-256"), "ES256", "ec-1"};
  Signer stranger{EVP_EC_gen("P-256"), "ES256", "ec-1"};  // same kid, key not in the JWKS
  TempDir dir;
  WriteFile(dir.path() / "jwks.json", json{{"keys", {rsa.Jwk(), ec.Jwk()}}}.dump());
  WriteFile(dir.path() / "cortex.yml",
            "auth:\n  mode: on\n  jwt:\n    issuer: https://idp.example.com\n"
            "    audience: cortex\n    jwks_file: " +
                (dir.path() / "jwks.json").string() + "\n");
  Daemon d({"--config", (dir.path() / "cortex.yml").string()});
  ASSERT_DAEMON(d);
  auto as = [&](const std::string& token) {
    return http::Headers{{"Authorization", "Bearer " + token}};
  };
  // RS256 admin; ES256 viewer (reads yes, writes no); the highest of an array of roles.
  EXPECT_EQ(Get(d.client(), "/audit", as(rsa.Sign(Claims("admin")))).status, 200);
  std::string viewer = ec.Sign(Claims("viewer"));
  EXPECT_EQ(Get(d.client(), "/registry/manifests", as(viewer)).status, 200);
  EXPECT_EQ(Post(d.client(), "/registry/sync", "{}", as(viewer)).status, 403);
  json both = Claims("");
  both["cortex_role"] = {"viewer", "operator"};
  Reply who = Get(d.client(), "/auth/whoami", as(ec.Sign(both)));
  EXPECT_EQ(who.status, 200) << who.body;
  EXPECT_EQ(who.json.value("role", ""), "operator") << who.body;
  EXPECT_THAT(who.body, HasSubstr("jwt:alice"));

  json early = Claims("admin");
  early["nbf"] = Now() + 3600;
  json foreign_aud = Claims("admin");
  foreign_aud["aud"] = json::array({"other"});
  json foreign_iss = Claims("admin");
  foreign_iss["iss"] = "https://evil.example.com";
  std::string good = rsa.Sign(Claims("admin"));
  std::string tampered = good;
  tampered[good.find('.') + 5] ^= 1;
  const std::string unsigned_token = api::Base64UrlEncode(R"({"alg":"none"})") + "." +
                                     api::Base64UrlEncode(Claims("admin").dump()) + ".";
  struct Case {
    std::string name, token, why;
  };
  for (const Case& c : {
           Case{"expired", rsa.Sign(Claims("admin", -3600)), "expired"},
           Case{"early", rsa.Sign(early), "not valid yet"},
           Case{"audience", rsa.Sign(foreign_aud), "audience"},
           Case{"issuer", ec.Sign(foreign_iss), "issuer"},
           Case{"tampered", tampered, ""},
           Case{"none", unsigned_token, "only RS256 and ES256"},
           Case{"hmac", rsa.Sign(Claims("admin"), {{"alg", "HS256"}}), "only RS256 and ES256"},
           Case{"unknown key", stranger.Sign(Claims("admin")), "signature does not verify"},
           Case{"unknown kid", rsa.Sign(Claims("admin"), {{"kid", "nope"}}), "not in the JWKS"},
           Case{"no role", rsa.Sign(Claims("root")), "no Cortex role"},
       }) {
    SCOPED_TRACE(c.name);
    Reply r = Get(d.client(), "/registry/manifests", as(c.token));
    EXPECT_EQ(r.status, 401) << r.body;
    EXPECT_THAT(r.body, HasSubstr(c.why)) << r.body;
  }
  // Hostile tokens: claims nested 2,000 deep, claims of invalid UTF-8, and, validly signed,
  // claims nested 200 deep (past the JSON depth bound): 401 each, and the server goes on. A
  // 20 KB token is refused by the HTTP layer's header limit before any check.
  auto raw_claims = [&](const std::string& payload) {
    std::string input = api::Base64UrlEncode(R"({"alg":"RS256","kid":"rsa-1"})") + "." +
                        api::Base64UrlEncode(payload);
    std::string whole = rsa.Sign(Claims("admin"));
    return input + whole.substr(whole.rfind('.'));  // a signature that cannot match
  };
  json deep = Claims("admin");
  deep["deep"] = json::parse(std::string(200, '[') + std::string(200, ']'));
  for (const std::string& token : {raw_claims(std::string(2000, '[') + std::string(2000, ']')),
                                   raw_claims("{\"sub\": \"\xff\xfe\"}"), rsa.Sign(deep)}) {
    Reply r = Get(d.client(), "/registry/manifests", as(token));
    EXPECT_EQ(r.status, 401) << r.body.substr(0, 200);
  }
  // A 20 KB token fits in a request head and is refused by the verifier; one past the head's
  // limit (64 KiB) is refused before anyone reads it.
  Reply huge = Get(d.client(), "/registry/manifests",
                   as(rsa.Sign(Claims("admin")) + std::string(20000, 'A')));
  EXPECT_EQ(huge.status, 401) << huge.body.substr(0, 200);
  Reply too_big = Get(d.client(), "/registry/manifests",
                      as(rsa.Sign(Claims("admin")) + std::string(70000, 'A')));
  EXPECT_EQ(too_big.status, 431) << too_big.body.substr(0, 200);
  EXPECT_EQ(Get(d.client(), "/registry/manifests", as(viewer)).status, 200);
  // Mutating calls by a token are audited under its subject.
  EXPECT_EQ(Post(d.client(), "/registry/sync", "{}", as(rsa.Sign(Claims("admin")))).status, 200);
  Reply audit = Get(d.client(), "/audit?limit=1", as(rsa.Sign(Claims("admin"))));
  EXPECT_THAT(audit.body, HasSubstr("jwt:alice")) << audit.body;

  // Scopes from the cortex_scopes claim (an array, or a space-separated string) narrow the role.
  for (const json& scopes :
       {json({"workflow:nightly-*", "tool:calc*"}), json("workflow:nightly-* tool:calc*")}) {
    json scoped = Claims("admin");
    scoped["cortex_scopes"] = scopes;
    const std::string token = rsa.Sign(scoped);
    Reply me = Get(d.client(), "/auth/whoami", as(token));
    EXPECT_EQ(me.json["scopes"], json({"workflow:nightly-*", "tool:calc*"})) << me.body;
    EXPECT_EQ(Get(d.client(), "/registry/manifest/workflow/nightly-backup", as(token)).status,
              404);  // in scope: not there
    Reply out = Get(d.client(), "/registry/manifest/workflow/deploy-prod", as(token));
    EXPECT_EQ(out.status, 403) << out.body;
    EXPECT_THAT(out.body, HasSubstr("deploy-prod")) << out.body;
    EXPECT_EQ(Post(d.client(), "/registry/sync", "{}", as(token)).status, 403);
  }
  for (const json& bad : {json({"workflows:x"}), json(42), json({"tool:x", 7})}) {
    json scoped = Claims("admin");
    scoped["cortex_scopes"] = bad;
    Reply r = Get(d.client(), "/auth/whoami", as(rsa.Sign(scoped)));
    EXPECT_EQ(r.status, 401) << r.body;
    EXPECT_THAT(r.body, HasSubstr("cortex_scopes")) << r.body;
  }
}

TEST(Jwt, AMissingOrEmptyKeySetStopsTheStart) {
  TempDir dir;
  WriteFile(dir.path() / "empty.json", R"({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})");
  for (const std::string& file :
       {(dir.path() / "missing.json").string(), (dir.path() / "empty.json").string()}) {
    WriteFile(dir.path() / "cortex.yml",
              "auth:\n  mode: on\n  jwt:\n    issuer: i\n"
              "    audience: a\n    jwks_file: " +
                  file + "\n");
    Daemon d({"--config", (dir.path() / "cortex.yml").string()});
    EXPECT_FALSE(d.ok());
    EXPECT_THAT(d.log(), HasSubstr("auth.jwt")) << d.log();
  }
}

// The provider's JWKS URL: fetched at the start, and again when a token names a key the set does
// not have (the provider rotated its keys), without a restart.
TEST(Jwt, KeysComeFromTheProvidersUrlAndFollowItsRotation) {
  Signer rsa{EVP_RSA_gen(2048), "RS256", "rsa-1"};
  Signer next{EVP_EC_gen("P-256"), "ES256", "ec-2"};
  std::mutex mu;
  std::string served = json{{"keys", {rsa.Jwk()}}}.dump();
  int fetches = 0;
  http::ServerOptions so;
  so.host = "127.0.0.1";
  so.port = 0;
  http::Server idp(so);
  idp.Handle("GET", "/jwks", [&](const http::Request&) {
    std::lock_guard lock(mu);
    ++fetches;
    return http::Response::Json(200, served);
  });
  ASSERT_TRUE(idp.Start().ok());
  const std::string url = "http://127.0.0.1:" + std::to_string(idp.port()) + "/jwks";
  TempDir dir;
  WriteFile(dir.path() / "cortex.yml",
            "auth:\n  mode: on\n  jwt:\n    issuer: https://idp.example.com\n"
            "    audience: cortex\n    jwks_refresh_seconds: 3600\n    jwks_url: " +
                url + "\n");
  Daemon d({"--config", (dir.path() / "cortex.yml").string()});
  ASSERT_DAEMON(d);
  auto as = [&](const std::string& token) {
    return http::Headers{{"Authorization", "Bearer " + token}};
  };
  EXPECT_EQ(Get(d.client(), "/auth/whoami", as(rsa.Sign(Claims("viewer")))).status, 200);
  // The provider rotates to a new key: tokens signed with it are refused until the set is
  // fetched again, which such a token asks for.
  {
    std::lock_guard lock(mu);
    served = json{{"keys", {next.Jwk()}}}.dump();
  }
  const std::string rotated = next.Sign(Claims("admin"));
  Reply before = Get(d.client(), "/auth/whoami", as(rotated));
  EXPECT_EQ(before.status, 401) << before.body;
  EXPECT_THAT(before.body, HasSubstr("not in the JWKS"));
  EXPECT_TRUE(WaitFor([&] { return Get(d.client(), "/audit", as(rotated)).status == 200; },
                      std::chrono::seconds(15)))
      << d.log();
  {
    std::lock_guard lock(mu);
    EXPECT_GE(fetches, 2);
    EXPECT_LE(fetches, 4) << "fetches are spaced, whatever tokens ask";
  }
  // The old key left the set: its tokens no longer pass.
  EXPECT_EQ(Get(d.client(), "/auth/whoami", as(rsa.Sign(Claims("viewer")))).status, 401);
}

TEST(Jwt, AProviderThatCannotBeReachedOrHostileKeySetsStopTheStart) {
  TempDir dir;
  WriteFile(dir.path() / "deep.json", std::string(100000, '[') + std::string(100000, ']'));
  WriteFile(dir.path() / "huge.json",
            "{\"keys\": [], \"pad\": \"" + std::string(2 << 20, 'x') + "\"}");
  struct Case {
    std::string name, keys, expect;
  };
  for (const Case& c : {
           Case{"down", "jwks_url: http://127.0.0.1:9/jwks", "cannot fetch the JWKS"},
           Case{"scheme", "jwks_url: ftp://idp/jwks", "http:// or https://"},
           Case{"cleartext", "jwks_url: http://127.0.0.1.idp.example/jwks", "must be https://"},
           Case{"both", "jwks_url: http://127.0.0.1:9/jwks\n    jwks_file: /x", "one of them"},
           Case{"none", "role_claim: r", "one of them"},
           Case{"deep", "jwks_file: " + (dir.path() / "deep.json").string(), "nested deeper"},
           Case{"huge", "jwks_file: " + (dir.path() / "huge.json").string(), "larger than 1 MiB"},
       }) {
    SCOPED_TRACE(c.name);
    WriteFile(dir.path() / "cortex.yml",
              "auth:\n  mode: on\n  jwt:\n    issuer: i\n    audience: a\n    " + c.keys + "\n");
    Daemon d({"--config", (dir.path() / "cortex.yml").string()});
    EXPECT_FALSE(d.ok());
    EXPECT_NE(d.Stop(), 0);
    EXPECT_THAT(d.log(), HasSubstr(c.expect)) << d.log();
  }
}

}  // namespace
}  // namespace cortex::testing
