package limiter

import (
	"context"
	"sync/atomic"
	"time"

	"gopher-equalizer/histogram"
)

// Flush syncs the buckets that changed since they were last synced: it
// sends what each spent meanwhile as an increment and adopts the state the
// store answers, which holds the spending of every instance. A bucket far
// from empty may wait up to Config.DeferRounds calls (see deferrable). On
// failure the spending is kept and the buckets stay dirty, so the next
// Flush sends it: nothing is lost while the store is down. It returns how
// many buckets it synced.
func (l *Limiter) Flush(ctx context.Context, now int64) (int, error) {
	return l.flush(ctx, now, false)
}

// FlushAll syncs every changed bucket, deferred ones included: the final
// flush of a graceful stop.
func (l *Limiter) FlushAll(ctx context.Context, now int64) (int, error) {
	return l.flush(ctx, now, true)
}

func (l *Limiter) flush(ctx context.Context, now int64, all bool) (int, error) {
	if err := l.lock(ctx); err != nil {
		return 0, err
	}
	defer l.unlock()

	var list []*bucket
	var spends []Spend
	var waitHead, waitTail *bucket
	refilled := 0
	for b := l.dirty.Swap(nil); b != nil; {
		next := b.next.Load()
		b.next.Store(nil)
		switch {
		case b.has(flagDeleted):
			b.clearFlag(flagDirty)
		case !all && l.deferrable(b, now):
			// Stays dirty (so no request pushes it again) and goes back
			// on the list below.
			b.flags.Add(deferredOne)
			if waitTail == nil {
				waitTail = b
			}
			b.next.Store(waitHead)
			waitHead = b
		default:
			// Clear the flag before taking the count: a request that
			// lands after it marks the bucket dirty again.
			waited := (b.flags.And(^(flagDirty | deferredMask)) & deferredMask) / deferredOne
			spent := b.spent.Swap(0)
			p := b.params.Load()
			if refilledSince(b, p, spent, l.flushes.before(int(waited)), now) {
				refilled++
				break
			}
			list = append(list, b)
			spends = append(spends, Spend{ClientID: b.key, Spent: float64(spent), Left: b.left(p, now),
				Capacity: p.capacity, RatePerSec: p.rate, Version: p.version})
		}
		b = next
	}
	l.flushes.record(now)
	l.SyncStats.Refilled.Add(uint64(refilled))
	if waitHead != nil {
		for {
			head := l.dirty.Load()
			waitTail.next.Store(head)
			if l.dirty.CompareAndSwap(head, waitHead) {
				break
			}
		}
	}
	if len(l.ownDeletes) > 0 {
		l.forgetOldDeletes(now)
	}
	if len(spends) > 0 {
		if err := l.sync(ctx, list, spends, now); err != nil {
			return 0, err
		}
	}
	return len(spends), l.refresh(ctx, list)
}

// sync sends spends (of the buckets in list) and adopts the answer; on
// failure the spending goes back to the buckets, which stay dirty.
func (l *Limiter) sync(ctx context.Context, list []*bucket, spends []Spend, now int64) error {
	rows, err := l.store.Sync(ctx, spends)
	if err != nil {
		for i, b := range list {
			b.spent.Add(uint32(spends[i].Spent))
			l.markDirty(b)
		}
		return err
	}
	byID := make(map[string]*Bucket, len(rows))
	for i := range rows {
		byID[rows[i].ClientID] = &rows[i]
	}
	for i, b := range list {
		row, ok := byID[b.key]
		if !ok || b.has(flagDeleted) {
			continue
		}
		l.adopt(b, row, now)
		// A bucket that is spending and past half empty is synced again
		// next time even if it spends nothing more: near its limit, the
		// other instances' spending matters, far from it, it does not.
		if spends[i].Spent > 0 && row.Tokens < float64(row.Capacity)/2 && !row.Deleted {
			l.markDirty(b)
		}
	}
	return nil
}

// refresh adopts the state the other instances' syncs wrote for the
// buckets this instance holds (just synced ones aside: their answer is
// newer), so that a bucket held here is at most about one interval behind
// the shared row whether or not it is in use here. What a bucket admitted
// since its last sync is charged on top, as in adopt. A row under another
// admin version is left to that change's notification. A sync entry that
// committed just after this instance's previous refresh yet began before
// its last sync of a bucket can hide that sync's spending here until the
// bucket next syncs: one interval of this instance's spending, at most.
func (l *Limiter) refresh(ctx context.Context, synced []*bucket) error {
	rows, err := l.store.Changed(ctx)
	if err != nil || len(rows) == 0 {
		return err
	}
	skip := make(map[*bucket]bool, len(synced))
	for _, b := range synced {
		skip[b] = true
	}
	adopted := 0
	for i := range rows {
		row := &rows[i]
		b, ok := l.buckets.Load(row.ClientID)
		if !ok || skip[b] || b.has(flagDeleted) {
			continue
		}
		p := b.params.Load()
		if p.version != row.Version {
			continue
		}
		b.setFlag(flagStored)
		l.chargeOnTop(b, p, tatFor(row.LastRefill.UnixNano(), p, row.Tokens), 0)
		adopted++
	}
	l.SyncStats.Refreshed.Add(uint64(adopted))
	return nil
}

