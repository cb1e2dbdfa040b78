// Package limiter keeps one GCRA token bucket per client in memory. It is the
// source of truth for tokens: the proxy charges buckets here without I/O, the
// admin API changes them here after the Store accepted the change, and the
// persister writes the buckets that changed to the Store in batches.
//
// Concurrency: Allow takes no lock and allocates nothing for a client that
// already has a bucket; a new client costs three small allocations (bucket,
// key, map entry) and locks one hash bucket of the map.
// Admin writes, Flush and eviction take turns (a one-slot semaphore that a
// caller waits for at most until its context ends), so a sync never undoes
// an admin change. Times are unix nanoseconds passed in by the caller, so
// tests need no clock.
//
// Sharing: Flush sends what each changed bucket spent since the last Flush
// (an increment, never a snapshot) and adopts the global state the store
// answers, so several instances on one store enforce one limit together.
package limiter

import (
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/puzpuzpuz/xsync/v4"
)

// Errors returned by the admin operations.
var (
	ErrExists   = errors.New("bucket already exists")
	ErrNotFound = errors.New("bucket not found")
)

// Bucket is a bucket as the admin API and the Store see it.
type Bucket struct {
	ClientID   string
	Capacity   int64
	Tokens     float64 // fractional tokens at LastRefill
	RatePerSec float64
	LastRefill time.Time
	// Managed buckets were created or changed through the admin API and are
	// never evicted; the others were created on a client's first request.
	Managed bool
	// Version counts admin changes of the row (0: never changed by one).
	Version int64
	// Deleted marks a row the admin API deleted (a tombstone).
	Deleted bool
}

// Spend is what one bucket spent since the last sync, sent as an increment.
type Spend struct {
	ClientID string
	Spent    float64
	// Left is what the bucket holds here after the spending, as of the
	// sync. The row can hold no more: the other instances' spending only
	// lowers it. It is the bound that keeps the refill the row earned
	// while this instance was spending: the row adds its refill since its
	// last sync, uncapped, subtracts Spent, and takes the least of that,
	// Left and the capacity. Without it the store would have to assume
	// every token was spent at the sync (refill capped first, then the
	// spending), which charges a client spending steadily for the refill
	// it used whenever rate x sync interval exceeds the capacity.
	Left float64
	// Capacity and RatePerSec are the bucket's parameters here, for a row
	// the store creates.
	Capacity   int64
	RatePerSec float64
	// Version is the admin version the bucket held when it spent. The
	// spending is added whatever the row's version (an admin change never
	// discards it); Left bounds the row only under the same version, as
	// it says nothing about a state set after it.
	Version int64
}

// Defaults are the capacity and rate of buckets created on first sight.
type Defaults struct {
	Capacity   int64
	RatePerSec float64
}

// debtCapacities is how many capacities of debt a row may hold, besides
// one second of refill: what instances admitted together beyond the limit
// before they saw each other's spending, paid back by a lockout of at most
// that many capacities' refill time. N instances owe at most N-1
// capacities (each starts a new key with a full bucket) plus a sync
// interval of refill each; the bound only matters beyond 8 instances
// (see migration 006).
const debtCapacities = 8

// DebtBound is the most tokens a bucket may owe.
func DebtBound(capacity int64, ratePerSec float64) float64 {
	return debtCapacities*float64(capacity) + ratePerSec
}

// WholeTokens is the number of whole tokens, as the API shows it.
func (b Bucket) WholeTokens() int64 { return int64(math.Floor(b.Tokens + 1e-9)) }

// Store persists buckets. Save and Delete are admin writes of whole rows;
// each answers the admin version it wrote, so that the instance making
// the write knows its own notification when it comes back. Sync adds
// spending to rows (creating missing ones with the spend's parameters and
// Left) and answers every row's state now, tokens refilled to the moment
// of the answer. Changed answers the rows the other instances' syncs left
// below capacity since the last call, oldest first, each as the sync wrote
// it: ClientID, Tokens as of LastRefill, and Version (nil when nothing
// else shares the store). They are called in turn, never at once.
type Store interface {
	Save(ctx context.Context, row Bucket) (version int64, err error)
	Delete(ctx context.Context, clientID string) (version int64, err error)
	Sync(ctx context.Context, spends []Spend) ([]Bucket, error)
	Changed(ctx context.Context) ([]Bucket, error)
	// Load reads one row as it is now; found is false for no row or a
	// tombstone.
	Load(ctx context.Context, clientID string) (row Bucket, found bool, err error)
	Ping(ctx context.Context) error
}

