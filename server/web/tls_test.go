package web_test

import (
	"crypto/tls"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/tlsconf"
	"github.com/dfsmr/dfsmr/server/tlsconf/tlstest"
)

// TestDashboardOverTLS: under TLS the dashboard serves HTTPS with the
// server's certificate, and the session cookie is Secure, HttpOnly and
// SameSite=Strict.
func TestDashboardOverTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "dfsmr-test")
	pair := ca.Server(t, "127.0.0.1")
	e := mustServer(t, true, func(c *server.Config) {
		c.TLSCert, c.TLSKey = pair.CertFile, pair.KeyFile
	})
	pool, err := tlsconf.LoadPool(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "https://" + e.srv.HTTPAddr()
	resp, err := c.PostForm(base+"/login", url.Values{"token": {e.tokens["olga"]}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sc := resp.Header.Get("Set-Cookie")
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(sc, "Secure") || !strings.Contains(sc, "HttpOnly") || !strings.Contains(sc, "SameSite=Strict") {
		t.Fatalf("login over TLS: %d, Set-Cookie %q", resp.StatusCode, sc)
	}
	resp, err = c.Get(base + "/instances")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /instances over TLS: %d", resp.StatusCode)
	}
	// Plain HTTP on the TLS port gets nowhere.
	if resp, err := http.Get("http://" + e.srv.HTTPAddr() + "/instances"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP served on the TLS dashboard")
		}
	}
}
