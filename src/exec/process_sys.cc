// The process runner's small system helpers; see process_sys.h.
#include "exec/process_sys.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace cortex::exec::internal {

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes >= (1ull << 20) && bytes % (1ull << 20) == 0) {
    return std::to_string(bytes >> 20) + " MiB";
  }
  if (bytes >= (10ull << 20)) return std::to_string(bytes >> 20) + " MiB";
  return std::to_string(bytes) + " bytes";
}

int ControlFiles::Get(const std::string& path, int mode) {
  std::string key = path;
  key += mode == O_RDONLY ? 'r' : 'w';
  auto it = fds_.find(key);
  if (it != fds_.end()) return it->second.get();
  int fd = ::open(path.c_str(), mode | O_CLOEXEC);
  if (fd >= 0) fds_.emplace(std::move(key), Fd(fd));
  return fd;
}

bool WriteFile(const std::string& path, std::string_view data, int* err, ControlFiles* files) {
  int fd = files ? files->Get(path, O_WRONLY) : ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    if (err) *err = errno;
    return false;
  }
  ssize_t n = ::pwrite(fd, data.data(), data.size(), 0);
  int saved = errno;
  if (!files) ::close(fd);
  if (n != static_cast<ssize_t>(data.size())) {
    if (err) *err = n < 0 ? saved : EIO;
    return false;
  }
  return true;
}

std::optional<std::string> ReadFile(const std::string& path, size_t limit, ControlFiles* files) {
  int fd = files ? files->Get(path, O_RDONLY) : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[4096];
  while (out.size() < limit) {
    ssize_t n =
        ::pread(fd, buf, std::min(sizeof buf, limit - out.size()), static_cast<off_t>(out.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  if (!files) ::close(fd);
  return out;
}

std::optional<uint64_t> ParseU64(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  if (text.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

std::optional<uint64_t> ReadU64File(const std::string& path, ControlFiles* files) {
  auto text = ReadFile(path, 64 * 1024, files);
  return text ? ParseU64(*text) : std::nullopt;
}

std::optional<uint64_t> ReadKeyedU64(const std::string& path, std::string_view key,
                                     ControlFiles* files) {
  auto text = ReadFile(path, 64 * 1024, files);
  if (!text) return std::nullopt;
  std::string_view rest = *text;
  while (!rest.empty()) {
    size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ' ') {
      return ParseU64(line.substr(key.size() + 1));
    }
  }
  return std::nullopt;
}

bool IsFsType(const std::string& path, unsigned long magic) {
  struct statfs st;
  return ::statfs(path.c_str(), &st) == 0 && static_cast<unsigned long>(st.f_type) == magic;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

int PidfdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

int PidfdSendSignal(int pidfd, int sig) {
#ifdef SYS_pidfd_send_signal
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
#else
  (void)pidfd;
  (void)sig;
  errno = ENOSYS;
  return -1;
#endif
}

std::vector<pid_t> ParsePids(const std::string& text) {
  std::vector<pid_t> pids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    if (auto v = ParseU64(std::string_view(text).substr(pos, eol - pos)); v && *v > 0) {
      pids.push_back(static_cast<pid_t>(*v));
    }
    pos = eol + 1;
  }
  return pids;
}

// A unique name per run within this host: "<server pid>-<sequence>". Process-wide on purpose
// (two runners in one process must not collide); the pid prefix lets a later server remove
// directories left by a crashed one.
std::string NextRunName() {
  static std::atomic<uint64_t> sequence{0};
  return std::to_string(::getpid()) + "-" + std::to_string(sequence.fetch_add(1) + 1);
}

}  // namespace cortex::exec::internal
