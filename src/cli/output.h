// How the CLI prints: aligned text tables, pretty JSON, and block-style YAML. No dependencies
// beyond nlohmann::json; the YAML emitter is a small writer of our own (the one YAML library in
// the project is a reader, and it stays behind common/yaml.h).
#pragma once

#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace cortex::cli {

using Json = nlohmann::ordered_json;

// A text table: a header row, then rows, each column padded to its widest cell and separated by
// three spaces. The last column is not padded, so lines have no trailing spaces. Widths count
// UTF-8 code points (wide characters are not measured).
class Table {
 public:
  explicit Table(std::vector<std::string> headers);
  // A row with fewer cells than headers is padded with empty cells; extra cells are dropped.
  // `name` is what `-o name` prints for the row; empty: its first cell.
  void AddRow(std::vector<std::string> cells, std::string name = "");
  size_t size() const { return rows_.size(); }
  void Print(std::ostream& out, bool headers = true) const;
  // Each row's name, one a line (`-o name`: for scripts, `xargs` and the like).
  void PrintNames(std::ostream& out) const;
  std::string ToString() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
  std::vector<std::string> names_;
};

// How a list prints, the same on every verb that lists: `-o table|json|yaml|name` and
// `--no-headers` (AddListFormat in verbs.h adds both).
struct ListFormat {
  std::string output = "table";
  bool no_headers = false;
  // --watch (AddWatchOptions): print the list again each time it changes, every `interval`.
  bool watch = false;
  std::string interval = "2s";
  bool structured() const { return output == "json" || output == "yaml"; }
};

// Prints a list as `format` says: json/yaml render `body` whole; `name` prints the table's row
// names; `table` the table. An empty table prints "no <what> found" on `err` (a table only:
// scripts reading names get no output at all).
void PrintList(std::ostream& out, std::ostream& err, const Json& body, const Table& table,
               const ListFormat& format, std::string_view what);

// Number of UTF-8 code points in `s` (continuation bytes are not counted).
size_t DisplayWidth(std::string_view s);

// `s` cut to at most `max_width` code points, ending in "..." when cut; newlines become spaces.
std::string Truncate(std::string_view s, size_t max_width);

// "Label:     value" on one line, the label padded to `width` (describe-style output).
void PrintField(std::ostream& out, std::string_view label, const std::string& value, int width);

// Pretty JSON, two-space indent, then a newline. Invalid UTF-8 is replaced, never thrown on.
std::string ToPrettyJson(const Json& value);

// Block-style YAML of a JSON value (keys in their order), ending in a newline. Strings are
// quoted only when a YAML reader would otherwise see something else (a number, a boolean, null,
// an indicator, a comment, surrounding spaces); multi-line strings become `|` block scalars.
std::string ToYaml(const Json& value);

// The scalar form ToYaml writes for one string on a single line (plain or double-quoted).
std::string YamlScalar(std::string_view s);

// ToPrettyJson for "json", ToYaml for "yaml" (the structured choices of every -o option).
std::string Render(const Json& value, std::string_view format);

// Writes `text` with `prefix` before every non-empty line.
void PrintIndented(std::ostream& out, std::string_view text, std::string_view prefix);

}  // namespace cortex::cli
