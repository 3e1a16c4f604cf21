// On-device training of the VWW model converted by tflm-train, e.g. on an
// Arduino Nano 33 BLE Sense. The training session and the serial protocol
// (examples/vww/common/serial_training.h) are plain C++ that
// tools/make_arduino_library.py copies beside this sketch.
//
// Put the converted model beside the sketch as model_data.h:
//   xxd -i -n g_model_data vww_train.tflite |
//     sed 's/^unsigned char/alignas(16) const unsigned char/' > model_data.h
// and check kArenaSize against `tflm-train inspect --measure vww_train.tflite`
// (the 64-bit host's figure, a little above a Cortex-M's).
#include <Arduino.h>

#include "model_data.h"
#include "serial_training.h"

namespace {

// The VWW training model (examples/vww/s.json) needs up to 203 KiB on a
// Cortex-M4, depending on the converter's options (benchmarks/RESULTS.md).
constexpr size_t kArenaSize = 203 * 1024;
constexpr float kLearningRate = 0.05f;

class SerialPort final : public vww::Port {
 public:
  // Stream::readBytes gives up after setTimeout() (1 s by default) without a byte.
  bool Read(uint8_t* data, size_t size) override {
    return Serial.readBytes(reinterpret_cast<char*>(data), size) == size;
  }
  void Write(const char* text) override { Serial.print(text); }
};

alignas(16) uint8_t arena[kArenaSize];
vww::VwwOpResolver resolver;
SerialPort port;
vww::SerialTrainer* trainer = nullptr;  // set once setup() succeeded

}  // namespace

void setup() {
  Serial.begin(115200);
  while (!Serial) {
  }
  if (vww::AddVwwOps(resolver) != kTfLiteOk) {
    port.Write("error: op resolver too small\n");
    return;
  }
  // Constructed here rather than statically so that its errors reach Serial.
  static vww::SerialTrainer session(g_model_data, resolver, arena, kArenaSize, kLearningRate);
  if (session.Begin(port)) trainer = &session;
}

void loop() {
  if (trainer != nullptr && Serial.available() > 0) trainer->Serve(port);
}
