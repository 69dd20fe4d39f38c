// registry_load_bench: how long a cold Registry::LoadAll() of N generated manifests takes, and how
// much memory it needs, against a baseline measured in the same run: parsing the same files with
// yaml-cpp (YAML::LoadFile, one thread), which only builds YAML trees (no validation, no typed
// manifests, no import resolution).
//
//   registry_load_bench [--count N] [--reps R] [--max-seconds S] [--keep]
//
// Prints figures; it never asserts timing. Its exit code is non-zero only when the benchmark
// itself could not run (or the load reported errors/unresolved imports, which makes the figures
// meaningless).
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "manifest_gen.h"
#include "registry/registry.h"

#ifdef CORTEX_HAVE_YAML_CPP
#include <yaml-cpp/yaml.h>
#endif

extern char** environ;

namespace {
using cortex::bench::Median;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using cortex::bench::LoadAvg;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double Min(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}
double Max(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

// A field of /proc/self/status in KiB ("VmHWM", "VmRSS"); -1 when absent.
long ProcStatusKiB(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  size_t n = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') {
      return std::atol(line.c_str() + n + 1);
    }
  }
  return -1;
}

double MiB(long kib) { return static_cast<double>(kib) / 1024.0; }

#ifdef CORTEX_HAVE_YAML_CPP
std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
#endif

// The files the registry reads: *.yml, *.yaml, *.md (and .markdown), no hidden components.
std::vector<std::string> ManifestFiles(const fs::path& root) {
  std::vector<std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    std::string name = it->path().filename().string();
    if (!name.empty() && name[0] == '.') {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file()) continue;
    std::string p = it->path().string();
    auto ends = [&](std::string_view s) { return p.size() >= s.size() && p.ends_with(s); };
    if (ends(".yml") || ends(".yaml") || ends(".md") || ends(".markdown")) out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  return out;
}

#ifdef CORTEX_HAVE_YAML_CPP
// Same front-matter split as the registry: a first line "---", up to a "---" or "..." line.
bool FrontMatter(std::string_view text, std::string_view* yaml) {
  if (!text.starts_with("---\n")) return false;
  size_t pos = 4;
  while (pos < text.size()) {
    size_t e = text.find('\n', pos);
    if (e == std::string_view::npos) e = text.size();
    std::string_view line = text.substr(pos, e - pos);
    if (line == "---" || line == "...") {
      *yaml = text.substr(4, pos - 4);
      return true;
    }
    pos = e + 1;
  }
  return false;
}
#endif

struct LoadStats {
  double ms = 0;
  size_t entries = 0, unresolved = 0, errors = 0, conflicts = 0, warnings = 0, files = 0;
  std::string first_problem;
};

LoadStats LoadOnce(const std::string& root, int threads) {
  cortex::registry::RegistryOptions opts;
  opts.root = root;
  opts.load_threads = threads;
  LoadStats s;
  cortex::registry::Registry reg(opts);
  auto t0 = Clock::now();
  cortex::Status st = reg.LoadAll();
  s.ms = MsSince(t0);
  if (!st.ok()) {
    s.errors = 1;
    s.first_problem = st.message();
    return s;
  }
  auto snap = reg.snapshot();
  s.entries = snap->entries().size();
  s.errors = snap->errors().size();
  s.conflicts = snap->conflicts().size();
  s.files = snap->files().size();
  for (const auto& e : snap->entries()) {
    if (!e->resolved()) {
      s.unresolved++;
      if (s.first_problem.empty()) s.first_problem = e->key + ": " + e->problems.front();
    }
  }
  for (const auto& [path, rec] : snap->files()) {
    for (const auto& d : rec->diagnostics) {
      if (d.severity == cortex::registry::Severity::kWarning) s.warnings++;
      if (d.severity == cortex::registry::Severity::kError && s.first_problem.empty()) {
        s.first_problem = d.ToString();
      }
    }
  }
  return s;
}

