// Package pgcluster runs a private PostgreSQL cluster from the system's
// binaries (initdb, pg_ctl, postgres), for `silt dev` and the test harness.
//
// Contract: Start initializes the data directory when it is empty, reuses
// it otherwise, and starts a server that listens only on 127.0.0.1 (TCP,
// no Unix socket) on the configured or a free port, with trust auth for the
// superuser "silt". A server left running by an earlier, killed process is
// adopted rather than started twice. Stop shuts it down (fast mode).
// When the caller is root, the server runs as the "postgres" system user,
// because PostgreSQL refuses to run as root.
package pgcluster
