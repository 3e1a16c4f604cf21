// Emulator firmware of the VWW example's device side (examples/vww/common):
// the stock TFLM MicroInterpreter with tflm-train's kernels and adapter,
// driven by the serial protocol. The host's command bytes come from the file
// commands.bin (semihosting, so binary payloads arrive unaltered); replies go
// to the semihosting console, each command's followed by
// "instructions <n>" (QEMU -icount counts of the reference clock, which a
// training step of a real model does not wrap; see instruction_clock.h). Built and
// run by tools/qemu_tflm_firmware.py, which generates model_data.h and
// model_ops.h: the firmware registers the builtins the model's operator codes
// name (as an application would for its model) and the training ops, not the
// VWW example's fixed list, so it runs other converted models too. When the
// commands end it prints "stack_used_bytes <n>", the deepest the stack grew.
#include <cstddef>
#include <cstdint>

#include "instruction_clock.h"
#include "model_data.h"
#include "model_ops.h"
#include "semihosting.h"
#include "serial_training.h"

extern "C" uint32_t __stack_bottom, __stack_top;  // firmware.ld

namespace {

constexpr float kLearningRate = 0.05f;
constexpr uint32_t kStackPaint = 0x57AC4ED5u;
constexpr uint32_t kPaintMarginWords = 64;  // below this frame, for PaintStack's own

// Fills the stack below the caller's frame with kStackPaint; StackUsedBytes()
// then finds how deep the stack reached since.
__attribute__((noinline)) void PaintStack() {
  uint32_t* frame = static_cast<uint32_t*>(__builtin_frame_address(0));
  for (uint32_t* p = &__stack_bottom; p < frame - kPaintMarginWords; ++p) *p = kStackPaint;
}

uint32_t StackUsedBytes() {
  const uint32_t* p = &__stack_bottom;
  while (p < &__stack_top && *p == kStackPaint) ++p;
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(&__stack_top) - reinterpret_cast<uintptr_t>(p));
}

class FilePort final : public vww::Port {
 public:
  explicit FilePort(int handle) : handle_(handle) {}
  bool Read(uint8_t* data, size_t size) override {
    return semihosting::Read(handle_, data, static_cast<uint32_t>(size));
  }
  void Write(const char* text) override { semihosting::Write(text); }

 private:
  int handle_;
};

alignas(16) uint8_t arena[TFLM_TRAIN_ARENA_BYTES];

}  // namespace

int main() {
  PaintStack();
  if (instruction_clock::Calibrate(instruction_clock::Source::kReference) == 0) {
    semihosting::Write("error: SysTick does not advance (run QEMU with -icount)\n");
    return 1;
  }
  const int commands = semihosting::OpenForReading("commands.bin");
  if (commands < 0) {
    semihosting::Write("error: cannot open commands.bin\n");
    return 1;
  }
  static FilePort port(commands);
  static ModelOpResolver resolver;
  if (AddModelOps(resolver) != kTfLiteOk) {
    port.Write("error: op resolver too small\n");
    return 1;
  }
  static vww::SerialTrainer trainer(g_model_data, resolver, arena, sizeof(arena), kLearningRate);
  if (!trainer.Begin(port)) return 1;
  for (;;) {
    const uint32_t start = instruction_clock::Now();
    if (!trainer.Serve(port)) {
      port.Write("stack_used_bytes ");
      semihosting::WriteUnsigned(StackUsedBytes());
      port.Write("\n");
      return 0;
    }
    const uint32_t instructions = instruction_clock::Instructions(start, instruction_clock::Now());
    port.Write("instructions ");
    semihosting::WriteUnsigned(instructions);
    port.Write("\n");
  }
}
