#pragma once
// The digits networks of the paper (shared/docs/dtn-spec.md), as types.
#include <dtn/dtn.hpp>

namespace digits {

// f: four conv layers (64, 128, 256, 128 filters), each followed by max pooling and ReLU, as in
// the paper, with batch norm between the pooling and the ReLU (the spec leaves batch norm in f
// optional). Batch norm after the pooling standardises every feature over the source domain, so
// f(x) = ReLU(N(0, 1)-like) per channel: the MSE of L_CONST between unrelated images is then
// at most about 2 Var(ReLU(z)) ~ 0.7 (measured ~0.5 when DTN training starts), the scale at which
// alpha = 15 balances L_CONST against L_GANG and beta L_TID. Without it (the plain spec f) the
// features are unbounded and alpha L_CONST dominated L_G (examples/svhn_to_mnist/RESULTS.md,
// the 2026-11-26 run).
// f runs frozen in evaluation mode inside the trainer (running statistics of the source domain).
using F = dtn::Sequential<dtn::Conv2d<64, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::BatchNorm2d, dtn::ReLU,    //
                          dtn::Conv2d<128, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::BatchNorm2d, dtn::ReLU,   //
                          dtn::Conv2d<256, 3, 1, 1>, dtn::MaxPool2d<2>, dtn::BatchNorm2d, dtn::ReLU,   //
                          dtn::Conv2d<128, 3, 1, 1>, dtn::MaxPool2d<4>, dtn::BatchNorm2d, dtn::ReLU>;  // -> 128 x 1 x 1
// The 10-way head used to pretrain f on the source domain.
using FHead = dtn::Sequential<dtn::Flatten, dtn::Linear<10>>;

// g: four blocks of transposed convolution, batch norm and ReLU, with a tanh at the end (DCGAN).
using G = dtn::Sequential<dtn::ConvTranspose2d<512, 4, 1, 0>, dtn::BatchNorm2d, dtn::ReLU,  // 512 x 4 x 4
                          dtn::ConvTranspose2d<256, 4, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  // 256 x 8 x 8
                          dtn::ConvTranspose2d<128, 4, 2, 1>, dtn::BatchNorm2d, dtn::ReLU,  // 128 x 16 x 16
                          dtn::ConvTranspose2d<1, 4, 2, 1>, dtn::Tanh>;                     // 1 x 32 x 32

// D: batch-normalised conv layers and a ternary output, with LeakyReLU(0.2) (the spec allows it;
// DCGAN's choice: g gets a gradient through D's negative half too).
using D = dtn::Sequential<dtn::Conv2d<128, 3, 2, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>,  // 128 x 16 x 16
                          dtn::Conv2d<256, 3, 2, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>,  // 256 x 8 x 8
                          dtn::Conv2d<512, 3, 2, 1>, dtn::BatchNorm2d, dtn::LeakyReLU<1, 5>,  // 512 x 4 x 4
                          dtn::Conv2d<3, 4, 1, 0>>;                                          // 3 logits

// The separate MNIST classifier of the evaluation protocol (1 x 32 x 32 input).
using MnistClassifier =
    dtn::Sequential<dtn::Conv2d<32, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>,   // 32 x 16 x 16
                    dtn::Conv2d<64, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>,   // 64 x 8 x 8
                    dtn::Conv2d<128, 3, 1, 1>, dtn::BatchNorm2d, dtn::ReLU, dtn::MaxPool2d<2>,  // 128 x 4 x 4
                    dtn::Flatten, dtn::Linear<10>>;

}  // namespace digits
