#include "registry/registry.h"
#include "common/fd.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

namespace cortex::registry {

namespace fs = std::filesystem;

std::string EntryKey(Kind kind, std::string_view name) {
  std::string key(EnumName(kind));
  key += '/';
  key += name;
  return key;
}

std::string_view EventTypeName(RegistryEvent::Type type) {
  switch (type) {
    case RegistryEvent::Type::kAdded:
      return "added";
    case RegistryEvent::Type::kUpdated:
      return "updated";
    case RegistryEvent::Type::kRemoved:
      return "removed";
    case RegistryEvent::Type::kError:
      return "error";
    case RegistryEvent::Type::kErrorCleared:
      return "error_cleared";
    case RegistryEvent::Type::kResync:
      return "resync";
  }
  return "?";
}

namespace {

std::string Normalize(const fs::path& p) {
  std::string s = p.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

std::string DirOf(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
}

bool IsHiddenComponent(std::string_view rel) {
  size_t pos = 0;
  while (pos < rel.size()) {
    size_t end = rel.find('/', pos);
    if (end == std::string_view::npos) end = rel.size();
    if (end > pos && rel[pos] == '.' && rel.substr(pos, end - pos) != "." &&
        rel.substr(pos, end - pos) != "..") {
      return true;
    }
    pos = end + 1;
  }
  return false;
}

std::string KindLower(Kind k) {
  std::string s(EnumName(k));
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int Depth(const std::string& rel) {
  return static_cast<int>(std::count(rel.begin(), rel.end(), '/'));
}

bool LooksLikePath(std::string_view ref) {
  return ref.find('/') != std::string_view::npos || ref.ends_with(".yml") ||
         ref.ends_with(".yaml") || ref.ends_with(".md");
}

// A reference to resolve, before resolution.
struct RawRef {
  DependencyVia via;
  std::string field;
  std::string reference;
  std::optional<Kind> kind;  // nullopt: a plain file
};

void AddImports(const ImportSpec& imp, std::vector<RawRef>* out) {
  auto add = [&](const std::vector<std::string>& list, const char* cat, std::optional<Kind> k) {
    for (size_t i = 0; i < list.size(); ++i) {
      out->push_back({DependencyVia::kImport,
                      std::string("import.") + cat + "[" + std::to_string(i) + "]", list[i], k});
    }
  };
  add(imp.agents, "agents", Kind::kAgent);
  add(imp.tools, "tools", Kind::kTool);
  add(imp.relics, "relics", Kind::kRelic);
  add(imp.workflows, "workflows", Kind::kWorkflow);
  add(imp.monuments, "monuments", Kind::kMonument);
  add(imp.amulets, "amulets", std::nullopt);
  add(imp.metadata, "metadata", std::nullopt);
}

void AddSteps(const std::vector<WorkflowStep>& steps, const std::string& prefix,
              const std::string& self, std::vector<RawRef>* out) {
  for (size_t i = 0; i < steps.size(); ++i) {
    const WorkflowStep& s = steps[i];
    std::string field = prefix + "[" + std::to_string(i) + "]";
    std::optional<Kind> k;
    switch (s.type) {
      case StepType::kTool:
        k = Kind::kTool;
        break;
      case StepType::kAgent:
        k = Kind::kAgent;
        break;
      case StepType::kRelic:
        k = Kind::kRelic;
        break;
      case StepType::kWorkflow:
        k = Kind::kWorkflow;
        break;
      default:
        break;
    }
    bool is_url = s.target.starts_with("http://") || s.target.starts_with("https://");
    bool is_self = s.type == StepType::kWorkflow && (s.target == "self" || s.target == self);
    if (k && !s.target.empty() && !is_url && !is_self) {
      out->push_back({DependencyVia::kStep, field + ".target", s.target, k});
    }
    AddSteps(s.parallel, field + ".parallel", self, out);
    AddSteps(s.then_steps, field + ".then", self, out);
    AddSteps(s.else_steps, field + ".else", self, out);
  }
}

void AddFeeds(const std::vector<ContextFeed>& feeds, std::vector<RawRef>* out) {
  for (size_t i = 0; i < feeds.size(); ++i) {
    const FeedSource& src = feeds[i].source;
    std::optional<Kind> k;
    if (src.type == "tool") k = Kind::kTool;
    if (src.type == "relic") k = Kind::kRelic;
    if (src.type == "agent") k = Kind::kAgent;
    if (src.type == "workflow") k = Kind::kWorkflow;
    if (k && !src.name.empty()) {
      out->push_back({DependencyVia::kFeed, "context_feeds[" + std::to_string(i) + "].source.name",
                      src.name, k});
    }
  }
}

void AddComponents(const std::vector<const ComponentRef*>& comps, const char* field, Kind k,
                   std::vector<RawRef>* out) {
  for (size_t i = 0; i < comps.size(); ++i) {
    const ComponentRef& c = *comps[i];
    std::string f = std::string(field) + "[" + std::to_string(i) + "]";
    out->push_back({DependencyVia::kComponent, c.path ? f + ".path" : f + ".name",
                    c.path ? *c.path : c.name, k});
  }
}

std::vector<RawRef> ReferencesOf(const Manifest& m) {
  std::vector<RawRef> refs;
  AddImports(m.header.imports, &refs);
  if (const auto* tool = m.As<ToolSpec>()) {
    const ToolImplementation& impl = tool->implementation;
    bool runs_script = impl.type != "api" && impl.type != "container" && impl.type != "docker" &&
                       impl.type != "mcp";
    if (runs_script && !impl.entrypoint.empty()) {
      refs.push_back({DependencyVia::kFile, "implementation.entrypoint", impl.entrypoint, {}});
    }
    if (impl.type == "mcp" && impl.mcp && impl.mcp->relic) {
      refs.push_back(
          {DependencyVia::kComponent, "implementation.mcp.relic", *impl.mcp->relic, Kind::kRelic});
    }
  } else if (const auto* agent = m.As<AgentSpec>()) {
    const Persona& p = agent->persona;
    if (!p.agent.empty()) refs.push_back({DependencyVia::kFile, "persona.agent", p.agent, {}});
    if (p.user) refs.push_back({DependencyVia::kFile, "persona.user", *p.user, {}});
    if (p.system) refs.push_back({DependencyVia::kFile, "persona.system", *p.system, {}});
    if (p.knowledge) refs.push_back({DependencyVia::kFile, "persona.knowledge", *p.knowledge, {}});
    AddFeeds(agent->context_feeds, &refs);
  } else if (const auto* relic = m.As<RelicSpec>()) {
    if (relic->deployment && relic->deployment->compose_file) {
      refs.push_back(
          {DependencyVia::kFile, "deployment.compose_file", *relic->deployment->compose_file, {}});
    }
    const auto& sched = relic->automation.scheduled_workflows;
    for (size_t i = 0; i < sched.size(); ++i) {
      refs.push_back({DependencyVia::kStep,
                      "automation.scheduled_workflows[" + std::to_string(i) + "].workflow",
                      sched[i].workflow, Kind::kWorkflow});
    }
  } else if (const auto* wf = m.As<WorkflowSpec>()) {
    AddSteps(wf->steps, "steps", m.name(), &refs);
  } else if (const auto* mon = m.As<MonumentSpec>()) {
    bool seed = mon->components.has_value();
    AddComponents(mon->Relics(), seed ? "components.relics" : "infrastructure.relics", Kind::kRelic,
                  &refs);
    AddComponents(mon->Agents(), seed ? "components.agents" : "intelligence.agents", Kind::kAgent,
                  &refs);
    AddComponents(mon->Workflows(), seed ? "components.workflows" : "automation.workflows",
                  Kind::kWorkflow, &refs);
    std::vector<const ComponentRef*> tools;
    for (const ComponentRef& c : mon->tools) tools.push_back(&c);
    if (seed) {
      for (const ComponentRef& c : mon->components->tools) tools.push_back(&c);
    }
    AddComponents(tools, "tools", Kind::kTool, &refs);
    AddFeeds(mon->context_feeds, &refs);
  }
  return refs;
}

std::vector<PreparedRef> PrepareRefs(const Manifest& m, const std::string& path,
                                     const std::string& root) {
  std::vector<PreparedRef> out;
  const std::string dir = DirOf(path);
  for (RawRef& raw : ReferencesOf(m)) {
    PreparedRef r;
    r.via = raw.via;
    r.field = std::move(raw.field);
    r.kind = raw.kind;
    if (raw.via == DependencyVia::kFile) {
      // Files are relative to the manifest's folder, however they are written.
      r.form = PreparedRef::Form::kFile;
      r.target = raw.reference.starts_with("/") ? Normalize(raw.reference)
                                                : Normalize(fs::path(dir) / raw.reference);
    } else if (!raw.kind) {
      r.form = PreparedRef::Form::kUnsupported;
    } else if (LooksLikePath(raw.reference)) {
      r.form = PreparedRef::Form::kPath;
      const std::string& ref = raw.reference;
      if (ref.starts_with("/")) {
        r.target = Normalize(ref);
      } else if (ref.starts_with("./") || ref.starts_with("../") || ref == "." || ref == "..") {
        r.target = Normalize(fs::path(dir) / ref);
      } else {
        r.target = Normalize(fs::path(root) / ref);  // root-relative
      }
      r.outside_root = r.target.compare(0, root.size() + 1, root + "/") != 0;
    } else {
      r.form = PreparedRef::Form::kName;
      r.target = EntryKey(*raw.kind, raw.reference);
    }
    r.reference = std::move(raw.reference);
    out.push_back(std::move(r));
  }
  return out;
}

std::string FirstError(const FileRecord& r) {
  for (const Diagnostic& d : r.diagnostics) {
    if (d.severity == Severity::kError) return d.ToString();
  }
  return "failed to load";
}

}  // namespace

// ---------------------------------------------------------------------------------------------

const Entry* Snapshot::Find(Kind kind, std::string_view name) const {
  return FindKey(EntryKey(kind, name));
}

const Entry* Snapshot::FindKey(std::string_view key) const {
  if (!by_key_) return nullptr;
  auto it = by_key_->find(std::string(key));
  return it == by_key_->end() ? nullptr : entries_[it->second].get();
}

std::vector<const Entry*> Snapshot::List(std::optional<Kind> kind) const {
  std::vector<const Entry*> out;
  for (const auto& e : entries_) {
    if (!kind || e->kind() == *kind) out.push_back(e.get());
  }
  return out;
}

std::vector<const Entry*> Snapshot::DependencyOrder(const Entry& root) const {
  std::vector<const Entry*> order;
  std::set<const Entry*> done, active;
  std::function<void(const Entry*)> visit = [&](const Entry* e) {
    if (done.count(e) || active.count(e)) return;
    active.insert(e);
    for (const Dependency& d : e->dependencies) {
      if (!d.resolved() || !d.kind) continue;
      if (const Entry* dep = FindKey(d.target)) visit(dep);
    }
    active.erase(e);
    done.insert(e);
    if (e != &root) order.push_back(e);
  };
  visit(&root);
  return order;
}

// Builds a Snapshot from the file records: identity, conflicts, dependencies, cycles.
class SnapshotBuilder {
 public:
  SnapshotBuilder(const std::map<std::string, std::shared_ptr<const FileRecord>>& files,
                  std::unordered_map<std::string, bool>* exists_cache)
      : files_(files), exists_cache_(exists_cache) {}

  std::shared_ptr<Snapshot> Build(uint64_t generation) {
    auto snap = std::make_shared<Snapshot>();
    snap->generation_ = generation;
    snap->created_at_ = std::chrono::system_clock::now();
    snap->files_ = files_;

    // Identity: (kind, name). The file nearest the root wins; ties go to path order.
    std::map<std::string, std::vector<std::shared_ptr<const FileRecord>>> by_key;
    for (const auto& [path, rec] : files_) {
      if (HasErrors(rec->diagnostics)) snap->errors_.push_back({rec});
      if (!rec->manifest) continue;
      by_key[EntryKey(rec->manifest->kind(), rec->manifest->name())].push_back(rec);
    }
    std::vector<std::shared_ptr<Entry>> entries;
    for (auto& [key, recs] : by_key) {
      std::sort(recs.begin(), recs.end(), [](const auto& a, const auto& b) {
        if (a->external != b->external) return !a->external;
        int da = Depth(a->rel_path), db = Depth(b->rel_path);
        return da != db ? da < db : a->path < b->path;
      });
      auto e = std::make_shared<Entry>();
      e->file = recs[0];
      e->key = key;
      for (size_t i = 1; i < recs.size(); ++i) {
        snap->conflicts_.push_back({key, recs[0]->rel_path, recs[i]->rel_path});
      }
      entries.push_back(std::move(e));
    }
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      return a->kind() != b->kind() ? a->kind() < b->kind() : a->name() < b->name();
    });
    auto index = std::make_shared<std::unordered_map<std::string, size_t>>();
    index->reserve(entries.size());
    for (size_t i = 0; i < entries.size(); ++i) (*index)[entries[i]->key] = i;
    snap->by_key_ = index;
    index_ = index.get();
    entries_ = &entries;

    for (auto& e : entries) Resolve(*e);
    FindCycles(entries);
    for (auto& e : entries) {
      for (const Dependency& d : e->dependencies) {
        if (!d.resolved()) e->problems.push_back(d.field + ": " + d.error);
      }
    }
    snap->entries_.assign(entries.begin(), entries.end());
    return snap;
  }

