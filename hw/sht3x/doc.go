// Package sht3x drives the Sensirion SHT30, SHT31 and SHT35 humidity and
// temperature sensors (SHT3x-DIS) on an I²C bus.
//
// It follows the Sensirion "Datasheet SHT3x-DIS" (version 5, May 2018, and
// later, whose section numbers are unchanged):
//
//   - §4.3, Table 9: single shot measurement commands with clock stretching
//     disabled: 0x2400 (high repeatability), 0x240B (medium), 0x2416 (low).
//   - Table 4 (system timing): maximum measurement durations, 15 ms (high), 6 ms
//     (medium) and 4 ms (low), which Sense waits before reading, and the
//     soft reset time of at most 1.5 ms, which New and Reset wait.
//   - §4.4: readout of the results: temperature MSB, LSB, CRC, then
//     humidity MSB, LSB, CRC, in one 6-byte read; with clock stretching
//     disabled the sensor does not acknowledge the read header while it is
//     still measuring.
//   - §4.9: soft reset, command 0x30A2.
//   - §4.10: heater on 0x306D, off 0x3066.
//   - §4.11, Tables 17 to 19: status register read 0xF32D, clear 0x3041.
//   - §4.12, Table 20: CRC-8 of every 16-bit word, polynomial 0x31
//     (x⁸ + x⁵ + x⁴ + 1), initial value 0xFF, no reflection, no final XOR;
//     example CRC(0xBEEF) = 0x92.
//   - §4.13: conversion, T = -45 + 175·S_T/(2¹⁶-1) °C and
//     RH = 100·S_RH/(2¹⁶-1) %.
//
// The datasheet is at
// https://sensirion.com/media/documents/213E6A3B/63A5A569/Datasheet_SHT3x_DIS.pdf.
//
// A reading costs two I²C transactions: the command write and the 6-byte
// data read, plus one more per read the sensor refuses because it is still
// measuring.
//
// # Caveats
//
// The CRC of every word the sensor sends is checked: a mismatch is an
// error and the reading is discarded, the Env passed to Sense is left
// untouched.
//
// While a measurement is running the sensor does not acknowledge its
// address (a NACK). Linux's i2c-dev reports that as ENXIO or EREMOTEIO,
// but periph's host bus formats the errno into its message instead of
// wrapping it, so a NACK cannot be told apart from other bus errors. Sense
// therefore retries every failed data read, up to 5 attempts in all, 1 ms
// apart, before it gives up; a sensor that disappears costs those retries
// before the error is returned.
//
// The heater is for plausibility checks, not for continuous use: it heats
// the sensor by a few degrees, so every temperature read while it is on is
// too high. Halt switches it off if Heater switched it on.
//
// Periodic acquisition mode, ART, alert limits and clock stretching are
// not used: single shot without clock stretching keeps the bus free while
// the sensor measures, which matters on a bus shared with other chips.
package sht3x
