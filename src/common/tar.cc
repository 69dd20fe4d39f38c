#include "common/tar.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <optional>
#include <vector>

#include "common/json.h"

namespace cortex::tar {

namespace {

constexpr size_t kBlock = 512;

// Writes `value` as `width - 1` octal digits and a NUL into `field`.
bool Octal(char* field, size_t width, uint64_t value) {
  std::string digits;
  do {
    digits.insert(digits.begin(), static_cast<char>('0' + (value & 7)));
    value >>= 3;
  } while (value != 0);
  if (digits.size() > width - 1) return false;
  digits.insert(digits.begin(), width - 1 - digits.size(), '0');
  std::memcpy(field, digits.data(), width - 1);
  field[width - 1] = '\0';
  return true;
}

// Parses an octal field (spaces and NULs around it allowed); nullopt when it is not octal.
std::optional<uint64_t> ParseOctal(const char* field, size_t width) {
  size_t i = 0;
  while (i < width && (field[i] == ' ' || field[i] == '\0')) ++i;
  if (i == width) return 0;
  uint64_t v = 0;
  size_t digits = 0;
  for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i, ++digits) {
    if (v >> 61) return std::nullopt;  // would overflow
    v = (v << 3) | static_cast<uint64_t>(field[i] - '0');
  }
  for (; i < width; ++i) {
    if (field[i] != ' ' && field[i] != '\0') return std::nullopt;
  }
  return digits == 0 ? std::nullopt : std::optional<uint64_t>(v);
}

uint64_t Checksum(const std::array<char, kBlock>& h) {
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(h[i]);
  }
  return sum;
}

std::string Field(const char* p, size_t width) { return std::string(p, strnlen(p, width)); }

}  // namespace

Status CheckName(std::string_view name) {
  if (name.empty() || name.size() > 255) return InvalidArgumentError("bad name length");
  if (name.front() == '/') return InvalidArgumentError("'" + std::string(name) + "' is absolute");
  if (name.find('\0') != std::string_view::npos || !IsValidUtf8(name)) {
    return InvalidArgumentError("a name with NUL or invalid UTF-8");
  }
  size_t at = 0;
  while (at <= name.size()) {
    size_t end = name.find('/', at);
    if (end == std::string_view::npos) end = name.size();
    std::string_view part = name.substr(at, end - at);
    if (part.empty() && end != name.size()) {
      return InvalidArgumentError("'" + std::string(name) + "' has an empty part");
    }
    if (part == "." || part == "..") {
      return InvalidArgumentError("'" + std::string(name) + "' has a '" + std::string(part) +
                                  "' part");
    }
    at = end + 1;
  }
  return Status::Ok();
}

Status Writer::Header(std::string_view name, char type, uint64_t size, int mode, int64_t mtime) {
  CORTEX_RETURN_IF_ERROR(CheckName(name));
  std::array<char, kBlock> h{};
  // ustar: a name over 100 bytes is split at a '/' into prefix (155) and name (100).
  std::string_view prefix, rest = name;
  if (name.size() > 100) {
    size_t cut = std::string_view::npos;
    for (size_t i = name.find('/'); i != std::string_view::npos && i <= 155;
         i = name.find('/', i + 1)) {
      if (name.size() - i - 1 <= 100) {
        cut = i;
        break;
      }
    }
    if (cut == std::string_view::npos) {
      return InvalidArgumentError("'" + std::string(name) + "' cannot be stored in a ustar header");
    }
    prefix = name.substr(0, cut);
    rest = name.substr(cut + 1);
  }
  std::memcpy(h.data(), rest.data(), rest.size());
  if (!Octal(&h[100], 8, static_cast<uint64_t>(mode & 07777)) || !Octal(&h[108], 8, 0) ||
      !Octal(&h[116], 8, 0) || !Octal(&h[124], 12, size) ||
      !Octal(&h[136], 12, static_cast<uint64_t>(std::max<int64_t>(0, mtime)))) {
    return InvalidArgumentError("'" + std::string(name) + "' is too large for a ustar header");
  }
  h[156] = type;
  std::memcpy(&h[257], "ustar", 6);
  std::memcpy(&h[263], "00", 2);
  std::memcpy(&h[345], prefix.data(), prefix.size());
  uint64_t sum = Checksum(h);
  Octal(&h[148], 7, sum);
  h[155] = ' ';
  out_.write(h.data(), kBlock);
  return out_ ? Status::Ok() : UnavailableError("cannot write the archive");
}

Status Writer::Pad(uint64_t size) {
  static const std::array<char, kBlock> zeros{};
  size_t pad = (kBlock - size % kBlock) % kBlock;
  out_.write(zeros.data(), static_cast<std::streamsize>(pad));
  return out_ ? Status::Ok() : UnavailableError("cannot write the archive");
}

