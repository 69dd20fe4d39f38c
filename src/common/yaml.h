// A YAML document model with source positions, built from libyaml's event API.
// This is the only place libyaml is used. Nodes live in an arena owned by the Stream; aliases
// point at the anchored node (the tree is a DAG), merge keys ("<<") are applied, duplicate keys
// are errors, and plain scalars are typed by the YAML 1.2 core schema.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace cortex::yaml {

struct Mark {
  int line = 0;    // 1-based
  int column = 0;  // 1-based
};

enum class NodeType { kNull, kScalar, kSequence, kMapping };

// What a scalar means under the core schema (quoted scalars are always strings).
enum class ScalarKind { kNull, kBool, kInt, kFloat, kString };

class Node;

struct Entry {
  const Node* key;
  const Node* value;
};

class Node {
 public:
  NodeType type() const { return type_; }
  Mark mark() const { return mark_; }
  bool IsMapping() const { return type_ == NodeType::kMapping; }
  bool IsSequence() const { return type_ == NodeType::kSequence; }
  bool IsScalar() const { return type_ == NodeType::kScalar; }
  // An explicit null: a missing value, `~`, `null`.
  bool IsNull() const { return type_ == NodeType::kNull; }

  // Scalar text exactly as written (after YAML unescaping). Empty for non-scalars.
  const std::string& scalar() const { return scalar_; }
  ScalarKind scalar_kind() const { return scalar_kind_; }
  bool quoted() const { return quoted_; }

  const std::vector<const Node*>& items() const { return items_; }
  const std::vector<Entry>& entries() const { return entries_; }
  // Mapping lookup by scalar key; nullptr when absent or not a mapping.
  const Node* Find(std::string_view key) const;

  // Typed views of a scalar; nullopt when the scalar does not have that type.
  std::optional<bool> AsBool() const;
  std::optional<int64_t> AsInt() const;
  std::optional<double> AsDouble() const;  // ints convert too

  // "mapping", "sequence", "string", "integer", "number", "boolean" or "null": for messages.
  std::string_view TypeName() const;

 private:
  friend class Builder;
  NodeType type_ = NodeType::kNull;
  Mark mark_;
  ScalarKind scalar_kind_ = ScalarKind::kNull;
  bool quoted_ = false;
  uint64_t expanded_size_ = 1;  // nodes after alias expansion, saturating
  std::string scalar_;
  std::vector<const Node*> items_;
  std::vector<Entry> entries_;
};

struct ParseOptions {
  int max_depth = 64;              // nesting of collections
  uint64_t max_nodes = 1'000'000;  // after alias expansion (guards "billion laughs")
  int line_offset = 0;             // added to every mark (front matter starts below line 1)
};

// Every document of a YAML stream. Owns its nodes.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(Stream&&) noexcept;
  Stream& operator=(Stream&&) noexcept;

  const std::vector<const Node*>& documents() const { return documents_; }

 private:
  friend class Builder;
  std::unique_ptr<std::deque<Node>> arena_;
  std::vector<const Node*> documents_;
};

// Parses a YAML stream. Errors are InvalidArgument with a "line:col: message" text.
Result<Stream> Parse(std::string_view text, const ParseOptions& options = {});

// Converts a node to JSON: plain scalars by their core-schema type, quoted scalars as strings,
// mapping keys as their text.
nlohmann::ordered_json ToJson(const Node& node);

// Core-schema typing of a plain scalar's text.
ScalarKind ResolvePlainScalar(std::string_view text);

}  // namespace cortex::yaml
