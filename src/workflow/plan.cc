#include "workflow/plan.h"

#include <functional>
#include <set>

namespace cortex::workflow {

namespace {

using registry::StepType;
using registry::WorkflowStep;

class Builder {
 public:
  explicit Builder(Plan& plan) : plan_(plan) {}

  // Adds `steps` in declaration order; `entry` is what the first of them waits for. Returns the
  // nodes a step declared after this list waits for. `sequential_default`: steps without
  // depends_on / parallel_group follow the one before them (false inside `parallel:`).
  Result<std::vector<int>> AddList(const std::vector<WorkflowStep>& steps, std::vector<int> entry,
                                   bool sequential_default, int gate, bool branch) {
    std::vector<int> prev = entry;  // what an implicit step waits for
    std::vector<int> group_base;    // what the current parallel group's members wait for
    std::vector<int> group_members;
    std::optional<std::string> group;
    std::vector<int> all;  // every top node of this list (for non-sequential lists)
    for (const WorkflowStep& s : steps) {
      std::vector<int> deps;
      bool explicit_deps = !s.depends_on.empty();
      if (s.parallel_group && group && *s.parallel_group == *group) {
        deps = group_base;
      } else if (s.parallel_group) {
        if (group) prev = group_members;
        group = s.parallel_group;
        group_base = prev;
        group_members.clear();
        deps = group_base;
      } else {
        if (group) prev = group_members;
        group.reset();
        deps = sequential_default ? prev : entry;
      }
      if (explicit_deps) deps.clear();  // resolved by name once every node exists
      CORTEX_ASSIGN_OR_RETURN(int top, AddStep(s, deps, gate, branch));
      if (explicit_deps) pending_deps_.push_back({top, &s});
      all.push_back(top);
      if (group) {
        group_members.push_back(top);
      } else {
        prev = {top};
      }
    }
    if (group) prev = group_members;
    if (!sequential_default) return all;
    return prev;
  }

  Status Finish() {
    for (const auto& [node, step] : pending_deps_) {
      for (const std::string& d : step->depends_on) {
        auto it = plan_.by_name.find(d);
        if (it == plan_.by_name.end()) {
          return InvalidArgumentError("step '" + step->name + "' depends on '" + d +
                                      "', which is not a step of this workflow");
        }
        AddDep(node, it->second);
        // A structural step's depends_on holds for what is inside it too: its gate and its
        // children wait for those steps (else they would start with the run).
        if (plan_.nodes[node].kind != NodeKind::kJoin) continue;
        std::vector<int> inner = plan_.nodes[node].children;
        if (auto g = plan_.by_name.find(step->name + "#if"); g != plan_.by_name.end()) {
          inner.push_back(g->second);
        }
        for (int i : inner) {
          if (i != it->second) AddDep(i, it->second);
        }
      }
    }
    for (size_t i = 0; i < plan_.nodes.size(); ++i) {
      for (int d : plan_.nodes[i].deps) plan_.nodes[d].dependents.push_back(static_cast<int>(i));
    }
    return CheckAcyclic();
  }

 private:
  int NewNode(Node node) {
    int index = static_cast<int>(plan_.nodes.size());
    plan_.by_name[node.name] = index;
    plan_.nodes.push_back(std::move(node));
    return index;
  }

  void AddDep(int node, int dep) {
    auto& deps = plan_.nodes[node].deps;
    if (std::find(deps.begin(), deps.end(), dep) == deps.end()) deps.push_back(dep);
  }

  Result<std::shared_ptr<const registry::Expression>> Condition(const WorkflowStep& s) {
    if (!s.condition) return std::shared_ptr<const registry::Expression>();
    auto e = registry::ParseExpression(*s.condition);
    if (!e.ok()) {
      return InvalidArgumentError("step '" + s.name + "': condition: " + e.status().message());
    }
    return std::move(e).value();
  }

