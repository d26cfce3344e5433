// Package muster is the Go worker library of muster: a worker that
// reports to musterd over its heartbeat protocol (muster-protocol(7),
// version 1) and runs the tasks the daemon hands it, and a small client
// of the daemon's HTTP task API.
//
// A worker:
//
//	w, err := muster.NewWorker(muster.Options{ID: "resizer-1", Addrs: []string{"127.0.0.1:8090"}, Capacity: 4})
//	if err != nil {
//		log.Fatal(err)
//	}
//	w.Handle("resize", func(ctx context.Context, t *muster.Task) (any, error) {
//		t.Log("resizing")
//		t.Progress(0.5, "halfway")
//		return map[string]any{"ok": true}, nil
//	})
//	if err := w.Run(ctx); err != nil {
//		log.Fatal(err) // the token refused, or the id taken over
//	}
//
// Run says hello over TCP, beats at the interval the daemon's welcome
// gives, and reconnects when the connection is lost: the next address at
// once, and once every address failed, after 250 ms doubling up to 5 s
// (each wait between half and one and a half of that). Tasks keep
// running meanwhile; their updates and logs wait for the new connection,
// whose hello re-reports them.
//
// # TLS
//
// Options.TLS wraps the heartbeat connection in TLS 1.2 or later, the
// same newline-delimited JSON inside; NewClientTLS does the same for an
// https:// API. TLSConfig builds the configuration from PEM files: the
// CA that verifies the daemon (else the system's roots) and, for a
// daemon that requires one, the client certificate, whose subject's CN
// is then the worker's id:
//
//	cfg, err := muster.TLSConfig("/etc/muster/ca.pem", "/etc/muster/worker.pem", "/etc/muster/worker.key")
//	if err != nil {
//		log.Fatal(err)
//	}
//	w, err := muster.NewWorker(muster.Options{ID: "resizer-1", Addrs: []string{"musterd.lan:8090"}, TLS: cfg})
//
// With ServerName empty, each connect verifies the certificate against
// the host part of the address it dials (an IP address against the
// certificate's IP SANs). A failed handshake is a failed connect: it is
// logged and retried with the backoff. A hello whose id is not the
// certificate's is refused with worker_mismatch: Run returns an error
// matching ErrWorkerMismatch. OptionsFromEnv turns TLS on with
// MUSTER_TLS=1 (or true), with TLSConfigFromEnv's MUSTER_TLS_CA_FILE,
// MUSTER_TLS_CERT_FILE and MUSTER_TLS_KEY_FILE. UDP heartbeats cannot be
// TLS: NewWorker refuses UDP with TLS.
package muster
