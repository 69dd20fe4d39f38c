#include "deploy/docker.h"
#include "common/fd.h"
#include "common/json.h"

#include <curl/curl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

namespace cortex::deploy::docker {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxReplyBytes = 16u << 20;      // any one reply, logs included
constexpr size_t kMaxLogLineBytes = 1u << 20;     // a longer "line" is cut into pieces
constexpr size_t kMaxErrorBodyBytes = 64u << 10;  // of a failed streaming request

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// ---------------------------------------------------------------------------------------------
// URLs.

bool IsUnreserved(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// Percent-encodes everything but unreserved characters and `keep`.
std::string Escape(std::string_view text, std::string_view keep = "") {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : text) {
    if (IsUnreserved(c) || keep.find(c) != std::string_view::npos) {
      out += c;
    } else {
      auto u = static_cast<unsigned char>(c);
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

// `filters={"label":["k=v","k"]}`, escaped, or "" for an empty filter.
std::string LabelFilterQuery(const LabelFilter& filter) {
  if (filter.empty()) return "";
  json labels = json::array();
  for (const auto& [key, value] : filter) labels.push_back(value.empty() ? key : key + "=" + value);
  return "filters=" + Escape(DumpJson(json{{"label", labels}}));
}

std::string WithQuery(std::string path, const std::string& query) {
  if (query.empty()) return path;
  return path + (path.find('?') == std::string::npos ? "?" : "&") + query;
}

std::string TailParam(size_t tail) { return tail == kAllLines ? "all" : std::to_string(tail); }

// ---------------------------------------------------------------------------------------------
// Times: "2024-05-01T12:00:00.123456789Z" (RFC 3339, nanoseconds) -> Unix ms. Docker's zero time
// ("0001-01-01T00:00:00Z") and anything unparsable -> 0.

std::optional<int64_t> ParseTimeMs(std::string_view text, size_t* consumed = nullptr) {
  int year, mon, day, hour, min, sec;
  int n = 0;
  std::string s(text.substr(0, 64));
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &year, &mon, &day, &hour, &min, &sec,
                  &n) != 6 ||
      n != 19) {
    return std::nullopt;
  }
  size_t pos = static_cast<size_t>(n);
  int64_t millis = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (digits < 3) millis = millis * 10 + (s[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return std::nullopt;
    for (; digits < 3; ++digits) millis *= 10;
  }
  int64_t offset_s = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos + 6 <= s.size() && (s[pos] == '+' || s[pos] == '-') && s[pos + 3] == ':') {
    int oh = 0, om = 0;
    if (std::sscanf(s.c_str() + pos + 1, "%2d:%2d", &oh, &om) != 2) return std::nullopt;
    offset_s = (oh * 3600 + om * 60) * (s[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (consumed) *consumed = pos;
  if (year <= 1) return 0;  // Go's zero time
  struct tm tm = {};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  int64_t secs = static_cast<int64_t>(::timegm(&tm)) - offset_s;
  return secs * 1000 + millis;
}

// ---------------------------------------------------------------------------------------------
// HTTP over the unix socket.

struct Request {
  const char* method = "GET";
  std::string path;  // with its query
  std::optional<std::string> json_body;
  std::chrono::milliseconds timeout{0};  // 0: none (streaming)
  // Streaming: a 2xx body goes here instead of the reply; false stops the transfer.
  std::function<bool(std::string_view)> on_data;
  const exec::CancelToken* cancel = nullptr;
};

struct Reply {
  long status = 0;
  std::string body;
  bool stopped = false;  // on_data returned false or the CancelToken fired
};

struct Transfer {
  CURL* curl = nullptr;
  const Request* request = nullptr;
  Reply* reply = nullptr;
  bool too_big = false;
};

size_t OnWrite(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * nmemb;
  if (t->request->on_data) {
    long code = 0;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 && code < 300) {
      if (!t->request->on_data(std::string_view(data, n))) {
        t->reply->stopped = true;
        return 0;
      }
      return n;
    }
    if (t->reply->body.size() + n > kMaxErrorBodyBytes) return n;  // keep the start of it
  } else if (t->reply->body.size() + n > kMaxReplyBytes) {
    t->too_big = true;
    return 0;
  }
  t->reply->body.append(data, n);
  return n;
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (t->request->cancel && t->request->cancel->cancelled()) {
    t->reply->stopped = true;
    return 1;
  }
  return 0;
}

std::string NotAnswering(const std::string& socket_path, const std::string& why) {
  return "the Docker daemon is not answering at " + socket_path + ": " + why;
}

Result<Reply> Perform(const std::string& socket_path, const Request& request) {
  GlobalInit();
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) return InternalError("curl_easy_init failed");
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr,
                                                                      &curl_slist_free_all);
  Reply reply;
  Transfer transfer{curl.get(), &request, &reply, false};
  char errbuf[CURL_ERROR_SIZE] = {0};
  std::string url = "http://localhost" + request.path;

  CURL* h = curl.get();
  curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, socket_path.c_str());
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &OnWrite);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
  if (request.timeout.count() > 0) {
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::min<int64_t>(request.timeout.count(), 5000)));
  }
  if (request.cancel) {
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &OnProgress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &transfer);
  }
  if (std::strcmp(request.method, "GET") != 0) {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method);
  }
  if (request.json_body) {
    headers.reset(curl_slist_append(headers.release(), "Content-Type: application/json"));
    headers.reset(curl_slist_append(headers.release(), "Expect:"));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.json_body->c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.json_body->size()));
  } else if (std::strcmp(request.method, "POST") == 0) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
  }

  CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &reply.status);
  if (reply.stopped) return reply;
  if (transfer.too_big) {
    return ResourceExhaustedError("the Docker daemon's reply to " + std::string(request.method) +
                                  " " + request.path + " is larger than " +
                                  std::to_string(kMaxReplyBytes >> 20) + " MiB");
  }
  if (rc != CURLE_OK) {
    std::string why;
    struct stat st;
    if (reply.status == 0 && ::stat(socket_path.c_str(), &st) != 0) {
      why = "no socket there (" + ErrnoText(errno) + "; is dockerd running?)";
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
      why = "no answer to " + std::string(request.method) + " " + request.path + " within " +
            std::to_string(request.timeout.count()) + " ms";
    } else {
      why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
      long os_errno = 0;
      curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
      if (os_errno != 0) why += " (" + ErrnoText(static_cast<int>(os_errno)) + ")";
    }
    return UnavailableError(NotAnswering(socket_path, why));
  }
  return reply;
}

