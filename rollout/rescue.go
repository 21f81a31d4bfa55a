package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/tasks"
)

// DefaultRescueEvery is how often the releaser looks for orphaned tasks.
const DefaultRescueEvery = 5 * time.Second

// rescuePrefix starts the task ID of a rescue copy.
const rescuePrefix = "rescue:"

// rescue gives each orphaned import task a copy that runs now. A task is
// orphaned when the worker running it died: its lease (30 s) ran out with
// no heartbeat. asynq's recoverer hands such a task back only 30 s after
// that, on a one-minute tick, then after a retry delay: the last
// organisations of a rollout waited 60-115 s for a killed worker. The copy
// runs as soon as the lease has run out; the ledger records the
// organisation once, so the original, when asynq recovers it, finds the
// record settled and skips the call. The dead worker may have made its
// call already: the copy's call then answers 409, recorded as
// already_present, as asynq's own recovery would. It reports how many
// copies it enqueued.
func (r *Releaser) rescue(ctx context.Context) (int, error) {
	n := 0
	for page := 1; ; page++ {
		ts, err := r.m.insp.ListActiveTasks(r.cfg.Queue, asynq.Page(page), asynq.PageSize(500))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("list active tasks: %w", err)
		}
		for _, t := range ts {
			if !t.IsOrphaned || t.Type != tasks.TypeImport {
				continue
			}
			p, err := tasks.DecodePayload(t.Payload)
			if err != nil {
				continue // the handler archives it
			}
			rec, err := r.m.led.Org(ctx, p.RolloutID, p.OrgID)
			if err != nil || rec.State != ledger.Pending {
				continue
			}
			task, err := tasks.NewImportTask(p, tasks.TaskOptions{Queue: r.cfg.Queue, TaskID: rescuePrefix + t.ID, MaxRetry: t.MaxRetry})
			if err != nil {
				continue
			}
			_, err = r.m.client.EnqueueContext(ctx, task)
			switch {
			case errors.Is(err, asynq.ErrTaskIDConflict):
			case err != nil:
				return n, fmt.Errorf("rescue task %s: %w", t.ID, err)
			default:
				n++
				r.log.Warn("rescued an orphaned task (its worker died)", "task_id", t.ID, "rollout", p.RolloutID, "org", p.OrgID)
			}
		}
		if len(ts) < 500 {
			return n, nil
		}
	}
}
