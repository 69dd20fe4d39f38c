#include "registry/expression.h"
#include "common/json.h"

#include <algorithm>
#include <charconv>
#include <compare>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

namespace cortex::registry {

using Json = nlohmann::ordered_json;

enum class CompareOp { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };

// The parsed form. Nodes live in one flat vector and refer to their children by index, so
// destroying a large expression never recurses.
struct Expression {
  struct Node {
    enum class Kind {
      kLiteral,    // `literal`
      kString,     // a string literal containing '$': `text` is its (unescaped) template
      kReference,  // `text` is the template to resolve, `source` the reference as written
      kList,       // children: the elements
      kNot,        // children: {operand}
      kNegate,     // children: {operand}
      kAnd,        // children: two or more operands
      kOr,         // children: two or more operands
      kCompare,    // children: {lhs, rhs}; `op`
      kLen,        // children: {argument}
    };
    Kind kind = Kind::kLiteral;
    CompareOp op = CompareOp::kEq;
    size_t offset = 0;  // of the node's token (operator, keyword, literal) for error messages
    Json literal;
    std::string text;
    std::string source;
    bool status_ref = false;  // reads a step's `.status`: eligible for the status aliases
    std::vector<uint32_t> children;
  };

  std::vector<Node> nodes;
  uint32_t root = 0;
  std::vector<Reference> references;  // in source order
};

namespace {

using Node = Expression::Node;
using Kind = Node::Kind;

Status SyntaxError(size_t offset, std::string_view problem) {
  std::string m = "offset ";
  m += std::to_string(offset);
  m += ": ";
  m += problem;
  return InvalidArgumentError(std::move(m));
}

// Re-targets an "offset K: ..." error from the template parser (K relative to a sub-string) to
// an offset in the expression text.
template <typename MapOffset>
Status RebaseError(const Status& st, MapOffset map) {
  std::string_view m = st.message();
  constexpr std::string_view kPrefix = "offset ";
  size_t k = 0;
  if (m.substr(0, kPrefix.size()) == kPrefix) {
    const char* begin = m.data() + kPrefix.size();
    auto [end, ec] = std::from_chars(begin, m.data() + m.size(), k);
    std::string_view rest = m.substr(static_cast<size_t>(end - m.data()));
    if (ec == std::errc() && rest.substr(0, 2) == ": ") return SyntaxError(map(k), rest.substr(2));
  }
  return SyntaxError(map(0), m);
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsWordStart(char c) { return (c >= 'a' && c <= 'z') || IsUpper(c) || c == '_'; }
bool IsWordChar(char c) { return IsWordStart(c) || IsDigit(c); }
bool IsKeyChar(char c) { return IsWordChar(c) || c == '-'; }  // as in template paths
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool IsVariableName(std::string_view s) {
  if (s.empty() || IsDigit(s[0])) return false;
  for (char c : s) {
    if (!IsUpper(c) && !IsDigit(c) && c != '_') return false;
  }
  return true;
}

// A number in the literal syntax (`-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`, nothing else), or
// nullopt. Integers that do not fit 64 bits, and finite values beyond, become doubles; values
// beyond double's range are not numbers.
std::optional<Json> ParseNumber(std::string_view s) {
  size_t i = 0;
  auto digits = [&] {
    const size_t b = i;
    while (i < s.size() && IsDigit(s[i])) ++i;
    return i > b;
  };
  if (i < s.size() && s[i] == '-') ++i;
  if (!digits()) return std::nullopt;
  bool integral = true;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digits()) return std::nullopt;
    integral = false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return std::nullopt;
    integral = false;
  }
  if (i != s.size()) return std::nullopt;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (integral) {
    int64_t v = 0;
    if (auto r = std::from_chars(b, e, v); r.ec == std::errc() && r.ptr == e) return Json(v);
    uint64_t u = 0;
    if (auto r = std::from_chars(b, e, u); r.ec == std::errc() && r.ptr == e) return Json(u);
  }
  double d = 0;
  if (auto r = std::from_chars(b, e, d); r.ec == std::errc() && r.ptr == e) return Json(d);
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Lexer.

struct Token {
  enum class Type {
    kEnd,
    kNumber,     // `number`
    kString,     // `content`, `source_map`
    kReference,  // `template_text`, `refs`
    kWord,       // keywords, literals, function names
    kSymbol,     // == != < <= > >= && || ! ( ) [ ] , -
  };
  Type type = Type::kEnd;
  size_t offset = 0;
  std::string_view text;  // as written
  Json number;
  std::string content;
  // For each byte of `content`, and one past its end, the offset of the source byte it comes
  // from (an escape's byte maps to its backslash; the end maps to the closing quote).
  std::vector<size_t> source_map;
  std::string template_text;
  std::vector<Reference> refs;  // offsets in the expression text

  bool Is(Type t, std::string_view s) const { return type == t && text == s; }
  bool IsSymbol(std::string_view s) const { return Is(Type::kSymbol, s); }
  bool IsWord(std::string_view s) const { return Is(Type::kWord, s); }
};

class Lexer {
 public:
  explicit Lexer(std::string_view text) : text_(text) {}

