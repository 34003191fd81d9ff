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
// The connection to a plugin uses mutual TLS (go-plugin's AutoMTLS, with a
// certificate made for each start), over a unix socket in a folder only the
// user can enter: <tmp>/ferry-<uid>/<pid>, removed when the last Host of
// the process closes; the folders of ferry processes that are gone are
// removed when the next one starts a plugin.
//
// This package never holds policy: what a plugin is asked to do is decided
// by the core's other packages.
package pluginhost
