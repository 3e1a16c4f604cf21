// The QAS SGD update rule on quantized parameters (docs/training_ops.md,
// "Parameter updates").
#ifndef TFLM_TRAIN_MICRO_CORE_SGD_UPDATE_H_
#define TFLM_TRAIN_MICRO_CORE_SGD_UPDATE_H_

#include <cstdint>

#include "core/training_ops_generated.h"

namespace tflm_train {
namespace core {

using Rounding = schema::Rounding;  // kNearest, kStochastic

// Counter-based integer hash (the "lowbias32" mixer).
uint32_t Hash32(uint32_t x);

// Rounds one gradient element to an integer parameter step.
class UpdateRule {
 public:
  UpdateRule(float lr, Rounding rounding, int32_t param_id, int32_t step);

  // floor((g * qas) * lr * unit + 0.5) or floor(... + u(element)); NaN
  // means "leave the element unchanged". `element` is the flat index within
  // the parameter; `unit` (a power of two, so exact) counts the step in
  // 1/unit LSB.
  float RoundedStep(float g, float qas, int32_t element,
                    float unit = 1.0f) const;

 private:
  float lr_;
  Rounding rounding_;
  uint32_t seed_;  // hash32(hash32(param_id) ^ step)
};

// new = clamp(old - clamp(r, -255, 255), -127, 127); NaN r: old.
int8_t ApplyStep(int8_t old, float r);
// new = clamp(old - clamp(r, -2^32, 2^32), INT32_MIN, INT32_MAX); NaN r: old.
int32_t ApplyStep(int32_t old, float r);

// Fractional weights: the int8 weight is the nearest rounding of a master
// value 256 * weight + fraction, so steps below one LSB accumulate instead of
// being rounded away. r counts 1/256 LSB (RoundedStep with kFractionUnit).
constexpr float kFractionUnit = 256.0f;
void ApplyFractionalStep(int8_t* weight, int8_t* fraction, float r);

// Which output channel an element of a parameter belongs to: its index
// along `channel_axis` of the parameter's shape.
struct ChannelAxis {
  int channels = 1;  // size of the channel axis
  int inner = 1;     // product of the dims after it

  int Of(int element) const { return (element / inner) % channels; }
};

// The conventional schedule's update: param[e] -= step(grad[e], qas[channel]).
void SgdUpdate(const UpdateRule& rule, const ChannelAxis& axis,
               const float* grad, const float* qas, int elements,
               int8_t* param);
void SgdUpdate(const UpdateRule& rule, const ChannelAxis& axis,
               const float* grad, const float* qas, int elements,
               int32_t* param);
// The same for a weight with fractional bits.
void SgdUpdate(const UpdateRule& rule, const ChannelAxis& axis,
               const float* grad, const float* qas, int elements,
               int8_t* param, int8_t* fraction);

}  // namespace core
}  // namespace tflm_train

#endif  // TFLM_TRAIN_MICRO_CORE_SGD_UPDATE_H_
