// Instruction counts of code regions under QEMU with `-icount shift=0`.
//
// QEMU models neither cycle timing nor the DWT cycle counter, but with
// -icount shift=0 its virtual clock advances exactly 1 ns per executed
// instruction, and SysTick (clocked from the CPU clock) counts that virtual
// time. One SysTick tick is therefore a fixed number of instructions, which
// Calibrate() measures with a loop of known length. Figures are instruction
// counts (resolution: one tick, tens of instructions), not cycles of a real
// core.
#ifndef TFLM_TRAIN_MICRO_TESTS_FIRMWARE_INSTRUCTION_CLOCK_H_
#define TFLM_TRAIN_MICRO_TESTS_FIRMWARE_INSTRUCTION_CLOCK_H_

#include <cstdint>

namespace instruction_clock {

// Starts SysTick free-running from the CPU clock, without interrupts, and
// measures how many instructions one tick is. Returns that ratio (0 if
// SysTick does not advance, e.g. without -icount).
uint32_t Calibrate();

// The current tick; SysTick counts down modulo 2^24.
uint32_t Now();

// Instructions executed between two Now() readings (fewer than 2^24 ticks apart).
uint32_t Instructions(uint32_t start, uint32_t end);

}  // namespace instruction_clock

#endif  // TFLM_TRAIN_MICRO_TESTS_FIRMWARE_INSTRUCTION_CLOCK_H_
