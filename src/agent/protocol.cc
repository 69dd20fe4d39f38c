#include "agent/protocol.h"

#include <algorithm>
#include <cctype>

#include "common/json.h"

namespace cortex::agent {
namespace {

constexpr std::string_view kActionCloser = "</action>";
constexpr std::string_view kFeedCloser = "</context_feed>";

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

char Lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

// Case-insensitive: does `text` start with `prefix`?
bool StartsWithNoCase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (Lower(text[i]) != prefix[i]) return false;
  }
  return true;
}

// The end of an opening tag whose name ends at `from`: the index of its '>', outside quotes;
// npos when not there yet.
size_t TagEnd(std::string_view text, size_t from) {
  char quote = 0;
  for (size_t i = from; i < text.size(); ++i) {
    char c = text[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '>') {
      return i;
    }
  }
  return std::string_view::npos;
}

// Where a closing tag may begin in `text`: the first full `closer`, or the start of a suffix of
// `text` that is a prefix of `closer` (held back), or npos.
size_t FindCloser(std::string_view text, std::string_view closer, bool* whole) {
  size_t at = text.find(closer);
  if (at != std::string_view::npos) {
    *whole = true;
    return at;
  }
  *whole = false;
  size_t keep = std::min(text.size(), closer.size() - 1);
  for (size_t k = keep; k > 0; --k) {
    if (closer.substr(0, k) == text.substr(text.size() - k)) return text.size() - k;
  }
  return std::string_view::npos;
}

std::vector<std::string> SplitIds(std::string_view value) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : value) {
    if (c == ',' || IsSpace(c)) {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

// depends_on from an attribute: a JSON list, or ids separated by commas or spaces.
std::vector<std::string> DependsOnAttribute(std::string_view value) {
  if (!value.empty() && value.front() == '[') {
    auto parsed = ParseJson(value);
    if (parsed.ok() && parsed->is_array()) {
      std::vector<std::string> out;
      for (const auto& v : *parsed) {
        if (v.is_string()) out.push_back(v.get<std::string>());
      }
      return out;
    }
    std::string inner(value.substr(
        1, value.size() >= 2 && value.back() == ']' ? value.size() - 2 : value.size() - 1));
    inner.erase(std::remove(inner.begin(), inner.end(), '"'), inner.end());
    inner.erase(std::remove(inner.begin(), inner.end(), '\''), inner.end());
    return SplitIds(inner);
  }
  return SplitIds(value);
}

bool OneOf(const std::string& v, std::initializer_list<std::string_view> allowed) {
  return std::find(allowed.begin(), allowed.end(), v) != allowed.end();
}

std::string Joined(std::initializer_list<std::string_view> words) {
  std::string out;
  for (auto w : words) out += (out.empty() ? "" : ", ") + std::string(w);
  return out;
}

const std::initializer_list<std::string_view> kTypes = {"tool",     "agent", "relic",
                                                        "workflow", "llm",   "internal"};
const std::initializer_list<std::string_view> kModes = {"sync", "async", "fire_and_forget"};

}  // namespace

std::string_view EventKindName(EventKind kind) {
  switch (kind) {
    case EventKind::kText:
      return "text";
    case EventKind::kThought:
      return "thought";
    case EventKind::kAction:
      return "action";
    case EventKind::kResponse:
      return "response";
    case EventKind::kResponseEnd:
      return "response_end";
    case EventKind::kContextFeed:
      return "context_feed";
  }
  return "unknown";
}

Json ProtocolEvent::ToJson() const {
  Json j;
  j["event"] = std::string(EventKindName(kind));
  switch (kind) {
    case EventKind::kText:
    case EventKind::kThought:
    case EventKind::kResponse:
      j["text"] = ToValidUtf8(text);
      break;
    case EventKind::kContextFeed:
      j["id"] = ToValidUtf8(feed_id);
      j["text"] = ToValidUtf8(text);
      break;
    case EventKind::kResponseEnd:
      j["final"] = final;
      break;
    case EventKind::kAction: {
      const ParsedAction& a = *action;
      j["id"] = ToValidUtf8(a.id);
      j["type"] = ToValidUtf8(a.type);
      j["mode"] = ToValidUtf8(a.mode);
      j["name"] = ToValidUtf8(a.name);
      j["parameters"] = a.parameters;
      if (!a.output_key.empty()) j["output_key"] = ToValidUtf8(a.output_key);
      if (!a.depends_on.empty()) {
        Json deps = Json::array();
        for (const auto& d : a.depends_on) deps.push_back(ToValidUtf8(d));
        j["depends_on"] = std::move(deps);
      }
      if (a.embedded_in_thought) j["embedded_in_thought"] = true;
      if (!a.error.empty()) {
        j["error"] = ToValidUtf8(a.error);
        j["raw"] = ToValidUtf8(a.raw);
      }
      break;
    }
  }
  return j;
}

std::vector<std::pair<std::string, std::string>> ParseAttributes(std::string_view text) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (IsSpace(text[i]) || text[i] == '/')) ++i;
    size_t name_start = i;
    while (i < text.size() && !IsSpace(text[i]) && text[i] != '=' && text[i] != '/') ++i;
    std::string name(text.substr(name_start, i - name_start));
    std::transform(name.begin(), name.end(), name.begin(), Lower);
    while (i < text.size() && IsSpace(text[i])) ++i;
    std::string value;
    if (i < text.size() && text[i] == '=') {
      ++i;
      while (i < text.size() && IsSpace(text[i])) ++i;
      if (i < text.size() && (text[i] == '"' || text[i] == '\'')) {
        char q = text[i++];
        size_t end = text.find(q, i);
        if (end == std::string_view::npos) end = text.size();
        value = text.substr(i, end - i);
        i = end < text.size() ? end + 1 : end;
      } else if (i < text.size() && text[i] == '[') {
        // A list: up to its closing bracket, quotes respected.
        size_t start = i;
        char quote = 0;
        for (; i < text.size(); ++i) {
          char c = text[i];
          if (quote) {
            if (c == quote) quote = 0;
          } else if (c == '"' || c == '\'') {
            quote = c;
          } else if (c == ']') {
            ++i;
            break;
          }
        }
        value = text.substr(start, i - start);
      } else {
        size_t start = i;
        while (i < text.size() && !IsSpace(text[i])) ++i;
        value = text.substr(start, i - start);
      }
    }
    if (!name.empty()) out.emplace_back(std::move(name), std::move(value));
  }
  return out;
}

