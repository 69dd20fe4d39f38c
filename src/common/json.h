// JSON at Cortex's edges: text from outside (request bodies, tool output, stored rows, replies of
// relics) is parsed with a bound on its nesting, and every value is written out without throwing.
//
// Why: nlohmann::json parses iteratively but copies, compares and dumps recursively, so a value
// nested 80,000 levels deep overflows a thread's stack wherever it is next touched; and dump()
// throws on a string that is not valid UTF-8 (a tool's stdout is bytes). Parse with ParseJson,
// write with DumpJson, and neither can happen.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "common/status.h"

namespace cortex {

// Deepest nesting of arrays and objects accepted from outside. Deep enough for any real payload
// (JSON Schema documents nest a few dozen levels), far from the depth a stack cannot hold.
inline constexpr int kMaxJsonDepth = 128;

// The nesting depth of JSON text: brackets outside strings, counted until `limit` is passed
// (then limit + 1). Does not validate the text.
int JsonNestingDepth(std::string_view text, int limit = kMaxJsonDepth);

// Parses JSON text. InvalidArgument, with the line and column, for a syntax error, a string that
// is not valid UTF-8, or nesting deeper than `max_depth`.
Result<nlohmann::ordered_json> ParseJson(std::string_view text, int max_depth = kMaxJsonDepth);

// JSON text parsed as ParseJson does; text that is not JSON (or too deep) becomes a JSON string of
// itself, with bytes that are not UTF-8 replaced.
nlohmann::ordered_json ParseJsonOrString(std::string_view text);

// Serializes a value; strings that are not valid UTF-8 get U+FFFD for each bad byte. Never throws.
std::string DumpJson(const nlohmann::ordered_json& value, int indent = -1);
std::string DumpJson(const nlohmann::json& value, int indent = -1);

// True when `text` is well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
bool IsValidUtf8(std::string_view text);

// `text` with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD;
// `replaced` (when given) receives how many bytes were.
std::string ToValidUtf8(std::string_view text, size_t* replaced = nullptr);

}  // namespace cortex
