package redisconn

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/versori/import-worker/internal/redistest"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		url     string
		addrs   string
		db      int
		user    string
		pass    string
		master  string
		cluster bool
		tls     bool
		wantErr string
	}{
		{url: "redis://127.0.0.1:6379/2", addrs: "127.0.0.1:6379", db: 2},
		{url: "redis://localhost", addrs: "localhost:6379"},
		{url: "redis://:s3cret@h:1/0", addrs: "h:1", pass: "s3cret"},
		{url: "redis://app:s3cret@h:1", addrs: "h:1", user: "app", pass: "s3cret"},
		{url: "rediss://h:6380", addrs: "h:6380", tls: true},
		{url: "redis-sentinel://:pw@s1,s2:26380/1?master=mymaster", addrs: "s1:26379,s2:26380", db: 1, pass: "pw", master: "mymaster"},
		{url: "redis-cluster://n1:7000,n2:7001", addrs: "n1:7000,n2:7001", cluster: true},
		{url: "", wantErr: "empty URL"},
		{url: "http://h", wantErr: "unsupported scheme"},
		{url: "redis://h/abc", wantErr: "not a non-negative number"},
		{url: "redis://a,b", wantErr: "names 2 hosts"},
		{url: "redis-sentinel://a", wantErr: "master"},
		{url: "redis-cluster://a/3", wantErr: "cannot select"},
		{url: "redis://", wantErr: "empty host (want redis://host:port"},
		{url: "garbage", wantErr: "not a Redis URL (want redis://[user:password@]host[:port][/db]"},
		{url: "localhost:6379", wantErr: "not a Redis URL"},
		{url: "redis://:pa ss@%zz", wantErr: "not a valid URL"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			o, err := Parse(tc.url, Options{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "pa ss") {
					t.Fatalf("error repeats the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(o.Addrs, ","); got != tc.addrs {
				t.Errorf("addrs = %q, want %q", got, tc.addrs)
			}
			if o.DB != tc.db || o.Username != tc.user || o.Password != tc.pass || o.MasterName != tc.master || o.IsClusterMode != tc.cluster || (o.TLSConfig != nil) != tc.tls {
				t.Errorf("got %+v", o)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	if got := Redact("redis://u:secret@h:1/0"); strings.Contains(got, "secret") {
		t.Fatalf("Redact kept the password: %s", got)
	}
}

// TestExplainTLSToPlainServer connects with rediss:// to a server that does
// not speak TLS: the error must say the TLS handshake failed, not just
// "context deadline exceeded".
func TestExplainTLSToPlainServer(t *testing.T) {
	s := redistest.Start(t, redistest.Options{})
	url := "rediss://" + s.Addr() + "/0"
	rdb, err := New(url, Options{DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = Explain(url, rdb.Ping(ctx).Err())
	if err == nil || !strings.Contains(err.Error(), "TLS handshake failed") {
		t.Errorf("ping over TLS to a plain server: %v; want it to say the TLS handshake failed", err)
	}
	if err := Explain(s.URL(), context.DeadlineExceeded); err != context.DeadlineExceeded {
		t.Errorf("a redis:// error was changed: %v", err)
	}
}
