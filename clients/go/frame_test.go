package muster

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestEncodeFrameIsOneLine(t *testing.T) {
	b, err := encodeFrame(&taskLogFrame{Type: "task_log", TaskID: "t1", Lines: []string{"a\nb", "<&>", "é"}}, DefaultMaxFrameBytes)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Fatalf("%q is not one line", s)
	}
	if want := `{"type":"task_log","task_id":"t1","lines":["a\nb","<&>","é"]}` + "\n"; s != want {
		t.Fatalf("got %q, want %q", s, want)
	}
}

func TestEncodeFrameLimit(t *testing.T) {
	// {"type":"task_log","task_id":"t","lines":["xxx"]} is 42 bytes + the line.
	over := len(`{"type":"task_log","task_id":"t","lines":[""]}`)
	at := func(n int) error {
		_, err := encodeFrame(&taskLogFrame{Type: "task_log", TaskID: "t", Lines: []string{strings.Repeat("x", n-over)}}, DefaultMaxFrameBytes)
		return err
	}
	if err := at(DefaultMaxFrameBytes); err != nil {
		t.Fatalf("a frame of exactly the limit: %v", err)
	}
	err := at(DefaultMaxFrameBytes + 1)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("one byte over: %v", err)
	}
	if !strings.Contains(err.Error(), "65537") {
		t.Fatalf("the error does not say the size: %v", err)
	}
}

func TestHeartbeatFrame(t *testing.T) {
	var r report
	b, _ := encodeFrame(r.heartbeat(1, false), DefaultMaxFrameBytes)
	if got := string(b); got != `{"type":"heartbeat","seq":1,"status":"idle"}`+"\n" {
		t.Fatalf("%q", got)
	}
	b, _ = encodeFrame(r.heartbeat(2, true), DefaultMaxFrameBytes)
	if !strings.Contains(string(b), `"status":"working"`) {
		t.Fatalf("busy: %q", b)
	}
	CurrentJob(nil).apply(&r)
	Status(StatusError).apply(&r)
	b, _ = encodeFrame(r.heartbeat(3, true), DefaultMaxFrameBytes)
	if got := string(b); got != `{"type":"heartbeat","seq":3,"status":"error","current_job":null}`+"\n" {
		t.Fatalf("%q", got)
	}
}

func lines(t *testing.T, r io.Reader, max int) []string {
	t.Helper()
	lr := newLineReader(r, max)
	var got []string
	for {
		l, err := lr.next()
		if err == errLineTooLong {
			got = append(got, "<too long>")
			continue
		}
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(l))
	}
}

func TestLineSplitting(t *testing.T) {
	in := "{\"a\":1}\r\n{\"b\":2}\n\n   \r\n{\"c\":3}\n{\"tail\":true}"
	want := []string{`{"a":1}`, `{"b":2}`, `{"c":3}`, `{"tail":true}`}
	for name, r := range map[string]io.Reader{
		"whole":    strings.NewReader(in),
		"one byte": iotest.OneByteReader(strings.NewReader(in)),
		"halves":   iotest.HalfReader(strings.NewReader(in)),
	} {
		got := lines(t, r, 1024)
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: %q", name, got)
		}
	}
}

func TestLongLinesAreSkipped(t *testing.T) {
	long := strings.Repeat("x", 200_000)
	in := `{"a":1}` + "\n" + long + "\n" + `{"b":2}` + "\n" + strings.Repeat("y", 101) + "\r\n" + strings.Repeat("z", 100) + "\r\n"
	got := lines(t, strings.NewReader(in), 100)
	want := []string{`{"a":1}`, "<too long>", `{"b":2}`, "<too long>", strings.Repeat("z", 100)}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("%q", got)
	}
}

func TestDecodeInFrame(t *testing.T) {
	f, err := decodeInFrame([]byte(`{"type":"task","task_id":"t1","task_type":"resize","payload":{"x":[1]},"attempt":2,"timeout_ms":500,"lease":7,"new_field":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if f.TaskID != "t1" || f.TaskType != "resize" || string(f.Payload) != `{"x":[1]}` || f.Attempt != 2 || f.TimeoutMS != 500 || f.Lease != 7 {
		t.Fatalf("%+v", f)
	}
	if _, err := decodeInFrame([]byte(`{"no":"type"}`)); err == nil {
		t.Fatal("a frame without a type was read")
	}
	if _, err := decodeInFrame([]byte(`[1]`)); err == nil {
		t.Fatal("an array was read")
	}
	f, _ = decodeInFrame([]byte(`{"type":"error","code":"task_not_held","message":"task 1a2b is not held by w1"}`))
	if id := notHeldTask(f); id != "1a2b" {
		t.Fatalf("task_not_held names %q", id)
	}
}

func TestTaskLogFrames(t *testing.T) {
	w := newTestWorker(t, Options{})
	r := &run{task: &Task{ID: "t1"}, cancel: func() {}}
	w.runs["t1"] = r
	many := make([]string, 3000)
	for i := range many {
		many[i] = "line"
	}
	w.taskLog(r, many)
	if len(w.outbox) != 3 {
		t.Fatalf("%d frames for 3000 lines", len(w.outbox))
	}
	w.outbox = nil
	w.taskLog(r, []string{strings.Repeat("é", 50000), "next"})
	for _, f := range w.outbox {
		if len(f.data)-1 > DefaultMaxFrameBytes {
			t.Fatalf("a log frame of %d bytes", len(f.data))
		}
	}
	if len(w.outbox) != 2 {
		t.Fatalf("%d frames", len(w.outbox))
	}
}

func TestTruncate(t *testing.T) {
	if got := truncate("héllo", 2); got != "h" {
		t.Fatalf("%q", got)
	}
	if got := truncate("abc", 5); got != "abc" {
		t.Fatalf("%q", got)
	}
}
