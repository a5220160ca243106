// Package e2e holds end-to-end tests: real `silt` processes, built from
// this tree, against the real Postgres and MinIO that `make test` starts.
package e2e
