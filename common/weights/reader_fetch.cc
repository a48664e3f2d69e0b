#include "common/weights/reader_core.h"
#include "common/weights/reader_mismatch.h"
#include "common/weights/reader_partial.h"
#include "common/weights/reader_pull.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <xxhash.h>

namespace tandem::weights {

// Pull, partial and map reads: the fetch loop that drives each shard's ShardMachine
// (reader_shard.h) with the source's answers (hello, lease, header and manifest, chunk pieces in
// a window, checksums, header re-check, release).

void Reader::Core::begin(Operation& op) {
    op.started = clock_.now();
    const Version v = op.version.version;
    // A version already here needs no pull, unless the pull also fills device memory.
    if (op.kind == Kind::kPull && !op.on_verified && op.device == nullptr) {
        std::lock_guard<std::mutex> lock(mu_);
        if ((current_ && current_->version() == v) || (fetched_slot_ && fetched_version_ == v)) {
            op.finished = true;
            op.promise.set_value(Status());
            return;
        }
    }
    if (op.kind == Kind::kPartial) {
        auto plan = layout_.plan_partial(op.selection);
        if (!plan.ok()) {
            fail(op, plan.status());
            return;
        }
        op.plan = std::move(*plan);
        auto buffer = HostBuffer::allocate(op.plan.layout.total_bytes());
        if (!buffer.ok()) {
            fail(op, buffer.status());
            return;
        }
        op.partial = std::move(*buffer);
        if (op.partial.size() > 0) std::memset(op.partial.data(), 0, op.partial.size());
    }
    for (uint32_t s = 0; s < op.version.shard_count; ++s) {
        auto sf = std::make_unique<ShardFetch>();
        sf->shard = *op.version.shard(s);
        if (op.relay) {
            sf->source_name = fmt::format("relay {}", op.relay->reader);
            sf->source_address = op.relay->worker_address;
            sf->source_host = op.relay->host;
            sf->source_pid = op.relay->pid;
            sf->via_relay = true;
        } else {
            sf->source_name = fmt::format("publisher {}", sf->shard.publisher);
            sf->source_address = sf->shard.worker_address;
            sf->source_host = sf->shard.host;
            sf->source_pid = sf->shard.pid;
        }
        if (op.kind == Kind::kPartial) {
            sf->copies = partial_copies_in_shard(op.plan, sf->shard.range);
            if (sf->copies.empty()) continue;
        }
        sf->machine = ShardMachine(op.kind == Kind::kPull  ? ShardRoute::kPull
                                   : op.kind == Kind::kMap ? ShardRoute::kMap
                                                           : ShardRoute::kPartial);
        op.shards.push_back(std::move(sf));
    }
    if (op.shards.empty()) complete(op);
}

Status Reader::Core::control_timeout(ShardFetch& sf, const PendingCall& call) {
    if (clock_.now() - call.sent_at < options_.request_timeout_ms) return Status();
    return deadline_exceeded(fmt::format("{} did not answer {} within {} ms", sf.source_name,
                                         wire::request_type_name(call.request.type),
                                         options_.request_timeout_ms.count()));
}

bool Reader::Core::poll() {
    const auto now = clock_.now();
    for (const auto& digest : hasher_->drain()) {
        auto it = digest_waits_.find(digest.tag);
        if (it == digest_waits_.end()) continue;
        const DigestWait wait = it->second;
        digest_waits_.erase(it);
        --wait.sf->awaiting_digests;
        if (!wait.op->finished) chunk_hashed(*wait.op, *wait.sf, wait.chunk, digest.value);
    }
    bool busy = client_->poll() || hasher_->pending() > 0;

    // Pull operations claim the spare buffer first (possibly waiting for relay leases to end).
    for (auto& op : ops_) {
        if (op->finished || op->kind != Kind::kPull || op->shards.empty() ||
            op->shards.front()->machine.state() != ShardState::kClaim || now < op->claim_retry) {
            continue;
        }
        const PullClaim claim = claim_pull_buffer(table_, any_slot_draining(), dead_slot_, now);
        if (claim.outcome == PullClaim::Outcome::kRefused) {
            fail(*op, claim.why);
            continue;
        }
        if (claim.outcome == PullClaim::Outcome::kWait) {
            op->claim_retry = claim.retry_at;
            continue;
        }
        const uint32_t slot = claim.slot;
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (fetched_slot_ == slot) fetched_slot_.reset();
        }
        Buffer& b = buffers_[slot];
        op->slot = slot;
        b.version = op->version.version;
        b.filling = true;
        b.complete = false;
        b.failed = Status();
        b.shards.assign(op->version.shard_count, {});
        uint64_t manifest_offset = kSlotHeaderBytes;
        for (auto& sf : op->shards) {
            auto& st = b.shards[sf->shard.index];
            st.range = sf->shard.range;
            st.manifest_offset = manifest_offset;
            manifest_offset += sizeof(uint64_t) *
                               Manifest::count_chunks(st.range.size(), options_.min_chunk_bytes);
            sf->data_dest = b.memory->data() + meta_bytes_ + st.range.begin;
            sf->manifest_dest = reinterpret_cast<uint64_t*>(b.memory->data() + st.manifest_offset);
            Status claimed = sf->machine.claimed(now);
            if (!claimed.ok()) log_.error("{}", claimed.to_string());  // unreachable: all in kClaim
        }
        begin_write(header(slot));
        if (options_.relay) {
            // Readable by downstream readers chunk by chunk from now on.
            table_.mark_published(slot, op->version.version);
            end_write(header(slot),
                      {op->version.version, layout_.total_bytes(), 0, layout_.fingerprint(), 0});
            relay_->pull_started(op->version.version);
            server_->notify();
        }
    }

