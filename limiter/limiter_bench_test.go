package limiter

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// The benchmarks compare the chosen design (GCRA state in one atomic int64,
// buckets in an xsync.Map) with the variants it was chosen over: a bucket of
// tokens plus a timestamp packed into one uint64, sync.Map, and a sharded
// map behind RWMutexes. Run: go test -run X -bench . -benchmem ./limiter

var sinkDecision Decision

func keys(n int) [][]byte {
	ks := make([][]byte, n)
	for i := range ks {
		ks[i] = fmt.Appendf(nil, "10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
	}
	return ks
}

func BenchmarkAllow(b *testing.B) {
	b.Run("ExistingKey", func(b *testing.B) {
		l := New(Config{Capacity: 1 << 40, RatePerSec: 1e9, Persist: true}, NewMemoryStore())
		key := []byte("203.0.113.9")
		now := time.Now().UnixNano()
		l.Allow(key, now)
		b.ReportAllocs()
		for b.Loop() {
			sinkBool = l.Allow(key, now).Allowed
		}
	})
	b.Run("ParallelHotKey", func(b *testing.B) {
		l := New(Config{Capacity: 1 << 40, RatePerSec: 1e9, Persist: true}, NewMemoryStore())
		key := []byte("203.0.113.9")
		now := time.Now().UnixNano()
		l.Allow(key, now)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var d Decision
			for pb.Next() {
				d = l.Allow(key, now)
			}
			sinkDecision = d
		})
	})
	b.Run("ParallelManyKeys", func(b *testing.B) {
		l := New(Config{Capacity: 1 << 40, RatePerSec: 1e9, Persist: true}, NewMemoryStore())
		ks := keys(100_000)
		now := time.Now().UnixNano()
		for _, k := range ks {
			l.Allow(k, now)
		}
		var seed atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			var d Decision
			for pb.Next() {
				i++
				d = l.Allow(ks[i%len(ks)], now)
			}
			sinkDecision = d
		})
	})
	b.Run("NewKey", func(b *testing.B) {
		l := New(Config{Capacity: 100, RatePerSec: 100, Persist: true}, NewMemoryStore())
		ks := keys(b.N)
		now := time.Now().UnixNano()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			sinkDecision = l.Allow(ks[i], now)
		}
	})
}

// packedBucket is the losing bucket variant: 24 bits of tokens (in 1/256)
// and 40 bits of milliseconds in one uint64, refilled on every call. It
// writes even when it denies and its clock has millisecond grain.
type packedBucket struct {
	state    atomic.Uint64
	capacity uint64
	perMilli uint64 // refill in 1/256 token per millisecond
}

func (p *packedBucket) take(nowMilli uint64) bool {
	for {
		old := p.state.Load()
		tokens, last := old>>40, old&(1<<40-1)
		if nowMilli > last {
			tokens = min(tokens+(nowMilli-last)*p.perMilli, p.capacity*256)
			last = nowMilli
		}
		ok := tokens >= 256
		if ok {
			tokens -= 256
		}
		if p.state.CompareAndSwap(old, tokens<<40|last) {
			return ok
		}
	}
}

var sinkBool bool

func BenchmarkBucketVariant(b *testing.B) {
	now := time.Now().UnixNano()
	b.Run("GCRA/Single", func(b *testing.B) {
		bk := &bucket{}
		bk.params.Store(&params{capacity: 1 << 40, interval: 1})
		for b.Loop() {
			sinkBool = bk.take(now).Allowed
		}
	})
	b.Run("GCRA/ParallelHot", func(b *testing.B) {
		bk := &bucket{}
		bk.params.Store(&params{capacity: 1 << 40, interval: 1})
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				sinkBool = bk.take(now).Allowed
			}
		})
	})
	b.Run("Packed/Single", func(b *testing.B) {
		p := &packedBucket{capacity: 1 << 15, perMilli: 1 << 20}
		for i := 0; b.Loop(); i++ {
			sinkBool = p.take(uint64(i >> 10))
		}
	})
	b.Run("Packed/ParallelHot", func(b *testing.B) {
		p := &packedBucket{capacity: 1 << 15, perMilli: 1 << 20}
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				sinkBool = p.take(uint64(i >> 10))
			}
		})
	})
}

