package client

// CallBackoff exposes the Worker's call backoff to the tests.
var CallBackoff = callBackoff
