//go:build race

package proxy_test

// idleSockets is how many sockets TestWSThousandsOfIdleSockets holds open. The race
// detector allows 8128 live goroutines, and each relayed socket costs about six across
// client, relay and stand-in gateway.
const idleSockets = 1000
