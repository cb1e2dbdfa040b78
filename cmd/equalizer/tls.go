package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
)

// certStore serves the proxy listener's certificate and swaps it on
// reload: handshakes after the swap get the new one, connections already
// open keep theirs.
type certStore struct {
	cert atomic.Pointer[tls.Certificate]
}

func loadCert(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// tlsConfig is TLS 1.2 and later with Go's default cipher suites; ALPN
// offers h2 first when HTTP/2 is on, then HTTP/1.1.
func (s *certStore) tlsConfig(http2 bool) *tls.Config {
	protos := []string{"http/1.1"}
	if http2 {
		protos = []string{"h2", "http/1.1"}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: protos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		},
	}
}

// loadCAs reads a PEM bundle of certificate authorities for https backends
// (EQUALIZER_BACKEND_CA); empty means the system roots.
func loadCAs(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("no PEM certificate in %s", path)
	}
	return pool, nil
}
