// Package traffic applies the configuration's traffic rules to the links
// disk data crosses: which rules match a link (by site or address, in
// either direction for bidirectional rules), what they impose at a time
// (the lowest open throttle, encryption, the fewest connections), and one
// shared limiter per rule, so that every task crossing a rule's link draws
// on the same rate.
//
// Evaluate is a pure function of the rules, the link and the time. The
// Registry holds the limiters and follows configuration reloads and the
// opening and closing of windows through Update, which its owner (the
// control plane or a proxy) calls with the time.
//
// This package never opens connections, never encrypts anything and never
// reads the clock itself: it says what the rules require, and the data
// path enforces it.
package traffic
