package main

import (
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestIdleTunnelsMemory opens 10,000 WebSocket tunnels through the proxy
// (fewer when the descriptor limit cannot hold two per tunnel) and leaves
// them idle: each may cost at most 64 KiB of proxy memory.
func TestIdleTunnelsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 20,000 connections")
	}
	// Both ends of every tunnel live in this process, and the proxy holds
	// two descriptors per tunnel: raise the limit if we may (the proxy
	// inherits it), else fit the count to it.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max < 21000 {
		raised := syscall.Rlimit{Cur: 65536, Max: 65536}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	n := min(10_000, (int(lim.Cur)-1000)/2)
	if n < 1000 {
		t.Skipf("SKIPPED: a descriptor limit of %d cannot hold enough tunnels", lim.Cur)
	}
	var mu sync.Mutex
	var held []*websocket.Conn
	up := websocket.Upgrader{ReadBufferSize: 512, WriteBufferSize: 512}
	backend := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
	}))
	in := startInstanceOf(t, plainBinary(t), map[string]string{
		"EQUALIZER_BACKENDS": backend, "EQUALIZER_HEALTH_INTERVAL": "1h", "EQUALIZER_RATE_LIMIT": "false",
		"EQUALIZER_LOG_LEVEL": "warn",
	})
	in.get(t, "/")
	time.Sleep(200 * time.Millisecond)
	before := procStatus(t, in.cmd.Process.Pid, "VmRSS")
	dialer := websocket.Dialer{ReadBufferSize: 512, WriteBufferSize: 512, HandshakeTimeout: 10 * time.Second}
	clients := make([]*websocket.Conn, 0, n)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	for i := range n {
		c, _, err := dialer.Dial("ws://"+in.proxy+"/ws", nil)
		if err != nil {
			t.Fatalf("tunnel %d: %v", i, err)
		}
		clients = append(clients, c)
	}
	time.Sleep(time.Second)
	after := procStatus(t, in.cmd.Process.Pid, "VmRSS")
	perTunnel := (after - before) * 1024 / int64(n)
	t.Logf("%d idle tunnels: proxy RSS %d KiB -> %d KiB, %d bytes per tunnel", n, before, after, perTunnel)
	if perTunnel > 64<<10 {
		t.Fatalf("%d bytes of proxy memory per idle tunnel, want at most 64 KiB", perTunnel)
	}
}