    for (size_t i = 0; i < ops_.size(); ++i) {
        Operation& op = *ops_[i];
        if (op.finished) continue;
        bool all_done = true;
        for (auto& sf : op.shards) {
            if (op.finished) break;
            if (!sf->machine.finished()) step(op, *sf);
            if (op.finished) break;
            const ShardState state = sf->machine.state();
            all_done &= state == ShardState::kDone;
            // Gets on shared memory often complete inside the call: keep spinning while chunks
            // are being moved even if nothing is in flight at this instant.
            busy |= !sf->inflight.empty() || state == ShardState::kChunks ||
                    state == ShardState::kMeta || state == ShardState::kHeaderAfter;
        }
        if (!op.finished && all_done) complete(op);
    }
    // A failed operation stays until UCX is done with every request that writes into its memory
    // (or the memory is retired), then its buffer may be claimed again.
    for (size_t i = 0; i < ops_.size(); ++i) {
        if (!ops_[i]->draining()) continue;
        busy = true;
        if (drain(*ops_[i])) continue;
        if (ops_[i]->draining()) continue;
        retire(ops_[i], true);  // gave up: out of ops_ (never freed), its buffer replaced
        ops_.erase(ops_.begin() + static_cast<std::ptrdiff_t>(i));
        --i;
    }
    // A finished operation stays until the hasher is done with its memory (partial reads hash
    // their own scratch buffers).
    if (hasher_->pending() == 0) {
        std::erase_if(ops_, [](const std::shared_ptr<Operation>& op) {
            return op->finished && !op->draining();
        });
        if (ops_.empty()) digest_waits_.clear();
    }
    renew_maps();
    return busy;
}

