#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

// Each command takes the arguments after its name and returns an exit code (cli/args.h). It
// writes results to stdout and errors to stderr.
int cmd_config(const std::vector<std::string>& args);  // cmd_config.cc
int cmd_up(const std::vector<std::string>& args);      // cmd_cluster.cc
int cmd_down(const std::vector<std::string>& args);
int cmd_status(const std::vector<std::string>& args);
int cmd_nodes(const std::vector<std::string>& args);
int cmd_job(const std::vector<std::string>& args);  // cmd_job.cc
int cmd_versions(const std::vector<std::string>& args);
int cmd_job_metrics(const std::vector<std::string>& args);  // cmd_metrics.cc
int cmd_dashboard(const std::vector<std::string>& args);    // cmd_dashboard.cc
int cmd_model(const std::vector<std::string>& args);        // cmd_model.cc
int cmd_token(const std::vector<std::string>& args);        // cmd_token.cc

}  // namespace tandem::cli
