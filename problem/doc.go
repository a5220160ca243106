// Package problem is Silt's HTTP error contract: the RFC 9457 problem
// details object every error response carries, and the stable codes that
// clients match on. The agent writes these; the client reads them.
//
// Contract: a code never changes meaning; new codes may be added, so a
// client treats an unknown code by its HTTP status. Retriable problems
// (429, 503) carry RetryAfter, also sent as the Retry-After header.
package problem