 private:
  bool Exists(const std::string& path) {
    auto it = exists_cache_->find(path);
    if (it != exists_cache_->end()) return it->second;
    struct stat st;
    bool ok = ::stat(path.c_str(), &st) == 0;
    exists_cache_->emplace(path, ok);
    return ok;
  }

  // The manifest file a path import names: the file itself, or the kind's file in a folder.
  const FileRecord* FileForPath(const std::string& path, std::optional<Kind> kind) {
    auto it = files_.find(path);
    if (it != files_.end()) return it->second.get();
    if (kind) {
      std::string base = path + "/" + KindLower(*kind);
      for (const char* ext : {".yml", ".yaml", ".md"}) {
        auto f = files_.find(base + ext);
        if (f != files_.end()) return f->second.get();
      }
    }
    return nullptr;
  }

  // "no Tool named 'x' in the registry (did you mean 'y'?)", with hints memoised per build.
  std::string MissingName(Kind kind, const std::string& name) {
    std::string key = EntryKey(kind, name);
    auto it = missing_cache_.find(key);
    if (it != missing_cache_.end()) return it->second;
    std::string msg = "no " + std::string(EnumName(kind)) + " named '" + name + "' in the registry";
    std::vector<std::string_view> names;
    for (const auto& other : *entries_) {
      if (other->kind() == kind) names.push_back(other->name());
    }
    if (names.size() <= 5000) {  // bound the cost of the hint in huge registries
      std::string_view hint = ClosestMatch(name, names);
      if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
    }
    return missing_cache_.emplace(key, msg).first->second;
  }

