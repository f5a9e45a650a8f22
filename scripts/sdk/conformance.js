#!/usr/bin/env node
// Conformance client for tinyedge's hubsim (and any IoT Hub-like server):
// connects with the official Azure IoT Node SDK over MQTT as a DeviceClient
// and as a ModuleClient, and for each one sends events with properties,
// gets the twin, patches reported properties, waits for a desired patch and
// answers a direct method. It prints one JSON line per step on stdout and
// exits non-zero on any SDK error or timeout.
//
// Environment:
//   HUBSIM_DEVICE_CS  device connection string (GatewayHostName=host:port allowed)
//   HUBSIM_MODULE_CS  module connection string
//   HUBSIM_CA         path of the PEM CA certificate to trust
//   HUBSIM_TIMEOUT_MS how long to wait for the desired patch and the method (default 20000)
//
// The driver (hub/hubsim's TestSDKConformance) patches desired properties
// after a {"step":"listening-desired"} line and invokes the method "reset"
// after a {"step":"listening-method"} line.
'use strict';

const fs = require('fs');
const { Client: DeviceClient, ModuleClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const timeoutMs = Number(process.env.HUBSIM_TIMEOUT_MS || 20000);

function emit(step, as, extra) {
  process.stdout.write(JSON.stringify(Object.assign({ step, as }, extra || {})) + '\n');
}

function withTimeout(promise, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

function message(as, i) {
  const m = new Message(JSON.stringify({ as, i, temperature: 20 + i }));
  m.messageId = `${as}-msg-${i}`;
  m.correlationId = `${as}-corr-${i}`;
  m.contentType = 'application/json';
  m.contentEncoding = 'utf-8';
  m.properties.add('seq', String(i));
  m.properties.add('temp alert', i % 2 ? 'yes' : 'no');
  m.properties.add('unit', '°C');
  return m;
}

async function exercise(as, client, isModule) {
  client.on('error', (err) => { emit('error', as, { error: String(err) }); process.exit(1); });
  await client.setOptions({ ca: fs.readFileSync(process.env.HUBSIM_CA, 'utf8') });
  await client.open();
  emit('open', as);

  for (let i = 0; i < 2; i++) {
    const m = message(as, i);
    if (isModule) {
      await client.sendOutputEvent('output1', m);
    } else {
      await client.sendEvent(m);
    }
    emit('sent', as, { messageId: m.messageId });
  }

  const twin = await client.getTwin();
  emit('twin', as, { desired: twin.properties.desired, reported: twin.properties.reported });

  await new Promise((resolve, reject) => {
    twin.properties.reported.update({ firmware: '1.2.3', status: { as, ok: true } }, (err) => err ? reject(err) : resolve());
  });
  await new Promise((resolve, reject) => {
    twin.properties.reported.update({ status: { ok: null, phase: 'patched' } }, (err) => err ? reject(err) : resolve());
  });
  emit('reported', as);

  // The SDK fires properties.desired once with the current document when
  // the listener is added; the driver's patch carries "threshold".
  const desired = new Promise((resolve) => {
    twin.on('properties.desired', (delta) => {
      if (delta.threshold !== undefined) resolve(delta);
    });
  });
  emit('listening-desired', as);
  const delta = await withTimeout(desired, 'the desired patch');
  emit('desired', as, { delta });

  const onMethod = (isModule ? client.onMethod : client.onDeviceMethod).bind(client);
  const called = new Promise((resolve, reject) => {
    onMethod('reset', (request, response) => {
      response.send(200, { as, echo: request.payload }, (err) => err ? reject(err) : resolve(request.payload));
    });
  });
  // The SDK subscribes in the background, without a callback: the driver
  // retries while the hub answers 404 (not subscribed yet).
  emit('listening-method', as);
  const payload = await withTimeout(called, 'the direct method');
  emit('method', as, { payload });

  await client.close();
  emit('closed', as);
}

async function main() {
  await exercise('device', DeviceClient.fromConnectionString(process.env.HUBSIM_DEVICE_CS, Mqtt), false);
  await exercise('module', ModuleClient.fromConnectionString(process.env.HUBSIM_MODULE_CS, Mqtt), true);
  emit('done', 'all');
}

main().then(() => process.exit(0), (err) => {
  emit('error', 'all', { error: String(err && err.stack || err) });
  process.exit(1);
});
