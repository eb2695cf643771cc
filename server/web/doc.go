// Package web is the operator's dashboard that dfsmrd serves on
// --http-addr: machines drawn as graphs with live counts, instances with
// their timelines and actions, the changelog tail, leases and the printer
// wall.
//
// It runs in-process, like the gRPC handlers: it calls the engine and reads
// the changes hub directly, and asks the same role map (auth.MethodRole)
// whether a principal may do what a page offers, so one table decides both
// sides. Pages are html/template, rendered on the server and usable without
// JavaScript; the few live parts use htmx and its SSE extension (vendored
// under assets/vendor, see its README) and a small script of our own.
//
// # Sessions
//
// With a tokens file, a browser logs in by posting a token, which the
// server checks with the tokens file (auth.Authenticator). The session
// cookie then carries the token itself (HttpOnly, SameSite=Strict, Secure
// under TLS, with an expiry), and every request authenticates it again:
// a token revoked in the tokens file stops working on the next request, and
// a session outlives a server restart, so the changelog tail resumes.
// Without a tokens file every visitor acts with full rights, which the
// server allows on loopback only (or with --insecure), like its gRPC side;
// the cookie is then a random id.
//
// Every POST carries a CSRF token, an HMAC of the session cookie: a forged
// form without it is refused with 403. ReadOnly refuses every action,
// whatever the role.
//
// # Live updates
//
// GET /events is a Server-Sent Events stream of the changelog, one event per
// change with "id: <seq>", read from the changes hub: from the
// Last-Event-ID header (or the after parameter) plus one, or from now. Each
// connection is one hub stream, whose queue the hub bounds; a browser that
// falls behind has its stream ended and EventSource reconnects with its
// Last-Event-ID, so nothing is missed and nothing is sent twice. Pages
// other than the changelog use the events only as a signal to fetch their
// fragment again (htmx "sse:change" triggers, throttled).
package web
