package main

import (
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// FuzzSections: any file body read as the routing sections either passes
// or fails with one line; nothing panics. go test -fuzz FuzzSections
// ./cmd/equalizer explores further.
func FuzzSections(f *testing.F) {
	for _, seed := range []string{
		routesFile, limitsFile,
		"limits:\n  a: {capacity: 5, rate: 5/m, key: \"ip+header:X\"}\nroutes:\n  - {match: {}, limits: [a, default]}\n",
		"routes:\n  - match: {host: \"*.x\", path: /a, methods: [GET], headers: {A: 1}}\n    strip_prefix: true\n",
		"pools:\n  p: {backends: [\"http://127.0.0.1:1 weight=3\"], strategy: p2c}\nroutes: []\n",
		"exempt: [\"::ffff:10.0.0.0/104\", 10.0.0.1]\ndeny: []\n",
		"limits: {a: {capacity: 9999999999999, rate: 1/0s}}\n", "routes: {a: 1}\n", "limits:\n  a: 3\n",
		"routes:\n  - match: {path_prefix: /%zz/}\n", "routes:\n  -\n", "pools: [a]\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var raw map[string]any
		if yaml.Unmarshal([]byte(body), &raw) != nil {
			return
		}
		var s sections
		err := s.parse(raw)
		if err == nil {
			err = checkSections(s)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\n\r") {
			t.Fatalf("an error of more than one line: %q", err)
		}
	})
}
