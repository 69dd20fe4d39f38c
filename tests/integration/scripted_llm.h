// A scripted OpenAI-compatible (and Anthropic-shaped) model server on 127.0.0.1, started by the
// tests: the model is the one real part with no local instance, so its turns are scripted. Each
// request to /v1/chat/completions (or /v1/messages) takes the next scripted turn: its text is
// streamed as server-sent events in pieces of `chunk` bytes with `delay` between them (or sent
// whole when the request does not ask for a stream), or the turn answers an HTTP error, a
// malformed stream, or nothing for a while. Every request's body is kept for assertions.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/http.h"

namespace cortex::testing {

struct ScriptedTurn {
  std::string content;
  size_t chunk = 7;
  std::chrono::milliseconds delay{0};
  int status = 200;                    // not 200: answer this status with an error body
  std::string retry_after;             // with a 429/503: the Retry-After header
  bool malformed = false;              // stream a chunk that is not JSON
  bool cut_short = false;              // end the stream before [DONE]
  std::chrono::milliseconds stall{0};  // wait this long before answering
  int64_t input_tokens = 11, output_tokens = 7;
  // Native function calls after the text: [{id, name, arguments (JSON text)}], each streamed
  // in pieces of `chunk` bytes like the text.
  nlohmann::json tool_calls = nlohmann::json::array();
  // Called (on the server's thread) right after each piece of the text is sent, with its
  // index: for benchmarks that time what follows a given byte.
  std::function<void(size_t piece)> on_sent;
};

// A turn that calls functions (native function calling), after saying `content`.
inline ScriptedTurn Calls(nlohmann::json tool_calls, std::string content = "") {
  ScriptedTurn t;
  t.content = std::move(content);
  t.tool_calls = std::move(tool_calls);
  return t;
}

// A turn that streams `content` in pieces of `chunk` bytes, `delay` apart.
inline ScriptedTurn Says(std::string content, size_t chunk = 7,
                         std::chrono::milliseconds delay = std::chrono::milliseconds(0)) {
  ScriptedTurn t;
  t.content = std::move(content);
  t.chunk = chunk;
  t.delay = delay;
  return t;
}
// A turn that answers an HTTP error.
inline ScriptedTurn Fails(int status, std::string retry_after = "") {
  ScriptedTurn t;
  t.status = status;
  t.retry_after = std::move(retry_after);
  return t;
}

class ScriptedLlm {
 public:
  ScriptedLlm() : server_(Options()) {
    server_.Handle("POST", "/v1/chat/completions",
                   [this](const http::Request& req) { return Serve(req, /*anthropic=*/false); });
    server_.Handle("POST", "/v1/messages",
                   [this](const http::Request& req) { return Serve(req, /*anthropic=*/true); });
    ok_ = server_.Start().ok();
  }
  ~ScriptedLlm() { server_.Stop(); }

