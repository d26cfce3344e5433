package muster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
	dir  string
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, pool: x509.NewCertPool(), dir: t.TempDir(),
		pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.pool.AddCert(cert)
	return ca
}

func serial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// file writes data into the CA's directory and returns its path.
func (ca *testCA) file(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// issued is a certificate the CA signed, in memory and as PEM.
type issued struct {
	tls     tls.Certificate
	certPEM []byte
	keyPEM  []byte
}

// issue signs a leaf: a server certificate for the given names (IPs
// and DNS names), or with server false a client one whose CN is cn.
func (ca *testCA) issue(t *testing.T, cn string, server bool, names []string, notBefore, notAfter time.Time) issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return issued{tls: pair, certPEM: certPEM, keyPEM: keyPEM}
}

func validNow() (time.Time, time.Time) {
	return time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
}

// testPKI: a CA, a server certificate for 127.0.0.1 and localhost, a
// client certificate for worker w-tls, and their files.
type testPKI struct {
	ca                        *testCA
	server, client            issued
	caFile, certFile, keyFile string
	otherCA                   *testCA
	otherCAFile               string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	nb, na := validNow()
	p := &testPKI{ca: newTestCA(t, "muster test CA"), otherCA: newTestCA(t, "another CA")}
	p.server = p.ca.issue(t, "musterd", true, []string{"127.0.0.1", "localhost"}, nb, na)
	p.client = p.ca.issue(t, "w-tls", false, nil, nb, na)
	p.caFile = p.ca.file(t, "ca.pem", p.ca.pem)
	p.certFile = p.ca.file(t, "client.pem", p.client.certPEM)
	p.keyFile = p.ca.file(t, "client.key", p.client.keyPEM)
	p.otherCAFile = p.otherCA.file(t, "other-ca.pem", p.otherCA.pem)
	return p
}

// serverTLS is the daemon side: cert, requiring a client certificate
// signed by the CA when clientCA.
func (p *testPKI) serverTLS(cert issued, clientCA bool) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{cert.tls}, MinVersion: tls.VersionTLS12}
	if clientCA {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = p.ca.pool
	}
	return cfg
}

