// The envelope: "TANDEM/<major>.<minor> <type> <seq>" + JSON object body + binary frames. Every
// malformed message is refused with a message that names the problem, and `partial` keeps what
// could be read so the receiver can answer the sender.
#include "common/wire/envelope.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/wire/messages.h"

namespace tandem::wire {
namespace {

using ::testing::HasSubstr;

// A valid stop_actor body: the smallest message type with a required field.
const std::string kStopBody = R"({"actor": "job-000001/rollout-0", "reason": "test"})";

std::vector<std::string> frames(std::string header, std::string body = kStopBody) {
    return {std::move(header), std::move(body)};
}

// Decodes input that must be refused; returns the status.
Status refused(const std::vector<std::string>& input, Envelope* partial = nullptr) {
    auto e = decode(input, partial);
    EXPECT_FALSE(e.ok()) << "accepted: " << (input.empty() ? "" : input[0]);
    return e.status();
}

TEST(Envelope, EncodesHeaderBodyAndFramesInOrder) {
    Envelope e = make_envelope(StopActor{"job-000001/rollout-0", "done"}, 42);
    e.frames = {"ucx-address", "rkey"};
    const auto out = encode(e);
    ASSERT_EQ(out.size(), 4u);
    EXPECT_EQ(out[0], "TANDEM/1.0 stop_actor 42");
    EXPECT_EQ(Json::parse(out[1]), e.body);
    EXPECT_EQ(out[2], "ucx-address");
    EXPECT_EQ(out[3], "rkey");
}

TEST(Envelope, DecodesWhatItEncodes) {
    Envelope e = make_envelope(StopActor{"job-000001/rollout-0", "done"}, 7);
    auto d = decode(encode(e));
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    EXPECT_EQ(d->major, kProtocolMajor);
    EXPECT_EQ(d->minor, kProtocolMinor);
    EXPECT_EQ(d->type, "stop_actor");
    EXPECT_EQ(d->seq, 7u);
    EXPECT_EQ(d->body, e.body);
    EXPECT_TRUE(d->frames.empty());
}

TEST(Envelope, LargestSequenceNumberSurvives) {
    Envelope e = make_envelope(StopActor{"job-000001/rollout-0", ""}, UINT64_MAX);
    auto d = decode(encode(e));
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    EXPECT_EQ(d->seq, UINT64_MAX);
}

TEST(Envelope, BinaryFramesArePreservedByteForByte) {
    Envelope e = make_envelope(StopActor{"job-000001/rollout-0", ""}, 1);
    std::string binary;
    for (int i = 0; i < 256; ++i) binary.push_back(static_cast<char>(i));  // includes NUL
    e.frames = {binary, "", std::string(1 << 16, '\xff')};
    auto d = decode(encode(e));
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    ASSERT_EQ(d->frames.size(), 3u);
    EXPECT_EQ(d->frames[0], binary);
    EXPECT_EQ(d->frames[1], "");
    EXPECT_EQ(d->frames[2], std::string(1 << 16, '\xff'));
}

TEST(Envelope, NoFramesIsRefused) {
    const Status s = refused({});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("expected at least 2 frames"));
    EXPECT_THAT(s.message(), HasSubstr("got 0"));
}

TEST(Envelope, HeaderWithoutBodyIsRefused) {
    const Status s = refused({"TANDEM/1.0 stop_actor 1"});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("got 1"));
}

TEST(Envelope, WrongMagicIsRefused) {
    for (const char* h : {"TANDEN/1.0 stop_actor 1", "tandem/1.0 stop_actor 1", "", "TANDEM",
                          " TANDEM/1.0 stop_actor 1", "HTTP/1.1 200 OK"}) {
        SCOPED_TRACE(h);
        const Status s = refused(frames(h));
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
        EXPECT_THAT(s.message(), HasSubstr("does not start with TANDEM/"));
    }
}

TEST(Envelope, HeaderWithoutTypeOrSequenceIsRefused) {
    for (const char* h : {"TANDEM/1.0", "TANDEM/1.0 stop_actor", "TANDEM/1.0stop_actor1"}) {
        SCOPED_TRACE(h);
        const Status s = refused(frames(h));
        EXPECT_THAT(s.message(), HasSubstr("'TANDEM/MAJOR.MINOR TYPE SEQ'"));
    }
}

TEST(Envelope, BadVersionSyntaxIsRefusedNamingTheVersion) {
    for (const char* v :
         {"1", "1.", ".0", "a.b", "1.0.0", "-1.0", "1.-1", "+1.0", "70000.0", "1.x", ""}) {
        SCOPED_TRACE(v);
        const Status s = refused(frames(std::string("TANDEM/") + v + " stop_actor 1"));
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
        EXPECT_THAT(s.message(), HasSubstr(std::string("bad protocol version '") + v + "'"));
    }
}

