package hubsim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/hub/twin"
)

// startHTTP serves the service API on the loopback address.
func (s *Sim) startHTTP() error {
	ln, err := net.Listen("tcp", s.opts.HTTPAddr)
	if err != nil {
		return fmt.Errorf("hubsim: listen HTTP on %s: %w", s.opts.HTTPAddr, err)
	}
	srv := &http.Server{Handler: s.api(), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.httpSrv, s.httpAddr = srv, ln.Addr().String()
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP API stopped", "error", err)
		}
	}()
	return nil
}

// api is the service API, shaped like IoT Hub's REST API (api-version is
// accepted and ignored).
func (s *Sim) api() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /devices", s.listDevices)
	mux.HandleFunc("PUT /devices/{d}", s.putIdentity)
	mux.HandleFunc("GET /devices/{d}", s.getIdentity)
	mux.HandleFunc("GET /devices/{d}/modules", s.listModules)
	mux.HandleFunc("PUT /devices/{d}/modules/{m}", s.putIdentity)
	mux.HandleFunc("GET /devices/{d}/modules/{m}", s.getIdentity)
	mux.HandleFunc("GET /twins/{d}", s.getTwin)
	mux.HandleFunc("PATCH /twins/{d}", s.patchTwin)
	mux.HandleFunc("GET /twins/{d}/modules/{m}", s.getTwin)
	mux.HandleFunc("PATCH /twins/{d}/modules/{m}", s.patchTwin)
	mux.HandleFunc("POST /twins/{d}/methods", s.invoke)
	mux.HandleFunc("POST /twins/{d}/modules/{m}/methods", s.invoke)
	mux.HandleFunc("GET /events", s.streamEvents)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Loopback only, and the secret from the data directory.
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			httpError(w, http.StatusForbidden, 403000, "the hubsim API answers loopback clients only")
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !s.authorized(tok) {
			httpError(w, http.StatusUnauthorized, 401000, "want Authorization: Bearer <the api-token file of the hubsim data directory>")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		mux.ServeHTTP(w, r)
	})
}

