// The streaming protocol v1.1 an agent's model speaks (docs/agents.md, MK1-REFERENCE §4):
//
//   <thought>free text, possibly with <action ...>{json}</action> inside</thought>
//   <action type="tool" mode="async" id="a1" depends_on="x,y">{"name": ..., "parameters": {...},
//           "output_key": ..., "depends_on": [...]}</action>
//   <response final="true">markdown for the user, with $output_key references</response>
//   <context_feed id="...">...</context_feed>   (injected by the runtime; parsed when echoed)
//
// ProtocolParser is incremental: Feed() takes any split of the byte stream (one byte at a time
// included) and returns what is known so far. Events of the same text kind that follow each other
// are one piece of text cut in several: a consumer (and the tests) joins them, and the joined
// events are the same whatever the split. An action is emitted the moment its closing tag has
// arrived, so the loop can start it at once.
//
// What the original got wrong (§4.5), and this parser does instead:
//   - only the four known tags are tags, and only where they may appear: `<b>` in a thought and
//     `<html>` inside an action's JSON stay text, verbatim;
//   - text outside any tag is kept (kText), never dropped;
//   - a partial tag is held back until it is known to be a tag or text: it never leaks;
//   - attributes may be quoted or unquoted, and `depends_on` may be an attribute (a JSON list or
//     a comma-separated value) as well as a JSON key;
//   - an action whose body is not a JSON object, or whose type or mode is unknown, is not
//     dropped: it is emitted with `error` set, for the loop to report back to the model;
//   - a response's text is only its own block's.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace cortex::agent {

using Json = nlohmann::ordered_json;

struct ParsedAction {
  std::string id;             // the `id` attribute, else "action-N" (N counts from 1 per parser)
  std::string type = "tool";  // tool | agent | relic | workflow | llm | internal
  std::string mode = "sync";  // sync | async | fire_and_forget
  std::string name;
  Json parameters = Json::object();
  std::string output_key;
  std::vector<std::string> depends_on;  // action ids, from the attribute and the JSON key
  std::string raw;                      // the body as received
  bool embedded_in_thought = false;
  std::string error;  // not empty: the action is invalid, and why (reported to the model)
};

enum class EventKind {
  kText,         // text outside any tag
  kThought,      // thought text
  kAction,       // an action (closing tag received)
  kResponse,     // response text
  kResponseEnd,  // </response> (or the end of the stream inside a response); `final`
  kContextFeed,  // a context feed block, whole; `feed_id`
};
std::string_view EventKindName(EventKind kind);

struct ProtocolEvent {
  EventKind kind = EventKind::kText;
  std::string text;                    // kText, kThought, kResponse, kContextFeed
  std::optional<ParsedAction> action;  // kAction
  bool final = true;                   // kResponseEnd
  std::string feed_id;                 // kContextFeed

  Json ToJson() const;  // for logs, SSE and the tests' expectations
};

struct ProtocolLimits {
  size_t max_tag_bytes = 4096;        // an opening tag longer than this is text
  size_t max_action_bytes = 1 << 20;  // an action body longer than this is an invalid action
};

class ProtocolParser {
 public:
  explicit ProtocolParser(ProtocolLimits limits = {}) : limits_(limits) {}

  // Appends the events `bytes` completes to `out`.
  void Feed(std::string_view bytes, std::vector<ProtocolEvent>* out);
  // The end of the stream: what was held back is flushed; an unclosed action becomes an invalid
  // action, an unclosed response ends (with its `final`).
  void Finish(std::vector<ProtocolEvent>* out);

  int actions_seen() const { return action_count_; }

 private:
  enum class State { kOutside, kThought, kAction, kResponse, kContextFeed };
  // The text kind of the current state.
  EventKind TextKind() const;
  void EmitText(std::string_view text, std::vector<ProtocolEvent>* out);
  // The closing tag that ends the current block ("" outside).
  std::string_view Closer() const;
  // Whether `candidate` (starting with '<') is, or may still become, a tag recognised here.
  // Sets *complete (a whole tag: `tag_len` bytes) when it is one.
  enum class TagMatch { kNo, kMaybe, kYes };
  TagMatch MatchTag(std::string_view candidate, size_t* tag_len) const;
  void OpenTag(std::string_view tag, std::vector<ProtocolEvent>* out);
  void CloseAction(std::vector<ProtocolEvent>* out, const std::string& forced_error = "");
  void CloseFeed(std::vector<ProtocolEvent>* out);
  void EndResponse(std::vector<ProtocolEvent>* out);

  ProtocolLimits limits_;
  State state_ = State::kOutside;
  State action_return_ = State::kOutside;  // where an action returns when closed
  std::string pending_;                    // bytes not decided yet (a possible tag)
  std::string body_;                       // the current action's or feed's body
  ParsedAction action_;                    // the current action's attributes
  std::string feed_id_;
  bool response_final_ = true;
  bool action_oversized_ = false;
  int action_count_ = 0;
};

// Parses a whole text (Feed + Finish).
std::vector<ProtocolEvent> ParseProtocol(std::string_view text, ProtocolLimits limits = {});

// Joins consecutive text events of the same kind (the split-independent form).
std::vector<ProtocolEvent> JoinText(std::vector<ProtocolEvent> events);

// The attributes of an opening tag's inside (`type="tool" id=a1 depends_on=["x","y"]`), in
// order; names are lower-cased. Values are unquoted; a list value keeps its JSON text.
std::vector<std::pair<std::string, std::string>> ParseAttributes(std::string_view text);

}  // namespace cortex::agent
