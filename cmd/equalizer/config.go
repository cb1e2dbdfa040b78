package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"gopher-equalizer/pool"
	"gopher-equalizer/proxy"
	"gopher-equalizer/upstream"
)

// Config is every setting, read once from the environment at start-up.
// The help tag is what `equalizer -h` prints.
type Config struct {
	ConfigFile string `env:"EQUALIZER_CONFIG_FILE" help:"YAML file with these settings in lower case without the prefix (health_interval: 5s); the environment wins; SIGHUP reloads it"`

	Listen         string        `env:"EQUALIZER_LISTEN" envDefault:":8080" help:"proxy listener"`
	AdminListen    string        `env:"EQUALIZER_ADMIN_LISTEN" envDefault:"127.0.0.1:8090" help:"admin listener: /buckets, /healthz, /readyz, /metrics"`
	AdminToken     string        `env:"EQUALIZER_ADMIN_TOKEN" help:"when set, admin calls need Authorization: Bearer <token>"`
	AdminHosts     []string      `env:"EQUALIZER_ADMIN_HOSTS" help:"host names the admin API answers besides IP addresses and localhost (DNS rebinding guard), e.g. equalizer:8090"`
	Backends       []string      `env:"EQUALIZER_BACKENDS" envDefault:"http://localhost:8081,http://localhost:8082,http://localhost:8083" help:"comma-separated backend URLs, each optionally followed by a space and weight=N (1-1000): http://10.0.0.5:8080 weight=3,http://10.0.0.6:8080"`
	Strategy       string        `env:"EQUALIZER_STRATEGY" envDefault:"round_robin" help:"backend selection: round_robin (smooth weighted), random (weighted), least_conn, p2c or hash (by client key)"`
	HealthInterval time.Duration `env:"EQUALIZER_HEALTH_INTERVAL" envDefault:"5s" help:"active health check period"`
	HealthTimeout  time.Duration `env:"EQUALIZER_HEALTH_TIMEOUT" envDefault:"1s" help:"one probe's timeout"`
	HealthPath     string        `env:"EQUALIZER_HEALTH_PATH" envDefault:"/" help:"probe path; each probe reads the answer (64 KiB of body at most) on a connection of its own; grpc or grpc:SERVICE asks the gRPC health protocol (h2c:// and https:// backends)"`
	HealthStatus   string        `env:"EQUALIZER_HEALTH_STATUS" envDefault:"200-399" help:"statuses that count as healthy: codes and ranges, e.g. 200-399 or 200,204"`
	HealthFall     int           `env:"EQUALIZER_HEALTH_FALL" envDefault:"1" help:"failed probes in a row that take a backend out"`
	HealthRise     int           `env:"EQUALIZER_HEALTH_RISE" envDefault:"1" help:"good probes in a row that bring a backend back"`
	PassiveFails   int           `env:"EQUALIZER_PASSIVE_FAILS" envDefault:"3" help:"connection failures in a row that take a backend out until its next good probe; 0 disables"`

	RateLimit            bool          `env:"EQUALIZER_RATE_LIMIT" envDefault:"true" help:"false forwards without charging buckets (for comparisons)"`
	BucketCapacity       int64         `env:"EQUALIZER_BUCKET_CAPACITY" envDefault:"100" help:"capacity of a bucket created for an unknown client"`
	BucketRefillAmount   int64         `env:"EQUALIZER_BUCKET_REFILL_AMOUNT" envDefault:"100" help:"tokens added per refill interval (continuous)"`
	BucketRefillInterval time.Duration `env:"EQUALIZER_BUCKET_REFILL_INTERVAL" envDefault:"1s" help:"refill interval"`
	MaxBuckets           int           `env:"EQUALIZER_MAX_BUCKETS" envDefault:"1000000" help:"most buckets in memory; full automatic buckets are evicted first"`
	ClientKey            string        `env:"EQUALIZER_CLIENT_KEY" envDefault:"ip" help:"ip, or header:<Name> to key buckets by a request header"`
	TrustedProxies       []string      `env:"EQUALIZER_TRUSTED_PROXIES" help:"CIDRs whose X-Forwarded-For is trusted for the client IP"`
	IPv6Prefix           int           `env:"EQUALIZER_IPV6_PREFIX" envDefault:"128" help:"IPv6 clients are keyed by this prefix length (1..128; 64 is recommended for public traffic)"`
	RateLimitHeaders     bool          `env:"EQUALIZER_RATELIMIT_HEADERS" envDefault:"false" help:"add RateLimit-* headers to forwarded responses too"`

	DatabaseURL            string        `env:"EQUALIZER_DATABASE_URL" help:"PostgreSQL URL; empty keeps buckets in memory only"`
	DatabaseConnectTimeout time.Duration `env:"EQUALIZER_DATABASE_CONNECT_TIMEOUT" envDefault:"30s" help:"how long start-up retries an unreachable database"`
	PersistInterval        time.Duration `env:"EQUALIZER_PERSIST_INTERVAL" envDefault:"1s" help:"the longest a bucket's spending waits to be written (the persister runs at the smaller of this and EQUALIZER_SYNC_INTERVAL)"`
	SyncInterval           time.Duration `env:"EQUALIZER_SYNC_INTERVAL" envDefault:"200ms" help:"how often an instance adds its spending to PostgreSQL and adopts the shared state"`
	BucketTTL              time.Duration `env:"EQUALIZER_BUCKET_TTL" envDefault:"24h" help:"rows of automatic buckets full and unused this long, and tombstones this old, are purged"`
	APIDefaultLimit        int           `env:"EQUALIZER_API_DEFAULT_LIMIT" envDefault:"10" help:"page size of GET /buckets without limit"`

	ShutdownTimeout    time.Duration `env:"EQUALIZER_SHUTDOWN_TIMEOUT" envDefault:"10s" help:"drain time on SIGINT/SIGTERM"`
	BackendTimeout     time.Duration `env:"EQUALIZER_BACKEND_TIMEOUT" envDefault:"60s" help:"time until the backend's response head (after the request was sent); past it the client gets 504"`
	StreamIdleTimeout  time.Duration `env:"EQUALIZER_STREAM_IDLE_TIMEOUT" envDefault:"60s" help:"longest pause between two reads on either side while a body streams"`
	TunnelIdleTimeout  time.Duration `env:"EQUALIZER_TUNNEL_IDLE_TIMEOUT" envDefault:"1h" help:"an Upgrade tunnel (WebSocket) silent both ways this long is closed"`
	DialTimeout        time.Duration `env:"EQUALIZER_DIAL_TIMEOUT" envDefault:"3s" help:"TCP connect timeout to a backend"`
	MaxConnsPerBackend int           `env:"EQUALIZER_MAX_CONNS_PER_BACKEND" envDefault:"512" help:"most open connections to one backend"`
	BackendIdleTimeout time.Duration `env:"EQUALIZER_BACKEND_IDLE_TIMEOUT" envDefault:"60s" help:"an idle backend connection is closed after this"`
	ReadTimeout        time.Duration `env:"EQUALIZER_READ_TIMEOUT" envDefault:"60s" help:"time to read a client's request head; its body then streams under EQUALIZER_STREAM_IDLE_TIMEOUT"`
	WriteTimeout       time.Duration `env:"EQUALIZER_WRITE_TIMEOUT" envDefault:"60s" help:"time to write a response to a client"`
	IdleTimeout        time.Duration `env:"EQUALIZER_IDLE_TIMEOUT" envDefault:"90s" help:"an idle client keep-alive connection is closed after this"`
	MaxBodySize        int64         `env:"EQUALIZER_MAX_BODY_SIZE" envDefault:"0" help:"largest request body in bytes, 0 = unlimited; a larger one gets 413; responses are never cut"`
	MaxHeaderSize      int           `env:"EQUALIZER_MAX_HEADER_SIZE" envDefault:"8192" help:"largest request header in bytes; a larger one gets 431"`
	MaxClientConns     int           `env:"EQUALIZER_MAX_CLIENT_CONNS" envDefault:"262144" help:"most concurrent client connections"`
	HTTP2              bool          `env:"EQUALIZER_HTTP2" envDefault:"true" help:"HTTP/2 for clients: h2 by ALPN on the TLS listener, h2c with prior knowledge (gRPC) on the cleartext one"`
	HTTP2MaxStreams    int           `env:"EQUALIZER_HTTP2_MAX_STREAMS" envDefault:"128" help:"most streams open at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS)"`

	RequestID string `env:"EQUALIZER_REQUEST_ID" envDefault:"X-Request-ID" help:"request ID header: a client's sane value is kept, otherwise one is made; sent to the backend, returned to the client, logged; empty turns it off"`
	AccessLog string `env:"EQUALIZER_ACCESS_LOG" envDefault:"off" help:"off, stdout, or a file path: one JSON line per request; SIGUSR1 reopens the file (logrotate)"`

	TLSCert   string `env:"EQUALIZER_TLS_CERT" help:"PEM certificate (chain) file: the proxy listener speaks TLS 1.2+; reloaded on SIGHUP"`
	TLSKey    string `env:"EQUALIZER_TLS_KEY" help:"PEM private key file of EQUALIZER_TLS_CERT"`
	BackendCA string `env:"EQUALIZER_BACKEND_CA" help:"PEM file of the authorities that sign https:// backends' certificates; empty: the system roots"`

	Pprof bool `env:"EQUALIZER_PPROF" envDefault:"false" help:"serve /debug/pprof on the admin listener"`

	DemoHost string `env:"EQUALIZER_DEMO_HOST" envDefault:"127.0.0.1" help:"address the -demo backends listen on (ports 8081-8083)"`

	LogLevel  string `env:"EQUALIZER_LOG_LEVEL" envDefault:"info" help:"trace, debug, info, warn or error"`
	LogFormat string `env:"EQUALIZER_LOG_FORMAT" envDefault:"json" help:"json or console"`
}

