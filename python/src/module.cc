// The `tandem._tandem` extension: the weight plane for Python. Tensors cross as buffers of bytes
// (tandem/weights.py turns torch tensors into uint8 views without copying); the only copy is the
// one into the publisher's registered slot (publish) or out of the reader's buffer (fetch_into),
// done with the GIL released. Tensors that are not in host memory (CUDA) are copied by torch
// itself, straight between the device and the registered slot or the reader's verified buffer,
// which publish_with/copy_out_with hand to a Python callable as a memoryview.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/runtime/agent_runtime.h"
#include "common/weights/descriptor.h"
#include "common/weights/dtype.h"
#include "common/weights/layout.h"
#include "common/weights/publisher.h"
#include "common/weights/reader.h"
#include "python/src/bindings.h"

namespace py = pybind11;

namespace tandem::weights::python {
namespace {

// Raised for every failed Status; LayoutMismatch for a layout that is not the expected one.
PyObject* g_error = nullptr;
PyObject* g_layout_mismatch = nullptr;

[[noreturn]] void raise(PyObject* type, const std::string& message) {
    PyErr_SetString(type, message.c_str());
    throw py::error_already_set();
}

void check(const Status& status) {
    if (!status.ok()) {
        raise(g_error, std::string(status_code_name(status.code())) + ": " + status.message());
    }
}

template <typename T>
T take(Result<T> result) {
    check(result.status());
    return std::move(*result);
}

std::string shape_text(const std::vector<int64_t>& shape) {
    std::ostringstream out;
    out << "[";
    for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
    out << "]";
    return out.str();
}

std::string tensor_text(const TensorInfo& t) {
    return t.name + " " + std::string(dtype_name(t.dtype)) + shape_text(t.shape);
}

// The first tensor (in layout order) where `got` differs from `expected`, in words.
std::string first_difference(const Layout& expected, const Layout& got) {
    const auto& a = expected.tensors();
    const auto& b = got.tensors();
    for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
        if (i >= a.size())
            return "tensor " + std::to_string(i) + ": unexpected " + tensor_text(b[i]);
        if (i >= b.size()) return "tensor " + std::to_string(i) + ": missing " + tensor_text(a[i]);
        if (a[i].name != b[i].name || a[i].dtype != b[i].dtype || a[i].shape != b[i].shape) {
            return "tensor " + std::to_string(i) + ": expected " + tensor_text(a[i]) + ", got " +
                   tensor_text(b[i]);
        }
    }
    return "same tensors, different offsets";
}

[[noreturn]] void raise_mismatch(const std::string& what, const Layout& expected, const Layout* got,
                                 uint64_t got_fingerprint) {
    std::string message = what + ": layout mismatch: expected " + expected.fingerprint_text() +
                          ", got " + fingerprint_text(got_fingerprint);
    if (got != nullptr) message += "; first difference at " + first_difference(expected, *got);
    raise(g_layout_mismatch, message);
}

// One tensor as Python hands it over: name, dtype name, shape and a contiguous byte buffer.
struct TensorBytes {
    std::string name;
    std::string dtype;
    std::vector<int64_t> shape;
    py::buffer data;
};

Layout layout_of(const std::vector<TensorBytes>& tensors) {
    std::vector<TensorSpec> specs;
    specs.reserve(tensors.size());
    for (const auto& t : tensors) {
        auto dtype = parse_dtype(t.dtype);
        if (!dtype.ok()) check(dtype.status().with_context("tensor " + t.name));
        specs.push_back({t.name, *dtype, t.shape});
    }
    return take(Layout::create(std::move(specs)));
}

// Byte spans of the Python buffers, checked against the layout's sizes. Taken with the GIL held;
// the buffers stay alive because the caller's list holds them.
struct Span {
    const TensorInfo* info;
    std::byte* data;
};
std::vector<Span> spans_of(const Layout& layout, const std::vector<TensorBytes>& tensors,
                           bool writable) {
    std::vector<Span> spans;
    for (size_t i = 0; i < tensors.size(); ++i) {
        const TensorInfo& info = layout.tensors()[i];
        py::buffer_info b = tensors[i].data.request(writable);
        const uint64_t bytes = static_cast<uint64_t>(b.size * b.itemsize);
        if (bytes != info.bytes) {
            raise(g_error, "tensor " + info.name + ": buffer holds " + std::to_string(bytes) +
                               " bytes, the layout needs " + std::to_string(info.bytes));
        }
        spans.push_back({&info, static_cast<std::byte*>(b.ptr)});
    }
    return spans;
}

// An in-process version table (the coordinator's stand-in) that also remembers each publisher's
// layout, so a reader's mismatch can name the first differing tensor. Thread-safe.
class Directory {
public:
    VersionDirectory& versions() { return versions_; }
    const VersionDirectory& versions() const { return versions_; }
    void remember(const Layout& layout) {
        std::lock_guard lock(mu_);
        layouts_.emplace(layout.fingerprint(), layout);
    }
    std::optional<Layout> layout(uint64_t fingerprint) const {
        std::lock_guard lock(mu_);
        auto it = layouts_.find(fingerprint);
        if (it == layouts_.end()) return std::nullopt;
        return it->second;
    }
    VersionDescriptor descriptor(uint64_t job, std::optional<Version> version,
                                 double timeout_s) const {
        const auto deadline = std::chrono::steady_clock::now() +
                              std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
        if (!version) {
            auto newest = versions_.newest(JobId(job));
            if (!newest) raise(g_error, "not_found: no version of job " + std::to_string(job));
            return *newest;
        }
        Result<VersionDescriptor> d = [&] {
            py::gil_scoped_release release;
            return versions_.wait_for(JobId(job), *version, deadline);
        }();
        return take(std::move(d));
    }

private:
    VersionDirectory versions_;
    mutable std::mutex mu_;
    std::map<uint64_t, Layout> layouts_;  // guarded by mu_
};

// Publishes whole versions from Python buffers. Threading: one Python thread at a time.
class PyPublisher {
public:
    PyPublisher(std::shared_ptr<Directory> directory, const Layout& layout, uint64_t job,
                const std::string& publisher_id, uint32_t slots, uint64_t chunk_bytes,
                const std::string& transports)
        : directory_(std::move(directory)) {
        PublisherOptions o;
        o.job = JobId(job);
        o.publisher_id = publisher_id;
        o.slots = slots;
        o.chunk_bytes = chunk_bytes;
        o.ucx.transports = transports;
        directory_->remember(layout);
        publisher_ = take(Publisher::create(std::move(o), layout, directory_->versions()));
    }