// Config holds the defaults for buckets created on first sight.
type Config struct {
	Capacity   int64
	RatePerSec float64
	// MaxBuckets bounds the buckets held in memory. Past it, automatic
	// buckets that refilled to full are evicted first (they equal a new
	// default bucket), then automatic buckets in debt, whose debt is kept
	// in a compact table of at most MaxBuckets entries; a new client that
	// finds both full is refused with Decision.TableFull until buckets
	// refill and eviction makes room.
	MaxBuckets int
	// Persist records which buckets changed and which were evicted, for
	// Flush. Set it when RunPersister runs; without a persister the records
	// would only grow, and would keep evicted buckets reachable.
	Persist bool
	// DeferRounds is how many Flush rounds a bucket far from empty may
	// wait before its spending is sent (0: none). It bounds what a crash
	// loses to DeferRounds+1 flush intervals, for those buckets only.
	DeferRounds int
}

// Limiter is safe for concurrent use.
type Limiter struct {
	cfg      Config
	defaults atomic.Pointer[params] // replaced by SetDefaults (reload)
	store    Store

	// buckets: reads are lock-free; a new key locks one hash bucket of the
	// map. Chosen over sync.Map and a sharded RWMutex map by benchmark
	// (limiter_bench_test.go): 2-3x faster lookups, 82 instead of 146
	// bytes per client.
	buckets *xsync.Map[string, *bucket]
	count   atomic.Int64
	dirty   atomic.Pointer[bucket] // head of the list of dirty buckets
	// SyncStats are kept by RunPersister.
	SyncStats SyncStats

	// turn serialises admin writes, Flush and eviction; a one-slot
	// semaphore so that a waiting admin write gives up at its timeout.
	turn chan struct{}
	// flushes: when the last Flush calls ran (under turn).
	flushes flushTimes
	// idleSweepUntil: a sweep that found nothing to evict rests until then.
	idleSweepUntil int64

	debts *debts // evicted automatic buckets that had not refilled
	// ownDeletes: the tombstones of this instance's recent deletes (under
	// turn). Their echo, or a catch-up reading them again, must not
	// remove a bucket a client made since the delete and has not synced
	// yet (its first sync revives the row at a newer version).
	ownDeletes  map[string]ownDelete
	sweepNeeded chan struct{}
	evictions   atomic.Uint64
	refusedFull atomic.Uint64
}

// New creates a limiter that persists to store.
func New(cfg Config, store Store) *Limiter {
	l := &Limiter{
		cfg:         cfg,
		buckets:     xsync.NewMap[string, *bucket](),
		store:       store,
		debts:       newDebts(),
		ownDeletes:  map[string]ownDelete{},
		turn:        make(chan struct{}, 1),
		sweepNeeded: make(chan struct{}, 1),
	}
	l.defaults.Store(newParams(cfg.Capacity, cfg.RatePerSec))
	return l
}

// Allow charges one token from key's bucket at now, creating a full default
// bucket on first sight. key may be a reused buffer: it is copied when kept.
func (l *Limiter) Allow(key []byte, now int64) Decision {
	b := l.lookup(key)
	if b == nil {
		if b = l.createDefault(key, now); b == nil {
			l.refusedFull.Add(1)
			return Decision{Limit: l.defaults.Load().capacity, Retry: time.Second, TableFull: true}
		}
	}
	d := b.take(now)
	if d.Allowed && l.cfg.Persist {
		b.spent.Add(1)
		l.markDirty(b)
	}
	return d
}

// AllowWithin is Allow for a limit with a delay (nginx limit_req delay=):
// a request whose token comes within wait nanoseconds is admitted too, and
// the Decision's Retry says how long it must wait for it (0: at once).
func (l *Limiter) AllowWithin(key []byte, now, wait int64) Decision {
	b := l.lookup(key)
	if b == nil {
		if b = l.createDefault(key, now); b == nil {
			l.refusedFull.Add(1)
			return Decision{Limit: l.defaults.Load().capacity, Retry: time.Second, TableFull: true}
		}
	}
	d := b.takeWithin(now, wait)
	if d.Allowed && l.cfg.Persist {
		b.spent.Add(1)
		l.markDirty(b)
	}
	return d
}

