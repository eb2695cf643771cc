package reportapi_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/dfsmr/dfsmr/internal/reportapi"
)

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestReports(t *testing.T) {
	s, err := reportapi.Start(reportapi.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, a := get(t, s.URL()+"/reports/acme/2026-01-01")
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(a, []byte("day,client,campaign")) || bytes.Count(a, []byte("\n")) != 4 {
		t.Fatalf("%s:\n%s", resp.Status, a)
	}
	if _, again := get(t, s.URL()+"/reports/acme/2026-01-01"); !bytes.Equal(a, again) {
		t.Fatal("the same report came back different")
	}
	if _, other := get(t, s.URL()+"/reports/acme/2026-01-02"); bytes.Equal(a, other) {
		t.Fatal("two days have the same report")
	}
	for _, path := range []string{"/reports/nobody/2026-01-01", "/reports/acme/yesterday"} {
		if resp, _ := get(t, s.URL()+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %s, want 404", path, resp.Status)
		}
	}
	if st := s.Stats(); st.Requests != 5 || st.OK != 3 || st.NotFound != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFailuresAndRateLimit(t *testing.T) {
	s, err := reportapi.Start(reportapi.Options{FailureRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, s.URL()+"/reports/acme/2026-01-01"); resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("FailureRate 1: %s", resp.Status)
	}
	s.Close()

	// A bucket of 2 refilled once an hour: the third request is throttled.
	s, err = reportapi.Start(reportapi.Options{RateLimit: 1.0 / 3600, Burst: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 2 {
		if resp, _ := get(t, s.URL()+"/reports/acme/2026-01-01"); resp.StatusCode != http.StatusOK {
			t.Fatalf("within the burst: %s", resp.Status)
		}
	}
	resp, _ := get(t, s.URL()+"/reports/acme/2026-01-01")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Retry-After") == "0" {
		t.Fatalf("past the burst: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	if st := s.Stats(); st.Throttled != 1 || st.OK != 2 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := reportapi.Start(reportapi.Options{FailureRate: 2}); err == nil {
		t.Fatal("FailureRate 2 accepted")
	}
}
