// Package simtemp is a built-in module that reproduces Azure IoT Edge's
// SimulatedTemperatureSensor (image
// mcr.microsoft.com/azureiotedge-simulated-temperature-sensor, source
// Azure/iotedge edge-modules/SimulatedTemperatureSensor), the module of the
// IoT Edge quickstart.
//
// Every SendInterval seconds it sends on output "temperatureOutput"
//
//	{"machine":{"temperature":t,"pressure":p},"ambient":{"temperature":a,"humidity":h},"timeCreated":"2024-01-02T03:04:05.1234567Z"}
//
// with contentType application/json, contentEncoding utf-8 and the
// application properties sequenceNumber (1, 2, …) and batchId (a GUID per
// run). The machine temperature starts at machineTempMin and climbs by a
// random step in [-0.25, 1.25] per message until it passes machineTempMax,
// then wanders by ±0.5; the pressure follows it linearly from
// machinePressureMin to machinePressureMax. The ambient temperature is
// ambientTemp ± 0.5 and the humidity ambientHumidity ± 1 (an integer).
//
// Settings, read as the original reads them:
//
//   - environment (the deployment's "env"): MessageCount (default 500, -1
//     for no limit), MessageDelay (a .NET TimeSpan such as "00:00:05", the
//     interval until the twin says otherwise), machineTempMin (21),
//     machineTempMax (100), machinePressureMin (1), machinePressureMax (10),
//     ambientTemp (21), ambientHumidity (25). An invalid value fails the
//     run with an error naming the variable.
//   - desired properties: SendInterval (seconds) and SendData (bool), read
//     at start and on every patch, taking effect at once; the values in
//     effect are reported back as reported properties SendInterval and
//     SendData.
//
// The direct method "reset" (answers 200) and the input "control" with
// {"command":"reset"} (or an array of such commands) restart the
// temperature ramp from machineTempMin at the next message.
//
// After MessageCount messages the module stops sending and stays running,
// idle, as the original does, so that its restart policy does not start it
// over.
//
// # Differences from the original
//
//   - SendInterval may be fractional (the original truncates it to whole
//     seconds); values below 1 ms, and values of the wrong type, are
//     logged and ignored. A new interval restarts the pacing at once
//     instead of after the current wait.
//   - The effective settings are also reported when the module starts, not
//     only after a patch.
//   - Deleting a desired property (null) restores its default.
//   - ambientHumidity is honoured (the original reads it and then always
//     draws 24–26).
//   - MessageDelay must be written with colons: the original would read
//     "5" as five days.
package simtemp
