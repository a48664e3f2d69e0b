#include "common/agent/user_actor.h"

#include <cstdlib>
#include <filesystem>

namespace tandem::agent {

std::optional<config::UserCommandSpec> user_command(const ActorContext& ctx) {
    const config::UserCommandSpec& user =
        ctx.actor.role == ActorRole::kTrainer ? ctx.spec.trainer.user : ctx.spec.rollout.user;
    if (user.command.empty()) return std::nullopt;
    return user;
}

ActorProcess::Command user_actor_command(const config::UserCommandSpec& user,
                                         const ActorContext& ctx, const std::string& ctx_path,
                                         const std::string& bin_dir) {
    ActorProcess::Command c;
    c.argv = user.command;
    c.working_dir = user.working_dir;
    c.env["TANDEM_ACTOR_CONTEXT"] = ctx_path;
    c.env["TANDEM_JOB"] = ctx.actor.job.str();
    c.env["TANDEM_ACTOR"] = ctx.actor.str();
    c.env["TANDEM_ATTEMPT"] = std::to_string(ctx.attempt);
    c.env["TANDEM_NODE"] = ctx.node;
    c.env["TANDEM_RUN_DIR"] = ctx.run_dir;
    c.env["PYTHONUNBUFFERED"] = "1";
    // A build tree keeps the SDK at <build>/python beside <build>/bin.
    const std::filesystem::path sdk = std::filesystem::path(bin_dir).parent_path() / "python";
    std::error_code ec;
    if (std::filesystem::exists(sdk / "tandem" / "__init__.py", ec)) {
        const char* old = std::getenv("PYTHONPATH");
        c.env["PYTHONPATH"] =
            sdk.string() + (old != nullptr && *old != '\0' ? std::string(":") + old : "");
    }
    if (auto at = ctx.placement.find("actors"); at != ctx.placement.end()) {
        const std::string me = ctx.actor.str();
        if (at->contains(me) && (*at)[me].contains("cuda_visible_devices"))
            c.env["CUDA_VISIBLE_DEVICES"] = (*at)[me]["cuda_visible_devices"].get<std::string>();
    }
    for (const auto& [k, v] : user.env) c.env[k] = v;
    return c;
}

}  // namespace tandem::agent
