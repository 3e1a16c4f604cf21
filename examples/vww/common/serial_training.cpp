#include "serial_training.h"

#include <cstring>

#include "tensorflow/lite/micro/memory_helpers.h"
#include "tensorflow/lite/micro/micro_utils.h"

namespace vww {
namespace {

// The converter appends the label and learning-rate inputs after the image
// and the loss output after the model's own outputs.
constexpr int kImageInput = 0;
constexpr int kScoresOutput = 0;

// Text replies without printf: float formatting in printf is optional on
// embedded C libraries (newlib-nano, Mbed's minimal-printf).
class Line {
 public:
  explicit Line(Port& port) : port_(port) {}

  Line& Text(const char* text) {
    while (*text != '\0') Put(*text++);
    return *this;
  }
  Line& Unsigned(uint32_t value) {
    char digits[10];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value != 0);
    while (n > 0) Put(digits[--n]);
    return *this;
  }
  Line& Int(int32_t value) {
    if (value < 0) Put('-');
    return Unsigned(value < 0 ? 0u - static_cast<uint32_t>(value)
                              : static_cast<uint32_t>(value));
  }
  // Six decimals; magnitudes of 2^32 and more print as "inf".
  Line& Float(float value) {
    if (value != value) return Text("nan");
    if (value < 0.0f) {
      Put('-');
      value = -value;
    }
    if (!(value < 4294967296.0f)) return Text("inf");
    uint32_t whole = static_cast<uint32_t>(value);
    uint32_t micros =
        static_cast<uint32_t>((value - static_cast<float>(whole)) * 1e6f + 0.5f);
    if (micros >= 1000000u) {
      ++whole;
      micros -= 1000000u;
    }
    Unsigned(whole).Put('.');
    for (uint32_t scale = 100000u; scale > 0; scale /= 10) {
      Put(static_cast<char>('0' + micros / scale % 10));
    }
    return *this;
  }
  Line& Hex(uint8_t byte) {
    static constexpr char kDigits[] = "0123456789abcdef";
    Put(kDigits[byte >> 4]);
    Put(kDigits[byte & 0xF]);
    return *this;
  }
  void End() {
    Put('\n');
    Flush();
  }

 private:
  Line& Put(char c) {
    if (size_ == sizeof(buffer_) - 1) Flush();
    buffer_[size_++] = c;
    return *this;
  }
  void Flush() {
    buffer_[size_] = '\0';
    port_.Write(buffer_);
    size_ = 0;
  }

  Port& port_;
  char buffer_[80];
  size_t size_ = 0;
};

void Error(Port& port, const char* what) { Line(port).Text("error: ").Text(what).End(); }

bool IsVector(const TfLiteTensor* tensor, TfLiteType type) {
  return tensor != nullptr && tensor->type == type && tensor->dims->size == 1 &&
         tensor->dims->data[0] == 1;
}

}  // namespace

TfLiteStatus AddVwwOps(VwwOpResolver& resolver) {
  const TfLiteStatus builtins[] = {
      resolver.AddQuantize(),       resolver.AddConv2D(),
      resolver.AddDepthwiseConv2D(), resolver.AddAveragePool2D(),
      resolver.AddReshape(),        resolver.AddFullyConnected(),
      resolver.AddSoftmax(),        resolver.AddDequantize(),
  };
  static_assert(sizeof(builtins) / sizeof(builtins[0]) == kVwwBuiltinOps,
                "kVwwBuiltinOps counts the builtins added here");
  for (TfLiteStatus status : builtins) {
    if (status != kTfLiteOk) return status;
  }
  return tflm_train::AddTrainingOps(resolver);
}

SerialTrainer::SerialTrainer(const void* model_data,
                             const tflite::MicroOpResolver& resolver,
                             uint8_t* arena, size_t arena_size,
                             float learning_rate)
    : model_(tflite::GetModel(model_data)),
      interpreter_(model_, resolver, arena, arena_size),
      learning_rate_(learning_rate) {}

bool SerialTrainer::Begin(Port& port) {
  if (interpreter_.AllocateTensors() != kTfLiteOk) {
    Error(port, "AllocateTensors failed (arena too small or an op missing from the resolver)");
    return false;
  }
  const size_t inputs = interpreter_.inputs_size();
  const size_t outputs = interpreter_.outputs_size();
  const TfLiteTensor* image = interpreter_.input(kImageInput);
  if (inputs < 3 || outputs < 2 ||
      !IsVector(interpreter_.input(inputs - 2), kTfLiteInt32) ||
      !IsVector(interpreter_.input(inputs - 1), kTfLiteFloat32) ||
      !IsVector(interpreter_.output(outputs - 1), kTfLiteFloat32)) {
    Error(port, "not a training model (tflm-train convert adds label, learning rate and loss)");
    return false;
  }
  if (image->type != kTfLiteInt8 && image->type != kTfLiteFloat32) {
    Error(port, "the image input must be int8 or float32");
    return false;
  }
  Line(port).Text("ready").End();
  PrintArenaUse(port);
  return true;
}

