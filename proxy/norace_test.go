//go:build !race

package proxy_test

// idleSockets is how many sockets TestWSThousandsOfIdleSockets holds open.
const idleSockets = 3000