// The daemon's {"message": "..."} of an error reply, else the body itself.
std::string DaemonMessage(const std::string& body) {
  try {
    json j = json::parse(body);
    if (j.is_object() && j.contains("message") && j["message"].is_string()) {
      return j["message"].get<std::string>();
    }
  } catch (const json::exception&) {
  }
  std::string text = body.substr(0, 500);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text.empty() ? "(no message)" : text;
}

Status HttpError(const Request& request, const Reply& reply) {
  std::string message = "Docker: " + DaemonMessage(reply.body) + " (" + request.method + " " +
                        request.path + ": " + std::to_string(reply.status) + ")";
  switch (reply.status) {
    case 400:
      return InvalidArgumentError(message);
    case 404:
      return NotFoundError(message);
    case 403:
    case 409:
      return FailedPreconditionError(message);
    case 503:
      return UnavailableError(message);
    default:
      return InternalError(message);
  }
}

// Performs `request`; a non-2xx reply becomes an error Status.
Result<Reply> Call(const std::string& socket_path, const Request& request) {
  CORTEX_ASSIGN_OR_RETURN(Reply reply, Perform(socket_path, request));
  if (!reply.stopped && (reply.status < 200 || reply.status >= 300)) {
    return HttpError(request, reply);
  }
  return reply;
}

