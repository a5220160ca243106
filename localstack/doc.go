// Package localstack runs Silt's local topology as real processes, with no
// Docker: a private PostgreSQL (system binaries), a MinIO server, Silt
// agents and HAProxy in front of them, all on loopback ports. `make test`
// uses it for the services the tests need (StartServices); `make
// localstack` and the end-to-end tests for the whole cluster
// (StartCluster).
//
// Contract: every Start function returns once its service answers, and the
// returned handle's Stop shuts the service down and waits for it. Services
// listen on 127.0.0.1 only. Child processes run in their own process group
// (a Ctrl-C at the terminal reaches only the runner, which stops them in
// order) and die with the runner (Pdeathsig). The state directory holds
// each service's data and logs, and an env file that exports their
// addresses.
//
// The same configuration serves docker-compose.yml: agent.env holds the
// agents' settings (SharedAgentEnv) and haproxy.cfg.tmpl the load
// balancer's (RenderHAProxyConfig); haproxy.cfg is its rendering for the
// compose services, kept equal by a test.
package localstack
