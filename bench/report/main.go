// Command report turns the wrk outputs listed in results.tsv (name, connections,
// round, file) into a Markdown table of medians with ratios, and an SVG chart.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

type run struct {
	rps                float64
	cpuUs              float64
	syscalls, switches float64
	p50, p99           time.Duration
	non2xx             int
	errors             string
}

type key struct {
	name  string
	conns int
}

var (
	reRPS    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reLat    = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	reNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reErrors = regexp.MustCompile(`Socket errors: (.*)`)
)

func parse(path string) (run, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return run{}, err
	}
	var r run
	m := reRPS.FindSubmatch(data)
	if m == nil {
		return r, fmt.Errorf("%s: no Requests/sec", path)
	}
	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	for _, m := range reLat.FindAllSubmatch(data, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(m[3])]
		d := time.Duration(v * float64(unit))
		if string(m[1]) == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if m := reNon2xx.FindSubmatch(data); m != nil {
		r.non2xx, _ = strconv.Atoi(string(m[1]))
	}
	if m := reErrors.FindSubmatch(data); m != nil {
		r.errors = string(m[1])
	}
	return r, nil
}

func median[T int | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

type summary struct {
	rps      float64
	cpuUs    float64 // CPU microseconds per request, 0 when unknown
	syscalls float64 // system calls per request (PERF=1), 0 when unknown
	switches float64 // context switches per request (PERF=1)
	p50, p99 time.Duration
	non2xx   int
	errors   []string
	rounds   int
}

var peers = []string{"nginx-1-worker", "nginx-2-workers", "haproxy-nbthread-1", "haproxy-nbthread-2", "caddy"}

func main() {
	svg := flag.String("svg", "", "write a chart to this file")
	flag.Parse()
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	runs := map[key][]run{}
	var order []string
	var connsList []int
	s := bufio.NewScanner(f)
	for s.Scan() {
		cols := strings.Split(s.Text(), "\t")
		if len(cols) < 4 {
			continue
		}
		conns, _ := strconv.Atoi(cols[1])
		r, err := parse(cols[3])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			continue
		}
		if len(cols) > 4 && cols[4] != "" {
			r.cpuUs, _ = strconv.ParseFloat(cols[4], 64)
		}
		if len(cols) > 6 && cols[5] != "" {
			r.syscalls, _ = strconv.ParseFloat(cols[5], 64)
			r.switches, _ = strconv.ParseFloat(cols[6], 64)
		}
		k := key{cols[0], conns}
		runs[k] = append(runs[k], r)
		if !slices.Contains(order, cols[0]) {
			order = append(order, cols[0])
		}
		if !slices.Contains(connsList, conns) {
			connsList = append(connsList, conns)
		}
	}
	sort.Ints(connsList)
	sum := map[key]summary{}
	for k, rs := range runs {
		var rps []float64
		var p50, p99 []time.Duration
		var non []int
		var errs []string
		var cpu, sys, sw []float64
		for _, r := range rs {
			rps, p50, p99, non = append(rps, r.rps), append(p50, r.p50), append(p99, r.p99), append(non, r.non2xx)
			if r.cpuUs > 0 {
				cpu = append(cpu, r.cpuUs)
			}
			if r.syscalls > 0 {
				sys, sw = append(sys, r.syscalls), append(sw, r.switches)
			}
			if r.errors != "" {
				errs = append(errs, r.errors)
			}
		}
		sum[k] = summary{rps: median(rps), p50: median(p50), p99: median(p99), non2xx: median(non), errors: errs, rounds: len(rs)}
		if len(cpu) > 0 {
			s := sum[k]
			s.cpuUs = median(cpu)
			sum[k] = s
		}
		if len(sys) > 0 {
			s := sum[k]
			s.syscalls, s.switches = median(sys), median(sw)
			sum[k] = s
		}
	}
	write(os.Stdout, order, connsList, sum)
	if *svg != "" {
		if err := os.WriteFile(*svg, []byte(chart(order, connsList, sum)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func write(w io.Writer, order []string, connsList []int, sum map[key]summary) {
	for _, c := range connsList {
		direct := sum[key{"direct-backend", c}].rps
		fmt.Fprintf(w, "### %d connections (median of rounds)\n\n", c)
		perf := false
		for _, name := range order {
			perf = perf || sum[key{name, c}].syscalls > 0
		}
		if perf {
			fmt.Fprintln(w, "| system | requests/s | ratio to direct backend | p50 | p99 | CPU µs/request | system calls/request | context switches/request | non-2xx | socket errors |")
			fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
		} else {
			fmt.Fprintln(w, "| system | requests/s | ratio to direct backend | p50 | p99 | CPU µs/request | non-2xx | socket errors |")
			fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
		}
		for _, name := range order {
			s, ok := sum[key{name, c}]
			if !ok {
				continue
			}
			errs := "-"
			if len(s.errors) > 0 {
				errs = s.errors[0]
			}
			cpu := "-"
			if s.cpuUs > 0 {
				cpu = fmt.Sprintf("%.1f", s.cpuUs)
			}
			if perf {
				cpu += fmt.Sprintf(" | %.2f | %.2f", s.syscalls, s.switches)
			}
			fmt.Fprintf(w, "| %s | %.0f | %s | %v | %v | %s | %d | %s |\n", name, s.rps, ratio(s.rps, direct),
				s.p50.Round(time.Microsecond), s.p99.Round(time.Microsecond), cpu, s.non2xx, errs)
		}
		best, bestName := 0.0, ""
		for _, p := range peers {
			if s := sum[key{p, c}]; s.rps > best {
				best, bestName = s.rps, p
			}
		}
		eq := sum[key{"gopher-equalizer", c}]
		fmt.Fprintf(w, "\nRatios at %d connections:\n\n", c)
		all := w
		var lines strings.Builder
		w := &lines
		fmt.Fprintf(w, "- gopher-equalizer (limiter on) / best peer (%s): %s requests/s; p99 %v vs %v\n",
			bestName, ratio(eq.rps, best), eq.p99.Round(time.Microsecond), sum[key{bestName, c}].p99.Round(time.Microsecond))
		for _, name := range order {
			if strings.HasPrefix(name, "gopher-equalizer-baseline-") || name == "event-loop-prototype" {
				b := sum[key{name, c}]
				fmt.Fprintf(w, "- gopher-equalizer / %s: %s requests/s, %s CPU per request; p99 %v vs %v\n", name,
					ratio(eq.rps, b.rps), ratio(eq.cpuUs, b.cpuUs), eq.p99.Round(time.Microsecond), b.p99.Round(time.Microsecond))
			}
		}
		fmt.Fprintf(w, "- gopher-equalizer with PostgreSQL persistence / best peer: %s\n", ratio(sum[key{"gopher-equalizer-postgres", c}].rps, best))
		fmt.Fprintf(w, "- limiter on / limiter off: %s\n", ratio(eq.rps, sum[key{"gopher-equalizer-limiter-off", c}].rps))
		off, al := sum[key{"gopher-equalizer-metrics-off", c}], sum[key{"gopher-equalizer-access-log", c}]
		fmt.Fprintf(w, "- metrics on / a build without them (-tags nometrics): %s requests/s, %s CPU per request\n", ratio(eq.rps, off.rps), ratio(eq.cpuUs, off.cpuUs))
		fmt.Fprintf(w, "- access log to a file / no access log: %s requests/s, %s CPU per request\n", ratio(al.rps, eq.rps), ratio(al.cpuUs, eq.cpuUs))
		fmt.Fprintf(w, "- PostgreSQL persistence / in-memory store: %s\n", ratio(sum[key{"gopher-equalizer-postgres", c}].rps, eq.rps))
		mem100k := sum[key{"gopher-equalizer-100k-clients", c}]
		for _, pg := range []struct{ name, what string }{
			{"gopher-equalizer-postgres-100k-clients", "100,000 clients"},
			{"gopher-equalizer-postgres-100k-spending", "100,000 clients whose buckets never refill to full"},
		} {
			s := sum[key{pg.name, c}]
			fmt.Fprintf(w, "- PostgreSQL persistence and sync / in-memory store, %s: %s requests/s, %s CPU per request (PostgreSQL's CPU included)\n",
				pg.what, ratio(s.rps, mem100k.rps), ratio(s.cpuUs, mem100k.cpuUs))
		}
		fmt.Fprintf(w, "- 429 path / forward path: %s\n", ratio(sum[key{"gopher-equalizer-429", c}].rps, eq.rps))
		etls, ntls := sum[key{"gopher-equalizer-tls", c}], sum[key{"nginx-2-workers-tls", c}]
		fmt.Fprintf(w, "- TLS termination, gopher-equalizer / nginx 2 workers (same certificate): %s requests/s; p99 %v vs %v\n",
			ratio(etls.rps, ntls.rps), etls.p99.Round(time.Microsecond), ntls.p99.Round(time.Microsecond))
		fmt.Fprintf(w, "- 100,000 clients / one client (both header-keyed, via wrk Lua): %s\n",
			ratio(sum[key{"gopher-equalizer-100k-clients", c}].rps, sum[key{"gopher-equalizer-one-client-header", c}].rps))
		// A run of some targets only (ONLY=) leaves some ratios unknown.
		for _, l := range strings.SplitAfter(lines.String(), "\n") {
			if l != "" && !strings.Contains(l, ": -") && !strings.Contains(l, "(): ") {
				fmt.Fprint(all, l)
			}
		}
		fmt.Fprintln(all)
	}
}

// chart draws requests/s bars per system, one group per connection count,
// with the p99 written next to each bar.
func chart(order []string, connsList []int, sum map[key]summary) string {
	const barH, gap, left, width = 16, 4, 260, 420
	maxRPS := 0.0
	for _, s := range sum {
		maxRPS = max(maxRPS, s.rps)
	}
	var b strings.Builder
	height := 30 + len(connsList)*(len(order)*(barH+gap)+40)
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+170, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="10" y="18" font-size="14" font-weight="bold">requests/s (median) and p99, wrk on 127.0.0.1</text>`+"\n")
	y := 30
	for _, c := range connsList {
		fmt.Fprintf(&b, `<text x="10" y="%d" font-weight="bold">%d connections</text>`+"\n", y+15, c)
		y += 24
		for _, name := range order {
			s, ok := sum[key{name, c}]
			if !ok {
				continue
			}
			w := int(s.rps / maxRPS * width)
			color := "#8da0cb"
			if strings.HasPrefix(name, "gopher-equalizer") {
				color = "#66c2a5"
			} else if name == "direct-backend" {
				color = "#bbbbbb"
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, left-6, y+12, name)
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`, left, y, w, barH, color)
			fmt.Fprintf(&b, `<text x="%d" y="%d">%.0f  p99 %v</text>`+"\n", left+w+6, y+12, s.rps, s.p99.Round(10*time.Microsecond))
			y += barH + gap
		}
		y += 16
	}
	b.WriteString("</svg>\n")
	return b.String()
}