  // Reads the token at the current position into `*tok`.
  Status Next(Token* tok) {
    while (pos_ < text_.size() && IsSpace(text_[pos_])) ++pos_;
    *tok = Token();
    tok->offset = pos_;
    if (pos_ >= text_.size()) return Status::Ok();
    const char c = text_[pos_];
    if (IsDigit(c)) return LexNumber(tok);
    if (c == '\'' || c == '"') return LexString(tok);
    if (c == '$') return LexDollarReference(tok);
    if (IsWordStart(c)) return LexWord(tok);
    return LexSymbol(tok);
  }

  // The offset of the next non-blank byte (or the end).
  size_t NextNonBlank() const {
    size_t i = pos_;
    while (i < text_.size() && IsSpace(text_[i])) ++i;
    return i;
  }

 private:
  Status LexNumber(Token* tok) {
    const size_t start = pos_;
    size_t i = pos_;
    // Take the whole run that could belong to the number, so `1.2.3` or `12ab` is one error.
    while (i < text_.size()) {
      const char c = text_[i];
      const bool sign_in_exponent =
          (c == '+' || c == '-') && (text_[i - 1] == 'e' || text_[i - 1] == 'E');
      if (!IsWordChar(c) && c != '.' && !sign_in_exponent) break;
      ++i;
    }
    const std::string_view s = text_.substr(start, i - start);
    std::optional<Json> v = ParseNumber(s);
    if (!v) return SyntaxError(start, "invalid number '" + std::string(s) + "'");
    tok->type = Token::Type::kNumber;
    tok->text = s;
    tok->number = std::move(*v);
    pos_ = i;
    return Status::Ok();
  }

  Status LexString(Token* tok) {
    const size_t start = pos_;
    const char quote = text_[start];
    size_t i = start + 1;
    while (i < text_.size() && text_[i] != quote) {
      char c = text_[i];
      if (c == '\\') {
        if (i + 1 >= text_.size()) {
          i = text_.size();  // a backslash cannot escape the end of the text
          break;
        }
        switch (text_[i + 1]) {
          case '\\':
            c = '\\';
            break;
          case '\'':
            c = '\'';
            break;
          case '"':
            c = '"';
            break;
          case 'n':
            c = '\n';
            break;
          case 't':
            c = '\t';
            break;
          case 'r':
            c = '\r';
            break;
          default: {
            std::string m = "unknown escape '\\";
            m += text_[i + 1];
            m += "' in a string (supported: \\\\ \\' \\\" \\n \\t \\r)";
            return SyntaxError(i, m);
          }
        }
        tok->content += c;
        tok->source_map.push_back(i);
        i += 2;
      } else {
        tok->content += c;
        tok->source_map.push_back(i);
        ++i;
      }
    }
    if (i >= text_.size()) {
      std::string m = "unterminated string (missing closing ";
      m += quote;
      m += ')';
      return SyntaxError(start, m);
    }
    tok->source_map.push_back(i);
    tok->type = Token::Type::kString;
    pos_ = i + 1;
    tok->text = text_.substr(start, pos_ - start);
    return Status::Ok();
  }

  // `$(...)`, `${...}`, `$NAME`: the extent is found here, the syntax checked by ParseTemplate.
  Status LexDollarReference(Token* tok) {
    const size_t start = pos_;
    const char n = start + 1 < text_.size() ? text_[start + 1] : '\0';
    size_t end = std::string_view::npos;
    if (n == '(') {
      const size_t close = text_.find(')', start + 2);
      if (close == std::string_view::npos) {
        return SyntaxError(start, "unterminated '$(' (missing ')')");
      }
      end = close + 1;
    } else if (n == '{') {
      // The '}' that closes this `${`: nested `${` open a level, `$(...)` and `$$` are skipped
      // (as the template parser does for defaults).
      int depth = 1;
      for (size_t i = start + 2; i < text_.size();) {
        if (text_[i] == '$' && i + 1 < text_.size()) {
          const char m = text_[i + 1];
          if (m == '$') {
            i += 2;
            continue;
          }
          if (m == '{') {
            ++depth;
            i += 2;
            continue;
          }
          if (m == '(') {
            const size_t close = text_.find(')', i + 2);
            if (close == std::string_view::npos) break;
            i = close + 1;
            continue;
          }
        }
        if (text_[i] == '}' && --depth == 0) {
          end = i + 1;
          break;
        }
        ++i;
      }
      if (end == std::string_view::npos) {
        return SyntaxError(start, "unterminated '${' (missing '}')");
      }
    } else if (IsWordChar(n)) {
      end = start + 1;
      while (end < text_.size() && IsWordChar(text_[end])) ++end;
      const std::string_view name = text_.substr(start + 1, end - start - 1);
      if (!IsVariableName(name)) {
        std::string m = "invalid variable reference '$";
        m += name;
        m += "' (variable names are [A-Z_][A-Z0-9_]*)";
        return SyntaxError(start, m);
      }
    } else {
      return SyntaxError(start, "expected '(', '{' or a variable name after '$'");
    }
    const std::string_view slice = text_.substr(start, end - start);
    Result<std::vector<Reference>> refs = ParseTemplate(slice);
    if (!refs.ok()) {
      return RebaseError(refs.status(), [start](size_t k) { return start + k; });
    }
    if (refs->empty() || (*refs)[0].offset != 0 || (*refs)[0].length != slice.size()) {
      return SyntaxError(start, "invalid reference '" + std::string(slice) + "'");
    }
    for (Reference& r : *refs) r.offset += start;
    tok->type = Token::Type::kReference;
    tok->text = slice;
    tok->template_text = std::string(slice);
    tok->refs = std::move(*refs);
    pos_ = end;
    return Status::Ok();
  }

