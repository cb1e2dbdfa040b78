// Command synccost measures what one synced row costs PostgreSQL: it syncs
// batches of spread keys through pgstore.Sync, as the persister does with
// 100,000 active clients, and reports the server's CPU per row (the
// user+system time of every postgres process, from /proc, so run it on the
// database's machine) and the WAL written per row. With -readers N, N
// other instances read the sync feed after each sync, as their persisters
// do (the cost of keeping idle instances fresh).
//
//	go run ./bench/synccost -url postgres://postgres@127.0.0.1:5432/postgres
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"gopher-equalizer/limiter"
	"gopher-equalizer/pgstore"
)

func main() {
	url := flag.String("url", "", "PostgreSQL URL (a throwaway database: the table is filled)")
	keys := flag.Int("keys", 100_000, "distinct client keys")
	batch := flag.Int("batch", 2000, "rows per sync")
	rounds := flag.Int("rounds", 100, "syncs to time")
	readers := flag.Int("readers", 0, "other instances that read the sync feed and re-read the rows")
	flag.Parse()
	ctx := context.Background()
	store, err := pgstore.Open(ctx, *url, zerolog.Nop())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer store.Close()
	conn, err := pgx.Connect(ctx, *url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close(ctx)
	sync := func(from int) {
		spends := make([]limiter.Spend, *batch)
		for i := range spends {
			spends[i] = limiter.Spend{ClientID: "client-" + strconv.Itoa((from+i*7919)%*keys), Spent: 1,
				Left: 1e9 - 1, Capacity: 1e9, RatePerSec: 1e9}
		}
		if _, err := store.Sync(ctx, spends); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	var others []*pgstore.Store
	for range *readers {
		other, err := pgstore.Open(ctx, *url, zerolog.Nop())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer other.Close()
		others = append(others, other)
	}
	read := func() {
		for _, other := range others {
			if _, err := other.Changed(ctx); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
	}
	for from := 0; from < *keys; from += *batch { // every row exists, as in steady state
		sync(from)
	}
	read()
	var wal0 string
	_ = conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&wal0)
	cpu0, start := postgresTicks(), time.Now()
	for r := 0; r < *rounds; r++ {
		sync(r * *batch)
		read()
	}
	took, cpu := time.Since(start), postgresTicks()-cpu0
	var walBytes int64
	_ = conn.QueryRow(ctx, "SELECT (pg_current_wal_lsn() - $1::pg_lsn)::bigint", wal0).Scan(&walBytes)
	rows := *rounds * *batch
	fmt.Printf("%d rows in %d syncs of %d: %.1f µs of PostgreSQL CPU and %d bytes of WAL per row, %.1f µs per row elapsed\n",
		rows, *rounds, *batch, float64(cpu)*1e6/100/float64(rows), walBytes/int64(rows), float64(took.Microseconds())/float64(rows))
}

// postgresTicks sums utime+stime (1/100 s) of every process named postgres.
func postgresTicks() int64 {
	var total int64
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < 0 || s[open+1:closing] != "postgres" {
			continue
		}
		f := strings.Fields(s[closing+2:])
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += u + st
	}
	return total
}
