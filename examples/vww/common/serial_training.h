// The device side of the VWW example: a training model in the stock TFLM
// interpreter, driven over a byte stream by a host. Plain C++ on TFLM and
// tflm-train only; the Arduino sketch, the Mbed program and the emulator test
// firmware (micro/tests/firmware/tflm) supply the stream.
//
// Protocol: one command byte, then its payload; every reply is text lines
// ending with "arena_used_bytes <n>".
//   'T' <label: 1 byte> <pixels>  training step        -> "loss <x>"
//   'I' <pixels>                  inference (label -1)  -> "scores <s0> <s1> ..."
//   'L' <float32, little-endian>  sets the learning rate -> "learning_rate <x>"
//   'S'                           the learned state: per variable tensor
//                                 "var <tensor index> <name> <hex bytes>"
// <pixels> are H*W*C bytes (0..255) in the image input's NHWC order. An int8
// input gets pixel - 128; a float32 input gets the raw pixel value, as MLPerf
// Tiny VWW expects (tflm_train.data's mapping for both). Other bytes are
// ignored, so a terminal's line endings do no harm. Floats print with six
// decimals; failures print "error: <what>".
#ifndef TFLM_TRAIN_EXAMPLES_VWW_COMMON_SERIAL_TRAINING_H_
#define TFLM_TRAIN_EXAMPLES_VWW_COMMON_SERIAL_TRAINING_H_

#include <cstddef>
#include <cstdint>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tflm_train.h"

namespace vww {

// The byte stream to the host.
class Port {
 public:
  // Blocks until `size` bytes arrived; false if the stream ended or timed out.
  virtual bool Read(uint8_t* data, size_t size) = 0;
  virtual void Write(const char* text) = 0;

 protected:
  ~Port() = default;
};

// The builtins of the VWW model converted with examples/vww/s.json (the op
// kinds `tflm-train inspect` lists), plus the training ops.
constexpr int kVwwBuiltinOps = 8;
using VwwOpResolver =
    tflite::MicroMutableOpResolver<kVwwBuiltinOps + tflm_train::kTrainingOpCount>;
TfLiteStatus AddVwwOps(VwwOpResolver& resolver);

class SerialTrainer {
 public:
  SerialTrainer(const void* model_data, const tflite::MicroOpResolver& resolver,
                uint8_t* arena, size_t arena_size, float learning_rate);

  // Allocates the arena and checks the model's inputs and outputs; prints
  // "ready" and the arena use, or the error. False if the model cannot run.
  bool Begin(Port& port);
  // Reads one command and answers it; false once the stream has ended.
  // Only after Begin succeeded.
  bool Serve(Port& port);

 private:
  bool ReadImage(Port& port);
  void Run(Port& port, int32_t label);
  void PrintState(Port& port);
  void PrintArenaUse(Port& port);

  // PrintState reads variables through the interpreter's (protected) context:
  // MicroInterpreter::GetTensor would need every tensor preserved, i.e. a
  // much larger arena.
  class Interpreter : public tflite::MicroInterpreter {
   public:
    using MicroInterpreter::MicroInterpreter;
    using MicroInterpreter::context;
  };

  const tflite::Model* model_;
  Interpreter interpreter_;
  float learning_rate_;
};

}  // namespace vww

#endif  // TFLM_TRAIN_EXAMPLES_VWW_COMMON_SERIAL_TRAINING_H_