void Reader::Core::step(Operation& op, ShardFetch& sf) {
    const auto now = clock_.now();
    const Version v = op.version.version;
    if (sf.conn && sf.conn->endpoint->closed()) {
        // Another operation's drain force-closed this connection.
        fail(op, unavailable(fmt::format("the connection to {} was closed", sf.source_name))
                     .with_context(fmt::format("reading version {} shard {}", v, sf.shard.index)));
        return;
    }
    if (sf.conn && now >= sf.next_liveness) {
        sf.next_liveness = now + kLivenessInterval;
        Status alive = client_->check_alive(*sf.conn);
        if (!alive.ok()) {
            fail(op,
                 alive.with_context(fmt::format("reading version {} shard {}", v, sf.shard.index)));
            return;
        }
    }
    if (sf.lease_held && op.kind != Kind::kMap) renew_leases(op, sf);

    auto wait_call = [&](const std::shared_ptr<PendingCall>& call) -> std::optional<Status> {
        if (!call->done()) {
            Status t = control_timeout(sf, *call);
            if (!t.ok()) return t;
            return std::nullopt;
        }
        return call->status;
    };
    // A transition the machine refuses is a bug here, not the source's: fail the read with it.
    auto advance = [&](Status moved) {
        if (!moved.ok()) {
            fail(op,
                 moved.with_context(fmt::format("reading version {} shard {}", v, sf.shard.index)));
        }
        return moved.ok();
    };

    switch (sf.machine.state()) {
        case ShardState::kClaim:
        case ShardState::kDone:
        case ShardState::kFailed:
            return;
        case ShardState::kConnect: {
            auto conn =
                client_->connect(sf.source_address, sf.source_name, sf.source_host, sf.source_pid);
            if (!conn.ok()) {
                fail(op, conn.status().with_context(
                             fmt::format("reading version {} shard {}", v, sf.shard.index)));
                return;
            }
            sf.conn = *conn;
            // A source keeps a reader's connection for SourceServerOptions::idle_timeout_ms
            // (2 min by default); within a quarter of that, skip the hello round trip.
            if (sf.conn->greeted_at && now - *sf.conn->greeted_at < kHelloValidity) {
                if (!advance(sf.machine.connected(now))) return;
                sf.call.reset();
                step(op, sf);
                return;
            }
            wire::Request rq;
            rq.type = wire::RequestType::kHello;
            rq.offset = sf.conn->generation;
            sf.call = client_->call(*sf.conn, rq, loop_->address());
            advance(sf.machine.connected(now));
            return;
        }
        case ShardState::kHello: {
            if (sf.call) {
                auto st = wait_call(sf.call);
                if (!st) return;
                if (!st->ok()) {
                    fail(op, st->with_context(fmt::format("connecting to {}", sf.source_name)));
                    return;
                }
                sf.conn->greeted_at = now;
            }
            wire::Request rq;
            rq.type = wire::RequestType::kAcquire;
            rq.job = op.version.job.number();
            rq.version = v;
            rq.shard = sf.shard.index;
            sf.call = client_->call(*sf.conn, rq);
            advance(sf.machine.hello_answered(now));
            return;
        }
        case ShardState::kAcquire: {
            auto st = wait_call(sf.call);
            if (!st) return;
            if (!st->ok()) {
                fail(op, st->with_context(fmt::format("leasing version {} shard {} from {}", v,
                                                      sf.shard.index, sf.source_name)));
                return;
            }
            Status accepted = accept_lease(op, sf);
            if (!accepted.ok()) {
                fail(op, accepted);
                return;
            }
            if (op.kind == Kind::kMap) {
                advance(sf.machine.leased(now));  // the route ends here: kDone
                return;
            }
            const size_t manifest_bytes = sf.lease.chunk_count * sizeof(uint64_t);
            if (op.kind != Kind::kPull) {
                sf.manifest_storage.assign(sf.lease.chunk_count, 0);
                sf.manifest_dest = sf.manifest_storage.data();
            }
            auto* manifest_dest = reinterpret_cast<std::byte*>(sf.manifest_dest);
            if (sf.use_get) {
                ucp_request_param_t p{};
                sf.meta_get[0] = ucx::Request(
                    ucp_get_nbx(sf.conn->endpoint->handle(), sf.header_before.data(),
                                kSlotHeaderBytes, sf.lease.region_address, sf.rkey->handle(), &p),
                    loop_->worker().handle());
                sf.meta_get[1] = ucx::Request(
                    ucp_get_nbx(sf.conn->endpoint->handle(), manifest_dest, manifest_bytes,
                                sf.lease.region_address + sf.lease.manifest_offset,
                                sf.rkey->handle(), &p),
                    loop_->worker().handle());
            } else {
                wire::Request rq;
                rq.type = wire::RequestType::kRead;
                rq.lease_id = sf.lease.lease_id;
                rq.offset = 0;
                rq.length = kSlotHeaderBytes;
                sf.meta_call[0] =
                    client_->call(*sf.conn, rq, {}, sf.header_before.data(), kSlotHeaderBytes);
                rq.offset = sf.lease.manifest_offset;
                rq.length = manifest_bytes;
                sf.meta_call[1] = client_->call(*sf.conn, rq, {}, manifest_dest, manifest_bytes);
            }
            advance(sf.machine.leased(now));
            return;
        }
        case ShardState::kMeta: {
            for (int i = 0; i < 2; ++i) {
                Status st;
                if (sf.use_get) {
                    const ucs_status_t u = sf.meta_get[i].poll();
                    if (u == UCS_INPROGRESS) {
                        if (sf.machine.phase_overdue(now, options_.request_timeout_ms)) {
                            fail(op, deadline_exceeded(fmt::format(
                                         "{} did not deliver the header and manifest of version "
                                         "{} within {} ms",
                                         sf.source_name, v, options_.request_timeout_ms.count())));
                        }
                        return;
                    }
                    st = ucx::ucx_status(u, "reading header and manifest");
                } else {
                    auto r = wait_call(sf.meta_call[i]);
                    if (!r) return;
                    st = *r;
                }
                if (!st.ok()) {
                    fail(op, st.with_context(fmt::format("reading version {} shard {} from {}", v,
                                                         sf.shard.index, sf.source_name)));
                    return;
                }
            }
            Status meta = check_meta(op, sf);
            if (!meta.ok()) {
                fail(op, meta);
                return;
            }
            if (!advance(sf.machine.meta_checked(now))) return;
            step_chunks(op, sf);
            return;
        }
        case ShardState::kChunks:
            step_chunks(op, sf);
            return;
        case ShardState::kHeaderAfter: {
            Status st;
            if (sf.use_get) {
                const ucs_status_t u = sf.meta_get[0].poll();
                if (u == UCS_INPROGRESS) {
                    if (sf.machine.phase_overdue(now, options_.request_timeout_ms)) {
                        fail(op, deadline_exceeded(fmt::format(
                                     "{} did not deliver the header of version {} within {} ms",
                                     sf.source_name, v, options_.request_timeout_ms.count())));
                    }
                    return;
                }
                st = ucx::ucx_status(u, "re-reading the header");
            } else {
                auto r = wait_call(sf.meta_call[0]);
                if (!r) return;
                st = *r;
            }
            if (!st.ok()) {
                fail(op, st.with_context(fmt::format("re-reading the header of version {} from {}",
                                                     v, sf.source_name)));
                return;
            }
            const HeaderSnapshot before = decode_header(sf.header_before);
            const HeaderSnapshot after = decode_header(sf.header_after);
            if (!after.same_write_as(before)) {
                fail(op, unavailable(fmt::format(
                             "version {} was overwritten in slot {} of {} during the read (header "
                             "seq {} -> {}, version {}); the lease expired: read a newer version",
                             v, sf.lease.slot, sf.source_name, before.seq, after.seq,
                             after.fields.version)));
                return;
            }
            release_lease(sf);
            advance(sf.machine.header_rechecked(now));
            return;
        }
    }
}

