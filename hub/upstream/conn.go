package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// drainTimeout bounds how long a token renewal waits for the PUBACKs of
// what is in flight before it closes the connection anyway (what is left
// is sent again).
const drainTimeout = 10 * time.Second

// identity is one identity's connection, kept up by its own goroutine.
type identity struct {
	l    *Link
	acct account
	log  *slog.Logger

	mu      sync.Mutex
	cur     *session      // the connection publishes go to; nil while there is none
	changed chan struct{} // closed when cur or refused changes
	st      IdentityStatus
	// refused: the broker refused the credentials at the last attempt
	// (CONNACK 4 or 5: unknown identity, wrong key), and no attempt has
	// succeeded since.
	refused bool
	twin    *twinSync // of the latest connection, for a module or leaf identity

	// A leaf device's identity connects only while needed (leaf.go).
	// These are guarded by Link.mu.
	lazy     bool
	fallback *identity // the device's, taking a module's or leaf's messages while refused
	running  bool
	stop     context.CancelFunc
	done     chan struct{} // closed when the last run returned
	busy     int           // Publish calls using the identity now
	held     bool          // the leaf is connected to the local endpoint
	session  uint64        // the latest local session of the leaf seen
	lastUsed time.Time
}

func newIdentity(l *Link, a account) *identity {
	return &identity{
		l: l, acct: a,
		log:     l.log.With("identity", a.identity),
		changed: make(chan struct{}),
		st:      IdentityStatus{Identity: a.identity, State: StateConnecting, Since: time.Now()},
	}
}

func (id *identity) current() (*session, <-chan struct{}) {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cur, id.changed
}

func (id *identity) setCurrent(s *session) {
	id.mu.Lock()
	id.cur = s
	if s != nil {
		id.refused = false
	}
	id.notifyLocked()
	id.mu.Unlock()
}

// notifyLocked wakes the publishes waiting on the identity; id.mu is held.
func (id *identity) notifyLocked() {
	close(id.changed)
	id.changed = make(chan struct{})
}

// setRefused records that the broker refused the identity's credentials,
// and why, together: the refusal diverts messages at once, so a status
// that says refused must already carry the reason.
func (id *identity) setRefused(why error) {
	id.mu.Lock()
	id.st.LastError = why.Error()
	was := id.refused
	if !was {
		id.refused = true
		id.notifyLocked()
	}
	id.mu.Unlock()
	if !was && id.fallback != nil {
		what := "leaf device"
		if !id.acct.leaf {
			what = "module identity"
		}
		id.log.Warn("the broker refused this "+what+"'s credentials: its messages go up on the gateway device's connection, as the gateway's, until its own connection succeeds; register it in IoT Hub with the key in the config",
			"gateway", id.fallback.acct.identity)
	}
}

// divert reports whether a message of this identity, which has no
// connection now, goes on its fallback's connection instead.
func (id *identity) divert() bool {
	if id.fallback == nil {
		return false
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cur == nil && id.refused
}

// refusal reports whether err is the broker refusing the credentials.
func refusal(err error) bool {
	return errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised)
}

// setState records a state and logs when it changed. err, when not nil,
// becomes the last error.
func (id *identity) setState(st State, err error, retryAt time.Time) {
	id.mu.Lock()
	changed := id.st.State != st
	if changed {
		id.st.State, id.st.Since = st, time.Now()
	}
	if err != nil {
		id.st.LastError = err.Error()
	}
	id.st.RetryAt = nil
	if !retryAt.IsZero() {
		id.st.RetryAt = &retryAt
	}
	id.mu.Unlock()
	if !changed {
		return
	}
	switch {
	case st == StateConnected:
		id.log.Info("upstream connected", "broker", id.acct.broker)
	case err != nil && !retryAt.IsZero():
		id.log.Warn("upstream "+string(st), "err", err.Error(), "retryIn", time.Until(retryAt).Round(time.Millisecond))
	case err != nil:
		id.log.Warn("upstream "+string(st), "err", err.Error())
	default:
		id.log.Info("upstream " + string(st))
	}
}

func (id *identity) snapshot() IdentityStatus {
	id.mu.Lock()
	defer id.mu.Unlock()
	st := id.st
	st.Leaf, st.Refused = id.acct.leaf, id.refused
	if id.cur != nil {
		id.cur.mu.Lock()
		st.InFlight = id.cur.inflight
		id.cur.mu.Unlock()
		if !id.cur.expires.IsZero() {
			e := id.cur.expires
			st.TokenExpires = &e
		}
	}
	return st
}

