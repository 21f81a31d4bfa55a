// Package redisconn turns the REDIS_URL the binaries accept into a go-redis
// client that asynq, the ledger and the rate budget share.
//
// Accepted forms:
//
//	redis://[user:password@]host[:port][/db]          a single server
//	rediss://[user:password@]host[:port][/db]         the same over TLS
//	redis-sentinel://[:password@]h1:port,h2:port[/db]?master=NAME   Sentinel failover
//	redis-cluster://[user:password@]h1:port,h2:port   Redis Cluster
//
// asynq's own ParseRedisURI drops the ACL user name and knows no cluster
// form, and the three components must share one connection pool, so the
// parsing lives here. So does the fence of a Sentinel client (fence.go):
// it holds every command while the sentinels promote a replica, since the
// old master's writes in that second are discarded.
package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options tune the client beyond what the URL says.
type Options struct {
	// PoolSize is the connection pool size per node. Default 10 + 2x
	// the worker's concurrency is a good choice; 0 keeps go-redis's default.
	PoolSize int
	// DialTimeout bounds connecting. Default 2 s, so an unreachable Redis is
	// reported within seconds rather than hanging.
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound one command. Default 3 s.
	ReadTimeout, WriteTimeout time.Duration
	// FailoverHold is the longest a redis-sentinel:// client holds its
	// commands while the sentinels promote a replica (see fence.go: writes
	// the old master takes then are lost). Default DefaultFailoverHold;
	// negative turns the hold off.
	FailoverHold time.Duration
	// Logger gets one line when a hold begins and one when it ends.
	// Default: none.
	Logger *slog.Logger
	// OnHold, when set, is called with the length of each hold as it
	// ends (for a metric).
	OnHold func(held time.Duration)
}

// wantForm is what a valid URL looks like, for error messages.
const wantForm = "want redis://[user:password@]host[:port][/db], e.g. redis://localhost:6379/0; or rediss://, redis-sentinel://, redis-cluster://"

// Parse validates rawURL and returns the options for redis.NewUniversalClient.
// Its errors never repeat the password.
func Parse(rawURL string, o Options) (*redis.UniversalOptions, error) {
	if rawURL == "" {
		return nil, errors.New("empty URL")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("not a valid URL (" + wantForm + ")")
	}
	if u.Scheme == "" || u.Opaque != "" {
		return nil, errors.New("not a Redis URL (" + wantForm + ")")
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 3 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 3 * time.Second
	}
	opts := &redis.UniversalOptions{
		PoolSize:     o.PoolSize,
		DialTimeout:  o.DialTimeout,
		ReadTimeout:  o.ReadTimeout,
		WriteTimeout: o.WriteTimeout,
	}
	if u.User != nil {
		opts.Username = u.User.Username()
		opts.Password, _ = u.User.Password()
		if opts.Password == "" && opts.Username != "" && !strings.Contains(u.User.String(), ":") {
			// redis://secret@host is the legacy password-only form.
			opts.Password, opts.Username = opts.Username, ""
		}
	}
	hosts := strings.Split(u.Host, ",")
	for _, h := range hosts {
		if h == "" {
			return nil, fmt.Errorf("%s URL has an empty host (want %s://host:port, e.g. %s://localhost:6379/0)", u.Scheme, u.Scheme, u.Scheme)
		}
	}
	db, err := parseDB(u)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "redis", "rediss":
		if len(hosts) != 1 {
			return nil, fmt.Errorf("%s URL names %d hosts; use redis-sentinel:// or redis-cluster:// for several", u.Scheme, len(hosts))
		}
		opts.Addrs = []string{withPort(hosts[0])}
		opts.DB = db
		if u.Scheme == "rediss" {
			host := u.Hostname()
			opts.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		}
	case "redis-sentinel":
		master := u.Query().Get("master")
		if master == "" {
			return nil, errors.New("redis-sentinel URL needs ?master=NAME")
		}
		for _, h := range hosts {
			opts.Addrs = append(opts.Addrs, withPort26379(h))
		}
		opts.MasterName = master
		opts.DB = db
		opts.SentinelPassword = u.Query().Get("sentinel_password")
	case "redis-cluster":
		if db != 0 {
			return nil, errors.New("redis-cluster URL cannot select a database")
		}
		for _, h := range hosts {
			opts.Addrs = append(opts.Addrs, withPort(h))
		}
		opts.IsClusterMode = true
	default:
		return nil, fmt.Errorf("unsupported scheme %q (want redis, rediss, redis-sentinel or redis-cluster)", u.Scheme)
	}
	return opts, nil
}

// New parses rawURL and returns a client for it. A redis-sentinel://
// client holds its commands while the sentinels fail over (FailoverHold),
// and its Close stops the subscriptions that watch for it.
func New(rawURL string, o Options) (redis.UniversalClient, error) {
	opts, err := Parse(rawURL, o)
	if err != nil {
		return nil, err
	}
	if opts.MasterName == "" || o.FailoverHold < 0 {
		return redis.NewUniversalClient(opts), nil
	}
	rdb := redis.NewFailoverClient(opts.Failover())
	f := &fence{master: opts.MasterName, log: o.Logger, max: o.FailoverHold, probe: replicationOf(rdb), onHold: o.OnHold}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.max == 0 {
		f.max = DefaultFailoverHold
	}
	rdb.AddHook(f)
	f.watch(opts.Addrs, opts)
	return &fencedClient{Client: rdb, fence: f}, nil
}

// Explain adds what an operator needs to an error from first contacting the
// server at rawURL: a rediss:// URL to a server that does not speak TLS
// fails with a bare timeout or a record-header error, which says nothing
// about TLS. Other errors come back unchanged.
func Explain(rawURL string, err error) error {
	if err == nil {
		return nil
	}
	u, perr := url.Parse(rawURL)
	if perr != nil || u.Scheme != "rediss" {
		return err
	}
	var rh tls.RecordHeaderError
	var ne net.Error
	if errors.As(err, &rh) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("TLS handshake failed: %w (rediss:// needs a server that speaks TLS; use redis:// for a plain one)", err)
	}
	return err
}

// Redact returns rawURL with any password replaced, for logs and errors.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

func parseDB(u *url.URL) (int, error) {
	p := strings.Trim(u.Path, "/")
	if p == "" {
		return 0, nil
	}
	db, err := strconv.Atoi(p)
	if err != nil || db < 0 {
		return 0, fmt.Errorf("database %q is not a non-negative number", p)
	}
	return db, nil
}

func withPort(h string) string {
	if strings.LastIndex(h, ":") > strings.LastIndex(h, "]") {
		return h
	}
	return h + ":6379"
}

func withPort26379(h string) string {
	if strings.LastIndex(h, ":") > strings.LastIndex(h, "]") {
		return h
	}
	return h + ":26379"
}
