package main

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"gopher-equalizer/limits"
	"gopher-equalizer/proxy"
	"gopher-equalizer/route"
)

// The configuration file's routing sections: pools:, routes: and deny:.
// They are read from the YAML tree by hand rather than decoded into
// structs, so that every mistake is one line naming its exact place
// (routes[2].match.pathprefix: unknown key). Without them the top-level
// settings are one pool "default" and one route that matches everything.

// sectionKeys are the file's keys that are not variables.
var sectionKeys = map[string]bool{"pools": true, "routes": true, "deny": true, "limits": true, "exempt": true}

// poolSpec is a named pool: its settings are the top-level pool settings,
// each defaulting as the variable does.
type poolSpec struct {
	name string
	cfg  Config // only the pool fields are meaningful
}

// limitSpec is a named limit as the file writes it.
type limitSpec struct {
	name        string
	key         string
	capacity    int64
	rate        string
	mode        limits.Mode
	concurrency int64 // > 0: a concurrency limit
	delay       time.Duration
}

// sections is what the routing sections say.
type sections struct {
	pools  []poolSpec // named pools besides "default", in name order
	limits []limitSpec
	routes []route.Spec
	deny   []netip.Prefix
	exempt []netip.Prefix
	// routed: the file has a routes: section (else one catch-all route).
	routed bool
}

// poolKeys are the settings a pool takes, as at top level.
var poolKeys = []string{"backends", "strategy", "health_interval", "health_timeout", "health_path",
	"health_status", "health_fall", "health_rise", "passive_fails"}