  // A keyword/name, or a bare reference `steps.s.path`, `trigger.x`, `input.x`.
  Status LexWord(Token* tok) {
    const size_t start = pos_;
    size_t i = start;
    while (i < text_.size() && IsWordChar(text_[i])) ++i;
    const std::string_view word = text_.substr(start, i - start);
    if (word != "steps" && word != "trigger" && word != "input") {
      tok->type = Token::Type::kWord;
      tok->text = word;
      pos_ = i;
      return Status::Ok();
    }
    // The path: `.key` and `[index]` with no blanks in between.
    while (i < text_.size()) {
      if (text_[i] == '.') {
        size_t j = i + 1;
        while (j < text_.size() && IsKeyChar(text_[j])) ++j;
        if (j == i + 1) return SyntaxError(i + 1, "expected a field name after '.'");
        i = j;
      } else if (text_[i] == '[') {
        size_t j = i + 1;
        while (j < text_.size() && IsDigit(text_[j])) ++j;
        if (j == i + 1 || j >= text_.size() || text_[j] != ']') break;  // not an index
        i = j + 1;
      } else {
        break;
      }
    }
    if (word == "steps" && (i == start + 5 || text_[start + 5] != '.')) {
      return SyntaxError(start, "expected a step name after 'steps' (steps.<step>.<field>)");
    }
    const std::string_view body = text_.substr(start, i - start);
    tok->template_text = "$(" + std::string(body) + ")";
    Result<std::vector<Reference>> refs = ParseTemplate(tok->template_text);
    if (!refs.ok()) return RebaseError(refs.status(), [start](size_t) { return start; });
    if (refs->size() != 1) {
      return SyntaxError(start, "invalid reference '" + std::string(body) + "'");
    }
    (*refs)[0].offset = start;
    (*refs)[0].length = body.size();
    tok->type = Token::Type::kReference;
    tok->text = body;
    tok->refs = std::move(*refs);
    pos_ = i;
    return Status::Ok();
  }

  Status LexSymbol(Token* tok) {
    const size_t start = pos_;
    static constexpr std::string_view kTwo[] = {"==", "!=", "<=", ">=", "&&", "||"};
    for (std::string_view s : kTwo) {
      if (text_.substr(start, 2) == s) {
        tok->type = Token::Type::kSymbol;
        tok->text = text_.substr(start, 2);
        pos_ += 2;
        return Status::Ok();
      }
    }
    const char c = text_[start];
    if (std::string_view("<>!()[],-").find(c) != std::string_view::npos) {
      tok->type = Token::Type::kSymbol;
      tok->text = text_.substr(start, 1);
      ++pos_;
      return Status::Ok();
    }
    if (c == '=') return SyntaxError(start, "unexpected '=' (use '==' to compare)");
    if (c == '&') return SyntaxError(start, "unexpected '&' (use '&&' or 'and')");
    if (c == '|') return SyntaxError(start, "unexpected '|' (use '||' or 'or')");
    std::string m = "unexpected character '";
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      m += "\\x";
      m += kHex[u >> 4];
      m += kHex[u & 0xf];
    } else {
      m += c;
    }
    m += '\'';
    return SyntaxError(start, m);
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Parser: recursive descent, one function per precedence level; every construct that can nest
// (groups, lists, len(), `not`, unary `-`) counts against kMaxExpressionDepth, which bounds the
// recursion of both parsing and evaluation.

bool IsStatusReference(const Reference& r) {
  return r.kind == Reference::Kind::kStep && r.path == "status";
}

class Parser {
 public:
  Parser(std::string_view text, Expression* out) : text_(text), lexer_(text), out_(out) {}

  Status Parse() {
    if (text_.size() > kMaxExpressionLength) {
      return SyntaxError(kMaxExpressionLength, "expression longer than " +
                                                   std::to_string(kMaxExpressionLength) + " bytes");
    }
    CORTEX_RETURN_IF_ERROR(Advance());
    if (tok_.type == Token::Type::kEnd) return SyntaxError(0, "empty expression");
    uint32_t root = 0;
    CORTEX_RETURN_IF_ERROR(ParseOr(&root));
    if (tok_.IsSymbol(")"))
      return SyntaxError(tok_.offset, "unexpected ')' without a matching '('");
    if (tok_.type != Token::Type::kEnd) {
      return SyntaxError(tok_.offset,
                         "expected an operator or the end of the expression, found " + Describe());
    }
    out_->root = root;
    return Status::Ok();
  }

