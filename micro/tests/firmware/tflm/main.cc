// Emulator firmware of the VWW example's device side (examples/vww/common):
// the stock TFLM MicroInterpreter with tflm-train's kernels and adapter,
// driven by the serial protocol. The host's command bytes come from the file
// commands.bin (semihosting, so binary payloads arrive unaltered); replies go
// to the semihosting console, each command's followed by
// "instructions <n>" (QEMU -icount counts of the reference clock, which a
// training step of a real model does not wrap; see instruction_clock.h). Built and
// run by tools/qemu_tflm_firmware.py, which generates model_data.h.
#include <cstddef>
#include <cstdint>

#include "instruction_clock.h"
#include "model_data.h"
#include "semihosting.h"
#include "serial_training.h"

namespace {

constexpr float kLearningRate = 0.05f;

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
  static vww::VwwOpResolver resolver;
  if (vww::AddVwwOps(resolver) != kTfLiteOk) {
    port.Write("error: op resolver too small\n");
    return 1;
  }
  static vww::SerialTrainer trainer(g_model_data, resolver, arena, sizeof(arena), kLearningRate);
  if (!trainer.Begin(port)) return 1;
  for (;;) {
    const uint32_t start = instruction_clock::Now();
    if (!trainer.Serve(port)) return 0;
    const uint32_t instructions = instruction_clock::Instructions(start, instruction_clock::Now());
    port.Write("instructions ");
    semihosting::WriteUnsigned(instructions);
    port.Write("\n");
  }
}