EventKind ProtocolParser::TextKind() const {
  switch (state_) {
    case State::kThought:
      return EventKind::kThought;
    case State::kResponse:
      return EventKind::kResponse;
    default:
      return EventKind::kText;
  }
}

void ProtocolParser::EmitText(std::string_view text, std::vector<ProtocolEvent>* out) {
  if (text.empty()) return;
  EventKind kind = TextKind();
  if (!out->empty() && out->back().kind == kind &&
      (kind == EventKind::kText || kind == EventKind::kThought || kind == EventKind::kResponse)) {
    out->back().text.append(text);
    return;
  }
  ProtocolEvent e;
  e.kind = kind;
  e.text = std::string(text);
  out->push_back(std::move(e));
}

ProtocolParser::TagMatch ProtocolParser::MatchTag(std::string_view candidate,
                                                  size_t* tag_len) const {
  // The tags recognised in each state: openers take attributes, closers only spaces.
  struct Known {
    std::string_view name;
    bool opener;
  };
  static constexpr Known kOutside[] = {
      {"<thought", true}, {"<action", true}, {"<response", true}, {"<context_feed", true}};
  static constexpr Known kInThought[] = {{"<action", true}, {"</thought", false}};
  static constexpr Known kInResponse[] = {{"</response", false}};
  const Known* begin = nullptr;
  const Known* end = nullptr;
  switch (state_) {
    case State::kOutside:
      begin = std::begin(kOutside), end = std::end(kOutside);
      break;
    case State::kThought:
      begin = std::begin(kInThought), end = std::end(kInThought);
      break;
    case State::kResponse:
      begin = std::begin(kInResponse), end = std::end(kInResponse);
      break;
    default:
      return TagMatch::kNo;
  }
  bool maybe = false;
  for (const Known* k = begin; k != end; ++k) {
    std::string_view name = k->name;
    if (candidate.size() <= name.size()) {
      if (StartsWithNoCase(candidate, name.substr(0, candidate.size()))) maybe = true;
      continue;
    }
    if (!StartsWithNoCase(candidate, name)) continue;
    char next = candidate[name.size()];
    if (next == '>') {
      *tag_len = name.size() + 1;
      return TagMatch::kYes;
    }
    if (!IsSpace(next) && !(k->opener && next == '/')) continue;  // <actions>, <thoughtful>
    size_t close = k->opener ? TagEnd(candidate, name.size()) : candidate.find('>', name.size());
    if (close != std::string_view::npos && close >= limits_.max_tag_bytes) continue;  // too long
    if (close != std::string_view::npos) {
      if (!k->opener) {
        // A closer: only spaces before '>'.
        bool spaces = true;
        for (size_t i = name.size(); i < close; ++i) spaces = spaces && IsSpace(candidate[i]);
        if (!spaces) continue;
      }
      *tag_len = close + 1;
      return TagMatch::kYes;
    }
    if (candidate.size() < limits_.max_tag_bytes) maybe = true;
  }
  return maybe ? TagMatch::kMaybe : TagMatch::kNo;
}

