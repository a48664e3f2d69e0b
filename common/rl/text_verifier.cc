#include "common/rl/text_verifier.h"

#include "common/model/tasks.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

namespace tandem::rl {
namespace {

bool digit(char c) { return c >= '0' && c <= '9'; }

// Numbers of `text` in order: [-]digits[,ddd...][.digits] or [-].digits.
template <typename F>
void for_each_number(std::string_view text, F&& f) {
    size_t i = 0;
    while (i < text.size()) {
        const bool starts =
            digit(text[i]) || (text[i] == '.' && i + 1 < text.size() && digit(text[i + 1]));
        if (!starts) {
            ++i;
            continue;
        }
        const bool negative = i > 0 && text[i - 1] == '-';
        std::string number = negative ? "-" : "";
        while (i < text.size() &&
               (digit(text[i]) || (text[i] == ',' && i + 1 < text.size() && digit(text[i + 1]) &&
                                   !number.empty() && number != "-"))) {
            if (text[i] != ',') number += text[i];
            ++i;
        }
        if (i + 1 < text.size() && text[i] == '.' && digit(text[i + 1])) {
            number += '.';
            ++i;
            while (i < text.size() && digit(text[i])) number += text[i++];
        }
        const double v = std::strtod(number.c_str(), nullptr);
        if (std::isfinite(v) && !f(v)) return;
    }
}

}  // namespace

std::optional<double> final_number(std::string_view text) {
    std::optional<double> found;
    const size_t marker = text.rfind("####");
    if (marker != std::string_view::npos) {
        for_each_number(text.substr(marker + 4), [&](double v) {
            found = v;
            return false;  // the first number after the marker
        });
        return found;
    }
    for_each_number(text, [&](double v) {
        found = v;
        return true;  // keep going: the last number wins
    });
    return found;
}

double verify_text(config::Verifier verifier, std::string_view answer,
                   std::string_view completion) {
    if (verifier == config::Verifier::kNumeric) {
        const auto a = final_number(answer);
        const auto c = final_number(completion);
        if (!a || !c) return 0.0;
        return std::abs(*a - *c) <= 1e-6 * std::max(1.0, std::abs(*a)) ? 1.0 : 0.0;
    }
    return model::verify(verifier, answer, completion);  // exact (and default), positional
}

}  // namespace tandem::rl
