package hubsim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultDataDir is where `tinyedge hubsim` keeps its state unless told
// otherwise, and where `tinyedge run` looks for its embedded one:
// $XDG_STATE_HOME/tinyedge/hubsim, else ~/.local/state/tinyedge/hubsim.
func DefaultDataDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "tinyedge", "hubsim"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("hubsim data directory: %w (give --data-dir)", err)
	}
	return filepath.Join(home, ".local", "state", "tinyedge", "hubsim"), nil
}

// Client talks to a running hubsim's service API.
type Client struct {
	base     string
	token    string
	hostname string
	http     *http.Client
}

// ErrNotRunning is returned (wrapped) by Dial when no hubsim serves the
// data directory.
var ErrNotRunning = errors.New("no hubsim running")

// Dial finds the hubsim serving dataDir from the hubsim.json and api-token
// files it wrote.
func Dial(dataDir string) (*Client, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, infoFileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w with data directory %s (start one with `tinyedge hubsim serve`)", ErrNotRunning, dataDir)
	}
	if err != nil {
		return nil, err
	}
	var info serveInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dataDir, infoFileName), err)
	}
	if info.HTTP == "" {
		return nil, fmt.Errorf("the hubsim with data directory %s serves no HTTP API (start it with --http)", dataDir)
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, tokenFileName))
	if err != nil {
		return nil, fmt.Errorf("hubsim API token: %w", err)
	}
	return &Client{base: "http://" + info.HTTP, token: strings.TrimSpace(string(tok)), hostname: info.Hostname, http: &http.Client{}}, nil
}

// APIError is an error answer of the service API.
type APIError struct {
	Status    int
	ErrorCode int    `json:"errorCode"`
	Message   string `json:"message"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("hubsim API: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("hubsim API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("hubsim API: %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		e := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(b, e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(b))
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("hubsim API: %s %s: %w", method, path, err)
		}
	}
	return nil
}

func identityPath(prefix, device, module string) string {
	p := prefix + "/" + url.PathEscape(device)
	if module != "" {
		p += "/modules/" + url.PathEscape(module)
	}
	return p
}

// RegisteredIdentity is an identity as the service API shows it.
type RegisteredIdentity struct {
	DeviceID         string `json:"deviceId"`
	ModuleID         string `json:"moduleId"`
	ConnectionState  string `json:"connectionState"`
	ConnectionString string `json:"connectionString"`
	Authentication   struct {
		Type string `json:"type"`
	} `json:"authentication"`
}

// AddIdentity creates a device (module "") or a module with generated
// keys, or returns the existing one.
func (c *Client) AddIdentity(ctx context.Context, device, module string) (RegisteredIdentity, error) {
	var out RegisteredIdentity
	err := c.do(ctx, http.MethodPut, identityPath("/devices", device, module), struct{}{}, &out)
	return out, err
}

// AddDeviceWithKey creates a device whose primary SAS key is key
// (base64), or returns the existing one, whatever its key: compare the
// key in its ConnectionString.
func (c *Client) AddDeviceWithKey(ctx context.Context, device, key string) (RegisteredIdentity, error) {
	var body deviceJSON
	body.Authentication.Type = "sas"
	body.Authentication.SymmetricKey = &struct {
		PrimaryKey   string `json:"primaryKey"`
		SecondaryKey string `json:"secondaryKey"`
	}{PrimaryKey: key}
	var out RegisteredIdentity
	err := c.do(ctx, http.MethodPut, identityPath("/devices", device, ""), body, &out)
	return out, err
}

// Identities lists every device and module.
func (c *Client) Identities(ctx context.Context) ([]RegisteredIdentity, error) {
	var devs []RegisteredIdentity
	if err := c.do(ctx, http.MethodGet, "/devices", nil, &devs); err != nil {
		return nil, err
	}
	var out []RegisteredIdentity
	for _, d := range devs {
		out = append(out, d)
		var mods []RegisteredIdentity
		if err := c.do(ctx, http.MethodGet, "/devices/"+url.PathEscape(d.DeviceID)+"/modules", nil, &mods); err != nil {
			return nil, err
		}
		out = append(out, mods...)
	}
	return out, nil
}

// Twin returns the twin document as the service API shows it.
func (c *Client) Twin(ctx context.Context, device, module string) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.do(ctx, http.MethodGet, identityPath("/twins", device, module), nil, &out)
	return out, err
}

// PatchDesired patches desired properties and returns the new twin.
func (c *Client) PatchDesired(ctx context.Context, device, module string, patch json.RawMessage) (json.RawMessage, error) {
	body := map[string]any{"properties": map[string]any{"desired": patch}}
	var out json.RawMessage
	err := c.do(ctx, http.MethodPatch, identityPath("/twins", device, module), body, &out)
	return out, err
}

// InvokeMethod calls a direct method; timeout is whole seconds, 5 to 300.
func (c *Client) InvokeMethod(ctx context.Context, device, module, name string, payload json.RawMessage, timeout time.Duration) (MethodResult, error) {
	body := map[string]any{"methodName": name, "payload": payload, "responseTimeoutInSeconds": int(timeout / time.Second)}
	if payload == nil {
		body["payload"] = nil
	}
	var out MethodResult
	err := c.do(ctx, http.MethodPost, identityPath("/twins", device, module)+"/methods", body, &out)
	return out, err
}

// Monitor streams events (their JSON lines) to fn until ctx ends or the
// server goes: from event number from, or only new ones when from < 0.
func (c *Client) Monitor(ctx context.Context, from int64, fn func(line []byte) error) error {
	path := "/events"
	if from >= 0 {
		path += "?from=" + strconv.FormatInt(from, 10)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("hubsim API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return &APIError{Status: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if err := fn(sc.Bytes()); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("hubsim events: %w", err)
	}
	return nil
}
