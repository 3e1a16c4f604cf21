// Mbed OS example: one training step per labelled image received on stdio
// (the USB serial console), with the model converted by tflm-train. Same
// protocol and model header as examples/vww/arduino/vww_train/vww_train.ino:
//   'T' <label byte> <96*96 int8 image>  training step -> "loss <value>"
//   'I' <96*96 int8 image>               inference     -> "scores ..."
// Floats in printf need "target.printf_lib": "std" in mbed_app.json.
#include <cstdio>

#include "mbed.h"
#include "model_data.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tflm_train.h"

namespace {

constexpr int kImageBytes = 96 * 96;
constexpr size_t kArenaSize = 200 * 1024;
constexpr float kLearningRate = 0.05f;
constexpr int kImageInput = 0, kLabelInput = 1, kLearningRateInput = 2;
constexpr int kScoresOutput = 0, kLossOutput = 1;
constexpr int kBuiltinOps = 8;   // the model's builtins (`tflm-train inspect`)
constexpr int kTrainingOps = 10;  // the TFLT_* ops AddTrainingOps registers

alignas(16) uint8_t arena[kArenaSize];

bool ReadImage(int8_t* image) {
  for (int i = 0; i < kImageBytes; ++i) {
    const int c = getchar();
    if (c == EOF) return false;
    image[i] = static_cast<int8_t>(c);
  }
  return true;
}

}  // namespace

int main() {
  static tflite::MicroMutableOpResolver<kBuiltinOps + kTrainingOps> resolver;
  resolver.AddConv2D();
  resolver.AddDepthwiseConv2D();
  resolver.AddAdd();
  resolver.AddMean();
  resolver.AddReshape();
  resolver.AddFullyConnected();
  resolver.AddSoftmax();
  resolver.AddSlice();
  if (tflm_train::AddTrainingOps(resolver) != kTfLiteOk) {
    printf("error: op resolver too small\n");
    return 1;
  }
  static tflite::MicroInterpreter interpreter(tflite::GetModel(g_model_data), resolver, arena, kArenaSize);
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    printf("error: arena too small\n");
    return 1;
  }
  printf("ready, arena used %u\n", static_cast<unsigned>(interpreter.arena_used_bytes()));
  for (;;) {
    const int command = getchar();
    int32_t label = -1;
    if (command == 'T') {
      label = getchar();
    } else if (command != 'I') {
      continue;
    }
    if (!ReadImage(interpreter.input(kImageInput)->data.int8)) continue;
    interpreter.input(kLabelInput)->data.i32[0] = label;
    interpreter.input(kLearningRateInput)->data.f[0] = kLearningRate;
    if (interpreter.Invoke() != kTfLiteOk) {
      printf("error: invoke failed\n");
      continue;
    }
    if (label >= 0) {
      printf("loss %f\n", interpreter.output(kLossOutput)->data.f[0]);
    } else {
      const TfLiteTensor* scores = interpreter.output(kScoresOutput);
      printf("scores");
      for (size_t i = 0; i < scores->bytes; ++i) printf(" %d", scores->data.int8[i]);
      printf("\n");
    }
    printf("arena used %u\n", static_cast<unsigned>(interpreter.arena_used_bytes()));
  }
}