// run keeps the identity connected until ctx ends.
func (id *identity) run(ctx context.Context) {
	defer func() {
		if id.lazy && id.l.ctx.Err() == nil {
			id.setState(StateIdle, nil, time.Time{}) // closed while not needed
			return
		}
		id.setState(StateStopped, nil, time.Time{})
	}()
	r := retry{b: id.l.opts.Backoff}
	for ctx.Err() == nil {
		if id.acct.needsClock && !id.waitClock(ctx) {
			return
		}
		s, err := id.connect(ctx)
		if err == nil {
			up := time.Now()
			err = id.serve(ctx, s)
			if errors.Is(err, ErrRenewing) {
				continue // a fresh token, at once
			}
			if time.Since(up) >= id.l.opts.Backoff.StableAfter {
				r.reset()
			}
		}
		if ctx.Err() != nil {
			return
		}
		wait := r.next()
		id.setState(StateBackingOff, err, time.Now().Add(wait))
		if !sleepCtx(ctx, wait) {
			return
		}
	}
}

// waitClock waits until the clock is trusted, saying so.
func (id *identity) waitClock(ctx context.Context) bool {
	for {
		now := id.l.opts.Now()
		if id.l.opts.Trusted(now) {
			return true
		}
		id.setState(StateWaitingClock, fmt.Errorf("the clock reads %s, before this build was made: no SAS token is minted on it; waiting for NTP", now.UTC().Format(time.RFC3339)), time.Time{})
		if !sleepCtx(ctx, time.Second) {
			return false
		}
	}
}

// connect makes one connection attempt and runs the account's ready hook.
func (id *identity) connect(ctx context.Context) (*session, error) {
	id.setState(StateConnecting, nil, time.Time{})
	id.mu.Lock()
	id.st.Attempts++
	id.mu.Unlock()
	now := id.l.opts.Now()
	c, err := id.acct.creds(now)
	if err != nil {
		return nil, fmt.Errorf("credentials of %s: %w", id.acct.identity, err)
	}
	if id.acct.insecure {
		id.log.Warn("TLS SERVER VERIFICATION IS OFF (upstream.insecure_skip_verify): anyone on the path can read and change this traffic", "broker", id.acct.broker)
	}
	s := &session{window: make(chan struct{}, id.l.opts.Window), lost: make(chan struct{}), idle: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(ctx)
	if !c.expires.IsZero() {
		s.minted, s.expires = now, c.expires
	}
	s.pending = make(chan pendingPub, id.l.opts.Window)
	s.cli = id.l.newPahoClient(&id.acct, c, s.lose)
	tok := s.cli.Connect()
	<-tok.Done() // bounded by ConnectTimeout
	if err := tok.Error(); err != nil {
		s.cancel()
		cerr := fmt.Errorf("connect to %s as %s: %s", id.acct.broker, id.acct.identity, explain(err, id.acct.broker))
		if refusal(err) {
			id.setRefused(cerr)
		}
		return nil, cerr
	}
	s.wg.Add(1)
	go s.acker()
	if id.acct.ready != nil {
		if err := id.acct.ready(ctx, s); err != nil {
			s.close(err)
			return nil, fmt.Errorf("set up the connection of %s: %w", id.acct.identity, err)
		}
	}
	return s, nil
}

// serve lets publishes use s until it is lost, its token is due for
// renewal or ctx ends, and returns why it ended.
func (id *identity) serve(ctx context.Context, s *session) error {
	id.mu.Lock()
	id.st.Connects++
	id.mu.Unlock()
	id.setCurrent(s)
	id.setState(StateConnected, nil, time.Time{})
	var renew <-chan time.Time
	if !s.expires.IsZero() {
		// Renew when four fifths of the token's life are gone.
		t := time.NewTimer(s.expires.Sub(s.minted) * 4 / 5)
		defer t.Stop()
		renew = t.C
	}
	select {
	case <-s.lost:
		id.setCurrent(nil)
		s.close(nil)
		return fmt.Errorf("%w: %s", ErrDisconnected, explain(s.cause(), id.acct.broker))
	case <-renew:
		// Stop taking publishes, let the window empty, then reconnect
		// with a new token: nothing is sent twice.
		id.setCurrent(nil)
		s.mu.Lock()
		s.draining = true
		s.mu.Unlock()
		s.waitIdle(drainTimeout)
		s.close(ErrRenewing)
		id.mu.Lock()
		id.st.Renewals++
		id.mu.Unlock()
		id.log.Info("upstream token renewed by reconnecting", "expired", s.expires.UTC().Format(time.RFC3339))
		return ErrRenewing
	case <-ctx.Done():
		id.setCurrent(nil)
		s.close(ErrClosed)
		return ctx.Err()
	}
}

// publish sends on the identity's current connection, waiting for one
// and for room in its window. It returns errRefused, without sending,
// when the message is to go on the fallback identity's connection.
func (id *identity) publish(ctx context.Context, topic string, payload []byte, ack func(error)) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, changed := id.current()
		if s == nil {
			if id.divert() {
				return errRefused
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return ctx.Err()
			case <-id.l.ctx.Done():
				return ErrClosed
			}
			continue
		}
		select {
		case s.window <- struct{}{}:
		case <-s.lost:
			// The connection is going; wait for the next.
			select {
			case <-changed:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		case <-ctx.Done():
			return ctx.Err()
		}
		// A failed ack cancels ctx before its window slot is freed, so
		// this check keeps anything from overtaking a message that will
		// be sent again.
		if err := ctx.Err(); err != nil {
			<-s.window
			return err
		}
		if err := id.l.rate.wait(ctx); err != nil {
			<-s.window
			return err
		}
		s.mu.Lock()
		if s.dead || s.draining {
			s.mu.Unlock()
			<-s.window
			select {
			case <-changed:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		s.inflight++
		s.mu.Unlock()
		tok := s.cli.Publish(topic, 1, false, payload)
		s.mu.Lock()
		if s.dead {
			// The acker is gone: answer here.
			s.mu.Unlock()
			s.answer(pendingPub{tok, ack})
			return nil
		}
		s.pending <- pendingPub{tok, ack} // room: a window slot is held
		s.mu.Unlock()
		return nil
	}
}

// session is one MQTT connection of an identity.
type session struct {
	cli    paho.Client
	window chan struct{} // a slot per publish awaiting its PUBACK
	lost   chan struct{} // closed when the connection is gone
	idle   chan struct{} // poked when a publish is answered; capacity 1

	minted, expires time.Time // the token's; zero without a token

	ctx    context.Context // ends with the connection
	cancel context.CancelFunc
	tasks  sync.WaitGroup // goroutines of the connection (twin sync, methods)

	mu       sync.Mutex
	dead     bool
	draining bool
	err      error
	inflight int
	pending  chan pendingPub // publishes awaiting their PUBACK, in order
	wg       sync.WaitGroup  // the acker
}

// lose marks the connection gone; paho's connection-lost handler calls it.
func (s *session) lose(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return
	}
	s.dead, s.err = true, err
	close(s.lost)
	s.cancel()
}

// goTask runs fn in a goroutine that close waits for; fn's ctx ends with
// the connection.
func (s *session) goTask(fn func(ctx context.Context)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return
	}
	s.tasks.Add(1)
	go func() {
		defer s.tasks.Done()
		fn(s.ctx)
	}()
}

