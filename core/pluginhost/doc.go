// Package pluginhost finds ferry plugins, starts them, and keeps them in
// hand for the rest of ferry.
//
// Discovery looks, in order, in the plugins folder beside the
// configuration, the user's plugin folder (~/.ferry/plugins), each folder of
// FERRY_PLUGIN_PATH, and the folder of the ferry binary; the first
// ferry-plugin-<name> found wins and later ones are reported as shadowed.
//
// A Host starts each plugin once, on first use, through HashiCorp go-plugin
// (gRPC, protocol v1 of the sdk), checks its protocol and name, and hands
// out configured components. A plugin that crashed is reported with one
// clear error naming it, and started again on the next use. No plugin
// outlives ferry: Close stops each one gracefully and then kills it, the
// kernel signals them if ferry is killed (Linux parent-death signal,
// SIGTERM, which the sdk's Serve answers by killing the plugin's process
// group), and Serve exits a plugin whose parent is gone. A plugin runs in
// a process group of its own (on Unix), killed whole when the plugin is
// killed or exits, so the children it started go with it; a child that
// holds the plugin's output open delays its stop by at most a second
// (exec.Cmd.WaitDelay), and a line of any length on its stdout never
// blocks it.
//
// The connection to a plugin is mutual TLS 1.3 over a unix socket in a
// folder only the user can enter: <tmp>/ferry-<uid>/<pid>, removed when the
// last Host of the process closes; the folders of ferry processes that are
// gone are removed when the next one starts a plugin (on Windows, over TCP
// on the loopback address, where TLS alone keeps others out). For each start
// the host makes two P-256 keys with self-signed certificates, its own and
// the plugin's (sdk.NewHostTLS), and hands the plugin its key and the host's
// certificate in its environment (FERRY_PLUGIN_TLS), which the sdk clears
// before the plugin's main runs. The plugin's listener accepts only ferry's
// certificate, and ferry only the plugin's: another process cannot talk to
// the plugin, or pose as it. A plugin built with an older sdk answers with
// go-plugin's automatic mutual TLS instead (the host's certificate in
// PLUGIN_CLIENT_CERT, a P-521 key of its own, its certificate in the
// handshake line), with the same property. The environment of a plugin
// process, like the socket folder, can be read only by the same user and
// root (on Linux, /proc/<pid>/environ shows it for the process's life), who
// could read the process's memory anyway: the keys are kept from other
// users, not from them.
//
// This package never holds policy: what a plugin is asked to do is decided
// by the core's other packages.
package pluginhost
