// Package edge is tinyedge's local MQTT endpoint: the edgeHub that
// external modules (programs written with an Azure IoT SDK) and leaf
// devices connect to. It is an MQTT 3.1.1 server (mochi-mqtt, driven
// entirely through its hooks: no message is forwarded broker-style) that
// speaks IoT Hub's dialect (hub/iothub) and hands everything to the hub:
//
//   - telemetry and module outputs (devices/{d}[/modules/{m}]/messages/events/…)
//     enter the hub's router as the authenticated identity (Hub.Send,
//     Hub.SendLeaf); the QoS 1 PUBACK is written only after the hub took
//     the message (for durable sinks: after the store committed it). If
//     the hub refuses, there is no PUBACK and the connection is closed, so
//     the client sends again after reconnecting;
//   - what routes send to an external module's inputs waits in its queues
//     (hub.Inputs) and is delivered on devices/{d}/modules/{m}/inputs/{i}/…
//     once the module subscribes with the C SDK's (devices/{d}/modules/{m}/#),
//     the Node SDK's (…/inputs/#) or a single input's filter; at most
//     Options.Window messages (default 1024) and about a megabyte of
//     bodies are unacknowledged at a time, a PUBACK removes a message
//     from its queue, and a disconnect rewinds (what was in flight is
//     delivered again), so nothing is lost and order is kept per input;
//   - twins ($iothub/twin/…) and direct methods ($iothub/methods/…) of the
//     module or leaf device, both ways. A leaf device's session is
//     announced to the hub (Hub.SetConnected), so the upstream link can
//     connect to IoT Hub as the leaf; its first twin GET waits (at most
//     cloudTwinWait, 3 s) for the link to bring the leaf's twin from the
//     cloud (Hub.SyncedTwin), and the cloud's direct methods reach it;
//   - module-to-module direct methods over HTTPS (POST /twins/{d}[/modules/{m}]/methods),
//     as the Node SDK's ModuleClient.invokeMethod calls them.
//
// # Security
//
// CONNECT carries a SAS token signed with the identity's key (Keys), or,
// for leaf devices, an empty password and an X.509 client certificate
// whose SHA-256 thumbprint is registered (Thumbprints). The token's
// audience may name the IoT Hub or the gateway host name. Expired tokens
// are refused, and a connection is closed when its token expires unless
// the client connected again with a new one. An identity publishes only
// as itself ($.cdid and $.cmid are the hub's), subscribes only to its
// own inputs, twin and methods; anything else is refused and logged (a
// refused publish closes the connection, as IoT Hub does; a refused
// subscription gets SUBACK 0x80).
//
// The TLS listener (default :8883) takes its certificate from a
// callback, so a renewed certificate reaches new connections while
// established ones stay up. A plain listener exists only when configured
// and only on a loopback address.
//
// # Limits
//
// Packets over 256 KiB close the connection. Beyond Options.MaxConnections
// open connections, new ones are closed at once, before TLS, so a flood
// costs the clients already connected nothing but the accept calls.
//
// # HTTPS port for direct methods
//
// The Node SDK's ModuleClient.invokeMethod (azure-iot-device's
// MethodClient → azure-iot-http-base RestApiClient → https.request) sends
// POST https://{IOTEDGE_GATEWAYHOSTNAME}/twins/… with no port: 443, as
// edgeHub serves it. So MethodsListen defaults to ":443" (binding it
// needs root or CAP_NET_BIND_SERVICE; without, the endpoint logs an
// error and runs without it); the SDK cannot be pointed at another
// port.
//
// # Caveats
//
//   - Without a hub store, external inputs are queued in memory and lost
//     when the process ends (see hub's external.go).
//   - A connection's telemetry goes to the hub from one goroutine, in
//     order, in batches (Hub.StartSendBatch); up to sendDepth batches are
//     on their way to the store at once and their PUBACKs are written as
//     their commits end, in order. A message waits for the commit that
//     is running and then for its own, so one connection's throughput is
//     about its in-flight window divided by one and a half commits and a
//     round trip: with a window of 16 and bbolt's two fdatasyncs per
//     commit, 12,000–15,000 messages a second here. Connections share
//     commits; a client that pipelines more is bounded by CPU instead.
//   - A connection may hold sendBudget (1 MiB) of telemetry bodies read
//     and not acknowledged, and a pump deliverBudget (1 MiB) of inputs;
//     past that the endpoint stops reading from the connection, or
//     delivering to it, until acknowledgements come back.
//   - A PUBACK from a module removes its message from the queue within
//     5 ms (acknowledgements are committed in groups); a crash in between
//     delivers those messages again.
//   - Last wills are ignored, and QoS 2 closes the connection, as IoT Hub
//     does.
//   - Sessions are not kept across restarts of tinyedge (clients
//     subscribe again, as the SDKs do on reconnect); messages are, in the
//     store.
package edge
