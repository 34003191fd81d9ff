// Package e2e holds ferry's end-to-end tests: they build the ferry binary
// and the plugins, and drive them as a user would, with real subprocess
// plugins, real files and real signals. Nothing here is faked.
package e2e
