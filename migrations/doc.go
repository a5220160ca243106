// Package migrations holds Silt's Postgres schema as numbered SQL files,
// embedded in the binary, and applies them.
//
// Contract: files are named NNNN_name.sql and applied in order, each in its
// own transaction together with its row in silt_schema_migrations. Apply is
// forward-only and idempotent, and serialized across processes with a
// Postgres advisory lock, so that many agents starting at once apply each
// migration exactly once. A database that has a migration this binary does
// not know is refused (ErrNewerSchema): an older agent must not run on a
// newer schema.
//
// Why a small runner rather than goose or tern: the whole job is ~100 lines
// over pgx, which Silt already uses; goose works through database/sql and
// brings its own dialect layer and CLI, and tern's migrator expects its own
// templating and version table. Owning the runner keeps the advisory lock,
// the version table and the refusal of newer schemas explicit and tested.
package migrations
