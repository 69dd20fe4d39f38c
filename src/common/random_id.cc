#include "common/random_id.h"

#include <cstdint>
#include <random>

namespace cortex {
namespace {

std::mt19937_64 SeededGenerator() {
  // 256 bits of the system's entropy: with one 32-bit seed, two of the many short-lived threads
  // (an agent run's) would draw the same stream after about 100,000 of them.
  std::random_device device;
  std::seed_seq seed{device(), device(), device(), device(),
                     device(), device(), device(), device()};
  return std::mt19937_64(seed);
}

}  // namespace

std::string RandomId(std::string_view prefix, size_t digits) {
  // One generator per thread, seeded from the system: no lock on a path every run takes.
  thread_local std::mt19937_64 rng = SeededGenerator();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(prefix);
  id.reserve(prefix.size() + digits);
  while (digits > 0) {
    uint64_t v = rng();
    for (int i = 0; i < 16 && digits > 0; ++i, --digits) id += kHex[(v >> (i * 4)) & 0xF];
  }
  return id;
}

}  // namespace cortex
