// Package fetch serves reads: it looks up the batch index in Postgres (one
// indexed query per fetch, looking ahead of what it reads), reads segment
// objects through a byte-bounded object-span cache (spans.go: small recent
// objects fetched whole, once, for all the tail readers that want them,
// or kept as this agent wrote them (Seed);
// for readers that are behind, whole flush objects, or the spans of them
// that their readers want, read once for every partition that wants them
// and read two objects ahead of a reader, else the reader's own coalesced
// ranges), keeps decoded chunks and range-read stored batches in
// byte-bounded LRU caches, and parks long-polls until a commit's NOTIFY
// says the partition grew.
//
// Contract:
//   - Fetch never returns a record at or past the high watermark read in
//     the same query as the index, and returns at least one whole record
//     when one is available, even if it alone exceeds MaxBytes.
//   - An offset below the log start offset or above the high watermark
//     fails with ErrOffsetOutOfRange (the error carries the partition's
//     offsets), as in Kafka: no record will ever be there, and a reader
//     holding such an offset (of a topic deleted and created again, say)
//     must learn it rather than wait forever. At the high watermark, Fetch
//     waits up to Wait for records.
//   - Objects that retention removed between lookup and read surface as
//     ErrOffsetOutOfRange after a second lookup, never as a raw storage
//     error.
//   - A response's records hold a share of Config.MaxInflightBytes, taken
//     before the read (up to MaxBytes of what is free: fewer records when
//     less is free, ErrBackpressure when nothing is), until the caller's
//     Response.Release. Records are priced by segment.RecordSize for
//     MaxBytes and by segment.RecordMemory for the budget and the cache.
//     Stored batches that lie in a span of the object-span cache hold that
//     span instead (it counts against Config.ObjectCacheBytes, evicted or
//     not, until the last response in it is released).
//   - A fetch may return less than MaxBytes although more is stored: a
//     catch-up read that finds no room in the object-span cache for the
//     next object's span ends before it, so that readers behind together
//     move through the objects held rather than each reading its own
//     ranges; it always returns at least one batch when one is available.
//   - Everything is bounded: the object-span cache in bytes and spans
//     (each span read by one goroutine, the only writer of its buffer;
//     a failed read is not kept), the partitions' wants it learns from
//     lookups in objects and partitions, the caches in bytes.
//   - FetchBatches serves stored RecordBatches as they are, undecoded and
//     uncopied (the bytes are the caches'), for the HTTP batch encoding;
//     FetchChunks copies them into one buffer with base offsets written,
//     for Kafka fetch. Both start at the batch holding the offset (records
//     before it in that batch are the reader's to skip) and share the
//     index lookup, read planning and caches with Fetch.
//   - The Notifier holds one LISTEN connection per agent and fans commits
//     out in memory; when that connection drops, every waiter is woken to
//     re-check, so no commit is missed.
package fetch
