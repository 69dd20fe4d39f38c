#include "workflow/states.h"

#include <utility>

#include "common/enum_names.h"

namespace cortex::workflow {
namespace {

constexpr std::pair<StepStatus, std::string_view> kStepNames[] = {
    {StepStatus::kPending, "pending"},     {StepStatus::kRunning, "running"},
    {StepStatus::kRetrying, "retrying"},   {StepStatus::kSucceeded, "succeeded"},
    {StepStatus::kFailed, "failed"},       {StepStatus::kSkipped, "skipped"},
    {StepStatus::kCancelled, "cancelled"},
};

constexpr std::pair<RunStatus, std::string_view> kRunNames[] = {
    {RunStatus::kRunning, "running"},     {RunStatus::kPaused, "paused"},
    {RunStatus::kSucceeded, "succeeded"}, {RunStatus::kFailed, "failed"},
    {RunStatus::kCancelled, "cancelled"},
};

}  // namespace

std::string_view StatusName(StepStatus status) { return EnumName(kStepNames, status, "unknown"); }
std::string_view StatusName(RunStatus status) { return EnumName(kRunNames, status, "unknown"); }
std::optional<StepStatus> ParseStepStatus(std::string_view text) {
  return ParseEnumName(kStepNames, text);
}
std::optional<RunStatus> ParseRunStatus(std::string_view text) {
  return ParseEnumName(kRunNames, text);
}

}  // namespace cortex::workflow
