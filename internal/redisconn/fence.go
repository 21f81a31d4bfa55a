package redisconn

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultFailoverHold is the longest the fence holds a Sentinel client's
// commands during one failover (Options.FailoverHold). The sentinels name
// the new master about 1 s after they promote it (they read its INFO once
// a second during a failover); ten times that leaves room for a slow host
// and still ends a hold whose end the fence never heard.
const DefaultFailoverHold = 10 * time.Second

// fence holds every command of a Sentinel-backed client from the moment
// the sentinel leading a failover is about to promote the replica until
// the client writes to the new master.
//
// Why: Sentinel promotes the replica (REPLICAOF NO ONE) while the old
// master is still up and still takes writes, and go-redis follows the
// switch only when a sentinel publishes +switch-master, about a second
// later. Everything written in that second goes to the old master and is
// discarded when the sentinels make it a replica (after up to 10 s more):
// ledger outcomes, asynq's dones and dequeues. The tasks then run again,
// and every one whose import had succeeded calls the API again (93-100
// repeated calls at R=100 in the e2e suite, more than the 40 tasks in
// flight). Redis's WAIT (ledger.Options.WaitReplicas) prevents it only
// for the ledger, costs a stall of its timeouts, and stops all writes when
// the promoted replica has no replica of its own.
//
// The leader publishes +failover-state-send-slaveof-noone one sentinel
// timer tick (about 100 ms) before it sends REPLICAOF NO ONE, so the fence
// subscribes to every sentinel (only the leader publishes it), holds from
// that event, and releases once a command through the client reaches a
// master whose replication ID differs from the old master's: the
// promoted replica takes a new ID at its promotion, the old master keeps
// its own until it is a replica. The leader's abort, or
// DefaultFailoverHold, ends a hold too. A failover after a dead master holds nothing that was not
// stuck already: the old master answers nothing.
type fence struct {
	master string
	log    *slog.Logger
	max    time.Duration
	// probe asks the server the client's commands go to now for its role
	// and replication ID, past the fence.
	probe func(ctx context.Context) (role, replID string, err error)
	// onHold, if set, gets each hold's length as it ends.
	onHold func(held time.Duration)

	mu      sync.Mutex
	held    chan struct{} // closed at the release; nil while open
	since   time.Time
	oldID   string // the replication ID of the master the hold began on
	probed  bool   // oldID has been asked for (empty: the old master did not answer)
	switchd bool   // a sentinel has named the new master
	leader  string // the sentinel that began the hold
	gen     int    // counts holds, so a stale timer or check releases nothing

	stop context.CancelFunc
	done sync.WaitGroup
}

type bypassKey struct{}

// errNotProbed: the old master's ID is not known yet, so no master can be
// told from it.
var errNotProbed = errors.New("the old master's replication ID is not known yet")

// passing marks ctx as the fence's own: its commands are never held.
func passing(ctx context.Context) context.Context {
	return context.WithValue(ctx, bypassKey{}, true)
}

// wait blocks while a hold is on, until it ends or ctx does.
func (f *fence) wait(ctx context.Context) error {
	if ctx.Value(bypassKey{}) != nil {
		return nil
	}
	f.mu.Lock()
	ch := f.held
	f.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// DialHook is go-redis's hook interface; the fence does not hold dials.
func (f *fence) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook holds single commands.
func (f *fence) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := f.wait(ctx); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook holds pipelines and transactions.
func (f *fence) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := f.wait(ctx); err != nil {
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		return next(ctx, cmds)
	}
}

// event applies one sentinel event, published by the sentinel at from.
// Payloads (Sentinel's own format):
//
//	+failover-state-send-slaveof-noone  slave <ip:port> <ip> <port> @ <master> <ip> <port>
//	+switch-master                      <master> <old ip> <old port> <new ip> <new port>
//	-failover-abort-slave-timeout       master <master> <ip> <port>
//
// The only abort after the leader sends REPLICAOF NO ONE is its own
// slave-timeout (the promotion was never seen); another sentinel's abort
// is of its own attempt. A failover that times out later, reconfiguring
// the other replicas, has promoted one: the hold waits for +switch-master
// or its maximum.
func (f *fence) event(ctx context.Context, from, channel, payload string) {
	if eventMaster(channel, payload) != f.master {
		return
	}
	switch channel {
	case "+failover-state-send-slaveof-noone":
		f.hold(ctx, from)
	case "+switch-master":
		f.mu.Lock()
		held, gen := f.held != nil && !f.switchd, f.gen
		f.switchd = true
		f.mu.Unlock()
		if held {
			f.goCheck(ctx, gen, payload)
		}
	case "-failover-abort-slave-timeout":
		f.mu.Lock()
		gen, leader := f.gen, f.leader
		f.mu.Unlock()
		if from == leader {
			f.release(gen, "the failover was aborted ("+channel+")")
		}
	}
}

// eventMaster is the master a sentinel event is about.
func eventMaster(channel, payload string) string {
	fields := strings.Fields(payload)
	if channel == "+switch-master" {
		if len(fields) > 0 {
			return fields[0]
		}
		return ""
	}
	for i, w := range fields {
		if w == "@" && i+1 < len(fields) {
			return fields[i+1]
		}
	}
	if len(fields) > 1 && fields[0] == "master" {
		return fields[1]
	}
	return ""
}

func (f *fence) currentGen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen
}

