// Benchmark support: writes a realistic, fully resolvable manifest tree of all five kinds.
//
// Layout under `root` (names carry `prefix` so several sets can share a folder):
//   tools/<p>tool_NNNNN/tool.yml + run.py                  (45%, some bundled inside agents)
//   agents/<p>agent_NNNNN/agent.yml + persona.md, or agent.md (persona as the Markdown body)
//   agents/<p>agent_NNNNN/tools/<p>agent_NNNNN_helper/tool.yml + run.py   (a private tool)
//   relics/<p>relic_NNNNN/relic.yml                          (10%)
//   workflows/<p>wf_NNNNN.workflow.yml                       (15%)
//   monuments/<p>mon_NNNNN/monument.yml                      (5%)
//
// Agents import tools by bare name, by a ../../tools/<name> folder path, by a ../../tools/<name>/
// tool.yml file path and (one in four) their private helper by ./tools/<name>; relics by name.
// Workflows have 5 steps (tools, a relic, an agent) with depends_on; relics schedule a workflow;
// monuments list relics (one by ../../relics/<name> path), agents, workflows and tools, with a
// startup_order. Every reference resolves: a load must report 0 errors and 0 unresolved.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cortex::bench {

struct GeneratedSet {
  size_t tools = 0, private_tools = 0, agents = 0, markdown_agents = 0, relics = 0, workflows = 0,
         monuments = 0;
  size_t manifests() const { return tools + agents + relics + workflows + monuments; }
  size_t files = 0;                     // every file written (manifests, scripts, personas)
  size_t bytes = 0;                     // their total size
  std::vector<std::string> tool_names;  // the public tools (tools/<name>/tool.yml)
};

namespace gen_detail {

inline std::string Num(size_t i) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%05zu", i);
  return buf;
}

// A small deterministic generator (splitmix64), so every run writes the same tree.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t Below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(Next() % n); }
};

inline void Write(const std::filesystem::path& path, const std::string& text, GeneratedSet* set) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
  set->files++;
  set->bytes += text.size();
}

inline std::string ToolYaml(const std::string& name, size_t i) {
  std::string g = std::to_string(i % 17);
  return "kind: Tool\n"
         "version: \"1." +
         std::to_string(i % 9) +
         "\"\n"
         "name: " +
         name +
         "\n"
         "summary: Generated tool " +
         std::to_string(i) +
         " that transforms a text\n"
         "author: bench\n"
         "state: stable\n"
         "description: |\n"
         "  A generated tool that transforms its input text. It exists so that the registry\n"
         "  benchmark parses a realistic amount of YAML per manifest.\n"
         "returns: '{\"success\": true, \"result\": \"<string>\"}'\n"
         "implementation:\n"
         "  type: script\n"
         "  runtime: python3\n"
         "  entrypoint: ./run.py\n"
         "  resources:\n"
         "    timeout: 10s\n"
         "    memory: 128M\n"
         "  health_check:\n"
         "    type: script\n"
         "    command: python3 ./run.py '{\"input\":\"ping\"}'\n"
         "    expected_exit_code: 0\n"
         "parameters:\n"
         "  - name: input\n"
         "    type: string\n"
         "    description: The text to transform\n"
         "    validation: {min_length: 1, max_length: 4096}\n"
         "  - name: mode\n"
         "    type: string\n"
         "    description: How to transform it\n"
         "    enum: [upper, lower, reverse]\n"
         "    default: upper\n"
         "  - name: repeat\n"
         "    type: integer\n"
         "    description: How many times to apply the transformation\n"
         "    default: 1\n"
         "    validation: {min: 1, max: 10}\n"
         "examples:\n"
         "  - description: Upper-case a word\n"
         "    input: {input: hello, mode: upper}\n"
         "    expected_output: {success: true, result: HELLO}\n"
         "tags: [generated, text, group-" +
         g + "]\n";
}

inline const char* kToolScript =
    "#!/usr/bin/env python3\n"
    "import json, sys\n"
    "args = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read() or '{}')\n"
    "text = str(args.get('input', ''))\n"
    "mode = args.get('mode', 'upper')\n"
    "out = text.upper() if mode == 'upper' else text.lower() if mode == 'lower' else text[::-1]\n"
    "print(json.dumps({'success': True, 'result': out}))\n";

