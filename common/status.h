#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace tandem {

// The coarse error vocabulary shared by every component. Codes say what a caller can do about an
// error, not where it came from; the message says where.
enum class StatusCode {
    kOk = 0,
    kInvalidArgument,   // the input is wrong; retrying the same input fails again
    kNotFound,          // the named thing does not exist
    kAlreadyExists,     // the named thing exists and must not be created twice
    kPermissionDenied,  // wrong secret or token
    kUnavailable,       // a peer or resource is not reachable now; retrying may succeed
    kDeadlineExceeded,  // a deadline passed before the operation finished
    kDataLoss,          // bytes are corrupt or torn (checksum or header mismatch)
    kInternal,          // a bug or an unexpected failure of a dependency
};

std::string_view status_code_name(StatusCode code);

// Value type: an error code with a human-readable message. Cheap to copy when ok.
class [[nodiscard]] Status {
public:
    Status() = default;
    Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

    static Status ok_status() { return Status(); }

    bool ok() const { return code_ == StatusCode::kOk; }
    StatusCode code() const { return code_; }
    const std::string& message() const { return message_; }
    // Unavailable and deadline errors may succeed when tried again later.
    bool retryable() const {
        return code_ == StatusCode::kUnavailable || code_ == StatusCode::kDeadlineExceeded;
    }

    // Prefixes the message with context ("loading cluster file: ..."); keeps the code.
    Status with_context(std::string_view context) const;
    // "invalid_argument: message", or "ok".
    std::string to_string() const;

    friend bool operator==(const Status& a, const Status& b) {
        return a.code_ == b.code_ && a.message_ == b.message_;
    }

private:
    StatusCode code_ = StatusCode::kOk;
    std::string message_;
};

Status invalid_argument(std::string message);
Status not_found(std::string message);
Status already_exists(std::string message);
Status permission_denied(std::string message);
Status unavailable(std::string message);
Status deadline_exceeded(std::string message);
Status data_loss(std::string message);
Status internal_error(std::string message);

// Either a value or a non-ok Status. Accessing the value of an error is a programming error and
// aborts (it is checked in every build type).
template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
    Result(Status status);                     // NOLINT(google-explicit-constructor)

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    const Status& status() const {
        static const Status kOkStatus;
        return ok() ? kOkStatus : std::get<1>(v_);
    }

    T& value() & {
        check();
        return std::get<0>(v_);
    }
    const T& value() const& {
        check();
        return std::get<0>(v_);
    }
    T&& value() && {
        check();
        return std::get<0>(std::move(v_));
    }
    T value_or(T fallback) const& { return ok() ? std::get<0>(v_) : std::move(fallback); }

    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

private:
    void check() const;
    std::variant<T, Status> v_;
};

namespace detail {
[[noreturn]] void die_on_bad_result_access(const Status& status);
[[noreturn]] void die_on_ok_status_in_result();
inline const Status& to_status(const Status& s) { return s; }
template <typename T>
const Status& to_status(const Result<T>& r) {
    return r.status();
}
}  // namespace detail

template <typename T>
Result<T>::Result(Status status) : v_(std::move(status)) {
    if (std::get<1>(v_).ok()) detail::die_on_ok_status_in_result();
}

template <typename T>
void Result<T>::check() const {
    if (!ok()) detail::die_on_bad_result_access(std::get<1>(v_));
}

}  // namespace tandem

// Returns the error of a Status or Result expression from the enclosing function.
#define TANDEM_RETURN_IF_ERROR(expr)                                      \
    do {                                                                  \
        const auto& tandem_status_or_result_ = (expr);                    \
        if (!::tandem::detail::to_status(tandem_status_or_result_).ok())  \
            return ::tandem::detail::to_status(tandem_status_or_result_); \
    } while (false)

#define TANDEM_CONCAT_INNER_(a, b) a##b
#define TANDEM_CONCAT_(a, b) TANDEM_CONCAT_INNER_(a, b)
// `TANDEM_ASSIGN_OR_RETURN(auto x, make_x());` binds the value or returns the error.
#define TANDEM_ASSIGN_OR_RETURN(lhs, expr)                        \
    auto TANDEM_CONCAT_(tandem_result_, __LINE__) = (expr);       \
    if (!TANDEM_CONCAT_(tandem_result_, __LINE__).ok())           \
        return TANDEM_CONCAT_(tandem_result_, __LINE__).status(); \
    lhs = std::move(TANDEM_CONCAT_(tandem_result_, __LINE__)).value()
