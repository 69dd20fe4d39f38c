// libFuzzer target for the other parsers of outside bytes, chosen by the first byte:
//   0: a model provider's event stream (llm::SseReader), fed in pieces split where the input
//      says: events come out or a clear error, lines stay bounded;
//   1: a workflow's (or tool's) input checked against declared parameters (exec::CheckParameters),
//      then `$variable` substitution and an agent's input text over it;
//   2: request headers (one "Name: value" a line) through the gateway's request guard, the
//      access control's authentication (Authorization: Bearer, against a store with one key),
//      and the W3C traceparent parser.
//   3: an archive (tar::Read, as `cortex restore` reads one): entries come out checked, or an
//      error;
//   4: a bearer token through the JWT verifier (RS256 and ES256 keys made at start): never
//      accepted, since the fuzzer cannot sign;
//   5: a key's scopes (one a line) and a manifest name: a scope list that checks out is matched
//      against the name, which must end, and a single `*` must cover any name.
// Whatever happens must end in a value or an error: never a crash, a hang or a throw.
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "agent/runner.h"
#include "api/auth.h"
#include "api/jwt.h"
#include "api/request_guard.h"
#include "api/scopes.h"
#include "common/json.h"
#include "common/tar.h"
#include "common/trace.h"
#include "exec/params.h"
#include "llm/gateway.h"
#include "store/store.h"

namespace {

using Json = nlohmann::ordered_json;

void Sse(std::string_view in) {
  cortex::llm::SseReader reader(4096);
  std::vector<cortex::llm::SseReader::Event> events;
  size_t at = 0;
  while (at < in.size()) {
    // The next byte says how long the piece after it is.
    size_t n = 1 + static_cast<unsigned char>(in[at]) % 64;
    ++at;
    std::string_view piece = in.substr(at, n);
    at += piece.size();
    if (!reader.Feed(piece, &events).ok()) return;
    for (const auto& e : events) {
      // A line longer than the bound is an error, so no event's data can be much longer.
      if (e.data.size() > in.size()) std::abort();
    }
    events.clear();
  }
}

const cortex::registry::ParameterList& Declared() {
  static const cortex::registry::ParameterList list = [] {
    cortex::registry::ParameterList l;
    cortex::registry::Parameter p;
    p.name = "text";
    p.validation.emplace();
    p.validation->max_length = 64;
    p.validation->pattern = "^[a-z ]*$";
    l.items.push_back(p);
    p = {};
    p.name = "count";
    p.type = "integer";
    p.validation.emplace();
    p.validation->min = 0;
    p.validation->max = 100;
    p.default_value = 1;
    l.items.push_back(p);
    p = {};
    p.name = "ratio";
    p.type = "number";
    p.required = false;
    l.items.push_back(p);
    p = {};
    p.name = "mode";
    p.enum_values = {"a", "b"};
    p.default_value = "a";
    l.items.push_back(p);
    p = {};
    p.name = "tags";
    p.type = "array";
    p.items = {{"type", "string"}};
    p.required = false;
    l.items.push_back(p);
    p = {};
    p.name = "extra";
    p.type = "object";
    p.required = false;
    l.items.push_back(p);
    return l;
  }();
  return list;
}

void Inputs(std::string_view in) {
  auto parsed = cortex::ParseJson(in);
  if (!parsed.ok()) return;
  auto check = cortex::exec::CheckParameters(Declared(), *parsed);
  (void)cortex::DumpJson(check.values);
  (void)cortex::DumpJson(cortex::exec::FieldErrorsJson(check.errors));
  Json vars = {{"x", *parsed}, {"doc", {{"title", "t"}}}};
  (void)cortex::DumpJson(cortex::agent::SubstituteVariables(*parsed, vars));
  (void)cortex::agent::SubstituteVariables(std::string(in), vars);
  (void)cortex::agent::InputText(*parsed);
}

// An access control with authentication on, over a store (in a scratch folder) holding one key.
cortex::api::AccessControl& Access() {
  static std::unique_ptr<cortex::store::Store> store = [] {
    static char dir[] = "/tmp/cortex-fuzz-XXXXXX";
    if (!::mkdtemp(dir)) std::abort();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    });
    cortex::store::SqliteOptions o;
    o.path = std::string(dir) + "/state.db";
    auto opened = cortex::store::OpenSqliteStore(o);
    if (!opened.ok()) std::abort();
    auto s = std::move(*opened);
    if (!cortex::api::CreateApiKey(*s, "fuzz", cortex::api::Role::kViewer).ok()) std::abort();
    return s;
  }();
  static cortex::api::AccessControl access(*store, cortex::api::AuthOptions{true, 0, 0, nullptr});
  return access;
}