#ifdef CORTEX_HAVE_YAML_CPP
// Parses every file with yaml-cpp; returns the failures. Keeps the documents when `keep` is set.
size_t YamlCppParseAll(const std::vector<std::string>& files, std::vector<YAML::Node>* keep) {
  size_t failures = 0;
  for (const std::string& p : files) {
    try {
      YAML::Node n;
      if (p.ends_with(".md") || p.ends_with(".markdown")) {
        std::string text = ReadAll(p);
        std::string_view yaml;
        if (!FrontMatter(text, &yaml)) continue;  // plain Markdown: read, nothing to parse
        n = YAML::Load(std::string(yaml));
      } else {
        n = YAML::LoadFile(p);
      }
      if (!n.IsMap()) failures++;
      if (keep) keep->push_back(std::move(n));
    } catch (const std::exception&) {
      failures++;
    }
  }
  return failures;
}
#endif

// Child modes: a fresh process does one thing and prints "key value" lines for the parent, so
// its VmHWM measures that alone (not the generation, not earlier repetitions).
int ChildLoad(const std::string& root) {
  long before = ProcStatusKiB("VmHWM");
  LoadStats s = LoadOnce(root, 0);
  std::printf("hwm_before_kib %ld\nhwm_kib %ld\nms %.3f\nentries %zu\n", before,
              ProcStatusKiB("VmHWM"), s.ms, s.entries);
  return s.errors == 0 ? 0 : 1;
}

int ChildYaml(const std::string& root) {
#ifdef CORTEX_HAVE_YAML_CPP
  std::vector<std::string> files = ManifestFiles(root);
  long before = ProcStatusKiB("VmHWM");
  std::vector<YAML::Node> docs;
  docs.reserve(files.size());
  auto t0 = Clock::now();
  size_t failures = YamlCppParseAll(files, &docs);
  double ms = MsSince(t0);
  std::printf("hwm_before_kib %ld\nhwm_kib %ld\nms %.3f\nentries %zu\n", before,
              ProcStatusKiB("VmHWM"), ms, docs.size() - failures);
  return 0;
#else
  (void)root;
  return 2;
#endif
}

struct ChildResult {
  bool ok = false;
  long hwm_before_kib = 0, hwm_kib = 0;
  double ms = 0;
};

ChildResult RunChild(const char* mode, const std::string& root) {
  ChildResult r;
  int fds[2];
  if (::pipe(fds) != 0) return r;
  std::string self = fs::read_symlink("/proc/self/exe").string();
  std::vector<std::string> args = {self, mode, root};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, self.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; rc == 0 && (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, n);
  ::close(fds[0]);
  if (rc != 0) return r;
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::istringstream in(out);
  std::string key;
  int fields = 0;
  while (in >> key) {
    if (key == "hwm_before_kib") in >> r.hwm_before_kib, fields++;
    if (key == "hwm_kib") in >> r.hwm_kib, fields++;
    if (key == "ms") in >> r.ms, fields++;
  }
  r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && fields == 3;
  return r;
}

