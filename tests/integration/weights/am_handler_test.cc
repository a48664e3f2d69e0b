// Worker::drop_am_messages: an active message for an id whose handler was replaced by the drop
// handler (a rollout's last request racing the trainer's SourceServer teardown) is discarded
// without UCX's "no registered callback for that id" warning, over real UCX on loopback.
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "common/weights/ucx.h"

namespace tandem::weights::ucx {
namespace {

// Redirects this process's stdout and stderr (UCX logs to stdout unless UCX_LOG_FILE says
// otherwise) into a temporary file while alive.
class OutputCapture {
public:
    OutputCapture() {
        std::fflush(stdout);
        std::fflush(stderr);
        saved_out_ = ::dup(STDOUT_FILENO);
        saved_ = ::dup(STDERR_FILENO);
        std::FILE* f = std::tmpfile();
        file_ = f;
        ::dup2(::fileno(f), STDOUT_FILENO);
        ::dup2(::fileno(f), STDERR_FILENO);
    }
    ~OutputCapture() { restore(); }
    std::string restore() {
        if (saved_ < 0) return text_;
        std::fflush(stdout);
        std::fflush(stderr);
        ::dup2(saved_out_, STDOUT_FILENO);
        ::dup2(saved_, STDERR_FILENO);
        ::close(saved_out_);
        ::close(saved_);
        saved_ = -1;
        std::rewind(file_);
        char buf[4096];
        size_t n = 0;
        while ((n = std::fread(buf, 1, sizeof buf, file_)) > 0) text_.append(buf, n);
        std::fclose(file_);
        return text_;
    }

private:
    int saved_out_ = -1;
    int saved_ = -1;
    std::FILE* file_ = nullptr;
    std::string text_;
};

void progress_until(Worker& a, Worker& b, const std::function<bool()>& done,
                    std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
        a.progress();
        b.progress();
    }
}

TEST(WorkerAmHandler, MessageForADroppedIdIsDiscardedQuietly) {
    auto context = Context::create(UcxOptions{});
    ASSERT_TRUE(context.ok()) << context.status().to_string();
    auto server = Worker::create(*context, "server");
    auto client = Worker::create(*context, "client");
    ASSERT_TRUE(server.ok() && client.ok());
    constexpr uint16_t kId = 0x5751;

    int delivered = 0;
    ASSERT_TRUE((*server)
                    ->set_am_handler(
                        kId,
                        [&](std::span<const std::byte>, void*, size_t, const ucp_am_recv_param_t&) {
                            ++delivered;
                            return UCS_OK;
                        })
                    .ok());
    auto ep = Endpoint::connect(*client, (*server)->address(), "server");
    ASSERT_TRUE(ep.ok()) << ep.status().to_string();

    // One message while the handler is registered, one after it was cleared.
    auto send = [&](uint64_t payload) {
        ucp_request_param_t param{};
        param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        param.flags = UCP_AM_SEND_FLAG_EAGER;
        ucs_status_ptr_t req =
            ucp_am_send_nbx((*ep)->handle(), kId, &payload, sizeof payload, nullptr, 0, &param);
        ASSERT_FALSE(UCS_PTR_IS_ERR(req));
        if (UCS_PTR_IS_PTR(req)) {
            progress_until(
                **server, **client, [&] { return ucp_request_check_status(req) != UCS_INPROGRESS; },
                std::chrono::seconds(10));
            EXPECT_EQ(ucp_request_check_status(req), UCS_OK);
            ucp_request_free(req);
        }
    };
    send(1);
    progress_until(
        **server, **client, [&] { return delivered == 1; }, std::chrono::seconds(10));
    ASSERT_EQ(delivered, 1);

    OutputCapture capture;
    (*server)->drop_am_messages(kId);
    send(2);
    // Let the server see it: progress a while (there is nothing to wait for when it is dropped).
    progress_until(
        **server, **client, [] { return false; }, std::chrono::milliseconds(300));
    const std::string log = capture.restore();
    EXPECT_EQ(delivered, 1);
    EXPECT_EQ(log.find("no registered callback"), std::string::npos) << log;
}

}  // namespace
}  // namespace tandem::weights::ucx
