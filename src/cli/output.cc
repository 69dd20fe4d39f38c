#include "cli/output.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "common/json.h"

namespace cortex::cli {

// --- Tables ---------------------------------------------------------------------------------

namespace {

constexpr std::string_view kColumnGap = "   ";

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

size_t DisplayWidth(std::string_view s) {
  return static_cast<size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return !IsContinuationByte(c); }));
}

std::string Truncate(std::string_view s, size_t max_width) {
  std::string flat(s);
  std::replace(flat.begin(), flat.end(), '\n', ' ');
  std::replace(flat.begin(), flat.end(), '\r', ' ');
  std::replace(flat.begin(), flat.end(), '\t', ' ');
  if (DisplayWidth(flat) <= max_width) return flat;
  constexpr std::string_view kEllipsis = "...";
  size_t keep = max_width > kEllipsis.size() ? max_width - kEllipsis.size() : 0;
  // Byte offset of the code point number `keep`.
  size_t points = 0, i = 0;
  for (; i < flat.size(); ++i) {
    if (IsContinuationByte(flat[i])) continue;
    if (points == keep) break;
    ++points;
  }
  std::string out = flat.substr(0, i);
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out + std::string(kEllipsis.substr(0, std::min(max_width, kEllipsis.size())));
}

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::AddRow(std::vector<std::string> cells, std::string name) {
  cells.resize(headers_.size());
  if (name.empty() && !cells.empty()) name = cells[0];
  names_.push_back(std::move(name));
  rows_.push_back(std::move(cells));
}

void Table::PrintNames(std::ostream& out) const {
  for (const auto& name : names_) out << name << "\n";
}

void PrintList(std::ostream& out, std::ostream& err, const Json& body, const Table& table,
               const ListFormat& format, std::string_view what) {
  if (format.structured()) {
    out << Render(body, format.output);
  } else if (format.output == "name") {
    table.PrintNames(out);
  } else if (table.size() == 0) {
    err << "no " << what << " found\n";
  } else {
    table.Print(out, !format.no_headers);
  }
}

void Table::Print(std::ostream& out, bool headers) const {
  std::vector<size_t> widths(headers_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], DisplayWidth(row[c]));
  };
  measure(headers_);
  for (const auto& row : rows_) measure(row);
  auto print = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) {
        line.append(widths[c] - DisplayWidth(row[c]), ' ');
        line += kColumnGap;
      }
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  };
  if (headers) print(headers_);
  for (const auto& row : rows_) print(row);
}

std::string Table::ToString() const {
  std::ostringstream out;
  Print(out);
  return out.str();
}

// --- JSON -----------------------------------------------------------------------------------

std::string ToPrettyJson(const Json& value) { return DumpJson(value, 2) + "\n"; }

// --- YAML -----------------------------------------------------------------------------------