// LoadConfig reads the configuration from environ (a map so tests need not
// touch the process environment) and checks it. The error is one line that
// names the variable and the value.
func LoadConfig(environ map[string]string) (Config, error) {
	var c Config
	if err := refuseEmpty(environ); err != nil {
		return c, err
	}
	err := env.ParseWithOptions(&c, env.Options{Environment: environ})
	if err != nil {
		var agg env.AggregateError
		if errors.As(err, &agg) && len(agg.Errors) > 0 {
			err = agg.Errors[0]
		}
		var pe env.ParseError
		if errors.As(err, &pe) {
			name := envName(pe.Name)
			return c, fmt.Errorf("invalid %s=%q: %s", name, environ[name], want(pe))
		}
		return c, err
	}
	if v, ok := environ["EQUALIZER_REQUEST_ID"]; ok && strings.TrimSpace(v) == "" {
		c.RequestID = "" // set and empty: off (env would take the default)
	}
	return c, c.validate(environ)
}

// emptyAllowed are the variables whose empty value means something (off).
var emptyAllowed = map[string]bool{"EQUALIZER_REQUEST_ID": true}

// refuseEmpty rejects a variable that is set but empty when it needs a
// value: env would silently take its default, which is never what an
// operator who wrote EQUALIZER_BACKENDS= meant.
func refuseEmpty(environ map[string]string) error {
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		def := f.Tag.Get("envDefault")
		v, set := environ[name]
		if set && strings.TrimSpace(v) == "" && def != "" && !emptyAllowed[name] {
			return fmt.Errorf("invalid %s=%q: empty; give a value or unset it for the default %s", name, v, def)
		}
	}
	return nil
}

