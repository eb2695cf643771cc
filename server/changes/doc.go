// Package changes is the changelog fan-out hub: it lets any number of
// watchers replay the changelog from a sequence number and then tail it live,
// without ever slowing the store's writer.
//
// # Sources
//
// The store is the source of truth: every committed change is in it, in
// sequence order, until retention compacts it away. The hub only adds the
// live tail: the store's writer calls [Hub.Publish] (its CommitHook) with the
// changes of every commit, after the commit is visible to new read
// transactions. Publish appends each change to the bounded queue of every
// watcher whose [Filter] matches it, and never waits for anyone.
//
// # The replay/live handoff
//
// A stream that starts in the past must read the store and then switch to the
// live queue, and changes keep committing while it reads. If it read first
// and registered afterwards, a change published between the last read and the
// registration would be lost; so [Hub.Stream] registers its queue first,
// under the same mutex that Publish holds for a whole call, and notes the
// hub's head at that instant (upto). From then on every change with
// Seq > upto is queued, and every change with Seq <= upto is already
// committed and readable, so reading the store from the requested sequence
// through upto and then draining the queue covers the changelog with no gap.
//
// Duplicates come from the overlap: a store page may return changes past
// upto that are also queued. The stream keeps one cursor, next: every
// matching change with Seq < next has been sent or skipped. Both sources
// deliver in sequence order, so anything with Seq < next is dropped, and the
// output is strictly increasing: no duplicate, no reordering.
//
// # Stopping at the head
//
// With [StopAtHead], a stream replays only: it reads the hub's head under the
// same mutex (so that it is the head a live stream would get as upto), reads
// the store from the requested sequence through that head, applying the
// filter, and returns nil. Everything it needs is committed, so it needs no
// live queue: Publish never sees it and it cannot lag. Changes committed after
// the head are in later store pages and are not sent.
//
// # Slow watchers
//
// Each queue holds at most Options.Buffer changes that are published but not
// yet handed to send (queued plus the batch being sent). When a change would
// exceed that, Publish marks the watcher lagging and queues nothing more for
// it; other watchers are unaffected. Filtering happens in Publish, before
// queueing, so changes a watcher does not want never count against its
// buffer, and a watcher that matches nothing in a commit costs Publish a
// filter comparison per change and no lock, copy or allocation.
//
// What lagging means depends on the phase:
//
//   - While replaying, the queue fills because the stream is still reading
//     history, not because it is slow to keep up. The dropped changes are all
//     in the store, so at the end of the replay the stream clears its queue,
//     takes the hub's head again as the new upto (under the hub mutex, so the
//     "queued after upto" property holds again) and carries on reading the
//     store. A stream catching up on a long history under heavy writes thus
//     keeps reading at its own pace, memory still bounded, instead of
//     ending and starting its replay over and over.
//   - Once live, a full buffer means the client does not keep up, or has
//     stopped reading altogether (its send blocked on flow control). Publish
//     then ends the stream at once: it cancels the stream's context with the
//     lagging cause (never blocking) and counts it in [Hub.Lagged]. The
//     stream returns a [*LaggingError] whose ResumeFrom is its cursor, next:
//     every matching change before it was sent and every later one is in the
//     store, so calling Stream again from ResumeFrom with the same filter
//     misses nothing.
//
// send runs on a goroutine of the stream's, and the stream waits for it or
// for its context, whichever comes first: a send blocked on a reader that
// stopped reading does not keep the stream (nor a server's graceful stop,
// as [Hub.Close] ends every stream's context too). The blocked send is
// abandoned and returns when its call ends. The change it carried counts
// as not sent, though it may still reach the client: clients resume from
// the greater of ResumeFrom and their last seq + 1.
//
// # Invariants
//
// The changelog is gap-free, so Publish panics with an [fsm.InvariantError]
// when a published sequence is not exactly the previous one plus one. [New]
// reads the store's head so that even the first Publish is checked; this
// requires that nothing is committed between New reading the head and the
// hub being installed as the store's CommitHook (wire the hub before the
// engine starts). A whole Publish call is validated before anything is
// queued, so a panic leaves the hub unchanged.
//
// Changes are handed to every matching watcher by value, but their Params
// map is shared: send must not modify it.
package changes