  void Resolve(Entry& e) {
    e.dependencies.reserve(e.file->refs.size());
    for (const PreparedRef& ref : e.file->refs) {
      Dependency d;
      d.via = ref.via;
      d.field = ref.field;
      d.reference = ref.reference;
      d.kind = ref.kind;
      switch (ref.form) {
        case PreparedRef::Form::kFile:
          d.target = ref.target;
          if (!Exists(ref.target)) {
            d.error = "file " + ref.reference + " not found (looked for " + ref.target + ")";
          }
          break;
        case PreparedRef::Form::kUnsupported:
          d.error = "this kind of import (Amulet/Metadata) is not supported yet";
          break;
        case PreparedRef::Form::kPath: {
          const FileRecord* rec = FileForPath(ref.target, ref.kind);
          if (!rec) {
            d.error = Exists(ref.target)
                          ? "no " + std::string(EnumName(*ref.kind)) + " manifest at " + ref.target
                          : "file " + ref.reference + " not found (looked for " + ref.target + ")";
          } else if (!rec->manifest) {
            d.error = rec->not_a_manifest ? rec->rel_path + " is not a manifest"
                                          : rec->rel_path + " failed to load: " + FirstError(*rec);
          } else if (rec->manifest->kind() != *ref.kind) {
            d.error = rec->rel_path + " declares a " +
                      std::string(EnumName(rec->manifest->kind())) + ", not a " +
                      std::string(EnumName(*ref.kind));
          } else {
            d.target = EntryKey(rec->manifest->kind(), rec->manifest->name());
          }
          break;
        }
        case PreparedRef::Form::kName:
          if (index_->count(ref.target)) {
            d.target = ref.target;
          } else {
            d.error = MissingName(*ref.kind, ref.reference);
          }
          break;
      }
      e.dependencies.push_back(std::move(d));
    }
  }

