#pragma once
// dtn: the Domain Transfer Network as a header-only C++17 library. CPU umbrella header: it
// never includes a CUDA header. For the GPU backend include <dtn/cuda.cuh> (compiled by nvcc).
#include "backend/cpu/backend.hpp"
#include "core/device.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "core/shape.hpp"
#include "core/tensor.hpp"
#include "layers/activation.hpp"
#include "layers/batch_norm.hpp"
#include "layers/conv.hpp"
#include "layers/linear.hpp"
#include "layers/pool.hpp"
#include "layers/shape_ops.hpp"
#include "loss/losses.hpp"
#include "nn/sequential.hpp"
#include "optim/adam.hpp"
#include "train/domain_transfer.hpp"
