// Package workload serves IoT Edge's workload API on a unix socket, so a
// module process written with an Azure IoT SDK finds what
// ModuleClient.fromEnvironment() expects behind IOTEDGE_WORKLOADURI:
//
//	POST /modules/{name}/genid/{genid}/sign?api-version=…
//	     {"keyId":"primary","algo":"HMACSHA256","data":"<base64>"}
//	  → 200 {"digest":"<base64 HMAC-SHA256 of data with the module's key>"}
//	GET  /trust-bundle?api-version=…
//	  → 200 {"certificate":"<PEM>"}
//	POST /modules/{name}/genid/{genid}/certificate/server?api-version=…
//	     {"commonName":"…","expiration":"<RFC 3339>"}
//	  → 201 {"privateKey":{"type":"key","bytes":"<PEM>"},"certificate":"<PEM>","expiration":"<RFC 3339>"}
//
// api-version 2018-06-28 (what the SDKs send), 2019-01-30 and 2020-07-07
// are accepted; anything else is refused with 400. Every error is
// {"message":"…"} with a status that says whose fault it is: 400 for a
// malformed request, 403 for a caller asking for an identity that is not
// its own or for a stale generation, 404 for an unknown module or
// operation, 503 when no certificate authority is configured.
//
// # Who may ask
//
// The socket is shared by every module process, so the server asks the
// kernel who is calling (SO_PEERCRED) and asks Callers which module that
// process belongs to: the module's own process or any of its descendants
// (node and shells fork). A module is served only its own name, and only
// its current generation id: after a redeployment gave the module a new
// identity, a process still holding the old IOTEDGE_MODULEGENERATIONID is
// refused. The trust bundle is public and served to any caller.
//
// # Caveats
//
//   - Callers are identified by process id. The kernel records the pid at
//     connect time; a module that exits while a connection it opened is
//     handed to another process is not followed.
//   - Only unix sockets identify callers. Over TCP (an http:// workload
//     URI) every sign and certificate request is refused.
//   - Server certificates live at most MaxCertLifetime (90 days by
//     default) whatever expiration is asked for; the answer's expiration
//     says the real one.
package workload
