// Package fetch serves reads: it looks up the batch index in Postgres (one
// indexed query per fetch), range-reads segment objects (adjacent ranges
// coalesced; small recent objects fetched whole, once, for all the tail
// readers that want them, or kept as this agent wrote them (Seed), while
// readers that are behind read ranges),
// keeps decoded chunks in a byte-bounded LRU cache, and
// parks long-polls until a commit's NOTIFY says the partition grew.
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
