#!/usr/bin/env node
// An external module for tinyedge's local MQTT endpoint (hub/edge), written
// with the official Azure IoT Node SDK as any IoT Edge module is:
// ModuleClient.fromEnvironment(Mqtt) with EdgeHubConnectionString (its
// GatewayHostName may carry a port) and EdgeModuleCACertificateFile. It
// answers method "ping", reports {"fromNode": true}, prints the desired
// properties it gets, sends three messages on output "out1", and prints
// every message that reaches one of its inputs. One JSON line per event on
// stdout; it exits when stdin closes, non-zero on any SDK error.
//
// The driver is hub/edge's TestNodeSDKModule.
'use strict';

const { ModuleClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

function emit(event, extra) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, extra || {})) + '\n');
}

function fail(err) {
  emit('error', { message: String(err && err.stack || err) });
  process.exit(1);
}

async function main() {
  const client = await new Promise((resolve, reject) =>
    ModuleClient.fromEnvironment(Mqtt, (err, c) => (err ? reject(err) : resolve(c))));
  client.on('error', fail);
  client.on('inputMessage', (input, msg) => {
    const props = {};
    for (const p of msg.properties.propertyList) props[p.key] = p.value;
    emit('input', { input, body: msg.data.toString(), props });
    client.complete(msg, () => {});
  });
  client.onMethod('ping', (req, res) => {
    res.send(200, { pong: req.payload }, (err) => err && fail(err));
  });
  await client.open();
  const twin = await client.getTwin();
  emit('twin', { desired: twin.properties.desired });
  twin.on('properties.desired', (delta) => emit('desired', { delta }));
  // update takes a callback only (its promise form is broken in 1.18.4).
  await new Promise((resolve, reject) =>
    twin.properties.reported.update({ fromNode: true }, (err) => (err ? reject(err) : resolve())));
  emit('reported');
  for (let i = 0; i < 3; i++) {
    const m = new Message(JSON.stringify({ i }));
    m.properties.add('n', String(i));
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    await client.sendOutputEvent('out1', m);
  }
  emit('sent', { n: 3 });
  process.stdin.on('end', () => client.close(() => process.exit(0)));
  process.stdin.resume();
}

main().catch(fail);