 private:
  // Counts one level of nesting for its lifetime.
  class DepthGuard {
   public:
    explicit DepthGuard(int* depth) : depth_(depth) { ++*depth_; }
    ~DepthGuard() { --*depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    int* depth_;
  };

  Status CheckDepth(size_t offset) const {
    if (depth_ <= kMaxExpressionDepth) return Status::Ok();
    return SyntaxError(offset, "expression nested more than " +
                                   std::to_string(kMaxExpressionDepth) + " levels deep");
  }

  Status Advance() {
    prev_ = tok_.text;
    return lexer_.Next(&tok_);
  }

  // The current token, for messages.
  std::string Describe() const {
    if (tok_.type == Token::Type::kEnd) return "the end of the expression";
    constexpr size_t kMax = 40;
    const bool quoted = tok_.type == Token::Type::kString;  // already in quotes
    std::string s = quoted ? "" : "'";
    s += tok_.text.substr(0, kMax);
    if (tok_.text.size() > kMax) s += "...";
    if (!quoted) s += "'";
    return s;
  }

  uint32_t Add(Node node) {
    out_->nodes.push_back(std::move(node));
    return static_cast<uint32_t>(out_->nodes.size() - 1);
  }

  bool IsOr() const { return tok_.IsWord("or") || tok_.IsSymbol("||"); }
  bool IsAnd() const { return tok_.IsWord("and") || tok_.IsSymbol("&&"); }
  bool IsNot() const { return tok_.IsWord("not") || tok_.IsSymbol("!"); }

  // or / and: n-ary nodes, so long chains stay flat.
  Status ParseOr(uint32_t* out) { return ParseChain(Kind::kOr, out); }
  Status ParseAnd(uint32_t* out) { return ParseChain(Kind::kAnd, out); }

  Status ParseChain(Kind kind, uint32_t* out) {
    auto operand = [&](uint32_t* o) { return kind == Kind::kOr ? ParseAnd(o) : ParseNot(o); };
    auto is_op = [&] { return kind == Kind::kOr ? IsOr() : IsAnd(); };
    uint32_t first = 0;
    CORTEX_RETURN_IF_ERROR(operand(&first));
    if (!is_op()) {
      *out = first;
      return Status::Ok();
    }
    Node node;
    node.kind = kind;
    node.offset = tok_.offset;
    node.children.push_back(first);
    while (is_op()) {
      CORTEX_RETURN_IF_ERROR(Advance());
      uint32_t next = 0;
      CORTEX_RETURN_IF_ERROR(operand(&next));
      node.children.push_back(next);
    }
    *out = Add(std::move(node));
    return Status::Ok();
  }

  Status ParseNot(uint32_t* out) {
    if (!IsNot()) return ParseComparison(out);
    DepthGuard guard(&depth_);
    CORTEX_RETURN_IF_ERROR(CheckDepth(tok_.offset));
    Node node;
    node.kind = Kind::kNot;
    node.offset = tok_.offset;
    CORTEX_RETURN_IF_ERROR(Advance());
    uint32_t child = 0;
    CORTEX_RETURN_IF_ERROR(ParseNot(&child));
    node.children.push_back(child);
    *out = Add(std::move(node));
    return Status::Ok();
  }

  // The comparison operator at the current token, if any (`not` must be followed by `in`).
  Result<std::optional<CompareOp>> ComparisonOperator() {
    if (tok_.type == Token::Type::kSymbol) {
      if (tok_.text == "==") return std::optional(CompareOp::kEq);
      if (tok_.text == "!=") return std::optional(CompareOp::kNe);
      if (tok_.text == "<") return std::optional(CompareOp::kLt);
      if (tok_.text == "<=") return std::optional(CompareOp::kLe);
      if (tok_.text == ">") return std::optional(CompareOp::kGt);
      if (tok_.text == ">=") return std::optional(CompareOp::kGe);
    } else if (tok_.IsWord("in")) {
      return std::optional(CompareOp::kIn);
    } else if (tok_.IsWord("not")) {
      CORTEX_RETURN_IF_ERROR(Advance());
      if (!tok_.IsWord("in")) {
        return SyntaxError(tok_.offset, "expected 'in' after 'not', found " + Describe());
      }
      return std::optional(CompareOp::kNotIn);
    }
    return std::optional<CompareOp>();
  }

  Status ParseComparison(uint32_t* out) {
    uint32_t lhs = 0;
    CORTEX_RETURN_IF_ERROR(ParseUnary(&lhs));
    const size_t op_offset = tok_.offset;
    CORTEX_ASSIGN_OR_RETURN(std::optional<CompareOp> op, ComparisonOperator());
    if (!op) {
      *out = lhs;
      return Status::Ok();
    }
    CORTEX_RETURN_IF_ERROR(Advance());
    uint32_t rhs = 0;
    CORTEX_RETURN_IF_ERROR(ParseUnary(&rhs));
    const size_t next_offset = tok_.offset;
    CORTEX_ASSIGN_OR_RETURN(std::optional<CompareOp> next, ComparisonOperator());
    if (next) {
      return SyntaxError(next_offset,
                         "comparisons cannot be chained (write 'a < b and b < c', or use "
                         "parentheses)");
    }
    Node node;
    node.kind = Kind::kCompare;
    node.op = *op;
    node.offset = op_offset;
    node.children = {lhs, rhs};
    *out = Add(std::move(node));
    return Status::Ok();
  }