// shardedMap is the losing map variant: 64 shards of map[string]*bucket
// behind RWMutexes. Its lookups take a read lock.
type shardedMap struct {
	shards [64]struct {
		sync.RWMutex
		m map[string]*bucket
	}
}

func fnv(key []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range key {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}

func (s *shardedMap) load(key []byte) *bucket {
	sh := &s.shards[fnv(key)&63]
	sh.RLock()
	b := sh.m[string(key)]
	sh.RUnlock()
	return b
}

func BenchmarkMapVariant(b *testing.B) {
	ks := keys(100_000)
	l := New(Config{}, NewMemoryStore())
	var sm sync.Map
	var sh shardedMap
	for i := range sh.shards {
		sh.shards[i].m = map[string]*bucket{}
	}
	for _, k := range ks {
		bk := &bucket{key: string(k)}
		l.buckets.Store(bk.key, bk)
		sm.Store(bk.key, bk)
		sh.shards[fnv(k)&63].m[bk.key] = bk
	}
	syncMapLoad := func(k []byte) *bucket {
		v, _ := sm.Load(unsafe.String(unsafe.SliceData(k), len(k)))
		bk, _ := v.(*bucket)
		return bk
	}
	for _, v := range []struct {
		name string
		load func([]byte) *bucket
	}{{"Xsync", l.lookup}, {"SyncMap", syncMapLoad}, {"ShardedRWMutex", sh.load}} {
		b.Run(v.name+"/Single", func(b *testing.B) {
			b.ReportAllocs()
			k := ks[77]
			for b.Loop() {
				if v.load(k) == nil {
					b.Fatal("missing")
				}
			}
		})
		b.Run(v.name+"/Parallel", func(b *testing.B) {
			b.ReportAllocs()
			var seed atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := int(seed.Add(7919))
				for pb.Next() {
					i++
					if v.load(ks[i%len(ks)]) == nil {
						b.Fatal("missing")
					}
				}
			})
		})
	}
}

// heapPerBucket reports the heap that fill keeps for n buckets.
func heapPerBucket(b *testing.B, n int, fill func(keys [][]byte) any) {
	for range b.N {
		ks := keys(n)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		kept := fill(ks)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "B/bucket")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
		runtime.KeepAlive(kept)
	}
}

// BenchmarkMemoryPerBucket reports the heap held per automatic bucket with
// one million buckets (the budget is 150 MB in all).
func BenchmarkMemoryPerBucket(b *testing.B) {
	heapPerBucket(b, 1_000_000, func(ks [][]byte) any {
		l := New(Config{Capacity: 100, RatePerSec: 100, MaxBuckets: 2 * len(ks)}, NewMemoryStore())
		now := time.Now().UnixNano()
		for _, k := range ks {
			l.Allow(k, now)
		}
		return l
	})
}

// BenchmarkMemoryPerBucketSyncMap is the same measure for the sync.Map
// variant (about 146 bytes per bucket against 82).
func BenchmarkMemoryPerBucketSyncMap(b *testing.B) {
	heapPerBucket(b, 1_000_000, func(ks [][]byte) any {
		m := &sync.Map{}
		p := &params{capacity: 100, interval: 1e7}
		for _, k := range ks {
			bk := &bucket{key: string(k)}
			bk.params.Store(p)
			m.LoadOrStore(bk.key, bk)
		}
		return m
	})
}

// BenchmarkMemoryPerDebt reports the heap held per remembered debt of an
// evicted bucket, with one million of them.
func BenchmarkMemoryPerDebt(b *testing.B) {
	heapPerBucket(b, 1_000_000, func(ks [][]byte) any {
		d := newDebts()
		for i, k := range ks {
			d.owe(string(k), int64(i)+1)
		}
		return d
	})
}