  bool ok() const { return ok_; }
  int port() const { return server_.port(); }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port()) + "/v1"; }

  void Script(std::vector<ScriptedTurn> turns) {
    std::lock_guard lock(mu_);
    turns_.assign(turns.begin(), turns.end());
  }
  void Add(ScriptedTurn turn) {
    std::lock_guard lock(mu_);
    turns_.push_back(std::move(turn));
  }
  // The bodies of the requests received so far.
  std::vector<nlohmann::json> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  // The credential each request carried (its Authorization or x-api-key header; "" for none).
  std::vector<std::string> credentials() const {
    std::lock_guard lock(mu_);
    return credentials_;
  }
  size_t left() const {
    std::lock_guard lock(mu_);
    return turns_.size();
  }

 private:
  static http::ServerOptions Options() {
    http::ServerOptions o;
    o.port = 0;
    o.threads = 16;
    return o;
  }

  http::Response Serve(const http::Request& req, bool anthropic) {
    ScriptedTurn turn;
    {
      std::lock_guard lock(mu_);
      requests_.push_back(nlohmann::json::parse(req.body, nullptr, false));
      auto credential = req.Header(anthropic ? "x-api-key" : "Authorization");
      credentials_.push_back(credential.value_or(""));
      if (turns_.empty()) {
        return http::Response::Json(500, R"({"error":{"message":"the script has no more turns"}})");
      }
      turn = turns_.front();
      turns_.pop_front();
    }
    if (turn.stall.count() > 0) std::this_thread::sleep_for(turn.stall);
    if (turn.status != 200) {
      auto r = http::Response::Json(turn.status, R"({"error":{"message":"scripted failure )" +
                                                     std::to_string(turn.status) + R"("}})");
      if (!turn.retry_after.empty()) r.headers.emplace_back("Retry-After", turn.retry_after);
      return r;
    }
    auto body = nlohmann::json::parse(req.body, nullptr, false);
    bool stream = body.is_object() && body.value("stream", false);
    if (!stream) {
      nlohmann::json blocks = {{{"type", "text"}, {"text", turn.content}}};
      nlohmann::json message = {{"role", "assistant"}, {"content", turn.content}};
      for (const auto& c : turn.tool_calls) {
        blocks.push_back(
            {{"type", "tool_use"},
             {"id", c["id"]},
             {"name", c["name"]},
             {"input", nlohmann::json::parse(c["arguments"].get<std::string>(), nullptr, false)}});
        message["tool_calls"].push_back(
            {{"id", c["id"]},
             {"type", "function"},
             {"function", {{"name", c["name"]}, {"arguments", c["arguments"]}}}});
      }
      nlohmann::json reply =
          anthropic
              ? nlohmann::json{{"type", "message"},
                               {"content", blocks},
                               {"stop_reason", "end_turn"},
                               {"usage",
                                {{"input_tokens", turn.input_tokens},
                                 {"output_tokens", turn.output_tokens}}}}
              : nlohmann::json{
                    {"id", "chatcmpl-scripted"},
                    {"object", "chat.completion"},
                    {"choices", {{{"index", 0}, {"message", message}, {"finish_reason", "stop"}}}},
                    {"usage",
                     {{"prompt_tokens", turn.input_tokens},
                      {"completion_tokens", turn.output_tokens}}}};
      return http::Response::Json(200, reply.dump());
    }
    http::Response r;
    r.sse = [turn, anthropic](http::SseWriter& w) {
      auto pause = [&] {
        if (turn.delay.count() > 0) std::this_thread::sleep_for(turn.delay);
      };
      if (anthropic) {
        w.Send("message_start",
               nlohmann::json{{"type", "message_start"},
                              {"message", {{"usage", {{"input_tokens", turn.input_tokens}}}}}}
                   .dump());
      }
      for (size_t i = 0; i < turn.content.size(); i += turn.chunk) {
        pause();
        std::string piece = turn.content.substr(i, turn.chunk);
        nlohmann::json chunk =
            anthropic ? nlohmann::json{{"type", "content_block_delta"},
                                       {"index", 0},
                                       {"delta", {{"type", "text_delta"}, {"text", piece}}}}
                      : nlohmann::json{{"id", "chatcmpl-scripted"},
                                       {"object", "chat.completion.chunk"},
                                       {"choices",
                                        {{{"index", 0},
                                          {"delta", {{"content", piece}}},
                                          {"finish_reason", nullptr}}}}};
        if (!w.Send(anthropic ? "content_block_delta" : "", chunk.dump())) return;
        if (turn.on_sent) turn.on_sent(i / turn.chunk);
        if (turn.malformed && i == 0) {
          w.Send("", "{this is not json");
          return;
        }
      }
      // Function calls, each in pieces.
      for (size_t n = 0; n < turn.tool_calls.size(); ++n) {
        const auto& c = turn.tool_calls[n];
        std::string args = c["arguments"].get<std::string>();
        int index = static_cast<int>(n) + 1;  // Anthropic: block 0 is the text
        if (anthropic) {
          w.Send("content_block_start", nlohmann::json{{"type", "content_block_start"},
                                                       {"index", index},
                                                       {"content_block",
                                                        {{"type", "tool_use"},
                                                         {"id", c["id"]},
                                                         {"name", c["name"]},
                                                         {"input", nlohmann::json::object()}}}}
                                            .dump());
        }
        for (size_t i = 0; i == 0 || i < args.size(); i += turn.chunk) {
          pause();
          std::string piece = args.substr(std::min(i, args.size()), turn.chunk);
          nlohmann::json call = {{"index", n}, {"function", {{"arguments", piece}}}};
          if (i == 0) {
            call["id"] = c["id"];
            call["type"] = "function";
            call["function"]["name"] = c["name"];
          }
          nlohmann::json chunk =
              anthropic ? nlohmann::json{{"type", "content_block_delta"},
                                         {"index", index},
                                         {"delta",
                                          {{"type", "input_json_delta"}, {"partial_json", piece}}}}
                        : nlohmann::json{{"id", "chatcmpl-scripted"},
                                         {"object", "chat.completion.chunk"},
                                         {"choices",
                                          {{{"index", 0},
                                            {"delta", {{"tool_calls", {call}}}},
                                            {"finish_reason", nullptr}}}}};
          if (!w.Send(anthropic ? "content_block_delta" : "", chunk.dump())) return;
        }
        if (anthropic) {
          w.Send("content_block_stop",
                 nlohmann::json{{"type", "content_block_stop"}, {"index", index}}.dump());
        }
      }
      const bool calls = !turn.tool_calls.empty();
      if (turn.cut_short) return;
      if (anthropic) {
        w.Send("message_delta",
               nlohmann::json{{"type", "message_delta"},
                              {"delta", {{"stop_reason", calls ? "tool_use" : "end_turn"}}},
                              {"usage", {{"output_tokens", turn.output_tokens}}}}
                   .dump());
        w.Send("message_stop", R"({"type":"message_stop"})");
        return;
      }
      w.Send("", nlohmann::json{{"id", "chatcmpl-scripted"},
                                {"object", "chat.completion.chunk"},
                                {"choices",
                                 {{{"index", 0},
                                   {"delta", nlohmann::json::object()},
                                   {"finish_reason", calls ? "tool_calls" : "stop"}}}}}
                     .dump());
      w.Send("", nlohmann::json{{"id", "chatcmpl-scripted"},
                                {"object", "chat.completion.chunk"},
                                {"choices", nlohmann::json::array()},
                                {"usage",
                                 {{"prompt_tokens", turn.input_tokens},
                                  {"completion_tokens", turn.output_tokens}}}}
                     .dump());
      w.Send("", "[DONE]");
    };
    return r;
  }

  http::Server server_;
  bool ok_ = false;
  mutable std::mutex mu_;
  std::deque<ScriptedTurn> turns_;
  std::vector<nlohmann::json> requests_;
  std::vector<std::string> credentials_;
};

}  // namespace cortex::testing