Result<json> CallJson(const std::string& socket_path, const Request& request) {
  CORTEX_ASSIGN_OR_RETURN(Reply reply, Call(socket_path, request));
  if (JsonNestingDepth(reply.body) > kMaxJsonDepth) {
    return InternalError("Docker: reply to " + std::string(request.method) + " " + request.path +
                         " nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  try {
    return json::parse(reply.body);
  } catch (const json::exception& e) {
    return InternalError("Docker: unreadable reply to " + std::string(request.method) + " " +
                         request.path + ": " + e.what());
  }
}

Request Get(std::string path, std::chrono::milliseconds timeout) {
  Request r;
  r.path = std::move(path);
  r.timeout = timeout;
  return r;
}

Request Method(const char* method, std::string path, std::chrono::milliseconds timeout) {
  Request r = Get(std::move(path), timeout);
  r.method = method;
  return r;
}

// ---------------------------------------------------------------------------------------------
// JSON -> structs. Missing or null fields keep their defaults.

std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

int64_t Int(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<int64_t>() : 0;
}

uint64_t UInt(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<uint64_t>() : 0;
}

const json& Obj(const json& j, const char* key) {
  static const json kEmpty = json::object();
  auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : kEmpty;
}

std::map<std::string, std::string> StringMap(const json& j) {
  std::map<std::string, std::string> out;
  if (!j.is_object()) return out;
  for (const auto& [k, v] : j.items()) {
    if (v.is_string()) out[k] = v.get<std::string>();
  }
  return out;
}

Container ContainerFromInspect(const json& j) {
  Container c;
  c.id = Str(j, "Id");
  c.name = Str(j, "Name");
  if (!c.name.empty() && c.name[0] == '/') c.name.erase(0, 1);
  const json& config = Obj(j, "Config");
  c.image = Str(config, "Image");
  c.labels = StringMap(Obj(config, "Labels"));
  if (auto it = c.labels.find(kComposeServiceLabel); it != c.labels.end()) c.service = it->second;
  const json& state = Obj(j, "State");
  c.state = Str(state, "Status");
  c.exit_code = static_cast<int>(Int(state, "ExitCode"));
  c.error = Str(state, "Error");
  auto oom = state.find("OOMKilled");
  c.oom_killed = oom != state.end() && oom->is_boolean() && oom->get<bool>();
  c.health = Str(Obj(state, "Health"), "Status");
  c.restart_count = static_cast<int>(Int(j, "RestartCount"));
  c.started_ms = ParseTimeMs(Str(state, "StartedAt")).value_or(0);
  if (c.state != "running" && c.state != "paused" && c.state != "restarting") {
    c.finished_ms = ParseTimeMs(Str(state, "FinishedAt")).value_or(0);
  }
  const json& ports = Obj(Obj(j, "NetworkSettings"), "Ports");
  for (const auto& [spec, bindings] : ports.items()) {
    if (!bindings.is_array()) continue;  // exposed, not published
    size_t slash = spec.find('/');
    int container_port = std::atoi(spec.substr(0, slash).c_str());
    std::string protocol = slash == std::string::npos ? "tcp" : spec.substr(slash + 1);
    for (const json& b : bindings) {
      if (!b.is_object()) continue;
      PortBinding p;
      p.container_port = container_port;
      p.protocol = protocol;
      p.host_ip = Str(b, "HostIp");
      p.host_port = std::atoi(Str(b, "HostPort").c_str());
      c.ports.push_back(std::move(p));
    }
  }
  return c;
}

Network NetworkFromJson(const json& j) {
  return Network{Str(j, "Id"), Str(j, "Name"), Str(j, "Driver"), StringMap(Obj(j, "Labels"))};
}

// ---------------------------------------------------------------------------------------------
// Log streams. Without a TTY the daemon multiplexes stdout and stderr in frames with an 8-byte
// header {stream, 0, 0, 0, size (big-endian u32)}; with one it sends the raw bytes. Lines carry
// a "<RFC 3339 time> " prefix (timestamps=1).

class LogDecoder {
 public:
  LogDecoder(bool tty, std::function<bool(const LogLine&)> emit)
      : raw_(tty), emit_(std::move(emit)) {}

  // False when the consumer asked to stop.
  bool Feed(std::string_view data) {
    if (raw_) return Append(false, data);
    pending_.append(data);
    size_t pos = 0;
    bool go = true;
    while (go && pending_.size() - pos >= 8) {
      auto byte = [&](size_t i) { return static_cast<unsigned char>(pending_[pos + i]); };
      if (byte(0) > 2 || byte(1) != 0 || byte(2) != 0 || byte(3) != 0) {
        // Not a frame header: the stream is raw after all (a TTY we were not told about).
        raw_ = true;
        std::string rest = pending_.substr(pos);
        pending_.clear();
        return Append(false, rest);
      }
      size_t size = (size_t{byte(4)} << 24) | (size_t{byte(5)} << 16) | (size_t{byte(6)} << 8) |
                    size_t{byte(7)};
      if (pending_.size() - pos - 8 < size) break;
      go = Append(byte(0) == 2, std::string_view(pending_).substr(pos + 8, size));
      pos += 8 + size;
    }
    pending_.erase(0, pos);
    return go;
  }

  // Emits unterminated last lines.
  bool Finish() {
    for (int s = 0; s < 2; ++s) {
      if (!partial_[s].empty() && !EmitLine(s == 1, std::move(partial_[s]))) return false;
      partial_[s].clear();
    }
    return true;
  }

 private:
  bool Append(bool is_stderr, std::string_view data) {
    std::string& partial = partial_[is_stderr ? 1 : 0];
    while (!data.empty()) {
      size_t nl = data.find('\n');
      if (nl == std::string_view::npos) {
        partial.append(data);
        if (partial.size() >= kMaxLogLineBytes) {
          if (!EmitLine(is_stderr, std::move(partial))) return false;
          partial.clear();
        }
        return true;
      }
      partial.append(data.substr(0, nl));
      data.remove_prefix(nl + 1);
      if (!EmitLine(is_stderr, std::move(partial))) return false;
      partial.clear();
    }
    return true;
  }

  bool EmitLine(bool is_stderr, std::string text) {
    LogLine line;
    line.is_stderr = is_stderr;
    size_t consumed = 0;
    if (auto t = ParseTimeMs(text, &consumed);
        t && consumed < text.size() && text[consumed] == ' ') {
      line.time_ms = *t;
      text.erase(0, consumed + 1);
    } else if (t && consumed == text.size()) {
      line.time_ms = *t;
      text.clear();
    }
    if (!text.empty() && text.back() == '\r') text.pop_back();
    line.text = std::move(text);
    return emit_(line);
  }

  bool raw_;
  std::function<bool(const LogLine&)> emit_;
  std::string pending_;
  std::string partial_[2];
};

std::string ContainerPath(const std::string& id) { return "/containers/" + Escape(id); }

}  // namespace

