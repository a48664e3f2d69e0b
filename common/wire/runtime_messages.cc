#include "common/wire/runtime_messages.h"

#include <fmt/format.h>

#include "common/wire/json_fields.h"

namespace tandem::wire {

namespace {

struct Writer {
    Json& j;
    template <typename T>
    void operator()(const char* key, const T& value, Need) {
        j[key] = value;
    }
};

struct Reader {
    JsonFields& f;
    template <typename T>
    void operator()(const char* key, T& value, Need need) {
        if (need == Need::kRequired) {
            f.req(key, value);
        } else {
            f.opt(key, value);
        }
    }
};

template <typename M>
Json encode(const M& m) {
    Json j = Json::object();
    Writer w{j};
    const_cast<M&>(m).visit(w);  // visit() only reads through the Writer
    return j;
}

template <typename M>
Result<M> decode(const Json& j) {
    M m;
    JsonFields f(j, M::kType);
    Reader r{f};
    m.visit(r);
    TANDEM_RETURN_IF_ERROR(f.status());
    return m;
}

template <typename M>
Status check_runtime(const Json& body) {
    return decode<M>(body).status();
}

}  // namespace

std::string Fence::str() const { return fmt::format("{}.{}", job_attempt, trainer_epoch); }
Json Fence::to_json() const {
    return {{"job_attempt", job_attempt}, {"trainer_epoch", trainer_epoch}};
}
Result<Fence> Fence::from_json(const Json& j) {
    Fence f;
    JsonFields fields(j, "fence");
    fields.req("job_attempt", f.job_attempt);
    fields.req("trainer_epoch", f.trainer_epoch);
    TANDEM_RETURN_IF_ERROR(fields.status());
    return f;
}

Json RuntimeHello::to_json() const { return encode(*this); }
Result<RuntimeHello> RuntimeHello::from_json(const Json& j) { return decode<RuntimeHello>(j); }
Json VersionAssign::to_json() const { return encode(*this); }
Result<VersionAssign> VersionAssign::from_json(const Json& j) { return decode<VersionAssign>(j); }
Json VersionAssigned::to_json() const { return encode(*this); }
Result<VersionAssigned> VersionAssigned::from_json(const Json& j) {
    return decode<VersionAssigned>(j);
}
Json RelayAssigned::to_json() const { return encode(*this); }
Result<RelayAssigned> RelayAssigned::from_json(const Json& j) { return decode<RelayAssigned>(j); }
Json JobView::to_json() const { return encode(*this); }
Result<JobView> JobView::from_json(const Json& j) { return decode<JobView>(j); }
Json JobEvent::to_json() const { return encode(*this); }
Result<JobEvent> JobEvent::from_json(const Json& j) { return decode<JobEvent>(j); }

Status validate_runtime_body(std::string_view type, const Json& body) {
    struct Entry {
        std::string_view type;
        Status (*validate)(const Json&);
    };
    static constexpr Entry kTable[] = {
        {RuntimeHello::kType, &check_runtime<RuntimeHello>},
        {VersionAssign::kType, &check_runtime<VersionAssign>},
        {VersionAssigned::kType, &check_runtime<VersionAssigned>},
        {RelayAssigned::kType, &check_runtime<RelayAssigned>},
        {JobView::kType, &check_runtime<JobView>},
        {JobEvent::kType, &check_runtime<JobEvent>},
    };
    for (const auto& e : kTable) {
        if (e.type == type) return e.validate(body);
    }
    return not_found(fmt::format("unknown message type '{}'", type));
}

}  // namespace tandem::wire
