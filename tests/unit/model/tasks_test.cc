// Vocabulary, task generators and verifiers.
#include "common/model/tasks.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "common/model/job_setup.h"
#include "common/model/trajectory.h"

namespace tandem::model {
namespace {

using config::TaskName;
using config::TaskSpec;
using config::Verifier;

TEST(Vocabulary, EncodesAndDecodesCharacters) {
    const Vocabulary v = Vocabulary::builtin();
    EXPECT_EQ(v.size(), 15);
    auto t = v.encode("31+=");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(*t, (std::vector<int32_t>{6, 4, 13, 14}));
    std::vector<int32_t> with_specials{Vocabulary::kBos, 6, 4, Vocabulary::kEos, 5};
    EXPECT_EQ(v.decode(with_specials), "31");
    const auto bad = v.encode("12x");
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find("offset 2"), std::string::npos);
    EXPECT_FALSE(Vocabulary::create("aba").ok());
}

TEST(Verifiers, ExactNumericAndPositional) {
    EXPECT_EQ(verify(Verifier::kExact, "42", " 42\n"), 1.0);
    EXPECT_EQ(verify(Verifier::kExact, "42", "420"), 0.0);
    EXPECT_EQ(verify(Verifier::kNumeric, "42", "42.0"), 1.0);
    EXPECT_EQ(verify(Verifier::kNumeric, "0.5", ".5"), 1.0);
    EXPECT_EQ(verify(Verifier::kNumeric, "42", "41.99"), 0.0);
    EXPECT_EQ(verify(Verifier::kNumeric, "42", "42abc"), 0.0);
    EXPECT_EQ(verify(Verifier::kNumeric, "42", ""), 0.0);
    EXPECT_DOUBLE_EQ(verify(Verifier::kPositional, "12345678", "12345678"), 1.0);
    EXPECT_DOUBLE_EQ(verify(Verifier::kPositional, "12345678", "12340000"), 0.5);
    EXPECT_DOUBLE_EQ(verify(Verifier::kPositional, "12345678", "1234"), 0.5);
    // Extra characters count against the response.
    EXPECT_DOUBLE_EQ(verify(Verifier::kPositional, "1234", "12345678"), 0.5);
    EXPECT_DOUBLE_EQ(verify(Verifier::kPositional, "", ""), 1.0);
}

TaskSpec spec(TaskName name, int lo, int hi, uint64_t seed = 1) {
    TaskSpec s;
    s.name = name;
    s.min_length = lo;
    s.max_length = hi;
    s.seed = seed;
    return s;
}

TEST(Tasks, BuiltinGeneratorsProduceCorrectAnswers) {
    auto reverse = make_task(spec(TaskName::kReverse, 8, 8));
    auto sort = make_task(spec(TaskName::kSort, 3, 6));
    auto copy = make_task(spec(TaskName::kCopy, 2, 4));
    auto add = make_task(spec(TaskName::kAdd, 1, 5));
    ASSERT_TRUE(reverse.ok() && sort.ok() && copy.ok() && add.ok());
    std::set<size_t> sort_lengths;
    for (uint64_t i = 0; i < 200; ++i) {
        const Example r = (*reverse)->example(i);
        ASSERT_EQ(r.prompt.size(), 9u);
        EXPECT_EQ(r.prompt.back(), '=');
        EXPECT_EQ(std::string(r.prompt.rbegin() + 1, r.prompt.rend()), r.answer);
        EXPECT_EQ((*reverse)->score(r, r.answer), 1.0);
        const Example s = (*sort)->example(i);
        sort_lengths.insert(s.answer.size());
        EXPECT_TRUE(std::is_sorted(s.answer.begin(), s.answer.end()));
        EXPECT_EQ(s.prompt.size(), s.answer.size() + 1);
        const Example c = (*copy)->example(i);
        EXPECT_EQ(c.prompt, c.answer + "=");
        const Example a = (*add)->example(i);
        const size_t plus = a.prompt.find('+');
        ASSERT_NE(plus, std::string::npos);
        const long x = std::stol(a.prompt.substr(0, plus));
        const long y = std::stol(a.prompt.substr(plus + 1, a.prompt.size() - plus - 2));
        EXPECT_EQ(std::to_string(x + y), a.answer) << a.prompt;
        EXPECT_LE(static_cast<int>(a.prompt.size()) + 1, (*add)->max_prompt_tokens());
        EXPECT_LE(static_cast<int>(a.answer.size()) + 1, (*add)->max_answer_tokens());
        auto tokens = (*add)->prompt_tokens(a);
        ASSERT_TRUE(tokens.ok());
        EXPECT_EQ(tokens->front(), Vocabulary::kBos);
    }
    EXPECT_EQ(sort_lengths, (std::set<size_t>{3, 4, 5, 6}));
    EXPECT_EQ((*reverse)->verifier(), Verifier::kPositional);
}

TEST(Tasks, GeneratorsAreDeterministicInSeedAndCursor) {
    auto a = make_task(spec(TaskName::kReverse, 4, 8, 7));
    auto b = make_task(spec(TaskName::kReverse, 4, 8, 7));
    auto c = make_task(spec(TaskName::kReverse, 4, 8, 8));
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    TaskStream sa(a->get()), sb(b->get(), 0);
    for (int i = 0; i < 10; ++i) sa.next();
    sb.set_cursor(10);  // a resumed stream continues exactly where the saved one was
    EXPECT_EQ(sa.cursor(), 10u);
    for (int i = 0; i < 20; ++i) {
        const Example x = sa.next(), y = sb.next();
        EXPECT_EQ(x.prompt, y.prompt);
    }
    int same = 0;
    for (uint64_t i = 0; i < 50; ++i) same += (*a)->example(i).prompt == (*c)->example(i).prompt;
    EXPECT_LT(same, 3);
}

class JsonlTask : public ::testing::Test {
protected:
    std::string write(const std::string& body) {
        const std::string path = ::testing::TempDir() + "/tandem_model_tasks_" +
                                 std::to_string(::getpid()) + "_" + std::to_string(counter_++) +
                                 ".jsonl";
        std::ofstream(path) << body;
        paths_.push_back(path);
        return path;
    }
    void TearDown() override {
        for (const auto& p : paths_) std::filesystem::remove(p);
    }
    std::vector<std::string> paths_;
    int counter_ = 0;
};

TEST_F(JsonlTask, LoadsRowsBuildsTheCharsetAndShufflesPerEpoch) {
    TaskSpec s = spec(TaskName::kJsonl, 1, 1);
    s.dataset = write(
        "{\"prompt\": \"2*3=\", \"answer\": \"6\"}\n\n"
        "{\"prompt\": \"half of 3=\", \"answer\": 1.5}\n"
        "{\"prompt\": \"7-2=\", \"answer\": \"5\"}\n");
    auto t = make_task(s);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    EXPECT_EQ((*t)->verifier(), Verifier::kExact);
    std::multiset<std::string> epoch0, epoch1;
    for (uint64_t i = 0; i < 3; ++i) epoch0.insert((*t)->example(i).prompt);
    for (uint64_t i = 3; i < 6; ++i) epoch1.insert((*t)->example(i).prompt);
    EXPECT_EQ(epoch0, (std::multiset<std::string>{"2*3=", "half of 3=", "7-2="}));
    EXPECT_EQ(epoch0, epoch1);
    for (uint64_t i = 0; i < 6; ++i) {
        const Example ex = (*t)->example(i);
        EXPECT_TRUE((*t)->prompt_tokens(ex).ok());
        EXPECT_TRUE((*t)->vocab().encode(ex.answer).ok());
        EXPECT_EQ((*t)->score(ex, ex.answer), 1.0);
    }
    s.verifier = Verifier::kNumeric;
    auto numeric = make_task(s);
    ASSERT_TRUE(numeric.ok());
    EXPECT_EQ((*numeric)->score({"half of 3=", "1.5"}, "1.50"), 1.0);
}

TEST_F(JsonlTask, ErrorsNameTheFileAndLine) {
    TaskSpec s = spec(TaskName::kJsonl, 1, 1);
    s.dataset = write("{\"prompt\": \"a\", \"answer\": \"b\"}\n{\"prompt\": \"a\"}\n");
    auto t = make_task(s);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find(s.dataset + ":2"), std::string::npos)
        << t.status().message();
    EXPECT_NE(t.status().message().find("answer"), std::string::npos);
    s.dataset = write("not json\n");
    EXPECT_FALSE(make_task(s).ok());
    s.dataset = "/nonexistent/tandem.jsonl";
    EXPECT_EQ(make_task(s).status().code(), StatusCode::kNotFound);
}

