// The providers: OpenAI-compatible chat completions, the Anthropic Messages API, and replay.
// HTTP through libcurl (HTTPS with certificate checks on), streamed as server-sent events.
#include <curl/curl.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "common/json.h"
#include "llm/gateway.h"

namespace cortex::llm {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr size_t kMaxBodyBytes = 16u << 20;     // a non-streamed reply
constexpr size_t kMaxErrorBytes = 64u << 10;    // an error reply's body, kept for its message
constexpr size_t kMaxContentBytes = 16u << 20;  // a streamed reply's text

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct PostRequest {
  std::string url;
  std::vector<std::string> headers;
  std::string body;
  CallLimits limits;
  std::string ca_bundle;
  // For a 2xx reply: its body in pieces; return false to stop. Null: the body is collected.
  std::function<bool(std::string_view)> on_body;
  const CancelToken* cancel = nullptr;
};

struct PostReply {
  long status = 0;
  std::string body;  // collected (non-streamed, or an error reply's start)
  std::optional<milliseconds> retry_after;
  bool stopped = false;             // on_body returned false
  bool cancelled = false;           // the cancel token fired
  bool first_byte_timeout = false;  // no byte within limits.first_token_timeout
};

struct Transfer {
  CURL* curl;
  const PostRequest* request;
  PostReply* reply;
  Clock::time_point start;
  bool got_bytes = false;
  bool too_big = false;
};

size_t OnHeader(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * nmemb);
  constexpr std::string_view kName = "retry-after:";
  if (line.size() > kName.size()) {
    std::string head(line.substr(0, kName.size()));
    std::transform(head.begin(), head.end(), head.begin(), ::tolower);
    if (head == kName) {
      std::string value(line.substr(kName.size()));
      char* end = nullptr;
      double secs = std::strtod(value.c_str(), &end);
      if (end != value.c_str() && secs >= 0 && secs < 3600) {
        t->reply->retry_after = milliseconds(static_cast<int64_t>(secs * 1000));
      }
    }
  }
  return size * nmemb;
}

size_t OnWrite(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * nmemb;
  t->got_bytes = true;
  long code = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
  if (code >= 200 && code < 300) {
    if (t->request->on_body) {
      if (!t->request->on_body(std::string_view(data, n))) {
        t->reply->stopped = true;
        return 0;
      }
      return n;
    }
    if (t->reply->body.size() + n > kMaxBodyBytes) {
      t->too_big = true;
      return 0;
    }
  } else if (t->reply->body.size() + n > kMaxErrorBytes) {
    return n;  // the start of an error reply is enough
  }
  t->reply->body.append(data, n);
  return n;
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (t->request->cancel && t->request->cancel->cancelled()) {
    t->reply->cancelled = true;
    return 1;
  }
  if (!t->got_bytes && Clock::now() - t->start > t->request->limits.first_token_timeout) {
    t->reply->first_byte_timeout = true;
    return 1;
  }
  return 0;
}

// One POST. Errors are transport failures (no HTTP status): Unavailable (connection),
// DeadlineExceeded (a timeout), Unavailable "cancelled"; an HTTP error status is a reply.
Result<PostReply> Post(const PostRequest& request) {
  GlobalInit();
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) return InternalError("curl_easy_init failed");
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr,
                                                                      &curl_slist_free_all);
  for (const auto& h : request.headers) {
    headers.reset(curl_slist_append(headers.release(), h.c_str()));
  }
  headers.reset(curl_slist_append(headers.release(), "Content-Type: application/json"));
  headers.reset(curl_slist_append(headers.release(), "Expect:"));
  PostReply reply;
  Transfer t{curl.get(), &request, &reply, Clock::now()};
  char errbuf[CURL_ERROR_SIZE] = {0};
  CURL* h = curl.get();
  curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!request.ca_bundle.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, request.ca_bundle.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.c_str());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.body.size()));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &OnWrite);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &OnProgress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(request.limits.connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(request.limits.total_timeout.count()));
  CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &reply.status);
  if (reply.stopped) return reply;
  if (reply.cancelled) return UnavailableError("cancelled");
  if (reply.first_byte_timeout) {
    return DeadlineExceededError("no answer within " +
                                 std::to_string(request.limits.first_token_timeout.count()) +
                                 " ms (first_token_timeout)");
  }
  if (t.too_big) {
    return ResourceExhaustedError("the reply is larger than " +
                                  std::to_string(kMaxBodyBytes >> 20) + " MiB");
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    return DeadlineExceededError(
        reply.status == 0
            ? "could not connect within " + std::to_string(request.limits.connect_timeout.count()) +
                  " ms"
            : "the reply did not end within " +
                  std::to_string(request.limits.total_timeout.count()) + " ms (total_timeout)");
  }
  if (rc != CURLE_OK && reply.status == 0) {
    return UnavailableError(errbuf[0] ? errbuf : curl_easy_strerror(rc));
  }
  if (rc != CURLE_OK && reply.status >= 200 && reply.status < 300) {
    return UnavailableError("the reply broke off: " +
                            std::string(errbuf[0] ? errbuf : curl_easy_strerror(rc)));
  }
  return reply;
}

