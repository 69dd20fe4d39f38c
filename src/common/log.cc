#include "common/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

#include "common/json.h"
#include "common/mutex.h"

namespace cortex::log {

namespace {
std::atomic<Level> g_level{Level::kInfo};
std::atomic<Format> g_format{Format::kText};
Mutex g_mu;  // one line at a time on stderr
}  // namespace

void SetLevel(Level level) { g_level = level; }
void SetFormat(Format format) { g_format = format; }

bool ParseFormat(std::string_view t, Format* format) {
  if (t == "text") {
    *format = Format::kText;
  } else if (t == "json") {
    *format = Format::kJson;
  } else {
    return false;
  }
  return true;
}
Level GetLevel() { return g_level; }

bool ParseLevel(std::string_view t, Level* level) {
  if (t == "debug")
    *level = Level::kDebug;
  else if (t == "info")
    *level = Level::kInfo;
  else if (t == "warn" || t == "warning")
    *level = Level::kWarn;
  else if (t == "error")
    *level = Level::kError;
  else
    return false;
  return true;
}

void Write(Level level, std::string_view component, std::string_view message) {
  if (level < g_level.load(std::memory_order_relaxed)) return;
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm;
  gmtime_r(&t, &tm);
  char ts[32];
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  const char* name = level == Level::kDebug  ? "DEBUG"
                     : level == Level::kInfo ? "INFO"
                     : level == Level::kWarn ? "WARN"
                                             : "ERROR";
  if (g_format.load(std::memory_order_relaxed) == Format::kJson) {
    char stamp[40];
    std::snprintf(stamp, sizeof stamp, "%s.%03dZ", ts, ms);
    std::string lower(name);
    for (char& c : lower) c = static_cast<char>(c - 'A' + 'a');
    // DumpJson replaces invalid UTF-8: a log line is always one valid JSON object.
    std::string line =
        DumpJson(nlohmann::ordered_json{
            {"ts", stamp}, {"level", lower}, {"component", component}, {"msg", message}}) +
        "\n";
    MutexLock lock(g_mu);
    std::fwrite(line.data(), 1, line.size(), stderr);
    return;
  }
  const std::string text = OneLine(message);
  MutexLock lock(g_mu);
  std::fprintf(stderr, "%s.%03dZ %-5s %.*s: %.*s\n", ts, ms, name,
               static_cast<int>(component.size()), component.data(), static_cast<int>(text.size()),
               text.data());
}

std::string OneLine(std::string_view message) {
  std::string out;
  out.reserve(message.size());
  for (char c : ToValidUtf8(message)) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", u);
      out += hex;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace cortex::log
