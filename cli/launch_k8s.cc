#include "cli/launch_k8s.h"

#include <filesystem>
#include <iostream>

#include <fmt/format.h>

#include "cli/args.h"
#include "cli/context.h"
#include "common/config/loader.h"
#include "common/run_dir.h"

namespace tandem::cli {

namespace {

namespace fs = std::filesystem;

constexpr const char* kRunDir = "/var/lib/tandem";
constexpr const char* kSecretDir = "/etc/tandem-secret";
constexpr const char* kConfigDir = "/etc/tandem";

std::string indent(const std::string& text, int spaces) {
    const std::string pad(static_cast<size_t>(spaces), ' ');
    std::string out;
    size_t start = 0;
    while (start < text.size()) {
        const size_t end = text.find('\n', start);
        const std::string line = text.substr(start, end == std::string::npos ? end : end - start);
        out += (line.empty() ? "" : pad + line) + "\n";
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return out;
}

// Requests (and limits for GPUs) from a node's declared resources.
std::string resources_yaml(const config::NodeResources& r) {
    std::string req, lim;
    if (r.cpus) req += fmt::format("              cpu: \"{}\"\n", *r.cpus);
    if (r.memory_mb) req += fmt::format("              memory: {}Mi\n", *r.memory_mb);
    if (r.gpus && *r.gpus > 0) {
        req += fmt::format("              nvidia.com/gpu: {}\n", *r.gpus);
        lim += fmt::format("              nvidia.com/gpu: {}\n", *r.gpus);
    }
    if (req.empty()) return "";
    return "          resources:\n            requests:\n" + req +
           (lim.empty() ? "" : "            limits:\n" + lim);
}

std::string volumes_yaml(const std::string& name, bool secret) {
    std::string v = fmt::format(
        "      volumes:\n"
        "        - name: cluster\n"
        "          configMap: {{name: {0}-cluster}}\n",
        name);
    if (secret) {
        v += fmt::format(
            "        - name: secret\n"
            "          secret: {{secretName: {0}-secret, defaultMode: 0400}}\n",
            name);
    }
    return v;
}

// The Secret's CURVE entries: key-NAME (secret key) and pub-NAME (public key) per pair.
std::string curve_secret_yaml(const K8sOptions& o) {
    std::string out;
    for (const auto& [name, keys] : o.curve_keys)
        out += fmt::format("  key-{0}: \"{1}\"\n  pub-{0}: \"{2}\"\n", name, keys.secret_z85,
                           keys.public_z85);
    return out;
}

// Shell that puts a pod's keys where the coordinator or agent reads them (RUN_DIR/keys, 0700;
// the Secret's files are 0400): its own secret key (absent for a node whose public key the
// cluster file gives: that node brings its own) and every public key. `self` is a shell word, so
// an agent pod passes its node id as ${ids[$k]}.
std::string curve_copy_sh(const K8sOptions& o, const std::string& self) {
    if (o.curve_keys.empty()) return "";
    return fmt::format(
        "umask 077 && mkdir -p {run}/keys && if [ -e {sec}/key-{self} ]; then cp "
        "{sec}/key-{self} {run}/keys/{self}.key; fi && "
        "for f in {sec}/pub-*; do cp $f {run}/keys/${{f##*/pub-}}.pub; done && ",
        fmt::arg("run", kRunDir), fmt::arg("sec", kSecretDir), fmt::arg("self", self));
}

}  // namespace

Result<std::map<std::string, std::string>> render_k8s(const config::ClusterSpec& spec,
                                                      const std::string& cluster_text,
                                                      const K8sOptions& o) {
    const std::string name = "tandem-" + spec.name;
    const std::string coord_dns = fmt::format("{0}-coordinator-0.{0}", name);
    std::string m = fmt::format(
        "# Rendered by `tandem deploy k8s` from the cluster file of cluster {cluster_name}: edit "
        "that\n"
        "# file and render again rather than editing this one.\n"
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-secret}}\ntype: Opaque\n"
        "stringData:\n  cluster-secret: \"{secret}\"\n  api-token: \"{token}\"\n{curve}"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}-cluster}}\ndata:\n"
        "  cluster.yaml: |\n{cluster}"
        "---\n# Stable DNS names for every pod: {coord} is the coordinator.\n"
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  clusterIP: None\n"
        "  selector: {{app.kubernetes.io/part-of: {name}}}\n  ports:\n"
        "    - {{name: agents, port: {agent_port}}}\n    - {{name: http, port: {http_port}}}\n",
        fmt::arg("name", name), fmt::arg("cluster_name", spec.name), fmt::arg("secret", o.secret),
        fmt::arg("token", o.api_token), fmt::arg("curve", curve_secret_yaml(o)),
        fmt::arg("cluster", indent(cluster_text, 4)), fmt::arg("coord", coord_dns),
        fmt::arg("agent_port", spec.coordinator.agent_port),
        fmt::arg("http_port", spec.coordinator.http_port));
    // The coordinator: binds its pod IP, state on a volume claim.
    m += fmt::format(
        "---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: {name}-coordinator}}\n"
        "spec:\n  serviceName: {name}\n  replicas: 1\n"
        "  selector: {{matchLabels: {{app.kubernetes.io/name: {name}-coordinator}}}}\n"
        "  template:\n    metadata:\n      labels: {{app.kubernetes.io/name: {name}-coordinator, "
        "app.kubernetes.io/part-of: {name}}}\n    spec:\n"
        "      initContainers:\n        - name: api-token\n          image: {image}\n"
        "          command: [sh, -c, \"{keys}umask 077 && cp {sec}/api-token {run}/api-token\"]\n"
        "          volumeMounts:\n            - {{name: state, mountPath: {run}}}\n"
        "            - {{name: secret, mountPath: {sec}, readOnly: true}}\n"
        "      containers:\n        - name: coordinator\n          image: {image}\n"
        "          env:\n            - name: POD_IP\n"
        "              valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}\n"
        "          command: [sh, -c, \"exec tandem-coordinator --cluster {cfg}/cluster.yaml "
        "--run-dir {run} coordinator.host=$POD_IP coordinator.http_bind=0.0.0.0 "
        "secret_file={sec}/cluster-secret\"]\n"
        "          ports:\n            - {{containerPort: {agent_port}}}\n"
        "            - {{containerPort: {http_port}}}\n"
        "          readinessProbe:\n            httpGet: {{path: /healthz, port: {http_port}}}\n"
        "          volumeMounts:\n            - {{name: state, mountPath: {run}}}\n"
        "            - {{name: cluster, mountPath: {cfg}, readOnly: true}}\n"
        "            - {{name: secret, mountPath: {sec}, readOnly: true}}\n"
        "{volumes}"
        "  volumeClaimTemplates:\n    - metadata: {{name: state}}\n"
        "      spec:\n        accessModes: [ReadWriteOnce]\n"
        "        resources: {{requests: {{storage: 10Gi}}}}\n",
        fmt::arg("name", name), fmt::arg("image", o.image), fmt::arg("run", kRunDir),
        fmt::arg("sec", kSecretDir), fmt::arg("cfg", kConfigDir),
        fmt::arg("agent_port", spec.coordinator.agent_port),
        fmt::arg("http_port", spec.coordinator.http_port),
        fmt::arg("volumes", volumes_yaml(name, true)),
        fmt::arg("keys", curve_copy_sh(o, "coordinator")));
    // One StatefulSet per role: pod k runs the role's k-th node of the file.
    for (const ActorRole role : {ActorRole::kTrainer, ActorRole::kRollout}) {
        std::string ids, indices;
        const config::NodeSpec* first = nullptr;
        int count = 0;
        for (size_t i = 0; i < spec.nodes.size(); ++i) {
            if (spec.nodes[i].role != role) continue;
            if (!first) first = &spec.nodes[i];
            ids += (count ? " " : "") + spec.nodes[i].id;
            indices += (count ? " " : "") + std::to_string(i);
            ++count;
        }
        if (!first) continue;
        const std::string r(actor_role_name(role));
        m += fmt::format(
            "---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: {name}-{role}}}\n"
            "spec:\n  serviceName: {name}\n  replicas: {count}\n  podManagementPolicy: Parallel\n"
            "  selector: {{matchLabels: {{app.kubernetes.io/name: {name}-{role}}}}}\n"
            "  template:\n    metadata:\n      labels: {{app.kubernetes.io/name: {name}-{role}, "
            "app.kubernetes.io/part-of: {name}}}\n    spec:\n"
            "      containers:\n        - name: {role}-node\n          image: {image}\n"
            "          env:\n            - name: POD_IP\n"
            "              valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}\n"
            "          # Pod k (the ordinal ending its name) is the k-th {role} node of the file.\n"
            "          command:\n            - bash\n            - -c\n            - >-\n"
            "              ids=({ids}); at=({indices}); k=${{HOSTNAME##*-}};\n"
            "              {keys}exec tandem-{role}-node --cluster {cfg}/cluster.yaml --node "
            "${{ids[$k]}}\n"
            "              --run-dir {run} nodes.${{at[$k]}}.host=$POD_IP\n"
            "              coordinator.host={coord} secret_file={sec}/cluster-secret\n"
            "{resources}"
            "          volumeMounts:\n            - {{name: cluster, mountPath: {cfg}, readOnly: "
            "true}}\n"
            "            - {{name: secret, mountPath: {sec}, readOnly: true}}\n"
            "            - {{name: run, mountPath: {run}}}\n"
            "{volumes}"
            "        - name: run\n          emptyDir: {{}}\n",
            fmt::arg("name", name), fmt::arg("role", r), fmt::arg("count", count),
            fmt::arg("image", o.image), fmt::arg("ids", ids), fmt::arg("indices", indices),
            fmt::arg("cfg", kConfigDir), fmt::arg("run", kRunDir), fmt::arg("coord", coord_dns),
            fmt::arg("sec", kSecretDir), fmt::arg("resources", resources_yaml(first->resources)),
            fmt::arg("volumes", volumes_yaml(name, true)),
            fmt::arg("keys", curve_copy_sh(o, "${ids[$k]}")));
    }
    const std::string dockerfile =
        "# Rendered by `tandem deploy k8s`: the Tandem binaries on Debian 12, built from this\n"
        "# source tree (docker build -f Dockerfile <tandem source dir>).\n"
        "FROM debian:12\n"
        "COPY . /src\n"
        "RUN /src/deploy/install-deps.sh \\\n"
        " && cmake --preset release -S /src \\\n"
        " && cmake --build /src/build/release --target tandem tandem-coordinator "
        "tandem-trainer-node tandem-rollout-node \\\n"
        " && cp /src/build/release/bin/tandem* /usr/local/bin/ \\\n"
        " && mkdir -p /usr/local/share/tandem && cp -r /src/build/release/share/tandem/. "
        "/usr/local/share/tandem/ 2>/dev/null || true\n"
        "WORKDIR /var/lib/tandem\n";
    return std::map<std::string, std::string>{{name + ".yaml", m}, {"Dockerfile", dockerfile}};
}

