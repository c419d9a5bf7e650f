// The program's one CUDA translation unit: the GPU entry points that pipeline stages on
// backend::cuda call (forge/backend/cuda/session.hpp).
#include "forge/backend/cuda/pipeline_impl.cuh"
