// Package migrations embeds the SQL migrations. Files are named
// NNN_description.sql and applied in order of NNN, each once.
package migrations

import "embed"

// FS holds every *.sql file of this folder.
//
//go:embed *.sql
var FS embed.FS
