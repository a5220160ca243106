// Package testenv gives tests the real services that `make test` starts:
// a fresh PostgreSQL database per test and a fresh MinIO bucket per test,
// read from the environment that the localstack runner exports, and a
// private Toxiproxy server per test (from the binary `make test` builds)
// for putting faults between a client and a service.
//
// Contract: a test that needs a service and finds no address fails with a
// message that says to run `make test`; only under `go test -short` does it
// skip. Everything a helper creates is removed in t.Cleanup.
package testenv
