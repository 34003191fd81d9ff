//go:build !unix

package pluginhost

// acquireSocketDir has nothing to do where plugins listen on TCP
// (Windows): mutual TLS keeps other processes out.
func acquireSocketDir() (string, error) { return "", nil }

func releaseSocketDir() {}