    // A publisher that announces through the actor runtime (the coordinator's version table).
    PyPublisher(std::shared_ptr<runtime::AgentRuntime> rt, const Layout& layout, uint32_t slots,
                uint64_t chunk_bytes, int64_t lease_ttl_ms, const std::string& transports)
        : runtime_(std::move(rt)),
          announcer_(std::make_unique<runtime::RuntimeAnnouncer>(*runtime_)) {
        PublisherOptions o;
        o.job = runtime_->actor().job;
        o.publisher_id = runtime_->actor().str();
        o.slots = slots;
        o.chunk_bytes = chunk_bytes;
        o.lease_ttl_ms = std::chrono::milliseconds(lease_ttl_ms);
        o.ucx.transports = transports;
        publisher_ = take(Publisher::create(std::move(o), layout, *announcer_));
    }

    // Publishes the version the runtime assigned (VersionInfo JSON from assign_version).
    void publish_assigned(const std::string& info_json, const std::vector<TensorBytes>& tensors) {
        publish(expect_assigned(info_json), tensors);
    }

    // Publishes `version` by calling fill(slot, shard_begin) with the GIL held: `slot` is a
    // writable memoryview of the registered slot's bytes (the layout's range starting at byte
    // shard_begin), valid only during the call. `got` is the layout of what fill writes.
    void publish_with(Version version, const Layout& got, const py::function& fill) {
        const Layout& layout = publisher_->layout();
        if (!(got == layout)) raise_mismatch("publish", layout, &got, got.fingerprint());
        std::optional<Result<SlotWriter>> writer;  // SlotWriter is not assignable
        {
            py::gil_scoped_release release;
            writer.emplace(publisher_->begin(version));
        }
        check(writer->status());
        std::span<std::byte> slot = (*writer)->data();
        fill(py::memoryview::from_memory(slot.data(), static_cast<py::ssize_t>(slot.size())),
             publisher_->shard_range().begin);
        Status committed;
        {
            py::gil_scoped_release release;
            committed = (*writer)->commit();
        }
        check(committed);
    }

    void publish_assigned_with(const std::string& info_json, const Layout& got,
                               const py::function& fill) {
        publish_with(expect_assigned(info_json), got, fill);
    }

