#include "deploy/health.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/fd.h"
#include "http/http.h"

namespace cortex::deploy {

namespace {

using Clock = std::chrono::steady_clock;

std::string Tail(const std::string& s, size_t n) {
  std::string t = s.size() > n ? s.substr(s.size() - n) : s;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return t;
}

ProbeResult HttpProbe(const ProbeSpec& spec, const std::string& base_url) {
  ProbeResult r;
  std::string url = spec.url.empty() ? base_url + spec.path : spec.url;
  if (url.empty() || (spec.url.empty() && base_url.empty())) {
    r.error = "no URL to probe (the relic has no base URL yet)";
    return r;
  }
  auto [base, path] = http::SplitUrl(url);
  http::ClientOptions options;
  options.connect_timeout = spec.timeout;
  options.read_timeout = spec.timeout;
  http::Client client(base, options);
  Result<http::ClientResponse> resp = spec.method == "POST"     ? client.Post(path, "")
                                      : spec.method == "PUT"    ? client.Put(path, "")
                                      : spec.method == "DELETE" ? client.Delete(path)
                                                                : client.Get(path);
  if (!resp.ok()) {
    r.error = spec.method + " " + url + ": " + resp.status().message();
    return r;
  }
  if (resp->status != spec.expected_status) {
    r.error = spec.method + " " + url + ": status " + std::to_string(resp->status) + " (expected " +
              std::to_string(spec.expected_status) + ")";
    if (!resp->body.empty()) r.error += ": " + Tail(resp->body, 200);
    return r;
  }
  r.ok = true;
  return r;
}

ProbeResult TcpProbe(const ProbeSpec& spec) {
  ProbeResult r;
  std::string where = spec.host + ":" + std::to_string(spec.port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addrs = nullptr;
  int rc = ::getaddrinfo(spec.host.c_str(), std::to_string(spec.port).c_str(), &hints, &addrs);
  if (rc != 0) {
    r.error = "tcp " + where + ": " + ::gai_strerror(rc);
    return r;
  }
  std::string last = "no address";
  const auto deadline = Clock::now() + spec.timeout;
  for (addrinfo* a = addrs; a && !r.ok; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last = ErrnoText(errno);
      continue;
    }
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      r.ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now()).count();
      int n = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 0)));
      if (n == 1) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err == 0) {
          r.ok = true;
        } else {
          last = ErrnoText(err);
        }
      } else {
        last = "timed out after " + std::to_string(spec.timeout.count()) + " ms";
      }
    } else {
      last = ErrnoText(errno);
    }
    ::close(fd);
  }
  ::freeaddrinfo(addrs);
  if (!r.ok) r.error = "tcp " + where + ": " + last;
  return r;
}

ProbeResult CommandProbe(const ProbeSpec& spec, const std::vector<std::string>& env,
                         const std::string& cwd, exec::ProcessRunner& runner) {
  ProbeResult r;
  exec::ProcessSpec ps;
  ps.argv = spec.argv;
  ps.env = env;
  ps.cwd = cwd;
  ps.limits.timeout = spec.timeout;
  ps.limits.kill_grace = Ms(500);
  ps.limits.max_output_bytes = 64 * 1024;
  auto result = runner.Run(ps, nullptr, nullptr);
  if (!result.ok()) {
    r.error = "command " + spec.argv[0] + ": " + result.status().message();
    return r;
  }
  if (result->reason == exec::EndReason::kExited && result->exit_code == 0) {
    r.ok = true;
    return r;
  }
  r.error =
      "command " + spec.argv[0] + ": " +
      (result->reason == exec::EndReason::kExited ? "exit code " + std::to_string(result->exit_code)
                                                  : result->reason_text);
  std::string out =
      Tail(result->stderr_data.empty() ? result->stdout_data : result->stderr_data, 200);
  if (!out.empty()) r.error += ": " + out;
  return r;
}

}  // namespace

ProbeResult RunProbe(const ProbeSpec& spec, const std::string& base_url,
                     const std::vector<std::string>& env, const std::string& cwd,
                     exec::ProcessRunner& runner) {
  auto start = Clock::now();
  ProbeResult r;
  switch (spec.type) {
    case ProbeSpec::Type::kNone:
      r.ok = true;
      break;
    case ProbeSpec::Type::kHttp:
      r = HttpProbe(spec, base_url);
      break;
    case ProbeSpec::Type::kTcp:
      r = TcpProbe(spec);
      break;
    case ProbeSpec::Type::kCommand:
      r = CommandProbe(spec, env, cwd, runner);
      break;
  }
  r.took = std::chrono::duration_cast<Ms>(Clock::now() - start);
  return r;
}

}  // namespace cortex::deploy
