#include "semihosting.h"

namespace semihosting {
namespace {

constexpr uint32_t kSysOpen = 0x01;
constexpr uint32_t kSysWrite0 = 0x04;
constexpr uint32_t kSysRead = 0x06;
constexpr uint32_t kOpenReadBinary = 1;  // fopen mode "rb"
constexpr uint32_t kSysExit = 0x18;
// SYS_EXIT reasons; QEMU exits with status 0 only for ApplicationExit.
constexpr uint32_t kApplicationExit = 0x20026;
constexpr uint32_t kRunTimeErrorUnknown = 0x20023;

uint32_t Call(uint32_t operation, const void* argument) {
  register uint32_t r0 asm("r0") = operation;
  register const void* r1 asm("r1") = argument;
  asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

}  // namespace

void Write(const char* text) { Call(kSysWrite0, text); }

int OpenForReading(const char* path) {
  const uint32_t block[3] = {reinterpret_cast<uint32_t>(path), kOpenReadBinary,
                             static_cast<uint32_t>(__builtin_strlen(path))};
  return static_cast<int>(Call(kSysOpen, block));
}

bool Read(int handle, void* data, uint32_t size) {
  const uint32_t block[3] = {static_cast<uint32_t>(handle),
                             reinterpret_cast<uint32_t>(data), size};
  return Call(kSysRead, block) == 0;  // the number of bytes NOT read
}

void WriteUnsigned(uint32_t value) {
  char digits[11];
  char* p = digits + sizeof(digits) - 1;
  *p = '\0';
  do {
    *--p = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  Write(p);
}

void WriteHex(uint32_t value) {
  char digits[11] = "0x";
  for (int i = 0; i < 8; ++i) {
    digits[2 + i] = "0123456789abcdef"[(value >> (28 - 4 * i)) & 0xF];
  }
  digits[10] = '\0';
  Write(digits);
}

void Exit(bool ok) {
  // On 32-bit targets the reason is passed directly, not in a parameter block.
  Call(kSysExit, reinterpret_cast<const void*>(ok ? kApplicationExit : kRunTimeErrorUnknown));
  for (;;) {
  }
}

}  // namespace semihosting
