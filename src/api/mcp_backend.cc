#include "api/mcp_backend.h"

#include "api/scopes.h"

#include <set>

#include "common/json.h"
#include "registry/parser.h"

namespace cortex::api {

namespace {

using mcp::Json;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kWorkflowPrefix = "workflow_";
constexpr std::string_view kAgentPrefix = "agent_";
constexpr std::string_view kManifestUri = "cortex://manifest/";
constexpr auto kPoll = std::chrono::milliseconds(200);
constexpr size_t kProgressMessageBytes = 200;

mcp::ToolResult ErrorResult(std::string text) {
  mcp::ToolResult r;
  r.is_error = true;
  r.content = mcp::TextContent(std::move(text));
  return r;
}

// A succeeded call's output: its text for the model, and the value itself when it is an object
// (structuredContent must be one).
mcp::ToolResult OutputResult(const Json& output) {
  mcp::ToolResult r;
  r.content = mcp::TextContent(output.is_string() ? output.get<std::string>()
                               : output.is_null() ? std::string()
                                                  : DumpJson(output));
  if (output.is_object()) r.structured = output;
  return r;
}

std::string FieldErrorsText(const std::vector<exec::FieldError>& fields) {
  std::string text;
  for (const auto& f : fields) {
    text += "\n- " + (f.field.empty() ? std::string("(arguments)") : f.field) + ": " + f.message;
  }
  return text;
}

std::string Describe(const registry::Manifest& m) {
  return m.header.description.empty() ? m.header.summary : m.header.description;
}

std::string Shorten(std::string text) {
  if (text.size() > kProgressMessageBytes) {
    text.resize(kProgressMessageBytes);
    text += "...";
  }
  return text;
}

Status Allowed(const mcp::Caller& caller, std::string_view kind, std::string_view name) {
  return caller.may_act_on ? caller.may_act_on(kind, name) : Status::Ok();
}

}  // namespace

McpBackend::McpBackend(registry::Registry& registry, exec::Executor& executor, store::Store& store,
                       workflow::Engine* engine, agent::AgentRunner* agents, McpExposure exposure)
    : registry_(registry),
      executor_(executor),
      store_(store),
      engine_(engine),
      agents_(agents),
      exposure_(exposure) {}

std::vector<mcp::ToolInfo> McpBackend::ListTools(const mcp::Caller& caller) {
  auto snap = registry_.snapshot();
  std::vector<mcp::ToolInfo> tools;
  std::set<std::string> names;
  for (const registry::Entry* e : snap->List(registry::Kind::kTool)) {
    if (!e->resolved() || !caller.may_see("tool", e->name())) continue;
    const registry::Manifest& m = e->manifest();
    const auto& spec = *m.As<registry::ToolSpec>();
    mcp::ToolInfo t;
    t.name = e->name();
    t.description = Describe(m);
    if (!spec.returns.empty()) t.description += "\nReturns: " + spec.returns;
    t.input_schema = agent::ParametersSchema(spec.parameters);
    names.insert(t.name);
    tools.push_back(std::move(t));
  }
  if (exposure_.workflows && engine_) {
    for (const registry::Entry* e : snap->List(registry::Kind::kWorkflow)) {
      std::string name = std::string(kWorkflowPrefix) + e->name();
      if (!e->resolved() || names.count(name) || !caller.may_see("workflow", e->name())) continue;
      const registry::Manifest& m = e->manifest();
      mcp::ToolInfo t;
      t.name = name;
      t.title = "Workflow " + e->name();
      t.description =
          Describe(m) + "\n(A Cortex workflow: runs its steps and answers its outputs.)";
      t.input_schema = agent::ParametersSchema(m.As<registry::WorkflowSpec>()->trigger.parameters);
      names.insert(t.name);
      tools.push_back(std::move(t));
    }
  }
  if (exposure_.agents && agents_) {
    for (const registry::Entry* e : snap->List(registry::Kind::kAgent)) {
      std::string name = std::string(kAgentPrefix) + e->name();
      if (!e->resolved() || names.count(name) || !caller.may_see("agent", e->name())) continue;
      mcp::ToolInfo t;
      t.name = name;
      t.title = "Agent " + e->name();
      t.description =
          Describe(e->manifest()) + "\n(A Cortex agent: give it a message, it answers.)";
      t.input_schema = {
          {"type", "object"},
          {"properties",
           {{"message", {{"type", "string"}, {"description", "What to ask the agent"}}}}},
          {"required", Json::array({"message"})}};
      tools.push_back(std::move(t));
    }
  }
  return tools;
}

Result<mcp::ToolResult> McpBackend::CallTool(const mcp::Caller& caller, const std::string& name,
                                             const Json& arguments, mcp::CallContext& context) {
  auto snap = registry_.snapshot();
  if (snap->Find(registry::Kind::kTool, name)) {
    if (!caller.may_run()) {
      return ErrorResult("calling a tool needs the operator role; this caller is " + caller.role);
    }
    return CallCortexTool(caller, name, arguments, context);
  }
  std::string_view n = name;
  if (exposure_.workflows && engine_ && n.starts_with(kWorkflowPrefix) &&
      snap->Find(registry::Kind::kWorkflow, n.substr(kWorkflowPrefix.size()))) {
    if (!caller.may_run()) {
      return ErrorResult("running a workflow needs the operator role; this caller is " +
                         caller.role);
    }
    return CallWorkflow(caller, std::string(n.substr(kWorkflowPrefix.size())), arguments, context);
  }
  if (exposure_.agents && agents_ && n.starts_with(kAgentPrefix) &&
      snap->Find(registry::Kind::kAgent, n.substr(kAgentPrefix.size()))) {
    if (!caller.may_run()) {
      return ErrorResult("running an agent needs the operator role; this caller is " + caller.role);
    }
    return CallAgent(caller, std::string(n.substr(kAgentPrefix.size())), arguments, context);
  }
  std::vector<std::string> known;
  for (const mcp::ToolInfo& t : ListTools(caller)) known.push_back(t.name);
  std::vector<std::string_view> views(known.begin(), known.end());
  std::string msg = "unknown tool: " + name;
  std::string_view hint = registry::ClosestMatch(name, views);
  if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
  return NotFoundError(msg);
}

Result<mcp::ToolResult> McpBackend::CallCortexTool(const mcp::Caller& caller,
                                                   const std::string& name, const Json& arguments,
                                                   mcp::CallContext& context) {
  if (Status st = Allowed(caller, "tool", name); !st.ok()) return ErrorResult(st.message());
  exec::ExecuteRequest request;
  request.tool = name;
  request.parameters = arguments;
  request.traceparent = caller.traceparent;
  // Named here, so that a cancellation reaches it even while it runs on this very thread.
  request.execution_id = exec::NewExecutionId();
  if (context.on_cancel) {
    context.on_cancel([this, id = request.execution_id] { (void)executor_.Cancel(id); });
  }
  std::vector<exec::FieldError> fields;
  // Followed (its output lines as progress) through the queue when the client asked for
  // progress; else it may run right here, as POST /execute/tool does.
  auto id = context.progress_requested ? executor_.Submit(request, &fields)
                                       : executor_.Run(request, &fields, exposure_.inline_up_to);
  if (!id.ok()) {
    if (id.status().code() == StatusCode::kNotFound) return id.status();
    if (!fields.empty())
      return ErrorResult("invalid arguments for " + name + ":" + FieldErrorsText(fields));
    return ErrorResult("tool " + name + " did not run: " + id.status().message());
  }
  const auto deadline = Clock::now() + exposure_.call_timeout;
  int64_t seq = 0;
  double lines = 0;
  bool cancelled = false;
  for (;;) {
    if (!cancelled && context.cancel && context.cancel->cancelled()) {
      cancelled = true;
      (void)executor_.Cancel(*id);
    }
    if (!cancelled && Clock::now() >= deadline) {
      cancelled = true;
      (void)executor_.Cancel(*id);
    }
    if (context.progress_requested) {
      bool done = false;
      auto got = executor_.Follow(*id, seq, kPoll, &done);
      if (!got.ok()) break;  // not live any more: finished
      for (const exec::LiveLine& line : *got) {
        seq = line.seq;
        context.progress(++lines, std::nullopt,
                         Shorten((line.is_stderr ? "stderr: " : "") + line.text));
      }
      if (done) break;
    } else {
      auto record = executor_.Wait(*id, kPoll);
      if (!record.ok()) return record.status();
      if (record->finished_ms != 0) break;
    }
  }
  auto record = executor_.Wait(*id, std::chrono::seconds(10));
  if (!record.ok()) return record.status();
  const store::ExecutionRecord& r = *record;
  if (r.status == "succeeded") return OutputResult(ParseJsonOrString(r.result_json));
  std::string text = "tool " + name + " " + r.status + " (execution " + r.id + ")";
  if (!r.error.empty()) text += ": " + r.error;
  if (!r.stderr_tail.empty()) text += "\nstderr:\n" + r.stderr_tail;
  return ErrorResult(std::move(text));
}

Result<mcp::ToolResult> McpBackend::CallWorkflow(const mcp::Caller& caller, const std::string& name,
                                                 const Json& arguments, mcp::CallContext& context) {
  if (Status st = Allowed(caller, "workflow", name); !st.ok()) return ErrorResult(st.message());
  workflow::StartRequest start;
  start.workflow = name;
  start.input = arguments;
  start.trigger = "mcp";
  start.traceparent = caller.traceparent;
  std::vector<exec::FieldError> fields;
  auto id = engine_->StartRun(start, &fields);
  if (!id.ok()) {
    if (id.status().code() == StatusCode::kNotFound) return id.status();
    if (!fields.empty()) {
      return ErrorResult("invalid arguments for workflow " + name + ":" + FieldErrorsText(fields));
    }
    return ErrorResult("workflow " + name + " did not start: " + id.status().message());
  }
  const auto deadline = Clock::now() + exposure_.call_timeout;
  bool cancelled = false;
  size_t reported = 0;
  store::RunRecord run;
  for (;;) {
    auto rec = engine_->Wait(*id, kPoll);
    if (!rec.ok()) return rec.status();
    run = *rec;
    auto status = workflow::ParseRunStatus(run.status);
    if (status && workflow::Finished(*status)) break;
    if (!cancelled &&
        ((context.cancel && context.cancel->cancelled()) || Clock::now() >= deadline)) {
      cancelled = true;
      (void)engine_->Cancel(*id);
    }
    if (context.progress_requested) {
      auto steps = store_.GetSteps(*id);
      if (!steps.ok()) continue;
      size_t finished = 0;
      std::string last;
      for (const store::StepRecord& s : *steps) {
        auto st = workflow::ParseStepStatus(s.status);
        if (st && workflow::Terminal(*st)) {
          ++finished;
          last = "step " + s.step + " " + s.status;
        }
      }
      if (finished > reported) {
        reported = finished;
        context.progress(static_cast<double>(finished), static_cast<double>(steps->size()), last);
      }
    }
  }
  if (run.status == "succeeded") {
    Json outputs = run.output_json.empty() ? Json::object() : ParseJsonOrString(run.output_json);
    return OutputResult(outputs);
  }
  std::string text = "workflow run " + run.id + " " + run.status;
  if (!run.error.empty()) text += ": " + run.error;
  return ErrorResult(std::move(text));
}

Result<mcp::ToolResult> McpBackend::CallAgent(const mcp::Caller& caller, const std::string& name,
                                              const Json& arguments, mcp::CallContext& context) {
  if (Status st = Allowed(caller, "agent", name); !st.ok()) return ErrorResult(st.message());
  if (Status st = agents_->Check(name); !st.ok()) {
    if (st.code() == StatusCode::kNotFound) return st;
    return ErrorResult("agent " + name + " cannot run: " + st.message());
  }
  agent::AgentRunRequest request;
  request.agent = name;
  request.input = agent::InputText(arguments);
  request.keep_session = false;
  request.traceparent = caller.traceparent;
  double events = 0;
  auto sink = [&](const agent::AgentEvent& e) {
    if (!context.progress_requested) return;
    if (e.type != "thought" && e.type != "action" && e.type != "action_result") return;
    std::string text =
        e.data.is_object() ? e.data.value("text", e.data.value("name", "")) : std::string();
    context.progress(++events, std::nullopt, Shorten(e.type + (text.empty() ? "" : ": " + text)));
  };
  auto result = agents_->Run(request, sink, context.cancel);
  if (!result.ok())
    return ErrorResult("agent " + name + " did not run: " + result.status().message());
  if (result->status == "succeeded") {
    mcp::ToolResult r;
    r.content = mcp::TextContent(result->response);
    r.structured = {{"run_id", result->run_id},
                    {"response", result->response},
                    {"iterations", result->iterations}};
    return r;
  }
  std::string text =
      "agent run " + result->run_id + " ended " + result->status + " (" + result->reason + ")";
  if (!result->error.empty()) text += ": " + result->error;
  if (!result->response.empty()) text += "\n" + result->response;
  return ErrorResult(std::move(text));
}

std::vector<mcp::ResourceInfo> McpBackend::ListResources(const mcp::Caller& caller) {
  auto snap = registry_.snapshot();
  std::vector<mcp::ResourceInfo> out;
  for (registry::Kind kind : {registry::Kind::kTool, registry::Kind::kAgent, registry::Kind::kRelic,
                              registry::Kind::kWorkflow, registry::Kind::kMonument}) {
    for (const registry::Entry* e : snap->List(kind)) {
      if (!caller.may_see(ScopeKind(kind), e->name())) continue;
      mcp::ResourceInfo r;
      std::string kind_name(registry::EnumName(kind));
      r.uri = std::string(kManifestUri) + kind_name + "/" + e->name();
      r.name = kind_name + "/" + e->name();
      r.title = e->manifest().header.summary;
      r.description = Describe(e->manifest());
      r.mime_type = registry::FormatOfPath(e->file->path) == registry::FileFormat::kMarkdown
                        ? "text/markdown"
                        : "application/yaml";
      out.push_back(std::move(r));
    }
  }
  return out;
}

Result<std::vector<mcp::ResourceContents>> McpBackend::ReadResource(const mcp::Caller& caller,
                                                                    const std::string& uri) {
  std::string_view rest = uri;
  if (!rest.starts_with(kManifestUri)) {
    return NotFoundError("no resource " + uri + " (resources are " + std::string(kManifestUri) +
                         "KIND/NAME)");
  }
  rest.remove_prefix(kManifestUri.size());
  size_t slash = rest.find('/');
  auto kind = registry::ParseKind(std::string(rest.substr(0, slash)));
  if (slash == std::string_view::npos || !kind) return NotFoundError("no resource " + uri);
  std::string name(rest.substr(slash + 1));
  auto snap = registry_.snapshot();
  const registry::Entry* e = snap->Find(*kind, name);
  if (!e || !caller.may_see(ScopeKind(*kind), name)) return NotFoundError("no resource " + uri);
  mcp::ResourceContents c;
  c.uri = uri;
  c.mime_type = registry::FormatOfPath(e->file->path) == registry::FileFormat::kMarkdown
                    ? "text/markdown"
                    : "application/yaml";
  c.text = e->file->text;
  return std::vector<mcp::ResourceContents>{std::move(c)};
}

std::vector<mcp::PromptInfo> McpBackend::ListPrompts(const mcp::Caller& caller) {
  auto snap = registry_.snapshot();
  std::vector<mcp::PromptInfo> out;
  for (const registry::Entry* e : snap->List(registry::Kind::kAgent)) {
    if (!caller.may_see("agent", e->name())) continue;
    mcp::PromptInfo p;
    p.name = e->name();
    p.title = "Persona of agent " + e->name();
    p.description = Describe(e->manifest());
    p.arguments.push_back({"message", "A first message to add after the persona", false});
    out.push_back(std::move(p));
  }
  return out;
}

Result<mcp::PromptResult> McpBackend::GetPrompt(const mcp::Caller& caller, const std::string& name,
                                                const Json& arguments) {
  auto snap = registry_.snapshot();
  const registry::Entry* e = snap->Find(registry::Kind::kAgent, name);
  if (!e || !caller.may_see("agent", name)) return NotFoundError("no prompt named " + name);
  mcp::PromptResult p;
  p.description = "The persona of agent " + name;
  p.messages.push_back(
      {{"role", "user"}, {"content", {{"type", "text"}, {"text", agent::PersonaText(*e)}}}});
  if (auto m = arguments.find("message");
      m != arguments.end() && m->is_string() && !m->get_ref<const std::string&>().empty()) {
    p.messages.push_back({{"role", "user"}, {"content", {{"type", "text"}, {"text", *m}}}});
  }
  return p;
}

}  // namespace cortex::api