inline std::string AgentYaml(const std::string& name, size_t j, bool markdown,
                             const std::vector<std::string>& tool_refs,
                             const std::string& relic_ref, const std::string& feed_tool) {
  std::string s = markdown ? "---\n" : "";
  s += "kind: Agent\n"
       "version: \"1.0\"\n"
       "name: " +
       name +
       "\n"
       "summary: Generated agent " +
       std::to_string(j) +
       " that combines a few tools\n"
       "author: bench\n"
       "state: stable\n"
       "agency_level: default\n"
       "grade: common\n"
       "iteration_cap: 8\n";
  if (!markdown) s += "persona:\n  agent: ./persona.md\n";
  s += "cognitive_engine:\n"
       "  primary:\n"
       "    provider: openai_compatible\n"
       "    model: local-model\n"
       "    endpoint: \"${LLM_BASE_URL:-http://127.0.0.1:11434/v1}\"\n"
       "  fallback:\n"
       "    provider: ollama\n"
       "    model: llama3\n"
       "  parameters:\n"
       "    temperature: 0.2\n"
       "    max_tokens: 1024\n"
       "import:\n"
       "  tools:\n";
  for (const std::string& t : tool_refs) s += "    - " + t + "\n";
  s += "  relics: [" + relic_ref +
       "]\n"
       "context_feeds:\n"
       "  - id: current_datetime\n"
       "    type: on_demand\n"
       "    source: {type: internal, action: system_clock, params: {format: ISO8601}}\n"
       "  - id: recent_items\n"
       "    type: periodic\n"
       "    interval: 30s\n"
       "    source: {type: tool, name: " +
       feed_tool +
       ", params: {input: recent}}\n"
       "tags: [generated, agent, team-" +
       std::to_string(j % 11) + "]\n";
  if (markdown) {
    s += "---\n"
         "You are a generated benchmark agent. Think step by step, call a tool when a text needs\n"
         "transforming, and give the final answer in a short paragraph.\n";
  }
  return s;
}

inline const char* kPersona =
    "# Persona\n\n"
    "You are a generated benchmark agent. Think step by step in `<thought>` blocks, call a tool\n"
    "with an `<action type=\"tool\">` block when a text needs transforming, and give the final\n"
    "answer in `<response final=\"true\">`.\n";

inline std::string RelicYaml(const std::string& name, size_t k, const std::string& workflow) {
  std::string port = std::to_string(20000 + k % 20000);
  std::string s =
      "kind: Relic\n"
      "version: \"1.0\"\n"
      "name: " +
      name +
      "\n"
      "summary: Generated key-value service " +
      std::to_string(k) +
      "\n"
      "author: bench\n"
      "state: stable\n"
      "description: |\n"
      "  A generated native process serving a JSON key-value store, persisted to a file in\n"
      "  its working folder.\n"
      "service_type: storage\n"
      "deployment:\n"
      "  type: process\n"
      "  command: [\"python3\", \"./server.py\", \"--port\", \"" +
      port +
      "\"]\n"
      "  cwd: .\n"
      "  restart: on-failure\n"
      "  env:\n"
      "    LOG_LEVEL: info\n"
      "health_check:\n"
      "  type: http\n"
      "  endpoint: /health\n"
      "  interval: 5s\n"
      "  timeout: 1s\n"
      "  retries: 3\n"
      "interface:\n"
      "  type: rest_api\n"
      "  base_url: \"http://127.0.0.1:" +
      port +
      "\"\n"
      "  endpoints:\n"
      "    - {name: put, method: POST, path: /items, description: \"Store {key, value}\"}\n"
      "    - {name: get, method: GET, path: \"/items/{key}\", description: Read a value}\n"
      "    - {name: delete, method: DELETE, path: \"/items/{key}\", description: Remove a key}\n"
      "    - {name: list, method: GET, path: /items, description: All keys}\n";
  if (!workflow.empty()) {
    s += "automation:\n"
         "  scheduled_workflows:\n"
         "    - workflow: " +
         workflow +
         "\n"
         "      schedule: \"0 * * * *\"\n"
         "      description: Hourly refresh\n";
  }
  s += "tags: [generated, storage]\n";
  return s;
}

