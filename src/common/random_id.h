// Random identifiers for records (runs, executions, requests, scratch folders): a prefix and
// random hex digits. Not for secrets: those come from a cryptographic source (api/auth.cc).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace cortex {

// `prefix` followed by `digits` random hex digits ("ex_3f9a...").
std::string RandomId(std::string_view prefix, size_t digits = 20);

}  // namespace cortex
