package limiter

import (
	"hash/maphash"
	"sync/atomic"

	"github.com/puzpuzpuz/xsync/v4"
)

// debts remembers the token debt of automatic buckets evicted before they
// refilled, so that eviction never hands a client tokens it did not earn:
// flooding the table with new keys must not reset anyone's limit. An entry
// is a 64-bit hash of the key and the bucket's tat, much smaller than a
// bucket. A hash collision can only make a new client start with someone
// else's debt, never with extra tokens. Entries whose tat has passed (the
// bucket would be full) are dropped by the sweep.
type debts struct {
	seed  maphash.Seed
	m     *xsync.Map[uint64, int64]
	count atomic.Int64
}

func newDebts() *debts {
	return &debts{seed: maphash.MakeSeed(), m: xsync.NewMap[uint64, int64]()}
}

func (d *debts) hash(key []byte) uint64 { return maphash.Bytes(d.seed, key) }

// peek returns the tat owed by key, if any, without removing it.
func (d *debts) peek(key []byte) (int64, bool) {
	if d.count.Load() == 0 {
		return 0, false
	}
	return d.m.Load(d.hash(key))
}

// forget drops key's entry once a bucket carries its debt again.
func (d *debts) forget(key []byte) {
	if d.count.Load() == 0 {
		return
	}
	if _, ok := d.m.LoadAndDelete(d.hash(key)); ok {
		d.count.Add(-1)
	}
}

// owe records that key's evicted bucket is full again only at tat.
func (d *debts) owe(key string, tat int64) {
	if _, loaded := d.m.LoadOrStore(maphash.String(d.seed, key), tat); !loaded {
		d.count.Add(1)
	}
}

// expire drops the entries that have refilled by now.
func (d *debts) expire(now int64) {
	d.m.Range(func(h uint64, tat int64) bool {
		if tat <= now {
			if _, ok := d.m.LoadAndDelete(h); ok {
				d.count.Add(-1)
			}
		}
		return true
	})
}

func (d *debts) len() int { return int(d.count.Load()) }
