// tandem token create --role ROLE [--name NAME]: asks the coordinator (with an admin token) for a
// new API token and prints it. Roles: scrape (GET /metrics only), viewer (read), submitter (submit,
// cancel its own jobs), actor (read weight descriptors), admin. The coordinator keeps it in the run
// directory's tokens.json (0600); docs/security.md.
#include <iostream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/context.h"

namespace tandem::cli {

int cmd_token(const std::vector<std::string>& argv) {
    constexpr const char* kUsage =
        "usage: tandem token create --role scrape|viewer|submitter|actor|admin [--name NAME]\n"
        "       [--address URL] [--token ADMIN_TOKEN] [--run-dir DIR] [--output json]\n";
    ArgSpec spec;
    add_cluster_options(spec);
    spec.options.insert({"--role", "--name"});
    auto args = parse_args(argv, spec);
    if (!args.ok()) return report(args.status().with_context("tandem token"));
    if (args->positional.size() != 1 || args->positional[0] != "create" || !args->get("--role"))
        return std::cerr << kUsage, kExitUsage;
    auto ctx = cluster_context(*args);
    if (!ctx.ok()) return report(ctx.status());
    Json body = {{"role", *args->get("--role")}};
    if (auto name = args->get("--name")) body["name"] = *name;
    auto r = ctx->post("/api/v1/tokens", body);
    if (!r.ok()) return report(r.status());
    if (json_output(*args)) return std::cout << r->dump(2) << "\n", kExitOk;
    std::cout << r->value("token", "") << "\n";
    return kExitOk;
}

}  // namespace tandem::cli
