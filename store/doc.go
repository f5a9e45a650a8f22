// Package store is tinyedge's durable store: per-endpoint message queues
// that survive crashes and power cuts, and the twin cache, in one bbolt
// file. It knows nothing of the hub: messages are opaque payloads with
// opaque properties, queued for endpoints named by strings.
//
// # Delivery
//
// Append stores a message once and queues a reference to it for each
// target endpoint, at the target's priority (0–9, or LowestPriority) and
// with its TTL. Append returns after the transaction is on disk; appends
// made concurrently share one transaction and one fsync (group commit),
// run by a writer goroutine the Store owns. The queue in front of the
// writer is bounded (Options.MaxPending); when it is full, Append waits.
//
// Read returns an endpoint's messages priority 0 first, oldest first
// within a priority, and moves an in-memory read position so the next
// Read continues after them. Ack removes references; a message is deleted
// when its last endpoint acknowledges it, in the same transaction.
// Acknowledged messages are never returned again; unacknowledged ones are
// returned again after Rewind or after reopening the store. This is
// at-least-once delivery: duplicates are bounded by what the consumer had
// read and not acknowledged.
//
// # Time
//
// TTLs count from the enqueue time only when the clock was trusted then
// (Options.Trusted). Nothing expires while the clock is untrusted. A
// message enqueued on an untrusted clock ages from the first moment the
// store saw a trusted clock after it; that moment is persisted (a "trust
// mark"), so a restart does not reset it. Ordering never uses time, only
// sequence numbers.
//
// # Size
//
// Options.MaxSizeBytes bounds the pages in use in the file (UsedBytes in
// Stats: bbolt's high water mark less its free pages). Before a batch
// commits, the writer estimates what its appends add; if that would pass
// the limit, DropOldest drops the oldest messages of the lowest priority
// (counted as size_limit drops) and Refuse fails those appends with
// ErrFull. bbolt reuses freed pages, so the file stays within the limit
// plus one growth step (an eighth of the limit, at most 16 MiB). Compact
// gives space back to the file system offline.
//
// # On disk
//
// Top-level buckets, all keys big-endian uint64 unless said otherwise:
//
//	meta       "format" -> CBOR {v}: the file's format version
//	           "untrusted" -> seq: last message enqueued on an untrusted clock
//	           trust/seq -> Unix ns: first trusted time after messages ≤ seq
//	messages   seq -> CBOR {v, t enqueue ns, c trusted, h properties,
//	           p payload, e [{n endpoint, p priority, l TTL ns}]}
//	refs       seq -> count: references left, only for messages queued
//	           for more than one endpoint (absent means one)
//	queues     <endpoint>/<priority byte 0–10>/seq -> empty
//	           <endpoint>/"state" -> CBOR {v, c checkpoint, x expired,
//	           s size_limit}
//	twins      <module> -> CBOR {v, d desired, r reported, dv, rv}
//	patches    <module>/seq -> CBOR {v, p patch, t queued ns}
//
// Every CBOR record carries a version "v". A file whose format version,
// or a record whose version, is newer than this binary is refused with a
// *VersionError rather than misread; a newer binary reads older files.
//
// # Caveats
//
//   - Open reads the whole file once: it checks every page (see below)
//     and bbolt rebuilds its freelist, which tinyedge does not write on
//     each commit (bbolt's NoFreelistSync) because rewriting a large
//     freelist on every transaction is SD card wear for nothing. On a Pi
//     with a full 256 MiB store this costs a few seconds at boot.
//   - A file that is not a valid bbolt file, is truncated, has a damaged
//     page tree or damaged store metadata is moved to
//     <path>.corrupt-<UTC timestamp>, and Open returns a fresh Store with
//     a *RecoveredError: the gateway keeps running without its backlog.
//     The caller must log that error loudly and count it. Damage inside
//     a message record is not found at Open: Read returns ErrCorrupt for
//     it.
//   - The page check reads bbolt's on-disk format version 2 in
//     little-endian order, as bbolt writes it on amd64, arm64 and arm.
//   - bbolt maps the whole file into memory. On GOARCH=arm the default
//     limit is 128 MiB and limits above 1 GiB are refused.
//   - Read positions live in memory only. A consumer that loses what it
//     read (a dropped connection) calls Rewind, or it will not see those
//     messages again until the store is reopened.
//   - Drop counters are persisted; Stats.Commits counts since Open.
//   - The size estimate before a commit is conservative but not exact:
//     a single batch may pass the limit by about its own size, and the
//     next batch drops (or refuses) more to make up for it.
//   - Twin writes are not subject to the size limit.
//   - A full disk fails the batch being committed: every operation in it
//     gets an error naming the operation and the file and wrapping the OS
//     error (errors.Is(err, syscall.ENOSPC)). bbolt rolls the
//     transaction back, so nothing committed before is lost and the next
//     commit succeeds once there is space; with bbolt's NoFreelistSync
//     the rollback rebuilds the freelist by walking the file, which on a
//     large store makes each failed commit slow. If bbolt cannot map the
//     grown file into memory (32-bit address space), it refuses every
//     later transaction: each Append then fails with an error that says
//     so, until the store is closed and reopened.
//   - Resident memory grows with the backlog by the pages of the file
//     that are mapped and have been touched: Open walks every page (page
//     check, freelist rebuild, queue depths), so a 1,000,000-message
//     backlog (352 MiB file) shows as ~350 MiB of VmRSS right after Open.
//     That is file-backed page cache the kernel can reclaim, not heap:
//     the store's anonymous memory grows by ~3 MiB for the same backlog.
//   - A process kill keeps the page cache, so it tests crash safety but
//     not power loss; the crash test's writer (internal/crashtest) can be
//     run inside a full-system VM for that.
package store
