// Package pgcluster runs a private PostgreSQL cluster from the system's
// binaries (initdb, pg_ctl, postgres), for `silt dev` and the test harness.
//
// Contract: Start initializes the data directory when it is empty, reuses
// it otherwise, and starts a server that listens only on 127.0.0.1 (TCP,
// no Unix socket, so no socket or lock file outside the data directory) on
// the configured or a free port, with trust auth for the superuser "silt".
// A server left running by an earlier, killed process is adopted rather
// than started twice. Stop shuts it down (fast mode).
//
// When the caller is root, the server runs as the "postgres" system user,
// because PostgreSQL refuses to run as root. When that user cannot reach
// the data directory (a parent only its owner may enter), a new cluster is
// kept in a postgres-owned directory under Config.RelocateRoot named after
// a hash of the data directory's path, and PointerFile(dataDir) records
// where; every later Start and StopDataDir follows that pointer. With no
// pointer, a directory at that hash belongs to a deleted data directory
// and is removed before a fresh cluster is made.
package pgcluster