Status Reader::Core::accept_lease(Operation& op, ShardFetch& sf) {
    const wire::Reply& r = sf.call->reply;
    const Version v = op.version.version;
    sf.lease = r;
    sf.lease_held = true;
    sf.rkey_bytes = sf.call->reply_payload;
    sf.next_renew = clock_.now() + std::chrono::milliseconds(r.ttl_ms / 3);
    if (r.layout_fingerprint != layout_.fingerprint()) {
        return invalid_argument(fmt::format(
            "layout mismatch: {} serves version {} with layout {}, this reader expects {}{}",
            sf.source_name, v, fingerprint_text(r.layout_fingerprint), layout_.fingerprint_text(),
            mismatch_detail(layout_, options_.layouts_dir, r.layout_fingerprint)));
    }
    if (r.version != v || r.data_bytes != sf.shard.range.size() ||
        r.chunk_bytes < options_.min_chunk_bytes ||
        r.chunk_count != Manifest::count_chunks(r.data_bytes, r.chunk_bytes) ||
        r.manifest_offset + r.chunk_count * sizeof(uint64_t) > r.region_bytes ||
        r.data_offset + r.data_bytes > r.region_bytes) {
        return invalid_argument(fmt::format(
            "{} offered an inconsistent lease for version {} shard {} (version {}, {} bytes in "
            "{} chunks of {}, region of {} bytes)",
            sf.source_name, v, sf.shard.index, r.version, r.data_bytes, r.chunk_count,
            r.chunk_bytes, r.region_bytes));
    }
    if (r.manifest_digest != sf.shard.manifest_digest) {
        return data_loss(fmt::format(
            "{} holds version {} shard {} with manifest {:016x} but the version table says "
            "{:016x}",
            sf.source_name, v, sf.shard.index, r.manifest_digest, sf.shard.manifest_digest));
    }
    // Native one-sided gets: the NIC does them (an RDMA lane carries RMA), or the slot is a
    // shared-memory segment UCX attached here. Otherwise UCX would emulate them over active
    // messages, and our own request/response path is faster.
    TANDEM_ASSIGN_OR_RETURN(sf.rkey,
                            sf.conn->rkey(r.region_address, r.region_bytes, sf.rkey_bytes));
    const bool native =
        sf.conn->endpoint->rdma_rma() || sf.rkey->directly_addressable(r.region_address);
    sf.use_get =
        options_.read_path == ReadPath::kGet || (options_.read_path == ReadPath::kAuto && native);
    sf.piece_bytes = std::min<uint64_t>(
        r.chunk_bytes, sf.use_get ? options_.piece_bytes : options_.am_piece_bytes);
    if (op.device != nullptr) {
        // ucx_device: data comes by gets from the device slot (a reply cannot land in device
        // memory), one per chunk, each followed by one copy to the host buffer to verify it.
        if (sf.shard.device_rkey.empty()) {
            return invalid_argument(
                fmt::format("version {} shard {} from {} has no device slot registered with UCX", v,
                            sf.shard.index, sf.source_name));
        }
        TANDEM_ASSIGN_OR_RETURN(sf.device_rkey, sf.conn->rkey(sf.shard.device_remote_address,
                                                              r.data_bytes, sf.shard.device_rkey));
        sf.use_get = true;
        sf.piece_bytes = r.chunk_bytes;
    }
    sf.ready = r.chunks_ready;
    if (op.kind == Kind::kPartial) {
        // Enough chunk-sized slots for the reads in flight, plus one being finished.
        const size_t pieces = (r.chunk_bytes + sf.piece_bytes - 1) / sf.piece_bytes;
        const size_t slots = options_.window_reads / std::max<size_t>(pieces, 1) + 2;
        TANDEM_ASSIGN_OR_RETURN(sf.scratch, HostBuffer::allocate(slots * r.chunk_bytes));
        for (size_t i = 0; i < slots; ++i) sf.free_scratch.push_back(i);
    }
    return Status();
}

