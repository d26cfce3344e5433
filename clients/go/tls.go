package muster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
)

// TLSConfig builds a client TLS configuration (TLS 1.2 at least) from
// PEM files, for Options.TLS or NewClientTLS:
//
//   - caFile: the CA certificates that verify the daemon's certificate,
//     instead of the system's roots; "": the system's roots.
//   - certFile, keyFile: the client certificate and its private key, for
//     a daemon that requires one; both "": none. keyFile "" with a
//     certFile: the key is in certFile too.
//
// ServerName is left empty: the worker sets it for each address it
// dials, and the HTTP client from the URL.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("muster: TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("muster: TLS CA file %s: no PEM certificate in it", caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case certFile == "" && keyFile != "":
		return nil, fmt.Errorf("muster: TLS key file %s given without a certificate file", keyFile)
	case certFile != "":
		if keyFile == "" {
			keyFile = certFile
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("muster: TLS client certificate %s (key %s): %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// TLSConfigFromEnv is TLSConfig of MUSTER_TLS_CA_FILE,
// MUSTER_TLS_CERT_FILE and MUSTER_TLS_KEY_FILE (each may be unset). It
// never returns a nil configuration without an error: with none set, it
// verifies with the system's roots and presents no certificate.
// OptionsFromEnv calls it when MUSTER_TLS is on; for the HTTP client,
// pass it to NewClientTLS (an http:// URL does not use it).
func TLSConfigFromEnv() (*tls.Config, error) {
	return TLSConfig(os.Getenv("MUSTER_TLS_CA_FILE"), os.Getenv("MUSTER_TLS_CERT_FILE"), os.Getenv("MUSTER_TLS_KEY_FILE"))
}

// clientTLS is a copy of cfg for one connect to addr: TLS 1.2 at least,
// and the host part of addr as the name to verify when cfg names none.
func clientTLS(cfg *tls.Config, addr string) *tls.Config {
	c := cfg.Clone()
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		c.ServerName = host
	}
	return c
}

// tlsError is a connect whose TLS handshake failed (an unknown CA, an
// expired certificate, a name that does not match, a client certificate
// refused): like a refused connect, it is logged and the worker tries
// again after the backoff.
type tlsError struct{ err error }

func (e *tlsError) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// remoteAlert says whether err is a TLS alert from the daemon. Under
// TLS 1.3 the daemon checks the client certificate after the client's
// side of the handshake is done: a refusal comes as an alert at the
// first read.
func remoteAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// dialTLS runs the handshake over conn, within ctx. On failure conn is
// closed.
func dialTLS(ctx context.Context, conn net.Conn, cfg *tls.Config, addr string) (net.Conn, error) {
	tc := tls.Client(conn, clientTLS(cfg, addr))
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("no answer within the dial timeout: %w", err)
		}
		return nil, &tlsError{err}
	}
	return tc, nil
}
