#include "api/settings.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/log.h"

namespace cortex::api {

Status LoadSettingsFile(const std::string& path, Settings* settings) {
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot read settings file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  auto stream = yaml::Parse(text);
  if (!stream.ok()) return InvalidArgumentError(path + ":" + stream.status().message());
  if (stream->documents().empty() || stream->documents()[0]->IsNull()) return Status::Ok();
  registry::Diagnostics diags;
  registry::YamlReader reader(path, &diags, /*strict=*/true);
  if (!reader.Read(*stream->documents()[0], *settings) || registry::HasErrors(diags)) {
    std::string msg;
    for (const auto& d : diags) msg += (msg.empty() ? "" : "\n") + d.ToString();
    return InvalidArgumentError(msg.empty() ? path + ": invalid settings" : msg);
  }
  // Files named in the settings are relative to the settings file's folder.
  const std::filesystem::path dir = std::filesystem::absolute(path).parent_path();
  for (auto& p : settings->llm.providers) {
    for (std::string* file : {&p.replay_file, &p.ca_bundle}) {
      if (!file->empty() && (*file)[0] != '/') *file = (dir / *file).lexically_normal().string();
    }
  }
  return Status::Ok();
}

Status ApplyEnvironment(const std::function<std::optional<std::string>(const char*)>& getenv,
                        Settings* s) {
  if (auto v = getenv("CORTEX_MANIFESTS")) s->manifests = *v;
  if (auto v = getenv("CORTEX_DATA_DIR")) s->data_dir = *v;
  if (auto v = getenv("CORTEX_LISTEN")) s->listen = *v;
  if (auto v = getenv("CORTEX_REDIS_URL")) s->deploy.redis_url = *v;
  if (auto v = getenv("CORTEX_AUTH")) {
    if (*v != "auto" && *v != "on" && *v != "off") {
      return InvalidArgumentError("CORTEX_AUTH must be auto, on or off");
    }
    s->auth.mode = *v;
  }
  if (auto v = getenv("CORTEX_LOG_LEVEL")) {
    log::Level l;
    if (!log::ParseLevel(*v, &l)) {
      return InvalidArgumentError("CORTEX_LOG_LEVEL must be debug, info, warn or error");
    }
    s->log_level = *v;
  }
  if (auto v = getenv("OTEL_EXPORTER_OTLP_ENDPOINT")) s->tracing.otlp_endpoint = *v;
  if (auto v = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) s->tracing.otlp_traces_endpoint = *v;
  if (auto v = getenv("OTEL_SERVICE_NAME")) s->tracing.service_name = *v;
  for (const std::string* url : {&s->tracing.otlp_endpoint, &s->tracing.otlp_traces_endpoint}) {
    if (!url->empty() && url->rfind("http://", 0) != 0 && url->rfind("https://", 0) != 0) {
      return InvalidArgumentError(
          "tracing.otlp_endpoint and otlp_traces_endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, "
          "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) must be http:// or https:// URLs, not '" +
          *url + "'");
    }
  }
  if (auto v = getenv("CORTEX_TLS_CERT")) s->http.tls_cert = *v;
  if (auto v = getenv("CORTEX_TLS_KEY")) s->http.tls_key = *v;
  if (s->http.tls_cert.empty() != s->http.tls_key.empty()) {
    return InvalidArgumentError(
        "http.tls_cert and http.tls_key (CORTEX_TLS_CERT, CORTEX_TLS_KEY) go together: set both "
        "for HTTPS, or neither");
  }
  if (auto v = getenv("CORTEX_LOG_FORMAT")) {
    log::Format f;
    if (!log::ParseFormat(*v, &f))
      return InvalidArgumentError("CORTEX_LOG_FORMAT must be text or json");
    s->log_format = *v;
  }
  if (auto v = getenv("CORTEX_STRICT")) {
    if (*v == "1" || *v == "true") {
      s->registry.strict = true;
    } else if (*v == "0" || *v == "false" || v->empty()) {
      s->registry.strict = false;
    } else {
      return InvalidArgumentError("CORTEX_STRICT must be true or false");
    }
  }
  return Status::Ok();
}

Status ParseHostPort(const std::string& text, std::string* host, int* port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) {
    return InvalidArgumentError("'" + text + "' is not HOST:PORT");
  }
  std::string h = text.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  std::string p = text.substr(colon + 1);
  if (h.empty() || p.empty() || p.size() > 5 ||
      p.find_first_not_of("0123456789") != std::string::npos || std::stoi(p) > 65535) {
    return InvalidArgumentError("'" + text + "' is not HOST:PORT (port 0-65535)");
  }
  *host = h;
  *port = std::stoi(p);
  return Status::Ok();
}

}  // namespace cortex::api
