// TFLT_SGD_UPDATE: applies a materialised gradient to an int8 weight or int32
// bias variable (conventional schedule).
#include "core/sgd_update.h"
#include "core/training_ops_generated.h"
#include "kernels/kernel_util.h"
#include "kernels/ops.h"

namespace tflm_train {
namespace {

constexpr char kName[] = "TFLT_SGD_UPDATE";
enum Input { kLabel, kLr, kState, kGrad, kParam, kQas, kFraction, kNumInputs };

struct OpData {
  schema::SgdUpdateOptions options;
  core::ChannelAxis axis;
  int elements;
  bool int8_param;  // else int32
  bool has_fraction;
};

void* Init(KernelContext& ctx, const uint8_t* buffer, size_t size) {
  return kernels::InitWithOptions<OpData>(ctx, kName,
                                          schema::ReadSgdUpdateOptions, buffer,
                                          size);
}

bool Validate(KernelContext& ctx, OpData& data) {
  kernels::Checker check(ctx, kName);
  TensorView label, grad, param, qas;
  if (!check.Counts(kQas + 1, kNumInputs, 0) || !check.Label(kLabel, &label) ||
      !check.TrainingStep(kLr, kState) || !check.Required(kGrad, "grad", &grad) ||
      !check.Type(grad, "grad", DType::kFloat32) ||
      !check.Required(kParam, "param", &param) ||
      !check.Required(kQas, "qas", &qas) ||
      !check.Type(qas, "qas", DType::kFloat32)) {
    return false;
  }
  if (param.type != DType::kInt8 && param.type != DType::kInt32) {
    return check.Fail("param must be int8 or int32");
  }
  if (grad.NumElements() != param.NumElements() || param.NumElements() < 1) {
    return check.Fail("grad must have as many elements as param");
  }
  int axis = data.options.channel_axis;
  if (axis < 0) axis += param.rank;
  if (axis < 0 || axis >= param.rank) {
    return check.Fail("channel_axis is outside param's rank");
  }
  data.axis.channels = param.dims[axis];
  data.axis.inner = 1;
  for (int i = axis + 1; i < param.rank; ++i) data.axis.inner *= param.dims[i];
  if (qas.rank != 1 || qas.dims[0] < data.axis.channels) {
    return check.Fail("qas must be [O] with O >= param's channels");
  }
  data.elements = static_cast<int>(param.NumElements());
  data.int8_param = param.type == DType::kInt8;
  return check.Fraction(kFraction, param, true, &data.has_fraction);
}

Status Eval(KernelContext& ctx, void* op_data) {
  const OpData& data = *static_cast<const OpData*>(op_data);
  kernels::EvalTensors tensors(ctx, kName);
  const int32_t* label = tensors.In<const int32_t>(kLabel);
  const float* lr = tensors.In<const float>(kLr);
  const int32_t* state = tensors.In<const int32_t>(kState);
  const float* grad = tensors.In<const float>(kGrad);
  void* param = tensors.In<void>(kParam);
  const float* qas = tensors.In<const float>(kQas);
  int8_t* fraction = tensors.In<int8_t>(kFraction, data.has_fraction);
  if (!tensors.ok()) return Status::kError;
  if (label[0] < 0) return Status::kOk;
  const core::UpdateRule rule(lr[0], data.options.rounding,
                              data.options.param_id, state[1]);
  if (data.has_fraction) {
    core::SgdUpdate(rule, data.axis, grad, qas, data.elements,
                    static_cast<int8_t*>(param), fraction);
  } else if (data.int8_param) {
    core::SgdUpdate(rule, data.axis, grad, qas, data.elements,
                    static_cast<int8_t*>(param));
  } else {
    core::SgdUpdate(rule, data.axis, grad, qas, data.elements,
                    static_cast<int32_t*>(param));
  }
  return Status::kOk;
}

}  // namespace

const KernelOps& SgdUpdateOp() {
  static constexpr KernelOps ops{kName, Init, kernels::PrepareWith<OpData, Validate>,
                                 Eval};
  return ops;
}

}  // namespace tflm_train
