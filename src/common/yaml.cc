#include "common/yaml.h"

#include <yaml.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <unordered_set>

namespace cortex::yaml {

namespace {

bool IsDigits(std::string_view s, int base) {
  if (s.empty()) return false;
  for (char c : s) {
    bool ok = base == 10  ? (c >= '0' && c <= '9')
              : base == 8 ? (c >= '0' && c <= '7')
                          : std::isxdigit(static_cast<unsigned char>(c)) != 0;
    if (!ok) return false;
  }
  return true;
}

bool IsCoreFloat(std::string_view s) {
  // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  size_t int_digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++int_digits;
  size_t frac_digits = 0;
  bool dot = false;
  if (i < s.size() && s[i] == '.') {
    dot = true;
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++frac_digits;
  }
  if (int_digits == 0 && frac_digits == 0) return false;
  if (!dot && int_digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    size_t exp_digits = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++exp_digits;
    if (exp_digits == 0) return false;
  }
  return i == s.size();
}

uint64_t SatAdd(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max()
                                                      : a + b;
}

}  // namespace

ScalarKind ResolvePlainScalar(std::string_view s) {
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return ScalarKind::kNull;
  if (s == "true" || s == "True" || s == "TRUE" || s == "false" || s == "False" || s == "FALSE") {
    return ScalarKind::kBool;
  }
  char c = s[0];
  if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '+' || c == '.')) {
    return ScalarKind::kString;
  }
  std::string_view body = (c == '-' || c == '+') ? s.substr(1) : s;
  if (IsDigits(body, 10)) return ScalarKind::kInt;
  if (s.size() > 2 && s[0] == '0' && s[1] == 'o' && IsDigits(s.substr(2), 8)) {
    return ScalarKind::kInt;
  }
  if (s.size() > 2 && s[0] == '0' && s[1] == 'x' && IsDigits(s.substr(2), 16)) {
    return ScalarKind::kInt;
  }
  if (IsCoreFloat(s)) return ScalarKind::kFloat;
  if (body == ".inf" || body == ".Inf" || body == ".INF" || s == ".nan" || s == ".NaN" ||
      s == ".NAN") {
    return ScalarKind::kFloat;
  }
  return ScalarKind::kString;
}

const Node* Node::Find(std::string_view key) const {
  for (const Entry& e : entries_) {
    if (e.key->scalar_ == key) return e.value;
  }
  return nullptr;
}

std::optional<bool> Node::AsBool() const {
  if (type_ != NodeType::kScalar || scalar_kind_ != ScalarKind::kBool) return std::nullopt;
  return scalar_[0] == 't' || scalar_[0] == 'T';
}

std::optional<int64_t> Node::AsInt() const {
  if (type_ != NodeType::kScalar || scalar_kind_ != ScalarKind::kInt) return std::nullopt;
  std::string_view s = scalar_;
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'o' || s[1] == 'x')) {
    base = s[1] == 'o' ? 8 : 16;
    s.remove_prefix(2);
  }
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  if (!neg && v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  if (neg && v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) + 1) {
    return std::nullopt;
  }
  return neg ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
}