TEST(Envelope, BadSequenceNumberIsRefused) {
    for (const char* seq : {"", "x", "-1", "1.5", "18446744073709551616", "1 2", "0x10"}) {
        SCOPED_TRACE(seq);
        const Status s = refused(frames(std::string("TANDEM/1.0 stop_actor ") + seq));
        EXPECT_THAT(s.message(), HasSubstr("bad sequence number"));
    }
}

TEST(Envelope, OtherProtocolMajorIsRefusedNamingBothVersions) {
    for (const char* h : {"TANDEM/2.0 stop_actor 5", "TANDEM/0.9 stop_actor 5"}) {
        SCOPED_TRACE(h);
        Envelope partial;
        const Status s = refused(frames(h), &partial);
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
        EXPECT_THAT(s.message(), HasSubstr("is not supported"));
        EXPECT_THAT(s.message(), HasSubstr("this side speaks 1.x"));
        EXPECT_EQ(partial.seq, 5u);  // so the error reply can name the message
    }
    const Status s = refused(frames("TANDEM/2.3 stop_actor 5"));
    EXPECT_THAT(s.message(), HasSubstr("protocol 2.3"));
}

TEST(Envelope, HigherMinorOfTheSameMajorIsAccepted) {
    auto d = decode(frames("TANDEM/1.7 stop_actor 9"));
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    EXPECT_EQ(d->major, 1);
    EXPECT_EQ(d->minor, 7);
}

TEST(Envelope, UnknownFieldsFromANewerMinorAreIgnored) {
    auto d = decode(frames("TANDEM/1.9 stop_actor 9",
                           R"({"actor": "job-000001/trainer-0", "reason": "", "new_field": [1]})"));
    ASSERT_TRUE(d.ok()) << d.status().to_string();
    auto m = body_as<StopActor>(*d);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->actor, "job-000001/trainer-0");
}

TEST(Envelope, UnknownTypeIsRefusedNamingTheType) {
    Envelope partial;
    const Status s = refused(frames("TANDEM/1.0 launch_missiles 3", "{}"), &partial);
    EXPECT_EQ(s.code(), StatusCode::kNotFound);
    EXPECT_THAT(s.message(), HasSubstr("unknown message type 'launch_missiles'"));
    EXPECT_EQ(partial.seq, 3u);
    EXPECT_EQ(partial.type, "launch_missiles");
}

TEST(Envelope, BodyThatIsNotJsonIsRefused) {
    for (const char* body : {"", "{", "{\"actor\": }", "not json", "{\"a\": 1} trailing"}) {
        SCOPED_TRACE(body);
        Envelope partial;
        const Status s = refused(frames("TANDEM/1.0 stop_actor 11", body), &partial);
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
        EXPECT_THAT(s.message(), HasSubstr("stop_actor: body is not JSON"));
        EXPECT_EQ(partial.seq, 11u);
        EXPECT_EQ(partial.type, "stop_actor");
    }
}

TEST(Envelope, BodyThatIsJsonButNotAnObjectIsRefused) {
    for (const char* body : {"[]", "42", "\"text\"", "null", "true"}) {
        SCOPED_TRACE(body);
        const Status s = refused(frames("TANDEM/1.0 stop_actor 1", body));
        EXPECT_THAT(s.message(), HasSubstr("stop_actor: body is not a JSON object"));
    }
}

TEST(Envelope, MissingRequiredFieldIsRefusedNamingTheField) {
    Envelope partial;
    const Status s = refused(frames("TANDEM/1.0 stop_actor 12", R"({"reason": "x"})"), &partial);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), "stop_actor: actor: missing field");
    EXPECT_EQ(partial.seq, 12u);
}

TEST(Envelope, ErrorReplyEchoingANonUtf8HeaderStillEncodes) {
    // The coordinator answers a bad message with an Error that quotes the header; a peer may send
    // any bytes there.
    Envelope partial;
    const Status s = refused(frames("TANDEM/1.0 \xff\xfe 21", "{}"), &partial);
    EXPECT_EQ(s.code(), StatusCode::kNotFound);
    EXPECT_EQ(partial.seq, 21u);
    const Error reply{"not_found", s.message(), partial.seq};
    std::vector<std::string> out;
    ASSERT_NO_THROW(out = encode(make_envelope(reply, 1)));
    auto back = decode(out);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    auto m = body_as<Error>(*back);
    ASSERT_TRUE(m.ok());
    EXPECT_THAT(m->message, HasSubstr("unknown message type '\xEF\xBF\xBD"));  // U+FFFD
    EXPECT_EQ(m->in_reply_to, 21u);
}

TEST(Envelope, PartialIsUntouchedOnSuccessAndHoldsNothingUnreadOnEarlyFailure) {
    Envelope partial;
    partial.seq = 99;
    ASSERT_TRUE(decode(frames("TANDEM/1.0 stop_actor 4"), &partial).ok());
    EXPECT_EQ(partial.seq, 99u);

    (void)refused(frames("garbage"), &partial);
    EXPECT_EQ(partial.seq, 0u);  // nothing could be read: the error reply says "unknown"
    EXPECT_TRUE(partial.type.empty());
}

}  // namespace
}  // namespace tandem::wire
