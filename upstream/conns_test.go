package upstream

import (
	"testing"
	"time"
)

func TestIdleConnsQueue(t *testing.T) {
	var p idleConns
	closed := 0
	mk := func() *held { return &held{close: func() { closed++ }} }
	t0 := time.Unix(1000, 0)
	hs := []*held{mk(), mk(), mk()}
	for i, h := range hs {
		p.put(h, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if h := p.take(t0.Add(Settle/2), false); h != nil {
		t.Fatal("an unsettled connection was taken")
	}
	if h := p.take(t0.Add(Settle/2), true); h != hs[0] {
		t.Fatal("force did not take the oldest")
	}
	if h := p.take(t0.Add(Settle+time.Millisecond), false); h != hs[1] {
		t.Fatal("the oldest settled connection was not taken first")
	}
	if h := p.take(t0.Add(Settle+2*time.Millisecond), false); h != hs[2] {
		t.Fatal("third connection not taken")
	}
	for i := range 100 { // wrap around many times
		at := t0.Add(time.Duration(i) * time.Millisecond)
		p.put(mk(), at)
		p.put(mk(), at)
		if p.take(at.Add(Settle), false) == nil {
			t.Fatal("settled connection not found")
		}
	}
	if p.len() != 100 {
		t.Fatalf("len %d, want 100", p.len())
	}
	p.maxIdle = time.Second
	if h := p.take(t0.Add(time.Hour), false); h != nil || closed != 100 {
		t.Fatalf("a connection idle past maxIdle was not closed: %v %d", h, closed)
	}
}