inline std::string WorkflowYaml(const std::string& name, size_t k, const std::string& t1,
                                const std::string& t2, const std::string& t3,
                                const std::string& relic, const std::string& agent) {
  return "kind: Workflow\n"
         "version: \"1.0\"\n"
         "name: " +
         name +
         "\n"
         "summary: Generated pipeline " +
         std::to_string(k) +
         "\n"
         "author: bench\n"
         "state: stable\n"
         "description: Transforms a text, stores it, has it reviewed and reports.\n"
         "trigger:\n"
         "  type: manual\n"
         "  parameters:\n"
         "    text: {type: string, description: The text to process}\n"
         "steps:\n"
         "  - name: fetch\n"
         "    type: tool\n"
         "    target: " +
         t1 +
         "\n"
         "    parameters:\n"
         "      input: \"$(trigger.text)\"\n"
         "    timeout: 30s\n"
         "  - name: transform\n"
         "    type: tool\n"
         "    target: " +
         t2 +
         "\n"
         "    depends_on: [fetch]\n"
         "    parameters: {input: \"$(steps.fetch.result)\", mode: upper}\n"
         "    retry_policy: {max_attempts: 3, backoff: exponential, delay: 1s}\n"
         "  - name: store\n"
         "    type: relic\n"
         "    target: " +
         relic +
         "\n"
         "    action: put\n"
         "    depends_on: [transform]\n"
         "    parameters: {key: result, value: \"$(steps.transform.result)\"}\n"
         "  - name: review\n"
         "    type: agent\n"
         "    target: " +
         agent +
         "\n"
         "    depends_on: [transform]\n"
         "    on_failure: continue\n"
         "  - name: report\n"
         "    type: tool\n"
         "    target: " +
         t3 +
         "\n"
         "    depends_on: [store, review]\n"
         "    parameters: {input: \"$(steps.transform.result)\", mode: lower}\n"
         "outputs:\n"
         "  result: {source: \"steps.transform.result\"}\n"
         "  report: {source: \"steps.report.result\"}\n"
         "tags: [generated, pipeline]\n";
}

inline std::string MonumentYaml(const std::string& name, size_t k, const std::string& r1,
                                const std::string& r2_path, const std::string& r2,
                                const std::string& a1, const std::string& a2, const std::string& wf,
                                const std::string& tool) {
  return "kind: Monument\n"
         "version: \"1.0\"\n"
         "name: " +
         name +
         "\n"
         "summary: Generated stack " +
         std::to_string(k) +
         "\n"
         "author: bench\n"
         "state: unstable\n"
         "description: |\n"
         "  Two relics, two agents and a pipeline, deployed together in order.\n"
         "components:\n"
         "  relics:\n"
         "    - name: " +
         r1 +
         "\n"
         "      required: true\n"
         "    - name: " +
         r2 +
         "\n"
         "      path: " +
         r2_path +
         "\n"
         "      depends_on: [" +
         r1 +
         "]\n"
         "  agents:\n"
         "    - " +
         a1 +
         "\n"
         "    - name: " +
         a2 +
         "\n"
         "      instances: 2\n"
         "  workflows:\n"
         "    - " +
         wf +
         "\n"
         "  tools:\n"
         "    - " +
         tool +
         "\n"
         "startup_order:\n"
         "  - " +
         r1 +
         "\n"
         "  - " +
         r2 +
         "\n"
         "  - [" +
         a1 + ", " + a2 + ", " + wf +
         "]\n"
         "networking:\n"
         "  internal_network: " +
         name +
         "_net\n"
         "  exposed_ports: [\"8080\"]\n"
         "tags: [generated, stack]\n";
}

}  // namespace gen_detail