  // Adds one declared step (and, for structural ones, its children); returns its top node: the
  // node that stands for the whole step (depended on by name).
  Result<int> AddStep(const WorkflowStep& s, const std::vector<int>& deps, int gate, bool branch) {
    if (plan_.by_name.count(s.name) || plan_.by_name.count(s.name + "#if")) {
      return InvalidArgumentError("two steps are named '" + s.name + "'");
    }
    if (s.type == StepType::kParallel || s.type == StepType::kConditional) {
      const int first_node = static_cast<int>(plan_.nodes.size());
      std::vector<int> entry = deps;
      int inner_gate = gate;
      bool inner_branch = branch;
      int gate_node = -1;
      if (s.type == StepType::kConditional || s.condition) {
        if (!s.condition) {
          return InvalidArgumentError("conditional step '" + s.name + "' has no condition");
        }
        Node g;
        g.name = s.name + "#if";
        g.kind = NodeKind::kGate;
        g.step = &s;
        g.deps = deps;
        g.gate = gate;
        g.branch = branch;
        CORTEX_ASSIGN_OR_RETURN(g.condition, Condition(s));
        gate_node = NewNode(std::move(g));
        entry = {gate_node};
      }
      std::vector<int> children_tops;
      if (s.type == StepType::kParallel) {
        if (gate_node >= 0) {
          inner_gate = gate_node;
          inner_branch = true;
        }
        CORTEX_ASSIGN_OR_RETURN(children_tops,
                                AddList(s.parallel, entry, false, inner_gate, inner_branch));
      } else {
        CORTEX_ASSIGN_OR_RETURN(std::vector<int> then_tops,
                                AddList(s.then_steps, entry, true, gate_node, true));
        CORTEX_ASSIGN_OR_RETURN(std::vector<int> else_tops,
                                AddList(s.else_steps, entry, true, gate_node, false));
        children_tops = then_tops;
        children_tops.insert(children_tops.end(), else_tops.begin(), else_tops.end());
      }
      Node join;
      join.name = s.name;
      join.kind = NodeKind::kJoin;
      join.step = &s;
      join.gate = gate;
      join.branch = branch;
      // Every node added for this step's children (not only the list tails).
      for (int i = first_node; i < static_cast<int>(plan_.nodes.size()); ++i) {
        if (i == gate_node) continue;
        join.children.push_back(i);
      }
      join.deps = children_tops;
      if (gate_node >= 0) join.deps.push_back(gate_node);
      if (join.deps.empty()) join.deps = deps;  // an empty parallel / conditional
      return NewNode(std::move(join));
    }
    Node n;
    n.name = s.name;
    n.kind = NodeKind::kAction;
    n.step = &s;
    n.deps = deps;
    n.gate = gate;
    n.branch = branch;
    CORTEX_ASSIGN_OR_RETURN(n.condition, Condition(s));
    return NewNode(std::move(n));
  }

  Status CheckAcyclic() {
    // Kahn's algorithm; what is left over is on (or behind) a cycle.
    std::vector<int> indegree(plan_.nodes.size());
    for (size_t i = 0; i < plan_.nodes.size(); ++i) {
      indegree[i] = static_cast<int>(plan_.nodes[i].deps.size());
    }
    std::vector<int> ready;
    for (size_t i = 0; i < indegree.size(); ++i) {
      if (indegree[i] == 0) ready.push_back(static_cast<int>(i));
    }
    size_t seen = 0;
    while (!ready.empty()) {
      int n = ready.back();
      ready.pop_back();
      ++seen;
      for (int d : plan_.nodes[n].dependents) {
        if (--indegree[d] == 0) ready.push_back(d);
      }
    }
    if (seen == plan_.nodes.size()) return Status::Ok();
    std::string names;
    for (size_t i = 0; i < indegree.size(); ++i) {
      if (indegree[i] > 0) names += (names.empty() ? "" : ", ") + plan_.nodes[i].name;
    }
    return InvalidArgumentError("the steps' dependencies form a cycle (through " + names + ")");
  }

  Plan& plan_;
  std::vector<std::pair<int, const WorkflowStep*>> pending_deps_;
};

}  // namespace

Result<std::shared_ptr<const Plan>> BuildPlan(std::shared_ptr<const registry::Manifest> manifest) {
  const auto* spec = manifest ? manifest->As<registry::WorkflowSpec>() : nullptr;
  if (!spec) return InvalidArgumentError("not a Workflow manifest");
  auto plan = std::make_shared<Plan>();
  plan->manifest = manifest;
  plan->spec = spec;
  Builder b(*plan);
  CORTEX_ASSIGN_OR_RETURN(std::vector<int> tails, b.AddList(spec->steps, {}, true, -1, true));
  (void)tails;
  CORTEX_RETURN_IF_ERROR(b.Finish());
  if (plan->nodes.empty()) return InvalidArgumentError("the workflow has no steps");
  return std::shared_ptr<const Plan>(std::move(plan));
}

}  // namespace cortex::workflow