// The provider's message in an error reply ({"error": {"message"}} or {"error": "..."}).
std::string ErrorMessage(const PostReply& reply) {
  std::string text = ToValidUtf8(reply.body.substr(0, 2000));
  auto j = ParseJson(reply.body);
  if (j.ok() && j->is_object()) {
    auto it = j->find("error");
    if (it != j->end()) {
      if (it->is_string()) return it->get<std::string>();
      if (it->is_object() && it->contains("message") && (*it)["message"].is_string()) {
        return (*it)["message"].get<std::string>();
      }
    }
    if (j->contains("message") && (*j)["message"].is_string()) {
      return (*j)["message"].get<std::string>();
    }
  }
  return text.empty() ? "no message" : text;
}

// An HTTP error status as a Status (and a failure to retry, when one may help).
Status StatusOfReply(const std::string& who, const PostReply& reply, HttpFailure* failure) {
  std::string msg =
      who + " answered HTTP " + std::to_string(reply.status) + ": " + ErrorMessage(reply);
  if (reply.status == 429 || reply.status >= 500 || reply.status == 408) {
    if (failure) *failure = {static_cast<int>(reply.status), reply.retry_after, msg};
    return UnavailableError(msg);
  }
  return InvalidArgumentError(msg);
}

Status TransportFailure(const std::string& who, const Status& st, HttpFailure* failure) {
  std::string msg = who + ": " + st.message();
  if (st.message() == "cancelled") return UnavailableError("cancelled");
  if (failure) *failure = {0, std::nullopt, msg};
  return Status(st.code(), msg);
}

std::string KeyFrom(const std::string& env) {
  if (env.empty()) return "";
  const char* v = std::getenv(env.c_str());
  return v ? v : "";
}

std::string TrimSlash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

void AddCost(const ProviderConfig& c, Usage* u) {
  u->cost = (static_cast<double>(u->input_tokens) * c.input_price_per_mtok +
             static_cast<double>(u->output_tokens) * c.output_price_per_mtok) /
            1e6;
}

// ---- The HTTP providers: one call shape, two wire formats. ----

// What a provider's wire format decides; the call itself (POST, streaming, errors, limits,
// cost) is HttpProvider::Chat's, the same for all.
class HttpProvider : public Provider {
 public:
  explicit HttpProvider(ProviderConfig c) : c_(std::move(c)), key_(KeyFrom(c_.api_key_env)) {}

