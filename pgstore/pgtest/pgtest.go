// Package pgtest gives tests a real PostgreSQL. It uses
// EQUALIZER_TEST_DATABASE_URL when set; otherwise it starts a throwaway
// cluster with the local PostgreSQL binaries in a temporary directory on a
// free port, and removes it when the tests end. Without PostgreSQL a test
// is skipped with a loud message, except under CI=true, where it fails.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a running PostgreSQL that tests may stop and start again.
type Cluster struct {
	URL     string // admin URL, database postgres
	dataDir string
	bin     string
	port    int
	owner   *user.User // nil when the tests do not run as root
	dir     string
}

var (
	once    sync.Once
	shared  *Cluster
	initErr error
	dbSeq   atomic.Int64
)

// Start returns the package's cluster, starting it on first use.
// Call Stop from TestMain after m.Run.
func Start() (*Cluster, error) {
	once.Do(func() {
		if url := os.Getenv("EQUALIZER_TEST_DATABASE_URL"); url != "" {
			shared = &Cluster{URL: url}
			return
		}
		shared, initErr = startCluster()
	})
	return shared, initErr
}

// Stop removes the throwaway cluster, if this package started one.
func Stop() {
	if shared != nil && shared.dataDir != "" {
		shared.pgctl("stop", "-m", "immediate") //nolint:errcheck
		os.RemoveAll(shared.dir)
	}
}

// Require returns the cluster or skips (fails under CI=true) the test.
func Require(t testing.TB) *Cluster {
	t.Helper()
	c, err := Start()
	if err != nil {
		msg := fmt.Sprintf("\n\n*** PostgreSQL is not available, test skipped: %v ***\n*** Set EQUALIZER_TEST_DATABASE_URL or install the PostgreSQL server binaries. ***\n", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return c
}

// NewDatabase creates an empty database for one test and returns its URL.
// It is dropped when the test ends.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("eqtest_%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, c.URL); err == nil {
			conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") //nolint:errcheck
			conn.Close(ctx)
		}
	})
	return replaceDB(c.URL, name)
}

func replaceDB(url, name string) string {
	base, query, _ := strings.Cut(url, "?")
	i := strings.LastIndex(base, "/")
	out := base[:i+1] + name
	if query != "" {
		out += "?" + query
	}
	return out
}

// CanRestart reports whether StopServer and StartServer work (only for a
// cluster this package started).
func (c *Cluster) CanRestart() bool { return c.dataDir != "" }

// StopServer stops PostgreSQL, as an outage.
func (c *Cluster) StopServer() error { return c.pgctl("stop", "-m", "fast", "-w") }

// StartServer starts it again on the same port.
func (c *Cluster) StartServer() error {
	return c.pgctl("start", "-w", "-l", filepath.Join(c.dir, "server.log"),
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", c.port, c.dir))
}

func binDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no initdb found (pg_config --bindir, /usr/lib/postgresql/*/bin)")
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func startCluster() (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "equalizer-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, dir: dir, dataDir: filepath.Join(dir, "data")}
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: the cluster belongs to postgres.
		if c.owner, err = user.Lookup("postgres"); err != nil {
			return nil, fmt.Errorf("running as root and there is no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(c.owner.Uid)
		gid, _ := strconv.Atoi(c.owner.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		os.Chmod(dir, 0o755) //nolint:errcheck
	}
	if out, err := c.run(filepath.Join(bin, "initdb"), "-D", c.dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	for attempt := 0; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
		if err = c.StartServer(); err == nil {
			break
		}
		if attempt == 3 {
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pg_ctl start: %v: %s", err, log)
		}
	}
	c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
	return c, nil
}

func (c *Cluster) pgctl(args ...string) error {
	out, err := c.run(filepath.Join(c.bin, "pg_ctl"), append([]string{"-D", c.dataDir}, args...)...)
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// run runs a PostgreSQL program, as the postgres user when we are root.
func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	var cmd *exec.Cmd
	if c.owner != nil {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	} else {
		cmd = exec.Command(name, args...)
	}
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}
