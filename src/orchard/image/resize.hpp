#pragma once
// Resizing byte-identical to Pillow's Image.resize((w, h)) with BICUBIC, and Keras' normalisation.
#include "orchard/image/decode.hpp"

namespace orchard::image {

// Pillow's BICUBIC (a = -0.5) resample with its support scaling when shrinking, 22-bit fixed-point
// coefficients and rounding; horizontal pass then vertical, as Pillow does.
RgbImage resize_bicubic(const RgbImage& in, int width, int height);

// Writes x / 127.5 - 1 (keras mobilenet_v2.preprocess_input) as float CHW planes into out
// (3 * width * height floats).
void to_chw_normalized(const RgbImage& in, float* out);

}  // namespace orchard::image
