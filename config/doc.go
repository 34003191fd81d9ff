// Package config reads a ferry configuration: the *.hcl files of one folder,
// taken together as Terraform takes a module.
//
// A configuration declares source, target and repository blocks (whose
// bodies belong to the plugin named by the block's first label and are
// decoded against the schema that plugin declares), proxy blocks, job
// blocks and traffic_rule blocks. Load returns the typed result and every
// problem it found at once, as HCL diagnostics that name file, line and
// column. Problems in a block do not cascade: a job that refers to a broken
// block is not reported again for it.
//
// Expressions may call env("NAME") to read the environment. Values are kept
// as written: relative paths are not resolved here, and Config.Dir says
// where the configuration lives so that the host can resolve them.
//
// A plugin reports problems in its configuration by cty.Path;
// ConvertDiagnostics and the PathRange methods map such paths back to the
// user's source.
//
// This package must never start, call or import plugins (it sees them only
// through the Schemas interface), never touch the network, and never print
// the value of a sensitive attribute.
package config