Status Reader::Core::check_meta(Operation& op, ShardFetch& sf) {
    const Version v = op.version.version;
    const HeaderSnapshot h = decode_header(sf.header_before);
    if (!h.closed()) {
        return unavailable(fmt::format("slot {} of {} is being rewritten; version {} is gone",
                                       sf.lease.slot, sf.source_name, v));
    }
    if (h.fields.version != v) {
        return unavailable(fmt::format("slot {} of {} holds version {}, not {} (lease expired?)",
                                       sf.lease.slot, sf.source_name, h.fields.version, v));
    }
    if (h.fields.layout_fingerprint != layout_.fingerprint()) {
        return invalid_argument(fmt::format(
            "layout mismatch: slot {} of {} holds layout {}, this reader expects {}{}",
            sf.lease.slot, sf.source_name, fingerprint_text(h.fields.layout_fingerprint),
            layout_.fingerprint_text(),
            mismatch_detail(layout_, options_.layouts_dir, h.fields.layout_fingerprint)));
    }
    sf.manifest =
        Manifest(sf.lease.chunk_bytes, sf.lease.data_bytes,
                 std::vector<uint64_t>(sf.manifest_dest, sf.manifest_dest + sf.lease.chunk_count));
    if (sf.manifest.digest() != sf.shard.manifest_digest) {
        return data_loss(fmt::format(
            "the manifest of version {} shard {} read from {} has digest {:016x}, the version "
            "table says {:016x}",
            v, sf.shard.index, sf.source_name, sf.manifest.digest(), sf.shard.manifest_digest));
    }
    const size_t count = sf.manifest.chunk_count();
    sf.rereads.assign(count, 0);
    if (op.kind == Kind::kPull) {
        auto& st = buffers_[op.slot].shards[sf.shard.index];
        st.chunk_count = count;
        st.chunk_bytes = sf.lease.chunk_bytes;
        st.manifest_digest = sf.shard.manifest_digest;
        st.verified.assign(count, 0);
        st.prefix = 0;
        st.manifest_ready = true;
        if (server_) server_->notify();
        for (size_t c = 0; c < count; ++c) sf.todo.push_back(c);
    } else {
        for (size_t c : partial_chunks_needed(sf.manifest, sf.copies)) sf.todo.push_back(c);
    }
    sf.needed = sf.todo.size();
    return Status();
}

bool Reader::Core::start_chunk(Operation& op, ShardFetch& sf) {
    if (sf.todo.empty()) return false;
    const size_t c = sf.todo.front();
    if (sf.use_get && sf.via_relay && c >= sf.ready) return false;
    if (op.kind == Kind::kPartial && sf.free_scratch.empty()) return false;
    sf.todo.pop_front();
    const ByteRange r = sf.manifest.chunk_range(c);
    ChunkWork& work = sf.active[c];
    work = ChunkWork{};
    work.state = PieceHasher::new_state();
    work.tag = next_tag_++;
    work.pieces = std::max<size_t>(1, (r.size() + sf.piece_bytes - 1) / sf.piece_bytes);
    work.done.assign(work.pieces, 0);
    if (op.kind == Kind::kPartial) {
        work.scratch = sf.free_scratch.back();
        sf.free_scratch.pop_back();
        work.dest = sf.scratch.data() + work.scratch * sf.lease.chunk_bytes;
    } else {
        work.dest = sf.data_dest + r.begin;
    }
    return true;
}

void Reader::Core::issue_read(Operation& op, ShardFetch& sf, size_t chunk, ChunkWork& work) {
    const ByteRange r = sf.manifest.chunk_range(chunk);
    const size_t piece = work.issued++;
    const uint64_t begin = piece * sf.piece_bytes;
    const uint64_t length = std::min<uint64_t>(sf.piece_bytes, r.size() - begin);
    InFlight f;
    f.chunk = chunk;
    f.piece = piece;
    std::byte* dest = work.dest + begin;
    const uint64_t offset = sf.lease.data_offset + r.begin + begin;
    if (op.device != nullptr) {
        // ucx_device: from the device slot (shard bytes from its offset 0) into device memory.
        ucp_request_param_t p{};
        p.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE;
        p.memory_type = op.device_memory;
        f.get = ucx::Request(ucp_get_nbx(sf.conn->endpoint->handle(),
                                         op.device + sf.shard.range.begin + r.begin + begin, length,
                                         sf.shard.device_remote_address + r.begin + begin,
                                         sf.device_rkey->handle(), &p),
                             loop_->worker().handle());
    } else if (sf.use_get) {
        ucp_request_param_t p{};
        f.get = ucx::Request(ucp_get_nbx(sf.conn->endpoint->handle(), dest, length,
                                         sf.lease.region_address + offset, sf.rkey->handle(), &p),
                             loop_->worker().handle());
    } else {
        wire::Request rq;
        rq.type = wire::RequestType::kRead;
        rq.lease_id = sf.lease.lease_id;
        rq.offset = offset;
        rq.length = length;
        f.call = client_->call(*sf.conn, rq, {}, dest, length);
    }
    sf.inflight.push_back(std::move(f));
}

