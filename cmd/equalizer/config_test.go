package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	c, err := LoadConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":8080" || c.AdminListen != "127.0.0.1:8090" || len(c.Backends) != 3 || c.Strategy != "round_robin" ||
		c.HealthInterval != 5*time.Second || c.BucketCapacity != 100 || c.RatePerSec() != 100 || c.ClientKey != "ip" ||
		c.PersistInterval != time.Second || c.APIDefaultLimit != 10 || c.ShutdownTimeout != 10*time.Second ||
		c.BackendTimeout != time.Minute || c.StreamIdleTimeout != time.Minute || c.TunnelIdleTimeout != time.Hour ||
		c.MaxBodySize != 0 || c.IPv6Prefix != 128 || c.HealthStatus != "200-399" || c.DatabaseConnectTimeout != 30*time.Second || c.LogFormat != "json" {
		t.Fatalf("defaults %+v", c)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	f := func(name, value string) {
		t.Helper()
		_, err := LoadConfig(map[string]string{name: value})
		if err == nil {
			t.Fatalf("%s=%q accepted", name, value)
		}
		msg := err.Error()
		if !strings.Contains(msg, name) || !strings.Contains(msg, value) || strings.Contains(msg, "\n") {
			t.Fatalf("%s=%q: error %q must be one line naming the variable and the value", name, value, msg)
		}
	}
	f("EQUALIZER_STRATEGY", "fastest")
	f("EQUALIZER_BACKENDS", "localhost:8081")
	f("EQUALIZER_BACKENDS", "ws://a:1")
	f("EQUALIZER_BACKENDS", "http://a:1,ftp://b")
	f("EQUALIZER_BACKENDS", " ")
	f("EQUALIZER_BUCKET_CAPACITY", "0")
	f("EQUALIZER_BUCKET_CAPACITY", "-5")
	f("EQUALIZER_BUCKET_CAPACITY", "lots")
	f("EQUALIZER_BUCKET_REFILL_AMOUNT", "0")
	f("EQUALIZER_BUCKET_REFILL_INTERVAL", "soon")
	f("EQUALIZER_BUCKET_REFILL_INTERVAL", "-1s")
	f("EQUALIZER_HEALTH_INTERVAL", "5")
	f("EQUALIZER_HEALTH_TIMEOUT", "0s")
	f("EQUALIZER_BACKEND_TIMEOUT", "1 minute")
	f("EQUALIZER_SHUTDOWN_TIMEOUT", "x")
	f("EQUALIZER_PERSIST_INTERVAL", "0")
	f("EQUALIZER_CLIENT_KEY", "cookie")
	f("EQUALIZER_CLIENT_KEY", "header:")
	f("EQUALIZER_TRUSTED_PROXIES", "10.0.0.0/40")
	f("EQUALIZER_API_DEFAULT_LIMIT", "0")
	f("EQUALIZER_API_DEFAULT_LIMIT", "5000")
	f("EQUALIZER_MAX_BUCKETS", "0")
	f("EQUALIZER_MAX_BODY_SIZE", "-1")
	f("EQUALIZER_MAX_CONNS_PER_BACKEND", "0")
	f("EQUALIZER_HEALTH_PATH", "health")
	f("EQUALIZER_LOG_LEVEL", "loud")
	f("EQUALIZER_LOG_FORMAT", "xml")
	f("EQUALIZER_RATELIMIT_HEADERS", "maybe")
	f("EQUALIZER_PASSIVE_FAILS", "-1")
	// Strict: set-but-empty, ports out of range, addresses and URLs that
	// would only fail once something started.
	for _, name := range []string{"EQUALIZER_BACKENDS", "EQUALIZER_STRATEGY", "EQUALIZER_LOG_LEVEL",
		"EQUALIZER_ADMIN_LISTEN", "EQUALIZER_LISTEN", "EQUALIZER_HEALTH_INTERVAL", "EQUALIZER_ACCESS_LOG"} {
		f(name, "")
	}
	f("EQUALIZER_LISTEN", "127.0.0.1:99999")
	f("EQUALIZER_LISTEN", "8080")
	f("EQUALIZER_ADMIN_LISTEN", "localhost")
	f("EQUALIZER_DATABASE_URL", "notaurl")
	f("EQUALIZER_BACKENDS", "http://127.0.0.1:99999")
	f("EQUALIZER_BACKENDS", "http://127.0.0.1:0")
	f("EQUALIZER_REQUEST_ID", "X Request ID")
	f("EQUALIZER_MAX_HEADER_SIZE", "99999999999999999999")
}

