// Package bme280 drives the Bosch BME280 temperature, pressure and
// humidity sensor, and its pressure-only sibling the BMP280, over I²C.
//
// It follows the Bosch BME280 datasheet, BST-BME280-DS002 (revision 1.6):
//
//   - §5.3 memory map and §5.4 register description: chip id 0xD0 reads
//     0x60 on a BME280; §5.2 table 17: a BMP280 reads 0x58 (0x56 and 0x57
//     on engineering samples), has no humidity registers and other standby
//     times; the driver tells them apart and a BMP280 works without
//     humidity.
//   - §4.2.2 table 16: the trimming parameters dig_T1…dig_P9 at 0x88…0x9F,
//     dig_H1 at 0xA1 (read as one 26-byte burst) and dig_H2…dig_H6 at
//     0xE1…0xE7 (one 7-byte burst), with dig_H4 and dig_H5 packed as
//     12-bit signed values sharing 0xE5.
//   - §4.2.3: the integer compensation formulas, 32-bit for temperature
//     (giving t_fine) and humidity, 64-bit for pressure (the 32-bit
//     pressure variant of §8.2 is less precise and not needed in Go); the
//     tests check them against the floating-point formulas of appendix
//     §8.1.
//   - §3.3.3 forced mode: one measurement per write of ctrl_meas, after
//     which the chip sleeps again; §3.3.4 normal mode with standby t_sb
//     (§5.4.6).
//   - §3.4 and §5.4.3–§5.4.5 oversampling: ctrl_hum (0xF2) takes effect
//     only on the next write of ctrl_meas (0xF4), so it is always written
//     first; §3.4.4 the IIR filter in config (0xF5).
//   - §9.1 (appendix B) the maximum measurement time,
//     1.25 + 2.3·T + (2.3·P + 0.575) + (2.3·H + 0.575) ms for the enabled
//     measurements, which is how long a forced reading waits.
//   - §6.2 I²C: writes are pairs of register address and data (no
//     auto-increment), reads auto-increment, so the data registers
//     0xF7…0xFE come in one burst and are consistent (§4 data readout).
//
// A forced reading costs two I²C transactions: one write (ctrl_hum and
// ctrl_meas as two register/data pairs, or ctrl_meas alone on a BMP280)
// and one burst read of the data registers (8 bytes, 6 on a BMP280 or
// without humidity, 3 fewer without pressure). A reading in normal mode
// is the burst read alone. The driver waits the datasheet's maximum
// measurement time instead of polling the status register, so there is
// no polling traffic.
//
// # Caveats
//
//   - New does not soft-reset the chip. It writes ctrl_meas with sleep
//     mode first, because the chip may ignore config writes in normal mode
//     (§5.4.6), then ctrl_hum, config and, in normal mode, ctrl_meas again.
//   - Each forced reading writes ctrl_hum again with ctrl_meas: a chip
//     that browned out and reset between readings would otherwise skip
//     humidity and leave the reset value 0x8000 in its data registers,
//     which compensates to a plausible but wrong humidity.
//   - The raw value 0x80000 marks a skipped measurement, but it is also a
//     value a chip can really produce (near 27 °C with typical trimming),
//     so the driver decides what was measured from its own settings, never
//     from the value.
//   - The 32-bit formulas are the datasheet's, with its int32 arithmetic:
//     with typical trimming they hold over the chip's operating range
//     (−40…85 °C) and any 20-bit raw temperature; far outside it
//     intermediate values would wrap, as they do in the C reference. A
//     raw pressure that compensates below zero is refused.
//   - Temperature must be measured: pressure and humidity compensation
//     need t_fine, so Opts with Temperature Off are refused.
package bme280
