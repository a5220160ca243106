-- Silt's first schema: topics, partitions, segment objects and the batch
-- index, idempotent producers, and the agent registry.

CREATE TABLE topics (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL UNIQUE,
    partitions  integer     NOT NULL CHECK (partitions > 0),
    config      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per partition. next_offset is the high watermark: the offset the
-- next committed record gets. Commits lock these rows.
CREATE TABLE partitions (
    topic_id          bigint      NOT NULL REFERENCES topics (id) ON DELETE CASCADE,
    partition         integer     NOT NULL CHECK (partition >= 0),
    next_offset       bigint      NOT NULL DEFAULT 0,
    log_start_offset  bigint      NOT NULL DEFAULT 0,
    total_bytes       bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (topic_id, partition)
);

-- One lease per partition: row locks in Postgres elect one owner agent per
-- partition; epoch grows by one on every claim and fences owner-only
-- writes. Leases live apart from the partitions rows so that renewing
-- them never waits on, or blocks, a commit.
CREATE TABLE leases (
    topic_id     bigint      NOT NULL,
    partition    integer     NOT NULL,
    owner_agent  text,
    epoch        bigint      NOT NULL DEFAULT 0,
    expires_at   timestamptz,
    PRIMARY KEY (topic_id, partition),
    FOREIGN KEY (topic_id, partition) REFERENCES partitions (topic_id, partition) ON DELETE CASCADE
);

-- One row per segment object in the bucket. A row is written in the same
-- transaction that indexes the object's chunks; objects without a row are
-- orphans of failed flushes.
CREATE TABLE segments (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key           text        NOT NULL UNIQUE,
    size          bigint      NOT NULL,
    -- flush: written by a batcher, chunks of many partitions;
    -- merged/compacted: rewritten by a partition's owner, one partition
    kind          text        NOT NULL DEFAULT 'flush',
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- set when no batch references the object any more; deleted after a grace period
    unreferenced_at timestamptz
);

-- The batch index: one row per chunk (one Kafka RecordBatch) of a partition.
-- Ranges of one partition never overlap, so last_offset is unique and
-- orders the rows as base_offset does.
CREATE TABLE batches (
    topic_id       bigint  NOT NULL,
    partition      integer NOT NULL,
    base_offset    bigint  NOT NULL,
    last_offset    bigint  NOT NULL,
    record_count   integer NOT NULL,
    max_timestamp  bigint  NOT NULL,
    segment_id     bigint  NOT NULL REFERENCES segments (id),
    byte_offset    bigint  NOT NULL,
    byte_length    integer NOT NULL,
    PRIMARY KEY (topic_id, partition, last_offset),
    FOREIGN KEY (topic_id, partition) REFERENCES partitions (topic_id, partition) ON DELETE CASCADE,
    CHECK (last_offset >= base_offset)
);
CREATE INDEX batches_segment ON batches (segment_id);
CREATE INDEX segments_unreferenced ON segments (unreferenced_at) WHERE unreferenced_at IS NOT NULL;

-- Idempotent producers: ids are issued by Postgres; per partition the last
-- committed batches' sequence ranges and offsets are kept to answer retries.
CREATE SEQUENCE producer_ids START 1000;

CREATE TABLE producer_state (
    producer_id     bigint  NOT NULL,
    topic_id        bigint  NOT NULL,
    partition       integer NOT NULL,
    -- the last committed sequence (of the last record), -1 before any
    last_sequence   integer NOT NULL,
    -- up to five recent batches as [[base_sequence, last_sequence, base_offset], ...]
    recent          jsonb   NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (producer_id, topic_id, partition),
    FOREIGN KEY (topic_id, partition) REFERENCES partitions (topic_id, partition) ON DELETE CASCADE
);

-- Agents heartbeat here; an agent whose heartbeat is older than the TTL is dead.
CREATE TABLE agents (
    id            text        PRIMARY KEY,
    address       text        NOT NULL DEFAULT '',
    version       text        NOT NULL DEFAULT '',
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);