  Status ParseUnary(uint32_t* out) {
    if (!tok_.IsSymbol("-")) return ParsePrimary(out);
    DepthGuard guard(&depth_);
    CORTEX_RETURN_IF_ERROR(CheckDepth(tok_.offset));
    const size_t offset = tok_.offset;
    CORTEX_RETURN_IF_ERROR(Advance());
    uint32_t child = 0;
    CORTEX_RETURN_IF_ERROR(ParseUnary(&child));
    Node& c = out_->nodes[child];
    if (c.kind == Kind::kLiteral && c.literal.is_number()) {  // fold `-3` into a literal
      Json& v = c.literal;
      if (v.is_number_float()) {
        v = -v.get<double>();
      } else if (v.is_number_unsigned()) {
        const uint64_t u = v.get<uint64_t>();
        if (u <= uint64_t{1} << 63) {
          v = static_cast<int64_t>(0 - u);  // modular, exact for u <= 2^63
        } else {
          v = -static_cast<double>(u);
        }
      } else {
        const int64_t i = v.get<int64_t>();
        if (i == std::numeric_limits<int64_t>::min()) {
          v = -static_cast<double>(i);
        } else {
          v = -i;
        }
      }
      c.offset = offset;
      *out = child;
      return Status::Ok();
    }
    Node node;
    node.kind = Kind::kNegate;
    node.offset = offset;
    node.children.push_back(child);
    *out = Add(std::move(node));
    return Status::Ok();
  }

  Status ExpectedOperand() const {
    std::string m = "expected an operand";
    if (!prev_.empty()) {
      m += " after '";
      m += prev_;
      m += "'";
    }
    if (tok_.type != Token::Type::kEnd) m += ", found " + Describe();
    return SyntaxError(tok_.offset, m);
  }

  Status ParsePrimary(uint32_t* out) {
    Node node;
    node.offset = tok_.offset;
    switch (tok_.type) {
      case Token::Type::kEnd:
        return ExpectedOperand();
      case Token::Type::kNumber:
        node.literal = std::move(tok_.number);
        break;
      case Token::Type::kString:
        CORTEX_RETURN_IF_ERROR(StringLiteral(&node));
        break;
      case Token::Type::kReference:
        node.kind = Kind::kReference;
        node.text = std::move(tok_.template_text);
        node.source = std::string(tok_.text);
        node.status_ref = IsStatusReference(tok_.refs[0]);
        for (Reference& r : tok_.refs) out_->references.push_back(std::move(r));
        break;
      case Token::Type::kWord:
        return ParseWord(out);
      case Token::Type::kSymbol:
        if (tok_.IsSymbol("(")) return ParseGroup(out);
        if (tok_.IsSymbol("[")) return ParseList(out);
        return ExpectedOperand();
    }
    CORTEX_RETURN_IF_ERROR(Advance());
    *out = Add(std::move(node));
    return Status::Ok();
  }

  // A string literal: plain, or a template when it contains '$'.
  Status StringLiteral(Node* node) {
    if (tok_.content.find('$') == std::string::npos) {
      node->literal = std::move(tok_.content);
      return Status::Ok();
    }
    const std::vector<size_t>& map = tok_.source_map;
    Result<std::vector<Reference>> refs = ParseTemplate(tok_.content);
    if (!refs.ok()) {
      return RebaseError(refs.status(),
                         [&map](size_t k) { return map[std::min(k, map.size() - 1)]; });
    }
    // `"$(steps.s.status)"`: the whole string is one status reference.
    node->status_ref = !refs->empty() && (*refs)[0].offset == 0 &&
                       (*refs)[0].length == tok_.content.size() && IsStatusReference((*refs)[0]);
    for (Reference& r : *refs) {  // offsets in the content -> offsets in the expression
      const size_t begin = map[r.offset];
      const size_t end = map[r.offset + r.length];
      r.offset = begin;
      r.length = end - begin;
    }
    node->kind = Kind::kString;
    node->text = std::move(tok_.content);
    for (Reference& r : *refs) out_->references.push_back(std::move(r));
    return Status::Ok();
  }

