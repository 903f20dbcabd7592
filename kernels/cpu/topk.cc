#include "kernels/cpu/topk.h"

namespace moe::kernels {

void TopK(const float* scores, int32_t n, int32_t k, int32_t* ids) {
  // Insertion into a sorted list of k: O(n k), fine for router widths (n <= 65536, small k).
  int32_t filled = 0;
  for (int32_t e = 0; e < n; ++e) {
    const float s = scores[e];
    // Strictly greater wins, so an earlier (lower) index keeps its place on ties.
    if (filled == k && !(s > scores[ids[k - 1]])) continue;
    int32_t pos = filled < k ? filled++ : k - 1;
    while (pos > 0 && s > scores[ids[pos - 1]]) {
      ids[pos] = ids[pos - 1];
      --pos;
    }
    ids[pos] = e;
  }
}

}  // namespace moe::kernels
