package ledger

// Queued is how many calls of the rollout wait for the batch in flight:
// the tests wait for it instead of sleeping.
func (b *Batcher) Queued(rolloutID string) int {
	b.calls.mu.Lock()
	defer b.calls.mu.Unlock()
	if l := b.calls.lanes[rolloutID]; l != nil {
		return len(l.queue)
	}
	return 0
}