// logBuffer is a Logger's output that a test reads while the worker
// writes to it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the log has every one of subs.
func (b *logBuffer) waitFor(t *testing.T, subs ...string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		s := b.String()
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(s, sub)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log lacks %q:\n%s", subs, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTLSHelloWithClientCertificate(t *testing.T) {
	p := newTestPKI(t)
	nb, na := validNow()
	// d1's certificate names only the IP, d2's only localhost: the
	// worker must verify each against the address it dials.
	d1 := newFakeDaemonTLS(t, p.serverTLS(p.ca.issue(t, "node1", true, []string{"127.0.0.1"}, nb, na), true))
	d2 := newFakeDaemonTLS(t, p.serverTLS(p.ca.issue(t, "node2", true, []string{"localhost"}, nb, na), true))
	_, port2, _ := net.SplitHostPort(d2.addr())
	d1.mu.Lock()
	d1.certID = true
	d1.nodes = []string{d1.addr(), net.JoinHostPort("localhost", port2)}
	d1.mu.Unlock()
	d2.mu.Lock()
	d2.certID = true
	d2.mu.Unlock()

	cfg, err := TLSConfig(p.caFile, p.certFile, p.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	w := newTestWorker(t, Options{ID: "w-tls", Addrs: []string{d1.addr()}, TLS: cfg,
		Logger: log.New(logs, "", 0)})
	startWorker(t, w)

	c := d1.conn(wait)
	if c.hello["worker_id"] != "w-tls" || c.peerCN != "w-tls" {
		t.Fatalf("hello %v from certificate %q", c.hello, c.peerCN)
	}
	st := c.c.(*tls.Conn).ConnectionState()
	if st.Version < tls.VersionTLS12 {
		t.Fatalf("TLS version %x", st.Version)
	}
	c.heartbeat(t, wait)

	// The next node, by name: verified as localhost, not 127.0.0.1.
	d1.close()
	c2 := d2.conn(wait)
	if c2.peerCN != "w-tls" {
		t.Fatalf("second node saw certificate %q", c2.peerCN)
	}
	c2.heartbeat(t, wait)
	if cfg.ServerName != "" {
		t.Fatalf("the caller's config was changed: ServerName %q", cfg.ServerName)
	}
}

func TestTLSHandshakeFailuresAreRetried(t *testing.T) {
	p := newTestPKI(t)
	nb, na := validNow()
	expired := p.ca.issue(t, "musterd", true, []string{"127.0.0.1"}, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	otherName := p.ca.issue(t, "musterd", true, []string{"muster.example"}, nb, na)
	good, err := TLSConfig(p.caFile, p.certFile, p.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	wrongCA, err := TLSConfig(p.otherCAFile, p.certFile, p.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	noCert, err := TLSConfig(p.caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		server issued
		client *tls.Config
		want   []string
	}{
		{"unknown CA", p.server, wrongCA, []string{"TLS handshake: ", "unknown authority"}},
		{"expired", expired, good, []string{"TLS handshake: ", "expired"}},
		{"name mismatch", otherName, good, []string{"TLS handshake: ", "validate certificate for 127.0.0.1"}},
		// The daemon refuses the missing certificate; the worker hears
		// it at its first read.
		{"no client certificate", p.server, noCert, []string{"TLS handshake: remote error: tls:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDaemonTLS(t, p.serverTLS(tc.server, true))
			logs := &logBuffer{}
			w := newTestWorker(t, Options{ID: "w-tls", Addrs: []string{d.addr()}, TLS: tc.client,
				Logger: log.New(logs, "", 0)})
			done := startWorker(t, w)
			logs.waitFor(t, append(tc.want, "every address failed; retrying in")...)
			select {
			case err := <-done:
				t.Fatalf("Run gave up: %v", err)
			default:
			}
			d.noConn(50 * time.Millisecond)
			select {
			case <-d.handshakeErrs:
			case <-time.After(wait):
				t.Fatal("the daemon saw no failed handshake")
			}
		})
	}
}

func TestTLSWorkerMismatchIsFatal(t *testing.T) {
	p := newTestPKI(t)
	d := newFakeDaemonTLS(t, p.serverTLS(p.server, true))
	d.mu.Lock()
	d.certID = true
	d.mu.Unlock()
	cfg, err := TLSConfig(p.caFile, p.certFile, p.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	// The certificate says w-tls; hello says w-other.
	w := newTestWorker(t, Options{ID: "w-other", Addrs: []string{d.addr(), d.addr()}, TLS: cfg})
	done := startWorker(t, w)
	select {
	case err := <-done:
		var de *DaemonError
		if !errors.Is(err, ErrWorkerMismatch) || !errors.As(err, &de) || de.Code != "worker_mismatch" {
			t.Fatalf("Run: %#v", err)
		}
		if errors.Is(err, ErrUnauthorized) {
			t.Fatalf("worker_mismatch matched ErrUnauthorized")
		}
	case <-time.After(wait):
		t.Fatal("Run kept retrying")
	}
}

func TestWorkerMismatchAfterWelcomeIsFatal(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}})
	done := startWorker(t, w)
	c := d.conn(wait)
	c.send(map[string]any{"type": "error", "code": "worker_mismatch", "message": "the client certificate is for worker w-x"})
	select {
	case err := <-done:
		if !errors.Is(err, ErrWorkerMismatch) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run went on")
	}
}

func TestClientTLS(t *testing.T) {
	api := &fakeAPI{tasks: map[string]map[string]any{}, keys: map[string]string{}}
	// httptest.NewTLSServer, with the refused handshakes below kept
	// out of the test's output.
	srv := httptest.NewUnstartedServer(api)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MUSTER_TLS_CA_FILE", caFile)
	t.Setenv("MUSTER_TLS_CERT_FILE", "")
	t.Setenv("MUSTER_TLS_KEY_FILE", "")
	cfg, err := TLSConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := NewClientTLS(srv.URL, "api-token", cfg)
	task, err := c.Submit(ctx, "resize", map[string]any{"file": "a.png"}, SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Show(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	if api.auth != "Bearer api-token" {
		t.Fatalf("Authorization %q", api.auth)
	}

	// The system's roots do not know httptest's CA; neither does another.
	var unknown x509.UnknownAuthorityError
	if _, err := NewClient(srv.URL, "").Submit(ctx, "resize", nil, SubmitOptions{}); !errors.As(err, &unknown) {
		t.Fatalf("without the CA: %v", err)
	}
	other := newTestCA(t, "another CA")
	wrong, err := TLSConfig(other.file(t, "ca.pem", other.pem), "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewClientTLS(srv.URL, "", wrong).Submit(ctx, "resize", nil, SubmitOptions{}); !errors.As(err, &unknown) {
		t.Fatalf("with another CA: %v", err)
	}
}

func TestTLSOptionsFromEnv(t *testing.T) {
	p := newTestPKI(t)
	for _, k := range []string{"MUSTER_ADDRS", "MUSTER_HEARTBEAT_ADDR", "MUSTER_LABELS", "MUSTER_CAPACITY"} {
		t.Setenv(k, "")
	}
	t.Setenv("MUSTER_TLS_CA_FILE", p.caFile)
	t.Setenv("MUSTER_TLS_CERT_FILE", p.certFile)
	t.Setenv("MUSTER_TLS_KEY_FILE", p.keyFile)
	for _, on := range []string{"1", "true", "TRUE"} {
		t.Setenv("MUSTER_TLS", on)
		o, err := OptionsFromEnv()
		if err != nil {
			t.Fatal(err)
		}
		if o.TLS == nil || o.TLS.RootCAs == nil || len(o.TLS.Certificates) != 1 || o.TLS.MinVersion != tls.VersionTLS12 {
			t.Fatalf("MUSTER_TLS=%s: %+v", on, o.TLS)
		}
	}
	for _, off := range []string{"", "0", "false"} {
		t.Setenv("MUSTER_TLS", off)
		if o, err := OptionsFromEnv(); err != nil || o.TLS != nil {
			t.Fatalf("MUSTER_TLS=%q: %v, %+v", off, err, o.TLS)
		}
	}
	t.Setenv("MUSTER_TLS", "yes")
	if _, err := OptionsFromEnv(); err == nil || !strings.Contains(err.Error(), "MUSTER_TLS") {
		t.Fatalf("MUSTER_TLS=yes: %v", err)
	}
	// On with no files: the system's roots, no certificate.
	t.Setenv("MUSTER_TLS", "1")
	t.Setenv("MUSTER_TLS_CA_FILE", "")
	t.Setenv("MUSTER_TLS_CERT_FILE", "")
	t.Setenv("MUSTER_TLS_KEY_FILE", "")
	if o, err := OptionsFromEnv(); err != nil || o.TLS == nil || o.TLS.RootCAs != nil || len(o.TLS.Certificates) != 0 {
		t.Fatalf("no files: %v, %+v", err, o.TLS)
	}
	t.Setenv("MUSTER_TLS_CA_FILE", filepath.Join(t.TempDir(), "missing.pem"))
	if _, err := OptionsFromEnv(); err == nil {
		t.Fatal("a missing CA file was taken")
	}
}

func TestTLSConfigFiles(t *testing.T) {
	p := newTestPKI(t)
	bad := p.ca.file(t, "garbage.pem", []byte("not a certificate\n"))
	for _, c := range [][3]string{
		{bad, "", ""},                   // no PEM certificate
		{"", "", p.keyFile},             // a key without its certificate
		{"", p.certFile, ""},            // a certificate without its key
		{"", p.certFile, p.otherCAFile}, // a key file with no key
		{"/nonexistent/ca.pem", "", ""},
	} {
		if _, err := TLSConfig(c[0], c[1], c[2]); err == nil {
			t.Errorf("TLSConfig%q was taken", c)
		}
	}
	// Certificate and key in one file.
	both := p.ca.file(t, "both.pem", append(append([]byte(nil), p.client.certPEM...), p.client.keyPEM...))
	cfg, err := TLSConfig("", both, "")
	if err != nil || len(cfg.Certificates) != 1 || cfg.RootCAs != nil || cfg.ServerName != "" {
		t.Fatalf("one file: %v %+v", err, cfg)
	}
}

func TestClientTLSServerName(t *testing.T) {
	base := &tls.Config{}
	for addr, want := range map[string]string{
		"127.0.0.1:8090":      "127.0.0.1",
		"[::1]:8090":          "::1",
		"musterd.example:443": "musterd.example",
	} {
		if got := clientTLS(base, addr); got.ServerName != want || got.MinVersion != tls.VersionTLS12 {
			t.Errorf("%s: ServerName %q, MinVersion %x", addr, got.ServerName, got.MinVersion)
		}
	}
	if got := clientTLS(&tls.Config{ServerName: "fixed"}, "10.0.0.1:8090"); got.ServerName != "fixed" {
		t.Errorf("a given ServerName was replaced by %q", got.ServerName)
	}
	if base.ServerName != "" || base.MinVersion != 0 {
		t.Errorf("the caller's config was changed")
	}
}

func TestUDPWithTLSIsRefused(t *testing.T) {
	_, err := NewWorker(Options{ID: "u1", UDP: true, TLS: &tls.Config{}})
	if err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("UDP with TLS: %v", err)
	}
}
