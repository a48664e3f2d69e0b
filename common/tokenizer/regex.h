#pragma once

// A compiled PCRE2 pattern in UTF + UCP mode (internal to tandem_tokenizer).

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tandem::tokenizer {

// Immutable after creation; safe to share between threads (each thread matches with its own
// match data and JIT stack).
class Regex {
public:
    // `literal`: match `pattern` as a plain string. `where` names the key in errors.
    static Result<Regex> compile(const std::string& pattern, bool literal,
                                 const std::string& where);
    Regex(Regex&&) noexcept;
    Regex& operator=(Regex&&) noexcept;
    ~Regex();

    bool jit() const { return jit_; }
    // Finds the first match in subject[offset, size) (valid UTF-8; offset at a character start).
    // Returns false when there is none; else sets [begin, end).
    bool find(std::string_view subject, size_t offset, size_t& begin, size_t& end) const;

private:
    Regex() = default;
    struct Code;
    std::unique_ptr<Code> code_;
    bool jit_ = false;
};

}  // namespace tandem::tokenizer
