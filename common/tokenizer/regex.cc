#include "common/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace tandem::tokenizer {

struct Regex::Code {
    pcre2_code* code = nullptr;
    ~Code() { pcre2_code_free(code); }
};

namespace {

// Per-thread match state: one match-data block (the whole match is all we read) and a JIT stack
// large enough for long whitespace runs.
struct MatchState {
    pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
    pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_match_context* context = pcre2_match_context_create(nullptr);
    MatchState() {
        if (stack != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
    }
    ~MatchState() {
        pcre2_match_context_free(context);
        pcre2_jit_stack_free(stack);
        pcre2_match_data_free(data);
    }
    MatchState(const MatchState&) = delete;
    MatchState& operator=(const MatchState&) = delete;
};

MatchState& match_state() {
    thread_local MatchState state;
    return state;
}

}  // namespace

Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;
Regex::~Regex() = default;

Result<Regex> Regex::compile(const std::string& pattern, bool literal, const std::string& where) {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    const uint32_t options =
        PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : 0u);
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     options, &error, &error_offset, nullptr);
    if (code == nullptr) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error, message, sizeof(message));
        return invalid_argument(where + ": regex does not compile at offset " +
                                std::to_string(error_offset) + ": " +
                                reinterpret_cast<const char*>(message));
    }
    Regex re;
    re.code_ = std::make_unique<Code>();
    re.code_->code = code;
    re.jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

bool Regex::find(std::string_view subject, size_t offset, size_t& begin, size_t& end) const {
    MatchState& state = match_state();
    const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
    int rc =
        jit_ ? pcre2_jit_match(code_->code, s, subject.size(), offset, 0, state.data, state.context)
             : PCRE2_ERROR_JIT_BADOPTION;
    if (rc == PCRE2_ERROR_JIT_BADOPTION || rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        rc = pcre2_match(code_->code, s, subject.size(), offset, PCRE2_NO_UTF_CHECK, state.data,
                         state.context);
    }
    if (rc < 0) return false;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(state.data);
    begin = ov[0];
    end = ov[1];
    return true;
}

}  // namespace tandem::tokenizer