func (s *session) cause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		return errors.New("connection closed")
	}
	return s.err
}

// close ends the connection and waits until every publish on it has been
// answered (those without a PUBACK with an error).
func (s *session) close(why error) {
	if why == nil {
		why = ErrDisconnected
	}
	s.lose(why)
	s.tasks.Wait()
	s.cli.Disconnect(250)
	s.wg.Wait()
}

// waitIdle waits until nothing is in flight, at most d.
func (s *session) waitIdle(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		s.mu.Lock()
		n := s.inflight
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-s.idle:
		case <-s.lost:
			return
		case <-t.C:
			return
		}
	}
}

// pendingPub is a publish awaiting its PUBACK.
type pendingPub struct {
	tok paho.Token
	ack func(error)
}

// acker answers the publishes of the connection in the order they were
// made, until the connection is gone; then it fails what is left. PUBACKs
// come in order on one connection, so waiting in order costs nothing.
func (s *session) acker() {
	defer s.wg.Done()
	for {
		select {
		case p := <-s.pending:
			s.answer(p)
		case <-s.lost:
			s.mu.Lock() // no publish adds to pending once dead is set
			for {
				select {
				case p := <-s.pending:
					s.mu.Unlock()
					s.answer(p)
					s.mu.Lock()
					continue
				default:
				}
				break
			}
			s.mu.Unlock()
			return
		}
	}
}

// answer calls ack when the PUBACK comes or the connection goes, and only
// then frees the window slot.
func (s *session) answer(p pendingPub) {
	var err error
	select {
	case <-p.tok.Done():
		err = p.tok.Error()
	case <-s.lost:
		select {
		case <-p.tok.Done():
			err = p.tok.Error()
		default:
			err = ErrDisconnected
		}
	}
	if err != nil && !errors.Is(err, ErrDisconnected) {
		err = fmt.Errorf("%w: %v", ErrDisconnected, err)
	}
	p.ack(err)
	s.mu.Lock()
	s.inflight--
	s.mu.Unlock()
	select {
	case s.idle <- struct{}{}:
	default:
	}
	<-s.window
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
