// Minimal leveled logging to stderr, one line an entry: text
// ("2026-11-25T12:00:00.123Z INFO registry: message") or JSON
// ({"ts":"2026-11-25T12:00:00.123Z","level":"info","component":"registry","msg":"message"}).
#pragma once

#include <string>
#include <string_view>

namespace cortex::log {

enum class Level { kDebug, kInfo, kWarn, kError };

void SetLevel(Level level);
Level GetLevel();
// Parses "debug", "info", "warn"/"warning", "error"; false when unknown.
bool ParseLevel(std::string_view text, Level* level);

enum class Format { kText, kJson };
void SetFormat(Format format);
// Parses "text" or "json"; false when unknown.
bool ParseFormat(std::string_view text, Format* format);

// One line on stderr: the text format escapes line breaks, tabs and other control characters
// ("\n", "\x1b") and replaces invalid UTF-8, so a message (an error that quotes a tool's
// output, a name from a request) can never start a line of its own or drive a terminal.
void Write(Level level, std::string_view component, std::string_view message);
// `message` as the text format writes it.
std::string OneLine(std::string_view message);

inline void Debug(std::string_view c, std::string_view m) { Write(Level::kDebug, c, m); }
inline void Info(std::string_view c, std::string_view m) { Write(Level::kInfo, c, m); }
inline void Warn(std::string_view c, std::string_view m) { Write(Level::kWarn, c, m); }
inline void Error(std::string_view c, std::string_view m) { Write(Level::kError, c, m); }

}  // namespace cortex::log
