package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/valyala/fasthttp"
)

// chromium finds Debian's chromium (or another name for it), else skips
// or fails as requireTool does.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return requireTool(t, "chromium")
}

// stoppableBackend is a backend the test can take down.
func stoppableBackend(t *testing.T) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go s.Serve(ln) //nolint:errcheck
	var once sync.Once
	stop := func() { once.Do(func() { _ = s.Shutdown() }) }
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

// TestStatusPageInChromium loads the admin status page of the real binary
// in headless Chromium: no console errors, both backends by name, one
// shown down after it stops, readable at phone width.
// EQUALIZER_SCREENSHOT=file.png saves a 1280x800 screenshot (the README's).
func TestStatusPageInChromium(t *testing.T) {
	browser := chromium(t)
	b1, _ := stoppableBackend(t)
	b2, stopB2 := stoppableBackend(t)
	in := startInstance(t, map[string]string{
		"EQUALIZER_BACKENDS":               b1 + "," + b2,
		"EQUALIZER_ADMIN_TOKEN":            "page-secret",
		"EQUALIZER_HEALTH_INTERVAL":        "200ms",
		"EQUALIZER_CLIENT_KEY":             "header:X-Client",
		"EQUALIZER_BUCKET_CAPACITY":        "3",
		"EQUALIZER_BUCKET_REFILL_AMOUNT":   "1",
		"EQUALIZER_BUCKET_REFILL_INTERVAL": "1m",
	})
	for i := range 40 {
		in.get(t, "/", "X-Client", fmt.Sprintf("client-%d", i%8))
	}
	// Hostile client keys must show as text, not run.
	in.get(t, "/", "X-Client", "<img src=x onerror=alert(1)>")
	for range 5 {
		in.get(t, "/", "X-Client", "<img src=x onerror=alert(1)>")
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 800), chromedp.Flag("headless", "new"))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	var mu sync.Mutex
	var problems []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			problems = append(problems, fmt.Sprintf("exception: %s at %s:%d", d.Text, d.URL, d.LineNumber))
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				problems = append(problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
			}
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
				problems = append(problems, fmt.Sprintf("log %s: %s %s", ev.Entry.Level, ev.Entry.Text, ev.Entry.URL))
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}

	page := "http://" + in.admin + "/#token=page-secret"
	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible(`#backends tbody td.name`)); err != nil {
		t.Fatalf("loading %s: %v\n%s", page, err, in.log())
	}
	table, err := chromedp.Run(ctx, chromedp.Text(`#backends tbody`))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{b1, b2} {
		if !strings.Contains(table, b) {
			t.Fatalf("backends table lacks %s:\n%s", b, table)
		}
	}
	if strings.Count(table, "up") < 2 || strings.Contains(table, "down") {
		t.Fatalf("both backends should be up:\n%s", table)
	}
	// Without routes: the one catch-all route of the pool default.
	routes, err := chromedp.Run(ctx, chromedp.Text(`#routes tbody`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(routes, "default") || !strings.Contains(routes, "everything") || !strings.Contains(routes, "46") {
		t.Errorf("the routes table does not show the catch-all route and its 46 requests:\n%s", routes)
	}
	if strings.Count(table, "default") < 2 {
		t.Errorf("the backends table does not name their pool:\n%s", table)
	}
	limitsTable, err := chromedp.Run(ctx, chromedp.Text(`#limits tbody`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(limitsTable, "default") || !strings.Contains(limitsTable, "header:X-Client") || !strings.Contains(limitsTable, "3 at once") {
		t.Errorf("the limits table does not show the limit default:\n%s", limitsTable)
	}
	location, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
	if err != nil {
		t.Fatal(err)
	}
	clients, err := chromedp.Run(ctx, chromedp.Text(`#clients tbody`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(location, "page-secret") {
		t.Errorf("the token stayed in the address bar: %s", location)
	}
	if !strings.Contains(clients, "<img src=x onerror=alert(1)>") {
		t.Errorf("the most limited client is not shown as text:\n%s", clients)
	}
	if path := os.Getenv("EQUALIZER_SCREENSHOT"); path != "" {
		// Some traffic for two refreshes, so rates and latencies show.
		stop := time.Now().Add(4500 * time.Millisecond)
		for i := 0; time.Now().Before(stop); i++ {
			in.get(t, "/", "X-Client", fmt.Sprintf("shot-%d", i/2)) // mostly admitted
			time.Sleep(5 * time.Millisecond)
		}
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Take the second backend down: the page shows it within a few
	// refreshes, without a reload.
	stopB2()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
			`Array.from(document.querySelectorAll("#backends tbody tr")).map(r => r.textContent)`))
		if err != nil {
			t.Fatal(err)
		}
		down := false
		for _, r := range rows {
			if strings.Contains(r, b2) && strings.Contains(r, "down") {
				down = true
			}
			if strings.Contains(r, b1) && !strings.Contains(r, "up") {
				t.Fatalf("the running backend is not shown up: %q", r)
			}
		}
		if down {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stopped backend never showed down: %q", rows)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// At phone width nothing sticks out of the page sideways: wide tables
	// scroll inside their box.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(3), chromedp.EmulateMobile),
		chromedp.Sleep(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow {
		t.Errorf("at 390 px the page scrolls sideways")
	}

	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("the browser reported:\n%s", strings.Join(problems, "\n"))
	}
	in.stop(t, syscall.SIGTERM)
}
