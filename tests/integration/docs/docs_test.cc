// The documentation runs as shown: every marked shell block of README.md and docs/*.md is run in
// order, in a scratch directory that looks like a clone after `make build` (the source tree's
// folders linked in, build/release pointing at this build), and must exit as the page says and
// print what it shows. Markers and rules: tests/integration/docs/doc_blocks.h and
// docs/contributing.md. The parser's own cases come first.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tests/integration/docs/doc_blocks.h"

namespace tandem::doctest {
namespace {

namespace fs = std::filesystem;

// ---- the parser ---------------------------------------------------------------------------

TEST(DocBlocks, OnlyMarkedFencesAreTakenAndUnmarkedShellFencesAreListed) {
    const std::string page =
        "text\n"
        "```sh\n"
        "echo not run\n"
        "```\n"
        "<!-- doctest: run timeout=30 -->\n"
        "\n"
        "```sh\n"
        "echo one\n"
        "false   # exits 1 (on purpose)\n"
        "```\n"
        "<!-- doctest: skip reason=\"needs a GPU\" -->\n"
        "```sh\n"
        "nvidia-smi\n"
        "```\n"
        "```yaml\n"
        "a: 1\n"
        "```\n";
    auto p = parse_page(page, "p.md");
    ASSERT_TRUE(p.ok()) << p.status().message();
    ASSERT_EQ(p->marked.size(), 2u);
    EXPECT_EQ(p->marked[0].line, 7);
    EXPECT_EQ(p->marked[0].timeout_s, 30);
    EXPECT_FALSE(p->marked[0].transcript);
    ASSERT_EQ(p->marked[0].commands.size(), 1u);
    EXPECT_EQ(p->marked[0].commands[0].expected_exit, 1);
    EXPECT_EQ(p->marked[1].mode, BlockMode::kSkip);
    EXPECT_EQ(p->marked[1].skip_reason, "needs a GPU");
    EXPECT_EQ(p->unmarked_shell_lines, std::vector<int>{2});
}

TEST(DocBlocks, TranscriptSplitsCommandsOutputsAndContinuations) {
    const std::string page =
        "<!-- doctest: run -->\n"
        "```\n"
        "$ echo a \\\n"
        "    b\n"
        "a b\n"
        "$ tandem config check -f bad.yaml   # exits 2\n"
        "bad.yaml:5:12: out of range\n"
        "...\n"
        "$ cd /tmp\n"
        "```\n";
    auto p = parse_page(page, "p.md");
    ASSERT_TRUE(p.ok()) << p.status().message();
    ASSERT_EQ(p->marked.size(), 1u);
    const Block& b = p->marked[0];
    EXPECT_TRUE(b.transcript);
    ASSERT_EQ(b.commands.size(), 3u);
    EXPECT_EQ(b.commands[0].text, "echo a \\\n    b");
    EXPECT_EQ(b.commands[0].expected_output, std::vector<std::string>{"a b"});
    EXPECT_EQ(b.commands[1].expected_exit, 2);
    EXPECT_EQ(b.commands[1].expected_output.size(), 2u);
    EXPECT_FALSE(b.commands[2].output_shown);
}

TEST(DocBlocks, BadMarkersAreNamed) {
    auto no_reason = parse_page("<!-- doctest: skip -->\n```sh\nx\n```\n", "p.md");
    ASSERT_FALSE(no_reason.ok());
    EXPECT_NE(no_reason.status().message().find("p.md:1: doctest: skip needs a reason"),
              std::string::npos)
        << no_reason.status().message();
    auto dangling = parse_page("<!-- doctest: run -->\nprose\n```sh\nx\n```\n", "p.md");
    ASSERT_FALSE(dangling.ok());
    EXPECT_NE(dangling.status().message().find("p.md:1: doctest marker is not followed"),
              std::string::npos);
    EXPECT_FALSE(parse_page("<!-- doctest: walk -->\n```sh\nx\n```\n", "p.md").ok());
    EXPECT_FALSE(parse_page("<!-- doctest: run -->\n```sh\nx\n", "p.md").ok());
}

TEST(DocBlocks, OutputComparisonHonoursEllipsisAndNumbers) {
    EXPECT_EQ(compare_output({"a", "b"}, {"a", "b", ""}, false), "");
    EXPECT_EQ(compare_output({"a", "...", "d"}, {"a", "b", "c", "d"}, false), "");
    EXPECT_EQ(compare_output({"a", "..."}, {"a"}, false), "");
    EXPECT_NE(compare_output({"a", "b"}, {"a", "c"}, false).find("\"b\""), std::string::npos);
    EXPECT_NE(compare_output({"a"}, {"a", "extra"}, false), "");
    EXPECT_NE(compare_output({"took 1.5 s"}, {"took 2.25 s"}, false), "");
    EXPECT_EQ(compare_output({"took 1.5 s, 3 steps"}, {"took 2.25 s, 40 steps"}, true), "");
    EXPECT_NE(compare_output({"took 1.5 s"}, {"took 2.25 ms"}, true), "");
    EXPECT_EQ(declared_exit("tandem job submit -f x.yaml --dry-run   # exits 1 (no GPU)"), 1);
    EXPECT_EQ(declared_exit("echo '# exits 3' # prints it"), std::nullopt);
    EXPECT_EQ(declared_exit("make demo"), std::nullopt);
}

// ---- running the pages --------------------------------------------------------------------

const fs::path kSource = TANDEM_SOURCE_DIR;
const fs::path kBinary = TANDEM_BINARY_DIR;

// README.md and docs/*.md, relative to the source tree.
std::vector<std::string> pages() {
    std::vector<std::string> out = {"README.md"};
    std::vector<std::string> docs;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(kSource / "docs", ec)) {
        if (e.path().extension() == ".md") docs.push_back("docs/" + e.path().filename().string());
    }
    std::sort(docs.begin(), docs.end());
    out.insert(out.end(), docs.begin(), docs.end());
    return out;
}

std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string shell_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

// Runs `script` with bash in `dir` under a deadline; returns its exit status (124: timed out).
int run_bash(const fs::path& dir, const fs::path& script, const fs::path& out, int timeout_s) {
    const std::string cmd = fmt::format(
        "cd {} && env -u TANDEM_ADDRESS -u TANDEM_TOKEN timeout -k 5 {} bash {} > {} 2>&1",
        shell_quote(dir.string()), timeout_s, shell_quote(script.string()),
        shell_quote(out.string()));
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A directory that looks like the repository after a build: the source tree's entries linked
// in, build/release linked to this build. Blocks write only into it (.tandem/, files they make).
class Scratch {
public:
    explicit Scratch(const std::string& page) {
        std::string name = page;
        std::replace_if(
            name.begin(), name.end(), [](char c) { return !std::isalnum(c); }, '_');
        root_ = fs::temp_directory_path() / fmt::format("tandem-docs-{}-{}", ::getpid(), name);
        fs::remove_all(root_);
        fs::create_directories(root_ / "build");
        fs::create_directories(root_ / ".doctest");
        for (const auto& e : fs::directory_iterator(kSource)) {
            const std::string n = e.path().filename().string();
            if (n == "build" || n == ".git" || n == ".tandem") continue;
            fs::create_symlink(e.path(), root_ / n);
        }
        fs::create_directory_symlink(kBinary, root_ / "build" / "release");
    }
    ~Scratch() {
        std::error_code ec;
        fs::remove_all(root_, ec);
    }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;

    const fs::path& root() const { return root_; }

private:
    fs::path root_;
};

// A block that starts a cluster must stop it: a pid file left in .tandem/pids fails the block,
// and the cluster is stopped here so the next block (and test) starts clean.
void check_no_cluster_left(const Scratch& s, const std::string& where) {
    const fs::path pids = s.root() / ".tandem" / "pids";
    std::error_code ec;
    if (!fs::exists(pids, ec) || fs::is_empty(pids, ec)) return;
    ADD_FAILURE() << where << ": the block left a cluster running (`tandem up` without "
                  << "`tandem down`); stopping it";
    (void)run_bash(s.root(), kSource / "tests/integration/docs/stop_cluster.sh",
                   s.root() / ".doctest" / "down.out", 60);
}

void run_script_block(const Scratch& s, const Block& b, const std::string& where) {
    std::string script = "set -e -o pipefail\n";
    int n = 0;
    for (const auto& line : split_lines(b.body)) {
        ++n;
        const auto code = declared_exit(line);
        if (!code) {
            script += line + "\n";
            continue;
        }
        // The declared status, not 0; the comment ends the command, so wrap it in braces.
        script += fmt::format(
            "{{ {}\n}} && __doctest_rc=0 || __doctest_rc=$?\n"
            "if [ \"$__doctest_rc\" -ne {} ]; then echo \"doctest: line {} of the block exited "
            "$__doctest_rc, the doc says {}\" >&2; exit 97; fi\n",
            line, *code, n, *code);
    }
    const fs::path file = s.root() / ".doctest" / fmt::format("block-{}.sh", b.line);
    std::ofstream(file) << script;
    const fs::path out = s.root() / ".doctest" / fmt::format("block-{}.out", b.line);
    const int rc = run_bash(s.root(), file, out, b.timeout_s);
    if (rc != 0) {
        ADD_FAILURE() << where << ": the block "
                      << (rc == 124 ? fmt::format("ran past its {} s", b.timeout_s)
                                    : fmt::format("exited {}", rc))
                      << "; its output:\n"
                      << read(out);
    }
}

void run_transcript_block(const Scratch& s, const Block& b, const std::string& where) {
    std::string script;
    const fs::path dir = s.root() / ".doctest";
    for (size_t i = 0; i < b.commands.size(); ++i) {
        const std::string base = fmt::format("block-{}-{}", b.line, i);
        script += fmt::format("{{ {}\n}} > {} 2>&1\necho $? > {}\n", b.commands[i].text,
                              shell_quote((dir / (base + ".out")).string()),
                              shell_quote((dir / (base + ".rc")).string()));
    }
    const fs::path file = dir / fmt::format("block-{}.sh", b.line);
    std::ofstream(file) << script;
    const int rc = run_bash(s.root(), file, dir / fmt::format("block-{}.out", b.line), b.timeout_s);
    if (rc == 124) ADD_FAILURE() << where << ": the block ran past its " << b.timeout_s << " s";
    for (size_t i = 0; i < b.commands.size(); ++i) {
        const Command& c = b.commands[i];
        const std::string base = fmt::format("block-{}-{}", b.line, i);
        const std::string output = read(dir / (base + ".out"));
        const std::string code = read(dir / (base + ".rc"));
        if (code.empty()) {
            ADD_FAILURE() << where << ": `" << c.text << "` did not finish";
            continue;
        }
        if (std::stoi(code) != c.expected_exit) {
            ADD_FAILURE() << where << ": `" << c.text << "` exited " << std::stoi(code)
                          << ", the doc says " << c.expected_exit << "; its output:\n"
                          << output;
        }
        if (c.output_shown) {
            const std::string diff =
                compare_output(c.expected_output, split_lines(output), b.any_numbers);
            if (!diff.empty()) ADD_FAILURE() << where << ": `" << c.text << "`: " << diff;
        }
    }
}

// The runner itself: a page that contradicts what its commands do fails, naming the line.
TEST(DocsRunner, FailsOnShownOutputOrExitStatusThatTheCommandsContradict) {
    const std::string page =
        "<!-- doctest: run -->\n"
        "```console\n"
        "$ echo actual\n"
        "expected\n"
        "```\n"
        "<!-- doctest: run -->\n"
        "```console\n"
        "$ sh -c 'exit 3'   # exits 2\n"
        "```\n"
        "<!-- doctest: run -->\n"
        "```sh\n"
        "true\n"
        "false   # exits 1\n"
        "false\n"
        "```\n";
    auto parsed = parse_page(page, "self.md");
    ASSERT_TRUE(parsed.ok()) << parsed.status().message();
    ASSERT_EQ(parsed->marked.size(), 3u);
    const Scratch scratch("self-test");
    EXPECT_NONFATAL_FAILURE(run_transcript_block(scratch, parsed->marked[0], "self.md:2"),
                            "the doc shows \"expected\", which the output lacks");
    EXPECT_NONFATAL_FAILURE(run_transcript_block(scratch, parsed->marked[1], "self.md:7"),
                            "`sh -c 'exit 3'   # exits 2` exited 3, the doc says 2");
    EXPECT_NONFATAL_FAILURE(run_script_block(scratch, parsed->marked[2], "self.md:11"),
                            "self.md:11: the block exited 1");
}

class DocsPage : public ::testing::TestWithParam<std::string> {};

TEST_P(DocsPage, MarkedBlocksRunAsShown) {
    const std::string page = GetParam();
    auto parsed = parse_page(read(kSource / page), page);
    ASSERT_TRUE(parsed.ok()) << parsed.status().message();
    const Scratch scratch(page);
    int ran = 0;
    for (const Block& b : parsed->marked) {
        const std::string where = fmt::format("{}:{}", page, b.line);
        if (b.mode == BlockMode::kSkip) {
            std::cout << "[ SKIP BLOCK ] " << where << ": " << b.skip_reason << "\n";
            continue;
        }
        const auto t0 = std::chrono::steady_clock::now();
        if (b.transcript) {
            run_transcript_block(scratch, b, where);
        } else {
            run_script_block(scratch, b, where);
        }
        check_no_cluster_left(scratch, where);
        std::cout << fmt::format(
            "[ RAN BLOCK  ] {} ({:.1f} s)\n", where,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        ++ran;
    }
    std::cout << page << ": " << ran << " block(s) run\n";
}

// Every shell block says whether it runs: an unmarked one would rot unnoticed.
TEST_P(DocsPage, EveryShellBlockIsMarkedRunOrSkip) {
    const std::string page = GetParam();
    auto parsed = parse_page(read(kSource / page), page);
    ASSERT_TRUE(parsed.ok()) << parsed.status().message();
    for (int line : parsed->unmarked_shell_lines) {
        ADD_FAILURE() << page << ":" << line
                      << ": a shell block without <!-- doctest: run --> or <!-- doctest: skip "
                         "reason=\"...\" --> (docs/contributing.md)";
    }
}

INSTANTIATE_TEST_SUITE_P(Pages, DocsPage, ::testing::ValuesIn(pages()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                             std::string n = info.param;
                             std::replace_if(
                                 n.begin(), n.end(), [](char c) { return !std::isalnum(c); }, '_');
                             return n;
                         });

}  // namespace
}  // namespace tandem::doctest
