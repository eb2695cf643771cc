package web

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// pageNames are the templates under templates/, each with the layout.
var pageNames = []string{"login", "error", "machines", "machine", "instances", "instance", "changes", "leases", "printers", "confirm"}

func (h *Handler) parseTemplates() error {
	funcs := template.FuncMap{
		"url":  h.url,
		"time": func(t time.Time) string { return fmtTime(t) },
		"iso": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format(time.RFC3339Nano)
		},
		"pct":   func(f float64) string { return fmt.Sprintf("%.0f%%", 100*f) },
		"lower": strings.ToLower,
		"query": func(kv ...string) string {
			if q := urlValues(kv...); q != "" {
				return "?" + q
			}
			return ""
		},
	}
	h.pages = map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return fmt.Errorf("web: template %s: %w", name, err)
		}
		h.pages[name] = t
	}
	return nil
}

// fmtTime shows a time in UTC to the second: operators compare it with logs.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// page is what every template receives.
type page struct {
	Name     string
	Title    string
	V        *viewer
	Auth     bool
	ReadOnly bool
	// Events is the /events query the page's live part follows; empty
	// for a page that is not live.
	Events string
	// Head is the changelog head when the page was read: its live part
	// follows the changes after it.
	Head uint64
	Data any
}

// render writes page name, or with an X-Fragment header only its live
// part (the template "live"), which the page's script fetches again when
// the changelog says something changed.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, name string, v *viewer, data any, code int) {
	h.renderPage(w, r, &page{Name: name, V: v, Data: data}, code)
}

func (h *Handler) renderPage(w http.ResponseWriter, r *http.Request, p *page, code int) {
	p.Auth = h.o.Auth != nil
	p.ReadOnly = h.o.ReadOnly
	if p.Title == "" {
		p.Title = p.Name
	}
	if head, ok := r.Context().Value(headKey{}).(uint64); ok && p.Head == 0 {
		p.Head = head
	}
	tmpl := "layout"
	if r.Header.Get("X-Fragment") != "" {
		tmpl = "live"
	}
	t := h.pages[p.Name]
	if t.Lookup(tmpl) == nil {
		tmpl = "layout"
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, tmpl, p); err != nil {
		h.log.Error("web template failed", logKeyPath, r.URL.Path, logKeyErr, err)
		http.Error(w, "template error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}
