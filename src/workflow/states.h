// The states of a workflow run and of its steps. The engine keeps them as enums; they become
// text only where they leave it: Store records, events, metrics labels and the API's JSON.
#pragma once

#include <optional>
#include <string_view>

namespace cortex::workflow {

enum class StepStatus { kPending, kRunning, kRetrying, kSucceeded, kFailed, kSkipped, kCancelled };

// A run is `running` (or `paused`) until it ends `succeeded`, `failed` or `cancelled`.
enum class RunStatus { kRunning, kPaused, kSucceeded, kFailed, kCancelled };

std::string_view StatusName(StepStatus status);
std::string_view StatusName(RunStatus status);
std::optional<StepStatus> ParseStepStatus(std::string_view text);
std::optional<RunStatus> ParseRunStatus(std::string_view text);

// A step that will not change again (in this run; a retry of the run may reset it).
inline bool Terminal(StepStatus s) {
  return s == StepStatus::kSucceeded || s == StepStatus::kFailed || s == StepStatus::kSkipped ||
         s == StepStatus::kCancelled;
}
inline bool Finished(RunStatus s) {
  return s == RunStatus::kSucceeded || s == RunStatus::kFailed || s == RunStatus::kCancelled;
}

}  // namespace cortex::workflow