    void publish(Version version, const std::vector<TensorBytes>& tensors) {
        const Layout& layout = publisher_->layout();
        const Layout got = layout_of(tensors);
        if (!(got == layout)) raise_mismatch("publish", layout, &got, got.fingerprint());
        const std::vector<Span> spans = spans_of(layout, tensors, /*writable=*/false);
        py::gil_scoped_release release;
        Result<SlotWriter> writer = publisher_->begin(version);
        if (!writer.ok()) {
            py::gil_scoped_acquire acquire;
            check(writer.status());
        }
        const ByteRange shard = publisher_->shard_range();
        std::span<std::byte> slot = writer->data();
        for (const Span& s : spans) {
            const ByteRange r = s.info->range();
            const uint64_t begin = std::max(r.begin, shard.begin);
            const uint64_t end = std::min(r.end, shard.end);
            if (begin >= end) continue;
            std::memcpy(slot.data() + (begin - shard.begin), s.data + (begin - r.begin),
                        end - begin);
        }
        Status committed = writer->commit();
        py::gil_scoped_acquire acquire;
        check(committed);
    }

    const Layout& layout() const { return publisher_->layout(); }
    std::optional<Version> newest() const { return publisher_->newest(); }
    double last_copy_seconds() const { return publisher_->stats().last_copy_seconds; }

private:
    // The announcer is told to expect the runtime's VersionInfo; returns its number.
    Version expect_assigned(const std::string& info_json) {
        if (!announcer_) raise(g_error, "invalid_argument: this publisher has no runtime");
        auto info = runtime::VersionInfo::from_json(
            nlohmann::json::parse(info_json, nullptr, /*allow_exceptions=*/false));
        check(info.status());
        announcer_->expect(*info);
        return info->version;
    }

    std::shared_ptr<Directory> directory_;            // outlives the publisher (its announcer)
    std::shared_ptr<runtime::AgentRuntime> runtime_;  // or this, with announcer_
    std::unique_ptr<runtime::RuntimeAnnouncer> announcer_;
    std::unique_ptr<Publisher> publisher_;
};

// Fetches versions and copies them into Python buffers. Threading: one Python thread at a time.
class PyReader {
public:
    PyReader(std::shared_ptr<Directory> directory, const Layout& layout, uint64_t job,
             const std::string& reader_id, const std::string& transports)
        : directory_(std::move(directory)), job_(job) {
        ReaderOptions o;
        o.job = JobId(job);
        o.reader_id = reader_id;
        o.ucx.transports = transports;
        reader_ = take(Reader::create(std::move(o), layout));
    }

    // A reader that finds versions through the actor runtime.
    PyReader(std::shared_ptr<runtime::AgentRuntime> rt, const Layout& layout,
             const std::string& transports)
        : runtime_(std::move(rt)), job_(runtime_->actor().job.number()) {
        ReaderOptions o;
        o.job = runtime_->actor().job;
        o.reader_id = runtime_->actor().str();
        o.ucx.transports = transports;
        o.verify_on_helper_thread = layout.total_bytes() > (uint64_t{8} << 20);
        reader_ = take(Reader::create(std::move(o), layout));
    }

    // Waits (up to timeout_s) for an available version newer than `newer_than` and returns its
    // VersionInfo JSON with "layout_fingerprint" added; fetch_waited() then fetches it.
    std::string wait_version(int64_t newer_than, double timeout_s) {
        if (!runtime_) raise(g_error, "invalid_argument: this reader has no runtime");
        Result<runtime::PublishedVersion> v = unavailable("not asked");
        {
            py::gil_scoped_release release;
            const auto deadline =
                runtime_->clock().now() + std::chrono::duration_cast<Clock::Duration>(
                                              std::chrono::duration<double>(timeout_s));
            v = runtime_->wait_version(
                [&](const runtime::VersionInfo& i) {
                    return static_cast<int64_t>(i.version) > newer_than;
                },
                deadline);
        }
        check(v.status());
        waited_ = *v;
        nlohmann::json j = v->info.to_json();
        j["layout_fingerprint"] = v->descriptor.layout_fingerprint;
        return j.dump();
    }

    // Fetches the version wait_version() returned and makes it current.
    Version fetch_waited() {
        if (!waited_) raise(g_error, "invalid_argument: wait_version first");
        const VersionDescriptor d = waited_->descriptor;
        const Layout& expected = reader_->layout();
        if (d.layout_fingerprint != expected.fingerprint())
            raise_mismatch("fetch of version " + std::to_string(d.version), expected, nullptr,
                           d.layout_fingerprint);
        Status s;
        {
            py::gil_scoped_release release;
            s = reader_->fetch(d);
            if (s.ok()) reader_->swap();
        }
        check(s);
        return d.version;
    }

