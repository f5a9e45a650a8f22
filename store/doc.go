// Package store is tinyedge's durable store: per-endpoint message queues
// that survive crashes and power cuts, and the twin cache, in one bbolt
// file. It knows nothing of the hub: messages are opaque payloads with
// opaque properties, queued for endpoints named by strings.
//
// # Delivery
//
// Append stores a message once and queues a reference to it for each
// target endpoint, at the target's priority (0–9, or LowestPriority) and
// with its TTL. Append returns once the message is on disk, in the
// journal or in bbolt (see Journal); appends made concurrently share one
// journal frame or one transaction, and one fsync (group commit), run by
// a writer goroutine the Store owns. The queue in front of the writer is
// bounded (Options.MaxPending); when it is full, Append waits.
//
// Read returns an endpoint's messages priority 0 first, oldest first
// within a priority, and moves an in-memory read position so the next
// Read continues after them. Ack removes references, all together (one
// journal frame or one transaction); a message is gone when its last endpoint acknowledged it. Acknowledged
// messages are never returned again; unacknowledged ones are returned
// again after Rewind or after reopening the store. This is at-least-once
// delivery: duplicates are bounded by what the consumer had read and not
// acknowledged.
//
// Acknowledging the oldest messages of a queue, as consumers do, moves
// the queue's acknowledged prefix, kept in the endpoint's record; their
// keys stay in the file until an endpoint has 256 KiB of
// them, or the size limit needs the room, or the store is closed, and are
// then deleted together. Deleting at every Ack rewrote the head leaf of
// the queue (and often its neighbour, when bbolt merged the emptied leaf)
// at every commit. A message acknowledged out of order is deleted at
// once.
//
// # Journal
//
// A bbolt commit takes two fdatasyncs (its pages, then its meta page) and
// page writes scattered over the file. The journal, <path>.journal, a
// file of fixed size (Options.JournalBytes, 4 MiB by default) written in
// full when it is created, makes a batch durable with one sequential
// write and one fdatasync instead: the writer gives the batch's messages
// their sequence numbers, writes its appends and acknowledgements as one
// frame (journal.go has the format), syncs it and answers the callers.
//
// A second goroutine, the applier, keeps journaled messages in memory
// ("hot"): Read returns them, in sequence order with what bbolt holds,
// and an acknowledgement of a hot message costs no bbolt write at all. A
// checkpoint commits the hot messages not yet acknowledged to bbolt,
// with the highest sequence number journaled so far ("journaled" in
// meta): every 500 ms when anything was journaled, when the journal is
// full, before Stats, EndpointStats and Sweep (which count and sweep what
// bbolt has) and at Close. Acknowledgements of messages in bbolt are
// committed together, within 2 ms. So a message consumed within a
// checkpoint interval, as a connected module or the cloud link consume
// them, is written once, sequentially, and never to bbolt.
//
// Only batches whose appends surely fit the size limit (their estimate
// doubled, with what is hot) and take at most 1 MiB are journaled: a
// larger batch already shares bbolt's fdatasyncs among many messages,
// and appends the size policy may drop or refuse need bbolt's answer.
// Those, and every other write, are committed to bbolt as they come, and
// answered then; before appends that were not journaled, the applier
// checkpoints, so that the policy finds the oldest messages in bbolt.
//
// The writer goes back to the start of the file when the next frame does
// not fit, once no frame is needed: nothing hot, no acknowledgement
// waiting for a commit, and a checkpoint since the last journaled append.
// Open reads the frames from the start, stopping at the first that does
// not follow its predecessor or fails its CRC (a torn write, or an older
// frame a wrap left behind); the appends after the last checkpoint are
// hot again and the acknowledgements are applied again (they are
// idempotent), before Open returns. A torn frame loses only writes that
// were never answered.
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
// the limit, it first deletes the acknowledged keys waiting to be purged
// (see Delivery); if that is not enough, DropOldest drops the oldest
// messages of the lowest priority (counted as size_limit drops) and
// Refuse fails those appends with ErrFull. bbolt reuses freed pages, so
// the file stays within the limit plus one growth step (an eighth of the
// limit, at most 16 MiB). Compact gives space back to the file system
// offline.
//
// # On disk
//
// Format 3. Top-level buckets; seq is a message's sequence number, all
// numbers are big-endian so that bbolt's byte order is numeric order:
//
//	meta       "format" -> CBOR {v}: the file's format version (3)
//	           "untrusted" -> seq: last message enqueued on an untrusted clock
//	           "journaled" -> seq: the highest sequence number journaled
//	           that the last checkpoint covers (see Journal)
//	           "clean" -> CBOR {v, m messages, d [{i id, d depths}]}: only
//	           while the file is closed (see Close and Open below)
//	trust      seq -> Unix ns: first trusted time after messages ≤ seq
//	endpoints  <endpoint name> -> CBOR {v, i id, c checkpoint, x expired,
//	           s size_limit, a [acknowledged prefix of priority 0, 1, …]};
//	           the bucket's sequence is the last id given
//	queues     id uint32 | priority byte 0–10 | seq uint64 -> the message
//	           record when the message is queued for this endpoint only,
//	           empty when it is shared and stored in messages; keys up to
//	           the priority's acknowledged prefix are acknowledged
//	           (deleted in bulk later), not queued
//	messages   seq -> the record of a message queued for several endpoints;
//	           the bucket's sequence numbers every message
//	refs       seq -> count: references left to a shared message, while
//	           more than one (absent means one)
//	twins      <module> -> CBOR {v, d desired, r reported, dv, rv}
//	patches    <module>/seq -> CBOR {v, p patch, t queued ns}
//
// A message record is CBOR {v, t enqueue ns, c trusted, h properties,
// p payload, e [{n endpoint, p priority, l TTL ns}]}; stored in a queue,
// its one target has only l (the key says the rest).
//
// An append of a message for one endpoint writes one key in one bucket,
// at the end of its endpoint's and priority's range: with bbolt's
// FillPercent at 1.0 sequential keys fill pages, and a commit of a batch
// writes its new pages, the tail page before them, the branch pages
// above and the root. endpoints, meta and trust are small and stay inline
// in the root page; endpoint records are rewritten only when a checkpoint,
// an acknowledged prefix or a drop counter changed. A commit of in-order
// acknowledgements writes only the root page (and bbolt's meta page).
//
// Close writes, in one last transaction, the "clean" record (message
// count and queue depths), the deletion of the acknowledged keys and
// bbolt's freelist, which tinyedge otherwise
// does not write (bbolt's NoFreelistSync: rewriting a freelist of several
// pages on every commit is SD card wear for nothing). Open reads both
// instead of counting the queues and walking the file, and deletes the
// record in its first transaction, so that after a crash the next Open
// counts and bbolt walks the file again.
//
// Every CBOR record carries a version "v". A file whose format version,
// or a record whose version, is newer than this binary is refused with a
// *VersionError rather than misread; a newer binary reads older files.
//
// Format 2 is format 3 without acknowledged prefixes: Open converts it by
// writing the new version in its first transaction. The version changes
// because a format 2 binary would deliver acknowledged keys again.
//
// Format 1 (tinyedge before format 2) had a bucket per endpoint and
// priority under queues (<endpoint>/<priority>/seq -> empty, and
// <endpoint>/"state"), every message in messages, and the trust marks in
// meta/trust. Open converts such a file: it copies it into <path>.v2 in
// the current layout, syncs it and renames it over the old file. A crash
// during the conversion leaves the format 1 file as it was.
//
// # Caveats
//
//   - Open reads the whole file once, with pread, to check every page
//     (see below); on a Pi with a full 256 MiB store this costs a few
//     seconds at boot. It does not read it through bbolt's memory map:
//     after a clean Close, neither bbolt (freelist) nor the store
//     (queue depths) walk the backlog, so the resident memory of a store
//     holding 1,000,000 messages is within a few MiB of an empty one.
//     After a crash, bbolt rebuilds its freelist by walking the file and
//     the store counts the queues: until the next clean Close, the
//     touched pages of the file count in VmRSS (file-backed page cache
//     the kernel can reclaim, not heap).
//   - Open drops the file from the page cache (Linux): cached in large
//     folios after the page check, each commit would write several
//     times the 4 KiB pages it changed. The first Reads after Open read
//     the disk page by page.
//   - While the file grows, the writer writes zeros up to 256 KiB past
//     bbolt's high water mark, synced, between batches (see fillFile):
//     bbolt grows its file with a hole, and on ext4 a commit writing into
//     a hole also commits the block allocation to the journal. A growing
//     file's pages are thus written twice; the steady state is not
//     affected.
//   - A file that is not a valid bbolt file, is truncated, has a damaged
//     page tree, freelist or store metadata is moved to
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
//   - Endpoint ids are never reused: a file can have seen 2^32 endpoint
//     names.
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
//     large store makes each failed commit slow. Close on a full disk
//     cannot write the clean record; the next Open then counts. If bbolt
//     cannot map the grown file into memory (32-bit address space), it
//     refuses every later transaction: each Append then fails with an
//     error that says so, until the store is closed and reopened.
//   - If the journal cannot be created (a full disk: it is written whole
//     first), the store runs without it, as with JournalBytes < 0, and
//     Stats.JournalError says why.
//   - When bbolt cannot take a checkpoint (a full disk), the hot messages
//     stay in memory and in the journal, readable, and acknowledgements
//     of them work; the checkpoint is tried again every 500 ms. Once the
//     journal is full, appends go to bbolt and fail with the OS error.
//     Close leaves the hot messages in the journal for the next Open.
//   - A tinyedge from before the journal ignores it: if it opens a store
//     that was not closed cleanly, it loses the appends that were only in
//     the journal.
//   - Memory: hot messages are bounded by the journal's size (4 MiB),
//     and by what arrives in 500 ms.
//   - A process kill keeps the page cache, so it tests crash safety but
//     not power loss; the crash test's writer (internal/crashtest) can be
//     run inside a full-system VM for that.
package store
