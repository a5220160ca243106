// Package localstack runs Silt's local topology as real processes, with no
// Docker: a private PostgreSQL (system binaries), a MinIO server, Silt
// agents and a load balancer, all on loopback ports. `make test` uses it
// for the services the tests need; `make localstack` for the whole cluster.
//
// Contract: every Start function returns once its service answers, and the
// returned handle's Stop shuts the service down and waits for it. Services
// listen on 127.0.0.1 only. The state directory holds each service's data
// and logs, and an env file that exports their addresses.
package localstack