// want says what a value that did not parse should look like.
func want(pe env.ParseError) string {
	switch pe.Type {
	case reflect.TypeFor[time.Duration]():
		return "want a duration with a unit, such as 5s, 500ms or 1m"
	case reflect.TypeFor[bool]():
		return "want true or false"
	case reflect.TypeFor[int](), reflect.TypeFor[int64]():
		return "want a whole number within 64 bits"
	}
	if inner := errors.Unwrap(pe.Err); inner != nil {
		return inner.Error()
	}
	return pe.Err.Error()
}

func envName(field string) string {
	f, _ := reflect.TypeFor[Config]().FieldByName(field)
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return name
}

func (c *Config) validate(environ map[string]string) error {
	bad := func(field string, why string) error {
		name := envName(field)
		v, ok := environ[name]
		if !ok {
			v = reflect.ValueOf(*c).FieldByName(field).String()
		}
		return fmt.Errorf("invalid %s=%q: %s", name, v, why)
	}
	for field, addr := range map[string]string{"Listen": c.Listen, "AdminListen": c.AdminListen} {
		if err := checkListen(addr); err != nil {
			return bad(field, err.Error())
		}
	}
	if c.DatabaseURL != "" {
		if _, err := pgconn.ParseConfig(c.DatabaseURL); err != nil {
			return bad("DatabaseURL", "not a PostgreSQL URL such as postgres://user:pass@host:5432/db?sslmode=disable")
		}
	}
	if len(c.Backends) == 0 || strings.TrimSpace(strings.Join(c.Backends, "")) == "" {
		return bad("Backends", "at least one backend URL is needed")
	}
	for _, raw := range c.Backends {
		if _, err := pool.NewBackend(strings.TrimSpace(raw), upstream.Options{}); err != nil {
			return bad("Backends", err.Error())
		}
	}
	if _, err := pool.NewStrategy(c.Strategy); err != nil {
		return bad("Strategy", err.Error())
	}
	if _, err := proxy.ParseClientKey(c.ClientKey, nil, 128); err != nil {
		return bad("ClientKey", err.Error())
	}
	if _, err := proxy.ParseClientKey("ip", c.TrustedProxies, 128); err != nil {
		return bad("TrustedProxies", err.Error())
	}
	if c.IPv6Prefix < 1 || c.IPv6Prefix > 128 {
		return bad("IPv6Prefix", "must be a prefix length between 1 and 128")
	}
	if _, err := pool.ParseStatusSet(c.HealthStatus); err != nil {
		return bad("HealthStatus", err.Error())
	}
	if _, grpc := pool.GRPCHealthService(c.HealthPath); !grpc && !strings.HasPrefix(c.HealthPath, "/") {
		return bad("HealthPath", "must start with /, or be grpc or grpc:SERVICE (the gRPC health protocol)")
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil || c.LogLevel == "" {
		return bad("LogLevel", "want trace, debug, info, warn or error")
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		return bad("LogFormat", "want json or console")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("TLSCert", "EQUALIZER_TLS_CERT and EQUALIZER_TLS_KEY go together: set both or neither")
	}
	if c.TLSCert != "" {
		if _, err := loadCert(c.TLSCert, c.TLSKey); err != nil {
			return bad("TLSCert", "cannot load the certificate and key: "+oneLine(err))
		}
	}
	if _, err := loadCAs(c.BackendCA); err != nil {
		return bad("BackendCA", oneLine(err))
	}
	if c.RequestID != "" && !proxy.ValidHeaderName(c.RequestID) {
		return bad("RequestID", "must be a header name such as X-Request-ID, or empty for none")
	}
	if strings.TrimSpace(c.AccessLog) == "" {
		return bad("AccessLog", "want off, stdout or a file path")
	}
	if c.PassiveFails < 0 {
		return bad("PassiveFails", "must be 0 (off) or more")
	}
	if c.APIDefaultLimit < 1 || c.APIDefaultLimit > 1000 {
		return bad("APIDefaultLimit", "must be between 1 and 1000")
	}
	for field, v := range map[string]int64{
		"BucketCapacity": c.BucketCapacity, "BucketRefillAmount": c.BucketRefillAmount,
		"MaxBuckets": int64(c.MaxBuckets), "MaxConnsPerBackend": int64(c.MaxConnsPerBackend),
		"MaxHeaderSize":  int64(c.MaxHeaderSize),
		"MaxClientConns": int64(c.MaxClientConns), "HealthFall": int64(c.HealthFall), "HealthRise": int64(c.HealthRise),
	} {
		if v <= 0 {
			return bad(field, "must be greater than 0")
		}
	}
	if c.MaxBodySize < 0 {
		return bad("MaxBodySize", "must be 0 (unlimited) or more")
	}
	if c.HTTP2MaxStreams < 1 || c.HTTP2MaxStreams > 10000 {
		return bad("HTTP2MaxStreams", "must be between 1 and 10000")
	}
	if c.BucketCapacity > 1_000_000_000 {
		return bad("BucketCapacity", "must be at most 1000000000")
	}
	if float64(c.BucketCapacity)/c.RatePerSec() > 1e9 {
		return bad("BucketRefillInterval", fmt.Sprintf("a full refill of %d tokens at %d per %s would take over 1e9 seconds",
			c.BucketCapacity, c.BucketRefillAmount, c.BucketRefillInterval))
	}
	for field, d := range map[string]time.Duration{
		"HealthInterval": c.HealthInterval, "HealthTimeout": c.HealthTimeout,
		"BucketRefillInterval": c.BucketRefillInterval, "DatabaseConnectTimeout": c.DatabaseConnectTimeout,
		"PersistInterval": c.PersistInterval, "ShutdownTimeout": c.ShutdownTimeout,
		"SyncInterval": c.SyncInterval, "BucketTTL": c.BucketTTL,
		"BackendTimeout": c.BackendTimeout, "DialTimeout": c.DialTimeout, "BackendIdleTimeout": c.BackendIdleTimeout,
		"StreamIdleTimeout": c.StreamIdleTimeout, "TunnelIdleTimeout": c.TunnelIdleTimeout,
		"ReadTimeout": c.ReadTimeout, "WriteTimeout": c.WriteTimeout, "IdleTimeout": c.IdleTimeout,
	} {
		if d <= 0 {
			return bad(field, "must be a positive duration such as 500ms or 5s")
		}
	}
	return nil
}

// checkListen accepts host:port with a numeric port 0..65535 (0: any free
// port), the forms net.Listen takes; the host may be empty (all addresses).
func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port such as :8080 or 127.0.0.1:8090")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("the port must be a number from 0 to 65535")
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q is not a host name or address", host)
	}
	return nil
}

// RatePerSec is the refill rate of default buckets.
func (c *Config) RatePerSec() float64 {
	return float64(c.BucketRefillAmount) / c.BucketRefillInterval.Seconds()
}

// printUsage writes every variable with its default and meaning.
func printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: equalizer [-demo]\n\n")
	fmt.Fprintf(w, "  -demo  also start three demo backends on 127.0.0.1:8081-8083\n\n")
	fmt.Fprintf(w, "Configuration is read from these environment variables:\n\n")
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		f := t.Field(i)
		def := f.Tag.Get("envDefault")
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  %-36s %s\n  %-36s default %s\n", f.Tag.Get("env"), f.Tag.Get("help"), "", def)
	}
}