// deferredOne counts, in the flags' second byte, the Flush rounds a dirty
// bucket was kept back.
const (
	deferredOne  uint32 = 1 << 8
	deferredMask uint32 = 0xff << 8
)

// deferrable reports whether b can wait for a later Flush: it has waited
// fewer than DeferRounds rounds, it is more than half full here, and it
// spent less than a sixteenth of its capacity since its last sync. What
// waiting hides from the other instances is that sixteenth, so it adds at
// most capacity/16 per instance to the overshoot a sync interval allows
// anyway (and the debt is paid back); buckets near empty, where decisions
// are close, sync every round. It writes fewer rows: a client's requests
// of several rounds go in one.
func (l *Limiter) deferrable(b *bucket, now int64) bool {
	flags := b.flags.Load()
	if flags&flagStored == 0 || (flags&deferredMask)/deferredOne >= uint32(min(l.cfg.DeferRounds, 255)) {
		return false // a new bucket goes at once: the other instances' admin API must see it
	}
	p := b.params.Load()
	return int64(b.spent.Load())*16 < p.capacity && b.tokens(now)*2 > float64(p.capacity)
}

// refilledShare: spending is left unsent only while it is at most this
// share of what the bucket refilled meanwhile (see refilledSince).
const refilledShare = 64

// refilledSince reports whether the spending of b since its last sync can
// stay unsent because the bucket has refilled to full since: the row it
// would be added to is full as of now with or without it, so sending it
// changes nothing a client or a restart can see. It only applies to a
// bucket the store already has, and only while the spending is at most
// 1/64 of what refilled since the last sync that could have counted it
// (synced is that sync's time, 0 when unknown). Other instances cannot see
// what stays unsent, so the bound matters with several: each hides at most
// 1/64 of the rate, so N instances admit at most (N-1)/64 of the rate more
// than a single one would, whatever the client's pattern. It is what makes
// many clients far below their limit cheap: their rows are written when
// they first come and when they spend fast, not once per request.
func refilledSince(b *bucket, p *params, spent uint32, synced, now int64) bool {
	if spent == 0 || synced <= 0 || !b.has(flagStored) || !b.full(now) {
		return false
	}
	return (now-synced)/p.interval >= int64(spent)*refilledShare
}

// flushTimes remembers when the last Flush calls ran, so that a bucket
// that waited k rounds knows its spending covers at least the time since
// the call before those k: a bucket's count is reset by a Flush (or by an
// admin write, which sets the state itself; the window then starts a
// little later than assumed, at most one interval's 1/64 more unsent).
type flushTimes struct {
	at [256]int64
	n  int
}

func (f *flushTimes) record(now int64) {
	f.at[f.n%len(f.at)] = now
	f.n++
}

// before is the time of the Flush call k calls before the newest recorded
// one (k = 0: the newest), or 0 when there were not that many.
func (f *flushTimes) before(k int) int64 {
	if k >= f.n || k >= len(f.at) {
		return 0
	}
	return f.at[(f.n-1-k)%len(f.at)]
}

// adopt takes the store's state of b's row (tokens as of now) plus what b
// spent since it was sent.
func (l *Limiter) adopt(b *bucket, row *Bucket, now int64) {
	if row.Deleted {
		// Deleted through another instance; its notification may still
		// be on the way.
		l.remove(b)
		return
	}
	p := b.params.Load()
	if p.capacity != row.Capacity || p.interval != intervalFor(row.RatePerSec) || p.version != row.Version {
		p = l.paramsFor(row.Capacity, row.RatePerSec, row.Version)
		b.params.Store(p)
	}
	if row.Managed {
		b.setFlag(flagManaged)
	}
	b.setFlag(flagStored)
	l.chargeOnTop(b, p, tatFor(now, p, row.Tokens), 0)
}

// DirtyLen counts the buckets waiting for the next Flush. It walks the list,
// so it is for tests and metrics, not the request path.
func (l *Limiter) DirtyLen() int {
	n := 0
	for b := l.dirty.Load(); b != nil; b = b.next.Load() {
		n++
	}
	return n
}

