//go:build demo

package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/versori/import-worker/console"
	"github.com/versori/import-worker/internal/apitoken"
	"github.com/versori/import-worker/internal/demo"
	"github.com/versori/import-worker/internal/redisconn"
	"github.com/versori/import-worker/rollout"
)

// startConsole serves the rollout console on the demo's Redis, signed in
// with a fresh operator token, so the demo's rollout can be watched and
// acted on in a browser while it runs. Its address and token are returned.
func (d *demoCmd) startConsole(env *demo.Env, dir string) (stop func(), url, token string, err error) {
	token, err = apitoken.Generate()
	if err != nil {
		return nil, "", "", err
	}
	rdb, err := redisconn.New(env.RedisURL, redisconn.Options{})
	if err != nil {
		return nil, "", "", err
	}
	logFile, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		rdb.Close()
		return nil, "", "", fmt.Errorf("console log: %w", err)
	}
	c, err := console.New(console.Config{
		Manager: rollout.New(rdb, rollout.Options{}),
		Tokens:  apitoken.NewSet([]apitoken.Entry{{Role: apitoken.Operator, Hash: sha256.Sum256([]byte(token)), Name: "demo"}}),
		Logger:  slog.New(slog.NewJSONHandler(logFile, nil)),
	})
	if err != nil {
		rdb.Close()
		logFile.Close()
		return nil, "", "", err
	}
	ln, err := net.Listen("tcp", d.consoleAddr)
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		rdb.Close()
		logFile.Close()
		return nil, "", "", fmt.Errorf("console listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, c)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(d.stderr, "console stopped: %v\n", err)
		}
	}()
	stop = func() {
		_ = srv.Close()
		rdb.Close()
		logFile.Close()
	}
	return stop, "http://" + ln.Addr().String() + console.Prefix, token, nil
}
