// Package faultnet is a TCP relay for tests that injects network faults
// between a client and a server: latency, a bandwidth cap and stalls per
// direction, and cuts and resets of every connection. Tests of anything
// that streams over TCP (the data movers' streams, a proxy's TLS link, a
// plugin's own client) put a Relay between the two ends and turn faults
// on and off while data flows.
//
// It lives in the sdk module, beside the conformance kit, so that every
// test may import it: the core's, and the plugins', which import nothing
// of ferry but the sdk.
//
// It must never be used outside tests: it listens on loopback only, keeps
// whole chunks in memory while delaying them, and trades accuracy for
// simplicity wherever a test does not need more.
package faultnet
