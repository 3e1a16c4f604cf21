// A dependency-free check of micro/core for builds without Python (Bazel's
// //:core_selftest): properties of the contract that hold whatever the data.
// The bit-exact comparison with the numpy reference is tests/test_micro_core.py.
#include <cstdint>
#include <cstdio>
#include <limits>

#include "core/mean_grad.h"
#include "core/sgd_update.h"
#include "core/softmax_xent.h"
#include "core/train_init.h"

namespace {

int failures = 0;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what);
    ++failures;
  }
}

}  // namespace

int main() {
  using namespace tflm_train::core;
  Check(ExpRef(0.0f) == 1.0f, "exp_ref(0) == 1");
  Check(ExpRef(-100.0f) == 0.0f, "exp_ref below -87 is 0");
  Check(NextStep(INT32_MAX) == INT32_MIN, "the step counter wraps like int32");

  const int8_t logits[3] = {10, -5, 3};
  float loss = -1.0f, dlogits[3];
  SoftmaxXent(logits, 3, 0.1f, 0, 1, &loss, dlogits);
  Check(loss > 0.0f, "cross-entropy is positive");
  Check(dlogits[1] < 0.0f && dlogits[0] > 0.0f && dlogits[2] > 0.0f, "only the label's gradient is negative");

  const float dy[2] = {4.0f, -8.0f};
  float dx[2 * 2 * 2];
  MeanGrad(dy, 2, 2, 2, dx);
  Check(dx[0] == 1.0f && dx[7] == -2.0f, "mean gradient spreads dy over H*W");

  const int8_t src[2 * 3] = {1, 2, 3, 4, 5, 6};
  int8_t dst[2 * 2] = {};
  CopyLeadingChannels(src, dst, 2, 3, 2, 1);
  Check(dst[0] == 1 && dst[1] == 2 && dst[2] == 4 && dst[3] == 5, "leading channels copied per row");

  Check(ApplyStep(int8_t{120}, -255.0f) == 127, "int8 update saturates at 127");
  Check(ApplyStep(int32_t{5}, std::numeric_limits<float>::quiet_NaN()) == 5, "NaN step leaves the parameter unchanged");

  std::printf(failures == 0 ? "core_selftest: PASS\n" : "core_selftest: FAIL\n");
  return failures == 0 ? 0 : 1;
}
