// Package upstream is tinyedge's link to the cloud: it takes the durable
// $upstream queue from the hub's pump (as a hub.Uplink) and publishes it
// over MQTT with QoS 1, either in Azure IoT Hub's dialect or as plain MQTT
// to any broker (mosquitto, EMQX, HiveMQ) on a topic made from a template.
//
// A Link keeps one MQTT connection per identity that needs the cloud: the
// device, each module identity, and each leaf device with a shared access
// key while it is needed (leaf.go), so IoT Hub stamps every message with
// the $connectionDeviceId and $connectionModuleId of its sender. Each
// connection has a bounded window of publishes awaiting their PUBACK (16
// by default, IoT Hub's limit); the hub acknowledges a message in its store
// only when the PUBACK came, and after any disconnect sends everything
// unacknowledged again, in order. The link reconnects by itself with
// exponential backoff and jitter (1 s to 60 s, reset after a minute of
// stable connection); paho's own reconnect and its store are not used
// (paho keeps a memory store, clean sessions): the hub's store is the only
// copy that counts.
//
// # Caveats
//
// Delivery is at least once. A message whose PUBACK was lost with the
// connection is sent again, so the receiver may see it twice; duplicates
// are bounded by the window per disconnect. Messages keep their order
// within a priority; a lower priority message may overtake a higher one
// only when the higher one arrives in the store after the pump read past
// it.
//
// The pump sends in order, so a message waits while the connection of its
// identity is down or its window is full, and so do the messages behind
// it, even those of identities that are connected. When IoT Hub refuses
// the credentials of a module identity or a leaf device (unknown, wrong
// key), its messages go on the device's connection instead, as the
// device's, rather than hold up everyone's telemetry until the
// registration is fixed; the link says so in the log and in its status,
// and keeps retrying the identity's own connection (leaf.go).
//
// IoT Hub does not tell a device the caller's timeout of a direct method;
// the module's handler gets the longest IoT Hub allows (300 s) and IoT
// Hub gives up on its own. The device twin's reported properties are not
// synced; module twins and the twins of leaf devices with their own
// connection are.
//
// Plain MQTT 3.1.1 has no message properties: in plain mode only the body
// travels, and the topic template is the place to carry what the receiver
// needs (device, module, output, message id).
package upstream
