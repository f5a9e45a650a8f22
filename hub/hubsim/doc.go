// Package hubsim is an Azure IoT Hub emulator for tests and for offline
// gateways: an MQTT server that speaks IoT Hub's device and module dialect
// (package iothub) over TLS, an identity registry with SAS keys and X.509
// thumbprints, twins with versions, direct methods, a record of every
// device-to-cloud event, and a loopback HTTP service API shaped like IoT
// Hub's REST API. `tinyedge hubsim` runs it; tests embed it with New.
//
// Everything lives in the data directory:
//
//	state.json        identities (keys, thumbprints) and their twins, written atomically
//	events.jsonl      every event accepted, one JSON object a line, appended before the PUBACK
//	ca.pem            the CA (package certs) that signs the server certificate: what clients trust
//	ca-key.pem        its key (mode 0600)
//	api-token         the bearer secret of the HTTP API (mode 0600)
//	hubsim.json       the addresses of the running server, for the CLI
//	lock              flocked by the Sim using the directory
//
// The server certificate (for Hostname, localhost, 127.0.0.1 and ::1) is
// issued from the CA at each start, kept in memory and renewed while the
// Sim runs; server.pem and server-key.pem, which older hubsims wrote, are
// deleted.
//
// What an identity may do is IoT Hub's rule: it authenticates with a SAS
// token signed by its own key (or a TLS client certificate whose SHA-256 or
// SHA-1 thumbprint is registered), publishes only to its own events topic
// and the $iothub twin and method topics, and subscribes only to its own
// inputs (modules), cloud-to-device messages (devices) and the $iothub
// response topics. The hub stamps $.cdid/$.cmid and the enqueued time.
//
// # Caveats
//
//   - Hub-to-client traffic (twin responses, desired notifications, method
//     calls) is QoS 0 and goes to the one connection of the identity; it is
//     dropped when the identity has not subscribed to a matching filter,
//     as IoT Hub does.
//   - Twin patches are not throttled (no 429). Cloud-to-device messages and
//     module inputs are not sent: IoT Hub's part of those is not emulated.
//   - Sessions (clean session false) last as long as the MQTT server runs;
//     StopMQTT or a restart forgets them, like a hub failover.
//   - At most twice Options.KeepEvents events (default MaxEvents) are kept in memory; events.jsonl keeps
//     all, and is not fsynced: a killed hubsim keeps every acknowledged
//     event, a power cut may lose the last ones.
//   - X.509 identities are matched by certificate thumbprint (IoT Hub's
//     self-signed mode); CA-signed device certificates are not supported.
//   - IoT Hub's limit of 16 unacknowledged QoS 1 publishes per connection
//     is not enforced. MQTT packets may be 4 KiB over 256 KiB, for the
//     topic; the 256 KiB message limit itself is checked on body and
//     properties, as IoT Hub counts it.
package hubsim