namespace {

bool IsControl(char c) {
  auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7F;
}

std::string Lower(std::string_view s) {
  std::string out;
  for (char c : s) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Words that some YAML reader (1.1 or 1.2) takes for a boolean or null.
bool LooksLikeBoolOrNull(std::string_view s) {
  static constexpr std::array<std::string_view, 10> kWords = {"true", "false", "yes", "no",   "on",
                                                              "off",  "y",     "n",   "null", "~"};
  std::string lower = Lower(s);
  return std::find(kWords.begin(), kWords.end(), lower) != kWords.end();
}

// Anything a reader might take for a number, a date or a time: 1, -2, 1.0, .5, 1e3, 0x1F,
// 0o17, 1_000, 12:30 (YAML 1.1 sexagesimal), 2024-01-02, 2024-01-02T10:00:00Z, .inf, .nan.
// Over-matching only adds quotes.
bool LooksLikeNumber(std::string_view s) {
  std::string lower = Lower(s);
  if (lower == ".inf" || lower == "-.inf" || lower == "+.inf" || lower == ".nan") return true;
  auto digit = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; };
  bool starts = digit(s[0]) || ((s[0] == '+' || s[0] == '-' || s[0] == '.') && s.size() > 1 &&
                                (digit(s[1]) || s[1] == '.'));
  if (!starts) return false;
  constexpr std::string_view kNumberChars = "0123456789abcdefABCDEFxXoO._+-:tTzZ";
  return std::all_of(s.begin(), s.end(),
                     [&](char c) { return kNumberChars.find(c) != std::string_view::npos; });
}

bool NeedsQuotes(std::string_view s) {
  if (s.empty()) return true;
  if (s.front() == ' ' || s.front() == '\t' || s.back() == ' ' || s.back() == '\t') return true;
  if (std::any_of(s.begin(), s.end(), IsControl)) return true;
  constexpr std::string_view kIndicators = ":#{}[],&*!|>'\"%@`";
  if (kIndicators.find(s.front()) != std::string_view::npos) return true;
  if ((s.front() == '-' || s.front() == '?') && (s.size() == 1 || s[1] == ' ')) return true;
  if (s.starts_with("---") || s.starts_with("...") || s == "<<") return true;
  if (s.find(": ") != std::string_view::npos || s.back() == ':') return true;
  if (s.find(" #") != std::string_view::npos) return true;
  return LooksLikeBoolOrNull(s) || LooksLikeNumber(s);
}

std::string DoubleQuoted(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (IsControl(c)) {
          auto u = static_cast<unsigned char>(c);
          out += "\\x";
          out += kHex[u >> 4];
          out += kHex[u & 0x0F];
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// A multi-line string is written as a literal block when that reads back exactly: it starts
// with a visible character (so the indentation is detected from its first line), has no control
// characters but newlines and tabs, and no line made only of spaces (those are ambiguous).
bool FitsLiteralBlock(std::string_view s) {
  if (s.find('\n') == std::string_view::npos) return false;
  if (s.front() == ' ' || s.front() == '\t' || s.front() == '\n') return false;
  for (char c : s) {
    if (IsControl(c) && c != '\n' && c != '\t') return false;
  }
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find('\n', start);
    if (end == std::string_view::npos) end = s.size();
    std::string_view line = s.substr(start, end - start);
    if (!line.empty() && line.find_first_not_of(" \t") == std::string_view::npos) return false;
    start = end + 1;
  }
  return true;
}

// The header ("|", "|-" or "|+") and the lines of a literal block, each indented by `indent`.
void EmitLiteralBlock(std::string_view s, int indent, std::string& out) {
  size_t trailing = 0;
  while (trailing < s.size() && s[s.size() - 1 - trailing] == '\n') ++trailing;
  out += trailing == 0 ? "|-\n" : trailing == 1 ? "|\n" : "|+\n";
  std::string_view content = s.substr(0, s.size() - trailing);
  size_t start = 0;
  while (start <= content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string_view::npos) end = content.size();
    std::string_view line = content.substr(start, end - start);
    if (!line.empty()) out.append(static_cast<size_t>(indent), ' ').append(line);
    out += '\n';
    start = end + 1;
  }
  for (size_t i = 1; i < trailing; ++i) out += '\n';  // kept by "|+"
}

bool IsScalarLike(const Json& v) { return !v.is_structured() || v.empty(); }

// One line's worth of a scalar or an empty collection (no newline).
std::string InlineScalar(const Json& v) {
  if (v.is_string()) return YamlScalar(v.get_ref<const std::string&>());
  if (v.is_null()) return "null";
  if (v.is_object()) return "{}";
  if (v.is_array()) return "[]";
  return DumpJson(v);
}

void EmitMapping(const Json& object, int indent, bool first_inline, std::string& out);
void EmitSequence(const Json& array, int indent, bool first_inline, std::string& out);

bool IsBlockString(const Json& v) {
  return v.is_string() && FitsLiteralBlock(v.get_ref<const std::string&>());
}

// The value after "key:" (whose line is started); `indent` is the key's indentation.
void EmitMappingValue(const Json& v, int indent, std::string& out) {
  if (IsBlockString(v)) {
    out += ' ';
    EmitLiteralBlock(v.get_ref<const std::string&>(), indent + 2, out);
  } else if (IsScalarLike(v)) {
    out += ' ' + InlineScalar(v) + '\n';
  } else if (v.is_object()) {
    out += '\n';
    EmitMapping(v, indent + 2, false, out);
  } else {
    out += '\n';
    EmitSequence(v, indent + 2, false, out);
  }
}

// The value after "- " (whose line is started); `indent` is where the item's content starts.
void EmitSequenceItem(const Json& v, int indent, std::string& out) {
  if (IsBlockString(v)) {
    EmitLiteralBlock(v.get_ref<const std::string&>(), indent, out);
  } else if (IsScalarLike(v)) {
    out += InlineScalar(v) + '\n';
  } else if (v.is_object()) {
    EmitMapping(v, indent, true, out);
  } else {
    EmitSequence(v, indent, true, out);
  }
}

void EmitMapping(const Json& object, int indent, bool first_inline, std::string& out) {
  bool first = true;
  for (const auto& [key, value] : object.items()) {
    if (!(first && first_inline)) out.append(static_cast<size_t>(indent), ' ');
    first = false;
    out += YamlScalar(key) + ':';
    EmitMappingValue(value, indent, out);
  }
}

void EmitSequence(const Json& array, int indent, bool first_inline, std::string& out) {
  bool first = true;
  for (const Json& item : array) {
    if (!(first && first_inline)) out.append(static_cast<size_t>(indent), ' ');
    first = false;
    out += "- ";
    EmitSequenceItem(item, indent + 2, out);
  }
}

}  // namespace

std::string YamlScalar(std::string_view s) {
  return NeedsQuotes(s) ? DoubleQuoted(s) : std::string(s);
}

std::string ToYaml(const Json& value) {
  std::string out;
  if (IsBlockString(value)) {
    EmitLiteralBlock(value.get_ref<const std::string&>(), 2, out);
  } else if (IsScalarLike(value)) {
    out = InlineScalar(value) + '\n';
  } else if (value.is_object()) {
    EmitMapping(value, 0, false, out);
  } else {
    EmitSequence(value, 0, false, out);
  }
  return out;
}

std::string Render(const Json& value, std::string_view format) {
  return format == "json" ? ToPrettyJson(value) : ToYaml(value);
}

void PrintIndented(std::ostream& out, std::string_view text, std::string_view prefix) {
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (!line.empty()) out << prefix << line;
    out << '\n';
    start = end + 1;
  }
}

void PrintField(std::ostream& out, std::string_view label, const std::string& value, int width) {
  out << std::left << std::setw(width) << (std::string(label) + ":") << " " << value << "\n";
}

}  // namespace cortex::cli
