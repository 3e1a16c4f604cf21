// Host-ABI description (see micro/host_abi/README.md): TFLM's log sink, which
// the wheel exports (C++ linkage) and sends to stderr, one line per call.
#ifndef TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_MICRO_MICRO_LOG_H_
#define TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_MICRO_MICRO_LOG_H_

#include <cstdarg>
#include <cstddef>

void MicroPrintf(const char* format, ...);
void VMicroPrintf(const char* format, va_list args);

#endif  // TFLM_TRAIN_HOST_ABI_TENSORFLOW_LITE_MICRO_MICRO_LOG_H_
