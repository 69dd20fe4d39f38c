// A workflow's steps as a static graph of nodes (ninja's State): built once per run from the
// pinned manifest, then only read. The engine keeps the per-run mutable state beside it.
//
// Ordering (docs/workflows.md):
//  - a step with `depends_on` waits for exactly those steps;
//  - consecutive steps with the same `parallel_group` run together: each waits for what the
//    step before the group waited for... that is, for the step (or group) declared before it;
//  - any other step follows the step declared before it (or all members of the group before it).
// Structural steps are flattened:
//  - `type: parallel` with `parallel: [steps]`: the children wait for what the parallel step
//    waits for (plus their own depends_on) and run together; the parallel step itself is a join
//    node that ends when all of them have;
//  - `type: conditional` with `condition`, `then: [steps]`, `else: [steps]`: a gate node
//    "<name>#if" evaluates the condition; each branch runs in declaration order after it, the
//    branch not taken is skipped; the conditional step itself is the join.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "registry/expression.h"
#include "registry/manifest.h"

namespace cortex::workflow {

enum class NodeKind {
  kAction,  // runs something: tool, workflow, relic, agent
  kGate,    // evaluates a conditional's condition; output {"result": bool}
  kJoin,    // ends when its children have (parallel / conditional)
};

struct Node {
  std::string name;
  NodeKind kind = NodeKind::kAction;
  const registry::WorkflowStep* step = nullptr;  // the declaring step (for a gate: the conditional)
  std::vector<int> deps;                         // indices of nodes this one waits for
  std::vector<int> dependents;                   // the reverse edges
  int gate = -1;       // for a branch child: its gate node; the child runs when the gate's
  bool branch = true;  // result equals `branch`
  std::shared_ptr<const registry::Expression> condition;  // an action's own `condition`
  std::vector<int> children;                              // for a join: the nodes it joins
};

struct Plan {
  std::shared_ptr<const registry::Manifest> manifest;  // keeps the steps the nodes point to
  const registry::WorkflowSpec* spec = nullptr;
  std::vector<Node> nodes;
  std::map<std::string, int, std::less<>> by_name;
  const Node* Find(std::string_view name) const {
    auto it = by_name.find(name);
    return it == by_name.end() ? nullptr : &nodes[it->second];
  }
};

// InvalidArgument for what load-time validation normally catches (unknown depends_on, cycles,
// duplicate names, bad conditions): a pinned manifest is checked again here.
Result<std::shared_ptr<const Plan>> BuildPlan(std::shared_ptr<const registry::Manifest> manifest);

}  // namespace cortex::workflow
