// module-token.js runs as a tinyedge process module: it builds a module
// client exactly as an IoT Edge module does, with
// ModuleClient.fromEnvironment(Mqtt), which reads IOTEDGE_* and calls the
// workload API for the trust bundle and, to build its SAS token, for a
// signature. It prints what it got, for the test to check with the
// module's key:
//
//   TRUST <the trust bundle's first line>
//   TOKEN SharedAccessSignature sr=…&sig=…&se=…
//
// and exits 0, or prints the error and exits 1.
'use strict';

const { ModuleClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

function fail(what, err) {
  console.error(`${what}: ${err && err.message ? err.message : err}`);
  process.exit(1);
}

ModuleClient.fromEnvironment(Mqtt, (err, client) => {
  if (err) {
    fail('fromEnvironment', err);
  }
  const auth = client._transport._authenticationProvider;
  auth.getTrustBundle((err, ca) => {
    if (err) {
      fail('getTrustBundle', err);
    }
    console.log(`TRUST ${String(ca).split('\n')[0]}`);
    auth.getDeviceCredentials((err, creds) => {
      if (err) {
        fail('getDeviceCredentials', err);
      }
      console.log(`TOKEN ${creds.sharedAccessSignature}`);
      process.exit(0);
    });
  });
});