// readSections reads the routing sections of EQUALIZER_CONFIG_FILE (none
// without a file).
func readSections(environ map[string]string) (sections, error) {
	var s sections
	path := strings.TrimSpace(environ["EQUALIZER_CONFIG_FILE"])
	if path == "" {
		return s, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("EQUALIZER_CONFIG_FILE: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return s, fmt.Errorf("%s: not valid YAML: %v", path, oneLine(err))
	}
	if err := s.parse(raw); err != nil {
		return s, fmt.Errorf("%s: %v", path, err)
	}
	return s, nil
}

func (s *sections) parse(raw map[string]any) error {
	if v, ok := raw["pools"]; ok {
		pools, ok := v.(map[string]any)
		if !ok && v != nil {
			return fmt.Errorf("pools: want a mapping of pool names to settings")
		}
		names := make([]string, 0, len(pools))
		for name := range pools {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			p, err := parsePool(name, pools[name])
			if err != nil {
				return err
			}
			s.pools = append(s.pools, p)
		}
	}
	if v, ok := raw["routes"]; ok {
		list, ok := v.([]any)
		if !ok && v != nil {
			return fmt.Errorf("routes: want a list of routes")
		}
		s.routed = true
		for i, item := range list {
			r, err := parseRoute(fmt.Sprintf("routes[%d]", i), item)
			if err != nil {
				return err
			}
			s.routes = append(s.routes, r)
		}
	}
	if v, ok := raw["deny"]; ok {
		deny, err := parseCIDRs("deny", v)
		if err != nil {
			return err
		}
		s.deny = deny
	}
	if v, ok := raw["exempt"]; ok {
		exempt, err := parseCIDRs("exempt", v)
		if err != nil {
			return err
		}
		s.exempt = exempt
	}
	if v, ok := raw["limits"]; ok {
		m, ok := v.(map[string]any)
		if !ok && v != nil {
			return fmt.Errorf("limits: want a mapping of limit names to settings")
		}
		for _, name := range slices.Sorted(maps.Keys(m)) {
			l, err := parseLimit(name, m[name])
			if err != nil {
				return err
			}
			s.limits = append(s.limits, l)
		}
	}
	return nil
}

var limitKeys = []string{"key", "capacity", "rate", "mode", "delay", "concurrency"}

func parseLimit(name string, v any) (limitSpec, error) {
	at := "limits." + name
	l := limitSpec{name: name, key: "ip"}
	if err := route.CheckName(name); err != nil {
		return l, fmt.Errorf("%s: %v", at, err)
	}
	if name == "default" {
		return l, fmt.Errorf("%s: the limit default is the top-level bucket_* and client_key settings", at)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return l, fmt.Errorf("%s: want a mapping with %s", at, strings.Join(limitKeys, ", "))
	}
	for _, key := range slices.Sorted(maps.Keys(m)) {
		value := m[key]
		var err error
		switch key {
		case "key":
			if l.key, err = str(value); err == nil {
				_, err = limits.ParseKey(l.key)
			}
		case "capacity":
			n, isInt := wholeNumber(value)
			if !isInt || n < 1 || n > 1<<40 {
				err = fmt.Errorf("want a whole number of tokens from 1 to %d", int64(1)<<40)
			}
			l.capacity = n
		case "rate":
			if l.rate, err = str(value); err == nil {
				_, err = limits.ParseRate(l.rate)
			}
		case "mode":
			switch value {
			case "enforce":
			case "shadow":
				l.mode = limits.Shadow
			default:
				err = fmt.Errorf("want enforce or shadow")
			}
		case "concurrency":
			n, isInt := wholeNumber(value)
			if !isInt || n < 1 || n > 1<<30 {
				err = fmt.Errorf("want the most requests of one key in flight, 1 or more")
			}
			l.concurrency = n
		case "delay":
			var text string
			if text, err = str(value); err == nil {
				l.delay, err = time.ParseDuration(text)
			}
			if err != nil || l.delay < time.Millisecond || l.delay > 10*time.Minute {
				err = fmt.Errorf("want a duration from 1ms to 10m, such as 2s")
			}
		default:
			return l, fmt.Errorf("%s.%s: unknown key (a limit takes %s)", at, key, strings.Join(limitKeys, ", "))
		}
		if err != nil {
			return l, fmt.Errorf("%s.%s: %v", at, key, err)
		}
	}
	switch {
	case l.concurrency > 0 && l.delay > 0:
		return l, fmt.Errorf("%s.delay: a concurrency limit cannot delay", at)
	case l.concurrency > 0 && (l.capacity != 0 || l.rate != ""):
		return l, fmt.Errorf("%s.concurrency: a concurrency limit has no capacity or rate (make those another limit)", at)
	case l.concurrency > 0:
		return l, nil
	case l.capacity == 0:
		return l, fmt.Errorf("%s.capacity: missing (the burst: how many requests at once)", at)
	case l.rate == "":
		return l, fmt.Errorf("%s.rate: missing (such as 100/s, 5/m or 10000/d)", at)
	}
	return l, nil
}

func parsePool(name string, v any) (poolSpec, error) {
	at := "pools." + name
	if err := route.CheckName(name); err != nil {
		return poolSpec{}, fmt.Errorf("%s: %v", at, err)
	}
	if name == route.DefaultPool {
		return poolSpec{}, fmt.Errorf("%s: the pool default is the top-level backends, strategy and health_* settings", at)
	}
	settings, ok := v.(map[string]any)
	if !ok {
		return poolSpec{}, fmt.Errorf("%s: want a mapping of settings (backends, strategy, health_*)", at)
	}
	if _, ok := settings["backends"]; !ok {
		return poolSpec{}, fmt.Errorf("%s.backends: missing: a pool needs at least one backend", at)
	}
	vars := map[string]string{}
	for key, value := range settings {
		if !slices.Contains(poolKeys, key) {
			return poolSpec{}, fmt.Errorf("%s.%s: unknown key (a pool takes %s)", at, key, strings.Join(poolKeys, ", "))
		}
		s, err := scalar(value)
		if err != nil {
			return poolSpec{}, fmt.Errorf("%s.%s: %v", at, key, err)
		}
		vars[fileVar(key)] = s
	}
	cfg, err := LoadConfig(vars)
	if err != nil {
		// Name the place in the file, not the variable.
		msg := err.Error()
		for _, key := range poolKeys {
			msg = strings.ReplaceAll(msg, fileVar(key), at+"."+key)
		}
		return poolSpec{}, fmt.Errorf("%s", msg)
	}
	return poolSpec{name: name, cfg: cfg}, nil
}

var (
	routeKeys = []string{"name", "match", "pool", "strip_prefix", "limits"}
	matchKeys = []string{"host", "path", "path_prefix", "methods", "headers"}
)

func parseRoute(at string, v any) (route.Spec, error) {
	var r route.Spec
	m, ok := v.(map[string]any)
	if !ok {
		return r, fmt.Errorf("%s: want a mapping with %s", at, strings.Join(routeKeys, ", "))
	}
	for key, value := range m {
		var err error
		switch key {
		case "name":
			r.Name, err = str(value)
		case "pool":
			r.Pool, err = str(value)
		case "strip_prefix":
			b, isBool := value.(bool)
			if !isBool {
				err = fmt.Errorf("want true or false")
			}
			r.StripPrefix = b
		case "match":
			r.Match, err = parseMatch(at+".match", value)
			if err != nil {
				return r, err
			}
		case "limits":
			list, isList := value.([]any)
			if !isList && value != nil {
				err = fmt.Errorf("want a list of limit names, such as [per-ip, login], or [] for none")
			}
			r.Limits = []string{}
			for i, item := range list {
				s, serr := str(item)
				if serr != nil {
					return r, fmt.Errorf("%s.limits[%d]: %v", at, i, serr)
				}
				r.Limits = append(r.Limits, s)
			}
		default:
			return r, fmt.Errorf("%s.%s: unknown key (a route takes %s)", at, key, strings.Join(routeKeys, ", "))
		}
		if err != nil {
			return r, fmt.Errorf("%s.%s: %v", at, key, err)
		}
	}
	if _, ok := m["match"]; !ok {
		return r, fmt.Errorf("%s.match: missing (write match: {} for a route that matches everything)", at)
	}
	return r, nil
}

func parseMatch(at string, v any) (route.MatchSpec, error) {
	var ms route.MatchSpec
	if v == nil {
		return ms, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return ms, fmt.Errorf("%s: want a mapping with %s", at, strings.Join(matchKeys, ", "))
	}
	for key, value := range m {
		var err error
		switch key {
		case "host":
			ms.Host, err = str(value)
		case "path":
			ms.Path, err = str(value)
		case "path_prefix":
			ms.PathPrefix, err = str(value)
		case "methods":
			list, isList := value.([]any)
			if !isList {
				err = fmt.Errorf("want a list such as [GET, POST]")
			}
			for i, item := range list {
				s, serr := str(item)
				if serr != nil {
					return ms, fmt.Errorf("%s.methods[%d]: %v", at, i, serr)
				}
				ms.Methods = append(ms.Methods, s)
			}
		case "headers":
			hm, isMap := value.(map[string]any)
			if !isMap {
				err = fmt.Errorf("want a mapping of header names to values")
			}
			ms.Headers = map[string]string{}
			for name, hv := range hm {
				s, serr := str(hv)
				if serr != nil {
					return ms, fmt.Errorf("%s.headers.%s: %v", at, name, serr)
				}
				ms.Headers[name] = s
			}
		default:
			return ms, fmt.Errorf("%s.%s: unknown key (a match takes %s)", at, key, strings.Join(matchKeys, ", "))
		}
		if err != nil {
			return ms, fmt.Errorf("%s.%s: %v", at, key, err)
		}
	}
	return ms, nil
}

// wholeNumber takes a YAML integer.
func wholeNumber(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case uint64:
		return int64(min(x, 1<<62)), true
	}
	return 0, false
}

// str takes a YAML scalar as a string (numbers too: a header value of 1).
func str(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(x), nil
	}
	return "", fmt.Errorf("want a single value, not %T", v)
}

// parseCIDRs reads a list of CIDRs or addresses; IPv4-mapped IPv6 ones are
// unmapped, as client addresses are.
func parseCIDRs(at string, v any) ([]netip.Prefix, error) {
	list, ok := v.([]any)
	if !ok && v != nil {
		return nil, fmt.Errorf("%s: want a list of CIDRs such as [203.0.113.0/24, 2001:db8::/32]", at)
	}
	out := make([]netip.Prefix, 0, len(list))
	for i, item := range list {
		s, err := str(item)
		if err == nil {
			var p netip.Prefix
			if p, err = proxy.ParseCIDR(s); err == nil {
				out = append(out, p)
				continue
			}
		}
		return nil, fmt.Errorf("%s[%d]: %q: want a CIDR such as 203.0.113.0/24 or an address", at, i, fmt.Sprint(item))
	}
	return out, nil
}
