#include "instruction_clock.h"

namespace instruction_clock {
namespace {

constexpr uintptr_t kSysTickControl = 0xE000E010;
constexpr uintptr_t kSysTickReload = 0xE000E014;
constexpr uintptr_t kSysTickCurrent = 0xE000E018;
constexpr uint32_t kEnable = 0x1;       // no TICKINT: nothing interrupts the code measured
constexpr uint32_t kCpuClockSource = 0x4;  // CLKSOURCE; clear: the reference clock
constexpr uint32_t kMask = 0xFFFFFF;
// Iterations of the two-instruction calibration loop.
constexpr uint32_t kCalibrationIterations = 1u << 20;

volatile uint32_t& Register(uintptr_t address) {
  return *reinterpret_cast<volatile uint32_t*>(address);
}

uint32_t instructions_per_tick = 0;

}  // namespace

uint32_t Now() { return Register(kSysTickCurrent); }

uint32_t Calibrate(Source source) {
  Register(kSysTickControl) = 0;
  Register(kSysTickReload) = kMask;
  Register(kSysTickCurrent) = 0;
  Register(kSysTickControl) = kEnable | (source == Source::kCpu ? kCpuClockSource : 0);
  uint32_t counter = kCalibrationIterations;
  const uint32_t start = Now();
  asm volatile(
      "1: subs %0, %0, #1\n"
      "   bne 1b\n"
      : "+r"(counter));
  const uint32_t ticks = (start - Now()) & kMask;
  instructions_per_tick =
      ticks == 0 ? 0 : (2 * kCalibrationIterations + ticks / 2) / ticks;
  return instructions_per_tick;
}

uint32_t Instructions(uint32_t start, uint32_t end) {
  const uint64_t instructions =
      static_cast<uint64_t>((start - end) & kMask) * instructions_per_tick;
  return instructions > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(instructions);
}

}  // namespace instruction_clock
