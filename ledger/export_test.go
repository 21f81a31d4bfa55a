package ledger

// QueuedFinishes is how many Finish calls of the rollout wait for the batch
// in flight: the tests wait for it instead of sleeping.
func (b *Batcher) QueuedFinishes(rolloutID string) int {
	b.finishes.mu.Lock()
	defer b.finishes.mu.Unlock()
	if l := b.finishes.lanes[rolloutID]; l != nil {
		return len(l.queue)
	}
	return 0
}

// QueuedReads is QueuedFinishes for Org.
func (b *Batcher) QueuedReads(rolloutID string) int {
	b.reads.mu.Lock()
	defer b.reads.mu.Unlock()
	if l := b.reads.lanes[rolloutID]; l != nil {
		return len(l.queue)
	}
	return 0
}
