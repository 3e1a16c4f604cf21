// Reset and fault handling of the test firmware: the vector table, .data/.bss
// set-up, FPU enable, static constructors, then main(); the exit status goes
// to the host through semihosting.
#include <cstdint>

#include "semihosting.h"

extern "C" {
extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end;
extern uint32_t __stack_top;
extern void (*__init_array_start[])();
extern void (*__init_array_end[])();
int main();
void ResetHandler();
}

namespace {

volatile uint32_t& Register(uintptr_t address) {
  return *reinterpret_cast<volatile uint32_t*>(address);
}

// Coprocessor Access Control: full access to CP10/CP11 (the FPU). Nothing
// before this may touch a float register, which is why ResetHandler does it
// first and main() runs only afterwards.
void EnableFpu() {
  Register(0xE000ED88) |= 0xFu << 20;
  asm volatile("dsb\n isb" ::: "memory");
}

void FaultHandler() {
  semihosting::Write("FAIL: processor fault\n");
  semihosting::Exit(false);
}

using Handler = void (*)();

}  // namespace

extern "C" void ResetHandler() {
  EnableFpu();
  const uint32_t* load = &__data_load;
  for (uint32_t* p = &__data_start; p < &__data_end;) *p++ = *load++;
  for (uint32_t* p = &__bss_start; p < &__bss_end;) *p++ = 0;
  for (auto* ctor = __init_array_start; ctor < __init_array_end; ++ctor) (*ctor)();
  semihosting::Exit(main() == 0);
}

// Initial stack pointer, reset, then NMI, HardFault, MemManage, BusFault,
// UsageFault; the firmware uses no interrupts.
__attribute__((section(".vectors"), used)) const Handler kVectors[] = {
    reinterpret_cast<Handler>(&__stack_top), ResetHandler, FaultHandler,
    FaultHandler, FaultHandler, FaultHandler, FaultHandler};
