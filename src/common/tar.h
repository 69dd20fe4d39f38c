// A small reader and writer of POSIX ustar archives: regular files and folders only, names
// relative and within the archive. Enough for Cortex's backups (cortex backup / restore), and
// strict where the bytes come from outside: a name with "..", an absolute name, a link, a device,
// a bad checksum or a truncated archive is an error, never a file written somewhere else.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <istream>
#include <ostream>
#include <string>
#include <string_view>

#include "common/status.h"

namespace cortex::tar {

class Writer {
 public:
  explicit Writer(std::ostream& out) : out_(out) {}
  // `name`: relative, '/'-separated, at most 255 bytes (split into ustar's prefix and name).
  Status AddFile(std::string_view name, std::string_view data, int mode = 0644, int64_t mtime = 0);
  // Copies a file from disk, streaming (never the whole file in memory).
  Status AddFileFrom(std::string_view name, const std::filesystem::path& source, int mode = 0644);
  Status AddDirectory(std::string_view name, int mode = 0755);
  // The two zero blocks that end an archive. Nothing may be added after.
  Status Finish();

 private:
  Status Header(std::string_view name, char type, uint64_t size, int mode, int64_t mtime);
  Status Pad(uint64_t size);
  std::ostream& out_;
};

struct Limits {
  uint64_t max_entries = 1'000'000;
  uint64_t max_file_bytes = uint64_t{64} << 30;    // one file
  uint64_t max_total_bytes = uint64_t{256} << 30;  // all files together
};

struct Entry {
  std::string name;  // checked: relative, no "..", no empty or "." parts
  bool directory = false;
  uint64_t size = 0;
  int mode = 0644;
};

// Reads every entry of an archive. For a file, `sink` receives its bytes in pieces (empty
// `data` never). `on_entry` may refuse an entry (its Status is returned). Errors name the entry.
Status Read(std::istream& in, const Limits& limits,
            const std::function<Status(const Entry&)>& on_entry,
            const std::function<Status(const Entry&, std::string_view data)>& sink);

// Checks an archive name: relative, '/'-separated, no "..", "." or empty parts, no NUL, at most
// 255 bytes, valid UTF-8.
Status CheckName(std::string_view name);

}  // namespace cortex::tar
