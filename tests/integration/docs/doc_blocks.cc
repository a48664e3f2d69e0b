#include "tests/integration/docs/doc_blocks.h"

#include <regex>

#include <fmt/format.h>

namespace tandem::doctest {

namespace {

std::string trim(const std::string& s) {
    const auto b = s.find_first_not_of(" \t\r");
    if (b == std::string::npos) return "";
    const auto e = s.find_last_not_of(" \t\r");
    return s.substr(b, e - b + 1);
}

std::string rtrim(const std::string& s) {
    const auto e = s.find_last_not_of(" \t\r");
    return e == std::string::npos ? "" : s.substr(0, e + 1);
}

bool is_fence(const std::string& line) { return trim(line).starts_with("```"); }

bool is_shell(const std::string& info) {
    return info == "sh" || info == "bash" || info == "shell" || info == "console";
}

// "<!-- doctest: run timeout=60 -->" -> the block settings it gives; nullopt for other lines.
Result<std::optional<Block>> parse_marker(const std::string& line, const std::string& where) {
    static const std::regex marker(R"(^\s*<!--\s*doctest:\s*(.*?)\s*-->\s*$)");
    std::smatch m;
    if (!std::regex_match(line, m, marker)) return std::optional<Block>();
    static const std::regex token(R"re((\w+)(?:=("([^"]*)"|\S+))?)re");
    const std::string rest = m[1].str();
    Block b;
    bool first = true;
    for (auto it = std::sregex_iterator(rest.begin(), rest.end(), token);
         it != std::sregex_iterator(); ++it) {
        const std::string key = (*it)[1].str();
        const std::string value = (*it)[3].matched ? (*it)[3].str() : (*it)[2].str();
        if (first) {
            if (key == "run") {
                b.mode = BlockMode::kRun;
            } else if (key == "skip") {
                b.mode = BlockMode::kSkip;
            } else {
                return invalid_argument(
                    fmt::format("{}: doctest marker: expected run or skip, got '{}'", where, key));
            }
            first = false;
        } else if (key == "reason") {
            b.skip_reason = value;
        } else if (key == "timeout") {
            b.timeout_s = std::atoi(value.c_str());
            if (b.timeout_s <= 0)
                return invalid_argument(fmt::format("{}: doctest marker: bad timeout", where));
        } else if (key == "numbers" && value == "any") {
            b.any_numbers = true;
        } else {
            return invalid_argument(
                fmt::format("{}: doctest marker: unknown setting '{}'", where, key));
        }
    }
    if (first) return invalid_argument(fmt::format("{}: doctest marker: empty", where));
    if (b.mode == BlockMode::kSkip && trim(b.skip_reason).empty()) {
        return invalid_argument(fmt::format(
            "{}: doctest: skip needs a reason=\"...\" (why it cannot run here)", where));
    }
    return std::optional<Block>(b);
}

// Fills `b.commands` from `b.body`.
void parse_commands(Block& b) {
    const auto lines = split_lines(b.body);
    for (const auto& l : lines) b.transcript = b.transcript || l.starts_with("$ ");
    if (!b.transcript) {
        for (const auto& l : lines) {
            if (auto code = declared_exit(l)) b.commands.push_back({l, *code, {}, false});
        }
        return;
    }
    Command* cur = nullptr;
    bool continued = false;
    for (const auto& l : lines) {
        if (continued && cur) {
            cur->text += "\n" + l;
            continued = rtrim(l).ends_with("\\");
            if (!continued) cur->expected_exit = declared_exit(l).value_or(0);
            continue;
        }
        if (l.starts_with("$ ")) {
            b.commands.push_back({l.substr(2), 0, {}, false});
            cur = &b.commands.back();
            continued = rtrim(l).ends_with("\\");
            if (!continued) cur->expected_exit = declared_exit(l).value_or(0);
        } else if (cur) {
            cur->expected_output.push_back(l);
        }
    }
    for (auto& c : b.commands) {
        while (!c.expected_output.empty() && trim(c.expected_output.back()).empty())
            c.expected_output.pop_back();
        c.output_shown = !c.expected_output.empty();
    }
}

}  // namespace

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start < text.size()) {
        const auto nl = text.find('\n', start);
        if (nl == std::string::npos) {
            out.push_back(text.substr(start));
            break;
        }
        out.push_back(text.substr(start, nl - start));
        start = nl + 1;
    }
    return out;
}