void ProtocolParser::OpenTag(std::string_view tag, std::vector<ProtocolEvent>* out) {
  const bool closer = tag.size() > 1 && tag[1] == '/';
  size_t name_end = 1 + (closer ? 1 : 0);
  while (name_end < tag.size() && tag[name_end] != '>' && !IsSpace(tag[name_end]) &&
         tag[name_end] != '/') {
    ++name_end;
  }
  std::string name(tag.substr(1 + (closer ? 1 : 0), name_end - 1 - (closer ? 1 : 0)));
  std::transform(name.begin(), name.end(), name.begin(), Lower);
  std::string_view attr_text = tag.substr(name_end, tag.size() - name_end - 1);  // without the '>'
  if (closer) {
    if (name == "thought") {
      state_ = State::kOutside;
    } else if (name == "response") {
      EndResponse(out);
    }
    return;
  }
  auto attrs = ParseAttributes(attr_text);
  if (name == "thought") {
    state_ = State::kThought;
  } else if (name == "response") {
    response_final_ = true;
    for (const auto& [k, v] : attrs) {
      if (k == "final") {
        std::string lv = v;
        std::transform(lv.begin(), lv.end(), lv.begin(), Lower);
        response_final_ = lv != "false";
      } else if (k == "non_terminating") {  // the MK1 README's spelling
        std::string lv = v;
        std::transform(lv.begin(), lv.end(), lv.begin(), Lower);
        response_final_ = lv != "true";
      }
    }
    state_ = State::kResponse;
  } else if (name == "context_feed") {
    feed_id_.clear();
    for (const auto& [k, v] : attrs) {
      if (k == "id") feed_id_ = v;
    }
    body_.clear();
    state_ = State::kContextFeed;
  } else if (name == "action") {
    action_ = ParsedAction{};
    action_.type.clear();
    action_.mode.clear();
    for (const auto& [k, v] : attrs) {
      if (k == "type") {
        action_.type = v;
      } else if (k == "mode") {
        action_.mode = v;
      } else if (k == "id") {
        action_.id = v;
      } else if (k == "depends_on" || k == "depends-on") {
        for (auto& d : DependsOnAttribute(v)) action_.depends_on.push_back(std::move(d));
      }
    }
    action_.embedded_in_thought = state_ == State::kThought;
    action_oversized_ = false;
    action_return_ = state_;
    body_.clear();
    state_ = State::kAction;
  }
}

