// The trainer actor's policy on the CPU engine: model::GrpoTrainer as it is.
#include "trainer_node/policy.h"

namespace tandem::trainer {

namespace {

class CpuPolicy final : public Policy {
public:
    explicit CpuPolicy(std::unique_ptr<model::GrpoTrainer> t) : t_(std::move(t)) {}
    const char* device() const override { return "cpu"; }
    Result<model::TrainStats> step(std::span<const model::Trajectory> batch) override {
        return t_->step(batch);
    }
    Result<model::TrainStats> supervised_step(std::span<const model::Trajectory> batch) override {
        return t_->supervised_step(batch);
    }
    Result<model::ModelWeights> weights() const override { return t_->weights(); }
    const weights::Layout& layout() const override { return t_->weights().layout(); }
    Status publish(weights::Publisher& publisher, Version version) override {
        return publisher.publish(version, t_->weights().bytes());
    }
    Result<std::string> save_checkpoint(const std::string& root, const model::TrainerState& state,
                                        const model::Vocabulary* vocab) override {
        return t_->save_checkpoint(root, state, vocab);
    }
    Result<model::TrainerState> restore(const std::string& path) override {
        return t_->restore(path);
    }

private:
    std::unique_ptr<model::GrpoTrainer> t_;
};

}  // namespace

Result<std::unique_ptr<Policy>> make_cpu_policy(model::ModelWeights initial,
                                                const model::TrainerOptions& options) {
    TANDEM_ASSIGN_OR_RETURN(auto t, model::GrpoTrainer::create(std::move(initial), options));
    return std::unique_ptr<Policy>(new CpuPolicy(std::move(t)));
}

}  // namespace tandem::trainer
