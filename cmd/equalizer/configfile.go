package main

import (
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml"
)

// The configuration file (EQUALIZER_CONFIG_FILE) is YAML with the same
// settings as the environment, named without the EQUALIZER_ prefix in lower
// case: EQUALIZER_HEALTH_INTERVAL is health_interval. Lists (backends,
// trusted_proxies, admin_hosts) may be YAML lists. The environment wins
// over the file, so a container can override one setting.

// fileVar maps a file key to its variable name.
func fileVar(key string) string { return "EQUALIZER_" + strings.ToUpper(key) }

// knownVars are the variables Config reads.
var knownVars = func() map[string]bool {
	m := map[string]bool{}
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("env"), ",")
		m[name] = true
	}
	return m
}()

// readConfigFile turns the file into variables. An unknown key, a nested
// mapping or an unreadable file is an error naming the file and the key.
func readConfigFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("EQUALIZER_CONFIG_FILE: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: not valid YAML: %v", path, oneLine(err))
	}
	out := map[string]string{}
	for key, v := range raw {
		if sectionKeys[key] {
			continue // pools:, routes:, deny: (sections.go)
		}
		name := fileVar(key)
		if !knownVars[name] || name == "EQUALIZER_CONFIG_FILE" {
			return nil, fmt.Errorf("%s: unknown setting %q (settings are the EQUALIZER_ variables in lower case without the prefix, e.g. health_interval)", path, key)
		}
		s, err := scalar(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %v", path, key, err)
		}
		out[name] = s
	}
	return out, nil
}

// scalar renders a YAML value as the environment would hold it.
func scalar(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(x), nil
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, err := scalar(e)
			if err != nil {
				return "", err
			}
			if _, nested := e.([]any); nested || strings.Contains(s, ",") {
				return "", fmt.Errorf("a list item must be one value without commas")
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want a value or a list of values, not %T", v)
}

// configEnviron is what LoadConfig reads: the file's settings (when
// EQUALIZER_CONFIG_FILE names one) overridden by the environment.
func configEnviron(environ map[string]string) (map[string]string, error) {
	path := environ["EQUALIZER_CONFIG_FILE"]
	if strings.TrimSpace(path) == "" {
		return environ, nil
	}
	merged, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	for k, v := range environ {
		merged[k] = v
	}
	return merged, nil
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
