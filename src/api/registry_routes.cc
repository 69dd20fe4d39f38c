#include "api/registry_routes.h"

#include <ctime>
#include <set>

#include "api/errors.h"
#include "api/route_util.h"
#include "api/scopes.h"
#include "common/json.h"
#include "registry/manifest.h"

namespace cortex::api {

namespace {

using registry::Dependency;
using registry::DependencyVia;
using registry::Entry;
using registry::Kind;
using registry::Snapshot;
using Json = nlohmann::ordered_json;

std::string IsoTime(std::chrono::system_clock::time_point tp) {
  std::time_t t = std::chrono::system_clock::to_time_t(tp);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string_view ViaName(DependencyVia via) {
  switch (via) {
    case DependencyVia::kImport:
      return "import";
    case DependencyVia::kStep:
      return "step";
    case DependencyVia::kComponent:
      return "component";
    case DependencyVia::kFeed:
      return "context_feed";
    case DependencyVia::kFile:
      return "file";
  }
  return "?";
}

Result<Kind> KindParam(const http::Request& req) {
  std::string k = req.PathParam("kind");
  auto kind = registry::ParseKind(k);
  if (!kind) {
    return InvalidArgumentError("unknown kind '" + k +
                                "' (one of Tool, Agent, Relic, Workflow, Monument)");
  }
  return *kind;
}

Result<const Entry*> FindEntry(const Snapshot& snap, const http::Request& req) {
  CORTEX_ASSIGN_OR_RETURN(Kind kind, KindParam(req));
  std::string name = req.PathParam("name");
  const Entry* e = snap.Find(kind, name);
  if (!e) {
    std::string msg = "no " + std::string(registry::EnumName(kind)) + " named '" + name + "'";
    std::vector<std::string_view> names;
    for (const Entry* other : snap.List(kind)) names.push_back(other->name());
    std::string_view hint = registry::ClosestMatch(name, names);
    if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
    return NotFoundError(msg);
  }
  return e;
}

Json DiagnosticsJson(const registry::Diagnostics& diags, registry::Severity severity) {
  Json arr = Json::array();
  for (const auto& d : diags) {
    if (d.severity == severity) arr.push_back(d.ToJson());
  }
  return arr;
}

Json Summary(const Entry& e) {
  const registry::ManifestHeader& h = e.manifest().header;
  Json j = {{"kind", std::string(registry::EnumName(e.kind()))},
            {"name", e.name()},
            {"version", h.version},
            {"summary", h.summary},
            {"state", h.state},
            {"path", e.file->rel_path},
            {"resolved", e.resolved()}};
  if (!h.tags.empty()) j["tags"] = h.tags;
  if (e.file->stale) j["stale"] = true;
  if (!e.problems.empty()) j["problems"] = e.problems;
  return j;
}

Json DependencyJson(const Dependency& d) {
  Json j = {{"via", std::string(ViaName(d.via))}, {"field", d.field}, {"reference", d.reference}};
  if (d.kind) j["kind"] = std::string(registry::EnumName(*d.kind));
  j["resolved"] = d.resolved();
  if (d.resolved()) {
    j["target"] = d.target;
  } else {
    j["error"] = d.error;
  }
  return j;
}

Json EntryJson(const Entry& e, bool with_raw) {
  const registry::FileRecord& f = *e.file;
  Json j = {{"kind", std::string(registry::EnumName(e.kind()))},
            {"name", e.name()},
            {"path", f.rel_path},
            {"loaded_at", IsoTime(f.loaded_at)},
            {"resolved", e.resolved()},
            {"problems", e.problems},
            {"stale", f.stale}};
  if (f.stale) {
    j["latest_errors"] = DiagnosticsJson(f.diagnostics, registry::Severity::kError);
  }
  j["warnings"] = DiagnosticsJson(f.diagnostics, registry::Severity::kWarning);
  j["manifest"] = registry::ManifestToJson(e.manifest());
  if (!e.manifest().body.empty()) j["body"] = e.manifest().body;
  if (!e.manifest().unknown_fields.empty()) j["unknown_fields"] = e.manifest().unknown_fields;
  Json deps = Json::array();
  for (const Dependency& d : e.dependencies) deps.push_back(DependencyJson(d));
  j["dependencies"] = deps;
  if (with_raw) j["raw"] = f.text;
  return j;
}

std::string DotQuote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

bool TruthyQuery(const http::Request& req, std::string_view name) {
  auto v = req.Query(name);
  return v && (*v == "true" || *v == "1" || *v == "yes" || v->empty());
}

}  // namespace

void AddRegistryRoutes(http::Server& router, registry::Registry& reg,
                       RegistryRoutesOptions options) {
  router.Handle("GET", "/registry/status", [&reg](const http::Request&) {
    auto snap = reg.snapshot();
    Json by_kind = Json::object();
    for (Kind k : registry::kAllKinds) {
      by_kind[std::string(registry::EnumName(k))] = snap->List(k).size();
    }
    size_t unresolved = 0;
    for (const auto& e : snap->entries()) unresolved += e->resolved() ? 0 : 1;
    return Ok({{"total_manifests", snap->entries().size()},
               {"by_kind", by_kind},
               {"unresolved", unresolved},
               {"errors", snap->errors().size()},
               {"conflicts", snap->conflicts().size()},
               {"generation", snap->generation()},
               {"last_updated", IsoTime(snap->created_at())},
               {"manifests_root", reg.options().root}});
  });

  router.Handle("GET", "/registry/manifests", [&reg](const http::Request& req) {
    auto snap = reg.snapshot();
    std::optional<Kind> kind;
    if (auto k = req.Query("kind"); k && !k->empty()) {
      kind = registry::ParseKind(*k);
      if (!kind) {
        return ErrorFromStatus(InvalidArgumentError(
            "unknown kind '" + *k + "' (one of Tool, Agent, Relic, Workflow, Monument)"));
      }
    }
    Json list = Json::array();
    for (const Entry* e : snap->List(kind)) list.push_back(Summary(*e));
    return Ok({{"count", list.size()}, {"generation", snap->generation()}, {"manifests", list}});
  });

  // The original's per-kind listing: {"Tool": ["calculator", ...]}.
  for (Kind k : registry::kAllKinds) {
    std::string plural = std::string(registry::EnumName(k)) + "s";
    for (char& c : plural) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    router.Handle("GET", "/registry/" + plural, [&reg, k](const http::Request&) {
      Json names = Json::array();
      for (const Entry* e : reg.snapshot()->List(k)) names.push_back(e->name());
      return Ok({{std::string(registry::EnumName(k)), names}});
    });
  }

  router.Handle("GET", "/registry/manifest/{kind}/{name}", [&reg](const http::Request& req) {
    auto snap = reg.snapshot();
    auto e = FindEntry(*snap, req);
    if (!e.ok()) return ErrorFromStatus(e.status());
    auto format = req.Query("format");
    auto accept = req.Header("Accept");
    if ((format && *format == "raw") ||
        (accept && (accept->find("yaml") != std::string::npos ||
                    accept->find("markdown") != std::string::npos))) {
      bool md = registry::FormatOfPath((*e)->file->path) == registry::FileFormat::kMarkdown;
      return http::Response::Text(200, (*e)->file->text, md ? "text/markdown" : "application/yaml");
    }
    if (TruthyQuery(req, "raw")) return Ok(EntryJson(**e, true));
    const Entry& entry = **e;
    return http::Response::Json(
        200, entry.rendered.Get([&] { return DumpJson(EntryJson(entry, false)); }));
  });

  router.Handle("DELETE", "/registry/manifest/{kind}/{name}", [&reg](const http::Request& req) {
    auto kind = KindParam(req);
    if (!kind.ok()) return ErrorFromStatus(kind.status());
    if (auto e = FindEntry(*reg.snapshot(), req); !e.ok()) return ErrorFromStatus(e.status());
    std::string name = req.PathParam("name");
    Status st = reg.Delete(*kind, name);
    if (!st.ok()) return ErrorFromStatus(st);
    return Ok({{"deleted", registry::EntryKey(*kind, name)},
               {"generation", reg.snapshot()->generation()}});
  });

  router.Handle("GET", "/registry/dependencies/{kind}/{name}", [&reg](const http::Request& req) {
    auto snap = reg.snapshot();
    auto e = FindEntry(*snap, req);
    if (!e.ok()) return ErrorFromStatus(e.status());
    Json order = Json::array();
    for (const Entry* d : snap->DependencyOrder(**e)) order.push_back(Summary(*d));
    Json direct = Json::array();
    for (const Dependency& d : (*e)->dependencies) direct.push_back(DependencyJson(d));
    return Ok({{"root", (*e)->key},
               {"resolved", (*e)->resolved()},
               {"order", order},
               {"dependencies", direct}});
  });

  auto validate = [&reg](const http::Request& req) {
    auto snap = reg.snapshot();
    auto e = FindEntry(*snap, req);
    if (!e.ok()) return ErrorFromStatus(e.status());
    Json missing = Json::array();
    for (const Dependency& d : (*e)->dependencies) {
      if (!d.resolved()) missing.push_back(DependencyJson(d));
    }
    // Problems of transitive dependencies make this one unusable too.
    Json transitive = Json::array();
    for (const Entry* d : snap->DependencyOrder(**e)) {
      for (const std::string& p : d->problems) transitive.push_back(d->key + ": " + p);
    }
    bool satisfied = (*e)->resolved() && transitive.empty();
    return Ok(
        {{"valid", satisfied},
         {"dependencies_satisfied", satisfied},
         {"missing_dependencies", missing},
         {"errors", (*e)->problems},
         {"transitive_problems", transitive},
         {"warnings", DiagnosticsJson((*e)->file->diagnostics, registry::Severity::kWarning)}});
  };
  router.Handle("POST", "/registry/validate-dependencies/{kind}/{name}", validate);
  router.Handle("GET", "/registry/validate-dependencies/{kind}/{name}", validate);

  router.Handle("POST", "/registry/sync", [&reg](const http::Request&) {
    Status st = reg.LoadAll();
    if (!st.ok()) return ErrorFromStatus(st);
    auto snap = reg.snapshot();
    return Ok({{"status", "synced"},
               {"generation", snap->generation()},
               {"total_manifests", snap->entries().size()},
               {"errors", snap->errors().size()},
               {"conflicts", snap->conflicts().size()}});
  });

  router.Handle("POST", "/registry/manifests", [&reg](const http::Request& req) {
    std::string ctype = req.Header("Content-Type").value_or("");
    registry::FileFormat format = ctype.find("markdown") != std::string::npos
                                      ? registry::FileFormat::kMarkdown
                                      : registry::FileFormat::kYaml;
    std::string text = req.body;
    if (ctype.find("json") != std::string::npos) {
      // {"content": "...", "format": "yaml|markdown"}, or the manifest itself as JSON
      // (JSON is YAML, so it is validated as it is).
      auto parsed = ParseJson(req.body);
      if (!parsed.ok()) return ErrorFromStatus(parsed.status());
      Json body = std::move(parsed).value();
      if (!body.is_object()) {
        return ErrorFromStatus(InvalidArgumentError("the body must be a JSON object"));
      }
      if (body.contains("content")) {
        if (!body["content"].is_string()) {
          return ErrorFromStatus(InvalidArgumentError("'content' must be a string"));
        }
        text = body["content"].get<std::string>();
        if (body.contains("format") && !body["format"].is_string()) {
          return ErrorFromStatus(InvalidArgumentError("'format' must be a string"));
        }
        std::string f = body.value("format", "yaml");
        if (f == "markdown" || f == "md") {
          format = registry::FileFormat::kMarkdown;
        } else if (f != "yaml" && f != "yml") {
          return ErrorFromStatus(
              InvalidArgumentError("'format' must be yaml or markdown, not '" + f + "'"));
        }
      }
    }
    if (text.empty()) return ErrorFromStatus(InvalidArgumentError("the body is empty"));
    registry::Diagnostics diags;
    auto result =
        reg.Apply(text, format, &diags, [&req](registry::Kind kind, std::string_view name) {
          return MayActOn(req, ScopeKind(kind), name);
        });
    if (!result.ok()) {
      Json details = {{"diagnostics", DiagnosticsJson(diags, registry::Severity::kError)},
                      {"warnings", DiagnosticsJson(diags, registry::Severity::kWarning)}};
      return ErrorFromStatus(result.status(), DumpJson(details));
    }
    auto snap = reg.snapshot();
    const Entry* e = snap->FindKey(result->key);
    Json out = {{"key", result->key},
                {"path", result->path},
                {"created", result->created},
                {"generation", snap->generation()},
                {"warnings", DiagnosticsJson(result->diagnostics, registry::Severity::kWarning)}};
    if (e) {
      out["resolved"] = e->resolved();
      out["problems"] = e->problems;
    }
    return Ok(out, result->created ? 201 : 200);
  });

  router.Handle("GET", "/registry/graph", [&reg](const http::Request& req) {
    auto snap = reg.snapshot();
    std::string format = req.Query("format").value_or("json");
    if (format == "dot") {
      std::string dot = "digraph cortex {\n  rankdir=LR;\n  node [shape=box];\n";
      for (const auto& e : snap->entries()) {
        dot += "  " + DotQuote(e->key) + (e->resolved() ? "" : " [color=red]") + ";\n";
      }
      std::set<std::string> missing;
      for (const auto& e : snap->entries()) {
        for (const Dependency& d : e->dependencies) {
          if (!d.kind) continue;
          std::string to = d.resolved() ? d.target
                                        : "missing " + std::string(registry::EnumName(*d.kind)) +
                                              "/" + d.reference;
          if (!d.resolved() && missing.insert(to).second) {
            dot += "  " + DotQuote(to) + " [style=dashed, color=red];\n";
          }
          dot += "  " + DotQuote(e->key) + " -> " + DotQuote(to) +
                 " [label=" + DotQuote(std::string(ViaName(d.via))) + "];\n";
        }
      }
      dot += "}\n";
      return http::Response::Text(200, dot, "text/vnd.graphviz");
    }
    if (format != "json") {
      return ErrorFromStatus(InvalidArgumentError("format must be json or dot"));
    }
    Json nodes = Json::array(), edges = Json::array();
    for (const auto& e : snap->entries()) {
      nodes.push_back({{"id", e->key},
                       {"kind", std::string(registry::EnumName(e->kind()))},
                       {"name", e->name()},
                       {"resolved", e->resolved()}});
      for (const Dependency& d : e->dependencies) {
        if (!d.kind) continue;
        Json edge = {{"from", e->key}, {"via", std::string(ViaName(d.via))}, {"field", d.field}};
        if (d.resolved()) {
          edge["to"] = d.target;
        } else {
          edge["missing"] = d.reference;
          edge["error"] = d.error;
        }
        edges.push_back(edge);
      }
    }
    return Ok({{"generation", snap->generation()}, {"nodes", nodes}, {"edges", edges}});
  });

  router.Handle("GET", "/registry/errors", [&reg](const http::Request&) {
    auto snap = reg.snapshot();
    Json errors = Json::array();
    for (const auto& fe : snap->errors()) {
      // The file's warnings too: a misspelt field's warning ("did you mean 'description'?") is
      // often what explains its error ("missing required field 'description'").
      errors.push_back(
          {{"path", fe.file->rel_path},
           {"serving_last_good", fe.file->stale},
           {"diagnostics", DiagnosticsJson(fe.file->diagnostics, registry::Severity::kError)},
           {"warnings", DiagnosticsJson(fe.file->diagnostics, registry::Severity::kWarning)}});
    }
    Json conflicts = Json::array();
    for (const auto& c : snap->conflicts()) {
      conflicts.push_back({{"key", c.key}, {"served", c.served_path}, {"ignored", c.ignored_path}});
    }
    Json unresolved = Json::array();
    for (const auto& e : snap->entries()) {
      if (!e->resolved()) {
        unresolved.push_back(
            {{"key", e->key}, {"path", e->file->rel_path}, {"problems", e->problems}});
      }
    }
    return Ok({{"generation", snap->generation()},
               {"errors", errors},
               {"conflicts", conflicts},
               {"unresolved", unresolved}});
  });

  router.Handle("GET", "/registry/schema/{kind}", [](const http::Request& req) {
    auto kind = KindParam(req);
    if (!kind.ok()) return ErrorFromStatus(kind.status());
    return Ok(registry::KindSchema(*kind));
  });

  router.Handle("GET", "/registry/events", [&reg, options](const http::Request&) {
    http::Response resp;
    resp.sse = [&reg, options](http::SseWriter& w) {
      auto sub = reg.Subscribe();
      Json hello = {{"generation", reg.snapshot()->generation()}};
      if (!w.Send("hello", DumpJson(hello))) {
        reg.Unsubscribe(sub);
        return;
      }
      http::SseKeepAlive keep_alive(
          w, std::chrono::duration_cast<std::chrono::milliseconds>(options.events_keepalive));
      while (w.IsOpen()) {
        // Short waits so the stream ends promptly when the server stops.
        for (const registry::RegistryEvent& ev : sub->Wait(std::chrono::milliseconds(200))) {
          Json j = {{"type", std::string(registry::EventTypeName(ev.type))},
                    {"generation", ev.generation}};
          if (!ev.key.empty()) j["key"] = ev.key;
          if (!ev.path.empty()) j["path"] = ev.path;
          if (!ev.message.empty()) j["message"] = ev.message;
          if (!w.Send(registry::EventTypeName(ev.type), DumpJson(j),
                      std::to_string(ev.generation))) {
            break;
          }
          keep_alive.Sent();
        }
        if (!keep_alive.Tick()) break;
      }
      reg.Unsubscribe(sub);
    };
    return resp;
  });
}

}  // namespace cortex::api
