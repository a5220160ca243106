// Package testenv gives tests the real services that `make test` starts:
// a fresh PostgreSQL database per test and a fresh MinIO bucket per test,
// read from the environment that the localstack runner exports.
//
// Contract: a test that needs a service and finds no address fails with a
// message that says to run `make test`; only under `go test -short` does it
// skip. Everything a helper creates is removed in t.Cleanup.
package testenv