void Usage() {
  std::fprintf(stderr,
               "usage: registry_load_bench [--count N (default 10000)] [--reps R (default 5)]\n"
               "                           [--max-seconds S (default 600)] [--keep]\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--child-load") == 0) return ChildLoad(argv[2]);
  if (argc == 3 && std::strcmp(argv[1], "--child-yaml") == 0) return ChildYaml(argv[2]);

  size_t count = 10000;
  int reps = 5;
  double max_seconds = 600;
  bool keep = false;
  cortex::bench::Flags flags(argc, argv, Usage);
  for (std::string a; flags.Next(&a);) {
    if (a == "--count") {
      count = std::strtoul(flags.Value(), nullptr, 10);
    } else if (a == "--reps") {
      reps = std::max(1, std::atoi(flags.Value()));
    } else if (a == "--max-seconds") {
      max_seconds = std::atof(flags.Value());
    } else if (a == "--keep") {
      keep = true;
    } else {
      Usage();
      return 2;
    }
  }
  if (count < 50) {
    std::fprintf(stderr, "--count must be at least 50\n");
    return 2;
  }
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(max_seconds));

  cortex::bench::ScratchDir scratch("cortex-load-bench", keep);
  if (!scratch.ok()) return 1;
  const fs::path dir = scratch.path();
  fs::path root = dir / "manifests";

  auto tg = Clock::now();
  cortex::bench::GeneratedSet set;
  try {
    set = cortex::bench::GenerateManifests(root, count);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "generation failed: %s\n", e.what());
    return 1;
  }
  double gen_ms = MsSince(tg);
  std::vector<std::string> files = ManifestFiles(root);
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());

  std::printf("== registry_load_bench ==\n");
  std::printf(
      "generated %zu manifests in %.0f ms under %s%s\n"
      "  %zu tools (%zu bundled in agents), %zu agents (%zu as Markdown), %zu relics, %zu "
      "workflows, %zu monuments\n"
      "  %zu files (%zu read by the registry), %.1f MiB\n",
      set.manifests(), gen_ms, root.c_str(), keep ? " (kept)" : "", set.tools, set.private_tools,
      set.agents, set.markdown_agents, set.relics, set.workflows, set.monuments, set.files,
      files.size(), static_cast<double>(set.bytes) / (1 << 20));
  std::printf("  (page cache warm: the files were just written; 'cold' = a fresh Registry)\n");
  std::printf("machine: %u cores, loadavg %s\n", cores, LoadAvg().c_str());
  std::fflush(stdout);

  // 1. Cortex, default threads (one per core), fresh Registry each repetition.
  std::vector<double> load_ms, load1_ms;
  LoadStats first;
  bool consistent = true;
  for (int r = 0; r < reps && (r == 0 || Clock::now() < deadline); ++r) {
    LoadStats s = LoadOnce(root.string(), 0);
    load_ms.push_back(s.ms);
    if (r == 0) {
      first = s;
    } else if (s.entries != first.entries || s.unresolved != first.unresolved ||
               s.errors != first.errors) {
      consistent = false;
    }
  }
  std::printf(
      "cortex LoadAll (%u threads): min %.1f ms, median %.1f ms, max %.1f ms over %zu runs\n",
      cores, Min(load_ms), Median(load_ms), Max(load_ms), load_ms.size());
  std::printf(
      "  loaded %zu manifests (%zu files), unresolved %zu, files with errors %zu, conflicts %zu, "
      "warnings %zu\n",
      first.entries, first.files, first.unresolved, first.errors, first.conflicts, first.warnings);
  bool bad = first.entries != set.manifests() || first.unresolved || first.errors ||
             first.conflicts || !consistent;
  if (bad) {
    std::printf(
        "WARNING: the load is not clean (expected %zu manifests, 0 unresolved, 0 errors, "
        "0 conflicts%s); first problem: %s\nWARNING: the figures below are not meaningful\n",
        set.manifests(), consistent ? "" : ", same result every run", first.first_problem.c_str());
  }
  std::fflush(stdout);

  // 2. Cortex, one thread (the same work as the single-threaded baseline).
  for (int r = 0; r < reps && Clock::now() < deadline; ++r) {
    load1_ms.push_back(LoadOnce(root.string(), 1).ms);
  }
  if (!load1_ms.empty()) {
    std::printf("cortex LoadAll (1 thread):  min %.1f ms, median %.1f ms over %zu runs\n",
                Min(load1_ms), Median(load1_ms), load1_ms.size());
  }

  // 3. The baseline: yaml-cpp on the same files, one thread.
  std::vector<double> yaml_ms;
#ifdef CORTEX_HAVE_YAML_CPP
  size_t yaml_failures = 0;
  for (int r = 0; r < reps && (r == 0 || Clock::now() < deadline); ++r) {
    auto t0 = Clock::now();
    yaml_failures = YamlCppParseAll(files, nullptr);
    yaml_ms.push_back(MsSince(t0));
  }
  std::printf(
      "yaml-cpp parse only (YAML::LoadFile, 1 thread, %zu files): min %.1f ms, median %.1f ms "
      "over %zu runs, %zu failures\n",
      files.size(), Min(yaml_ms), Median(yaml_ms), yaml_ms.size(), yaml_failures);
