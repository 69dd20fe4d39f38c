#include "registry/schema.h"

#include <algorithm>
#include <charconv>

namespace cortex::registry {

std::string Diagnostic::ToString() const {
  std::string out = file;
  if (line > 0) {
    out += ":" + std::to_string(line);
    if (column > 0) out += ":" + std::to_string(column);
  }
  out += severity == Severity::kError ? ": error: " : ": warning: ";
  out += message;
  return out;
}

nlohmann::ordered_json Diagnostic::ToJson() const {
  nlohmann::ordered_json j = {{"severity", severity == Severity::kError ? "error" : "warning"},
                              {"file", file},
                              {"message", message}};
  if (line > 0) j["line"] = line;
  if (column > 0) j["column"] = column;
  return j;
}

bool HasErrors(const Diagnostics& diagnostics) {
  return std::any_of(diagnostics.begin(), diagnostics.end(),
                     [](const Diagnostic& d) { return d.severity == Severity::kError; });
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string_view ClosestMatch(std::string_view word, const std::vector<std::string_view>& choices) {
  std::string_view best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (std::string_view c : choices) {
    size_t d = EditDistance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

std::string YamlReader::Path() const {
  std::string out;
  for (const std::string& p : path_) {
    if (!out.empty() && p[0] != '[') out += '.';
    out += p;
  }
  return out;
}

std::string YamlReader::PathWith(std::string_view key) const {
  std::string out = Path();
  if (!out.empty()) out += '.';
  out += key;
  return out;
}

void YamlReader::Report(Severity severity, const yaml::Node& at, const std::string& path,
                        std::string message) {
  Diagnostic d;
  d.severity = severity;
  d.file = file_;
  d.line = at.mark().line;
  d.column = at.mark().column;
  d.message = path.empty() ? std::move(message) : path + ": " + message;
  diagnostics_->push_back(std::move(d));
}

bool YamlReader::ReadString(const yaml::Node& node, std::string& out) {
  if (!node.IsScalar()) {
    Error(node, "expected a string, got " + std::string(node.TypeName()));
    return false;
  }
  out = node.scalar();
  return true;
}

bool YamlReader::ReadBool(const yaml::Node& node, bool& out) {
  if (auto b = node.AsBool()) {
    out = *b;
    return true;
  }
  if (node.IsScalar()) {
    std::string s = node.scalar();
    std::transform(s.begin(), s.end(), s.begin(), ::tolower);
    if (s == "true" || s == "yes" || s == "on") {
      out = true;
      return true;
    }
    if (s == "false" || s == "no" || s == "off") {
      out = false;
      return true;
    }
  }
  Error(node, "expected a boolean (true or false), got " + std::string(node.TypeName()) +
                  (node.IsScalar() ? " '" + node.scalar() + "'" : ""));
  return false;
}

bool YamlReader::ReadInt(const yaml::Node& node, int64_t& out) {
  if (auto i = node.AsInt()) {
    out = *i;
    return true;
  }
  if (node.IsScalar()) {
    const std::string& s = node.scalar();
    // "5" (quoted) and 5.0 are accepted as integers.
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && p == s.data() + s.size()) {
      out = v;
      return true;
    }
    if (auto d = node.AsDouble(); d && std::floor(*d) == *d && std::abs(*d) < 9e15) {
      out = static_cast<int64_t>(*d);
      return true;
    }
  }
  Error(node, "expected an integer, got " + std::string(node.TypeName()) +
                  (node.IsScalar() ? " '" + node.scalar() + "'" : ""));
  return false;
}

bool YamlReader::ReadDouble(const yaml::Node& node, double& out) {
  if (auto d = node.AsDouble()) {
    out = *d;
    return true;
  }
  if (node.IsScalar()) {
    const std::string& s = node.scalar();
    double v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && p == s.data() + s.size() && !s.empty()) {
      out = v;
      return true;
    }
  }
  Error(node, "expected a number, got " + std::string(node.TypeName()) +
                  (node.IsScalar() ? " '" + node.scalar() + "'" : ""));
  return false;
}

bool YamlReader::ReadDuration(const yaml::Node& node, Duration& out) {
  if (auto d = node.AsDouble()) {
    if (*d < 0) {
      Error(node, "a duration cannot be negative");
      return false;
    }
    out.seconds = *d;
    return true;
  }
  if (node.IsScalar()) {
    std::string_view s = node.scalar();
    double v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    std::string_view unit(p, s.data() + s.size() - p);
    double scale = -1;
    if (unit == "ms") scale = 0.001;
    if (unit == "s" || unit.empty()) scale = 1;
    if (unit == "m") scale = 60;
    if (unit == "h") scale = 3600;
    if (ec == std::errc() && p != s.data() && scale > 0 && v >= 0) {
      out.seconds = v * scale;
      return true;
    }
  }
  Error(node, "expected a duration (seconds, or a number with ms, s, m or h), got " +
                  std::string(node.TypeName()) +
                  (node.IsScalar() ? " '" + node.scalar() + "'" : ""));
  return false;
}

bool YamlReader::ReadEnumName(const yaml::Node& node, std::string_view& name,
                              const std::vector<std::string_view>& allowed) {
  if (!node.IsScalar()) {
    Error(node, "expected a string, got " + std::string(node.TypeName()));
    return false;
  }
  const std::string& s = node.scalar();
  for (std::string_view a : allowed) {
    if (a == s) {
      name = a;
      return true;
    }
  }
  std::string lower = s;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  for (std::string_view a : allowed) {
    if (a == lower) {  // accept "Manual" for "manual"
      name = a;
      return true;
    }
  }
  std::string msg = "'" + s + "' is not one of ";
  for (size_t i = 0; i < allowed.size(); ++i) msg += (i ? ", " : "") + std::string(allowed[i]);
  std::string_view hint = ClosestMatch(s, allowed);
  if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
  Error(node, msg);
  return false;
}

}  // namespace cortex::registry
