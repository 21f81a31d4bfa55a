package rollout

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/import-worker/ledger"
	"github.com/versori/import-worker/tasks"
)

// Callbacks: a rollout created with a callback URL gets one POST of its
// final Status when nothing is left pending (done or cancelled). The worker
// that records the last organisation's outcome (or Cancel) enqueues a
// callback task, whose task ID is derived from the rollout so it is
// enqueued once; the task POSTs the status signed with HMAC-SHA256 and is
// retried with the worker's backoff until the receiver answers 2xx, after
// which a marker stops any further delivery.

// TypeCallback is the asynq task type of a completion callback.
const TypeCallback = "versori:rollout-callback"

// Callback request headers.
const (
	// HeaderSignature carries "sha256=" and the lower-case hex HMAC-SHA256
	// of the body, keyed with the callback secret.
	HeaderSignature = "X-Signature-256"
	// HeaderDeliveryID is the same for every attempt of one rollout's
	// callback: a receiver drops repeats by it.
	HeaderDeliveryID = "X-Delivery-ID"
)

// Sign returns the X-Signature-256 value of body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify reports whether signature is body's signature under secret,
// comparing in constant time. Receivers written in Go can use it.
func Verify(secret, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}

// AllowedHosts is the set of hosts callbacks may go to
// (CALLBACK_ALLOWED_HOSTS): "host" allows any port of host, "host:port"
// that port only. Host names compare without regard to case.
type AllowedHosts []string

// ParseAllowedHosts parses a comma-separated list of host[:port].
func ParseAllowedHosts(s string) (AllowedHosts, error) {
	var out AllowedHosts
	for _, h := range strings.Split(s, ",") {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" {
			continue
		}
		if strings.ContainsAny(h, "/@?# ") {
			return nil, fmt.Errorf("%q: want host or host:port", h)
		}
		if host, port, err := net.SplitHostPort(h); err == nil {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || host == "" {
				return nil, fmt.Errorf("%q: bad port", h)
			}
		}
		out = append(out, h)
	}
	return out, nil
}