// Refund gives back the token an Allow of key just charged, for a request
// that another limit refused: a request refused by one limit is charged to
// none. Its unsynced count goes down too, unless a sync sent it meanwhile
// (then the store keeps one token too many, never one too few).
func (l *Limiter) Refund(key []byte) {
	b := l.lookup(key)
	if b == nil {
		return
	}
	p := b.params.Load()
	for {
		tat := b.tat.Load()
		if b.tat.CompareAndSwap(tat, tat-p.interval) {
			break
		}
	}
	if !l.cfg.Persist {
		return
	}
	for {
		n := b.spent.Load()
		if n == 0 || b.spent.CompareAndSwap(n, n-1) {
			return
		}
	}
}

func (l *Limiter) lookup(key []byte) *bucket {
	// The map only reads the key during Load, so a string that aliases the
	// caller's buffer is safe and saves a copy.
	b, _ := l.buckets.Load(unsafe.String(unsafe.SliceData(key), len(key)))
	return b
}

func (l *Limiter) createDefault(key []byte, now int64) *bucket {
	if l.cfg.MaxBuckets > 0 && l.count.Load() >= int64(l.cfg.MaxBuckets) {
		l.nudgeSweep()
		return nil
	}
	b := &bucket{key: string(key)}
	b.params.Store(l.defaults.Load())
	b.tat.Store(now)
	// A client whose bucket was evicted before it refilled starts with its
	// debt, not with a full bucket.
	owed, inDebt := l.debts.peek(key)
	if inDebt && owed > now {
		b.tat.Store(owed)
	}
	if existing, loaded := l.buckets.LoadOrStore(b.key, b); loaded {
		return existing
	}
	if inDebt {
		l.debts.forget(key)
	}
	if n := l.count.Add(1); l.cfg.MaxBuckets > 0 && n >= int64(l.cfg.MaxBuckets)*9/10 {
		l.nudgeSweep()
	}
	return b
}

// markDirty puts b on the dirty list once until the next Flush.
func (l *Limiter) markDirty(b *bucket) {
	if b.has(flagDirty) || !b.setFlag(flagDirty) {
		return
	}
	for {
		head := l.dirty.Load()
		b.next.Store(head)
		if l.dirty.CompareAndSwap(head, b) {
			return
		}
	}
}

// Len is the number of buckets in memory.
func (l *Limiter) Len() int { return int(l.count.Load()) }

// Evictions is how many automatic buckets were dropped to respect MaxBuckets.
func (l *Limiter) Evictions() uint64 { return l.evictions.Load() }

// RefusedFull is how many new clients were refused because the table was full.
func (l *Limiter) RefusedFull() uint64 { return l.refusedFull.Load() }

func (l *Limiter) snapshot(b *bucket, now int64) Bucket {
	p := b.params.Load()
	return Bucket{
		ClientID:   b.key,
		Capacity:   p.capacity,
		Tokens:     b.tokens(now),
		RatePerSec: rateFor(p.interval),
		LastRefill: time.Unix(0, now).UTC(),
		Managed:    b.has(flagManaged),
	}
}

// rateFor is the inverse of intervalFor, rounded to a millionth so that a
// rate of 3/s reads back as 3, not 3.000000003.
func rateFor(interval int64) float64 {
	exact := float64(time.Second) / float64(interval)
	if rounded := math.Round(exact*1e6) / 1e6; rounded != 0 {
		return rounded
	}
	return exact // below a millionth per second: rounding would make it 0
}

// Get returns the bucket of clientID as it is at now.
func (l *Limiter) Get(clientID string, now int64) (Bucket, bool) {
	b, ok := l.buckets.Load(clientID)
	if !ok {
		return Bucket{}, false
	}
	return l.snapshot(b, now), true
}

// Fetch returns the bucket of clientID as it is at now, reading it from the
// store when this instance has not seen the client yet (another instance
// may have): the admin API answers the same on every instance.
func (l *Limiter) Fetch(ctx context.Context, clientID string, now int64) (Bucket, bool, error) {
	if b, ok := l.Get(clientID, now); ok {
		return b, true, nil
	}
	if _, err := l.loadMissing(ctx, clientID); err != nil {
		return Bucket{}, false, err
	}
	b, ok := l.Get(clientID, now)
	return b, ok, nil
}

