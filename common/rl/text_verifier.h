#pragma once

// Verifiers of text tasks (task.verifier):
//   exact    1 when completion and answer are equal after trimming surrounding whitespace.
//   numeric  GSM8K style: the number after the last "####" (else the last number) of the
//            completion equals the answer's number (the answer may be a bare number or a worked
//            solution ending in "#### 72") within 1e-6 relative; commas are thousands
//            separators ("1,000"), a sign and a decimal part are read ("-3.5").
// The built-in character tasks keep their own verifiers (model::verify).

#include <optional>
#include <string_view>

#include "common/config/job_spec.h"

namespace tandem::rl {

// The number a text gives as its answer (see numeric above), or nullopt.
std::optional<double> final_number(std::string_view text);

// Reward in [0, 1]; kDefault means exact.
double verify_text(config::Verifier verifier, std::string_view answer, std::string_view completion);

}  // namespace tandem::rl
