// Test support shared by the integration suites: one HTTP answer of the API as a Reply (status,
// body, parsed JSON, headers), request helpers on an http::Client, the API error fields, and a
// `pgrep -f` for "nothing is left behind" checks.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "integration/daemon.h"

namespace cortex::testing {

// One HTTP answer; `json` is discarded when the body is not JSON.
struct Reply {
  int status = 0;  // 0: transport failure
  std::string body;
  nlohmann::json json;
  http::Headers headers;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

inline Reply ToReply(const Result<http::ClientResponse>& r) {
  Reply out;
  if (!r.ok()) {
    ADD_FAILURE() << "transport failure: " << r.status().ToString();
    return out;
  }
  out.status = r->status;
  out.body = r->body;
  out.headers = r->headers;
  out.json = nlohmann::json::parse(r->body, nullptr, false);
  return out;
}

inline Reply Get(http::Client& c, const std::string& path, const http::Headers& headers = {}) {
  return ToReply(c.Get(path, headers));
}
inline Reply Post(http::Client& c, const std::string& path, const std::string& body,
                  const http::Headers& headers = {}) {
  return ToReply(c.Post(path, body, "application/json", headers));
}

// The API's error fields ({"error": {"code", "message", "details"}}).
inline std::string ErrorCode(const Reply& r) {
  if (!r.json.is_object() || !r.json.contains("error") || !r.json["error"].is_object()) {
    return "<no error object: " + r.body + ">";
  }
  return r.json["error"].value("code", "<no code>");
}
inline std::string ErrorMessage(const Reply& r) {
  if (!r.json.is_object() || !r.json.contains("error") || !r.json["error"].is_object()) return "";
  return r.json["error"].value("message", "");
}

// The JSON cut short, for failure messages.
inline std::string Brief(const nlohmann::json& j, size_t max = 3000) {
  std::string s = j.dump();
  return s.size() > max ? s.substr(0, max) + "...(" + std::to_string(s.size()) + " bytes)" : s;
}

// Like `pgrep -f marker`: every process (but this one) whose command line contains `marker`.
inline std::vector<std::string> ProcessesMatching(const std::string& marker) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    std::string pid = it->path().filename().string();
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (pid == std::to_string(::getpid())) continue;
    std::string cmd = ReadFile(it->path() / "cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find(marker) != std::string::npos) out.push_back(pid + ": " + cmd);
  }
  return out;
}

#define ASSERT_DAEMON(d) ASSERT_TRUE((d).ok()) << "cortex serve did not start:\n" << (d).log()

// Server-sent events out of a complete text/event-stream body.
inline std::vector<http::SseEvent> ParseSse(const std::string& body) {
  std::vector<http::SseEvent> out;
  http::SseEvent ev;
  bool any = false;
  std::istringstream in(body);
  std::string line;
  auto flush = [&] {
    if (any) {
      if (ev.event.empty()) ev.event = "message";
      out.push_back(ev);
    }
    ev = {};
    any = false;
  };
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {
      flush();
      continue;
    }
    if (line[0] == ':') continue;
    size_t colon = line.find(':');
    std::string field = line.substr(0, colon);
    std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.erase(0, 1);
    if (field == "event") ev.event = value;
    if (field == "data") ev.data += (ev.data.empty() ? "" : "\n") + value;
    if (field == "id") ev.id = value;
    any = true;
  }
  flush();
  return out;
}

// Every manifest the server was given loads and resolves (else later tests fail with 404s).
inline void ExpectEveryManifestLoads(http::Client& c) {
  Reply r = Get(c, "/registry/errors");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["errors"], nlohmann::json::array()) << r.body;
  EXPECT_EQ(r.json["unresolved"], nlohmann::json::array()) << r.body;
}

}  // namespace cortex::testing