  Status ParseWord(uint32_t* out) {
    const std::string_view w = tok_.text;
    Node node;
    node.offset = tok_.offset;
    if (w == "true" || w == "True") {
      node.literal = true;
    } else if (w == "false" || w == "False") {
      node.literal = false;
    } else if (w == "null" || w == "None") {
      node.literal = nullptr;
    } else if (w == "len") {
      return ParseLen(out);
    } else if (w == "and" || w == "or" || w == "not" || w == "in") {
      return ExpectedOperand();
    } else if (const size_t next = lexer_.NextNonBlank();
               next < text_.size() && text_[next] == '(') {
      return SyntaxError(tok_.offset,
                         "unknown function '" + std::string(w) + "' (the only function is len)");
    } else if (IsVariableName(w)) {
      return SyntaxError(tok_.offset, "unknown name '" + std::string(w) + "' (did you mean '$" +
                                          std::string(w) + "'?)");
    } else {
      return SyntaxError(tok_.offset,
                         "unknown name '" + std::string(w) +
                             "' (expected a literal, a reference such as $(steps.<step>.<field>), "
                             "steps.<step>.<field> or trigger.<field>, or len(...))");
    }
    CORTEX_RETURN_IF_ERROR(Advance());
    *out = Add(std::move(node));
    return Status::Ok();
  }

  Status ExpectClose(std::string_view close, std::string_view what, size_t open_offset) {
    if (tok_.IsSymbol(close)) return Advance();
    std::string m = "expected '";
    m += close;
    m += "' to close the '";
    m += what;
    m += "' at offset ";
    m += std::to_string(open_offset);
    m += ", found ";
    m += Describe();
    return SyntaxError(tok_.offset, m);
  }

  Status ParseGroup(uint32_t* out) {
    DepthGuard guard(&depth_);
    CORTEX_RETURN_IF_ERROR(CheckDepth(tok_.offset));
    const size_t open = tok_.offset;
    CORTEX_RETURN_IF_ERROR(Advance());
    CORTEX_RETURN_IF_ERROR(ParseOr(out));
    return ExpectClose(")", "(", open);
  }

  Status ParseList(uint32_t* out) {
    DepthGuard guard(&depth_);
    CORTEX_RETURN_IF_ERROR(CheckDepth(tok_.offset));
    Node node;
    node.kind = Kind::kList;
    node.offset = tok_.offset;
    CORTEX_RETURN_IF_ERROR(Advance());
    if (!tok_.IsSymbol("]")) {
      while (true) {
        uint32_t element = 0;
        CORTEX_RETURN_IF_ERROR(ParseOr(&element));
        node.children.push_back(element);
        if (!tok_.IsSymbol(",")) break;
        CORTEX_RETURN_IF_ERROR(Advance());
      }
    }
    if (!tok_.IsSymbol("]")) {
      return SyntaxError(tok_.offset, "expected ',' or ']' in the list at offset " +
                                          std::to_string(node.offset) + ", found " + Describe());
    }
    CORTEX_RETURN_IF_ERROR(Advance());
    *out = Add(std::move(node));
    return Status::Ok();
  }

  Status ParseLen(uint32_t* out) {
    DepthGuard guard(&depth_);
    CORTEX_RETURN_IF_ERROR(CheckDepth(tok_.offset));
    Node node;
    node.kind = Kind::kLen;
    node.offset = tok_.offset;
    CORTEX_RETURN_IF_ERROR(Advance());
    if (!tok_.IsSymbol("(")) {
      return SyntaxError(tok_.offset, "expected '(' after 'len', found " + Describe());
    }
    const size_t open = tok_.offset;
    CORTEX_RETURN_IF_ERROR(Advance());
    if (tok_.IsSymbol(")")) return SyntaxError(tok_.offset, "len() takes exactly one argument");
    uint32_t arg = 0;
    CORTEX_RETURN_IF_ERROR(ParseOr(&arg));
    if (tok_.IsSymbol(",")) return SyntaxError(tok_.offset, "len() takes exactly one argument");
    CORTEX_RETURN_IF_ERROR(ExpectClose(")", "len(", open));
    node.children.push_back(arg);
    *out = Add(std::move(node));
    return Status::Ok();
  }