TEST(ScoreCompletions, ScoresGroupsAndKeepsBehaviourLogprobs) {
    auto task = make_task(spec(TaskName::kReverse, 3, 3));
    ASSERT_TRUE(task.ok());
    const std::vector<Example> ex{(*task)->example(0), (*task)->example(1)};
    std::vector<std::vector<int32_t>> prompts;
    for (const auto& e : ex) prompts.push_back(*(*task)->prompt_tokens(e));
    std::vector<Completion> cs(3);
    cs[0].prompt = 0;
    cs[0].tokens = *(*task)->vocab().encode(ex[0].answer);
    cs[0].tokens.push_back(Vocabulary::kEos);
    cs[0].logprobs = {-0.1f, -0.2f, -0.3f, -0.4f};
    cs[1].prompt = 1;
    cs[1].tokens = {Vocabulary::kEos};
    cs[1].logprobs = {-1.0f};
    cs[2].prompt = 1;
    cs[2].tokens = *(*task)->vocab().encode(ex[1].answer.substr(0, 2));
    cs[2].logprobs.assign(cs[2].tokens.size(), -0.5f);
    const auto ts = score_completions(**task, ex, prompts, std::move(cs), 40, 7);
    ASSERT_EQ(ts.size(), 3u);
    EXPECT_EQ(ts[0].reward, 1.0);
    EXPECT_EQ(ts[1].reward, 0.0);
    EXPECT_NEAR(ts[2].reward, 2.0 / 3.0, 1e-12);
    EXPECT_EQ(ts[0].group, 40u);
    EXPECT_EQ(ts[2].group, 41u);
    EXPECT_EQ(ts[1].version, 7);
    EXPECT_EQ(ts[0].behaviour_logprobs.size(), 4u);
    EXPECT_EQ(ts[2].prompt, prompts[1]);
}

TEST(JobSetup, DefaultJobGivesTheSameVersionZeroEverywhere) {
    config::JobSpec job;
    job.name = "x";
    auto a = make_job_setup(job);
    auto b = make_job_setup(job);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status().to_string();
    EXPECT_EQ(a->initial.config().vocab_size, 15);
    EXPECT_EQ(std::memcmp(a->initial.data(), b->initial.data(), a->initial.bytes().size()), 0);
    job.model.max_seq_len = 12;  // 10 prompt tokens + 12 new tokens do not fit
    auto short_ctx = make_job_setup(job);
    EXPECT_EQ(short_ctx.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(short_ctx.status().message().find("max_seq_len"), std::string::npos);
}

}  // namespace
}  // namespace tandem::model
