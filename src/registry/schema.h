// One field list per manifest struct, three uses: read it from YAML with precise diagnostics,
// write it as JSON, and describe it as JSON Schema. A struct opts in with
//
//   template <class Self, class V> static void Fields(Self& self, V& v) {
//     v.Field("name", self.name, {.required = true});
//     ...
//   }
//
// and optionally `static bool FromShorthand(const yaml::Node&, T&, YamlReader&)` for a scalar
// (or list) spelling of the same thing, e.g. `health_check: "http://..."`.
#pragma once

#include <array>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeindex>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "common/yaml.h"
#include "registry/diagnostics.h"

namespace cortex::registry {

using Json = nlohmann::ordered_json;

// A mapping whose order is kept as written.
template <class T>
using OrderedMap = std::vector<std::pair<std::string, T>>;

// A duration, written as seconds (`30`, `0.5`) or with a unit (`500ms`, `30s`, `5m`, `2h`).
struct Duration {
  double seconds = 0;
  friend bool operator==(const Duration&, const Duration&) = default;
};

// Enumerations spelled as strings: specialise with
//   static constexpr std::array<std::pair<E, std::string_view>, N> kValues = {...};
template <class E>
struct EnumTraits;

template <class E>
std::string_view EnumName(E e) {
  for (const auto& [v, n] : EnumTraits<E>::kValues) {
    if (v == e) return n;
  }
  return "?";
}

template <class E>
std::optional<E> EnumFromName(std::string_view name) {
  for (const auto& [v, n] : EnumTraits<E>::kValues) {
    if (n == name) return v;
  }
  return std::nullopt;
}

// A borrowed list of strings: a braced list written at the call (valid for the call) or a
// named std::array constant.
class StringList {
 public:
  StringList() = default;
  // The list's array lives until the end of the full-expression, which is the Field() call.
  // (GCC's -Winit-list-lifetime warns about keeping its pointer; clang has no such warning.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winit-list-lifetime"
#endif
  StringList(std::initializer_list<std::string_view> l) : data_(l.begin()), size_(l.size()) {}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
  template <size_t N>
  StringList(const std::array<std::string_view, N>& a) : data_(a.data()), size_(N) {}
  const std::string_view* begin() const { return data_; }
  const std::string_view* end() const { return data_ + size_; }
  size_t size() const { return size_; }

 private:
  const std::string_view* data_ = nullptr;
  size_t size_ = 0;
};

struct FieldOptions {
  bool required = false;
  StringList aliases = {};  // older spellings accepted on input
  std::string_view description = {};
  std::optional<double> min = std::nullopt;  // numbers: value bounds; strings: length bounds
  std::optional<double> max = std::nullopt;
  StringList one_of = {};  // allowed values of a string field
  // Extra check of a string value; returns an error message or "" when fine.
  std::string (*check)(std::string_view value) = nullptr;
};

// Edit distance, for "did you mean" hints.
size_t EditDistance(std::string_view a, std::string_view b);
// The closest candidate within a small distance, or "".
std::string_view ClosestMatch(std::string_view word, const std::vector<std::string_view>& choices);

// A visitor that does nothing, to detect types with a Fields() list.
struct ProbeVisitor {
  template <class T>
  void Field(std::string_view, T&, const FieldOptions& = {}) {}
};

template <class T>
concept HasFields = requires(T& t, ProbeVisitor& v) {
  T::Fields(t, v);
};

template <class T>
struct IsOptional : std::false_type {};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {};
template <class T>
struct IsVector : std::false_type {};
template <class T, class A>
struct IsVector<std::vector<T, A>> : std::true_type {};
template <class T>
struct IsOrderedMap : std::false_type {};
template <class T>
struct IsOrderedMap<std::vector<std::pair<std::string, T>>> : std::true_type {};

template <class T>
concept IsEnum = std::is_enum_v<T>;

// ---------------------------------------------------------------------------------------------
// Reading.

class YamlReader {
 public:
  YamlReader(std::string file, Diagnostics* diagnostics, bool strict)
      : file_(std::move(file)), diagnostics_(diagnostics), strict_(strict) {}

