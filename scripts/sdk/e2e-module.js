#!/usr/bin/env node
// Process modules and a leaf device for tinyedge's end-to-end test with
// the official Azure IoT Node SDK (cmd/tinyedge TestSDKEndToEnd). The
// modules are written as any IoT Edge module is,
// ModuleClient.fromEnvironment(Mqtt), and run under `tinyedge run`, which
// gives them the IOTEDGE_* environment. One JSON line per event on stdout;
// any SDK error prints {"event":"error"} and exits 1.
//
//   e2e-module.js sender    twin get, reported patch, prints desired
//                           patches, answers method "ping", calls method
//                           INVOKE_METHOD on module INVOKE_MODULE when set,
//                           then sends COUNT messages numbered 0.. (app
//                           property n) on output "out", one every
//                           INTERVAL_MS.
//   e2e-module.js receiver  prints every message that reaches one of its
//                           inputs.
//   e2e-module.js leaf      a leaf device: LEAF_CONNECTION_STRING (with
//                           GatewayHostName) and the trust bundle in
//                           LEAF_CA_FILE; sends COUNT messages and exits.
'use strict';

const fs = require('fs');
const { Client, ModuleClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

function emit(event, extra) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, extra || {})) + '\n');
}

function fail(err) {
  emit('error', { message: String((err && err.stack) || err) });
  process.exit(1);
}

function props(msg) {
  const out = {};
  for (const p of msg.properties.propertyList) out[p.key] = p.value;
  return out;
}

function numbered(i) {
  const m = new Message(JSON.stringify({ machine: { temperature: 30 + (i % 10) }, n: i }));
  m.properties.add('n', String(i));
  m.contentType = 'application/json';
  m.contentEncoding = 'utf-8';
  return m;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function fromEnvironment() {
  return new Promise((resolve, reject) =>
    ModuleClient.fromEnvironment(Mqtt, (err, c) => (err ? reject(err) : resolve(c))));
}

async function sender() {
  emit('env', {
    gateway: process.env.IOTEDGE_GATEWAYHOSTNAME,
    iothub: process.env.IOTEDGE_IOTHUBHOSTNAME,
  });
  const client = await fromEnvironment();
  client.on('error', fail);
  client.onMethod('ping', (req, res) => {
    emit('method', { name: req.methodName, payload: req.payload });
    res.send(200, { pong: req.payload }, (err) => err && fail(err));
  });
  await client.open();
  const twin = await client.getTwin();
  emit('twin', { desired: twin.properties.desired });
  twin.on('properties.desired', (delta) => emit('desired', { delta }));
  // update takes a callback only (its promise form is broken in 1.18.4).
  await new Promise((resolve, reject) =>
    twin.properties.reported.update({ role: 'sender' }, (err) => (err ? reject(err) : resolve())));
  emit('reported');
  if (process.env.INVOKE_MODULE) {
    const r = await client.invokeMethod(process.env.IOTEDGE_DEVICEID, process.env.INVOKE_MODULE, {
      methodName: process.env.INVOKE_METHOD,
      payload: {},
      responseTimeoutInSeconds: 10,
    });
    emit('invoked', { status: r.status, payload: r.payload });
  }
  const count = Number(process.env.COUNT || 0);
  const interval = Number(process.env.INTERVAL_MS || 0);
  for (let i = 0; i < count; i++) {
    await client.sendOutputEvent('out', numbered(i));
    if (interval) await sleep(interval);
  }
  emit('sent', { n: count });
}

async function receiver() {
  const client = await fromEnvironment();
  client.on('error', fail);
  // Printed before the SDK acknowledges the message (stdout is a pipe,
  // written synchronously), so a message acknowledged is a message seen.
  client.on('inputMessage', (input, msg) => {
    emit('input', { input, props: props(msg), body: msg.data.toString() });
    client.complete(msg, (err) => err && fail(err));
  });
  await client.open();
  emit('open');
}

async function leaf() {
  const client = Client.fromConnectionString(process.env.LEAF_CONNECTION_STRING, Mqtt);
  client.on('error', fail);
  await client.setOptions({ ca: fs.readFileSync(process.env.LEAF_CA_FILE, 'utf8') });
  await client.open();
  const count = Number(process.env.COUNT || 0);
  for (let i = 0; i < count; i++) await client.sendEvent(numbered(i));
  emit('sent', { n: count });
  await client.close();
}

const roles = { sender, receiver, leaf };
const role = roles[process.argv[2]];
if (!role) fail(new Error(`usage: e2e-module.js ${Object.keys(roles).join('|')}`));
role().catch(fail);