void ProtocolParser::CloseAction(std::vector<ProtocolEvent>* out, const std::string& forced_error) {
  ParsedAction a = std::move(action_);
  action_ = ParsedAction{};
  ++action_count_;
  a.raw = std::move(body_);
  body_.clear();
  std::string error = forced_error;
  if (error.empty() && action_oversized_) {
    error =
        "the action's body is longer than " + std::to_string(limits_.max_action_bytes) + " bytes";
  }
  action_oversized_ = false;
  auto set_error = [&](std::string why) {
    if (error.empty()) error = std::move(why);
  };
  auto parsed = ParseJson(a.raw);
  if (!parsed.ok()) {
    set_error("the action's body is " + parsed.status().message());
  } else if (!parsed->is_object()) {
    set_error("the action's body must be a JSON object: {\"name\": ..., \"parameters\": {...}}");
  } else {
    const Json& j = *parsed;
    auto str = [&](const char* key) -> std::string {
      auto it = j.find(key);
      return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    a.name = str("name");
    if (a.name.empty()) set_error("the action has no \"name\" (what to run)");
    if (auto it = j.find("parameters"); it != j.end() && !it->is_null()) {
      if (it->is_object()) {
        a.parameters = *it;
      } else {
        set_error("the action's \"parameters\" must be a JSON object");
      }
    }
    a.output_key = str("output_key");
    if (auto it = j.find("depends_on"); it != j.end()) {
      if (it->is_string()) {
        for (auto& d : SplitIds(it->get<std::string>())) a.depends_on.push_back(std::move(d));
      } else if (it->is_array()) {
        for (const auto& d : *it) {
          if (d.is_string()) a.depends_on.push_back(d.get<std::string>());
        }
      }
    }
    // The attributes win; the JSON keys fill what they leave out.
    if (a.type.empty()) a.type = str("type");
    if (a.mode.empty()) a.mode = str("mode");
    if (a.id.empty()) a.id = str("id");
  }
  if (a.type.empty()) a.type = "tool";
  if (a.mode.empty()) a.mode = "sync";
  if (a.id.empty()) a.id = "action-" + std::to_string(action_count_);
  if (!OneOf(a.type, kTypes)) {
    set_error("unknown action type '" + a.type + "' (one of " + Joined(kTypes) + ")");
  }
  if (!OneOf(a.mode, kModes)) {
    set_error("unknown action mode '" + a.mode + "' (one of " + Joined(kModes) + ")");
  }
  std::sort(a.depends_on.begin(), a.depends_on.end());
  a.depends_on.erase(std::unique(a.depends_on.begin(), a.depends_on.end()), a.depends_on.end());
  a.error = std::move(error);
  ProtocolEvent e;
  e.kind = EventKind::kAction;
  e.action = std::move(a);
  out->push_back(std::move(e));
  state_ = action_return_;
}

void ProtocolParser::CloseFeed(std::vector<ProtocolEvent>* out) {
  ProtocolEvent e;
  e.kind = EventKind::kContextFeed;
  e.feed_id = feed_id_;
  e.text = std::move(body_);
  body_.clear();
  out->push_back(std::move(e));
  state_ = State::kOutside;
}

void ProtocolParser::EndResponse(std::vector<ProtocolEvent>* out) {
  ProtocolEvent e;
  e.kind = EventKind::kResponseEnd;
  e.final = response_final_;
  out->push_back(std::move(e));
  state_ = State::kOutside;
}

void ProtocolParser::Feed(std::string_view bytes, std::vector<ProtocolEvent>* out) {
  pending_.append(bytes);
  size_t pos = 0;  // what of pending_ is consumed
  for (;;) {
    std::string_view rest(pending_.data() + pos, pending_.size() - pos);
    if (state_ == State::kAction || state_ == State::kContextFeed) {
      std::string_view closer = state_ == State::kAction ? kActionCloser : kFeedCloser;
      bool whole = false;
      size_t at = FindCloser(rest, closer, &whole);
      size_t take = at == std::string_view::npos ? rest.size() : at;
      body_.append(rest.substr(0, take));
      pos += take;
      if (state_ == State::kAction && body_.size() > limits_.max_action_bytes) {
        action_oversized_ = true;  // the rest of its body is dropped, up to its closer
        body_.resize(limits_.max_action_bytes);
      }
      if (!whole) break;
      pos += closer.size();
      if (state_ == State::kAction) {
        CloseAction(out);
      } else {
        CloseFeed(out);
      }
      continue;
    }
    size_t lt = rest.find('<');
    if (lt == std::string_view::npos) {
      EmitText(rest, out);
      pos = pending_.size();
      break;
    }
    EmitText(rest.substr(0, lt), out);
    pos += lt;
    rest.remove_prefix(lt);
    size_t tag_len = 0;
    TagMatch m = MatchTag(rest, &tag_len);
    if (m == TagMatch::kMaybe) break;
    if (m == TagMatch::kNo) {
      EmitText(rest.substr(0, 1), out);
      pos += 1;
      continue;
    }
    std::string tag(rest.substr(0, tag_len));
    pos += tag_len;
    OpenTag(tag, out);
  }
  pending_.erase(0, pos);
}

void ProtocolParser::Finish(std::vector<ProtocolEvent>* out) {
  if (state_ == State::kAction) {
    body_.append(pending_);
    pending_.clear();
    CloseAction(out, "the action was not closed (</action> is missing)");
  } else if (state_ == State::kContextFeed) {
    body_.append(pending_);
    pending_.clear();
    CloseFeed(out);
  }
  EmitText(pending_, out);
  pending_.clear();
  if (state_ == State::kResponse) EndResponse(out);
  state_ = State::kOutside;
}

std::vector<ProtocolEvent> ParseProtocol(std::string_view text, ProtocolLimits limits) {
  ProtocolParser p(limits);
  std::vector<ProtocolEvent> out;
  p.Feed(text, &out);
  p.Finish(&out);
  return out;
}

std::vector<ProtocolEvent> JoinText(std::vector<ProtocolEvent> events) {
  std::vector<ProtocolEvent> out;
  for (auto& e : events) {
    bool text_kind = e.kind == EventKind::kText || e.kind == EventKind::kThought ||
                     e.kind == EventKind::kResponse;
    if (text_kind && !out.empty() && out.back().kind == e.kind) {
      out.back().text += e.text;
      continue;
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace cortex::agent
