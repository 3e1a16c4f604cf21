// Driver for tests/test_schema.py: feeds option buffers written by Python to
// the generated C++ readers and prints what they decoded.
//
//   schema_reader_test <OptionsTable>  < records
//
// stdin holds records [uint32 little-endian length][bytes]. Each record is
// copied into a heap block of exactly that length, so AddressSanitizer catches
// any read past the end. stdout gets one line per record: "false", or "true"
// followed by " name=value" per field (floats as their IEEE-754 bits in hex); a
// vector of tables prints " name=<length>", then its elements' fields as
// " name[i].field=value", a table field its fields as " name.field=value".
#include <cstdio>
#include <cstring>
#include <vector>

#include "micro/core/training_ops_generated.h"

namespace {

namespace s = tflm_train::schema;

const char* prefix = "";  // the element whose fields are printed, e.g. "stages[1]."

void Print(const char* name, int32_t value) { std::printf(" %s%s=%ld", prefix, name, static_cast<long>(value)); }
void Print(const char* name, bool value) { Print(name, int32_t{value}); }
void Print(const char* name, s::Rounding value) { Print(name, static_cast<int32_t>(value)); }
void Print(const char* name, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  std::printf(" %s%s=0x%08x", prefix, name, static_cast<unsigned>(bits));
}

#define FIELD(name) Print(#name, options.name)

void PrintFields(const s::TrainInitOptions&) {}

void PrintFields(const s::SoftmaxXentOptions& options) {
  FIELD(logits_scale);
  FIELD(logits_zero_point);
}

void PrintFields(const s::ConvGradOptions& options) {
  FIELD(stride_h);
  FIELD(stride_w);
  FIELD(dilation_h);
  FIELD(dilation_w);
  FIELD(pad_top);
  FIELD(pad_left);
  FIELD(input_height);
  FIELD(input_width);
  FIELD(input_channels);
  FIELD(depth_multiplier);
  FIELD(act_min);
  FIELD(act_max);
}

void PrintFields(const s::MeanGradOptions& options) {
  FIELD(input_height);
  FIELD(input_width);
}

void PrintFields(const s::ConvUpdateOptions& options) {
  FIELD(stride_h);
  FIELD(stride_w);
  FIELD(dilation_h);
  FIELD(dilation_w);
  FIELD(pad_top);
  FIELD(pad_left);
  FIELD(x_zero_point);
  FIELD(x_scale);
  FIELD(act_min);
  FIELD(act_max);
  FIELD(depthwise);
  FIELD(depth_multiplier);
  FIELD(rounding);
  FIELD(weight_param_id);
  FIELD(bias_param_id);
}

void PrintFields(const s::SgdUpdateOptions& options) {
  FIELD(rounding);
  FIELD(param_id);
  FIELD(channel_axis);
}

void PrintFields(const s::SplitConvOptions& options) {
  FIELD(stride_h);
  FIELD(stride_w);
  FIELD(dilation_h);
  FIELD(dilation_w);
  FIELD(pad_top);
  FIELD(pad_left);
  FIELD(x_zero_point);
  FIELD(y_zero_point);
  FIELD(act_min);
  FIELD(act_max);
}

void PrintFields(const s::DepthwiseConvOptions& options) {
  FIELD(stride_h);
  FIELD(stride_w);
  FIELD(dilation_h);
  FIELD(dilation_w);
  FIELD(pad_top);
  FIELD(pad_left);
  FIELD(x_zero_point);
  FIELD(y_zero_point);
  FIELD(act_min);
  FIELD(act_max);
  FIELD(depth_multiplier);
}

void PrintFields(const s::ActivationMaskOptions& options) {
  FIELD(act_min);
  FIELD(act_max);
}

void PrintFields(const s::ConvChainStage& options) {
  FIELD(depthwise);
  FIELD(stride_h);
  FIELD(stride_w);
  FIELD(dilation_h);
  FIELD(dilation_w);
  FIELD(pad_top);
  FIELD(pad_left);
  FIELD(x_zero_point);
  FIELD(y_zero_point);
  FIELD(act_min);
  FIELD(act_max);
  FIELD(depth_multiplier);
  FIELD(output_height);
  FIELD(output_width);
  FIELD(output_channels);
}

// A table field prints its fields as " name.field=value".
template <typename Table>
void PrintTable(const char* name, const Table& table) {
  char element[32];
  std::snprintf(element, sizeof(element), "%s.", name);
  prefix = element;
  PrintFields(table);
  prefix = "";
}

void PrintFields(const s::DepthwisePointwiseGradOptions& options) {
  PrintTable("depthwise", options.depthwise);
  PrintTable("pointwise", options.pointwise);
  PrintTable("projection", options.projection);
  PrintTable("depthwise_update", options.depthwise_update);
}

// Tables of scalars print from the struct alone.
template <typename Options>
void PrintRecord(const Options& options, const uint8_t*, size_t) {
  PrintFields(options);
}

void PrintRecord(const s::ConvChainOptions& options, const uint8_t* buf, size_t size) {
  Print("stages", static_cast<int32_t>(options.stages_count));
  for (uint32_t i = 0; i < options.stages_count; ++i) {
    s::ConvChainStage stage;
    if (!s::ReadConvChainOptionsStages(buf, size, i, &stage)) {
      std::printf(" stages[%u]=unreadable", static_cast<unsigned>(i));
      continue;
    }
    char element[32];
    std::snprintf(element, sizeof(element), "stages[%u].", static_cast<unsigned>(i));
    prefix = element;
    PrintFields(stage);
    prefix = "";
  }
}

template <typename Options>
int ReadAll(bool (*read)(const uint8_t*, size_t, Options*)) {
  uint8_t header[4];
  while (std::fread(header, 1, sizeof(header), stdin) == sizeof(header)) {
    const size_t size = header[0] | header[1] << 8 | header[2] << 16 | static_cast<size_t>(header[3]) << 24;
    std::vector<uint8_t> record(size);
    if (std::fread(record.data(), 1, size, stdin) != size) {
      std::fprintf(stderr, "truncated record stream\n");
      return 2;
    }
    Options options;
    if (!read(record.data(), size, &options)) {
      std::puts("false");
      continue;
    }
    std::printf("true");
    PrintRecord(options, record.data(), size);
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* table = argc == 2 ? argv[1] : "";
  if (!std::strcmp(table, "TrainInitOptions")) return ReadAll(s::ReadTrainInitOptions);
  if (!std::strcmp(table, "SoftmaxXentOptions")) return ReadAll(s::ReadSoftmaxXentOptions);
  if (!std::strcmp(table, "ConvGradOptions")) return ReadAll(s::ReadConvGradOptions);
  if (!std::strcmp(table, "MeanGradOptions")) return ReadAll(s::ReadMeanGradOptions);
  if (!std::strcmp(table, "ConvUpdateOptions")) return ReadAll(s::ReadConvUpdateOptions);
  if (!std::strcmp(table, "SgdUpdateOptions")) return ReadAll(s::ReadSgdUpdateOptions);
  if (!std::strcmp(table, "SplitConvOptions")) return ReadAll(s::ReadSplitConvOptions);
  if (!std::strcmp(table, "DepthwiseConvOptions")) return ReadAll(s::ReadDepthwiseConvOptions);
  if (!std::strcmp(table, "ActivationMaskOptions")) return ReadAll(s::ReadActivationMaskOptions);
  if (!std::strcmp(table, "ConvChainOptions")) return ReadAll(s::ReadConvChainOptions);
  if (!std::strcmp(table, "DepthwisePointwiseGradOptions")) {
    return ReadAll(s::ReadDepthwisePointwiseGradOptions);
  }
  std::fprintf(stderr, "usage: %s <OptionsTable> < records\n", argv[0]);
  return 2;
}
