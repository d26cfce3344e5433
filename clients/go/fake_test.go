package muster

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDaemon is an in-process heartbeat listener that speaks just
// enough of the protocol for the tests: it reads hello, answers welcome
// (or what reply says), and hands each connection to the test.
type fakeDaemon struct {
	t        *testing.T
	ln       net.Listener
	conns    chan *fakeConn
	interval int // heartbeat_interval_ms in welcome

	mu    sync.Mutex
	nodes []string
	// reply, when set, answers hello instead of the welcome; the
	// connection is closed after it.
	reply string
	// gate, when set, holds each connection before its hello is read.
	gate chan struct{}
	all  []*fakeConn
	// certID: over TLS with client certificates, the certificate's CN
	// is the worker's identity; a hello naming another id is answered
	// worker_mismatch, as the daemon does.
	certID bool
	// handshakeErrs gets the server side's failed TLS handshakes.
	handshakeErrs chan error
}

type fakeConn struct {
	c      net.Conn
	hello  map[string]any
	peerCN string // the client certificate's CN, over TLS
	frames chan map[string]any
	raw    chan string
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	t.Helper()
	return newFakeDaemonTLS(t, nil)
}

// newFakeDaemonTLS is a fake daemon whose listener is TLS with cfg
// (nil: plain TCP).
func newFakeDaemonTLS(t *testing.T, cfg *tls.Config) *fakeDaemon {
	t.Helper()
	var ln net.Listener
	var err error
	if cfg != nil {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", cfg)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDaemon{t: t, ln: ln, conns: make(chan *fakeConn, 16), interval: 50, handshakeErrs: make(chan error, 64)}
	go d.accept()
	t.Cleanup(d.close)
	return d
}

func (d *fakeDaemon) addr() string { return d.ln.Addr().String() }

func (d *fakeDaemon) close() {
	d.ln.Close()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.all {
		c.c.Close()
	}
}

func (d *fakeDaemon) accept() {
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		go d.serve(c)
	}
}

func (d *fakeDaemon) serve(c net.Conn) {
	d.mu.Lock()
	gate, reply, nodes, certID := d.gate, d.reply, d.nodes, d.certID
	d.mu.Unlock()
	if gate != nil {
		<-gate
	}
	peerCN := ""
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.SetDeadline(time.Now().Add(wait))
		if err := tc.Handshake(); err != nil {
			select {
			case d.handshakeErrs <- err:
			default:
			}
			c.Close()
			return
		}
		_ = tc.SetDeadline(time.Time{})
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			peerCN = certs[0].Subject.CommonName
		}
	}
	r := bufio.NewReaderSize(c, 1<<20)
	line, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return
	}
	var hello map[string]any
	if err := json.Unmarshal([]byte(line), &hello); err != nil || hello["type"] != "hello" {
		c.Close()
		return
	}
	if certID && hello["worker_id"] != peerCN {
		reply = `{"type":"error","code":"worker_mismatch","message":"the client certificate is for worker ` + peerCN + `"}`
	}
	if reply != "" {
		c.Write([]byte(reply + "\n"))
		c.Close()
		return
	}
	welcome := map[string]any{
		"type": "welcome", "version": 1, "worker_id": hello["worker_id"],
		"heartbeat_interval_ms": d.interval, "inactivity_timeout_ms": 30000,
	}
	if len(nodes) > 0 {
		welcome["nodes"] = nodes
	}
	fc := &fakeConn{c: c, hello: hello, peerCN: peerCN, frames: make(chan map[string]any, 4096), raw: make(chan string, 4096)}
	fc.send(welcome)
	d.mu.Lock()
	d.all = append(d.all, fc)
	d.mu.Unlock()
	d.conns <- fc
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			close(fc.frames)
			return
		}
		var f map[string]any
		if json.Unmarshal([]byte(line), &f) == nil {
			fc.raw <- strings.TrimSuffix(line, "\n")
			fc.frames <- f
		}
	}
}

// conn waits for the next connection that said hello.
func (d *fakeDaemon) conn(timeout time.Duration) *fakeConn {
	d.t.Helper()
	select {
	case c := <-d.conns:
		return c
	case <-time.After(timeout):
		d.t.Fatalf("no connection within %v", timeout)
		return nil
	}
}

func (d *fakeDaemon) noConn(within time.Duration) {
	d.t.Helper()
	select {
	case <-d.conns:
		d.t.Fatalf("an unexpected new connection")
	case <-time.After(within):
	}
}

func (fc *fakeConn) send(v any) {
	b, _ := json.Marshal(v)
	fc.c.Write(append(b, '\n'))
}

// next is the next frame other than a heartbeat.
func (fc *fakeConn) next(t *testing.T, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case f, ok := <-fc.frames:
			if !ok {
				t.Fatalf("connection closed while waiting for a frame")
			}
			if f["type"] == "heartbeat" {
				continue
			}
			return f
		case <-deadline:
			t.Fatalf("no frame within %v", timeout)
			return nil
		}
	}
}

// heartbeat is the next heartbeat.
func (fc *fakeConn) heartbeat(t *testing.T, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case f, ok := <-fc.frames:
			if !ok {
				t.Fatalf("connection closed while waiting for a heartbeat")
			}
			if f["type"] == "heartbeat" {
				return f
			}
		case <-deadline:
			t.Fatalf("no heartbeat within %v", timeout)
			return nil
		}
	}
}

// quiet checks that nothing but heartbeats comes for a while.
func (fc *fakeConn) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case f, ok := <-fc.frames:
			if !ok {
				return
			}
			if f["type"] != "heartbeat" {
				t.Fatalf("unexpected frame %v", f)
			}
		case <-deadline:
			return
		}
	}
}
