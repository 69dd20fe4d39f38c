#include "common/random_id.h"

#include <cstdint>
#include <random>

namespace cortex {

std::string RandomId(std::string_view prefix, size_t digits) {
  // One generator per thread, seeded from the system: no lock on a path every run takes.
  thread_local std::mt19937_64 rng{std::random_device{}()};
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