  // Reads the mapping `node` field by field: `visit(*this)` must call Field() for every known
  // key. Unknown keys become warnings (errors when strict) with a did-you-mean, and are kept in
  // unknown_fields() under their dotted path ("implementation.gpu").
  template <class Visit>
  bool ReadObject(const yaml::Node& node, Visit&& visit) {
    if (!node.IsMapping()) {
      Error(node, "expected a mapping, got " + std::string(node.TypeName()));
      return false;
    }
    scopes_.push_back(Scope{&node, std::vector<bool>(node.entries().size(), false), {}});
    visit(*this);
    Scope scope = std::move(scopes_.back());
    scopes_.pop_back();
    for (size_t i = 0; i < node.entries().size(); ++i) {
      if (scope.consumed[i]) continue;
      const yaml::Entry& e = node.entries()[i];
      std::string msg = "unknown field '" + e.key->scalar() + "'";
      std::string_view hint = ClosestMatch(e.key->scalar(), scope.known);
      if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
      Report(strict_ ? Severity::kError : Severity::kWarning, *e.key, PathWith(e.key->scalar()),
             msg);
      unknown_[PathWith(e.key->scalar())] = yaml::ToJson(*e.value);
    }
    return true;
  }

  template <class T>
  void Field(std::string_view key, T& value, const FieldOptions& opts = {}) {
    Scope& scope = scopes_.back();
    scope.known.push_back(key);
    const yaml::Node* found = nullptr;
    const yaml::Node* found_key = nullptr;
    auto take = [&](std::string_view k) {
      const auto& entries = scope.node->entries();
      for (size_t i = 0; i < entries.size(); ++i) {
        if (entries[i].key->scalar() == k && !scope.consumed[i]) {
          scope.consumed[i] = true;
          if (found == nullptr) {
            found = entries[i].value;
            found_key = entries[i].key;
          } else {
            Report(Severity::kError, *entries[i].key, PathWith(key),
                   "'" + std::string(k) + "' and '" + found_key->scalar() +
                       "' both set the same field");
          }
        }
      }
    };
    take(key);
    for (std::string_view alias : opts.aliases) take(alias);
    if (found == nullptr || (found->IsNull() && !IsOptional<T>::value)) {
      if (opts.required) {
        const yaml::Node& at = found ? *found : *scope.node;
        Report(Severity::kError, at, PathWith(key),
               found ? "must not be empty" : "missing required field '" + std::string(key) + "'");
      }
      return;
    }
    path_.emplace_back(key);
    if (Read(*found, value)) CheckValue(*found, value, opts);
    path_.pop_back();
  }

  // Reads any supported type from a node; false (with a diagnostic) when it does not fit.
  template <class T>
  bool Read(const yaml::Node& node, T& out);

  void Error(const yaml::Node& at, std::string message) {
    Report(Severity::kError, at, Path(), std::move(message));
  }
  void Warning(const yaml::Node& at, std::string message) {
    Report(Severity::kWarning, at, Path(), std::move(message));
  }

  // Pushes a path component for the reader's messages while in scope.
  class PathGuard {
   public:
    PathGuard(YamlReader& r, std::string component) : r_(r) {
      r_.path_.push_back(std::move(component));
    }
    ~PathGuard() { r_.path_.pop_back(); }
    PathGuard(const PathGuard&) = delete;
    PathGuard& operator=(const PathGuard&) = delete;

   private:
    YamlReader& r_;
  };

  const Json& unknown_fields() const { return unknown_; }
  const std::string& file() const { return file_; }
  // The dotted path of the value being read ("steps[2].retry_policy").
  std::string Path() const;

 private:
  struct Scope {
    const yaml::Node* node;
    std::vector<bool> consumed;
    std::vector<std::string_view> known;
  };