#else
  std::printf("yaml-cpp baseline: not built (install libyaml-cpp-dev and reconfigure)\n");
#endif
  std::fflush(stdout);

  // 4. Memory: a fresh child process per repetition, so generation and earlier runs don't count.
  std::vector<double> hwm, hwm_before, child_ms, yhwm, yhwm_before;
  for (int r = 0; r < reps && (r == 0 || Clock::now() < deadline); ++r) {
    ChildResult c = RunChild("--child-load", root.string());
    if (!c.ok) {
      std::printf("WARNING: the --child-load process failed; no VmHWM figure\n");
      break;
    }
    hwm.push_back(MiB(c.hwm_kib));
    hwm_before.push_back(MiB(c.hwm_before_kib));
    child_ms.push_back(c.ms);
  }
#ifdef CORTEX_HAVE_YAML_CPP
  for (int r = 0; r < reps && (r == 0 || Clock::now() < deadline); ++r) {
    ChildResult c = RunChild("--child-yaml", root.string());
    if (!c.ok) break;
    yhwm.push_back(MiB(c.hwm_kib));
    yhwm_before.push_back(MiB(c.hwm_before_kib));
  }
#endif
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  double self_maxrss = static_cast<double>(ru.ru_maxrss) / 1024.0;  // KiB on Linux
  if (!hwm.empty()) {
    std::printf(
        "peak RSS, fresh child per run (VmHWM): median %.1f MiB (min %.1f, max %.1f) over %zu "
        "runs; "
        "%.1f MiB before LoadAll; child load median %.1f ms\n",
        Median(hwm), Min(hwm), Max(hwm), hwm.size(), Median(hwm_before), Median(child_ms));
  }
  if (!yhwm.empty()) {
    std::printf(
        "peak RSS, yaml-cpp child keeping every document (VmHWM): median %.1f MiB (%.1f MiB "
        "before parsing)\n",
        Median(yhwm), Median(yhwm_before));
  }
  std::printf("peak RSS of this process (ru_maxrss, includes generation and all runs): %.1f MiB\n",
              self_maxrss);

  // Summary.
  double x = Median(load_ms);
  double peak = hwm.empty() ? self_maxrss : Median(hwm);
  std::printf("\n");
  std::printf("cold load: %.1f ms for %zu manifests (%.1f us/manifest), peak RSS %.1f MiB", x,
              first.entries, first.entries ? x * 1000.0 / static_cast<double>(first.entries) : 0,
              peak);
  if (!yaml_ms.empty()) {
    double w = Median(yaml_ms);
    std::printf("; yaml-cpp parse only: %.1f ms; ratio %.2f\n", w, w > 0 ? x / w : 0);
    if (!load1_ms.empty()) {
      std::printf("  single-thread ratio (cortex 1 thread / yaml-cpp 1 thread): %.2f\n",
                  Median(load1_ms) / w);
    }
    if (!yhwm.empty() && !hwm.empty()) {
      double growth = Median(hwm) - Median(hwm_before);
      double ygrowth = Median(yhwm) - Median(yhwm_before);
      std::printf(
          "  memory ratio (cortex VmHWM / yaml-cpp-trees VmHWM): %.2f; growth over process "
          "start: %.1f vs %.1f MiB (ratio %.2f)\n",
          Median(hwm) / Median(yhwm), growth, ygrowth, ygrowth > 0 ? growth / ygrowth : 0);
    }
  } else {
    std::printf("; yaml-cpp parse only: n/a (baseline not built)\n");
  }
  std::printf("goal: <= 1000 ms (%s: median %.1f ms)\n", x <= 1000 ? "met" : "MISSED", x);
  std::printf("loadavg at the end: %s\n", LoadAvg().c_str());
  if (bad) std::printf("WARNING: the load was not clean: see the WARNING above\n");
  return bad ? 1 : 0;
}
