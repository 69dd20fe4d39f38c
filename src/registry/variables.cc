#include "registry/variables.h"
#include "common/json.h"

#include <array>
#include <cstdio>
#include <memory>
#include <utility>

namespace cortex::registry {
namespace {

using Json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------
// Parsed form of a template: literal text and references; a default is itself a template.

struct PathElem {
  std::string key;  // when !is_index
  size_t index = 0;
  bool is_index = false;
};

struct Ref;

struct Part {
  std::string literal;       // when ref is null
  std::unique_ptr<Ref> ref;  // a reference
};

struct Template {
  std::vector<Part> parts;
};

struct Ref {
  Reference::Kind kind = Reference::Kind::kVariable;
  std::string name;
  // kTrigger: every element after the root (the first is the parameter, `name`).
  // kStep: the elements after the step name.
  std::vector<PathElem> path;
  std::optional<Template> default_template;
  std::string_view default_text;
  bool default_if_empty = false;
  size_t offset = 0;
  size_t length = 0;
};

bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsIdentChar(char c) { return IsUpper(c) || IsDigit(c) || (c >= 'a' && c <= 'z') || c == '_'; }
bool IsKeyChar(char c) { return IsIdentChar(c) || c == '-'; }

// [A-Z_][A-Z0-9_]*
bool IsVariableName(std::string_view s) {
  if (s.empty() || IsDigit(s[0])) return false;
  for (char c : s) {
    if (!IsUpper(c) && !IsDigit(c) && c != '_') return false;
  }
  return true;
}

std::string PathText(const std::vector<PathElem>& path, size_t from) {
  std::string out;
  for (size_t i = from; i < path.size(); ++i) {
    if (path[i].is_index) {
      out += '[';
      out += std::to_string(path[i].index);
      out += ']';
    } else {
      if (!out.empty()) out += '.';
      out += path[i].key;
    }
  }
  return out;
}

Status SyntaxError(size_t offset, std::string_view problem) {
  std::string m = "offset ";
  m += std::to_string(offset);
  m += ": ";
  m += problem;
  return InvalidArgumentError(std::move(m));
}

// `.key`, `[index]` repeated.
Status ParsePath(std::string_view rest, size_t start, std::string_view whole,
                 std::vector<PathElem>* path) {
  auto bad = [&](std::string_view problem) {
    std::string m(problem);
    m += " in '";
    m += whole;
    m += "'";
    return SyntaxError(start, m);
  };
  size_t i = 0;
  while (i < rest.size()) {
    if (rest[i] == '.') {
      const size_t b = ++i;
      while (i < rest.size() && IsKeyChar(rest[i])) ++i;
      if (i == b) return bad("empty or invalid path segment");
      path->push_back(PathElem{std::string(rest.substr(b, i - b)), 0, false});
    } else if (rest[i] == '[') {
      const size_t b = ++i;
      size_t index = 0;
      while (i < rest.size() && IsDigit(rest[i]) && i - b < 9) {
        index = index * 10 + static_cast<size_t>(rest[i] - '0');
        ++i;
      }
      if (i == b || i >= rest.size() || rest[i] != ']') {
        return bad("invalid array index (expected '[<0-999999999>]')");
      }
      ++i;
      path->push_back(PathElem{{}, index, true});
    } else {
      std::string problem = "unexpected character '";
      problem += rest[i];
      problem += "'";
      return bad(problem);
    }
  }
  return Status::Ok();
}

// A recursive-descent scanner over the whole text; offsets are absolute byte offsets.
class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Status Parse(Template* out) { return ParseSequence(0, std::string::npos, out); }