// TestBadValuesSayWhatIsValid: the line tells what would be right.
func TestBadValuesSayWhatIsValid(t *testing.T) {
	for _, c := range []struct{ name, value, hint string }{
		{"EQUALIZER_HEALTH_INTERVAL", "5", "such as 5s"},
		{"EQUALIZER_RATELIMIT_HEADERS", "maybe", "true or false"},
		{"EQUALIZER_BACKENDS", "", "unset it for the default"},
		{"EQUALIZER_LISTEN", "127.0.0.1:99999", "0 to 65535"},
		{"EQUALIZER_BACKENDS", "http://127.0.0.1:99999", "1 to 65535"},
		{"EQUALIZER_DATABASE_URL", "notaurl", "postgres://"},
	} {
		_, err := LoadConfig(map[string]string{c.name: c.value})
		if err == nil || !strings.Contains(err.Error(), c.hint) {
			t.Errorf("%s=%q: %v, want a hint like %q", c.name, c.value, err, c.hint)
		}
	}
	// Accepted: sizes past 32 bits, request IDs turned off.
	for name, value := range map[string]string{"EQUALIZER_MAX_BODY_SIZE": "2147483648", "EQUALIZER_REQUEST_ID": "", "EQUALIZER_LISTEN": ":0"} {
		if _, err := LoadConfig(map[string]string{name: value}); err != nil {
			t.Errorf("%s=%q refused: %v", name, value, err)
		}
	}
}

func TestHelpListsEveryVariable(t *testing.T) {
	var buf bytes.Buffer
	printUsage(&buf)
	out := buf.String()
	for _, name := range []string{"EQUALIZER_LISTEN", "EQUALIZER_BACKENDS", "EQUALIZER_DATABASE_URL", "EQUALIZER_MAX_BUCKETS", "EQUALIZER_LOG_FORMAT"} {
		if !strings.Contains(out, name) {
			t.Errorf("-h does not list %s", name)
		}
	}
	if !strings.Contains(out, "default 127.0.0.1:8090") {
		t.Errorf("-h does not show defaults")
	}
}

// TestBinaryArgumentsAndExitCodes: stray arguments are refused, -h goes
// to stdout, and mistakes found before start-up exit 2 with one plain line.
func TestBinaryArgumentsAndExitCodes(t *testing.T) {
	run := func(env []string, args ...string) (int, string, string) {
		cmd := exec.Command(binary(t), args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if exit, ok := err.(*exec.ExitError); ok {
			code = exit.ExitCode()
		}
		return code, stdout.String(), stderr.String()
	}
	if code, out, errOut := run(nil, "-h"); code != 0 || !strings.Contains(out, "EQUALIZER_BACKENDS") || errOut != "" {
		t.Errorf("-h: exit %d, stdout %d bytes, stderr %q", code, len(out), errOut)
	}
	if code, _, errOut := run(nil, "demo"); code != 2 || !strings.Contains(errOut, `unexpected argument "demo"`) {
		t.Errorf("stray argument: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(nil, "-nope"); code != 2 || !strings.Contains(errOut, "-nope") {
		t.Errorf("unknown flag: exit %d, %q", code, errOut)
	}
	for _, env := range [][]string{
		{"EQUALIZER_LISTEN=127.0.0.1:99999"},
		{"EQUALIZER_DATABASE_URL=notaurl"},
		{"EQUALIZER_BACKENDS="},
		{"EQUALIZER_HEALTH_INTERVAL=5"},
	} {
		code, _, errOut := run(env)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 2 || len(lines) != 1 || strings.HasPrefix(lines[0], "{") || !strings.Contains(lines[0], strings.Split(env[0], "=")[0]) {
			t.Errorf("%v: exit %d, %q", env, code, errOut)
		}
	}
}

func TestBinaryRefusesBadConfigWithOneLine(t *testing.T) {
	cmd := exec.Command(binary(t))
	cmd.Env = []string{"EQUALIZER_STRATEGY=fastest"}
	out, err := cmd.CombinedOutput()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() == 0 {
		t.Fatalf("exit: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `EQUALIZER_STRATEGY="fastest"`) {
		t.Fatalf("output %q", out)
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := func(body string) string {
		p := dir + "/c.yaml"
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := file("backends:\n  - http://10.0.0.5:8080 weight=3\n  - http://10.0.0.6:8080\nstrategy: p2c\nhealth_interval: 2s\nbucket_capacity: 50\n")
	merged, err := configEnviron(map[string]string{"EQUALIZER_CONFIG_FILE": p, "EQUALIZER_STRATEGY": "hash"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(merged)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Backends) != 2 || c.Backends[0] != "http://10.0.0.5:8080 weight=3" || c.HealthInterval != 2*time.Second ||
		c.BucketCapacity != 50 || c.Strategy != "hash" {
		t.Fatalf("%+v (the environment must win over the file)", c)
	}
	for body, want := range map[string]string{
		"strategy: p2c\nbogus: 1\n":              `unknown setting "bogus"`,
		"health:\n  interval: 5s\n":              "health",
		"backends: [[a]]\n":                      "backends",
		"backends:\n  - http://a:1,http://b:2\n": "without commas",
		"strategy: [\n":                          "not valid YAML",
	} {
		_, err := configEnviron(map[string]string{"EQUALIZER_CONFIG_FILE": file(body)})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", body, err, want)
		}
	}
	if _, err := configEnviron(map[string]string{"EQUALIZER_CONFIG_FILE": dir + "/missing.yaml"}); err == nil {
		t.Error("a missing file was accepted")
	}
	// A valid file with a bad value fails like the environment would.
	merged, _ = configEnviron(map[string]string{"EQUALIZER_CONFIG_FILE": file("health_interval: 5\n")})
	if _, err := LoadConfig(merged); err == nil || !strings.Contains(err.Error(), "EQUALIZER_HEALTH_INTERVAL") {
		t.Errorf("health_interval: 5 in the file: %v", err)
	}
}