bool SerialTrainer::Serve(Port& port) {
  uint8_t command = 0;
  if (!port.Read(&command, 1)) return false;
  switch (command) {
    case 'T': {
      uint8_t label = 0;
      if (!port.Read(&label, 1)) return false;
      Run(port, label);
      break;
    }
    case 'I':
      Run(port, -1);
      break;
    case 'L': {
      uint8_t bytes[sizeof(float)];
      if (!port.Read(bytes, sizeof(bytes))) return false;
      std::memcpy(&learning_rate_, bytes, sizeof(bytes));  // both little-endian
      Line(port).Text("learning_rate ").Float(learning_rate_).End();
      break;
    }
    case 'S':
      PrintState(port);
      break;
    default:
      return true;
  }
  PrintArenaUse(port);
  return true;
}

bool SerialTrainer::ReadImage(Port& port) {
  TfLiteTensor* image = interpreter_.input(kImageInput);
  const size_t count = static_cast<size_t>(tflite::ElementCount(*image->dims));
  uint8_t pixels[64];
  for (size_t done = 0; done < count;) {
    const size_t chunk = count - done < sizeof(pixels) ? count - done : sizeof(pixels);
    if (!port.Read(pixels, chunk)) return false;
    for (size_t i = 0; i < chunk; ++i, ++done) {
      if (image->type == kTfLiteInt8) {
        image->data.int8[done] = static_cast<int8_t>(pixels[i] - 128);
      } else {
        image->data.f[done] = pixels[i];
      }
    }
  }
  return true;
}

void SerialTrainer::Run(Port& port, int32_t label) {
  if (!ReadImage(port)) {
    Error(port, "short image");
    return;
  }
  const size_t inputs = interpreter_.inputs_size();
  interpreter_.input(inputs - 2)->data.i32[0] = label;  // < 0: inference only
  interpreter_.input(inputs - 1)->data.f[0] = learning_rate_;
  if (interpreter_.Invoke() != kTfLiteOk) {
    Error(port, "Invoke failed");
    return;
  }
  if (label >= 0) {
    const TfLiteTensor* loss = interpreter_.output(interpreter_.outputs_size() - 1);
    Line(port).Text("loss ").Float(loss->data.f[0]).End();
    return;
  }
  const TfLiteTensor* scores = interpreter_.output(kScoresOutput);
  Line line(port);
  line.Text("scores");
  for (int i = 0; i < tflite::ElementCount(*scores->dims); ++i) {
    line.Text(" ");
    if (scores->type == kTfLiteFloat32) {
      line.Float(scores->data.f[i]);
    } else if (scores->type == kTfLiteInt8) {
      line.Int(scores->data.int8[i]);
    } else {
      line.Text("?");
    }
  }
  line.End();
}

// Variables live in the arena, where the interpreter's context finds them
// for kernels, outside Invoke too. Before the first training step they are
// zero: TFLT_TRAIN_INIT seeds them then.
void SerialTrainer::PrintState(Port& port) {
  const auto* tensors = model_->subgraphs()->Get(0)->tensors();
  const TfLiteContext& context = interpreter_.context();
  for (uint32_t i = 0; i < tensors->size(); ++i) {
    const tflite::Tensor* tensor = tensors->Get(i);
    if (!tensor->is_variable()) continue;
    const TfLiteEvalTensor* eval = context.GetEvalTensor(&context, static_cast<int>(i));
    size_t bytes = 0;
    if (eval == nullptr || tflite::TfLiteEvalTensorByteLength(eval, &bytes) != kTfLiteOk) {
      Error(port, "variable tensor unreadable");
      return;
    }
    Line line(port);
    line.Text("var ").Unsigned(i).Text(" ");
    line.Text(tensor->name() != nullptr ? tensor->name()->c_str() : "?");
    line.Text(" ");
    const uint8_t* data = static_cast<const uint8_t*>(eval->data.data);
    for (size_t b = 0; b < bytes; ++b) line.Hex(data[b]);
    line.End();
  }
}

void SerialTrainer::PrintArenaUse(Port& port) {
  Line(port).Text("arena_used_bytes ").Unsigned(interpreter_.arena_used_bytes()).End();
}

}  // namespace vww
