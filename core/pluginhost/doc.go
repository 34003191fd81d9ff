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
// kernel kills them if ferry is killed (Linux parent-death signal), and the
// sdk's Serve exits a plugin whose parent is gone.
//
// This package never holds policy: what a plugin is asked to do is decided
// by the core's other packages.
package pluginhost