  Result<ChatResult> Chat(const ChatRequest& req, const DeltaFn& on_delta,
                          const CancelToken* cancel, HttpFailure* failure) override {
    ChatResult out;
    out.provider = c_.name;
    out.model = req.model.empty() ? c_.model : req.model;
    PostRequest post;
    Json body = Json::object();
    for (auto it = req.extra.begin(); it != req.extra.end(); ++it) body[it.key()] = it.value();
    body["model"] = out.model;
    Prepare(req, static_cast<bool>(on_delta), &body, &post);
    post.body = DumpJson(body);
    post.limits = c_.limits;
    post.ca_bundle = c_.ca_bundle;
    post.cancel = cancel;
    SseReader sse;
    Status stream_error;
    bool complete = false;
    StreamState state;
    size_t notified = 0;  // function calls passed to on_tool_call
    auto notify = [&](size_t complete_calls) {
      for (; notified < std::min(complete_calls, out.tool_calls.size()); ++notified) {
        if (req.on_tool_call) req.on_tool_call(out.tool_calls[notified]);
      }
    };
    if (on_delta) {
      post.on_body = [&](std::string_view bytes) {
        std::vector<SseReader::Event> events;
        if (Status st = sse.Feed(bytes, &events); !st.ok()) {
          stream_error = st;
          return false;
        }
        for (const auto& e : events) {
          std::string text;
          Status st = OnEvent(e, &out, &text, &complete, &state);
          if (!st.ok()) {
            stream_error = st;
            return false;
          }
          if (state.arguments_bytes > kMaxContentBytes) {
            stream_error = ResourceExhaustedError("the streamed function calls are too long");
            return false;
          }
          notify(complete ? out.tool_calls.size() : state.complete_calls);
          if (text.empty()) continue;
          if (out.content.size() + text.size() > kMaxContentBytes) {
            stream_error = ResourceExhaustedError("the streamed reply is too long");
            return false;
          }
          out.content += text;
          if (!on_delta(text)) return false;
        }
        return true;
      };
    }
    auto reply = Post(post);
    if (!reply.ok()) return TransportFailure(c_.name, reply.status(), failure);
    if (!stream_error.ok()) {
      if (failure && out.content.empty()) *failure = {0, std::nullopt, stream_error.message()};
      return Status(stream_error.code(), c_.name + ": " + stream_error.message());
    }
    if (reply->stopped) return UnavailableError("cancelled");
    if (reply->status < 200 || reply->status >= 300) {
      return StatusOfReply(c_.name, *reply, failure);
    }
    if (!on_delta) {
      auto j = ParseJson(reply->body);
      Status st =
          j.ok() && j->is_object() ? OnWhole(*j, &out) : UnavailableError("the reply is not JSON");
      if (!st.ok()) {
        if (failure) *failure = {0, std::nullopt, "malformed reply"};
        return UnavailableError(c_.name + ": " + st.message() + ": " +
                                ToValidUtf8(reply->body.substr(0, 300)));
      }
    } else if (!complete) {
      if (failure && out.content.empty()) *failure = {0, std::nullopt, "the stream ended early"};
      return UnavailableError(c_.name + ": the stream ended before its end marker");
    }
    notify(out.tool_calls.size());
    AddCost(c_, &out.usage);
    return out;
  }

 protected:
  // What a stream's events build up between them.
  struct StreamState {
    size_t complete_calls = 0;        // out->tool_calls[0..n) have their whole arguments
    std::map<int64_t, size_t> calls;  // the wire's index of a call -> its place in tool_calls
    size_t arguments_bytes = 0;
  };
  // The request's URL, headers and format-specific body fields.
  virtual void Prepare(const ChatRequest& req, bool stream, Json* body, PostRequest* post) = 0;
  // One streamed event: text to deliver, usage, finish reason, whether the stream is complete.
  virtual Status OnEvent(const SseReader::Event& e, ChatResult* out, std::string* text,
                         bool* complete, StreamState* state) = 0;
  // A reply that was not streamed.
  virtual Status OnWhole(const Json& j, ChatResult* out) = 0;

  static void ReadTokens(const Json& u, const char* in, const char* out_key, Usage* usage) {
    if (!u.is_object()) return;
    if (u.contains(in) && u[in].is_number_integer()) usage->input_tokens = u[in].get<int64_t>();
    if (u.contains(out_key) && u[out_key].is_number_integer()) {
      usage->output_tokens = u[out_key].get<int64_t>();
    }
  }
  static std::string StringAt(const Json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  }
  static int64_t IndexAt(const Json& j) {
    auto it = j.find("index");
    return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
  }

  ProviderConfig c_;
  std::string key_;
};

