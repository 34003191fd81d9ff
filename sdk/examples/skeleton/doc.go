// Package skeleton is the smallest complete ferry plugin, written to be
// copied: one Repository component that keeps metadata objects in memory,
// its configuration schema and validation, the Plugin value that serves
// it, a main package under cmd/, and tests that run the sdktest
// conformance suites.
//
// To start a plugin of your own, copy this folder, rename the package and
// the plugin, replace Repository with your component (or add a Source or a
// Target beside it) and keep the tests passing.
//
// A memory repository forgets everything when the plugin exits, so this
// one is a teaching aid, not something to replicate with.
package skeleton
