// Package storetest is the conformance suite of store.Store: the behaviour
// every implementation must show, run by each implementation's tests with
// Exercise (the shape of River's riverdrivertest). Every store bug fix adds
// a case here, so that all implementations get it.
//
// Conventions the suite pins down where the interface leaves room:
//   - limit <= 0 means no limit in every listing call;
//   - History of an unknown instance is empty, not an error;
//   - Changes with from 0 starts at the first entry;
//   - Ready with a Node but no Machine is an error;
//   - PutMachine of an existing (id, version) is an error;
//   - PutInstance refuses to change a FINAL instance or to lower its fencing
//     token, with an error wrapping *fsm.InvariantError;
//   - params and machine sources come back nil when empty; times come back
//     in UTC without a monotonic reading (compare with time.Equal);
//   - the zero time stays the zero time;
//   - DurationSamples of a node with none recorded is empty, not an error;
//     AddDurationSample refuses version 0, a negative duration and names
//     the other calls refuse.
package storetest
