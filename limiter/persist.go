package limiter

import (
	"context"
	"time"
)

// Flush writes every bucket that changed since the last Flush, and deletes
// the evicted ones, through the store. On failure the buckets stay dirty and
// the deletions stay pending, so the next Flush writes them: nothing is lost
// while the store is down. It returns how many buckets it saved.
func (l *Limiter) Flush(ctx context.Context, now int64) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()

	if len(l.pendingDelete) > 0 {
		if err := l.store.Delete(ctx, l.pendingDelete); err != nil {
			return 0, err
		}
		l.pendingDelete = l.pendingDelete[:0]
	}

	var list []*bucket
	var rows []Bucket
	for b := l.dirty.Swap(nil); b != nil; {
		next := b.next.Load()
		b.next.Store(nil)
		// Clear the flag before reading the state: a request that lands
		// after this read marks the bucket dirty again.
		b.clearFlag(flagDirty)
		if !b.has(flagDeleted) {
			list = append(list, b)
			rows = append(rows, l.snapshot(b, now))
		}
		b = next
	}
	if len(rows) == 0 {
		return 0, nil
	}
	if err := l.store.Save(ctx, rows); err != nil {
		for _, b := range list {
			l.markDirty(b)
		}
		return 0, err
	}
	return len(rows), nil
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
// refused. It returns how many buckets it evicted.
func (l *Limiter) Sweep(now int64) int {
	if l.cfg.MaxBuckets <= 0 {
		return 0
	}
	target := int64(l.cfg.MaxBuckets) * 9 / 10
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count.Load() < target || now < l.idleSweepUntil {
		return 0
	}
	l.debts.expire(now)
	evicted := 0
	for _, fullOnly := range []bool{true, false} {
		l.buckets.Range(func(_ string, b *bucket) bool {
			if b.has(flagManaged) {
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
			} else if l.cfg.Persist {
				// A full automatic bucket is the default: its row goes too.
				// A bucket in debt keeps its row, which holds the debt.
				l.pendingDelete = append(l.pendingDelete, b.key)
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
			_, err := l.Flush(final, time.Now().UnixNano())
			return err
		case <-l.sweepNeeded:
			l.Sweep(time.Now().UnixNano())
		case now := <-t.C:
			if now.Before(retryAt) {
				continue
			}
			attempt, cancel := context.WithTimeout(ctx, max(interval*5, 5*time.Second))
			_, err := l.Flush(attempt, now.UnixNano())
			cancel()
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
