// Package partitioner picks a partition for a record the way Kafka's Java
// producer does: an explicit partition wins; else a non-empty key goes to
// toPositive(murmur2(key)) % n, so keys land where a Kafka producer would
// put them; else records without a key go to one partition per request,
// chosen round-robin across requests ("sticky" per request).
//
// Contract: Murmur2 is bit-for-bit Kafka's Utils.murmur2 (seed 0x9747b28c);
// ForKey is pure; Sticky is safe for concurrent use.
package partitioner