// ---------------------------------------------------------------------------------------------

Client::Client(std::string socket_path, std::chrono::milliseconds timeout)
    : socket_path_(std::move(socket_path)), timeout_(timeout) {
  GlobalInit();
}

Status Client::Ping() const {
  auto reply = Perform(socket_path_, Get("/_ping", timeout_));
  if (!reply.ok()) return reply.status();
  if (reply->status != 200) {
    return UnavailableError(NotAnswering(socket_path_, "/_ping answered HTTP " +
                                                           std::to_string(reply->status) + ": " +
                                                           DaemonMessage(reply->body)));
  }
  return Status::Ok();
}

Result<Container> Client::Inspect(const std::string& id_or_name) const {
  CORTEX_ASSIGN_OR_RETURN(
      json j, CallJson(socket_path_, Get(ContainerPath(id_or_name) + "/json", timeout_)));
  try {
    return ContainerFromInspect(j);
  } catch (const json::exception& e) {
    return InternalError("Docker: unexpected container JSON for " + id_or_name + ": " + e.what());
  }
}

Result<std::vector<Container>> Client::ListContainers(const LabelFilter& label_filter,
                                                      bool all) const {
  std::string path = WithQuery(all ? "/containers/json?all=1" : "/containers/json",
                               LabelFilterQuery(label_filter));
  CORTEX_ASSIGN_OR_RETURN(json list, CallJson(socket_path_, Get(path, timeout_)));
  if (!list.is_array()) return InternalError("Docker: GET " + path + " did not return a list");
  std::vector<Container> out;
  for (const json& item : list) {
    if (!item.is_object()) continue;
    auto c = Inspect(Str(item, "Id"));
    if (!c.ok()) {
      if (c.status().code() == StatusCode::kNotFound) continue;  // removed meanwhile
      return c.status();
    }
    c->status = Str(item, "Status");
    out.push_back(std::move(c).value());
  }
  std::sort(out.begin(), out.end(),
            [](const Container& a, const Container& b) { return a.name < b.name; });
  return out;
}

Result<std::vector<LogLine>> Client::Logs(const std::string& id, size_t tail) const {
  CORTEX_ASSIGN_OR_RETURN(json inspect,
                          CallJson(socket_path_, Get(ContainerPath(id) + "/json", timeout_)));
  bool tty = false;
  try {
    tty = Obj(inspect, "Config").value("Tty", false);
  } catch (const json::exception&) {
  }
  std::string path =
      ContainerPath(id) + "/logs?stdout=1&stderr=1&timestamps=1&tail=" + TailParam(tail);
  CORTEX_ASSIGN_OR_RETURN(Reply reply, Call(socket_path_, Get(path, timeout_)));
  std::vector<LogLine> lines;
  LogDecoder decoder(tty, [&](const LogLine& line) {
    lines.push_back(line);
    return true;
  });
  decoder.Feed(reply.body);
  decoder.Finish();
  return lines;
}

