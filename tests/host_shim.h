// Lets csrc/*.cu build as plain host C++ (g++ -include tests/host_shim.h) so the tests can run
// the kernels' own code on the CPU, serially: every kernel uses a grid-stride loop and no shared
// memory or barriers, so one "thread" with gridDim = blockDim = 1 covers all the work.
#pragma once
#include <cmath>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct KdDim3 { unsigned x, y, z; };
static const KdDim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