  std::string_view text_;
  Lexer lexer_;
  Expression* out_;
  Token tok_;              // the current token
  std::string_view prev_;  // the text of the token before it (empty at the start)
  int depth_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Evaluation.

std::string_view OpName(CompareOp op) {
  switch (op) {
    case CompareOp::kEq:
      return "==";
    case CompareOp::kNe:
      return "!=";
    case CompareOp::kLt:
      return "<";
    case CompareOp::kLe:
      return "<=";
    case CompareOp::kGt:
      return ">";
    case CompareOp::kGe:
      return ">=";
    case CompareOp::kIn:
      return "in";
    case CompareOp::kNotIn:
      return "not in";
  }
  return "?";
}

template <typename A, typename B>
std::strong_ordering CompareIntegers(A a, B b) {
  if (std::cmp_less(a, b)) return std::strong_ordering::less;
  if (std::cmp_equal(a, b)) return std::strong_ordering::equal;
  return std::strong_ordering::greater;
}

// Both must be numbers. Exact for integers of any sign; doubles otherwise.
std::partial_ordering CompareNumbers(const Json& a, const Json& b) {
  if (a.is_number_float() || b.is_number_float()) return a.get<double>() <=> b.get<double>();
  const bool au = a.is_number_unsigned();
  const bool bu = b.is_number_unsigned();
  if (au && bu) return CompareIntegers(a.get<uint64_t>(), b.get<uint64_t>());
  if (au) return CompareIntegers(a.get<uint64_t>(), b.get<int64_t>());
  if (bu) return CompareIntegers(a.get<int64_t>(), b.get<uint64_t>());
  return CompareIntegers(a.get<int64_t>(), b.get<int64_t>());
}

// Both sides as numbers when both are numbers, or one is and the other is a numeric string.
std::optional<std::pair<Json, Json>> NumericPair(const Json& a, const Json& b) {
  auto as_number = [](const Json& v) -> std::optional<Json> {
    if (v.is_number()) return v;
    if (v.is_string()) return ParseNumber(v.get_ref<const std::string&>());
    return std::nullopt;
  };
  if (!a.is_number() && !b.is_number()) return std::nullopt;
  std::optional<Json> x = as_number(a);
  std::optional<Json> y = as_number(b);
  if (!x || !y) return std::nullopt;
  return std::pair(std::move(*x), std::move(*y));
}

bool Equal(const Json& a, const Json& b) {
  if (auto p = NumericPair(a, b)) return CompareNumbers(p->first, p->second) == 0;
  if (a.is_number() || b.is_number() || a.type() != b.type()) return false;
  return a == b;
}

Json NormalizeStatus(Json v) {
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (s == "success" || s == "completed") return "succeeded";
    if (s == "failure" || s == "error") return "failed";
  }
  return v;
}

size_t Utf8Length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

class Evaluator {
 public:
  Evaluator(const Expression& expr, const VariableContext& ctx,
            std::vector<std::string>* unresolved)
      : expr_(expr), ctx_(ctx), unresolved_(unresolved) {}

  Result<Json> Eval(uint32_t index) {
    const Node& n = expr_.nodes[index];
    switch (n.kind) {
      case Kind::kLiteral:
        return n.literal;
      case Kind::kString: {
        CORTEX_ASSIGN_OR_RETURN(Resolution r, ResolveString(n.text, ctx_));
        for (std::string& u : r.unresolved) Note(u);
        if (r.value.is_string()) return std::move(r.value);
        return Json(DumpJson(r.value));
      }
      case Kind::kReference: {
        CORTEX_ASSIGN_OR_RETURN(Resolution r, ResolveString(n.text, ctx_));
        if (r.unresolved.empty()) return std::move(r.value);
        Note(n.source);
        return Json(nullptr);
      }
      case Kind::kList: {
        Json list = Json::array();
        for (uint32_t c : n.children) {
          CORTEX_ASSIGN_OR_RETURN(Json v, Eval(c));
          list.push_back(std::move(v));
        }
        return list;
      }
      case Kind::kNot: {
        CORTEX_ASSIGN_OR_RETURN(Json v, Eval(n.children[0]));
        return Json(!Truthy(v));
      }
      case Kind::kNegate:
        return Negate(n);
      case Kind::kAnd:
      case Kind::kOr: {
        // Short-circuit: `and` stops at the first falsy operand, `or` at the first truthy one.
        const bool stop_at = n.kind == Kind::kOr;
        for (uint32_t c : n.children) {
          CORTEX_ASSIGN_OR_RETURN(Json v, Eval(c));
          if (Truthy(v) == stop_at) return Json(stop_at);
        }
        return Json(!stop_at);
      }
      case Kind::kCompare:
        return Compare(n);
      case Kind::kLen: {
        CORTEX_ASSIGN_OR_RETURN(Json v, Eval(n.children[0]));
        if (v.is_string()) return Json(Utf8Length(v.get_ref<const std::string&>()));
        if (v.is_array() || v.is_object()) return Json(v.size());
        return EvalError(
            n, "len() needs a string, array or object, got " + Describe(n.children[0], v));
      }
    }
    return InternalError("unknown expression node");
  }

 private:
  void Note(const std::string& text) {
    for (const std::string& u : *unresolved_) {
      if (u == text) return;
    }
    unresolved_->push_back(text);
  }

  static Status EvalError(const Node& n, std::string_view problem) {
    return SyntaxError(n.offset, problem);
  }

  // "number", or "null (unresolved reference $(steps.a.x))" for a null from a failed lookup.
  std::string Describe(uint32_t index, const Json& v) const {
    std::string s = v.type_name();
    const Node& n = expr_.nodes[index];
    if (v.is_null() && n.kind == Kind::kReference) {
      for (const std::string& u : *unresolved_) {
        if (u == n.source) return s + " (unresolved reference " + n.source + ")";
      }
    }
    return s;
  }

  Result<Json> Negate(const Node& n) {
    CORTEX_ASSIGN_OR_RETURN(Json v, Eval(n.children[0]));
    if (v.is_number_float()) return Json(-v.get<double>());
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u <= uint64_t{1} << 63) return Json(static_cast<int64_t>(0 - u));
      return Json(-static_cast<double>(u));
    }
    if (v.is_number_integer()) {
      const int64_t i = v.get<int64_t>();
      if (i == std::numeric_limits<int64_t>::min()) return Json(-static_cast<double>(i));
      return Json(-i);
    }
    return EvalError(n, "unary '-' needs a number, got " + Describe(n.children[0], v));
  }

