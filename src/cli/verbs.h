// The HTTP verbs of the CLI, one file each (verb_<name>.cc); registry_commands.cc adds them.
// Each is a client of the API at ctx.server and sets ctx.exit_code (see cli/client.h).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "cli/context.h"
#include "cli/output.h"

namespace CLI {
class Option;
}

namespace cortex::cli {

// `-o,--output FORMAT` restricted to `choices`, with its default shown in --help.
CLI::Option* AddOutputOption(CLI::App* cmd, std::string& output, std::vector<std::string> choices,
                             const std::string& description);

// `-o table|json|yaml|name` and `--no-headers`: the options of every verb that lists.
void AddListFormat(CLI::App* cmd, ListFormat& format, const std::string& description = "");

// The longest --timeout a verb takes: an hour.
inline constexpr int64_t kMaxTimeoutMs = 3600 * 1000;
// A --timeout, the same in every verb: "30s", "500ms", "2m", "1h", or a bare number of seconds;
// more than 0 and at most kMaxTimeoutMs. Milliseconds, or nullopt when it is not such a duration.
std::optional<int64_t> ParseTimeoutMs(std::string_view text);
// `--timeout DURATION`, checked by ParseTimeoutMs; `description` says what it bounds.
CLI::Option* AddTimeoutOption(CLI::App* cmd, std::string& timeout, const std::string& description);
// Another option that takes such a duration (--interval).
CLI::Option* AddDurationOption(CLI::App* cmd, const std::string& flag, std::string& value,
                               const std::string& description);

// `-w,--watch` and `--interval DURATION` on a list verb (into format.watch, format.interval).
void AddWatchOptions(CLI::App* cmd, ListFormat& format);
// Prints a list: `list` once, or with format.watch again every format.interval until
// interrupted, printing what `list` printed each time it changes (on a terminal, in place of the
// last). `list` writes to the two streams it is given and returns an exit code; one that is not
// 0 ends a watch.
int RunList(const ListFormat& format,
            const std::function<int(std::ostream& out, std::ostream& err)>& list);

// The KIND and NAME arguments of a verb on one manifest; KIND may be KIND/NAME.
void AddKindNameArgs(CLI::App* cmd, std::string& kind, std::string& name);
// KIND/NAME in `kind` (and no `name`): split into the two.
void SplitKindName(std::string& kind, std::string& name);
// SplitKindName, then: false, with a usage error printed and ctx.exit_code set, when there is
// no name.
bool KindAndName(Context& ctx, std::string& kind, std::string& name);

// `version`, `completion bash|zsh|fish` and `man` (verb_help.cc).
void AddHelpCommands(CLI::App& app, Context& ctx);
// "error: unknown command "gett" (did you mean "get"?)" when the first word that is not an
// option names no verb; nullopt otherwise.
std::optional<std::string> UnknownVerb(CLI::App& app, int argc, char** argv);

void AddGetCommand(CLI::App& app, Context& ctx);
void AddDescribeCommand(CLI::App& app, Context& ctx);
void AddGraphCommand(CLI::App& app, Context& ctx);
void AddApplyCommand(CLI::App& app, Context& ctx);
void AddDeleteCommand(CLI::App& app, Context& ctx);
void AddStatusCommand(CLI::App& app, Context& ctx);
void AddSyncCommand(CLI::App& app, Context& ctx);
void AddErrorsCommand(CLI::App& app, Context& ctx);
void AddEventsCommand(CLI::App& app, Context& ctx);
void AddDepsCommand(CLI::App& app, Context& ctx);
void AddRunCommand(CLI::App& app, Context& ctx);
// `run agent` (under `run`) and `chat` (verb_agent.cc).
void AddAgentCommands(CLI::App& app, CLI::App& run, Context& ctx);
// `agent-runs [ls|show|follow|cancel]` and `sessions AGENT` (verb_agent.cc).
void AddAgentRunsCommand(CLI::App& app, Context& ctx);
void AddExecutionsCommand(CLI::App& app, Context& ctx);
void AddWorkflowsCommand(CLI::App& app, Context& ctx);
void AddDeployCommand(CLI::App& app, Context& ctx);
void AddRelicsCommand(CLI::App& app, Context& ctx);
void AddMonumentsCommand(CLI::App& app, Context& ctx);
void AddScaleCommand(CLI::App& app, Context& ctx);
// cortex mcp: the MCP stdio transport, relayed to the server's /mcp (verb_mcp.cc).
void AddMcpCommand(CLI::App& app, Context& ctx);

// Shared by `run`, `executions` and `workflows` (defined in verb_executions.cc).
// "52 ms" below 10 s, else "12.3 s".
std::string FormatDurationMs(int64_t ms);
// Milliseconds since the epoch as "2026-11-25T12:50:36Z" (UTC); "-" for 0.
std::string FormatTimestampMs(int64_t ms);
// An execution record's outcome in one line: "succeeded in 52 ms (sandboxed)", or
// "<status>: <error>" ("failed: division by zero (exit code 1)", "timeout: ..."), or the error
// alone when it starts with the status ("cancelled").
std::string ExecutionStatusLine(const Json& record);
// kExitOk when the record says the execution succeeded, else kExitApiError.
int ExecutionExitCode(const Json& record);
// Follows GET /executions/{id}/logs from `server` as events: each output line is printed as it
// comes (stdout lines to `out`, stderr lines to std::cerr), then the final record is returned.
// nullopt, after printing why and setting *exit_code, when the stream or the record failed.
std::optional<Json> FollowExecution(const Context& server, const std::string& id, std::ostream& out,
                                    int* exit_code);
// Polls GET /executions/{id} until the execution has finished: its record, or nullopt (as above).
std::optional<Json> WaitForExecution(const Context& server, const std::string& id, int* exit_code);

// Shared by `run workflow` and `workflows` (defined in verb_workflows.cc).
// A workflow run (the run JSON, with its steps) for people: id, workflow, status, error, times,
// input, one line per step (state, attempt, duration, error), output.
void DescribeRun(std::ostream& out, const Json& run);
// kExitOk when the run succeeded, else kExitApiError (failed, cancelled, or not finished).
int RunExitCode(const Json& run);
// Follows GET /workflows/{id}/logs from `server` as events, printing one line per step (and run)
// transition to `out` as it comes; with `progress_bar` (`out` is a terminal) a
// "[=====>    ] 3/7 steps" line is kept under them, redrawn in place. Returns the finished run;
// nullopt, after printing why and setting *exit_code, when the stream or the run failed.
std::optional<Json> FollowRun(const Context& server, const std::string& id, std::ostream& out,
                              bool progress_bar, int* exit_code);
// Polls GET /workflows/{id}/status until the run has finished: the run, or nullopt (as above).
std::optional<Json> WaitForRun(const Context& server, const std::string& id, int* exit_code);

}  // namespace cortex::cli