  // Import and component edges must not form cycles (a workflow step naming a relic that
  // imports the workflow is use, not import, and is fine).
  void FindCycles(std::vector<std::shared_ptr<Entry>>& entries) {
    size_t n = entries.size();
    std::vector<std::vector<size_t>> adj(n);
    for (size_t i = 0; i < n; ++i) {
      for (const Dependency& d : entries[i]->dependencies) {
        if (!d.resolved() || !d.kind) continue;
        if (d.via != DependencyVia::kImport && d.via != DependencyVia::kComponent) continue;
        auto it = index_->find(d.target);
        if (it != index_->end()) adj[i].push_back(it->second);
      }
    }
    // Iterative DFS with colours; each back edge gives one cycle path.
    std::vector<int> colour(n, 0);
    std::vector<size_t> parent_stack;
    std::set<std::set<size_t>> reported;
    for (size_t s = 0; s < n; ++s) {
      if (colour[s]) continue;
      std::vector<std::pair<size_t, size_t>> stack{{s, 0}};
      colour[s] = 1;
      parent_stack = {s};
      while (!stack.empty()) {
        auto& [u, next] = stack.back();
        if (next < adj[u].size()) {
          size_t v = adj[u][next++];
          if (colour[v] == 0) {
            colour[v] = 1;
            stack.push_back({v, 0});
            parent_stack.push_back(v);
          } else if (colour[v] == 1) {
            auto pos = std::find(parent_stack.begin(), parent_stack.end(), v);
            std::set<size_t> members(pos, parent_stack.end());
            if (reported.insert(members).second) {
              std::string path;
              for (auto p = pos; p != parent_stack.end(); ++p) path += entries[*p]->key + " -> ";
              path += entries[v]->key;
              for (size_t m : members) entries[m]->problems.push_back("import cycle: " + path);
            }
          }
        } else {
          colour[u] = 2;
          stack.pop_back();
          parent_stack.pop_back();
        }
      }
    }
  }

  const std::map<std::string, std::shared_ptr<const FileRecord>>& files_;
  std::unordered_map<std::string, bool>* exists_cache_;
  const std::unordered_map<std::string, size_t>* index_ = nullptr;
  const std::vector<std::shared_ptr<Entry>>* entries_ = nullptr;
  std::unordered_map<std::string, std::string> missing_cache_;
};

// ---------------------------------------------------------------------------------------------

std::vector<RegistryEvent> Subscription::Wait(std::chrono::milliseconds timeout) {
  MutexLock lock(mu_);
  cv_.wait_for(lock.native(), timeout,
               [&]() CORTEX_REQUIRES(mu_) { return !queue_.empty() || closed_; });
  std::vector<RegistryEvent> out(queue_.begin(), queue_.end());
  queue_.clear();
  return out;
}

Registry::Registry(RegistryOptions options) : options_(std::move(options)) {
  std::error_code ec;
  fs::path abs = fs::absolute(options_.root, ec);
  fs::path canon = fs::weakly_canonical(abs, ec);
  root_ = Normalize(ec ? abs : canon);
  auto empty = std::make_shared<Snapshot>();
  snapshot_ = empty;
  if (!options_.applied_index.empty()) {
    std::ifstream in(options_.applied_index);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) applied_.insert(line);
    }
  }
}

