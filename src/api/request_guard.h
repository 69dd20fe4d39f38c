// The gateway's first check of every request, before it is routed or its body is read: a request
// a web page could have made without the user's intent is refused, whatever authentication adds.
//
// - Host must name this server: an IP address (a DNS-rebinding page always uses a name),
//   `localhost`, the listen host, or a name in `http.allowed_hosts` ("*" turns the check off).
// - A request with an Origin header must come from this server's own origin or one in
//   `http.allowed_origins` ("*" allows every origin); those get CORS headers, and a preflight
//   (OPTIONS with Access-Control-Request-Method) is answered here.
// - A write (POST, PUT, PATCH, DELETE) with a body must say its body is JSON (application/json
//   or application/<x>+json), YAML or Markdown; the form and text/plain types, which a browser
//   sends cross-origin without a preflight, are refused with 415.
#pragma once

#include <string>
#include <vector>

#include "http/http.h"

namespace cortex::api {

struct GuardOptions {
  std::string listen_host;                   // from the listen address ("127.0.0.1", "0.0.0.0")
  std::vector<std::string> allowed_hosts;    // extra names for Host; "*" = any
  std::vector<std::string> allowed_origins;  // "https://ui.example.com"; "*" = any
};

// The decision for one request (its method, path and headers).
http::FilterResult CheckRequest(const GuardOptions& options, const http::Request& request);

// CheckRequest as a Server filter.
http::Filter MakeRequestGuard(GuardOptions options);

}  // namespace cortex::api
