package upstream

import (
	"net"
	"sync"
	"time"
)

// Settle is how long a backend connection rests, unused, before another
// request may take it. A backend that sends bytes after an answer (a HEAD
// answered with a body, a body longer than announced, an answer to a
// request smuggled in a body) usually sends them at once, but a busy
// backend can send them milliseconds later; a connection that went back to
// the pool and out again at once would hand those bytes to the next
// request as its answer. After Settle, the check before reuse sees them.
// The price is a bigger pool: about requests-per-second x Settle
// connections per backend, all reused.
const Settle = 20 * time.Millisecond

// held is a backend connection between requests.
type held struct {
	conn      net.Conn
	close     func() // closes it and frees its place in the HostClient's count
	idleSince time.Time
}

// idleConns holds a backend's idle connections, oldest first. The proxy
// keeps them itself instead of in fasthttp's pool, to choose by age.
type idleConns struct {
	mu      sync.Mutex
	list    []*held // a queue: list[head:] are idle, oldest first
	head    int
	maxIdle time.Duration // connections idle longer are closed
}

// take returns the oldest connection that has rested Settle, or, when
// force is set, the oldest one at all; nil when there is none. Connections
// idle past maxIdle are closed on the way.
func (p *idleConns) take(now time.Time, force bool) *held {
	p.mu.Lock()
	var stale []*held
	var h *held
	for p.head < len(p.list) {
		first := p.list[p.head]
		idle := now.Sub(first.idleSince)
		if p.maxIdle > 0 && idle > p.maxIdle {
			stale = append(stale, first)
			p.pop()
			continue
		}
		if idle >= Settle || force {
			h = first
			p.pop()
		}
		break
	}
	p.mu.Unlock()
	for _, s := range stale {
		s.close()
	}
	return h
}

func (p *idleConns) pop() {
	p.list[p.head] = nil
	p.head++
	if p.head == len(p.list) {
		p.list, p.head = p.list[:0], 0
	}
}

// put returns a connection after a clean round trip.
func (p *idleConns) put(h *held, now time.Time) {
	h.idleSince = now
	p.mu.Lock()
	if p.head > 0 && len(p.list) == cap(p.list) {
		// Full at the back, room at the front: move the queue down
		// instead of growing it.
		n := copy(p.list, p.list[p.head:])
		clear(p.list[n:])
		p.list, p.head = p.list[:n], 0
	}
	p.list = append(p.list, h)
	p.mu.Unlock()
}

// len is how many connections are idle.
func (p *idleConns) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.list) - p.head
}
