package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/versori/import-worker/internal/apitoken"
)

// CookieName is the session cookie.
const CookieName = "console_session"

// KeyEnv names the environment variable of the session key.
const KeyEnv = "CONSOLE_SESSION_KEY"

// MinKeyLen is the shortest session key accepted, in bytes.
const MinKeyLen = 32

// KeyFromEnv returns the session key of CONSOLE_SESSION_KEY (at least
// MinKeyLen bytes, used as given) or, when it is unset, a random key for
// this process, with random true: sessions then end when the process
// restarts and are not shared between replicas behind one address.
func KeyFromEnv(getenv func(string) string) (key []byte, random bool, err error) {
	v := getenv(KeyEnv)
	if v == "" {
		k, err := RandomKey()
		return k, true, err
	}
	if len(v) < MinKeyLen {
		return nil, false, fmt.Errorf("%s: %d bytes; want at least %d (for example: openssl rand -hex 32)", KeyEnv, len(v), MinKeyLen)
	}
	return []byte(v), false, nil
}

// RandomKey returns a new random 32-byte session key.
func RandomKey() ([]byte, error) {
	k := make([]byte, 32)
	_, err := rand.Read(k)
	return k, err
}

// session is what the signed cookie carries: the SHA-256 of the token that
// signed in (never the token; the role and name are looked up again on
// every request, so a token removed from the file stops working at the
// next restart), the expiry and the CSRF token of the session's forms.
type session struct {
	TokenHash [sha256.Size]byte
	Expires   time.Time
	CSRF      string
}

// user is a signed-in session with its token's entry.
type user struct {
	session
	Entry apitoken.Entry
}

// Operator reports whether the user may act.
func (u *user) Operator() bool { return u != nil && u.Entry.Role == apitoken.Operator }

var errBadSession = errors.New("bad session")

func (c *Console) sign(payload string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// encode returns the cookie value of s: "v1.HASH.EXPIRY.CSRF" in base64
// URL encoding, a dot, and its HMAC-SHA256 under the session key.
func (c *Console) encode(s session) string {
	payload := "v1." + hex.EncodeToString(s.TokenHash[:]) + "." + strconv.FormatInt(s.Expires.Unix(), 10) + "." + s.CSRF
	p := base64.RawURLEncoding.EncodeToString([]byte(payload))
	return p + "." + c.sign(p)
}

func (c *Console) decode(v string) (session, error) {
	var s session
	p, mac, ok := strings.Cut(v, ".")
	if !ok || !hmac.Equal([]byte(mac), []byte(c.sign(p))) {
		return s, errBadSession
	}
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return s, errBadSession
	}
	f := strings.Split(string(raw), ".")
	if len(f) != 4 || f[0] != "v1" {
		return s, errBadSession
	}
	if h, err := hex.DecodeString(f[1]); err != nil || len(h) != sha256.Size {
		return s, errBadSession
	} else {
		copy(s.TokenHash[:], h)
	}
	exp, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return s, errBadSession
	}
	s.Expires, s.CSRF = time.Unix(exp, 0), f[3]
	if !c.now().Before(s.Expires) || s.CSRF == "" {
		return s, errBadSession
	}
	return s, nil
}

// newSession starts a session for a token already looked up.
func (c *Console) newSession(token string) (session, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return session{}, err
	}
	return session{
		TokenHash: sha256.Sum256([]byte(token)),
		Expires:   c.now().Add(c.cfg.TTL).Truncate(time.Second),
		CSRF:      base64.RawURLEncoding.EncodeToString(b),
	}, nil
}

// cookie returns the session cookie: Secure, HttpOnly, SameSite=Strict,
// scoped to /ui/, expiring with the session.
func (c *Console) cookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: CookieName, Value: value, Path: Prefix, MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	}
}

// user returns the request's signed-in user, or nil.
func (c *Console) user(r *http.Request) *user {
	ck, err := r.Cookie(CookieName)
	if err != nil {
		return nil
	}
	s, err := c.decode(ck.Value)
	if err != nil {
		return nil
	}
	e, ok := c.cfg.Tokens.LookupHash(s.TokenHash)
	if !ok {
		return nil
	}
	return &user{session: s, Entry: e}
}

// checkCSRF reports whether the form's csrf field is the session's.
func checkCSRF(r *http.Request, u *user) bool {
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(u.CSRF)) == 1
}
