// SipHash128 (api/auth.h), the keyed hash that remembers checked credentials, against OpenSSL's
// own SipHash (EVP_MAC "SIPHASH", 16-byte output) as the reference, on every length around the
// 8-byte block edges and with keys made at random.
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <array>
#include <string>

#include "api/auth.h"

namespace cortex::api {
namespace {

std::array<unsigned char, 16> OpenSslSipHash(const std::array<unsigned char, 16>& key,
                                             const std::string& data) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
  EXPECT_NE(mac, nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  size_t size = 16;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
                         OSSL_PARAM_construct_end()};
  std::array<unsigned char, 16> out{};
  size_t n = 0;
  EXPECT_EQ(EVP_MAC_init(ctx, key.data(), key.size(), params), 1);
  EXPECT_EQ(EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size()),
            1);
  EXPECT_EQ(EVP_MAC_final(ctx, out.data(), &n, out.size()), 1);
  EXPECT_EQ(n, 16u);
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  return out;
}

uint64_t Le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

TEST(SipHash128Test, MatchesOpenSslOnEveryLengthAndRandomKeys) {
  for (int round = 0; round < 20; ++round) {
    std::array<unsigned char, 16> key{};
    ASSERT_EQ(RAND_bytes(key.data(), 16), 1);
    const SipHash128 hash({Le64(key.data()), Le64(key.data() + 8)});
    for (size_t length = 0; length <= 70; ++length) {
      std::string data(length, '\0');
      if (length > 0) {
        ASSERT_EQ(
            RAND_bytes(reinterpret_cast<unsigned char*>(data.data()), static_cast<int>(length)), 1);
      }
      EXPECT_EQ(hash(data), OpenSslSipHash(key, data)) << "length " << length;
    }
  }
}

TEST(SipHash128Test, DifferentKeysGiveDifferentDigests) {
  const std::string token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
  EXPECT_NE(SipHash128::WithRandomKey()(token), SipHash128::WithRandomKey()(token));
  const SipHash128 one = SipHash128::WithRandomKey();
  EXPECT_EQ(one(token), one(token));
  EXPECT_NE(one(token), one(token + "x"));
}

}  // namespace
}  // namespace cortex::api
