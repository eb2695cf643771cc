// Package engine is dfsmr's one imperative shell. Every operation has the
// same shape: validate the request, open one store transaction, load what it
// needs, let the pure core (server/fsm) compute the new state and the
// changes, write state, indexes and changes in that same transaction, and
// return once the store has made it durable. After each commit the engine
// wakes long-polling Ready calls and its due loop; the changelog hub is fed
// by the same commit hook.
//
// The engine owns no state that the store does not have: the machine cache
// holds immutable compiled versions, the waiter list holds only callers that
// are blocked right now. A restarted engine on the same store behaves exactly
// like the one before it.
package engine
