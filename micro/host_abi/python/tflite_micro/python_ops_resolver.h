// Host-ABI description (see micro/host_abi/README.md): the resolver the wheel
// hands to each custom-op registerer. It adds nothing to the layout of its
// base; the registerer only ever receives a pointer to it.
#ifndef TFLM_TRAIN_HOST_ABI_PYTHON_TFLITE_MICRO_PYTHON_OPS_RESOLVER_H_
#define TFLM_TRAIN_HOST_ABI_PYTHON_TFLITE_MICRO_PYTHON_OPS_RESOLVER_H_

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

namespace tflite {

class PythonOpsResolver : public MicroMutableOpResolver<200> {};

}  // namespace tflite

#endif  // TFLM_TRAIN_HOST_ABI_PYTHON_TFLITE_MICRO_PYTHON_OPS_RESOLVER_H_
