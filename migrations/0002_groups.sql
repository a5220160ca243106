-- Consumer groups: the group row (its lock serializes every membership
-- decision), its members with their assignments and fetch positions, and
-- the committed offsets.

-- One row per group. Every operation that changes membership, assignments
-- or offsets runs under SELECT ... FOR UPDATE on this row, so requests
-- through different agents see one order of events. generation grows by
-- one on every rebalance. topics is the subscription snapshot the current
-- assignment was computed from ({"name": [topic_id, partitions], ...}); a
-- topic created, deleted or grown since triggers a rebalance.
CREATE TABLE groups (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL UNIQUE,
    generation  bigint      NOT NULL DEFAULT 0,
    topics      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per member. generation is the generation the member last joined
-- at; when it is below the group's, the member has to rejoin. assignment
-- ([{"topic","topic_id","partition"}, ...]) is recomputed for every member
-- on each rebalance and belongs to assignment_generation. positions
-- ([{"topic_id","partition","offset"}, ...]) are where the server-side
-- fetch continues; they are reset on every join.
CREATE TABLE group_members (
    group_id               bigint      NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    member_id              text        NOT NULL,
    topics                 text[]      NOT NULL,
    session_timeout_ms     integer     NOT NULL CHECK (session_timeout_ms > 0),
    auto_offset_reset      text        NOT NULL,
    generation             bigint      NOT NULL,
    assignment             jsonb       NOT NULL DEFAULT '[]'::jsonb,
    assignment_generation  bigint      NOT NULL,
    positions              jsonb       NOT NULL DEFAULT '[]'::jsonb,
    joined_at              timestamptz NOT NULL DEFAULT now(),
    heartbeat_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, member_id)
);

-- Committed offsets: the offset of the next record the group will read.
-- They go with their partition when a topic is deleted.
CREATE TABLE group_offsets (
    group_id          bigint      NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    topic_id          bigint      NOT NULL,
    partition         integer     NOT NULL,
    committed_offset  bigint      NOT NULL CHECK (committed_offset >= 0),
    metadata          text        NOT NULL DEFAULT '',
    committed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic_id, partition),
    FOREIGN KEY (topic_id, partition) REFERENCES partitions (topic_id, partition) ON DELETE CASCADE
);
CREATE INDEX group_offsets_partition ON group_offsets (topic_id, partition);
