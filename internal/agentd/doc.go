// Package agentd assembles one Silt agent: the metadata store (with
// migrations), the object store, the batcher, the fetcher, ownership and
// groups, and the HTTP server; and it shuts them down in the reverse order
// of construction: HTTP, then the batcher's final flush, then pools.
// cmd/silt runs it from flags; tests run it in-process with injected parts.
package agentd
