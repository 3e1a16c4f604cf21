// Mbed OS program of the VWW example: the serial protocol of
// examples/vww/common/serial_training.h on stdio (the USB serial console).
// Build it with micro/ as a library and examples/vww/common/serial_training.cpp
// beside this file; model_data.h as for the Arduino sketch. Binary payloads
// need the console's newline conversion off (platform.stdio-convert-newlines,
// false by default); the baud rate is platform.stdio-baud-rate (9600 by default).
#include <cstdio>

#include "model_data.h"
#include "serial_training.h"

namespace {

// The VWW training model (examples/vww/s.json) needs up to 203 KiB on a
// Cortex-M4, depending on the converter's options (benchmarks/RESULTS.md).
constexpr size_t kArenaSize = 203 * 1024;
constexpr float kLearningRate = 0.05f;

class StdioPort final : public vww::Port {
 public:
  bool Read(uint8_t* data, size_t size) override {
    return fread(data, 1, size, stdin) == size;
  }
  void Write(const char* text) override {
    fputs(text, stdout);
    fflush(stdout);
  }
};

alignas(16) uint8_t arena[kArenaSize];

}  // namespace

int main() {
  static vww::VwwOpResolver resolver;
  static StdioPort port;
  if (vww::AddVwwOps(resolver) != kTfLiteOk) {
    port.Write("error: op resolver too small\n");
    return 1;
  }
  static vww::SerialTrainer trainer(g_model_data, resolver, arena, kArenaSize, kLearningRate);
  if (!trainer.Begin(port)) return 1;
  while (trainer.Serve(port)) {
  }
  return 0;
}
