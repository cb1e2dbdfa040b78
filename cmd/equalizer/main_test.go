package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"gopher-equalizer/pgstore/pgtest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string

	plainOnce sync.Once
	plainPath string
	plainErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary builds the real equalizer once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "equalizer-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "equalizer")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// plainBinary builds the equalizer without the race detector, for tests
// that measure memory or move gigabytes.
func plainBinary(t *testing.T) string {
	t.Helper()
	binary(t) // makes buildDir
	plainOnce.Do(func() {
		plainPath = filepath.Join(buildDir, "equalizer-plain")
		out, err := exec.Command("go", "build", "-o", plainPath, ".").CombinedOutput()
		if err != nil {
			plainErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if plainErr != nil {
		t.Fatal(plainErr)
	}
	return plainPath
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// freeAddrs returns n distinct free addresses: the listeners stay open
// until all are chosen, so the kernel cannot hand out one port twice.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		out = append(out, ln.Addr().String())
	}
	return out
}

// instance is a running equalizer process.
type instance struct {
	cmd    *exec.Cmd
	proxy  string
	admin  string
	logs   *strings.Builder
	logsMu *sync.Mutex
	done   chan error
	token  string // the admin token, if any
}

// startInstance runs the binary with env plus fresh listen addresses and
// waits until /readyz answers 200.
func startInstance(t *testing.T, env map[string]string) *instance {
	t.Helper()
	return startInstanceOf(t, binary(t), env)
}

// startInstanceOf is startInstance with a given binary.
func startInstanceOf(t *testing.T, bin string, env map[string]string) *instance {
	t.Helper()
	in := launch(t, bin, env)
	in.waitReady(t)
	return in
}

// launch starts the binary with env plus fresh listen addresses, without
// waiting for it.
func launch(t *testing.T, bin string, env map[string]string) *instance {
	t.Helper()
	addrs := freeAddrs(t, 2)
	in := &instance{proxy: addrs[0], admin: addrs[1], logs: &strings.Builder{}, logsMu: &sync.Mutex{}, done: make(chan error, 1),
		token: env["EQUALIZER_ADMIN_TOKEN"]}
	vars := []string{"EQUALIZER_LISTEN=" + in.proxy, "EQUALIZER_ADMIN_LISTEN=" + in.admin, "PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	in.cmd = exec.Command(bin)
	in.cmd.Env = vars
	stderr, _ := in.cmd.StderrPipe()
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			in.logsMu.Lock()
			in.logs.WriteString(s.Text() + "\n")
			in.logsMu.Unlock()
		}
		in.done <- in.cmd.Wait()
	}()
	t.Cleanup(func() {
		if in.cmd.ProcessState == nil {
			in.cmd.Process.Kill() //nolint:errcheck
		}
		if t.Failed() {
			t.Logf("equalizer log:\n%s", in.log())
		}
	})
	return in
}

// waitReady waits until /readyz answers 200 (or says only that no backend
// is healthy).
func (in *instance) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "http://"+in.admin+"/readyz", nil)
		if in.token != "" {
			req.Header.Set("Authorization", "Bearer "+in.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// Up, though maybe without a healthy backend: some tests
			// want none.
			if resp.StatusCode == 200 || strings.Contains(string(body), "no healthy backend") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("equalizer not ready: %v\n%s", err, in.log())
		}
		select {
		case err := <-in.done:
			in.done <- err // for stop
			t.Fatalf("equalizer exited before it was ready: %v\n%s", err, in.log())
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (in *instance) log() string {
	in.logsMu.Lock()
	defer in.logsMu.Unlock()
	return in.logs.String()
}

// stop sends sig and returns the exit code.
func (in *instance) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	in.cmd.Process.Signal(sig) //nolint:errcheck
	select {
	case <-in.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("equalizer did not stop after %v", sig)
	}
	return in.cmd.ProcessState.ExitCode()
}

func (in *instance) get(t *testing.T, path string, header ...string) (int, http.Header, string) {
	t.Helper()
	return in.call(t, "GET", path, header...)
}

// call sends one request without a body to the proxy.
func (in *instance) call(t *testing.T, method, path string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+in.proxy+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

func (in *instance) adminCall(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+in.admin+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if in.token != "" {
		req.Header.Set("Authorization", "Bearer "+in.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// startBackend serves handler on a free 127.0.0.1 port.
func startBackend(t *testing.T, handler fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: handler}
	go s.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { _ = s.Shutdown() })
	return "http://" + ln.Addr().String()
}

func okBackend(t *testing.T) string {
	return startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
}

func TestLimitThen429ThenAdminPatch(t *testing.T) {
	in := startInstance(t, map[string]string{
		"EQUALIZER_BACKENDS":               okBackend(t),
		"EQUALIZER_BUCKET_CAPACITY":        "5",
		"EQUALIZER_BUCKET_REFILL_AMOUNT":   "1",
		"EQUALIZER_BUCKET_REFILL_INTERVAL": "1h",
		"EQUALIZER_CLIENT_KEY":             "header:X-Client",
	})
	for i := range 5 {
		if code, _, _ := in.get(t, "/", "X-Client", "alice"); code != 200 {
			t.Fatalf("request %d: %d", i, code)
		}
	}
	code, h, body := in.get(t, "/", "X-Client", "alice")
	if code != 429 || body != "rate limit exceeded\n" || h.Get("Retry-After") == "" || h.Get("RateLimit-Limit") != "5" ||
		h.Get("RateLimit-Remaining") != "0" || h.Get("RateLimit-Reset") == "" {
		t.Fatalf("exhausted: %d %q %v", code, body, h)
	}
	// Another client is not affected.
	if code, _, _ := in.get(t, "/", "X-Client", "bob"); code != 200 {
		t.Fatalf("bob: %d", code)
	}
	if code, body := in.adminCall(t, "PATCH", "/buckets/alice", `{"tokens":3}`); code != 204 {
		t.Fatalf("PATCH: %d %s", code, body)
	}
	for i := range 3 {
		if code, _, _ := in.get(t, "/", "X-Client", "alice"); code != 200 {
			t.Fatalf("after PATCH, request %d: %d", i, code)
		}
	}
	if code, _, _ := in.get(t, "/", "X-Client", "alice"); code != 429 {
		t.Fatalf("4th request after PATCH tokens=3: %d", code)
	}
	// The admin API is not on the proxy port: /buckets is forwarded.
	if code, _, body := in.get(t, "/buckets", "X-Client", "carol"); code != 200 || body != "ok" {
		t.Fatalf("GET /buckets on the proxy port: %d %q", code, body)
	}
	if code := in.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestSIGTERMLetsInFlightRequestFinish(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	backend := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			entered <- struct{}{}
			<-release
		}
		ctx.SetBodyString("done")
	})
	in := startInstance(t, map[string]string{"EQUALIZER_BACKENDS": backend})
	result := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + in.proxy + "/slow")
		if err != nil {
			result <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- fmt.Sprintf("%d %s", resp.StatusCode, body)
	}()
	<-entered
	in.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck
	// New connections are refused once the listener closes.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", in.proxy, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("proxy still accepts connections after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if got := <-result; got != "200 done" {
		t.Fatalf("in-flight request: %s", got)
	}
	select {
	case <-in.done:
	case <-time.After(20 * time.Second):
		t.Fatal("did not exit")
	}
	if code := in.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// newCmd prepares the binary with exactly env (and PATH).
func newCmd(t *testing.T, env map[string]string) *exec.Cmd {
	cmd := exec.Command(binary(t))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