void Reader::Core::step_chunks(Operation& op, ShardFetch& sf) {
    const auto now = clock_.now();
    // Reading a relay with gets: ask how far it has verified before reading past that.
    if (sf.use_get && sf.via_relay) {
        if (sf.await_call && sf.await_call->done()) {
            if (!sf.await_call->status.ok()) {
                fail(op, sf.await_call->status.with_context(
                             fmt::format("waiting for chunks from {}", sf.source_name)));
                return;
            }
            sf.ready = std::max(sf.ready, sf.await_call->reply.chunks_ready);
            sf.await_call.reset();
        }
        if (!sf.await_call && !sf.todo.empty() && sf.todo.front() >= sf.ready) {
            wire::Request rq;
            rq.type = wire::RequestType::kAwait;
            rq.lease_id = sf.lease.lease_id;
            rq.length = std::min<uint64_t>(sf.manifest.chunk_count(), sf.todo.front() + 1);
            sf.await_call = client_->call(*sf.conn, rq);
        }
    }
    // Keep window_reads pieces in flight: finish issuing started chunks first, in order. Gets on
    // an attached shared-memory segment complete inside the call, so the window never fills:
    // yield after a slice, so that the liveness checks in step() and other operations still run
    // while a large version streams in (a publisher killed mid-read was noticed only once the
    // whole version had been copied, seconds later on a loaded machine).
    const auto slice_end = now + kStepSlice;
    while (sf.inflight.size() < options_.window_reads && clock_.now() < slice_end) {
        ChunkWork* next = nullptr;
        size_t chunk = 0;
        for (auto& [c, work] : sf.active) {
            if (work.issued < work.pieces) {
                next = &work;
                chunk = c;
                break;
            }
        }
        if (next == nullptr) {
            if (!start_chunk(op, sf)) break;
            continue;
        }
        issue_read(op, sf, chunk, *next);
        // A get from an attached shared-memory segment is a copy done inside the call:
        // checksum the piece now, while it is still in cache.
        InFlight& last = sf.inflight.back();
        if (sf.use_get && last.get.poll() != UCS_INPROGRESS) {
            const ucs_status_t u = last.get.poll();
            const size_t piece = last.piece;
            sf.inflight.pop_back();
            if (u != UCS_OK) {
                fail(op, ucx::ucx_status(u, "get").with_context(
                             fmt::format("reading chunk {} of version {} shard {} from {}", chunk,
                                         op.version.version, sf.shard.index, sf.source_name)));
                return;
            }
            sf.machine.progress(now);
            piece_done(op, sf, chunk, piece);
            if (op.finished) return;
        }
    }
    // Pieces complete in order for gets; replies may overtake each other, so scan them all.
    for (auto it = sf.inflight.begin(); it != sf.inflight.end();) {
        Status st;
        if (sf.use_get) {
            const ucs_status_t u = it->get.poll();
            if (u == UCS_INPROGRESS) {
                ++it;
                continue;
            }
            st = ucx::ucx_status(u, "get");
        } else {
            if (!it->call->done()) {
                ++it;
                continue;
            }
            st = it->call->status;
        }
        if (!st.ok()) {
            fail(op, st.with_context(fmt::format("reading chunk {} of version {} shard {} from {}",
                                                 it->chunk, op.version.version, sf.shard.index,
                                                 sf.source_name)));
            return;
        }
        const size_t chunk = it->chunk;
        const size_t piece = it->piece;
        it = sf.inflight.erase(it);
        sf.machine.progress(now);
        piece_done(op, sf, chunk, piece);
        if (op.finished) return;
    }
    // ucx_device: no get in flight, so nothing to overlap the copies to the host with.
    if (sf.inflight.empty() && !sf.host_copies.empty()) {
        finish_host_copies(op, sf, 0);
        if (op.finished) return;
    }
    const bool waiting = !sf.inflight.empty() || (sf.await_call != nullptr);
    if (sf.machine.stalled(now, options_.stall_timeout_ms, waiting)) {
        fail(op, deadline_exceeded(fmt::format(
                     "no data from {} for {} ms while reading version {} shard {} ({} of {} "
                     "chunks verified)",
                     sf.source_name, options_.stall_timeout_ms.count(), op.version.version,
                     sf.shard.index, sf.verified, sf.needed)));
        return;
    }
    if (sf.verified == sf.needed && sf.todo.empty() && sf.inflight.empty() && sf.active.empty() &&
        sf.awaiting_digests == 0) {
        if (sf.use_get) {
            ucp_request_param_t p{};
            sf.meta_get[0] = ucx::Request(
                ucp_get_nbx(sf.conn->endpoint->handle(), sf.header_after.data(), kSlotHeaderBytes,
                            sf.lease.region_address, sf.rkey->handle(), &p),
                loop_->worker().handle());
        } else {
            wire::Request rq;
            rq.type = wire::RequestType::kRead;
            rq.lease_id = sf.lease.lease_id;
            rq.offset = 0;
            rq.length = kSlotHeaderBytes;
            sf.meta_call[0] =
                client_->call(*sf.conn, rq, {}, sf.header_after.data(), kSlotHeaderBytes);
        }
        Status moved = sf.machine.chunks_verified(now);
        if (!moved.ok()) {
            fail(op, moved.with_context(fmt::format("reading version {} shard {}",
                                                    op.version.version, sf.shard.index)));
        }
    }
}