std::optional<int> declared_exit(const std::string& line) {
    static const std::regex exits(R"((^|\s)#\s*exits\s+(\d+)\b[^#]*$)");
    std::smatch m;
    if (!std::regex_search(line, m, exits)) return std::nullopt;
    return std::stoi(m[2].str());
}

Result<Page> parse_page(const std::string& text, const std::string& source) {
    Page page;
    const auto lines = split_lines(text);
    std::optional<Block> pending;
    int pending_line = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
        const std::string where = fmt::format("{}:{}", source, i + 1);
        auto marker = parse_marker(lines[i], where);
        if (!marker.ok()) return marker.status();
        if (*marker) {
            if (pending) {
                return invalid_argument(fmt::format(
                    "{}:{}: doctest marker is not followed by a fence", source, pending_line));
            }
            pending = **marker;
            pending_line = static_cast<int>(i + 1);
            continue;
        }
        if (!is_fence(lines[i])) {
            if (pending && !trim(lines[i]).empty()) {
                return invalid_argument(fmt::format(
                    "{}:{}: doctest marker is not followed by a fence", source, pending_line));
            }
            continue;
        }
        Block b = pending.value_or(Block{});
        b.line = static_cast<int>(i + 1);
        b.info = trim(trim(lines[i]).substr(3));
        size_t j = i + 1;
        while (j < lines.size() && !(is_fence(lines[j]) && trim(lines[j]) == "```")) {
            b.body += lines[j] + "\n";
            ++j;
        }
        if (j == lines.size())
            return invalid_argument(fmt::format("{}: fence is never closed", where));
        if (pending) {
            parse_commands(b);
            page.marked.push_back(std::move(b));
        } else if (is_shell(b.info) ||
                   (b.info.empty() &&
                    (b.body.starts_with("$ ") || b.body.find("\n$ ") != std::string::npos))) {
            page.unmarked_shell_lines.push_back(b.line);
        }
        pending.reset();
        i = j;
    }
    if (pending) {
        return invalid_argument(
            fmt::format("{}:{}: doctest marker is not followed by a fence", source, pending_line));
    }
    return page;
}

std::string compare_output(const std::vector<std::string>& expected,
                           const std::vector<std::string>& actual, bool any_numbers) {
    static const std::regex number(R"(\d+(\.\d+)?)");
    auto norm = [&](const std::string& s) {
        const std::string t = rtrim(s);
        return any_numbers ? std::regex_replace(t, number, "#") : t;
    };
    std::vector<std::string> e, a;
    for (const auto& l : expected) e.push_back(norm(l));
    for (const auto& l : actual) a.push_back(norm(l));
    while (!a.empty() && a.back().empty()) a.pop_back();
    // match[i][j]: e[i..] matches a[j..]; "..." matches any number of lines.
    std::vector<std::vector<char>> match(e.size() + 1, std::vector<char>(a.size() + 1, 0));
    match[e.size()][a.size()] = 1;
    for (size_t i = e.size(); i-- > 0;) {
        for (size_t j = a.size() + 1; j-- > 0;) {
            if (trim(e[i]) == "...") {
                match[i][j] = match[i + 1][j] || (j < a.size() && match[i][j + 1]);
            } else {
                match[i][j] = j < a.size() && e[i] == a[j] && match[i + 1][j + 1];
            }
        }
    }
    if (match[0][0]) return "";
    // The first expected line (other than "...") that the output lacks, in order.
    size_t j = 0;
    for (const auto& line : e) {
        if (trim(line) == "...") continue;
        size_t k = j;
        while (k < a.size() && a[k] != line) ++k;
        if (k == a.size()) {
            std::string shown;
            for (const auto& l : actual) shown += "    " + l + "\n";
            return fmt::format("the doc shows \"{}\", which the output lacks{}; the output:\n{}",
                               line, any_numbers ? " (numbers aside)" : "", shown);
        }
        j = k + 1;
    }
    std::string shown;
    for (const auto& l : actual) shown += "    " + l + "\n";
    return fmt::format("the output has lines the doc does not show (mark them with \"...\"):\n{}",
                       shown);
}

}  // namespace tandem::doctest
