#pragma once

#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/wire/messages.h"
#include "coordinator/job_manager.h"

namespace tandem::testing {

// An AgentLink that records what the JobManager sends instead of sending it. Nodes listed in
// `unreachable` refuse sends (unavailable), as a disconnected agent does. Single-threaded, like
// the coordinator loop it stands in for.
class RecordingAgentLink final : public coord::AgentLink {
public:
    struct Sent {
        std::string node;
        wire::Envelope envelope;
    };

    Status send(const std::string& node_id, const wire::Envelope& e) override {
        if (unreachable.count(node_id)) {
            return unavailable(fmt::format("node {} is not connected", node_id));
        }
        sent.push_back({node_id, e});
        return Status();
    }

    // The messages of type M sent so far, with the node each went to.
    template <typename M>
    std::vector<std::pair<std::string, M>> of_type() const {
        std::vector<std::pair<std::string, M>> out;
        for (const auto& s : sent) {
            if (s.envelope.type != M::kType) continue;
            auto m = wire::body_as<M>(s.envelope);
            if (m.ok()) out.emplace_back(s.node, std::move(*m));
        }
        return out;
    }
    std::vector<std::pair<std::string, wire::StartActor>> starts() const {
        return of_type<wire::StartActor>();
    }
    std::vector<std::pair<std::string, wire::StopActor>> stops() const {
        return of_type<wire::StopActor>();
    }
    void clear() { sent.clear(); }

    std::vector<Sent> sent;
    std::set<std::string> unreachable;
};

}  // namespace tandem::testing