// hold starts a hold, unless one is on.
func (f *fence) hold(ctx context.Context, leader string) {
	f.mu.Lock()
	if f.held != nil {
		f.mu.Unlock()
		return
	}
	f.gen++
	gen := f.gen
	held := make(chan struct{})
	f.held = held
	since := time.Now()
	f.since = since
	f.oldID, f.probed, f.switchd, f.leader = "", false, false, leader
	f.mu.Unlock()
	f.log.Warn("redis: a Sentinel failover is promoting the replica; holding commands until the new master takes them", "master", f.master, "max_hold", f.max)

	f.done.Add(1)
	go func() {
		defer f.done.Done()
		// The old master's ID, asked now, before the promotion, so the
		// release can tell the new master from it. A dead old master
		// leaves it empty: then any master will do.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		role, id, err := f.probe(pctx)
		cancel()
		f.mu.Lock()
		if f.gen == gen {
			if err == nil && role == "master" {
				f.oldID = id
			}
			f.probed = true
		}
		f.mu.Unlock()
		t := time.NewTimer(f.max - time.Since(since))
		defer t.Stop()
		select {
		case <-t.C:
			f.release(gen, "the hold reached its maximum without a switch")
		case <-held:
		case <-ctx.Done():
		}
	}()
}

// goCheck probes the client's master until it is no longer the old one.
func (f *fence) goCheck(ctx context.Context, gen int, payload string) {
	f.done.Add(1)
	go func() {
		defer f.done.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			f.mu.Lock()
			old, probed, live := f.oldID, f.probed, f.gen == gen && f.held != nil
			f.mu.Unlock()
			if !live {
				return
			}
			var role, id string
			err := errNotProbed
			if probed {
				pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
				role, id, err = f.probe(pctx)
				cancel()
			}
			if err == nil && role == "master" && (old == "" || id != old) {
				f.release(gen, "the client writes to the new master ("+newMasterAddr(payload)+")")
				return
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
}

// newMasterAddr is the new master's address in a +switch-master payload.
func newMasterAddr(payload string) string {
	f := strings.Fields(payload)
	if len(f) < 5 {
		return payload
	}
	return net.JoinHostPort(f[3], f[4])
}

// release ends hold gen, if it is still on.
func (f *fence) release(gen int, why string) {
	f.mu.Lock()
	if f.gen != gen || f.held == nil {
		f.mu.Unlock()
		return
	}
	close(f.held)
	f.held = nil
	held := time.Since(f.since)
	f.mu.Unlock()
	f.log.Warn("redis: commands released after a Sentinel failover", "master", f.master, "held", held.Round(time.Millisecond), "why", why)
	if f.onHold != nil {
		f.onHold(held)
	}
}

// holding reports whether a hold is on (for tests).
func (f *fence) holding() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held != nil
}

// fenceChannels are the sentinel events the fence listens to.
var fenceChannels = []string{"+failover-state-send-slaveof-noone", "+switch-master", "-failover-abort-slave-timeout"}

// watch subscribes to the sentinels at addrs, and to those they name, and
// feeds their events to the fence until Close.
func (f *fence) watch(addrs []string, opts *redis.UniversalOptions) {
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	sentinel := func(addr string) *redis.SentinelClient {
		return redis.NewSentinelClient(&redis.Options{
			Addr: addr, Username: opts.SentinelUsername, Password: opts.SentinelPassword,
			DialTimeout: opts.DialTimeout, ReadTimeout: opts.ReadTimeout, WriteTimeout: opts.WriteTimeout,
			TLSConfig: opts.TLSConfig,
		})
	}
	f.done.Add(1)
	go func() {
		defer f.done.Done()
		seen := map[string]bool{}
		var clients []*redis.SentinelClient
		defer func() {
			for _, c := range clients {
				_ = c.Close()
			}
		}()
		subscribe := func(addr string) {
			if seen[addr] {
				return
			}
			seen[addr] = true
			c := sentinel(addr)
			clients = append(clients, c)
			ps := c.Subscribe(ctx, fenceChannels...)
			f.done.Add(1)
			go func() {
				defer f.done.Done()
				defer ps.Close()
				ch := ps.Channel()
				for {
					select {
					case m, ok := <-ch:
						if !ok {
							return
						}
						f.event(ctx, addr, m.Channel, m.Payload)
					case <-ctx.Done():
						return
					}
				}
			}()
		}
		for _, a := range addrs {
			subscribe(a)
		}
		// The URL may name one address for all the sentinels (a
		// Kubernetes Service): ask them for the rest, now and then,
		// since only the failover's leader says it is promoting.
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		for {
			for _, c := range clients {
				dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
				others, err := c.Sentinels(dctx, f.master).Result()
				dcancel()
				if err != nil {
					continue
				}
				for _, o := range others {
					if ip, port := o["ip"], o["port"]; ip != "" && port != "" {
						subscribe(net.JoinHostPort(ip, port))
					}
				}
				break
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
}

// close stops the watch and releases any hold.
func (f *fence) close() {
	if f.stop != nil {
		f.stop()
	}
	f.release(f.currentGen(), "the client is closing")
	f.done.Wait()
}

// replicationOf asks rdb, past the fence, for the role and replication ID
// of the server it sends commands to.
func replicationOf(rdb *redis.Client) func(ctx context.Context) (string, string, error) {
	return func(ctx context.Context) (string, string, error) {
		info, err := rdb.Info(passing(ctx), "replication").Result()
		if err != nil {
			return "", "", err
		}
		var role, id string
		for _, line := range strings.Split(info, "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok {
				continue
			}
			switch k {
			case "role":
				role = v
			case "master_replid":
				id = v
			}
		}
		return role, id, nil
	}
}

// fencedClient is a Sentinel-backed client with its fence: closing it
// stops the fence's subscriptions too.
type fencedClient struct {
	*redis.Client
	fence *fence
}

// Close stops the fence, then closes the client.
func (c *fencedClient) Close() error {
	c.fence.close()
	return c.Client.Close()
}
