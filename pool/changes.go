package pool

import "fmt"

// Change is a backend's wanted weight and state, as the /backends API sets
// it and as instances sharing a database pass it on: State is "active",
// "drained" (kept, no new requests) or "removed" (drained, then removed).
type Change struct {
	URL    string
	Weight int
	State  string
}

// Apply makes the pool match c, adding the backend (built by build from
// "URL weight=N") when it is not there. Applying the same change twice
// changes nothing the second time.
func (p *Pool) Apply(c Change, build func(spec string) (*Backend, error)) error {
	b := p.Lookup(c.URL)
	if c.State == "removed" {
		if b != nil && b.State() != Draining {
			p.Drain(b, true, nil)
		}
		return nil
	}
	if b == nil {
		nb, err := build(fmt.Sprintf("%s weight=%d", c.URL, c.Weight))
		if err != nil {
			return err
		}
		if c.State == "drained" {
			nb.state.Store(int32(Drained))
		}
		return p.Add(nb)
	}
	if b.Weight() != c.Weight {
		p.SetWeight(b, c.Weight)
	}
	switch {
	case c.State == "active" && b.State() != Active:
		p.Activate(b)
	case c.State == "drained" && b.State() == Active:
		p.Drain(b, false, nil)
	}
	return nil
}

// ChangeOf is b's current weight and state as a Change.
func ChangeOf(b *Backend) Change {
	state := "active"
	if b.State() != Active {
		state = "drained"
	}
	return Change{URL: b.URL, Weight: b.Weight(), State: state}
}