Status Client::FollowLogs(const std::string& id, size_t tail,
                          const std::function<bool(const LogLine&)>& on_line,
                          const exec::CancelToken* cancel) const {
  CORTEX_ASSIGN_OR_RETURN(json inspect,
                          CallJson(socket_path_, Get(ContainerPath(id) + "/json", timeout_)));
  bool tty = false;
  try {
    tty = Obj(inspect, "Config").value("Tty", false);
  } catch (const json::exception&) {
  }
  LogDecoder decoder(tty, on_line);
  Request request = Get(
      ContainerPath(id) + "/logs?follow=1&stdout=1&stderr=1&timestamps=1&tail=" + TailParam(tail),
      std::chrono::milliseconds(0));
  request.on_data = [&](std::string_view data) { return decoder.Feed(data); };
  request.cancel = cancel;
  CORTEX_ASSIGN_OR_RETURN(Reply reply, Call(socket_path_, request));
  if (!reply.stopped) decoder.Finish();
  return Status::Ok();
}

Result<Stats> Client::OneShotStats(const std::string& id) const {
  // The daemon waits for a second CPU sample: allow for it on top of the usual timeout.
  CORTEX_ASSIGN_OR_RETURN(json j,
                          CallJson(socket_path_, Get(ContainerPath(id) + "/stats?stream=false",
                                                     timeout_ + std::chrono::seconds(5))));
  try {
    Stats stats;
    const json& cpu = Obj(j, "cpu_stats");
    const json& precpu = Obj(j, "precpu_stats");
    double cpu_delta = static_cast<double>(UInt(Obj(cpu, "cpu_usage"), "total_usage")) -
                       static_cast<double>(UInt(Obj(precpu, "cpu_usage"), "total_usage"));
    double system_delta = static_cast<double>(UInt(cpu, "system_cpu_usage")) -
                          static_cast<double>(UInt(precpu, "system_cpu_usage"));
    uint64_t cpus = UInt(cpu, "online_cpus");
    if (cpus == 0) {
      auto per_cpu = Obj(cpu, "cpu_usage").find("percpu_usage");
      if (per_cpu != Obj(cpu, "cpu_usage").end() && per_cpu->is_array()) cpus = per_cpu->size();
    }
    if (cpus == 0) cpus = 1;
    if (cpu_delta > 0 && system_delta > 0) {
      stats.cpu_percent = cpu_delta / system_delta * static_cast<double>(cpus) * 100.0;
    }
    const json& memory = Obj(j, "memory_stats");
    uint64_t usage = UInt(memory, "usage");
    const json& mstats = Obj(memory, "stats");
    // As the docker CLI: cgroup v1 reports total_inactive_file, v2 inactive_file.
    uint64_t inactive = mstats.contains("total_inactive_file") ? UInt(mstats, "total_inactive_file")
                                                               : UInt(mstats, "inactive_file");
    stats.memory_usage_bytes = inactive < usage ? usage - inactive : usage;
    stats.memory_limit_bytes = UInt(memory, "limit");
    stats.pids = UInt(Obj(j, "pids_stats"), "current");
    return stats;
  } catch (const json::exception& e) {
    return InternalError("Docker: unexpected stats JSON for " + id + ": " + e.what());
  }
}

namespace {

// The network named exactly `name` (the API's name filter matches substrings).
Result<std::optional<Network>> FindNetwork(const std::string& socket_path, const std::string& name,
                                           std::chrono::milliseconds timeout) {
  std::string path = "/networks?filters=" + Escape(DumpJson(json{{"name", {name}}}));
  CORTEX_ASSIGN_OR_RETURN(json list, CallJson(socket_path, Get(path, timeout)));
  if (list.is_array()) {
    for (const json& n : list) {
      if (n.is_object() && Str(n, "Name") == name) return std::optional(NetworkFromJson(n));
    }
  }
  return std::optional<Network>();
}

}  // namespace