// httpError writes IoT Hub's error shape: {"errorCode": n, "message": "…"}.
func httpError(w http.ResponseWriter, status, code int, format string, args ...any) {
	writeJSON(w, status, map[string]any{"errorCode": code, "message": fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// deviceJSON is an identity as IoT Hub's registry API shows it, plus the
// connection string (a hubsim extension, for the CLI).
type deviceJSON struct {
	DeviceID         string         `json:"deviceId"`
	ModuleID         string         `json:"moduleId,omitempty"`
	Status           string         `json:"status"`
	ConnectionState  string         `json:"connectionState"`
	Capabilities     *capabilities  `json:"capabilities,omitempty"`
	Authentication   authentication `json:"authentication"`
	ConnectionString string         `json:"connectionString,omitempty"`
}

type capabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

type authentication struct {
	Type         string `json:"type"` // sas or selfSigned
	SymmetricKey *struct {
		PrimaryKey   string `json:"primaryKey"`
		SecondaryKey string `json:"secondaryKey"`
	} `json:"symmetricKey,omitempty"`
	X509Thumbprint *struct {
		PrimaryThumbprint   string `json:"primaryThumbprint"`
		SecondaryThumbprint string `json:"secondaryThumbprint,omitempty"`
	} `json:"x509Thumbprint,omitempty"`
}

func (s *Sim) deviceJSON(id Identity) deviceJSON {
	d := deviceJSON{DeviceID: id.DeviceID, ModuleID: id.ModuleID, Status: "enabled", ConnectionState: "Disconnected",
		ConnectionString: s.ConnectionString(id)}
	if s.Connected(id.DeviceID, id.ModuleID) {
		d.ConnectionState = "Connected"
	}
	if id.ModuleID == "" {
		d.Capabilities = &capabilities{IoTEdge: id.IoTEdge}
	}
	if len(id.X509Thumbprints) > 0 {
		d.Authentication.Type = "selfSigned"
		d.Authentication.X509Thumbprint = &struct {
			PrimaryThumbprint   string `json:"primaryThumbprint"`
			SecondaryThumbprint string `json:"secondaryThumbprint,omitempty"`
		}{PrimaryThumbprint: id.X509Thumbprints[0]}
		if len(id.X509Thumbprints) > 1 {
			d.Authentication.X509Thumbprint.SecondaryThumbprint = id.X509Thumbprints[1]
		}
	} else {
		d.Authentication.Type = "sas"
		d.Authentication.SymmetricKey = &struct {
			PrimaryKey   string `json:"primaryKey"`
			SecondaryKey string `json:"secondaryKey"`
		}{id.PrimaryKey, id.SecondaryKey}
	}
	return d
}

// putIdentity creates a device or module; a body may give its keys or
// thumbprints and the iotEdge capability. An existing identity is
// returned as it is (200), so the call can be repeated.
func (s *Sim) putIdentity(w http.ResponseWriter, r *http.Request) {
	id := Identity{DeviceID: r.PathValue("d"), ModuleID: r.PathValue("m")}
	if existing, err := s.Identity(id.DeviceID, id.ModuleID); err == nil {
		writeJSON(w, http.StatusOK, s.deviceJSON(existing))
		return
	}
	var body deviceJSON
	if b, err := io.ReadAll(r.Body); err != nil {
		httpError(w, http.StatusBadRequest, 400004, "read body: %v", err)
		return
	} else if len(strings.TrimSpace(string(b))) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			httpError(w, http.StatusBadRequest, 400004, "body: %v", err)
			return
		}
	}
	if k := body.Authentication.SymmetricKey; k != nil {
		id.PrimaryKey, id.SecondaryKey = k.PrimaryKey, k.SecondaryKey
	}
	if t := body.Authentication.X509Thumbprint; t != nil {
		for _, tp := range []string{t.PrimaryThumbprint, t.SecondaryThumbprint} {
			if tp != "" {
				id.X509Thumbprints = append(id.X509Thumbprints, tp)
			}
		}
	}
	if body.Capabilities != nil && id.ModuleID == "" {
		id.IoTEdge = body.Capabilities.IoTEdge
	}
	created, err := s.AddIdentity(id)
	switch {
	case errors.Is(err, ErrNotFound):
		httpError(w, http.StatusNotFound, 404001, "%v", err)
	case err != nil:
		httpError(w, http.StatusBadRequest, 400004, "%v", err)
	default:
		writeJSON(w, http.StatusOK, s.deviceJSON(created))
	}
}

func (s *Sim) getIdentity(w http.ResponseWriter, r *http.Request) {
	id, err := s.Identity(r.PathValue("d"), r.PathValue("m"))
	if err != nil {
		httpError(w, http.StatusNotFound, 404001, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, s.deviceJSON(id))
}

func (s *Sim) listDevices(w http.ResponseWriter, r *http.Request) {
	out := []deviceJSON{}
	for _, id := range s.Identities() {
		if id.ModuleID == "" {
			out = append(out, s.deviceJSON(id))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Sim) listModules(w http.ResponseWriter, r *http.Request) {
	d := r.PathValue("d")
	if _, err := s.Identity(d, ""); err != nil {
		httpError(w, http.StatusNotFound, 404001, "%v", err)
		return
	}
	out := []deviceJSON{}
	for _, id := range s.Identities() {
		if id.DeviceID == d && id.ModuleID != "" {
			out = append(out, s.deviceJSON(id))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// twinJSON is a twin as IoT Hub's twin API shows it.
type twinJSON struct {
	DeviceID        string `json:"deviceId"`
	ModuleID        string `json:"moduleId,omitempty"`
	Etag            string `json:"etag"`
	Version         int64  `json:"version"`
	Status          string `json:"status"`
	ConnectionState string `json:"connectionState"`
	Properties      struct {
		Desired  twin.Properties `json:"desired"`
		Reported twin.Properties `json:"reported"`
	} `json:"properties"`
}

func (s *Sim) twinJSON(device, module string) (twinJSON, error) {
	t, err := s.Twin(device, module)
	if err != nil {
		return twinJSON{}, err
	}
	j := twinJSON{DeviceID: device, ModuleID: module, Status: "enabled", ConnectionState: "Disconnected",
		Version: t.Desired.Version + t.Reported.Version}
	j.Etag = strconv.FormatInt(j.Version, 10)
	if s.Connected(device, module) {
		j.ConnectionState = "Connected"
	}
	j.Properties.Desired, j.Properties.Reported = t.Desired, t.Reported
	return j, nil
}

func (s *Sim) getTwin(w http.ResponseWriter, r *http.Request) {
	j, err := s.twinJSON(r.PathValue("d"), r.PathValue("m"))
	if err != nil {
		httpError(w, http.StatusNotFound, 404001, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, j)
}

// patchTwin takes {"properties":{"desired":{…}}} and answers the twin.
func (s *Sim) patchTwin(w http.ResponseWriter, r *http.Request) {
	d, m := r.PathValue("d"), r.PathValue("m")
	var body struct {
		Properties struct {
			Desired json.RawMessage `json:"desired"`
		} `json:"properties"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		httpError(w, http.StatusBadRequest, 400004, "body: %v", err)
		return
	}
	if len(body.Properties.Desired) == 0 {
		httpError(w, http.StatusBadRequest, 400004, `body: want {"properties":{"desired":{…}}}`)
		return
	}
	patch, err := twin.ParsePatch(body.Properties.Desired)
	if err != nil {
		httpError(w, http.StatusBadRequest, 400004, "properties.desired: %v", err)
		return
	}
	if _, err := s.PatchDesired(d, m, patch); err != nil {
		switch {
		case errors.Is(err, ErrNotFound):
			httpError(w, http.StatusNotFound, 404001, "%v", err)
		case errors.Is(err, twin.ErrTooLarge):
			httpError(w, http.StatusRequestEntityTooLarge, 413001, "%v", err)
		default:
			httpError(w, http.StatusBadRequest, 400004, "%v", err)
		}
		return
	}
	s.getTwin(w, r)
}

// invoke runs a direct method: {methodName, payload,
// responseTimeoutInSeconds (5 to 300, default 30)} → {status, payload};
// 404 when the target is not connected or not listening for methods, 504
// when it does not answer in time.
func (s *Sim) invoke(w http.ResponseWriter, r *http.Request) {
	var req struct {
		MethodName      string          `json:"methodName"`
		Payload         json.RawMessage `json:"payload"`
		ResponseTimeout *int            `json:"responseTimeoutInSeconds"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, 400004, "body: %v", err)
		return
	}
	timeout := 30
	if req.ResponseTimeout != nil {
		timeout = *req.ResponseTimeout
	}
	if timeout < 5 || timeout > 300 {
		httpError(w, http.StatusBadRequest, 400027, "responseTimeoutInSeconds %d: want 5 to 300", timeout)
		return
	}
	res, err := s.InvokeMethod(r.Context(), r.PathValue("d"), r.PathValue("m"), req.MethodName, req.Payload, time.Duration(timeout)*time.Second)
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNotConnected):
		httpError(w, http.StatusNotFound, 404103, "%v", err)
	case errors.Is(err, ErrMethodTimeout):
		httpError(w, http.StatusGatewayTimeout, 504101, "%v", err)
	case err != nil:
		httpError(w, http.StatusBadRequest, 400004, "%v", err)
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// streamEvents writes events as newline-delimited JSON until the client
// goes or hubsim closes: from the event numbered ?from=N, or only new ones
// without it (as monitor-events does).
func (s *Sim) streamEvents(w http.ResponseWriter, r *http.Request) {
	_, next, _ := s.Events(1 << 62)
	if f := r.URL.Query().Get("from"); f != "" {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 0 {
			httpError(w, http.StatusBadRequest, 400004, "from=%q: want an event number, 0 for all", f)
			return
		}
		next = n
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if flusher != nil {
		flusher.Flush()
	}
	for {
		evs, n, more := s.Events(next)
		for _, ev := range evs {
			if err := enc.Encode(ev); err != nil {
				return
			}
		}
		next = n
		if bw.Flush() != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-more:
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		}
	}
}