int cmd_deploy(const std::vector<std::string>& argv) {
    constexpr const char* kUsage =
        "usage: tandem deploy k8s -f CLUSTER.yaml [-o DIR] [--image IMAGE]\n"
        "  Renders Kubernetes manifests (tandem-NAME.yaml) and a Dockerfile from the cluster file\n"
        "  into DIR (default: k8s). The manifest holds a new cluster secret and API token (and,\n"
        "  with CURVE on, new key pairs for the coordinator and every node): it is written 0600.\n";
    ArgSpec spec{.flags = {"--help"},
                 .options = {"--file", "--out", "--image"},
                 .aliases = {{"-f", "--file"}, {"-o", "--out"}}};
    auto args = parse_args(argv, spec);
    if (!args.ok()) return report(args.status().with_context("tandem deploy"));
    if (args->has("--help")) return std::cout << kUsage, kExitOk;
    if (args->positional.empty() || args->positional[0] != "k8s" || !args->get("--file"))
        return std::cerr << kUsage, kExitUsage;
    const std::string file = *args->get("--file");
    auto cluster = config::load_cluster_file(file);
    if (!cluster.ok()) return report(cluster.status());
    auto text = read_file(file);
    if (!text.ok()) return report(text.status());
    K8sOptions o;
    o.image = args->get("--image").value_or(o.image);
    auto secret = random_hex(32);
    auto token = random_hex(32);
    if (!secret.ok() || !token.ok()) return report(secret.ok() ? token.status() : secret.status());
    o.secret = *secret;
    o.api_token = *token;
    if (cluster->curve_enabled()) {
        // Fresh pairs for the coordinator and every node whose public key the file does not
        // give, as `tandem up` makes them (docs/security.md).
        if (!net::curve_available())
            return report(unavailable(
                "tandem deploy k8s: CURVE is on (security.curve, or an address that is not "
                "loopback) but this libzmq has no CURVE: install a libzmq built with libsodium"));
        std::vector<std::string> names{"coordinator"};
        for (const auto& n : cluster->nodes)
            if (n.public_key.empty()) names.push_back(n.id);
        for (const auto& n : names) {
            auto keys = net::generate_curve_keys();
            if (!keys.ok()) return report(keys.status());
            o.curve_keys[n] = *keys;
        }
    }
    auto files = render_k8s(*cluster, *text, o);
    if (!files.ok()) return report(files.status());
    const std::string out = args->get("--out").value_or("k8s");
    std::error_code ec;
    fs::create_directories(out, ec);
    for (const auto& [name, content] : *files) {
        const std::string path = out + "/" + name;
        const unsigned mode = name == "Dockerfile" ? 0644 : 0600;
        if (Status s = write_file_atomic(path, content, mode); !s.ok()) return report(s);
        std::cout << "wrote " << path << "\n";
    }
    std::cout << fmt::format("kubectl apply -f {}/tandem-{}.yaml\n", out, cluster->name);
    return kExitOk;
}

}  // namespace tandem::cli
