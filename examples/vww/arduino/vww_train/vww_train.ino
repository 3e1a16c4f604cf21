// On-device training of a visual-wake-words model converted by tflm-train.
//
// Put the converted model next to this sketch as model_data.h, e.g.
//   xxd -i vww_train.tflite | sed 's/unsigned char/alignas(16) const unsigned char/' > model_data.h
// and set kArenaSize from `tflm-train inspect vww_train.tflite` (peak arena).
//
// Serial protocol (115200 baud), one command byte then its payload:
//   'T' <label:1 byte> <image: kImageBytes int8>  training step, prints loss
//   'I' <image: kImageBytes int8>                 inference, prints the scores
//   'S'                                           prints the learned state
// Every reply ends with the arena bytes in use.
#include <Arduino.h>
#include <tflm_train.h>

#include "model_data.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

constexpr int kImageBytes = 96 * 96;
constexpr size_t kArenaSize = 200 * 1024;
constexpr float kLearningRate = 0.05f;
// The converter appends two inputs after the image (label, learning rate)
// and one output after the scores (loss).
constexpr int kImageInput = 0, kLabelInput = 1, kLearningRateInput = 2;
constexpr int kScoresOutput = 0, kLossOutput = 1;
// The model's builtins (see `tflm-train inspect`) plus what AddTrainingOps
// registers: the 10 training ops and the ABI canary op.
constexpr int kBuiltinOps = 8;
constexpr int kTrainingOps = 10;

alignas(16) uint8_t arena[kArenaSize];
tflite::MicroMutableOpResolver<kBuiltinOps + kTrainingOps> resolver;
tflite::MicroInterpreter* interpreter = nullptr;

bool ReadExactly(uint8_t* buffer, size_t size) {
  return Serial.readBytes(reinterpret_cast<char*>(buffer), size) == size;
}

void Step(int32_t label) {
  TfLiteTensor* image = interpreter->input(kImageInput);
  if (!ReadExactly(image->data.uint8, kImageBytes)) {
    Serial.println("error: short image");
    return;
  }
  interpreter->input(kLabelInput)->data.i32[0] = label;  // < 0: inference only
  interpreter->input(kLearningRateInput)->data.f[0] = kLearningRate;
  if (interpreter->Invoke() != kTfLiteOk) {
    Serial.println("error: invoke failed");
    return;
  }
  if (label >= 0) {
    Serial.print("loss ");
    Serial.println(interpreter->output(kLossOutput)->data.f[0], 6);
  } else {
    const TfLiteTensor* scores = interpreter->output(kScoresOutput);
    Serial.print("scores");
    for (size_t i = 0; i < scores->bytes; ++i) {
      Serial.print(' ');
      Serial.print(scores->data.int8[i]);
    }
    Serial.println();
  }
}

// The learned state is every variable tensor (trainable weights, biases and
// the step counter); a host tool can patch them back into the .tflite.
void PrintState() {
  for (size_t i = 0; i < interpreter->tensors_size(); ++i) {
    const TfLiteTensor* tensor = interpreter->tensor(i);
    if (tensor == nullptr || !tensor->is_variable) continue;
    Serial.print("var ");
    Serial.print(i);
    for (size_t b = 0; b < tensor->bytes; ++b) {
      Serial.print(' ');
      Serial.print(tensor->data.uint8[b], HEX);
    }
    Serial.println();
  }
}

}  // namespace

void setup() {
  Serial.begin(115200);
  while (!Serial) {
  }
  const tflite::Model* model = tflite::GetModel(g_model_data);
  // Builtins of the converted VWW model; adjust to `tflm-train inspect`.
  resolver.AddConv2D();
  resolver.AddDepthwiseConv2D();
  resolver.AddAdd();
  resolver.AddMean();
  resolver.AddReshape();
  resolver.AddFullyConnected();
  resolver.AddSoftmax();
  resolver.AddSlice();
  if (tflm_train::AddTrainingOps(resolver) != kTfLiteOk) {
    Serial.println("error: op resolver too small");
    return;
  }
  static tflite::MicroInterpreter static_interpreter(model, resolver, arena, kArenaSize);
  if (static_interpreter.AllocateTensors() != kTfLiteOk) {
    Serial.println("error: arena too small");
    return;
  }
  interpreter = &static_interpreter;
  Serial.print("ready, arena used ");
  Serial.println(interpreter->arena_used_bytes());
}

void loop() {
  if (interpreter == nullptr || Serial.available() == 0) return;
  const int command = Serial.read();
  if (command == 'T') {
    uint8_t label = 0;
    if (ReadExactly(&label, 1)) Step(label);
  } else if (command == 'I') {
    Step(-1);
  } else if (command == 'S') {
    PrintState();
  } else {
    return;
  }
  Serial.print("arena used ");
  Serial.println(interpreter->arena_used_bytes());
}
