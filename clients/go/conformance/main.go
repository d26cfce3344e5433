// Command conformance is the Go client's runner for the muster client
// conformance suite (clients/conformance/README.md): a worker made with
// the library's public API, driven over standard input.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"muster.dev/muster"
)

const lang = "go"

var (
	outMu sync.Mutex
	out   = bufio.NewWriter(os.Stdout)
)

// say prints one answer line.
func say(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(out, format+"\n", args...)
	out.Flush()
}

// fatal prints "fatal MESSAGE" and exits 3.
func fatal(err error) {
	outMu.Lock()
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintf(out, "fatal %s\n", msg)
	out.Flush()
	os.Exit(3)
}

func main() {
	logger := log.New(os.Stderr, "conformance: ", log.LstdFlags|log.Lmicroseconds)
	// MUSTER_TLS and MUSTER_TLS_*_FILE set opts.TLS.
	opts, err := muster.OptionsFromEnv()
	if err != nil {
		fatal(err)
	}
	opts.Labels = map[string]string{"client": lang}
	opts.Capacity = 4
	opts.Logger = logger
	w, err := muster.NewWorker(opts)
	if err != nil {
		fatal(err)
	}
	register(w, os.Getenv("MUSTER_CONFORMANCE_RUNS"))
	// An https:// MUSTER_URL is verified with MUSTER_TLS_CA_FILE (else
	// the system's roots), whether or not MUSTER_TLS is on.
	tlsCfg, err := muster.TLSConfigFromEnv()
	if err != nil {
		fatal(err)
	}
	client := muster.NewClientTLS(os.Getenv("MUSTER_URL"), "", tlsCfg)

	go func() {
		// A refused token, the id taken over, or a client certificate
		// naming another worker (worker_mismatch): fatal, exit 3.
		if err := w.Run(context.Background()); err != nil {
			fatal(err)
		}
	}()
	say("ready")

	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	for {
		line, err := in.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) != "" {
			if command(w, client, line) {
				return
			}
		}
		if err != nil {
			// Standard input closed: leave as bye does.
			_ = w.Close()
			return
		}
	}
}

func register(w *muster.Worker, runsFile string) {
	w.Handle("echo", func(ctx context.Context, t *muster.Task) (any, error) {
		t.Log("hello from " + lang)
		t.Progress(0.5, "halfway")
		return map[string]any{"echo": t.Payload, "client": lang}, nil
	})
	w.Handle("fail", func(ctx context.Context, t *muster.Task) (any, error) {
		return nil, muster.NonRetryable(errors.New("boom"))
	})
	w.Handle("flaky", func(ctx context.Context, t *muster.Task) (any, error) {
		if t.Attempt <= 1 {
			return nil, errors.New("try again")
		}
		return map[string]any{"attempt": t.Attempt}, nil
	})
	w.Handle("wait", func(ctx context.Context, t *muster.Task) (any, error) {
		timer := time.NewTimer(60 * time.Second)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			t.Log("cancel seen")
			return nil, ctx.Err()
		case <-timer.C:
			return map[string]any{"waited": true}, nil
		}
	})
	w.Handle("slow", func(ctx context.Context, t *muster.Task) (any, error) {
		if runsFile != "" {
			f, err := os.OpenFile(runsFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return nil, err
			}
			_, err = f.WriteString(t.ID + "\n")
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, err
			}
		}
		timer := time.NewTimer(3 * time.Second)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
		}
		return map[string]any{"slept": true}, nil
	})
}

// command runs one line; true once the runner is to exit.
func command(w *muster.Worker, c *muster.Client, line string) bool {
	verb, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	switch verb {
	case "set":
		changes, err := setChanges(rest)
		if err == nil {
			err = w.Set(changes...)
		}
		answer(err, "ok")
	case "run":
		f := strings.Fields(rest)
		if len(f) != 2 || (f[1] != "ok" && f[1] != "fail") {
			say("error usage: run SECONDS ok|fail")
			break
		}
		secs, err := strconv.ParseFloat(f[0], 64)
		if err != nil || secs < 0 {
			say("error bad SECONDS %q", f[0])
			break
		}
		w.RecordRun(time.Duration(secs*float64(time.Second)), f[1] == "ok")
		say("ok")
	case "submit":
		typ, tail, ok := strings.Cut(rest, " ")
		i := strings.LastIndexByte(tail, ' ')
		if !ok || i < 0 {
			say("error usage: submit TYPE JSON KEY")
			break
		}
		payload, key := strings.TrimSpace(tail[:i]), tail[i+1:]
		if !json.Valid([]byte(payload)) {
			say("error payload is not JSON")
			break
		}
		var o muster.SubmitOptions
		if key != "-" {
			o.IdempotencyKey = key
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t, err := c.Submit(ctx, typ, json.RawMessage(payload), o)
		cancel()
		if err != nil {
			answer(err, "")
			break
		}
		say("task %s", t.ID)
	case "wait":
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t, err := c.Wait(ctx, rest)
		cancel()
		if t != nil && (err == nil || errors.Is(err, context.DeadlineExceeded)) {
			say("state %s", t.State)
			break
		}
		answer(err, "")
	case "show":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t, err := c.Show(ctx, rest)
		cancel()
		if err != nil {
			answer(err, "")
			break
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, t.Raw); err != nil {
			answer(err, "")
			break
		}
		say("task %s", buf.String())
	case "cancel":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Cancel(ctx, rest)
		cancel()
		answer(err, "ok")
	case "bye":
		_ = w.Close()
		return true
	default:
		say("error unknown command %q", verb)
	}
	return false
}

func answer(err error, ok string) {
	if err != nil {
		say("error %s", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	say("%s", ok)
}

// setChanges reads set's object: status, queue_depth, current_job,
// cpu_usage, memory_usage.
func setChanges(text string) ([]muster.Change, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var m map[string]json.RawMessage
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	var changes []muster.Change
	for k, v := range m {
		switch k {
		case "status":
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, fmt.Errorf("status: %v", err)
			}
			changes = append(changes, muster.Status(s))
		case "queue_depth":
			var n int
			if err := json.Unmarshal(v, &n); err != nil {
				return nil, fmt.Errorf("queue_depth: %v", err)
			}
			changes = append(changes, muster.QueueDepth(n))
		case "cpu_usage", "memory_usage":
			var f float64
			if err := json.Unmarshal(v, &f); err != nil {
				return nil, fmt.Errorf("%s: %v", k, err)
			}
			if k == "cpu_usage" {
				changes = append(changes, muster.CPUUsage(f))
			} else {
				changes = append(changes, muster.MemoryUsage(f))
			}
		case "current_job":
			// As given: the library checks the frame's size.
			changes = append(changes, muster.CurrentJobJSON(v))
		default:
			return nil, fmt.Errorf("unknown key %q", k)
		}
	}
	return changes, nil
}