// SweepSignal is ready when the table is nearly full and Sweep should run.
func (l *Limiter) SweepSignal() <-chan struct{} { return l.sweepNeeded }

func (l *Limiter) nudgeSweep() {
	select {
	case l.sweepNeeded <- struct{}{}:
	default:
	}
}

// Sweep evicts automatic buckets until the table is below 90% of
// MaxBuckets: first those that refilled to full (the same as no bucket,
// so they go as they are), then, only if that was not enough, automatic
// buckets in debt, whose debt moves to the compact debts table so that the
// client's next bucket starts where this one was. Managed buckets are never
// evicted, and no debt is forgotten before it is paid: when the debts table
// holds MaxBuckets entries, buckets in debt stay and new clients are
// refused. Eviction is memory-only: rows stay in the store (a bucket with
// spending not yet synced is not evicted). It returns how many buckets it
// evicted.
func (l *Limiter) Sweep(now int64) int {
	if l.cfg.MaxBuckets <= 0 {
		return 0
	}
	target := int64(l.cfg.MaxBuckets) * 9 / 10
	if l.lock(context.Background()) != nil {
		return 0
	}
	defer l.unlock()
	if l.count.Load() < target || now < l.idleSweepUntil {
		return 0
	}
	l.debts.expire(now)
	evicted := 0
	for _, fullOnly := range []bool{true, false} {
		l.buckets.Range(func(_ string, b *bucket) bool {
			if b.has(flagManaged) || b.has(flagDirty) {
				return true
			}
			full := b.full(now)
			switch {
			case fullOnly && !full:
				return true
			case !full && l.debts.len() >= l.cfg.MaxBuckets:
				return false // nowhere to keep the debt: keep the bucket
			}
			l.remove(b)
			if !full {
				l.debts.owe(b.key, b.tat.Load())
			}
			evicted++
			// Stop a little below the mark so the next sweep is not at once.
			return l.count.Load() >= target*95/100
		})
		if l.count.Load() < target {
			break
		}
	}
	l.evictions.Add(uint64(evicted))
	if evicted == 0 {
		// Everything is in debt and the debts table is full: a flood of
		// new keys must not keep a core busy walking the table. Nothing
		// refills faster than this matters for.
		l.idleSweepUntil = now + int64(100*time.Millisecond)
	}
	return evicted
}

// Debts is how many evicted buckets are remembered for their debt.
func (l *Limiter) Debts() int { return l.debts.len() }

// RunSweeper only sweeps when the table fills, until ctx is done. It is the
// background loop when there is no database to persist to.
func (l *Limiter) RunSweeper(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.sweepNeeded:
			l.Sweep(time.Now().UnixNano())
		}
	}
}

// SyncStats describe the syncs with the store, for /metrics.
type SyncStats struct {
	Duration    histogram.Histogram // of each Flush that sent something
	Rows        atomic.Uint64       // buckets sent
	Refilled    atomic.Uint64       // buckets whose spending stayed unsent: they refilled meanwhile
	Refreshed   atomic.Uint64       // buckets read again because another instance synced them
	Errors      atomic.Uint64       // failed Flushes
	LastSuccess atomic.Int64        // unix nanoseconds of the last Flush that went through
}

func (s *SyncStats) record(start time.Time, rows int, err error) {
	if err != nil {
		s.Errors.Add(1)
		return
	}
	if rows > 0 {
		s.Duration.Observe(time.Since(start))
		s.Rows.Add(uint64(rows))
	}
	s.LastSuccess.Store(time.Now().UnixNano())
}

// RunPersister flushes every interval and sweeps when the table fills,
// until ctx is done; then it flushes one last time within finalTimeout.
// Failed flushes are retried with a backoff up to 30 s; report is called
// with each error, so the caller can log them throttled.
func (l *Limiter) RunPersister(ctx context.Context, interval, finalTimeout time.Duration, report func(error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	backoff := interval
	var retryAt time.Time
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), finalTimeout)
			defer cancel()
			_, err := l.FlushAll(final, time.Now().UnixNano())
			return err
		case <-l.sweepNeeded:
			l.Sweep(time.Now().UnixNano())
		case now := <-t.C:
			if now.Before(retryAt) {
				continue
			}
			attempt, cancel := context.WithTimeout(ctx, max(interval*5, 5*time.Second))
			n, err := l.Flush(attempt, now.UnixNano())
			cancel()
			l.SyncStats.record(now, n, err)
			if err != nil {
				report(err)
				retryAt = now.Add(backoff)
				backoff = min(backoff*2, 30*time.Second)
				continue
			}
			backoff = interval
			retryAt = time.Time{}
		}
	}
}
