// Host-ABI description (see micro/host_abi/README.md): the op resolver that a
// registerer fills in. TFLM defines AddCustom inline, so the wheel has no
// symbol for it: the description has to write into the resolver's storage
// itself, which means reproducing the layout up to the registration count.
// The wheel's own (virtual) FindOp is what later reads that storage, so a
// layout mistake shows up as a failed lookup in the registerer's self-check.
#ifndef TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_MICRO_MICRO_MUTABLE_OP_RESOLVER_H_
#define TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_MICRO_MICRO_MUTABLE_OP_RESOLVER_H_

#include <cstdint>

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_common.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace tflite {

// Operator codes of the .tflite schema; only those the host code names.
enum BuiltinOperator : int32_t {
  BuiltinOperator_CONV_2D = 3,
  BuiltinOperator_CUSTOM = 32,
};

// Virtual slots in the wheel's declaration order (Itanium ABI keeps it).
class MicroOpResolver {
 public:
  virtual const TFLMRegistration* FindOp(BuiltinOperator op) const = 0;
  virtual const TFLMRegistration* FindOp(const char* op) const = 0;
  // Returns a parser function pointer in the wheel; never called here.
  virtual const void* GetOpDataParser(BuiltinOperator op) const = 0;
  virtual ~MicroOpResolver() {}
};

template <unsigned int tOpCount>
class MicroMutableOpResolver : public MicroOpResolver {
 public:
  // Same contract as TFLM's: the resolver keeps a copy of `registration` and
  // the `name` pointer, and refuses duplicates and overflow.
  TfLiteStatus AddCustom(const char* name,
                         const TFLMRegistration* registration) {
    if (registrations_len_ >= tOpCount) {
      MicroPrintf("Op resolver full (%u ops): cannot add custom op '%s'",
                  tOpCount, name);
      return kTfLiteError;
    }
    if (FindOp(name) != nullptr) {
      MicroPrintf("Custom op '%s' is already registered", name);
      return kTfLiteError;
    }
    TFLMRegistration& slot = registrations_[registrations_len_];
    slot = *registration;
    slot.builtin_code = BuiltinOperator_CUSTOM;
    slot.custom_name = name;
    ++registrations_len_;
    return kTfLiteOk;
  }

  unsigned int GetRegistrationLength() { return registrations_len_; }

 private:
  // Objects of this type are only ever created by the wheel.
  MicroMutableOpResolver() = delete;

  TFLMRegistration registrations_[tOpCount];
  unsigned int registrations_len_;
  // The builtin parser tables that follow in the wheel are not described.
};

}  // namespace tflite

#endif  // TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_MICRO_MICRO_MUTABLE_OP_RESOLVER_H_