void Reader::Core::piece_done(Operation& op, ShardFetch& sf, size_t chunk, size_t piece) {
    if (op.device == nullptr) {
        piece_landed(op, sf, chunk, piece);
        return;
    }
    auto it = sf.active.find(chunk);
    if (it == sf.active.end()) return;
    // ucx_device: the piece is in device memory; its copy in the host buffer is what is verified
    // (and relayed). The copy runs while later gets go on; a failed copy fails the read.
    const ByteRange r = sf.manifest.chunk_range(chunk);
    const uint64_t begin = piece * sf.piece_bytes;
    const uint64_t length = std::min<uint64_t>(sf.piece_bytes, r.size() - begin);
    auto ticket = op.staging->enqueue_to_host(
        it->second.dest + begin, op.device + sf.shard.range.begin + r.begin + begin, length);
    if (!ticket.ok()) {
        fail(op, ticket.status().with_context(
                     fmt::format("copying chunk {} of version {} shard {} to the host to verify it",
                                 chunk, op.version.version, sf.shard.index)));
        return;
    }
    ++op.device_to_host_copies;
    sf.host_copies.push_back({chunk, piece, *ticket});
    finish_host_copies(op, sf, kHostCopyDepth);
}

void Reader::Core::finish_host_copies(Operation& op, ShardFetch& sf, size_t keep) {
    while (sf.host_copies.size() > keep && !op.finished) {
        const ShardFetch::HostCopy c = sf.host_copies.front();
        sf.host_copies.pop_front();
        Status copied = op.staging->wait(c.ticket);
        if (!copied.ok()) {
            fail(op, copied.with_context(
                         fmt::format("copying chunk {} of version {} shard {} to the host to "
                                     "verify it",
                                     c.chunk, op.version.version, sf.shard.index)));
            return;
        }
        piece_landed(op, sf, c.chunk, c.piece);
    }
}

void Reader::Core::piece_landed(Operation& op, ShardFetch& sf, size_t chunk, size_t piece) {
    auto it = sf.active.find(chunk);
    if (it == sf.active.end()) return;
    ChunkWork& work = it->second;
    const ByteRange r = sf.manifest.chunk_range(chunk);
    work.done[piece] = 1;
    while (work.submitted < work.pieces && work.done[work.submitted] != 0) {
        const uint64_t begin = work.submitted * sf.piece_bytes;
        const uint64_t length = std::min<uint64_t>(sf.piece_bytes, r.size() - begin);
        ++work.submitted;
        const bool last = work.submitted == work.pieces;
        if (last) {
            digest_waits_[work.tag] = {&op, &sf, chunk};
            ++sf.awaiting_digests;
        }
        hasher_->submit(work.state, work.tag, work.dest + begin, length, last);
    }
}

void Reader::Core::chunk_hashed(Operation& op, ShardFetch& sf, size_t chunk, uint64_t actual) {
    auto it = sf.active.find(chunk);
    if (it == sf.active.end()) return;
    const ByteRange r = sf.manifest.chunk_range(chunk);
    const uint64_t expected = sf.manifest.checksums()[chunk];
    const size_t scratch = it->second.scratch;
    sf.active.erase(it);
    if (actual == expected) {
        chunk_verified(op, sf, chunk, scratch);
        return;
    }
    if (sf.rereads[chunk] == 0) {
        sf.rereads[chunk] = 1;
        ++sf.rereads_done;
        if (scratch != SIZE_MAX) sf.free_scratch.push_back(scratch);
        sf.todo.push_front(chunk);
        log_.with({.version = op.version.version})
            .warn(
                "chunk {} of shard {} at offset {} from {} failed its checksum; reading it "
                "again",
                chunk, sf.shard.index, sf.shard.range.begin + r.begin, sf.source_name);
        return;
    }
    fail(op, data_loss(fmt::format(
                 "version {} refused: chunk {} of shard {} at offset {} ({} bytes) from {} failed "
                 "its checksum twice (got {:016x}, manifest says {:016x})",
                 op.version.version, chunk, sf.shard.index, sf.shard.range.begin + r.begin,
                 r.size(), sf.source_name, actual, expected)));
}

void Reader::Core::chunk_verified(Operation& op, ShardFetch& sf, size_t chunk, size_t scratch) {
    ++sf.verified;
    if (op.kind == Kind::kPull) {
        auto& st = buffers_[op.slot].shards[sf.shard.index];
        st.verified[chunk] = 1;
        while (st.prefix < st.chunk_count && st.verified[st.prefix] != 0) ++st.prefix;
        if (server_) server_->notify();
        if (op.on_verified) {
            const ByteRange r = sf.manifest.chunk_range(chunk);
            op.on_verified(sf.data_dest + r.begin, sf.shard.range.begin + r.begin, r.size());
        }
        return;
    }
    partial_copy_chunk(sf.manifest, chunk, sf.scratch.data() + scratch * sf.lease.chunk_bytes,
                       sf.copies, op.partial.data());
    sf.free_scratch.push_back(scratch);
}

void Reader::Core::release_lease(ShardFetch& sf) {
    if (!sf.lease_held || !sf.conn) return;
    sf.lease_held = false;
    if (sf.conn->endpoint->failed()) return;
    wire::Request rq;
    rq.type = wire::RequestType::kRelease;
    rq.lease_id = sf.lease.lease_id;
    client_->send_only(*sf.conn, rq);
}