Status Writer::AddFile(std::string_view name, std::string_view data, int mode, int64_t mtime) {
  CORTEX_RETURN_IF_ERROR(Header(name, '0', data.size(), mode, mtime));
  out_.write(data.data(), static_cast<std::streamsize>(data.size()));
  return Pad(data.size());
}

Status Writer::AddFileFrom(std::string_view name, const std::filesystem::path& source, int mode) {
  std::error_code ec;
  uint64_t size = std::filesystem::file_size(source, ec);
  if (ec) return UnavailableError("cannot read " + source.string() + ": " + ec.message());
  std::ifstream in(source, std::ios::binary);
  if (!in) return UnavailableError("cannot read " + source.string());
  CORTEX_RETURN_IF_ERROR(Header(name, '0', size, mode, 0));
  std::array<char, 1 << 16> buf;
  uint64_t left = size;
  while (left > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
    if (!in.read(buf.data(), static_cast<std::streamsize>(n))) {
      return UnavailableError(source.string() + " changed while it was read");
    }
    out_.write(buf.data(), static_cast<std::streamsize>(n));
    left -= n;
  }
  return Pad(size);
}

Status Writer::AddDirectory(std::string_view name, int mode) {
  return Header(name, '5', 0, mode, 0);
}

Status Writer::Finish() {
  static const std::array<char, 2 * kBlock> zeros{};
  out_.write(zeros.data(), zeros.size());
  out_.flush();
  return out_ ? Status::Ok() : UnavailableError("cannot write the archive");
}

Status Read(std::istream& in, const Limits& limits,
            const std::function<Status(const Entry&)>& on_entry,
            const std::function<Status(const Entry&, std::string_view data)>& sink) {
  std::array<char, kBlock> h;
  uint64_t entries = 0, total = 0;
  std::vector<char> buf(1 << 16);
  while (true) {
    if (!in.read(h.data(), kBlock)) {
      return InvalidArgumentError("the archive ends without its end marker (truncated?)");
    }
    if (std::all_of(h.begin(), h.end(), [](char c) { return c == 0; })) return Status::Ok();
    if (++entries > limits.max_entries) {
      return InvalidArgumentError("more than " + std::to_string(limits.max_entries) + " entries");
    }
    auto sum = ParseOctal(&h[148], 8);
    if (!sum || *sum != Checksum(h)) {
      return InvalidArgumentError("entry " + std::to_string(entries) +
                                  ": bad header checksum (not a tar archive, or damaged)");
    }
    Entry e;
    std::string name = Field(&h[0], 100);
    if (std::memcmp(&h[257], "ustar", 5) == 0) {
      std::string prefix = Field(&h[345], 155);
      if (!prefix.empty()) name = prefix + "/" + name;
    }
    const char type = h[156];
    if (type == '5') {
      while (!name.empty() && name.back() == '/') name.pop_back();
      e.directory = true;
    } else if (type != '0' && type != '\0') {
      return InvalidArgumentError("entry '" + ToValidUtf8(name) +
                                  "': only files and folders are accepted (type '" +
                                  std::string(1, type) + "')");
    }
    if (Status st = CheckName(name); !st.ok()) {
      return InvalidArgumentError("entry '" + ToValidUtf8(name) + "': " + st.message());
    }
    e.name = name;
    auto size = ParseOctal(&h[124], 12);
    auto mode = ParseOctal(&h[100], 8);
    if (!size || !mode) return InvalidArgumentError("entry '" + name + "': bad size or mode");
    e.size = e.directory ? 0 : *size;
    e.mode = static_cast<int>(*mode & 0777);
    if (e.size > limits.max_file_bytes || total + e.size > limits.max_total_bytes) {
      return InvalidArgumentError("entry '" + name + "': larger than allowed");
    }
    total += e.size;
    CORTEX_RETURN_IF_ERROR(on_entry(e));
    uint64_t left = e.size;
    while (left > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
      if (!in.read(buf.data(), static_cast<std::streamsize>(n))) {
        return InvalidArgumentError("entry '" + name + "' is cut short (truncated archive)");
      }
      CORTEX_RETURN_IF_ERROR(sink(e, std::string_view(buf.data(), n)));
      left -= n;
    }
    size_t pad = (kBlock - e.size % kBlock) % kBlock;
    if (pad > 0 && !in.read(buf.data(), static_cast<std::streamsize>(pad))) {
      return InvalidArgumentError("entry '" + name + "' is cut short (truncated archive)");
    }
  }
}

}  // namespace cortex::tar
