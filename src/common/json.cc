#include "common/json.h"

namespace cortex {

namespace {

// Length of the well-formed UTF-8 sequence starting at text[i], or 0 when there is none
// (Unicode 15, table 3-7: no overlongs, no surrogates, nothing above U+10FFFF).
size_t SequenceLength(std::string_view text, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  return n;
}

template <class J>
std::string Dump(const J& value, int indent) {
  try {
    return value.dump(indent, ' ', false, J::error_handler_t::replace);
  } catch (const std::exception&) {
    // replace never throws on strings; nothing else in dump() can. A broken invariant, but an
    // answer is still better than an abort.
    return "null";
  }
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    size_t n = SequenceLength(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string ToValidUtf8(std::string_view text, size_t* replaced) {
  size_t bad = 0;
  std::string out;
  size_t i = 0;
  // The common case, valid text, is copied once.
  while (i < text.size()) {
    size_t n = SequenceLength(text, i);
    if (n == 0) break;
    i += n;
  }
  if (i == text.size()) {
    if (replaced) *replaced = 0;
    return std::string(text);
  }
  out.reserve(text.size() + 16);
  out.append(text.substr(0, i));
  while (i < text.size()) {
    size_t n = SequenceLength(text, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++bad;
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  if (replaced) *replaced = bad;
  return out;
}

int JsonNestingDepth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > limit) return limit + 1;
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return deepest;
}

Result<nlohmann::ordered_json> ParseJson(std::string_view text, int max_depth) {
  if (JsonNestingDepth(text, max_depth) > max_depth) {
    return InvalidArgumentError("JSON nested deeper than " + std::to_string(max_depth) + " levels");
  }
  try {
    return nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ..."
    std::string what = e.what();
    if (auto p = what.find("] "); what.starts_with("[json.exception") && p != std::string::npos) {
      what = what.substr(p + 2);
    }
    return InvalidArgumentError("not valid JSON: " + ToValidUtf8(what));
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("not valid JSON: ") + e.what());
  }
}

nlohmann::ordered_json ParseJsonOrString(std::string_view text) {
  auto parsed = ParseJson(text);
  if (parsed.ok()) return std::move(parsed).value();
  return nlohmann::ordered_json(ToValidUtf8(text));
}

std::string DumpJson(const nlohmann::ordered_json& value, int indent) {
  return Dump(value, indent);
}

std::string DumpJson(const nlohmann::json& value, int indent) { return Dump(value, indent); }

}  // namespace cortex