void Reader::Core::renew_leases(Operation& op, ShardFetch& sf) {
    const auto now = clock_.now();
    if (sf.renew_call) {
        if (sf.renew_call->done()) {
            if (!sf.renew_call->status.ok()) {
                // Reading on is still safe: the header re-check catches an overwrite.
                log_.with({.version = op.version.version})
                    .warn("renewing the lease on version {} shard {} at {} failed: {}",
                          op.version.version, sf.shard.index, sf.source_name,
                          sf.renew_call->status.message());
            }
            sf.renew_call.reset();
        } else if (now - sf.renew_call->sent_at >= options_.request_timeout_ms) {
            client_->cancel(sf.renew_call);
            sf.renew_call.reset();
        }
        return;
    }
    if (now < sf.next_renew) return;
    wire::Request rq;
    rq.type = wire::RequestType::kRenew;
    rq.lease_id = sf.lease.lease_id;
    sf.renew_call = client_->call(*sf.conn, rq);
    sf.next_renew = now + std::chrono::milliseconds(std::max<uint64_t>(sf.lease.ttl_ms / 3, 1));
}

void Reader::Core::complete(Operation& op) {
    const Version v = op.version.version;
    const auto now = clock_.now();
    FetchStats stats;
    stats.version = v;
    stats.seconds = seconds_between(op.started, now);
    stats.via_relay = op.relay.has_value();
    for (const auto& sf : op.shards) {
        stats.chunks += sf->needed;
        stats.rereads += sf->rereads_done;
        stats.path = sf->use_get ? ReadPath::kGet : ReadPath::kActiveMessage;
        for (size_t c = 0; c < sf->manifest.chunk_count() && op.kind != Kind::kMap; ++c) {
            if (op.kind == Kind::kPull) {
                stats.bytes += sf->manifest.chunk_range(c).size();
            }
        }
    }
    if (op.kind == Kind::kMap) {
        Status mapped = finish_map(op);
        if (!mapped.ok()) {
            fail(op, mapped);
            return;
        }
    }
    op.finished = true;
    if (op.kind == Kind::kPull) {
        Buffer& b = buffers_[op.slot];
        b.filling = false;
        b.complete = true;
        if (!options_.relay) {
            table_.mark_published(op.slot, v);
            end_write(header(op.slot), {v, layout_.total_bytes(), 0, layout_.fingerprint(), 0});
        }
        std::lock_guard<std::mutex> lock(mu_);
        fetched_slot_ = op.slot;
        fetched_version_ = v;
        last_ = stats;
    }
    log_.with({.version = v})
        .debug("{} of version {} done in {:.3f} s ({} chunks, {} re-read, {} path{})",
               op.kind == Kind::kPull  ? "fetch"
               : op.kind == Kind::kMap ? "map"
                                       : "partial read",
               v, stats.seconds, stats.chunks, stats.rereads, read_path_name(stats.path),
               stats.via_relay ? ", via relay" : "");
    op.promise.set_value(Status());
}

void Reader::Core::fail(Operation& op, const Status& status) {
    if (op.finished) return;
    op.finished = true;
    log_.with({.version = op.version.version})
        .warn("reading version {} failed: {}", op.version.version, status.to_string());
    for (auto& sfp : op.shards) {
        ShardFetch& sf = *sfp;
        if (!sf.host_copies.empty()) {
            // ucx_device: nothing may write into the host buffer once it is given up. The wait
            // covers every copy enqueued before the last; its error is secondary to `status`.
            (void)op.staging->wait(sf.host_copies.back().ticket);
            sf.host_copies.clear();
        }
        // Replies not in yet are dropped from now on (nothing is written for them). Requests UCX
        // already runs (gets, rendezvous receives that began) cannot be cancelled in UCX 1.13:
        // they stay in sf.inflight / meta_get / meta_call and are drained below.
        client_->cancel(sf.call);
        client_->cancel(sf.meta_call[0]);
        client_->cancel(sf.meta_call[1]);
        client_->cancel(sf.await_call);
        client_->cancel(sf.renew_call);
        for (auto& f : sf.inflight) client_->cancel(f.call);
        sf.active.clear();
        sf.todo.clear();
        bool suspect = false;
        if (sf.conn) {
            suspect = status.code() == StatusCode::kDeadlineExceeded ||
                      !client_->check_alive(*sf.conn).ok();
            if (!suspect) release_lease(sf);
            if (suspect) client_->forget(sf.conn, UCS_ERR_TIMED_OUT);
        }
        sf.lease_held = false;
        sf.machine.failed(clock_.now());
    }
    // A pull that had claimed its buffer (its shards left kClaim together).
    const bool pulled = op.kind == Kind::kPull && !op.shards.empty() &&
                        op.shards.front()->machine.failed_in() != ShardState::kClaim;
    if (pulled) {
        Buffer& b = buffers_[op.slot];
        b.filling = false;
        b.complete = false;
        b.failed = status;
        begin_write(header(op.slot));  // downstream readers see the buffer is gone
        table_.reset(op.slot);
        if (server_) server_->notify();
    }
    start_drain(op, pulled);
    op.promise.set_value(status);
}

}  // namespace tandem::weights
