package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testCA makes a certificate authority and signs leaf certificates for
// 127.0.0.1 with it, written as PEM files.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "equalizer test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, dir: t.TempDir(), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	writePEM(t, filepath.Join(ca.dir, "ca.pem"), "CERTIFICATE", der)
	return ca
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// leaf signs a certificate for 127.0.0.1 with the given serial and writes
// name.pem and name.key.
func (ca *testCA) leaf(t *testing.T, name string, serial int64) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

// httpsBackend answers with what it saw: TLS or not, and X-Forwarded-Proto.
func httpsBackend(t *testing.T, certFile, keyFile string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			io.WriteString(w, "plain ")
		} else {
			io.WriteString(w, "tls:"+r.TLS.ServerName+" ")
		}
		io.WriteString(w, "proto="+r.Header.Get("X-Forwarded-Proto"))
	})}
	go s.ServeTLS(ln, certFile, keyFile) //nolint:errcheck
	t.Cleanup(func() { s.Close() })
	return "https://" + ln.Addr().String()
}

// TestTLSBothWays: TLS 1.2+ on the proxy listener with X-Forwarded-Proto
// https, an https backend verified against EQUALIZER_BACKEND_CA with SNI,
// an unverifiable one refused, and the certificate swapped on SIGHUP.
func TestTLSBothWays(t *testing.T) {
	ca := newTestCA(t)
	proxyCert, proxyKey := ca.leaf(t, "proxy", 10)
	backendCert, backendKey := ca.leaf(t, "backend", 20)
	// By name, so that SNI is sent (never for an IP address, RFC 6066).
	backend := strings.Replace(httpsBackend(t, backendCert, backendKey), "127.0.0.1", "localhost", 1)
	in := startInstance(t, map[string]string{
		"EQUALIZER_BACKENDS":        backend,
		"EQUALIZER_BACKEND_CA":      filepath.Join(ca.dir, "ca.pem"),
		"EQUALIZER_TLS_CERT":        proxyCert,
		"EQUALIZER_TLS_KEY":         proxyKey,
		"EQUALIZER_HEALTH_INTERVAL": "1h",
	})
	get := func(cfg *tls.Config) (int, string, *tls.ConnectionState, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
		resp, err := c.Get("https://" + in.proxy + "/")
		if err != nil {
			return 0, "", nil, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.TLS, nil
	}
	code, body, state, err := get(&tls.Config{RootCAs: ca.pool})
	if err != nil || code != 200 || body != "tls:localhost proto=https" {
		t.Fatalf("through TLS both ways: %d %q %v", code, body, err)
	}
	if state.PeerCertificates[0].SerialNumber.Int64() != 10 || state.Version < tls.VersionTLS12 {
		t.Fatalf("certificate serial %v, version %x", state.PeerCertificates[0].SerialNumber, state.Version)
	}
	if _, _, _, err := get(&tls.Config{RootCAs: ca.pool, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Fatal("a TLS 1.1 client was served")
	}
	if resp, err := http.Get("http://" + in.proxy + "/"); err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP was served on the TLS listener")
	}

	// Renewal in place, then SIGHUP: new handshakes get the new certificate.
	newCert, newKey := ca.leaf(t, "proxy-renewed", 11)
	for _, f := range [][2]string{{newCert, proxyCert}, {newKey, proxyKey}} {
		data, _ := os.ReadFile(f[0])
		if err := os.WriteFile(f[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	in.cmd.Process.Signal(syscall.SIGHUP) //nolint:errcheck
	waitFor(t, "the renewed certificate", func() bool {
		_, _, st, err := get(&tls.Config{RootCAs: ca.pool})
		return err == nil && st.PeerCertificates[0].SerialNumber.Int64() == 11
	})
	in.stop(t, syscall.SIGTERM)

	// Without the CA the backend cannot be verified: 502, never plain.
	in = startInstance(t, map[string]string{"EQUALIZER_BACKENDS": backend, "EQUALIZER_HEALTH_INTERVAL": "1h"})
	if code, body, _ := in.get(t, "/"); code != 502 {
		t.Fatalf("an https backend signed by an unknown authority: %d %q", code, body)
	}
	in.stop(t, syscall.SIGTERM)
}
