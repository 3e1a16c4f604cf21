// What the emulator firmware's C++ runtime and TFLM expect of the platform.
#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <cstdio>

#include "semihosting.h"

extern "C" {

// TFLM's hooks (tensorflow/lite/micro/debug_log.h): MicroPrintf goes to the
// semihosting console.
int DebugVsnprintf(char* buffer, size_t buf_size, const char* format, va_list vlist) {
  return vsnprintf(buffer, buf_size, format, vlist);
}

void DebugLog(const char* format, va_list args) {
  char line[256];
  vsnprintf(line, sizeof(line), format, args);
  semihosting::Write(line);
}

// Static objects register their destructors against the image's handle,
// which crtbegin.o would define; the firmware links without start files and
// exits through semihosting without running them.
void* __dso_handle = nullptr;

// No heap (firmware.ld has none): newlib's printf family links malloc in for
// stream buffers it never needs when formatting into a string, and malloc
// must fail rather than grow into the stack.
void* _sbrk(ptrdiff_t) {
  errno = ENOMEM;
  return reinterpret_cast<void*>(-1);
}

}  // extern "C"
