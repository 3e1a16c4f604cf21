// ARM semihosting (the debugger/emulator call interface, `bkpt 0xab` on
// M-profile): the test firmware's only output and its exit status.
#ifndef TFLM_TRAIN_MICRO_TESTS_FIRMWARE_SEMIHOSTING_H_
#define TFLM_TRAIN_MICRO_TESTS_FIRMWARE_SEMIHOSTING_H_

#include <cstdint>

namespace semihosting {

// Writes a NUL-terminated string to the host's console (SYS_WRITE0).
void Write(const char* text);
// Opens a host file for binary reading (SYS_OPEN, relative to the emulator's
// working directory); -1 if it cannot.
int OpenForReading(const char* path);
// Reads exactly `size` bytes (SYS_READ); false at the end of the file.
bool Read(int handle, void* data, uint32_t size);
void WriteUnsigned(uint32_t value);
void WriteHex(uint32_t value);
// Ends the emulation (SYS_EXIT): status 0 when `ok`, 1 otherwise.
[[noreturn]] void Exit(bool ok);

}  // namespace semihosting

#endif  // TFLM_TRAIN_MICRO_TESTS_FIRMWARE_SEMIHOSTING_H_