std::optional<double> Node::AsDouble() const {
  if (type_ != NodeType::kScalar) return std::nullopt;
  if (scalar_kind_ == ScalarKind::kInt) {
    auto i = AsInt();
    if (!i) return std::nullopt;
    return static_cast<double>(*i);
  }
  if (scalar_kind_ != ScalarKind::kFloat) return std::nullopt;
  std::string_view s = scalar_;
  bool neg = !s.empty() && s[0] == '-';
  std::string_view body = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? s.substr(1) : s;
  if (body.size() == 4 && body[0] == '.' && (body[1] == 'i' || body[1] == 'I')) {
    return neg ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  }
  if (body.size() == 4 && body[0] == '.' && (body[1] == 'n' || body[1] == 'N')) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string_view Node::TypeName() const {
  switch (type_) {
    case NodeType::kNull:
      return "null";
    case NodeType::kSequence:
      return "sequence";
    case NodeType::kMapping:
      return "mapping";
    case NodeType::kScalar:
      break;
  }
  switch (scalar_kind_) {
    case ScalarKind::kNull:
      return "null";
    case ScalarKind::kBool:
      return "boolean";
    case ScalarKind::kInt:
      return "integer";
    case ScalarKind::kFloat:
      return "number";
    case ScalarKind::kString:
      return "string";
  }
  return "string";
}

Stream::Stream() : arena_(std::make_unique<std::deque<Node>>()) {}
Stream::~Stream() = default;
Stream::Stream(Stream&&) noexcept = default;
Stream& Stream::operator=(Stream&&) noexcept = default;

// Turns libyaml events into Nodes.
class Builder {
 public:
  Builder(Stream* stream, const ParseOptions& options) : stream_(stream), options_(options) {}

  Status Run(std::string_view text) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return InternalError("cannot initialise the YAML parser");
    yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    Status st;
    bool done = false;
    while (!done && st.ok()) {
      yaml_event_t event;
      if (!yaml_parser_parse(&parser, &event)) {
        st = ParserError(parser);
        break;
      }
      done = event.type == YAML_STREAM_END_EVENT;
      st = OnEvent(event);
      yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);
    return st;
  }

 private:
  struct Frame {
    Node* node = nullptr;
    const Node* pending_key = nullptr;
    std::string anchor;
    std::unique_ptr<std::unordered_set<std::string_view>> keys;  // only for big mappings
  };

  Mark MarkOf(const yaml_mark_t& m) const {
    return Mark{static_cast<int>(m.line) + 1 + options_.line_offset,
                static_cast<int>(m.column) + 1};
  }

  static std::string At(Mark m) {
    return std::to_string(m.line) + ":" + std::to_string(m.column) + ": ";
  }

  Status ParserError(const yaml_parser_t& p) const {
    Mark m = MarkOf(p.problem_mark);
    std::string msg = At(m) + (p.problem ? p.problem : "invalid YAML");
    if (p.context) {
      msg += " (";
      msg += p.context;
      msg += " at line " + std::to_string(MarkOf(p.context_mark).line) + ")";
    }
    return InvalidArgumentError(std::move(msg));
  }

  Node* NewNode(NodeType type, const yaml_mark_t& mark) {
    Node& n = stream_->arena_->emplace_back();
    n.type_ = type;
    n.mark_ = MarkOf(mark);
    return &n;
  }

  Status RegisterAnchor(const yaml_char_t* anchor, const Node* node) {
    if (anchor == nullptr) return Status::Ok();
    anchors_[reinterpret_cast<const char*>(anchor)] = node;
    return Status::Ok();
  }

  // Attaches a finished node to the collection on top of the stack (or makes it the document).
  Status Attach(const Node* node) {
    if (stack_.empty()) {
      document_ = node;
      return Status::Ok();
    }
    Frame& f = stack_.back();
    Node* parent = f.node;
    parent->expanded_size_ = SatAdd(parent->expanded_size_, node->expanded_size_);
    if (parent->type_ == NodeType::kSequence) {
      parent->items_.push_back(node);
      return Status::Ok();
    }
    if (f.pending_key == nullptr) {
      if (node->type_ != NodeType::kScalar && node->type_ != NodeType::kNull) {
        return InvalidArgumentError(At(node->mark_) + "mapping keys must be scalars, not a " +
                                    std::string(node->TypeName()));
      }
      const std::string& key = node->scalar_;
      if (f.keys == nullptr && parent->entries_.size() >= 16) {
        f.keys = std::make_unique<std::unordered_set<std::string_view>>();
        for (const Entry& e : parent->entries_) f.keys->insert(e.key->scalar_);
      }
      bool dup = false;
      if (f.keys) {
        dup = !f.keys->insert(key).second;
      } else {
        for (const Entry& e : parent->entries_) {
          if (e.key->scalar_ == key) dup = true;
        }
      }
      if (dup && key != "<<") {
        int first_line = 0;
        for (const Entry& e : parent->entries_) {
          if (e.key->scalar_ == key) first_line = e.key->mark_.line;
        }
        return InvalidArgumentError(At(node->mark_) + "duplicate key '" + key +
                                    "' (first defined at line " + std::to_string(first_line) + ")");
      }
      f.pending_key = node;
      return Status::Ok();
    }
    parent->entries_.push_back(Entry{f.pending_key, node});
    f.pending_key = nullptr;
    return Status::Ok();
  }

  Status ApplyMergeKeys(Node* map) {
    bool has_merge = false;
    for (const Entry& e : map->entries_) {
      if (e.key->scalar_ == "<<" && !e.key->quoted_) has_merge = true;
    }
    if (!has_merge) return Status::Ok();
    std::vector<Entry> explicit_entries;
    std::vector<const Node*> sources;
    for (const Entry& e : map->entries_) {
      if (e.key->scalar_ == "<<" && !e.key->quoted_) {
        if (e.value->IsMapping()) {
          sources.push_back(e.value);
        } else if (e.value->IsSequence()) {
          for (const Node* item : e.value->items_) {
            if (!item->IsMapping()) {
              return InvalidArgumentError(At(item->mark_) + "merge key '<<' needs mappings");
            }
            sources.push_back(item);
          }
        } else {
          return InvalidArgumentError(At(e.value->mark_) +
                                      "merge key '<<' needs a mapping or a list of mappings");
        }
      } else {
        explicit_entries.push_back(e);
      }
    }
    std::vector<Entry> merged = explicit_entries;
    for (const Node* src : sources) {
      for (const Entry& e : src->entries_) {
        bool present = false;
        for (const Entry& m : merged) {
          if (m.key->scalar_ == e.key->scalar_) present = true;
        }
        if (!present) merged.push_back(e);
      }
    }
    map->entries_ = std::move(merged);
    return Status::Ok();
  }

  Status CheckSize(const Node* node) {
    if (node->expanded_size_ > options_.max_nodes) {
      return InvalidArgumentError(At(node->mark_) + "document too large: more than " +
                                  std::to_string(options_.max_nodes) +
                                  " nodes after alias expansion");
    }
    return Status::Ok();
  }

  Status OnEvent(const yaml_event_t& ev) {
    switch (ev.type) {
      case YAML_DOCUMENT_START_EVENT:
        anchors_.clear();
        document_ = nullptr;
        return Status::Ok();
      case YAML_DOCUMENT_END_EVENT:
        stream_->documents_.push_back(document_);
        return Status::Ok();
      case YAML_ALIAS_EVENT: {
        auto it = anchors_.find(reinterpret_cast<const char*>(ev.data.alias.anchor));
        if (it == anchors_.end()) {
          return InvalidArgumentError(At(MarkOf(ev.start_mark)) + "unknown anchor '*" +
                                      reinterpret_cast<const char*>(ev.data.alias.anchor) + "'");
        }
        if (!stack_.empty()) {
          uint64_t total = SatAdd(stack_.back().node->expanded_size_, it->second->expanded_size_);
          if (total > options_.max_nodes) {
            return InvalidArgumentError(
                At(MarkOf(ev.start_mark)) + "document too large: more than " +
                std::to_string(options_.max_nodes) + " nodes after alias expansion");
          }
        }
        return Attach(it->second);
      }
      case YAML_SCALAR_EVENT: {
        const auto& s = ev.data.scalar;
        std::string_view text(reinterpret_cast<const char*>(s.value), s.length);
        std::string_view tag = s.tag ? reinterpret_cast<const char*>(s.tag) : "";
        bool plain = s.style == YAML_PLAIN_SCALAR_STYLE && tag.empty();
        ScalarKind kind = plain ? ResolvePlainScalar(text) : ScalarKind::kString;
        if (tag == YAML_NULL_TAG) kind = ScalarKind::kNull;
        Node* n =
            NewNode(kind == ScalarKind::kNull ? NodeType::kNull : NodeType::kScalar, ev.start_mark);
        n->scalar_kind_ = kind;
        n->quoted_ = !plain;
        if (kind != ScalarKind::kNull) n->scalar_.assign(text);
        CORTEX_RETURN_IF_ERROR(RegisterAnchor(s.anchor, n));
        return Attach(n);
      }
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT: {
        if (static_cast<int>(stack_.size()) >= options_.max_depth) {
          return InvalidArgumentError(At(MarkOf(ev.start_mark)) + "nesting deeper than " +
                                      std::to_string(options_.max_depth) + " levels");
        }
        bool seq = ev.type == YAML_SEQUENCE_START_EVENT;
        Node* n = NewNode(seq ? NodeType::kSequence : NodeType::kMapping, ev.start_mark);
        const yaml_char_t* anchor =
            seq ? ev.data.sequence_start.anchor : ev.data.mapping_start.anchor;
        Frame f;
        f.node = n;
        if (anchor) f.anchor = reinterpret_cast<const char*>(anchor);
        stack_.push_back(std::move(f));
        return Status::Ok();
      }
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT: {
        Frame f = std::move(stack_.back());
        stack_.pop_back();
        if (f.node->type_ == NodeType::kMapping) {
          if (f.pending_key != nullptr) {
            return InvalidArgumentError(At(f.pending_key->mark_) + "mapping key without a value");
          }
          CORTEX_RETURN_IF_ERROR(ApplyMergeKeys(f.node));
        }
        CORTEX_RETURN_IF_ERROR(CheckSize(f.node));
        if (!f.anchor.empty()) anchors_[f.anchor] = f.node;
        return Attach(f.node);
      }
      default:
        return Status::Ok();
    }
  }

  Stream* stream_;
  const ParseOptions& options_;
  std::vector<Frame> stack_;
  std::unordered_map<std::string, const Node*> anchors_;
  const Node* document_ = nullptr;
};

