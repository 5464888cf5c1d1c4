#pragma once
// A baseline JPEG encoder for the unit tests (libjpeg's), to make test images in memory.
#include <jpeglib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "orchard/image/decode.hpp"

namespace orchard::image::test_util {

// Encodes an RGB image as a baseline JPEG (4:2:0, libjpeg's defaults) at the given quality.
inline std::vector<std::uint8_t> encode_jpeg(const RgbImage& img, int quality = 92) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = img.width;
  c.image_height = img.height;
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(img.pixels.data() + static_cast<std::size_t>(c.next_scanline) * img.width * 3);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::vector<std::uint8_t> out(buf, buf + size);
  std::free(buf);
  return out;
}

}  // namespace orchard::image::test_util
