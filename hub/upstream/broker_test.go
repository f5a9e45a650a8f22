package upstream_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub/hubtest"
)

// broker is a mosquitto the test starts on 127.0.0.1 and a free port,
// and can stop and start again on the same port with its persistent
// state (the subscriber's session and queued messages) kept.
type broker struct {
	t    testing.TB
	dir  string
	port int
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

// skipUnlessMosquitto skips when mosquitto is not installed (scripts/deps.sh
// installs it) or when programs cannot be executed (the suite under
// qemu-user).
func skipUnlessMosquitto(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, serr := os.Stat(p); serr == nil {
				path, err = p, nil
				break
			}
		}
	}
	if err != nil {
		t.Skip("mosquitto not installed (scripts/deps.sh installs it)")
	}
	if emulated() {
		t.Skip("cannot exec programs here (emulated)")
	}
	return path
}

var emulatedOnce = sync.OnceValue(func() bool {
	err := exec.Command(os.Args[0], "-test.run=^$").Run()
	return errors.Is(err, syscall.ENOEXEC)
})

// emulated reports whether the tests run under qemu-user, where the test
// binary cannot exec itself (nor a host program); the long tests run
// their short sizes there.
func emulated() bool { return emulatedOnce() }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startBroker starts mosquitto with a plain listener and extra config
// lines (listener options may be given in extra instead).
func startBroker(t testing.TB, extra string) *broker {
	t.Helper()
	skipUnlessMosquitto(t)
	// mosquitto started as root runs as user mosquitto: its directory
	// must be reachable and writable by that user, which t.TempDir's
	// (under a 0700 parent) is not.
	dir, err := os.MkdirTemp("", "tinyedge-mosquitto-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	b := &broker{t: t, dir: dir, port: freePort(t)}
	listener := fmt.Sprintf("listener %d 127.0.0.1\n", b.port)
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	conf := listener +
		"allow_anonymous true\n" +
		"persistence true\n" +
		"persistence_location " + b.dir + "/\n" +
		"max_queued_messages 0\n" +
		"max_inflight_messages 1\n" +
		"log_dest file " + filepath.Join(b.dir, "mosquitto.log") + "\n" +
		extra
	if err := os.WriteFile(b.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *broker) url() string { return "tcp://127.0.0.1:" + strconv.Itoa(b.port) }

func (b *broker) start() {
	b.t.Helper()
	path, _ := exec.LookPath("mosquitto")
	if path == "" {
		path = "/usr/sbin/mosquitto"
	}
	b.cmd = exec.Command(path, "-c", b.conf)
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	b.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(b.cmd, b.done)
	deadline := time.Now().Add(hubtest.Patience)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", b.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-b.done:
			log, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
			b.t.Fatalf("mosquitto exited at start: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto did not listen on %d: %v", b.port, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop stops mosquitto cleanly (SIGTERM: it saves its state).
func (b *broker) stop() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(hubtest.Patience):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
	b.cmd = nil
}

// subscriber records what arrives on a topic filter, with a persistent
// session so that nothing the broker accepted is lost across its restarts.
type subscriber struct {
	cli paho.Client
	mu  sync.Mutex
	got []paho.Message
}

func subscribe(t testing.TB, b *broker, filter string) *subscriber {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(b.url()).
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(100 * time.Millisecond).
		SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetOnConnectHandler(func(c paho.Client) {
			// Resubscribe: cheap, and covers a broker that lost the session.
			c.Subscribe(filter, 1, nil)
		})
	return startSubscriber(t, o, filter)
}

// startSubscriber connects a subscriber with o, which names the broker,
// subscribes it to filter at QoS 1 and disconnects it at the test's end.
func startSubscriber(t testing.TB, o *paho.ClientOptions, filter string) *subscriber {
	t.Helper()
	s := &subscriber{}
	o.SetClientID("test-subscriber").SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			s.mu.Lock()
			s.got = append(s.got, m)
			s.mu.Unlock()
		})
	s.cli = paho.NewClient(o)
	if tok := s.cli.Connect(); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	if tok := s.cli.Subscribe(filter, 1, nil); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.cli.Disconnect(100) })
	return s
}

func (s *subscriber) messages() []paho.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]paho.Message(nil), s.got...)
}

func (s *subscriber) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

// distinct is the number of different bodies received.
func (s *subscriber) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]bool, len(s.got))
	for _, m := range s.got {
		seen[string(m.Payload())] = true
	}
	return len(seen)
}