// loadMissing puts clientID's row into memory if the store has one and
// memory does not; it reports whether the bucket is in memory now.
func (l *Limiter) loadMissing(ctx context.Context, clientID string) (bool, error) {
	if _, ok := l.buckets.Load(clientID); ok {
		return true, nil
	}
	row, found, err := l.store.Load(ctx, clientID)
	if err != nil || !found {
		return false, err
	}
	if _, loaded := l.buckets.LoadOrStore(clientID, l.newBucket(row)); !loaded {
		l.count.Add(1)
	}
	return true, nil
}

// List returns up to limit buckets ordered by client ID, skipping offset.
// It walks every bucket but keeps only offset+limit of them, so a page of a
// million buckets costs one pass and little memory.
func (l *Limiter) List(offset, limit int, now int64) []Bucket {
	keep := offset + limit
	byKey := func(x, y *bucket) int { return cmp.Compare(x.key, y.key) }
	var page []*bucket
	if keep > 4096 {
		// A deep page: sorting everything once beats keeping a long window.
		page = make([]*bucket, 0, l.Len())
		l.buckets.Range(func(_ string, b *bucket) bool { page = append(page, b); return true })
		slices.SortFunc(page, byKey)
	} else {
		l.buckets.Range(func(_ string, b *bucket) bool {
			if len(page) == keep && b.key >= page[keep-1].key {
				return true
			}
			i, _ := slices.BinarySearchFunc(page, b, byKey)
			page = slices.Insert(page, i, b)
			if len(page) > keep {
				page = page[:keep]
			}
			return true
		})
	}
	out := []Bucket{}
	for i := offset; i < min(keep, len(page)); i++ {
		out = append(out, l.snapshot(page[i], now))
	}
	return out
}

