// Package ratelimit limits how often a key (a tenant, a caller) may act: a budget of Rate
// events per Per, of which Burst may come at once, by the generic cell rate algorithm (GCRA).
// Each key costs one timestamp, its theoretical arrival time (TAT): the moment its budget is
// whole again. An event is allowed if, with its cost added, the TAT stays within Burst event
// intervals of now; otherwise it is refused with the wait until it would be allowed.
//
// Memory keeps the timestamps in the process, for one replica; Redis keeps them in Redis, for
// replicas that share one budget. Both answer alike (one conformance test runs them both).
// Invariants: at most Burst events at once and Rate per Per after that, per key, however many
// goroutines (or replicas, with Redis) ask; a key whose budget is whole again is forgotten.
package ratelimit