  std::string PathWith(std::string_view key) const;
  void Report(Severity severity, const yaml::Node& at, const std::string& path,
              std::string message);

  bool ReadString(const yaml::Node& node, std::string& out);
  bool ReadBool(const yaml::Node& node, bool& out);
  bool ReadInt(const yaml::Node& node, int64_t& out);
  bool ReadDouble(const yaml::Node& node, double& out);
  bool ReadDuration(const yaml::Node& node, Duration& out);
  bool ReadEnumName(const yaml::Node& node, std::string_view& name,
                    const std::vector<std::string_view>& allowed);

  template <class T>
  void CheckValue(const yaml::Node& node, const T& value, const FieldOptions& opts);

  std::string file_;
  Diagnostics* diagnostics_;
  bool strict_;
  std::vector<Scope> scopes_;
  std::vector<std::string> path_;
  Json unknown_ = Json::object();
};

template <class T>
bool YamlReader::Read(const yaml::Node& node, T& out) {
  if constexpr (requires { T::FromNode(node, out, *this); }) {
    return T::FromNode(node, out, *this);
  } else if constexpr (requires { T::FromShorthand(node, out, *this); }) {
    if (!node.IsMapping()) return T::FromShorthand(node, out, *this);
  }
  if constexpr (std::is_same_v<T, std::string>) {
    return ReadString(node, out);
  } else if constexpr (std::is_same_v<T, bool>) {
    return ReadBool(node, out);
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return ReadInt(node, out);
  } else if constexpr (std::is_same_v<T, int>) {
    int64_t v = 0;
    if (!ReadInt(node, v)) return false;
    if (v < INT32_MIN || v > INT32_MAX) {
      Error(node, "integer out of range");
      return false;
    }
    out = static_cast<int>(v);
    return true;
  } else if constexpr (std::is_same_v<T, double>) {
    return ReadDouble(node, out);
  } else if constexpr (std::is_same_v<T, Duration>) {
    return ReadDuration(node, out);
  } else if constexpr (std::is_same_v<T, Json>) {
    out = yaml::ToJson(node);
    return true;
  } else if constexpr (IsEnum<T>) {
    std::vector<std::string_view> names;
    for (const auto& [v, n] : EnumTraits<T>::kValues) names.push_back(n);
    std::string_view name;
    if (!ReadEnumName(node, name, names)) return false;
    out = *EnumFromName<T>(name);
    return true;
  } else if constexpr (IsOptional<T>::value) {
    if (node.IsNull()) {
      out.reset();
      return true;
    }
    typename T::value_type v{};
    if (!Read(node, v)) return false;
    out = std::move(v);
    return true;
  } else if constexpr (IsOrderedMap<T>::value) {
    if (node.IsNull()) return true;
    if (!node.IsMapping()) {
      Error(node, "expected a mapping, got " + std::string(node.TypeName()));
      return false;
    }
    out.clear();
    bool ok = true;
    for (const yaml::Entry& e : node.entries()) {
      path_.push_back(e.key->scalar());
      typename T::value_type::second_type v{};
      if (Read(*e.value, v)) {
        out.emplace_back(e.key->scalar(), std::move(v));
      } else {
        ok = false;
      }
      path_.pop_back();
    }
    return ok;
  } else if constexpr (IsVector<T>::value) {
    using Item = typename T::value_type;
    if (node.IsNull()) return true;
    out.clear();
    if (!node.IsSequence()) {
      if constexpr (std::is_same_v<Item, std::string>) {
        if (node.IsScalar()) {  // a single string where a list is expected
          out.push_back(node.scalar());
          return true;
        }
      }
      Error(node, "expected a list, got " + std::string(node.TypeName()));
      return false;
    }
    bool ok = true;
    for (size_t i = 0; i < node.items().size(); ++i) {
      path_.push_back("[" + std::to_string(i) + "]");
      Item v{};
      if (Read(*node.items()[i], v)) {
        out.push_back(std::move(v));
      } else {
        ok = false;
      }
      path_.pop_back();
    }
    return ok;
  } else {
    static_assert(HasFields<T>, "type has no Fields()");
    return ReadObject(node, [&](YamlReader& r) { T::Fields(out, r); });
  }
}

// A bound as a user wrote it: 1, not 1.0.
inline std::string BoundText(double bound) {
  if (bound == static_cast<double>(static_cast<int64_t>(bound))) {
    return std::to_string(static_cast<int64_t>(bound));
  }
  return DumpJson(Json(bound));
}

template <class T>
void YamlReader::CheckValue(const yaml::Node& node, const T& value, const FieldOptions& opts) {
  if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, std::optional<std::string>>) {
    const std::string* s = nullptr;
    if constexpr (std::is_same_v<T, std::string>) {
      s = &value;
    } else {
      if (!value) return;
      s = &*value;
    }
    if (opts.one_of.size() > 0) {
      bool ok = false;
      std::vector<std::string_view> all;
      for (std::string_view allowed : opts.one_of) {
        all.push_back(allowed);
        if (allowed == *s) ok = true;
      }
      if (!ok) {
        std::string msg = "'" + *s + "' is not one of ";
        for (size_t i = 0; i < all.size(); ++i) msg += (i ? ", " : "") + std::string(all[i]);
        std::string_view hint = ClosestMatch(*s, all);
        if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
        Error(node, msg);
      }
    }
    if (opts.check) {
      std::string err = opts.check(*s);
      if (!err.empty()) Error(node, err);
    }
  } else if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    if (opts.min && static_cast<double>(value) < *opts.min) {
      Error(node, "must be at least " + BoundText(*opts.min));
    }
    if (opts.max && static_cast<double>(value) > *opts.max) {
      Error(node, "must be at most " + BoundText(*opts.max));
    }
  } else if constexpr (IsOptional<T>::value) {
    if (value) CheckValue(node, *value, opts);
  } else if constexpr (IsVector<T>::value) {
    // Each item of a list of numbers or strings meets the field's bounds and choices.
    if constexpr (std::is_arithmetic_v<typename T::value_type> ||
                  std::is_same_v<typename T::value_type, std::string>) {
      if (!node.IsSequence() || node.items().size() != value.size()) return;
      for (size_t i = 0; i < value.size(); ++i) {
        PathGuard at(*this, "[" + std::to_string(i) + "]");
        CheckValue(*node.items()[i], value[i], opts);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Writing JSON.

class JsonWriter {
 public:
  explicit JsonWriter(Json* out) : out_(out) {}

  template <class T>
  void Field(std::string_view key, const T& value, const FieldOptions& opts = {}) {
    if (!opts.required && IsEmpty(value)) return;
    (*out_)[std::string(key)] = ToJson(value);
  }

  template <class T>
  static bool IsEmpty(const T& value) {
    if constexpr (IsOptional<T>::value) {
      return !value.has_value();
    } else if constexpr (std::is_same_v<T, Json>) {
      return value.is_null();
    } else if constexpr (std::is_same_v<T, std::string> || IsVector<T>::value) {
      return value.empty();
    } else {
      return false;
    }
  }

  template <class T>
  static Json ToJson(const T& value) {
    if constexpr (std::is_same_v<T, Duration>) {
      return value.seconds;
    } else if constexpr (IsEnum<T>) {
      return std::string(EnumName(value));
    } else if constexpr (IsOptional<T>::value) {
      return value ? ToJson(*value) : Json();
    } else if constexpr (IsOrderedMap<T>::value) {
      Json obj = Json::object();
      for (const auto& [k, v] : value) obj[k] = ToJson(v);
      return obj;
    } else if constexpr (IsVector<T>::value) {
      Json arr = Json::array();
      for (const auto& v : value) arr.push_back(ToJson(v));
      return arr;
    } else if constexpr (HasFields<T>) {
      Json obj = Json::object();
      JsonWriter w(&obj);
      T::Fields(value, w);
      if constexpr (requires { T::kSerializeAsShorthand; }) {
        return T::ToShorthandJson(value, std::move(obj));
      }
      return obj;
    } else {
      return Json(value);
    }
  }

 private:
  Json* out_;
};

// ---------------------------------------------------------------------------------------------
// Describing as JSON Schema.

class SchemaWriter {
 public:
  SchemaWriter(Json* properties, Json* required) : properties_(properties), required_(required) {}

  template <class T>
  void Field(std::string_view key, const T&, const FieldOptions& opts = {}) {
    Json s = SchemaOf<T>();
    if (!opts.description.empty()) s["description"] = std::string(opts.description);
    if (opts.one_of.size() > 0) {
      Json e = Json::array();
      for (std::string_view v : opts.one_of) e.push_back(std::string(v));
      s["enum"] = e;
    }
    bool numeric = s.contains("type") && (s["type"] == "integer" || s["type"] == "number");
    if (opts.min) s[numeric ? "minimum" : "minLength"] = *opts.min;
    if (opts.max) s[numeric ? "maximum" : "maxLength"] = *opts.max;
    (*properties_)[std::string(key)] = s;
    for (std::string_view alias : opts.aliases) {
      Json a = s;
      a["description"] = "Alias of '" + std::string(key) + "'.";
      (*properties_)[std::string(alias)] = a;
    }
    if (opts.required) required_->push_back(std::string(key));
  }

  template <class T>
  static Json SchemaOf() {
    if constexpr (std::is_same_v<T, std::string>) {
      return {{"type", "string"}};
    } else if constexpr (std::is_same_v<T, bool>) {
      return {{"type", "boolean"}};
    } else if constexpr (std::is_integral_v<T>) {
      return {{"type", "integer"}};
    } else if constexpr (std::is_floating_point_v<T>) {
      return {{"type", "number"}};
    } else if constexpr (std::is_same_v<T, Duration>) {
      return {{"type", {"number", "string"}},
              {"description", "Seconds, or a string with a unit: 500ms, 30s, 5m, 2h."}};
    } else if constexpr (std::is_same_v<T, Json>) {
      return Json::object();
    } else if constexpr (IsEnum<T>) {
      Json e = Json::array();
      for (const auto& [v, n] : EnumTraits<T>::kValues) e.push_back(std::string(n));
      return {{"type", "string"}, {"enum", e}};
    } else if constexpr (IsOptional<T>::value) {
      return SchemaOf<typename T::value_type>();
    } else if constexpr (IsOrderedMap<T>::value) {
      return {{"type", "object"},
              {"additionalProperties", SchemaOf<typename T::value_type::second_type>()}};
    } else if constexpr (IsVector<T>::value) {
      return {{"type", "array"}, {"items", SchemaOf<typename T::value_type>()}};
    } else {
      // Guards against recursive types (steps inside steps); per thread, as requests describe
      // schemas concurrently.
      thread_local std::set<std::type_index> in_progress_set;
      std::set<std::type_index>* in_progress = &in_progress_set;
      if (in_progress->count(typeid(T))) return {{"type", "object"}};
      in_progress->insert(typeid(T));
      Json props = Json::object();
      Json required = Json::array();
      SchemaWriter w(&props, &required);
      T sample{};
      T::Fields(sample, w);
      in_progress->erase(typeid(T));
      Json s = {{"type", "object"}, {"properties", props}};
      if (!required.empty()) s["required"] = required;
      if constexpr (requires { T::ShorthandSchema(); }) {
        return Json{{"anyOf", Json::array({s, T::ShorthandSchema()})}};
      }
      return s;
    }
  }

 private:
  Json* properties_;
  Json* required_;
};

}  // namespace cortex::registry