bool Registry::WrittenByApi(const std::string& path) const {
  MutexLock lock(applied_mu_);
  return applied_.count(path) > 0;
}

Status Registry::SaveApplied() const {
  if (options_.applied_index.empty()) return Status::Ok();
  std::string tmp = options_.applied_index + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const std::string& p : applied_) out << p << "\n";
    out.flush();
    if (!out) return UnavailableError("cannot write " + tmp);
  }
  if (::rename(tmp.c_str(), options_.applied_index.c_str()) != 0) {
    return UnavailableError("cannot write " + options_.applied_index + ": " + ErrnoText(errno));
  }
  return Status::Ok();
}

Registry::~Registry() {
  StopWatching();
  MutexLock lock(subs_mu_);
  for (auto& s : subscribers_) {
    MutexLock l(s->mu_);
    s->closed_ = true;
    s->cv_.notify_all();
  }
}

std::shared_ptr<const Snapshot> Registry::snapshot() const {
  MutexLock lock(snapshot_mu_);
  return snapshot_;
}

std::string Registry::RelPath(const std::string& abs) const {
  if (abs.size() > root_.size() && abs.compare(0, root_.size(), root_) == 0 &&
      abs[root_.size()] == '/') {
    return abs.substr(root_.size() + 1);
  }
  return abs;
}

