#pragma once
// The digits networks of the paper (shared/docs/dtn-spec.md), as types.
#include <dtn/dtn.hpp>

namespace digits {

// f: four conv layers (64, 128, 256, 128 filters), each followed by max pooling and ReLU.
using F = dtn::Sequential<dtn::Conv2d<64, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::ReLU,    //
                          dtn::Conv2d<128, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::ReLU,   //
                          dtn::Conv2d<256, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::ReLU,   //
                          dtn::Conv2d<128, 3, 1, 1>, dtn::MaxPool2d<4>, dtn::ReLU>;  // -> 128 x 1 x 1
// The 10-way head used to pretrain f on the source domain.
using FHead = dtn::Sequential<dtn::Flatten, dtn::Linear<10>>;

// g: four blocks of transposed convolution, batch norm and ReLU, with a tanh at the end (DCGAN).
using G = dtn::Sequential<dtn::ConvTranspose2d<512, 4, 1, 0>, dtn::BatchNorm2d, dtn::ReLU,  // 512 x 4 x 4
                          dtn::ConvTranspose2d<256, 4, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  // 256 x 8 x 8
                          dtn::ConvTranspose2d<128, 4, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  // 128 x 16 x 16
                          dtn::ConvTranspose2d<1, 4, 2, 1>, dtn::Tanh>;                     // 1 x 32 x 32

// D: batch-normalised conv layers with ReLU and a ternary output.
using D = dtn::Sequential<dtn::Conv2d<128, 3, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  // 128 x 16 x 16
                          dtn::Conv2d<256, 3, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  // 256 x 8 x 8
                          dtn::Conv2d<512, 3, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  // 512 x 4 x 4
                          dtn::Conv2d<3, 4, 1, 0>>;                                // 3 logits

// The separate MNIST classifier of the evaluation protocol (1 x 32 x 32 input).
using MnistClassifier =
    dtn::Sequential<dtn::Conv2d<32, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>,   // 32 x 16 x 16
                    dtn::Conv2d<64, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>,   // 64 x 8 x 8
                    dtn::Conv2d<128, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>,  // 128 x 4 x 4
                    dtn::Flatten, dtn::Linear<10>>;

}  // namespace digits