// Check validates a callback URL: absolute http or https, no user
// information, a host in the list. The error says why not.
func (a AllowedHosts) Check(raw string) (*url.URL, error) {
	if len(raw) > 2048 {
		return nil, errors.New("callback_url is longer than 2048 bytes")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("callback_url: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, errors.New("callback_url: want an absolute http:// or https:// URL")
	}
	if u.User != nil {
		return nil, errors.New("callback_url: must not hold user information")
	}
	if !a.allows(u) {
		if len(a) == 0 {
			return nil, fmt.Errorf("callback_url host %q is not allowed: CALLBACK_ALLOWED_HOSTS is empty, so no callbacks are", u.Host)
		}
		return nil, fmt.Errorf("callback_url host %q is not allowed (CALLBACK_ALLOWED_HOSTS: %s)", u.Host, strings.Join(a, ","))
	}
	return u, nil
}

func (a AllowedHosts) allows(u *url.URL) bool {
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	hostPort := net.JoinHostPort(host, port)
	for _, h := range a {
		if h == hostPort || strings.Trim(h, "[]") == host {
			return true
		}
	}
	return false
}

func (m *Manager) prefix() string {
	if m.opts.Ledger.Prefix != "" {
		return m.opts.Ledger.Prefix
	}
	return ledger.DefaultPrefix
}

// The callback keys share the rollout's hash tag, so they live in its
// Redis Cluster slot.
func (m *Manager) callbackKey(id string) string {
	return m.prefix() + ":rollout:{" + id + "}:callback"
}

func (m *Manager) deliveredKey(id string) string {
	return m.prefix() + ":rollout:{" + id + "}:callback_delivered"
}

// CallbackURL returns the rollout's callback URL, "" when it has none.
func (m *Manager) CallbackURL(ctx context.Context, id string) (string, error) {
	u, err := m.rdb.Get(ctx, m.callbackKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return u, err
}

// CallbackTaskID is the asynq task ID of rollout id's first callback.
func CallbackTaskID(id string) string { return "callback:" + id }

// CallbackTaskIDOf is the task ID of the callback of a round: a rollout
// that runs again after a callback (promoted after a halt, retried, given
// more organisations) starts a new round and is called back again when it
// next finishes or halts.
func CallbackTaskIDOf(id string, round int64) string {
	if round == 0 {
		return CallbackTaskID(id)
	}
	return CallbackTaskID(id) + ":" + strconv.FormatInt(round, 10)
}

type callbackPayload struct {
	RolloutID string `json:"rollout_id"`
	Round     int64  `json:"round,omitempty"`
}

// roundKey counts a rollout's callback rounds (absent: round 0).
func (m *Manager) roundKey(id string) string {
	return m.prefix() + ":rollout:{" + id + "}:callback_round"
}

// nextCallbackRound starts a new callback round for a rollout that runs
// again, if it has a callback whose current round was delivered: its next
// finish or halt is called back too. (A round not delivered yet sends the
// status as it is when it is delivered.)
func (m *Manager) nextCallbackRound(ctx context.Context, id string) error {
	u, err := m.CallbackURL(ctx, id)
	if err != nil || u == "" {
		return err
	}
	round, err := m.callbackRound(ctx, id)
	if err != nil {
		return err
	}
	if done, err := m.deliveredRound(ctx, id); err != nil || done < round {
		return err
	}
	return m.rdb.Incr(ctx, m.roundKey(id)).Err()
}

func (m *Manager) callbackRound(ctx context.Context, id string) (int64, error) {
	n, err := m.rdb.Get(ctx, m.roundKey(id)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

// deliveredRound reads the delivered marker: the round delivered last, -1
// when none. A marker from before rounds (a time) is round 0.
func (m *Manager) deliveredRound(ctx context.Context, id string) (int64, error) {
	v, err := m.rdb.Get(ctx, m.deliveredKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return -1, nil
	}
	if err != nil {
		return 0, err
	}
	round, _, ok := strings.Cut(v, " ")
	n, perr := strconv.ParseInt(round, 10, 64)
	if !ok || perr != nil {
		return 0, nil
	}
	return n, nil
}

// NotifyIfDone enqueues rollout id's callback when it has one, nothing is
// pending and it was not delivered yet; it reports whether it enqueued. It
// is where every path that may finish a rollout ends (the worker's finish
// hook, cancel), so it applies the retention first (settle, one script
// call that reads the counters); an active rollout costs nothing more, a
// finished one without a callback one GET.
func (m *Manager) NotifyIfDone(ctx context.Context, id string) (bool, error) {
	return m.notify(ctx, id, false)
}

// notify is NotifyIfDone; halted says the rollout just halted, which is
// final too (until promoted) although organisations are pending.
func (m *Manager) notify(ctx context.Context, id string, halted bool) (bool, error) {
	if !halted {
		if done, known, err := m.settle(ctx, id); err != nil || known && !done {
			return false, err
		}
	}
	u, err := m.CallbackURL(ctx, id)
	if err != nil || u == "" {
		return false, err
	}
	r, c, err := m.led.Rollout(ctx, id)
	if err != nil {
		return false, err
	}
	if !halted && !BreakdownOf(c).Done() {
		return false, nil
	}
	round, err := m.callbackRound(ctx, id)
	if err != nil {
		return false, err
	}
	if done, err := m.deliveredRound(ctx, id); err != nil || done >= round {
		return false, err
	}
	data, _ := json.Marshal(callbackPayload{RolloutID: id, Round: round})
	t := asynq.NewTask(TypeCallback, data,
		asynq.TaskID(CallbackTaskIDOf(id, round)),
		asynq.Queue(m.QueueOf(r)),
		asynq.MaxRetry(DefaultCallbackMaxRetry),
		asynq.Timeout(2*DefaultCallbackTimeout),
		asynq.Retention(CallbackRetention),
	)
	_, err = m.client.EnqueueContext(ctx, t)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("enqueue callback of rollout %s: %w", id, err)
	}
	return true, nil
}

// OrganisationFinished implements tasks.FinishHook: the worker calls it
// when an outcome it recorded left nothing of the rollout pending, and it
// starts the retention and enqueues the callback.
func (m *Manager) OrganisationFinished(ctx context.Context, rolloutID string) error {
	_, err := m.NotifyIfDone(ctx, rolloutID)
	return err
}

// CallbackConfig configures the worker's callback delivery.
type CallbackConfig struct {
	// Secret keys the signatures (CALLBACK_SECRET). Without one, callback
	// tasks fail and are retried until a worker that has one takes them.
	Secret []byte
	// Allowed lists the hosts that may be called (CALLBACK_ALLOWED_HOSTS):
	// a URL to another host is never called (defence in depth: the API
	// refuses it at creation).
	Allowed AllowedHosts
	// Timeout bounds one POST, so a receiver that hangs cannot hold a
	// worker. Default DefaultCallbackTimeout.
	Timeout time.Duration
	// Transport makes the requests. Default a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Logger receives one line per delivery attempt. Required.
	Logger *slog.Logger
}

// CallbackHandler delivers completion callbacks; it is an asynq.Handler.
type CallbackHandler struct {
	m      *Manager
	cfg    CallbackConfig
	client *http.Client
}

// NewCallbackHandler returns the callback handler.
func (m *Manager) NewCallbackHandler(cfg CallbackConfig) *CallbackHandler {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultCallbackTimeout
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &CallbackHandler{m: m, cfg: cfg, client: &http.Client{
		Transport: cfg.Transport,
		Timeout:   cfg.Timeout,
		// A redirect could lead anywhere, past the allowed hosts: a 3xx is
		// an answer that is not 2xx, retried.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// DeliveryID is the X-Delivery-ID of a rollout's first callback: stable
// across attempts, different for a rollout deleted and created again.
func DeliveryID(r ledger.Rollout) string { return DeliveryIDOf(r, 0) }

// DeliveryIDOf is the X-Delivery-ID of a callback round: each round is
// one delivery, however often it is attempted.
func DeliveryIDOf(r ledger.Rollout, round int64) string {
	key := r.ID + "\x00" + strconv.FormatInt(r.CreatedAt.UnixMilli(), 10)
	if round > 0 {
		key += "\x00" + strconv.FormatInt(round, 10)
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16])
}

// ProcessTask implements asynq.Handler.
func (h *CallbackHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p callbackPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || tasks.ValidateRolloutID(p.RolloutID) != nil {
		return fmt.Errorf("%w: bad callback payload", asynq.SkipRetry)
	}
	log := h.cfg.Logger.With("rollout", p.RolloutID, "task", "callback")
	m := h.m
	if done, err := m.deliveredRound(ctx, p.RolloutID); err != nil {
		return err
	} else if done >= p.Round {
		log.Info("callback already delivered; not sending again", "round", p.Round)
		return nil
	}
	raw, err := m.CallbackURL(ctx, p.RolloutID)
	if err != nil {
		return err
	}
	if raw == "" {
		log.Info("rollout has no callback (deleted?); nothing to send")
		return nil
	}
	u, err := h.cfg.Allowed.Check(raw)
	if err != nil {
		log.Error("refusing to call a host not allowed", "err", err)
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	if len(h.cfg.Secret) == 0 {
		log.Error("callback not sent: the worker has no CALLBACK_SECRET; it is retried")
		return errors.New("no CALLBACK_SECRET to sign the callback with")
	}
	r, _, err := m.led.Rollout(ctx, p.RolloutID)
	if errors.Is(err, ledger.ErrRolloutNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := m.Status(ctx, p.RolloutID)
	if err != nil {
		return err
	}
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "versori-import-worker-callback")
	req.Header.Set(HeaderSignature, Sign(h.cfg.Secret, body))
	req.Header.Set(HeaderDeliveryID, DeliveryIDOf(r, p.Round))
	start := time.Now()
	resp, err := h.client.Do(req)
	if err != nil {
		log.Warn("callback failed; retrying with backoff", "host", u.Host, "err", err, "duration_ms", time.Since(start).Milliseconds())
		return fmt.Errorf("callback to %s: %w", u.Host, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		log.Warn("callback answered without 2xx; retrying with backoff", "host", u.Host, "http_status", resp.StatusCode)
		return fmt.Errorf("callback to %s answered %d", u.Host, resp.StatusCode)
	}
	// Delivered: never again. The marker is written with the worker's
	// context cut loose, so a deadline right now cannot lose it.
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer wcancel()
	if err := m.rdb.Set(wctx, m.deliveredKey(p.RolloutID), strconv.FormatInt(p.Round, 10)+" "+time.Now().UTC().Format(time.RFC3339Nano), 0).Err(); err != nil {
		log.Error("callback delivered but the marker was not written; it may be delivered again", "err", err)
	}
	log.Info("callback delivered", "host", u.Host, "http_status", resp.StatusCode, "delivery_id", DeliveryIDOf(r, p.Round), "round", p.Round)
	return nil
}

// MinCallbackSecretBytes is the shortest callback secret accepted.
const MinCallbackSecretBytes = 16

// CallbackSecret reads the callback secret from CALLBACK_SECRET or the file
// CALLBACK_SECRET_FILE names (surrounding whitespace trimmed); nil when
// neither is set. The error names the variable.
func CallbackSecret(getenv func(string) string) ([]byte, error) {
	v, file := getenv("CALLBACK_SECRET"), strings.TrimSpace(getenv("CALLBACK_SECRET_FILE"))
	name := "CALLBACK_SECRET"
	switch {
	case v != "" && file != "":
		return nil, errors.New("CALLBACK_SECRET_FILE: is set together with CALLBACK_SECRET; set only one")
	case file != "":
		name = "CALLBACK_SECRET_FILE"
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("CALLBACK_SECRET_FILE: %v", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, 4<<10+1))
		if err != nil {
			return nil, fmt.Errorf("CALLBACK_SECRET_FILE: %v", err)
		}
		if len(b) > 4<<10 {
			return nil, fmt.Errorf("CALLBACK_SECRET_FILE: %s is larger than 4 KiB; it should hold the secret only", file)
		}
		v = string(b)
	case v == "":
		return nil, nil
	}
	v = strings.TrimSpace(v)
	if len(v) < MinCallbackSecretBytes {
		return nil, fmt.Errorf("%s: the secret is %d bytes, at least %d needed (e.g. openssl rand -hex 32)", name, len(v), MinCallbackSecretBytes)
	}
	return []byte(v), nil
}

// CallbackAllowedHosts reads CALLBACK_ALLOWED_HOSTS; the error names it.
func CallbackAllowedHosts(getenv func(string) string) (AllowedHosts, error) {
	a, err := ParseAllowedHosts(getenv("CALLBACK_ALLOWED_HOSTS"))
	if err != nil {
		return nil, fmt.Errorf("CALLBACK_ALLOWED_HOSTS: %v", err)
	}
	return a, nil
}
