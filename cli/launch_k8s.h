#pragma once

// `tandem deploy k8s -f cluster.yaml [-o DIR] [--image IMAGE]`: Kubernetes manifests and a
// Dockerfile rendered from the cluster file, so the two cannot drift.
//
//   tandem-<name>.yaml   Secret (cluster secret, API token and, with CURVE on, the key pairs of
//                        the coordinator and every node), ConfigMap (the cluster file),
//                        headless Service, the coordinator StatefulSet (one replica, a PVC for its
//                        run directory and SQLite state), one StatefulSet per role with one pod per
//                        node of that role (CPU, memory and nvidia.com/gpu requests from the node's
//                        resources); pod k of a role runs the role's k-th node of the file and
//                        advertises its pod IP.
//   Dockerfile           an image with the Tandem binaries (built from this source tree).
//
// Pure rendering: nothing is applied to a cluster.

#include <map>
#include <string>
#include <vector>

#include "common/config/cluster_spec.h"
#include "common/net/curve.h"
#include "common/status.h"

namespace tandem::cli {

struct K8sOptions {
    std::string image = "tandem:latest";
    std::string secret;     // the cluster secret to put in the Secret
    std::string api_token;  // the admin API token to put in the Secret
    // CURVE key pairs by name ("coordinator" and node ids; docs/security.md), empty when CURVE is
    // off. Each pod copies its own secret key and the public keys it needs into RUN_DIR/keys.
    std::map<std::string, net::CurveKeys> curve_keys;
};

// File name -> content.
Result<std::map<std::string, std::string>> render_k8s(const config::ClusterSpec& spec,
                                                      const std::string& cluster_text,
                                                      const K8sOptions& options);

// `tandem deploy k8s ...`
int cmd_deploy(const std::vector<std::string>& args);

}  // namespace tandem::cli
