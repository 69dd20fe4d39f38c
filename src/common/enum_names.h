// An enum's text, from one table of (value, name) pairs: for states kept as enums in code and as
// text only at the Store and the API.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

namespace cortex {

template <class E, size_t N>
std::string_view EnumName(const std::pair<E, std::string_view> (&table)[N], E value,
                          std::string_view fallback) {
  for (const auto& [v, name] : table) {
    if (v == value) return name;
  }
  return fallback;
}

template <class E, size_t N>
std::optional<E> ParseEnumName(const std::pair<E, std::string_view> (&table)[N],
                               std::string_view text) {
  for (const auto& [v, name] : table) {
    if (name == text) return v;
  }
  return std::nullopt;
}

}  // namespace cortex
