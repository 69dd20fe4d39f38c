// libFuzzer target for the HTTP server's reading of a request (Boost.Beast's parser with the
// server's limits, then http::BuildRequest) and its framing of an answer: whatever bytes arrive
// end in a request or an error answer (400, 413, 414, 431), never a crash, a hang or a throw; and
// what a request carries (path, header values) cannot break the framing of an answer built from
// it. Limits are small so the fuzzer reaches them.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/http.h"
#include "http/wire.h"

namespace {

// An answer's head (before the blank line) must be CRLF-terminated lines only.
void CheckHead(const std::string& bytes) {
  const size_t end = bytes.find("\r\n\r\n");
  if (end == std::string::npos) std::abort();
  for (size_t i = 0; i < end; ++i) {
    if (bytes[i] == '\n' && (i == 0 || bytes[i - 1] != '\r')) std::abort();
    if (bytes[i] == '\r' && bytes[i + 1] != '\n') std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace cortex::http;
  ServerOptions options;
  options.max_header_bytes = 2048;
  options.max_header_count = 16;
  options.max_target_bytes = 512;
  options.max_body_bytes = 1024;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  ParsedBytes parsed = ParseRequestBytes(bytes, options);
  if (!parsed.built.ok()) {
    const int status = parsed.built.error().status;
    if (status != 400 && status != 413 && status != 414 && status != 431) std::abort();
    CheckHead(SerializeResponse(parsed.built.error(), false, true));
    return 0;
  }
  if (!parsed.built.request) return 0;  // the head is not complete yet
  const Request& request = *parsed.built.request;
  if (request.path.empty() || (request.path.front() != '/' && request.path != "*")) {
    std::abort();
  }
  if (request.headers.size() > options.max_header_count) std::abort();
  if (request.body.size() > options.max_body_bytes) std::abort();
  // An answer that echoes what the request carried keeps its framing.
  Response echo = Response::Text(200, request.path);
  for (const auto& [name, value] : request.headers) echo.headers.emplace_back(name, value);
  echo.headers.emplace_back(request.path, request.method);
  CheckHead(SerializeResponse(echo, request.method == "HEAD", false));
  CheckHead(SerializeStreamHead(echo));
  return 0;
}
