// Package toxiproxy runs a Toxiproxy server (Shopify's TCP fault proxy) as
// a child process and speaks its HTTP API, for fault tests: put a proxy
// between a client and Postgres (or anything TCP), then freeze, slow or cut
// the traffic through it.
//
// Contract: Start launches the server binary on a free 127.0.0.1 port and
// returns once that server (not another one that took the port) answers;
// Stop ends it. The Client is a small hand-written client of the API
// (proxies: create, enable/disable, delete; toxics: add, remove); it does
// not import Toxiproxy's own client package, whose module would bring the
// server's requirements into Silt's module graph for five HTTP calls.
//
// Freeze(stream) is the `timeout` toxic with timeout 0: bytes in that
// direction stop and the sockets stay open, as with a hung peer or a
// network partition without resets. Removing it closes the connections it
// held; new connections pass again.
package toxiproxy