// Writes `count` manifests (count >= 50) under `root`. Throws std::runtime_error on I/O errors.
inline GeneratedSet GenerateManifests(const std::filesystem::path& root, size_t count,
                                      const std::string& prefix = "") {
  using namespace gen_detail;
  if (count < 50) throw std::runtime_error("generate at least 50 manifests");
  GeneratedSet set;
  size_t monuments = count * 5 / 100, workflows = count * 15 / 100, relics = count * 10 / 100,
         agents = count * 25 / 100;
  size_t tools = count - monuments - workflows - relics - agents;
  size_t private_tools = std::min((agents + 3) / 4, tools / 4);
  size_t public_tools = tools - private_tools;
  Rng rng{0xC0FFEEull + count};

  auto tool_name = [&](size_t i) { return prefix + "tool_" + Num(i); };
  auto agent_name = [&](size_t i) { return prefix + "agent_" + Num(i); };
  auto relic_name = [&](size_t i) { return prefix + "relic_" + Num(i); };
  auto wf_name = [&](size_t i) { return prefix + "wf_" + Num(i); };
  auto any_tool = [&] { return tool_name(rng.Below(public_tools)); };

  for (size_t i = 0; i < public_tools; ++i) {
    std::filesystem::path dir = root / "tools" / tool_name(i);
    Write(dir / "tool.yml", ToolYaml(tool_name(i), i), &set);
    Write(dir / "run.py", kToolScript, &set);
    set.tool_names.push_back(tool_name(i));
  }
  set.tools = public_tools;

  for (size_t j = 0; j < agents; ++j) {
    std::string name = agent_name(j);
    std::filesystem::path dir = root / "agents" / name;
    std::vector<std::string> refs = {any_tool(), "../../tools/" + any_tool(),
                                     "../../tools/" + any_tool() + "/tool.yml"};
    if (j % 4 == 0 && set.private_tools < private_tools) {
      std::string helper = name + "_helper";
      std::filesystem::path hdir = dir / "tools" / helper;
      Write(hdir / "tool.yml", ToolYaml(helper, j), &set);
      Write(hdir / "run.py", kToolScript, &set);
      refs.push_back("./tools/" + helper);
      set.private_tools++;
      set.tools++;
    }
    bool markdown = j % 2 == 1;
    std::string text = AgentYaml(name, j, markdown, refs, relic_name(rng.Below(relics)), refs[0]);
    if (markdown) {
      Write(dir / "agent.md", text, &set);
      set.markdown_agents++;
    } else {
      Write(dir / "agent.yml", text, &set);
      Write(dir / "persona.md", kPersona, &set);
    }
    set.agents++;
  }
  // Any tools left over (when agents ran out before the private quota) become public ones.
  for (size_t i = public_tools; set.tools < tools; ++i) {
    std::filesystem::path dir = root / "tools" / tool_name(i);
    Write(dir / "tool.yml", ToolYaml(tool_name(i), i), &set);
    Write(dir / "run.py", kToolScript, &set);
    set.tool_names.push_back(tool_name(i));
    set.tools++;
  }

  for (size_t k = 0; k < relics; ++k) {
    std::string wf = workflows > 0 && k % 3 == 0 ? wf_name(rng.Below(workflows)) : "";
    Write(root / "relics" / relic_name(k) / "relic.yml", RelicYaml(relic_name(k), k, wf), &set);
    set.relics++;
  }
  for (size_t k = 0; k < workflows; ++k) {
    Write(root / "workflows" / (wf_name(k) + ".workflow.yml"),
          WorkflowYaml(wf_name(k), k, any_tool(), any_tool(), any_tool(),
                       relic_name(rng.Below(relics)), agent_name(rng.Below(agents))),
          &set);
    set.workflows++;
  }
  for (size_t k = 0; k < monuments; ++k) {
    size_t r1 = rng.Below(relics), r2 = (r1 + 1 + rng.Below(relics - 1)) % relics;
    size_t a1 = rng.Below(agents), a2 = (a1 + 1 + rng.Below(agents - 1)) % agents;
    std::string name = prefix + "mon_" + Num(k);
    Write(root / "monuments" / name / "monument.yml",
          MonumentYaml(name, k, relic_name(r1), "../../relics/" + relic_name(r2), relic_name(r2),
                       agent_name(a1), agent_name(a2), wf_name(rng.Below(workflows)), any_tool()),
          &set);
    set.monuments++;
  }
  return set;
}

}  // namespace cortex::bench