  Result<Json> Compare(const Node& n) {
    const uint32_t li = n.children[0];
    const uint32_t ri = n.children[1];
    CORTEX_ASSIGN_OR_RETURN(Json lhs, Eval(li));
    CORTEX_ASSIGN_OR_RETURN(Json rhs, Eval(ri));
    const bool status_lhs = expr_.nodes[li].status_ref;
    const bool status_rhs = expr_.nodes[ri].status_ref;
    switch (n.op) {
      case CompareOp::kEq:
      case CompareOp::kNe: {
        if (status_lhs || status_rhs) {
          lhs = NormalizeStatus(std::move(lhs));
          rhs = NormalizeStatus(std::move(rhs));
        }
        return Json(Equal(lhs, rhs) == (n.op == CompareOp::kEq));
      }
      case CompareOp::kIn:
      case CompareOp::kNotIn: {
        if (status_lhs) {
          lhs = NormalizeStatus(std::move(lhs));
          if (rhs.is_array()) {
            for (Json& e : rhs) e = NormalizeStatus(std::move(e));
          }
        }
        CORTEX_ASSIGN_OR_RETURN(bool found, Contains(n, lhs, rhs));
        return Json(found == (n.op == CompareOp::kIn));
      }
      case CompareOp::kLt:
      case CompareOp::kLe:
      case CompareOp::kGt:
      case CompareOp::kGe:
        break;
    }
    std::partial_ordering order = std::partial_ordering::unordered;
    if (auto p = NumericPair(lhs, rhs)) {
      order = CompareNumbers(p->first, p->second);
    } else if (lhs.is_string() && rhs.is_string()) {
      order = lhs.get_ref<const std::string&>().compare(rhs.get_ref<const std::string&>()) <=> 0;
    } else {
      std::string m = "'";
      m += OpName(n.op);
      m += "' cannot compare ";
      m += Describe(li, lhs);
      m += " with ";
      m += Describe(ri, rhs);
      return EvalError(n, m);
    }
    switch (n.op) {
      case CompareOp::kLt:
        return Json(order < 0);
      case CompareOp::kLe:
        return Json(order <= 0);
      case CompareOp::kGt:
        return Json(order > 0);
      default:
        return Json(order >= 0);
    }
  }

  Result<bool> Contains(const Node& n, const Json& lhs, const Json& rhs) {
    const uint32_t li = n.children[0];
    const uint32_t ri = n.children[1];
    auto need_string = [&](std::string_view right) {
      return EvalError(n, "'" + std::string(OpName(n.op)) + "' needs a string on the left when " +
                              "the right side is " + std::string(right) + ", got " +
                              Describe(li, lhs));
    };
    if (rhs.is_array()) {
      for (const Json& e : rhs) {
        if (Equal(lhs, e)) return true;
      }
      return false;
    }
    if (rhs.is_string()) {
      if (!lhs.is_string()) return need_string("a string");
      return rhs.get_ref<const std::string&>().find(lhs.get_ref<const std::string&>()) !=
             std::string::npos;
    }
    if (rhs.is_object()) {
      if (!lhs.is_string()) return need_string("an object");
      return rhs.contains(lhs.get_ref<const std::string&>());
    }
    return EvalError(n, "'" + std::string(OpName(n.op)) +
                            "' needs an array, string or object on the right, got " +
                            Describe(ri, rhs));
  }

  const Expression& expr_;
  const VariableContext& ctx_;
  std::vector<std::string>* unresolved_;
};

}  // namespace

Result<std::shared_ptr<const Expression>> ParseExpression(std::string_view text) {
  auto expr = std::make_shared<Expression>();
  CORTEX_RETURN_IF_ERROR(Parser(text, expr.get()).Parse());
  return std::shared_ptr<const Expression>(std::move(expr));
}

std::vector<Reference> ExpressionReferences(const Expression& expression) {
  return expression.references;
}

Result<ExpressionValue> EvaluateExpression(const Expression& expression,
                                           const VariableContext& ctx) {
  ExpressionValue out;
  try {
    Evaluator evaluator(expression, ctx, &out.unresolved);
    CORTEX_ASSIGN_OR_RETURN(out.value, evaluator.Eval(expression.root));
  } catch (const nlohmann::json::exception& e) {  // not expected: every access is type-checked
    return InternalError(std::string("evaluating an expression: ") + e.what());
  }
  return out;
}

bool Truthy(const nlohmann::ordered_json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return false;
    case Json::value_t::boolean:
      return value.get<bool>();
    case Json::value_t::number_integer:
      return value.get<int64_t>() != 0;
    case Json::value_t::number_unsigned:
      return value.get<uint64_t>() != 0;
    case Json::value_t::number_float:
      return value.get<double>() != 0.0;
    case Json::value_t::string:
      return !value.get_ref<const std::string&>().empty();
    case Json::value_t::array:
    case Json::value_t::object:
      return !value.empty();
    case Json::value_t::binary:
      return !value.get_binary().empty();
    case Json::value_t::discarded:
      return false;
  }
  return false;
}

}  // namespace cortex::registry
