#pragma once

// The shell blocks of a Markdown page that the docs test runs, and how it checks them
// (docs/contributing.md, "Documentation that runs").
//
// A fence is run only when an HTML comment right above it (blank lines allowed) says so:
//   <!-- doctest: run -->                      run the block
//   <!-- doctest: run timeout=60 numbers=any --> seconds before it is killed (default 120);
//                                               numbers=any: figures in shown output may differ
//   <!-- doctest: skip reason="needs a GPU" --> not run; the reason is printed
// A block whose lines start with "$ " is a transcript: each "$ " line (with "\" continuation
// lines) is a command, the lines below it up to the next "$ " are what it prints (stdout and
// stderr), compared line by line; a "..." line stands for any number of lines. Any other block
// is a script run with `bash -e -o pipefail`. In both, a command whose line ends with a comment
// "# exits N ..." must exit with N; every other command must exit 0.
// Pure functions; no state.

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::doctest {

enum class BlockMode { kRun, kSkip };

struct Command {
    std::string text;                          // the command, continuation lines joined with "\n"
    int expected_exit = 0;                     // from a trailing "# exits N" comment
    std::vector<std::string> expected_output;  // transcript blocks only
    bool output_shown = false;  // the transcript shows output (or an empty line) below it
};

struct Block {
    int line = 0;      // 1-based line of the opening fence
    std::string info;  // the fence's info string ("sh", "console", "")
    BlockMode mode = BlockMode::kRun;
    std::string skip_reason;
    int timeout_s = 120;
    bool any_numbers = false;  // numbers=any
    bool transcript = false;
    std::string body;               // the lines between the fences
    std::vector<Command> commands;  // transcript: one per "$ "; script: one per line with "# exits"
};

struct Page {
    std::vector<Block> marked;  // every fence with a doctest marker, in order
    // Shell fences (sh, bash, shell, console) with no marker: "FILE:LINE" each.
    std::vector<int> unmarked_shell_lines;
};

// Parses `text` (the page's content); `source` names it in errors (a bad marker, an unclosed
// fence, a skip without a reason).
Result<Page> parse_page(const std::string& text, const std::string& source);

// The expected exit status a command line declares with a trailing "# exits N" comment.
std::optional<int> declared_exit(const std::string& line);

// Whether `actual` (a command's output, split into lines) is what `expected` shows: line by line,
// trailing blanks ignored, "..." matching any number of lines; with `any_numbers`, every run of
// digits (with an optional fraction) matches any other. Empty when it matches, else a message
// naming the first line that differs.
std::string compare_output(const std::vector<std::string>& expected,
                           const std::vector<std::string>& actual, bool any_numbers);

std::vector<std::string> split_lines(const std::string& text);

}  // namespace tandem::doctest