// OpenAI-compatible chat completions.
class OpenAiProvider : public HttpProvider {
 public:
  using HttpProvider::HttpProvider;

 protected:
  void Prepare(const ChatRequest& req, bool stream, Json* body, PostRequest* post) override {
    Json msgs = Json::array();
    for (const auto& m : req.messages) {
      Json j = {{"role", m.role}, {"content", ToValidUtf8(m.content)}};
      if (!m.tool_calls.empty()) {
        Json calls = Json::array();
        for (const auto& c : m.tool_calls) {
          calls.push_back(
              {{"id", c.id},
               {"type", "function"},
               {"function", {{"name", c.name}, {"arguments", ToValidUtf8(c.arguments)}}}});
        }
        j["tool_calls"] = std::move(calls);
        if (m.content.empty()) j["content"] = nullptr;
      }
      if (m.role == "tool") j["tool_call_id"] = m.tool_call_id;
      msgs.push_back(std::move(j));
    }
    (*body)["messages"] = std::move(msgs);
    if (!req.tools.empty()) {
      Json tools = Json::array();
      for (const auto& t : req.tools) {
        tools.push_back({{"type", "function"},
                         {"function",
                          {{"name", t.name},
                           {"description", ToValidUtf8(t.description)},
                           {"parameters", t.parameters}}}});
      }
      (*body)["tools"] = std::move(tools);
    }
    if (req.temperature) (*body)["temperature"] = *req.temperature;
    if (req.top_p) (*body)["top_p"] = *req.top_p;
    if (req.max_tokens) (*body)["max_tokens"] = *req.max_tokens;
    (*body)["stream"] = stream;
    if (stream) (*body)["stream_options"] = {{"include_usage", true}};
    post->url = TrimSlash(c_.base_url) + "/chat/completions";
    if (!key_.empty()) post->headers.push_back("Authorization: Bearer " + key_);
  }

  Status OnEvent(const SseReader::Event& e, ChatResult* out, std::string* text, bool* complete,
                 StreamState* state) override {
    if (e.data == "[DONE]") {
      *complete = true;
      return Status::Ok();
    }
    auto j = ParseJson(e.data);
    if (!j.ok() || !j->is_object()) {
      return UnavailableError("a streamed chunk is not JSON: " +
                              ToValidUtf8(e.data.substr(0, 200)));
    }
    if (j->contains("error")) {
      return UnavailableError("the stream reported an error: " +
                              DumpJson((*j)["error"]).substr(0, 500));
    }
    if (j->contains("usage")) {
      ReadTokens((*j)["usage"], "prompt_tokens", "completion_tokens", &out->usage);
    }
    auto choices = j->find("choices");
    if (choices == j->end() || !choices->is_array() || choices->empty()) return Status::Ok();
    const Json& choice = (*choices)[0];
    if (choice.contains("delta") && choice["delta"].is_object()) {
      const Json& delta = choice["delta"];
      *text = StringAt(delta, "content");
      // Function calls come in pieces by index; a call is whole once a later one starts.
      if (auto calls = delta.find("tool_calls"); calls != delta.end() && calls->is_array()) {
        for (const auto& c : *calls) {
          if (!c.is_object()) continue;
          int64_t index = IndexAt(c);
          auto [it, added] = state->calls.emplace(index, out->tool_calls.size());
          if (added) {
            state->complete_calls = out->tool_calls.size();
            out->tool_calls.emplace_back();
          }
          ToolCall& call = out->tool_calls[it->second];
          if (std::string id = StringAt(c, "id"); !id.empty()) call.id = id;
          if (c.contains("function") && c["function"].is_object()) {
            call.name += StringAt(c["function"], "name");
            std::string args = StringAt(c["function"], "arguments");
            call.arguments += args;
            state->arguments_bytes += args.size();
          }
        }
      }
    }
    if (std::string f = StringAt(choice, "finish_reason"); !f.empty()) {
      out->finish_reason = f;
      state->complete_calls = out->tool_calls.size();
    }
    return Status::Ok();
  }