    // Fetches `version` (the newest when None, waiting up to timeout_s for a given one) and makes
    // it current. Returns the version fetched.
    Version fetch(std::optional<Version> version, double timeout_s) {
        if (!directory_) raise(g_error, "invalid_argument: a runtime reader uses wait_version");
        const VersionDescriptor d = directory_->descriptor(job_, version, timeout_s);
        const Layout& expected = reader_->layout();
        if (d.layout_fingerprint != expected.fingerprint()) {
            auto got = directory_->layout(d.layout_fingerprint);
            raise_mismatch("fetch of version " + std::to_string(d.version), expected,
                           got ? &*got : nullptr, d.layout_fingerprint);
        }
        Status s;
        {
            py::gil_scoped_release release;
            s = reader_->fetch(d);
            if (s.ok()) reader_->swap();
        }
        check(s);
        return d.version;
    }

    // Copies the current version into `tensors` (they must match the layout).
    Version copy_into(const std::vector<TensorBytes>& tensors) {
        auto view = reader_->current();
        if (!view) raise(g_error, "not_found: nothing fetched yet");
        const Layout& layout = reader_->layout();
        const Layout got = layout_of(tensors);
        if (!(got == layout)) raise_mismatch("copy into tensors", layout, &got, got.fingerprint());
        const std::vector<Span> spans = spans_of(layout, tensors, /*writable=*/true);
        py::gil_scoped_release release;
        for (const Span& s : spans) {
            std::memcpy(s.data, view->bytes().data() + s.info->offset, s.info->bytes);
        }
        return view->version();
    }

    // Calls fill(buffer) with the GIL held: a read-only memoryview of the current version's
    // verified bytes (the whole layout), valid only during the call. `got` is the layout of the
    // tensors fill copies into. Returns the version.
    Version copy_out_with(const Layout& got, const py::function& fill) {
        auto view = reader_->current();
        if (!view) raise(g_error, "not_found: nothing fetched yet");
        const Layout& layout = reader_->layout();
        if (!(got == layout)) raise_mismatch("copy into tensors", layout, &got, got.fingerprint());
        const auto bytes = view->bytes();
        fill(py::memoryview::from_memory(bytes.data(), static_cast<py::ssize_t>(bytes.size())));
        return view->version();
    }

    const Layout& layout() const { return reader_->layout(); }
    double last_fetch_seconds() const { return reader_->last_fetch().seconds; }

private:
    std::shared_ptr<Directory> directory_;
    std::shared_ptr<runtime::AgentRuntime> runtime_;  // or this
    uint64_t job_;
    std::optional<runtime::PublishedVersion> waited_;
    std::unique_ptr<Reader> reader_;
};

}  // namespace
}  // namespace tandem::weights::python