// lock waits for the turn until ctx ends.
func (l *Limiter) lock(ctx context.Context) error {
	select {
	case l.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Limiter) unlock() { <-l.turn }

// Restore puts a bucket loaded from the store into memory, replacing any
// bucket with the same ID. It is for start-up, before traffic.
func (l *Limiter) Restore(row Bucket) {
	if !row.Deleted {
		l.put(l.newBucket(row))
	}
}

// ApplyRemote applies an admin change made on any instance (this one too),
// as the store now has it (tokens as of row.LastRefill). A row whose
// version the bucket already holds changes nothing: the instance's own
// writes, and a catch-up that reads again what start-up loaded. A newer
// row sets the bucket's state, and what the bucket admitted since its last
// sync is charged on top of it and still sent at the next sync: spending
// is never discarded (made before the change, it is charged twice; after
// it, once; a sync interval bounds the first). A tombstone removes the
// bucket: a delete resets the client.
func (l *Limiter) ApplyRemote(ctx context.Context, row Bucket) error {
	if err := l.lock(ctx); err != nil {
		return err
	}
	defer l.unlock()
	l.apply(row)
	return nil
}

// apply is ApplyRemote under the turn.
func (l *Limiter) apply(row Bucket) {
	if row.Deleted {
		if d, ok := l.ownDeletes[row.ClientID]; ok && d.version >= row.Version {
			return // our own delete, already applied
		}
		l.debts.forget([]byte(row.ClientID))
		if b, ok := l.buckets.Load(row.ClientID); ok && b.params.Load().version < row.Version {
			l.remove(b)
		}
		return
	}
	fresh := l.newBucket(row)
	b, loaded := l.buckets.LoadOrStore(fresh.key, fresh)
	if !loaded {
		l.count.Add(1)
		l.debts.forget([]byte(row.ClientID))
		return
	}
	if b.params.Load().version >= row.Version {
		return
	}
	l.debts.forget([]byte(row.ClientID))
	p := l.paramsFor(row.Capacity, row.RatePerSec, row.Version)
	b.params.Store(p)
	if row.Managed {
		b.setFlag(flagManaged)
	}
	b.setFlag(flagStored)
	base := tatFor(row.LastRefill.UnixNano(), p, row.Tokens)
	l.chargeOnTop(b, p, base, 0)
}

// chargeOnTop sets b's state to base plus what b admitted since its last
// sync beyond alreadyIn (spending the new state already holds), and keeps
// that spending to be synced. A CAS loop, so a request admitted meanwhile
// is charged too; one whose count lands between the two loads is sent at
// the next sync all the same, and that sync's answer corrects memory.
func (l *Limiter) chargeOnTop(b *bucket, p *params, base int64, alreadyIn uint32) {
	for {
		cur := b.tat.Load()
		extra := int64(b.spent.Load() - alreadyIn)
		if b.tat.CompareAndSwap(cur, base+extra*p.interval) {
			break
		}
	}
	if alreadyIn != 0 {
		b.spent.Add(-alreadyIn)
	}
}

// put stores b, replacing a bucket with the same key; the replaced one is
// flagged so that a Flush already holding it skips it.
func (l *Limiter) put(b *bucket) {
	if old, loaded := l.buckets.LoadAndStore(b.key, b); loaded {
		old.setFlag(flagDeleted)
	} else {
		l.count.Add(1)
	}
}

func (l *Limiter) newBucket(row Bucket) *bucket {
	p := l.paramsFor(row.Capacity, row.RatePerSec, row.Version)
	b := &bucket{key: strings.Clone(row.ClientID)}
	b.params.Store(p)
	b.tat.Store(tatFor(row.LastRefill.UnixNano(), p, row.Tokens))
	b.flags.Store(flagStored)
	if row.Managed {
		b.setFlag(flagManaged)
	}
	return b
}

// Create adds a managed bucket after the store accepted it. A bucket a
// request of this client made since the check keeps its spending, charged
// on top of the new one.
func (l *Limiter) Create(ctx context.Context, row Bucket) error {
	if err := l.lock(ctx); err != nil {
		return err
	}
	defer l.unlock()
	if _, ok := l.buckets.Load(row.ClientID); ok {
		return ErrExists
	}
	row.Managed = true
	version, err := l.store.Save(ctx, row)
	if err != nil {
		return err
	}
	row.Version = version
	l.debts.forget([]byte(row.ClientID)) // the operator's bucket replaces any debt
	l.apply(row)
	return nil
}

// SetCapacity changes a bucket's capacity (and its rate when ratePerSec > 0)
// after the store accepted it. Tokens above the new capacity are cut to it.
func (l *Limiter) SetCapacity(ctx context.Context, clientID string, capacity int64, ratePerSec float64, now int64) error {
	return l.update(ctx, clientID, now, func(row *Bucket) error {
		row.Capacity = capacity
		row.Tokens = min(row.Tokens, float64(capacity))
		if ratePerSec > 0 {
			row.RatePerSec = ratePerSec
		}
		return nil
	})
}

// ErrTokensAboveCapacity is returned by SetTokens for tokens > capacity.
var ErrTokensAboveCapacity = errors.New("tokens must not exceed the bucket's capacity")

// SetTokens sets a bucket's tokens (0 or more) after the store accepted it.
func (l *Limiter) SetTokens(ctx context.Context, clientID string, tokens int64, now int64) error {
	return l.update(ctx, clientID, now, func(row *Bucket) error {
		if tokens > row.Capacity {
			return ErrTokensAboveCapacity
		}
		row.Tokens = float64(tokens)
		return nil
	})
}

func (l *Limiter) update(ctx context.Context, clientID string, now int64, change func(*Bucket) error) error {
	if err := l.lock(ctx); err != nil {
		return err
	}
	defer l.unlock()
	if _, err := l.loadMissing(ctx, clientID); err != nil {
		return err
	}
	b, ok := l.buckets.Load(clientID)
	if !ok {
		return ErrNotFound
	}
	// The new state is made from the state at now, which holds the
	// spending counted so far; what comes after it is charged on top.
	spentBefore := b.spent.Load()
	row := l.snapshot(b, now)
	if err := change(&row); err != nil {
		return err
	}
	row.Managed = true
	version, err := l.store.Save(ctx, row)
	if err != nil {
		return err
	}
	p := l.paramsFor(row.Capacity, row.RatePerSec, version)
	b.params.Store(p)
	b.setFlag(flagManaged | flagStored)
	l.chargeOnTop(b, p, tatFor(now, p, row.Tokens), spentBefore)
	return nil
}

// Delete removes a bucket after the store deleted it. The client's next
// request creates a new default bucket.
func (l *Limiter) Delete(ctx context.Context, clientID string) error {
	if err := l.lock(ctx); err != nil {
		return err
	}
	defer l.unlock()
	if _, err := l.loadMissing(ctx, clientID); err != nil {
		return err
	}
	b, ok := l.buckets.Load(clientID)
	if !ok {
		return ErrNotFound
	}
	version, err := l.store.Delete(ctx, clientID)
	if err != nil {
		return err
	}
	l.remove(b)
	if l.cfg.Persist {
		l.ownDeletes[clientID] = ownDelete{version: version, at: time.Now().UnixNano()}
	}
	return nil
}

// ownDelete is a tombstone this instance wrote, and when.
type ownDelete struct{ version, at int64 }

// ownDeleteMemory is how long a delete is remembered: longer than its
// echo and a LISTEN reconnect's catch-up take.
const ownDeleteMemory = int64(time.Minute)

// forgetOldDeletes drops the deletes older than ownDeleteMemory (under turn).
func (l *Limiter) forgetOldDeletes(now int64) {
	for id, d := range l.ownDeletes {
		if now-d.at > ownDeleteMemory {
			delete(l.ownDeletes, id)
		}
	}
}

// paramsFor returns the parameters for capacity, rate and version, shared
// with the defaults when they are the defaults.
func (l *Limiter) paramsFor(capacity int64, rate float64, version int64) *params {
	p := newParams(capacity, rate)
	p.version = version
	if d := l.defaults.Load(); *p == *d {
		return d // share: most buckets have the defaults
	}
	return p
}

// remove drops b from the map; the caller holds the turn.
func (l *Limiter) remove(b *bucket) {
	removed := false
	l.buckets.Compute(b.key, func(current *bucket, loaded bool) (*bucket, xsync.ComputeOp) {
		if loaded && current == b {
			removed = true
			return nil, xsync.DeleteOp
		}
		return current, xsync.CancelOp
	})
	if removed {
		b.setFlag(flagDeleted)
		l.count.Add(-1)
	}
}

// Ping reports whether the store answers.
func (l *Limiter) Ping(ctx context.Context) error { return l.store.Ping(ctx) }

// Limited is a bucket that is out of tokens, for the status page.
type Limited struct {
	Bucket
	// Wait is how long until the bucket has one token again.
	Wait time.Duration
}

// MostLimited returns up to n buckets that are out of tokens, the longest
// wait first: the clients being held back hardest right now. It walks the
// whole table, so it is for the admin side, not the request path.
func (l *Limiter) MostLimited(n int, now int64) []Limited {
	type entry struct {
		b    *bucket
		wait int64
	}
	var top []entry // sorted, longest wait first
	l.buckets.Range(func(_ string, b *bucket) bool {
		p := b.params.Load()
		wait := b.tat.Load() + p.interval - now - p.interval*p.capacity // until the next token
		if wait <= 0 || (len(top) == n && wait <= top[n-1].wait) {
			return true
		}
		i, _ := slices.BinarySearchFunc(top, wait, func(e entry, w int64) int { return cmp.Compare(w, e.wait) })
		top = slices.Insert(top, i, entry{b, wait})
		if len(top) > n {
			top = top[:n]
		}
		return true
	})
	out := make([]Limited, 0, len(top))
	for _, e := range top {
		out = append(out, Limited{Bucket: l.snapshot(e.b, now), Wait: time.Duration(e.wait)})
	}
	return out
}

// Defaults are the capacity and rate of the buckets made on first sight.
func (l *Limiter) Defaults() Defaults {
	p := l.defaults.Load()
	return Defaults{Capacity: p.capacity, RatePerSec: p.rate}
}

// SetDefaults changes the bucket of clients without an admin bucket: new
// clients get it, and every automatic bucket in memory moves to it keeping
// its tokens (cut to the new capacity). Admin buckets keep their own.
func (l *Limiter) SetDefaults(ctx context.Context, capacity int64, ratePerSec float64, now int64) error {
	if err := l.lock(ctx); err != nil {
		return err
	}
	defer l.unlock()
	old := l.defaults.Load()
	np := newParams(capacity, ratePerSec)
	if *np == *old {
		return nil
	}
	l.defaults.Store(np)
	l.cfg.Capacity, l.cfg.RatePerSec = capacity, ratePerSec
	l.buckets.Range(func(_ string, b *bucket) bool {
		if b.params.Load() == old {
			tokens := min(b.tokens(now), float64(capacity))
			b.params.Store(np)
			b.tat.Store(tatFor(now, np, tokens))
		}
		return true
	})
	return nil
}