void Headers(std::string_view in) {
  cortex::http::Request req;
  req.method = in.size() % 2 ? "POST" : "GET";
  req.path = "/execute/tool";
  req.body = "{}";
  size_t at = 0;
  while (at < in.size() && req.headers.size() < 64) {
    size_t end = in.find('\n', at);
    std::string_view line = in.substr(at, end == std::string_view::npos ? in.npos : end - at);
    at = end == std::string_view::npos ? in.size() : end + 1;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    req.headers.emplace(std::string(line.substr(0, colon)), std::string(value));
  }
  for (const auto& options :
       {cortex::api::GuardOptions{"127.0.0.1", {}, {}},
        cortex::api::GuardOptions{"0.0.0.0", {"cortex.example.com"}, {"https://ui.example.com"}},
        cortex::api::GuardOptions{"::1", {"*"}, {"*"}}}) {
    (void)cortex::api::CheckRequest(options, req);
  }
  (void)Access().Authenticate(req);
  // A traceparent header: a context, or none (never a throw), and a span under it.
  if (auto tp = req.Header("traceparent")) {
    auto parsed = cortex::trace::ParseTraceparent(*tp);
    if (parsed && parsed->Traceparent().size() != 55) std::abort();
    static const cortex::trace::Tracer tracer;
    cortex::trace::Span span = tracer.Start("fuzz", *tp);
    if (span.traceparent().size() != 55) std::abort();
  }
}

void Archive(std::string_view in) {
  std::istringstream stream{std::string(in)};
  cortex::tar::Limits limits;
  limits.max_entries = 1000;
  limits.max_total_bytes = 1 << 20;
  (void)cortex::tar::Read(
      stream, limits,
      [](const cortex::tar::Entry& e) {
        // What Read hands out was checked: never a name that could leave the target.
        if (!cortex::tar::CheckName(e.name).ok()) std::abort();
        return cortex::Status::Ok();
      },
      [](const cortex::tar::Entry&, std::string_view) { return cortex::Status::Ok(); });
}

// A verifier over a JWKS of one fresh EC P-256 key.
const cortex::api::JwtVerifier& Verifier() {
  static std::unique_ptr<cortex::api::JwtVerifier> v = [] {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    auto coord = [&](const char* name) {
      BIGNUM* bn = nullptr;
      EVP_PKEY_get_bn_param(key, name, &bn);
      std::string out(32, '\0');
      BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), 32);
      BN_free(bn);
      return cortex::api::Base64UrlEncode(out);
    };
    Json jwks = {{"keys",
                  {{{"kty", "EC"},
                    {"crv", "P-256"},
                    {"kid", "k"},
                    {"x", coord(OSSL_PKEY_PARAM_EC_PUB_X)},
                    {"y", coord(OSSL_PKEY_PARAM_EC_PUB_Y)}}}}};
    EVP_PKEY_free(key);
    auto made = cortex::api::JwtVerifier::Create({"i", "a", "cortex_role", "cortex_scopes", 60},
                                                 jwks.dump());
    if (!made.ok()) std::abort();
    return std::move(made).value();
  }();
  return *v;
}

void Token(std::string_view in) {
  // As sent, and with the fuzz bytes as a JWT's three parts (so the parsers past the shape run).
  if (Verifier().Verify(in, 1800000000).ok()) std::abort();
  size_t a = in.size() / 3, b = 2 * in.size() / 3;
  std::string token = cortex::api::Base64UrlEncode(in.substr(0, a)) + "." +
                      cortex::api::Base64UrlEncode(in.substr(a, b - a)) + "." +
                      cortex::api::Base64UrlEncode(in.substr(b));
  if (Verifier().Verify(token, 1800000000).ok()) std::abort();
  (void)cortex::api::Base64UrlDecode(in);
}

void Scopes(std::string_view in) {
  std::vector<std::string> scopes;
  std::string name;
  std::istringstream lines{std::string(in)};
  for (std::string line; std::getline(lines, line);) scopes.push_back(line);
  if (!scopes.empty()) {
    name = scopes.back();
    scopes.pop_back();
  }
  if (cortex::api::CheckScopes(scopes).ok()) {
    (void)cortex::api::InScope(scopes, "tool", name);
  }
  for (const auto& s : scopes) (void)cortex::api::GlobMatch(s, name);
  if (!cortex::api::GlobMatch("*", name)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 6) {
    case 0:
      Sse(in);
      break;
    case 1:
      Inputs(in);
      break;
    case 2:
      Headers(in);
      break;
    case 3:
      Archive(in);
      break;
    case 4:
      Token(in);
      break;
    default:
      Scopes(in);
      break;
  }
  return 0;
}
