#include "common/status.h"

#include <cstdio>
#include <cstdlib>

namespace tandem {

std::string_view status_code_name(StatusCode code) {
    switch (code) {
        case StatusCode::kOk:
            return "ok";
        case StatusCode::kInvalidArgument:
            return "invalid_argument";
        case StatusCode::kNotFound:
            return "not_found";
        case StatusCode::kAlreadyExists:
            return "already_exists";
        case StatusCode::kPermissionDenied:
            return "permission_denied";
        case StatusCode::kUnavailable:
            return "unavailable";
        case StatusCode::kDeadlineExceeded:
            return "deadline_exceeded";
        case StatusCode::kDataLoss:
            return "data_loss";
        case StatusCode::kInternal:
            return "internal";
    }
    return "unknown";
}

Status Status::with_context(std::string_view context) const {
    if (ok()) return *this;
    std::string m(context);
    m += ": ";
    m += message_;
    return Status(code_, std::move(m));
}

std::string Status::to_string() const {
    if (ok()) return "ok";
    std::string s(status_code_name(code_));
    s += ": ";
    s += message_;
    return s;
}

Status invalid_argument(std::string m) {
    return Status(StatusCode::kInvalidArgument, std::move(m));
}
Status not_found(std::string m) { return Status(StatusCode::kNotFound, std::move(m)); }
Status already_exists(std::string m) { return Status(StatusCode::kAlreadyExists, std::move(m)); }
Status permission_denied(std::string m) {
    return Status(StatusCode::kPermissionDenied, std::move(m));
}
Status unavailable(std::string m) { return Status(StatusCode::kUnavailable, std::move(m)); }
Status deadline_exceeded(std::string m) {
    return Status(StatusCode::kDeadlineExceeded, std::move(m));
}
Status data_loss(std::string m) { return Status(StatusCode::kDataLoss, std::move(m)); }
Status internal_error(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }

namespace detail {
void die_on_bad_result_access(const Status& status) {
    std::fprintf(stderr, "tandem: value() of a Result holding an error: %s\n",
                 status.to_string().c_str());
    std::abort();
}
void die_on_ok_status_in_result() {
    std::fprintf(stderr, "tandem: a Result was built from an ok Status without a value\n");
    std::abort();
}
}  // namespace detail

}  // namespace tandem
