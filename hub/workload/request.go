package workload

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// APIVersions are the workload API versions served. The Azure IoT SDKs
// send 2018-06-28; IoT Edge 1.1+ modules may send the later ones. The
// requests used here are the same in all three.
var APIVersions = []string{"2018-06-28", "2019-01-30", "2020-07-07"}

// maxBody bounds a request body. A sign request carries a SAS token's
// string to sign, well under this.
const maxBody = 64 << 10

// op is what a request asks for.
type op int

const (
	opTrustBundle op = iota + 1
	opSign
	opServerCert
)

// request is a decoded, checked workload API request.
type request struct {
	op         op
	module     string // opSign, opServerCert
	genID      string // opSign, opServerCert
	apiVersion string

	data       []byte    // opSign: what to sign
	commonName string    // opServerCert
	expiration time.Time // opServerCert: what the caller asked for
}

// apiError is an answer other than success: an HTTP status and the
// message sent as {"message": …}.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func errorf(status int, format string, args ...any) *apiError {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

// signBody is the body of a sign request.
type signBody struct {
	KeyID string `json:"keyId"`
	Algo  string `json:"algo"`
	Data  string `json:"data"`
}

// certBody is the body of a server certificate request.
type certBody struct {
	CommonName string `json:"commonName"`
	Expiration string `json:"expiration"`
}

// parseRequest decodes and checks a request from its method, escaped path,
// raw query and body. It knows nothing of the caller: authorization comes
// after.
func parseRequest(method, escapedPath, rawQuery string, body []byte) (request, *apiError) {
	var r request
	segs := strings.Split(strings.TrimPrefix(escapedPath, "/"), "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil {
			return r, errorf(http.StatusBadRequest, "path segment %q is not URL-encoded correctly", s)
		}
		segs[i] = u
	}
	wantMethod := http.MethodPost
	switch {
	case len(segs) == 1 && segs[0] == "trust-bundle":
		r.op, wantMethod = opTrustBundle, http.MethodGet
	case len(segs) == 5 && segs[0] == "modules" && segs[2] == "genid" && segs[4] == "sign":
		r.op, r.module, r.genID = opSign, segs[1], segs[3]
	case len(segs) == 6 && segs[0] == "modules" && segs[2] == "genid" && segs[4] == "certificate" && segs[5] == "server":
		r.op, r.module, r.genID = opServerCert, segs[1], segs[3]
	default:
		return r, errorf(http.StatusNotFound, "no such workload API operation %q; this gateway serves GET /trust-bundle, POST /modules/{name}/genid/{genid}/sign and POST /modules/{name}/genid/{genid}/certificate/server", escapedPath)
	}
	if method != wantMethod {
		return r, errorf(http.StatusMethodNotAllowed, "%s is not allowed on %s; use %s", method, escapedPath, wantMethod)
	}
	if r.op != opTrustBundle && (r.module == "" || r.genID == "") {
		return r, errorf(http.StatusBadRequest, "the module name and generation id in the path must not be empty")
	}

	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return r, errorf(http.StatusBadRequest, "query %q is not URL-encoded correctly", rawQuery)
	}
	r.apiVersion = q.Get("api-version")
	if r.apiVersion == "" {
		return r, errorf(http.StatusBadRequest, "api-version is missing; add ?api-version=%s", APIVersions[0])
	}
	supported := false
	for _, v := range APIVersions {
		supported = supported || v == r.apiVersion
	}
	if !supported {
		return r, errorf(http.StatusBadRequest, "api-version %q is not supported; this gateway serves %s", r.apiVersion, strings.Join(APIVersions, ", "))
	}

	switch r.op {
	case opSign:
		var b signBody
		if e := decodeBody(body, &b); e != nil {
			return r, e
		}
		switch {
		case b.KeyID != "primary":
			return r, errorf(http.StatusBadRequest, "keyId %q: this gateway keeps one key per module, ask for \"primary\"", b.KeyID)
		case !strings.EqualFold(b.Algo, "HMACSHA256"):
			return r, errorf(http.StatusBadRequest, "algo %q is not supported; use \"HMACSHA256\"", b.Algo)
		}
		d, err := base64.StdEncoding.DecodeString(b.Data)
		if err != nil {
			return r, errorf(http.StatusBadRequest, "data is not base64: %v", err)
		}
		r.data = d
	case opServerCert:
		var b certBody
		if e := decodeBody(body, &b); e != nil {
			return r, e
		}
		if strings.TrimSpace(b.CommonName) == "" {
			return r, errorf(http.StatusBadRequest, "commonName is missing; name the host the certificate is for")
		}
		if len(b.CommonName) > 64 {
			return r, errorf(http.StatusBadRequest, "commonName is %d bytes long; X.509 allows 64", len(b.CommonName))
		}
		if b.Expiration == "" {
			return r, errorf(http.StatusBadRequest, "expiration is missing; give an RFC 3339 time such as \"2030-01-02T15:04:05Z\"")
		}
		exp, err := time.Parse(time.RFC3339, b.Expiration)
		if err != nil {
			return r, errorf(http.StatusBadRequest, "expiration %q is not an RFC 3339 time such as \"2030-01-02T15:04:05Z\"", b.Expiration)
		}
		r.commonName, r.expiration = b.CommonName, exp
	}
	return r, nil
}

// decodeBody reads one JSON object into v; unknown members are ignored,
// as IoT Edge ignores them.
func decodeBody(body []byte, v any) *apiError {
	if len(body) == 0 {
		return errorf(http.StatusBadRequest, "the request has no body; send a JSON object")
	}
	d := json.NewDecoder(strings.NewReader(string(body)))
	if err := d.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "the body is not the JSON object expected: %v", err)
	}
	if d.More() {
		return errorf(http.StatusBadRequest, "the body has data after its JSON object")
	}
	return nil
}