 private:
  // Parses literal text and references until the end of the text or, inside a default
  // (`open` = offset of the enclosing `${`), until the '}' that closes it (left at pos_).
  Status ParseSequence(int depth, size_t open, Template* out) {
    const bool in_default = open != std::string::npos;
    std::string literal;
    auto flush = [&] {
      if (!literal.empty()) out->parts.push_back(Part{std::move(literal), nullptr});
      literal.clear();
    };
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (in_default && c == '}') {
        flush();
        return Status::Ok();
      }
      if (c != '$') {
        size_t next = text_.find_first_of(in_default ? "$}" : "$", pos_);
        if (next == std::string_view::npos) next = text_.size();
        literal.append(text_.substr(pos_, next - pos_));
        pos_ = next;
        continue;
      }
      const char n = pos_ + 1 < text_.size() ? text_[pos_ + 1] : '\0';
      if (n == '$') {  // `$$` escapes a '$'
        literal += '$';
        pos_ += 2;
      } else if (n == '{' || n == '(') {
        flush();
        auto ref = std::make_unique<Ref>();
        CORTEX_RETURN_IF_ERROR(n == '{' ? ParseBraced(depth, ref.get()) : ParseParen(ref.get()));
        out->parts.push_back(Part{{}, std::move(ref)});
      } else if (IsIdentChar(n)) {
        // `$NAME` takes the whole identifier; only an all-uppercase one is a variable, so
        // `$sum`, `$Path` and `$5` pass through verbatim.
        size_t end = pos_ + 1;
        while (end < text_.size() && IsIdentChar(text_[end])) ++end;
        std::string_view name = text_.substr(pos_ + 1, end - pos_ - 1);
        if (IsVariableName(name)) {
          flush();
          auto ref = std::make_unique<Ref>();
          ref->name = std::string(name);
          ref->offset = pos_;
          ref->length = end - pos_;
          out->parts.push_back(Part{{}, std::move(ref)});
        } else {
          literal.append(text_.substr(pos_, end - pos_));
        }
        pos_ = end;
      } else {  // a lone '$'
        literal += '$';
        ++pos_;
      }
    }
    if (in_default) return SyntaxError(open, "unterminated '${' (missing '}')");
    flush();
    return Status::Ok();
  }

  // `${NAME}`, `${NAME:-default}`, `${NAME-default}`; pos_ is on the '$'.
  Status ParseBraced(int depth, Ref* ref) {
    const size_t start = pos_;
    ref->offset = start;
    pos_ += 2;
    const size_t name_begin = pos_;
    while (pos_ < text_.size() && IsIdentChar(text_[pos_])) ++pos_;
    std::string_view name = text_.substr(name_begin, pos_ - name_begin);
    if (pos_ >= text_.size()) return SyntaxError(start, "unterminated '${' (missing '}')");
    const char c = text_[pos_];
    const bool operator_next = c == '}' || c == ':' || c == '-';
    if (name.empty() && operator_next) return SyntaxError(start, "empty variable name in '${'");
    if (!IsVariableName(name) || !operator_next) {
      const size_t close = text_.find('}', pos_);
      if (close == std::string_view::npos) {
        return SyntaxError(start, "unterminated '${' (missing '}')");
      }
      std::string m = "invalid variable reference '";
      m += text_.substr(start, close + 1 - start);
      m += "': names are [A-Z_][A-Z0-9_]* (write '$${' for a literal '${')";
      return SyntaxError(start, m);
    }
    ref->name = std::string(name);
    if (c == '}') {
      ++pos_;
      ref->length = pos_ - start;
      return Status::Ok();
    }
    if (c == ':') {
      if (pos_ + 1 >= text_.size() || text_[pos_ + 1] != '-') {
        std::string m = "unsupported operator in '${";
        m += name;
        m += ":...}' (supported: '${NAME:-default}' and '${NAME-default}')";
        return SyntaxError(start, m);
      }
      ref->default_if_empty = true;
      pos_ += 2;
    } else {
      ++pos_;
    }
    if (depth + 1 > kMaxDefaultDepth) {
      return SyntaxError(
          start, "defaults nested more than " + std::to_string(kMaxDefaultDepth) + " levels deep");
    }
    const size_t default_begin = pos_;
    Template dflt;
    CORTEX_RETURN_IF_ERROR(ParseSequence(depth + 1, start, &dflt));
    ref->default_text = text_.substr(default_begin, pos_ - default_begin);
    ref->default_template = std::move(dflt);
    ++pos_;  // the closing '}'
    ref->length = pos_ - start;
    return Status::Ok();
  }

