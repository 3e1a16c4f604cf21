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

// What SysTick counts. On the mps2 boards one tick of the CPU clock is 40
// instructions, so 2^24 ticks wrap after about 670 million; the 1 MHz
// reference clock ticks every 1000 instructions and wraps after 16 billion.
enum class Source { kCpu, kReference };

// Starts SysTick free-running from `source`, without interrupts, and
// measures how many instructions one tick is. Returns that ratio (0 if
// SysTick does not advance, e.g. without -icount).
uint32_t Calibrate(Source source = Source::kCpu);

// The current tick; SysTick counts down modulo 2^24.
uint32_t Now();

// Instructions executed between two Now() readings (fewer than 2^24 ticks
// apart; the result saturates at 2^32 - 1).
uint32_t Instructions(uint32_t start, uint32_t end);

}  // namespace instruction_clock

#endif  // TFLM_TRAIN_MICRO_TESTS_FIRMWARE_INSTRUCTION_CLOCK_H_