  Status OnWhole(const Json& j, ChatResult* out) override {
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) {
      return UnavailableError("the reply is not a chat completion");
    }
    const Json& choice = j["choices"][0];
    if (choice.contains("message") && choice["message"].is_object()) {
      const Json& m = choice["message"];
      out->content = StringAt(m, "content");
      if (auto calls = m.find("tool_calls"); calls != m.end() && calls->is_array()) {
        for (const auto& c : *calls) {
          if (!c.is_object() || !c.contains("function") || !c["function"].is_object()) continue;
          out->tool_calls.push_back({StringAt(c, "id"), StringAt(c["function"], "name"),
                                     StringAt(c["function"], "arguments")});
        }
      }
    }
    out->finish_reason = StringAt(choice, "finish_reason");
    if (j.contains("usage")) {
      ReadTokens(j["usage"], "prompt_tokens", "completion_tokens", &out->usage);
    }
    return Status::Ok();
  }
};

// The Anthropic Messages API.
class AnthropicProvider : public HttpProvider {
 public:
  using HttpProvider::HttpProvider;

 protected:
  void Prepare(const ChatRequest& req, bool stream, Json* body, PostRequest* post) override {
    std::string system;
    Json msgs = Json::array();
    for (const auto& m : req.messages) {
      if (m.role == "system") {
        system += (system.empty() ? "" : "\n\n") + ToValidUtf8(m.content);
        continue;
      }
      // Content as blocks: text, the assistant's tool_use, a tool's result (sent as the user's).
      std::string role = m.role == "tool" ? "user" : m.role;
      Json blocks = Json::array();
      if (m.role == "tool") {
        blocks.push_back({{"type", "tool_result"},
                          {"tool_use_id", m.tool_call_id},
                          {"content", ToValidUtf8(m.content)}});
      } else if (!m.content.empty() || m.tool_calls.empty()) {
        blocks.push_back({{"type", "text"}, {"text", ToValidUtf8(m.content)}});
      }
      for (const auto& c : m.tool_calls) {
        Json input = ParseJsonOrString(c.arguments);
        if (!input.is_object()) input = Json::object();
        blocks.push_back({{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", input}});
      }
      // The API wants user and assistant turns alternating: neighbours of one role merge.
      if (!msgs.empty() && msgs.back()["role"] == role) {
        for (auto& b : blocks) msgs.back()["content"].push_back(std::move(b));
      } else {
        msgs.push_back({{"role", role}, {"content", std::move(blocks)}});
      }
    }
    if (!system.empty()) (*body)["system"] = system;
    if (!req.tools.empty()) {
      Json tools = Json::array();
      for (const auto& t : req.tools) {
        tools.push_back({{"name", t.name},
                         {"description", ToValidUtf8(t.description)},
                         {"input_schema", t.parameters}});
      }
      (*body)["tools"] = std::move(tools);
    }
    (*body)["messages"] = std::move(msgs);
    (*body)["max_tokens"] = req.max_tokens.value_or(4096);
    if (req.temperature) (*body)["temperature"] = std::min(*req.temperature, 1.0);
    if (req.top_p) (*body)["top_p"] = *req.top_p;
    (*body)["stream"] = stream;
    post->url = TrimSlash(c_.base_url) + "/v1/messages";
    if (!key_.empty()) post->headers.push_back("x-api-key: " + key_);
    post->headers.push_back("anthropic-version: 2023-06-01");
  }

  Status OnEvent(const SseReader::Event& e, ChatResult* out, std::string* text, bool* complete,
                 StreamState* state) override {
    auto j = ParseJson(e.data);
    if (!j.ok() || !j->is_object()) return Status::Ok();  // e.g. a ping
    std::string type = StringAt(*j, "type");
    if (type.empty()) type = e.event;
    if (type == "error") {
      return UnavailableError("the stream reported an error: " +
                              DumpJson(j->value("error", Json())).substr(0, 500));
    }
    if (type == "message_start" && j->contains("message") && (*j)["message"].is_object() &&
        (*j)["message"].contains("usage")) {
      ReadTokens((*j)["message"]["usage"], "input_tokens", "output_tokens", &out->usage);
    } else if (type == "message_delta") {
      if (j->contains("usage")) {
        // Only output_tokens here; input_tokens came with message_start.
        Usage u = out->usage;
        ReadTokens((*j)["usage"], "input_tokens", "output_tokens", &u);
        out->usage.output_tokens = u.output_tokens;
      }
      if (j->contains("delta") && (*j)["delta"].is_object()) {
        if (std::string f = StringAt((*j)["delta"], "stop_reason"); !f.empty()) {
          out->finish_reason = f;
        }
      }
    } else if (type == "message_stop") {
      *complete = true;
    } else if (type == "content_block_start" && j->contains("content_block") &&
               (*j)["content_block"].is_object() &&
               StringAt((*j)["content_block"], "type") == "tool_use") {
      const Json& b = (*j)["content_block"];
      state->calls[IndexAt(*j)] = out->tool_calls.size();
      out->tool_calls.push_back({StringAt(b, "id"), StringAt(b, "name"), ""});
    } else if (type == "content_block_delta" && j->contains("delta") && (*j)["delta"].is_object()) {
      const Json& d = (*j)["delta"];
      if (StringAt(d, "type") == "input_json_delta") {
        if (auto it = state->calls.find(IndexAt(*j)); it != state->calls.end()) {
          std::string part = StringAt(d, "partial_json");
          out->tool_calls[it->second].arguments += part;
          state->arguments_bytes += part.size();
        }
      } else {
        *text = StringAt(d, "text");
      }
    } else if (type == "content_block_stop") {
      // Calls end in order: this one, and every one before it, is whole.
      if (auto it = state->calls.find(IndexAt(*j)); it != state->calls.end()) {
        ToolCall& call = out->tool_calls[it->second];
        if (call.arguments.empty()) call.arguments = "{}";
        state->complete_calls = std::max(state->complete_calls, it->second + 1);
      }
    }
    return Status::Ok();
  }

  Status OnWhole(const Json& j, ChatResult* out) override {
    if (!j.contains("content") || !j["content"].is_array()) {
      return UnavailableError("the reply is not a message");
    }
    for (const auto& block : j["content"]) {
      if (block.is_object() && StringAt(block, "type") == "text") {
        out->content += StringAt(block, "text");
      }
      if (block.is_object() && StringAt(block, "type") == "tool_use") {
        out->tool_calls.push_back({StringAt(block, "id"), StringAt(block, "name"),
                                   DumpJson(block.value("input", Json::object()))});
      }
    }
    out->finish_reason = StringAt(j, "stop_reason");
    if (j.contains("usage")) ReadTokens(j["usage"], "input_tokens", "output_tokens", &out->usage);
    return Status::Ok();
  }
};

// ---- Replay: a recording played back. ----

class ReplayProvider : public Provider {
 public:
  ReplayProvider(ProviderConfig c, std::vector<Json> turns)
      : c_(std::move(c)), turns_(std::move(turns)) {}

  Result<ChatResult> Chat(const ChatRequest& req, const DeltaFn& on_delta, const CancelToken*,
                          HttpFailure*) override {
    if (req.turn < 0 || static_cast<size_t>(req.turn) >= turns_.size()) {
      return FailedPreconditionError("the recording " + c_.replay_file + " has " +
                                     std::to_string(turns_.size()) + " turns; turn " +
                                     std::to_string(req.turn + 1) + " was asked for");
    }
    const Json& t = turns_[static_cast<size_t>(req.turn)];
    ChatResult out;
    out.provider = c_.name;
    out.model = t.value("model", c_.model.empty() ? std::string("replay") : c_.model);
    out.content = t.value("content", "");
    out.finish_reason = "stop";
    if (auto calls = t.find("tool_calls"); calls != t.end() && calls->is_array()) {
      for (const auto& c : *calls) {
        if (!c.is_object()) continue;
        Json args = c.value("arguments", Json::object());
        out.tool_calls.push_back({c.value("id", ""), c.value("name", ""),
                                  args.is_string() ? args.get<std::string>() : DumpJson(args)});
      }
    }
    if (t.contains("usage") && t["usage"].is_object()) {
      out.usage.input_tokens = t["usage"].value("input_tokens", int64_t{0});
      out.usage.output_tokens = t["usage"].value("output_tokens", int64_t{0});
    }
    if (on_delta) {
      // Deterministic pieces, as a model would stream them.
      for (size_t i = 0; i < out.content.size(); i += 16) {
        if (!on_delta(std::string_view(out.content).substr(i, 16))) break;
      }
      for (const auto& c : out.tool_calls) {
        if (req.on_tool_call) req.on_tool_call(c);
      }
    }
    return out;
  }

 private:
  ProviderConfig c_;
  std::vector<Json> turns_;
};

Result<std::vector<Json>> ReadRecording(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("the recording " + path + " cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  std::vector<Json> turns;
  // A JSON document {"turns": [...]}, or JSON lines, one turn each.
  if (auto whole = ParseJson(text); whole.ok() && whole->is_object()) {
    if (!whole->contains("turns") || !(*whole)["turns"].is_array()) {
      return InvalidArgumentError(path + ": a recording is {\"turns\": [{\"content\": ...}]}");
    }
    for (const auto& t : (*whole)["turns"]) turns.push_back(t);
  } else {
    std::istringstream lines(text);
    int n = 0;
    for (std::string line; std::getline(lines, line);) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      auto j = ParseJson(line);
      if (!j.ok())
        return InvalidArgumentError(path + ":" + std::to_string(n) + ": " + j.status().message());
      turns.push_back(*j);
    }
  }
  for (size_t i = 0; i < turns.size(); ++i) {
    if (!turns[i].is_object() || !turns[i].contains("content") ||
        !turns[i]["content"].is_string()) {
      return InvalidArgumentError(path + ": turn " + std::to_string(i + 1) +
                                  " has no \"content\" string");
    }
  }
  return turns;
}

}  // namespace

std::optional<ProviderConfig> DefaultProvider(std::string_view name) {
  ProviderConfig c;
  c.name = std::string(name);
  c.type = "openai";
  if (name == "openai") {
    c.base_url = "https://api.openai.com/v1";
    c.api_key_env = "OPENAI_API_KEY";
    c.model = "gpt-4o-mini";
  } else if (name == "google" || name == "gemini") {
    c.base_url = "https://generativelanguage.googleapis.com/v1beta/openai";
    c.api_key_env = "GEMINI_API_KEY";
    c.model = "gemini-2.0-flash";
  } else if (name == "groq") {
    c.base_url = "https://api.groq.com/openai/v1";
    c.api_key_env = "GROQ_API_KEY";
    c.model = "llama-3.3-70b-versatile";
  } else if (name == "ollama") {
    c.base_url = "http://127.0.0.1:11434/v1";
    c.model = "llama3.2";
  } else if (name == "anthropic") {
    c.type = "anthropic";
    c.base_url = "https://api.anthropic.com";
    c.api_key_env = "ANTHROPIC_API_KEY";
    c.model = "claude-3-5-haiku-latest";
  } else {
    return std::nullopt;
  }
  return c;
}

const std::vector<std::string>& DefaultProviderNames() {
  static const std::vector<std::string> names = {"openai",    "google", "gemini",
                                                 "anthropic", "ollama", "groq"};
  return names;
}

Result<std::unique_ptr<Provider>> MakeProvider(const ProviderConfig& config) {
  if (config.type == "openai") return std::unique_ptr<Provider>(new OpenAiProvider(config));
  if (config.type == "anthropic") {
    return std::unique_ptr<Provider>(new AnthropicProvider(config));
  }
  if (config.type == "replay") {
    CORTEX_ASSIGN_OR_RETURN(std::vector<Json> turns, ReadRecording(config.replay_file));
    return std::unique_ptr<Provider>(new ReplayProvider(config, std::move(turns)));
  }
  return InvalidArgumentError("llm provider " + config.name + ": unknown type '" + config.type +
                              "' (openai, anthropic or replay)");
}

}  // namespace cortex::llm
