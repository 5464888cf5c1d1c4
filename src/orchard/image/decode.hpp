#pragma once
// Decoding like Pillow: JPEG (libjpeg-turbo, ISLOW IDCT, fancy upsampling) and PNG (libpng), every
// image ending as 8-bit RGB exactly as Pillow's Image.open(...).convert('RGB') makes it.
#include <cstdint>
#include <span>
#include <vector>

namespace orchard::image {

// An 8-bit RGB image, rows top to bottom, pixels interleaved R,G,B.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> pixels;  // width * height * 3
};

// Pillow's decompression-bomb limit (2 * Image.MAX_IMAGE_PIXELS): larger images are refused.
inline constexpr std::int64_t kMaxPixels = 178956970;
// Orchard's own limit on either side (JPEG's maximum); Pillow has none.
inline constexpr std::int64_t kMaxSide = 65535;

// Decodes JPEG or PNG bytes to RGB as Pillow's convert('RGB') does. Throws orchard::Error naming
// the problem (empty, truncated, not an image, too large, unsupported) without a file name; the
// caller adds the path. Refuses what Pillow refuses: a JPEG that ends before its EOI marker (even
// with every scanline present) is truncated; a PNG chunk before the image data with a bad CRC is
// corrupt. The size is checked against kMaxPixels before any pixel buffer is allocated.
// Bad bytes throw kBadInput (an error row); running out of memory throws std::bad_alloc (the
// machine's problem: it fails the shard). Known gap: a non-interlaced PNG whose compressed data
// stops cleanly before the last row is accepted by Pillow (missing rows black) and refused here.
RgbImage decode_to_rgb(std::span<const std::uint8_t> bytes);

// How a photo sent to the service is decoded (the batch pipeline keeps decode_to_rgb, Pillow's way).
struct PhotoOptions {
  bool apply_exif_orientation = true;  // rotate/flip as the JPEG's EXIF Orientation tag (1-8) says
  int min_side = 0;                    // > 0: a JPEG is decoded with libjpeg's DCT scaling (scale_num/scale_denom,
                                       // 1/8..8/8) to the smallest scaled size whose width and height are both >= min_side
  std::int64_t max_pixels = kMaxPixels;  // larger images are refused before decoding (a progressive JPEG
                                         // holds full-size coefficients in memory, whatever its scale)
};

// Decodes JPEG or PNG bytes for the service: as decode_to_rgb, but a JPEG may be DCT-scaled down while
// decoding and its EXIF orientation applied. Same errors as decode_to_rgb (kBadInput for bad bytes, the
// pixel limit checked on the full size before anything is allocated).
// A JPEG already smaller than min_side on a side is not scaled. The orientation comes from the first
// APP1 "Exif" segment (IFD0 tag 0x0112, SHORT, count 1, value 1-8) and is applied as
// PIL.ImageOps.exif_transpose does; an absent, out-of-range or malformed tag is ignored. A PNG is
// decoded exactly as decode_to_rgb does (no scaling, no EXIF).
RgbImage decode_photo(std::span<const std::uint8_t> bytes, const PhotoOptions& options);

}  // namespace orchard::image
