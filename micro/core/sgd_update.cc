#include "core/sgd_update.h"

#include <cmath>

namespace tflm_train {
namespace core {
namespace {

constexpr float kTwoToMinus24 = 5.96046448e-08f;
constexpr float kMaxInt8Step = 255.0f;
constexpr float kMaxInt32Step = 4294967296.0f;  // 2^32

float Clamp(float v, float limit) {
  return v < -limit ? -limit : (v > limit ? limit : v);
}

int64_t Clamp(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

template <typename T>
void SgdUpdateImpl(const UpdateRule& rule, const ChannelAxis& axis,
                   const float* grad, const float* qas, int elements,
                   T* param) {
  for (int e = 0; e < elements; ++e) {
    param[e] = ApplyStep(param[e], rule.RoundedStep(grad[e], qas[axis.Of(e)], e));
  }
}

}  // namespace

uint32_t Hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

UpdateRule::UpdateRule(float lr, Rounding rounding, int32_t param_id,
                       int32_t step)
    : lr_(lr),
      rounding_(rounding),
      seed_(Hash32(Hash32(static_cast<uint32_t>(param_id)) ^
                   static_cast<uint32_t>(step))) {}

float UpdateRule::RoundedStep(float g, float qas, int32_t element,
                              float unit) const {
  const float step = ((g * qas) * lr_) * unit;
  if (rounding_ == Rounding::kNearest) return floorf(step + 0.5f);
  const uint32_t h = Hash32(seed_ ^ static_cast<uint32_t>(element));
  const float u = static_cast<float>(h >> 8) * kTwoToMinus24;
  return floorf(step + u);
}

int8_t ApplyStep(int8_t old, float r) {
  if (std::isnan(r)) return old;
  const int32_t updated = static_cast<int32_t>(old) -
                          static_cast<int32_t>(Clamp(r, kMaxInt8Step));
  return static_cast<int8_t>(Clamp(updated, -127, 127));
}

int32_t ApplyStep(int32_t old, float r) {
  if (std::isnan(r)) return old;
  // r is integral and |r| <= 2^32. Converting it to int64 directly pulls in
  // libgcc's double-precision helpers on single-precision FPUs, so split it
  // into two exact int32 parts: r = high * 2^16 + low.
  const float clamped = Clamp(r, kMaxInt32Step);
  const float high = std::floor(clamped * (1.0f / 65536.0f));
  const float low = clamped - high * 65536.0f;
  const int64_t step = static_cast<int64_t>(static_cast<int32_t>(high)) * 65536 +
                       static_cast<int32_t>(low);
  return static_cast<int32_t>(Clamp(static_cast<int64_t>(old) - step, INT32_MIN, INT32_MAX));
}

void ApplyFractionalStep(int8_t* weight, int8_t* fraction, float r) {
  if (std::isnan(r)) return;
  constexpr int32_t kUnit = static_cast<int32_t>(kFractionUnit);
  constexpr int64_t kMasterLimit = 127 * kUnit;
  const int32_t step =
      static_cast<int32_t>(Clamp(r, kMaxInt8Step * kFractionUnit));
  const int32_t master = static_cast<int32_t>(
      Clamp(static_cast<int64_t>(*weight) * kUnit + *fraction - step,
            -kMasterLimit, kMasterLimit));
  // floor((master + 128) / 256) as a division of a positive number:
  // 127 * 256 + 256 = 128 * 256 keeps the dividend above zero.
  const int32_t rounded =
      (master + kUnit / 2 + kMasterLimit + kUnit) / kUnit - 128;
  *weight = static_cast<int8_t>(rounded);
  *fraction = static_cast<int8_t>(master - rounded * kUnit);
}

void SgdUpdate(const UpdateRule& rule, const ChannelAxis& axis,
               const float* grad, const float* qas, int elements,
               int8_t* param, int8_t* fraction) {
  for (int e = 0; e < elements; ++e) {
    ApplyFractionalStep(
        &param[e], &fraction[e],
        rule.RoundedStep(grad[e], qas[axis.Of(e)], e, kFractionUnit));
  }
}

void SgdUpdate(const UpdateRule& rule, const ChannelAxis& axis,
               const float* grad, const float* qas, int elements,
               int8_t* param) {
  SgdUpdateImpl(rule, axis, grad, qas, elements, param);
}

void SgdUpdate(const UpdateRule& rule, const ChannelAxis& axis,
               const float* grad, const float* qas, int elements,
               int32_t* param) {
  SgdUpdateImpl(rule, axis, grad, qas, elements, param);
}

}  // namespace core
}  // namespace tflm_train