PYBIND11_MODULE(_tandem, m) {
    using namespace tandem::weights;
    using namespace tandem::weights::python;
    m.doc() = "Tandem's weight plane for Python (see docs/python.md)";

    static py::exception<std::runtime_error> error(m, "TandemError", PyExc_RuntimeError);
    static py::exception<std::runtime_error> mismatch(m, "LayoutMismatchError", error.ptr());
    g_error = error.ptr();
    g_layout_mismatch = mismatch.ptr();

    py::class_<TensorBytes>(m, "TensorBytes")
        .def(py::init<std::string, std::string, std::vector<int64_t>, py::buffer>(),
             py::arg("name"), py::arg("dtype"), py::arg("shape"), py::arg("data"));

    py::class_<TensorInfo>(m, "TensorInfo")
        .def_readonly("name", &TensorInfo::name)
        .def_property_readonly("dtype",
                               [](const TensorInfo& t) { return std::string(dtype_name(t.dtype)); })
        .def_readonly("shape", &TensorInfo::shape)
        .def_readonly("offset", &TensorInfo::offset)
        .def_readonly("bytes", &TensorInfo::bytes)
        .def("__repr__", [](const TensorInfo& t) { return "<TensorInfo " + tensor_text(t) + ">"; });

    py::class_<Layout>(m, "Layout")
        .def_static(
            "from_specs",
            [](const std::vector<std::tuple<std::string, std::string, std::vector<int64_t>>>&
                   specs) {
                std::vector<TensorSpec> out;
                for (const auto& [name, dtype, shape] : specs) {
                    auto d = parse_dtype(dtype);
                    if (!d.ok()) check(d.status().with_context("tensor " + name));
                    out.push_back({name, *d, shape});
                }
                return take(Layout::create(std::move(out)));
            },
            py::arg("specs"), "A layout from (name, dtype name, shape) tuples, in order.")
        .def_property_readonly("fingerprint", &Layout::fingerprint)
        .def_property_readonly("fingerprint_text",
                               [](const Layout& l) { return l.fingerprint_text(); })
        .def_property_readonly("total_bytes", &Layout::total_bytes)
        .def_property_readonly("tensors", &Layout::tensors)
        .def("first_difference", &first_difference, py::arg("other"),
             "The first tensor where `other` differs from this layout, in words.")
        .def("__eq__", [](const Layout& a, const Layout& b) { return a == b; })
        .def("__len__", [](const Layout& l) { return l.tensors().size(); })
        .def("__repr__", [](const Layout& l) {
            return "<Layout " + l.fingerprint_text() + " " + std::to_string(l.tensors().size()) +
                   " tensors, " + std::to_string(l.total_bytes()) + " bytes>";
        });

    py::class_<Directory, std::shared_ptr<Directory>>(m, "Directory",
                                                      "An in-process version table.")
        .def(py::init<>())
        .def(
            "newest",
            [](const Directory& d, uint64_t job) -> std::optional<tandem::Version> {
                auto v = d.versions().newest(tandem::JobId(job));
                if (!v) return std::nullopt;
                return v->version;
            },
            py::arg("job") = 1);

    py::class_<PyPublisher>(m, "Publisher")
        .def(py::init<std::shared_ptr<Directory>, const Layout&, uint64_t, const std::string&,
                      uint32_t, uint64_t, const std::string&>(),
             py::arg("directory"), py::arg("layout"), py::arg("job") = 1,
             py::arg("publisher_id") = "job-000001/trainer-0", py::arg("slots") = 3,
             py::arg("chunk_bytes") = kDefaultChunkBytes, py::arg("transports") = "")
        .def(py::init<std::shared_ptr<tandem::runtime::AgentRuntime>, const Layout&, uint32_t,
                      uint64_t, int64_t, const std::string&>(),
             py::arg("runtime"), py::arg("layout"), py::arg("slots"), py::arg("chunk_bytes"),
             py::arg("lease_ttl_ms"), py::arg("transports"))
        .def("publish", &PyPublisher::publish, py::arg("version"), py::arg("tensors"))
        .def("publish_assigned", &PyPublisher::publish_assigned, py::arg("info_json"),
             py::arg("tensors"))
        .def("publish_with", &PyPublisher::publish_with, py::arg("version"), py::arg("layout"),
             py::arg("fill"))
        .def("publish_assigned_with", &PyPublisher::publish_assigned_with, py::arg("info_json"),
             py::arg("layout"), py::arg("fill"))
        .def_property_readonly("layout", &PyPublisher::layout)
        .def_property_readonly("newest", &PyPublisher::newest)
        .def_property_readonly("last_copy_seconds", &PyPublisher::last_copy_seconds);

    py::class_<PyReader>(m, "Reader")
        .def(py::init<std::shared_ptr<Directory>, const Layout&, uint64_t, const std::string&,
                      const std::string&>(),
             py::arg("directory"), py::arg("layout"), py::arg("job") = 1,
             py::arg("reader_id") = "job-000001/rollout-0", py::arg("transports") = "")
        .def(py::init<std::shared_ptr<tandem::runtime::AgentRuntime>, const Layout&,
                      const std::string&>(),
             py::arg("runtime"), py::arg("layout"), py::arg("transports"))
        .def("wait_version", &PyReader::wait_version, py::arg("newer_than"), py::arg("timeout_s"))
        .def("fetch_waited", &PyReader::fetch_waited)
        .def("fetch", &PyReader::fetch, py::arg("version") = py::none(),
             py::arg("timeout_s") = 30.0)
        .def("copy_into", &PyReader::copy_into, py::arg("tensors"))
        .def("copy_out_with", &PyReader::copy_out_with, py::arg("layout"), py::arg("fill"))
        .def_property_readonly("layout", &PyReader::layout)
        .def_property_readonly("last_fetch_seconds", &PyReader::last_fetch_seconds);

    tandem::python::bind_runtime(m, g_error);
    tandem::python::bind_trajectories(m, g_error);
}
