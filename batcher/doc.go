// Package batcher turns produced records into segment objects: it buffers
// the records of all partitions of all topics, and on linger or size it
// builds one segment object (one chunk per partition run), PUTs it, commits
// it to Postgres in one transaction, and only then acknowledges producers
// with their offsets.
//
// Contract:
//   - One goroutine owns the pending buffer and is woken by a kick channel;
//     producers only append to it under its lock.
//   - A flush starts when the buffer reaches MaxSegmentBytes or its oldest
//     record has waited Linger. Up to MaxInflightFlushes flushes build and
//     PUT concurrently; their commits run strictly in flush order, so each
//     partition's offsets follow the order in which flushes started.
//   - Buffered plus in-flight bytes never exceed MaxBufferBytes: a Produce
//     that does not fit fails at once with ErrBackpressure.
//   - A Produce's records enter one flush together. Produce returns after
//     the commit, with one Result per Part; a failed PUT fails every waiter
//     of that flush with ErrStorage and a failed commit with the commit's
//     error. Nothing is acknowledged before its commit.
//   - Close stops new Produce calls (ErrClosed), flushes what is buffered
//     and waits for in-flight flushes: nothing accepted is dropped.
package batcher