std::vector<std::string> Registry::ListManifestFiles(const std::string& dir) const {
  std::vector<std::string> out;
  std::set<std::pair<dev_t, ino_t>> seen_dirs;
  std::vector<std::string> stack{dir};
  while (!stack.empty() && out.size() < options_.max_files) {
    std::string d = std::move(stack.back());
    stack.pop_back();
    struct stat st;
    if (::stat(d.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (!seen_dirs.insert({st.st_dev, st.st_ino}).second) continue;  // symlink loop
    std::error_code ec;
    for (fs::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec)) {
      std::string name = it->path().filename().string();
      if (name.empty() || name[0] == '.') continue;
      std::string p = d + "/" + name;
      std::error_code tec;
      auto status = it->status(tec);  // follows symlinks
      if (tec) continue;
      if (fs::is_directory(status)) {
        // Symlinked folders are not followed: the watcher cannot see changes behind them, and
        // a link back into the tree would list the same files twice.
        if (it->is_symlink(tec)) continue;
        stack.push_back(p);
      } else if (fs::is_regular_file(status) && FormatOfPath(p)) {
        out.push_back(p);
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::shared_ptr<const FileRecord> Registry::ParseFile(
    const std::string& path, bool external,
    const std::shared_ptr<const FileRecord>& previous) const {
  auto rec = std::make_shared<FileRecord>();
  rec->path = path;
  rec->rel_path = RelPath(path);
  rec->external = external;
  rec->loaded_at = std::chrono::system_clock::now();
  rec->revision = previous ? previous->revision + 1 : 1;
  auto fail = [&](std::string message) {
    rec->diagnostics.push_back({Severity::kError, rec->rel_path, 0, 0, std::move(message)});
  };
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    fail("cannot read: " + ErrnoText(errno));
  } else if (!S_ISREG(st.st_mode)) {
    fail("not a regular file");
  } else if (static_cast<size_t>(st.st_size) > options_.parser.max_bytes) {
    fail("file is " + std::to_string(st.st_size) + " bytes, over the limit of " +
         std::to_string(options_.parser.max_bytes) + " bytes for a manifest");
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      fail("cannot read: " + ErrnoText(errno));
    } else {
      std::ostringstream ss;
      ss << in.rdbuf();
      rec->text = ss.str();
      if (previous && previous->text == rec->text && !previous->external == !external) {
        return previous;  // unchanged: keep the same record (no event, no re-validation)
      }
      ParsedFile parsed =
          ParseManifest(rec->text, rec->rel_path, *FormatOfPath(path), options_.parser);
      rec->diagnostics = std::move(parsed.diagnostics);
      rec->not_a_manifest = parsed.not_a_manifest;
      if (parsed.manifest) {
        rec->manifest = std::make_shared<const Manifest>(std::move(*parsed.manifest));
        rec->refs = PrepareRefs(*rec->manifest, path, root_);
      }
    }
  }
  if (!rec->manifest && HasErrors(rec->diagnostics) && previous && previous->manifest) {
    rec->manifest = previous->manifest;  // keep the last good version in service
    rec->refs = previous->refs;
    rec->stale = true;
  }
  return rec;
}

Status Registry::LoadAll() {
  MutexLock lock(write_mu_);
  struct stat st;
  if (::stat(root_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return InvalidArgumentError("manifests folder " + root_ + " does not exist or is not a folder");
  }
  std::vector<std::string> paths = ListManifestFiles(root_);
  std::vector<std::shared_ptr<const FileRecord>> parsed(paths.size());
  int threads = options_.load_threads > 0
                    ? options_.load_threads
                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min<int>(threads, static_cast<int>(paths.size() / 64 + 1));
  std::atomic<size_t> next{0};
  // On the pool's threads too: files_ is only read, while this thread holds write_mu_.
  auto work = [&]() CORTEX_REQUIRES(write_mu_) {
    for (size_t i = next++; i < paths.size(); i = next++) {
      auto it = files_.find(paths[i]);
      parsed[i] = ParseFile(paths[i], false, it == files_.end() ? nullptr : it->second);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();

  std::map<std::string, std::shared_ptr<const FileRecord>> files;
  for (size_t i = 0; i < paths.size(); ++i) files.emplace(paths[i], std::move(parsed[i]));
  files_ = std::move(files);
  exists_cache_.clear();
  Publish(nullptr);
  return Status::Ok();
}

std::vector<Registry::FileChange> Registry::ReloadPaths(const std::vector<std::string>& changed,
                                                        const std::vector<std::string>& removed) {
  std::vector<FileChange> changes;
  auto drop = [&](const std::string& p) CORTEX_REQUIRES(write_mu_) {
    auto it = files_.find(p);
    if (it == files_.end()) return;
    changes.push_back({p, it->second, nullptr});
    files_.erase(it);
  };
  for (const std::string& p : removed) drop(p);
  for (const std::string& p : changed) {
    if (!FormatOfPath(p) || IsHiddenComponent(RelPath(p))) continue;
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) {
      drop(p);
      continue;
    }
    if (!S_ISREG(st.st_mode)) continue;
    auto it = files_.find(p);
    std::shared_ptr<const FileRecord> before = it == files_.end() ? nullptr : it->second;
    auto rec = ParseFile(p, false, before);
    if (rec != before) {
      changes.push_back({p, before, rec});
      files_[p] = std::move(rec);
    }
  }
  return changes;
}

void Registry::RescanDir(const std::string& dir, std::vector<std::string>* changed,
                         std::vector<std::string>* removed) {
  std::vector<std::string> present = ListManifestFiles(dir);
  std::set<std::string> present_set(present.begin(), present.end());
  std::string prefix = dir == "/" ? "/" : dir + "/";
  for (const auto& [path, rec] : files_) {
    if (!rec->external && path.compare(0, prefix.size(), prefix) == 0 && !present_set.count(path)) {
      removed->push_back(path);
    }
  }
  changed->insert(changed->end(), present.begin(), present.end());
}

void Registry::ApplyEvents(const std::vector<FileEvent>& events) {
  MutexLock lock(write_mu_);
  std::vector<std::string> changed, removed;
  bool relevant = false;
  bool file_deps_touched = false;  // a file some manifest depends on, or a rescan
  for (const FileEvent& ev : events) {
    switch (ev.type) {
      case FileEventType::kChanged:
        if (exists_cache_.erase(ev.path)) relevant = file_deps_touched = true;
        if (FormatOfPath(ev.path)) {
          changed.push_back(ev.path);
          relevant = true;
        }
        break;
      case FileEventType::kRemoved:
        if (exists_cache_.erase(ev.path)) relevant = file_deps_touched = true;
        if (files_.count(ev.path)) {
          removed.push_back(ev.path);
          relevant = true;
        }
        break;
      case FileEventType::kRescanDir:
        exists_cache_.clear();
        RescanDir(ev.path, &changed, &removed);
        relevant = file_deps_touched = true;
        break;
      case FileEventType::kRescanAll:
        exists_cache_.clear();
        RescanDir(root_, &changed, &removed);
        relevant = file_deps_touched = true;
        break;
    }
  }
  if (!relevant) return;
  std::vector<FileChange> changes = ReloadPaths(changed, removed);
  if (!file_deps_touched) {
    if (changes.empty()) return;  // the same text saved again
    if (PublishEdits(changes)) return;
  }
  Publish(nullptr);
}

bool Registry::PublishEdits(const std::vector<FileChange>& changes) {
  std::shared_ptr<const Snapshot> prev = snapshot();
  if (!prev->by_key_) return false;
  for (const FileChange& c : changes) {
    if (!c.before || !c.after || !c.before->manifest || !c.after->manifest) return false;
    if (c.after->external || c.before->refs != c.after->refs) return false;
    if (c.before->manifest->kind() != c.after->manifest->kind() ||
        c.before->manifest->name() != c.after->manifest->name()) {
      return false;
    }
    const Entry* served =
        prev->FindKey(EntryKey(c.after->manifest->kind(), c.after->manifest->name()));
    if (!served || served->file != c.before) return false;  // a conflict's loser, or unknown
  }
  // Same keys and same references: every other entry resolves exactly as before, so only the
  // edited entries are replaced, and the key index is shared with the previous snapshot.
  auto next = std::make_shared<Snapshot>();
  next->generation_ = ++generation_;
  next->created_at_ = std::chrono::system_clock::now();
  next->entries_ = prev->entries_;
  next->by_key_ = prev->by_key_;
  next->conflicts_ = prev->conflicts_;
  next->files_ = files_;
  std::vector<RegistryEvent> events;
  std::set<std::string> changed_paths;
  for (const FileChange& c : changes) {
    changed_paths.insert(c.path);
    std::string key = EntryKey(c.after->manifest->kind(), c.after->manifest->name());
    size_t index = prev->by_key_->at(key);
    const Entry& old = *prev->entries_[index];
    auto e = std::make_shared<Entry>();
    e->file = c.after;
    e->key = key;
    e->dependencies = old.dependencies;
    e->problems = old.problems;
    next->entries_[index] = std::move(e);
    if (c.after->manifest != c.before->manifest || c.after->stale != c.before->stale) {
      events.push_back(
          {RegistryEvent::Type::kUpdated, next->generation_, key, c.after->rel_path, ""});
    }
    if (HasErrors(c.after->diagnostics)) {
      events.push_back({RegistryEvent::Type::kError, next->generation_, "", c.after->rel_path,
                        FirstError(*c.after)});
    } else if (HasErrors(c.before->diagnostics)) {
      events.push_back(
          {RegistryEvent::Type::kErrorCleared, next->generation_, "", c.after->rel_path, ""});
    }
  }
  for (const FileError& fe : prev->errors_) {
    if (!changed_paths.count(fe.file->path)) next->errors_.push_back(fe);
  }
  for (const FileChange& c : changes) {
    if (HasErrors(c.after->diagnostics)) next->errors_.push_back({c.after});
  }
  std::sort(next->errors_.begin(), next->errors_.end(),
            [](const FileError& a, const FileError& b) { return a.file->path < b.file->path; });
  {
    MutexLock lock(snapshot_mu_);
    snapshot_ = std::move(next);
  }
  Notify(events);
  return true;
}

void Registry::Publish(std::vector<RegistryEvent>* extra_events) {
  // Files outside the root that something imports by path are loaded too.
  for (int round = 0; round < 8; ++round) {
    std::vector<std::string> wanted;
    for (const auto& [path, rec] : files_) {
      for (const PreparedRef& ref : rec->refs) {
        if (!ref.outside_root || files_.count(ref.target)) continue;
        struct stat st;
        if (::stat(ref.target.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
            FormatOfPath(ref.target)) {
          wanted.push_back(ref.target);
        }
      }
    }
    if (wanted.empty() || files_.size() >= options_.max_files) break;
    for (const std::string& p : wanted) files_[p] = ParseFile(p, true, nullptr);
  }

  SnapshotBuilder builder(files_, &exists_cache_);
  std::shared_ptr<Snapshot> next = builder.Build(++generation_);
  std::shared_ptr<const Snapshot> prev = snapshot();

  std::vector<RegistryEvent> events;
  if (extra_events) events = std::move(*extra_events);
  for (const auto& e : next->entries()) {
    const Entry* old = prev->FindKey(e->key);
    if (!old) {
      events.push_back(
          {RegistryEvent::Type::kAdded, next->generation(), e->key, e->file->rel_path, ""});
    } else if (old->file != e->file || old->problems != e->problems) {
      events.push_back(
          {RegistryEvent::Type::kUpdated, next->generation(), e->key, e->file->rel_path, ""});
    }
  }
  for (const auto& e : prev->entries()) {
    if (!next->FindKey(e->key)) {
      events.push_back(
          {RegistryEvent::Type::kRemoved, next->generation(), e->key, e->file->rel_path, ""});
    }
  }
  std::set<std::string> old_errors;
  std::map<std::string, const FileRecord*> old_error_recs;
  for (const FileError& fe : prev->errors()) old_error_recs[fe.file->path] = fe.file.get();
  std::set<std::string> new_errors;
  for (const FileError& fe : next->errors()) {
    new_errors.insert(fe.file->path);
    auto it = old_error_recs.find(fe.file->path);
    if (it == old_error_recs.end() || it->second != fe.file.get()) {
      events.push_back({RegistryEvent::Type::kError, next->generation(), "", fe.file->rel_path,
                        FirstError(*fe.file)});
    }
  }
  for (const auto& [path, rec] : old_error_recs) {
    if (!new_errors.count(path)) {
      events.push_back(
          {RegistryEvent::Type::kErrorCleared, next->generation(), "", rec->rel_path, ""});
    }
  }

  {
    MutexLock lock(snapshot_mu_);
    snapshot_ = std::move(next);
  }
  Notify(events);
}

void Registry::Notify(const std::vector<RegistryEvent>& events) {
  if (events.empty()) return;
  MutexLock lock(subs_mu_);
  for (auto& sub : subscribers_) {
    MutexLock l(sub->mu_);
    for (const RegistryEvent& ev : events) {
      if (sub->queue_.size() >= sub->capacity_) {
        sub->queue_.clear();
        sub->queue_.push_back({RegistryEvent::Type::kResync, ev.generation, "", "",
                               "events were dropped: re-read the registry"});
        break;
      }
      sub->queue_.push_back(ev);
    }
    sub->cv_.notify_all();
  }
}

Status Registry::StartWatching(WatcherOptions options) {
  MutexLock lock(write_mu_);
  if (watcher_) return Status::Ok();
  auto w = Watcher::Start(root_, options,
                          [this](std::vector<FileEvent> events) { ApplyEvents(events); });
  if (!w.ok()) return w.status();
  watcher_ = std::move(w).value();
  return Status::Ok();
}

void Registry::StopWatching() {
  std::unique_ptr<Watcher> w;
  {
    MutexLock lock(write_mu_);
    w = std::move(watcher_);
  }
  w.reset();  // joins the watcher thread outside the lock (its callback takes the lock)
}

Result<ApplyResult> Registry::Apply(std::string_view text, FileFormat format,
                                    Diagnostics* diagnostics,
                                    const std::function<Status(Kind, std::string_view)>& admit) {
  ParsedFile parsed = ParseManifest(text, "<request>", format, options_.parser);
  if (diagnostics) *diagnostics = parsed.diagnostics;
  if (!parsed.manifest) {
    if (parsed.not_a_manifest) {
      return InvalidArgumentError(
          "the body is Markdown without YAML front matter declaring a kind");
    }
    // The message names the first error; every diagnostic is in the details.
    std::string first;
    size_t errors = 0;
    for (const Diagnostic& d : parsed.diagnostics) {
      if (d.severity != Severity::kError) continue;
      if (errors++ == 0) {
        first = d.line > 0 ? "line " + std::to_string(d.line) + ":" + std::to_string(d.column) +
                                 ": " + d.message
                           : d.message;
      }
    }
    std::string more = errors > 1 ? " (and " + std::to_string(errors - 1) + " more)" : "";
    return InvalidArgumentError("the manifest is invalid: " + first + more +
                                "; nothing was written");
  }
  const Manifest& m = *parsed.manifest;
  if (admit) CORTEX_RETURN_IF_ERROR(admit(m.kind(), m.name()));
  MutexLock lock(write_mu_);
  std::string key = EntryKey(m.kind(), m.name());
  std::string path;
  std::shared_ptr<const Snapshot> snap = snapshot();
  if (const Entry* existing = snap->FindKey(key); existing && !existing->file->external) {
    path = existing->file->path;
    if (FormatOfPath(path) != format) {
      return FailedPreconditionError(key + " is defined in " + existing->file->rel_path +
                                     ", a file of the other format; edit that file instead");
    }
  } else {
    std::string kind = KindLower(m.kind());
    path = root_ + "/" + kind + "s/" + m.name() + "/" + kind +
           (format == FileFormat::kMarkdown ? ".md" : ".yml");
  }
  bool created = !files_.count(path);
  std::error_code ec;
  fs::create_directories(DirOf(path), ec);
  if (ec) return UnavailableError("cannot create " + DirOf(path) + ": " + ec.message());
  std::string tmp = DirOf(path) + "/.cortex-apply-" + std::to_string(::getpid()) + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.flush();
    if (!out) {
      fs::remove(tmp, ec);
      return UnavailableError("cannot write " + tmp);
    }
  }
  {
    // Recorded as posted before it exists: a manifest never runs with the server's environment
    // because its origin was lost.
    MutexLock applied_lock(applied_mu_);
    if (applied_.insert(path).second) {
      if (Status st = SaveApplied(); !st.ok()) {
        applied_.erase(path);
        fs::remove(tmp, ec);
        return st;
      }
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = ErrnoText(errno);
    fs::remove(tmp, ec);
    return UnavailableError("cannot write " + path + ": " + err);
  }
  exists_cache_.clear();
  ReloadPaths({path}, {});
  Publish(nullptr);
  ApplyResult result;
  result.key = key;
  result.path = RelPath(path);
  result.created = created;
  for (const Diagnostic& d : parsed.diagnostics) {
    Diagnostic copy = d;
    copy.file = result.path;
    result.diagnostics.push_back(copy);
  }
  return result;
}

Status Registry::Delete(Kind kind, std::string_view name) {
  MutexLock lock(write_mu_);
  std::string key = EntryKey(kind, name);
  std::shared_ptr<const Snapshot> snap = snapshot();
  const Entry* e = snap->FindKey(key);
  if (!e) return NotFoundError("no " + key + " in the registry");
  if (e->file->external) {
    return FailedPreconditionError(key + " comes from " + e->file->path +
                                   ", outside the manifests folder; it cannot be deleted here");
  }
  if (::unlink(e->file->path.c_str()) != 0 && errno != ENOENT) {
    return UnavailableError("cannot delete " + e->file->rel_path + ": " + ErrnoText(errno));
  }
  {
    MutexLock applied_lock(applied_mu_);
    if (applied_.erase(e->file->path) > 0) (void)SaveApplied();  // a stale line is harmless
  }
  exists_cache_.clear();
  ReloadPaths({}, {e->file->path});
  Publish(nullptr);
  return Status::Ok();
}

std::shared_ptr<Subscription> Registry::Subscribe() {
  auto sub = std::make_shared<Subscription>();
  sub->capacity_ = options_.subscriber_queue;
  MutexLock lock(subs_mu_);
  subscribers_.push_back(sub);
  return sub;
}

void Registry::Unsubscribe(const std::shared_ptr<Subscription>& subscription) {
  MutexLock lock(subs_mu_);
  std::erase(subscribers_, subscription);
  MutexLock l(subscription->mu_);
  subscription->closed_ = true;
  subscription->cv_.notify_all();
}

}  // namespace cortex::registry
