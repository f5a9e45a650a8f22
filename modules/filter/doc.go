// Package filter is a built-in module that reproduces the filter module of
// the Azure IoT Edge C# tutorial ("Develop Azure IoT Edge modules",
// CSharpModule/FilterModule): it passes on the SimulatedTemperatureSensor
// messages whose machine temperature exceeds a threshold, marked as
// alerts.
//
// Messages arrive on input "inputFromSensor" (the current tutorial's name)
// or "input1" (older versions of the tutorial). A message whose body is
// JSON with a number at machine.temperature strictly greater than the
// threshold is sent on output "output1" with the same body, application
// properties, contentType and contentEncoding, plus the application
// property MessageType: Alert. Other messages are not forwarded; bodies
// that are not JSON or have no numeric machine.temperature are logged,
// with their message id, and skipped.
//
// The threshold is the desired property TemperatureThreshold (default 25),
// read at start and on every patch, taking effect at once; the threshold
// in effect is reported back as the reported property TemperatureThreshold.
//
// # Differences from the tutorial
//
//   - The threshold may be fractional (the tutorial holds it in an int).
//   - contentType and contentEncoding are carried over, so routes can
//     still query $body of the alerts.
//   - The threshold in effect is reported; deleting the desired property
//     (null) restores the default, and a value that is not a number is
//     logged and ignored.
package filter