Result<Stream> Parse(std::string_view text, const ParseOptions& options) {
  Stream stream;
  Builder builder(&stream, options);
  CORTEX_RETURN_IF_ERROR(builder.Run(text));
  return stream;
}

nlohmann::ordered_json ToJson(const Node& node) {
  switch (node.type()) {
    case NodeType::kNull:
      return nullptr;
    case NodeType::kScalar:
      switch (node.scalar_kind()) {
        case ScalarKind::kBool:
          return *node.AsBool();
        case ScalarKind::kInt:
          if (auto i = node.AsInt()) return *i;
          return node.scalar();
        case ScalarKind::kFloat: {
          auto d = node.AsDouble();
          if (d && std::isfinite(*d)) return *d;
          return node.scalar();
        }
        default:
          return node.scalar();
      }
    case NodeType::kSequence: {
      nlohmann::ordered_json arr = nlohmann::ordered_json::array();
      for (const Node* item : node.items()) arr.push_back(ToJson(*item));
      return arr;
    }
    case NodeType::kMapping: {
      nlohmann::ordered_json obj = nlohmann::ordered_json::object();
      for (const Entry& e : node.entries()) obj[e.key->scalar()] = ToJson(*e.value);
      return obj;
    }
  }
  return nullptr;
}

}  // namespace cortex::yaml