Result<std::string> Client::CreateNetwork(const std::string& name,
                                          const std::map<std::string, std::string>& labels) const {
  if (name.empty()) return InvalidArgumentError("a network needs a name");
  CORTEX_ASSIGN_OR_RETURN(auto existing, FindNetwork(socket_path_, name, timeout_));
  if (existing) return existing->id;
  Request request = Method("POST", "/networks/create", timeout_);
  // CheckDuplicate: daemons before API 1.44 otherwise accept a second network of the same name.
  request.json_body = DumpJson(
      json{{"Name", name}, {"Driver", "bridge"}, {"CheckDuplicate", true}, {"Labels", labels}});
  auto created = CallJson(socket_path_, request);
  if (created.ok()) return Str(*created, "Id");
  if (created.status().code() != StatusCode::kFailedPrecondition) return created.status();
  // 409: created concurrently by someone else.
  CORTEX_ASSIGN_OR_RETURN(existing, FindNetwork(socket_path_, name, timeout_));
  if (existing) return existing->id;
  return AlreadyExistsError(created.status().message());
}

Status Client::RemoveNetwork(const std::string& name_or_id) const {
  auto reply = Call(socket_path_, Method("DELETE", "/networks/" + Escape(name_or_id), timeout_));
  if (!reply.ok() && reply.status().code() != StatusCode::kNotFound) return reply.status();
  return Status::Ok();
}

Result<std::vector<Network>> Client::ListNetworks(const LabelFilter& label_filter) const {
  std::string path = WithQuery("/networks", LabelFilterQuery(label_filter));
  CORTEX_ASSIGN_OR_RETURN(json list, CallJson(socket_path_, Get(path, timeout_)));
  std::vector<Network> out;
  if (list.is_array()) {
    for (const json& n : list) {
      if (n.is_object()) out.push_back(NetworkFromJson(n));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const Network& a, const Network& b) { return a.name < b.name; });
  return out;
}

Status Client::RemoveContainers(const LabelFilter& label_filter) const {
  if (label_filter.empty()) return InvalidArgumentError("refusing to remove every container");
  std::string path = WithQuery("/containers/json?all=1", LabelFilterQuery(label_filter));
  CORTEX_ASSIGN_OR_RETURN(json list, CallJson(socket_path_, Get(path, timeout_)));
  Status first;
  for (const json& item : list.is_array() ? list : json::array()) {
    std::string id = Str(item, "Id");
    // Removing a running container stops it first (SIGKILL): allow for that.
    auto reply = Call(socket_path_, Method("DELETE", ContainerPath(id) + "?force=1&v=1",
                                           timeout_ + std::chrono::seconds(20)));
    if (reply.ok()) continue;
    const Status& st = reply.status();
    bool gone = st.code() == StatusCode::kNotFound ||
                (st.code() == StatusCode::kFailedPrecondition &&
                 st.message().find("already in progress") != std::string::npos);
    if (!gone && first.ok()) first = st;
  }
  return first;
}

Status Client::RemoveNetworks(const LabelFilter& label_filter) const {
  if (label_filter.empty()) return InvalidArgumentError("refusing to remove every network");
  CORTEX_ASSIGN_OR_RETURN(auto networks, ListNetworks(label_filter));
  Status first;
  for (const Network& n : networks) {
    Status st = RemoveNetwork(n.id);
    if (!st.ok() && first.ok()) first = st;
  }
  return first;
}

Status Client::RemoveVolumes(const LabelFilter& label_filter) const {
  if (label_filter.empty()) return InvalidArgumentError("refusing to remove every volume");
  std::string path = WithQuery("/volumes", LabelFilterQuery(label_filter));
  CORTEX_ASSIGN_OR_RETURN(json j, CallJson(socket_path_, Get(path, timeout_)));
  Status first;
  auto volumes = j.is_object() ? j.find("Volumes") : j.end();
  if (volumes == j.end() || !volumes->is_array()) return first;
  for (const json& v : *volumes) {
    auto reply =
        Call(socket_path_, Method("DELETE", "/volumes/" + Escape(Str(v, "Name")), timeout_));
    if (!reply.ok() && reply.status().code() != StatusCode::kNotFound && first.ok()) {
      first = reply.status();
    }
  }
  return first;
}

Result<bool> Client::ImageExists(const std::string& ref) const {
  if (ref.empty()) return InvalidArgumentError("an empty image reference");
  auto reply = Call(socket_path_, Get("/images/" + Escape(ref, "/:@") + "/json", timeout_));
  if (reply.ok()) return true;
  if (reply.status().code() == StatusCode::kNotFound) return false;
  return reply.status();
}

}  // namespace cortex::deploy::docker
