// Package iothub encodes and decodes Azure IoT Hub's MQTT dialect: property
// bags, topic names, SAS tokens, connection strings and CONNECT user names.
// It is pure: no I/O, no logging, no goroutines. The upstream link, the local
// MQTT endpoint and the hubsim emulator all speak through it, so the three
// agree on every byte.
//
// The encodings follow the official Node SDK (azure-iot-device-mqtt and
// azure-iot-common, see scripts/sdk): property bag keys and values are
// percent-encoded like JavaScript's encodeURIComponent, SAS token fields like
// its stricter form that also encodes !'()*.
//
// # Caveats
//
//   - A `$.` key that is not a known system property is kept as an
//     application property named with its `$.` prefix (what the Node SDK does
//     when it receives one), so nothing a sender wrote is lost.
//   - A key without `=` is a null value; an application property has no null,
//     so MessageFromBag stores it as the empty string.
//   - Device and module IDs holding an MQTT wildcard (+ or #) are never
//     allowed to subscribe: the filter built from them would match other
//     identities' topics.
package iothub