  // `$(VAR)`, `$(trigger...)`, `$(input...)`, `$(steps.<step>...)`; pos_ is on the '$'.
  Status ParseParen(Ref* ref) {
    const size_t start = pos_;
    const size_t close = text_.find(')', start + 2);
    if (close == std::string_view::npos) {
      return SyntaxError(start, "unterminated '$(' (missing ')')");
    }
    pos_ = close + 1;
    ref->offset = start;
    ref->length = pos_ - start;
    const std::string_view whole = text_.substr(start, pos_ - start);

    std::string_view body = text_.substr(start + 2, close - start - 2);
    while (!body.empty() && (body.front() == ' ' || body.front() == '\t')) body.remove_prefix(1);
    while (!body.empty() && (body.back() == ' ' || body.back() == '\t')) body.remove_suffix(1);
    if (body.empty()) return SyntaxError(start, "empty reference '$()'");

    size_t i = 0;
    while (i < body.size() && IsIdentChar(body[i])) ++i;
    const std::string_view root = body.substr(0, i);
    const std::string_view rest = body.substr(i);
    if (root == "trigger" || root == "input") {
      ref->kind = Reference::Kind::kTrigger;
      CORTEX_RETURN_IF_ERROR(ParsePath(rest, start, whole, &ref->path));
      if (!ref->path.empty() && !ref->path[0].is_index) ref->name = ref->path[0].key;
      return Status::Ok();
    }
    if (root == "steps") {
      ref->kind = Reference::Kind::kStep;
      size_t j = 1;
      while (j < rest.size() && IsKeyChar(rest[j])) ++j;
      if (rest.empty() || rest[0] != '.' || j == 1) {
        std::string m = "expected a step name in '";
        m += whole;
        m += "' ('$(steps.<step>)' or '$(steps.<step>.<path>)')";
        return SyntaxError(start, m);
      }
      ref->name = std::string(rest.substr(1, j - 1));
      return ParsePath(rest.substr(j), start, whole, &ref->path);
    }
    if (IsVariableName(root)) {
      if (!rest.empty()) {
        std::string m = "a variable has no fields: '";
        m += whole;
        m += "' (did you mean '$(steps.<step>.<path>)' or '$(trigger.<field>)'?)";
        return SyntaxError(start, m);
      }
      ref->kind = Reference::Kind::kVariable;
      ref->name = std::string(root);
      return Status::Ok();
    }
    std::string m = "unknown reference root '";
    m += root.empty() ? body : root;
    m += "' (expected trigger, input, steps or a VARIABLE)";
    return SyntaxError(start, m);
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Built-in variables.

enum class Source {
  kClock,        // computed from VariableContext::now
  kContext,      // VariableContext::variables, else the fallback (never the environment)
  kEnvironment,  // VariableContext::variables, else env, else the fallback
};

struct Builtin {
  std::string_view name;
  Source source;
  const char* fallback;  // nullptr: none (unresolved when not supplied)
};

constexpr std::array<Builtin, 26> kBuiltins = {{
    {"TIMESTAMP", Source::kClock, nullptr},
    {"TIMESTAMP_UNIX", Source::kClock, nullptr},
    {"DATE", Source::kClock, nullptr},
    {"TIME", Source::kClock, nullptr},
    {"DATETIME", Source::kClock, nullptr},
    {"AGENT_ID", Source::kContext, "unknown"},
    {"AGENT_NAME", Source::kContext, "unknown"},
    {"AGENT_VERSION", Source::kContext, "1.0"},
    {"SESSION_ID", Source::kContext, "unknown"},
    {"USER_ID", Source::kContext, "default"},
    {"USER_INTENT", Source::kContext, ""},
    {"ITERATION_COUNT", Source::kContext, "0"},
    {"LAST_RESULT", Source::kContext, ""},
    {"CONFIDENCE", Source::kContext, "0.0"},
    {"ERROR_COUNT", Source::kContext, "0"},
    {"TASK_ID", Source::kContext, "unknown"},
    {"TASK_STATUS", Source::kContext, "pending"},
    {"TASK_PRIORITY", Source::kContext, "normal"},
    {"WORKFLOW_ID", Source::kContext, nullptr},
    {"RUN_ID", Source::kContext, nullptr},
    {"STEP_NAME", Source::kContext, nullptr},
    {"EXECUTION_ID", Source::kContext, nullptr},
    {"HOME", Source::kEnvironment, "/home/cortex"},
    {"USER", Source::kEnvironment, "cortex"},
    {"PWD", Source::kEnvironment, "/"},
    {"HOSTNAME", Source::kEnvironment, "cortex-prime"},
}};

const Builtin* FindBuiltin(std::string_view name) {
  for (const Builtin& b : kBuiltins) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

std::string ClockValue(std::string_view name, std::chrono::system_clock::time_point now) {
  using std::chrono::days;
  using std::chrono::seconds;
  const auto secs = std::chrono::floor<seconds>(now);
  if (name == "TIMESTAMP_UNIX") return std::to_string(secs.time_since_epoch().count());
  const auto day = std::chrono::floor<days>(secs);
  const std::chrono::year_month_day ymd{day};
  const std::chrono::hh_mm_ss<seconds> hms{secs - day};
  const int y = static_cast<int>(ymd.year());
  const unsigned mo = static_cast<unsigned>(ymd.month());
  const unsigned d = static_cast<unsigned>(ymd.day());
  const int h = static_cast<int>(hms.hours().count());
  const int mi = static_cast<int>(hms.minutes().count());
  const int s = static_cast<int>(hms.seconds().count());
  char buf[64];
  if (name == "DATE") {
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", y, mo, d);
  } else if (name == "TIME") {
    std::snprintf(buf, sizeof buf, "%02d:%02d:%02d", h, mi, s);
  } else if (name == "DATETIME") {
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02u %02d:%02d:%02d", y, mo, d, h, mi, s);
  } else {  // TIMESTAMP
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", y, mo, d, h, mi, s);
  }
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

std::string JsonText(const Json& v) {
  if (v.is_string()) return v.get_ref<const std::string&>();
  return DumpJson(v);
}

const Json* Walk(const Json* node, const std::vector<PathElem>& path, size_t from) {
  for (size_t i = from; node != nullptr && i < path.size(); ++i) {
    const PathElem& e = path[i];
    if (node->is_object() && !e.is_index) {
      auto it = node->find(e.key);
      node = it == node->end() ? nullptr : &*it;
      continue;
    }
    size_t index = e.index;
    if (!e.is_index) {  // `items.0` on an array means `items[0]`
      if (!node->is_array() || e.key.empty() || e.key.size() > 9) return nullptr;
      index = 0;
      for (char c : e.key) {
        if (!IsDigit(c)) return nullptr;
        index = index * 10 + static_cast<size_t>(c - '0');
      }
    }
    node = node->is_array() && index < node->size() ? &(*node)[index] : nullptr;
  }
  return node;
}

class Evaluator {
 public:
  Evaluator(const VariableContext& ctx, std::string_view text, std::vector<std::string>* unresolved)
      : ctx_(ctx), text_(text), unresolved_(unresolved) {}

  // The whole-value rule: a template that is one reference keeps the referenced value's type.
  Json Eval(const Template& t) {
    if (t.parts.size() == 1 && t.parts[0].ref != nullptr) {
      const Ref& r = *t.parts[0].ref;
      if (std::optional<Json> v = EvalRef(r)) return std::move(*v);
      return Json(std::string(NoteUnresolved(r)));
    }
    std::string out;
    for (const Part& p : t.parts) {
      if (p.ref == nullptr) {
        out += p.literal;
      } else if (std::optional<Json> v = EvalRef(*p.ref)) {
        out += JsonText(*v);
      } else {
        out += NoteUnresolved(*p.ref);
      }
    }
    return Json(std::move(out));
  }

 private:
  struct Lookup {
    std::string value;
    bool fallback = false;  // a built-in's fallback: counts as unset when a default is given
  };

  std::optional<Lookup> LookupVariable(std::string_view name) const {
    if (auto it = ctx_.variables.find(name); it != ctx_.variables.end()) {
      return Lookup{it->second, false};
    }
    const Builtin* b = FindBuiltin(name);
    if (b != nullptr && b->source == Source::kClock) return Lookup{ClockValue(name, ctx_.now)};
    if ((b == nullptr || b->source == Source::kEnvironment) && ctx_.env) {
      if (std::optional<std::string> v = ctx_.env(name)) return Lookup{std::move(*v)};
    }
    if (b != nullptr && b->fallback != nullptr) return Lookup{b->fallback, true};
    return std::nullopt;
  }

  std::optional<Json> EvalRef(const Ref& r) {
    switch (r.kind) {
      case Reference::Kind::kVariable: {
        std::optional<Lookup> v = LookupVariable(r.name);
        const bool use_default = r.default_template.has_value() &&
                                 (!v || v->fallback || (r.default_if_empty && v->value.empty()));
        if (!use_default) {
          if (!v) return std::nullopt;
          return Json(std::move(v->value));
        }
        // A default that does not fully resolve leaves the whole `${...}` unresolved.
        std::vector<std::string> inner;
        Evaluator sub(ctx_, text_, &inner);
        Json d = sub.Eval(*r.default_template);
        if (!inner.empty()) return std::nullopt;
        return d;
      }
      case Reference::Kind::kTrigger: {
        if (ctx_.trigger == nullptr) return std::nullopt;
        const Json* v = Walk(ctx_.trigger, r.path, 0);
        if (v == nullptr) return std::nullopt;
        return *v;
      }
      case Reference::Kind::kStep: {
        if (!ctx_.step) return std::nullopt;
        std::optional<StepOutcome> o = ctx_.step(r.name);
        if (!o) return std::nullopt;
        size_t from = 0;
        if (!r.path.empty() && !r.path[0].is_index) {
          if (r.path[0].key == "status") {
            if (r.path.size() != 1) return std::nullopt;
            return Json(std::string(o->status));
          }
          if (r.path[0].key == "output") from = 1;
        }
        const Json* v = Walk(o->output, r.path, from);
        if (v == nullptr) return std::nullopt;
        return *v;
      }
    }
    return std::nullopt;
  }

  std::string_view NoteUnresolved(const Ref& r) {
    std::string_view source = text_.substr(r.offset, r.length);
    for (const std::string& u : *unresolved_) {
      if (u == source) return source;
    }
    unresolved_->emplace_back(source);
    return source;
  }

  const VariableContext& ctx_;
  std::string_view text_;
  std::vector<std::string>* unresolved_;
};

void Collect(const Template& t, std::vector<Reference>* out) {
  for (const Part& p : t.parts) {
    if (p.ref == nullptr) continue;
    const Ref& r = *p.ref;
    Reference ref;
    ref.kind = r.kind;
    ref.name = r.name;
    ref.path = PathText(r.path, r.kind == Reference::Kind::kTrigger && !r.name.empty() ? 1 : 0);
    if (r.default_template) ref.default_value = std::string(r.default_text);
    ref.default_if_empty = r.default_if_empty;
    ref.offset = r.offset;
    ref.length = r.length;
    out->push_back(std::move(ref));
    if (r.default_template) Collect(*r.default_template, out);
  }
}

void AppendPointerToken(std::string_view token, std::string* pointer) {
  *pointer += '/';
  for (char c : token) {
    if (c == '~') {
      *pointer += "~0";
    } else if (c == '/') {
      *pointer += "~1";
    } else {
      *pointer += c;
    }
  }
}

Status ResolveInPlace(Json& node, const VariableContext& ctx, int depth, std::string* pointer,
                      std::vector<std::string>* unresolved) {
  if (node.is_string()) {
    const std::string& text = node.get_ref<const std::string&>();
    if (text.find('$') == std::string::npos) return Status::Ok();
    Template t;
    Status st = Parser(text).Parse(&t);
    if (!st.ok()) return pointer->empty() ? st : st.WithPrefix(*pointer);
    Json value = Evaluator(ctx, text, unresolved).Eval(t);
    node = std::move(value);
    return Status::Ok();
  }
  if (!node.is_object() && !node.is_array()) return Status::Ok();
  if (depth >= kMaxJsonDepth) {
    return InvalidArgumentError((pointer->empty() ? std::string("value") : *pointer) +
                                ": nested more than " + std::to_string(kMaxJsonDepth) +
                                " levels deep");
  }
  const size_t len = pointer->size();
  size_t index = 0;
  for (auto it = node.begin(); it != node.end(); ++it, ++index) {
    if (node.is_object()) {
      AppendPointerToken(it.key(), pointer);
    } else {
      AppendPointerToken(std::to_string(index), pointer);
    }
    Status st = ResolveInPlace(it.value(), ctx, depth + 1, pointer, unresolved);
    pointer->resize(len);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<Reference>> ParseTemplate(std::string_view text) {
  std::vector<Reference> refs;
  if (text.find('$') == std::string_view::npos) return refs;
  Template t;
  CORTEX_RETURN_IF_ERROR(Parser(text).Parse(&t));
  Collect(t, &refs);
  return refs;
}

Result<Resolution> ResolveString(std::string_view text, const VariableContext& ctx) {
  Resolution out;
  if (text.find('$') == std::string_view::npos) {
    out.value = std::string(text);
    return out;
  }
  Template t;
  CORTEX_RETURN_IF_ERROR(Parser(text).Parse(&t));
  out.value = Evaluator(ctx, text, &out.unresolved).Eval(t);
  return out;
}

Result<Resolution> ResolveJson(const nlohmann::ordered_json& value, const VariableContext& ctx) {
  Resolution out;
  out.value = value;
  std::string pointer;
  CORTEX_RETURN_IF_ERROR(ResolveInPlace(out.value, ctx, 0, &pointer, &out.unresolved));
  return out;
}

EnvLookup AllowListedEnv(EnvLookup env, std::vector<std::string> allow) {
  if (!env) return env;
  return [env = std::move(env),
          allow = std::move(allow)](std::string_view name) -> std::optional<std::string> {
    for (const std::string& a : allow) {
      bool match = a.ends_with('*') ? name.starts_with(std::string_view(a).substr(0, a.size() - 1))
                                    : name == a;
      if (match) return env(name);
    }
    return std::nullopt;
  };
}

const Json* JsonAtPath(const Json& root, std::string_view path) {
  if (path.starts_with("$")) path.remove_prefix(1);
  std::string rest(path);
  if (!rest.empty() && rest[0] != '.' && rest[0] != '[') rest.insert(0, ".");
  std::vector<PathElem> elems;
  if (!ParsePath(rest, 0, rest, &elems).ok()) return nullptr;
  return Walk(&root, elems, 0);
}

}  // namespace cortex::registry
